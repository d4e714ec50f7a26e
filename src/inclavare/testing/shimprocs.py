"""The rune shim's processes of one containerd, found through /proc: for leak checks and cleanup.

containerd-shim-rune-v2 names its processes (``/proc/PID/comm``): resident shims are ``rune-shim`` (their fork
servers and workers inherit the name, so only the ones whose parent is not a ``rune-shim`` count) and the shim
template is ``rune-shim-tmpl``. Both carry ``-address <containerd's socket>`` on their command line, which tells
one containerd's from another's. The template outlives its containerd by up to 30 s (``GONE_SECONDS``), so a
test or benchmark that stops its containerd ends the template itself: :func:`kill_templates`.
"""

from __future__ import annotations

import os
import signal
import time

COMM_SHIM = "rune-shim"
COMM_TEMPLATE = "rune-shim-tmpl"
TEMPLATE_SOCKET_PREFIX = "rune-template-"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _processes(comm: str, address: str) -> list[int]:
    """Live (not zombie) processes named ``comm`` started with ``-address ADDRESS``, outermost only."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if _read(f"/proc/{pid}/comm").decode(errors="replace").strip() != comm:
                continue
            stat = _read(f"/proc/{pid}/stat").decode(errors="replace").rsplit(")", 1)[1].split()
            argv = _read(f"/proc/{pid}/cmdline").split(b"\0")
            parent = _read(f"/proc/{stat[1]}/comm").decode(errors="replace").strip() if stat[1] != "0" else ""
        except (OSError, IndexError):
            continue
        if stat[0] == "Z" or parent == comm:
            continue
        if any(a == b"-address" and v == address.encode() for a, v in zip(argv, argv[1:], strict=False)):
            found.append(int(pid))
    return sorted(found)


def shim_pids(address: str) -> list[int]:
    """Resident rune shims serving the containerd at ``address`` (not their fork servers and workers)."""
    return _processes(COMM_SHIM, address)


def template_pids(address: str) -> list[int]:
    """Shim templates of the containerd at ``address`` (normally at most one)."""
    return _processes(COMM_TEMPLATE, address)


def listening_sockets(pid: int) -> list[str]:
    """Paths of the unix sockets bound by ``pid`` (from /proc/net/unix and its fds)."""
    try:
        links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        lines = _read("/proc/net/unix").decode(errors="replace").splitlines()[1:]
    except OSError:
        return []
    paths = []
    for line in lines:
        f = line.split()
        if len(f) >= 8 and f[7].startswith("/") and f"socket:[{f[6]}]" in links:
            paths.append(f[7])
    return sorted(set(paths))


def kill_templates(address: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL the shim templates of the containerd at ``address`` and remove their sockets (a killed template
    leaves its ``rune-template-*`` socket file); returns the pids killed."""
    pids = template_pids(address)
    sockets = [p for pid in pids for p in listening_sockets(pid)
               if os.path.basename(p).startswith(TEMPLATE_SOCKET_PREFIX)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while template_pids(address) and time.monotonic() < deadline:
        time.sleep(0.02)
    for path in sockets:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return pids
