"""Encrypted images through real engines (issue 16): an OCI image whose secret layer is encrypted for the owner's
key and sealed with ``inclavare-image``, imported into a private containerd (``ctr image import``) or podman
(``podman load``) and run as a sim enclave container; the enclave attests to a real verdictd, gets the key and
prints the secret. The host side (containerd's content store and snapshots, podman's storage) only ever holds
ciphertext. A plain runtime runs the image but the app finds no secret; rune without an enclave refuses it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import is_root, needs_busybox
from tests.integration.cri_rig import start_with_test_images
from tests.integration.encrypted_rig import (
    BUSYBOX,
    CAT,
    SECRET,
    enclave_env,
    owner_key,
    refs,
    sealed_image,
    signed_image,
    start_verdictd,
    url_of,
)
from tests.integration.test_vd_daemon import Daemon, Env, world  # noqa: F401 (world: a fixture)
from tests.unit.services.imagecrypt.helpers import manifests

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (engines, namespaces, mounts, cgroups)"),
    needs_busybox,
]
needs_containerd = pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                                      reason="containerd/ctr are not installed (Debian package containerd)")
needs_podman = pytest.mark.skipif(not (shutil.which("podman") and shutil.which("conmon")),
                                  reason="podman/conmon are not installed (Debian package podman)")

NAME = "localhost/encrypted:1"
WASM_NAME = "localhost/encrypted-wasm:1"
UNSEALED_NAME = "localhost/encrypted-unsealed:1"
NAMESPACE = "inclavare-enc"
RUNE_SHIM = "io.containerd.rune.v2"
RUNC_SHIM = "io.containerd.runc.v2"

# A WASI program: finds the preopened directory named "/decrypted" (fd_prestat_get / fd_prestat_dir_name over the
# descriptors from 3 up), opens app/secret.txt under it (path_open) and copies it to stdout. Exit 2: no such
# preopen; 3: path_open failed; 4: a read or write failed.
CAT_WAT = r"""
(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; 64: the preopen name we want (10 bytes); 96: the file's path under it (14 bytes)
  (data (i32.const 64) "/decrypted")
  (data (i32.const 96) "app/secret.txt")
  ;; 0: prestat (tag u8, name_len u32 at 4); 16: iovec; 24: nread/nwritten; 28: opened fd;
  ;; 128: a preopen's name; 1024: the read buffer (4 KiB)
  (func $is_decrypted (param $fd i32) (result i32)
    (local $i i32)
    (if (i32.ne (i32.load8_u (i32.const 0)) (i32.const 0)) (then (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 4)) (i32.const 10)) (then (return (i32.const 0))))
    (if (call $prestat_dir_name (local.get $fd) (i32.const 128) (i32.const 10)) (then (return (i32.const 0))))
    (block $diff (loop $l
      (if (i32.ge_u (local.get $i) (i32.const 10)) (then (return (i32.const 1))))
      (br_if $diff (i32.ne (i32.load8_u (i32.add (i32.const 128) (local.get $i)))
                           (i32.load8_u (i32.add (i32.const 64) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.const 0))
  (func (export "_start")
    (local $fd i32) (local $file i32) (local $n i32)
    (local.set $fd (i32.const 3))
    (block $found (loop $scan
      (if (call $prestat_get (local.get $fd) (i32.const 0)) (then (call $proc_exit (i32.const 2))))
      (br_if $found (call $is_decrypted (local.get $fd)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br $scan)))
    ;; fd_read (bit 1) is the only right asked for
    (if (call $path_open (local.get $fd) (i32.const 0) (i32.const 96) (i32.const 14) (i32.const 0)
                         (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 28))
      (then (call $proc_exit (i32.const 3))))
    (local.set $file (i32.load (i32.const 28)))
    (loop $copy
      (i32.store (i32.const 16) (i32.const 1024))
      (i32.store (i32.const 20) (i32.const 4096))
      (if (call $fd_read (local.get $file) (i32.const 16) (i32.const 1) (i32.const 24))
        (then (call $proc_exit (i32.const 4))))
      (local.set $n (i32.load (i32.const 24)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 20) (local.get $n))
          (if (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))
            (then (call $proc_exit (i32.const 4))))
          (br $copy))))
    (call $proc_exit (i32.const 0))))
"""


# ---------------------------------------------------------------------------- the owner's side


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The owner's key, the enclave's MRENCLAVE, and OCI archives: the sealed image, the same image encrypted but
    not sealed, and a sealed image whose enclave payload is the WASI program above."""
    d = tmp_path_factory.mktemp("enc-owner")
    pem, pub = owner_key()
    img, mr = signed_image(BUSYBOX)
    out: dict[str, Any] = {"private_pem": pem, "mr": mr,
                           "sealed": sealed_image(d / "native", NAME, img, pub),
                           "encrypted": sealed_image(d / "native-enc", UNSEALED_NAME, img, pub, seal=False)}
    assert secret_in(str(d / "native" / "plain")), "the search for the secret finds it where it is plain"
    (out["encrypted_layer"],) = [x["digest"] for x in manifests(d / "native-enc" / "enc")[0]["layers"]
                                 if x["mediaType"].endswith("+encrypted")]
    out["wasm"] = out["wasm_mr"] = None
    try:
        import wasmtime
    except ImportError:  # the wasm test skips
        return out
    wimg, wmr = signed_image(bytes(wasmtime.wat2wasm(CAT_WAT)), kind="wasm")
    out["wasm"], out["wasm_mr"] = sealed_image(d / "wasm", WASM_NAME, wimg, pub, cmd=("cat-secret",)), wmr
    return out


@pytest.fixture(scope="module")
def vd(world: Env, tmp_path_factory: pytest.TempPathFactory, owner: dict[str, Any]) -> Iterator[Daemon]:  # noqa: F811
    d = start_verdictd(world, tmp_path_factory.mktemp("enc-vd") / "state", owner["private_pem"])
    try:
        yield d
    finally:
        assert d.stop() == 0


def secret_in(tree: str) -> list[str]:
    """Files under ``tree`` holding the secret's text (none: the host never had the plaintext)."""
    p = subprocess.run(["grep", "-rlF", "--devices=skip", SECRET.decode().strip(), tree], capture_output=True,
                       text=True)
    return p.stdout.split()


def errors(stderr: str) -> list[str]:
    return [x for x in stderr.strip().splitlines() if x.strip()]


# ---------------------------------------------------------------------------- containerd: ctr


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory, owner: dict[str, Any], world: Env) -> Iterator[Any]:  # noqa: F811
    from inclavare.testing.containerd import ContainerdError, PrivateContainerd
    from inclavare.testing.launcher import write_shim_launcher

    if not (shutil.which("containerd") and shutil.which("ctr")):
        pytest.skip("containerd/ctr are not installed (Debian package containerd)")
    base = tmp_path_factory.mktemp("enc-ctrd")
    c = PrivateContainerd(str(base / "c"), namespace=NAMESPACE)
    os.makedirs(c.bin_dir, exist_ok=True)
    # the shim's sim enclaves quote with the platform verdictd trusts (world.sim_dir); its state under c.base,
    # searched for the secret with containerd's
    write_shim_launcher(os.path.join(c.bin_dir, "containerd-shim-rune-v2"),
                        env={"RUNE_SHIM_ROOT": os.path.join(c.base, "rune-shim-root"),
                             "INCLAVARE_SIM_STATE_DIR": world.sim_dir})
    try:
        try:
            c.start()
        except ContainerdError as e:
            pytest.skip(f"private containerd does not start here: {e}")
        assert NAME in c.import_image(owner["sealed"])
        if owner["wasm"]:
            assert WASM_NAME in c.import_image(owner["wasm"])
        yield c
    finally:
        c.purge()


class Ctr:
    """ctr against the private containerd; every container a test made is removed at the end."""

    def __init__(self, c: Any) -> None:
        self.c = c
        self.ids: list[str] = []

    def new_id(self) -> str:
        self.ids.append("enc-" + uuid.uuid4().hex[:10])
        return self.ids[-1]

    def run_argv(self, cid: str, runtime: list[str], env: dict[str, str], image: str = NAME,
                 cmd: tuple[str, ...] = ()) -> list[str]:
        flags = [f for k, v in env.items() for f in ("--env", f"{k}={v}")]
        return self.c.ctr_cmd("run", "--rm", *runtime, *flags, image, cid, *cmd)  # type: ignore[no-any-return]

    def run(self, runtime: list[str], env: dict[str, str], image: str = NAME, cmd: tuple[str, ...] = ()
            ) -> tuple[str, subprocess.CompletedProcess[str]]:
        cid = self.new_id()
        p = subprocess.run(self.run_argv(cid, runtime, env, image, cmd), capture_output=True, text=True, timeout=120)
        return cid, p

    def tasks(self) -> list[str]:
        return self.c.ctr("tasks", "ls", "-q", check=False).stdout.split()  # type: ignore[no-any-return]

    def containers(self) -> list[str]:
        return self.c.ctr("containers", "ls", "-q", check=False).stdout.split()  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        for cid in self.ids:
            if cid in self.tasks():
                self.c.ctr("tasks", "kill", "-a", "-s", "KILL", cid, check=False)
                self.c.ctr("tasks", "delete", "--force", cid, check=False)
            self.c.ctr("containers", "delete", cid, check=False)


@pytest.fixture
def ctr(ctrd: Any) -> Iterator[Ctr]:
    e = Ctr(ctrd)
    try:
        yield e
    finally:
        e.cleanup()


def gone(ctr: Ctr, cid: str) -> None:
    """ctr run --rm left neither task nor container."""
    assert cid not in ctr.tasks() and cid not in ctr.containers()


@needs_containerd
def test_ctr_rune_shim_prints_the_secret(ctr: Ctr, vd: Daemon, owner: dict[str, Any]) -> None:
    refs(vd, owner["mr"])
    cid, p = ctr.run(["--runtime", RUNE_SHIM], enclave_env(url_of(vd)))
    assert (p.returncode, p.stdout, p.stderr) == (0, SECRET.decode(), ""), p
    gone(ctr, cid)
    assert secret_in(ctr.c.base) == []  # content store, snapshots, shim state: ciphertext only


@needs_containerd
def test_ctr_rune_shim_denied_enclave_fails_with_the_reason(ctr: Ctr, vd: Daemon) -> None:
    refs(vd, "00" * 32)  # the owner's reference value is another enclave's
    cid, p = ctr.run(["--runtime", RUNE_SHIM], enclave_env(url_of(vd)))
    assert p.returncode != 0 and p.stdout == "", p
    lines = errors(p.stderr)
    assert len(lines) == 1 and "is not a reference value" in lines[0], p.stderr
    gone(ctr, cid)
    assert secret_in(ctr.c.base) == []


@needs_containerd
def test_ctr_runc_runs_the_sealed_image_without_its_secret(ctr: Ctr) -> None:
    """The plain runc shim and runc: the image unpacks and runs, the secret is only ciphertext in the rootfs."""
    cid, p = ctr.run(["--runtime", RUNC_SHIM], {}, cmd=(
        "sh", "-c", 'cat "$ENCLAVE_DECRYPTED_DIR/app/secret.txt"; echo "rc=$?"; ls /.inclavare/sealed/*/'))
    assert p.returncode == 0, p
    assert p.stdout.splitlines()[0] == "rc=1" and "descriptor.json" in p.stdout and "layer.enc" in p.stdout, p
    assert "can't open '/app/secret.txt': No such file or directory" in p.stderr, p.stderr
    gone(ctr, cid)


@needs_containerd
def test_ctr_runc_shim_with_rune_and_no_enclave_is_refused(ctr: Ctr, rune_bin: str, tmp_path: Path) -> None:
    cid, p = ctr.run(["--runtime", RUNC_SHIM, "--runc-binary", rune_bin, "--runc-root", str(tmp_path / "rr")], {})
    assert p.returncode != 0 and p.stdout == "", p
    assert "the image has encrypted layers (.inclavare/sealed)" in p.stderr and "ENCLAVE_TYPE" in p.stderr, p.stderr
    gone(ctr, cid)


@needs_containerd
def test_ctr_refuses_to_unpack_an_encrypted_image_that_is_not_sealed(ctr: Ctr, owner: dict[str, Any]) -> None:
    """containerd unpacks layers on the host: an ocicrypt layer needs imgcrypt's stream processor there (and
    the key on the host). Without one, the import fails naming the encrypted media type: seal the image."""
    p = ctr.c.ctr("images", "import", owner["encrypted"], check=False, timeout=120)
    assert p.returncode != 0, p
    (error,) = [x for x in errors(p.stderr) if x.startswith("ctr: ")]
    assert "failed to extract layer" in error and "application/vnd.oci.image.layer.v1.tar+encrypted" in error, error


@needs_containerd
def test_ctr_wasm_payload_reads_its_secret_through_the_preopen(ctr: Ctr, vd: Daemon,
                                                                owner: dict[str, Any]) -> None:
    if not owner["wasm"]:
        pytest.skip("wasmtime (Python) is not installed")
    refs(vd, owner["wasm_mr"])
    cid, p = ctr.run(["--runtime", RUNE_SHIM], enclave_env(url_of(vd)), image=WASM_NAME)
    assert (p.returncode, p.stdout) == (0, SECRET.decode()), p
    gone(ctr, cid)


# ---------------------------------------------------------------------------- verdictd restarts


def established_to(port: int) -> bool:
    """A TCP connection to 127.0.0.1:``port`` is established (the enclave's, made on the host side at create)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[2] == want and f[3] == "01":
            return True
    return False


@needs_containerd
def test_verdictd_restarted_between_runs_and_killed_during_create(ctr: Ctr, world: Env,  # noqa: F811
                                                                   owner: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "vd-state"
    d = start_verdictd(world, state, owner["private_pem"])
    port = d.port("kbs")
    env = enclave_env(url_of(d))
    try:
        refs(d, owner["mr"])
        cid, p = ctr.run(["--runtime", RUNE_SHIM], env)
        assert (p.returncode, p.stdout) == (0, SECRET.decode()), p
        # SIGKILL, then a new verdictd on the same state and port: the key and the reference value survived
        d.proc.send_signal(signal.SIGKILL)
        assert d.stop() == -signal.SIGKILL
        d = Daemon(world, state, "--kbs-listen", f"127.0.0.1:{port}")
        cid, p = ctr.run(["--runtime", RUNE_SHIM], env)
        assert (p.returncode, p.stdout) == (0, SECRET.decode()), p
        gone(ctr, cid)
        # killed during create: stopped, so the enclave's connection waits in its accept queue; then SIGKILL
        d.proc.send_signal(signal.SIGSTOP)
        cid = ctr.new_id()
        run = subprocess.Popen(ctr.run_argv(cid, ["--runtime", RUNE_SHIM], env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not established_to(port) and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert established_to(port), "the enclave never connected to verdictd"
            d.proc.send_signal(signal.SIGKILL)
            out, err = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert run.returncode != 0 and out == "", (out, err)
        lines = errors(err)
        assert len(lines) == 1 and "(auth): the connection to the key broker was lost" in lines[0], err
        gone(ctr, cid)
    finally:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGKILL)
        d.stop()
    assert secret_in(ctr.c.base) == []


# ---------------------------------------------------------------------------- containerd: CRI


@pytest.fixture(scope="module")
def cri_ctrd(tmp_path_factory: pytest.TempPathFactory, owner: dict[str, Any], world: Env) -> Iterator[Any]:  # noqa: F811
    if not (shutil.which("containerd") and shutil.which("ctr")):
        pytest.skip("containerd/ctr are not installed (Debian package containerd)")
    if shutil.which("gcc") is None and not os.environ.get("CC"):
        pytest.skip("gcc is needed to build the pod sandbox (pause) image (scripts/setup.sh installs it)")
    pytest.importorskip("inclavare.testing.cri.api_pb2", reason="grpcio/protobuf are not installed")
    from inclavare.testing.cri.containerd import CriContainerd, RuntimeHandler

    base = tmp_path_factory.mktemp("enc-cri")
    c = CriContainerd(str(base / "c"), {"rune": RuntimeHandler.rune_shim()})
    c.install_rune_shim(str(base / "rune-shim-root"), env={"INCLAVARE_SIM_STATE_DIR": world.sim_dir})
    try:
        start_with_test_images(c, str(base))
        assert NAME in c.import_image(owner["sealed"])
        yield c
    finally:
        c.purge()


@needs_containerd
def test_cri_pod_container_logs_the_secret(cri_ctrd: Any, vd: Daemon, owner: dict[str, Any]) -> None:
    pb = pytest.importorskip("inclavare.testing.cri.api_pb2")
    from tests.integration.test_cri import CriEnv

    refs(vd, owner["mr"])
    env = CriEnv(cri_ctrd)
    try:
        pod = env.run_pod("rune")
        cid = env.cri.create_container(pod, "secret", NAME, CAT, env=enclave_env(url_of(vd)), log_path="secret.log")
        env.cri.start_container(cid)
        st = env.wait_state(cid, pb.CONTAINER_EXITED, timeout=60)
        assert (st.exit_code, st.reason) == (0, "Completed"), st
        log = Path(cri_ctrd.log_root) / pod.config.metadata.uid / "secret.log"
        assert [line.split(" ", 3)[1:] for line in log.read_text().splitlines()] == \
            [["stdout", "F", SECRET.decode().strip()]]
        env.cri.remove_container(cid)
        env.stop_pod(pod.id)
        env.cri.remove_pod(pod.id)
        env.assert_nothing_left("rune", [pod.id, cid])
    finally:
        env.cleanup()
        env.cri.close()
    # the pod's log holds the secret (the app printed it); containerd's content store, snapshots and task
    # bundles and the shim's state do not
    assert [secret_in(d) for d in (cri_ctrd.root, cri_ctrd.state, cri_ctrd.rune_shim_root)] == [[], [], []]


# ---------------------------------------------------------------------------- podman


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, owner: dict[str, Any], world: Env) -> Iterator[Any]:  # noqa: F811
    if not (shutil.which("podman") and shutil.which("conmon")):
        pytest.skip("podman/conmon are not installed (Debian package podman)")
    from inclavare.testing.launcher import write_launcher
    from inclavare.testing.podman import PrivatePodman

    base = tmp_path_factory.mktemp("enc-podman")
    # rune as podman's runtime; its sim enclaves quote with the platform verdictd trusts
    launcher = write_launcher(str(base / "rune"), "inclavare.cli.rune", env={"INCLAVARE_SIM_STATE_DIR": world.sim_dir})
    p = PrivatePodman(str(base / "p"), launcher)
    try:
        p.podman("load", "-i", owner["sealed"], check=True, timeout=300)
        yield p
    finally:
        p.cleanup()


def podman_run(p: Any, env: dict[str, str], image: str = NAME) -> subprocess.CompletedProcess[str]:
    flags = [f for k, v in env.items() for f in ("-e", f"{k}={v}")]
    return p.podman("run", "--rm", "--pull=never", "--network=none", *flags, image)  # type: ignore[no-any-return]


@needs_podman
def test_podman_rune_prints_the_secret(podman: Any, vd: Daemon, owner: dict[str, Any]) -> None:
    refs(vd, owner["mr"])
    p = podman_run(podman, enclave_env(url_of(vd)))
    assert (p.returncode, p.stdout) == (0, SECRET.decode()), p
    assert secret_in(podman.root) == [] and secret_in(podman.runroot) == []


@needs_podman
def test_podman_refuses_an_encrypted_image_that_is_not_sealed(podman: Any, owner: dict[str, Any]) -> None:
    """podman 4.3 has no decryption keys for `load` and does not know the layer is encrypted: it refuses the
    ciphertext as a layer, naming it, and stores nothing."""
    before = podman.podman("images", "-q", "--no-trunc").stdout
    p = podman.podman("load", "-i", owner["encrypted"], timeout=300)
    assert p.returncode != 0, p
    # `load` tries every archive format and reports each; the OCI archive's is the one that applies
    (error,) = [x for x in errors(p.stderr) if x.strip().startswith("* oci-archive: ")]
    assert "invalid tar header" in error, p.stderr
    assert f'adding layer with blob "{owner["encrypted_layer"]}"' in error, p.stderr
    assert podman.podman("images", "-q", "--no-trunc").stdout == before
