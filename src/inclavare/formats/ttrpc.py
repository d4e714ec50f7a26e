"""ttrpc framing: the 10-byte message header and an incremental frame decoder (pure, no I/O).

ttrpc (containerd's RPC for shims) sends every message as one frame: a big-endian header of ``length``
(uint32, payload bytes after the header), ``stream id`` (uint32; clients use odd ids), ``type`` (uint8:
1 request, 2 response, 3 data) and ``flags`` (uint8), then the payload (a protobuf ttrpc.Request or
ttrpc.Response). A payload over 4 MiB is refused: ttrpc's receiver reads past it and answers that stream
with RESOURCE_EXHAUSTED, and keeps the connection; :class:`FrameDecoder` does the same skipping without
buffering the refused bytes, so a hostile length costs no memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inclavare.errors import InclavareError

HEADER_SIZE = 10
MAX_MESSAGE = 4 << 20  # ttrpc's messageLengthMax

TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3

# flags of streaming frames (ttrpc >= 1.2); unary calls send 0
FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4

_HEADER = struct.Struct(">IIBB")


class TtrpcFrameError(InclavareError):
    """A frame cannot be built: a payload over the 4 MiB limit, or a field out of its range."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame as received."""

    stream_id: int
    type: int
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame whose header announced more than :data:`MAX_MESSAGE` bytes; its payload is being skipped."""

    stream_id: int
    type: int
    flags: int
    length: int

    def message(self) -> str:
        """ttrpc's own words for the refusal."""
        return f"message length {self.length} exceed maximum message size of {MAX_MESSAGE}"


def encode_header(length: int, stream_id: int, type_: int, flags: int = 0) -> bytes:
    """The 10-byte header."""
    if not 0 <= stream_id <= 0xFFFFFFFF or not 0 <= type_ <= 0xFF or not 0 <= flags <= 0xFF:
        raise TtrpcFrameError(f"ttrpc header: stream id {stream_id}, type {type_} or flags {flags} out of range")
    return _HEADER.pack(length, stream_id, type_, flags)


def encode_frame(stream_id: int, type_: int, payload: bytes, flags: int = 0) -> bytes:
    """Header and payload as one bytes object; refuses a payload over the limit as ttrpc's sender does."""
    if len(payload) > MAX_MESSAGE:
        raise TtrpcFrameError(f"ttrpc frame on stream {stream_id}: message length {len(payload)} exceed maximum "
                              f"message size of {MAX_MESSAGE}")
    return encode_header(len(payload), stream_id, type_, flags) + payload


def decode_header(data: bytes) -> tuple[int, int, int, int]:
    """(length, stream id, type, flags) from the first 10 bytes of ``data``."""
    if len(data) < HEADER_SIZE:
        raise TtrpcFrameError(f"ttrpc header: {len(data)} bytes, need {HEADER_SIZE}")
    length, stream_id, type_, flags = _HEADER.unpack_from(data)
    return length, stream_id, type_, flags


class FrameDecoder:
    """Turns a byte stream into frames, whatever the chunking: ``feed`` returns the frames completed so far.

    Partial headers and payloads wait for more bytes. An oversized frame is reported once, at its header, as an
    :class:`OversizedFrame`; its payload is then dropped as it arrives (never buffered).
    """

    __slots__ = ("_buf", "_skip", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._skip = 0
        self.max_message = max_message

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (never more than one header plus one allowed payload)."""
        return len(self._buf)

    @property
    def skipping(self) -> int:
        """Bytes of a refused oversized payload still to be dropped."""
        return self._skip

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        out: list[Frame | OversizedFrame] = []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip:]
            self._skip = 0
        buf = self._buf
        buf += data
        at = 0
        end = len(buf)
        while end - at >= HEADER_SIZE:
            length, stream_id, type_, flags = _HEADER.unpack_from(buf, at)
            if length > self.max_message:
                out.append(OversizedFrame(stream_id, type_, flags, length))
                at += HEADER_SIZE
                have = min(length, end - at)
                at += have
                self._skip = length - have
                if self._skip:
                    break
                continue
            if end - at - HEADER_SIZE < length:
                break
            start = at + HEADER_SIZE
            out.append(Frame(stream_id, type_, flags, bytes(buf[start:start + length])))
            at = start + length
        if at:
            del buf[:at]
        return out
