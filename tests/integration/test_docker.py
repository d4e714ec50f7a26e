"""Debian's docker.io 20.10 drives this checkout's rune: a private dockerd (own data root, exec root, socket,
daemon.json with a `runtimes` entry for rune, no iptables, no bridge), an image made with `docker import`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

DOCKERD = shutil.which("dockerd")
DOCKER = shutil.which("docker")
pytestmark = [
    pytest.mark.root, needs_root, needs_busybox,
    pytest.mark.skipif(DOCKERD is None or DOCKER is None,
                       reason="docker.io is not installed (apt-get install docker.io)"),
]

IMAGE = "localhost/busybox:latest"


class Docker:
    def __init__(self, base: str) -> None:
        self.base = base
        self.sock = os.path.join(base, "docker.sock")
        self.exec_root = os.path.join(base, "exec")
        self.proc: subprocess.Popen[bytes] | None = None

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, DOCKER_CONFIG=os.path.join(self.base, "client"))
        env.pop("DOCKER_HOST", None)
        return subprocess.run([str(DOCKER), "-H", f"unix://{self.sock}", *args], env=env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> str:
        p = self(*args)
        assert p.returncode == 0, f"docker {' '.join(args)} -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
        return p.stdout

    def start(self, rune: str) -> None:
        conf = os.path.join(self.base, "daemon.json")
        Path(conf).write_text(json.dumps({
            "runtimes": {"rune": {"path": rune}},
            "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 20000, "Hard": 20000}},
        }))
        log = open(os.path.join(self.base, "dockerd.log"), "wb")
        self.proc = subprocess.Popen(
            [str(DOCKERD), "--config-file", conf, "--data-root", os.path.join(self.base, "data"),
             "--exec-root", self.exec_root, "--pidfile", os.path.join(self.base, "dockerd.pid"),
             "-H", f"unix://{self.sock}", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--ip-masq=false"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if os.path.exists(self.sock) and self("version").returncode == 0:
                return
            time.sleep(0.2)
        tail = Path(self.base, "dockerd.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"private dockerd did not come up:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self("ps", "-aq").stdout.split()
            if ids:
                self("rm", "--force", *ids)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # a managed containerd or shim of ours that outlived dockerd (by pid, never by name)
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if self.base.encode() in cmd:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        from inclavare.testing.podman import unmount_under

        unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def docker(rune_bin: str) -> Iterator[Docker]:
    from inclavare.testing.bundle import make_rootfs

    d = Docker(tempfile.mkdtemp(prefix="rune-docker-"))
    try:
        d.start(rune_bin)
        rootfs = make_rootfs(os.path.join(d.base, "rootfs"))
        tar = os.path.join(d.base, "rootfs.tar")
        with tarfile.open(tar, "w") as t:
            t.add(rootfs, arcname=".")
        d.ok("import", "--change", 'CMD ["sh"]', tar, IMAGE)
        yield d
    finally:
        d.stop()
    assert not os.path.exists(d.base)


@pytest.fixture
def name(docker: Docker) -> Iterator[str]:
    n = "t-" + uuid.uuid4().hex[:10]
    yield n
    docker("rm", "--force", n)


def test_run_rm_stdout_stderr_exit_code(docker: Docker, name: str) -> None:
    p = docker("run", "--rm", "--runtime", "rune", "--network", "none", "--name", name, IMAGE,
               "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert p.returncode == 7, p.stderr
    assert p.stdout == "to-out\n"
    assert "to-err" in p.stderr
    assert docker("container", "inspect", name).returncode != 0  # --rm removed it


def test_run_d_exec_stop(docker: Docker, name: str) -> None:
    cid = docker.ok("run", "-d", "--runtime", "rune", "--network", "none", "--name", name, IMAGE,
                    "sleep", "1000").strip()
    assert docker.ok("inspect", "--format", "{{.HostConfig.Runtime}}", name).strip() == "rune"
    # dockerd 20.10 gives every runc-shim runtime the root <exec-root>/runtime-runc/<namespace>
    state = os.path.join(docker.exec_root, "runtime-runc", "moby", cid)
    assert os.path.isdir(state)
    out = docker.ok("exec", "-e", "GREETING=hi", name, "sh", "-c", 'echo "$GREETING"; ps')
    assert out.startswith("hi\n") and "sleep 1000" in out
    assert docker("exec", name, "sh", "-c", "exit 4").returncode == 4
    docker.ok("stop", "-t", "1", name)
    assert docker.ok("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).split() == \
        ["exited", "137"]
    docker.ok("rm", name)
    assert not os.path.exists(state)


def test_limits_and_caps(docker: Docker, name: str) -> None:
    out = docker.ok("run", "--rm", "--runtime", "rune", "--network", "none", "--name", name,
                    "--memory", "64m", "--pids-limit", "20", "--cap-drop", "NET_RAW", IMAGE, "sh", "-c",
                    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max;"
                    " grep CapEff /proc/self/status")
    lines = out.split("\n")
    assert lines[:2] == ["67108864", "20"], out
    assert not int(lines[2].split()[1], 16) & (1 << 13)  # CAP_NET_RAW dropped


# -- the runtime's error words become exit codes (docs/runc-compat.md) ------------------------------

def _same_as_runc(docker: Docker, rune_p: subprocess.CompletedProcess[str], *args: str) -> None:
    """The same docker command with the default runtime (runc) gives the same exit status and text."""
    if shutil.which("runc") is None:
        return
    p = docker(*[("runc" if a == "rune" else a) for a in args])
    assert p.returncode == rune_p.returncode
    norm = (lambda t: t.replace("runc create failed: ", ""))  # noqa: E731 - runc's own program-name prefix
    assert norm(p.stdout + p.stderr).split("Error response from daemon")[-1] == \
        (rune_p.stdout + rune_p.stderr).split("Error response from daemon")[-1]


@pytest.mark.parametrize(("cmd", "code", "words"), [
    ("no-such-program", 127, 'exec: "no-such-program": executable file not found in $PATH'),
    ("/no/such/program", 127, 'exec: "/no/such/program": stat /no/such/program: no such file or directory'),
    ("/etc/passwd", 126, 'exec: "/etc/passwd": permission denied'),
    # ENOTDIR: dockerd adds its bind-mount hint and the CLI exits 125, as with runc
    ("/etc/passwd/x", 125, 'exec: "/etc/passwd/x": stat /etc/passwd/x: not a directory'),
])
def test_run_of_a_program_that_cannot_start(docker: Docker, name: str, cmd: str, code: int, words: str) -> None:
    # the runc shim reads rune's last error line from log.json; dockerd's translateContainerdStartErr
    # turns runc's words into 127 (not found) and 126 (permission denied)
    args = ("run", "--rm", "--runtime", "rune", "--network", "none", IMAGE, cmd)
    p = docker(*args)
    assert p.returncode == code, p.stderr
    assert f"OCI runtime create failed: unable to start container process: {words}: unknown" in p.stderr
    _same_as_runc(docker, p, *args)


@pytest.mark.parametrize(("cmd", "words"), [
    ("no-such-program", 'exec: "no-such-program": executable file not found in $PATH'),
    ("/etc/passwd", 'exec: "/etc/passwd": permission denied'),
])
def test_exec_of_a_program_that_cannot_start(docker: Docker, name: str, cmd: str, words: str) -> None:
    docker.ok("run", "-d", "--runtime", "rune", "--network", "none", "--name", name, IMAGE, "sleep", "1000")
    p = docker("exec", name, cmd)
    # dockerd 20.10 reports every exec start failure as 126 (as with runc), the error on stdout
    assert p.returncode == 126, p.stdout
    assert p.stdout == f"OCI runtime exec failed: exec failed: unable to start container process: {words}: unknown\n"
    assert docker.ok("inspect", "--format", "{{.State.Status}}", name).strip() == "running"


def test_kill_of_an_exited_container_is_not_an_error_loop(docker: Docker, name: str) -> None:
    docker.ok("run", "-d", "--runtime", "rune", "--network", "none", "--name", name, IMAGE, "sh", "-c", "exit 3")
    assert docker.ok("wait", name).strip() == "3"
    docker.ok("stop", "-t", "1", name)
    docker.ok("rm", name)
