"""``sim``: SGX DCAP quotes of the simulated platform (inclavare.sim), for development; NO confidentiality."""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError
from inclavare.ratls.attesters.base import (
    Attester,
    AttesterError,
    Evidence,
    ReportFn,
    _check_quote,
    _mismatch,
    _report_data,
)

if TYPE_CHECKING:
    from inclavare.attestation.collateral import DcapCollateral
    from inclavare.sim.platform import SimPlatform
    from inclavare.sim.quoting import SimQuotingService
    from inclavare.sim.report import IdentityLike, ReportKey


SIM_STATE_DIR_ENV = "INCLAVARE_SIM_STATE_DIR"
_SIM_ENDORSEMENTS_TTL = datetime.timedelta(hours=1)


def sim_attester_identity() -> IdentityLike:
    """The identity the sim attester reports when no enclave makes the REPORT: fixed, clearly labelled values
    naming the RATS-TLS process on the simulated platform (it is not an enclave)."""
    import hashlib

    from inclavare.formats.sgx import AttributeFlags, Attributes, Xfrm
    from inclavare.sim.report import EnclaveIdentity

    return EnclaveIdentity(
        mrenclave=hashlib.sha256(b"INCLAVARE-RATS-TLS-SIM-ATTESTER-MRENCLAVE-V1").digest(),
        mrsigner=hashlib.sha256(b"INCLAVARE-RATS-TLS-SIM-ATTESTER-MRSIGNER-V1").digest(),
        attributes=Attributes(int(AttributeFlags.INIT | AttributeFlags.MODE64BIT), int(Xfrm.X87 | Xfrm.SSE)))


class SimAttester(Attester):
    """SGX DCAP quotes v3 from the simulated platform. NO CONFIDENTIALITY: the platform's keys are host files.

    The REPORT is made for the sim QE's TARGETINFO, by ``report_fn(targetinfo, report_data)`` when given (a sim
    enclave runtime's local report), else by the platform's EREPORT for ``identity`` (default
    :func:`sim_attester_identity`). The state directory is ``state_dir``, else ``$INCLAVARE_SIM_STATE_DIR``,
    else /var/lib/inclavare/sim; the attester is usable when the directory was named (argument or
    environment) or the default one already holds a platform, so a host never drifts into simulated
    evidence by accident. Endorsements: the platform's collateral (re-issued hourly)."""

    name = "sim"
    priority = 10
    evidence_kind = "sim"

    def __init__(self, state_dir: str | None = None, *, identity: IdentityLike | None = None,
                 report_fn: ReportFn | None = None, endorsements: bool = True) -> None:
        self.state_dir = state_dir
        self.identity = identity
        self.report_fn = report_fn
        self.with_endorsements = endorsements
        self._qs: SimQuotingService | None = None
        self._rkey: ReportKey | None = None
        self._endorsements: tuple[datetime.datetime, DcapCollateral] | None = None

    def _state_dir(self) -> tuple[str, bool]:
        """(directory, named explicitly)."""
        if self.state_dir:
            return self.state_dir, True
        env = os.environ.get(SIM_STATE_DIR_ENV)
        if env:
            return env, True
        from inclavare.sim.report import DEFAULT_STATE_DIR

        return DEFAULT_STATE_DIR, False

    def unavailable_reason(self) -> str | None:
        d, named = self._state_dir()
        if named or os.path.exists(os.path.join(d, "dcap", "platform.json")):
            return None
        return (f"no simulated platform: set ${SIM_STATE_DIR_ENV} to its state directory (created on first use) "
                f"or provision {d}")

    def _open(self) -> tuple[SimQuotingService, ReportKey]:
        if self._qs is None or self._rkey is None:
            from inclavare.sim.quoting import SimQuotingService
            from inclavare.sim.report import ReportKey

            d, _ = self._state_dir()
            try:
                self._qs = SimQuotingService.open(d)
                self._rkey = ReportKey.load(self._qs.platform.state_dir)
            except InclavareError as e:
                raise AttesterError(f"sim: {e}") from None
        return self._qs, self._rkey

    @property
    def platform(self) -> SimPlatform:
        """The simulated platform (opened, and created on first use)."""
        return self._open()[0].platform

    def _collateral(self) -> DcapCollateral:
        now = datetime.datetime.now(datetime.UTC)
        if self._endorsements is None or now - self._endorsements[0] > _SIM_ENDORSEMENTS_TTL:
            from inclavare.attestation.collateral import from_bundle

            self._endorsements = (now, from_bundle(self.platform.collateral_bundle(now)))
        return self._endorsements[1]

    def collect(self, report_data: bytes) -> Evidence:
        rd = _report_data(self.name, report_data)
        from inclavare.formats.sgx import Report, SgxFormatError

        qs, rkey = self._open()
        ti = qs.qe_target_info()
        try:
            if self.report_fn is not None:
                report = bytes(self.report_fn(ti, rd))
            else:
                report = rkey.make_report(self.identity or sim_attester_identity(), rd, ti)
            got = Report.parse(report).body.reportdata
        except (InclavareError, SgxFormatError) as e:
            raise AttesterError(f"sim: the enclave REPORT: {e}") from None
        if got != rd:
            raise _mismatch(self.name, "the enclave REPORT", got, rd)
        try:
            quote = qs.get_quote(report)
        except InclavareError as e:
            raise AttesterError(f"sim: {e}") from None
        _check_quote(self.name, "the sim QE", quote, rd, tdx=False)
        p = qs.platform
        return Evidence(self.evidence_kind, quote, self._collateral() if self.with_endorsements else None,
                        {"source": "sim QE", "report": report, "state_dir": p.state_dir,
                         "platform_root_fingerprint": p.root_ca_fingerprint()})
