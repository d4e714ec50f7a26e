"""REPORT, REPORT BODY, TARGETINFO (SDM 38.15-38.16), EINITTOKEN, KEYREQUEST (38.14, 38.18) and SECS (38.7).

Each structure is a frozen dataclass whose ``LAYOUT`` table (:mod:`inclavare.formats.sgx.layout`) gives its field
checks, ``parse`` and ``pack``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inclavare.formats.sgx import common as c
from inclavare.formats.sgx.common import Attributes, KeyName, SgxFormatError
from inclavare.formats.sgx.layout import Layout, Structure, attrs, b, u

# EREPORT copies the enclave's identity from its SECS: the two structures share this block, byte for byte.
_IDENTITY = (
    attrs("attributes", "ATTRIBUTES", 48), b("mrenclave", "MRENCLAVE", 64, 32), b("mrsigner", "MRSIGNER", 128, 32),
    b("configid", "CONFIGID", 192, c.CONFIGID_SIZE), u("isvprodid", "ISVPRODID", 256, 2), u("isvsvn", "ISVSVN", 258, 2),
    u("configsvn", "CONFIGSVN", 260, 2),
)

# --------------------------------------------------------------------------------------------------
# REPORT, TARGETINFO


@dataclass(frozen=True)
class ReportBody(Structure):
    """The 384-byte REPORTBODY EREPORT fills in (the part a quote signs)."""

    cpusvn: bytes = bytes(c.CPUSVN_SIZE)
    miscselect: int = 0
    cet_attributes: int = 0
    isvextprodid: bytes = bytes(16)
    attributes: Attributes = field(default_factory=Attributes)
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    configid: bytes = bytes(c.CONFIGID_SIZE)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    reportdata: bytes = bytes(c.REPORT_DATA_SIZE)

    LAYOUT = Layout(
        "REPORTBODY", c.REPORT_BODY_SIZE,
        b("cpusvn", "CPUSVN", 0, c.CPUSVN_SIZE), u("miscselect", "MISCSELECT", 16, 4),
        u("cet_attributes", "CET_ATTRIBUTES", 20, 1), b("isvextprodid", "ISVEXTPRODID", 32, 16), *_IDENTITY,
        b("isvfamilyid", "ISVFAMILYID", 304, 16), b("reportdata", "REPORTDATA", 320, c.REPORT_DATA_SIZE),
    )

    @classmethod
    def _from_layout(cls, raw: bytes) -> ReportBody:
        """The fields of ``raw``, which the caller has made exactly 384 ``bytes``, read at their offsets; the
        reserved bytes are not looked at (see :func:`inclavare.formats.dcap.report_body_lenient`)."""
        return cls.LAYOUT.unchecked(cls, raw)


@dataclass(frozen=True)
class Report:
    """REPORT (432 bytes): REPORTBODY, KEYID (32) and the AES-CMAC (16) over the body."""

    body: ReportBody
    keyid: bytes = bytes(c.KEYID_SIZE)
    mac: bytes = bytes(c.MAC_SIZE)

    def __post_init__(self) -> None:
        c._check_bytes("REPORT", "KEYID", self.keyid, c.KEYID_SIZE)
        c._check_bytes("REPORT", "MAC", self.mac, c.MAC_SIZE)

    @classmethod
    def parse(cls, data: bytes) -> Report:
        c._check_size("REPORT", data, c.REPORT_SIZE)
        data = bytes(data)
        return cls(ReportBody.parse(data[:c.REPORT_BODY_SIZE]), data[384:416], data[416:432])

    def pack(self) -> bytes:
        return self.body.pack() + self.keyid + self.mac


@dataclass(frozen=True)
class TargetInfo(Structure):
    """TARGETINFO (512 bytes): the identity of the enclave a REPORT is made for."""

    measurement: bytes = bytes(32)
    attributes: Attributes = field(default_factory=Attributes)
    cet_attributes: int = 0
    configsvn: int = 0
    miscselect: int = 0
    configid: bytes = bytes(c.CONFIGID_SIZE)

    LAYOUT = Layout(
        "TARGETINFO", c.TARGETINFO_SIZE,
        b("measurement", "MEASUREMENT", 0, 32), attrs("attributes", "ATTRIBUTES", 32),
        u("cet_attributes", "CET_ATTRIBUTES", 48, 1), u("configsvn", "CONFIGSVN", 50, 2),
        u("miscselect", "MISCSELECT", 52, 4), b("configid", "CONFIGID", 64, c.CONFIGID_SIZE),
    )


# --------------------------------------------------------------------------------------------------
# EINITTOKEN, KEYREQUEST


@dataclass(frozen=True)
class EInitToken(Structure):
    """EINITTOKEN (304 bytes): the launch enclave's permission for EINIT; MAC over bytes 0..191."""

    valid: int = 0
    attributes: Attributes = field(default_factory=Attributes)
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    cpusvnle: bytes = bytes(c.CPUSVN_SIZE)
    isvprodidle: int = 0
    isvsvnle: int = 0
    maskedmiscselectle: int = 0
    maskedattributesle: Attributes = field(default_factory=Attributes)
    keyid: bytes = bytes(c.KEYID_SIZE)
    mac: bytes = bytes(c.MAC_SIZE)

    MAC_RANGE = (0, 192)
    LAYOUT = Layout(
        "EINITTOKEN", c.EINITTOKEN_SIZE,
        u("valid", "VALID", 0, 4), attrs("attributes", "ATTRIBUTES", 48), b("mrenclave", "MRENCLAVE", 64, 32),
        b("mrsigner", "MRSIGNER", 128, 32), b("cpusvnle", "CPUSVNLE", 192, c.CPUSVN_SIZE),
        u("isvprodidle", "ISVPRODIDLE", 208, 2), u("isvsvnle", "ISVSVNLE", 210, 2),
        u("maskedmiscselectle", "MASKEDMISCSELECTLE", 236, 4),
        attrs("maskedattributesle", "MASKEDATTRIBUTESLE", 240), b("keyid", "KEYID", 256, c.KEYID_SIZE),
        b("mac", "MAC", 288, c.MAC_SIZE),
    )

    @property
    def is_valid(self) -> bool:
        return bool(self.valid & 1)

    def mac_material(self) -> bytes:
        """The bytes the launch key's CMAC covers (bytes 0..191)."""
        return self.pack()[slice(*self.MAC_RANGE)]


_KEY_NAMES = frozenset(int(k) for k in KeyName)


@dataclass(frozen=True)
class KeyRequest(Structure):
    """KEYREQUEST (512 bytes): the input of EGETKEY."""

    keyname: int = int(KeyName.REPORT_KEY)
    keypolicy: int = 0
    isvsvn: int = 0
    cet_attributes_mask: int = 0
    cpusvn: bytes = bytes(c.CPUSVN_SIZE)
    attribute_mask: Attributes = field(default_factory=Attributes)
    keyid: bytes = bytes(c.KEYID_SIZE)
    miscmask: int = 0
    configsvn: int = 0

    LAYOUT = Layout(
        "KEYREQUEST", c.KEYREQUEST_SIZE,
        u("keyname", "KEYNAME", 0, 2), u("keypolicy", "KEYPOLICY", 2, 2), u("isvsvn", "ISVSVN", 4, 2),
        u("cet_attributes_mask", "CET_ATTRIBUTES_MASK", 6, 1), b("cpusvn", "CPUSVN", 8, c.CPUSVN_SIZE),
        attrs("attribute_mask", "ATTRIBUTEMASK", 24), b("keyid", "KEYID", 40, c.KEYID_SIZE),
        u("miscmask", "MISCMASK", 72, 4), u("configsvn", "CONFIGSVN", 76, 2),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keyname not in _KEY_NAMES:
            raise SgxFormatError("KEYREQUEST", f"KEYNAME={self.keyname} is not a known key (0..4)")
        if self.keypolicy & ~0x3F:
            raise SgxFormatError("KEYREQUEST", f"KEYPOLICY={self.keypolicy:#x} sets reserved bits")


# --------------------------------------------------------------------------------------------------
# SECS


@dataclass(frozen=True)
class Secs(Structure):
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
    configid: bytes = bytes(c.CONFIGID_SIZE)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0

    LAYOUT = Layout(
        "SECS", c.SECS_SIZE,
        u("size", "SIZE", 0, 8), u("baseaddr", "BASEADDR", 8, 8), u("ssaframesize", "SSAFRAMESIZE", 16, 4),
        u("miscselect", "MISCSELECT", 20, 4), *_IDENTITY,
    )

    def validate_for_ecreate(self) -> None:
        """What ECREATE and the Linux driver check: SIZE a power of two >= 2 pages, BASEADDR aligned, INIT clear."""
        s = "SECS"
        if self.size < 2 * c.PAGE_SIZE or self.size & (self.size - 1):
            raise SgxFormatError(s, f"SIZE={self.size:#x} must be a power of two of at least 0x2000")
        if self.baseaddr % self.size:
            raise SgxFormatError(s, f"BASEADDR={self.baseaddr:#x} is not aligned to SIZE={self.size:#x}")
        if self.ssaframesize == 0:
            raise SgxFormatError(s, "SSAFRAMESIZE must be at least 1 page")
        if self.attributes.flags & int(c.AttributeFlags.INIT):
            raise SgxFormatError(s, "ATTRIBUTES.INIT must be clear before EINIT")
        if self.attributes.flags & c.ATTRIBUTE_FLAGS_RESERVED:
            raise SgxFormatError(s, f"ATTRIBUTES.FLAGS={self.attributes.flags:#x} sets reserved bits")
        if self.attributes.xfrm & c.XFRM_LEGACY != c.XFRM_LEGACY:
            raise SgxFormatError(s, f"ATTRIBUTES.XFRM={self.attributes.xfrm:#x} must include x87 and SSE (0x3)")
