"""Intel DCAP quote verification: SGX (quote v3, or v4/v5 with an SGX body) and TDX (quote v4/v5, TD 1.0 and
TD 1.5 bodies), with optional collateral and Intel's TCB status rules.

What a verification checks, in this order (a failed check is reported in ``Result.errors``; checks that do
not depend on it still run, so one report lists every problem):

1. the quote parses strictly (:class:`inclavare.formats.dcap.DcapQuote`; a malformed quote raises
   :class:`EvidenceFormatError`), the QE vendor is Intel's and the certification data is a PCK chain (type 5);
2. the PCK chain: leaf ("SGX PCK Certificate") <- PCK Platform or Processor CA <- root, each signature, CA
   constraints, validity at ``as_of``; the root is trusted only if the SHA-256 of its DER is the fingerprint of
   Intel's SGX Root CA (pinned here as a fact, not read from a file: the current certificate, or its first
   issue with the same key that older PCK chains carry), or, with ``Options.trust_sim``, one of
   ``Options.sim_root_fingerprints`` (the simulated platform's root; the result's ``tee`` is then "sim");
3. the PCK leaf's SGX extension (FMSPC, PCE-ID, TCB, ...) parses;
4. the attestation key's ECDSA-P256 signature over the signed region; the QE report's REPORTDATA is
   SHA-256(attestation key || QE auth data) || 32 zero bytes; the QE report's signature by the PCK leaf key;
5. ``Options.report_data``, when given.

``verified`` is true when all of these pass (and the PCK chain is not revoked, see below).

With ``Options.collateral`` (a :class:`DcapCollateral`), at ``as_of``:

* TCB info (v2 SGX, v3 SGX/TDX with ``tdxModule`` and ``tdxModuleIdentities``) and QE identity v2 (QE or
  TD_QE): ECDSA signature over the exact raw JSON bytes by the TCB signing certificate, which must be issued
  by the same trusted root (taken from the issuer chain, or from ``Options.extra_certs`` when the chain is
  empty, as for PCS-style files);
* PCK CRL (issued and signed by the PCK CA of the quote's own, verified chain, so ``pck_crl_issuer_chain`` is
  not needed) and root CA CRL (signed by the root): the PCK leaf's serial on the PCK CRL, or the PCK CA's
  serial on the root CA CRL, means revoked: ``tcb_status`` "Revoked", an error, and ``verified`` false; the
  TCB signing certificate's serial on the root CA CRL makes the collateral invalid. A missing CRL makes
  ``collateral_valid`` false (revocation could not be checked);
* validity windows: ``issueDate``..``nextUpdate``, CRL ``thisUpdate``..``nextUpdate``, certificate validity.
  Outside a window ``collateral_valid`` is false and an error says "expired" (or "not yet valid"); the TCB
  status is still computed and reported;
* FMSPC and PCE-ID of the TCB info equal the PCK certificate's; TCB info and QE identity are for the quote's
  TEE; the QE report matches the QE identity (MISCSELECT, ATTRIBUTES under their masks, MRSIGNER, ISVPRODID);
  for TDX, MRSIGNERSEAM and SEAM attributes match the TDX module (identity). A mismatch, a bad signature or
  malformed collateral makes ``collateral_valid`` false and leaves ``tcb_status`` None (nothing in it can be
  trusted to compute one);
* TCB status as Intel's Quote Verification Library computes it (TcbLevelCheck, TdxModuleCheck,
  EnclaveReportVerifier): the first TCB level, in listed order, whose 16 SGX components and PCESVN are all
  <= the PCK certificate's and, for TDX, whose 16 TDX components are <= TEE_TCB_SVN (indices 0 and 1 skipped
  when TEE_TCB_SVN[1] > 0: those are the TDX module's, judged by ``tdxModuleIdentities["TDX_%02X" %
  TEE_TCB_SVN[1]]``, first level with isvsvn <= TEE_TCB_SVN[0]); the module status and the QE identity status
  (first level with isvsvn <= the QE's ISVSVN) then converge: OutOfDate turns UpToDate / SWHardeningNeeded into
  OutOfDate and the ConfigurationNeeded variants into OutOfDateConfigurationNeeded, Revoked wins. No matching
  level gives "TcbNotSupported". Advisory IDs are those of the matched platform level, then the TDX module
  level, then the QE identity level, without repeats. (TD 1.5 "relaunch advised" is not one of the statuses
  this project reports, so it is not derived.)

``claims`` are filled from the parsed quote even when a check fails (for diagnosis); they mean nothing
unless ``verified`` is true. Nothing but :class:`AttestationError` subclasses leaves :func:`verify_quote`.

A verifier process remembers what it found about the bytes it has seen (certificates, CRLs, PCK chains,
collateral documents, and what the collateral says about a platform's QE and TCB), each keyed by all the bytes
the finding depends on, and redoes every time-dependent check (validity windows) at each verification; the
quote's own signature is verified every time. A service verifying quotes from platforms it has seen before
thus makes one ECDSA verification per quote. The results are the same as without any of it.

This module is the core both TEEs share: options, the quote's own checks and the order of everything. The PCK
chain is :mod:`.pck`, the collateral documents :mod:`.documents`, the TCB status :mod:`.tcb`, and what differs
between SGX and TDX (claims, the TDX module) :mod:`.sgx` and :mod:`.tdx`.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from typing import Any

from inclavare.attestation import sgx, tdx
from inclavare.attestation.api import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Options,
    Result,
)
from inclavare.attestation.certs import cert_signed, check_validity, load_cert, raw_p256_key, validity, verify_p256
from inclavare.attestation.collateral.model import DcapCollateral
from inclavare.attestation.documents import (
    Anchors,
    CollateralFindings,
    check_documents,
    document_facts,
    documents_key,
    replay,
)
from inclavare.attestation.pck import chain_facts, trusted_root_items
from inclavare.attestation.tcb import judge, judge_memo
from inclavare.formats.dcap import INTEL_QE_VENDOR_ID, DcapQuote, PckExtension, TdReportBody, qe_report_data_for
from inclavare.formats.envelopes import EnvelopeError, unwrap_tdx_quote_buf
from inclavare.formats.sgx import SgxFormatError

__all__ = ["SgxVerifier", "TdxVerifier", "unwrap_quote", "verify_quote"]


@dataclass


class _Ctx:
    """What the quote checks established, for the collateral checks."""

    quote: DcapQuote
    as_of: datetime.datetime
    options: Options
    leaf_der: bytes | None = None
    ca_der: bytes | None = None
    root_der: bytes | None = None
    ext: PckExtension | None = None  # set only when the whole PCK chain verified
    claims_ext: PckExtension | None = None  # the leaf's extension, for the claims, even if the chain failed
    revoked: bool = False

def _check_options(options: Options) -> datetime.datetime:
    if not isinstance(options, Options):
        raise AttestationError(f"verify_quote: options must be an Options, got {type(options).__name__}")
    as_of = options.as_of if options.as_of is not None else datetime.datetime.now(datetime.UTC)
    if not isinstance(as_of, datetime.datetime) or as_of.tzinfo is None:
        raise AttestationError("Options.as_of: must be a timezone-aware datetime")
    rd = options.report_data
    if rd is not None and (not isinstance(rd, (bytes, bytearray)) or len(rd) > 64):
        raise AttestationError("Options.report_data: must be at most 64 bytes")
    extra = options.extra_certs
    if not isinstance(extra, (tuple, list)) or (extra and not all(isinstance(c, (bytes, bytearray)) for c in extra)):
        raise AttestationError("Options.extra_certs: must be a tuple of DER certificates (bytes)")
    fps = options.sim_root_fingerprints
    if not isinstance(fps, (tuple, list)) or (fps and not all(isinstance(fp, str) for fp in fps)):
        raise AttestationError("Options.sim_root_fingerprints: must be a tuple of hex SHA-256 strings")
    if options.collateral is not None and not isinstance(options.collateral, DcapCollateral):
        raise CollateralError(f"Options.collateral: a DCAP quote needs DcapCollateral, got "
                              f"{type(options.collateral).__name__}")
    return as_of.astimezone(datetime.UTC)

def _claims(q: DcapQuote) -> dict[str, Any]:
    c: dict[str, Any] = {"quote_version": q.version, "qe_svn": q.header.qe_svn, "pce_svn": q.header.pce_svn}
    b = q.body
    c.update(tdx.claims(b) if isinstance(b, TdReportBody) else sgx.claims(b))
    return c


@functools.lru_cache(maxsize=256)


def _qe_report_data(attestation_key: bytes, qe_auth_data: bytes) -> bytes:
    """:func:`inclavare.formats.dcap.qe_report_data_for`, memoised by its inputs (a platform's quotes share them)."""
    return qe_report_data_for(attestation_key, qe_auth_data)


def _report_data(q: DcapQuote) -> bytes:
    return q.body.report_data if isinstance(q.body, TdReportBody) else q.body.reportdata

def _check_pck_chain(ctx: _Ctx, roots: tuple[tuple[str, bool], ...], errors: list[str]) -> bool | None:
    """Check the PCK chain against the trusted roots (fingerprint -> is the sim root); fills ctx. Returns whether
    the root is the sim root, or None if the chain failed."""
    options = ctx.options
    cert = ctx.quote.certification
    extra = tuple(bytes(d) for d in options.extra_certs) if options.extra_certs else ()
    facts = chain_facts((cert.cert_type, cert.data, roots, bool(options.trust_sim),
                          bool(options.sim_root_fingerprints), extra))
    if facts.before:
        errors.extend(facts.before)
    if not facts.read:
        return None
    ok = facts.ok
    if not facts.valid_from <= ctx.as_of <= facts.valid_until:  # some certificate is outside its validity
        for der, what in facts.validity:
            not_before, not_after = validity(der)
            if ctx.as_of < not_before or ctx.as_of > not_after:
                errors.append(f"PCK chain: {check_validity(load_cert(der), ctx.as_of, what)}")
                ok = False
    if facts.after:
        errors.extend(facts.after)
    ext = facts.ext
    if ext is not None:
        ctx.claims_ext = ext
    if not ok or ext is None:
        return None
    ctx.leaf_der, ctx.ca_der, ctx.root_der, ctx.ext = facts.leaf_der, facts.ca_der, facts.root_der, ext
    return facts.is_sim

def _verify(data: bytes, options: Options, expect: str | None, override: tuple[str, ...] | None) -> Result:
    if options is None:
        options = Options()
    as_of = _check_options(options)
    data = unwrap_quote(data)
    try:
        q = DcapQuote.parse(data)
    except SgxFormatError as e:
        raise EvidenceFormatError(str(e)) from None
    tee = "tdx" if q.is_tdx else "sgx"
    if expect is not None and tee != expect:
        raise EvidenceFormatError(f"DCAP quote v{q.version}: is a {tee.upper()} quote (TEE type "
                                  f"{q.tee_type:#x}), not {expect.upper()}")
    result = Result(tee=tee, claims=_claims(q))
    errors = result.errors
    if any(q.trailing):
        end = len(data) - len(q.trailing)
        first = end + next(i for i, b in enumerate(q.trailing) if b)
        errors.append(f"quote: non-zero byte at offset {first} in the {len(q.trailing)} bytes after the signature "
                      "data (only zero padding may follow a quote)")
    if q.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        errors.append(f"header: QE vendor ID {q.header.qe_vendor_id.hex()} is not Intel's "
                      f"({INTEL_QE_VENDOR_ID.hex()})")

    ctx = _Ctx(q, as_of, options)
    sim = tuple(options.sim_root_fingerprints) if options.trust_sim else ()
    roots = trusted_root_items(tuple(override) if override is not None else None, sim)
    is_sim = _check_pck_chain(ctx, roots, errors)
    if is_sim:
        result.tee = "sim"
    if ctx.claims_ext is not None:
        result.claims["fmspc"] = ctx.claims_ext.fmspc.hex()
        result.claims["pceid"] = ctx.claims_ext.pce_id.hex()

    att_key = raw_p256_key(q.attestation_key)
    signed = q.signed_bytes()
    if att_key is None:
        errors.append("signature data: the attestation key is not a P-256 point")
    elif not verify_p256(att_key, q.isv_signature, signed, p256_key=True):
        errors.append(f"quote signature: does not verify with the attestation key over bytes 0..{len(signed) - 1} "
                      "(header and body)")
    if q.qe_report.reportdata != _qe_report_data(q.attestation_key, q.qe_auth_data):
        errors.append("QE report: REPORTDATA is not SHA-256(attestation key || QE auth data) || 32 zero bytes; "
                      "the attestation key is not bound to the QE")
    if ctx.leaf_der is not None and not cert_signed(ctx.leaf_der, q.qe_report_signature, q.qe_report_raw):
        errors.append("QE report signature: does not verify with the PCK certificate's key")
    if options.report_data is not None:
        want = bytes(options.report_data).ljust(64, b"\x00")
        if _report_data(q) != want:
            errors.append(f"report data: the quote's {_report_data(q).hex()} is not the expected {want.hex()}")

    quote_ok = not errors
    if options.collateral is not None:
        if ctx.ext is None:
            errors.append("collateral: not evaluated, because the PCK chain did not verify")
        else:
            col = _evaluate_collateral(ctx, options.collateral)
            errors.extend(col.errors)
            result.collateral_valid = col.genuine and col.consistent and col.timely and col.complete
            result.tcb_status = col.status
            result.advisory_ids = col.advisories
    result.verified = quote_ok and not ctx.revoked
    return result

def _evaluate_collateral(ctx: _Ctx, c: DcapCollateral) -> CollateralFindings:
    assert ctx.leaf_der is not None and ctx.ca_der is not None and ctx.root_der is not None and ctx.ext is not None
    extra = tuple(bytes(d) for d in ctx.options.extra_certs) if ctx.options.extra_certs else ()
    key = documents_key(c)
    facts_key: tuple[Any, ...] | None = None
    if key is None:  # some field is not bytes as it should be: check the originals (and say so)
        facts = check_documents(Anchors(ctx.leaf_der, ctx.ca_der, ctx.root_der, extra), c.tcb_info_raw,
                                 c.tcb_info_signature, c.tcb_info_issuer_chain, c.qe_identity_raw,
                                 c.qe_identity_signature, c.qe_identity_issuer_chain, c.pck_crl, c.root_ca_crl)
    else:
        facts_key = (ctx.leaf_der, ctx.ca_der, ctx.root_der, extra, *key)
        facts = document_facts(facts_key)
    col = CollateralFindings()
    quiet = facts.quiet
    if quiet is None or not quiet[0] <= ctx.as_of <= quiet[1]:
        replay(facts.entries, col, ctx.as_of)
    if facts.revoked:
        ctx.revoked = True
    if ctx.revoked:
        col.status = "Revoked"
    if not col.genuine or facts.tcb is None or facts.qe is None:
        return col
    q = ctx.quote
    body = q.body
    td = tdx.td_view(q.version, body) if isinstance(body, TdReportBody) else None
    judged = judge(facts, ctx.ext, q.version, td, q.qe_report_raw) if facts_key is None else \
        judge_memo(facts_key, q.version, td, q.qe_report_raw)
    col.errors.extend(judged.errors)
    if not judged.consistent:
        col.consistent = False
    col.status = "Revoked" if ctx.revoked else judged.status
    col.advisories = list(judged.advisories)
    return col

# --------------------------------------------------------------------------------------------------
# Public entry points


def unwrap_quote(data: bytes) -> bytes:
    """The quote itself when ``data`` is a TDX GetQuote buffer (``struct tdx_quote_buf``: header, quote, zero
    padding); ``data`` unchanged otherwise. An inconsistent buffer raises EvidenceFormatError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return data  # the parser names the wrong type
    try:
        inner = unwrap_tdx_quote_buf(bytes(data))
    except EnvelopeError as e:
        raise EvidenceFormatError(str(e)) from None
    return data if inner is None else inner


def verify_quote(data: bytes, options: Options | None = None, *,
                 _root_fingerprints: tuple[str, ...] | None = None) -> Result:
    """Verify an Intel DCAP quote of any supported version and TEE type (see the module docstring).

    ``_root_fingerprints`` replaces Intel's pinned root; it exists for tests that build their own PKI (to
    exercise revocation with CRLs they can sign) and must not be used otherwise.
    """
    return _verify(data, options if options is not None else Options(), None, _root_fingerprints)


class _DcapVerifier:
    """A DCAP quote verifier for one TEE (``tee``); refuses quotes of the other."""

    tee = ""

    def __init__(self, *, _root_fingerprints: tuple[str, ...] | None = None) -> None:
        self._roots = _root_fingerprints

    def verify(self, evidence: bytes, options: Options) -> Result:
        return _verify(evidence, options, self.tee, self._roots)


class SgxVerifier(_DcapVerifier):
    """Verifier for SGX DCAP quotes (v3, or v4/v5 with an SGX body); refuses TDX quotes."""

    tee = "sgx"


class TdxVerifier(_DcapVerifier):
    """Verifier for TDX DCAP quotes (v4, v5 with TD 1.0 or TD 1.5 bodies); refuses SGX quotes."""

    tee = "tdx"
