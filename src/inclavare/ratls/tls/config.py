"""RATS-TLS configuration: :class:`RatsTlsConfig` and the state it resolves once (verifier, attester, the
reusable certificate, cached SSL contexts).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from inclavare.ratls.dice import RatlsError
from inclavare.ratls.verifiers import (
    NONCE_CLAIM,
    NULLVERIFIER,
    VerificationCallback,
    Verifier,
    VerifyOptions,
    select_verifier,
)

log = logging.getLogger(__name__)


NULLATTESTER = "nullattester"
CRYPTO = ("ecdsa", "rsa")


class _Attester(Protocol):
    name: str
    priority: int
    evidence_kind: str

    def available(self) -> bool: ...

    def collect(self, report_data: bytes) -> Any: ...


@dataclass
class RatsTlsConfig:
    """One RATS-TLS configuration, shared by any number of connections.

    ``attester`` / ``verifier``: instance names (or, for the attester, an object with ``name``,
    ``evidence_kind`` and ``collect(report_data)``); None selects by priority (rats-tls' rule); a named
    verifier is enforced, otherwise it is re-selected from each peer's evidence type. ``crypto``: the key type
    of made certificates, ``ecdsa`` (P-256) or ``rsa`` (3072). ``mutual``: both sides attest. ``freshness``:
    nonce-bound certificates per connection. ``callback``: decides on the verified :class:`PeerClaims`.
    ``custom_claims``: name -> bytes put in the claims buffer (``nonce`` is reserved with freshness).
    ``provide_endorsements``: put the attester's collateral in the endorsements extension.
    ``collateral`` / ``snp_collateral`` / ``pccs`` / ``extra_certs`` / ``require_collateral``: what the verifier
    checks the peer's evidence against (see :class:`VerifyOptions`). ``trust_sim`` (+ ``sim_root_fingerprints``,
    default: the local simulated platform's root, from ``sim_state_dir``): accept simulated evidence through
    the ``sim`` verifier. ``require_evidence``: refuse peers without evidence (default: unless the verifier is
    ``nullverifier``). ``as_of``: time for validity checks. ``certificate`` + ``private_key`` (PEM or DER /
    PEM): serve these instead of making certificates. ``handshake_timeout``: seconds for the blocking
    handshake (default: the socket's own timeout)."""

    attester: Any = None
    verifier: str | None = None
    crypto: str = "ecdsa"
    mutual: bool = False
    freshness: bool = False
    callback: VerificationCallback | None = None
    custom_claims: Mapping[str, bytes] = field(default_factory=dict)
    provide_endorsements: bool = False
    collateral: Any = None
    snp_collateral: Any = None
    pccs: Any = None
    extra_certs: tuple[bytes, ...] = ()
    require_collateral: bool = False
    trust_sim: bool = False
    sim_root_fingerprints: tuple[str, ...] = ()
    sim_state_dir: str | None = None
    require_evidence: bool | None = None
    as_of: datetime.datetime | None = None
    certificate: bytes | None = None
    private_key: bytes | None = None
    handshake_timeout: float | None = None
    _state: _ConfigState = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._state = _ConfigState()

    # -- checks and selection (once, like rats_tls_init)

    def _check(self) -> None:
        if self.crypto not in CRYPTO:
            raise RatlsError(f"crypto {self.crypto!r}: expected one of {', '.join(CRYPTO)}")
        if not isinstance(self.custom_claims, Mapping):
            raise RatlsError("custom_claims: expected a mapping of name -> bytes")
        for k, v in self.custom_claims.items():
            if not isinstance(k, str) or not isinstance(v, bytes | bytearray):
                raise RatlsError(f"custom claim {k!r}: names are text and values bytes")
        if self.freshness and NONCE_CLAIM in self.custom_claims:
            raise RatlsError(f"custom claim {NONCE_CLAIM!r}: reserved for the freshness nonce")
        if (self.certificate is None) != (self.private_key is None):
            raise RatlsError("certificate and private_key go together")
        if self.handshake_timeout is not None and not self.handshake_timeout > 0:
            raise RatlsError(f"handshake_timeout {self.handshake_timeout!r}: expected a positive number")

    def verify_options(self) -> VerifyOptions:
        """The verifiers' options for this configuration."""
        return self._resolve().options

    def prepare(self, presents: bool = True) -> None:
        """Check the configuration and select the verifier and (when this side ``presents`` a certificate) the
        attester, and make the reusable certificate (not with freshness) now rather than at the first
        handshake, as ``rats_tls_init`` does. Raises on any configuration problem."""
        self._resolve()
        if presents:
            self._attester()
            if not self.freshness:
                self.certificate_and_key()

    @property
    def verifier_name(self) -> str:
        """The selected verifier (re-selected per peer unless it was named)."""
        return self._resolve().verifier.name

    @property
    def attester_name(self) -> str | None:
        """The selected attester (None when a certificate is configured)."""
        a = self._attester()
        return None if a is None else str(a.name)

    def _resolve(self) -> _Resolved:
        with self._state.lock:
            if self._state.resolved is None:
                self._check()
                fps = tuple(self.sim_root_fingerprints)
                if self.trust_sim and not fps:
                    from inclavare.sim.platform import SimPlatform

                    fps = (SimPlatform.open(self.sim_state_dir).root_ca_fingerprint(),)
                require = self.require_evidence
                if require is None:
                    require = self.verifier != NULLVERIFIER
                options = VerifyOptions(as_of=self.as_of, trust_sim=self.trust_sim, sim_root_fingerprints=fps,
                                        collateral=self.collateral, pccs=self.pccs,
                                        require_collateral=self.require_collateral,
                                        snp_collateral=self.snp_collateral, extra_certs=tuple(self.extra_certs),
                                        require_evidence=require)
                verifier = select_verifier(self.verifier, options)
                self._state.resolved = _Resolved(options=options, verifier=verifier, enforced=bool(self.verifier))
            return self._state.resolved

    def _attester(self) -> _Attester | None:
        """The attester (selected once); None when certificates are given."""
        if self.certificate is not None:
            return None
        with self._state.lock:
            if self._state.attester is None:
                a = self.attester
                if a is None or isinstance(a, str):
                    from inclavare.ratls.attesters import select_attester

                    a = select_attester(a or None)
                self._state.attester = a
                log.debug("the attester %r selected", getattr(a, "name", a))
            return self._state.attester  # type: ignore[no-any-return]

    # -- certificates

    def certificate_and_key(self, nonce: bytes | None = None) -> tuple[bytes, bytes]:
        """(certificate PEM or DER, private key PEM) to present: the configured pair, the cached one, or one made
        now (always made now when ``nonce`` is given: it goes in the ``nonce`` claim)."""
        self._resolve()
        if self.certificate is not None and self.private_key is not None:
            return bytes(self.certificate), bytes(self.private_key)
        attester = self._attester()
        if nonce is not None and not _is_null(attester):
            return self._make(attester, nonce)
        with self._state.lock:
            if self._state.material is None:
                self._state.material = self._make(attester, None)
            return self._state.material

    def _make(self, attester: Any, nonce: bytes | None) -> tuple[bytes, bytes]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        from inclavare.ratls.cert import make_certificate
        from inclavare.ratls.dice import build_claims_buffer, hash_public_key, report_data_for

        key: Any
        if self.crypto == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        if _is_null(attester):
            if self.custom_claims:
                log.warning("nullattester: the certificate carries no evidence, so no custom claims")
            return make_certificate(NULLATTESTER, None, key)
        claims = {k: bytes(v) for k, v in self.custom_claims.items()}
        if nonce is not None:
            claims[NONCE_CLAIM] = nonce
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        report_data = report_data_for(build_claims_buffer(hash_public_key(spki), claims))
        evidence = attester.collect(report_data)
        kind = getattr(evidence, "kind", None) or attester.evidence_kind
        data = getattr(evidence, "data", evidence)
        endorsements = getattr(evidence, "endorsements", None) if self.provide_endorsements else None

        def given(rd: bytes) -> bytes:
            if rd != report_data:
                raise RatlsError("certificate: the report data changed while the certificate was made")
            return bytes(data)

        try:
            return make_certificate(kind, given, key, claims, endorsements=endorsements)
        except RatlsError as e:
            if endorsements is None or "endorsements" not in str(e):
                raise
            log.warning("endorsements left out: %s", e)  # rats-tls tolerates failing endorsements too
            return make_certificate(kind, given, key, claims)


class _ConfigState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.resolved: _Resolved | None = None
        self.attester: Any = None
        self.material: tuple[bytes, bytes] | None = None
        # ("pyopenssl" or "ssl", server side, certificate) -> SSL.Context or ssl.SSLContext
        self.contexts: dict[tuple[str, bool, bytes], Any] = {}


@dataclass(frozen=True)
class _Resolved:
    options: VerifyOptions
    verifier: Verifier
    enforced: bool


def _is_null(attester: Any) -> bool:
    return attester is not None and (getattr(attester, "name", "") == NULLATTESTER
                                     or getattr(attester, "evidence_kind", "") in (NULLATTESTER, "null"))
