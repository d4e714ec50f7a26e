"""The simulated quoting enclave: turns an application enclave's REPORT into a DCAP ECDSA quote v3.

NO CONFIDENTIALITY: this is the simulated platform; its keys are host files (see :mod:`inclavare.sim.platform`).
The quotes are genuine in format and verify with the same code as Intel's, against the sim root CA only.

What :meth:`SimQuotingService.get_quote` does, in the order Intel's QE does it:

1. checks the REPORT's MAC as the target enclave would (EGETKEY(REPORT_KEY) for the QE's own identity):
   a report made for another enclave, or altered, is refused;
2. header: version 3, attestation key type 2 (ECDSA P-256), TEE type 0, QE SVN, PCE SVN, Intel's QE vendor
   ID, user data = QE ID (16 bytes) || 4 zero bytes;
3. signs header || REPORTBODY with the attestation key;
4. the QE's own REPORTBODY with REPORTDATA = SHA-256(attestation public key || QE auth data) || 32 zeros,
   signed with the PCK key (on hardware the PCE signs it);
5. QE auth data: 32 bytes 00 01 .. 1F, as Intel's QE; certification data type 5: the PEM chain PCK leaf,
   PCK Platform CA, root.
"""

from __future__ import annotations

from inclavare.formats.dcap import (
    ATT_KEY_TYPE_ECDSA_P256,
    INTEL_QE_VENDOR_ID,
    QUOTE_VERSION_3,
    TEE_TYPE_SGX,
    CertDataType,
    CertificationData,
    Quote3,
    QuoteHeader,
    QuoteSignatureData,
    qe_report_data_for,
)
from inclavare.formats.sgx import REPORT_SIZE, Report, ReportBody, SgxFormatError
from inclavare.sim.platform import SimPlatform
from inclavare.sim.report import ReportKey, SimPlatformError

__all__ = ["QE_AUTH_DATA", "SimQuoteError", "SimQuotingService"]

QE_AUTH_DATA = bytes(range(32))


class SimQuoteError(SimPlatformError):
    """The simulated QE refused a quote request."""


class SimQuotingService:
    """The sim QE. Load it on the host (:meth:`open` reads every key), then call it from anywhere."""

    def __init__(self, platform: SimPlatform, report_key: ReportKey) -> None:
        self.platform = platform
        self._report_key = report_key

    def __repr__(self) -> str:
        return f"SimQuotingService(state_dir={self.platform.state_dir!r}, keys=<hidden>)"

    @classmethod
    def open(cls, state_dir: str | None = None) -> SimQuotingService:
        """Load the sim platform (PKI, attestation key) and the per-host report key from ``state_dir``
        (default ``$INCLAVARE_SIM_STATE_DIR`` or /var/lib/inclavare/sim), creating them on first use."""
        platform = SimPlatform.open(state_dir)
        return cls(platform, ReportKey.load(platform.state_dir))

    def qe_target_info(self) -> bytes:
        """The sim QE's 512-byte TARGETINFO: an enclave makes its REPORT for this target before asking a quote."""
        return self.platform.qe_identity.targetinfo()

    def _qe_report_body(self) -> ReportBody:
        qe = self.platform.qe_identity
        return ReportBody(
            cpusvn=self._report_key.cpusvn, miscselect=qe.miscselect, attributes=qe.attributes,
            mrenclave=qe.mrenclave, mrsigner=qe.mrsigner, isvprodid=qe.isvprodid, isvsvn=qe.isvsvn,
            reportdata=qe_report_data_for(self.platform.attestation_public_key(), QE_AUTH_DATA),
        )

    def get_quote(self, report: bytes) -> bytes:
        """A DCAP ECDSA quote v3 over ``report`` (432-byte REPORT made for :meth:`qe_target_info`)."""
        if not isinstance(report, (bytes, bytearray)) or len(report) != REPORT_SIZE:
            size = len(report) if isinstance(report, (bytes, bytearray)) else type(report).__name__
            raise SimQuoteError(f"sim QE: the REPORT is {size} bytes, expected {REPORT_SIZE}")
        try:
            parsed = Report.parse(bytes(report))
        except SgxFormatError as e:
            raise SimQuoteError(f"sim QE: malformed REPORT ({e})") from None
        if not self._report_key.verify_report(bytes(report), self.platform.qe_identity):
            raise SimQuoteError("sim QE: the REPORT's MAC does not verify for the QE (it was made for another "
                                "target enclave, or altered); make it with the QE's TARGETINFO")
        p = self.platform
        header = QuoteHeader(version=QUOTE_VERSION_3, att_key_type=ATT_KEY_TYPE_ECDSA_P256, tee_type=TEE_TYPE_SGX,
                             qe_svn=p.qe_svn, pce_svn=p.pce_svn, qe_vendor_id=INTEL_QE_VENDOR_ID,
                             user_data=p.qe_id + bytes(4))
        signed = header.pack() + parsed.body.pack()
        qe_body = self._qe_report_body()
        sig = QuoteSignatureData(
            isv_signature=p.sign_with_attestation_key(signed),
            attestation_key=p.attestation_public_key(),
            qe_report=qe_body,
            qe_report_signature=p.sign_with_pck(qe_body.pack()),
            qe_auth_data=QE_AUTH_DATA,
            certification=CertificationData(int(CertDataType.PCK_CERT_CHAIN), p.pck_chain_pem()),
        )
        return Quote3(header, parsed.body, sig).pack()
