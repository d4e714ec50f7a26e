"""KBS 0.4.0 evidence: the verification of Trustee's per-TEE evidence JSON by our verifiers
(inclavare.attestation), plus KbsError. The report-data binding it checks is :mod:`inclavare.formats.kbs`. SNP
evidence comes as Trustee's SnpEvidence (the sev crate's report JSON, :mod:`inclavare.formats.snp_sev_json`, and
its CertTableEntry list); Trustee's unsigned ``sample`` evidence is accepted only when the sim platform is trusted.

Split from :mod:`.kbs` (which re-exports these names) to keep each file focused.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import uuid
from dataclasses import dataclass, field
from typing import Any

from inclavare.formats.kbs import REPORT_DATA_SIZE
from inclavare.services.verdictd.errors import VerdictdError

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
MAX_EVIDENCE = 512 << 10  # decoded quote/report bytes
# Tees we verify: the kbs-types name -> our verifier's name. "sample"/"sim" only when the sim platform is trusted:
# "sim" (and "sample" with {"quote"}) are quotes of our simulated platform, "sample" with {"svn", "report_data"}
# is Trustee's sample evidence (no signature at all).
REAL_TEES = {"sgx": "sgx", "tdx": "tdx", "snp": "snp"}
SIM_TEES = {"sample": "sim", "sim": "sim"}
SAMPLE_KEYS = ("svn", "report_data")
SAMPLE_LAUNCH_DIGEST = "abcde"  # the constant Trustee's sample verifier reports


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
    snp_certs: tuple[bytes, ...] = ()


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


# sev's CertType: the enum's unit variants by name; OTHER(uuid) as {"OTHER": "<uuid>"} (serde's externally tagged
# enum). Certificates of these roles reach the SNP verifier, which picks the leaf by the report's signing key and
# chip ID and checks the chain up to the pinned ARK; CRL, Empty and unknown GUIDs are skipped, as Trustee does.
SNP_CERT_ROLES = ("ARK", "ASK", "VCEK", "VLEK")
SNP_CERT_SKIPPED = ("CRL", "Empty")
MAX_SNP_CERTS = 8
MAX_SNP_CERT = 16384


def _snp_cert_role(cert_type: Any, where: str) -> str | None:
    """The role a cert_chain entry's ``cert_type`` names (``VCEK``...), None for one to skip."""
    from inclavare.formats.envelopes import CERT_TABLE_GUIDS

    if isinstance(cert_type, str):
        if cert_type in SNP_CERT_ROLES:
            return cert_type
        if cert_type in SNP_CERT_SKIPPED:
            return None
        raise _bad(f"tee-evidence: {where}.cert_type {cert_type[:40]!r} is not one of sev's CertType names "
                   f"({', '.join(SNP_CERT_ROLES + SNP_CERT_SKIPPED)}) or {{\"OTHER\": <GUID>}}")
    if isinstance(cert_type, dict) and len(cert_type) == 1 and isinstance(cert_type.get("OTHER"), str):
        try:
            guid = uuid.UUID(cert_type["OTHER"])
        except ValueError:
            raise _bad(f"tee-evidence: {where}.cert_type.OTHER is not a GUID") from None
        return CERT_TABLE_GUIDS.get(guid)
    raise _bad(f"tee-evidence: {where}.cert_type must be a CertType name or {{\"OTHER\": <GUID>}}")


def _snp_certs(chain: Any) -> tuple[bytes, ...]:
    """sev's ``Option<Vec<CertTableEntry>>``: null, or ``[{"cert_type": ..., "data": [bytes]}]`` (``data`` may also
    be base64) -> the DER certificates of the ARK/ASK/VCEK/VLEK entries."""
    if chain is None:
        return ()
    if not isinstance(chain, list) or len(chain) > MAX_SNP_CERTS:
        raise _bad(f"tee-evidence: cert_chain must be null or a list of at most {MAX_SNP_CERTS} certificate entries")
    out = []
    for i, entry in enumerate(chain):
        where = f"cert_chain[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"cert_type", "data"}:
            raise _bad(f"tee-evidence: {where} must be an object with exactly cert_type and data")
        role = _snp_cert_role(entry["cert_type"], where)
        data = entry["data"]
        if isinstance(data, list):
            if len(data) > MAX_SNP_CERT or not all(type(b) is int and 0 <= b < 256 for b in data):
                raise _bad(f"tee-evidence: {where}.data must be at most {MAX_SNP_CERT} byte values (0..255)")
            der = bytes(data)
        elif isinstance(data, str):
            der = _b64(data, f"{where}.data", MAX_SNP_CERT)
        else:
            raise _bad(f"tee-evidence: {where}.data must be a byte array (or base64)")
        if role is not None:
            out.append(der)
    return tuple(out)


def _snp_report(evidence: dict[str, Any]) -> tuple[bytes, tuple[bytes, ...]]:
    """Trustee's SnpEvidence ``{"attestation_report": <sev JSON>, "cert_chain": [...] | null}`` -> the raw report
    (sev's JSON converted losslessly, :mod:`inclavare.formats.snp_sev_json`; base64 of the raw report is accepted
    too) and the certificates."""
    from inclavare.formats.snp_sev_json import SevJsonError, report_from_sev_json

    unknown = [k for k in evidence if k not in ("attestation_report", "cert_chain")]
    if unknown:
        raise _bad(f"tee-evidence: snp evidence has an unknown field {str(unknown[0])[:40]!r} (attestation_report, "
                   "cert_chain)")
    report = evidence.get("attestation_report")
    if isinstance(report, dict):
        try:
            raw = report_from_sev_json(report)
        except SevJsonError as e:
            raise _bad(f"tee-evidence: attestation_report: {e}") from None
    else:
        raw = _b64(report, "attestation_report", MAX_EVIDENCE)
    return raw, _snp_certs(evidence.get("cert_chain"))


def _verify_sample(evidence: dict[str, Any], report_data: bytes) -> Verified:
    """Trustee's sample evidence ``{"svn": "<string>", "report_data": base64}``: nothing is signed, so all it can
    show is that the client echoed the runtime-data hash. Claims as Trustee's sample verifier gives them."""
    unknown = [k for k in evidence if k not in SAMPLE_KEYS]
    if unknown:
        raise _bad(f"tee-evidence: sample evidence has an unknown field {str(unknown[0])[:40]!r} (svn, report_data)")
    svn = evidence.get("svn")
    if not isinstance(svn, str) or not 0 < len(svn) <= 64:
        raise _bad("tee-evidence: sample evidence needs svn, a string of 1..64 characters")
    text = evidence.get("report_data")
    got = _b64(text, "sample report_data", REPORT_DATA_SIZE)
    if len(got) > REPORT_DATA_SIZE:
        raise _bad(f"tee-evidence: sample report_data is {len(got)} bytes, over {REPORT_DATA_SIZE}")
    if got.ljust(REPORT_DATA_SIZE, b"\0") != report_data:
        raise _unauth("RcarAttestFailed", f"sample evidence: report data {got.hex()[:128]} is not the "
                                          "runtime-data hash")
    claims = {"svn": svn, "report_data": text, "launch_digest": SAMPLE_LAUNCH_DIGEST,
              "platform_version": {"major": 1, "minor": 4}, "debug": False}
    return Verified(tee="sample", claims=claims, tcb_status=None)


def verify_evidence(tee: str, evidence: Any, report_data: bytes, config: EvidenceConfig) -> Verified:
    """Decode Trustee's per-TEE evidence JSON, verify it with our verifiers and check the report data (the
    runtime-data hash, zero-padded to 64 bytes as the TEEs' report data fields hold it).

    sgx/tdx/sim: ``{"quote": base64}`` (tdx may add ``cc_eventlog``); snp: Trustee's ``{"attestation_report": <the
    sev crate's JSON> | base64 of the 1184-byte report, "cert_chain": [...] | null}``; sample: Trustee's ``{"svn",
    "report_data"}`` (or a sim quote as ``{"quote"}``). Raises KbsError: 400 for malformed evidence, 401 when it
    does not verify."""
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
    if tee == "sample" and "quote" not in evidence:
        return _verify_sample(evidence, report_data)
    extra = tuple(config.extra_certs)
    if verifier == "snp":
        raw, chain = _snp_report(evidence)
        extra += chain + tuple(config.snp_certs)
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
    # SNP's collateral is the certificates themselves: their validity is always checked
    if (collateral is not None or verifier == "snp") and not result.collateral_valid:
        raise _unauth("RcarAttestFailed", f"{tee} evidence: collateral is not valid "
                                          f"({'; '.join(result.errors) or 'no reason given'})")
    return Verified(tee=result.tee, claims=dict(result.claims), tcb_status=result.tcb_status)
