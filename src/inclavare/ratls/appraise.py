"""RA-TLS certificates as evidence outside a handshake (``shelter verify CERT``): the certificate's validity and
self-signature, the evidence it carries (through the attestation verifiers), and the key binding.

This is the ratls side of one entry point for every kind of evidence, :func:`verify_evidence`: certificates are
appraised here, raw quotes and reports go straight to :func:`inclavare.attestation.evidence.verify_raw`. It lives
in ratls/ because a certificate is ratls' format; attestation/ knows nothing of certificates (the layer rule).
"""

from __future__ import annotations

from dataclasses import replace

from inclavare.attestation import evidence as ev
from inclavare.attestation.api import AttestationError, EvidenceFormatError, Options, Result

__all__ = ["verify_certificate", "verify_evidence"]


def verify_evidence(data: bytes, tee: str, options: Options) -> Result:
    """Any supported evidence: an RA-TLS certificate, a DCAP quote or an SEV-SNP report (see evidence.detect)."""
    if ev.detect(data) == "cert":
        return verify_certificate(data, tee, options)
    return ev.verify_raw(data, tee, options)


def verify_certificate(data: bytes, tee: str, options: Options) -> Result:
    """An RA-TLS certificate: its time validity and self-signature, the evidence, and the binding."""
    from inclavare.ratls.cert import check_binding, check_validity, parse_certificate

    parsed = parse_certificate(data)
    evidence_tee = {"sgx_ecdsa": "sgx", "tdx_ecdsa": "tdx", "sev_snp": "snp"}.get(parsed.evidence_type or "")
    if evidence_tee is None:
        raise EvidenceFormatError(f"RA-TLS certificate: {parsed.evidence_type} evidence cannot be verified here "
                                  "(supported: sgx_ecdsa, tdx_ecdsa, sev_snp)")
    opts = options
    if opts.collateral is None and parsed.collateral is not None and evidence_tee in ("sgx", "tdx"):
        opts = replace(opts, collateral=parsed.collateral)
    result = ev.verify_raw(parsed.evidence, "auto", opts)
    problem = ev.tee_mismatch(tee, result)
    if problem:
        result.verified = False
        result.errors.append(problem)
    report_data = bytes.fromhex(str(result.claims.get("report_data", "")))
    try:
        check_binding(parsed, report_data)
    except AttestationError as e:
        result.verified = False
        result.errors.append(f"RA-TLS certificate: {e}")
    try:
        check_validity(parsed.der, opts.as_of)
    except AttestationError as e:
        result.verified = False
        result.errors.append(f"RA-TLS certificate: {e}")
    result.claims["ratls_format"] = parsed.format
    result.claims["ratls_custom_claims"] = {k: v.hex() for k, v in parsed.custom_claims.items()}
    return result
