"""KBS 0.4.0 evidence: the verification of Trustee's per-TEE evidence JSON by our verifiers
(inclavare.attestation), plus KbsError. The report-data binding it checks is :mod:`inclavare.formats.kbs`.

Split from :mod:`.kbs` (which re-exports these names) to keep each file focused.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass, field
from typing import Any

from inclavare.formats.kbs import REPORT_DATA_SIZE
from inclavare.services.verdictd.errors import VerdictdError

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
MAX_EVIDENCE = 512 << 10  # decoded quote/report bytes
# Tees we verify: the kbs-types name -> our verifier's name. "sample"/"sim" only with a trusted sim root.
REAL_TEES = {"sgx": "sgx", "tdx": "tdx", "snp": "snp"}
SIM_TEES = {"sample": "sim", "sim": "sim"}


class KbsError(VerdictdError):
    """A KBS request is refused. ``status`` is the HTTP status, ``name`` Trustee's error type name."""

    def __init__(self, status: int, name: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.name, self.detail = status, name, detail

    def to_json(self) -> dict[str, str]:
        return {"type": ERROR_TYPE_PREFIX + self.name, "detail": self.detail}


def _bad(detail: str) -> KbsError:
    return KbsError(400, "InvalidRequest", detail)


def _unauth(name: str, detail: str) -> KbsError:
    return KbsError(401, name, detail)


# --------------------------------------------------------------------------------------------------
# Evidence (real verification: inclavare.attestation)


@dataclass
class EvidenceConfig:
    """How evidence is verified. ``trust_sim`` (never by default) also accepts tee ``sample``/``sim`` with quotes
    from the simulated platform whose root is in ``sim_root_fingerprints``. ``collateral``: per verifier name
    (sgx/tdx/snp/sim) what ``Options.collateral`` takes; when given, it must be valid. ``as_of``: evaluate
    validity windows then (tests, replays of old evidence)."""

    trust_sim: bool = False
    sim_root_fingerprints: tuple[str, ...] = ()
    collateral: dict[str, Any] = field(default_factory=dict)
    as_of: datetime.datetime | None = None
    extra_certs: tuple[bytes, ...] = ()


@dataclass
class Verified:
    tee: str
    claims: dict[str, Any]
    tcb_status: str | None


def _b64(text: Any, what: str, limit: int) -> bytes:
    if not isinstance(text, str) or not text:
        raise _bad(f"tee-evidence: {what} must be a non-empty base64 string")
    if len(text) > limit * 4 // 3 + 4:
        raise _bad(f"tee-evidence: {what} is over {limit} bytes")
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"tee-evidence: {what} is not base64") from None


def _snp_certs(chain: Any) -> tuple[bytes, ...]:
    """sev's CertTableEntry list: ``[{"cert_type": "VCEK"|..., "data": [bytes] | base64}]`` -> DER list."""
    if chain is None:
        return ()
    if not isinstance(chain, list) or len(chain) > 8:
        raise _bad("tee-evidence: cert_chain must be a list of at most 8 certificate entries")
    out = []
    for i, entry in enumerate(chain):
        data = entry.get("data") if isinstance(entry, dict) else None
        if isinstance(data, list) and len(data) <= 16384 and all(isinstance(b, int) and 0 <= b < 256 for b in data):
            out.append(bytes(data))
        elif isinstance(data, str):
            out.append(_b64(data, f"cert_chain[{i}].data", 16384))
        else:
            raise _bad(f"tee-evidence: cert_chain[{i}] needs \"data\" (a byte array or base64)")
    return tuple(out)


def verify_evidence(tee: str, evidence: Any, report_data: bytes, config: EvidenceConfig) -> Verified:
    """Decode Trustee's per-TEE evidence JSON, verify it with our verifiers and check the report data.

    sgx/tdx/sample/sim: ``{"quote": base64}`` (tdx may add ``cc_eventlog``); snp: ``{"attestation_report":
    base64 of the 1184-byte report, "cert_chain": [...]}``. Raises KbsError 401 when it does not verify."""
    from inclavare.attestation.api import AttestationError, Options
    from inclavare.attestation.evidence import verify_raw

    if len(report_data) > REPORT_DATA_SIZE:
        raise VerdictdError(f"expected report data is {len(report_data)} bytes, over {REPORT_DATA_SIZE}")
    report_data = report_data.ljust(REPORT_DATA_SIZE, b"\0")
    if tee in SIM_TEES and not config.trust_sim:
        raise _unauth("RcarAttestFailed", f"tee {tee!r}: this server does not trust the simulated platform")
    verifier = REAL_TEES.get(tee) or SIM_TEES.get(tee)
    if verifier is None:
        raise _unauth("RcarAttestFailed", f"tee {tee!r}: no verifier for it here (sgx, tdx, snp)")
    if not isinstance(evidence, dict):
        raise _bad("tee-evidence: primary_evidence must be a JSON object")
    extra = tuple(config.extra_certs)
    if verifier == "snp":
        if isinstance(evidence.get("attestation_report"), dict):
            raise _bad("tee-evidence: attestation_report as the sev crate's JSON object is not supported yet; send "
                       "base64 of the 1184-byte report")
        raw = _b64(evidence.get("attestation_report"), "attestation_report", MAX_EVIDENCE)
        extra += _snp_certs(evidence.get("cert_chain"))
    else:
        raw = _b64(evidence.get("quote"), "quote", MAX_EVIDENCE)
    collateral = config.collateral.get(verifier)
    options = Options(as_of=config.as_of, report_data=report_data, trust_sim=verifier == "sim",
                      sim_root_fingerprints=config.sim_root_fingerprints if verifier == "sim" else (),
                      collateral=collateral, extra_certs=extra)
    try:
        result = verify_raw(raw, "sim" if verifier == "sim" else verifier, options)
    except AttestationError as e:
        raise _unauth("RcarAttestFailed", f"{tee} evidence: {e}") from None
    if not result.verified:
        raise _unauth("RcarAttestFailed", f"{tee} evidence: {'; '.join(result.errors) or 'not verified'}")
    if result.tee != verifier:
        raise _unauth("RcarAttestFailed", f"{tee} evidence: the verifier says it is {result.tee}")
    got = result.claims.get("report_data")
    if isinstance(got, str) and got != report_data.hex():
        raise _unauth("RcarAttestFailed", f"{tee} evidence: report data {got} is not the runtime-data hash")
    if collateral is not None and not result.collateral_valid:
        raise _unauth("RcarAttestFailed", f"{tee} evidence: collateral is not valid "
                                          f"({'; '.join(result.errors) or 'no reason given'})")
    return Verified(tee=result.tee, claims=dict(result.claims), tcb_status=result.tcb_status)
