"""SignatureClient: the matching client; it always verifies the server's certificate."""

from __future__ import annotations

import base64
import binascii
import http.client
import http.server
import json
import ssl
import urllib.parse

from inclavare.services.signature_server.common import (
    API_PREFIX,
    SignatureServerError,
)
from inclavare.services.signature_server.config import _is_loopback

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
