"""The one hand-written DER codec: a strict reader (single-byte tags, definite minimal lengths) for the
structures the parsers read field by field -- Intel's PCK SGX extension, AMD's certificates and VCEK
extensions, the fields of RA-TLS certificates that ``cryptography`` does not expose as raw bytes -- and the
few encoders the simulated platform needs to write the PCK extension.

Errors come from the caller's ``fail(field, offset, problem)`` factory, so each format raises its own error
type with the field and byte offset in its message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30
TAG_SET = 0x31

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

    def bit_string(self, field_name: str) -> bytes:
        """The content of a BIT STRING of whole bytes (no unused bits), as keys and signatures are."""
        start, end = self.expect(TAG_BIT_STRING, field_name)
        if end == start or self.data[start] != 0:
            raise self.fail(field_name, start, "BIT STRING with unused bits")
        return self.data[start + 1:end]

    def unsigned_at(self, start: int, end: int, field_name: str, bits: int) -> int:
        """The content ``data[start:end]`` of an INTEGER or ENUMERATED read as a non-negative minimal integer
        of at most ``bits`` bits."""
        raw = self.data[start:end]
        if not raw:
            raise self.fail(field_name, start, "empty INTEGER")
        if raw[0] & 0x80:
            raise self.fail(field_name, start, "negative INTEGER")
        if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
            raise self.fail(field_name, start, "non-minimal INTEGER")
        value = int.from_bytes(raw, "big")
        if value >> bits:
            raise self.fail(field_name, start, f"value {value} does not fit in {bits} bits")
        return value

    def oid_entries(self, field_name: str) -> list[tuple[str, int, int, int]]:
        """The rest of this reader as ``SEQUENCE { OID, value }`` items (Intel's PCK extension is built of
        them): (oid, value tag, value content start, value content end) each."""
        fast = _oid_entries_fast(self.data, self.pos, self.end, self.known_oids)
        if fast is not None:
            self.pos = self.end
            return fast
        out: list[tuple[str, int, int, int]] = []
        while not self.at_end():
            item = self.sub(TAG_SEQUENCE, field_name)
            oid = item.oid(field_name)
            tag, cstart, cend = item.read(oid)
            if not item.at_end():
                raise self.fail(oid, item.pos, "extra DER elements in the entry")
            out.append((oid, tag, cstart, cend))
        return out


def _short_header(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(content start, content length) of the element at ``pos`` when its length is definite, minimal and at most
    two bytes long and the element has at least its two header bytes before ``end``; None otherwise."""
    if end - pos < 2:
        return None
    length = data[pos + 1]
    pos += 2
    if length < 0x80:
        return pos, length
    if length == 0x81 and end - pos >= 1 and data[pos] >= 0x80:
        return pos + 1, data[pos]
    if length == 0x82 and end - pos >= 2 and data[pos] != 0:
        return pos + 2, (data[pos] << 8) | data[pos + 1]
    return None


def _oid_entries_fast(data: bytes, start: int, end: int,
                      known: Mapping[bytes, str] | None) -> list[tuple[str, int, int, int]] | None:
    """:meth:`DerReader.oid_entries` for the well-formed case in which every OID is a known one; None when
    anything else is met, and then the careful reader goes over the bytes again (and names what is wrong).
    A PCK certificate's extension holds some thirty entries and is read for every quote a verifier sees cold."""
    if not known:
        return None
    out: list[tuple[str, int, int, int]] = []
    pos = start
    while pos < end:
        if data[pos] != TAG_SEQUENCE or (h := _short_header(data, pos, end)) is None:
            return None
        istart, iend = h
        iend += istart
        # the OID: short form only (every OID we name is), and one we name
        if iend > end or iend - istart < 2 or data[istart] != TAG_OID or (vpos := data[istart + 1]) >= 0x80:
            return None
        vpos += istart + 2
        if vpos > iend or (oid := known.get(data[istart + 2:vpos])) is None:
            return None
        # the value: it must end exactly where the entry ends (not run past it, nor leave elements after it)
        if (h := _short_header(data, vpos, iend)) is None or h[0] + h[1] != iend:
            return None
        out.append((oid, data[vpos], h[0], iend))
        pos = iend
    return out


# --------------------------------------------------------------------------------------------------
# Encoding (what the simulated platform writes: the PCK extension)


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode(tag: int, content: bytes) -> bytes:
    """One element: tag, minimal definite length, content."""
    return bytes([tag]) + encode_length(len(content)) + content


def oid_content(dotted: str) -> bytes:
    """The content bytes of an OBJECT IDENTIFIER (what :class:`DerReader` ``known_oids`` maps)."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):  # the first two arcs share one subidentifier
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def encode_oid(dotted: str) -> bytes:
    return encode(TAG_OID, oid_content(dotted))


def encode_unsigned(tag: int, value: int) -> bytes:
    """A non-negative INTEGER or ENUMERATED, minimal (a leading zero byte only where the top bit is set)."""
    return encode(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))
