"""The KBS 0.4.0 listener over real sockets: HTTPS with a self-signed certificate made here, a stdlib client doing
auth -> attest -> resource with sim-platform evidence, the JWE opened with the TEE private key, and the refusals
(401/403/404/400/413), a replayed nonce, an expired session, the admin API, connection limits and timeouts.

Store, policy, tokens and JWE are the test doubles of tests/unit/services/verdictd/kbs_doubles.py; evidence is
verified for real (the sim root is trusted explicitly)."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.kbs import ERROR_TYPE_PREFIX, EvidenceConfig, KbsService
from inclavare.services.verdictd.kbs_http import MAX_BODY, KbsHttpServer, tls_context
from tests.unit.services.verdictd.kbs_doubles import (
    APP,
    AllowList,
    DictStore,
    JoseSealer,
    RememberingIssuer,
    SimTee,
    open_response,
)

ADMIN = "admin-token-for-tests"


def self_signed(tmp: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verdictd-kbs-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "kbs.crt", tmp / "kbs.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def tee(tmp_path_factory: pytest.TempPathFactory) -> SimTee:
    return SimTee(str(tmp_path_factory.mktemp("kbs-sim") / "state"))


def make_service(tee: SimTee) -> KbsService:
    store = DictStore({"owner/key/one": b"the secret", "owner/key/denied": b"nope"})
    policy = AllowList(mrenclaves={APP.mrenclave.hex()}, paths={"owner/key/one", "owner/key/missing", "owner/key/new"})
    return KbsService(appraiser=policy, resources=store, tokens=RememberingIssuer(), sealer=JoseSealer(),
                      evidence=EvidenceConfig(trust_sim=True, sim_root_fingerprints=(tee.root,)),
                      admin_token=ADMIN)


class Client:
    def __init__(self, server: KbsHttpServer, ctx: ssl.SSLContext | None) -> None:
        self.port = int(server.server_address[1])
        self.ctx = ctx
        self.cookie: str | None = None

    def __call__(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, Any]:
        conn: http.client.HTTPConnection
        if self.ctx is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=20)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        hdrs = dict(headers or {})
        if self.cookie and "Cookie" not in hdrs:
            hdrs["Cookie"] = self.cookie
        raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        if raw is not None:
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=raw, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        cookie = resp.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        try:
            parsed = json.loads(data) if data else None
        except json.JSONDecodeError:
            parsed = data
        return resp.status, resp, parsed

    def auth(self, tee: str = "sample") -> str:
        status, _, answer = self("POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": tee, "extra-params": ""})
        assert status == 200, answer
        assert self.cookie and self.cookie.startswith("kbs-session-id=")
        return str(answer["nonce"])


@pytest.fixture
def https(tee: SimTee, tmp_path: Path) -> Iterator[tuple[KbsHttpServer, Client]]:
    cert, key = self_signed(tmp_path)
    server = KbsHttpServer(("127.0.0.1", 0), make_service(tee), tls=tls_context(cert, key)).start()
    try:
        yield server, Client(server, ssl.create_default_context(cafile=cert))
    finally:
        server.stop()


def err(status_body: tuple[int, Any, Any]) -> tuple[int, str]:
    status, _, body = status_body
    assert body["type"].startswith(ERROR_TYPE_PREFIX) and body["detail"]
    return status, body["type"][len(ERROR_TYPE_PREFIX):]


def test_https_flow(https: tuple[KbsHttpServer, Client], tee: SimTee) -> None:
    server, c = https
    assert server.url.startswith("https://127.0.0.1:")
    nonce = c.auth()
    status, resp, answer = c("POST", "/kbs/v0/attest", tee.attestation(nonce))
    assert status == 200, answer
    assert "; Secure" in resp.getheader("Set-Cookie", "") and "HttpOnly" in resp.getheader("Set-Cookie", "")
    token = answer["token"]
    status, resp, response = c("GET", "/kbs/v0/resource/owner/key/one")
    assert status == 200 and resp.getheader("Content-Type") == "application/json"
    assert set(response) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    assert open_response(tee.key, response) == b"the secret"
    # the token alone (no cookie) works as a bearer token
    other = Client(server, c.ctx)
    status, _, response = other("GET", "/kbs/v0/resource/owner/key/one", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and open_response(tee.key, response) == b"the secret"
    # refusals
    assert err(c("GET", "/kbs/v0/resource/owner/key/denied")) == (403, "PolicyDeny")
    assert err(c("GET", "/kbs/v0/resource/owner/key/missing")) == (404, "ResourceNotFound")
    assert err(c("GET", "/kbs/v0/resource/owner/key")) == (404, "InvalidRequestPath")
    assert err(other("GET", "/kbs/v0/resource/owner/key/one")) == (401, "TokenNotFound")
    assert err(other("GET", "/kbs/v0/resource/owner/key/one", headers={"Authorization": "Bearer forged"}))[0] == 401
    assert err(other("GET", "/kbs/v0/resource/owner/key/one", headers={"Authorization": "Basic eA=="}))[0] == 401
    # replay: a second attest on the same session/nonce
    assert err(c("POST", "/kbs/v0/attest", tee.attestation(nonce))) == (401, "RcarAttestFailed")
    assert err(c("GET", "/nowhere")) == (404, "InvalidRequestPath")


def test_https_refusals(https: tuple[KbsHttpServer, Client], tee: SimTee) -> None:
    server, c = https
    assert err(c("POST", "/kbs/v0/auth", {"version": "0.1.0", "tee": "sgx", "extra-params": ""}))[0] == 401
    c.auth()
    assert err(c("POST", "/kbs/v0/attest", b"{not json")) == (400, "InvalidRequest")
    # the wrong nonce; then that session is spent
    nonce = c.auth()
    assert err(c("POST", "/kbs/v0/attest", tee.attestation(base64.b64encode(b"z" * 32).decode()))) == \
        (401, "RcarAttestFailed")
    assert err(c("POST", "/kbs/v0/attest", tee.attestation(nonce)))[0] == 401
    # an expired session
    nonce = c.auth()
    sid = (c.cookie or "").split("=", 1)[1]
    server.service.sessions.get(sid).expires = 0
    assert err(c("POST", "/kbs/v0/attest", tee.attestation(nonce))) == (401, "SessionExpired")
    # no cookie at all
    fresh = Client(server, c.ctx)
    assert err(fresh("POST", "/kbs/v0/attest", tee.attestation(nonce))) == (401, "TokenNotFound")
    # oversized body: refused unread, the connection closed, the server keeps serving
    conn = http.client.HTTPSConnection("127.0.0.1", c.port, context=c.ctx, timeout=20)
    conn.putrequest("POST", "/kbs/v0/attest")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and resp.getheader("Connection") == "close"
    conn.close()
    assert c("GET", "/healthz")[0] == 200
    assert c("PUT", "/kbs/v0/auth", b"")[0] == 405


def test_admin_api(https: tuple[KbsHttpServer, Client], tee: SimTee) -> None:
    server, c = https
    path = "/kbs/v0/resource/owner/key/new"
    assert err(c("POST", path, b"new value")) == (401, "AdminAuthAccess")
    assert err(c("POST", path, b"new value", headers={"Authorization": "Bearer nope"})) == (401, "AdminAuthAccess")
    assert c("POST", path, b"new value", headers={"Authorization": f"Bearer {ADMIN}"})[0] == 200
    # no policy administration configured on this service: the endpoints say so
    hdr = {"Authorization": f"Bearer {ADMIN}"}
    assert err(c("POST", "/kbs/v0/resource-policy", {"policy": "cA"}, headers=hdr)) == (404, "InvalidRequestPath")
    assert err(c("POST", "/kbs/v0/resource/owner/new", b"v", headers=hdr)) == (404, "InvalidRequestPath")
    nonce = c.auth()
    assert c("POST", "/kbs/v0/attest", tee.attestation(nonce))[0] == 200
    status, _, response = c("GET", "/kbs/v0/resource/owner/key/new")
    assert status == 200 and open_response(tee.key, response) == b"new value"
    # ours: list and delete resources, behind the admin token (a body on a DELETE is read and ignored)
    assert err(c("GET", "/kbs/v0/resource")) == (401, "AdminAuthAccess")
    status, _, listed = c("GET", "/kbs/v0/resource", headers=hdr)
    assert status == 200 and listed == ["owner/key/denied", "owner/key/new", "owner/key/one"]
    assert err(c("DELETE", path, b"ignored")) == (401, "AdminAuthAccess")
    assert c("DELETE", path, b"ignored", headers=hdr)[0] == 200
    assert err(c("DELETE", path, headers=hdr)) == (404, "ResourceNotFound")
    assert err(c("GET", "/kbs/v0/resource/owner/key/new")) == (404, "ResourceNotFound")
    assert c("PUT", path, b"", headers=hdr)[0] == 405


def test_separate_listeners_and_plain_http(tee: SimTee, tmp_path: Path) -> None:
    service = make_service(tee)
    with pytest.raises(VerdictdError, match="insecure_http"):
        KbsHttpServer(("127.0.0.1", 0), service, tls=None)
    attestation = KbsHttpServer(("127.0.0.1", 0), service, tls=None, insecure_http=True, admin=False).start()
    admin = KbsHttpServer(("127.0.0.1", 0), service, tls=None, insecure_http=True, attestation=False).start()
    try:
        a, b = Client(attestation, None), Client(admin, None)
        hdr = {"Authorization": f"Bearer {ADMIN}"}
        assert err(a("POST", "/kbs/v0/resource/owner/key/x", b"v", headers=hdr)) == (404, "InvalidRequestPath")
        assert b("POST", "/kbs/v0/resource/owner/key/x", b"v", headers=hdr)[0] == 200
        assert err(b("POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sample"}))[0] == 404
        assert err(a("DELETE", "/kbs/v0/resource/owner/key/x", headers=hdr)) == (404, "InvalidRequestPath")
        assert err(a("GET", "/kbs/v0/resource", headers=hdr)) == (404, "InvalidRequestPath")
        assert b("GET", "/kbs/v0/resource", headers=hdr)[2] == ["owner/key/denied", "owner/key/one", "owner/key/x"]
        nonce = a.auth()
        assert a("POST", "/kbs/v0/attest", tee.attestation(nonce))[0] == 200
    finally:
        attestation.stop()
        admin.stop()


def test_connection_cap_and_slow_clients(tee: SimTee) -> None:
    server = KbsHttpServer(("127.0.0.1", 0), make_service(tee), tls=None, insecure_http=True, max_connections=1,
                           io_timeout=2.0).start()
    try:
        port = int(server.server_address[1])
        slow = socket.create_connection(("127.0.0.1", port), timeout=20)
        slow.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\n")  # and then nothing: holds the only slot until its timeout
        busy = socket.create_connection(("127.0.0.1", port), timeout=20)
        busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = busy.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"TooManyConnections" in answer
        busy.close()
        # the slow client is dropped by the read timeout, freeing its slot
        assert slow.recv(4096) == b""  # closed without an answer
        slow.close()
        c = Client(server, None)
        assert c("GET", "/healthz")[0] == 200
    finally:
        server.stop()


def test_busy_port(tee: SimTee) -> None:
    """A port in use is one VerdictdError line (the watchdog exists before the bind that fails)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(VerdictdError, match="Address already in use"):
            KbsHttpServer(("127.0.0.1", port), make_service(tee), tls=None, insecure_http=True)
