"""The parts every DCAP quote version shares: sizes and version/TEE constants, :class:`DcapFormatError`, the
bounds-checked field reader and the 48-byte quote header.

Header layout (integers little-endian)::

    offset  size  field
         0     2  version (3, 4 or 5)
         2     2  attestation key type (2 = ECDSA-256 with P-256)
         4     4  TEE type (0 = SGX, 0x81 = TDX; reserved in v3 and must be 0)
         8     2  QE SVN
        10     2  PCE SVN
        12    16  QE vendor ID (Intel: 939A7233F79C4CA9940A0DB3957F0607)
        28    20  user data (Intel's QE: a 16-byte QE ID, then 4 zero bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inclavare.formats.sgx import REPORT_BODY_SIZE, SgxFormatError
from inclavare.formats.sgx.common import _check_int

QUOTE_VERSION_3 = 3
ATT_KEY_TYPE_ECDSA_P256 = 2
ATT_KEY_TYPE_ECDSA_P384 = 3
TEE_TYPE_SGX = 0x00000000
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
HEADER_SIZE = 48
USER_DATA_SIZE = 20
ECDSA_SIG_SIZE = 64
ECDSA_KEY_SIZE = 64
QUOTE_VERSION_4 = 4
QUOTE_VERSION_5 = 5
TEE_TYPE_TDX = 0x00000081
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
BODY_TYPE_SGX = 1  # v5 body types
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
_BODY_SIZES = {BODY_TYPE_SGX: REPORT_BODY_SIZE, BODY_TYPE_TD10: TD_REPORT10_SIZE, BODY_TYPE_TD15: TD_REPORT15_SIZE}
SIG_DATA_OFFSET = HEADER_SIZE + REPORT_BODY_SIZE + 4  # 436
SIGNED_SIZE = HEADER_SIZE + REPORT_BODY_SIZE  # 432

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


class DcapFormatError(SgxFormatError):
    """A DCAP quote or PCK extension is malformed; names the field and the byte offset where it went wrong."""

    def __init__(self, field_name: str, offset: int, problem: str, struct_name: str = "SGX quote v3") -> None:
        self.field, self.offset = field_name, offset
        super().__init__(struct_name, f"{field_name} at offset {offset}: {problem}")



def _need_bytes(struct_name: str, name: str, value: bytes, size: int | None = None, max_size: int = _U32) -> None:
    if not isinstance(value, (bytes, bytearray)):
        raise SgxFormatError(struct_name, f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise SgxFormatError(struct_name, f"{name} is {len(value)} bytes, expected {size}")
    if len(value) > max_size:
        raise SgxFormatError(struct_name, f"{name} is {len(value)} bytes, more than its length field holds")


class _Reader:
    """Reads fields from ``data[start:end]`` with bounds checks; offsets in errors are absolute."""

    def __init__(self, data: bytes, start: int, end: int, struct_name: str = "SGX quote v3") -> None:
        self.data, self.pos, self.end = data, start, end
        self.struct_name = struct_name

    def take(self, name: str, size: int) -> bytes:
        if size > self.end - self.pos:
            raise DcapFormatError(name, self.pos, f"needs {size} bytes, only {max(self.end - self.pos, 0)} remain",
                                  self.struct_name)
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def u16(self, name: str) -> int:
        return int.from_bytes(self.take(name, 2), "little")

    def u32(self, name: str) -> int:
        return int.from_bytes(self.take(name, 4), "little")



_HEADER = "SGX quote v3 header"
# (name in messages, attribute, width in bits) of the header's integers, in their order on the wire
_HEADER_INT_FIELDS = (("version", "version", 16), ("attestation key type", "att_key_type", 16),
                      ("TEE type", "tee_type", 32), ("QE SVN", "qe_svn", 16), ("PCE SVN", "pce_svn", 16))


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header."""

    version: int = QUOTE_VERSION_3
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256
    tee_type: int = TEE_TYPE_SGX
    qe_svn: int = 0
    pce_svn: int = 0
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID
    user_data: bytes = bytes(USER_DATA_SIZE)

    def __post_init__(self) -> None:
        for label, attr, bits in _HEADER_INT_FIELDS:
            _check_int(_HEADER, label, getattr(self, attr), bits)
        _need_bytes(_HEADER, "QE vendor ID", self.qe_vendor_id, 16)
        _need_bytes(_HEADER, "user data", self.user_data, USER_DATA_SIZE)

    @classmethod
    def parse(cls, data: bytes) -> QuoteHeader:
        if len(data) < HEADER_SIZE:
            raise DcapFormatError("header", 0, f"needs {HEADER_SIZE} bytes, the quote has {len(data)}")
        version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", data, 0)
        if version != QUOTE_VERSION_3:
            raise DcapFormatError("header.version", 0, f"is {version}, this parser reads version 3 only")
        if key_type != ATT_KEY_TYPE_ECDSA_P256:
            what = "ECDSA-384 with P-384 is not supported" if key_type == ATT_KEY_TYPE_ECDSA_P384 else "unknown type"
            raise DcapFormatError("header.att_key_type", 2, f"is {key_type} ({what}); expected 2 (ECDSA-256 P-256)")
        if tee_type != TEE_TYPE_SGX:
            raise DcapFormatError("header.tee_type", 4, f"is {tee_type:#x}; a v3 quote is SGX (0)")
        return cls(version, key_type, tee_type, qe_svn, pce_svn, bytes(data[12:28]), bytes(data[28:48]))

    def pack(self) -> bytes:
        return (struct.pack("<HHIHH", self.version, self.att_key_type, self.tee_type, self.qe_svn, self.pce_svn)
                + bytes(self.qe_vendor_id) + bytes(self.user_data))

    @property
    def is_intel_qe(self) -> bool:
        return bytes(self.qe_vendor_id) == INTEL_QE_VENDOR_ID

