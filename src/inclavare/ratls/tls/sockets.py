"""The socket-like form: :class:`RatsTlsSocket` (``wrap_socket``), shaped like ``ssl.SSLSocket``."""

from __future__ import annotations

import hashlib
import io
import socket
from typing import Any

from inclavare.ratls.tls.blocking import RatsTls
from inclavare.ratls.tls.config import RatsTlsConfig
from inclavare.ratls.verifiers import PeerClaims


class RatsTlsSocket:
    """A connected socket speaking RATS-TLS, shaped like ``ssl.SSLSocket`` for code that expects one."""

    def __init__(self, sock: socket.socket, config: RatsTlsConfig, server_side: bool,
                 do_handshake_on_connect: bool = True) -> None:
        self._sock = sock
        self._tls = RatsTls(config, server_side)
        self._handshaken = False
        self._io_refs = 0
        self._closed = False
        self.server_side = server_side
        if do_handshake_on_connect:
            self.do_handshake()

    # -- handshake and peer

    def do_handshake(self) -> None:
        if self._handshaken:
            return
        self._handshaken = True
        self._tls.negotiate(self._sock)

    def _ready(self) -> RatsTls:
        if self._closed:
            raise OSError(9, "Bad file descriptor (the RATS-TLS socket is closed)")
        if not self._handshaken:
            self.do_handshake()
        return self._tls

    @property
    def peer_claims(self) -> PeerClaims | None:
        """The verified peer (None for a one-way server, or before the handshake)."""
        return self._tls.peer_claims

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate: DER with ``binary_form``, else its verified claims as a dict (None when the
        peer was not verified)."""
        if binary_form:
            return self._tls.peer_certificate
        peer = self._tls.peer_claims
        return peer.to_dict() if peer is not None else None

    def version(self) -> str | None:
        conn = self._tls.connection
        return str(conn.get_protocol_version_name()) if conn is not None and self._handshaken else None

    def cipher(self) -> tuple[str, str, int] | None:
        conn = self._tls.connection
        if conn is None or not self._handshaken:
            return None
        return (str(conn.get_cipher_name()), str(conn.get_cipher_version()), int(conn.get_cipher_bits() or 0))

    def pending(self) -> int:
        return self._tls.pending()

    # -- data

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        return self._ready().send(data)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        self._ready().transmit(data)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._ready().receive(bufsize)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._ready().receive_into(buffer, nbytes)

    def read(self, n: int = 1024) -> bytes:
        return self.recv(n)

    def write(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def makefile(self, mode: str = "r", buffering: int | None = None, *, encoding: str | None = None,
                 errors: str | None = None, newline: str | None = None) -> Any:
        """A file object over the TLS stream, as ``socket.makefile``."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = socket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        binary = "b" in mode
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._real_close()

    # -- the socket underneath

    def fileno(self) -> int:
        return self._sock.fileno()

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    @property
    def family(self) -> int:
        return int(self._sock.family)

    @property
    def type(self) -> int:
        return int(self._sock.type)

    def shutdown(self, how: int) -> None:
        """Send close_notify, then shut the socket down (``how`` as ``socket.shutdown``)."""
        if self._handshaken:
            self._tls.close()
        try:
            self._sock.shutdown(how)
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        if self._handshaken:
            self._tls.close()
        self._sock.close()

    def __enter__(self) -> RatsTlsSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("negotiated" if self._handshaken else "connected")
        return f"<RatsTlsSocket {'server' if self.server_side else 'client'} {state} fd={self._sock.fileno()}>"


def wrap_socket(sock: socket.socket, config: RatsTlsConfig, *, server_side: bool = False,
                do_handshake_on_connect: bool = True) -> RatsTlsSocket:
    """Wrap a connected socket. With ``do_handshake_on_connect=False`` the handshake happens on first use (or
    :meth:`RatsTlsSocket.do_handshake`), e.g. in a socketserver handler thread rather than the accept loop.
    The socket belongs to the wrapper from now on (``close`` closes it)."""
    return RatsTlsSocket(sock, config, server_side, do_handshake_on_connect)


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER, hex (for logs)."""
    return hashlib.sha256(der).hexdigest()
