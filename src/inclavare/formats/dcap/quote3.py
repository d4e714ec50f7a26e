"""Intel SGX ECDSA quotes of version 3, as the quoting enclave writes them (:class:`Quote3`, which the
simulated platform builds and packs); verifiers read every version through :class:`DcapQuote`.

Layout (all integers little-endian)::

    offset  size  field
         0    48  header (:class:`QuoteHeader`)
        48   384  ISV enclave REPORTBODY
       432     4  signature data length N
       436     N  signature data:
                    64   ECDSA signature (r || s) over bytes 0..431
                    64   attestation public key (x || y)
                   384   QE REPORTBODY
                    64   ECDSA signature (r || s) of the QE REPORTBODY by the PCK key
                     2   QE authentication data size A, then A bytes
                     2   certification data type, 4: size C, then C bytes

The QE report's REPORTDATA binds the attestation key: its first 32 bytes are SHA-256(attestation key ||
QE authentication data) and the last 32 are zero (:func:`qe_report_data_for`).

Parsing is strict: every declared length is checked against the bytes present, the signature data must be
exactly its declared length, and bytes after it are returned as ``Quote3.trailing`` (some platforms pad
quotes into a fixed buffer) -- nothing in them is signed, so nothing may rely on them. A malformed quote
raises :class:`DcapFormatError` naming the field and its offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from inclavare.formats.dcap.certification import CertificationData, qe_report_data_for
from inclavare.formats.dcap.header import (
    _U16,
    ECDSA_KEY_SIZE,
    ECDSA_SIG_SIZE,
    HEADER_SIZE,
    SIG_DATA_OFFSET,
    SIGNED_SIZE,
    DcapFormatError,
    QuoteHeader,
    _need_bytes,
    _Reader,
)
from inclavare.formats.sgx import REPORT_BODY_SIZE, ReportBody, SgxFormatError


def _report_body(name: str, raw: bytes, offset: int) -> ReportBody:
    try:
        return ReportBody.parse(raw)
    except SgxFormatError as e:
        raise DcapFormatError(name, offset, e.problem) from None


@dataclass(frozen=True)
class QuoteSignatureData:
    """The ECDSA-256 quote signature data that follows the signature data length."""

    isv_signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification: CertificationData

    def __post_init__(self) -> None:
        s = "SGX quote v3 signature data"
        _need_bytes(s, "ISV signature", self.isv_signature, ECDSA_SIG_SIZE)
        _need_bytes(s, "attestation key", self.attestation_key, ECDSA_KEY_SIZE)
        _need_bytes(s, "QE report signature", self.qe_report_signature, ECDSA_SIG_SIZE)
        _need_bytes(s, "QE auth data", self.qe_auth_data, max_size=_U16)
        if not isinstance(self.qe_report, ReportBody) or not isinstance(self.certification, CertificationData):
            raise SgxFormatError(s, "qe_report must be a ReportBody and certification a CertificationData")

    @classmethod
    def parse_at(cls, data: bytes, start: int, end: int) -> QuoteSignatureData:
        """Parse ``data[start:end]``, which must be exactly the signature data."""
        r = _Reader(data, start, end)
        isv_sig = r.take("signature_data.isv_signature", ECDSA_SIG_SIZE)
        att_key = r.take("signature_data.attestation_key", ECDSA_KEY_SIZE)
        qe_off = r.pos
        qe_report = _report_body("signature_data.qe_report", r.take("signature_data.qe_report", REPORT_BODY_SIZE),
                                 qe_off)
        qe_sig = r.take("signature_data.qe_report_signature", ECDSA_SIG_SIZE)
        auth_size = r.u16("signature_data.qe_auth_data_size")
        auth = r.take("signature_data.qe_auth_data", auth_size)
        cert_type = r.u16("signature_data.cert_data_type")
        cert_size = r.u32("signature_data.cert_data_size")
        cert = r.take("signature_data.cert_data", cert_size)
        if r.pos != end:
            raise DcapFormatError("signature_data", r.pos, f"{end - r.pos} bytes inside the declared signature data "
                                                           "follow the certification data")
        return cls(isv_sig, att_key, qe_report, qe_sig, auth, CertificationData(cert_type, cert))

    def pack(self) -> bytes:
        return (bytes(self.isv_signature) + bytes(self.attestation_key) + self.qe_report.pack()
                + bytes(self.qe_report_signature) + struct.pack("<H", len(self.qe_auth_data))
                + bytes(self.qe_auth_data) + self.certification.pack())

    def qe_report_signed_bytes(self) -> bytes:
        """What the PCK key signs: the 384-byte QE REPORTBODY."""
        return self.qe_report.pack()

    def expected_qe_report_data(self) -> bytes:
        """The REPORTDATA the QE report must hold for this attestation key and auth data."""
        return qe_report_data_for(self.attestation_key, self.qe_auth_data)


@dataclass(frozen=True)
class Quote3:
    """An SGX ECDSA quote, version 3. ``trailing`` holds unsigned bytes found after the signature data."""

    header: QuoteHeader
    report_body: ReportBody
    signature: QuoteSignatureData
    trailing: bytes = field(default=b"")

    @classmethod
    def parse(cls, data: bytes) -> Quote3:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DcapFormatError("quote", 0, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        header = QuoteHeader.parse(data)
        r = _Reader(data, HEADER_SIZE, len(data))
        body = _report_body("report_body", r.take("report_body", REPORT_BODY_SIZE), HEADER_SIZE)
        sig_len = r.u32("signature_data_len")
        if sig_len > len(data) - SIG_DATA_OFFSET:
            raise DcapFormatError("signature_data_len", SIGNED_SIZE,
                                  f"declares {sig_len} bytes, only {len(data) - SIG_DATA_OFFSET} follow")
        end = SIG_DATA_OFFSET + sig_len
        sig = QuoteSignatureData.parse_at(data, SIG_DATA_OFFSET, end)
        return cls(header, body, sig, data[end:])

    def signed_bytes(self) -> bytes:
        """What the attestation key signs: header || ISV REPORTBODY (432 bytes)."""
        return self.header.pack() + self.report_body.pack()

    def pack(self) -> bytes:
        """The quote's bytes; ``trailing`` is appended so parse -> pack is byte-exact."""
        sig = self.signature.pack()
        return self.signed_bytes() + struct.pack("<I", len(sig)) + sig + bytes(self.trailing)

    @property
    def certification(self) -> CertificationData:
        return self.signature.certification

    def pck_chain_der(self) -> list[bytes]:
        """DER certificates of the type-5 PCK chain (leaf, intermediate CA, root)."""
        return self.signature.certification.pem_chain()

