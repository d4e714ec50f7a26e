"""The caller's side of verdictd's KBS admin endpoints (kbs_http.py): what the ``verdict`` CLI and tests use.

One HTTP(S) request per method, with the admin bearer token. HTTPS verifies the server against a given CA bundle
(else the system's); plain ``http://`` is taken only for a loopback host, since the token must not cross a network
in clear. Every refusal, a Trustee error body ``{"type", "detail"}`` included, becomes one :class:`VerdictdError`
line naming the URL and the request.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.parse
from typing import Any

from inclavare.services.netaddr import is_loopback
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.kbs_evidence import ERROR_TYPE_PREFIX

API_PATH = "/kbs/v0"
MAX_ANSWER = 16 << 20  # every reference value entry at its largest fits well inside


class _HTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that checks the certificate against ``server_name`` instead of the URL's host."""

    def __init__(self, host: str, port: int | None, *, context: ssl.SSLContext, server_name: str | None,
                 timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._ctx = context

    def connect(self) -> None:
        if self._server_name is None:
            super().connect()
            return
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)
        except BaseException:
            sock.close()
            raise


class KbsAdminClient:
    """verdictd's KBS admin API at ``url`` (``https://HOST:PORT``, optionally ending in ``/kbs/v0``). ``token``:
    the admin bearer token; ``cacert``: CA certificates (PEM) for the server's certificate; ``server_name``: the
    name that certificate must carry when it is not the URL's host."""

    def __init__(self, url: str, *, token: str, cacert: bytes | None = None, server_name: str | None = None,
                 timeout: float = 30.0) -> None:
        split = urllib.parse.urlsplit(url)
        try:
            port = split.port
        except ValueError:
            raise VerdictdError(f"KBS URL {url!r}: the port is not a number in 1..65535") from None
        if split.scheme not in ("http", "https") or not split.hostname:
            raise VerdictdError(f"KBS URL {url!r}: give https://HOST[:PORT] (http:// only for a loopback host)")
        if split.username is not None or split.query or split.fragment:
            raise VerdictdError(f"KBS URL {url!r}: no user, query or fragment")
        if split.scheme == "http" and not is_loopback(split.hostname):
            raise VerdictdError(f"KBS URL {url!r}: plain http:// only to a loopback host (the admin token would "
                                "cross the network in clear); use https://")
        if split.scheme == "http" and (cacert is not None or server_name is not None):
            raise VerdictdError(f"KBS URL {url!r}: a CA certificate or server name needs https://")
        self.url = url
        self.tls = split.scheme == "https"
        self.host, self.port = split.hostname, port or (443 if self.tls else 80)
        base = split.path.rstrip("/")
        self.base = base if base.endswith(API_PATH) else base + API_PATH
        self.timeout, self.server_name = timeout, server_name
        self._token = token
        self._ctx: ssl.SSLContext | None = None
        if self.tls:
            try:
                self._ctx = ssl.create_default_context(cadata=cacert.decode("ascii") if cacert else None)
            except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
                raise VerdictdError(f"KBS CA certificates: not usable PEM ({e})") from None
            self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    # ---- the transport

    def _connection(self) -> http.client.HTTPConnection:
        if self._ctx is not None:
            return _HTTPSConnection(self.host, self.port, context=self._ctx, server_name=self.server_name,
                                    timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> bytes:
        target = self.base + "/" + "/".join(urllib.parse.quote(p, safe="") for p in path.split("/"))
        what = f"KBS admin {self.url} {method} {target}"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = ctype
        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_ANSWER + 1)
        except ssl.SSLCertVerificationError as e:
            why = e.verify_message or e.reason
            raise VerdictdError(f"{what}: TLS: certificate verify failed ({why})") from None
        except ssl.SSLError as e:
            raise VerdictdError(f"{what}: TLS: {e.reason or e}") from None
        except TimeoutError:
            raise VerdictdError(f"{what}: no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
            raise VerdictdError(f"{what}: cannot reach the server ({why})") from None
        finally:
            conn.close()
        if len(data) > MAX_ANSWER:
            raise VerdictdError(f"{what}: answer larger than {MAX_ANSWER >> 20} MiB")
        if resp.status != 200:
            raise VerdictdError(f"{what}: {resp.status} {_error_text(data, resp.reason)}")
        return data

    def _json(self, method: str, path: str) -> Any:
        data = self._request(method, path)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise VerdictdError(f"KBS admin {self.url} {method} {path}: the answer is not JSON") from None

    # ---- resources

    def set_resource(self, path: str, value: bytes) -> None:
        """Store ``value`` as resource ``repo/type/tag`` (Trustee's ``POST resource/...``, raw bytes)."""
        self._request("POST", f"resource/{path}", value, "application/octet-stream")

    def delete_resource(self, path: str) -> None:
        """Remove resource ``repo/type/tag`` (verdictd's own endpoint)."""
        self._request("DELETE", f"resource/{path}")

    def list_resources(self) -> list[str]:
        """The stored resources' paths (verdictd's own endpoint)."""
        paths = self._json("GET", "resource")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise VerdictdError(f"KBS admin {self.url} GET resource: the answer is not a list of paths")
        return paths

    # ---- policies

    def set_resource_policy(self, text: bytes) -> None:
        """Trustee's body: ``{"policy": base64url(Rego)}``; the server compiles it before storing."""
        self._request("POST", "resource-policy", json.dumps({"policy": _b64url(text)}).encode())

    def set_attestation_policy(self, policy_id: str, text: bytes) -> None:
        """Trustee's body: ``{"type": "rego", "policy_id": ..., "policy": base64url(Rego)}``. verdictd takes
        the TEE names it appraises with as ids (``sgx``, ``tdx``, ``snp``, ``sim``)."""
        body = {"type": "rego", "policy_id": policy_id, "policy": _b64url(text)}
        self._request("POST", "attestation-policy", json.dumps(body).encode())

    # ---- reference values

    def set_reference_value(self, name: str, values: list[str | int], provenance: str = "",
                            expires: str | None = None) -> None:
        """Set (replace) the values accepted under ``name``; ``expires`` an RFC 3339 time or None."""
        body = {"name": name, "values": values, "provenance": provenance, "expires": expires}
        self._request("POST", "reference-value", json.dumps(body).encode())

    def get_reference_value(self, name: str) -> list[Any]:
        values = self._json("GET", f"reference-value/{name}")
        if not isinstance(values, list):
            raise VerdictdError(f"KBS admin {self.url} GET reference-value/{name}: the answer is not a list")
        return values

    def list_reference_values(self) -> dict[str, dict[str, Any]]:
        """Every entry, expired ones too: ``{name: {values, provenance, expires, expired}}`` (verdictd's own)."""
        entries = self._json("GET", "reference-value")
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise VerdictdError(f"KBS admin {self.url} GET reference-value: the answer is not an object of entries")
        return entries

    def delete_reference_value(self, name: str) -> None:
        self._request("DELETE", f"reference-value/{name}")


def _b64url(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode("ascii").rstrip("=")


def _error_text(data: bytes, reason: str) -> str:
    """``Type: detail`` from a Trustee error body, else the HTTP reason; one line, bounded."""
    try:
        err = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        err = None
    if isinstance(err, dict) and isinstance(err.get("detail"), str):
        kind = str(err.get("type", ""))
        kind = kind[len(ERROR_TYPE_PREFIX):] if kind.startswith(ERROR_TYPE_PREFIX) else kind
        text = f"{kind}: {err['detail']}" if kind else err["detail"]
    else:
        text = reason or "error"
    return " ".join(text.split())[:400]
