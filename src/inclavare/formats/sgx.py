"""Intel SGX architectural structures, byte for byte: SIGSTRUCT, REPORT(BODY), TARGETINFO, EINITTOKEN,
KEYREQUEST, SECS, plus the ATTRIBUTES / XFRM / MISCSELECT / SECINFO bit names.

Pure codecs: no I/O, no cryptography. Every class has ``parse(data)`` (exact size, reserved bytes must be
zero, fixed constants must match) and ``pack()`` (the inverse, byte-exact). All integers are little-endian,
as the Intel SDM lays them out. A malformed structure raises :class:`SgxFormatError` naming the structure,
the field or offset, and what is wrong.

Offsets follow the SDM tables (also found in intel/linux-sgx ``arch.h`` and the Linux ``sgx/arch.h``).
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, TypeVar

from inclavare.errors import InclavareError

__all__ = [
    "EINITTOKEN_SIZE",
    "KEYREQUEST_SIZE",
    "MODULUS_SIZE",
    "PAGE_SIZE",
    "REPORT_BODY_SIZE",
    "REPORT_DATA_SIZE",
    "REPORT_SIZE",
    "SECS_SIZE",
    "SIGSTRUCT_SIZE",
    "TARGETINFO_SIZE",
    "AttributeFlags",
    "Attributes",
    "EInitToken",
    "KeyName",
    "KeyPolicy",
    "KeyRequest",
    "MiscSelect",
    "Report",
    "ReportBody",
    "SecInfo",
    "Secs",
    "SgxFormatError",
    "SigStruct",
    "TargetInfo",
    "Xfrm",
    "decode_date",
    "encode_bcd_date",
    "mrsigner_of",
]

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


def _b(data: bytes, off: int, size: int) -> bytes:
    return bytes(data[off:off + size])


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


class _Writer:
    """Fills a zeroed buffer of a fixed size; every field is placed at its SDM offset."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)

    def u(self, off: int, size: int, value: int) -> None:
        self.buf[off:off + size] = value.to_bytes(size, "little")

    def b(self, off: int, value: bytes) -> None:
        self.buf[off:off + len(value)] = value

    def done(self) -> bytes:
        return bytes(self.buf)


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


# --------------------------------------------------------------------------------------------------
# SIGSTRUCT


@dataclass(frozen=True)
class SigStruct:
    """The 1808-byte enclave signature structure EINIT checks.

    ``header_type`` is the TYPE word (bit 31 = debug-signed). ``date`` is the raw DATE word; see
    :func:`decode_date`. ``modulus``, ``signature``, ``q1`` and ``q2`` are 384-byte little-endian integers as
    stored. An unsigned template has them all zero.
    """

    enclavehash: bytes = bytes(32)
    attributes: Attributes = field(default_factory=Attributes)
    attribute_mask: Attributes = field(default_factory=Attributes)
    miscselect: int = 0
    miscmask: int = 0
    isvprodid: int = 0
    isvsvn: int = 0
    vendor: int = VENDOR_OTHER
    date: int = 0
    header_type: int = 0
    swdefined: int = 0
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)
    modulus: bytes = bytes(MODULUS_SIZE)
    exponent: int = 0
    signature: bytes = bytes(MODULUS_SIZE)
    q1: bytes = bytes(MODULUS_SIZE)
    q2: bytes = bytes(MODULUS_SIZE)

    def __post_init__(self) -> None:
        s = "SIGSTRUCT"
        if self.header_type not in (0, SIGSTRUCT_TYPE_DEBUG):
            raise SgxFormatError(s, f"TYPE={self.header_type:#x}: only bit 31 (debug) may be set")
        if self.vendor not in (VENDOR_OTHER, VENDOR_INTEL):
            raise SgxFormatError(s, f"VENDOR={self.vendor:#x}: must be 0 or 0x8086")
        for name, value, bits in (("DATE", self.date, 32), ("SWDEFINED", self.swdefined, 32),
                                  ("EXPONENT", self.exponent, 32), ("MISCSELECT", self.miscselect, 32),
                                  ("MISCMASK", self.miscmask, 32), ("CET_ATTRIBUTES", self.cet_attributes, 8),
                                  ("CET_ATTRIBUTES_MASK", self.cet_attributes_mask, 8),
                                  ("ISVPRODID", self.isvprodid, 16), ("ISVSVN", self.isvsvn, 16)):
            _check_int(s, name, value, bits)
        for bname, bvalue, size in (("ENCLAVEHASH", self.enclavehash, 32), ("ISVFAMILYID", self.isvfamilyid, 16),
                                    ("ISVEXTPRODID", self.isvextprodid, 16), ("MODULUS", self.modulus, MODULUS_SIZE),
                                    ("SIGNATURE", self.signature, MODULUS_SIZE), ("Q1", self.q1, MODULUS_SIZE),
                                    ("Q2", self.q2, MODULUS_SIZE)):
            _check_bytes(s, bname, bvalue, size)
        if not isinstance(self.attributes, Attributes) or not isinstance(self.attribute_mask, Attributes):
            raise SgxFormatError(s, "ATTRIBUTES and ATTRIBUTEMASK must be Attributes")

    # ---- codec

    @classmethod
    def parse(cls, data: bytes) -> SigStruct:
        s = "SIGSTRUCT"
        _check_size(s, data, SIGSTRUCT_SIZE)
        data = bytes(data)
        if data[0:12] != SIGSTRUCT_HEADER1:
            raise SgxFormatError(s, f"HEADER (bytes 0..11) is {data[0:12].hex()}, expected {SIGSTRUCT_HEADER1.hex()}")
        if data[24:40] != SIGSTRUCT_HEADER2:
            raise SgxFormatError(s, f"HEADER2 (bytes 24..39) is {data[24:40].hex()}, "
                                    f"expected {SIGSTRUCT_HEADER2.hex()}")
        _check_reserved(s, data, ((44, 84), (910, 2), (992, 16), (1028, 12)))
        return cls(
            header_type=_u(data, 12, 4),
            vendor=_u(data, 16, 4),
            date=_u(data, 20, 4),
            swdefined=_u(data, 40, 4),
            modulus=data[128:512],
            exponent=_u(data, 512, 4),
            signature=data[516:900],
            miscselect=_u(data, 900, 4),
            miscmask=_u(data, 904, 4),
            cet_attributes=data[908],
            cet_attributes_mask=data[909],
            isvfamilyid=data[912:928],
            attributes=Attributes.parse(data[928:944]),
            attribute_mask=Attributes.parse(data[944:960]),
            enclavehash=data[960:992],
            isvextprodid=data[1008:1024],
            isvprodid=_u(data, 1024, 2),
            isvsvn=_u(data, 1026, 2),
            q1=data[1040:1424],
            q2=data[1424:1808],
        )

    def _header(self) -> bytes:
        w = _Writer(128)
        w.b(0, SIGSTRUCT_HEADER1)
        w.u(12, 4, self.header_type)
        w.u(16, 4, self.vendor)
        w.u(20, 4, self.date)
        w.b(24, SIGSTRUCT_HEADER2)
        w.u(40, 4, self.swdefined)
        return w.done()

    def _body(self) -> bytes:
        w = _Writer(128)
        w.u(0, 4, self.miscselect)
        w.u(4, 4, self.miscmask)
        w.u(8, 1, self.cet_attributes)
        w.u(9, 1, self.cet_attributes_mask)
        w.b(12, self.isvfamilyid)
        w.b(28, self.attributes.pack())
        w.b(44, self.attribute_mask.pack())
        w.b(60, self.enclavehash)
        w.b(108, self.isvextprodid)
        w.u(124, 2, self.isvprodid)
        w.u(126, 2, self.isvsvn)
        return w.done()

    def signing_material(self) -> bytes:
        """The 256 bytes that are RSA-signed: HEADER (bytes 0..127) followed by BODY (bytes 900..1027)."""
        return self._header() + self._body()

    @classmethod
    def from_signing_material(cls, material: bytes) -> SigStruct:
        """An unsigned SIGSTRUCT whose header and body are ``material`` (the inverse of signing_material)."""
        _check_size("SIGSTRUCT signing material", material, SIGNING_MATERIAL_SIZE)
        buf = bytearray(SIGSTRUCT_SIZE)
        buf[0:128] = material[:128]
        buf[900:1028] = material[128:]
        return cls.parse(bytes(buf))

    def pack(self) -> bytes:
        out = bytearray(SIGSTRUCT_SIZE)
        out[0:128] = self._header()
        out[128:512] = self.modulus
        out[512:516] = self.exponent.to_bytes(4, "little")
        out[516:900] = self.signature
        out[900:1028] = self._body()
        out[1040:1424] = self.q1
        out[1424:1808] = self.q2
        return bytes(out)

    # ---- derived values

    @property
    def debug_signed(self) -> bool:
        """TYPE bit 31: the signer marked this a debug signature."""
        return bool(self.header_type & SIGSTRUCT_TYPE_DEBUG)

    @property
    def mrsigner(self) -> bytes:
        return mrsigner_of(self.modulus)

    @property
    def is_signed(self) -> bool:
        """False for a template: no modulus or no signature present."""
        return any(self.modulus) and any(self.signature)

    def decoded_date(self) -> tuple[datetime.date | None, str]:
        return decode_date(self.date)


# --------------------------------------------------------------------------------------------------
# REPORT, TARGETINFO


# MISCSELECT (16), CET_ATTRIBUTES (20), ATTRIBUTES.FLAGS and XFRM (48, 56), ISVPRODID, ISVSVN, CONFIGSVN (256..261)
_BODY_INTS = struct.Struct("<16xIB27xQQ192xHHH")


@dataclass(frozen=True)
class ReportBody:
    """The 384-byte REPORTBODY EREPORT fills in (the part a quote signs)."""

    cpusvn: bytes = bytes(CPUSVN_SIZE)
    miscselect: int = 0
    cet_attributes: int = 0
    isvextprodid: bytes = bytes(16)
    attributes: Attributes = field(default_factory=Attributes)
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    configid: bytes = bytes(CONFIGID_SIZE)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    reportdata: bytes = bytes(REPORT_DATA_SIZE)

    def __post_init__(self) -> None:
        s = "REPORTBODY"
        for name, value, bits in (("MISCSELECT", self.miscselect, 32), ("CET_ATTRIBUTES", self.cet_attributes, 8),
                                  ("ISVPRODID", self.isvprodid, 16), ("ISVSVN", self.isvsvn, 16),
                                  ("CONFIGSVN", self.configsvn, 16)):
            _check_int(s, name, value, bits)
        for bname, bvalue, size in (("CPUSVN", self.cpusvn, CPUSVN_SIZE), ("ISVEXTPRODID", self.isvextprodid, 16),
                                    ("MRENCLAVE", self.mrenclave, 32), ("MRSIGNER", self.mrsigner, 32),
                                    ("CONFIGID", self.configid, CONFIGID_SIZE), ("ISVFAMILYID", self.isvfamilyid, 16),
                                    ("REPORTDATA", self.reportdata, REPORT_DATA_SIZE)):
            _check_bytes(s, bname, bvalue, size)

    @classmethod
    def parse(cls, data: bytes) -> ReportBody:
        s = "REPORTBODY"
        _check_size(s, data, REPORT_BODY_SIZE)
        data = bytes(data)
        _check_reserved(s, data, ((21, 11), (96, 32), (160, 32), (262, 42)))
        return cls(
            cpusvn=data[0:16],
            miscselect=_u(data, 16, 4),
            cet_attributes=data[20],
            isvextprodid=data[32:48],
            attributes=Attributes.parse(data[48:64]),
            mrenclave=data[64:96],
            mrsigner=data[128:160],
            configid=data[192:256],
            isvprodid=_u(data, 256, 2),
            isvsvn=_u(data, 258, 2),
            configsvn=_u(data, 260, 2),
            isvfamilyid=data[304:320],
            reportdata=data[320:384],
        )

    @classmethod
    def _from_layout(cls, raw: bytes) -> ReportBody:
        """The fields of ``raw``, which the caller has made exactly 384 ``bytes``, read at their offsets; the
        reserved bytes are not looked at (see :func:`inclavare.formats.dcap.report_body_lenient`)."""
        misc, cet, flags, xfrm, prodid, svn, configsvn = _BODY_INTS.unpack_from(raw)
        attributes = object.__new__(Attributes)  # as _unchecked does, inline: this runs for every quote
        attributes.__dict__.update(flags=flags, xfrm=xfrm)
        body = object.__new__(cls)
        body.__dict__.update(
            cpusvn=raw[0:16], miscselect=misc, cet_attributes=cet, isvextprodid=raw[32:48], attributes=attributes,
            mrenclave=raw[64:96], mrsigner=raw[128:160], configid=raw[192:256], isvprodid=prodid, isvsvn=svn,
            configsvn=configsvn, isvfamilyid=raw[304:320], reportdata=raw[320:384])
        return body

    def pack(self) -> bytes:
        w = _Writer(REPORT_BODY_SIZE)
        w.b(0, self.cpusvn)
        w.u(16, 4, self.miscselect)
        w.u(20, 1, self.cet_attributes)
        w.b(32, self.isvextprodid)
        w.b(48, self.attributes.pack())
        w.b(64, self.mrenclave)
        w.b(128, self.mrsigner)
        w.b(192, self.configid)
        w.u(256, 2, self.isvprodid)
        w.u(258, 2, self.isvsvn)
        w.u(260, 2, self.configsvn)
        w.b(304, self.isvfamilyid)
        w.b(320, self.reportdata)
        return w.done()


@dataclass(frozen=True)
class Report:
    """REPORT (432 bytes): REPORTBODY, KEYID (32) and the AES-CMAC (16) over the body."""

    body: ReportBody
    keyid: bytes = bytes(KEYID_SIZE)
    mac: bytes = bytes(MAC_SIZE)

    def __post_init__(self) -> None:
        _check_bytes("REPORT", "KEYID", self.keyid, KEYID_SIZE)
        _check_bytes("REPORT", "MAC", self.mac, MAC_SIZE)

    @classmethod
    def parse(cls, data: bytes) -> Report:
        _check_size("REPORT", data, REPORT_SIZE)
        data = bytes(data)
        return cls(ReportBody.parse(data[:REPORT_BODY_SIZE]), data[384:416], data[416:432])

    def pack(self) -> bytes:
        return self.body.pack() + self.keyid + self.mac


@dataclass(frozen=True)
class TargetInfo:
    """TARGETINFO (512 bytes): the identity of the enclave a REPORT is made for."""

    measurement: bytes = bytes(32)
    attributes: Attributes = field(default_factory=Attributes)
    cet_attributes: int = 0
    configsvn: int = 0
    miscselect: int = 0
    configid: bytes = bytes(CONFIGID_SIZE)

    def __post_init__(self) -> None:
        s = "TARGETINFO"
        _check_bytes(s, "MEASUREMENT", self.measurement, 32)
        _check_bytes(s, "CONFIGID", self.configid, CONFIGID_SIZE)
        _check_int(s, "CET_ATTRIBUTES", self.cet_attributes, 8)
        _check_int(s, "CONFIGSVN", self.configsvn, 16)
        _check_int(s, "MISCSELECT", self.miscselect, 32)

    @classmethod
    def parse(cls, data: bytes) -> TargetInfo:
        s = "TARGETINFO"
        _check_size(s, data, TARGETINFO_SIZE)
        data = bytes(data)
        _check_reserved(s, data, ((49, 1), (56, 8), (128, 384)))
        return cls(
            measurement=data[0:32],
            attributes=Attributes.parse(data[32:48]),
            cet_attributes=data[48],
            configsvn=_u(data, 50, 2),
            miscselect=_u(data, 52, 4),
            configid=data[64:128],
        )

    def pack(self) -> bytes:
        w = _Writer(TARGETINFO_SIZE)
        w.b(0, self.measurement)
        w.b(32, self.attributes.pack())
        w.u(48, 1, self.cet_attributes)
        w.u(50, 2, self.configsvn)
        w.u(52, 4, self.miscselect)
        w.b(64, self.configid)
        return w.done()


# --------------------------------------------------------------------------------------------------
# EINITTOKEN, KEYREQUEST


@dataclass(frozen=True)
class EInitToken:
    """EINITTOKEN (304 bytes): the launch enclave's permission for EINIT; MAC over bytes 0..191."""

    valid: int = 0
    attributes: Attributes = field(default_factory=Attributes)
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    cpusvnle: bytes = bytes(CPUSVN_SIZE)
    isvprodidle: int = 0
    isvsvnle: int = 0
    maskedmiscselectle: int = 0
    maskedattributesle: Attributes = field(default_factory=Attributes)
    keyid: bytes = bytes(KEYID_SIZE)
    mac: bytes = bytes(MAC_SIZE)

    MAC_RANGE = (0, 192)

    def __post_init__(self) -> None:
        s = "EINITTOKEN"
        _check_int(s, "VALID", self.valid, 32)
        _check_int(s, "ISVPRODIDLE", self.isvprodidle, 16)
        _check_int(s, "ISVSVNLE", self.isvsvnle, 16)
        _check_int(s, "MASKEDMISCSELECTLE", self.maskedmiscselectle, 32)
        for bname, bvalue, size in (("MRENCLAVE", self.mrenclave, 32), ("MRSIGNER", self.mrsigner, 32),
                                    ("CPUSVNLE", self.cpusvnle, CPUSVN_SIZE), ("KEYID", self.keyid, KEYID_SIZE),
                                    ("MAC", self.mac, MAC_SIZE)):
            _check_bytes(s, bname, bvalue, size)

    @classmethod
    def parse(cls, data: bytes) -> EInitToken:
        s = "EINITTOKEN"
        _check_size(s, data, EINITTOKEN_SIZE)
        data = bytes(data)
        _check_reserved(s, data, ((4, 44), (96, 32), (160, 32), (212, 24)))
        return cls(
            valid=_u(data, 0, 4),
            attributes=Attributes.parse(data[48:64]),
            mrenclave=data[64:96],
            mrsigner=data[128:160],
            cpusvnle=data[192:208],
            isvprodidle=_u(data, 208, 2),
            isvsvnle=_u(data, 210, 2),
            maskedmiscselectle=_u(data, 236, 4),
            maskedattributesle=Attributes.parse(data[240:256]),
            keyid=data[256:288],
            mac=data[288:304],
        )

    def pack(self) -> bytes:
        w = _Writer(EINITTOKEN_SIZE)
        w.u(0, 4, self.valid)
        w.b(48, self.attributes.pack())
        w.b(64, self.mrenclave)
        w.b(128, self.mrsigner)
        w.b(192, self.cpusvnle)
        w.u(208, 2, self.isvprodidle)
        w.u(210, 2, self.isvsvnle)
        w.u(236, 4, self.maskedmiscselectle)
        w.b(240, self.maskedattributesle.pack())
        w.b(256, self.keyid)
        w.b(288, self.mac)
        return w.done()

    @property
    def is_valid(self) -> bool:
        return bool(self.valid & 1)

    def mac_material(self) -> bytes:
        """The bytes the launch key's CMAC covers (bytes 0..191)."""
        return self.pack()[:192]


@dataclass(frozen=True)
class KeyRequest:
    """KEYREQUEST (512 bytes): the input of EGETKEY."""

    keyname: int = int(KeyName.REPORT_KEY)
    keypolicy: int = 0
    isvsvn: int = 0
    cet_attributes_mask: int = 0
    cpusvn: bytes = bytes(CPUSVN_SIZE)
    attribute_mask: Attributes = field(default_factory=Attributes)
    keyid: bytes = bytes(KEYID_SIZE)
    miscmask: int = 0
    configsvn: int = 0

    def __post_init__(self) -> None:
        s = "KEYREQUEST"
        if self.keyname not in {int(k) for k in KeyName}:
            raise SgxFormatError(s, f"KEYNAME={self.keyname} is not a known key (0..4)")
        if self.keypolicy & ~0x3F:
            raise SgxFormatError(s, f"KEYPOLICY={self.keypolicy:#x} sets reserved bits")
        _check_int(s, "KEYPOLICY", self.keypolicy, 16)
        _check_int(s, "ISVSVN", self.isvsvn, 16)
        _check_int(s, "CET_ATTRIBUTES_MASK", self.cet_attributes_mask, 8)
        _check_int(s, "MISCMASK", self.miscmask, 32)
        _check_int(s, "CONFIGSVN", self.configsvn, 16)
        _check_bytes(s, "CPUSVN", self.cpusvn, CPUSVN_SIZE)
        _check_bytes(s, "KEYID", self.keyid, KEYID_SIZE)

    @classmethod
    def parse(cls, data: bytes) -> KeyRequest:
        s = "KEYREQUEST"
        _check_size(s, data, KEYREQUEST_SIZE)
        data = bytes(data)
        _check_reserved(s, data, ((7, 1), (78, 434)))
        return cls(
            keyname=_u(data, 0, 2),
            keypolicy=_u(data, 2, 2),
            isvsvn=_u(data, 4, 2),
            cet_attributes_mask=data[6],
            cpusvn=data[8:24],
            attribute_mask=Attributes.parse(data[24:40]),
            keyid=data[40:72],
            miscmask=_u(data, 72, 4),
            configsvn=_u(data, 76, 2),
        )

    def pack(self) -> bytes:
        w = _Writer(KEYREQUEST_SIZE)
        w.u(0, 2, self.keyname)
        w.u(2, 2, self.keypolicy)
        w.u(4, 2, self.isvsvn)
        w.u(6, 1, self.cet_attributes_mask)
        w.b(8, self.cpusvn)
        w.b(24, self.attribute_mask.pack())
        w.b(40, self.keyid)
        w.u(72, 4, self.miscmask)
        w.u(76, 2, self.configsvn)
        return w.done()


# --------------------------------------------------------------------------------------------------
# SECS


@dataclass(frozen=True)
class Secs:
    """SECS (one 4096-byte page): the enclave control structure ECREATE takes.

    Only the architecturally visible fields are modelled; the rest of the page must be zero on ECREATE.
    """

    size: int = 0
    baseaddr: int = 0
    ssaframesize: int = 1
    miscselect: int = 0
    attributes: Attributes = field(default_factory=Attributes)
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    configid: bytes = bytes(CONFIGID_SIZE)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0

    def __post_init__(self) -> None:
        s = "SECS"
        _check_int(s, "SIZE", self.size, 64)
        _check_int(s, "BASEADDR", self.baseaddr, 64)
        _check_int(s, "SSAFRAMESIZE", self.ssaframesize, 32)
        _check_int(s, "MISCSELECT", self.miscselect, 32)
        _check_int(s, "ISVPRODID", self.isvprodid, 16)
        _check_int(s, "ISVSVN", self.isvsvn, 16)
        _check_int(s, "CONFIGSVN", self.configsvn, 16)
        _check_bytes(s, "MRENCLAVE", self.mrenclave, 32)
        _check_bytes(s, "MRSIGNER", self.mrsigner, 32)
        _check_bytes(s, "CONFIGID", self.configid, CONFIGID_SIZE)

    def validate_for_ecreate(self) -> None:
        """What ECREATE and the Linux driver check: SIZE a power of two >= 2 pages, BASEADDR aligned, INIT clear."""
        s = "SECS"
        if self.size < 2 * PAGE_SIZE or self.size & (self.size - 1):
            raise SgxFormatError(s, f"SIZE={self.size:#x} must be a power of two of at least 0x2000")
        if self.baseaddr % self.size:
            raise SgxFormatError(s, f"BASEADDR={self.baseaddr:#x} is not aligned to SIZE={self.size:#x}")
        if self.ssaframesize == 0:
            raise SgxFormatError(s, "SSAFRAMESIZE must be at least 1 page")
        if self.attributes.flags & int(AttributeFlags.INIT):
            raise SgxFormatError(s, "ATTRIBUTES.INIT must be clear before EINIT")
        if self.attributes.flags & ATTRIBUTE_FLAGS_RESERVED:
            raise SgxFormatError(s, f"ATTRIBUTES.FLAGS={self.attributes.flags:#x} sets reserved bits")
        if self.attributes.xfrm & XFRM_LEGACY != XFRM_LEGACY:
            raise SgxFormatError(s, f"ATTRIBUTES.XFRM={self.attributes.xfrm:#x} must include x87 and SSE (0x3)")

    @classmethod
    def parse(cls, data: bytes) -> Secs:
        s = "SECS"
        _check_size(s, data, SECS_SIZE)
        data = bytes(data)
        _check_reserved(s, data, ((24, 24), (96, 32), (160, 32), (262, SECS_SIZE - 262)))
        return cls(
            size=_u(data, 0, 8),
            baseaddr=_u(data, 8, 8),
            ssaframesize=_u(data, 16, 4),
            miscselect=_u(data, 20, 4),
            attributes=Attributes.parse(data[48:64]),
            mrenclave=data[64:96],
            mrsigner=data[128:160],
            configid=data[192:256],
            isvprodid=_u(data, 256, 2),
            isvsvn=_u(data, 258, 2),
            configsvn=_u(data, 260, 2),
        )

    def pack(self) -> bytes:
        w = _Writer(SECS_SIZE)
        w.u(0, 8, self.size)
        w.u(8, 8, self.baseaddr)
        w.u(16, 4, self.ssaframesize)
        w.u(20, 4, self.miscselect)
        w.b(48, self.attributes.pack())
        w.b(64, self.mrenclave)
        w.b(128, self.mrsigner)
        w.b(192, self.configid)
        w.u(256, 2, self.isvprodid)
        w.u(258, 2, self.isvsvn)
        w.u(260, 2, self.configsvn)
        return w.done()
