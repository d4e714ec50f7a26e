"""The wrappers real guest tools save evidence in, and how to take the evidence out of them.

Each reader returns the inner bytes, or None when the data is not in its wrapper (so the caller goes on with the
data as it is); a wrapper that is recognised but inconsistent raises :class:`EnvelopeError` naming the field
and byte offset. Facts are from the Linux guest drivers (``drivers/virt/coco/tdx-guest``, ``sev-guest``,
``include/uapi/linux/sev-guest.h``), the TDX GHCI ``TDG.VP.VMCALL<GetQuote>`` section, the SEV-SNP firmware ABI
(``MSG_REPORT_RSP``) and the GHCB specification (the extended-report certificate table):

* TDX GetQuote shared buffer (``struct tdx_quote_buf``)::

      0  u64 version    1 (GET_QUOTE_CMD_VER)
      8  u64 status     0 success, 0xffff_ffff_ffff_ffff in flight, 0x8000_0000_0000_0000 error,
                        0x8000_0000_0000_0001 quoting service unavailable
     16  u32 in_len     length of the TDREPORT the guest put in the buffer
     20  u32 out_len    length of the quote the host wrote
     24  data           the quote (out_len bytes), then the rest of the buffer (8 KiB in Linux, zero)

  The kernel's configfs-tsm ``outblob`` is the quote alone; a tool that saves the whole shared buffer (the
  ioctl interface some distribution kernels carried, or a raw memory dump) keeps this header.

* SNP ``MSG_REPORT_RSP`` as the sev-guest ioctl returns it in ``struct snp_report_resp`` (4000 bytes)::

      0  u32 status       0 success (0x16 invalid parameters, 0x27 invalid key selection)
      4  u32 report_size  1184
      8  24 reserved bytes (zero)
     32  the attestation report, then zero bytes to the end of the response buffer

* SNP extended report certificate table (``SNP_GET_EXT_REPORT`` ``certs``, configfs-tsm ``auxblob``): entries
  of ``GUID (16 bytes, RFC 4122 byte order) | u32 offset | u32 length``, little-endian, ended by an all-zero
  entry; each offset counts from the start of the table and points at a DER certificate after the entries.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from inclavare.errors import InclavareError

__all__ = [
    "CERT_TABLE_GUIDS",
    "MAX_CERT_TABLE_BYTES",
    "MAX_CERT_TABLE_ENTRIES",
    "build_cert_table",
    "CertTableEntry",
    "EnvelopeError",
    "looks_like_cert_table",
    "parse_cert_table",
    "unwrap_snp_report_resp",
    "unwrap_tdx_quote_buf",
]

TDX_QUOTE_BUF = struct.Struct("<QQII")
TDX_QUOTE_BUF_VERSION = 1
TDX_GET_QUOTE_STATUS: dict[int, str] = {
    0xFFFF_FFFF_FFFF_FFFF: "in flight (the host has not finished)",
    0x8000_0000_0000_0000: "error",
    0x8000_0000_0000_0001: "quoting service unavailable",
}
MAX_TDX_QUOTE_BUF = 1 << 20  # Linux uses 8 KiB, QEMU caps requests at 128 KiB

SNP_REPORT_SIZE = 1184
SNP_REPORT_RESP = struct.Struct("<II24s")
SNP_REPORT_RESP_MAX = 4000  # sizeof(struct snp_report_resp)
SNP_REPORT_RESP_STATUS: dict[int, str] = {0x16: "INVALID_PARAMETERS", 0x27: "INVALID_KEY_SELECTION"}

CERT_TABLE_ENTRY = struct.Struct("<16sII")
CERT_TABLE_GUIDS: dict[uuid.UUID, str] = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
}
MAX_CERT_TABLE_ENTRIES = 64
MAX_CERT_TABLE_BYTES = 1 << 20  # the kernel hands out at most a few pages; a megabyte is far past any host's


class EnvelopeError(InclavareError):
    """A recognised wrapper is inconsistent; the message names the wrapper, field and byte offset."""

    def __init__(self, what: str, field_name: str, offset: int, problem: str) -> None:
        super().__init__(f"{what}: {field_name} at offset {offset:#x}: {problem}")


def unwrap_tdx_quote_buf(data: bytes) -> bytes | None:
    """The quote inside a TDX GetQuote buffer (``struct tdx_quote_buf``), or None when ``data`` does not start
    with that header (version 1 as a u64: a DCAP quote starts with version 3-5 and key type 2 instead)."""
    if len(data) < TDX_QUOTE_BUF.size or struct.unpack_from("<Q", data, 0)[0] != TDX_QUOTE_BUF_VERSION:
        return None
    what = "TDX GetQuote buffer"
    if len(data) > MAX_TDX_QUOTE_BUF:
        raise EnvelopeError(what, "size", 0, f"{len(data)} bytes, more than the {MAX_TDX_QUOTE_BUF} a buffer holds")
    _version, status, in_len, out_len = TDX_QUOTE_BUF.unpack_from(data, 0)
    if status != 0:
        meaning = TDX_GET_QUOTE_STATUS.get(status, "not success")
        raise EnvelopeError(what, "status", 8, f"{status:#x} ({meaning}); the buffer holds no quote")
    room = len(data) - TDX_QUOTE_BUF.size
    if out_len == 0 or out_len > room:
        raise EnvelopeError(what, "out_len", 20, f"{out_len}, but {room} bytes follow the 24-byte header")
    if in_len > room:
        raise EnvelopeError(what, "in_len", 16, f"{in_len}, more than the {room} bytes the buffer holds")
    end = TDX_QUOTE_BUF.size + out_len
    tail = data[end:]
    if any(tail):
        first = end + next(i for i, b in enumerate(tail) if b)
        raise EnvelopeError(what, "padding", first, f"non-zero byte after the {out_len}-byte quote")
    return bytes(data[TDX_QUOTE_BUF.size:end])


def unwrap_snp_report_resp(data: bytes) -> bytes | None:
    """The attestation report inside an SNP ``MSG_REPORT_RSP``, or None when ``data`` is not one (a bare
    report starts with its version, 2-5, and has a non-zero guest policy where the response is reserved)."""
    if not SNP_REPORT_RESP.size <= len(data) <= SNP_REPORT_RESP_MAX or len(data) == SNP_REPORT_SIZE:
        return None
    status, size, reserved = SNP_REPORT_RESP.unpack_from(data, 0)
    if any(reserved) or 2 <= status <= 5 or status == size == 0:  # all zero: nothing says it is a response
        return None
    what = "SNP MSG_REPORT_RSP"
    if status != 0:
        meaning = SNP_REPORT_RESP_STATUS.get(status, "firmware error")
        raise EnvelopeError(what, "status", 0, f"{status:#x} ({meaning}); the response holds no report")
    if size != SNP_REPORT_SIZE:
        raise EnvelopeError(what, "report_size", 4, f"{size}, a report is {SNP_REPORT_SIZE} bytes")
    end = SNP_REPORT_RESP.size + SNP_REPORT_SIZE
    if len(data) < end:
        raise EnvelopeError(what, "report", SNP_REPORT_RESP.size,
                            f"{len(data) - SNP_REPORT_RESP.size} bytes, report_size says {size}")
    tail = data[end:]
    if any(tail):
        first = end + next(i for i, b in enumerate(tail) if b)
        raise EnvelopeError(what, "padding", first, "non-zero byte after the report")
    return bytes(data[SNP_REPORT_RESP.size:end])


@dataclass(frozen=True)
class CertTableEntry:
    """One entry of a certificate table: its GUID, its name (VCEK, VLEK, ASK, ARK; None when unknown), where
    its bytes are, and the bytes."""

    guid: uuid.UUID
    name: str | None
    offset: int
    data: bytes


def looks_like_cert_table(data: bytes) -> bool:
    """True when ``data`` could be a certificate table rather than a certificate: not PEM, not a DER SEQUENCE,
    and its first entry names a known GUID."""
    if len(data) < 2 * CERT_TABLE_ENTRY.size or data[:1] == b"\x30" or b"-----BEGIN" in data[:64]:
        return False
    return uuid.UUID(bytes=bytes(data[:16])) in CERT_TABLE_GUIDS


def parse_cert_table(blob: bytes) -> list[CertTableEntry]:
    """Every entry of a GHCB certificate table, in table order. Refused: no terminating all-zero entry inside
    the blob (truncated), more than :data:`MAX_CERT_TABLE_ENTRIES` entries, an entry of length 0, an entry that
    starts inside the table or ends past the blob, two entries that overlap, a known GUID twice."""
    what = "SNP certificate table"
    blob = bytes(blob)
    if len(blob) > MAX_CERT_TABLE_BYTES:
        raise EnvelopeError(what, "size", 0, f"{len(blob)} bytes, more than {MAX_CERT_TABLE_BYTES}")
    raw: list[tuple[int, uuid.UUID, int, int]] = []
    pos = 0
    while True:
        if pos + CERT_TABLE_ENTRY.size > len(blob):
            raise EnvelopeError(what, "entry", pos, f"truncated: no all-zero terminating entry in {len(blob)} bytes")
        guid, offset, length = CERT_TABLE_ENTRY.unpack_from(blob, pos)
        if guid == bytes(16):
            if offset or length:
                raise EnvelopeError(what, "terminating entry", pos, f"zero GUID with offset {offset}, length "
                                    f"{length}; the terminator is all zero")
            pos += CERT_TABLE_ENTRY.size
            break
        if len(raw) == MAX_CERT_TABLE_ENTRIES:
            raise EnvelopeError(what, "entry", pos, f"more than {MAX_CERT_TABLE_ENTRIES} entries")
        raw.append((pos, uuid.UUID(bytes=guid), offset, length))
        pos += CERT_TABLE_ENTRY.size
    entries: list[CertTableEntry] = []
    seen: set[str] = set()
    spans: list[tuple[int, int, int]] = []
    for at, guid, offset, length in raw:
        name = CERT_TABLE_GUIDS.get(guid)
        label = f"entry {guid} ({name or 'unknown'})"
        if length == 0:
            raise EnvelopeError(what, label, at, "length 0")
        if offset < pos or offset + length > len(blob):
            raise EnvelopeError(what, label, at, f"bytes {offset}..{offset + length - 1} are not between the end "
                                f"of the table ({pos}) and the end of the blob ({len(blob)})")
        if name is not None:
            if name in seen:
                raise EnvelopeError(what, label, at, f"a second {name} entry")
            seen.add(name)
        for other_at, start, end in spans:
            if offset < end and start < offset + length:
                raise EnvelopeError(what, label, at, f"bytes {offset}..{offset + length - 1} overlap those of the "
                                    f"entry at offset {other_at:#x} ({start}..{end - 1})")
        spans.append((at, offset, offset + length))
        entries.append(CertTableEntry(guid, name, offset, blob[offset:offset + length]))
    return entries


def build_cert_table(entries: list[tuple[uuid.UUID, bytes]]) -> bytes:
    """A certificate table of ``entries`` (GUID, DER) laid out as a host does: the entries, the terminator,
    then each certificate in order. Used by tests and by tools that save a table."""
    offset = CERT_TABLE_ENTRY.size * (len(entries) + 1)
    head, body = bytearray(), bytearray()
    for guid, der in entries:
        head += CERT_TABLE_ENTRY.pack(guid.bytes, offset + len(body), len(der))
        body += der
    return bytes(head + bytes(CERT_TABLE_ENTRY.size) + body)
