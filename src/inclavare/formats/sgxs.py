"""MRENCLAVE measurement and SGXS measurement logs.

MRENCLAVE is SHA-256 over the 64-byte records the CPU hashes while an enclave is built (all integers
little-endian, records packed):

* ECREATE, first and once: ``"ECREATE\\0"``, SSAFRAMESIZE (u32, pages) at 8, SIZE (u64, bytes) at 12.
* EADD, once per added page: ``"EADD\\0\\0\\0\\0"``, the page offset from the enclave base (u64) at 8, then the
  first 48 bytes of SECINFO (FLAGS u64, then zeros).
* EEXTEND, once per measured 256-byte chunk: ``"EEXTEND\\0"``, the chunk offset (u64) at 8, zeros; the 256
  chunk bytes are hashed right after the record.

An SGXS stream (the format Fortanix's tools use) is exactly that byte sequence, so its SHA-256 is the
MRENCLAVE, and it doubles as a page list: every EADD names a page and its SECINFO flags, and the EEXTENDs
that follow carry the measured parts of its content. Only the canonical form (no unmeasured-data records) is
read and written here.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from inclavare.formats.sgx import PAGE_SIZE, SecInfo, SgxFormatError

__all__ = [
    "CHUNK_SIZE",
    "RECORD_SIZE",
    "Eadd",
    "Ecreate",
    "Eextend",
    "Measurement",
    "Page",
    "SgxsStream",
    "enclave_size_for",
    "measure_pages",
    "read_sgxs",
    "write_sgxs",
]

RECORD_SIZE = 64
CHUNK_SIZE = 256
CHUNKS_PER_PAGE = PAGE_SIZE // CHUNK_SIZE
TAG_ECREATE = b"ECREATE\0"
TAG_EADD = b"EADD\0\0\0\0"
TAG_EEXTEND = b"EEXTEND\0"
_ZERO_CHUNK = bytes(CHUNK_SIZE)
# The 64-byte record headers: tag, fields, then padding that must be zero (read back to check it).
_ECREATE = struct.Struct("<8sIQ44s")
_EADD = struct.Struct("<8sQQ40s")
_EEXTEND = struct.Struct("<8sQ48s")
_pack_page_extends = struct.Struct("<" + "8sQ48x256s" * CHUNKS_PER_PAGE).pack  # a page's 16 EEXTEND records
_FULL_MASK = (1 << CHUNKS_PER_PAGE) - 1
# SECINFO.FLAGS bits an EADD may carry: permissions and the page type (state bits are set by the CPU).
_SECINFO_ALLOWED = 0xFF07
_PAGE_TYPES_EADD = (int(SecInfo.PT_TCS), int(SecInfo.PT_REG), int(SecInfo.PT_SS_FIRST), int(SecInfo.PT_SS_REST))


@dataclass(frozen=True)
class Ecreate:
    ssaframesize: int
    size: int

    def pack(self) -> bytes:
        return _ECREATE.pack(TAG_ECREATE, self.ssaframesize, self.size, b"")


@dataclass(frozen=True)
class Eadd:
    offset: int
    secinfo_flags: int

    def pack(self) -> bytes:
        return _EADD.pack(TAG_EADD, self.offset, self.secinfo_flags, b"")


@dataclass(frozen=True)
class Eextend:
    offset: int
    data: bytes

    def pack(self) -> bytes:
        return _EEXTEND.pack(TAG_EEXTEND, self.offset, b"") + self.data


Record = Ecreate | Eadd | Eextend
_HEADERS: dict[bytes, tuple[struct.Struct, type[Record]]] = {
    TAG_ECREATE: (_ECREATE, Ecreate), TAG_EADD: (_EADD, Eadd), TAG_EEXTEND: (_EEXTEND, Eextend)}


@dataclass
class Page:
    """One EADDed page: its offset, SECINFO flags, content, and which 256-byte chunks were measured (bit i)."""

    offset: int
    secinfo_flags: int
    data: bytes = bytes(PAGE_SIZE)
    measured: int = 0

    @property
    def fully_measured(self) -> bool:
        return self.measured == _FULL_MASK


def enclave_size_for(end: int) -> int:
    """ECREATE SIZE for an image ending at ``end``: the smallest power of two >= end, at least 2 pages."""
    size = 2 * PAGE_SIZE
    while size < end:
        size <<= 1
    return size


class Measurement:
    """Computes MRENCLAVE the way ECREATE / EADD / EEXTEND extend it, checking the order SGX enforces.

    With ``keep_log=True`` the records are also kept and :meth:`log` returns the SGXS stream.
    """

    def __init__(self, keep_log: bool = False) -> None:
        self._hash = hashlib.sha256()
        self._log: list[bytes] | None = [] if keep_log else None
        self._size: int | None = None
        self._ssaframesize = 0
        self._pages: set[int] = set()
        self._extended: set[int] = set()

    def _feed(self, data: bytes) -> None:
        self._hash.update(data)
        if self._log is not None:
            self._log.append(data)

    @property
    def size(self) -> int | None:
        return self._size

    def ecreate(self, ssaframesize: int, size: int) -> None:
        if self._size is not None:
            raise SgxFormatError("measurement", "ECREATE was already done")
        if not 1 <= ssaframesize <= 0xFFFFFFFF:
            raise SgxFormatError("ECREATE", f"SSAFRAMESIZE={ssaframesize} must be 1..2^32-1 pages")
        if size < PAGE_SIZE or size & (size - 1) or size >> 64:
            raise SgxFormatError("ECREATE", f"SIZE={size:#x} must be a power of two of at least {PAGE_SIZE:#x}")
        self._size, self._ssaframesize = size, ssaframesize
        self._feed(Ecreate(ssaframesize, size).pack())

    def _need_ecreate(self, op: str) -> int:
        if self._size is None:
            raise SgxFormatError(op, "comes before ECREATE")
        return self._size

    def eadd(self, offset: int, secinfo_flags: int) -> None:
        size = self._need_ecreate("EADD")
        if offset % PAGE_SIZE or not 0 <= offset < size:
            raise SgxFormatError("EADD", f"offset {offset:#x} is not a page inside the enclave (SIZE {size:#x})")
        if offset in self._pages:
            raise SgxFormatError("EADD", f"page {offset:#x} was already added")
        if secinfo_flags & ~_SECINFO_ALLOWED or (secinfo_flags & 0xFF00) not in _PAGE_TYPES_EADD:
            raise SgxFormatError("EADD", f"SECINFO.FLAGS={secinfo_flags:#x} at {offset:#x} is not an addable page")
        if secinfo_flags & 0xFF00 == int(SecInfo.PT_TCS) and secinfo_flags & 0x7:
            raise SgxFormatError("EADD", f"TCS page at {offset:#x} must have no R/W/X bits")
        self._pages.add(offset)
        self._feed(Eadd(offset, secinfo_flags).pack())

    def eadd_pages(self, offset: int, count: int, secinfo_flags: int) -> None:
        """EADD ``count`` consecutive pages from ``offset`` with one SECINFO and no EEXTEND (a heap): the same
        records and checks as ``count`` calls of :meth:`eadd`, built and hashed in one piece."""
        size = self._need_ecreate("EADD")
        if count < 1:
            raise SgxFormatError("EADD", f"{count} pages at {offset:#x}: expected at least one")
        end = offset + count * PAGE_SIZE
        if offset % PAGE_SIZE or not 0 <= offset < end <= size:
            raise SgxFormatError("EADD", f"pages {offset:#x}..{end:#x} are not inside the enclave (SIZE {size:#x})")
        offsets = range(offset, end, PAGE_SIZE)
        if not self._pages.isdisjoint(offsets):
            first = min(self._pages.intersection(offsets))
            raise SgxFormatError("EADD", f"page {first:#x} was already added")
        self.eadd(offset, secinfo_flags)  # the SECINFO checks, once
        self._pages.update(offsets)
        pack, tag = _EADD.pack, TAG_EADD
        self._feed(b"".join([pack(tag, off, secinfo_flags, b"") for off in offsets[1:]]))

    def eextend(self, offset: int, data: bytes) -> None:
        self._need_ecreate("EEXTEND")
        if len(data) != CHUNK_SIZE:
            raise SgxFormatError("EEXTEND", f"chunk at {offset:#x} is {len(data)} bytes, expected {CHUNK_SIZE}")
        if offset % CHUNK_SIZE:
            raise SgxFormatError("EEXTEND", f"offset {offset:#x} is not 256-byte aligned")
        if offset - offset % PAGE_SIZE not in self._pages:
            raise SgxFormatError("EEXTEND", f"offset {offset:#x} is not in an added page")
        if offset in self._extended:
            raise SgxFormatError("EEXTEND", f"chunk {offset:#x} was already measured")
        self._extended.add(offset)
        self._feed(Eextend(offset, bytes(data)).pack())

    def add_page(self, offset: int, data: bytes, flags: int, measured: bool | int = True) -> None:
        """EADD one page (``data`` zero-padded to 4096 bytes), then EEXTEND its chunks.

        ``measured``: True for every chunk, False for none (EADD only), or a 16-bit mask of chunks.
        """
        if len(data) > PAGE_SIZE:
            raise SgxFormatError("EADD", f"page data at {offset:#x} is {len(data)} bytes, more than a page")
        mask = _FULL_MASK if measured is True else 0 if measured is False else int(measured)
        if mask & ~_FULL_MASK:
            raise SgxFormatError("EEXTEND", f"chunk mask {mask:#x} has more than 16 bits")
        self.eadd(offset, flags)
        if not mask:
            return
        page = bytes(data).ljust(PAGE_SIZE, b"\0")
        if mask == _FULL_MASK:
            # the common case in one piece: 16 EEXTEND records (64-byte header + 256 data bytes) and one
            # hash update; eadd() above has checked the page, and a fresh page has no measured chunk yet
            offsets = range(offset, offset + PAGE_SIZE, CHUNK_SIZE)
            self._extended.update(offsets)
            args: list[bytes | int] = []
            for i, off in enumerate(offsets):
                args += (TAG_EEXTEND, off, page[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE])
            self._feed(_pack_page_extends(*args))
            return
        for i in range(CHUNKS_PER_PAGE):
            if mask >> i & 1:
                self.eextend(offset + i * CHUNK_SIZE, page[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE])

    def add_region(self, offset: int, data: bytes, flags: int, pages: int | None = None,
                   measured: bool = True) -> int:
        """Add ``data`` as consecutive pages from ``offset`` (``pages`` pads with zero pages); returns the end."""
        count = (len(data) + PAGE_SIZE - 1) // PAGE_SIZE if pages is None else pages
        if count * PAGE_SIZE < len(data):
            raise SgxFormatError("EADD", f"{len(data)} bytes do not fit in {count} pages at {offset:#x}")
        for i in range(count):
            self.add_page(offset + i * PAGE_SIZE, data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE], flags, measured)
        return offset + count * PAGE_SIZE

    def digest(self) -> bytes:
        self._need_ecreate("MRENCLAVE")
        return self._hash.copy().digest()

    def hexdigest(self) -> str:
        return self.digest().hex()

    def log(self) -> bytes:
        """The SGXS stream of everything measured so far (only with keep_log=True)."""
        if self._log is None:
            raise SgxFormatError("measurement", "the log was not kept (use Measurement(keep_log=True))")
        return b"".join(self._log)


# --------------------------------------------------------------------------------------------------
# SGXS streams


def _records(data: bytes) -> Iterator[tuple[int, Record]]:
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < RECORD_SIZE:
            raise SgxFormatError("SGXS", f"truncated record at byte {pos} ({n - pos} of {RECORD_SIZE} bytes)")
        tag = data[pos:pos + 8]
        if tag not in _HEADERS:
            raise SgxFormatError("SGXS", f"unknown record tag {bytes(tag)!r} at byte {pos}")
        codec, kind = _HEADERS[tag]
        _, *values, pad = codec.unpack_from(data, pos)
        if kind is Eextend:
            chunk = data[pos + RECORD_SIZE:pos + RECORD_SIZE + CHUNK_SIZE]
            if len(chunk) != CHUNK_SIZE:
                raise SgxFormatError("SGXS", f"EEXTEND at byte {pos} is missing its 256 data bytes")
            values.append(bytes(chunk))
        rec_out = kind(*values)
        if any(pad):
            raise SgxFormatError("SGXS", f"record at byte {pos} has non-zero padding")
        yield pos, rec_out
        pos += RECORD_SIZE + (CHUNK_SIZE if isinstance(rec_out, Eextend) else 0)


@dataclass
class SgxsStream:
    """A parsed SGXS stream: the ECREATE parameters, the pages in EADD order, and the MRENCLAVE."""

    ssaframesize: int
    size: int
    pages: list[Page] = field(default_factory=list)
    mrenclave: bytes = bytes(32)
    records: list[Record] = field(default_factory=list)

    def remeasure(self) -> bytes:
        """MRENCLAVE recomputed from the page list alone."""
        return measure_pages(self.ssaframesize, self.size, self.pages)


def read_sgxs(data: bytes) -> SgxsStream:
    """Parse and validate an SGXS stream (order and bounds as the CPU enforces them)."""
    if not data:
        raise SgxFormatError("SGXS", "empty stream")
    data = bytes(data)
    m = Measurement()
    out: SgxsStream | None = None
    by_offset: dict[int, Page] = {}
    chunks: dict[int, bytearray] = {}
    for pos, rec in _records(data):
        try:
            if isinstance(rec, Ecreate):
                if pos:
                    raise SgxFormatError("SGXS", f"ECREATE at byte {pos}: it must come first and only once")
                m.ecreate(rec.ssaframesize, rec.size)
                out = SgxsStream(rec.ssaframesize, rec.size)
            elif isinstance(rec, Eadd):
                m.eadd(rec.offset, rec.secinfo_flags)
                page = Page(rec.offset, rec.secinfo_flags)
                by_offset[rec.offset] = page
                chunks[rec.offset] = bytearray(PAGE_SIZE)
                assert out is not None
                out.pages.append(page)
            else:
                m.eextend(rec.offset, rec.data)
                base = rec.offset - rec.offset % PAGE_SIZE
                i = (rec.offset - base) // CHUNK_SIZE
                chunks[base][i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE] = rec.data
                by_offset[base].measured |= 1 << i
        except SgxFormatError as e:
            if e.struct == "SGXS":
                raise
            raise SgxFormatError("SGXS", f"record at byte {pos}: {e}") from None
        assert out is not None
        out.records.append(rec)
    assert out is not None
    for off, page in by_offset.items():
        page.data = bytes(chunks[off])
    out.mrenclave = m.digest()
    return out


def write_sgxs(records: Iterable[Record]) -> bytes:
    """Encode records as an SGXS stream, validating the order like :func:`read_sgxs` does."""
    m = Measurement(keep_log=True)
    for rec in records:
        if isinstance(rec, Ecreate):
            m.ecreate(rec.ssaframesize, rec.size)
        elif isinstance(rec, Eadd):
            m.eadd(rec.offset, rec.secinfo_flags)
        else:
            m.eextend(rec.offset, rec.data)
    return m.log()


def measure_pages(ssaframesize: int, size: int, pages: Iterable[Page]) -> bytes:
    """MRENCLAVE of an enclave given as a page list (EADD order; each page's ``measured`` chunk mask)."""
    m = Measurement()
    m.ecreate(ssaframesize, size)
    for p in pages:
        m.add_page(p.offset, p.data, p.secinfo_flags, p.measured)
    return m.digest()
