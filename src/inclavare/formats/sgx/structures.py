"""REPORT, REPORT BODY, TARGETINFO (SDM 38.15-38.16), EINITTOKEN, KEYREQUEST (38.14, 38.18) and SECS (38.7)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from inclavare.formats.sgx.common import (
    ATTRIBUTE_FLAGS_RESERVED,
    CONFIGID_SIZE,
    CPUSVN_SIZE,
    EINITTOKEN_SIZE,
    KEYID_SIZE,
    KEYREQUEST_SIZE,
    MAC_SIZE,
    PAGE_SIZE,
    REPORT_BODY_SIZE,
    REPORT_DATA_SIZE,
    REPORT_SIZE,
    SECS_SIZE,
    TARGETINFO_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    KeyName,
    SgxFormatError,
    _check_bytes,
    _check_int,
    _check_reserved,
    _check_size,
    _u,
    _Writer,
)

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
