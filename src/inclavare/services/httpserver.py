"""The hardened threading HTTP(S) server the services share (signature-server, verdictd's KBS listener).

What it adds to ``http.server.ThreadingHTTPServer``: the TLS handshake runs in the connection's own thread (a
client that stalls mid-handshake holds one thread, not the accept loop), a read timeout per connection and an
absolute deadline (the same ``io_timeout``) for the handshake and, with :class:`HardenedHandler`, for reading each
request: a per-read timeout alone lets a client that drips a byte at a time hold a thread forever. Also a cap on
concurrent connections (the excess is answered 503 on plain HTTP, closed on TLS, and never queued behind the live
ones), IPv4+IPv6 on a wildcard v6 bind, quiet logging of client-side connection errors, and ``start``/``stop``
for serving from a background thread.
"""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
import sys
import threading
from typing import Any

from inclavare.sockio import Watchdog

log = logging.getLogger("inclavare.services.http")

BUSY_BODY = b'{"error": "server busy: too many connections; retry later"}'


class HardenedHTTPServer(http.server.ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once, each under ``io_timeout`` seconds per read."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True
    thread_name = "http-server"

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily,
                 handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None, *,
                 io_timeout: float = 30.0, max_connections: int = 1024) -> None:
        self.address_family = family
        self.tls, self.io_timeout = tls, io_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._thread: threading.Thread | None = None
        # reads only: a blocked write has the socket timeout, and the client must not see the connection end
        # before its thread gave the slot back. Made first: a failed bind calls server_close, which stops it.
        self.watchdog = Watchdog(self.thread_name, socket.SHUT_RD)
        super().__init__(address, handler)

    def busy_body(self) -> bytes:
        """The 503 body sent (plain HTTP only) when every connection slot is taken."""
        return BUSY_BODY

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # every v4 and v6 address
        super().server_bind()

    @property
    def url(self) -> str:
        addr: Any = self.server_address
        host, port = str(addr[0]), int(addr[1])
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            if self.tls is None:
                body = self.busy_body()
                try:
                    request.settimeout(1.0)
                    request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                except OSError:
                    pass
            log.warning("%s: refused: all connection slots are taken", client_address[0] if client_address else "?")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn's, with the slot freed before the socket is closed: a client that sees the close can
        # connect again at once
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.watchdog.disarm(request)
            self._slots.release()
            self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.io_timeout)
        if isinstance(request, ssl.SSLSocket):
            self.watchdog.arm(request, self.io_timeout)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                log.info("%s: TLS handshake failed: %s", client_address[0], getattr(e, "reason", None) or e)
                return
            finally:
                if self.watchdog.disarm(request):
                    log.info("%s: TLS handshake not done in %ss", client_address[0], self.io_timeout)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        peer = client_address[0] if client_address else "?"
        if isinstance(err, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("%s: connection error: %s", peer, err)
        else:  # e.g. an audit log could not record a refusal: the request got no answer
            log.error("%s: request failed: %s: %s", peer, type(err).__name__, err)

    def start(self) -> Any:
        """Serve from a background thread (tests, benchmarks); :meth:`stop` ends it. Returns the server."""
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def server_close(self) -> None:
        super().server_close()
        self.watchdog.stop()


class HardenedHandler(http.server.BaseHTTPRequestHandler):
    """A request handler whose reading of each request (the request line, the headers, and the body when the
    handler reads it through :meth:`read_body`) has one absolute deadline, the server's ``io_timeout``, however
    slowly the client sends it. A request cut off by the deadline is dropped unanswered. Handlers call
    :meth:`request_read` once the whole request is in (``read_body`` does), so the work done for it and the answer
    are not under that deadline (the answer's writes still are, by the socket timeout)."""

    server: HardenedHTTPServer

    def handle_one_request(self) -> None:
        self.server.watchdog.arm(self.connection, self.server.io_timeout)
        try:
            super().handle_one_request()
        finally:
            self.server.watchdog.disarm(self.connection)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.server.watchdog.fired(self.connection):  # the headers were cut short, not ended by the client
            self.close_connection = True
            return False
        return True

    def read_body(self, length: int) -> bytes:
        """``length`` bytes of body; ConnectionError if the client closed or the deadline cut it off first."""
        body = self.rfile.read(length)
        if len(body) != length or not self.request_read():
            raise ConnectionError("the client did not send the whole body in time")
        return body

    def request_read(self) -> bool:
        """The request is in: its deadline no longer applies. False if the deadline had passed already."""
        return not self.server.watchdog.disarm(self.connection)


def address_family(host: str) -> tuple[str, socket.AddressFamily]:
    """The bind host and family for ``host`` ("" = every address: dual-stack v6 when the system has it)."""
    if not host:
        return ("::", socket.AF_INET6) if socket.has_dualstack_ipv6() else ("0.0.0.0", socket.AF_INET)
    return host, socket.AF_INET6 if ":" in host else socket.AF_INET


class BodyError(Exception):
    """A request's framing is refused: ``status`` (400, 411, 413) and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def body_length(headers: Any, limit: int, required: bool = True) -> int:
    """The byte count a request's body has by its headers, refusing what would let two parsers disagree on where
    it ends (request smuggling): a chunked or otherwise encoded body (411), more than one Content-Length or one
    that is not a plain decimal count (400), a count over ``limit`` (413). Without a Content-Length: 411 when
    ``required``, else 0."""
    if headers.get_all("Transfer-Encoding"):
        raise BodyError(411, "send the body with a Content-Length, not a Transfer-Encoding")
    values = headers.get_all("Content-Length") or []
    if not values:
        if required:
            raise BodyError(411, "send the body with a Content-Length")
        return 0
    if len(values) > 1:
        raise BodyError(400, f"{len(values)} Content-Length headers: one is allowed")
    text = values[0].strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BodyError(400, f"Content-Length {text[:32]!r} is not a byte count")
    length = int(text, 10)
    if length > limit:
        raise BodyError(413, f"a body of {length} bytes is over the {limit}-byte limit")
    return length
