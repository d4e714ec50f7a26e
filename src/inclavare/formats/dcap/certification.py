"""QE certification data (the typed blob at the end of a quote's signature data), the PEM chain it carries
as type 5, and the REPORTDATA binding of the QE report to the attestation key."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from inclavare.formats import pem
from inclavare.formats.dcap.header import _need_bytes
from inclavare.formats.sgx import SgxFormatError
from inclavare.formats.sgx.common import _check_int


class CertDataType(IntEnum):
    """Certification data types of the ECDSA quote signature data."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048_OAEP = 2
    PPID_RSA3072_OAEP = 3
    PCK_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERT_DATA = 6
    PLATFORM_MANIFEST = 7


def qe_report_data_for(attestation_key: bytes, qe_auth_data: bytes) -> bytes:
    """The 64-byte REPORTDATA a QE report must carry: SHA-256(attestation key || QE auth data) || 32 zeros."""
    return hashlib.sha256(bytes(attestation_key) + bytes(qe_auth_data)).digest() + bytes(32)



def split_pem_chain(data: bytes, *, where: str = "PEM chain") -> list[bytes]:
    """The DER bytes of each CERTIFICATE block of a PEM chain, in order.

    Between and after the blocks only whitespace and NUL bytes are allowed (Intel's QE may end the chain with
    a NUL); anything else, a non-certificate block, bad base64 or an empty chain raises :class:`SgxFormatError`.
    """
    def fail(problem: str) -> SgxFormatError:
        return SgxFormatError(where, problem)

    out: list[bytes] = []
    for n, block in enumerate(pem.blocks(data, fail), 1):
        if block.label != "CERTIFICATE":
            raise SgxFormatError(where, f"PEM block {n} at offset {block.start} is {block.label!r}, not CERTIFICATE")
        out.append(block.der)
    if not out:
        raise SgxFormatError(where, "holds no certificate")
    return out


@dataclass(frozen=True)
class CertificationData:
    """QE certification data: type and its bytes (type 5 = PEM chain PCK leaf, PCK CA, root)."""

    cert_type: int
    data: bytes

    def __post_init__(self) -> None:
        _check_int("certification data", "type", self.cert_type, 16)
        _need_bytes("certification data", "data", self.data)

    def pem_chain(self) -> list[bytes]:
        """DER certificates of a type-5 chain, leaf first (see :func:`split_pem_chain`)."""
        if self.cert_type != CertDataType.PCK_CERT_CHAIN:
            raise SgxFormatError("certification data", f"type {self.cert_type} is not a PCK certificate chain (5)")
        return split_pem_chain(self.data, where="certification data (PCK chain)")

    def pack(self) -> bytes:
        return struct.pack("<HI", self.cert_type, len(self.data)) + bytes(self.data)

