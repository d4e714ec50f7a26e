"""SIGSTRUCT: the enclave signature structure (SDM 38.13)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from inclavare.formats.sgx import common as c
from inclavare.formats.sgx.common import Attributes, SgxFormatError, decode_date, mrsigner_of
from inclavare.formats.sgx.layout import Layout, Structure, attrs, b, constant, u


@dataclass(frozen=True)
class SigStruct(Structure):
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
    vendor: int = c.VENDOR_OTHER
    date: int = 0
    header_type: int = 0
    swdefined: int = 0
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)
    modulus: bytes = bytes(c.MODULUS_SIZE)
    exponent: int = 0
    signature: bytes = bytes(c.MODULUS_SIZE)
    q1: bytes = bytes(c.MODULUS_SIZE)
    q2: bytes = bytes(c.MODULUS_SIZE)

    # The signed parts are HEADER (bytes 0..127) and BODY (bytes 900..1027), see signing_material().
    LAYOUT = Layout(
        "SIGSTRUCT", c.SIGSTRUCT_SIZE,
        constant("HEADER", 0, c.SIGSTRUCT_HEADER1), u("header_type", "TYPE", 12, 4), u("vendor", "VENDOR", 16, 4),
        u("date", "DATE", 20, 4), constant("HEADER2", 24, c.SIGSTRUCT_HEADER2), u("swdefined", "SWDEFINED", 40, 4),
        b("modulus", "MODULUS", 128, c.MODULUS_SIZE), u("exponent", "EXPONENT", 512, 4),
        b("signature", "SIGNATURE", 516, c.MODULUS_SIZE), u("miscselect", "MISCSELECT", 900, 4),
        u("miscmask", "MISCMASK", 904, 4), u("cet_attributes", "CET_ATTRIBUTES", 908, 1),
        u("cet_attributes_mask", "CET_ATTRIBUTES_MASK", 909, 1), b("isvfamilyid", "ISVFAMILYID", 912, 16),
        attrs("attributes", "ATTRIBUTES", 928), attrs("attribute_mask", "ATTRIBUTEMASK", 944),
        b("enclavehash", "ENCLAVEHASH", 960, 32), b("isvextprodid", "ISVEXTPRODID", 1008, 16),
        u("isvprodid", "ISVPRODID", 1024, 2), u("isvsvn", "ISVSVN", 1026, 2), b("q1", "Q1", 1040, c.MODULUS_SIZE),
        b("q2", "Q2", 1424, c.MODULUS_SIZE),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.header_type not in (0, c.SIGSTRUCT_TYPE_DEBUG):
            raise SgxFormatError("SIGSTRUCT", f"TYPE={self.header_type:#x}: only bit 31 (debug) may be set")
        if self.vendor not in (c.VENDOR_OTHER, c.VENDOR_INTEL):
            raise SgxFormatError("SIGSTRUCT", f"VENDOR={self.vendor:#x}: must be 0 or 0x8086")

    # ---- codec

    def signing_material(self) -> bytes:
        """The 256 bytes that are RSA-signed: HEADER (bytes 0..127) followed by BODY (bytes 900..1027)."""
        raw = self.pack()
        return raw[slice(*c.SIGSTRUCT_HEADER_RANGE)] + raw[slice(*c.SIGSTRUCT_BODY_RANGE)]

    @classmethod
    def from_signing_material(cls, material: bytes) -> SigStruct:
        """An unsigned SIGSTRUCT whose header and body are ``material`` (the inverse of signing_material)."""
        c._check_size("SIGSTRUCT signing material", material, c.SIGNING_MATERIAL_SIZE)
        buf = bytearray(c.SIGSTRUCT_SIZE)
        buf[slice(*c.SIGSTRUCT_HEADER_RANGE)] = material[:128]
        buf[slice(*c.SIGSTRUCT_BODY_RANGE)] = material[128:]
        return cls.parse(bytes(buf))

    # ---- derived values

    @property
    def debug_signed(self) -> bool:
        """TYPE bit 31: the signer marked this a debug signature."""
        return bool(self.header_type & c.SIGSTRUCT_TYPE_DEBUG)

    @property
    def mrsigner(self) -> bytes:
        return mrsigner_of(self.modulus)

    @property
    def is_signed(self) -> bool:
        """False for a template: no modulus or no signature present."""
        return any(self.modulus) and any(self.signature)

    def decoded_date(self) -> tuple[datetime.date | None, str]:
        return decode_date(self.date)
