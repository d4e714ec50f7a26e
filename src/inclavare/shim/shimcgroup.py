"""Options.ShimCgroup: the existing cgroup the resident shim runs in, joined as containerd's runc shim joins it.

containerd 1.6's runc shim (runtime/v2/runc/manager, ``StartShim``) moves the shim it has just started into
the named cgroup, which must already exist (the shim creates nothing): on a pure cgroup v2 host
``<unified mount>/<path>`` (the path absolute and clean, not under /sys/fs/cgroup); on a v1 or hybrid host
the path in every v1 hierarchy where that directory exists (the others are skipped; none at all is "cgroup
deleted"), leaving a hybrid host's unified hierarchy alone. Any failure fails ``start``: containerd reports
it and the shim is killed, its socket removed. A ``start`` that finds its group's shim already running joins
nothing (runc's shim returns before reading the options).

One difference, on purpose: the resident shim joins *itself*, first thing, before it forks anything. Our
shim forks its fork server at once, and a process stays in the cgroups it was forked in, so a shim moved
afterwards (as runc's shim is, which forks nothing before containerd's first request) would leave its fork
server, workers and binary:// loggers behind. The process that forked the shim (``start``, or the shim
template) waits for the outcome on a pipe (:func:`join_and_report` / :func:`await_report`) and fails or
answers as runc's shim would.
"""

from __future__ import annotations

import os

from inclavare.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.linux.cgroups import Layout

REPORT_TIMEOUT = 10.0  # seconds a parent waits for its new shim to say it joined
_JOINED = b"joined"


def check_path(path: str) -> None:
    """A ShimCgroup path is absolute, clean and not a cgroupfs path (containerd's cgroup v2 VerifyGroupPath;
    applied on v1 hosts too, where containerd would join whatever the path resolves to)."""
    if not path.startswith("/") or os.path.normpath(path) != path or path.startswith("//"):
        raise CgroupError(f"ShimCgroup {path!r}: want an absolute, clean cgroup path such as /rune-shim")
    if path == "/sys/fs/cgroup" or path.startswith("/sys/fs/cgroup/"):
        raise CgroupError(f"ShimCgroup {path!r}: a cgroup path, not a cgroupfs directory (drop /sys/fs/cgroup)")


def directories(path: str, layout: Layout | None = None) -> list[str]:
    """The cgroup directories ``path`` names on this host, whose cgroup.procs the shim joins (see above)."""
    from inclavare.linux import cgroups

    check_path(path)
    lay = layout or cgroups.detect_layout()
    rel = path.lstrip("/")
    if lay.mode == "v2":
        assert lay.unified is not None
        return [os.path.join(lay.unified.mountpoint, rel).rstrip("/") or "/"]
    found: list[str] = []
    looked: list[str] = []
    for mountpoint in sorted({h.mountpoint for h in lay.v1.values()}):
        d = os.path.join(mountpoint, rel).rstrip("/")
        looked.append(mountpoint)
        if os.path.isdir(d):
            found.append(d)
    if not found:
        raise CgroupError(f"failed to load cgroup {path}: it exists in no cgroup v1 hierarchy "
                          f"(looked under {', '.join(looked) or 'none mounted'})")
    return found


def join(path: str, pid: int, layout: Layout | None = None) -> None:
    """Move ``pid`` into ShimCgroup ``path``; CgroupError (one line) if it cannot be done."""
    from inclavare.linux import cgroups

    for d in directories(path, layout):
        target = os.path.join(d, "cgroup.procs")
        try:
            cgroups._write_pid(target, pid)
        except OSError as e:
            raise CgroupError(f"failed to join cgroup {path}: writing pid {pid} to {target}: "
                              f"{e.strerror or e}") from None
    if pid == os.getpid():
        cgroups.forget_layout()


def join_and_report(path: str, report_fd: int) -> bool:
    """In a new shim, before it forks anything: join ``path`` and tell the parent on ``report_fd`` (closed
    here). False (the shim must exit) when the join failed."""
    try:
        try:
            join(path, os.getpid())
        except CgroupError as e:
            _write_all(report_fd, str(e).encode(errors="replace"))
            return False
        _write_all(report_fd, _JOINED)
        return True
    finally:
        os.close(report_fd)


def await_report(report_fd: int, timeout: float = REPORT_TIMEOUT) -> str:
    """In the parent: "" once the shim has joined, else the reason it did not (its error, or its death before
    a word). Closes ``report_fd``. Imports nothing: ``start`` runs this."""
    import select

    data = b""
    try:
        while len(data) < 65536:
            if not select.select([report_fd], [], [], timeout)[0]:
                return f"the shim did not join its cgroup within {timeout:g}s"
            chunk = os.read(report_fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(report_fd)
    if data == _JOINED:
        return ""
    return data.decode(errors="replace") or "the shim exited before joining its cgroup"


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the parent is gone: nobody to tell
