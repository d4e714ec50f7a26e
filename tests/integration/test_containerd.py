"""rune under a real containerd 1.6: a private containerd started by the tests, the stock runc v2 shim
with rune as its runtime binary (`ctr run --runtime io.containerd.runc.v2 --runc-binary RUNE`).

The image is the registry-free busybox OCI layout tar built by inclavare.testing.image.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pty
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import is_root, needs_busybox

IMAGE = "localhost/busybox:latest"
NAMESPACE = "inclavare-test"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (containerd, namespaces, mounts, cgroups)"),
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                       reason="containerd/ctr are not installed (Debian package containerd)"),
    pytest.mark.skipif(not shutil.which("containerd-shim-runc-v2"),
                       reason="containerd-shim-runc-v2 is not installed (Debian package containerd)"),
    needs_busybox,
]


class Engine:
    """The private containerd plus the flags that make ctr use rune through the runc v2 shim."""

    def __init__(self, ctrd: Any, rune: str, rune_root: str) -> None:
        self.ctrd, self.rune, self.rune_root = ctrd, rune, rune_root
        self.runtime_flags = ["--runtime", "io.containerd.runc.v2", "--runc-binary", rune, "--runc-root", rune_root]

    def ctr(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("check", False)
        return self.ctrd.ctr(*args, **kw)  # type: ignore[no-any-return]

    def run(self, cid: str, *cmd: str, flags: tuple[str, ...] = (), **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.ctr("run", *self.runtime_flags, *flags, IMAGE, cid, *cmd, **kw)

    def run_argv(self, cid: str, *cmd: str, flags: tuple[str, ...] = ()) -> list[str]:
        return self.ctrd.ctr_cmd("run", *self.runtime_flags, *flags, IMAGE, cid, *cmd)  # type: ignore[no-any-return]

    def tasks(self) -> dict[str, tuple[int, str]]:
        """`ctr task ls` as {id: (pid, status)}."""
        out = self.ctr("tasks", "ls", check=True).stdout.splitlines()[1:]
        return {f[0]: (int(f[1]), f[2]) for f in (line.split() for line in out) if len(f) >= 3}

    def wait_status(self, cid: str, status: str, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while True:
            t = self.tasks().get(cid)
            if t is not None and t[1] == status:
                return t[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"task {cid} never became {status}; last seen: {t}")
            time.sleep(0.05)

    def rune_state_dir(self) -> str:
        # the runc v2 shim gives the runtime --root RUNC_ROOT/NAMESPACE
        return os.path.join(self.rune_root, self.ctrd.namespace)

    def remove(self, cid: str) -> None:
        """Kill and delete the task and the container, whatever state they are in."""
        if cid in self.tasks():
            self.ctr("tasks", "kill", "-a", "-s", "KILL", cid)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.ctr("tasks", "delete", cid).returncode == 0 or cid not in self.tasks():
                    break
                time.sleep(0.1)
            else:
                self.ctr("tasks", "delete", "--force", cid)
        self.ctr("containers", "delete", cid)


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def run_in_pty(argv: list[str], timeout: float = 30) -> tuple[str, int]:
    """Run argv with a new pty as its stdin/stdout/stderr (ctr -t wants a terminal); returns (output, rc)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: every slave end is closed
                    break
                if not data:
                    break
                out += data
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return out.decode(errors="replace"), rc


def wait_for_file_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared; output so far: {path.read_text(errors='replace')!r}")
        time.sleep(0.05)


def processes_mentioning(words: list[str]) -> list[str]:
    """Command lines of live processes that contain any of ``words``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(w in cmd for w in words):
            found.append(f"{pid}: {cmd}")
    return found


def unmounted_v1_hierarchies() -> list[str]:
    """v1 controllers that /proc/self/cgroup lists but nothing mounts; containerd's cgroup library
    ("cannot find cgroup mount destination") then cannot load any container's cgroup."""
    mounted: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _src, sopts = post.split()[:3]
            if fstype == "cgroup":
                mounted.update(sopts.split(","))
    missing = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, _path = line.rstrip("\n").split(":", 2)
            if hid != "0" and ctrls and not all(c in mounted for c in ctrls.split(",")):
                missing.append(ctrls)
    return missing


def freezer_state_file(pid: int) -> str | None:
    """The freezer state file of ``pid``'s cgroup (v1 freezer.state or v2 cgroup.freeze), if visible."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, ctrls, path = line.split(":", 2)
        if "freezer" in ctrls.split(","):
            f = f"/sys/fs/cgroup/freezer{path}/freezer.state"
            return f if os.path.exists(f) else None
        if hid == "0" and os.path.exists(f"/sys/fs/cgroup{path}/cgroup.freeze"):
            return f"/sys/fs/cgroup{path}/cgroup.freeze"
    return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[Engine]:
    from inclavare.testing.containerd import ContainerdError, PrivateContainerd
    from inclavare.testing.image import build_image_tar

    base = tmp_path_factory.mktemp("ctrd")
    ctrd = PrivateContainerd(str(base / "c"), namespace=NAMESPACE)
    try:
        try:
            ctrd.start()
        except ContainerdError as e:
            pytest.skip(f"private containerd does not start here: {e}")
        tar = build_image_tar(str(base / "busybox-oci.tar"), name=IMAGE)
        assert IMAGE in ctrd.import_image(tar)
        yield Engine(ctrd, rune_bin, str(base / "c" / "rune-root"))
    finally:
        ctrd.stop()


@pytest.fixture
def cid(engine: Engine) -> Iterator[str]:
    c = "ct-" + uuid.uuid4().hex[:10]
    yield c
    engine.remove(c)


@pytest.fixture
def running(engine: Engine, cid: str) -> int:
    """A detached container running `sleep`; returns its pid."""
    ok(engine.run(cid, "sleep", "1000", flags=("-d",)))
    return engine.wait_status(cid, "RUNNING")


# ---------------------------------------------------------------------------- ctr run (foreground)

@pytest.mark.parametrize("code", [0, 3, 42])
def test_run_foreground_stdout_stderr_exit_code(engine: Engine, cid: str, code: int) -> None:
    p = engine.run(cid, "sh", "-c", f"echo out-$((1+1)); echo err-$((2+2)) >&2; exit {code}", flags=("--rm",))
    assert p.returncode == code, p.stderr
    assert p.stdout == "out-2\n"
    assert "err-4\n" in p.stderr
    assert cid not in engine.tasks()
    assert not os.path.exists(os.path.join(engine.rune_state_dir(), cid))


def test_run_signal_death_gives_128_plus_signal(engine: Engine, cid: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(engine.run_argv(cid, "sleep", "1000"), stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        engine.wait_status(cid, "RUNNING")
        ok(engine.ctr("tasks", "kill", "-s", "KILL", cid))
        assert proc.wait(timeout=30) == 128 + 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_tty(engine: Engine, cid: str) -> None:
    out, rc = run_in_pty(engine.run_argv(cid, "sh", "-c", "tty; test -t 0 && test -t 1 && echo both-ttys; exit 5",
                                         flags=("--rm", "-t")))
    assert rc == 5, out
    assert "/dev/pts/0" in out
    assert "both-ttys" in out


# ---------------------------------------------------------------------------- ctr run -d, task lifecycle

def test_run_detached_ps_and_delete(engine: Engine, cid: str, rune_bin: str) -> None:
    ok(engine.run(cid, "sh", "-c", "sleep 1000 & exec sleep 1001", flags=("-d",)))
    pid = engine.wait_status(cid, "RUNNING")
    # rune holds the container in the root the shim gave it (so rune, not runc, runs it)
    st = subprocess.run([rune_bin, "--root", engine.rune_state_dir(), "state", cid], capture_output=True, text=True)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["pid"] == pid
    assert json.loads(st.stdout)["status"] == "running"
    # task ps: the init process and its background child, nothing else
    deadline = time.monotonic() + 10
    while True:
        lines = ok(engine.ctr("tasks", "ps", cid)).splitlines()
        pids = {int(line.split()[0]) for line in lines[1:] if line.strip()}
        if len(pids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pid in pids and len(pids) == 2, lines
    for p in pids:
        assert Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\0")
    ok(engine.ctr("tasks", "kill", "-s", "KILL", cid))
    engine.wait_status(cid, "STOPPED")
    ok(engine.ctr("tasks", "delete", cid))
    assert cid not in engine.tasks()
    assert not os.path.exists(os.path.join(engine.rune_state_dir(), cid))
    ok(engine.ctr("containers", "delete", cid))
    assert cid not in ok(engine.ctr("containers", "ls", "-q")).split()
    assert not os.path.exists(f"/proc/{pid}")


def test_kill_with_signals_reaches_trap(engine: Engine, cid: str, tmp_path: Path) -> None:
    script = ("trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 7' TERM; echo ready; "
              "while true; do sleep 0.05; done")
    out = tmp_path / "out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(engine.run_argv(cid, "sh", "-c", script), stdin=subprocess.DEVNULL, stdout=f,
                                stderr=f)
    try:
        wait_for_file_text(out, "ready", proc)
        ok(engine.ctr("tasks", "kill", "-s", "USR1", cid))
        wait_for_file_text(out, "got-USR1", proc)
        assert engine.tasks()[cid][1] == "RUNNING"
        ok(engine.ctr("tasks", "kill", "-s", "SIGTERM", cid))
        assert proc.wait(timeout=30) == 7
        assert "got-TERM" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pause_resume(engine: Engine, cid: str, running: int) -> None:
    freezer = freezer_state_file(running)
    ok(engine.ctr("tasks", "pause", cid))
    assert engine.tasks()[cid][1] == "PAUSED"
    if freezer:  # really frozen, as the kernel sees it
        assert Path(freezer).read_text().strip() in ("FROZEN", "1")
    ok(engine.ctr("tasks", "resume", cid))
    assert engine.tasks()[cid][1] == "RUNNING"
    if freezer:
        assert Path(freezer).read_text().strip() in ("THAWED", "0")
    assert ok(engine.ctr("tasks", "exec", "--exec-id", "after-resume", cid, "echo", "alive")) == "alive\n"


def test_metrics(engine: Engine, cid: str, running: int) -> None:
    missing = unmounted_v1_hierarchies()
    if missing:
        pytest.skip(f"cgroup v1 controllers {missing} are listed in /proc/self/cgroup but not mounted: "
                    "containerd's runc shim cannot load any task's cgroup here (runc fails alike)")
    out = ok(engine.ctr("tasks", "metrics", cid))
    assert cid in out and "pids.current" in out, out


# ---------------------------------------------------------------------------- task exec

def test_exec_without_tty(engine: Engine, cid: str, running: int) -> None:
    p = engine.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c",
                   "echo out; echo err >&2; tty; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4")
    assert p.returncode == 4, p.stderr
    assert p.stdout == "out\nnot a tty\nsleep 1000 \n"
    assert "err\n" in p.stderr
    # an exec'd process that dies of a signal (it is not the namespace's init, so SIGKILL applies)
    assert engine.ctr("tasks", "exec", "--exec-id", "e2", cid, "sh", "-c", "kill -9 $$").returncode == 128 + 9


def test_exec_with_tty(engine: Engine, cid: str, running: int) -> None:
    out, rc = run_in_pty(engine.ctrd.ctr_cmd("tasks", "exec", "-t", "--exec-id", "t1", cid, "sh", "-c",
                                             "tty; test -t 0 && echo stdin-tty; exit 6"))
    assert rc == 6, out
    assert "/dev/pts/" in out
    assert "stdin-tty" in out


# ---------------------------------------------------------------------------- errors from rune

def test_rune_error_is_shown_by_ctr(engine: Engine, cid: str) -> None:
    p = engine.run(cid, "/no/such/program", flags=("--rm",))
    assert p.returncode != 0
    # the shim reads rune's last error from log.json and ctr prints it
    assert "OCI runtime create failed" in p.stderr
    assert ('unable to start container process: exec: "/no/such/program": '
            'stat /no/such/program: no such file or directory') in p.stderr
    assert cid not in engine.tasks()
    assert not os.path.exists(os.path.join(engine.rune_state_dir(), cid))


def test_rune_exec_error_is_shown_by_ctr(engine: Engine, cid: str, running: int) -> None:
    p = engine.ctr("tasks", "exec", "--exec-id", "bad", cid, "/no/such/program")
    assert p.returncode != 0
    assert "OCI runtime exec failed" in p.stderr
    assert ('exec failed: unable to start container process: exec: "/no/such/program": '
            'stat /no/such/program: no such file or directory') in p.stderr
    assert engine.tasks()[cid] == (running, "RUNNING")


def test_kill_of_a_stopped_task_means_already_finished(engine: Engine, cid: str) -> None:
    # containerd's runc shim (checkKillError) matches rune's "container not running": the kill of an
    # exited task is NotFound ("process already finished"), never "unknown error after kill" -- the
    # error that made CRI's StopPodSandbox retry forever
    ok(engine.run(cid, "true", flags=("-d",)))
    engine.wait_status(cid, "STOPPED")
    p = engine.ctr("tasks", "kill", "-s", "KILL", cid)
    assert p.returncode != 0
    assert "process already finished: not found" in p.stderr, p.stderr
    assert "unknown error after kill" not in p.stderr
    # kill --all of a stopped container is not an error, as with runc
    ok(engine.ctr("tasks", "kill", "-a", "-s", "KILL", cid))
    ok(engine.ctr("tasks", "delete", cid))


# ---------------------------------------------------------------------------- robustness

def test_50_concurrent_run_rm_leave_nothing_behind(engine: Engine) -> None:
    tag = "cc" + uuid.uuid4().hex[:6]
    ids = [f"{tag}-{i}" for i in range(50)]

    def one(c: str) -> subprocess.CompletedProcess[str]:
        return engine.run(c, "sh", "-c", f"echo hello-{c}", flags=("--rm",), timeout=120)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = dict(zip(ids, pool.map(one, ids), strict=True))
        failed = {c: (p.returncode, p.stderr) for c, p in results.items() if p.returncode != 0
                  or p.stdout != f"hello-{c}\n"}
        assert not failed, failed
        assert not [c for c in ok(engine.ctr("containers", "ls", "-q")).split() if c.startswith(tag)]
        assert not [t for t in engine.tasks() if t.startswith(tag)]
        assert not [s for s in ok(engine.ctr("snapshots", "ls")).split() if s.startswith(tag)]
        assert not [m for m in engine.ctrd.mounts() if tag in m]
        state_dir = engine.rune_state_dir()
        assert not [d for d in (os.listdir(state_dir) if os.path.isdir(state_dir) else []) if d.startswith(tag)]
        cgroups = [os.path.join(d, e) for d in engine.ctrd.namespace_cgroups() for e in os.listdir(d)
                   if e.startswith(tag)]
        assert not cgroups
        # shims exit on their own once their task is deleted; give them a moment
        deadline = time.monotonic() + 10
        while (procs := processes_mentioning([tag])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not procs
    finally:
        for c in ids:
            if c in engine.tasks() or c in engine.ctr("containers", "ls", "-q").stdout.split():
                engine.remove(c)


def test_restart_containerd_while_container_runs(engine: Engine, cid: str, running: int) -> None:
    old_pid = engine.ctrd.pid()
    engine.ctrd.restart()
    assert engine.ctrd.pid() != old_pid
    assert engine.tasks()[cid] == (running, "RUNNING")
    assert cid in ok(engine.ctr("containers", "ls", "-q")).split()
    assert ok(engine.ctr("tasks", "exec", "--exec-id", "after-restart", cid, "sh", "-c", "echo $((6*7))")) == "42\n"
    ok(engine.ctr("tasks", "kill", "-s", "KILL", cid))
    engine.wait_status(cid, "STOPPED")
    ok(engine.ctr("tasks", "delete", cid))
    ok(engine.ctr("containers", "delete", cid))
    assert cid not in engine.tasks()
    assert not os.path.exists(f"/proc/{running}")
    assert not os.path.exists(os.path.join(engine.rune_state_dir(), cid))
    assert not [m for m in engine.ctrd.mounts() if cid in m]


def test_private_containerd_uses_its_own_paths(engine: Engine) -> None:
    cfg = Path(engine.ctrd.config).read_text()
    for key in ("root", "state"):
        assert f'{key} = "{engine.ctrd.base}/' in cfg
    assert f'address = "{engine.ctrd.address}"' in cfg
    assert f'address = "{engine.ctrd.address}.ttrpc"' in cfg
    env = Path(f"/proc/{engine.ctrd.pid()}/environ").read_bytes().split(b"\0")
    assert f"PATH={engine.ctrd.bin_dir}:".encode() in b"\n".join(env)


# ---------------------------------------------------------------------------- enclave containers

@pytest.fixture(scope="module")
def pal_v2(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test PAL")
    from tests.fixtures.pal.build import build_pal

    return str(build_pal("pal_v2", tmp_path_factory.mktemp("pal")))


def test_enclave_container_through_containerd(engine: Engine, cid: str, pal_v2: str) -> None:
    """`ctr run --env ENCLAVE_TYPE=sim`: the init-runelet runs the payload through the PAL; exec goes
    through the same enclave instance; the exit value is the container's."""
    flags = ("-d", "--env", "ENCLAVE_TYPE=sim", "--env", f"ENCLAVE_RUNTIME_PATH={pal_v2}",
             "--env", "ENCLAVE_RUNTIME_ARGS=log=/tmp/pal.log")
    ok(engine.run(cid, "sh", "-c", "echo payload > /tmp/out; sleep 1000", flags=flags))
    pid = engine.wait_status(cid, "RUNNING")
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "init-runelet"
    out = ok(engine.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "cat /tmp/out; cat /tmp/pal.log"))
    lines = out.splitlines()
    assert lines[0] == "payload"
    calls = [x.split(" ")[0] for x in lines[1:]]
    assert calls[:4] == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec"]
    assert calls.count("pal_create_process") == 2  # the exec'd `sh` went through the PAL as well
    p = engine.ctr("tasks", "exec", "--exec-id", "e2", cid, "sh", "-c", "exit 6")
    assert p.returncode == 6
    ok(engine.ctr("tasks", "kill", "-s", "TERM", cid))  # forwarded to pal_kill(-1, SIGTERM)
    engine.wait_status(cid, "STOPPED")


def test_enclave_foreground_exit_code_through_containerd(engine: Engine, cid: str, pal_v2: str) -> None:
    p = engine.run(cid, "sh", "-c", "echo from-enclave; exit 5",
                   flags=("--rm", "--env", "ENCLAVE_TYPE=sim", "--env", f"ENCLAVE_RUNTIME_PATH={pal_v2}"))
    assert p.returncode == 5, p.stderr
    assert p.stdout == "from-enclave\n"


def test_enclave_bad_pal_error_shown_by_ctr(engine: Engine, cid: str, tmp_path: Path) -> None:
    p = engine.run(cid, "true", flags=("--rm", "--env", "ENCLAVE_TYPE=sim",
                                       "--env", f"ENCLAVE_RUNTIME_PATH={tmp_path}/missing.so"))
    assert p.returncode != 0
    assert "missing.so: no such file" in p.stderr
