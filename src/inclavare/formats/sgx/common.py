"""Constants, bit names, ATTRIBUTES, dates and the field helpers the SGX structures share."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, TypeVar

from inclavare.errors import InclavareError

PAGE_SIZE = 4096
MODULUS_SIZE = 384
SIGSTRUCT_SIZE = 1808
REPORT_BODY_SIZE = 384
REPORT_SIZE = 432
REPORT_DATA_SIZE = 64
KEYID_SIZE = 32
MAC_SIZE = 16
TARGETINFO_SIZE = 512
EINITTOKEN_SIZE = 304
KEYREQUEST_SIZE = 512
SECS_SIZE = 4096
CPUSVN_SIZE = 16
CONFIGID_SIZE = 64

SIGSTRUCT_HEADER1 = bytes.fromhex("06000000e100000000000100")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SIGSTRUCT_TYPE_DEBUG = 0x80000000
VENDOR_INTEL = 0x8086
VENDOR_OTHER = 0
SIGSTRUCT_EXPONENT = 3
# The signed ranges of a SIGSTRUCT: HEADER (bytes 0..127) and BODY (bytes 900..1027).
SIGSTRUCT_HEADER_RANGE = (0, 128)
SIGSTRUCT_BODY_RANGE = (900, 1028)
SIGNING_MATERIAL_SIZE = 256

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


class SgxFormatError(InclavareError):
    """An SGX structure has the wrong size, a bad constant, a non-zero reserved field or an out-of-range value."""

    def __init__(self, struct: str, problem: str) -> None:
        self.struct, self.problem = struct, problem
        super().__init__(f"{struct}: {problem}")


class AttributeFlags(IntFlag):
    """SECS.ATTRIBUTES.FLAGS (the low 64 bits of ATTRIBUTES)."""

    INIT = 1 << 0
    DEBUG = 1 << 1
    MODE64BIT = 1 << 2
    PROVISIONKEY = 1 << 4
    EINITTOKENKEY = 1 << 5
    CET = 1 << 6
    KSS = 1 << 7
    AEXNOTIFY = 1 << 10


# Bits an enclave may not set (bit 3, bits 8-9 and 11-63 are reserved in the current SDM).
ATTRIBUTE_FLAGS_RESERVED = _U64 & ~int(
    AttributeFlags.INIT | AttributeFlags.DEBUG | AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY
    | AttributeFlags.EINITTOKENKEY | AttributeFlags.CET | AttributeFlags.KSS | AttributeFlags.AEXNOTIFY
)


class Xfrm(IntFlag):
    """SECS.ATTRIBUTES.XFRM: the XSAVE feature set the enclave runs with (a subset of XCR0)."""

    X87 = 1 << 0
    SSE = 1 << 1
    AVX = 1 << 2
    MPX_BNDREGS = 1 << 3
    MPX_BNDCSR = 1 << 4
    AVX512_OPMASK = 1 << 5
    AVX512_ZMM_HI256 = 1 << 6
    AVX512_HI16_ZMM = 1 << 7
    PKRU = 1 << 9
    AMX_TILECFG = 1 << 17
    AMX_TILEDATA = 1 << 18


XFRM_LEGACY = int(Xfrm.X87 | Xfrm.SSE)


class MiscSelect(IntFlag):
    """MISCSELECT: extra state saved into the SSA frame on an asynchronous exit."""

    EXINFO = 1 << 0
    CPINFO = 1 << 1


class SecInfo(IntFlag):
    """SECINFO.FLAGS: R/W/X permissions (bits 0-2), state bits, and the page type in bits 8-15."""

    R = 1 << 0
    W = 1 << 1
    X = 1 << 2
    PENDING = 1 << 3
    MODIFIED = 1 << 4
    PR = 1 << 5
    PT_SECS = 0 << 8
    PT_TCS = 1 << 8
    PT_REG = 2 << 8
    PT_VA = 3 << 8
    PT_TRIM = 4 << 8
    PT_SS_FIRST = 5 << 8
    PT_SS_REST = 6 << 8


SECINFO_TCS = int(SecInfo.PT_TCS)
SECINFO_REG_R = int(SecInfo.PT_REG | SecInfo.R)
SECINFO_REG_RW = int(SecInfo.PT_REG | SecInfo.R | SecInfo.W)
SECINFO_REG_RX = int(SecInfo.PT_REG | SecInfo.R | SecInfo.X)
SECINFO_REG_RWX = int(SecInfo.PT_REG | SecInfo.R | SecInfo.W | SecInfo.X)


class KeyName(IntEnum):
    """KEYREQUEST.KEYNAME values."""

    EINITTOKEN_KEY = 0
    PROVISION_KEY = 1
    PROVISION_SEAL_KEY = 2
    REPORT_KEY = 3
    SEAL_KEY = 4


class KeyPolicy(IntFlag):
    """KEYREQUEST.KEYPOLICY bits."""

    MRENCLAVE = 1 << 0
    MRSIGNER = 1 << 1
    NOISVPRODID = 1 << 2
    CONFIGID = 1 << 3
    ISVFAMILYID = 1 << 4
    ISVEXTPRODID = 1 << 5


# --------------------------------------------------------------------------------------------------
# Small helpers


def _u(data: bytes, off: int, size: int) -> int:
    return int.from_bytes(data[off:off + size], "little")


def _check_size(struct: str, data: bytes, size: int) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SgxFormatError(struct, f"expected bytes, got {type(data).__name__}")
    if len(data) != size:
        raise SgxFormatError(struct, f"is {len(data)} bytes, expected {size}")


def _check_reserved(struct: str, data: bytes, ranges: tuple[tuple[int, int], ...]) -> None:
    for off, size in ranges:
        chunk = bytes(data[off:off + size])
        if any(chunk):
            bad = off + next(i for i, c in enumerate(chunk) if c)
            raise SgxFormatError(struct, f"reserved bytes {off}..{off + size - 1} must be zero (byte {bad} is not)")


def _check_int(struct: str, name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SgxFormatError(struct, f"{name} must be an integer, got {type(value).__name__}")
    if value < 0 or value >> bits:
        raise SgxFormatError(struct, f"{name}={value:#x} does not fit in {bits} bits")


def _check_bytes(struct: str, name: str, value: bytes, size: int) -> None:
    if not isinstance(value, (bytes, bytearray)):
        raise SgxFormatError(struct, f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != size:
        raise SgxFormatError(struct, f"{name} is {len(value)} bytes, expected {size}")


_T = TypeVar("_T")


def _unchecked(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass ``cls`` holding ``values`` (every field, by name), made without running
    its ``__init__`` / ``__post_init__`` checks.

    Only for parsers that cut each field out of a fixed layout, so the sizes and ranges those checks enforce
    hold by construction (a slice of a known length, a little-endian integer of a known width). Everything else
    builds instances the ordinary way.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def mrsigner_of(modulus_le: bytes) -> bytes:
    """MRSIGNER: SHA-256 of the 384-byte little-endian RSA modulus, exactly as SIGSTRUCT stores it."""
    _check_bytes("SIGSTRUCT", "MODULUS", modulus_le, MODULUS_SIZE)
    return hashlib.sha256(bytes(modulus_le)).digest()


# --------------------------------------------------------------------------------------------------
# Dates


def encode_bcd_date(day: datetime.date) -> int:
    """SIGSTRUCT.DATE for ``day``: 0xYYYYMMDD in binary-coded decimal."""
    return int(f"{day.year:04d}{day.month:02d}{day.day:02d}", 16)


def decode_date(raw: int) -> tuple[datetime.date | None, str]:
    """Decode SIGSTRUCT.DATE: returns (date, encoding) with encoding ``"bcd"``, ``"binary"``, ``"none"`` or
    ``"invalid"``.

    The SDM encoding is BCD 0xYYYYMMDD. Old Graphene signers wrote the year as a plain u16 in the low half and
    month, day as plain bytes above it (``0x070A07E3`` = 2019-10-07); such files exist signed, so they are
    decoded rather than rejected. A zero date (enarx, kernel selftests) decodes to ``(None, "none")``.
    """
    if raw == 0:
        return None, "none"
    digits = f"{raw:08x}"
    if digits.isdigit():
        try:
            return datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:])), "bcd"
        except ValueError:
            pass
    year, month, dday = raw & 0xFFFF, (raw >> 16) & 0xFF, raw >> 24
    try:
        return datetime.date(year, month, dday), "binary"
    except ValueError:
        return None, "invalid"


# --------------------------------------------------------------------------------------------------
# ATTRIBUTES


@dataclass(frozen=True)
class Attributes:
    """The 128-bit ATTRIBUTES: FLAGS (u64) then XFRM (u64)."""

    flags: int = 0
    xfrm: int = 0

    SIZE = 16

    def __post_init__(self) -> None:
        _check_int("ATTRIBUTES", "FLAGS", self.flags, 64)
        _check_int("ATTRIBUTES", "XFRM", self.xfrm, 64)

    @classmethod
    def parse(cls, data: bytes) -> Attributes:
        _check_size("ATTRIBUTES", data, 16)
        return cls(_u(data, 0, 8), _u(data, 8, 8))

    def pack(self) -> bytes:
        return self.flags.to_bytes(8, "little") + self.xfrm.to_bytes(8, "little")

    def __and__(self, other: Attributes) -> Attributes:
        return Attributes(self.flags & other.flags, self.xfrm & other.xfrm)

    def __or__(self, other: Attributes) -> Attributes:
        return Attributes(self.flags | other.flags, self.xfrm | other.xfrm)

    def has(self, flag: AttributeFlags) -> bool:
        return bool(self.flags & int(flag))

    @property
    def debug(self) -> bool:
        return self.has(AttributeFlags.DEBUG)

    @property
    def mode64bit(self) -> bool:
        return self.has(AttributeFlags.MODE64BIT)

    def names(self) -> list[str]:
        """Names of the set FLAGS bits (unknown bits as ``bitN``)."""
        out = [f.name or "" for f in AttributeFlags if self.flags & int(f)]
        known = _U64 & ~ATTRIBUTE_FLAGS_RESERVED
        out += [f"bit{i}" for i in range(64) if self.flags & ~known & (1 << i)]
        return out

    def __str__(self) -> str:
        return f"flags={self.flags:#x} xfrm={self.xfrm:#x}"
