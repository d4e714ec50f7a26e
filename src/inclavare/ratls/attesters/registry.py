"""The attester registry and rats-tls' selection rule, and RA-TLS certificates made with an attester's evidence."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from inclavare.ratls.attesters.base import (
    Attester,
    AttesterError,
    Evidence,
)
from inclavare.ratls.attesters.null import NullAttester
from inclavare.ratls.attesters.sev_snp import SevSnpAttester
from inclavare.ratls.attesters.sgx_ecdsa import SgxEcdsaAttester
from inclavare.ratls.attesters.sim import SimAttester
from inclavare.ratls.attesters.tdx_ecdsa import TdxEcdsaAttester

ATTESTERS: dict[str, type[Attester]] = {
    cls.name: cls for cls in (NullAttester, SimAttester, SgxEcdsaAttester, TdxEcdsaAttester, SevSnpAttester)}


def attester_names() -> list[str]:
    """Every attester name, highest priority first (ties in registration order)."""
    return [cls.name for cls in sorted(ATTESTERS.values(), key=lambda c: -c.priority)]


def select_attester(name: str | None = None, *, candidates: Iterable[Attester] | None = None) -> Attester:
    """The attester to use, as rats-tls selects it: ``name`` exactly (it must be usable here, else
    :class:`AttesterError` says why), or with no name the usable one of highest priority. ``candidates``
    replaces the default instances (one per :data:`ATTESTERS` entry, configured from the environment)."""
    pool = list(candidates) if candidates is not None else [cls() for cls in ATTESTERS.values()]
    if name is not None:
        for a in pool:
            if a.name == name:
                reason = a.unavailable_reason()
                if reason is not None:
                    raise AttesterError(f"attester {name!r}: not usable here: {reason}")
                return a
        known = sorted({a.name for a in pool})
        raise AttesterError(f"attester {name!r}: unknown; known: {', '.join(known)}")
    for a in sorted(pool, key=lambda a: -a.priority):
        if a.unavailable_reason() is None:
            return a
    raise AttesterError("no attester is usable here (not even nullattester among the candidates)")


def make_attested_certificate(attester: Attester, *, key: Any = None, custom_claims: Mapping[str, bytes] | None = None,
                              legacy: bool = False, endorsements: bool = True,
                              now: datetime.datetime | None = None) -> tuple[bytes, bytes, Evidence | None]:
    """A self-signed RA-TLS certificate with ``attester``'s evidence: ``(cert_pem, key_pem, evidence)``
    (evidence None for the null attester). With ``endorsements`` (DICE format only) the evidence's collateral
    goes into the endorsements extension; as that is only known once the evidence is collected, the
    certificate is then signed a second time with the same key and evidence."""
    from inclavare.ratls.cert import make_certificate

    if attester.evidence_kind == "nullattester":
        cert, key_pem = make_certificate("nullattester", None, key, custom_claims, legacy, now=now)
        return cert, key_pem, None
    got: list[tuple[bytes, Evidence]] = []

    def evidence_fn(report_data: bytes) -> bytes:
        ev = attester.collect(report_data)
        got.append((bytes(report_data), ev))
        return ev.data

    cert, key_pem = make_certificate(attester.evidence_kind, evidence_fn, key, custom_claims, legacy, now=now)
    first_rd, evidence = got[-1]
    if legacy or not endorsements or evidence.endorsements is None:
        return cert, key_pem, evidence

    def same_evidence(report_data: bytes) -> bytes:
        if bytes(report_data) != first_rd:
            raise AttesterError(f"{attester.name}: the report data changed between the two signings")
        return evidence.data

    cert, key_pem = make_certificate(attester.evidence_kind, same_evidence, key_pem, custom_claims, legacy,
                                     evidence.endorsements, now=now)
    return cert, key_pem, evidence
