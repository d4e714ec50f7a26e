"""REPORT, REPORT BODY and TARGETINFO (SDM 38.15-38.16)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from inclavare.formats.sgx.common import (
    CONFIGID_SIZE,
    CPUSVN_SIZE,
    KEYID_SIZE,
    MAC_SIZE,
    REPORT_BODY_SIZE,
    REPORT_DATA_SIZE,
    REPORT_SIZE,
    TARGETINFO_SIZE,
    Attributes,
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
