"""A process's stdio as containerd hands it to a shim, and the copying between it and the process.

containerd passes three strings per process (Create and Exec requests): FIFO paths (ctr, CRI), or a URI
for stdout: ``binary:///path?arg=v`` (a logger: we start it with fds 3, 4 and 5 = the read ends of the
process's stdout and stderr pipes and a "ready" pipe it closes or writes to when it is ready; environment
CONTAINER_ID and CONTAINER_NAMESPACE), or ``file:///path`` (stdout and stderr appended to one file).
This follows containerd's pkg/process io.go (the runc v2 shim):

- FIFOs: the process gets pipes; one thread per stream copies pipe -> FIFO. A FIFO is opened read-write,
  which never blocks and keeps it usable when its client reconnects (runc's shim opens a writer and a
  reader for that). The stdin FIFO is copied into the process's stdin pipe; the shim also holds a writer
  on it, so the process sees EOF only after CloseIO *and* the client's own close.
- binary: the process writes straight into the logger's pipes; nothing is copied and stdin is not used.
- file: pipes, copied to the file (O_APPEND, created 0644 with its directories).
- terminal: the process's pty master comes back through the console socket; master -> stdout (FIFO, file
  or the logger's stdout pipe) and stdin FIFO -> master are copied; ResizePty sets the window size.
- IoUid/IoGid (runc's Options): the pipes made for a FIFO or file:// process are owned by that user and
  group (fchown of the process's end, as go-runc's NewPipeIO), so a process in a user namespace can reopen
  them (``/dev/stdout``, ``/proc/self/fd/1``). As with runc's shim, a logger's pipes and a terminal are not.

Copy threads wait in poll() on their source and on a stop pipe, so closing a process's IO never hangs on
a blocked read. Nothing here blocks the caller.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import struct
import termios
import threading
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from inclavare.errors import ShimError

CHUNK = 32768
LOGGER_READY_TIMEOUT = 10.0  # seconds a binary:// logger may take to say it is ready
FIFO_READER_WAIT = 10.0  # seconds an output FIFO waits for its client's reader at open (see _open_fifo)
READER_STALL = 0.5  # seconds a client may read nothing of a finished stream's FIFO before we stop waiting for it


class Stdio(NamedTuple):
    """What containerd asked for: three paths or URIs (empty: none) and whether a terminal is wanted."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class LoggerSpec(NamedTuple):
    path: str
    args: list[str]
    env: dict[str, str]


def parse_binary_uri(uri: str, cid: str, namespace: str) -> LoggerSpec:
    """argv and environment of a ``binary://`` logger: each query key then its value (when not empty)
    as arguments, in the URI's order; ``env.NAME=v`` keys go to the environment (containerd 2.x); the
    environment is CONTAINER_ID and CONTAINER_NAMESPACE and nothing of the shim's."""
    u = urlsplit(uri)
    path = _local_path(u.netloc, u.path, uri)
    args: list[str] = []
    env: dict[str, str] = {}
    for k, v in parse_qsl(u.query, keep_blank_values=True):
        if k.startswith("env."):
            if k[4:] and k[4:] not in ("CONTAINER_ID", "CONTAINER_NAMESPACE"):
                env[k[4:]] = v
            continue
        args.append(k)
        if v:
            args.append(v)
    env.update(CONTAINER_ID=cid, CONTAINER_NAMESPACE=namespace)
    return LoggerSpec(path, args, env)


def _scheme(stdio: Stdio) -> str:
    if not stdio.stdout:
        return "fifo"
    scheme = urlsplit(stdio.stdout).scheme
    if scheme in ("", "fifo"):
        return "fifo"
    if scheme in ("binary", "file"):
        return scheme
    raise ShimError(f"stdout {stdio.stdout!r}: unknown stdio scheme {scheme!r}", "invalid_argument")


def _open_fifo(path: str, what: str, reader_wait: float = 0.0) -> int:
    """A FIFO opened read-write (never blocks, survives its client closing and reopening), blocking I/O.

    ``reader_wait`` (output FIFOs): first wait up to that long for the client's reader. ctr and containerd open
    their ends in the background and give up the open once the task has exited; output written before their
    reader exists would be dropped with the FIFO. runc's shim blocks in a write-only open for the same reason."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ShimError(f"{what} {path}: {e.strerror}", "invalid_argument") from None
    if not stat.S_ISFIFO(st.st_mode):
        raise ShimError(f"{what} {path}: not a FIFO", "invalid_argument")
    probe = _await_fifo_reader(path, reader_wait) if reader_wait > 0 else -1
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    finally:
        if probe >= 0:  # closed only now: the reader must never see the writers drop to none (its EOF)
            os.close(probe)


def _await_fifo_reader(path: str, timeout: float) -> int:
    """A write-only fd once a reader has the FIFO open (a non-blocking write-only open fails with ENXIO
    before; a reader blocked in its open counts), or -1 at the timeout."""
    import time

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENXIO:
                return -1  # the read-write open reports it
        if time.monotonic() >= deadline:
            return -1  # no client: copy anyway, as before
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def _local_path(netloc: str, path: str, uri: str) -> str:
    """The absolute local path of a binary:// or file:// URI (scheme:///path); a host part is refused
    (containerd would silently drop it: binary://bin/logger would run /logger)."""
    if netloc or not path.startswith("/"):
        raise ShimError(f"stdout {uri!r}: expected an absolute path as in scheme:///path", "invalid_argument")
    return unquote(path)


def _open_log_file(uri: str) -> int:
    u = urlsplit(uri)
    path = _local_path(u.netloc, u.path, uri)
    try:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ShimError(f"stdout file {path}: {e.strerror}", "invalid_argument") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Shared:
    """A destination fd that several copy threads write to, closed by the last one."""

    def __init__(self, fd: int, users: int) -> None:
        self.fd, self.users = fd, users
        self.lock = threading.Lock()

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            last = self.users == 0
        if last:
            os.close(self.fd)


class ProcessIO:
    """The shim's end of one process's stdio. :attr:`child` holds the fds to hand to the process
    (names as the fork server takes them: stdin, stdout, stderr, console); call :meth:`handed` once the
    process holds them, then :meth:`attach` (terminal: with the pty master's socket) to start copying."""

    def __init__(self, stdio: Stdio, io_owner: tuple[int, int] | None = None) -> None:
        self.stdio = stdio
        self.io_owner = io_owner
        self.child: dict[str, int] = {}
        self.logger_pid = 0
        self._closers: list[int] = []  # ours, closed by close()
        self._pumps: list[threading.Thread] = []
        self._out_pumps: list[threading.Thread] = []
        self._plan: list[tuple[str, int, object, bool]] = []  # (name, src, dst, close_dst_at_eof)
        self._stdin_keep = -1  # our writer on the stdin FIFO (CloseIO closes it)
        self._stdin_pipe = -1  # the write end of the process's stdin pipe
        self._console_sock: socket.socket | None = None
        self.master = -1
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ setup

    @classmethod
    def open(cls, stdio: Stdio, cid: str, namespace: str,
             start_logger: Callable[[LoggerSpec, dict[str, int]], int],
             io_owner: tuple[int, int] | None = None) -> ProcessIO:
        """Open everything ``stdio`` names; ``start_logger(spec, fds)`` starts a binary:// logger with
        the fds logout/logerr/logready and returns its pid. ``io_owner``: (IoUid, IoGid) for the process's
        pipes (None: the shim's own user)."""
        pio = cls(stdio, io_owner)
        try:
            pio._open(cid, namespace, start_logger)
        except BaseException:
            pio.close()
            for fd in pio.child.values():
                os.close(fd)
            pio.child.clear()
            raise
        return pio

    def _pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        return r, w

    def _open(self, cid: str, namespace: str, start_logger: Callable[[LoggerSpec, dict[str, int]], int]) -> None:
        s = self.stdio
        scheme = _scheme(s)
        out_dst: object = None  # where the stdout copy goes (fd or _Shared)
        err_dst: object = None
        if scheme == "binary":
            spec = parse_binary_uri(s.stdout, cid, namespace)
            out_r, out_w = self._pipe()
            err_r, err_w = self._pipe()
            ready_r, ready_w = self._pipe()
            try:
                self.logger_pid = start_logger(spec, {"logout": out_r, "logerr": err_r, "logready": ready_w})
            finally:
                for fd in (out_r, err_r, ready_w):
                    os.close(fd)
            try:
                self._await_ready(ready_r, spec.path)
            finally:
                os.close(ready_r)
            if s.terminal:
                out_dst = out_w
                self._closers.append(err_w)
            else:
                self.child["stdout"], self.child["stderr"] = out_w, err_w
        elif scheme == "file":
            fd = _open_log_file(s.stdout)
            if s.terminal:
                out_dst = fd
            else:
                out_dst = err_dst = _Shared(fd, 2)
        else:
            if s.stdout:
                out_dst = _open_fifo(s.stdout, "stdout", FIFO_READER_WAIT)
            if s.stderr and not s.terminal:
                err_dst = _open_fifo(s.stderr, "stderr", FIFO_READER_WAIT)
        if s.terminal:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._console_sock = ours
            self.child["console"] = theirs.detach()
            if out_dst is None:
                out_dst = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)  # drained, or the process blocks
            self._plan.append(("stdout", -1, out_dst, True))  # the source is the master, known later
        else:
            for name, dst in (("stdout", out_dst), ("stderr", err_dst)):
                if dst is None:
                    continue
                r, w = self._pipe()
                self.child[name] = w
                self._plan.append((name, r, dst, True))
        if s.stdin and scheme != "binary":
            src = _open_fifo(s.stdin, "stdin")  # read-write: also our keep-alive writer
            rd = os.open(f"/proc/self/fd/{src}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            os.set_blocking(rd, True)
            self._stdin_keep = src
            if s.terminal:
                self._plan.append(("stdin", rd, None, False))  # destination: the master
            else:
                r, w = self._pipe()
                self.child["stdin"] = r
                self._stdin_pipe = w
                self._plan.append(("stdin", rd, w, True))
        if self.io_owner is not None and scheme != "binary" and not s.terminal:
            # the pipes made above (all registered for close() already); either end names the one inode
            uid, gid = self.io_owner
            for name, fd in self.child.items():
                try:
                    os.fchown(fd, uid, gid)
                except OSError as e:
                    raise ShimError(f"{name} pipe: chown to IoUid/IoGid {uid}:{gid}: {e.strerror}") from None

    def _await_ready(self, ready_r: int, path: str) -> None:
        poller = select.poll()
        poller.register(ready_r, select.POLLIN)
        if not poller.poll(int(LOGGER_READY_TIMEOUT * 1000)):
            raise ShimError(f"binary logger {path}: not ready after {LOGGER_READY_TIMEOUT:g}s")
        os.read(ready_r, 1)  # a byte, or EOF: both mean ready

    # ------------------------------------------------------------------ after the process got its fds

    def handed(self) -> None:
        """The process holds its ends now: close ours (else its readers never see EOF)."""
        for fd in self.child.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.child.clear()

    def attach(self) -> None:
        """Start copying (terminal: receive the pty master the process sent first)."""
        if self._console_sock is not None:
            from inclavare.linux.pty import recv_fd

            try:
                self._console_sock.settimeout(10)
                self.master = recv_fd(self._console_sock)
            except (OSError, Exception) as e:  # noqa: BLE001 - any failure to get the master is one error
                raise ShimError(f"terminal: the pty master did not arrive: {e}") from None
            finally:
                self._console_sock.close()
                self._console_sock = None
            self._closers.append(self.master)
        for name, src, dst, close_dst in self._plan:
            if name == "stdin":
                target = dst if dst is not None else self.master
                t = threading.Thread(target=self._copy_in, args=(src, target, close_dst), daemon=True,
                                     name="shim-stdin")
                self._pumps.append(t)
            else:
                source = src if src >= 0 else self.master
                t = threading.Thread(target=self._copy_out, args=(source, dst, src >= 0), daemon=True,
                                     name=f"shim-{name}")
                self._pumps.append(t)
                self._out_pumps.append(t)
            t.start()
        self._plan = []

    # ------------------------------------------------------------------ copying

    def _wait_readable(self, fd: int) -> bool:
        """True when ``fd`` is readable or hung up; False when close() asked the copy to stop."""
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            try:
                ready = poller.poll()
            except InterruptedError:
                continue
            return not any(f == self._stop_r for f, _ in ready)

    def _copy_out(self, src: int, dst: object, close_src: bool) -> None:
        fd = dst.fd if isinstance(dst, _Shared) else int(dst)  # type: ignore[call-overload]
        try:
            while self._wait_readable(src):
                try:
                    data = os.read(src, CHUNK)
                except OSError as e:
                    if e.errno == errno.EAGAIN:
                        continue
                    if e.errno != errno.EIO:
                        break
                    data = b""  # EIO: the pty's last slave closed, the end of its output
                if not data:
                    if not isinstance(dst, _Shared):
                        self._await_reader(fd)
                    break
                try:
                    _write_all(fd, data)
                except OSError:
                    break
        finally:
            if close_src:
                os.close(src)
            if isinstance(dst, _Shared):
                dst.release()
            else:
                os.close(fd)

    def _await_reader(self, fd: int) -> None:
        """At the end of a stream into a FIFO (or a logger's pipe): wait until the client has read what is
        still in it. Clients stop reading once they know of the exit (containerd's CRI closes its FIFO
        readers when it handles the exit, ctr ends its copies), and what is left in the FIFO then is lost;
        so Wait, TaskExit and delete, which wait for this copy to end, also wait for the client to have the
        output. Gives up when close() stops the copies, or when the client has read nothing for
        :data:`READER_STALL` seconds (a detached ``ctr run -d`` left no reader: nobody will read it)."""
        import time

        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return
        except OSError:
            return
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        delay, last, since = 1, -1, time.monotonic()
        while True:
            try:
                left = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return
            if left <= 0:
                return
            now = time.monotonic()
            if left != last:
                last, since = left, now
            elif now - since >= READER_STALL:
                return
            if poller.poll(delay):
                return
            delay = min(delay * 2, 20)

    def _copy_in(self, src: int, dst: int, close_dst: bool) -> None:
        try:
            while self._wait_readable(src):
                try:
                    data = os.read(src, CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break  # no writer left: CloseIO and the client's close
                try:
                    _write_all(dst, data)
                except OSError:
                    break
        finally:
            os.close(src)
            if close_dst:
                with self._lock:
                    if self._stdin_pipe == dst:
                        self._stdin_pipe = -1
                        os.close(dst)

    # ------------------------------------------------------------------ requests

    def close_stdin(self) -> None:
        """CloseIO: drop our writer on the stdin FIFO; the process sees EOF once the client closes too."""
        with self._lock:
            fd, self._stdin_keep = self._stdin_keep, -1
        if fd >= 0:
            os.close(fd)

    def resize(self, width: int, height: int) -> None:
        if self.master < 0:
            raise ShimError("ResizePty: the process has no terminal", "failed_precondition")
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        except OSError as e:
            raise ShimError(f"ResizePty: {e.strerror}") from None

    def wait_copied(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the output copies have reached EOF."""
        import time

        deadline = time.monotonic() + timeout
        while self._plan and not self._closed and time.monotonic() < deadline:  # attach() still under way
            time.sleep(0.001)
        for t in list(self._out_pumps):
            while t.ident is None and time.monotonic() < deadline:  # appended, not started yet
                time.sleep(0.001)
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._out_pumps)

    def close(self) -> None:
        """Stop the copies and close everything of ours (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            keep, self._stdin_keep = self._stdin_keep, -1
        os.write(self._stop_w, b"x")
        for t in self._pumps:
            t.join(5)
        for name, src, dst, _ in self._plan:  # never attached
            if src >= 0:
                os.close(src)
            if isinstance(dst, _Shared):
                dst.release()
            elif isinstance(dst, int) and name != "stdin":
                os.close(dst)
            elif isinstance(dst, int) and dst == self._stdin_pipe:
                self._stdin_pipe = -1
                os.close(dst)
        self._plan = []
        for fd in (keep, self._stdin_pipe, *self._closers):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._closers = []
        if self._console_sock is not None:
            self._console_sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
