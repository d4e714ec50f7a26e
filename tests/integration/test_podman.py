"""podman 4.3 (Debian) drives this checkout's rune end to end: a private, offline podman with its own
storage and config (inclavare.testing.podman), a registry-free busybox image, `--runtime <rune>`."""

from __future__ import annotations

import errno
import os
import pty
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [
    pytest.mark.root, needs_root, needs_busybox,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (apt-get install podman)"),
    pytest.mark.skipif(shutil.which("conmon") is None, reason="conmon is not installed (apt-get install conmon)"),
]

IMAGE = "localhost/busybox:latest"
RUNE_STATE = "/run/rune"  # rune's default --root; conmon passes no global flags
CAP_CHOWN, CAP_NET_RAW, CAP_SYS_CHROOT = 0, 13, 18


class Engine:
    """The module's private podman, with `--runtime <rune>` on every call."""

    def __init__(self, pm, runtime: str) -> None:  # type: ignore[no-untyped-def]
        self.pm, self.runtime = pm, runtime

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.pm.podman(*args, runtime=self.runtime, timeout=timeout)

    def ok(self, *args: str, timeout: float = 120) -> str:
        p = self(*args, timeout=timeout)
        assert p.returncode == 0, f"podman {' '.join(args)} -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
        return p.stdout

    def inspect(self, ctr: str, fmt: str) -> str:
        return self.ok("inspect", "--format", fmt, ctr).strip()


def _working_rune(candidate: str) -> str:
    p = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
    if p.returncode == 0:
        return candidate
    if os.access("/usr/local/bin/rune", os.X_OK):
        return "/usr/local/bin/rune"
    pytest.skip(f"{candidate} --version failed: {p.stderr.strip()}")


@pytest.fixture(scope="module")
def podman(rune_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from inclavare.testing.image import build_image_tar
    from inclavare.testing.podman import PrivatePodman

    runtime = _working_rune(rune_bin)
    pm = PrivatePodman(runtime=runtime)
    try:
        tar = build_image_tar(str(tmp_path_factory.mktemp("image") / "busybox-oci.tar"), name=IMAGE)
        pm.load_image(tar, IMAGE)
        yield Engine(pm, runtime)
    finally:
        problems = pm.cleanup()
    assert not problems, f"private podman cleanup: {problems}"


@pytest.fixture
def name(podman: Engine) -> Iterator[str]:
    """A unique container name; the container is force-removed after the test whatever happened."""
    n = "t-" + uuid.uuid4().hex[:10]
    yield n
    podman("rm", "--force", "--time", "0", n)


def run_detached(podman: Engine, name: str, *cmd: str, opts: tuple[str, ...] = ()) -> str:
    return podman.ok("run", "-d", "--name", name, *opts, IMAGE, *cmd).strip()


# -- basic lifecycle ---------------------------------------------------------------------------------

def test_run_rm_stdout_stderr_and_exit_code(podman: Engine, name: str) -> None:
    p = podman("run", "--rm", "--name", name, IMAGE, "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert p.returncode == 7, p.stderr
    assert p.stdout == "to-out\n"
    assert "to-err" in p.stderr
    assert podman("container", "exists", name).returncode == 1  # --rm removed it


def test_run_d_exec_stop_rm(podman: Engine, name: str) -> None:
    cid = run_detached(podman, name, "sleep", "1000")
    assert podman.inspect(name, "{{.OCIRuntime}}") == podman.runtime
    assert podman.inspect(name, "{{.State.Status}}") == "running"
    assert os.path.isdir(os.path.join(RUNE_STATE, cid)), "rune keeps the container's state under /run/rune"
    out = podman.ok("exec", "-e", "GREETING=hi", name, "sh", "-c", 'echo "$GREETING from $(hostname)"; ps')
    assert out.startswith(f"hi from {cid[:12]}\n")
    assert "sleep 1000" in out
    p = podman("exec", name, "sh", "-c", "exit 5")
    assert p.returncode == 5
    podman.ok("stop", "-t", "1", name)
    assert podman.inspect(name, "{{.State.Status}}") == "exited"
    podman.ok("rm", name)
    assert podman("container", "exists", name).returncode == 1
    assert not os.path.exists(os.path.join(RUNE_STATE, cid))


def _read_pty(master: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError as e:  # EIO: every slave fd is closed
                if e.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_run_tty(podman: Engine, name: str) -> None:
    master, slave = pty.openpty()
    try:
        proc = podman.pm.popen("run", "--rm", "-t", "--name", name, IMAGE, "sh", "-c",
                               "tty; [ -t 1 ] && echo stdout-is-a-tty; exit 3",
                               runtime=podman.runtime, stdin=slave, stdout=slave, stderr=slave,
                               start_new_session=True)
        os.close(slave)
        slave = -1
        out = _read_pty(master, proc)
        rc = proc.wait(timeout=60)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = out.decode(errors="replace")
    assert rc == 3, text
    lines = text.split("\r\n")  # the container's terminal translates \n into \r\n
    assert lines[0].startswith("/dev/pts/") or lines[0] == "/dev/console", text
    assert "stdout-is-a-tty" in lines, text


def test_logs(podman: Engine, name: str) -> None:
    p = podman("run", "--name", name, IMAGE, "sh", "-c", "echo first; echo second >&2; echo third")
    assert p.returncode == 0, p.stderr
    logs = podman("logs", name)
    assert logs.returncode == 0
    assert logs.stdout.splitlines() == ["first", "third"]
    assert logs.stderr.splitlines() == ["second"]


def _host_cgroup(pid: int, controller: str) -> Path:
    """The host directory of `pid`'s cgroup for a v1 controller (or the unified one for v2)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{controller}") / path.lstrip("/")
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
            return Path(base) / line[3:].lstrip("/")
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def test_pause_unpause(podman: Engine, name: str) -> None:
    run_detached(podman, name, "sleep", "1000")
    pid = int(podman.inspect(name, "{{.State.Pid}}"))
    podman.ok("pause", name)
    assert podman.inspect(name, "{{.State.Status}}") == "paused"
    freezer = _host_cgroup(pid, "freezer") / "freezer.state"
    if freezer.exists():
        assert freezer.read_text().strip() == "FROZEN"
    podman.ok("unpause", name)
    assert podman.inspect(name, "{{.State.Status}}") == "running"
    if freezer.exists():
        assert freezer.read_text().strip() == "THAWED"
    assert podman.ok("exec", name, "echo", "alive") == "alive\n"


def test_top(podman: Engine, name: str) -> None:
    run_detached(podman, name, "sh", "-c", "sleep 1001 & sleep 1002")
    out = podman.ok("top", name, "pid", "args")
    assert "sleep 1001" in out and "sleep 1002" in out
    assert out.splitlines()[0].split()[0] == "PID"


# -- resource limits and security options ---------------------------------------------------------------

def test_memory_and_pids_limits(podman: Engine, name: str) -> None:
    run_detached(podman, name, "sleep", "1000", opts=("--memory", "64m", "--pids-limit", "20"))
    pid = int(podman.inspect(name, "{{.State.Pid}}"))
    mem_dir, pids_dir = _host_cgroup(pid, "memory"), _host_cgroup(pid, "pids")
    if (mem_dir / "memory.limit_in_bytes").exists():  # cgroup v1 (this machine)
        inside = podman.ok("exec", name, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                           "/sys/fs/cgroup/pids/pids.max").split()
        assert inside == ["67108864", "20"]
        assert (mem_dir / "memory.limit_in_bytes").read_text().strip() == "67108864"
        assert (pids_dir / "pids.max").read_text().strip() == "20"
    else:  # cgroup v2
        inside = podman.ok("exec", name, "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max").split()
        assert inside == ["67108864", "20"]
        assert (mem_dir / "memory.max").read_text().strip() == "67108864"
    # and the pids limit bites: 30 background sleeps cannot all start
    p = podman("exec", name, "sh", "-c", "for i in $(seq 30); do sleep 100 & done; echo forked")
    assert "can't fork" in p.stderr + p.stdout, (p.stdout, p.stderr)
    assert int((pids_dir / "pids.current").read_text()) <= 20


def test_read_only(podman: Engine, name: str) -> None:
    p = podman("run", "--rm", "--read-only", "--name", name, IMAGE, "sh", "-c",
               "touch /x && echo root-writable; touch /tmp/y && echo tmp-writable")
    assert "Read-only file system" in p.stderr
    assert p.stdout == "tmp-writable\n"  # podman mounts a tmpfs on /tmp of a read-only container


def test_cap_drop(podman: Engine, name: str) -> None:
    def cap_eff(*opts: str) -> int:
        out = podman.ok("run", "--rm", *opts, IMAGE, "grep", "CapEff", "/proc/self/status")
        return int(out.split()[1], 16)

    default = cap_eff()
    assert default & (1 << CAP_NET_RAW) and default & (1 << CAP_SYS_CHROOT)
    dropped = cap_eff("--cap-drop", "NET_RAW", "--cap-drop", "SYS_CHROOT")
    assert not dropped & (1 << CAP_NET_RAW)
    assert not dropped & (1 << CAP_SYS_CHROOT)
    assert dropped & (1 << CAP_CHOWN)
    assert dropped == default & ~((1 << CAP_NET_RAW) | (1 << CAP_SYS_CHROOT))


def test_seccomp_profile(podman: Engine, name: str, tmp_path: Path) -> None:
    profile = tmp_path / "no-mkdir.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], '
                       '"action": "SCMP_ACT_ERRNO", "errnoRet": 95}]}')
    p = podman("run", "--rm", "--security-opt", f"seccomp={profile}", "--name", name, IMAGE, "sh", "-c",
               "mkdir /tmp/d; echo mkdir=$?; touch /tmp/f && echo touch-ok")
    assert p.stdout.splitlines() == ["mkdir=1", "touch-ok"], p.stderr
    assert os.strerror(errno.EOPNOTSUPP) in p.stderr  # errno 95 from the profile, not a generic EPERM
    ok = podman("run", "--rm", IMAGE, "sh", "-c", "mkdir /tmp/d && echo made")
    assert ok.stdout == "made\n"


# -- robustness -------------------------------------------------------------------------------------------

def _libpod_cgroups() -> set[str]:
    found = set()
    for ctrl in os.listdir("/sys/fs/cgroup"):
        parent = Path("/sys/fs/cgroup") / ctrl / "libpod_parent"
        if parent.is_dir():
            found |= {f"{ctrl}/{d.name}" for d in parent.iterdir() if d.is_dir()}
    return found


def _processes_mentioning(words: set[str]) -> list[str]:
    hits = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(w in cmd for w in words):
            hits.append(f"{pid}: {cmd}")
    return hits


def test_fifty_concurrent_run_rm(podman: Engine) -> None:
    mounts_before = set(podman.pm.mounts())
    cgroups_before = _libpod_cgroups()
    tag = uuid.uuid4().hex[:8]

    def one(i: int) -> tuple[int, str, str]:
        p = podman("run", "--rm", "--name", f"c{tag}-{i}", IMAGE, "sh", "-c", f"hostname; echo n={i}", timeout=300)
        return p.returncode, p.stdout, p.stderr

    with ThreadPoolExecutor(max_workers=6) as ex:
        results = list(ex.map(one, range(50)))
    failures = [(i, r) for i, r in enumerate(results) if r[0] != 0 or r[1].split()[1:] != [f"n={i}"]]
    assert not failures, "\n".join(f"container {i}: exit {r[0]}\nstdout: {r[1]}\nstderr: {r[2]}"
                                    for i, r in failures[:3])
    short_ids = {r[1].split()[0] for r in results}
    assert len(short_ids) == 50

    assert [n for n in podman.ok("ps", "-a", "--format", "{{.Names}}").split() if tag in n] == []
    assert set(podman.pm.mounts()) <= mounts_before
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert not [s for s in short_ids if s in mountinfo]
    assert _libpod_cgroups() <= cgroups_before
    rune_dirs = os.listdir(RUNE_STATE) if os.path.isdir(RUNE_STATE) else []
    assert [d for d in rune_dirs if d[:12] in short_ids] == []
    assert _processes_mentioning(short_ids) == []


def test_stop_kills_a_process_that_ignores_sigterm(podman: Engine, name: str) -> None:
    cid = run_detached(podman, name, "sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait; sleep 1000")
    pid = int(podman.inspect(name, "{{.State.Pid}}"))
    cgroups = _host_cgroup(pid, "pids")
    p = podman("stop", "-t", "2", name)
    assert p.returncode == 0, p.stderr
    assert "resorting to SIGKILL" in p.stderr  # the timeout path, not a clean SIGTERM exit
    assert podman.inspect(name, "{{.State.Status}}") == "exited"
    assert podman.inspect(name, "{{.State.ExitCode}}") == "137"
    assert not os.path.exists(f"/proc/{pid}")
    podman.ok("rm", name)
    assert not os.path.exists(os.path.join(RUNE_STATE, cid))
    assert not cgroups.exists()
    assert _processes_mentioning({cid}) == []


# -- enclave containers ------------------------------------------------------------------------------

def test_enclave_container_by_annotation(podman: Engine, name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`podman run --annotation enclave.type=sim ...`: rune reads the annotations podman passes on."""
    import shutil

    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test PAL")
    from tests.fixtures.pal.build import build_pal

    pal = build_pal("pal_v2", tmp_path_factory.mktemp("pal"))
    opts = ("--annotation", "enclave.type=sim", "--annotation", f"enclave.runtime.path={pal}",
            "--annotation", "enclave.runtime.args=log=/tmp/pal.log")
    p = podman("run", "--rm", "--name", name, *opts, IMAGE, "sh", "-c", "echo in-enclave; cat /tmp/pal.log; exit 4")
    assert p.returncode == 4, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "in-enclave"
    assert [x.split(" ")[0] for x in lines[1:]] == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec"]
    cid = run_detached(podman, name + "-d", "sleep", "1000", opts=opts)
    try:
        # the test PAL logs pal_create_process after spawning, so the exec'd shell polls for its own line
        out = podman.ok("exec", name + "-d", "sh", "-c", "for i in $(seq 100); do "
                        "n=$(grep -c pal_create_process /tmp/pal.log); [ \"$n\" -ge 2 ] && break; sleep 0.05; done; "
                        "echo $n")
        assert out.strip() == "2"
        podman.ok("stop", "--time", "5", cid)
        assert podman.inspect(cid, "{{.State.ExitCode}}") == str(128 + 15)
    finally:
        podman("rm", "--force", "--time", "0", name + "-d")


# -- the runtime's error words become exit codes (docs/runc-compat.md) ------------------------------

@pytest.mark.parametrize(("cmd", "code", "words"), [
    ("no-such-program", 127, "executable file not found in $PATH"),
    ("/no/such/program", 127, "no such file or directory"),
    ("/etc/passwd", 126, "permission denied"),
])
def test_run_of_a_program_that_cannot_start(podman: Engine, name: str, cmd: str, code: int, words: str) -> None:
    # conmon hands podman rune's stderr; podman's getOCIRuntimeError matches runc's words (126/127)
    p = podman("run", "--rm", "--name", name, IMAGE, cmd)
    assert p.returncode == code, p.stderr
    assert words in p.stderr
    assert "unable to start container process" in p.stderr


@pytest.mark.parametrize(("cmd", "code"), [("no-such-program", 127), ("/etc/passwd", 126)])
def test_exec_of_a_program_that_cannot_start(podman: Engine, name: str, cmd: str, code: int) -> None:
    run_detached(podman, name, "sleep", "1000")
    p = podman("exec", name, cmd)
    assert p.returncode == code, p.stderr
    assert podman.inspect(name, "{{.State.Status}}") == "running"


def test_kill_and_stop_of_an_exited_container(podman: Engine, name: str) -> None:
    # podman asks `state`, then `kill`: rune's "container not running" / "does not exist" keep it sane
    run_detached(podman, name, "sh", "-c", "exit 3")
    deadline = time.monotonic() + 30
    while podman.inspect(name, "{{.State.Status}}") != "exited" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert podman.inspect(name, "{{.State.ExitCode}}") == "3"
    podman.ok("stop", "-t", "1", name)
    podman.ok("rm", name)
