"""`run` and a waited-for `exec`: create/exec, start, then wait for the process (relaying its terminal
when the caller's own terminal is the container's), as runc's `run` and `exec` without --detach.

The caller's fds 0-2 are the process's; this module makes the calling process the container's
subreaper and forwards its signals while it waits. Nothing is printed here except what the relayed
terminal carries.
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call).
from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms per call
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from inclavare.runtime.container import Runtime
    from inclavare.runtime.launch import Executor, PickExecutor


def _subreaper() -> None:
    from inclavare.linux.syscalls import set_subreaper

    set_subreaper()


def run(rt: "Runtime", cid: str, bundle: str | None, *, detach: bool = False, keep: bool = False,
        pid_file: str | None = None, console_socket: str | None = None, no_pivot: bool = False,
        no_new_keyring: bool = False, preserve_fds: int = 0,
        executor: "Executor | PickExecutor | None" = None) -> int:
    """create + start; unless ``detach``, wait and return the workload's status, then delete the
    container (unless ``keep``). A failed start deletes the container."""
    from inclavare.runtime.container import wait_child
    from inclavare.runtime.launch import prime

    prime()  # overlaps with config parsing and forking
    kw: dict[str, Any] = dict(pid_file=pid_file, console_socket=console_socket, no_pivot=no_pivot,
                              no_new_keyring=no_new_keyring, preserve_fds=preserve_fds, executor=executor)
    if not detach:
        _subreaper()
    cfg: dict[str, Any] | None = None

    def start(console_fd: int | None = None) -> int:
        state = rt.create(cid, bundle, console_fd=console_fd, config=cfg, foreground=not detach, **kw)
        try:
            rt.start(cid)
        except BaseException:
            rt.delete(cid, force=True)
            raise
        return int(state.pid)

    needs_relay = False
    if not detach and not console_socket:
        from inclavare.runtime.launch import load_config

        cfg = load_config(fos.path.abspath(bundle or "."))  # handed to create: parsed once
        needs_relay = bool(cfg["process"].get("terminal"))
    try:
        if needs_relay:
            return tty_session(start)
        pid = start()
        if detach:
            return 0
        return wait_child(pid)
    finally:
        if not detach and not keep:
            try:
                rt.delete(cid, force=True)
            except InclavareError:
                pass


def exec_wait(rt: "Runtime", cid: str, process: "dict[str, Any]", *, detach: bool = False,
              pid_file: str | None = None, console_socket: str | None = None, preserve_fds: int = 0,
              cgroup: list[str] | None = None, ignore_paused: bool = False,
              executor: "Executor | None" = None) -> int:
    """exec; unless ``detach``, wait and return the process's status."""
    from inclavare.runtime.container import wait_child

    if not detach:
        _subreaper()
    if process.get("terminal") and not detach and not console_socket:
        def start(console_fd: int | None = None) -> int:
            return rt.exec(cid, process, pid_file=pid_file, console_fd=console_fd, preserve_fds=preserve_fds,
                           foreground=True, cgroup=cgroup, ignore_paused=ignore_paused, executor=executor)

        return tty_session(start)
    pid = rt.exec(cid, process, pid_file=pid_file, console_socket=console_socket, preserve_fds=preserve_fds,
                  foreground=not detach, cgroup=cgroup, ignore_paused=ignore_paused, executor=executor)
    if detach:
        return 0
    return wait_child(pid)


def tty_session(start: "Callable[[int], int]") -> int:
    """A foreground process with a terminal and no console socket: relay the pty ourselves.
    ``start(console_fd)`` starts the process and returns its pid."""
    import socket

    from inclavare.linux.pty import recv_fd
    from inclavare.runtime.tty import relay

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = start(theirs.fileno())
        theirs.close()
        master = recv_fd(ours)
    finally:
        ours.close()
    return relay(master, pid)
