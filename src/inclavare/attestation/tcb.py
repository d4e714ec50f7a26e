"""TCB status as Intel's Quote Verification Library computes it, and the collateral checks that read the quote.

:func:`judge` takes the collateral documents as :mod:`.documents` checked them (time-independent, memoised) and
one quote's values: the TCB info and QE identity are for the quote's TEE and platform (FMSPC, PCE-ID), the TDX
module (:mod:`.tdx`) and the QE match, then the status (TcbLevelCheck, TdxModuleCheck, EnclaveReportVerifier
and the convergence of their statuses) with the advisory IDs of the levels that decided it.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

from inclavare.attestation.documents import CollateralFindings, DocumentFacts, document_facts
from inclavare.attestation.pck import pck_extension
from inclavare.attestation.tcbinfo import ModuleTcbLevel, QeIdentity, TcbInfo
from inclavare.attestation.tdx import TdView, find_module, module_identity_for
from inclavare.formats.dcap import PckExtension, report_body_lenient
from inclavare.formats.sgx import ReportBody

__all__ = ["Judgement", "judge", "judge_memo"]


def _qe_identity_status(col: CollateralFindings, qe: QeIdentity, report: ReportBody, raw: bytes
                        ) -> tuple[str, ModuleTcbLevel | None] | None:
    """Intel's EnclaveReportVerifier: None on a mismatch (reported), else (status, matched level)."""
    misc = int.from_bytes(raw[16:20], "little")
    if misc & int.from_bytes(qe.miscselect_mask, "little") != int.from_bytes(qe.miscselect, "little"):
        col.bad("consistent", f"QE identity: the QE's MISCSELECT {misc:#010x} under the mask does not match "
                              f"{qe.miscselect.hex()}")
        return None
    # ATTRIBUTES under the mask, as 128-bit integers (all three are 16 bytes)
    if int.from_bytes(raw[48:64], "little") & int.from_bytes(qe.attributes_mask, "little") != \
            int.from_bytes(qe.attributes, "little"):
        col.bad("consistent", f"QE identity: the QE's ATTRIBUTES {raw[48:64].hex()} under the mask do not match "
                              f"{qe.attributes.hex()}")
        return None
    if report.mrsigner != qe.mrsigner:
        col.bad("consistent", f"QE identity: the QE's MRSIGNER {report.mrsigner.hex()} is not {qe.mrsigner.hex()}")
        return None
    if report.isvprodid != qe.isvprodid:
        col.bad("consistent", f"QE identity: the QE's ISVPRODID {report.isvprodid} is not {qe.isvprodid}")
        return None
    for level in qe.levels:
        if level.isvsvn <= report.isvsvn:
            return level.status, level
    return "TcbNotSupported", None


def _converge(status: str, other: str) -> str:
    """Intel's convergence of a TCB level status with a QE identity or TDX module status."""
    if other == "OutOfDate":
        if status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    if other == "Revoked":
        return "Revoked"
    if other == "TcbNotSupported":
        return "TcbNotSupported"
    return status

def _tcb_status(quote_version: int, td: TdView | None, ext: PckExtension, tcb: TcbInfo,
                qe: tuple[str, ModuleTcbLevel | None] | None) -> tuple[str, list[tuple[str, ...]]]:
    """Intel's checkTcbLevel: (status, advisory ID lists of the levels that decided it); ``td`` for a TDX quote."""
    is_tdx = tcb.version >= 3 and tcb.id == "TDX" and td is not None
    tee_svn = td.tee_tcb_svn if td is not None and is_tdx else None
    sgx_level = tdx_level = None
    # both component lists are 16 long (the parsers make sure), so map() pairs them all
    platform = ext.comp_svns
    first = 2 if tee_svn is not None and tee_svn[1] > 0 else 0
    tee_part = tee_svn[first:] if tee_svn is not None else b""
    for level in tcb.levels:
        if ext.pce_svn >= level.pce_svn and all(map(operator.ge, platform, level.sgx_components)):
            if tee_svn is None:
                sgx_level = level
                break
            if sgx_level is None:
                sgx_level = level
            assert level.tdx_components is not None
            if all(map(operator.ge, tee_part, level.tdx_components[first:])):
                tdx_level = level
                break
    if sgx_level is None:
        return "TcbNotSupported", []
    qe_status, qe_level = qe if qe is not None else (None, None)
    qe_adv = [qe_level.advisory_ids] if qe_level is not None else []
    if tee_svn is None:
        status = sgx_level.status
        if qe_status is not None:
            status = _converge(status, qe_status)
        return status, [sgx_level.advisory_ids, *qe_adv]
    if tdx_level is None:
        return "TcbNotSupported", []
    # TdxModuleCheck
    module_status: str = "UpToDate"
    module_adv: tuple[str, ...] = ()
    if not (quote_version > 3 and tee_svn[1] == 0):
        identity = find_module(tcb.tdx_module_identities or (), tee_svn[1])
        if identity is None:  # pragma: no cover - refused earlier by module_identity_for
            return "TcbNotSupported", []
        mlevel = next((lv for lv in identity.levels if tee_svn[0] >= lv.isvsvn), None)
        if mlevel is None:
            return "TcbNotSupported", []
        module_status, module_adv = mlevel.status, mlevel.advisory_ids
    status = _converge(tdx_level.status, module_status)
    advisories = [tdx_level.advisory_ids, module_adv]
    if status == "Revoked":
        return status, advisories
    if qe_status is not None:
        status = _converge(status, qe_status)
    return status, advisories + qe_adv


@dataclass(frozen=True)
class Judgement:
    """The collateral judged for one quote (see :func:`judge`); ``status`` None when no status was reached."""

    errors: tuple[str, ...]
    consistent: bool
    status: str | None
    advisories: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def judge_memo(facts_key: tuple[Any, ...], quote_version: int, td: TdView | None, qe_report_raw: bytes
               ) -> Judgement:
    """:func:`judge` memoised by the collateral documents' key (which holds the PCK leaf, so the PCK extension)
    and every quote value it reads: the version, the TDX body's TEE_TCB_SVN, MRSIGNERSEAM and SEAM attributes,
    and the QE report."""
    return judge(document_facts(facts_key), pck_extension(facts_key[0]), quote_version, td, qe_report_raw)


def judge(facts: DocumentFacts, ext: PckExtension, quote_version: int, td: TdView | None, qe_report_raw: bytes
          ) -> Judgement:
    """The collateral checks that read the quote: the documents are for its TEE and platform, the TDX module
    and the QE match, and the TCB status (Intel's rules) with its advisory IDs."""
    tcb, qe = facts.tcb, facts.qe
    assert isinstance(tcb, TcbInfo) and isinstance(qe, QeIdentity)
    col = CollateralFindings()
    col.consistent = all(entry[0] != "consistent" for entry in facts.entries)  # as the replay left it
    tee = "TDX" if td is not None else "SGX"
    if tcb.id != tee:
        col.bad("consistent", f"TCB info: is for {tcb.id} (version {tcb.version}), the quote is {tee}")
    if tcb.fmspc != ext.fmspc:
        col.bad("consistent", f"TCB info: FMSPC {tcb.fmspc.hex()} is not the PCK certificate's {ext.fmspc.hex()}")
    if tcb.pce_id != ext.pce_id:
        col.bad("consistent", f"TCB info: PCE-ID {tcb.pce_id.hex()} is not the PCK certificate's "
                              f"{ext.pce_id.hex()}")
    want_qe = "TD_QE" if td is not None else "QE"
    if qe.id != want_qe:
        col.bad("consistent", f"QE identity: is for {qe.id}, a {tee} quote needs {want_qe}")
    status: str | None = None
    advisories: list[str] = []
    if col.consistent and (td is None or module_identity_for(col, td, tcb) is not None):
        qe_result = _qe_identity_status(col, qe, report_body_lenient(qe_report_raw), qe_report_raw)
        if qe_result is not None:
            status, advisory_lists = _tcb_status(quote_version, td, ext, tcb, qe_result)
            for ids in advisory_lists:
                advisories.extend(a for a in ids if a not in advisories)
    return Judgement(tuple(col.errors), col.consistent, status, tuple(advisories))
