"""A concurrent, bounded RATS-TLS server: accept connections on a listening socket, negotiate RATS-TLS on each in a
thread of its own, and hand the attested connection to a handler, ``handle(connection, peer)``.

Why (issue 19): a server that serves one connection at a time is held by any client that opens a connection and
says nothing. Here connections are served concurrently, at most ``max_connections`` at once; beyond that a new
connection waits ``queue_timeout`` for a slot (a burst is served a little later, not refused) and is then closed,
logged. Each phase has an absolute deadline that a watchdog enforces by shutting the socket down, however slowly
a client drips bytes: the handshake, reading one request, writing one answer. A request read with
:meth:`ServerConnection.receive_message` is at most ``max_request`` bytes.

The handler owns the protocol: what it reads and writes, how many requests a connection may carry. Whatever it
raises ends that connection only (logged); the server goes on. Peer verification (and any appraisal) happens in
the configuration's verify callback during the handshake, so a refused client never reaches the handler.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inclavare.errors import InclavareError
from inclavare.ratls.dice import RatlsError
from inclavare.ratls.tls.errors import RatsTlsError
from inclavare.sockio import Watchdog

if TYPE_CHECKING:
    from inclavare.ratls.tls.blocking import RatsTls
    from inclavare.ratls.tls.config import RatsTlsConfig
    from inclavare.ratls.verifiers import PeerClaims

__all__ = ["MAX_PLAINTEXT", "MessageTooLarge", "RatsTlsServer", "ServerConnection", "ServerLimits", "peer_name"]

log = logging.getLogger(__name__)

MAX_PLAINTEXT = 16 * 1024  # one TLS record's data: a full record means the message goes on in the next one


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of a server: concurrent connections (and how long a connection above that number waits for a slot
    before it is closed; 0: no waiting), seconds per phase, bytes per message read with ``receive_message``."""

    max_connections: int = 128
    queue_timeout: float = 5.0
    handshake_timeout: float = 10.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    max_request: int = 64 * 1024

    def check(self) -> None:
        """Raise :class:`RatlsError` naming the first field out of range."""
        for name in ("max_connections", "max_request"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RatlsError(f"RATS-TLS server limits: {name}: expected a positive integer, got {value!r}")
        if not _number(self.queue_timeout) or not self.queue_timeout >= 0:
            raise RatlsError(f"RATS-TLS server limits: queue_timeout: expected a number of seconds (0: no waiting), "
                             f"got {self.queue_timeout!r}")
        for name in ("handshake_timeout", "read_timeout", "write_timeout"):
            value = getattr(self, name)
            if not _number(value) or not value > 0:
                raise RatlsError(f"RATS-TLS server limits: {name}: expected a positive number of seconds, "
                                 f"got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


class MessageTooLarge(RatsTlsError):
    """A message read with :meth:`ServerConnection.receive_message` went past the server's ``max_request``."""


_Watchdog = Watchdog  # the class moved to inclavare.sockio (the HTTP server uses it too)


class ServerConnection:
    """One attested connection as a handler sees it: ``address`` (the peer's, for logs), ``tls`` (the negotiated
    :class:`RatsTls`, for anything beyond the calls below) and reads and writes that run under the server's
    deadlines. Each call starts its phase's deadline afresh: :meth:`receive` and :meth:`receive_message` the
    read deadline (for the whole message), :meth:`transmit` the write deadline (for all of the data)."""

    def __init__(self, tls: RatsTls, sock: socket.socket, address: str, limits: ServerLimits,
                 watchdog: _Watchdog) -> None:
        self.tls = tls
        self.address = address
        self.limits = limits
        self._sock = sock
        self._watchdog = watchdog

    def _phase(self, seconds: float) -> None:
        self._watchdog.arm(self._sock, seconds)
        self._sock.settimeout(seconds)

    def receive(self, n: int) -> bytes:
        """Up to ``n`` bytes (at most one TLS record); b"" when the peer closed the connection or the read
        deadline passed."""
        self._phase(self.limits.read_timeout)
        return self.tls.receive(n)

    def receive_message(self) -> bytes | None:
        """One message: one read, continued while reads come back as full TLS records (a message longer than a
        record), as rats-tls peers write them; None when the connection ended before a whole message came.
        Raises :class:`MessageTooLarge` past ``max_request`` bytes."""
        self._phase(self.limits.read_timeout)
        buf = bytearray()
        while True:
            chunk = self.tls.receive(MAX_PLAINTEXT)
            if not chunk:  # closed, or shut down at the deadline, before a whole message came
                return None
            buf += chunk
            if len(buf) > self.limits.max_request:
                raise MessageTooLarge(f"message too large: more than {self.limits.max_request} bytes")
            if len(chunk) < MAX_PLAINTEXT:
                return bytes(buf)

    def transmit(self, data: bytes | bytearray | memoryview) -> int:
        """Send all of ``data`` before the write deadline; returns its length."""
        self._phase(self.limits.write_timeout)
        return self.tls.transmit(data)


Handler = Callable[[ServerConnection, "PeerClaims | None"], None]


class RatsTlsServer:
    """RATS-TLS on a listening socket, each connection in its own thread: ``serve(sock)`` (blocking, until
    :meth:`shutdown`, or until ``connections`` connections were accepted and served) or ``start(sock)`` (a
    thread). ``config``: the server's RatsTlsConfig (prepared here, so a bad one fails now); ``handle``: called
    with the :class:`ServerConnection` and the verified peer (None when this side does not verify) after each
    successful handshake; ``name``: how logs and thread names call this server."""

    def __init__(self, config: RatsTlsConfig, handle: Handler, limits: ServerLimits = ServerLimits(), *,
                 name: str = "RATS-TLS") -> None:
        from inclavare.ratls.tls.config import RatsTlsConfig

        if not isinstance(config, RatsTlsConfig):
            raise RatlsError(f"RATS-TLS server: config: expected a RatsTlsConfig, got {type(config).__name__}")
        if not callable(handle):
            raise RatlsError("RATS-TLS server: handle: expected a callable handle(connection, peer)")
        limits.check()
        config.prepare(presents=True)
        self.config = config
        self.limits = limits
        self.name = name
        self._handle = handle
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._watchdog: _Watchdog | None = None
        self._tag = name.lower().replace(" ", "-")

    @property
    def active(self) -> int:
        """Connections being served now (handshake or handler)."""
        with self._lock:
            return len(self._threads)

    def start(self, sock: socket.socket, connections: int = 0) -> threading.Thread:
        """Serve ``sock`` on a background thread."""
        t = threading.Thread(target=self.serve, args=(sock, connections), name=f"{self._tag}-accept", daemon=True)
        t.start()
        return t

    def serve(self, sock: socket.socket, connections: int = 0) -> None:
        """Accept and serve connections on the listening ``sock`` until :meth:`shutdown` (which ends the open
        connections too), or, with ``connections`` > 0, until that many were accepted (counting those closed
        for want of a slot) and the served ones have ended."""
        self._watchdog = watchdog = _Watchdog(self._tag)
        sock.settimeout(0.25)  # wake up now and then to see a shutdown
        accepted = 0
        finished = False
        try:
            while not self._stop.is_set():
                if connections and accepted >= connections:
                    finished = True
                    break
                try:
                    conn, addr = sock.accept()
                except TimeoutError:
                    continue
                except OSError as e:
                    if self._stop.is_set():
                        break
                    log.error("%s accept: %s", self.name, e.strerror or e)
                    time.sleep(0.05)  # e.g. out of descriptors: do not spin
                    continue
                accepted += 1
                self._dispatch(conn, addr, watchdog)
        finally:
            if not finished:
                watchdog.expire_all()
            for t in self._snapshot():
                t.join()
            watchdog.stop()

    def shutdown(self) -> None:
        """Stop accepting and end the open connections; ``serve`` returns once they are gone."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.expire_all()

    def _dispatch(self, conn: socket.socket, addr: Any, watchdog: _Watchdog) -> None:
        if not self._wait_for_slot():
            log.warning("%s: %d connections already for %.1f s: closing the one from %s", self.name,
                        self.limits.max_connections, self.limits.queue_timeout, peer_name(addr))
            conn.close()
            return
        t = threading.Thread(target=self._connection, args=(conn, addr, watchdog), name=f"{self._tag}-connection",
                             daemon=True)
        with self._lock:
            self._threads.add(t)
        try:
            t.start()
        except RuntimeError as e:  # no more threads: this connection is not served, the server goes on
            log.error("%s: cannot serve %s: %s", self.name, peer_name(addr), e)
            with self._lock:
                self._threads.discard(t)
            conn.close()
            self._slots.release()

    def _wait_for_slot(self) -> bool:
        """A connection slot, waiting up to ``queue_timeout`` for one to free (connections held by slow clients
        free theirs at their deadline)."""
        deadline = time.monotonic() + self.limits.queue_timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if self._slots.acquire(timeout=max(min(left, 0.25), 0.0)):
                return True
            if left <= 0:
                return False
        return False

    def _snapshot(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _connection(self, conn: socket.socket, addr: Any, watchdog: _Watchdog) -> None:
        from inclavare.ratls.tls.blocking import RatsTls

        name = peer_name(addr)
        handle: RatsTls | None = None
        try:
            handle = RatsTls(self.config, server_side=True)
            watchdog.arm(conn, self.limits.handshake_timeout)
            conn.settimeout(self.limits.handshake_timeout)
            try:
                peer = handle.negotiate(conn)
            except InclavareError as e:
                log.warning("%s client %s refused: %s", self.name, name, e)
                return
            self._handle(ServerConnection(handle, conn, name, self.limits, watchdog), peer)
        except InclavareError as e:  # the RATS-TLS errors are OSErrors too: timeouts, resets
            log.info("%s client %s: %s", self.name, name, e)
        except OSError as e:
            log.info("%s client %s: %s", self.name, name, e.strerror or e)
        except Exception:  # a bug in a handler must not take the server down; the connection ends
            log.exception("%s client %s: internal error", self.name, name)
        finally:
            if handle is not None:
                handle.close()
            watchdog.disarm(conn)
            conn.close()
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()


def peer_name(addr: Any) -> str:
    """A peer's address for logs: ``ip:port``, ``[ipv6]:port``, or the unix socket's name."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
    return str(addr) or "unix socket"
