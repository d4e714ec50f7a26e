"""The ttrpc client: unary calls over one unix socket connection, shared by threads (the shim forwards its
events to containerd with it; tests and benchmarks call servers with it). Framing is
:mod:`inclavare.formats.ttrpc`, status codes and errors are :mod:`inclavare.shim.ttrpc`'s.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from inclavare.formats.ttrpc import (
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    OversizedFrame,
    TtrpcFrameError,
    encode_frame,
)
from inclavare.shim.proto.ttrpc import request_pb2
from inclavare.shim.ttrpc import Code, TtrpcError

M = TypeVar("M", bound=Message)
_RECV = 1 << 16


class _Waiter:
    __slots__ = ("event", "response", "error", "done")

    def __init__(self) -> None:
        # made (under the client's lock) only by a caller about to sleep; set when done, or when the caller is
        # asked to take over reading
        self.event: threading.Event | None = None
        self.response: request_pb2.Response | None = None
        self.error: TtrpcError | None = None
        self.done = False  # written under the client's lock


class TtrpcClient:
    """Unary ttrpc calls over one unix socket connection; safe to share between threads (calls interleave).

    No background thread: a caller waiting for its answer reads the socket itself if nobody else is reading
    (and hands answers for other callers to them), else sleeps until its answer or its turn to read comes;
    so a lone call costs what a blocking send and receive cost. ``metadata`` is sent with every call (e.g.
    ``{NAMESPACE_KEY: "k8s.io"}``). A broken connection fails the calls in flight and every later call with
    UNAVAILABLE; make a new client to reconnect.
    """

    def __init__(self, path: str, *, metadata: dict[str, str] | None = None, connect_timeout: float = 5.0) -> None:
        self.path = path[len("unix://"):] if path.startswith("unix://") else path
        self.metadata = dict(metadata or {})
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(connect_timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise TtrpcError(Code.UNAVAILABLE, f"connect {self.path}: {e.strerror or e}") from None
        sock.settimeout(None)
        self._sock = sock
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()  # the reading role
        self._decoder = FrameDecoder()  # used by the holder of the reading role only
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._pending: dict[int, _Waiter] = {}
        self._next_id = 1
        self._closed: str | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def call(self, service: str, method: str, request: Message, response_type: type[M], *,
             timeout: float | None = None, metadata: dict[str, str] | Iterable[tuple[str, str]] | None = None) -> M:
        """Call ``service``/``method``; returns the decoded response or raises :class:`TtrpcError`."""
        req = request_pb2.Request(service=service, method=method, payload=request.SerializeToString())
        if timeout:
            req.timeout_nano = int(timeout * 1e9)
        if self.metadata or metadata:
            pairs = list(self.metadata.items())
            if metadata:
                pairs += list(metadata.items() if isinstance(metadata, dict) else metadata)
            req.metadata.extend(request_pb2.KeyValue(key=k, value=v) for k, v in pairs)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Waiter()
        with self._lock:
            if self._closed is not None:
                raise TtrpcError(Code.UNAVAILABLE, self._closed)
            stream_id = self._next_id
            self._next_id = (self._next_id + 2) & 0xFFFFFFFF or 1
            self._pending[stream_id] = waiter
        try:
            frame = encode_frame(stream_id, TYPE_REQUEST, req.SerializeToString())
        except TtrpcFrameError as e:
            self._forget(stream_id)
            raise TtrpcError(Code.RESOURCE_EXHAUSTED, str(e)) from None
        try:
            with self._send_lock:
                self._sock.sendall(frame)
        except OSError as e:
            self._fail(f"ttrpc: closed ({e.strerror or e})")
        self._await(stream_id, waiter, deadline)
        if not waiter.done:
            self._forget(stream_id)
            raise TtrpcError(Code.DEADLINE_EXCEEDED, f"{service}/{method}: context deadline exceeded")
        if waiter.error is not None:
            raise waiter.error
        resp = waiter.response
        assert resp is not None
        if resp.status.code:
            raise TtrpcError(resp.status.code, resp.status.message)
        try:
            out: M = response_type.FromString(resp.payload)
        except DecodeError as e:
            raise TtrpcError(Code.INTERNAL, f"{service}/{method}: undecodable "
                                            f"{response_type.DESCRIPTOR.full_name}: {e}") from None
        return out

    def close(self) -> None:
        self._fail("ttrpc: closed")
        with self._read_lock:  # wait for a reader to notice (shutdown woke it) before the fd goes
            self._sock.close()

    def __enter__(self) -> TtrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting and reading ---------------------------------------------------------------------

    def _await(self, stream_id: int, waiter: _Waiter, deadline: float | None) -> None:
        """Until ``waiter`` is answered or the deadline passes: read (holding the role) or sleep. Whoever leaves
        while calls still wait and nobody reads wakes one of them to take over."""
        try:
            while not waiter.done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                if self._read_lock.acquire(blocking=False):
                    try:
                        self._read_for(waiter, deadline)
                    finally:
                        self._read_lock.release()
                else:
                    with self._lock:
                        if waiter.done:
                            return
                        event = waiter.event
                        if event is None:
                            event = waiter.event = threading.Event()
                    if not self._read_lock.locked():  # the reader left before it could see us: read
                        continue
                    event.wait(left)
                    if not waiter.done:
                        event.clear()  # woken to take over reading (or timed out): loop
        finally:
            if not waiter.done:
                self._forget(stream_id)
            if not self._read_lock.locked():
                self._wake_a_reader()

    def _read_for(self, waiter: _Waiter, deadline: float | None) -> None:
        while not waiter.done and self._closed is None:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if not self._poll.poll(max(1, int(left * 1000))):
                    continue
            try:
                data = self._sock.recv(_RECV)
            except OSError as e:
                self._fail(f"ttrpc: closed ({e.strerror or e})")
                return
            if not data:
                self._fail("ttrpc: closed")
                return
            for frame in self._decoder.feed(data):
                self._deliver(frame)

    def _deliver(self, frame: Frame | OversizedFrame) -> None:
        with self._lock:
            waiter = self._pending.pop(frame.stream_id, None)
        if waiter is None:
            return  # a call that timed out, or a stray stream
        if isinstance(frame, OversizedFrame):
            waiter.error = TtrpcError(Code.RESOURCE_EXHAUSTED, frame.message())
        elif frame.type != TYPE_RESPONSE:
            waiter.error = TtrpcError(Code.INTERNAL, f"unexpected frame type {frame.type} on stream {frame.stream_id}")
        else:
            try:
                waiter.response = request_pb2.Response.FromString(frame.payload)
            except DecodeError as e:
                waiter.error = TtrpcError(Code.INTERNAL, f"undecodable ttrpc response: {e}")
        with self._lock:
            waiter.done = True
            event = waiter.event
        if event is not None:
            event.set()

    def _wake_a_reader(self) -> None:
        """After giving up the reading role: if calls still wait, wake one of them to take it."""
        with self._lock:
            for w in self._pending.values():
                if w.event is not None:  # asleep (one not yet asleep checks the role itself first)
                    w.event.set()
                    return

    def _forget(self, stream_id: int) -> None:
        with self._lock:
            self._pending.pop(stream_id, None)

    def _fail(self, why: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = why
            pending, self._pending = self._pending, {}
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        for w in pending.values():
            w.error = TtrpcError(Code.UNAVAILABLE, why)
            with self._lock:
                w.done = True
                event = w.event
            if event is not None:
                event.set()
