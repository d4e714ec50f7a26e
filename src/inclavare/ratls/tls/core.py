"""The part of a connection both forms share: roles, the SSL objects, the verify callback glue, error mapping."""

from __future__ import annotations

import logging
import os
import ssl
from typing import TYPE_CHECKING, Any

from inclavare.ratls import ssl_hook
from inclavare.ratls.dice import RatlsError
from inclavare.ratls.tls.config import RatsTlsConfig
from inclavare.ratls.tls.errors import FreshnessError, PeerRejected, RatsTlsError, RatsTlsTimeout
from inclavare.ratls.tls.freshness import NONCE_SIZE, encode_freshness_hello
from inclavare.ratls.tls.material import _use_material, _use_ssl_material
from inclavare.ratls.verifiers import (
    NULLVERIFIER,
    EvidenceRejected,
    PeerClaims,
    verify_peer_certificate,
)

if TYPE_CHECKING:
    from OpenSSL import SSL, crypto

log = logging.getLogger(__name__)


RECORD = 16 * 1024 + 512  # one TLS record with its overhead


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


class _Handle:
    """What the blocking and the asyncio connection objects share: the core, the peer's results, and the check
    that the connection may carry data."""

    def __init__(self, config: RatsTlsConfig, server_side: bool) -> None:
        self._core = _Core(config, server_side)
        self._closed = False

    @property
    def peer_claims(self) -> PeerClaims | None:
        """The verified peer (None before the handshake, and for the server in one-way mode)."""
        return self._core.peer

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) as verified during the handshake."""
        return self._core.peer_der

    @property
    def nonce(self) -> bytes | None:
        """The freshness nonce this side sent (None without freshness)."""
        return self._core.sent_nonce

    @property
    def connection(self) -> Any:
        """The pyOpenSSL ``Connection`` (after negotiation); on the blocking form's ``ssl`` module path an object
        answering ``get_protocol_version_name``, ``get_cipher_name``, ``get_cipher_version``,
        ``get_cipher_bits`` and ``pending`` alike."""
        return self._core.conn

    def _conn(self) -> Any:
        """The connection, when it may carry data: negotiated, not closed, not failed."""
        conn = self._core.conn
        if conn is None or self._closed:
            raise RatsTlsError("RATS-TLS handle: not connected (negotiate() first)")
        if self._core.failed:
            raise RatsTlsError(f"RATS-TLS handle: the connection failed earlier: {self._core.failed}")
        return conn

    def _end_of_data(self, e: Exception) -> None:
        """Return when ``e``, raised while receiving, is the peer closing the connection (end of data); raise it
        as this connection's error otherwise."""
        if not _is_eof(e):
            raise self._core.error(e, "receive") from None


def _verify_callback(conn: SSL.Connection, x509: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    core = conn.get_app_data()
    if not isinstance(core, _Core):
        return False
    return core.judge(x509, depth)


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
    """A clean close (close_notify) or an EOF without one (treated as end of data, as ``ssl``'s default), from
    pyOpenSSL or the ``ssl`` module."""
    if isinstance(e, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return True
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
