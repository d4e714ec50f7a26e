"""containerd-shim-rune-v2 under a real containerd 1.6: a private containerd started by the test, our shim
launcher first on its PATH, `ctr --runtime io.containerd.rune.v2` driving it (start, the Task service over
ttrpc, events back to containerd, delete after the shim is gone).
"""

from __future__ import annotations

import hashlib
import json
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
from tests.integration.test_containerd import (
    IMAGE,
    Engine,
    freezer_state_file,
    ok,
    run_in_pty,
    unmounted_v1_hierarchies,
)

NAMESPACE = "inclavare-shim"
RUNTIME = "io.containerd.rune.v2"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (containerd, namespaces, mounts, cgroups)"),
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                       reason="containerd/ctr are not installed (Debian package containerd)"),
    needs_busybox,
]


class Shim(Engine):
    """The private containerd, our shim's state root, and ctr with ``--runtime io.containerd.rune.v2`` (ctr, run,
    tasks, wait_status and remove as test_containerd's Engine)."""

    def __init__(self, ctrd: Any, root: str, sim_state_dir: str = "") -> None:
        self.ctrd, self.root, self.sim_state_dir = ctrd, root, sim_state_dir  # the shim's simulated platform
        self.runtime_flags = ["--runtime", RUNTIME]

    @property
    def state_dir(self) -> str:
        return os.path.join(self.root, self.ctrd.namespace)

    def bundle(self, cid: str) -> Path:
        return Path(self.ctrd.state) / "io.containerd.runtime.v2.task" / self.ctrd.namespace / cid

    def socket_of(self, group: str) -> str:
        path = os.path.normpath("/".join((self.ctrd.address, self.ctrd.namespace, group)))
        return "/run/containerd/s/" + hashlib.sha256(path.encode()).hexdigest()

    def shim_pids(self) -> list[int]:
        """Resident shims of this containerd (comm ``rune-shim``; not their fork servers and workers, which
        inherit the name, nor the shim template)."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                parent = Path(f"/proc/{ppid}/comm").read_text().strip() if ppid else ""
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if comm == "rune-shim" and parent != "rune-shim" and state != "Z" \
                    and self.ctrd.address.encode() in cmd:
                found.append(int(pid))
        return found

    def assert_clean(self, cid: str, group: str | None = None) -> None:
        """Nothing of ``cid`` is left: task, container, state, mounts, cgroups, socket, shim."""
        assert cid not in self.tasks()
        assert cid not in ok(self.ctr("containers", "ls", "-q")).split()
        assert not os.path.exists(os.path.join(self.state_dir, cid))
        assert not [m for m in self.ctrd.mounts() if cid in m]
        assert not [os.path.join(d, e) for d in self.ctrd.namespace_cgroups() for e in os.listdir(d) if e == cid]
        deadline = time.monotonic() + 10
        sock = self.socket_of(group or cid)
        while (os.path.exists(sock) or self.shim_pids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(sock)
        assert not self.shim_pids()


def listeners_of(path: str) -> list[int]:
    """Pids holding the listening unix socket bound at ``path`` (from /proc/net/unix and /proc/PID/fd)."""
    inodes = {line.split()[6] for line in Path("/proc/net/unix").read_text().splitlines()[1:]
              if line.split()[-1] == path}
    holders = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if any(f"socket:[{i}]" in links for i in inodes):
            holders.append(int(pid))
    return sorted(holders)


def topics_for(events: subprocess.Popen[bytes], cid: str, until: str, timeout: float = 20) -> list[str]:
    """Read `ctr events` until ``cid`` has had topic ``until`` (or the timeout); its /tasks/ topics in order."""
    import select

    assert events.stdout is not None
    fd = events.stdout.fileno()
    buf = b""
    topics: list[str] = []
    deadline = time.monotonic() + timeout
    while until not in topics and time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            if cid in text:
                topics += [w for w in text.split() if w.startswith("/tasks/")]
    events.terminate()
    events.wait(10)
    return topics


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shim]:
    from inclavare.testing.containerd import ContainerdError, PrivateContainerd
    from inclavare.testing.image import build_image_tar
    from inclavare.testing.launcher import write_shim_launcher

    base = tmp_path_factory.mktemp("shimctrd")
    ctrd = PrivateContainerd(str(base / "c"), namespace=NAMESPACE)
    root = str(base / "rune-root")
    os.makedirs(ctrd.bin_dir, exist_ok=True)
    # the simulated SGX platform (report key, QE) of sim enclaves: private, shared by the shims and `rune attest`
    write_shim_launcher(os.path.join(ctrd.bin_dir, "containerd-shim-rune-v2"),
                        env={"RUNE_SHIM_ROOT": root, "INCLAVARE_SIM_STATE_DIR": str(base / "sim-platform")})
    try:
        try:
            ctrd.start()
        except ContainerdError as e:
            pytest.skip(f"private containerd does not start here: {e}")
        tar = build_image_tar(str(base / "busybox-oci.tar"), name=IMAGE)
        assert IMAGE in ctrd.import_image(tar)
        yield Shim(ctrd, root, str(base / "sim-platform"))
    finally:
        ctrd.stop()


@pytest.fixture
def cid(shim: Shim) -> Iterator[str]:
    c = "sh-" + uuid.uuid4().hex[:10]
    yield c
    shim.remove(c)


@pytest.fixture
def running(shim: Shim, cid: str) -> int:
    ok(shim.run(cid, "sleep", "1000", flags=("-d",)))
    return shim.wait_status(cid, "RUNNING")


# ---------------------------------------------------------------------------- ctr run

def test_run_rm_true(shim: Shim, cid: str) -> None:
    p = shim.run(cid, "true", flags=("--rm",))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    shim.assert_clean(cid)


@pytest.mark.parametrize("code", [7, 42])
def test_exit_code_and_stdio(shim: Shim, cid: str, code: int) -> None:
    p = shim.run(cid, "sh", "-c", f"echo out-$((1+1)); echo err-$((2+2)) >&2; exit {code}", flags=("--rm",))
    assert p.returncode == code, p.stderr
    assert p.stdout == "out-2\n"
    assert "err-4\n" in p.stderr
    shim.assert_clean(cid)


def test_runc_options_from_ctrs_runtime_config_path(shim: Shim, cid: str, tmp_path: Path) -> None:
    """`ctr run --runtime-config-path FILE` sends runtimeoptions.v1.Options{ConfigPath}: runc's option names in FILE
    reach the shim (IoGid owns the process's stdout pipe; its uid is then the root process's, as runc's init
    leaves it); a bad option fails the run with the key's name and leaves nothing."""
    conf = tmp_path / "rune-shim.toml"
    conf.write_text("IoUid = 1000\nIoGid = 1001\n")
    p = shim.run(cid, "stat", "-L", "-c", "%u:%g", "/proc/self/fd/1", flags=("--rm", "--runtime-config-path",
                                                                            str(conf)))
    assert (p.returncode, p.stdout) == (0, "0:1001\n"), p.stderr
    shim.assert_clean(cid)
    conf.write_text("IoUid = -1\n")
    p = shim.run(cid, "true", flags=("--rm", "--runtime-config-path", str(conf)))
    assert p.returncode != 0 and "IoUid = -1: want an integer" in p.stderr, p.stderr
    shim.assert_clean(cid)


def test_run_tty(shim: Shim, cid: str) -> None:
    out, rc = run_in_pty(shim.run_argv(cid, "sh", "-c", "tty; test -t 0 && test -t 1 && echo both-ttys; exit 5",
                                       flags=("--rm", "-t")))
    assert rc == 5, out
    assert "/dev/pts/0" in out
    assert "both-ttys" in out


def test_detached_exec_ps_kill_delete(shim: Shim, cid: str, rune_bin: str) -> None:
    ok(shim.run(cid, "sh", "-c", "sleep 1000 & exec sleep 1001", flags=("-d",)))
    pid = shim.wait_status(cid, "RUNNING")
    # rune reads the shim's state root: the same container, pid and status
    st = subprocess.run([rune_bin, "--root", shim.state_dir, "state", cid], capture_output=True, text=True)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["pid"] == pid and json.loads(st.stdout)["status"] == "running"
    listed = subprocess.run([rune_bin, "--root", shim.state_dir, "list", "-q"], capture_output=True, text=True)
    assert cid in listed.stdout.split()
    # exec: output, exit code, and a signal death
    p = shim.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo out; echo err >&2; exit 4")
    assert p.returncode == 4 and p.stdout == "out\n" and "err\n" in p.stderr, p
    assert shim.ctr("tasks", "exec", "--exec-id", "e2", cid, "sh", "-c", "kill -9 $$").returncode == 128 + 9
    # ps: the init and its background child
    deadline = time.monotonic() + 10
    while True:
        lines = ok(shim.ctr("tasks", "ps", cid)).splitlines()
        pids = {int(line.split()[0]) for line in lines[1:] if line.strip()}
        if len(pids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pid in pids and len(pids) == 2, lines
    # a running task cannot be deleted; FailedPrecondition reaches ctr
    p = shim.ctr("tasks", "delete", cid)
    assert p.returncode != 0 and "failed precondition" in p.stderr, p.stderr
    ok(shim.ctr("tasks", "kill", "-s", "KILL", cid))
    shim.wait_status(cid, "STOPPED")
    # the kill of a stopped task: NotFound "process already finished", as with runc's shim
    p = shim.ctr("tasks", "kill", "-s", "KILL", cid)
    assert p.returncode != 0 and "process already finished: not found" in p.stderr, p.stderr
    ok(shim.ctr("tasks", "delete", cid))
    ok(shim.ctr("containers", "delete", cid))
    shim.assert_clean(cid)
    assert not os.path.exists(f"/proc/{pid}")


def test_exec_tty(shim: Shim, cid: str, running: int) -> None:
    out, rc = run_in_pty(shim.ctrd.ctr_cmd("tasks", "exec", "-t", "--exec-id", "t1", cid, "sh", "-c",
                                           "tty; test -t 0 && echo stdin-tty; exit 6"))
    assert rc == 6, out
    assert "/dev/pts/" in out and "stdin-tty" in out


def test_unknown_task_is_not_found(shim: Shim, cid: str, running: int) -> None:
    p = shim.ctr("tasks", "exec", "--exec-id", "x", cid + "-none", "true")
    assert p.returncode != 0 and "not found" in p.stderr, p.stderr
    p2 = subprocess.Popen(shim.ctrd.ctr_cmd("tasks", "exec", "--exec-id", "same", cid, "sleep", "5"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while "same" not in shim.ctr("tasks", "ps", cid).stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        again = shim.ctr("tasks", "exec", "--exec-id", "same", cid, "true")
        assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
    finally:
        p2.kill()
        p2.wait()


def test_pause_resume(shim: Shim, cid: str, running: int) -> None:
    freezer = freezer_state_file(running)
    ok(shim.ctr("tasks", "pause", cid))
    assert shim.tasks()[cid][1] == "PAUSED"
    if freezer:
        assert Path(freezer).read_text().strip() in ("FROZEN", "1")
    ok(shim.ctr("tasks", "resume", cid))
    assert shim.tasks()[cid][1] == "RUNNING"
    if freezer:
        assert Path(freezer).read_text().strip() in ("THAWED", "0")
    assert ok(shim.ctr("tasks", "exec", "--exec-id", "after", cid, "echo", "alive")) == "alive\n"


def test_metrics(shim: Shim, cid: str, running: int) -> None:
    if unmounted_v1_hierarchies():
        pytest.skip("cgroup v1 controllers listed but not mounted: no cgroup statistics here")
    out = ok(shim.ctr("tasks", "metrics", cid))
    assert "pids.current" in out and "memory.usage_in_bytes" in out, out
    current = next(line.split()[1] for line in out.splitlines() if line.startswith("pids.current"))
    assert int(current) == 1


def test_checkpoint_is_unimplemented(shim: Shim, cid: str, running: int) -> None:
    p = shim.ctr("tasks", "checkpoint", cid)
    assert p.returncode != 0
    assert "not supported by the rune shim" in p.stderr, p.stderr


def test_events_in_containerds_order(shim: Shim, cid: str) -> None:
    ev = subprocess.Popen(shim.ctrd.ctr_cmd("events"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    ok(shim.run(cid, "true", flags=("--rm",)))
    topics = topics_for(ev, cid, "/tasks/delete")
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], topics


def test_group_shares_one_shim(shim: Shim) -> None:
    group = "g-" + uuid.uuid4().hex[:8]
    a, b = f"{group}-a", f"{group}-b"
    try:
        for c in (a, b):
            ok(shim.run(c, "sleep", "1000", flags=("-d", "--annotation", f"io.containerd.runc.v2.group={group}")))
            shim.wait_status(c, "RUNNING")
        addresses = {(shim.bundle(c) / "address").read_text() for c in (a, b)}
        assert addresses == {"unix://" + shim.socket_of(group)}
        assert len(shim.shim_pids()) == 1
        ok(shim.ctr("tasks", "kill", "-s", "KILL", a))
        shim.wait_status(a, "STOPPED")
        ok(shim.ctr("tasks", "delete", a))
        # the group's shim still serves b
        assert ok(shim.ctr("tasks", "exec", "--exec-id", "e", b, "echo", "still")) == "still\n"
        assert len(shim.shim_pids()) == 1
        ok(shim.ctr("tasks", "kill", "-s", "KILL", b))
        shim.wait_status(b, "STOPPED")
        ok(shim.ctr("tasks", "delete", b))
        for c in (a, b):
            ok(shim.ctr("containers", "delete", c))
        shim.assert_clean(b, group)
    finally:
        for c in (a, b):
            shim.remove(c)


def test_kill_9_of_the_shim_leaves_nothing(shim: Shim, cid: str) -> None:
    ok(shim.run(cid, "sh", "-c", "sleep 1000 & exec sleep 1001", flags=("-d",)))
    pid = shim.wait_status(cid, "RUNNING")
    shims = shim.shim_pids()
    assert len(shims) == 1
    # only the shim holds its listening socket (not its fork server or workers): once it is dead, connections
    # are refused, so `delete` and a later `start` of its group see it as dead
    assert listeners_of(shim.socket_of(cid)) == shims
    os.kill(shims[0], signal.SIGKILL)
    # containerd notices, runs `shim delete`: the container is killed, its state, rootfs and socket go
    deadline = time.monotonic() + 20
    while shim.tasks().get(cid, (0, ""))[1] not in ("STOPPED", "") and time.monotonic() < deadline:
        time.sleep(0.1)
    shim.ctr("tasks", "delete", cid)
    ok(shim.ctr("containers", "delete", cid))
    shim.assert_clean(cid)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")


# ---------------------------------------------------------------------------- enclave containers

@pytest.fixture(scope="module")
def pal_v2(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test PAL")
    from tests.fixtures.pal.build import build_pal

    return str(build_pal("pal_v2", tmp_path_factory.mktemp("pal")))


def test_enclave_container_through_the_rune_shim(shim: Shim, cid: str, pal_v2: str) -> None:
    flags = ("-d", "--env", "ENCLAVE_TYPE=sim", "--env", f"ENCLAVE_RUNTIME_PATH={pal_v2}",
             "--env", "ENCLAVE_RUNTIME_ARGS=log=/tmp/pal.log")
    ok(shim.run(cid, "sh", "-c", "echo payload > /tmp/out; sleep 1000", flags=flags))
    pid = shim.wait_status(cid, "RUNNING")
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "init-runelet"
    lines = ok(shim.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "cat /tmp/out; cat /tmp/pal.log")) \
        .splitlines()
    assert lines[0] == "payload"
    calls = [x.split(" ")[0] for x in lines[1:]]
    assert calls[:4] == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec"]
    assert shim.ctr("tasks", "exec", "--exec-id", "e2", cid, "sh", "-c", "exit 6").returncode == 6
    ok(shim.ctr("tasks", "kill", "-s", "TERM", cid))
    shim.wait_status(cid, "STOPPED")


def test_rune_attest_on_an_enclave_container_the_shim_started(shim: Shim, cid: str, rune_bin: str,
                                                             tmp_path: Path) -> None:
    """`rune --root <shim root> attest` on a builtin:sim enclave container that `ctr run -d` started through the
    shim: the REPORT carries the signed image's measurement and ISV fields and is MAC'd for the sim QE with the
    platform's report key; with --isRA the sim QE quotes it. The shim and rune share the state root (the agent
    socket is in the container's state dir) and the simulated platform."""
    wasmtime = pytest.importorskip("wasmtime", reason="wasmtime (Python) is not installed")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from inclavare.enclave import image
    from inclavare.formats.dcap import Quote3
    from inclavare.formats.sgx import Report
    from inclavare.sim.platform import SimPlatform
    from inclavare.sim.report import EnclaveIdentity, ReportKey

    key = rsa.generate_private_key(public_exponent=3, key_size=3072).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    spin = wasmtime.wat2wasm("""(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))""")
    img = image.sign(image.build(spin, "wasm", image.EnclaveSettings(isvprodid=7, isvsvn=3)), key)
    want = image.load(img)
    enclave_dir = tmp_path / "enclave"
    enclave_dir.mkdir()
    (enclave_dir / "enclave.img").write_bytes(img)
    flags = ("-d", "--env", "ENCLAVE_TYPE=sim", "--env", "ENCLAVE_RUNTIME_PATH=builtin:sim",
             "--mount", f"type=bind,src={enclave_dir},dst=/enclave,options=rbind:ro")
    ok(shim.run(cid, "spin", flags=flags))
    pid = shim.wait_status(cid, "RUNNING")
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "init-runelet"
    sim_dir = shim.sim_state_dir
    env = dict(os.environ, INCLAVARE_SIM_STATE_DIR=sim_dir)
    rune = [rune_bin, "--root", shim.state_dir]
    # the local REPORT, for the platform's quoting enclave
    rf = tmp_path / "report.bin"
    p = subprocess.run([*rune, "attest", "--reportFile", str(rf), cid], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    raw = rf.read_bytes()
    shown = json.loads(p.stdout)
    assert len(raw) == 432 and shown["report"] == raw.hex()
    body = Report.parse(raw).body
    assert (body.mrenclave, body.mrsigner) == (want.mrenclave, want.mrsigner)
    assert (body.isvprodid, body.isvsvn) == (7, 3)
    assert (shown["mrenclave"], shown["mrsigner"]) == (want.mrenclave.hex(), want.mrsigner.hex())
    qe = SimPlatform.open(sim_dir).qe_identity
    report_key = ReportKey.load(sim_dir, create=False)
    assert report_key.verify_report(raw, qe)  # made inside the shim's enclave, for the QE, with this platform
    other = EnclaveIdentity(mrenclave=bytes(32), mrsigner=bytes(32), attributes=qe.attributes, miscselect=0,
                            isvprodid=1, isvsvn=1)
    assert not report_key.verify_report(raw, other)
    # and a quote over a fresh REPORT of the same enclave
    qf, rf2 = tmp_path / "quote.bin", tmp_path / "report2.bin"
    p = subprocess.run([*rune, "attest", "--isRA", "--quote-type", "ecdsa", "--quoteFile", str(qf), "--reportFile",
                        str(rf2), cid], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    quote = Quote3.parse(qf.read_bytes())
    assert quote.report_body.pack() == rf2.read_bytes()[:384]
    assert (quote.report_body.mrenclave, quote.report_body.isvprodid) == (want.mrenclave, 7)
    assert json.loads(p.stdout)["quote"] == qf.read_bytes().hex()
    # the shim still serves it: kill and delete leave nothing
    ok(shim.ctr("tasks", "kill", "-s", "KILL", cid))
    shim.wait_status(cid, "STOPPED")
    ok(shim.ctr("tasks", "delete", cid))
    ok(shim.ctr("containers", "delete", cid))
    shim.assert_clean(cid)


def test_socket_address_matches_containerds_runc_shim(shim: Shim, cid: str, rune_bin: str) -> None:
    """containerd's own shim (runc v2, rune as its runtime binary) computes the same address we do."""
    from inclavare.cli.shim import socket_address

    if not shutil.which("containerd-shim-runc-v2"):
        pytest.skip("containerd-shim-runc-v2 is not installed")
    ok(shim.ctr("run", "-d", "--runtime", "io.containerd.runc.v2", "--runc-binary", rune_bin, "--runc-root",
                os.path.join(shim.root, "runc-shim"), IMAGE, cid, "sleep", "1000"))
    shim.wait_status(cid, "RUNNING")
    assert (shim.bundle(cid) / "address").read_text() == socket_address(shim.ctrd.address, shim.ctrd.namespace, cid)


def test_shims_come_from_the_warm_template(shim: Shim, cid: str) -> None:
    """After a first start, resident shims are forked by the shim template (comm rune-shim-tmpl), which
    lives in containerd's socket directory, is not itself a shim, and serves later containers."""
    ok(shim.run(cid + "-w", "true", flags=("--rm",)))  # makes sure a template has been started
    deadline = time.monotonic() + 20
    while not list(Path("/run/containerd/s").glob("rune-template-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    ok(shim.run(cid, "sleep", "1000", flags=("-d",)))
    shim.wait_status(cid, "RUNNING")
    (pid,) = shim.shim_pids()
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert Path(f"/proc/{ppid}/comm").read_text().strip() == "rune-shim-tmpl"
    assert Path(f"/proc/{pid}/cwd").resolve() == shim.bundle(cid).resolve()
    assert os.getsid(pid) == pid  # a session of its own
    assert ok(shim.ctr("tasks", "exec", "--exec-id", "e", cid, "echo", "served")) == "served\n"


def _spares(shim: Shim) -> list[int]:
    """The template's spare shims (comm rune-shim-spare, their parent the template)."""
    from inclavare.testing.shimprocs import template_pids

    tmpl = template_pids(shim.ctrd.address)
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if comm == "rune-shim-spare" and ppid in tmpl:
            found.append(int(pid))
    return found


def test_a_spare_shim_serves_the_next_start_and_ends_with_the_template(shim: Shim, cid: str) -> None:
    """Once no start has come for a moment, the template builds a spare shim (core, fork server, workers)
    for the namespace it serves; the next start hands it the socket: the spare's pid is the new shim, named
    rune-shim, in the container's bundle, its fork server renamed likewise. A new spare follows; it ends with
    the template."""
    from inclavare.testing.shimprocs import kill_templates

    ok(shim.run(cid + "-w", "true", flags=("--rm",)))  # a template, then a start through it
    ok(shim.run(cid + "-x", "true", flags=("--rm",)))
    deadline = time.monotonic() + 20
    while not (spares := _spares(shim)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(spares) == 1
    ok(shim.run(cid, "sleep", "1000", flags=("-d",)))
    shim.wait_status(cid, "RUNNING")
    assert shim.shim_pids() == spares
    (pid,) = spares
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "rune-shim"
    assert Path(f"/proc/{pid}/cwd").resolve() == shim.bundle(cid).resolve()
    assert ok(shim.ctr("tasks", "exec", "--exec-id", "e", cid, "echo", "served")) == "served\n"
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert {Path(f"/proc/{c}/comm").read_text().strip() for c in children} >= {"rune-shim"}  # its fork server
    deadline = time.monotonic() + 20
    while not (after := _spares(shim)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(after) == 1 and after != spares
    ok(shim.ctr("tasks", "kill", "-s", "KILL", cid))
    shim.wait_status(cid, "STOPPED")
    kill_templates(shim.ctrd.address)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{after[0]}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{after[0]}") or Path(f"/proc/{after[0]}/stat").read_text().split()[2] == "Z"


def test_spares_are_born_warm_once_enclaves_run_in_the_root(shim: Shim, cid: str) -> None:
    """When enclave containers run in a shim's state root (the marker an enclave create leaves there), the template
    imports the enclave runtimes once, so the next spares -- and their fork servers -- are born with them (no
    shim pays the imports on its first enclave Create); before that, spares stay small."""
    pytest.importorskip("wasmtime")
    from inclavare.testing.shimprocs import kill_templates

    def spare_maps() -> str:
        deadline = time.monotonic() + 20
        while not (found := _spares(shim)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(found) == 1
        return Path(f"/proc/{found[0]}/maps").read_text()

    kill_templates(shim.ctrd.address)  # a fresh template: one that has not warmed up yet
    from inclavare.shim.warmup import marker_path

    marker = Path(marker_path(shim.state_dir))
    marker.unlink(missing_ok=True)
    ok(shim.run(cid + "-a", "true", flags=("--rm",)))
    ok(shim.run(cid + "-b", "true", flags=("--rm",)))
    assert "wasmtime" not in spare_maps()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch(mode=0o600)  # what an enclave create in this root leaves (shim.warmup.note_enclaves)
    ok(shim.run(cid + "-c", "true", flags=("--rm",)))  # takes the small spare; the next one is built warm
    assert "wasmtime" in spare_maps()
    marker.unlink()


def test_oom_kill_is_published(shim: Shim, cid: str) -> None:
    if unmounted_v1_hierarchies():
        pytest.skip("cgroup v1 controllers listed but not mounted")
    ev = subprocess.Popen(shim.ctrd.ctr_cmd("events"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    p = shim.run(cid, "sh", "-c", "x=$(yes | head -c 200000000); echo survived",
                 flags=("--rm", "--memory-limit", str(16 << 20)), timeout=120)
    topics = topics_for(ev, cid, "/tasks/delete")
    assert p.returncode == 128 + 9, (p.returncode, p.stdout, p.stderr)
    assert "/tasks/oom" in topics, topics
    assert topics.index("/tasks/oom") < topics.index("/tasks/delete")


def test_50_concurrent_run_rm_leave_nothing_behind(shim: Shim) -> None:
    import concurrent.futures

    tag = "cc" + uuid.uuid4().hex[:6]
    ids = [f"{tag}-{i}" for i in range(50)]

    def one(c: str) -> subprocess.CompletedProcess[str]:
        return shim.run(c, "sh", "-c", f"echo hello-{c}", flags=("--rm",), timeout=180)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = dict(zip(ids, pool.map(one, ids), strict=True))
        failed = {c: (p.returncode, p.stderr) for c, p in results.items()
                  if p.returncode != 0 or p.stdout != f"hello-{c}\n"}
        assert not failed, failed
        for c in ids:
            shim.assert_clean(c)
        assert not [s for s in ok(shim.ctr("snapshots", "ls")).split() if s.startswith(tag)]
    finally:
        for c in ids:
            if c in shim.tasks() or c in shim.ctr("containers", "ls", "-q").stdout.split():
                shim.remove(c)


def test_containerd_restart_while_the_shim_serves(shim: Shim, cid: str) -> None:
    """containerd reconnects to the running shim after its restart (Connect, State); exec, kill and delete
    then work."""
    ok(shim.run(cid, "sleep", "1000", flags=("-d",)))
    pid = shim.wait_status(cid, "RUNNING")
    (shim_pid,) = shim.shim_pids()
    shim.ctrd.restart()
    assert shim.tasks()[cid] == (pid, "RUNNING")
    assert shim.shim_pids() == [shim_pid]
    assert ok(shim.ctr("tasks", "exec", "--exec-id", "after", cid, "sh", "-c", "echo $((6*7))")) == "42\n"
    ok(shim.ctr("tasks", "kill", "-s", "KILL", cid))
    shim.wait_status(cid, "STOPPED")
    ok(shim.ctr("tasks", "delete", cid))
    ok(shim.ctr("containers", "delete", cid))
    shim.assert_clean(cid)


def test_a_failing_create_is_reported_and_leaves_nothing(shim: Shim, cid: str) -> None:
    p = shim.run(cid, "/no/such/program", flags=("--rm",))
    assert p.returncode != 0
    assert "/no/such/program" in p.stderr and "no such file or directory" in p.stderr.lower(), p.stderr
    shim.ctr("containers", "delete", cid)
    shim.assert_clean(cid)


def test_exec_of_a_missing_program_keeps_the_container(shim: Shim, cid: str, running: int) -> None:
    p = shim.ctr("tasks", "exec", "--exec-id", "bad", cid, "/no/such/program")
    assert p.returncode != 0 and "/no/such/program" in p.stderr, p.stderr
    assert shim.tasks()[cid] == (running, "RUNNING")
    assert ok(shim.ctr("tasks", "exec", "--exec-id", "good", cid, "echo", "fine")) == "fine\n"
