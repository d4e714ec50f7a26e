"""SIGSTRUCT: the enclave signature structure (SDM 38.13)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from inclavare.formats.sgx.common import (
    MODULUS_SIZE,
    SIGNING_MATERIAL_SIZE,
    SIGSTRUCT_HEADER1,
    SIGSTRUCT_HEADER2,
    SIGSTRUCT_SIZE,
    SIGSTRUCT_TYPE_DEBUG,
    VENDOR_INTEL,
    VENDOR_OTHER,
    Attributes,
    SgxFormatError,
    _check_bytes,
    _check_int,
    _check_reserved,
    _check_size,
    _u,
    _Writer,
    decode_date,
    mrsigner_of,
)

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
