"""EINITTOKEN and KEYREQUEST (SDM 38.14, 38.18)."""

from __future__ import annotations

from dataclasses import dataclass, field

from inclavare.formats.sgx.common import (
    CPUSVN_SIZE,
    EINITTOKEN_SIZE,
    KEYID_SIZE,
    KEYREQUEST_SIZE,
    MAC_SIZE,
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
