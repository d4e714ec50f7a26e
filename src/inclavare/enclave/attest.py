"""``rune attest``: a local REPORT from a container's enclave, and with ``--isRA`` a quote over it.

The REPORT comes from the init-runelet's ``pal_get_local_report`` through the agent socket. A quote needs
the platform's quoting enclave: its TARGETINFO goes into the report request, and the quote is made on the
host, where the quoting service lives (AESM on SGX hardware, the simulated QE for type ``sim``).
"""

from __future__ import annotations

from typing import Any

from inclavare.enclave import agent
from inclavare.errors import InclavareError

QUOTE_TYPES = ("ecdsa",)


class AttestError(InclavareError):
    pass


def quoting_service(enclave_type: str) -> Any:
    """The platform quoting service for an enclave type: an object with ``qe_target_info() -> bytes``
    and ``get_quote(report: bytes) -> bytes``."""
    if enclave_type == "sim":
        from inclavare.sim.quoting import SimQuotingService

        return SimQuotingService.open()
    from inclavare.sgx.aesm import AesmQuotingService

    return AesmQuotingService()


def attest(state_dir: str, enclave: dict[str, str], is_ra: bool, quote_type: str) -> dict[str, Any]:
    if quote_type and quote_type.lower() not in QUOTE_TYPES:
        raise AttestError(f"--quote-type: {quote_type!r} is not supported (supported: {', '.join(QUOTE_TYPES)}; "
                          "EPID attestation has been retired by Intel)")
    # as upstream, the REPORT targets the platform's quoting enclave, so that it can be quoted
    qs = None
    try:
        qs = quoting_service(enclave["type"])
    except ImportError as e:
        if is_ra:
            raise AttestError(f"--isRA: no quoting service for enclave type {enclave['type']} ({e.name})") from None
    except InclavareError:
        if is_ra:
            raise
    targetinfo = qs.qe_target_info() if qs is not None else None
    report = agent.attest(state_dir, is_ra, quote_type or "ecdsa", targetinfo)
    if len(report) != 432:
        raise AttestError(f"attest: the enclave runtime returned a {len(report)}-byte report, not 432")
    out: dict[str, Any] = {"report": report}
    if is_ra and qs is not None:
        out["quote"] = qs.get_quote(report)
    return out


def describe(res: dict[str, Any]) -> dict[str, Any]:
    """What `rune attest` prints: the report's identity fields and the raw evidence in hex. A report that
    does not parse as an SGX REPORT (a PAL's own format) is shown raw, with the reason."""
    from inclavare.formats.sgx import Report, SgxFormatError

    out: dict[str, Any] = {}
    try:
        body = Report.parse(res["report"]).body
    except SgxFormatError as e:
        out["parse_error"] = str(e)
    else:
        out.update({
            "mrenclave": body.mrenclave.hex(),
            "mrsigner": body.mrsigner.hex(),
            "isvprodid": body.isvprodid,
            "isvsvn": body.isvsvn,
            "attributes": {"flags": f"{body.attributes.flags:#x}", "xfrm": f"{body.attributes.xfrm:#x}"},
            "debug": bool(body.attributes.flags & 0x2),
            "report_data": body.reportdata.hex(),
        })
    out["report"] = res["report"].hex()
    if "quote" in res:
        out["quote"] = res["quote"].hex()
    return out
