"""The asyncio form: :class:`AsyncRatsTls`, TLS over memory BIOs."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from inclavare.ratls.dice import RatlsError
from inclavare.ratls.tls.config import RatsTlsConfig
from inclavare.ratls.tls.core import RECORD, _Handle, _ssl
from inclavare.ratls.tls.errors import FreshnessError, RatsTlsError
from inclavare.ratls.tls.freshness import FRESHNESS_HEADER, decode_freshness_hello
from inclavare.ratls.verifiers import PeerClaims


class _AsyncIO:
    """Bytes in and out for the async form: a StreamReader/StreamWriter pair, or a non-blocking socket."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.sock: socket.socket | None = reader if isinstance(reader, socket.socket) else None
        self.reader = reader
        self.writer = writer
        if self.sock is None and writer is None:
            raise RatlsError("negotiate: give a reader and a writer, or a socket")
        if self.sock is not None:
            self.sock.setblocking(False)

    async def read(self, n: int) -> bytes:
        if self.sock is not None:
            return await asyncio.get_running_loop().sock_recv(self.sock, n)
        return bytes(await self.reader.read(n))

    async def read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.read(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    async def write(self, data: bytes) -> None:
        if self.sock is not None:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        else:
            self.writer.write(data)
            await self.writer.drain()


class AsyncRatsTls(_Handle):
    """One RATS-TLS connection for asyncio; TLS runs over pyOpenSSL memory BIOs. Certificates are made in the
    default executor; the peer's certificate is judged inside the handshake (synchronously)."""

    def __init__(self, config: RatsTlsConfig, server_side: bool) -> None:
        super().__init__(config, server_side)
        self._io: _AsyncIO | None = None

    async def negotiate(self, reader: Any, writer: Any = None) -> PeerClaims | None:
        """Freshness exchange and handshake over ``reader``/``writer`` (asyncio streams) or a socket."""
        if self._io is not None:
            raise RatsTlsError("RATS-TLS handle: negotiate() was already called on it")
        core = self._core
        io_ = self._io = _AsyncIO(reader, writer)
        SSL = _ssl()
        try:
            peer_nonce = await self._freshness(io_) if core.config.freshness else None
            # make (or fetch) the certificate off the event loop
            material = await asyncio.get_running_loop().run_in_executor(None, core.material, peer_nonce)
            conn = core.connection(None, material)
            while True:
                try:
                    conn.do_handshake()
                    await self._flush()
                    break
                except SSL.WantReadError:
                    await self._flush()
                    data = await io_.read(RECORD)
                    if not data:
                        raise EOFError("end of stream") from None
                    conn.bio_write(data)
                except SSL.Error:
                    try:
                        await self._flush()  # the alert
                    except OSError:
                        pass
                    raise
        except RatsTlsError as e:
            core.failed = str(e)
            raise
        except Exception as e:
            raise core.error(e) from None
        return core.finish()

    async def _freshness(self, io_: _AsyncIO) -> bytes | None:
        core = self._core
        mine = core.hello()
        try:
            if not core.server_side:
                await io_.write(mine)
            mutual, length = decode_freshness_hello(await io_.read_exactly(FRESHNESS_HEADER.size))
            nonce = await io_.read_exactly(length)
            if len(nonce) != length:
                raise FreshnessError("freshness: the peer closed the connection in the middle of its nonce")
            if core.server_side:
                await io_.write(mine)
        except FreshnessError:
            raise
        except OSError as e:
            raise FreshnessError(f"freshness: {e.strerror or e} (is freshness enabled on both sides?)") from None
        core.check_peer_hello(mutual, length)
        return nonce or None

    async def _flush(self) -> None:
        SSL = _ssl()
        conn, io_ = self._core.conn, self._io
        assert conn is not None and io_ is not None
        out = bytearray()
        while True:
            try:
                out += conn.bio_read(RECORD * 4)
            except SSL.WantReadError:
                break
        if out:
            await io_.write(bytes(out))

    async def transmit(self, data: bytes | bytearray | memoryview) -> int:
        conn = self._conn()
        view = memoryview(data).cast("B")
        try:
            sent = 0
            while sent < len(view):
                sent += conn.send(view[sent:sent + RECORD * 4])
                await self._flush()
        except Exception as e:
            raise self._core.error(e, "transmit") from None
        return sent

    async def receive(self, n: int) -> bytes:
        conn = self._conn()
        SSL = _ssl()
        assert self._io is not None
        eof = False
        try:
            while True:
                try:
                    data = bytes(conn.recv(n))
                    await self._flush()  # post-handshake messages may need answers
                    return data
                except SSL.WantReadError:
                    if eof:
                        return b""
                    await self._flush()
                    chunk = await self._io.read(RECORD)
                    if not chunk:
                        conn.bio_shutdown()
                        eof = True
                        continue
                    conn.bio_write(chunk)
        except Exception as e:
            self._end_of_data(e)
            return b""

    async def close(self) -> None:
        """Send close_notify (best effort); the streams/socket stay with the caller."""
        if self._closed:
            return
        self._closed = True
        conn = self._core.conn
        if conn is not None and not self._core.failed:
            try:
                conn.shutdown()
                await self._flush()
            except Exception:  # best effort
                pass
