"""The blocking form: :class:`RatsTls` over a connected socket the caller owns."""

from __future__ import annotations

import logging
import select
import socket
import ssl
from typing import Any

from inclavare.ratls import ssl_hook
from inclavare.ratls.dice import RatlsError
from inclavare.ratls.tls.config import RatsTlsConfig
from inclavare.ratls.tls.core import RECORD, _Handle, _ssl, _SslConnection
from inclavare.ratls.tls.errors import FreshnessError, RatsTlsError
from inclavare.ratls.tls.freshness import FRESHNESS_HEADER, decode_freshness_hello
from inclavare.ratls.verifiers import PeerClaims
from inclavare.sockio import recv_exact

log = logging.getLogger(__name__)


class RatsTls(_Handle):
    """One RATS-TLS connection over a connected blocking (or timeout) socket, which the caller owns.

    TLS runs in Python's ``ssl`` module (record I/O in C, on the caller's socket: bulk transfers cost what plain
    ``ssl`` costs), with the two things it lacks done on its OpenSSL objects directly: the session cache off,
    and an OpenSSL verify callback that judges the peer's self-signed RA-TLS certificate during the handshake,
    exactly as the pyOpenSSL path does (a rejected peer gets an alert; :class:`PeerRejected`). When those
    objects cannot be reached (not CPython, an unexpected layout), pyOpenSSL carries the connection."""

    def __init__(self, config: RatsTlsConfig, server_side: bool) -> None:
        super().__init__(config, server_side)
        self._sock: socket.socket | None = None
        self._fast: Any = None  # the ssl module's connection object, on that path
        self._verify_cb: Any = None  # its verify callback, kept alive with it

    def negotiate(self, sock: socket.socket) -> PeerClaims | None:
        """Freshness exchange (if configured) and TLS handshake on ``sock``; returns the verified peer (None when
        this side does not verify). Raises :class:`PeerRejected`, :class:`FreshnessError`, :class:`RatsTlsError`."""
        if self._sock is not None:
            raise RatsTlsError("RATS-TLS handle: negotiate() was already called on it")
        core = self._core
        self._sock = sock
        saved = sock.gettimeout()
        if core.config.handshake_timeout is not None:
            sock.settimeout(core.config.handshake_timeout)
        try:
            peer_nonce = self._freshness(sock) if core.config.freshness else None
            material = core.material(peer_nonce)
            ctx = core.ssl_context(material)
            if ctx is None or not self._ssl_handshake(sock, ctx):
                conn = core.connection(sock, material)
                self._retry(conn.do_handshake)
        except RatlsError as e:
            if isinstance(e, RatsTlsError):
                core.failed = str(e)
                raise
            raise core.error(e) from None
        except Exception as e:
            raise core.error(e) from None
        finally:
            if core.config.handshake_timeout is not None:
                sock.settimeout(saved)
        peer = core.finish()
        log.debug("rats-tls %s: negotiated %s", core.role, core.describe())
        return peer

    def _ssl_handshake(self, sock: socket.socket, ctx: ssl.SSLContext) -> bool:
        """The handshake in the ``ssl`` module; False (nothing done) when its SSL object cannot be reached."""
        core = self._core
        # the C object under ssl.SSLSocket: it does its I/O on the socket's descriptor, honours the socket's
        # timeout and, unlike SSLContext.wrap_socket, leaves the socket object with its owner
        obj = ctx._wrap_socket(sock, core.server_side, None)  # type: ignore[attr-defined]
        # the ssl module cannot judge a self-signed certificate: an OpenSSL verify callback does, during the
        # handshake, so a rejected peer gets an alert as with pyOpenSSL (ratls/ssl_hook.py)
        handle = ssl_hook.install_verify_callback(obj, ctx, core if core.verifies else None,
                                                  require_peer=core.server_side)
        if handle is None:
            return False
        self._verify_cb = handle
        self._fast = obj
        core.conn = _SslConnection(obj)  # type: ignore[assignment]
        obj.do_handshake()
        if core.verifies and (core.peer is None or obj.getpeercert(True) != core.peer_der):
            core.peer = None  # fail closed: what was verified must be what the peer presented
        return True

    def _freshness(self, sock: socket.socket) -> bytes | None:
        core = self._core
        try:
            mine = core.hello()
            if not core.server_side:
                sock.sendall(mine)
            mutual, length = decode_freshness_hello(recv_exact(sock, FRESHNESS_HEADER.size))
            nonce = recv_exact(sock, length)
            if len(nonce) != length:
                raise FreshnessError("freshness: the peer closed the connection in the middle of its nonce")
            if core.server_side:
                sock.sendall(mine)
        except FreshnessError:
            raise
        except TimeoutError:
            raise FreshnessError("freshness: timed out in the freshness exchange") from None
        except OSError as e:
            raise FreshnessError(f"freshness: {e.strerror or e} (is freshness "
                                 "enabled on both sides?)") from None
        core.check_peer_hello(mutual, length)
        return nonce or None

    def _retry(self, fn: Any, *args: Any) -> Any:
        SSL = _ssl()
        sock = self._sock
        assert sock is not None
        while True:
            try:
                return fn(*args)
            except SSL.WantReadError:
                self._wait(sock, True)
            except SSL.WantWriteError:
                self._wait(sock, False)

    @staticmethod
    def _wait(sock: socket.socket, readable: bool) -> None:
        timeout = sock.gettimeout()
        fd = sock.fileno()
        r, w, _ = select.select([fd] if readable else [], [] if readable else [fd], [], timeout)
        if not r and not w:
            raise TimeoutError("timed out")

    def transmit(self, data: bytes | bytearray | memoryview) -> int:
        """Send all of ``data``; returns its length."""
        conn = self._conn()
        view = memoryview(data).cast("B")
        sent = 0
        fast = self._fast
        try:
            while sent < len(view):
                if fast is not None:
                    sent += fast.write(view[sent:])
                else:
                    sent += self._retry(conn.send, view[sent:sent + RECORD * 4])
        except RatsTlsError:
            raise
        except Exception as e:
            raise self._core.error(e, "transmit") from None
        return sent

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Send some of ``data`` (at least one byte); returns how much."""
        conn = self._conn()
        try:
            if self._fast is not None:
                return int(self._fast.write(memoryview(data).cast("B")[:RECORD * 4]))
            return int(self._retry(conn.send, memoryview(data).cast("B")[:RECORD * 4]))
        except Exception as e:
            raise self._core.error(e, "transmit") from None

    def receive(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" when the peer closed the connection."""
        conn = self._conn()
        try:
            if self._fast is not None:
                return bytes(self._fast.read(min(n, RECORD)))
            # one TLS record at most comes back per read: asking for more only makes pyOpenSSL allocate and
            # zero a bigger buffer on every call
            return bytes(self._retry(conn.recv, min(n, RECORD)))
        except Exception as e:
            self._end_of_data(e)
            return b""

    def receive_into(self, buffer: Any, n: int = 0) -> int:
        """Up to ``n`` bytes (default: the buffer's size) into ``buffer``; 0 when the peer closed the
        connection."""
        conn = self._conn()
        try:
            if self._fast is not None:
                return int(self._fast.read(n or len(memoryview(buffer)), buffer))
            want = min(n or len(memoryview(buffer)), RECORD)  # see receive()
            return int(self._retry(conn.recv_into, buffer, want))
        except Exception as e:
            self._end_of_data(e)
            return 0

    def pending(self) -> int:
        conn = self._core.conn
        return int(conn.pending()) if conn is not None else 0

    def close(self) -> None:
        """Send close_notify (best effort); the socket stays open and belongs to the caller."""
        if self._closed:
            return
        self._closed = True
        conn = self._core.conn
        if self._fast is not None and self._sock is not None and not self._core.failed:
            # the ssl module's shutdown would then wait for the peer's close_notify on a blocking socket: send
            # ours without waiting, as pyOpenSSL's shutdown does
            sock, saved = self._sock, self._sock.gettimeout()
            try:
                sock.settimeout(0)
                self._fast.shutdown()
            except Exception:  # the peer may be gone, or has not answered yet; closing is best effort
                pass
            finally:
                try:
                    sock.settimeout(saved)
                except OSError:
                    pass
        elif conn is not None and not self._core.failed:
            try:
                conn.shutdown()
            except Exception:  # the peer may be gone; closing is best effort
                pass

    def __enter__(self) -> RatsTls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
