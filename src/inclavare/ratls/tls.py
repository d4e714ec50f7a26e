"""RATS-TLS connections: TLS (1.2 or 1.3, 1.3 preferred) whose certificates carry TEE evidence.

Configure once (:class:`RatsTlsConfig`), then per connection:

* blocking: ``h = RatsTls(config, server_side)``, ``h.negotiate(sock)``, ``h.transmit(data)``,
  ``h.receive(n)``, ``h.close()``;
* asyncio: ``h = AsyncRatsTls(config, server_side)``, ``await h.negotiate(reader, writer)`` (or
  ``await h.negotiate(sock)`` for a non-blocking socket), ``await h.transmit(data)``, ``await h.receive(n)``,
  ``await h.close()``; TLS runs over memory BIOs;
* socket style: ``s = wrap_socket(sock, config, server_side=...)`` gives ``send``, ``sendall``, ``recv``,
  ``recv_into``, ``makefile``, ``peer_claims``, ``getpeercert``, ``close``, so existing servers and clients
  (socketserver, http.client, ...) speak RATS-TLS unchanged.

Roles follow rats-tls: the server always presents an attested certificate and the client always verifies it;
with ``mutual`` the client presents one too and the server verifies it. One-way attestation is the default
(the client then needs no attester; ``nullattester`` says so explicitly). Certificates are made by the
configured attester once per configuration and reused, or per connection with ``freshness`` (below).

Peer certificates are judged in OpenSSL's verify callback (RA-TLS certificates are self-signed), so a rejected
peer gets a TLS alert and the handshake fails with :class:`PeerRejected` saying why. The blocking form runs TLS in
Python's ``ssl`` module (bulk data at its speed) and sets that callback, and the session cache off, on the
module's OpenSSL objects through ctypes; where those cannot be reached, and in the asyncio form, pyOpenSSL runs
it. Sessions are never resumed (no tickets, no session cache): every handshake
carries and verifies evidence.

Freshness (opt-in, beyond rats-tls; docs/ratls.md has the protocol): before the TLS handshake each verifying
side sends a random nonce on the plain socket, the attesting side puts it in its certificate's claims as the
``nonce`` custom claim (CCC interoperable RA-TLS), and the verifier accepts only evidence carrying its own
nonce, so a certificate captured from an earlier connection is refused.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import logging
import os
import select
import socket
import ssl
import struct
import tempfile
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from inclavare.ratls import ssl_hook
from inclavare.ratls.dice import RatlsError
from inclavare.ratls.verifiers import (
    NONCE_CLAIM,
    NULLVERIFIER,
    EvidenceRejected,
    PeerClaims,
    VerificationCallback,
    Verifier,
    VerifyOptions,
    select_verifier,
    verify_peer_certificate,
)
from inclavare.sockio import recv_exact

if TYPE_CHECKING:
    from OpenSSL import SSL, crypto

__all__ = [
    "FRESHNESS_MAGIC",
    "FRESHNESS_VERSION",
    "AsyncRatsTls",
    "FreshnessError",
    "PeerRejected",
    "RatsTls",
    "RatsTlsConfig",
    "RatsTlsError",
    "RatsTlsSocket",
    "RatsTlsTimeout",
    "decode_freshness_hello",
    "encode_freshness_hello",
    "wrap_socket",
]

log = logging.getLogger(__name__)

NULLATTESTER = "nullattester"
CRYPTO = ("ecdsa", "rsa")
RECORD = 16 * 1024 + 512  # one TLS record with its overhead

# Freshness exchange, version 1: magic(4) version(1) flags(1) nonce length(1) nonce(length)
FRESHNESS_MAGIC = b"RTFN"
FRESHNESS_VERSION = 1
FRESHNESS_HEADER = struct.Struct(">4sBBB")
FLAG_MUTUAL = 0x01
NONCE_SIZE = 32
NONCE_MIN, NONCE_MAX = 16, 64
TLS_HANDSHAKE_RECORD = 0x16


class RatsTlsError(RatlsError, OSError):
    """A RATS-TLS connection failed (handshake, freshness exchange, I/O). Also an OSError, like ``ssl.SSLError``,
    so socket servers treat it as a failed connection."""


class PeerRejected(RatsTlsError):
    """This side rejected the peer's certificate or evidence; the message says why."""


class FreshnessError(RatsTlsError):
    """The freshness exchange before the handshake failed."""


class RatsTlsTimeout(RatsTlsError, TimeoutError):
    """A receive or transmit timed out (the socket's timeout); the connection stays usable."""


class _Attester(Protocol):
    name: str
    priority: int
    evidence_kind: str

    def available(self) -> bool: ...

    def collect(self, report_data: bytes) -> Any: ...


# --------------------------------------------------------------------------------------------------
# Configuration


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


# --------------------------------------------------------------------------------------------------
# Freshness exchange


def encode_freshness_hello(mutual: bool, nonce: bytes | None) -> bytes:
    """One side's freshness hello: magic, version, flags (bit 0: mutual), nonce length, nonce."""
    nonce = nonce or b""
    if nonce and not NONCE_MIN <= len(nonce) <= NONCE_MAX:
        raise FreshnessError(f"freshness: a nonce is {NONCE_MIN}..{NONCE_MAX} bytes, not {len(nonce)}")
    return FRESHNESS_HEADER.pack(FRESHNESS_MAGIC, FRESHNESS_VERSION, FLAG_MUTUAL if mutual else 0, len(nonce)) + nonce


def decode_freshness_hello(header: bytes) -> tuple[bool, int]:
    """(peer is mutual, nonce length) from the 7-byte header; raises :class:`FreshnessError`."""
    if len(header) < FRESHNESS_HEADER.size:
        raise FreshnessError("freshness: the peer closed the connection during the freshness exchange (is "
                             "freshness enabled on both sides?)")
    magic, version, flags, length = FRESHNESS_HEADER.unpack(header[:FRESHNESS_HEADER.size])
    if magic != FRESHNESS_MAGIC:
        if header[0] == TLS_HANDSHAKE_RECORD or header[0] == 0x15:
            raise FreshnessError("freshness: the peer started TLS without the freshness exchange; enable "
                                 "freshness on both sides")
        raise FreshnessError(f"freshness: bad hello magic {magic.hex()} (expected {FRESHNESS_MAGIC.hex()})")
    if version != FRESHNESS_VERSION:
        raise FreshnessError(f"freshness: the peer speaks version {version}, this side version "
                             f"{FRESHNESS_VERSION}")
    if flags & ~FLAG_MUTUAL:
        raise FreshnessError(f"freshness: unknown flags {flags:#04x} in the peer's hello")
    if length and not NONCE_MIN <= length <= NONCE_MAX:
        raise FreshnessError(f"freshness: the peer's nonce is {length} bytes ({NONCE_MIN}..{NONCE_MAX} allowed)")
    return bool(flags & FLAG_MUTUAL), length


# --------------------------------------------------------------------------------------------------
# The part of a connection both forms share: roles, the SSL objects, the verify callback, error mapping


def _ssl() -> Any:
    from OpenSSL import SSL

    return SSL


class _Core:
    def __init__(self, config: RatsTlsConfig, server_side: bool) -> None:
        if not isinstance(config, RatsTlsConfig):
            raise RatlsError(f"config: expected a RatsTlsConfig, got {type(config).__name__}")
        self.config = config
        self.server_side = server_side
        self.resolved = config._resolve()
        self.presents = server_side or config.mutual
        self.verifies = (not server_side) or config.mutual
        if self.presents:
            config._attester()  # select now: configuration errors surface before any I/O
        self.sent_nonce: bytes | None = None
        self.peer: PeerClaims | None = None
        self.peer_der: bytes | None = None
        self.reject_reason: str | None = None
        self.conn: SSL.Connection | None = None
        self.failed: str | None = None

    @property
    def role(self) -> str:
        return "server" if self.server_side else "client"

    # -- freshness

    def wants_nonce(self) -> bool:
        r = self.resolved
        return self.config.freshness and self.verifies and not (r.enforced and r.verifier.name == NULLVERIFIER)

    def hello(self) -> bytes:
        if self.wants_nonce():
            self.sent_nonce = os.urandom(NONCE_SIZE)
        return encode_freshness_hello(self.config.mutual, self.sent_nonce)

    def check_peer_hello(self, peer_mutual: bool, length: int) -> None:
        if peer_mutual != self.config.mutual:
            raise FreshnessError(f"freshness: mutual attestation is configured on "
                                 f"{'the peer' if peer_mutual else 'this side'} only")
        if length and not self.presents:
            raise FreshnessError("freshness: the peer sent a nonce, but this side presents no certificate")

    # -- TLS objects

    def context(self, material: tuple[bytes, bytes] | None) -> SSL.Context:
        """The SSL context: shared by the connections of a configuration that present the same (reused)
        certificate, new for a certificate made for one connection."""
        return self._cached("pyopenssl", material, self._new_context)  # type: ignore[no-any-return]

    def ssl_context(self, material: tuple[bytes, bytes] | None) -> ssl.SSLContext | None:
        """An ``ssl`` module context for this side (cached as :meth:`context`), or None when the ``ssl`` module's
        OpenSSL cannot be reached for what the module lacks (session cache off, verify callback): then pyOpenSSL
        carries the connection."""
        if not ssl_hook.available():
            return None
        return self._cached("ssl", material, self._new_ssl_context)  # type: ignore[no-any-return]

    def _cached(self, kind: str, material: tuple[bytes, bytes] | None, make: Any) -> Any:
        state = self.config._state
        reused = material is None or material is state.material or self.config.certificate is not None
        key = (kind, self.server_side, material[0] if material is not None else b"")
        if reused:
            with state.lock:
                cached = state.contexts.get(key)
            if cached is not None:
                return cached
        ctx = make(material)
        if reused and ctx is not None:
            with state.lock:
                state.contexts.setdefault(key, ctx)
        return ctx

    def _new_ssl_context(self, material: tuple[bytes, bytes] | None) -> ssl.SSLContext | None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if self.server_side else ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        # a verifying side sets its own verify callback on each connection (RatsTls._ssl_handshake)
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        if self.server_side:
            ctx.num_tickets = 0
        if not ssl_hook.session_cache_off(ctx):
            return None
        if material is not None:
            _use_ssl_material(ctx, *material)
        return ctx

    def _new_context(self, material: tuple[bytes, bytes] | None) -> SSL.Context:
        from OpenSSL import SSL
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD if self.server_side else SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        # pyOpenSSL turns partial writes on; with them off one SSL_write takes a whole buffer (several records),
        # which saves a Python round trip per 16 KiB record on bulk transfers
        ctx.clear_mode(SSL._lib.SSL_MODE_ENABLE_PARTIAL_WRITE)  # type: ignore[attr-defined]
        if self.verifies:
            mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if self.server_side else 0)
            ctx.set_verify(mode, _verify_callback)
        else:
            ctx.set_verify(SSL.VERIFY_NONE)
        if material is not None:
            _use_material(ctx, *material)
        return ctx

    def material(self, peer_nonce: bytes | None) -> tuple[bytes, bytes] | None:
        """Our certificate and key (made now with a nonce), or None when this side presents none."""
        if not self.presents:
            return None
        try:
            return self.config.certificate_and_key(peer_nonce)
        except Exception as e:
            raise RatsTlsError(f"cannot make our certificate: {e}") from None

    def connection(self, sock: Any, material: tuple[bytes, bytes] | None) -> SSL.Connection:
        from OpenSSL import SSL
        conn = SSL.Connection(self.context(material), sock)
        conn.set_app_data(self)
        if self.server_side:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
        self.conn = conn
        return conn

    # -- the verify callback's work

    def judge(self, x509: crypto.X509, depth: int) -> bool:
        if depth > 0:
            return True  # the decision is made on the peer's own certificate, which must be self-signed
        from OpenSSL import crypto

        return self.judge_der(crypto.dump_certificate(crypto.FILETYPE_ASN1, x509))

    def judge_der(self, der: bytes) -> bool:
        """Verify the peer's own certificate (DER); False with ``reject_reason`` set when it is refused."""
        if self.peer is not None and der == self.peer_der:
            return True
        if self.reject_reason is not None:
            return False
        r = self.resolved
        try:
            self.peer = verify_peer_certificate(der, r.verifier, enforced=r.enforced, options=r.options,
                                                expected_nonce=self.sent_nonce,
                                                callback=self.config.callback)
            self.peer_der = der
            log.debug("%s: peer verified by %s (%s)", self.role, self.peer.verifier, self.peer.tee)
            return True
        except EvidenceRejected as e:
            self.reject_reason = str(e)
        except Exception as e:  # fail closed on anything unexpected, with the reason kept
            self.reject_reason = f"internal error while verifying: {type(e).__name__}: {e}"
        log.debug("%s: peer rejected: %s", self.role, self.reject_reason)
        return False

    def finish(self) -> PeerClaims | None:
        if self.verifies and self.peer is None:
            self.failed = "the peer's certificate was not verified"
            raise PeerRejected("the peer's certificate was not verified")
        return self.peer

    def error(self, e: BaseException, during: str = "handshake") -> RatsTlsError:
        SSL = _ssl()
        if isinstance(e, TimeoutError) and during != "handshake":
            return RatsTlsTimeout(f"timed out during the TLS {during}")
        if self.reject_reason is not None:
            err: RatsTlsError = PeerRejected(f"peer certificate rejected: {self.reject_reason}")
        elif isinstance(e, SSL.SysCallError | SSL.ZeroReturnError | EOFError | ConnectionError | ssl.SSLEOFError
                        | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
            err = RatsTlsError(f"the peer closed the connection during the TLS {during}"
                               + (" (it may have rejected our certificate)" if during == "handshake" else ""))
        elif isinstance(e, SSL.Error | ssl.SSLError):
            reasons = _ssl_reasons(e)
            hint = " (the peer rejected our certificate, or it rejected the connection)" if "alert" in reasons else ""
            err = RatsTlsError(f"TLS {during} failed: {reasons}{hint}")
        elif isinstance(e, RatsTlsError):
            err = e
        elif isinstance(e, TimeoutError):
            err = RatsTlsError(f"timed out during the TLS {during}")
        else:
            err = RatsTlsError(f"TLS {during} failed: {e}")
        self.failed = str(err)
        return err

    def describe(self) -> str:
        if self.conn is None:
            return "not connected"
        return f"{self.conn.get_protocol_version_name()} {self.conn.get_cipher_name()}"


def _verify_callback(conn: SSL.Connection, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    core = conn.get_app_data()
    if not isinstance(core, _Core):
        return False
    return core.judge(x509, depth)


def _load_material(cert: bytes, key: bytes) -> tuple[Any, Any]:
    """(certificate, private key) to present. The certificate is a ``cryptography`` object, or, for one that
    ``cryptography`` refuses but the RA-TLS reader tolerates (mbedTLS' explicit NULL on the ECDSA signature
    algorithm), OpenSSL's own X509 object holding the exact bytes given: presented as it was signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        k = serialization.load_pem_private_key(key, password=None) if b"-----BEGIN" in key[:64] else \
            serialization.load_der_private_key(key, password=None)
    except ValueError as e:
        raise RatlsError(f"certificate/private key: not loadable ({e})") from None
    try:
        c: Any = x509.load_pem_x509_certificate(cert) if b"-----BEGIN" in cert[:64] else \
            x509.load_der_x509_certificate(cert)
    except ValueError as e:
        c = _load_tolerated(cert, e)
    return c, k


def _load_tolerated(cert: bytes, strict_error: ValueError) -> Any:
    from OpenSSL import crypto

    from inclavare.ratls.cert import null_param_der

    der = null_param_der(cert)
    if der is None:
        raise RatlsError(f"certificate/private key: not loadable ({strict_error})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return crypto.load_certificate(crypto.FILETYPE_ASN1, der)


def _certificate_pem(c: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if hasattr(c, "public_bytes"):
        return bytes(c.public_bytes(serialization.Encoding.PEM))
    from OpenSSL import crypto

    return bytes(crypto.dump_certificate(crypto.FILETYPE_PEM, c))


def _use_material(ctx: SSL.Context, cert: bytes, key: bytes) -> None:
    c, k = _load_material(cert, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyOpenSSL's X509 (the tolerated certificates)
        ctx.use_certificate(c)
    ctx.use_privatekey(k)
    try:
        ctx.check_privatekey()
    except Exception:
        raise RatlsError("certificate/private key: the private key does not match the certificate") from None


def _use_ssl_material(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a certificate and key into an ``ssl`` context, which reads them only from a file: an anonymous
    memory file (memfd), else a private temporary file removed right after loading."""
    from cryptography.hazmat.primitives import serialization

    c, k = _load_material(cert, key)
    pem = _certificate_pem(c) + k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.memfd_create("rats-tls-key", os.MFD_CLOEXEC)
        path, tmpdir = f"/proc/self/fd/{fd}", None
    except (AttributeError, OSError):
        tmpdir = tempfile.mkdtemp(prefix="rats-tls-")  # mode 0700
        fd, path = tempfile.mkstemp(dir=tmpdir)
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view):]
        ctx.load_cert_chain(path)
    except ssl.SSLError:
        raise RatlsError("certificate/private key: the private key does not match the certificate") from None
    finally:
        os.close(fd)
        if tmpdir is not None:
            os.unlink(path)
            os.rmdir(tmpdir)


class _SslConnection:
    """What :attr:`RatsTls.connection` is on the ``ssl`` module path: the pyOpenSSL ``Connection`` queries
    callers use, answered by the ``ssl`` object."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def get_protocol_version_name(self) -> str:
        return str(self._obj.version() or "Unknown")

    def _cipher(self, i: int) -> Any:
        c = self._obj.cipher()
        return c[i] if c else None

    def get_cipher_name(self) -> str | None:
        return self._cipher(0)  # type: ignore[no-any-return]

    def get_cipher_version(self) -> str | None:
        return self._cipher(1)  # type: ignore[no-any-return]

    def get_cipher_bits(self) -> int | None:
        return self._cipher(2)  # type: ignore[no-any-return]

    def pending(self) -> int:
        return int(self._obj.pending())


def _is_eof(e: BaseException) -> bool:
    """A clean close (close_notify) or an EOF without one (treated as end of data, as ``ssl``'s default)."""
    SSL = _ssl()
    if isinstance(e, SSL.ZeroReturnError):
        return True
    return isinstance(e, SSL.SysCallError) and bool(e.args) and e.args[0] in (-1, 0)


def _ssl_reasons(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):  # the ssl module names the reason as OPENSSL_CONSTANT; pyOpenSSL in words
        reason = getattr(e, "reason", None)
        return str(reason).lower().replace("_", " ") if reason else (str(e) or type(e).__name__)
    parts: list[str] = []
    for item in (e.args[0] if e.args and isinstance(e.args[0], list) else []):
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return "; ".join(parts) or str(e) or type(e).__name__


# --------------------------------------------------------------------------------------------------
# Blocking form


class RatsTls:
    """One RATS-TLS connection over a connected blocking (or timeout) socket, which the caller owns.

    TLS runs in Python's ``ssl`` module (record I/O in C, on the caller's socket: bulk transfers cost what plain
    ``ssl`` costs), with the two things it lacks done on its OpenSSL objects directly: the session cache off,
    and an OpenSSL verify callback that judges the peer's self-signed RA-TLS certificate during the handshake,
    exactly as the pyOpenSSL path does (a rejected peer gets an alert; :class:`PeerRejected`). When those
    objects cannot be reached (not CPython, an unexpected layout), pyOpenSSL carries the connection."""

    def __init__(self, config: RatsTlsConfig, server_side: bool) -> None:
        self._core = _Core(config, server_side)
        self._sock: socket.socket | None = None
        self._closed = False
        self._fast: Any = None  # the ssl module's connection object, on that path
        self._verify_cb: Any = None  # its verify callback, kept alive with it

    @property
    def peer_claims(self) -> PeerClaims | None:
        """The verified peer (None before the handshake, and for the server in one-way mode)."""
        return self._core.peer

    @property
    def peer_certificate(self) -> bytes | None:
        return self._core.peer_der

    @property
    def nonce(self) -> bytes | None:
        """The freshness nonce this side sent (None without freshness)."""
        return self._core.sent_nonce

    @property
    def connection(self) -> Any:
        """The pyOpenSSL ``Connection`` (after :meth:`negotiate`); on the ``ssl`` module path an object answering
        ``get_protocol_version_name``, ``get_cipher_name``, ``get_cipher_version``, ``get_cipher_bits`` and
        ``pending`` alike."""
        return self._core.conn

    def negotiate(self, sock: socket.socket) -> PeerClaims | None:
        """Freshness exchange (if configured) and TLS handshake on ``sock``; returns the verified peer (None when
        this side does not verify). Raises :class:`PeerRejected`, :class:`FreshnessError`, :class:`RatsTlsError`."""
        if self._sock is not None:
            raise RatsTlsError("RATS-TLS handle: negotiate() was already called on it")
        core = self._core
        self._sock = sock
        saved = sock.gettimeout()
        if core.config.handshake_timeout is not None:
            sock.settimeout(core.config.handshake_timeout)
        try:
            peer_nonce = self._freshness(sock) if core.config.freshness else None
            material = core.material(peer_nonce)
            ctx = core.ssl_context(material)
            if ctx is None or not self._ssl_handshake(sock, ctx):
                conn = core.connection(sock, material)
                self._retry(conn.do_handshake)
        except RatlsError as e:
            if isinstance(e, RatsTlsError):
                core.failed = str(e)
                raise
            raise core.error(e) from None
        except Exception as e:
            raise core.error(e) from None
        finally:
            if core.config.handshake_timeout is not None:
                sock.settimeout(saved)
        peer = core.finish()
        log.debug("rats-tls %s: negotiated %s", core.role, core.describe())
        return peer

    def _ssl_handshake(self, sock: socket.socket, ctx: ssl.SSLContext) -> bool:
        """The handshake in the ``ssl`` module; False (nothing done) when its SSL object cannot be reached."""
        core = self._core
        # the C object under ssl.SSLSocket: it does its I/O on the socket's descriptor, honours the socket's
        # timeout and, unlike SSLContext.wrap_socket, leaves the socket object with its owner
        obj = ctx._wrap_socket(sock, core.server_side, None)  # type: ignore[attr-defined]
        # the ssl module cannot judge a self-signed certificate: an OpenSSL verify callback does, during the
        # handshake, so a rejected peer gets an alert as with pyOpenSSL (ratls/ssl_hook.py)
        handle = ssl_hook.install_verify_callback(obj, ctx, core if core.verifies else None,
                                                  require_peer=core.server_side)
        if handle is None:
            return False
        self._verify_cb = handle
        self._fast = obj
        core.conn = _SslConnection(obj)  # type: ignore[assignment]
        obj.do_handshake()
        if core.verifies and (core.peer is None or obj.getpeercert(True) != core.peer_der):
            core.peer = None  # fail closed: what was verified must be what the peer presented
        return True

    def _freshness(self, sock: socket.socket) -> bytes | None:
        core = self._core
        try:
            mine = core.hello()
            if core.server_side:
                header = recv_exact(sock, FRESHNESS_HEADER.size)
                mutual, length = decode_freshness_hello(header)
                nonce = recv_exact(sock, length)
                if len(nonce) != length:
                    raise FreshnessError("freshness: the peer closed the connection in the middle of its nonce")
                sock.sendall(mine)
            else:
                sock.sendall(mine)
                header = recv_exact(sock, FRESHNESS_HEADER.size)
                mutual, length = decode_freshness_hello(header)
                nonce = recv_exact(sock, length)
                if len(nonce) != length:
                    raise FreshnessError("freshness: the peer closed the connection in the middle of its nonce")
        except FreshnessError:
            raise
        except TimeoutError:
            raise FreshnessError("freshness: timed out in the freshness exchange") from None
        except OSError as e:
            raise FreshnessError(f"freshness: {e.strerror or e} (is freshness "
                                 "enabled on both sides?)") from None
        core.check_peer_hello(mutual, length)
        return nonce or None

    def _retry(self, fn: Any, *args: Any) -> Any:
        SSL = _ssl()
        sock = self._sock
        assert sock is not None
        while True:
            try:
                return fn(*args)
            except SSL.WantReadError:
                self._wait(sock, True)
            except SSL.WantWriteError:
                self._wait(sock, False)

    @staticmethod
    def _wait(sock: socket.socket, readable: bool) -> None:
        timeout = sock.gettimeout()
        fd = sock.fileno()
        r, w, _ = select.select([fd] if readable else [], [] if readable else [fd], [], timeout)
        if not r and not w:
            raise TimeoutError("timed out")

    def _conn(self) -> Any:
        conn = self._core.conn
        if conn is None or self._closed:
            raise RatsTlsError("RATS-TLS handle: not connected (negotiate() first)")
        if self._core.failed:
            raise RatsTlsError(f"RATS-TLS handle: the connection failed earlier: {self._core.failed}")
        return conn

    def transmit(self, data: bytes | bytearray | memoryview) -> int:
        """Send all of ``data``; returns its length."""
        conn = self._conn()
        view = memoryview(data).cast("B")
        sent = 0
        fast = self._fast
        try:
            while sent < len(view):
                if fast is not None:
                    sent += fast.write(view[sent:])
                else:
                    sent += self._retry(conn.send, view[sent:sent + RECORD * 4])
        except RatsTlsError:
            raise
        except Exception as e:
            raise self._core.error(e, "transmit") from None
        return sent

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Send some of ``data`` (at least one byte); returns how much."""
        conn = self._conn()
        try:
            if self._fast is not None:
                return int(self._fast.write(memoryview(data).cast("B")[:RECORD * 4]))
            return int(self._retry(conn.send, memoryview(data).cast("B")[:RECORD * 4]))
        except Exception as e:
            raise self._core.error(e, "transmit") from None

    def receive(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" when the peer closed the connection."""
        conn = self._conn()
        if self._fast is not None:
            try:
                return bytes(self._fast.read(min(n, RECORD)))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except Exception as e:
                raise self._core.error(e, "receive") from None
        SSL = _ssl()
        try:
            # one TLS record at most comes back per read: asking for more only makes pyOpenSSL allocate and
            # zero a bigger buffer on every call
            return bytes(self._retry(conn.recv, min(n, RECORD)))
        except SSL.Error as e:
            if _is_eof(e):
                return b""
            raise self._core.error(e, "receive") from None
        except Exception as e:
            raise self._core.error(e, "receive") from None

    def receive_into(self, buffer: Any, n: int = 0) -> int:
        conn = self._conn()
        if self._fast is not None:
            try:
                return int(self._fast.read(n or len(memoryview(buffer)), buffer))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0
            except Exception as e:
                raise self._core.error(e, "receive") from None
        SSL = _ssl()
        try:
            want = min(n or len(memoryview(buffer)), RECORD)  # see receive()
            return int(self._retry(conn.recv_into, buffer, want))
        except SSL.Error as e:
            if _is_eof(e):
                return 0
            raise self._core.error(e, "receive") from None
        except Exception as e:
            raise self._core.error(e, "receive") from None

    def pending(self) -> int:
        conn = self._core.conn
        return int(conn.pending()) if conn is not None else 0

    def close(self) -> None:
        """Send close_notify (best effort); the socket stays open and belongs to the caller."""
        if self._closed:
            return
        self._closed = True
        conn = self._core.conn
        if self._fast is not None and self._sock is not None and not self._core.failed:
            # the ssl module's shutdown would then wait for the peer's close_notify on a blocking socket: send
            # ours without waiting, as pyOpenSSL's shutdown does
            sock, saved = self._sock, self._sock.gettimeout()
            try:
                sock.settimeout(0)
                self._fast.shutdown()
            except Exception:  # the peer may be gone, or has not answered yet; closing is best effort
                pass
            finally:
                try:
                    sock.settimeout(saved)
                except OSError:
                    pass
        elif conn is not None and not self._core.failed:
            try:
                conn.shutdown()
            except Exception:  # the peer may be gone; closing is best effort
                pass

    def __enter__(self) -> RatsTls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# asyncio form


class _AsyncIO:
    """Bytes in and out for the async form: a StreamReader/StreamWriter pair, or a non-blocking socket."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.sock: socket.socket | None = reader if isinstance(reader, socket.socket) else None
        self.reader = reader
        self.writer = writer
        if self.sock is None and writer is None:
            raise RatlsError("negotiate: give a reader and a writer, or a socket")
        if self.sock is not None:
            self.sock.setblocking(False)

    async def read(self, n: int) -> bytes:
        if self.sock is not None:
            return await asyncio.get_running_loop().sock_recv(self.sock, n)
        return bytes(await self.reader.read(n))

    async def read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.read(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    async def write(self, data: bytes) -> None:
        if self.sock is not None:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        else:
            self.writer.write(data)
            await self.writer.drain()


class AsyncRatsTls:
    """One RATS-TLS connection for asyncio; TLS runs over pyOpenSSL memory BIOs. Certificates are made in the
    default executor; the peer's certificate is judged inside the handshake (synchronously)."""

    def __init__(self, config: RatsTlsConfig, server_side: bool) -> None:
        self._core = _Core(config, server_side)
        self._io: _AsyncIO | None = None
        self._closed = False

    @property
    def peer_claims(self) -> PeerClaims | None:
        return self._core.peer

    @property
    def nonce(self) -> bytes | None:
        return self._core.sent_nonce

    async def negotiate(self, reader: Any, writer: Any = None) -> PeerClaims | None:
        """Freshness exchange and handshake over ``reader``/``writer`` (asyncio streams) or a socket."""
        if self._io is not None:
            raise RatsTlsError("RATS-TLS handle: negotiate() was already called on it")
        core = self._core
        io_ = self._io = _AsyncIO(reader, writer)
        SSL = _ssl()
        try:
            peer_nonce = await self._freshness(io_) if core.config.freshness else None
            # make (or fetch) the certificate off the event loop
            material = await asyncio.get_running_loop().run_in_executor(None, core.material, peer_nonce)
            conn = core.connection(None, material)
            while True:
                try:
                    conn.do_handshake()
                    await self._flush()
                    break
                except SSL.WantReadError:
                    await self._flush()
                    data = await io_.read(RECORD)
                    if not data:
                        raise EOFError("end of stream") from None
                    conn.bio_write(data)
                except SSL.Error:
                    try:
                        await self._flush()  # the alert
                    except OSError:
                        pass
                    raise
        except RatsTlsError as e:
            core.failed = str(e)
            raise
        except Exception as e:
            raise core.error(e) from None
        return core.finish()

    async def _freshness(self, io_: _AsyncIO) -> bytes | None:
        core = self._core
        mine = core.hello()
        try:
            if not core.server_side:
                await io_.write(mine)
            mutual, length = decode_freshness_hello(await io_.read_exactly(FRESHNESS_HEADER.size))
            nonce = await io_.read_exactly(length)
            if len(nonce) != length:
                raise FreshnessError("freshness: the peer closed the connection in the middle of its nonce")
            if core.server_side:
                await io_.write(mine)
        except FreshnessError:
            raise
        except OSError as e:
            raise FreshnessError(f"freshness: {e.strerror or e} (is freshness enabled on both sides?)") from None
        core.check_peer_hello(mutual, length)
        return nonce or None

    async def _flush(self) -> None:
        SSL = _ssl()
        conn, io_ = self._core.conn, self._io
        assert conn is not None and io_ is not None
        out = bytearray()
        while True:
            try:
                out += conn.bio_read(RECORD * 4)
            except SSL.WantReadError:
                break
        if out:
            await io_.write(bytes(out))

    def _conn(self) -> Any:
        conn = self._core.conn
        if conn is None or self._closed:
            raise RatsTlsError("RATS-TLS handle: not connected (negotiate() first)")
        if self._core.failed:
            raise RatsTlsError(f"RATS-TLS handle: the connection failed earlier: {self._core.failed}")
        return conn

    async def transmit(self, data: bytes | bytearray | memoryview) -> int:
        conn = self._conn()
        view = memoryview(data).cast("B")
        try:
            sent = 0
            while sent < len(view):
                sent += conn.send(view[sent:sent + RECORD * 4])
                await self._flush()
        except Exception as e:
            raise self._core.error(e, "transmit") from None
        return sent

    async def receive(self, n: int) -> bytes:
        conn = self._conn()
        SSL = _ssl()
        assert self._io is not None
        eof = False
        try:
            while True:
                try:
                    data = bytes(conn.recv(n))
                    await self._flush()  # post-handshake messages may need answers
                    return data
                except SSL.WantReadError:
                    if eof:
                        return b""
                    await self._flush()
                    chunk = await self._io.read(RECORD)
                    if not chunk:
                        conn.bio_shutdown()
                        eof = True
                        continue
                    conn.bio_write(chunk)
        except SSL.Error as e:
            if _is_eof(e):
                return b""
            raise self._core.error(e, "receive") from None
        except Exception as e:
            raise self._core.error(e, "receive") from None

    async def close(self) -> None:
        """Send close_notify (best effort); the streams/socket stay with the caller."""
        if self._closed:
            return
        self._closed = True
        conn = self._core.conn
        if conn is not None and not self._core.failed:
            try:
                conn.shutdown()
                await self._flush()
            except Exception:  # best effort
                pass


# --------------------------------------------------------------------------------------------------
# ssl-style wrapped socket


class RatsTlsSocket:
    """A connected socket speaking RATS-TLS, shaped like ``ssl.SSLSocket`` for code that expects one."""

    def __init__(self, sock: socket.socket, config: RatsTlsConfig, server_side: bool,
                 do_handshake_on_connect: bool = True) -> None:
        self._sock = sock
        self._tls = RatsTls(config, server_side)
        self._handshaken = False
        self._io_refs = 0
        self._closed = False
        self.server_side = server_side
        if do_handshake_on_connect:
            self.do_handshake()

    # -- handshake and peer

    def do_handshake(self) -> None:
        if self._handshaken:
            return
        self._handshaken = True
        self._tls.negotiate(self._sock)

    def _ready(self) -> RatsTls:
        if self._closed:
            raise OSError(9, "Bad file descriptor (the RATS-TLS socket is closed)")
        if not self._handshaken:
            self.do_handshake()
        return self._tls

    @property
    def peer_claims(self) -> PeerClaims | None:
        """The verified peer (None for a one-way server, or before the handshake)."""
        return self._tls.peer_claims

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate: DER with ``binary_form``, else its verified claims as a dict (None when the
        peer was not verified)."""
        if binary_form:
            return self._tls.peer_certificate
        peer = self._tls.peer_claims
        return peer.to_dict() if peer is not None else None

    def version(self) -> str | None:
        conn = self._tls.connection
        return str(conn.get_protocol_version_name()) if conn is not None and self._handshaken else None

    def cipher(self) -> tuple[str, str, int] | None:
        conn = self._tls.connection
        if conn is None or not self._handshaken:
            return None
        return (str(conn.get_cipher_name()), str(conn.get_cipher_version()), int(conn.get_cipher_bits() or 0))

    def pending(self) -> int:
        return self._tls.pending()

    # -- data

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        return self._ready().send(data)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        self._ready().transmit(data)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._ready().receive(bufsize)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._ready().receive_into(buffer, nbytes)

    def read(self, n: int = 1024) -> bytes:
        return self.recv(n)

    def write(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def makefile(self, mode: str = "r", buffering: int | None = None, *, encoding: str | None = None,
                 errors: str | None = None, newline: str | None = None) -> Any:
        """A file object over the TLS stream, as ``socket.makefile``."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = socket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        binary = "b" in mode
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._real_close()

    # -- the socket underneath

    def fileno(self) -> int:
        return self._sock.fileno()

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    @property
    def family(self) -> int:
        return int(self._sock.family)

    @property
    def type(self) -> int:
        return int(self._sock.type)

    def shutdown(self, how: int) -> None:
        """Send close_notify, then shut the socket down (``how`` as ``socket.shutdown``)."""
        if self._handshaken:
            self._tls.close()
        try:
            self._sock.shutdown(how)
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        if self._handshaken:
            self._tls.close()
        self._sock.close()

    def __enter__(self) -> RatsTlsSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("negotiated" if self._handshaken else "connected")
        return f"<RatsTlsSocket {'server' if self.server_side else 'client'} {state} fd={self._sock.fileno()}>"


def wrap_socket(sock: socket.socket, config: RatsTlsConfig, *, server_side: bool = False,
                do_handshake_on_connect: bool = True) -> RatsTlsSocket:
    """Wrap a connected socket. With ``do_handshake_on_connect=False`` the handshake happens on first use (or
    :meth:`RatsTlsSocket.do_handshake`), e.g. in a socketserver handler thread rather than the accept loop.
    The socket belongs to the wrapper from now on (``close`` closes it)."""
    return RatsTlsSocket(sock, config, server_side, do_handshake_on_connect)


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER, hex (for logs)."""
    return hashlib.sha256(der).hexdigest()
