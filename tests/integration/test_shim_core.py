"""The shim's process core against real kernels: containers made by the fork server's workers, reaped by the
supervisor, stdio through FIFOs, binary:// loggers, file:// and terminals; driven in-process (no ttrpc)."""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.errors import ShimError
from inclavare.shim.core import ShimCore
from inclavare.shim.stdio import Stdio
from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShimCore]:
    sim_dir = tmp_path_factory.mktemp("sim-platform")
    old = os.environ.get("INCLAVARE_SIM_STATE_DIR")
    os.environ["INCLAVARE_SIM_STATE_DIR"] = str(sim_dir)  # the fork server's workers inherit it
    c = ShimCore(str(tmp_path_factory.mktemp("shim") / "root"), namespace="shimtest", reap_orphans=False,
                 allow_threads=True, on_exit=_listener)
    yield c
    for cid in c.ids():
        try:
            c.kill(cid, "", 9)
        except ShimError:
            pass
        try:
            c.wait(cid, "", timeout=10)
            c.delete(cid)
        except ShimError:
            pass
    c.shutdown()
    if old is None:
        del os.environ["INCLAVARE_SIM_STATE_DIR"]
    else:
        os.environ["INCLAVARE_SIM_STATE_DIR"] = old


EXITS: list[tuple[str, str, int, int, int]] = []  # what the core told its listener: (id, exec_id, pid, status, at)
HOLD: dict[str, threading.Event] = {}  # container id -> the listener waits for this before taking its exit


def _listener(*exit: object) -> None:
    gate = HOLD.get(str(exit[0]))
    if gate is not None:
        gate.wait(30)
    EXITS.append(exit)  # type: ignore[arg-type]


@pytest.fixture
def cid() -> str:
    return "s-" + uuid.uuid4().hex[:12]


class Fifos:
    """containerd's side of a process's stdio: FIFOs it made, its read ends of stdout/stderr, its writer."""

    def __init__(self, d: Path, stdin: bool = False, stderr: bool = True) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.paths = {n: str(d / n) for n in ("stdin", "stdout", "stderr")}
        for p in self.paths.values():
            os.mkfifo(p)
        self.readers = {n: self._reader(self.paths[n]) for n in ("stdout", "stderr")}
        self.use_stdin, self.use_stderr = stdin, stderr
        self.writer = -1

    @staticmethod
    def _reader(path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        return fd

    def stdio(self, terminal: bool = False) -> Stdio:
        return Stdio(self.paths["stdin"] if self.use_stdin else "", self.paths["stdout"],
                     self.paths["stderr"] if self.use_stderr and not terminal else "", terminal)

    def open_writer(self) -> int:
        self.writer = os.open(self.paths["stdin"], os.O_WRONLY)
        return self.writer

    def read(self, name: str, timeout: float = 20.0, until: bytes | None = None) -> bytes:
        """Everything up to EOF (or up to ``until`` once it is seen)."""
        fd = self.readers[name]
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.1)
            if not r:
                continue
            data = os.read(fd, 65536)
            if not data:
                return out
            out += data
            if until is not None and until in out:
                return out
        raise AssertionError(f"{name}: no EOF within {timeout}s; got {out!r}")

    def close(self) -> None:
        for fd in (*self.readers.values(), self.writer):
            if fd >= 0:
                os.close(fd)


def run_to_exit(core: ShimCore, cid: str, bundle: str, stdio: Stdio) -> tuple[int, int]:
    core.create(cid, bundle, stdio)
    core.start(cid)
    status, at = core.wait(cid, timeout=30)
    core.delete(cid)
    return status, at


def test_exit_status_and_output_through_fifos(core, cid, make_bundle, tmp_path, rune_bin):
    b = make_bundle(["sh", "-c", "echo hi; echo oops >&2; exit 3"])
    f = Fifos(tmp_path / "io")
    before = time.time_ns()
    pid = core.create(cid, b, f.stdio())
    assert pid > 0 and core.state(cid)["status"] == "created"
    # the rune CLI reads the same state root
    p = subprocess.run([rune_bin, "--root", core.root, "state", cid], capture_output=True, text=True, check=True)
    assert json.loads(p.stdout)["status"] == "created" and json.loads(p.stdout)["pid"] == pid
    assert core.start(cid) == pid
    status, at = core.wait(cid, timeout=30)
    assert status == 3 and before <= at <= time.time_ns()
    assert core.state(cid)["status"] == "stopped" and core.state(cid)["exit_status"] == 3
    assert core.delete(cid) == (pid, 3, at)
    assert f.read("stdout") == b"hi\n" and f.read("stderr") == b"oops\n"
    f.close()
    assert not Path(core.root, cid).exists()
    with pytest.raises(ShimError) as e:
        core.state(cid)
    assert e.value.code == "not_found"


def test_a_signal_is_reported_as_128_plus_its_number(core, cid, make_bundle):
    b = make_bundle(["sleep", "100"])
    core.create(cid, b, Stdio())
    core.start(cid)
    core.kill(cid, "", signal.SIGKILL)
    assert core.wait(cid, timeout=30)[0] == 128 + signal.SIGKILL
    with pytest.raises(ShimError) as e:
        core.kill(cid, "", signal.SIGTERM)
    assert e.value.code == "not_found" and "already finished" in str(e.value)
    core.delete(cid)


def test_a_process_that_fails_at_once_is_not_lost(core, cid, make_bundle):
    # the init exits before start returns: its exit must still be recorded (the early-exit race)
    b = make_bundle(["/bin/false"])
    core.create(cid, b, Stdio())
    core.start(cid)
    assert core.wait(cid, timeout=30)[0] == 1
    core.delete(cid)


def test_delete_returns_only_once_the_listener_has_the_exit(core, cid, make_bundle):
    """The Task service publishes TaskExit from the listener and TaskDelete after delete: delete of an exited init
    must not overtake its listener (the reaper records the exit first, then calls the listener)."""
    gate = HOLD[cid] = threading.Event()
    try:
        core.create(cid, make_bundle(["true"]), Stdio())
        core.start(cid)
        deadline = time.monotonic() + 30
        while core.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert core.state(cid)["status"] == "stopped"  # reaped; the listener is held
        result: list[tuple[int, int, int]] = []
        t = threading.Thread(target=lambda: result.append(core.delete(cid)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not result  # delete waits for the listener
        gate.set()
        t.join(30)
        assert result and result[0][1] == 0
        assert [e[3] for e in EXITS if e[0] == cid] == [0]
    finally:
        gate.set()
        HOLD.pop(cid, None)


def test_exec_output_status_signal_and_pids(core, cid, make_bundle, tmp_path):
    b = make_bundle(["sleep", "100"])
    core.create(cid, b, Stdio())
    core.start(cid)
    f = Fifos(tmp_path / "exec1")
    core.exec(cid, "e1", {"args": ["sh", "-c", "echo $((6*7)); exit 5"], "cwd": "/", "env": ["PATH=/bin"]},
              f.stdio())
    assert core.state(cid, "e1")["status"] == "created"
    epid = core.start(cid, "e1")
    assert core.wait(cid, "e1", timeout=30)[0] == 5
    assert f.read("stdout") == b"42\n"
    assert core.delete(cid, "e1")[:2] == (epid, 5)
    f.close()
    core.exec(cid, "e2", {"args": ["sleep", "50"], "cwd": "/"}, Stdio())
    epid = core.start(cid, "e2")
    procs = core.pids(cid)
    assert {"pid": epid, "exec_id": "e2"} in procs
    assert core.state(cid)["pid"] in [p["pid"] for p in procs]
    with pytest.raises(ShimError):
        core.delete(cid, "e2")  # still running
    core.kill(cid, "e2", signal.SIGTERM)
    assert core.wait(cid, "e2", timeout=30)[0] == 128 + signal.SIGTERM
    core.delete(cid, "e2")
    with pytest.raises(ShimError) as e:
        core.delete(cid)
    assert e.value.code == "failed_precondition" and "running" in str(e.value)
    core.kill(cid, "", signal.SIGKILL, all_procs=True)
    assert core.wait(cid, timeout=30)[0] == 137
    core.delete(cid)


def test_exec_exits_are_reported_before_the_init_exit(core, cid, make_bundle):
    b = make_bundle(["sleep", "100"])
    init_pid = core.create(cid, b, Stdio())
    core.start(cid)
    pids = []
    for e in ("a", "b"):
        core.exec(cid, e, {"args": ["sleep", "100"], "cwd": "/"}, Stdio())
        pids.append(core.start(cid, e))
    core.kill(cid, "", signal.SIGKILL)
    assert core.wait(cid, timeout=30)[0] == 137
    mine = [x for x in EXITS if x[0] == cid]
    assert [x[1] for x in mine[:2]] in (["a", "b"], ["b", "a"]) and mine[2][1:4] == ("", init_pid, 137)
    assert {x[2] for x in mine[:2]} == set(pids) and all(x[3] == 137 for x in mine)
    with pytest.raises(ShimError):
        core.exec(cid, "c", {"args": ["true"], "cwd": "/"}, Stdio())
    core.delete(cid, "a")
    core.delete(cid, "b")
    core.delete(cid)


def test_pause_resume_update_stats(core, cid, make_bundle):
    b = make_bundle(["sleep", "100"])
    core.create(cid, b, Stdio())
    core.start(cid)
    core.pause(cid)
    assert core.state(cid)["status"] == "paused"
    core.resume(cid)
    with pytest.raises(ShimError) as e:
        core.resume(cid)  # not paused any more
    assert e.value.code == "failed_precondition"
    assert core.state(cid)["status"] == "running"
    core.update(cid, {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    state = json.loads((Path(core.root) / cid / "state.json").read_text())
    assert state["config"]["linux"]["resources"]["memory"]["limit"] == 64 << 20
    stats = core.stats(cid)
    assert stats["memory"]["usage"]["limit"] == 64 << 20 and stats["pids"]["limit"] == 50
    with pytest.raises(ShimError) as e:
        core.update(cid, {"memory": {"limit": "lots"}})
    assert e.value.code == "invalid_argument"
    core.pause(cid)
    core.kill(cid, "", signal.SIGKILL)  # a paused container is thawed so that the kill lands
    assert core.wait(cid, timeout=30)[0] == 137
    with pytest.raises(ShimError):
        core.stats(cid)
    core.delete(cid)


def test_hooks_run_in_a_worker(core, cid, make_bundle, tmp_path):
    def hooks(cfg: dict) -> None:
        cfg["hooks"] = {k: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {tmp_path}/{k}.json"]}]
                        for k in ("poststart", "poststop")}

    b = make_bundle(["true"], edit=hooks)
    assert run_to_exit(core, cid, b, Stdio())[0] == 0
    assert json.loads((tmp_path / "poststart.json").read_text())["id"] == cid
    assert json.loads((tmp_path / "poststop.json").read_text())["status"] == "stopped"


def test_stdin_through_the_fifo_and_close_io(core, cid, make_bundle, tmp_path):
    b = make_bundle(["sh", "-c", "read a; echo got:$a; cat; echo done"])
    f = Fifos(tmp_path / "io", stdin=True)
    core.create(cid, b, f.stdio())
    w = f.open_writer()
    core.start(cid)
    os.write(w, b"one\ntwo\n")
    assert f.read("stdout", until=b"two\n") == b"got:one\ntwo\n"
    os.close(w)
    f.writer = -1
    # the client closed its writer, but the shim still holds one: the process does not see EOF yet ...
    assert core.state(cid)["status"] == "running"
    core.close_io(cid)
    assert core.wait(cid, timeout=30)[0] == 0
    assert f.read("stdout") == b"done\n"
    core.delete(cid)
    f.close()


def test_terminal_with_resize(core, cid, make_bundle, tmp_path):
    b = make_bundle(["sh", "-c", "stty size; read x; stty size; exit 4"], terminal=True)
    f = Fifos(tmp_path / "io", stdin=True)
    core.create(cid, b, f.stdio(terminal=True))
    w = f.open_writer()
    core.resize_pty(cid, "", 123, 45)
    core.start(cid)
    assert b"45 123" in f.read("stdout", until=b"45 123")
    core.resize_pty(cid, "", 77, 33)
    os.write(w, b"\n")
    assert b"33 77" in f.read("stdout", until=b"33 77")
    assert core.wait(cid, timeout=30)[0] == 4
    core.delete(cid)
    f.close()


def test_exec_with_a_terminal(core, cid, make_bundle, tmp_path):
    b = make_bundle(["sleep", "100"])
    core.create(cid, b, Stdio())
    core.start(cid)
    f = Fifos(tmp_path / "io")
    core.exec(cid, "t", {"args": ["sh", "-c", "tty; exit 6"], "cwd": "/", "terminal": True}, f.stdio(terminal=True))
    core.start(cid, "t")
    assert core.wait(cid, "t", timeout=30)[0] == 6
    core.delete(cid, "t")
    assert f.read("stdout").startswith(b"/dev/pts/")
    f.close()
    core.kill(cid, "", 9)
    core.wait(cid, timeout=30)
    core.delete(cid)


LOGGER = """#!/bin/sh
# a containerd binary:// logger: fd 3 = stdout, fd 4 = stderr, fd 5 = ready
out="$2"
echo "$# $1 $CONTAINER_ID $CONTAINER_NAMESPACE ${HOME:-nohome}" > "$out.env"
exec 5>&-
cat <&3 > "$out.out" &
cat <&4 > "$out.err"
wait
touch "$out.done"
"""


def test_binary_logger_receives_the_output(core, cid, make_bundle, tmp_path):
    logger = tmp_path / "logger.sh"
    logger.write_text(LOGGER)
    logger.chmod(0o755)
    out = tmp_path / "log"
    b = make_bundle(["sh", "-c", "echo to-out; echo to-err >&2; exit 2"])
    status, _ = run_to_exit(core, cid, b, Stdio("", f"binary://{logger}?dir={out}", "", False))
    assert status == 2
    deadline = time.monotonic() + 20
    while not (tmp_path / "log.done").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / "log.out").read_text() == "to-out\n"
    assert (tmp_path / "log.err").read_text() == "to-err\n"
    assert (tmp_path / "log.env").read_text() == f"2 dir {cid} shimtest nohome\n"


def test_file_uri_appends_stdout_and_stderr(core, cid, make_bundle, tmp_path):
    log = tmp_path / "logs" / "c.log"
    b = make_bundle(["sh", "-c", "echo a; echo b >&2"])
    assert run_to_exit(core, cid, b, Stdio("", f"file://{log}", "", False))[0] == 0
    assert sorted(log.read_text().splitlines()) == ["a", "b"]
    assert stat.S_IMODE(log.stat().st_mode) == 0o644
    assert run_to_exit(core, cid + "x", b, Stdio("", f"file://{log}", "", False))[0] == 0
    assert len(log.read_text().splitlines()) == 4  # appended


def test_bad_requests_are_clear_and_leave_nothing(core, cid, make_bundle, tmp_path, rune_bin):
    with pytest.raises(ShimError, match="no such file|No such file|config.json"):
        core.create(cid, str(tmp_path / "nope"), Stdio())
    assert cid not in core.ids() and not Path(core.root, cid).exists()
    b = make_bundle(["true"])
    with pytest.raises(ShimError, match="unknown stdio scheme"):
        core.create(cid, b, Stdio("", "tcp://x", "", False))
    with pytest.raises(ShimError, match="not a FIFO"):
        core.create(cid, b, Stdio("", str(b), "", False))
    with pytest.raises(ShimError, match="process.terminal is false but the request's terminal is true"):
        core.create(cid, b, Stdio(terminal=True))
    core.create(cid, b, Stdio())
    with pytest.raises(ShimError) as e:
        core.create(cid, b, Stdio())
    assert e.value.code == "already_exists"
    # a container of the same root made by the rune CLI is refused, and left alone
    subprocess.run([rune_bin, "--root", core.root, "create", "--bundle", b, cid + "cli"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with pytest.raises(ShimError) as e:
        core.create(cid + "cli", b, Stdio())
    assert e.value.code == "already_exists" and Path(core.root, cid + "cli").exists()
    subprocess.run([rune_bin, "--root", core.root, "delete", "--force", cid + "cli"], check=True)
    with pytest.raises(ShimError) as e:
        core.exec(cid, "x", {"args": []}, Stdio())
    assert e.value.code == "invalid_argument"
    core.delete(cid)  # a created container is deleted, as runc does
    assert not Path(core.root, cid).exists()


def test_rootfs_mounts_of_the_request_are_mounted_and_undone(core, cid, make_bundle, tmp_path):
    import shutil

    from inclavare.shim.rootfs import is_mount_point, unmount_all

    b = Path(make_bundle(["sh", "-c", "cat /marker"]))
    snapshot = tmp_path / "snapshot"
    shutil.move(str(b / "rootfs"), snapshot)  # the image's files, elsewhere: containerd's snapshot
    (snapshot / "marker").write_text("from-the-snapshot\n")
    f = Fifos(tmp_path / "io")
    mounts = [{"type": "bind", "source": str(snapshot), "options": ["rbind", "rw"]}]
    try:
        core.create(cid, str(b), f.stdio(), rootfs=mounts)
        assert is_mount_point(str(b / "rootfs"))
        core.start(cid)
        assert core.wait(cid, timeout=30)[0] == 0
        core.delete(cid)
        assert f.read("stdout") == b"from-the-snapshot\n"
        assert not is_mount_point(str(b / "rootfs"))
        f.close()
        with pytest.raises(ShimError, match=r"rootfs\[0\]"):
            core.create(cid, str(b), Stdio(), rootfs=[{"type": "bind", "source": str(tmp_path / "none"),
                                                       "options": ["rbind"]}])
        assert not is_mount_point(str(b / "rootfs")) and cid not in core.ids()
    finally:
        unmount_all(str(b / "rootfs"))  # whatever happened above


def _fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return out


def _quiet_forkserver_fds(core: ShimCore) -> list[str]:
    """The fork server's open fds once it is idle: no busy worker, its pool of idle ones full, and the
    same listing twice in a row."""
    from inclavare.shim.forkserver import _Server

    pid = core.forkserver.pid
    last: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        fds = sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        fds = [f if f.startswith("anon_inode:") else f.split(":")[0] for f in fds]
        # one pidfd per idle worker (the server also holds what it inherited from this test process: a library
        # run here earlier, e.g. wasmtime, leaves eventfds and epoll fds, which it leaves alone)
        if len(children) == _Server.POOL and fds.count("anon_inode:[pidfd]") == _Server.POOL and fds == last:
            return fds
        last = fds
        time.sleep(0.05)
    raise AssertionError(f"the fork server never settled: children {children}, fds {last}")


def _mounts(*near: str) -> list[str]:
    """Mount points under any of ``near`` (other jobs on the machine mount and unmount elsewhere)."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted(p for p in points if any(p.startswith(n) for n in near))


def test_twenty_containers_at_once_leave_nothing_behind(core, make_bundle, tmp_path):
    base = "c20-" + uuid.uuid4().hex[:8]
    bundles = [make_bundle(["sh", "-c", f"echo n{i}; exit {i}"]) for i in range(20)]
    # warm-up: the first container loads what the later ones share
    assert run_to_exit(core, base + "w", bundles[0], Stdio())[0] == 0
    near = (str(tmp_path), core.root, "/tmp/inclavare-rootfs-")
    fds, mounts = _fds(), _mounts(*near)
    fs_fds = _quiet_forkserver_fds(core)
    fifos = [Fifos(tmp_path / f"io{i}") for i in range(20)]
    results: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            results[i] = run_to_exit(core, f"{base}-{i}", bundles[i], fifos[i].stdio())[0]
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {i: i for i in range(20)}
    for i, f in enumerate(fifos):
        assert f.read("stdout") == f"n{i}\n".encode()
        f.close()
    assert _fds() == fds  # nothing of the shim's stays open
    assert _quiet_forkserver_fds(core) == fs_fds  # nor of the fork server's
    assert _mounts(*near) == mounts == []
    assert os.listdir(core.root) == []
    leftovers = subprocess.run(["find", "/sys/fs/cgroup", "-name", f"*{base}*"], capture_output=True,
                               text=True).stdout
    assert leftovers == ""


def test_an_enclave_sim_container(core, cid, make_bundle, tmp_path):
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from inclavare.enclave import image

    key = rsa.generate_private_key(public_exponent=3, key_size=3072).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    img = image.sign(image.build(Path("/bin/busybox").read_bytes(), "native", image.EnclaveSettings()), key)

    def enclave(cfg: dict) -> None:
        cfg["process"]["env"] += ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim"]

    def bundle(args: list[str]) -> str:
        b = make_bundle(args, edit=enclave)
        (Path(b) / "rootfs" / "enclave").mkdir()
        (Path(b) / "rootfs" / "enclave" / "enclave.img").write_bytes(img)
        return str(b)

    f = Fifos(tmp_path / "io")
    status, _ = run_to_exit(core, cid, bundle(["sh", "-c", "echo native-in-sim; exit 4"]), f.stdio())
    assert status == 4
    assert f.read("stdout") == b"native-in-sim\n"
    f.close()
    # exec goes through the init-runelet's agent
    core.create(cid + "x", bundle(["sleep", "100"]), Stdio())
    core.start(cid + "x")
    assert json.loads((Path(core.root) / (cid + "x") / "state.json").read_text()).get("enclave")
    f = Fifos(tmp_path / "exec")
    core.exec(cid + "x", "e", {"args": ["sh", "-c", "echo exec-in-sim; exit 6"], "cwd": "/"}, f.stdio())
    core.start(cid + "x", "e")
    assert core.wait(cid + "x", "e", timeout=30)[0] == 6
    assert f.read("stdout") == b"exec-in-sim\n"
    core.delete(cid + "x", "e")
    f.close()
    core.kill(cid + "x", "", signal.SIGKILL)
    core.wait(cid + "x", timeout=30)
    core.delete(cid + "x")


def test_a_create_failing_after_the_carrier_puts_the_bundle_back(core, cid, make_bundle, tmp_path, monkeypatch):
    """A carrier rewrote config.json, then the runtime refused the container: the original config.json is back,
    the request's rootfs is unmounted, and the container is not known."""
    import shutil

    from inclavare.shim.rootfs import is_mount_point, unmount_all
    from tests.unit.sgx_helpers import rsa3072_e3_pem
    from tests.unit.shim.test_carrier import WASM

    key = tmp_path / "signing.pem"
    key.write_bytes(rsa3072_e3_pem(0))
    key.chmod(0o600)
    conf = tmp_path / "config.toml"
    conf.write_text(f'[enclave_runtime]\nsignature_method = "local"\n[signature]\nlocal_key = "{key}"\n'
                    f'[bundle_cache]\nroot = "{tmp_path / "cache"}"\n')
    monkeypatch.setenv("INCLAVARE_SHIM_CONFIG", str(conf))

    def edit(cfg):
        cfg["process"]["env"].append("RUNE_CARRIER=wasm")
        cfg["linux"]["namespaces"].append({"type": "bogus"})

    b = Path(make_bundle(["/app.wasm"], edit=edit))
    snapshot = tmp_path / "snapshot"
    shutil.move(str(b / "rootfs"), snapshot)
    (snapshot / "app.wasm").write_bytes(WASM)
    before = (b / "config.json").read_bytes()
    try:
        with pytest.raises(ShimError, match="bogus"):
            core.create(cid, str(b), Stdio(), rootfs=[{"type": "bind", "source": str(snapshot),
                                                       "options": ["rbind", "rw"]}])
        assert (b / "config.json").read_bytes() == before
        assert not is_mount_point(str(b / "rootfs")) and cid not in core.ids()
        assert sorted(os.listdir(b)) == ["config.json", "rootfs"]
        from inclavare.services.bundlecache import BundleCache

        with BundleCache(str(tmp_path / "cache")) as cache:
            assert cache.stats().builds == 3  # the carrier did run (its valid result stays cached)
    finally:
        unmount_all(str(b / "rootfs"))
