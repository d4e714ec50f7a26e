"""The HTTP(S) side: the request handler (upstream's API), the threading server and `make_server`."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from inclavare.formats.sgx import SIGNING_MATERIAL_SIZE
from inclavare.services.httpserver import BodyError, HardenedHandler, HardenedHTTPServer, address_family, body_length
from inclavare.services.signature_server.audit import AuditLog
from inclavare.services.signature_server.auth import AccessPolicy
from inclavare.services.signature_server.common import (
    API_PREFIX,
    IO_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS,
    MaterialError,
    SignatureServerError,
    log,
)
from inclavare.services.signature_server.config import (
    ServerConfig,
    _is_loopback,
    _policy_for,
    _tls_context,
    parse_listen,
)
from inclavare.services.signature_server.signing import (
    _material_fields,
    _Signer,
    check_material,
    load_signing_key,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

class _Handler(HardenedHandler):
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
        try:
            length = body_length(self.headers, MAX_BODY)
        except BodyError as e:
            reason = str(e)
            if e.status == 413:
                reason = f"signing material is over {MAX_BODY} bytes, expected {SIGNING_MATERIAL_SIZE}"
            self._error(e.status, reason, close=True)
            return None
        try:
            return self.read_body(length)  # under the request's deadline, however slowly it is sent
        except ConnectionError:
            self.close_connection = True
            return None


class SignatureServer(HardenedHTTPServer):
    """The HTTP(S) server: one thread per connection, TLS handshakes done in that thread
    (:class:`inclavare.services.httpserver.HardenedHTTPServer`)."""

    thread_name = "signature-server"

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, signer: _Signer,
                 policy: AccessPolicy, tls: ssl.SSLContext | None) -> None:
        self.signer, self.policy = signer, policy
        super().__init__(address, family, _Handler, tls, io_timeout=IO_TIMEOUT, max_connections=MAX_CONNECTIONS)

    def start(self) -> SignatureServer:
        """Serve from a background thread (tests, benchmarks); :meth:`stop` ends it."""
        super().start()
        return self

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
    host, family = address_family(host)
    audit = AuditLog(config.audit_log) if config.audit_log else None
    try:
        return SignatureServer((host, port), family, _Signer(key, audit), policy, tls)
    except OSError as e:
        if audit is not None:
            audit.close()
        raise SignatureServerError(f"cannot listen on {config.listen}: {e.strerror}") from None
