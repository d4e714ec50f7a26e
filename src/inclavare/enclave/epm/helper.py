"""The forked helper process that talks to epm for rune, whose own process must stay single-threaded.

gRPC starts threads that outlive their channels, and the process that calls an enclave runtime's ``load`` /
``warm`` or a PAL v3's pool lookup is the container's first init stage: it still unshares namespaces (a user
namespace needs a single-threaded caller; no thread can be created after ``unshare(CLONE_NEWPID)``) and forks the
container's init. So every epm call rune makes runs in a :class:`Helper`: a forked child (its threads die with
it) that runs one function and sends the result back over a unix socket pair -- pickled (our own process image
on both ends) and, when the function returns :class:`WithFds`, with file descriptors (SCM_RIGHTS: PAL v3's
enclave descriptor). Both callers use it: the warm pools (:mod:`.warm`) and the enclave hand-over
(:mod:`.enclave`).

The result may be read later, also by a descendant that inherited the socket: a runtime starts the helper on the
host and the container's init reads the result, so the epm work overlaps with the rest of ``create``.
"""

from __future__ import annotations

import array
import os
import pickle
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inclavare.enclave.epm import client

HELPER_TIMEOUT = 60.0  # seconds: a miss compiles, which takes long for big modules
MAX_FDS = 4  # descriptors one result may carry
_CHUNK = 1 << 20


@dataclass
class WithFds:
    """A helper function's result that carries descriptors: ``value`` is pickled, ``fds`` passed (the helper's
    copies close when it exits)."""

    value: Any
    fds: list[int] = field(default_factory=list)


class Helper:
    """``fn(*args)`` running in a forked child, its result to be read later (module docstring).

    The child keeps only its stdio and its end of the socket pair (nothing of the caller's channels stays open in
    it), sends its result and exits; it sends nothing when ``fn`` raises."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd, self.parent = pid, fd, os.getpid()

    @classmethod
    def start(cls, fn: Callable[..., Any], *args: Any) -> Helper | None:
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError as e:
            client.no_pool(f"cannot make the epm helper's socket pair ({e.strerror})")
            return None
        r, w = ours.detach(), theirs.detach()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(r)
            os.close(w)
            client.no_pool(f"cannot fork the epm helper ({e.strerror})")
            return None
        if pid == 0:  # the helper
            code = 0
            try:
                _close_inherited(w)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a reader that gave up ends us
                out = fn(*args)
                fds = out.fds if isinstance(out, WithFds) else []
                value = out.value if isinstance(out, WithFds) else out
                _send(w, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), fds[:MAX_FDS])
            except BaseException:  # noqa: BLE001 - nothing may unwind into the caller's code in this child
                code = 1
            os._exit(code)
        os.close(w)
        return cls(pid, r)

    def result(self, timeout: float | None = None) -> Any:
        """The helper's result, or None (it failed, or took longer than ``timeout``: then it is abandoned).
        Descriptors it sent are closed (see :meth:`result_with_fds`)."""
        value, fds = self.result_with_fds(timeout)
        for fd in fds:
            os.close(fd)
        return value

    def result_with_fds(self, timeout: float | None = None) -> tuple[Any, list[int]]:
        """(the helper's result or None, the descriptors it sent: close-on-exec, the caller's to close)."""
        if self.fd < 0:
            return None, []
        timeout = HELPER_TIMEOUT if timeout is None else timeout
        chunks: list[bytes] = []
        fds: list[int] = []
        deadline = time.monotonic() + timeout
        late = truncated = False
        sock = socket.socket(fileno=os.dup(self.fd))
        try:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    late = True
                    break
                if not poller.poll(int(left * 1000) + 1):
                    continue
                chunk, got, flags = recv_fds(sock, _CHUNK, MAX_FDS)
                fds.extend(got)
                truncated |= bool(flags & socket.MSG_CTRUNC)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:  # InterruptedError, or the socket failed: the helper's answer is lost
            late = True
        finally:
            sock.close()
            self.close(kill=late)
        value = None
        if late:
            client.no_pool(f"the epm helper took more than {timeout:.0f} s")
        elif not chunks:
            client.no_pool("the epm helper failed")
        elif not truncated:
            try:
                value = pickle.loads(b"".join(chunks))
            except Exception:  # noqa: BLE001
                value = None
        if value is None:
            for fd in fds:
                os.close(fd)
            fds = []
        return value, fds

    def close(self, kill: bool = True) -> None:
        """Stop reading (an unread helper ends on SIGPIPE); reap it if it is our child."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if os.getpid() != self.parent:
            return  # not our child (the container's init reads what its host side started)
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                os.waitpid(self.pid, 0)
                return
            except InterruptedError:
                continue
            except ChildProcessError:
                return


def _close_inherited(keep: int) -> None:
    """In the helper: close the caller's descriptors, all but stdio, ``keep`` and anonymous inodes. An anonymous
    inode (epoll, eventfd, pidfd, timerfd) is no channel, so keeping it cannot hide the caller's death from a peer;
    and a library with fork handlers -- gRPC, in a caller that had run it (tests do; rune does not) -- restarts its
    poller in this child on its epoll and eventfd descriptors: closing those kills the helper."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: close them all
        import resource

        os.closerange(3, keep)
        os.closerange(keep + 1, max(keep + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        return
    for name in names:
        fd = int(name)
        if fd <= 2 or fd == keep:
            continue
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("anon_inode:"):
                continue
            os.close(fd)
        except OSError:  # the listing's own descriptor, already gone
            pass


def recv_fds(sock: socket.socket, size: int, maxfds: int) -> tuple[bytes, list[int], int]:
    """One ``recvmsg``: (data, the descriptors that came with it, close-on-exec, msg flags). ``socket.recv_fds``
    is not used: it drops its ``flags`` argument, so MSG_CMSG_CLOEXEC would be ignored."""
    data, anc, flags, _ = sock.recvmsg(size, socket.CMSG_SPACE(maxfds * array.array("i").itemsize),
                                       socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, blob in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(blob[:len(blob) - len(blob) % fds.itemsize])
    return data, list(fds), flags


def _send(fd: int, data: bytes, fds: list[int]) -> None:
    """Write ``data`` to the stream socket ``fd``, ``fds`` riding on the first bytes."""
    sock = socket.socket(fileno=fd)
    try:
        view = memoryview(data)
        if fds:
            view = view[socket.send_fds(sock, [view[:_CHUNK]], fds):]
        while view:
            view = view[sock.send(view):]
    finally:
        sock.detach()


def in_helper(fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """``fn(*args)`` in a :class:`Helper`, waited for: its result, or None on any failure."""
    helper = Helper.start(fn, *args)
    return helper.result(timeout) if helper is not None else None
