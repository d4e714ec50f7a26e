"""The KBS protocol over HTTP(S): routes ``/kbs/v0/...`` to :class:`.kbs.KbsService`.

HTTPS by default (an ``ssl.SSLContext`` from :func:`tls_context`); plain HTTP only when the caller passes
``insecure_http=True``. The server is the services' shared ``HardenedHTTPServer`` (connection cap, per-connection
handshake/read timeout); bodies over ``MAX_BODY`` are refused unread (413). Admin endpoints need the admin bearer
token; a listener made with ``admin=False`` does not route them at all (404), so the admin API can live on its own
listener.

Admin endpoints: ``POST resource/<repo>/<type>/<tag>``, ``resource-policy``, ``attestation-policy``,
``reference-value`` and ``GET reference-value/<name>``; and verdictd's own, which Trustee does not have:
``GET reference-value`` (every entry), ``GET resource`` (the stored paths, never values), ``DELETE
resource/<repo>/<type>/<tag>`` and ``DELETE reference-value/<name>``.
"""

from __future__ import annotations

import http
import http.cookies
import http.server
import json
import logging
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

from inclavare.services.httpserver import BodyError, HardenedHandler, HardenedHTTPServer, address_family, body_length
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.kbs import SESSION_COOKIE, KbsError, KbsService

log = logging.getLogger("inclavare.verdictd.kbs")

PREFIX = "/kbs/v0/"
MAX_BODY = 1 << 20
IO_TIMEOUT = 30.0
MAX_CONNECTIONS = 256
MAX_QUERY_ITEMS = 16
_HTTP_ERRORS = {408: "RequestTimeout", 414: "RequestPathTooLong", 431: "HeadersTooLarge", 501: "MethodNotAllowed",
                505: "HttpVersionNotSupported"}
JWKS_PATHS = ("/kbs/v0/jwks", "/.well-known/jwks")  # ours; Trustee has no JWKS path on the KBS (its AS plans one)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context (TLS 1.2+) with the configured certificate chain and key; VerdictdError if unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise VerdictdError(f"KBS TLS certificate {cert} / key {key}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


class _Handler(HardenedHandler):
    protocol_version = "HTTP/1.1"
    server_version = "verdictd-kbs"
    sys_version = ""
    disable_nagle_algorithm = True
    server: KbsHttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.info("%s %s", self.client_address[0], format % args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json", close: bool = False,
              cookie: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if cookie:
            self.send_header("Set-Cookie", cookie)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="kbs"')
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, cookie: str | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), cookie=cookie)

    def _error(self, e: KbsError, close: bool = False) -> None:
        self._send(e.status, json.dumps(e.to_json()).encode(), close=close)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, a line or header block over its limits, an
        unknown method or HTTP version) in Trustee's error shape rather than its HTML page; the connection ends."""
        kind = _HTTP_ERRORS.get(code, "InvalidRequest")
        self.request_version = self.protocol_version  # a status line even when the request line was unreadable
        detail = str(message or explain or http.HTTPStatus(code).phrase).splitlines()[0][:200]
        self._error(KbsError(code, kind, detail), close=True)

    def _cookie_session(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw or len(raw) > 4096:
            return None
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(raw)
        except http.cookies.CookieError:
            return None
        morsel = jar.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else None

    def _bearer(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise KbsError(401, "TokenNotFound", "malformed Authorization header (expected: Bearer TOKEN)")
        return token.strip()

    def _body(self) -> bytes:
        try:
            length = body_length(self.headers, MAX_BODY, required=False)
        except BodyError as e:
            kind = {411: "InvalidRequest", 413: "PayloadTooLarge"}.get(e.status, "InvalidRequest")
            raise KbsError(e.status, kind, str(e)) from None
        return self.read_body(length)

    def _route(self) -> tuple[list[str], dict[str, str]]:
        split = urllib.parse.urlsplit(self.path)
        if not split.path.startswith(PREFIX):
            raise KbsError(404, "InvalidRequestPath", f"no such resource: {split.path[:200]}")
        parts = [urllib.parse.unquote(p) for p in split.path[len(PREFIX):].split("/")]
        pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True, max_num_fields=MAX_QUERY_ITEMS)
        return parts, dict(pairs)

    def _dispatch(self, method: str) -> None:
        try:
            path = self.path.split("?")[0]
            if method == "GET" and path == "/healthz":
                self._send(200, b"ok", "text/plain; charset=utf-8")
                return
            if method == "GET" and path in JWKS_PATHS and self.server.attestation and self.server.jwks is not None:
                self._json(200, self.server.jwks())
                return
            try:
                parts, query = self._route()
            except ValueError:
                raise KbsError(400, "InvalidRequest", "too many query parameters") from None
            if method in ("POST", "DELETE"):
                body = self._body()
            elif not self.request_read():
                raise ConnectionError("the request's deadline passed")
            else:
                body = b""
            self._serve(method, parts, query, body)
        except KbsError as e:
            self._error(e, close=e.status in (411, 413))
        except VerdictdError as e:  # a backend refused (store, policy): still a clear answer
            log.error("request %s %s: %s", method, self.path[:200], e)
            self._error(KbsError(500, "InternalError", str(e)))
        except (ConnectionError, TimeoutError):
            raise
        except Exception as e:  # noqa: BLE001 (a bug below must not drop the client without an answer)
            log.exception("request %s %s failed", method, self.path[:200])
            self._error(KbsError(500, "InternalError", f"internal error ({type(e).__name__}); see the server log"))

    def _serve(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> None:
        svc, head, rest = self.server.service, parts[0], parts[1:]
        admin = self.server.admin
        if self.server.attestation and method == "POST" and parts == ["auth"]:
            answer, session = svc.auth(body)
            self._json(200, answer, cookie=_cookie(session.id, svc.sessions.ttl, self.server.tls is not None))
        elif self.server.attestation and method == "POST" and parts == ["attest"]:
            answer, session = svc.attest(body, self._cookie_session())
            left = max(1, int(session.expires - svc.sessions.clock()))
            self._json(200, answer, cookie=_cookie(session.id, left, self.server.tls is not None))
        elif admin and method == "GET" and head in ("resource", "reference-value") and not rest:
            # ours, not Trustee's: the stored resource paths / every reference value entry
            svc.check_admin(self.headers.get("Authorization"))
            self._json(200, svc.list_resources() if head == "resource" else svc.list_reference_values())
        elif self.server.attestation and method == "GET" and head == "resource":
            self._json(200, svc.resource(rest, query, self._cookie_session(), self._bearer()))
        elif admin and method == "POST" and head in ("resource", "resource-policy", "attestation-policy",
                                                      "reference-value"):
            svc.check_admin(self.headers.get("Authorization"))
            if head == "resource":
                svc.set_resource(rest, body)
            elif head == "resource-policy" and not rest:
                svc.set_resource_policy(body)
            elif head == "attestation-policy" and not rest:
                svc.set_attestation_policy(body)
            elif head == "reference-value" and not rest:
                svc.set_reference_value(body)
            else:
                raise KbsError(404, "InvalidRequestPath", f"no such resource: {self.path[:200]}")
            self._send(200, b"")
        elif admin and method == "GET" and head == "reference-value" and rest:
            svc.check_admin(self.headers.get("Authorization"))
            self._json(200, svc.get_reference_value(rest))
        elif admin and method == "DELETE" and head in ("resource", "reference-value") and rest:
            svc.check_admin(self.headers.get("Authorization"))  # ours, not Trustee's: removal
            if head == "resource":
                svc.delete_resource(rest)
            else:
                svc.delete_reference_value(rest)
            self._send(200, b"")
        else:
            raise KbsError(404, "InvalidRequestPath", f"no such resource: {method} {self.path[:200]}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._error(KbsError(405, "MethodNotAllowed", "use GET, POST or DELETE"), close=True)


def _cookie(session_id: str, max_age: int, secure: bool) -> str:
    return f"{SESSION_COOKIE}={session_id}; Max-Age={max_age}; Path=/kbs/v0; HttpOnly{'; Secure' if secure else ''}"


class KbsHttpServer(HardenedHTTPServer):
    """The KBS listener (:class:`inclavare.services.httpserver.HardenedHTTPServer`). ``attestation``/``admin``
    say which endpoints it routes; ``jwks`` (the token issuer's) answers ``GET /kbs/v0/jwks`` and
    ``/.well-known/jwks`` on an attestation listener, so relying parties can check EAR tokens."""

    thread_name = "verdictd-kbs"

    def __init__(self, address: tuple[str, int], service: KbsService, *, tls: ssl.SSLContext | None,
                 insecure_http: bool = False, attestation: bool = True, admin: bool = True,
                 max_connections: int = MAX_CONNECTIONS, io_timeout: float = IO_TIMEOUT,
                 jwks: Callable[[], dict[str, Any]] | None = None) -> None:
        if tls is None and not insecure_http:
            raise VerdictdError("KBS listener: give a TLS certificate and key, or insecure_http=True (tests only)")
        self.service, self.attestation, self.admin = service, attestation, admin
        self.jwks = jwks
        host, family = address_family(address[0])
        try:
            super().__init__((host, address[1]), family, _Handler, tls, io_timeout=io_timeout,
                             max_connections=max_connections)
        except OSError as e:
            raise VerdictdError(f"KBS listener {address[0]}:{address[1]}: {e.strerror}") from None

    def busy_body(self) -> bytes:
        return json.dumps(KbsError(503, "TooManyConnections", "server busy; retry later").to_json()).encode()

    def start(self) -> KbsHttpServer:
        """Serve from a background thread (tests); :meth:`stop` ends it."""
        super().start()
        return self
