"""signature-server: sign SGX enclave SIGSTRUCTs on behalf of clients that do not hold the signing key.

The HTTP API is upstream's (inclavare-containers ``shim/runtime/signature``), so its clients work unchanged:

    POST /api/v1/signature/pkcs1        body: the 256 bytes of SIGSTRUCT signing material (HEADER || BODY)
                                        200 {"signature": base64 big-endian PKCS#1 v1.5 SHA-256,
                                             "publicKey": PEM SubjectPublicKeyInfo}
    GET  /api/v1/signature/public-key   200 text/plain, the public key PEM
    GET  /ping                          200 "ping"
    GET  /healthz                       200 "ok"
    HEAD /                              200

What upstream does not have:

* HTTPS (``cert`` + ``tls_key``), and mutual TLS with ``client_ca``;
* an allow-list for signing: bearer tokens, stored only as SHA-256 hashes (``tokens_file``), and/or client
  certificates issued by ``client_ca``, optionally narrowed to subject CNs and SHA-256 fingerprints. A
  server without an allow-list refuses to start unless ``allow_anyone`` is set;
* an append-only, fsync'd JSON-lines audit log of every signing request (who, what enclave, outcome). A
  signature is only returned once its audit line is on disk;
* refusal of material that is not a SIGSTRUCT's HEADER || BODY: 400 with ``{"error": "..."}``.

Errors are JSON ``{"error": "..."}`` with 400 (malformed material or request), 401 (no or unknown
credentials), 403 (authenticated but not allowed), 404, 405, 411, 413 or 500.

:class:`SignatureClient` is the matching client (it always verifies the server's certificate).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import logging
import os
import socket
import ssl
import stat
import sys
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inclavare.errors import InclavareError
from inclavare.formats.sgx import (
    ATTRIBUTE_FLAGS_RESERVED,
    SIGNING_MATERIAL_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    SgxFormatError,
    SigStruct,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "API_PREFIX",
    "DEFAULT_LISTEN",
    "AccessPolicy",
    "AuditLog",
    "Decision",
    "MaterialError",
    "ServerConfig",
    "SignatureClient",
    "SignatureServer",
    "SignatureServerError",
    "check_material",
    "hash_token",
    "load_signing_key",
    "load_token_hashes",
    "make_server",
    "parse_listen",
]

log = logging.getLogger("inclavare.signature_server")

API_PREFIX = "/api/v1/signature"
DEFAULT_LISTEN = ":9080"
MAX_BODY = 64 << 10  # bodies beyond this are refused without being read
IO_TIMEOUT = 30.0  # seconds a client may take for the TLS handshake or one request


class SignatureServerError(InclavareError):
    """The signature server cannot be configured or started, or a request to one failed."""


class MaterialError(InclavareError):
    """A signing request's body is not SIGSTRUCT signing material; the message says what is wrong."""


# --------------------------------------------------------------------------------------------------
# Signing material


def check_material(material: bytes) -> SigStruct:
    """Parse and check 256 bytes of signing material; returns the unsigned SIGSTRUCT they describe.

    Refused: a wrong size, wrong HEADER constants, non-zero reserved bytes, bad TYPE or VENDOR, an all-zero
    ENCLAVEHASH, ATTRIBUTES with INIT or reserved bits set, or XFRM without x87 and SSE."""
    if len(material) != SIGNING_MATERIAL_SIZE:
        raise MaterialError(f"signing material is {len(material)} bytes, expected {SIGNING_MATERIAL_SIZE} "
                            "(SIGSTRUCT HEADER || BODY)")
    try:
        sig = SigStruct.from_signing_material(bytes(material))
    except SgxFormatError as e:
        raise MaterialError(f"signing material: {e}") from None
    if not any(sig.enclavehash):
        raise MaterialError("signing material: ENCLAVEHASH is all zero (no enclave was measured)")
    flags = sig.attributes.flags
    if flags & int(AttributeFlags.INIT):
        raise MaterialError("signing material: ATTRIBUTES sets INIT, which only EINIT may set")
    if flags & ATTRIBUTE_FLAGS_RESERVED:
        raise MaterialError(f"signing material: ATTRIBUTES.FLAGS {flags:#x} sets reserved bits "
                            f"{flags & ATTRIBUTE_FLAGS_RESERVED:#x}")
    if sig.attributes.xfrm & XFRM_LEGACY != XFRM_LEGACY:
        raise MaterialError(f"signing material: ATTRIBUTES.XFRM {sig.attributes.xfrm:#x} lacks x87 and SSE "
                            "(bits 0 and 1), which SGX requires")
    return sig


# --------------------------------------------------------------------------------------------------
# Keys, tokens and the allow-list


def load_signing_key(path: str, generate: bool = False) -> RSAPrivateKey:
    """The RSA-3072 e=3 signing key at ``path``. With ``generate`` a missing file is created (mode 0600, PKCS#1
    PEM as upstream reads it). A key file that group or others may access is refused."""
    from inclavare.sgx.signing import SigningError, load_private_key

    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not generate:
            raise SignatureServerError(f"signing key {path}: no such file (--generate-key creates one)") from None
        return _generate_key(path)
    except OSError as e:
        raise SignatureServerError(f"signing key {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SignatureServerError(f"signing key {path}: not a regular file")
    if st.st_mode & 0o077:
        raise SignatureServerError(f"signing key {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users "
                                   f"read the key; chmod 600 {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SignatureServerError(f"signing key {path}: {e.strerror}") from None
    try:
        return load_private_key(data)
    except SigningError as e:
        raise SignatureServerError(f"{path}: {e}") from None


def _generate_key(path: str) -> RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise SignatureServerError(f"signing key {path}: cannot create: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise SignatureServerError(f"signing key {path}: cannot write: {e.strerror}") from None
    os.close(fd)
    log.info("generated a new RSA-3072 e=3 signing key at %s", path)
    return key


def hash_token(token: str) -> str:
    """The hex SHA-256 of a bearer token, as the tokens file lists it."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_token_hashes(path: str) -> dict[str, str]:
    """Read a tokens file: one ``<sha256 hex of the token> [label]`` per line; ``#`` starts a comment.

    Returns {hash: label}; the label (default: the hash's first 12 digits) names the client in the audit log."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SignatureServerError(f"tokens file {path}: {getattr(e, 'strerror', None) or e}") from None
    out: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        digest, _, label = text.partition(" ")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise SignatureServerError(f"tokens file {path}:{number}: expected the SHA-256 hex (64 digits) of a "
                                       "token, then an optional label")
        if digest in out:
            raise SignatureServerError(f"tokens file {path}:{number}: the same token hash is listed twice")
        out[digest] = label.strip() or digest[:12]
    if not out:
        raise SignatureServerError(f"tokens file {path}: lists no token hashes")
    return out


def _cn_of(peercert: dict[str, Any]) -> str:
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@dataclass(frozen=True)
class Decision:
    """What the allow-list says about a request: HTTP status (200 = allowed), client identity, reason."""

    status: int
    identity: str
    reason: str = ""


@dataclass(frozen=True)
class AccessPolicy:
    """Who may get material signed.

    ``token_hashes``: {sha256 hex: label}. ``mtls``: client certificates (verified by the TLS layer against the
    client CA) grant access; ``allow_cns`` / ``allow_fingerprints`` (SHA-256 of the DER certificate, hex)
    narrow that to the listed certificates (any listed CN or fingerprint is enough). ``allow_anyone``: no
    allow-list at all (upstream's behaviour)."""

    token_hashes: dict[str, str] = field(default_factory=dict)
    mtls: bool = False
    allow_cns: frozenset[str] = frozenset()
    allow_fingerprints: frozenset[str] = frozenset()
    allow_anyone: bool = False

    def decide(self, authorization: str | None, peercert: dict[str, Any] | None, peer_der: bytes | None) -> Decision:
        """Check a request's ``Authorization`` header and its verified client certificate (if any)."""
        if self.allow_anyone:
            return Decision(200, "anonymous")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return Decision(401, "unauthenticated", "malformed Authorization header (expected: Bearer TOKEN)")
            if not self.token_hashes:
                return Decision(401, "unauthenticated", "this server does not accept bearer tokens")
            digest = hash_token(token)
            label = None
            for known, name in self.token_hashes.items():
                if hmac.compare_digest(known, digest):
                    label = name
            if label is None:
                return Decision(401, "unauthenticated", "unknown bearer token")
            return Decision(200, f"token:{label}")
        if self.mtls and peercert and peer_der:
            cn = _cn_of(peercert)
            fingerprint = hashlib.sha256(peer_der).hexdigest()
            who = f"cert:CN={cn};sha256={fingerprint}"
            if not self.allow_cns and not self.allow_fingerprints:
                return Decision(200, who)
            if cn in self.allow_cns or fingerprint in self.allow_fingerprints:
                return Decision(200, who)
            return Decision(403, who, f"client certificate CN={cn!r} (sha256 {fingerprint}) is not on the "
                                      "allow-list")
        wanted = " or ".join(w for w, on in (("a bearer token", bool(self.token_hashes)),
                                             ("a client certificate", self.mtls)) if on)
        return Decision(401, "unauthenticated", f"authentication required: {wanted}")


# --------------------------------------------------------------------------------------------------
# Audit log


class AuditLog:
    """Append-only JSON lines; each :meth:`write` returns once its line is fsync'd."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise SignatureServerError(f"audit log {path}: {e.strerror}") from None
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
        os.fsync(self._fd)  # outside the lock: one fsync covers every line written before it

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# --------------------------------------------------------------------------------------------------
# Configuration and the server


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; see the module docstring and ``signature-server --help``."""

    key_path: str
    listen: str = DEFAULT_LISTEN
    cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    tokens_file: str | None = None
    allow_cns: tuple[str, ...] = ()
    allow_fingerprints: tuple[str, ...] = ()
    audit_log: str | None = None
    allow_anyone: bool = False
    generate_key: bool = False


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address), ``[V6]:PORT`` or ``PORT`` -> (host, port)."""
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text, 10)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SignatureServerError(f"listen address {listen!r}: expected HOST:PORT with a port in 0..65535")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_context(config: ServerConfig, policy: AccessPolicy) -> ssl.SSLContext:
    assert config.cert is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.cert, config.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise SignatureServerError(f"TLS certificate {config.cert} / key {config.tls_key}: "
                                   f"{getattr(e, 'strerror', None) or e}") from None
    if config.client_ca:
        try:
            ctx.load_verify_locations(cafile=config.client_ca)
        except (OSError, ssl.SSLError) as e:
            raise SignatureServerError(f"client CA {config.client_ca}: {getattr(e, 'strerror', None) or e}") \
                from None
        # With tokens as well, a client may come without a certificate; one it presents must still verify.
        ctx.verify_mode = ssl.CERT_OPTIONAL if policy.token_hashes else ssl.CERT_REQUIRED
    return ctx


def _policy_for(config: ServerConfig) -> AccessPolicy:
    if bool(config.cert) != bool(config.tls_key):
        raise SignatureServerError("HTTPS needs both --cert and --tls-key")
    if config.client_ca and not config.cert:
        raise SignatureServerError("--client-ca (mutual TLS) needs HTTPS: give --cert and --tls-key too")
    if (config.allow_cns or config.allow_fingerprints) and not config.client_ca:
        raise SignatureServerError("--allow-cn / --allow-fingerprint need --client-ca to verify client certificates")
    has_list = bool(config.tokens_file or config.client_ca)
    if config.allow_anyone and has_list:
        raise SignatureServerError("--allow-anyone contradicts --tokens-file / --client-ca; give one or the other")
    if not has_list and not config.allow_anyone:
        raise SignatureServerError("no allow-list: give --tokens-file and/or --client-ca [--allow-cn NAME], or "
                                   "--allow-anyone to sign for every client that can connect")
    fingerprints = set()
    for fp in config.allow_fingerprints:
        norm = fp.replace(":", "").strip().lower()
        if len(norm) != 64 or any(c not in "0123456789abcdef" for c in norm):
            raise SignatureServerError(f"--allow-fingerprint {fp!r}: expected a SHA-256 fingerprint (64 hex digits)")
        fingerprints.add(norm)
    tokens = load_token_hashes(config.tokens_file) if config.tokens_file else {}
    return AccessPolicy(token_hashes=tokens, mtls=bool(config.client_ca), allow_cns=frozenset(config.allow_cns),
                        allow_fingerprints=frozenset(fingerprints), allow_anyone=config.allow_anyone)


class _Signer:
    """The key, its public PEM and the audit log: what the request handlers share."""

    def __init__(self, key: RSAPrivateKey, audit: AuditLog | None) -> None:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        self._key = key
        self._padding = padding.PKCS1v15()
        self._hash = hashes.SHA256()
        self.audit = audit
        pub = key.public_key()
        self.public_pem = pub.public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        self.mrsigner = hashlib.sha256(pub.public_numbers().n.to_bytes(384, "little")).hexdigest()

    def sign(self, material: bytes) -> bytes:
        return self._key.sign(material, self._padding, self._hash)

    def record(self, **fields: Any) -> None:
        if self.audit is None:
            return
        fields["time"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
        self.audit.write(fields)


def _material_fields(sig: SigStruct) -> dict[str, Any]:
    return {
        "mrenclave": sig.enclavehash.hex(),
        "isvprodid": sig.isvprodid,
        "isvsvn": sig.isvsvn,
        "attributes": {"flags": f"{sig.attributes.flags:#018x}", "xfrm": f"{sig.attributes.xfrm:#018x}"},
        "miscselect": f"{sig.miscselect:#010x}",
        "debug": sig.attributes.debug,
        "debug_signed": sig.debug_signed,
        "isvfamilyid": sig.isvfamilyid.hex(),
        "isvextprodid": sig.isvextprodid.hex(),
    }


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "inclavare-signature-server"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out as two writes; no delayed-ACK stall on keep-alive
    server: SignatureServer

    # ---- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.info("%s %s", self.client_address[0], format % args)

    def _send(self, status: int, body: bytes, ctype: str, close: bool = False,
              extra: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra:
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict[str, Any], close: bool = False,
              extra: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8", close, extra)

    def _error(self, status: int, message: str, close: bool = False,
               extra: Iterable[tuple[str, str]] = ()) -> None:
        self._json(status, {"error": message}, close, extra)

    def _text(self, text: str | bytes) -> None:
        self._send(200, text if isinstance(text, bytes) else text.encode(), "text/plain; charset=utf-8")

    def _peer(self) -> tuple[dict[str, Any] | None, bytes | None]:
        conn = self.connection
        if isinstance(conn, ssl.SSLSocket):
            try:
                return conn.getpeercert() or None, conn.getpeercert(binary_form=True)
            except (ValueError, ssl.SSLError):
                return None, None
        return None, None

    def _route(self) -> str:
        return urllib.parse.urlsplit(self.path).path

    # ---- methods

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        if self._route() == "/":
            self._send(200, b"", "text/plain; charset=utf-8")
        else:
            self._error(404, f"no such resource: {self._route()}")

    def do_GET(self) -> None:  # noqa: N802
        route = self._route()
        if route == "/ping":
            self._text("ping")
        elif route == "/healthz":
            self._text("ok")
        elif route == f"{API_PREFIX}/public-key":
            self._text(self.server.signer.public_pem)
        elif route == f"{API_PREFIX}/pkcs1":
            self._error(405, "use POST with the signing material as the body", extra=[("Allow", "POST")])
        else:
            self._error(404, f"no such resource: {route}")

    def do_POST(self) -> None:  # noqa: N802
        route = self._route()
        if route != f"{API_PREFIX}/pkcs1":
            if route in ("/ping", "/healthz", f"{API_PREFIX}/public-key"):
                self._error(405, f"{route} takes GET", close=True, extra=[("Allow", "GET")])
            else:
                self._error(404, f"no such resource: {route}", close=True)
            return
        self._sign()

    def _sign(self) -> None:
        signer = self.server.signer
        remote = self.client_address[0]
        peercert, der = self._peer()
        decision = self.server.policy.decide(self.headers.get("Authorization"), peercert, der)
        if decision.status != 200:
            signer.record(remote=remote, client=decision.identity, outcome="refused", status=decision.status,
                          reason=decision.reason)
            extra = [("WWW-Authenticate", 'Bearer realm="signature-server"')] if decision.status == 401 else []
            self._error(decision.status, decision.reason, close=True, extra=extra)
            return
        body = self._read_body()
        if body is None:
            return
        base = {"remote": remote, "client": decision.identity, "material_sha256": hashlib.sha256(body).hexdigest()}
        try:
            sig = check_material(body)
        except MaterialError as e:
            signer.record(**base, outcome="refused", status=400, reason=str(e))
            self._error(400, str(e))
            return
        fields = _material_fields(sig)
        try:
            signature = signer.sign(body)
        except Exception as e:  # noqa: BLE001 (reported to the client as a server error, details in the log)
            log.error("signing failed: %s", type(e).__name__)
            signer.record(**base, **fields, outcome="error", status=500, reason="signing failed")
            self._error(500, "signing failed")
            return
        try:
            signer.record(**base, **fields, outcome="signed", status=200, mrsigner=signer.mrsigner,
                          signature_sha256=hashlib.sha256(signature).hexdigest())
        except OSError as e:
            log.error("audit log %s: %s; the signature is withheld", signer.audit and signer.audit.path, e.strerror)
            self._error(500, "the audit log cannot be written, so the signature is withheld")
            return
        self._json(200, {"signature": base64.b64encode(signature).decode(),
                         "publicKey": signer.public_pem.decode()})

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._error(411, "send the signing material with a Content-Length", close=True)
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            self._error(411, "send the signing material with a Content-Length", close=True)
            return None
        try:
            length = int(text, 10)
        except ValueError:
            length = -1
        if length < 0:
            self._error(400, f"Content-Length {text!r} is not a byte count", close=True)
            return None
        if length > MAX_BODY:
            self._error(413, f"signing material is {length} bytes, expected {SIGNING_MATERIAL_SIZE}", close=True)
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        return body


class SignatureServer(http.server.ThreadingHTTPServer):
    """The HTTP(S) server: one thread per connection, TLS handshakes done in that thread."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, signer: _Signer,
                 policy: AccessPolicy, tls: ssl.SSLContext | None) -> None:
        self.address_family = family
        self.signer, self.policy, self.tls = signer, policy, tls
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # every v4 and v6 address
        super().server_bind()

    @property
    def url(self) -> str:
        addr: Any = self.server_address
        host, port = str(addr[0]), int(addr[1])
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(IO_TIMEOUT)
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                log.info("%s: TLS handshake failed: %s", client_address[0], getattr(e, "reason", None) or e)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        peer = client_address[0] if client_address else "?"
        if isinstance(err, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("%s: connection error: %s", peer, err)
        else:  # e.g. the audit log could not record a refusal: the request got no answer
            log.error("%s: request failed: %s: %s", peer, type(err).__name__, err)

    def start(self) -> SignatureServer:
        """Serve from a background thread (tests, benchmarks); :meth:`stop` ends it."""
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="signature-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def server_close(self) -> None:
        super().server_close()
        if self.signer.audit is not None:
            self.signer.audit.close()


def make_server(config: ServerConfig, key: RSAPrivateKey | None = None) -> SignatureServer:
    """Check ``config``, load (or create) the key, open the audit log and bind; call ``serve_forever()`` or
    ``start()`` next. ``key`` skips reading ``config.key_path`` (tests)."""
    policy = _policy_for(config)
    host, port = parse_listen(config.listen)
    if key is None:
        key = load_signing_key(config.key_path, config.generate_key)
    tls = _tls_context(config, policy) if config.cert else None
    if tls is None and policy.token_hashes and not _is_loopback(host):
        log.warning("bearer tokens over plain HTTP on %s can be read off the network; use --cert/--tls-key",
                    config.listen)
    if policy.allow_anyone:
        log.warning("no allow-list: every client that can connect gets its enclaves signed")
    family = socket.AF_INET
    if not host:
        host, family = ("::", socket.AF_INET6) if socket.has_dualstack_ipv6() else ("0.0.0.0", socket.AF_INET)
    elif ":" in host:
        family = socket.AF_INET6
    audit = AuditLog(config.audit_log) if config.audit_log else None
    try:
        return SignatureServer((host, port), family, _Signer(key, audit), policy, tls)
    except OSError as e:
        if audit is not None:
            audit.close()
        raise SignatureServerError(f"cannot listen on {config.listen}: {e.strerror}") from None


# --------------------------------------------------------------------------------------------------
# Client


class SignatureClient:
    """A client of the signature server. ``url`` is the server's base address as upstream configures it
    (``http://127.0.0.1:9080``); a path ending in ``/api/v1/signature`` is accepted too.

    HTTPS certificates are always verified: against ``ca_cert`` if given, else the system's CAs. One
    connection, kept alive between requests; an instance is not for concurrent use by several threads."""

    def __init__(self, url: str, *, ca_cert: str | None = None, token: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SignatureServerError(f"signature server {url!r}: expected an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise SignatureServerError(f"signature server {url!r}: no query or fragment expected")
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise SignatureServerError(f"signature server {url!r}: bad port") from None
        self.host, self.https, self.timeout = parts.hostname, parts.scheme == "https", timeout
        path = parts.path.rstrip("/")
        self.prefix = path if path.endswith(API_PREFIX) else path + API_PREFIX
        self.where = f"signature server {parts.scheme}://{parts.netloc}"
        if token is not None:
            if not token or any(c.isspace() for c in token):
                raise SignatureServerError("bearer token: empty or contains whitespace")
            if not self.https and not _is_loopback(self.host):
                raise SignatureServerError(f"{self.where}: refusing to send a bearer token over plain http to a "
                                           "remote host; use https://")
        if (client_cert or client_key) and not self.https:
            raise SignatureServerError(f"{self.where}: client certificates need an https:// URL")
        if client_key and not client_cert:
            raise SignatureServerError("--client-key needs --client-cert")
        self._token = token
        self._ctx: ssl.SSLContext | None = None
        if self.https:
            try:
                self._ctx = ssl.create_default_context(cafile=ca_cert)
            except (OSError, ssl.SSLError) as e:
                raise SignatureServerError(f"CA certificate {ca_cert}: {getattr(e, 'strerror', None) or e}") from None
            if client_cert:
                try:
                    self._ctx.load_cert_chain(client_cert, client_key)
                except (OSError, ssl.SSLError) as e:
                    raise SignatureServerError(f"client certificate {client_cert}: "
                                               f"{getattr(e, 'strerror', None) or e}") from None
        elif ca_cert:
            raise SignatureServerError(f"{self.where}: --ca-cert is for https:// URLs")
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._ctx is not None:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                         context=self._ctx)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SignatureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        headers = {"Accept": "application/json, text/plain"}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, resp.getheader("Content-Type", ""), data
            except ssl.SSLCertVerificationError as e:
                self.close()
                raise SignatureServerError(f"{self.where}: TLS certificate verification failed: "
                                           f"{e.verify_message or e.reason}") from None
            except (ssl.SSLError, OSError, http.client.HTTPException) as e:
                self.close()
                # A kept-alive connection the server closed meanwhile: try once on a fresh one.
                if attempt == 0 and reused and isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                                                              ConnectionResetError)):
                    continue
                reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
                raise SignatureServerError(f"{self.where}: {reason}") from None
        raise AssertionError("unreachable")

    def _fail(self, status: int, data: bytes) -> SignatureServerError:
        try:
            message = str(json.loads(data)["error"])
        except (ValueError, KeyError, TypeError):
            message = data[:200].decode("utf-8", "replace").strip() or http.client.responses.get(status, "")
        return SignatureServerError(f"{self.where}: HTTP {status}: {message}")

    def sign(self, material: bytes) -> tuple[bytes, bytes]:
        """Have the server sign ``material``; returns (big-endian PKCS#1 v1.5 signature, public key PEM)."""
        status, _, data = self._request("POST", f"{self.prefix}/pkcs1", bytes(material))
        if status != 200:
            raise self._fail(status, data)
        try:
            reply = json.loads(data)
            signature = base64.b64decode(reply["signature"], validate=True)
            public = reply["publicKey"]
            if not isinstance(public, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SignatureServerError(f"{self.where}: the reply is not JSON with a base64 'signature' and a "
                                       "'publicKey'") from None
        return signature, public.encode()

    def public_key(self) -> bytes:
        """The server's public key (PEM)."""
        status, _, data = self._request("GET", f"{self.prefix}/public-key")
        if status != 200:
            raise self._fail(status, data)
        return data

    def ping(self) -> bool:
        """True iff ``GET /ping`` answers 200."""
        root = self.prefix[:-len(API_PREFIX)]
        status, _, _ = self._request("GET", f"{root}/ping")
        return status == 200
