"""What is TDX-specific in appraising a DCAP quote: the flat claims of a TD report body (TD 1.0 and TD 1.5),
the view of the body the collateral checks read, and the TDX module identity the quote's SEAM values must match
(Intel QVL's TdxModuleCheck input). The shared DCAP core is :mod:`.dcap`; TCB status rules are :mod:`.tcb`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from inclavare.attestation.documents import CollateralFindings
from inclavare.attestation.tcbinfo import TcbInfo, TdxModuleIdentity
from inclavare.formats.dcap import TdReportBody

__all__ = ["TdView", "claims", "find_module", "module_identity_for", "td_view"]


def claims(b: TdReportBody) -> dict[str, Any]:
    """The TD report body's measurements and attributes, hex-encoded, for policy (TD 1.5 adds two)."""
    c: dict[str, Any] = {
        "mrtd": b.mrtd.hex(), "rtmr0": b.rtmr0.hex(), "rtmr1": b.rtmr1.hex(), "rtmr2": b.rtmr2.hex(),
        "rtmr3": b.rtmr3.hex(), "mrconfigid": b.mrconfigid.hex(), "mrowner": b.mrowner.hex(),
        "mrownerconfig": b.mrownerconfig.hex(), "mrseam": b.mrseam.hex(), "mrsignerseam": b.mrsignerseam.hex(),
        "seam_attributes": b.seam_attributes.hex(), "td_attributes": b.td_attributes.hex(),
        "xfam": b.xfam.hex(), "tee_tcb_svn": b.tee_tcb_svn.hex(), "report_data": b.report_data.hex(),
        "debug": b.debug,
    }
    if b.tee_tcb_svn2 is not None and b.mrservicetd is not None:
        c.update({"tee_tcb_svn2": b.tee_tcb_svn2.hex(), "mrservicetd": b.mrservicetd.hex()})
    return c


class TdView(NamedTuple):
    """What the collateral checks read from a TDX quote's body (and its version)."""

    quote_version: int
    tee_tcb_svn: bytes
    mrsignerseam: bytes
    seam_attributes: bytes


def td_view(quote_version: int, body: TdReportBody) -> TdView:
    return TdView(quote_version, body.tee_tcb_svn, body.mrsignerseam, body.seam_attributes)


def module_identity_for(col: CollateralFindings, td: TdView, tcb: TcbInfo) -> TdxModuleIdentity | None:
    """QVL 4.1.2.4.11: the TDX module (identity) the quote's SEAM values must match; checks them."""
    assert tcb.tdx_module is not None
    version = td.tee_tcb_svn[1]
    module: TdxModuleIdentity = tcb.tdx_module
    if td.quote_version > 3 and version > 0:
        if tcb.tdx_module_identities is None:
            col.bad("consistent", f"TCB info: the TDX module version is {version} but there are no "
                                  "tdxModuleIdentities")
            return None
        found = find_module(tcb.tdx_module_identities, version)
        if found is None:
            col.bad("consistent", f"TCB info: no tdxModuleIdentities entry TDX_{version:02X} for the quote's TDX "
                                  "module")
            return None
        module = found
    if td.mrsignerseam != module.mrsigner:
        col.bad("consistent", f"TDX module: MRSIGNERSEAM {td.mrsignerseam.hex()} is not the TCB info's "
                              f"{module.mrsigner.hex()}")
        return None
    if any(td.seam_attributes) or td.seam_attributes != module.attributes:
        col.bad("consistent", f"TDX module: SEAM attributes {td.seam_attributes.hex()} are not zero and equal to "
                              f"the TCB info's {module.attributes.hex()}")
        return None
    return module


def find_module(identities: tuple[TdxModuleIdentity, ...], version: int) -> TdxModuleIdentity | None:
    want = f"TDX_{version:02X}"
    for m in identities:
        if m.id.upper() == want:
            return m
    return None
