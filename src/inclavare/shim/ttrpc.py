"""ttrpc over unix sockets: the server the shim's Task service runs on, status codes, and call contexts (the
client its events go out by is :mod:`inclavare.shim.ttrpc_client`).

Unary calls only (all containerd asks of a shim v2): a request frame carries a ``ttrpc.Request`` (service,
method, payload, relative timeout, metadata), the response frame on the same stream id a ``ttrpc.Response``
(google.rpc.Status and payload). Framing is :mod:`inclavare.formats.ttrpc`.

Threads, not asyncio. The handlers are the runtime library (syscalls, file I/O, waits on the fork server), all
blocking; under asyncio every one would run in an executor anyway and the loop would only add a hop. containerd
also parks calls for a long time (``Wait`` returns when the process exits), so each in-flight request needs its
own thread: requests go to an elastic pool that reuses idle threads and grows when none is idle (capped per
connection). Forking from a threaded process is unsafe, which is why the shim forks containers through a fork
server started before this server's first thread; nothing here forks.

Each connection has one reading role, held by one pool thread at a time: it reads and decodes frames, and at
a request it hands the role to another pool thread and runs the handler itself, writing the response under
the connection's send lock; so no thread has to be woken between a request's arrival and its answer. Methods
registered ``inline`` (quick, non-blocking) skip even the hand-over. Measured on a unary call from another
process (bench/ttrpc.py): the hand-over costs about 45 µs of GIL traffic, which is why ``inline`` exists.

Hostile peers: an oversized frame is skipped without buffering and answered RESOURCE_EXHAUSTED (as ttrpc
does), garbage or an even stream id gets INVALID_ARGUMENT on that stream, a stalled half frame blocks only its
own connection, and a peer that stops reading is disconnected after ``send_timeout``. A request's
``timeout_nano`` is honoured: at the deadline the caller gets DEADLINE_EXCEEDED and the handler's
:class:`CallContext` is cancelled (a late result is dropped).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from inclavare.errors import ConfigError, InclavareError
from inclavare.formats.ttrpc import (
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    OversizedFrame,
    TtrpcFrameError,
    encode_frame,
)
from inclavare.shim.proto.rpc import status_pb2
from inclavare.shim.proto.ttrpc import request_pb2

log = logging.getLogger("inclavare.shim.ttrpc")

NAMESPACE_KEY = "containerd-namespace-ttrpc"
_RECV = 1 << 16
_IDLE_WORKER_SECONDS = 60.0


class Code(IntEnum):
    """gRPC status codes (google.rpc.Code), which ttrpc carries in google.rpc.Status."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(InclavareError):
    """A ttrpc call failed with a status: raised by handlers to choose the code, and by the client."""

    def __init__(self, code: int, message: str) -> None:
        self.code = Code(code) if code in Code._value2member_map_ else code
        self.status_message = message
        name = self.code.name if isinstance(self.code, Code) else str(code)
        super().__init__(f"ttrpc: {name}: {message}")


def status_of(exc: BaseException) -> tuple[int, str]:
    """The status a handler's exception becomes: TtrpcError keeps its code, OS and builtin errors map as
    containerd's errdefs and ttrpc's convertCode do, any other error is UNKNOWN with its message."""
    if isinstance(exc, TtrpcError):
        return int(exc.code), exc.status_message
    for types, code in _EXCEPTION_CODES:
        if isinstance(exc, types):
            return code, str(exc) or type(exc).__name__
    return Code.UNKNOWN, str(exc) or type(exc).__name__


_EXCEPTION_CODES: list[tuple[type[BaseException] | tuple[type[BaseException], ...], int]] = [
    ((FileNotFoundError, ProcessLookupError), Code.NOT_FOUND),
    (FileExistsError, Code.ALREADY_EXISTS),
    (PermissionError, Code.PERMISSION_DENIED),
    (NotImplementedError, Code.UNIMPLEMENTED),
    (TimeoutError, Code.DEADLINE_EXCEEDED),
    ((ConfigError, ValueError), Code.INVALID_ARGUMENT),
]


_EVENT_LOCK = threading.Lock()


class CallContext:
    """What a handler knows about its call: names, metadata (the containerd namespace), deadline, cancellation."""

    __slots__ = ("service", "method", "metadata", "deadline", "_cancelled")

    def __init__(self, service: str, method: str, metadata: dict[str, list[str]], deadline: float | None) -> None:
        self.service = service
        self.method = method
        self.metadata = metadata
        self.deadline = deadline  # time.monotonic() value, or None
        self._cancelled: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when the caller's deadline passes or its connection goes (made on first use: most calls never
        look)."""
        event = self._cancelled
        if event is None:
            with _EVENT_LOCK:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    @property
    def namespace(self) -> str | None:
        """The containerd namespace of the caller (metadata ``containerd-namespace-ttrpc``), if given."""
        values = self.metadata.get(NAMESPACE_KEY)
        return values[0] if values else None

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


M = TypeVar("M", bound=Message)
Handler = Callable[[CallContext, Any], Message]


# ---------------------------------------------------------------------------------------------- workers

class _Workers:
    """An elastic thread pool: reuse an idle thread, else start one; idle threads end after a minute."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queue: deque[Callable[[], None]] = deque()
        self._idle = 0
        self.threads = 0

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._queue.append(fn)
                self._cv.notify()
                return
            self.threads += 1
        threading.Thread(target=self._run, args=(fn,), name=self._name, daemon=True).start()

    def _run(self, fn: Callable[[], None]) -> None:
        while True:
            try:
                fn()
            except BaseException:  # a job's own errors are handled inside it; never lose the thread silently
                log.exception("ttrpc worker job failed")
            with self._lock:
                self._idle += 1
                while not self._queue:
                    if not self._cv.wait(_IDLE_WORKER_SECONDS) and not self._queue:
                        self._idle -= 1
                        self.threads -= 1
                        return
                fn = self._queue.popleft()


# ---------------------------------------------------------------------------------------------- server

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


def _same_user(sock: socket.socket) -> bool:
    """The peer runs as our effective uid and gid (SO_PEERCRED); refused when it cannot be told."""
    try:
        _, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return False
    if (uid, gid) != (os.geteuid(), os.getegid()):
        log.warning("ttrpc: refusing a peer running as uid %d gid %d", uid, gid)
        return False
    return True


class _Budget:
    """Requests in flight across all connections (each holds a thread while its handler runs)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def give(self, n: int = 1) -> None:
        with self.lock:
            self.used -= n


class _Conn:
    """One accepted connection: its socket, send lock, and the calls in flight by stream id."""

    def __init__(self, sock: socket.socket, budget: _Budget) -> None:
        self.sock = sock
        self.budget = budget
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.inflight: dict[int, CallContext] = {}
        self.closed = False
        # touched only by the thread holding the reading role (handed over through the worker queue)
        self.decoder = FrameDecoder()
        self.backlog: deque[Frame | OversizedFrame] = deque()

    def claim(self, stream_id: int) -> bool:
        """Take the right to answer ``stream_id`` (once: either the handler's result or the deadline)."""
        with self.lock:
            if self.inflight.pop(stream_id, None) is None:
                return False
        self.budget.give()
        return True

    def send(self, stream_id: int, code: int, message: str, payload: bytes = b"") -> None:
        # the status is always present, an empty one on success, as ttrpc's Go server sends it
        data = request_pb2.Response(status=status_pb2.Status(code=code, message=message),
                                    payload=payload).SerializeToString()
        try:
            frame = encode_frame(stream_id, TYPE_RESPONSE, data)
        except TtrpcFrameError as e:  # a handler's response over 4 MiB: tell the caller instead
            frame = encode_frame(stream_id, TYPE_RESPONSE, request_pb2.Response(status=status_pb2.Status(
                code=Code.RESOURCE_EXHAUSTED, message=str(e))).SerializeToString())
        try:
            with self.send_lock:
                self.sock.sendall(frame)
        except OSError as e:  # the peer is gone or stopped reading past send_timeout: drop the connection
            log.warning("ttrpc: dropping connection: sending response on stream %d: %s", stream_id, e)
            self.shutdown()

    def shutdown(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for ctx in self.inflight.values():
                ctx.cancelled.set()
            self.budget.give(len(self.inflight))
            self.inflight.clear()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class TtrpcServer:
    """A ttrpc server on a unix socket; register handlers, then :meth:`serve` (a path or a bound socket)."""

    def __init__(self, *, max_connections: int = 256, max_inflight: int = 1024, max_total_inflight: int = 4096,
                 send_timeout: float = 30.0,
                 same_user_only: bool = True,
                 error_status: Callable[[BaseException], tuple[int, str]] = status_of) -> None:
        self.max_connections = max_connections
        # ttrpc's shim servers admit only peers of their own uid and gid (UnixSocketRequireSameUser)
        self.same_user_only = same_user_only
        self.max_inflight = max_inflight
        self._budget = _Budget(max_total_inflight)
        self.send_timeout = send_timeout
        self.error_status = error_status
        self._handlers: dict[str, dict[str, tuple[type[Message], Handler, bool]]] = {}
        self._workers = _Workers("ttrpc-worker")
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self._path: str | None = None
        self._closing = False
        self._deadlines: list[tuple[float, int, _Conn, int, CallContext]] = []
        self._deadline_cv = threading.Condition(self._lock)
        self._deadline_thread: threading.Thread | None = None
        self._seq = 0

    # -- registration --------------------------------------------------------------------------

    def register(self, service: str, method: str, request_type: type[M],
                 handler: Callable[[CallContext, M], Message], *, inline: bool = False) -> None:
        """Serve ``service``/``method``: the payload is decoded as ``request_type`` and passed to ``handler``.

        ``inline``: the handler is quick and never blocks (a state lookup), so the thread that read the request
        runs it without first handing the connection's reading role on: about 45 µs less per call, measured,
        and no GIL hand-over. The connection's next requests wait while it runs."""
        methods = self._handlers.setdefault(service, {})
        if method in methods:
            raise ValueError(f"ttrpc: {service}/{method} is already registered")
        methods[method] = (request_type, handler, inline)

    def register_service(self, descriptor: Any, impl: object, *, inline: Iterable[str] = ()) -> list[str]:
        """Serve every method of a protobuf ``ServiceDescriptor`` that ``impl`` defines (same name, called as
        ``impl.Method(ctx, request)``); the others stay UNIMPLEMENTED. ``inline`` names the quick methods (see
        :meth:`register`). Returns the names served."""
        quick = set(inline)
        from google.protobuf import message_factory

        served = []
        for m in descriptor.methods:
            fn = getattr(impl, m.name, None)
            if fn is None:
                continue
            self.register(descriptor.full_name, m.name, message_factory.GetMessageClass(m.input_type), fn,
                          inline=m.name in quick)
            served.append(m.name)
        self._handlers.setdefault(descriptor.full_name, {})  # the service exists even if no method is served
        return served

    # -- lifecycle -----------------------------------------------------------------------------

    def serve(self, where: str | socket.socket, *, backlog: int = 128) -> TtrpcServer:
        """Listen on a unix socket path (created mode 0600, replacing a stale socket) or on an already bound
        socket (a shim inherits one from its ``start``), and accept in a background thread."""
        if isinstance(where, socket.socket):
            sock = where
        else:
            try:
                if stat.S_ISSOCK(os.lstat(where).st_mode):
                    os.unlink(where)  # a stale socket of an earlier server
                else:
                    raise TtrpcError(Code.ALREADY_EXISTS, f"ttrpc socket {where}: something that is not a socket "
                                                          "is in the way")
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                sock.bind(where)
            except OSError as e:
                sock.close()
                raise TtrpcError(Code.UNAVAILABLE, f"ttrpc socket {where}: {e.strerror or e}") from None
            finally:
                os.umask(old)
            self._path = where
        sock.listen(backlog)
        self._listener = sock
        threading.Thread(target=self._accept_loop, args=(sock,), name="ttrpc-accept", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop accepting, drop every connection (their in-flight calls are cancelled) and remove the socket."""
        with self._lock:
            self._closing = True
            conns = list(self._conns)
            self._deadline_cv.notify_all()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for c in conns:
            c.shutdown()
        if self._path:
            with contextlib.suppress(OSError):
                os.unlink(self._path)

    def __enter__(self) -> TtrpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept_loop(self, listener: socket.socket) -> None:
        sndtimeo = struct.pack("ll", int(self.send_timeout), int(self.send_timeout % 1 * 1e6))
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                if self._closing:
                    return
                time.sleep(0.01)  # EMFILE and friends: do not spin
                continue
            if self.same_user_only and not _same_user(sock):
                sock.close()
                continue
            with self._lock:
                if self._closing or len(self._conns) >= self.max_connections:
                    sock.close()
                    continue
                conn = _Conn(sock, self._budget)
                self._conns.add(conn)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, sndtimeo)
            self._workers.submit(lambda c=conn: self._read_role(c))  # type: ignore[misc]

    # -- per connection ------------------------------------------------------------------------

    def _read_role(self, conn: _Conn) -> None:
        """Hold the connection's reading role: read frames and answer the ones that need no handler; at the
        first request that does, pass the role to another pool thread and run the handler here, so a call
        is answered by the thread that read it (no thread wake-up on its path) while reading goes on."""
        try:
            while True:
                while not conn.backlog:
                    try:
                        data = conn.sock.recv(_RECV)
                    except OSError:
                        data = b""
                    if not data:
                        self._finish(conn)
                        return
                    conn.backlog.extend(conn.decoder.feed(data))
                frame = conn.backlog.popleft()
                if isinstance(frame, OversizedFrame):
                    conn.send(frame.stream_id, Code.RESOURCE_EXHAUSTED, frame.message())
                elif frame.type == TYPE_REQUEST:
                    found = self._dispatch(conn, frame.stream_id, frame.payload)
                    if found is not None:
                        job, inline = found
                        if inline:  # a quick handler: keep the role, answer, read on
                            job()
                            continue
                        self._workers.submit(lambda: self._read_role(conn))
                        job()
                        return
                # other types (data frames of streams) are ignored, as ttrpc's unary server does
        except BaseException:
            self._finish(conn)
            raise

    def _finish(self, conn: _Conn) -> None:
        conn.shutdown()
        conn.sock.close()
        with self._lock:
            self._conns.discard(conn)

    def _dispatch(self, conn: _Conn, stream_id: int, payload: bytes) -> tuple[Callable[[], None], bool] | None:
        """Check a request frame; answer it at once if it cannot be served, else return the job serving it."""
        try:
            req = request_pb2.Request.FromString(payload)
        except DecodeError as e:
            conn.send(stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {e}")
            return None
        if stream_id % 2 != 1:
            conn.send(stream_id, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
            return None
        methods = self._handlers.get(req.service)
        if methods is None:
            conn.send(stream_id, Code.UNIMPLEMENTED, f"service {req.service}")
            return None
        entry = methods.get(req.method)
        if entry is None:
            conn.send(stream_id, Code.UNIMPLEMENTED, f"method {req.method}")
            return None
        metadata: dict[str, list[str]] = {}
        for kv in req.metadata:
            metadata.setdefault(kv.key, []).append(kv.value)
        deadline = time.monotonic() + req.timeout_nano / 1e9 if req.timeout_nano > 0 else None
        ctx = CallContext(req.service, req.method, metadata, deadline)
        with conn.lock:
            if conn.closed:
                return None
            if stream_id in conn.inflight:
                problem = f"stream {stream_id} is already in use"
            elif len(conn.inflight) >= self.max_inflight:
                problem = f"more than {self.max_inflight} requests in flight on one connection"
            elif not self._budget.take():
                problem = f"more than {self._budget.limit} requests in flight"
            else:
                problem = ""
                conn.inflight[stream_id] = ctx
        if problem:
            conn.send(stream_id, Code.INVALID_ARGUMENT if "in use" in problem else Code.RESOURCE_EXHAUSTED, problem)
            return None
        if deadline is not None:
            self._add_deadline(deadline, conn, stream_id, ctx)
        request_type, handler, inline = entry
        return (lambda: self._run(conn, stream_id, ctx, request_type, handler, req.payload)), inline

    def _run(self, conn: _Conn, stream_id: int, ctx: CallContext, request_type: type[Message], handler: Handler,
             payload: bytes) -> None:
        t0 = time.monotonic()
        try:
            try:
                request = request_type.FromString(payload)
            except DecodeError as e:
                what = f"{ctx.service}/{ctx.method}: undecodable {request_type.DESCRIPTOR.full_name}: {e}"
                raise TtrpcError(Code.INVALID_ARGUMENT, what) from None
            response = handler(ctx, request)
            if not isinstance(response, Message):
                raise TypeError(f"{ctx.service}/{ctx.method} returned {type(response).__name__}, not a message")
            result: tuple[int, str, bytes] = (Code.OK, "", response.SerializeToString())
        except Exception as e:
            code, message = self.error_status(e)
            if code == Code.UNKNOWN and not isinstance(e, InclavareError):
                log.exception("ttrpc: %s/%s failed", ctx.service, ctx.method)
            result = (code, message, b"")
        if conn.claim(stream_id):
            conn.send(stream_id, *result)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ttrpc: %s/%s -> %d in %.2f ms", ctx.service, ctx.method, result[0],
                      (time.monotonic() - t0) * 1000)

    # -- deadlines -----------------------------------------------------------------------------

    def _add_deadline(self, deadline: float, conn: _Conn, stream_id: int, ctx: CallContext) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._deadlines, (deadline, self._seq, conn, stream_id, ctx))
            if self._deadline_thread is None:
                self._deadline_thread = threading.Thread(target=self._deadline_loop, name="ttrpc-deadlines",
                                                         daemon=True)
                self._deadline_thread.start()
            elif self._deadlines[0][1] == self._seq:
                self._deadline_cv.notify()

    def _deadline_loop(self) -> None:
        while True:
            expired = []
            with self._lock:
                while not self._closing:
                    now = time.monotonic()
                    while self._deadlines and self._deadlines[0][0] <= now:
                        expired.append(heapq.heappop(self._deadlines))
                    if expired:
                        break
                    self._deadline_cv.wait(self._deadlines[0][0] - now if self._deadlines else None)
                if self._closing:
                    return
            for _, _, conn, stream_id, ctx in expired:
                if conn.claim(stream_id):
                    ctx.cancelled.set()
                    conn.send(stream_id, Code.DEADLINE_EXCEEDED, "context deadline exceeded")
