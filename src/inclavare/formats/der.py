"""A strict DER reader (single-byte tags, definite minimal lengths) for the certificate extensions and
structures the parsers read by hand: Intel's PCK SGX extension, AMD's VCEK extensions and certificate fields.

Errors come from the caller's ``fail(field, offset, problem)`` factory, so each format raises its own error
type with the field and byte offset in its message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OID = 0x06
TAG_SEQUENCE = 0x30

Fail = Callable[[str, int, str], Exception]


class DerReader:
    """Reads ``data[pos:end]`` element by element. ``known_oids``: raw OID bytes -> dotted string, a shortcut
    for the OIDs a format names (the raw bytes are their minimal encoding)."""

    def __init__(self, data: bytes, fail: Fail, pos: int = 0, end: int | None = None,
                 known_oids: Mapping[bytes, str] | None = None) -> None:
        self.data, self.fail, self.pos = data, fail, pos
        self.end = len(data) if end is None else end
        self.known_oids = known_oids

    def at_end(self) -> bool:
        return self.pos >= self.end

    def peek_tag(self) -> int | None:
        return self.data[self.pos] if self.pos < self.end else None

    def read(self, field_name: str) -> tuple[int, int, int]:
        """(tag, content start, content end) of the next element."""
        start = self.pos
        if self.end - start < 2:
            raise self.fail(field_name, start, "truncated DER element")
        tag, first = self.data[start], self.data[start + 1]
        if tag & 0x1F == 0x1F:
            raise self.fail(field_name, start, "multi-byte DER tags are not used here")
        pos = start + 2
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0:
                raise self.fail(field_name, start, "indefinite length is not DER")
            if n > 4 or self.end - pos < n:
                raise self.fail(field_name, start, "bad DER length")
            length = int.from_bytes(self.data[pos:pos + n], "big")
            if length < 0x80 or self.data[pos] == 0:
                raise self.fail(field_name, start, "non-minimal DER length")
            pos += n
        if length > self.end - pos:
            raise self.fail(field_name, start, f"DER length {length} runs past the end of its container")
        self.pos = pos + length
        return tag, pos, pos + length

    def expect(self, tag: int, field_name: str) -> tuple[int, int]:
        start = self.pos
        got, cstart, cend = self.read(field_name)
        if got != tag:
            raise self.fail(field_name, start, f"DER tag {got:#04x}, expected {tag:#04x}")
        return cstart, cend

    def element(self, field_name: str) -> bytes:
        """The whole next element (tag, length and content)."""
        start = self.pos
        self.read(field_name)
        return self.data[start:self.pos]

    def sub(self, tag: int, field_name: str) -> DerReader:
        start, end = self.expect(tag, field_name)
        return DerReader(self.data, self.fail, start, end, self.known_oids)

    def done(self, field_name: str) -> None:
        if self.pos != self.end:
            raise self.fail(field_name, self.pos, f"{self.end - self.pos} unexpected bytes")

    def oid(self, field_name: str) -> str:
        start, end = self.expect(TAG_OID, field_name)
        raw = self.data[start:end]
        if self.known_oids is not None and (known := self.known_oids.get(raw)) is not None:
            return known
        if not raw or raw[-1] & 0x80:
            raise self.fail(field_name, start, "malformed OBJECT IDENTIFIER")
        arcs: list[int] = []
        value, arc_start = 0, True
        for byte in raw:
            if arc_start and byte == 0x80:
                raise self.fail(field_name, start, "non-minimal OBJECT IDENTIFIER arc")
            value = (value << 7) | (byte & 0x7F)
            arc_start = not byte & 0x80
            if arc_start:
                arcs.append(value)
                value = 0
        first = arcs[0]
        top = min(first // 40, 2)
        return ".".join(str(a) for a in [top, first - 40 * top, *arcs[1:]])

    def integer(self, field_name: str) -> int:
        start, end = self.expect(TAG_INTEGER, field_name)
        raw = self.data[start:end]
        if not raw:
            raise self.fail(field_name, start, "empty INTEGER")
        if len(raw) > 1 and ((raw[0] == 0 and not raw[1] & 0x80) or (raw[0] == 0xFF and raw[1] & 0x80)):
            raise self.fail(field_name, start, "non-minimal INTEGER")
        return int.from_bytes(raw, "big", signed=True)

    def boolean(self, field_name: str) -> bool:
        start, end = self.expect(TAG_BOOLEAN, field_name)
        if end - start != 1 or self.data[start] not in (0, 0xFF):
            raise self.fail(field_name, start, "BOOLEAN must be one byte 0x00 or 0xFF")
        return self.data[start] == 0xFF
