"""Restarting containerd the way the host runs it, so that it reads the new config.toml.

- **systemd**: the host booted with systemd (``HOST/run/systemd/system`` exists, sd_booted's test):
  ``systemctl restart UNIT``, run in PID 1's mount namespace through ``nsenter`` when the installer runs in a
  container (the DaemonSet has ``hostPID``), directly when the host root is ``/``.
- **pid**: a containerd started by a script or by hand, known by ``--containerd-pid`` or a pid file: its argv,
  environment and working directory are read from /proc, and a helper process is prepared where it runs: its
  namespaces (setns to the old process's, when they differ from ours: the installer in a pod with hostPID), its
  cgroups (a containerd left in the installer pod's cgroup would be killed with that pod), a new session, its
  stdout/stderr appended to the files the old one's were. Only then is the old one stopped (SIGTERM, SIGKILL
  after a timeout) and the helper starts containerd with the same. The new pid goes into the pid file. It is
  ready when its gRPC socket (``[grpc] address``, default /run/containerd/containerd.sock) accepts, as seen
  through ``/proc/PID/root``.
- neither: the installer says so and exits non-zero *before* changing anything.

Tested: the pid path on a private containerd in a cgroup of its own, from the same namespaces (the setns branch
is not exercised: no pod runs here); the systemd path only as the command it runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from inclavare.services.nodeinstall import NodeInstallError

DEFAULT_GRPC = "/run/containerd/containerd.sock"
_NAMESPACES = ("ipc", "uts", "net", "pid", "cgroup", "mnt")  # mnt last: after it /proc paths may differ


@dataclass(frozen=True)
class Plan:
    """How containerd will be restarted: ``kind`` systemd (``unit``) or pid (``pid``, ``pid_file``)."""

    kind: str
    unit: str = "containerd"
    pid: int = 0
    pid_file: str | None = None  # in the installer's view

    def describe(self) -> str:
        if self.kind == "systemd":
            return f"systemd unit {self.unit}"
        return f"pid {self.pid}" + (f" (pid file {self.pid_file})" if self.pid_file else "")


def systemd_booted(host_root: str) -> bool:
    return os.path.isdir(os.path.join(host_root, "run/systemd/system"))


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except OSError as e:
        raise NodeInstallError(f"containerd pid file {path}: {e.strerror}") from None
    if not text.isdigit() or int(text) <= 0:
        raise NodeInstallError(f"containerd pid file {path}: {text[:20]!r} is not a pid")
    return int(text)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def plan(host_root: str, *, method: str = "auto", unit: str = "containerd", pid: int | None = None,
         pid_file: str | None = None) -> Plan | None:
    """Decide how to restart containerd, or fail (one line) when it cannot be done. ``method``: auto, systemd,
    pid or none (None: the caller restarts it). ``pid_file`` is in the installer's view."""
    if method == "none":
        return None
    if method in ("auto", "systemd") and systemd_booted(host_root) and pid is None and pid_file is None:
        if shutil.which("systemctl") is None and host_root == "/":
            raise NodeInstallError("the host runs systemd but systemctl is not installed here")
        return Plan("systemd", unit=unit)
    if method == "systemd":
        raise NodeInstallError(f"--restart systemd: the host ({host_root}) did not boot with systemd "
                               "(no run/systemd/system)")
    if pid is None and pid_file is not None:
        pid = _read_pid(pid_file)
    if pid is None:
        raise NodeInstallError("cannot restart containerd: the host does not run systemd, and neither "
                               "--containerd-pid nor --containerd-pid-file names its process "
                               "(or pass --restart none and restart it yourself)")
    if not _alive(pid):
        raise NodeInstallError(f"containerd pid {pid}: no such process")
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError as e:
        raise NodeInstallError(f"containerd pid {pid}: {e.strerror}") from None
    if os.path.basename(argv0) != b"containerd":
        raise NodeInstallError(f"pid {pid} is {argv0.decode(errors='replace')!r}, not containerd")
    return Plan("pid", pid=pid, pid_file=pid_file)


def systemd_command(unit: str, host_root: str) -> list[str]:
    cmd = ["systemctl", "restart", unit]
    return cmd if host_root == "/" else ["nsenter", "--target", "1", "--mount", "--", *cmd]


def restart(p: Plan, host_root: str, grpc_address: str, timeout: float = 30.0) -> int:
    """Restart containerd as planned; returns the new pid (0 for systemd)."""
    if p.kind == "systemd":
        cmd = systemd_command(p.unit, host_root)
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            line = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise NodeInstallError(f"{' '.join(cmd)}: {line}")
        return 0
    return _restart_pid(p, grpc_address, timeout)


def _read_proc(pid: int) -> tuple[list[bytes], dict[bytes, bytes], str, list[str | None]]:
    """argv, environment, cwd and the paths of fds 1 and 2 (None: not a regular file) of ``pid``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError as e:
        raise NodeInstallError(f"containerd pid {pid}: reading its command line: {e.strerror}") from None
    outs: list[str | None] = []
    for fd in (1, 2):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            outs.append(target if target.startswith("/") and not target.endswith(" (deleted)")
                        and os.path.isfile(f"/proc/{pid}/fd/{fd}") else None)
        except OSError:
            outs.append(None)
    return argv, env, cwd, outs


def _foreign_namespaces(pid: int) -> list[tuple[str, int]]:
    """Open fds of ``pid``'s namespaces that differ from this process's (type name, fd)."""
    fds = []
    for ns in _NAMESPACES:
        try:
            if os.stat(f"/proc/{pid}/ns/{ns}").st_ino == os.stat(f"/proc/self/ns/{ns}").st_ino:
                continue
            fds.append((ns, os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)))
        except OSError:
            continue
    return fds


def _restart_pid(p: Plan, grpc_address: str, timeout: float) -> int:
    """Prepare the new containerd's parent in the old one's namespaces and cgroups first (an error there leaves
    containerd running), then stop the old one and let the new one start."""
    argv, env, cwd, outs = _read_proc(p.pid)
    nsfds = _foreign_namespaces(p.pid)
    try:
        child, to_child, from_child = _prepare(argv, env, cwd, outs, nsfds, p.pid)
    finally:
        for _, fd in nsfds:
            os.close(fd)
    try:
        os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(p.pid):
            if time.monotonic() > deadline:
                os.kill(p.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.05)
        os.write(to_child, b"go")
        os.close(to_child)
        to_child = -1
        msg = from_child.readline().decode(errors="replace").strip()
    finally:
        if to_child >= 0:
            os.close(to_child)  # the child sees EOF and exits without starting anything
        from_child.close()
        os.waitpid(child, 0)
    if not msg.isdigit():
        raise NodeInstallError(f"starting containerd again ({argv[0].decode(errors='replace')}): {msg or 'no pid'}")
    new = int(msg)
    if p.pid_file:
        from inclavare.atomicfile import write_atomic

        write_atomic(p.pid_file, f"{new}\n".encode(), mode=0o644)
    _wait_ready(new, grpc_address, timeout)
    return new


def _prepare(argv: list[bytes], env: dict[bytes, bytes], cwd: str, outs: list[str | None],
             nsfds: list[tuple[str, int]], old: int) -> tuple[int, int, Any]:
    """Fork the new containerd's parent: in a new session, in ``old``'s namespaces, working directory and cgroups
    (a containerd left in the installer pod's cgroup would die with that pod), its stdio on ``old``'s log files.
    It says ``ok`` (or the error) and waits for ``go`` before it forks containerd, so that the old one can stop
    in between; then it reports the new pid. Returns (child pid, fd to write ``go`` to, reader of its lines)."""
    from inclavare.linux.syscalls import setns

    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(up_r)
            os.close(down_w)
            os.setsid()
            for _, fd in nsfds:
                setns(fd)
            os.chdir(cwd)
            _join_cgroups_of(old)
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)  # dup2's copies stay open, these close
            os.dup2(null, 0)
            for target, fd in zip(outs, (1, 2), strict=True):
                out = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC) if target else null
                os.dup2(out, fd)
            os.write(up_w, b"ok\n")
            if os.read(down_r, 2) != b"go":
                os._exit(0)
            grandchild = os.fork()
            if grandchild:
                os.write(up_w, f"{grandchild}\n".encode())
                os._exit(0)
            os.close(up_w)
            os.execvpe(argv[0], argv, env)
        except BaseException as e:
            os.write(up_w, f"{e}\n".replace("\n", " ").strip().encode() + b"\n")
        os._exit(127)
    os.close(up_w)
    os.close(down_r)
    reader = os.fdopen(up_r, "rb")
    first = reader.readline().decode(errors="replace").strip()
    if first != "ok":
        reader.close()
        os.close(down_w)
        os.waitpid(child, 0)
        raise NodeInstallError(f"preparing containerd's restart: {first or 'the helper process died'}")
    return child, down_w, reader


def _join_cgroups_of(pid: int) -> None:
    """Move this process into ``pid``'s cgroups: each line of /proc/PID/cgroup (read in ``pid``'s cgroup
    namespace, so the paths are from that namespace's root) matched to a cgroup mount of this mount namespace
    (v2: the cgroup2 mount; v1: the hierarchy whose options carry the line's controllers)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    mounts: list[tuple[str, str, str, set[str]]] = []  # (fstype, root, mount point, options)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                mounts.append((rfields[0], fields[3], fields[4], set(rfields[2].split(","))))
    me = str(os.getpid()).encode()
    for _hid, controllers, path in lines:
        want = set(controllers.split(",")) if controllers else set()
        for fstype, root, mountpoint, options in mounts:
            if (fstype == "cgroup2") != (not want) or (want and not want <= options):
                continue
            if not (path == root or path.startswith(root.rstrip("/") + "/")):
                continue
            rel = path[len(root.rstrip("/")):].lstrip("/")
            fd = os.open(os.path.join(mountpoint, rel, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
            break


def _wait_ready(pid: int, address: str, timeout: float) -> None:
    """Until containerd's gRPC socket accepts (seen through its own root when that is not ours: a unix socket
    path is limited to 107 bytes, so the direct path is used whenever it names the same file)."""
    path = f"/proc/{pid}/root{address}"
    try:
        same_root = os.stat(f"/proc/{pid}/root").st_ino == os.stat("/").st_ino and \
            os.stat(f"/proc/{pid}/root").st_dev == os.stat("/").st_dev
    except OSError:
        same_root = False
    if same_root:
        path = address
    deadline = time.monotonic() + timeout
    while True:
        if not _alive(pid):
            raise NodeInstallError(f"containerd (pid {pid}) exited right after the restart: see its log")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(path)
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise NodeInstallError(f"containerd (pid {pid}) did not listen on {address} within {timeout:.0f} s")
        time.sleep(0.05)
