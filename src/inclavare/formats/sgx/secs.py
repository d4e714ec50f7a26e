"""SECS: the enclave control structure (SDM 38.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from inclavare.formats.sgx.common import (
    ATTRIBUTE_FLAGS_RESERVED,
    CONFIGID_SIZE,
    PAGE_SIZE,
    SECS_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    SgxFormatError,
    _check_bytes,
    _check_int,
    _check_reserved,
    _check_size,
    _u,
    _Writer,
)

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
