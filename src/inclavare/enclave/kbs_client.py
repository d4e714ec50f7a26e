"""The attester side of the KBS protocol (Trustee, version 0.4.0): how an enclave gets a secret from the owner's
key broker (verdictd, or Trustee's KBS) after proving what it is.

    client = KbsClient("https://kbs.example:8080", tee="sgx", evidence=quote_fn, cafile="kbs-ca.pem")
    secret = client.resource("default/key/image")     # auth -> attest -> resource, as needed

One client is one attestation session: a TEE key pair made here and never written anywhere (EC P-256, the
answer's JWE is ECDH-ES+A256KW / A256GCM to it; RSA-OAEP-256 on request), the session cookie
``kbs-session-id``, and the EAR token the KBS returned. ``evidence(report_data)`` is the TEE's part: given the
64 bytes the KBS binding demands (SHA-384 of the canonical ``{"tee-pubkey","nonce","additional-evidence"}``,
zero padded; :mod:`inclavare.formats.kbs`) it returns the primary evidence JSON for ``tee`` (``{"quote":
base64}`` for sgx/tdx and our ``sim``). Secrets are returned, never stored.

The transport is HTTPS verified against ``cafile`` (or the system's roots); plain ``http://`` only when the URL
says so. One connection is kept for the whole exchange (HTTP/1.1 keep-alive, as Trustee's client does);
``connect`` supplies it when the caller must open it elsewhere (an enclave runtime opens it before the
container's network namespace applies, see :class:`PreConnected`). Every read is bounded (``MAX_ANSWER``) and
timed out; redirects are not followed; an answer of the wrong shape, a refusal ({"type","detail"} from the
KBS) or a transport failure is one :class:`KbsClientError` line naming the URL and step.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

from inclavare.errors import InclavareError
from inclavare.formats import kbs, kbs_jwe
from inclavare.formats.kbs import KbsFormatError

MAX_ANSWER = 1 << 20  # bytes of one KBS answer (a JWE of a key or certificate is a few KiB)
DEFAULT_TIMEOUT = 30.0

Evidence = Callable[[bytes], dict[str, Any]]
Connect = Callable[[], socket.socket]


class KbsClientError(InclavareError):
    """The KBS refused, or could not be reached or understood; the message names the URL and the step."""


def _split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of a KBS base URL; only http and https."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KbsClientError(f"kbs url {url!r}: expected http(s)://HOST[:PORT]")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise KbsClientError(f"kbs url {url!r}: no credentials, query or fragment allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise KbsClientError(f"kbs url {url!r}: bad port") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def _make_key(kty: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kty == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    if kty == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)  # as guest-components
    raise KbsClientError(f"tee key type {kty!r}: expected EC or RSA")


class KbsClient:
    """One attestation session with a KBS (see the module docstring)."""

    def __init__(self, url: str, *, tee: str, evidence: Evidence, cafile: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, key_type: str = "EC", connect: Connect | None = None) -> None:
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port, base = _split_url(url)
        self.prefix = base + kbs.PREFIX
        self.tee, self.evidence, self.timeout = tee, evidence, timeout
        self._tls = ssl.create_default_context(cafile=cafile) if self.scheme == "https" else None
        if cafile is not None and self._tls is None:
            raise KbsClientError(f"kbs url {url!r}: a CA file was given but the URL is not https")
        self._key = _make_key(key_type)
        self.tee_pubkey = kbs_jwe.tee_pubkey(self._key)
        self._cookie: str | None = None
        self._connect = connect
        self._conn: http.client.HTTPConnection | None = None
        self.token: str | None = None

    # -- transport

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is not None:
            return self._conn
        conn: http.client.HTTPConnection
        if self._tls is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        if self._connect is not None:
            sock = self._connect()
            sock.settimeout(self.timeout)
            conn.sock = self._tls.wrap_socket(sock, server_hostname=self.host) if self._tls is not None else sock
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None, step: str) -> Any:
        where = f"kbs {self.url}{path} ({step})"
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._cookie:
            headers["Cookie"] = f"{kbs.SESSION_COOKIE}={self._cookie}"
        try:
            conn = self._connection()
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_ANSWER):
                self.close()
                raise KbsClientError(f"{where}: answer of {length[:20]} bytes, over the {MAX_ANSWER}-byte limit")
            raw = resp.read(MAX_ANSWER + 1)
            cookies = resp.msg.get_all("Set-Cookie") or []
            if resp.will_close or len(raw) > MAX_ANSWER:
                self.close()
        except ssl.SSLCertVerificationError as e:
            self.close()
            raise KbsClientError(f"{where}: TLS certificate not trusted ({e.verify_message})") from None
        except http.client.RemoteDisconnected:  # before OSError: it is a ConnectionResetError too
            self.close()
            raise KbsClientError(f"{where}: the key broker closed the connection without answering") from None
        except ssl.SSLError as e:
            self.close()
            raise KbsClientError(f"{where}: TLS failed: {e.reason or e}") from None
        except TimeoutError:
            self.close()
            raise KbsClientError(f"{where}: the key broker did not answer in time") from None
        except ConnectionRefusedError as e:  # nothing listens there
            self.close()
            raise KbsClientError(f"{where}: cannot connect: {e.strerror or e}") from None
        except OSError as e:  # a broker killed mid-exchange: its kernel resets the connection
            self.close()
            raise KbsClientError(f"{where}: the connection to the key broker was lost: {e.strerror or e}") from None
        except http.client.HTTPException as e:
            self.close()
            raise KbsClientError(f"{where}: {type(e).__name__}: {e}".rstrip(": ")) from None
        if len(raw) > MAX_ANSWER:
            raise KbsClientError(f"{where}: answer over the {MAX_ANSWER}-byte limit")
        for c in cookies:
            name, _, rest = c.partition("=")
            if name.strip() == kbs.SESSION_COOKIE:
                self._cookie = rest.split(";", 1)[0].strip() or None
        try:
            answer = json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if resp.status != 200:
            raise KbsClientError(f"{where}: {resp.status} {_refusal(answer, raw)}")
        if not isinstance(answer, dict):
            raise KbsClientError(f"{where}: the answer is not a JSON object")
        return answer

    # -- the protocol

    def attest(self) -> str:
        """auth -> attest; returns (and keeps) the EAR token. Raises KbsClientError on refusal."""
        self._cookie, self.token = None, None
        answer = self._request("POST", self.prefix + "auth",
                               {"version": kbs.PROTOCOL_VERSION, "tee": self.tee, "extra-params": ""}, "auth")
        nonce = answer.get("nonce")
        if not isinstance(nonce, str) or not nonce or len(nonce) > 1024:
            raise KbsClientError(f"kbs {self.url}: the auth answer has no usable nonce")
        if self._cookie is None:
            raise KbsClientError(f"kbs {self.url}: the auth answer set no {kbs.SESSION_COOKIE} cookie")
        try:
            report_data = kbs.expected_report_data(nonce, self.tee_pubkey, "")
        except KbsFormatError as e:
            raise KbsClientError(f"kbs {self.url}: {e}") from None
        body = {"runtime-data": {"nonce": nonce, "tee-pubkey": self.tee_pubkey},
                "tee-evidence": {"primary_evidence": self.evidence(report_data), "additional_evidence": ""}}
        answer = self._request("POST", self.prefix + "attest", body, "attest")
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise KbsClientError(f"kbs {self.url}: the attest answer has no token")
        self.token = token
        return token

    def resource(self, path: str) -> bytes:
        """The resource ``repo/type/tag`` (attesting first if this client has not), opened with the TEE key."""
        parts = path.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise KbsClientError(f"kbs resource {path!r}: expected REPO/TYPE/TAG")
        if self.token is None:
            self.attest()
        quoted = "/".join(urllib.parse.quote(p, safe="") for p in parts)
        answer = self._request("GET", self.prefix + "resource/" + quoted, None, f"resource {path}")
        try:
            return kbs_jwe.open(self._key, answer)
        except KbsFormatError as e:
            raise KbsClientError(f"kbs {self.url}: resource {path}: {e}") from None


class PreConnected:
    """A :data:`Connect` that hands out one socket opened beforehand (e.g. on the host, before the container's
    network namespace); a second connection cannot be made from where the client runs, so asking for one is an
    error naming why."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock

    @classmethod
    def open(cls, url: str, timeout: float = DEFAULT_TIMEOUT) -> PreConnected:
        """Connect to the KBS at ``url`` now (TCP only; TLS is negotiated when the client first uses it)."""
        _, host, port, _ = _split_url(url)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            # as http.client's own connect() does: without it, a request sent in two writes (headers, then the
            # attestation body) waits on the peer's delayed ACK, ~40 ms per request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return cls(sock)
        except OSError as e:
            raise KbsClientError(f"kbs {url}: cannot connect: {e.strerror or e}") from None

    def __call__(self) -> socket.socket:
        sock, self._sock = self._sock, None
        if sock is None:
            raise KbsClientError("the KBS closed the connection opened before the container started, and no "
                                 "other can be opened from inside (keep-alive needed)")
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _refusal(answer: Any, raw: bytes) -> str:
    """A KBS error answer ({"type": ".../errors/Name", "detail": ...}) as 'Name: detail'."""
    if isinstance(answer, dict) and isinstance(answer.get("detail"), str):
        name = str(answer.get("type", "")).rsplit("/", 1)[-1]
        return f"{name}: {answer['detail'][:300]}" if name else answer["detail"][:300]
    text = raw[:200].decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "(no body)"


def quote_evidence(quote: bytes) -> dict[str, Any]:
    """Trustee's primary evidence for sgx (and our sim): ``{"quote": base64}``."""
    return {"quote": base64.b64encode(quote).decode()}
