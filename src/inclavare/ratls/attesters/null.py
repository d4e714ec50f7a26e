"""``nullattester``: no evidence (rats-tls' null attester; the certificate carries none)."""

from __future__ import annotations

from inclavare.ratls.attesters.base import (
    Attester,
    Evidence,
    _report_data,
)


class NullAttester(Attester):
    """No evidence: the certificate carries none (one-way attestation, the client side of rats-tls' default)."""

    name = "nullattester"
    priority = 0
    evidence_kind = "nullattester"

    def unavailable_reason(self) -> str | None:
        return None

    def collect(self, report_data: bytes) -> Evidence:
        _report_data(self.name, report_data)
        return Evidence(self.evidence_kind, b"")
