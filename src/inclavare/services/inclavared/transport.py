"""Sockets for inclavared and its clients: listen on and connect to an :class:`Address`, and one RATS-TLS client
round trip (connect, negotiate, send one message, read one answer) under an absolute deadline, however slowly
the peer drips bytes."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError
from inclavare.services.inclavared.protocol import MAX_MESSAGE, Address, InclavaredError

if TYPE_CHECKING:
    from inclavare.ratls.tls.config import RatsTlsConfig
    from inclavare.ratls.verifiers import PeerClaims

BACKLOG = 128
RECORD = 16 * 1024  # one TLS record's data: a full record means the message goes on in the next one


def listen(addr: Address, what: str) -> socket.socket:
    """A listening socket on ``addr``. A unix socket path is replaced only when a stale socket is there (never a
    regular file); InclavaredError naming ``what`` when the address cannot be bound."""
    try:
        if addr.is_unix:
            try:
                st = os.lstat(addr.path)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISSOCK(st.st_mode):
                    raise InclavaredError(f"{what} {addr}: {addr.path} exists and is not a socket")
                os.unlink(addr.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(addr.path)
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in addr.host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr.host, addr.port))
        sock.listen(BACKLOG)
    except OSError as e:
        raise InclavaredError(f"{what} {addr}: {e.strerror or e}") from None
    return sock


def bound_address(sock: socket.socket, addr: Address) -> Address:
    """``addr`` with the port the system picked (port 0)."""
    if addr.is_unix:
        return addr
    return Address(host=addr.host, port=int(sock.getsockname()[1]))


def connect(addr: Address, timeout: float, what: str) -> socket.socket:
    try:
        if addr.is_unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(addr.path)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection((addr.host, addr.port), timeout=timeout)
    except OSError as e:
        raise InclavaredError(f"{what} {addr}: cannot connect: {e.strerror or e}") from None


def read_message(tls: object, limit: int = MAX_MESSAGE) -> bytes:
    """One message from a RATS-TLS handle: one read, continued while reads come back as full TLS records (how
    rats-tls peers write a message longer than a record). b"" when the peer closed first."""
    buf = bytearray()
    while True:
        chunk = tls.receive(RECORD)  # type: ignore[attr-defined]
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise InclavaredError(f"message too large: more than {limit} bytes")
        if len(chunk) < RECORD:
            return bytes(buf)


def round_trip(config: RatsTlsConfig, addr: Address, request: bytes, timeout: float, what: str,
               limit: int = MAX_MESSAGE) -> tuple[bytes, PeerClaims | None]:
    """Connect to ``addr``, negotiate RATS-TLS as a client with ``config``, send ``request`` and read one answer,
    all within ``timeout`` seconds. Returns (answer, the verified peer). InclavaredError naming ``what`` and the
    address for any failure: refused connection, failed attestation, timeout, no answer."""
    from inclavare.ratls.tls.blocking import RatsTls

    deadline = time.monotonic() + timeout
    sock = connect(addr, timeout, what)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    tls = RatsTls(config, server_side=False)
    phase = "RATS-TLS handshake"
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        peer = tls.negotiate(sock)
        phase = "sending the request"
        tls.transmit(request)
        phase = "reading the answer"
        answer = read_message(tls, limit)
        if not answer:
            raise InclavaredError(f"{what} {addr}: closed the connection without an answer")
        return answer, peer
    except InclavaredError as e:
        if expired.is_set():
            raise InclavaredError(f"{what} {addr}: no answer within {timeout:g} s ({phase})") from None
        raise InclavaredError(str(e) if str(e).startswith(what) else f"{what} {addr}: {e}") from None
    except (InclavareError, OSError) as e:
        if expired.is_set():
            raise InclavaredError(f"{what} {addr}: no answer within {timeout:g} s ({phase})") from None
        text = e.strerror if isinstance(e, OSError) and e.strerror and not isinstance(e, InclavareError) else e
        raise InclavaredError(f"{what} {addr}: {phase} failed: {text}") from None
    finally:
        timer.cancel()
        tls.close()
        sock.close()
