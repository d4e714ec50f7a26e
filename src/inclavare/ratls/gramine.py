"""Gramine's RA-TLS certificates: the raw quote Gramine 1.8 and later write beside the DICE evidence.

Gramine (``tools/sgx/ra-tls/ra_tls_attest.c``) puts its SGX quote in a certificate extension whose OID bytes
mistakenly include the DER tag and length (:data:`inclavare.ratls.cert.GRAMINE_QUOTE_OID`); that quote's report
data is SHA-256 of the SubjectPublicKeyInfo DER (what ``mbedtls_pk_write_pubkey_der`` writes), zero-padded.
From 1.8 on it also writes the TCG DICE evidence extension with a second quote, bound through the claims buffer
(report data = SHA-256 of the claims buffer). Gramine's own verifier uses the DICE quote when present, as we do.

The two quotes are made one after the other by the same enclave, so they differ only in the report data and in
the signature data. A certificate whose raw quote names another enclave, TCB or platform than its DICE quote,
or whose raw quote is not bound to the certificate's key, would let a verifier that reads only the raw quote
(Gramine before 1.8, and other legacy readers) reach another verdict than we do: it is refused.
"""

from __future__ import annotations

import hashlib
import hmac

from inclavare.ratls.dice import REPORT_DATA_SIZE, TAG_INTEL_TEE_QUOTE, RatlsError, evidence_type_of

__all__ = ["check_companion_quote"]

# offset of REPORTDATA inside the SGX REPORTBODY (384 bytes) and the TD report body (584 / 648 bytes)
_SGX_REPORT_DATA_OFFSET = 320
_TD_REPORT_DATA_OFFSET = 520


def _identity(quote: bytes, where: str) -> tuple[bytes, bytes, bytes]:
    """(header, body type and body with the report data zeroed, report data) of a DCAP quote."""
    from inclavare.formats.dcap import DcapQuote
    from inclavare.formats.sgx import SgxFormatError

    try:
        q = DcapQuote.parse(quote)
    except (SgxFormatError, ValueError) as e:
        raise RatlsError(f"{where}: not a readable DCAP quote ({e})") from None
    body = bytes(q.body_raw)
    off = _TD_REPORT_DATA_OFFSET if q.is_tdx else _SGX_REPORT_DATA_OFFSET
    masked = body[:off] + bytes(REPORT_DATA_SIZE) + body[off + REPORT_DATA_SIZE:]
    return q.header.pack(), q.body_type.to_bytes(2, "little") + masked, body[off:off + REPORT_DATA_SIZE]


def check_companion_quote(dice_tag: int, dice_evidence: bytes, raw_quote: bytes, spki: bytes, oid: str) -> None:
    """Raise unless ``raw_quote`` (Gramine's quote extension ``oid``) agrees with the DICE evidence: both Intel
    quotes of the same type, the same header and report body apart from the report data, and the raw quote's
    report data SHA-256(``spki``) followed by zeros."""
    where = f"Gramine quote extension {oid} beside the DICE evidence"
    if dice_tag != TAG_INTEL_TEE_QUOTE:
        raise RatlsError(f"{where}: the DICE evidence is not an Intel quote (tag {dice_tag:#x}); the two "
                         "extensions conflict")
    raw_type = evidence_type_of(TAG_INTEL_TEE_QUOTE, raw_quote, where=where)
    dice_type = evidence_type_of(TAG_INTEL_TEE_QUOTE, dice_evidence, where="DICE evidence")
    if raw_type != dice_type:
        raise RatlsError(f"{where}: a {raw_type} quote beside a {dice_type} DICE quote; the two quotes conflict")
    raw_header, raw_body, raw_rd = _identity(raw_quote, where)
    dice_header, dice_body, _ = _identity(dice_evidence, "DICE evidence")
    if raw_header != dice_header:
        raise RatlsError(f"{where}: its quote header (QE/PCE SVN, QE vendor, user data) differs from the DICE "
                         "quote's; the two quotes conflict")
    if raw_body != dice_body:
        raise RatlsError(f"{where}: its report body (enclave identity, attributes, SVNs) differs from the DICE "
                         "quote's beyond the report data; the two quotes conflict")
    expected = hashlib.sha256(spki).digest().ljust(REPORT_DATA_SIZE, b"\x00")
    if not hmac.compare_digest(raw_rd, expected):
        raise RatlsError(f"{where}: its report data {raw_rd[:32].hex()} is not SHA-256 of the certificate's "
                         f"SubjectPublicKeyInfo {expected[:32].hex()} followed by zeros (made for another key)")
