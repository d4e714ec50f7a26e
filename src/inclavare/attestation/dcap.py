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
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import operator
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from inclavare.attestation.api import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Options,
    Result,
)
from inclavare.attestation.collateral import DcapCollateral
from inclavare.formats.dcap import (
    INTEL_QE_VENDOR_ID,
    SGX_EXTENSION_OID,
    CertDataType,
    DcapQuote,
    PckExtension,
    TdReportBody,
    qe_report_data_for,
    report_body_lenient,
    split_pem_chain,
)
from inclavare.formats.envelopes import EnvelopeError, unwrap_tdx_quote_buf
from inclavare.formats.sgx import ReportBody, SgxFormatError, _unchecked

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "INTEL_SGX_ROOT_CA_FINGERPRINTS",
    "INTEL_SGX_ROOT_CA_SHA256",
    "ModuleTcbLevel",
    "QeIdentity",
    "SgxVerifier",
    "TcbInfo",
    "TcbLevel",
    "TdxModuleIdentity",
    "TdxVerifier",
    "parse_qe_identity",
    "parse_tcb_info",
    "verify_quote",
]

# SHA-256 of the DER of Intel's SGX Root CA certificate (ECDSA P-256, valid 2018-05-21..2049-12-31).
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
# The first issue of the same root (same key, same serial, valid 2018-05-21..2033-05-21), which PCK chains in
# quotes from platforms provisioned before the re-issue still carry.
INTEL_SGX_ROOT_CA_2033_SHA256 = "fc64f8076d79a4fee9d1d473d74c89eb8d8fd55c5abafeabeba7366d20429404"
INTEL_SGX_ROOT_CA_FINGERPRINTS = (INTEL_SGX_ROOT_CA_SHA256, INTEL_SGX_ROOT_CA_2033_SHA256)

_PCK_LEAF_CN = "SGX PCK Certificate"
_PCK_CA_CNS = ("SGX PCK Platform CA", "SGX PCK Processor CA")
_ROOT_CN = "SGX Root CA"
_TCB_SIGNING_CN = "SGX TCB Signing"

TCB_LEVEL_STATUSES = frozenset({"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                                "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded",
                                "Revoked"})
_IDENTITY_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})
_MAX_CHAIN = 3


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------------
# Collateral documents (TCB info, QE identity): parsed from the exact signed bytes


@dataclass(frozen=True)
class TcbLevel:
    """One ``tcbLevels`` entry of a TCB info."""

    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...] | None
    status: str
    date: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class ModuleTcbLevel:
    """One ``tcbLevels`` entry of a QE identity or a TDX module identity (judged by ISVSVN)."""

    isvsvn: int
    status: str
    date: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    """``tdxModule`` (id "", no levels) or one ``tdxModuleIdentities`` entry of a TDX TCB info."""

    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[ModuleTcbLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str  # "SGX" or "TDX" (v2 has no id: "SGX")
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    evaluation_data_number: int
    levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] | None


@dataclass(frozen=True)
class QeIdentity:
    id: str  # "QE", "TD_QE" (or "QVE")
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    evaluation_data_number: int
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[ModuleTcbLevel, ...]


class _Obj:
    """Typed access to one JSON object; every error names the path."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise CollateralError(f"{where}: expected a JSON object, got {_json_type(value)}")
        self.d: dict[str, Any] = value
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.d:
            raise CollateralError(f"{self.where}.{key}: missing")
        return self.d[key]

    def has(self, key: str) -> bool:
        return key in self.d

    def get_int(self, key: str, bits: int = 32) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >> bits:
            raise CollateralError(f"{self.where}.{key}: expected an integer 0..{(1 << bits) - 1}, got {v!r:.40}")
        return v

    def get_str(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            raise CollateralError(f"{self.where}.{key}: expected a string, got {_json_type(v)}")
        return v

    def get_hex(self, key: str, size: int) -> bytes:
        v = self.get_str(key)
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raise CollateralError(f"{self.where}.{key}: {v!r:.60} is not hex") from None
        if len(raw) != size or len(v) != 2 * size:
            raise CollateralError(f"{self.where}.{key}: is {len(v)} hex digits, expected {2 * size}")
        return raw

    def get_date(self, key: str) -> datetime.datetime:
        v = self.get_str(key)
        try:
            t = datetime.datetime.fromisoformat(v)
        except ValueError:
            raise CollateralError(f"{self.where}.{key}: {v!r:.40} is not an ISO 8601 date") from None
        if t.tzinfo is None:
            raise CollateralError(f"{self.where}.{key}: {v!r:.40} has no time zone")
        return t.astimezone(datetime.UTC)

    def get_list(self, key: str) -> list[Any]:
        v = self._get(key)
        if not isinstance(v, list):
            raise CollateralError(f"{self.where}.{key}: expected a JSON array, got {_json_type(v)}")
        return v

    def get_obj(self, key: str) -> _Obj:
        return _Obj(self._get(key), f"{self.where}.{key}")

    def get_status(self, key: str, allowed: frozenset[str]) -> str:
        v = self.get_str(key)
        if v not in allowed:
            raise CollateralError(f"{self.where}.{key}: {v!r:.40} is not a recognised TCB status")
        return v

    def advisories(self) -> tuple[str, ...]:
        if "advisoryIDs" not in self.d:
            return ()
        out: list[str] = []
        for i, a in enumerate(self.get_list("advisoryIDs")):
            if not isinstance(a, str):
                raise CollateralError(f"{self.where}.advisoryIDs[{i}]: expected a string")
            out.append(a)
        return tuple(out)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # name the first key seen twice
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return out


# What json.loads(raw, object_pairs_hook=_no_duplicates) builds for every call; it keeps no state between
# documents (the scanner's key memo is emptied after each one)
_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def _load_json(raw: bytes, what: str) -> _Obj:
    if not isinstance(raw, (bytes, bytearray)):
        raise CollateralError(f"{what}: expected the raw JSON bytes, got {type(raw).__name__}")
    try:  # json.loads(raw, object_pairs_hook=_no_duplicates), step by step, with the decoder made once
        raw = bytes(raw)
        value = _JSON_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as e:
        raise CollateralError(f"{what}: not valid JSON ({str(e).splitlines()[0] if str(e) else 'malformed'})") \
            from None
    return _Obj(value, what)


# Fast paths for the documents' repeated parts: each reads a well-formed item at once and returns None at the
# first thing that is not (wrong type, range, missing key); the item is then read again by the _Obj path, which
# gives the same value for a well-formed item and otherwise names what is wrong, so errors are unchanged.
_MISSING = object()


def _advisories_fast(d: dict[str, Any]) -> tuple[str, ...] | None:
    ids = d.get("advisoryIDs", _MISSING)
    if ids is _MISSING:
        return ()
    if type(ids) is list and set(map(type, ids)) <= {str}:
        return tuple(ids)
    return None


def _svns_fast(items: Any) -> tuple[int, ...] | None:
    """16 ``{"svn": 0..255}`` objects (:func:`_components`) as their SVNs."""
    if type(items) is not list or len(items) != 16:
        return None
    try:
        svns = [c["svn"] for c in items]  # a str, list or number item raises TypeError, a dict without it KeyError
    except (TypeError, KeyError):
        return None
    if set(map(type, svns)) == {int} and min(svns) >= 0 and max(svns) <= 0xFF:
        return tuple(svns)
    return None


def _module_level_fast(item: Any) -> ModuleTcbLevel | None:
    if type(item) is not dict or type(tcb := item.get("tcb")) is not dict:
        return None
    isvsvn, status, date = tcb.get("isvsvn"), item.get("tcbStatus"), item.get("tcbDate")
    if type(isvsvn) is not int or not 0 <= isvsvn <= 0xFFFF or type(status) is not str \
            or status not in _IDENTITY_STATUSES or type(date) is not str:
        return None
    advisories = _advisories_fast(item)
    if advisories is None:
        return None
    return _unchecked(ModuleTcbLevel, {"isvsvn": isvsvn, "status": status, "date": date,
                                       "advisory_ids": advisories})


def _tcb_level_fast(item: Any, version: int, tdx: bool) -> TcbLevel | None:
    if type(item) is not dict or type(tcb := item.get("tcb")) is not dict:
        return None
    sgx: tuple[int, ...] | None
    if version == 2:
        values: list[Any] = [tcb.get(name) for name in _V2_COMPONENTS]
        sgx = tuple(values) if set(map(type, values)) == {int} and min(values) >= 0 and max(values) <= 0xFF \
            else None
    else:
        sgx = _svns_fast(tcb.get("sgxtcbcomponents"))
    tdx_svns = _svns_fast(tcb.get("tdxtcbcomponents")) if tdx and version != 2 else None
    if sgx is None or (tdx and version != 2 and tdx_svns is None):
        return None
    pce_svn, status, date = tcb.get("pcesvn"), item.get("tcbStatus"), item.get("tcbDate")
    if type(pce_svn) is not int or not 0 <= pce_svn <= 0xFFFF or type(status) is not str \
            or status not in TCB_LEVEL_STATUSES or type(date) is not str:
        return None
    advisories = _advisories_fast(item)
    if advisories is None:
        return None
    return _unchecked(TcbLevel, {"sgx_components": sgx, "pce_svn": pce_svn, "tdx_components": tdx_svns,
                                 "status": status, "date": date, "advisory_ids": advisories})


def _module_levels(o: _Obj) -> tuple[ModuleTcbLevel, ...]:
    out = []
    for i, item in enumerate(o.get_list("tcbLevels")):
        level = _module_level_fast(item)
        if level is None:
            lv = _Obj(item, f"{o.where}.tcbLevels[{i}]")
            level = ModuleTcbLevel(isvsvn=lv.get_obj("tcb").get_int("isvsvn", 16),
                                   status=lv.get_status("tcbStatus", _IDENTITY_STATUSES), date=lv.get_str("tcbDate"),
                                   advisory_ids=lv.advisories())
        out.append(level)
    return tuple(out)


def _components(o: _Obj, key: str) -> tuple[int, ...]:
    items = o.get_list(key)
    if len(items) != 16:
        raise CollateralError(f"{o.where}.{key}: has {len(items)} components, expected 16")
    try:  # the usual case at once: 16 objects whose "svn" is an integer 0..255 (JSON objects are dicts)
        svns = [c["svn"] for c in items]
    except (TypeError, KeyError):
        svns = []
    if svns and set(map(type, svns)) == {int} and min(svns) >= 0 and max(svns) <= 0xFF:
        return tuple(svns)
    return tuple(_Obj(c, f"{o.where}.{key}[{i}]").get_int("svn", 8) for i, c in enumerate(items))


def _module_identity(o: _Obj, with_levels: bool) -> TdxModuleIdentity:
    return TdxModuleIdentity(id=o.get_str("id") if with_levels else "", mrsigner=o.get_hex("mrsigner", 48),
                             attributes=o.get_hex("attributes", 8), attributes_mask=o.get_hex("attributesMask", 8),
                             levels=_module_levels(o) if with_levels else ())


_V2_COMPONENTS = tuple(f"sgxtcbcomp{n:02d}svn" for n in range(1, 17))


@functools.lru_cache(maxsize=64)
def parse_tcb_info(raw: bytes) -> TcbInfo:
    """Parse the raw ``tcbInfo`` JSON value (v2 or v3). Raises :class:`CollateralError` naming the field."""
    o = _load_json(raw, "tcbInfo")
    version = o.get_int("version")
    if version not in (2, 3):
        raise CollateralError(f"tcbInfo.version: {version} is not supported (2 or 3)")
    tcb_id = o.get_str("id") if version == 3 else "SGX"
    if tcb_id not in ("SGX", "TDX"):
        raise CollateralError(f"tcbInfo.id: {tcb_id!r:.20} is not SGX or TDX")
    tcb_type = o.get_int("tcbType") if o.has("tcbType") else 0
    if tcb_type != 0:
        raise CollateralError(f"tcbInfo.tcbType: {tcb_type} is not supported (0)")
    levels: list[TcbLevel] = []
    for i, item in enumerate(o.get_list("tcbLevels")):
        fast = _tcb_level_fast(item, version, tcb_id == "TDX")
        if fast is not None:
            levels.append(fast)
            continue
        lv = _Obj(item, f"tcbInfo.tcbLevels[{i}]")
        tcb = lv.get_obj("tcb")
        if version == 2:
            sgx = tuple(tcb.get_int(name, 8) for name in _V2_COMPONENTS)
            tdx = None
        else:
            sgx = _components(tcb, "sgxtcbcomponents")
            tdx = _components(tcb, "tdxtcbcomponents") if tcb_id == "TDX" else None
        levels.append(TcbLevel(sgx_components=sgx, pce_svn=tcb.get_int("pcesvn", 16), tdx_components=tdx,
                               status=lv.get_status("tcbStatus", TCB_LEVEL_STATUSES), date=lv.get_str("tcbDate"),
                               advisory_ids=lv.advisories()))
    module = identities = None
    if tcb_id == "TDX":
        module = _module_identity(o.get_obj("tdxModule"), with_levels=False)
        if o.has("tdxModuleIdentities"):
            identities = tuple(_module_identity(_Obj(m, f"tcbInfo.tdxModuleIdentities[{i}]"), with_levels=True)
                               for i, m in enumerate(o.get_list("tdxModuleIdentities")))
    return TcbInfo(id=tcb_id, version=version, issue_date=o.get_date("issueDate"),
                   next_update=o.get_date("nextUpdate"), fmspc=o.get_hex("fmspc", 6), pce_id=o.get_hex("pceId", 2),
                   tcb_type=tcb_type, evaluation_data_number=o.get_int("tcbEvaluationDataNumber"), levels=tuple(levels),
                   tdx_module=module, tdx_module_identities=identities)


@functools.lru_cache(maxsize=64)
def parse_qe_identity(raw: bytes) -> QeIdentity:
    """Parse the raw ``enclaveIdentity`` JSON value (v2). Raises :class:`CollateralError` naming the field."""
    o = _load_json(raw, "enclaveIdentity")
    version = o.get_int("version")
    if version != 2:
        raise CollateralError(f"enclaveIdentity.version: {version} is not supported (2)")
    ident = o.get_str("id")
    if ident not in ("QE", "TD_QE", "QVE"):
        raise CollateralError(f"enclaveIdentity.id: {ident!r:.20} is not QE, TD_QE or QVE")
    return QeIdentity(
        id=ident, version=version, issue_date=o.get_date("issueDate"), next_update=o.get_date("nextUpdate"),
        evaluation_data_number=o.get_int("tcbEvaluationDataNumber"), miscselect=o.get_hex("miscselect", 4),
        miscselect_mask=o.get_hex("miscselectMask", 4), attributes=o.get_hex("attributes", 16),
        attributes_mask=o.get_hex("attributesMask", 16), mrsigner=o.get_hex("mrsigner", 32),
        isvprodid=o.get_int("isvprodid", 16), levels=_module_levels(o))


# --------------------------------------------------------------------------------------------------
# Certificates, CRLs and signatures (cryptography is imported here, never at module level)
#
# Memoisation: every cache below is an ``lru_cache`` keyed by the complete bytes (and other values) its answer
# depends on, never by a digest or a part, so a changed byte is a different key and is checked afresh. Time is
# never part of a memoised answer: what depends on ``as_of`` is recorded as a check to run (validity windows)
# and run on every verification, so a verifier asked about "now" keeps its caches useful.


class _Bad(Exception):
    """Internal: a check failed; the message is the user-facing reason."""


def _crypto_errors() -> tuple[type[Exception], ...]:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    return (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm)


@functools.lru_cache(maxsize=256)
def _load_cert(der: bytes) -> x509.Certificate:
    from cryptography import x509

    fields = _cert_fields(der)
    known = _converted_names()
    try:
        with warnings.catch_warnings():  # a non-positive serial (a mutated certificate) fails the chain checks later
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
        # parse the lazy parts now, inside the try; a name whose exact encoding has been turned into a Name
        # before (the issuer is usually the subject of another certificate of the chain) would turn out the same
        subject = known.get(fields[2]) if fields is not None else None
        if subject is None:
            subject = cert.subject
        issuer = known.get(fields[1]) if fields is not None else None
        if issuer is None:
            issuer = cert.issuer
        cert.extensions  # noqa: B018
    except _crypto_errors() as e:
        raise _Bad(f"not a valid DER certificate ({e})") from None
    if fields is not None:
        if len(known) >= _MAX_CONVERTED_NAMES:
            known.clear()
        known[fields[2]], known[fields[1]] = subject, issuer
    return cert


@functools.lru_cache(maxsize=1)
def _converted_names() -> dict[bytes, x509.Name]:
    """Encodings of X.509 names that cryptography has turned into ``Name`` objects without an error, and those
    objects (emptied with the other caches); bounded by :data:`_MAX_CONVERTED_NAMES`."""
    return {}


def _subject(der: bytes) -> x509.Name:
    """The subject of the certificate ``der`` (which must load), converted once per encoding."""
    fields = _cert_fields(der)
    name = _converted_names().get(fields[2]) if fields is not None else None
    return name if name is not None else _load_cert(der).subject


_MAX_CONVERTED_NAMES = 1024


def _cn(cert: x509.Certificate) -> str:
    try:
        return _name_cn(cert.subject)
    except _crypto_errors():
        return ""


def _name_cn(name: x509.Name) -> str:
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    v = values[0].value if values else ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


@functools.lru_cache(maxsize=256)
def _cn_of(der: bytes) -> str:
    """:func:`_cn` of the certificate ``der`` (which must load)."""
    _load_cert(der)
    try:
        return _name_cn(_subject(der))
    except _crypto_errors():
        return ""


def _describe(cert: x509.Certificate) -> str:
    return repr(_cn(cert) or cert.subject.rfc4514_string())


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


# The pinned Intel roots (INTEL_SGX_ROOT_CA_FINGERPRINTS) are self-signed CA certificates whose subject is their
# issuer: facts about those exact bytes, so _issued_by(root, root) needs no signature check for them.
_SELF_SIGNED_INTEL_ROOTS = frozenset({INTEL_SGX_ROOT_CA_SHA256, INTEL_SGX_ROOT_CA_2033_SHA256})


@functools.lru_cache(maxsize=512)
def _issued_by(child_der: bytes, issuer_der: bytes) -> str | None:
    """None if ``issuer`` is a CA certificate whose key signed ``child`` (and names match), else the reason."""
    from cryptography import x509

    child, issuer = _load_cert(child_der), _load_cert(issuer_der)
    if child_der == issuer_der and _fingerprint(child_der) in _SELF_SIGNED_INTEL_ROOTS:
        return None
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            return f"{_describe(issuer)} is not a CA certificate (basicConstraints CA is false)"
    except x509.ExtensionNotFound:
        return f"{_describe(issuer)} has no basicConstraints, so it cannot issue certificates"
    signed = _p256_sha256_issued(child_der, issuer_der)
    if signed is None:
        try:
            child.verify_directly_issued_by(issuer)
        except _crypto_errors() as e:
            why = "issuer name differs" if isinstance(e, ValueError) else "bad signature"
            return f"{_describe(child)} is not signed by {_describe(issuer)} ({why})"
    elif not signed:
        return f"{_describe(child)} is not signed by {_describe(issuer)} (bad signature)"
    return None


# AlgorithmIdentifier { ecdsa-with-SHA256 } without parameters, as DER
_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def _der_element(der: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(content start, element end) of the DER element at ``pos`` inside ``der[:end]``, or None."""
    if end - pos < 2:
        return None
    length, pos = der[pos + 1], pos + 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 3 or end - pos < size:
            return None
        length, pos = int.from_bytes(der[pos:pos + size], "big"), pos + size
    if length > end - pos:
        return None
    return pos, pos + length


@functools.lru_cache(maxsize=256)
def _cert_fields(der: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """The encoded (TBS signature algorithm, issuer, subject, outer signature algorithm) of the certificate
    ``der``, cut out of its bytes; None if the bytes do not have that shape."""
    outer = _der_element(der, 0, len(der))
    if outer is None or der[0] != 0x30:
        return None
    tbs = _der_element(der, outer[0], outer[1])
    if tbs is None or der[outer[0]] != 0x30:
        return None
    fields: list[bytes] = []
    pos, end = tbs[0], tbs[1]
    if pos < end and der[pos] == 0xA0:  # version
        version = _der_element(der, pos, end)
        if version is None:
            return None
        pos = version[1]
    for _ in range(5):  # serial number, signature, issuer, validity, subject
        element = _der_element(der, pos, end)
        if element is None:
            return None
        fields.append(der[pos:element[1]])
        pos = element[1]
    outer_alg = _der_element(der, tbs[1], outer[1])
    if outer_alg is None:
        return None
    return fields[1], fields[2], fields[4], der[tbs[1]:outer_alg[1]]


@functools.lru_cache(maxsize=64)
def _crl_issuer(der: bytes) -> bytes | None:
    """The encoded issuer name of the CRL ``der``, cut out of its bytes; None if they do not have that shape."""
    outer = _der_element(der, 0, len(der))
    if outer is None or der[0] != 0x30:
        return None
    tbs = _der_element(der, outer[0], outer[1])
    if tbs is None or der[outer[0]] != 0x30:
        return None
    pos, end = tbs[0], tbs[1]
    if pos < end and der[pos] == 0x02:  # version
        version = _der_element(der, pos, end)
        if version is None:
            return None
        pos = version[1]
    signature = _der_element(der, pos, end)
    if signature is None:
        return None
    issuer = _der_element(der, signature[1], end)
    if issuer is None or der[signature[1]] != 0x30:
        return None
    return der[signature[1]:issuer[1]]


def _p256_sha256_issued(child_der: bytes, issuer_der: bytes) -> bool | None:
    """``verify_directly_issued_by`` for the usual case, with the issuer's (already loaded) key: whether the
    ECDSA-P256-SHA256 signature of ``child`` verifies with the key of ``issuer``; None when the case is another
    (other algorithm or key, names or inner and outer algorithm not byte-identical), which the caller then hands
    to ``verify_directly_issued_by`` itself. Byte-identical fields are what that method compares (it would
    compare parsed values, which are equal when the bytes are), and it verifies this algorithm with this call."""
    child_fields, issuer_fields = _cert_fields(child_der), _cert_fields(issuer_der)
    if child_fields is None or issuer_fields is None:
        return None
    inner_alg, issuer_name, _, outer_alg = child_fields
    if inner_alg != _ECDSA_WITH_SHA256 or outer_alg != _ECDSA_WITH_SHA256 or issuer_name != issuer_fields[2]:
        return None
    from cryptography.exceptions import InvalidSignature

    key_type, curve_type, algorithm, _ = _p256()
    child, issuer = _load_cert(child_der), _load_cert(issuer_der)
    try:
        pub = issuer.public_key()
        if not isinstance(pub, key_type) or not isinstance(pub.curve, curve_type):
            return None
        pub.verify(child.signature, child.tbs_certificate_bytes, algorithm)
    except InvalidSignature:
        return False
    except _crypto_errors():  # anything else: as verify_directly_issued_by has it
        return None
    return True


def _check_validity(cert: x509.Certificate, as_of: datetime.datetime, what: str) -> str | None:
    if as_of < cert.not_valid_before_utc:
        return f"{what} {_describe(cert)} is not yet valid at {_iso(as_of)} (valid from " \
               f"{_iso(cert.not_valid_before_utc)})"
    if as_of > cert.not_valid_after_utc:
        return f"{what} {_describe(cert)} expired at {_iso(cert.not_valid_after_utc)} (checked as of {_iso(as_of)})"
    return None


@functools.lru_cache(maxsize=256)
def _validity(der: bytes) -> tuple[datetime.datetime, datetime.datetime]:
    """(notBefore, notAfter) of the certificate ``der`` (which must load)."""
    cert = _load_cert(der)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


@functools.lru_cache(maxsize=1)
def _p256() -> tuple[Any, Any, Any, Callable[[int, int], bytes]]:
    """(EllipticCurvePublicKey, SECP256R1, the ECDSA-SHA256 algorithm object, encode_dss_signature)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    return ec.EllipticCurvePublicKey, ec.SECP256R1, ec.ECDSA(hashes.SHA256()), encode_dss_signature


def _verify_p256(pub: Any, sig: bytes, data: bytes, *, p256_key: bool = False) -> bool:
    """Does ECDSA-P256-SHA256 signature ``sig`` (r || s) over ``data`` verify with ``pub``? ``p256_key``: the
    caller made ``pub`` as a P-256 key (:func:`_raw_p256_key`), so its type need not be checked."""
    key_type, curve_type, algorithm, encode = _p256()
    if not p256_key and (not isinstance(pub, key_type) or not isinstance(pub.curve, curve_type)):
        return False
    if len(sig) != 64:
        return False
    try:
        pub.verify(encode(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")), data, algorithm)
    except _crypto_errors():
        return False
    return True


@functools.lru_cache(maxsize=256)
def _raw_p256_key(xy: bytes) -> Any:
    """The P-256 public key with coordinates ``xy`` (x || y), or None if that is not a point on the curve."""
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except _crypto_errors():
        return None


@functools.lru_cache(maxsize=256)
def _cert_signed(signer_der: bytes, sig: bytes, data: bytes) -> bool:
    """Did the key of certificate ``signer_der`` make ECDSA-P256-SHA256 signature ``sig`` (r||s) over ``data``?"""
    try:
        pub = _load_cert(signer_der).public_key()
    except _crypto_errors():
        return False
    return _verify_p256(pub, sig, data)


@functools.lru_cache(maxsize=64)
def _pck_extension(leaf_der: bytes) -> PckExtension:
    from cryptography import x509

    cert = _load_cert(leaf_der)
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise _Bad(f"PCK certificate {_describe(cert)} has no SGX extension ({SGX_EXTENSION_OID})") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography has no parser for it
        raise _Bad("PCK certificate: the SGX extension is not raw DER")
    try:
        return PckExtension.parse_der(value.value)
    except SgxFormatError as e:
        raise _Bad(f"PCK certificate {_describe(cert)}: {e}") from None


@functools.lru_cache(maxsize=64)
def _load_crl(der: bytes) -> x509.CertificateRevocationList:
    from cryptography import x509

    issuer = _crl_issuer(der)
    try:
        crl = x509.load_der_x509_crl(der)
        if issuer is None or issuer not in _converted_names():  # parse the lazy parts now (see _load_cert)
            crl.issuer  # noqa: B018
        crl.extensions  # noqa: B018
    except _crypto_errors() as e:
        raise _Bad(f"not a valid DER CRL ({e})") from None
    return crl


@functools.lru_cache(maxsize=64)
def _crl_issued_by(crl_der: bytes, issuer_der: bytes) -> bool:
    crl_issuer, cert_fields = _crl_issuer(crl_der), _cert_fields(issuer_der)
    if crl_issuer is not None and cert_fields is not None and crl_issuer == cert_fields[2]:
        return True  # the same encoding is the same Name
    return bool(_load_crl(crl_der).issuer == _load_cert(issuer_der).subject)


@functools.lru_cache(maxsize=64)
def _crl_signed(crl_der: bytes, issuer_der: bytes) -> bool:
    crl, issuer = _load_crl(crl_der), _load_cert(issuer_der)
    try:
        return _crl_issued_by(crl_der, issuer_der) and crl.is_signature_valid(
            issuer.public_key())  # type: ignore[arg-type]
    except _crypto_errors():
        return False


@functools.lru_cache(maxsize=256)
def _crl_revokes(crl_der: bytes, serial: int) -> bool:
    try:
        return _load_crl(crl_der).get_revoked_certificate_by_serial_number(serial) is not None
    except _crypto_errors() as e:
        raise _Bad(f"cannot read the revoked entries ({e})") from None


# --------------------------------------------------------------------------------------------------
# Verification


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


@dataclass
class _Collateral:
    errors: list[str] = field(default_factory=list)
    genuine: bool = True  # signatures, chains, format
    consistent: bool = True  # applies to this quote
    timely: bool = True  # every validity window holds at as_of
    complete: bool = True  # every document needed is present
    status: str | None = None
    advisories: list[str] = field(default_factory=list)

    def bad(self, kind: str, message: str) -> None:
        setattr(self, kind, False)
        self.errors.append(message)


def _norm_fp(fp: str) -> str:
    return fp.replace(":", "").replace(" ", "").lower()


@functools.lru_cache(maxsize=64)
def _trusted_root_items(override: tuple[str, ...] | None, sim: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """Trusted root fingerprints -> whether each is the simulated platform's, as items: the pinned (or
    overriding) fingerprints, then the sim ones (given only when trust_sim is set)."""
    roots = {_norm_fp(fp): False for fp in (override if override is not None else INTEL_SGX_ROOT_CA_FINGERPRINTS)}
    for fp in sim:
        roots.setdefault(_norm_fp(fp), True)
    return tuple(roots.items())


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
    if isinstance(b, TdReportBody):
        c.update({
            "mrtd": b.mrtd.hex(), "rtmr0": b.rtmr0.hex(), "rtmr1": b.rtmr1.hex(), "rtmr2": b.rtmr2.hex(),
            "rtmr3": b.rtmr3.hex(), "mrconfigid": b.mrconfigid.hex(), "mrowner": b.mrowner.hex(),
            "mrownerconfig": b.mrownerconfig.hex(), "mrseam": b.mrseam.hex(), "mrsignerseam": b.mrsignerseam.hex(),
            "seam_attributes": b.seam_attributes.hex(), "td_attributes": b.td_attributes.hex(),
            "xfam": b.xfam.hex(), "tee_tcb_svn": b.tee_tcb_svn.hex(), "report_data": b.report_data.hex(),
            "debug": b.debug,
        })
        if b.tee_tcb_svn2 is not None and b.mrservicetd is not None:
            c.update({"tee_tcb_svn2": b.tee_tcb_svn2.hex(), "mrservicetd": b.mrservicetd.hex()})
    else:
        c.update({
            "mrenclave": b.mrenclave.hex(), "mrsigner": b.mrsigner.hex(), "isvprodid": b.isvprodid,
            "isvsvn": b.isvsvn, "attributes": b.attributes.pack().hex(), "debug": b.attributes.debug,
            "report_data": b.reportdata.hex(), "cpusvn": b.cpusvn.hex(), "miscselect": b.miscselect,
            "configid": b.configid.hex(), "configsvn": b.configsvn, "isvextprodid": b.isvextprodid.hex(),
            "isvfamilyid": b.isvfamilyid.hex(),
        })
    return c


@functools.lru_cache(maxsize=256)
def _qe_report_data(attestation_key: bytes, qe_auth_data: bytes) -> bytes:
    """:func:`inclavare.formats.dcap.qe_report_data_for`, memoised by its inputs (a platform's quotes share them)."""
    return qe_report_data_for(attestation_key, qe_auth_data)


def _report_data(q: DcapQuote) -> bytes:
    return q.body.report_data if isinstance(q.body, TdReportBody) else q.body.reportdata


@dataclass(frozen=True)
class _ChainFacts:
    """What a PCK chain's checks found, apart from time: errors before the validity checks, the certificates
    whose validity is checked at ``as_of`` (DER, what it is), errors after them; whether all else passed."""

    before: tuple[str, ...]
    read: bool  # False: the chain could not be read that far, so nothing is checked after ``before``
    validity: tuple[tuple[bytes, str], ...] = ()
    after: tuple[str, ...] = ()
    ok: bool = False
    leaf_der: bytes | None = None
    ca_der: bytes | None = None
    root_der: bytes | None = None
    ext: PckExtension | None = None  # the leaf's SGX extension, when it parses (claims use it either way)
    is_sim: bool = False
    # the times (inclusive) at which every certificate in ``validity`` is valid
    valid_from: datetime.datetime = datetime.datetime.max.replace(tzinfo=datetime.UTC)
    valid_until: datetime.datetime = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _check_pck_chain(ctx: _Ctx, roots: tuple[tuple[str, bool], ...], errors: list[str]) -> bool | None:
    """Check the PCK chain against the trusted roots (fingerprint -> is the sim root); fills ctx. Returns whether
    the root is the sim root, or None if the chain failed."""
    options = ctx.options
    cert = ctx.quote.certification
    extra = tuple(bytes(d) for d in options.extra_certs) if options.extra_certs else ()
    facts = _chain_facts((cert.cert_type, cert.data, roots, bool(options.trust_sim),
                          bool(options.sim_root_fingerprints), extra))
    if facts.before:
        errors.extend(facts.before)
    if not facts.read:
        return None
    ok = facts.ok
    if not facts.valid_from <= ctx.as_of <= facts.valid_until:  # some certificate is outside its validity
        for der, what in facts.validity:
            not_before, not_after = _validity(der)
            if ctx.as_of < not_before or ctx.as_of > not_after:
                errors.append(f"PCK chain: {_check_validity(_load_cert(der), ctx.as_of, what)}")
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


@functools.lru_cache(maxsize=64)
def _chain_facts(key: tuple[int, bytes, tuple[tuple[str, bool], ...], bool, bool, tuple[bytes, ...]]
                 ) -> _ChainFacts:
    """The time-independent checks of a PCK chain. ``key``: certification data type and bytes, trusted root
    fingerprints (-> is the sim root), trust_sim, whether sim root fingerprints were given, extra_certs."""
    cert_type, data, root_items, trust_sim, has_sim_fps, extra_certs = key
    roots = dict(root_items)
    errors: list[str] = []
    if cert_type != CertDataType.PCK_CERT_CHAIN:
        errors.append(f"certification data: type {cert_type} is not a PCK certificate chain (5); "
                      "this verifier needs the chain in the quote")
        return _ChainFacts(tuple(errors), False)
    try:
        chain = _pem_chain(data)
    except SgxFormatError as e:
        return _ChainFacts((f"PCK chain: {e}",), False)
    if len(chain) > _MAX_CHAIN or len(chain) < 2:
        return _ChainFacts((f"PCK chain: has {len(chain)} certificates, expected leaf, PCK CA and (optionally) "
                            "root",), False)
    try:
        for der in chain:
            _load_cert(der)
    except _Bad as e:
        return _ChainFacts((f"PCK chain: {e}",), False)
    if len(chain) == 3:
        root_der = chain[2]
    else:  # the root may come from the caller's extra certificates (pinned, so only a trusted one is taken)
        found = next((d for d in extra_certs if _fingerprint(d) in roots), None)
        if found is None:
            return _ChainFacts(("PCK chain: the quote carries no root CA certificate and no trusted root was given "
                                "in extra_certs",), False)
        root_der = found
    root = _load_cert(root_der)
    fp = _fingerprint(root_der)
    ok = True
    if fp not in roots:
        hint = ""
        if trust_sim and not has_sim_fps:
            hint = "; trust_sim is set but no sim_root_fingerprints were given"
        elif not trust_sim:
            hint = " (a simulated platform's quote is accepted only with trust_sim and its root fingerprint)"
        errors.append(f"PCK chain: root CA {_describe(root)} (SHA-256 {fp}) is not a trusted root: Intel's SGX "
                      f"Root CA is {INTEL_SGX_ROOT_CA_SHA256}{hint}")
        ok = False
    static = _chain_problems(chain[0], chain[1], root_der)
    errors.extend(static)
    ok = ok and not static
    after: tuple[str, ...] = ()
    ext = None
    try:
        ext = _pck_extension(chain[0])
    except _Bad as e:
        after = (str(e),)
        ok = False
    windows = [_validity(der) for der in (chain[0], chain[1], root_der)]
    return _ChainFacts(tuple(errors), True, ((chain[0], "PCK certificate"), (chain[1], "PCK CA"),
                                             (root_der, "root CA")), after, ok, chain[0], chain[1], root_der, ext,
                       roots.get(fp, False), max(w[0] for w in windows), min(w[1] for w in windows))


@functools.lru_cache(maxsize=64)
def _pem_chain(data: bytes) -> tuple[bytes, ...]:
    return tuple(split_pem_chain(data, where="certification data (PCK chain)"))


@functools.lru_cache(maxsize=64)
def _chain_problems(leaf_der: bytes, ca_der: bytes, root_der: bytes) -> tuple[str, ...]:
    """What is wrong with a PCK chain apart from time and trust: signatures, CA constraints, names."""
    out: list[str] = []
    for der, issuer_der, what in ((leaf_der, ca_der, "PCK certificate"), (ca_der, root_der, "PCK CA"),
                                  (root_der, root_der, "root CA")):
        why = _issued_by(der, issuer_der)
        if why is not None:
            out.append(f"PCK chain: {what}: {why}")
    for der, what, needle in ((leaf_der, "PCK certificate", (_PCK_LEAF_CN,)), (ca_der, "PCK CA", _PCK_CA_CNS),
                              (root_der, "root CA", (_ROOT_CN,))):
        cn = _cn_of(der)
        if not any(n in cn for n in needle):
            out.append(f"PCK chain: {what} common name {cn!r} does not contain {' or '.join(needle)!r}")
    return tuple(out)


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
    roots = _trusted_root_items(tuple(override) if override is not None else None, sim)
    is_sim = _check_pck_chain(ctx, roots, errors)
    if is_sim:
        result.tee = "sim"
    if ctx.claims_ext is not None:
        result.claims["fmspc"] = ctx.claims_ext.fmspc.hex()
        result.claims["pceid"] = ctx.claims_ext.pce_id.hex()

    att_key = _raw_p256_key(q.attestation_key)
    signed = q.signed_bytes()
    if att_key is None:
        errors.append("signature data: the attestation key is not a P-256 point")
    elif not _verify_p256(att_key, q.isv_signature, signed, p256_key=True):
        errors.append(f"quote signature: does not verify with the attestation key over bytes 0..{len(signed) - 1} "
                      "(header and body)")
    if q.qe_report.reportdata != _qe_report_data(q.attestation_key, q.qe_auth_data):
        errors.append("QE report: REPORTDATA is not SHA-256(attestation key || QE auth data) || 32 zero bytes; "
                      "the attestation key is not bound to the QE")
    if ctx.leaf_der is not None and not _cert_signed(ctx.leaf_der, q.qe_report_signature, q.qe_report_raw):
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


# --------------------------------------------------------------------------------------------------
# Collateral evaluation


class _Log:
    """What the checks of the collateral documents found, in order, without the time: each entry is a finding
    (``(kind, message)``, kind None for an error that changes no flag), or a time check to run at ``as_of``
    (``("validity", der, what)`` for a signing certificate, ``("window", what, start, end, names)`` for a
    document). :func:`_replay` turns the entries into the errors and flags of one verification."""

    def __init__(self, anchors: _Anchors) -> None:
        self.anchors = anchors
        self.entries: list[tuple[Any, ...]] = []
        self.revoked = False  # the quote's own PCK leaf or PCK CA is on a CRL

    def bad(self, kind: str | None, message: str) -> None:
        self.entries.append((kind, message))

    def validity(self, der: bytes, what: str) -> None:
        self.entries.append(("validity", der, what))

    def window(self, what: str, start: datetime.datetime, end: datetime.datetime | None,
               names: tuple[str, str] = ("issueDate", "nextUpdate")) -> None:
        self.entries.append(("window", what, start, end, names))


def _replay(entries: tuple[tuple[Any, ...], ...], col: _Collateral, as_of: datetime.datetime) -> None:
    for entry in entries:
        kind = entry[0]
        if kind == "validity":
            der, what = entry[1], entry[2]
            not_before, not_after = _validity(der)
            if as_of < not_before or as_of > not_after:
                why = _check_validity(_load_cert(der), as_of, what)
                assert why is not None
                col.bad("timely", why)
        elif kind == "window":
            _window(col, entry[1], entry[2], entry[3], as_of, entry[4])
        elif kind is None:
            col.errors.append(entry[1])
        else:
            col.bad(kind, entry[1])


@dataclass(frozen=True)
class _Anchors:
    """The verified PCK chain the collateral is checked against, and the caller's extra certificates."""

    leaf_der: bytes
    ca_der: bytes
    root_der: bytes
    extra_certs: tuple[bytes, ...]


@dataclass(frozen=True)
class _DocumentFacts:
    """The time-independent outcome of checking the collateral documents (see :class:`_Log`)."""

    entries: tuple[tuple[Any, ...], ...]
    revoked: bool
    tcb: TcbInfo | None
    qe: QeIdentity | None
    # when every entry is a time check: the times (inclusive) at which none of them fails, so replaying the
    # entries would add nothing; None when some entry is a finding whatever the time
    quiet: tuple[datetime.datetime, datetime.datetime] | None = None


def _signer(log: _Log, chain: list[bytes], what: str) -> bytes | None:
    """The DER of the TCB signing certificate for ``what`` (TCB info / QE identity), checked up to the root."""
    anchors = log.anchors
    if not isinstance(chain, (list, tuple)) or not all(isinstance(c, (bytes, bytearray)) for c in chain):
        log.bad("genuine", f"{what} issuer chain: must be a list of DER certificates")
        return None
    candidates: list[bytes]
    if chain:
        candidates = [bytes(chain[0])]
        for der in chain[1:]:
            if bytes(der) != anchors.root_der:
                try:
                    name = _describe(_load_cert(bytes(der)))
                except _Bad:
                    name = "an unreadable certificate"
                log.bad("genuine", f"{what} issuer chain: {name} is not the root the PCK chain ends in")
                return None
    else:
        candidates = list(anchors.extra_certs)
    found: bytes | None = None
    for der in candidates:
        try:
            _load_cert(der)
        except _Bad as e:
            if chain:
                log.bad("genuine", f"{what} signing certificate: {e}")
                return None
            continue  # an unreadable extra certificate is simply not a candidate
        if _TCB_SIGNING_CN in _cn_of(der) and _issued_by(der, anchors.root_der) is None:
            found = der
            break
    if found is None:
        if chain:
            cn = _cn_of(candidates[0])
            why = _issued_by(candidates[0], anchors.root_der) if _TCB_SIGNING_CN in cn else \
                f"common name {cn!r} does not contain {_TCB_SIGNING_CN!r}"
            log.bad("genuine", f"{what} signing certificate: {why}")
        else:
            log.bad("complete", f"{what}: the issuer chain is empty and no TCB signing certificate issued by the "
                                "trusted root was given (extra_certs)")
        return None
    log.validity(found, f"{what} signing certificate")
    return found


def _window(col: _Collateral, what: str, start: datetime.datetime, end: datetime.datetime | None,
            as_of: datetime.datetime, names: tuple[str, str] = ("issueDate", "nextUpdate")) -> None:
    if as_of < start:
        col.bad("timely", f"{what}: not yet valid at {_iso(as_of)} ({names[0]} {_iso(start)})")
    elif end is None:
        col.bad("genuine", f"{what}: has no {names[1]}")
    elif as_of > end:
        col.bad("timely", f"{what}: expired at {_iso(end)} ({names[1]}; checked as of {_iso(as_of)})")


def _signed_document(log: _Log, raw: bytes, sig: bytes, chain: list[bytes], what: str,
                     parse: Callable[[bytes], Any]) -> tuple[Any, bytes | None]:
    signer = _signer(log, chain, what)
    if not isinstance(raw, (bytes, bytearray)) or not isinstance(sig, (bytes, bytearray)):
        log.bad("genuine", f"{what}: the document and its signature must be bytes")
        return None, signer
    raw, sig = bytes(raw), bytes(sig)
    if signer is None:  # already reported; an unsigned document is never read
        return None, None
    if len(sig) != 64 or not _cert_signed(signer, sig, raw):
        log.bad("genuine", f"{what}: the signature does not verify with {_describe(_load_cert(signer))} over the "
                           "exact document bytes")
        return None, signer
    try:
        doc = parse(raw)
    except CollateralError as e:
        log.bad("genuine", str(e))
        return None, signer
    log.window(what, doc.issue_date, doc.next_update)
    return doc, signer


def _check_crl(log: _Log, der: bytes | None, issuer_der: bytes, what: str,
               subjects: Iterable[tuple[bytes, str]]) -> None:
    if der is None:
        log.bad("complete", f"{what}: missing, so revocation cannot be checked")
        return
    if not isinstance(der, (bytes, bytearray)):
        log.bad("genuine", f"{what}: expected DER bytes, got {type(der).__name__}")
        return
    der = bytes(der)
    try:
        crl = _load_crl(der)
    except _Bad as e:
        log.bad("genuine", f"{what}: {e}")
        return
    issuer = _load_cert(issuer_der)
    if not _crl_issued_by(der, issuer_der):
        log.bad("consistent", f"{what}: issued by {crl.issuer.rfc4514_string()!r}, not by {_describe(issuer)}")
        return
    if not _crl_signed(der, issuer_der):
        log.bad("genuine", f"{what}: the signature does not verify with {_describe(issuer)}")
        return
    log.window(what, crl.last_update_utc, crl.next_update_utc, ("thisUpdate", "nextUpdate"))
    for cert_der, name in subjects:
        cert = _load_cert(cert_der)
        try:
            revoked = _crl_revokes(der, cert.serial_number)
        except _Bad as e:
            log.bad("genuine", f"{what}: {e}")
            return
        if not revoked:
            continue
        message = f"{name} {_describe(cert)} (serial {cert.serial_number:x}) is revoked: it is on the {what}"
        if cert_der in (log.anchors.leaf_der, log.anchors.ca_der):  # the quote's own chain: not genuine any more
            log.revoked = True
            log.bad(None, message)
        else:  # a collateral signer: the collateral is not genuine
            log.bad("genuine", message)


def _check_documents(anchors: _Anchors, tcb_raw: Any, tcb_sig: Any, tcb_chain: Any, qe_raw: Any, qe_sig: Any,
                     qe_chain: Any, pck_crl: Any, root_crl: Any) -> _DocumentFacts:
    """The collateral checks that do not depend on the quote beyond its PCK chain, nor on the time."""
    log = _Log(anchors)
    tcb, tcb_signer = _signed_document(log, tcb_raw, tcb_sig, tcb_chain, "TCB info", parse_tcb_info)
    qe, qe_signer = _signed_document(log, qe_raw, qe_sig, qe_chain, "QE identity", parse_qe_identity)
    _check_crl(log, pck_crl, anchors.ca_der, "PCK CRL", ((anchors.leaf_der, "PCK certificate"),))
    root_subjects = [(anchors.ca_der, "PCK CA")]
    for signer, what in ((tcb_signer, "TCB info signing certificate"), (qe_signer, "QE identity signing certificate")):
        if signer is not None and all(signer != s for s, _ in root_subjects):
            root_subjects.append((signer, what))
    _check_crl(log, root_crl, anchors.root_der, "root CA CRL", root_subjects)
    return _DocumentFacts(tuple(log.entries), log.revoked, tcb, qe, _quiet(log.entries))


def _quiet(entries: list[tuple[Any, ...]]) -> tuple[datetime.datetime, datetime.datetime] | None:
    """See :attr:`_DocumentFacts.quiet`: a validity or window check passes when start <= as_of <= end."""
    starts: list[datetime.datetime] = []
    ends: list[datetime.datetime] = []
    for entry in entries:
        if entry[0] == "validity":
            start, end = _validity(entry[1])
        elif entry[0] == "window" and entry[3] is not None:
            start, end = entry[2], entry[3]
        else:
            return None
        starts.append(start)
        ends.append(end)
    if not starts:
        return None
    return max(starts), min(ends)


@functools.lru_cache(maxsize=64)
def _document_facts(key: tuple[Any, ...]) -> _DocumentFacts:
    """:func:`_check_documents` memoised by everything it reads: the PCK chain (leaf, CA, root DER), the extra
    certificates, and every collateral field (bytes, chains as tuples of bytes, CRLs or None)."""
    leaf_der, ca_der, root_der, extra_certs, *documents = key
    return _check_documents(_Anchors(leaf_der, ca_der, root_der, extra_certs), *documents)


def _documents_key(c: DcapCollateral) -> tuple[Any, ...] | None:
    """The collateral's fields as hashable values that :func:`_check_documents` treats exactly as the originals
    (bytearray as bytes, a chain as a tuple of bytes), or None when a field has some other type (then the checks
    run on the originals, unmemoised, and report it)."""
    tcb_chain, qe_chain = c.tcb_info_issuer_chain, c.qe_identity_issuer_chain
    pck_crl, root_crl = c.pck_crl, c.root_ca_crl
    if type(c.tcb_info_raw) is bytes and type(c.tcb_info_signature) is bytes and type(c.qe_identity_raw) is bytes \
            and type(c.qe_identity_signature) is bytes and (pck_crl is None or type(pck_crl) is bytes) \
            and (root_crl is None or type(root_crl) is bytes) and type(tcb_chain) is list and type(qe_chain) is list \
            and set(map(type, tcb_chain + qe_chain)) <= {bytes}:  # the usual shape, at once
        return (c.tcb_info_raw, c.tcb_info_signature, tuple(tcb_chain), c.qe_identity_raw, c.qe_identity_signature,
                tuple(qe_chain), pck_crl, root_crl)
    out: list[Any] = []
    for value, kind in ((c.tcb_info_raw, "doc"), (c.tcb_info_signature, "doc"), (c.tcb_info_issuer_chain, "chain"),
                        (c.qe_identity_raw, "doc"), (c.qe_identity_signature, "doc"),
                        (c.qe_identity_issuer_chain, "chain"), (c.pck_crl, "crl"), (c.root_ca_crl, "crl")):
        if type(value) is bytes or (kind == "crl" and value is None):
            out.append(value)
        elif isinstance(value, (bytes, bytearray)):
            out.append(bytes(value))
        elif kind == "chain" and isinstance(value, (list, tuple)) and \
                all(isinstance(d, (bytes, bytearray)) for d in value):
            out.append(tuple(bytes(d) for d in value))
        else:
            return None
    return tuple(out)


def _qe_identity_status(col: _Collateral, qe: QeIdentity, report: ReportBody, raw: bytes
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


def _module_identity_for(col: _Collateral, td: _TdView, tcb: TcbInfo) -> TdxModuleIdentity | None:
    """QVL 4.1.2.4.11: the TDX module (identity) the quote's SEAM values must match; checks them."""
    assert tcb.tdx_module is not None
    version = td.tee_tcb_svn[1]
    module: TdxModuleIdentity = tcb.tdx_module
    if td.quote_version > 3 and version > 0:
        if tcb.tdx_module_identities is None:
            col.bad("consistent", f"TCB info: the TDX module version is {version} but there are no "
                                  "tdxModuleIdentities")
            return None
        found = _find_module(tcb.tdx_module_identities, version)
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


def _find_module(identities: tuple[TdxModuleIdentity, ...], version: int) -> TdxModuleIdentity | None:
    want = f"TDX_{version:02X}"
    for m in identities:
        if m.id.upper() == want:
            return m
    return None


def _tcb_status(quote_version: int, td: _TdView | None, ext: PckExtension, tcb: TcbInfo,
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
        identity = _find_module(tcb.tdx_module_identities or (), tee_svn[1])
        if identity is None:  # pragma: no cover - refused earlier by _module_identity_for
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


class _TdView(NamedTuple):
    """What the collateral checks read from a TDX quote's body (and its version)."""

    quote_version: int
    tee_tcb_svn: bytes
    mrsignerseam: bytes
    seam_attributes: bytes


@dataclass(frozen=True)
class _Judgement:
    """The collateral judged for one quote (see :func:`_judge`); ``status`` None when no status was reached."""

    errors: tuple[str, ...]
    consistent: bool
    status: str | None
    advisories: tuple[str, ...]


def _evaluate_collateral(ctx: _Ctx, c: DcapCollateral) -> _Collateral:
    assert ctx.leaf_der is not None and ctx.ca_der is not None and ctx.root_der is not None and ctx.ext is not None
    extra = tuple(bytes(d) for d in ctx.options.extra_certs) if ctx.options.extra_certs else ()
    key = _documents_key(c)
    facts_key: tuple[Any, ...] | None = None
    if key is None:  # some field is not bytes as it should be: check the originals (and say so)
        facts = _check_documents(_Anchors(ctx.leaf_der, ctx.ca_der, ctx.root_der, extra), c.tcb_info_raw,
                                 c.tcb_info_signature, c.tcb_info_issuer_chain, c.qe_identity_raw,
                                 c.qe_identity_signature, c.qe_identity_issuer_chain, c.pck_crl, c.root_ca_crl)
    else:
        facts_key = (ctx.leaf_der, ctx.ca_der, ctx.root_der, extra, *key)
        facts = _document_facts(facts_key)
    col = _Collateral()
    quiet = facts.quiet
    if quiet is None or not quiet[0] <= ctx.as_of <= quiet[1]:
        _replay(facts.entries, col, ctx.as_of)
    if facts.revoked:
        ctx.revoked = True
    if ctx.revoked:
        col.status = "Revoked"
    if not col.genuine or facts.tcb is None or facts.qe is None:
        return col
    q = ctx.quote
    body = q.body
    td = _TdView(q.version, body.tee_tcb_svn, body.mrsignerseam, body.seam_attributes) \
        if isinstance(body, TdReportBody) else None
    judged = _judge(facts, ctx.ext, q.version, td, q.qe_report_raw) if facts_key is None else \
        _judge_memo(facts_key, q.version, td, q.qe_report_raw)
    col.errors.extend(judged.errors)
    if not judged.consistent:
        col.consistent = False
    col.status = "Revoked" if ctx.revoked else judged.status
    col.advisories = list(judged.advisories)
    return col


@functools.lru_cache(maxsize=256)
def _judge_memo(facts_key: tuple[Any, ...], quote_version: int, td: _TdView | None, qe_report_raw: bytes
                ) -> _Judgement:
    """:func:`_judge` memoised by the collateral documents' key (which holds the PCK leaf, so the PCK extension)
    and every quote value it reads: the version, the TDX body's TEE_TCB_SVN, MRSIGNERSEAM and SEAM attributes,
    and the QE report."""
    return _judge(_document_facts(facts_key), _pck_extension(facts_key[0]), quote_version, td, qe_report_raw)


def _judge(facts: _DocumentFacts, ext: PckExtension, quote_version: int, td: _TdView | None, qe_report_raw: bytes
           ) -> _Judgement:
    """The collateral checks that read the quote: the documents are for its TEE and platform, the TDX module
    and the QE match, and the TCB status (Intel's rules) with its advisory IDs."""
    tcb, qe = facts.tcb, facts.qe
    assert isinstance(tcb, TcbInfo) and isinstance(qe, QeIdentity)
    col = _Collateral()
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
    if col.consistent and (td is None or _module_identity_for(col, td, tcb) is not None):
        qe_result = _qe_identity_status(col, qe, report_body_lenient(qe_report_raw), qe_report_raw)
        if qe_result is not None:
            status, advisory_lists = _tcb_status(quote_version, td, ext, tcb, qe_result)
            for ids in advisory_lists:
                advisories.extend(a for a in ids if a not in advisories)
    return _Judgement(tuple(col.errors), col.consistent, status, tuple(advisories))


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


class SgxVerifier:
    """Verifier for SGX DCAP quotes (v3, or v4/v5 with an SGX body); refuses TDX quotes."""

    tee = "sgx"

    def __init__(self, *, _root_fingerprints: tuple[str, ...] | None = None) -> None:
        self._roots = _root_fingerprints

    def verify(self, evidence: bytes, options: Options) -> Result:
        return _verify(evidence, options, "sgx", self._roots)


class TdxVerifier:
    """Verifier for TDX DCAP quotes (v4, v5 with TD 1.0 or TD 1.5 bodies); refuses SGX quotes."""

    tee = "tdx"

    def __init__(self, *, _root_fingerprints: tuple[str, ...] | None = None) -> None:
        self._roots = _root_fingerprints

    def verify(self, evidence: bytes, options: Options) -> Result:
        return _verify(evidence, options, "tdx", self._roots)
