"""RATS-TLS verifier instances, their selection, and the judgement of a peer's RA-TLS certificate.

Instances (names and priorities as rats-tls registers them; ``sim`` is ours):

=============  ========  ==========================================================================
name           priority  accepts
=============  ========  ==========================================================================
sgx_ecdsa      52        SGX ECDSA (DCAP) quotes chaining to Intel's root; never a simulated quote
tdx_ecdsa      42        TDX ECDSA (DCAP) quotes chaining to Intel's root
sev_snp        42        SEV-SNP reports (VCEK/VLEK -> ASK/ASVK -> AMD's ARK)
sim            10        SGX quotes of the simulated platform, and only with ``trust_sim`` and its root
nullverifier   0         anything: the peer's evidence is not checked (its certificate still is)
=============  ========  ==========================================================================

Selection (:func:`select_verifier`): a named verifier is taken by exact name and is then *enforced*: the
peer's evidence must be of a type it verifies. Without a name the available verifier of highest priority is
selected, not enforced, and for every peer the verifier is selected again from the type of the peer's
evidence (:func:`verifier_for`), so SGX, TDX, SNP and sim peers interoperate. A quote from the simulated
platform has the SGX quote format; it is recognised by its PCK chain's root and goes to ``sim``, which is
available only when the sim root is trusted explicitly, so simulated evidence is never accepted otherwise.

Judgement (:func:`verify_peer_certificate`), in order, failing closed with :class:`EvidenceRejected`: the
certificate parses (caps, strict CBOR, known tags) and is a valid self-signed certificate at ``as_of``; the
verifier is chosen; the evidence is genuine (signatures, chain to the pinned or trusted root, collateral when
there is some: the verifier's own, else the certificate's endorsements extension, else a PCCS) and bound to
the certificate's key (pubkey-hash claim and report data); the freshness nonce, when one was sent, is the one
in the attested claims; then the verification callback, if any, decides on the verified claims.

Deliberate difference from rats-tls: rats-tls silently switches to its null verifier when an unenforced peer
sends no evidence. Here a peer without evidence is rejected unless evidence is not required
(``require_evidence=False``, the default only when ``nullverifier`` is named).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inclavare.attestation.api import AttestationError, Options, Result
from inclavare.ratls.cert import RatlsCertificate, check_binding, check_validity, parse_certificate
from inclavare.ratls.dice import RatlsError

__all__ = [
    "NONCE_CLAIM",
    "NULLVERIFIER",
    "VERIFIERS",
    "EvidenceRejected",
    "PeerClaims",
    "VerificationCallback",
    "Verifier",
    "VerifyOptions",
    "select_verifier",
    "verifier_for",
    "verify_peer_certificate",
]

log = logging.getLogger(__name__)

NULLVERIFIER = "nullverifier"
NONCE_CLAIM = "nonce"  # the CCC interoperable RA-TLS claim for pre-session freshness
_TEE_OF = {"sgx_ecdsa": "sgx", "tdx_ecdsa": "tdx", "sev_snp": "snp", "sim": "sim"}


class EvidenceRejected(RatlsError):
    """The peer's certificate or evidence is not acceptable; the message says why."""


@dataclass(frozen=True)
class VerifyOptions:
    """What the verifiers check against.

    ``as_of``: time for certificate and collateral validity (default now). ``trust_sim`` and
    ``sim_root_fingerprints`` (SHA-256 of the sim root CA's DER, hex): accept the simulated platform, through
    the ``sim`` verifier only. ``collateral``: DCAP collateral (e.g. from files) used before the
    certificate's endorsements; ``pccs``: a :class:`~inclavare.attestation.collateral.PcsClient` (or its base
    URL) asked when neither is there; ``require_collateral``: refuse DCAP evidence that could be checked for
    genuineness only. ``snp_collateral``: the VCEK/VLEK and chain for SNP peers. ``extra_certs``: DER issuer
    certificates the collateral does not carry. ``require_evidence``: refuse a peer without evidence."""

    as_of: datetime.datetime | None = None
    trust_sim: bool = False
    sim_root_fingerprints: tuple[str, ...] = ()
    collateral: Any = None
    pccs: Any = None
    require_collateral: bool = False
    snp_collateral: Any = None
    extra_certs: tuple[bytes, ...] = ()
    require_evidence: bool = True


@dataclass
class PeerClaims:
    """What was learned about the peer. ``verified``: its evidence is genuine and bound to its key (False only
    when the null verifier judged it). ``claims``: the verifier's flat claims (hex strings, ints);
    ``custom_claims``: the claims buffer's custom claims, raw (attested when ``verified``)."""

    verifier: str
    evidence_type: str | None
    tee: str | None
    format: str
    verified: bool
    claims: dict[str, Any] = field(default_factory=dict)
    custom_claims: dict[str, bytes] = field(default_factory=dict)
    tcb_status: str | None = None
    collateral_valid: bool | None = None
    collateral_source: str | None = None
    nonce: bytes | None = None
    certificate_der: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (bytes as hex)."""
        return {
            "verifier": self.verifier, "evidence_type": self.evidence_type, "tee": self.tee, "format": self.format,
            "verified": self.verified, "claims": dict(self.claims),
            "custom_claims": {k: v.hex() for k, v in self.custom_claims.items()},
            "tcb_status": self.tcb_status, "collateral_valid": self.collateral_valid,
            "collateral_source": self.collateral_source,
            "nonce": self.nonce.hex() if self.nonce is not None else None,
            "certificate_sha256": hashlib.sha256(self.certificate_der).hexdigest(),
        }


# Returns True to accept. May raise AttestationError with a reason; anything else it raises is a rejection too.
VerificationCallback = Callable[[PeerClaims], bool]


# --------------------------------------------------------------------------------------------------
# Instances


class Verifier:
    """One verifier instance: ``name``, ``priority``, the evidence types it verifies."""

    name = ""
    priority = 0
    evidence_types: frozenset[str] = frozenset()

    def unavailable(self, options: VerifyOptions) -> str | None:
        """Why this verifier cannot be used with ``options``, or None."""
        return None

    def verify(self, cert: RatlsCertificate, options: VerifyOptions) -> PeerClaims:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<verifier {self.name} priority {self.priority}>"


class NullVerifier(Verifier):
    name = NULLVERIFIER
    priority = 0

    def verify(self, cert: RatlsCertificate, options: VerifyOptions) -> PeerClaims:
        return PeerClaims(verifier=self.name, evidence_type=cert.evidence_type, tee=None, format=cert.format,
                          verified=False, custom_claims=dict(cert.custom_claims), certificate_der=cert.der)


def _as_of(options: VerifyOptions) -> datetime.datetime:
    t = options.as_of or datetime.datetime.now(datetime.UTC)
    return t if t.tzinfo is not None else t.replace(tzinfo=datetime.UTC)


def _problems(result: Result, limit: int = 3) -> str:
    errors = result.errors or ["not verified"]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(errors[:limit]) + more


def _bound(cert: RatlsCertificate, result: Result) -> None:
    try:
        report_data = bytes.fromhex(str(result.claims.get("report_data", "")))
    except ValueError:
        raise EvidenceRejected("the verified evidence carries no readable report data") from None
    try:
        check_binding(cert, report_data)
    except RatlsError as e:
        raise EvidenceRejected(str(e)) from None


def _pck_ca_kind(evidence: bytes) -> str:
    """"processor" or "platform": which PCK CA issued the quote's PCK certificate (for a PCCS request)."""
    from cryptography import x509

    from inclavare.formats.dcap import DcapQuote

    chain = DcapQuote.parse(evidence).pck_chain_der()
    if not chain:
        return "platform"
    issuer = x509.load_der_x509_certificate(chain[0]).issuer.rfc4514_string()
    return "processor" if "Processor" in issuer else "platform"


class _DcapVerifier(Verifier):
    tee = "sgx"
    sim = False

    def _options(self, options: VerifyOptions, collateral: Any) -> Options:
        return Options(as_of=_as_of(options), trust_sim=self.sim,
                       sim_root_fingerprints=tuple(options.sim_root_fingerprints) if self.sim else (),
                       collateral=collateral, extra_certs=tuple(options.extra_certs))

    def _run(self, evidence: bytes, opts: Options) -> Result:
        from inclavare.attestation.dcap import SgxVerifier, TdxVerifier

        engine = TdxVerifier() if self.tee == "tdx" else SgxVerifier()
        return engine.verify(evidence, opts)

    def verify(self, cert: RatlsCertificate, options: VerifyOptions) -> PeerClaims:
        if cert.evidence_type not in self.evidence_types:
            raise EvidenceRejected(f"verifier {self.name} cannot verify {cert.evidence_type} evidence")
        collateral, source = options.collateral, "configured" if options.collateral is not None else None
        if collateral is None and cert.collateral is not None:
            collateral, source = cert.collateral, "endorsements extension"
        try:
            result = self._run(cert.evidence, self._options(options, collateral))
            if collateral is None and options.pccs is not None and result.verified:
                collateral = self._from_pccs(cert, result, options)
                source = "PCCS"
                result = self._run(cert.evidence, self._options(options, collateral))
        except AttestationError as e:
            raise EvidenceRejected(f"{self.name}: {e}") from None
        if not result.verified:
            hint = ""
            if not self.sim and _is_sim_quote(cert.evidence, ()):
                hint = " (a simulated platform's quote is accepted only by the sim verifier, with trust_sim)"
            raise EvidenceRejected(f"{self.name}: the evidence does not verify: {_problems(result)}{hint}")
        want = "sim" if self.sim else self.tee
        if result.tee != want:
            if self.sim:
                raise EvidenceRejected("sim: the quote does not chain to the trusted sim root; the sim verifier "
                                       "accepts only quotes of the simulated platform")
            raise EvidenceRejected(f"{self.name}: the evidence is a {result.tee} quote, not {want}")
        if result.collateral_valid is False:
            raise EvidenceRejected(f"{self.name}: the collateral ({source}) is not valid: {_problems(result)}")
        if result.collateral_valid is None and options.require_collateral:
            raise EvidenceRejected(f"{self.name}: no collateral (none configured, no endorsements extension, no "
                                   "PCCS) and collateral is required")
        _bound(cert, result)
        return PeerClaims(verifier=self.name, evidence_type=cert.evidence_type, tee=result.tee, format=cert.format,
                          verified=True, claims=dict(result.claims), custom_claims=dict(cert.custom_claims),
                          tcb_status=result.tcb_status, collateral_valid=result.collateral_valid,
                          collateral_source=source if result.collateral_valid is not None else None,
                          certificate_der=cert.der)

    def _from_pccs(self, cert: RatlsCertificate, result: Result, options: VerifyOptions) -> Any:
        from inclavare.attestation.collateral import PcsClient

        pccs = options.pccs if isinstance(options.pccs, PcsClient) else PcsClient(str(options.pccs))
        fmspc = str(result.claims.get("fmspc", ""))
        return pccs.collateral_for("tdx" if self.tee == "tdx" else "sgx", fmspc, _pck_ca_kind(cert.evidence))


class SgxEcdsaVerifier(_DcapVerifier):
    name = "sgx_ecdsa"
    priority = 52
    evidence_types = frozenset({"sgx_ecdsa"})


class TdxEcdsaVerifier(_DcapVerifier):
    name = "tdx_ecdsa"
    priority = 42
    evidence_types = frozenset({"tdx_ecdsa"})
    tee = "tdx"


class SimVerifier(_DcapVerifier):
    name = "sim"
    priority = 10
    evidence_types = frozenset({"sgx_ecdsa"})
    sim = True

    def unavailable(self, options: VerifyOptions) -> str | None:
        if not options.trust_sim:
            return "the sim verifier needs trust_sim: simulated evidence is never trusted by default"
        if not options.sim_root_fingerprints:
            return "the sim verifier needs the sim root CA's fingerprint"
        return None

    def verify(self, cert: RatlsCertificate, options: VerifyOptions) -> PeerClaims:
        reason = self.unavailable(options)
        if reason:
            raise EvidenceRejected(f"the peer's quote is from the simulated platform; {reason}")
        return super().verify(cert, options)


class SevSnpVerifier(Verifier):
    name = "sev_snp"
    priority = 42
    evidence_types = frozenset({"sev_snp"})

    def verify(self, cert: RatlsCertificate, options: VerifyOptions) -> PeerClaims:
        from inclavare.attestation.snp import SnpVerifier

        if cert.evidence_type not in self.evidence_types:
            raise EvidenceRejected(f"verifier {self.name} cannot verify {cert.evidence_type} evidence")
        opts = Options(as_of=_as_of(options), collateral=options.snp_collateral,
                       extra_certs=tuple(options.extra_certs))
        try:
            result = SnpVerifier().verify(cert.evidence, opts)
        except AttestationError as e:
            raise EvidenceRejected(f"{self.name}: {e}") from None
        if not result.verified:
            raise EvidenceRejected(f"{self.name}: the evidence does not verify: {_problems(result)}")
        if result.collateral_valid is False:
            raise EvidenceRejected(f"{self.name}: the VCEK chain is not valid: {_problems(result)}")
        _bound(cert, result)
        return PeerClaims(verifier=self.name, evidence_type=cert.evidence_type, tee=result.tee, format=cert.format,
                          verified=True, claims=dict(result.claims), custom_claims=dict(cert.custom_claims),
                          tcb_status=result.tcb_status, collateral_valid=result.collateral_valid,
                          collateral_source="configured", certificate_der=cert.der)


VERIFIERS: dict[str, Verifier] = {v.name: v for v in sorted(
    (SgxEcdsaVerifier(), TdxEcdsaVerifier(), SevSnpVerifier(), SimVerifier(), NullVerifier()),
    key=lambda v: -v.priority)}


# --------------------------------------------------------------------------------------------------
# Selection


def select_verifier(name: str | None, options: VerifyOptions | None = None) -> Verifier:
    """The verifier called ``name`` (exact match; it must be available), or the available one of highest
    priority when ``name`` is None or empty."""
    options = options or VerifyOptions()
    if name:
        v = VERIFIERS.get(name)
        if v is None:
            raise RatlsError(f"verifier {name!r}: unknown (known: {', '.join(VERIFIERS)})")
        reason = v.unavailable(options)
        if reason:
            raise RatlsError(f"verifier {name!r}: {reason}")
        return v
    for v in VERIFIERS.values():  # highest priority first
        if v.unavailable(options) is None:
            return v
    raise RatlsError("no verifier is available")  # pragma: no cover - nullverifier always is


def _quote_root_fingerprint(evidence: bytes) -> tuple[str, str] | None:
    """SHA-256 (hex) and subject of the last certificate of a DCAP quote's PCK chain, if it has one."""
    try:
        from cryptography import x509

        from inclavare.formats.dcap import DcapQuote

        chain = DcapQuote.parse(evidence).pck_chain_der()
        if not chain:
            return None
        root = chain[-1]
        return hashlib.sha256(root).hexdigest(), x509.load_der_x509_certificate(root).subject.rfc4514_string()
    except Exception:  # a malformed quote: the verifier it goes to reports the problem
        return None


def _is_sim_quote(evidence: bytes, sim_root_fingerprints: tuple[str, ...]) -> bool:
    """Whether a DCAP quote's PCK chain ends in a sim root: one of the given fingerprints, or any certificate
    named as the simulated platform's root (routing only: the sim verifier then checks the fingerprint)."""
    found = _quote_root_fingerprint(evidence)
    if found is None:
        return False
    from inclavare.sim.platform import ROOT_CA_CN

    fp, subject = found
    fps = {f.replace(":", "").replace(" ", "").lower() for f in sim_root_fingerprints}
    return fp in fps or f"CN={ROOT_CA_CN}" in subject


def verifier_for(cert: RatlsCertificate, options: VerifyOptions | None = None) -> str:
    """The name of the verifier for the peer's evidence (re-selection when the verifier is not enforced)."""
    options = options or VerifyOptions()
    etype = cert.evidence_type
    if cert.format == "none" or etype is None:
        return NULLVERIFIER
    if etype == "sgx_ecdsa":
        return "sim" if _is_sim_quote(cert.evidence, options.sim_root_fingerprints) else "sgx_ecdsa"
    for v in VERIFIERS.values():
        if etype in v.evidence_types:
            return v.name
    raise EvidenceRejected(f"no verifier for {etype} evidence (verifiers: "
                           f"{', '.join(n for n in VERIFIERS if n != NULLVERIFIER)})")


# --------------------------------------------------------------------------------------------------
# Judgement


def verify_peer_certificate(der: bytes, selected: Verifier, *, enforced: bool, options: VerifyOptions,
                            expected_nonce: bytes | None = None,
                            callback: VerificationCallback | None = None) -> PeerClaims:
    """Judge a peer's RA-TLS certificate (see the module docstring); raise :class:`EvidenceRejected`."""
    try:
        cert = parse_certificate(der, require_evidence=False)
        check_validity(cert, options.as_of)
    except RatlsError as e:
        raise EvidenceRejected(str(e)) from None
    if enforced:
        verifier = selected
        if verifier.name != NULLVERIFIER:
            if cert.format == "none":
                raise EvidenceRejected(f"no evidence: the peer's certificate carries no attestation evidence (it "
                                       f"may use the nullattester) and the verifier {verifier.name} is enforced")
            if cert.evidence_type not in verifier.evidence_types:
                raise EvidenceRejected(f"the verifier {verifier.name} is enforced (named) but the peer sent "
                                       f"{cert.evidence_type} evidence")
    else:
        name = verifier_for(cert, options)
        if name == NULLVERIFIER and options.require_evidence:
            raise EvidenceRejected("no evidence: the peer's certificate carries no attestation evidence (it may "
                                   "use the nullattester) and evidence is required")
        verifier = VERIFIERS[name]
        if verifier is not selected:
            log.debug("verifier re-selected: %s -> %s for %s evidence", selected.name, name, cert.evidence_type)
    peer = verifier.verify(cert, options)
    nonce = peer.custom_claims.pop(NONCE_CLAIM, None)
    peer.nonce = nonce
    if expected_nonce is not None and peer.verified:  # a null-verified peer has no attested claims to check
        if nonce is None:
            raise EvidenceRejected("freshness: the peer's certificate has no nonce claim; it was not made for "
                                   "this connection (a replayed certificate, or freshness is off at the peer)")
        if not hmac.compare_digest(nonce, expected_nonce):
            raise EvidenceRejected(f"freshness: nonce mismatch: the certificate's nonce claim {nonce.hex()} is "
                                   f"not the nonce sent {expected_nonce.hex()} (a replayed certificate)")
    if callback is not None:
        try:
            accepted = callback(peer)
        except AttestationError as e:
            raise EvidenceRejected(f"rejected by the verification callback: {e}") from None
        except Exception as e:
            raise EvidenceRejected(f"the verification callback failed: {type(e).__name__}: {e}") from None
        if not accepted:
            raise EvidenceRejected("rejected by the verification callback")
    return peer


def custom_claims_text(claims: Mapping[str, bytes]) -> dict[str, str]:
    """Custom claims for display: UTF-8 text without a trailing NUL where possible, else hex."""
    out: dict[str, str] = {}
    for k, v in claims.items():
        try:
            text = v.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            text = None
        out[k] = text if text is not None and text.isprintable() else v.hex()
    return out
