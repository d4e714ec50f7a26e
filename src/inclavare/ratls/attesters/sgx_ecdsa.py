"""``sgx_ecdsa``: SGX DCAP ECDSA quotes through AESM for the enclave that makes the REPORT."""

from __future__ import annotations

import os
from typing import Any

from inclavare.errors import InclavareError
from inclavare.ratls.attesters.base import (
    Attester,
    AttesterError,
    CollateralFn,
    Evidence,
    ReportFn,
    _check_quote,
    _mismatch,
    _report_data,
)


class SgxEcdsaAttester(Attester):
    """SGX DCAP ECDSA quotes through AESM, for the enclave that makes the REPORT.

    In our model the RATS-TLS code runs outside the enclave, so the REPORT must come from the running
    enclave: ``report_fn(targetinfo, report_data) -> REPORT`` (432 bytes, made by EREPORT for the QE's
    TARGETINFO), e.g. the enclave runtime's ``pal_get_local_report`` through the init-runelet's agent. Without
    one the attester is not usable. ``quoting`` defaults to :class:`~inclavare.sgx.aesm.AesmQuotingService` on
    ``socket_path`` (default ``$INCLAVARE_AESM_SOCKET`` or /var/run/aesmd/aesm.socket); ``collateral_fn(quote)``
    may supply endorsements (e.g. from a PCCS)."""

    name = "sgx_ecdsa"
    priority = 52
    evidence_kind = "sgx_ecdsa"

    def __init__(self, report_fn: ReportFn | None = None, *, socket_path: str | None = None,
                 quoting: Any = None, collateral_fn: CollateralFn | None = None) -> None:
        self.report_fn = report_fn
        self.socket_path = socket_path
        self._quoting = quoting
        self.collateral_fn = collateral_fn

    def _socket(self) -> str:
        from inclavare.sgx.aesm import default_socket_path

        return self.socket_path or default_socket_path()

    def unavailable_reason(self) -> str | None:
        if self.report_fn is None:
            return "no enclave to make the REPORT (give report_fn, the enclave runtime's local report)"
        if self._quoting is None and not os.path.exists(self._socket()):
            return f"no AESM socket at {self._socket()} (is aesmd running?)"
        return None

    def _qs(self) -> Any:
        if self._quoting is None:
            from inclavare.sgx.aesm import AesmQuotingService

            self._quoting = AesmQuotingService(self._socket())
        return self._quoting

    def collect(self, report_data: bytes) -> Evidence:
        rd = _report_data(self.name, report_data)
        if self.report_fn is None:
            raise AttesterError(f"{self.name}: no enclave to make the REPORT (give report_fn)")
        from inclavare.formats.sgx import Report, SgxFormatError

        qs = self._qs()
        try:
            ti = qs.qe_target_info()
            report = bytes(self.report_fn(ti, rd))
            got = Report.parse(report).body.reportdata
        except SgxFormatError as e:
            raise AttesterError(f"{self.name}: the enclave REPORT: {e}") from None
        except InclavareError as e:
            raise AttesterError(f"{self.name}: {e}") from None
        if got != rd:
            raise _mismatch(self.name, "the enclave REPORT", got, rd)
        try:
            quote = bytes(qs.get_quote(report))
        except InclavareError as e:
            raise AttesterError(f"{self.name}: {e}") from None
        _check_quote(self.name, "AESM", quote, rd, tdx=False)
        endorsements = self.collateral_fn(quote) if self.collateral_fn is not None else None
        return Evidence(self.evidence_kind, quote, endorsements, {"source": "aesm", "report": report})
