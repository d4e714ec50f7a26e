"""Raw evidence verified through one entry point (``sgx-tools verify-quote``; ``shelter verify`` through
:func:`inclavare.ratls.appraise.verify_evidence`, which adds RA-TLS certificates).

Kinds: an Intel DCAP quote (SGX v3, TDX v4/v5; also followed by zero padding, or inside a TDX GetQuote
buffer), an AMD SEV-SNP attestation report (also inside the sev-guest ioctl's MSG_REPORT_RSP), or a quote from
the simulated SGX platform (accepted only when told to trust the sim root). :func:`detect` also recognises RA-TLS
certificates, which ratls/ appraises (attestation/ knows nothing of certificates: the layer rule).
"""

from __future__ import annotations

import struct
from typing import Any

from inclavare.attestation.api import EvidenceFormatError, Options, Result
from inclavare.formats.envelopes import EnvelopeError, unwrap_snp_report_resp

TEES = ("auto", "sgx", "tdx", "snp", "sim")
SNP_REPORT_SIZE = 1184


def detect(data: bytes) -> str:
    """What ``data`` is: "cert" (an RA-TLS certificate), "dcap" or "snp"; raises EvidenceFormatError."""
    if data.lstrip()[:27] == b"-----BEGIN CERTIFICATE-----":
        return "cert"
    if len(data) >= 4 and data[0] == 0x30 and data[1] in (0x82, 0x83):  # DER SEQUENCE, long form length
        return "cert"
    if len(data) == SNP_REPORT_SIZE and 2 <= struct.unpack_from("<I", data, 0)[0] <= 5:
        return "snp"
    if len(data) >= 24 and struct.unpack_from("<Q", data, 0)[0] == 1:
        return "dcap"  # a TDX GetQuote buffer: header, quote, padding (the DCAP verifier takes the quote out)
    try:
        if unwrap_snp_report_resp(data) is not None:
            return "snp"
    except EnvelopeError:
        return "snp"  # an SNP MSG_REPORT_RSP saying why it has no report: the SNP verifier says so
    if len(data) >= 48:
        version, key_type = struct.unpack_from("<HH", data, 0)
        if version in (3, 4, 5) and key_type == 2:
            return "dcap"
    raise EvidenceFormatError(f"evidence of {len(data)} bytes is neither a DCAP quote (v3/v4/v5, ECDSA P-256), an "
                              f"SEV-SNP report ({SNP_REPORT_SIZE} bytes) nor an RA-TLS certificate")


def tee_mismatch(asked: str, result: Result) -> str | None:
    if asked in ("auto", result.tee):
        return None
    return f"the evidence is {result.tee}, not {asked}"


def verify_raw(data: bytes, tee: str, options: Options) -> Result:
    """A DCAP quote or an SEV-SNP report (RA-TLS certificates: inclavare.ratls.appraise.verify_evidence)."""
    kind = detect(data)
    if kind == "cert":
        raise EvidenceFormatError("an RA-TLS certificate is verified by inclavare.ratls.appraise, not here")
    if kind == "snp":
        if tee not in ("auto", "snp"):
            raise EvidenceFormatError(f"--tee {tee}: the evidence is an SEV-SNP report")
        from inclavare.attestation.snp import SnpVerifier

        return SnpVerifier().verify(data, options)
    if tee == "snp":
        raise EvidenceFormatError("--tee snp: the evidence is a DCAP quote")
    from inclavare.attestation.dcap import verify_quote

    result = verify_quote(data, options)
    problem = tee_mismatch(tee, result)
    if problem:
        result.verified = False
        result.errors.append(problem)
    return result


def summary(result: Result, with_collateral: bool) -> bool:
    """The exit decision: verified, and collateral valid when collateral was given."""
    return bool(result.verified and (not with_collateral or result.collateral_valid))


def empty_result(tee: str, error: str) -> dict[str, Any]:
    return Result(tee=tee if tee != "auto" else "unknown", errors=[error]).to_json()
