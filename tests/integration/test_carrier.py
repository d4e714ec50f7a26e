"""Carriers through the real shim (issue 17): `ctr run --rm --runtime io.containerd.rune.v2` of an image whose
entry point is a WASI module, with RUNE_CARRIER=wasm: the shim builds, signs (node-local key) and caches a sim
enclave image and the app's output comes back; the second run hits the bundle cache (its counters say so). Bad
input fails the Create with one line and leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import is_root
from tests.integration.test_containerd import ok
from tests.integration.test_shim_containerd import Shim
from tests.unit.sgx_helpers import rsa3072_e3_pem

NAMESPACE = "inclavare-carrier"
RUNTIME = "io.containerd.rune.v2"
WASM_IMAGE = "localhost/wasm-hello:latest"
HELLO_WAT = r"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from a carried enclave\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 29))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""

SPIN_WAT = '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (containerd)"),
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                       reason="containerd/ctr are not installed (Debian package containerd)"),
]


class Rig:
    def __init__(self, shim: Shim, cache_root: str) -> None:
        self.shim, self.cache_root = shim, cache_root

    def run_rm(self, cid: str, *flags: str, image: str = WASM_IMAGE) -> Any:
        return self.shim.ctr("run", "--rm", "--runtime", RUNTIME, *flags, image, cid)

    def stats(self) -> Any:
        from inclavare.services.bundlecache import BundleCache

        with BundleCache(self.cache_root) as c:
            return c.stats()


def wasm_image_tar(base: Path, wat: str = HELLO_WAT) -> str:
    wasmtime = pytest.importorskip("wasmtime", reason="wasmtime (Python) is not installed")
    from inclavare.testing.image import build_layout_tar

    root = base / "wasm-rootfs"
    (root / "app").mkdir(parents=True)
    (root / "app" / "hello.wasm").write_bytes(wasmtime.wat2wasm(wat))
    (root / "app" / "spin.wasm").write_bytes(wasmtime.wat2wasm(SPIN_WAT))
    (root / "app" / "notwasm").write_text("#!/bin/sh\necho hi\n")
    return build_layout_tar(str(base / "wasm.tar"), str(root), WASM_IMAGE, cmd=("/app/hello.wasm",))


def write_node_config(path: Path, key: Path, cache: Path, method: str = "local") -> None:
    path.write_text(f'log_level = "info"\n[enclave_runtime]\nsignature_method = "{method}"\n'
                    f'[signature]\nlocal_key = "{key}"\n[bundle_cache]\nroot = "{cache}"\n')


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    from inclavare.testing.containerd import ContainerdError, PrivateContainerd
    from inclavare.testing.image import build_image_tar
    from inclavare.testing.launcher import write_shim_launcher

    base = tmp_path_factory.mktemp("carrier")
    key = base / "signing.pem"
    key.write_bytes(rsa3072_e3_pem(0))
    key.chmod(0o600)
    conf = base / "config.toml"
    write_node_config(conf, key, base / "cache")
    tar = wasm_image_tar(base)
    ctrd = PrivateContainerd(str(base / "c"), namespace=NAMESPACE)
    root = str(base / "rune-root")
    os.makedirs(ctrd.bin_dir, exist_ok=True)
    write_shim_launcher(os.path.join(ctrd.bin_dir, "containerd-shim-rune-v2"),
                        env={"RUNE_SHIM_ROOT": root, "INCLAVARE_SIM_STATE_DIR": str(base / "sim-platform"),
                             "INCLAVARE_SHIM_CONFIG": str(conf)})
    try:
        try:
            ctrd.start()
        except ContainerdError as e:
            pytest.skip(f"private containerd does not start here: {e}")
        assert WASM_IMAGE in ctrd.import_image(tar)
        assert "localhost/busybox:latest" in ctrd.import_image(build_image_tar(str(base / "busybox.tar")))
        yield Rig(Shim(ctrd, root, str(base / "sim-platform")), str(base / "cache"))
    finally:
        ctrd.stop()


@pytest.fixture
def cid(rig: Rig) -> Iterator[str]:
    c = "car-" + uuid.uuid4().hex[:10]
    yield c
    rig.shim.remove(c)


def test_wasm_carrier_through_ctr_run_and_the_cache(rig: Rig, cid: str) -> None:
    before = rig.stats()
    assert ok(rig.run_rm(cid, "--env", "RUNE_CARRIER=wasm")) == "hello from a carried enclave\n"
    rig.shim.assert_clean(cid)
    first = rig.stats()
    assert first.builds - before.builds == 3  # L0, L1, L2
    again = cid + "-2"
    try:
        assert ok(rig.run_rm(again, "--env", "RUNE_CARRIER=wasm")) == "hello from a carried enclave\n"
    finally:
        rig.shim.remove(again)
    second = rig.stats()
    assert (second.builds, second.hits - first.hits) == (first.builds, 1)  # an L2 hit, nothing built


def test_the_recorded_identity_matches_the_enclaves_report(rig: Rig, cid: str, rune_bin: str) -> None:
    """The carrier records MRENCLAVE/MRSIGNER as annotations; `rune attest` shows them and checks the enclave's
    REPORT against them."""
    import subprocess

    ok(rig.shim.ctr("run", "-d", "--runtime", RUNTIME, "--env", "RUNE_CARRIER=wasm", WASM_IMAGE, cid,
                    "/app/spin.wasm"))
    rig.shim.wait_status(cid, "RUNNING")
    rune = [rune_bin, "--root", rig.shim.state_dir]
    env = dict(os.environ, INCLAVARE_SIM_STATE_DIR=rig.shim.sim_state_dir)
    state = json.loads(ok(subprocess.run([*rune, "state", cid], capture_output=True, text=True, timeout=30)))
    ann = state.get("annotations") or {}
    assert ann.get("enclave.carrier") == "wasm" and len(ann.get("enclave.mrenclave", "")) == 64
    shown = json.loads(ok(subprocess.run([*rune, "attest", cid], capture_output=True, text=True, timeout=60,
                                         env=env)))
    assert shown["mrenclave"] == ann["enclave.mrenclave"] and shown["mrsigner"] == ann["enclave.mrsigner"]
    assert shown["recorded"] == {"mrenclave": ann["enclave.mrenclave"], "mrsigner": ann["enclave.mrsigner"]}
    quoted = json.loads(ok(subprocess.run([*rune, "attest", "--isRA", cid], capture_output=True, text=True,
                                          timeout=60, env=env)))
    assert quoted["recorded"] == shown["recorded"] and "quote" in quoted
    ok(rig.shim.ctr("tasks", "kill", "-s", "KILL", cid))
    rig.shim.wait_status(cid, "STOPPED")


def test_bad_carrier_input_fails_create_and_leaves_nothing(rig: Rig, cid: str) -> None:
    before = rig.stats()
    for flags, expected in ((("--env", "RUNE_CARRIER=nope"), "unknown carrier 'nope'"),
                            (("--env", "RUNE_CARRIER=occlum"), "not available on this machine"),
                            (("--env", "RUNE_CARRIER=sim"), "not an ELF executable")):
        p = rig.run_rm(cid, *flags)
        assert p.returncode != 0 and expected in p.stderr, p.stderr
        rig.shim.remove(cid)
        rig.shim.assert_clean(cid)
    p = rig.shim.ctr("run", "--rm", "--runtime", RUNTIME, "--env", "RUNE_CARRIER=wasm", WASM_IMAGE, cid,
                     "/app/notwasm")
    assert p.returncode != 0 and "not a WebAssembly module" in p.stderr, p.stderr
    rig.shim.remove(cid)
    rig.shim.assert_clean(cid)
    after = rig.stats()
    assert (after.entries, after.builds) == (before.entries, before.builds)


def test_plain_container_is_untouched(rig: Rig, cid: str) -> None:
    p = rig.shim.ctr("run", "--rm", "--runtime", RUNTIME, "localhost/busybox:latest", cid, "sh", "-c",
                     "echo plain; env | grep -c ENCLAVE_ || true")
    assert ok(p) == "plain\n0\n"


def test_evicting_the_entry_does_not_break_a_running_container(rig: Rig, cid: str, rune_bin: str) -> None:
    """The signed image reaches the container as a bind mount of the entry's file: the container keeps the inode
    when the cache evicts the entry (the shim holds the entry only until the container exists)."""
    import subprocess

    from inclavare.services.bundlecache import BundleCache

    ok(rig.shim.ctr("run", "-d", "--runtime", RUNTIME, "--env", "RUNE_CARRIER=wasm", WASM_IMAGE, cid,
                    "/app/spin.wasm"))
    rig.shim.wait_status(cid, "RUNNING")
    with BundleCache(rig.cache_root) as c:
        assert c.evict(0)  # nothing holds the entries now
        assert c.stats().entries == 0
    state = json.loads(ok(subprocess.run([rune_bin, "--root", rig.shim.state_dir, "state", cid],
                                         capture_output=True, text=True, timeout=30)))
    assert state["status"] == "running"
    env = dict(os.environ, INCLAVARE_SIM_STATE_DIR=rig.shim.sim_state_dir)
    shown = json.loads(ok(subprocess.run([rune_bin, "--root", rig.shim.state_dir, "attest", cid],
                                         capture_output=True, text=True, timeout=60, env=env)))
    assert shown["mrenclave"] == state["annotations"]["enclave.mrenclave"]
    ok(rig.shim.ctr("tasks", "kill", "-s", "KILL", cid))
    rig.shim.wait_status(cid, "STOPPED")
    # and the next run rebuilds
    again = cid + "-r"
    try:
        assert ok(rig.run_rm(again, "--env", "RUNE_CARRIER=wasm")) == "hello from a carried enclave\n"
    finally:
        rig.shim.remove(again)


def test_sim_carrier_runs_a_native_entry_point(rig: Rig, cid: str) -> None:
    """RUNE_CARRIER=sim: busybox (the entry point `echo`, resolved through PATH to the busybox binary) measured
    and signed into a native sim enclave image, run by builtin:sim."""
    p = rig.shim.ctr("run", "--rm", "--runtime", RUNTIME, "--env", "RUNE_CARRIER=sim", "localhost/busybox:latest",
                     cid, "echo", "native", "payload")
    assert ok(p) == "native payload\n"
    rig.shim.assert_clean(cid)
