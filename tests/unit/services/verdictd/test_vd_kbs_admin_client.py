"""The KBS admin client against the real KBS handler over HTTPS (a self-signed certificate made here) with the real
store, reference values and policy engine behind it: every call round-trips; a wrong token, a server that is down
or silent, a certificate that does not verify and a bad URL are each one VerdictdError line."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inclavare.services.verdictd.daemon import StoreBackend, open_state
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.kbs import KbsService
from inclavare.services.verdictd.kbs_admin_client import KbsAdminClient, _error_text
from inclavare.services.verdictd.kbs_http import KbsHttpServer, tls_context
from inclavare.services.verdictd.policy import PolicyEngine
from inclavare.services.verdictd.store import Store
from tests.integration.test_vd_kbs import self_signed
from tests.unit.services.verdictd.kbs_doubles import AllowList, JoseSealer, RememberingIssuer

KEK = hashlib.sha256(b"kbs admin client unit KEK").digest()
TOKEN = "kbs-admin-client-token-0123"
MRENCLAVE = "ab" * 32
POLICY = b"package policy\nimport rego.v1\ndefault allow := false\n"


@dataclass
class Server:
    url: str
    cacert: bytes
    store: Store
    http: KbsHttpServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    store, refs = open_state(str(tmp_path / "state"), KEK)
    backend = StoreBackend(store, refs, PolicyEngine())
    service = KbsService(appraiser=AllowList(), resources=backend, tokens=RememberingIssuer(), sealer=JoseSealer(),
                         admin=backend, admin_token=TOKEN)
    cert, key = self_signed(tmp_path)
    http = KbsHttpServer(("127.0.0.1", 0), service, tls=tls_context(cert, key), attestation=False).start()
    try:
        yield Server(http.url, Path(cert).read_bytes(), store, http)
    finally:
        http.stop()
        store.close()


def client(s: Server, **kw: object) -> KbsAdminClient:
    args: dict[str, object] = {"token": TOKEN, "cacert": s.cacert, "timeout": 10.0, **kw}
    return KbsAdminClient(s.url, **args)  # type: ignore[arg-type]


def test_round_trips(server: Server) -> None:
    c = client(server)
    c.set_resource("owner/key/one", b"\x00secret\xff")
    c.set_resource("owner/cert/two", b"pem")
    assert server.store.get_secret("resource", "owner/key/one") == b"\x00secret\xff"
    assert c.list_resources() == ["owner/cert/two", "owner/key/one"]
    c.delete_resource("owner/cert/two")
    assert c.list_resources() == ["owner/key/one"]
    c.set_resource_policy(POLICY)
    c.set_attestation_policy("sgx", POLICY)
    assert server.store.get_policy("resource") == server.store.get_policy("sgx") == POLICY.decode()
    c.set_reference_value("mrenclave", ["0x" + MRENCLAVE.upper()], "build 7", "2999-01-01T00:00:00Z")
    c.set_reference_value("isvsvn", [3])
    assert c.get_reference_value("mrenclave") == [MRENCLAVE]  # normalised by the server
    assert c.list_reference_values() == {
        "isvsvn": {"values": [3], "provenance": "", "expires": None, "expired": False},
        "mrenclave": {"values": [MRENCLAVE], "provenance": "build 7", "expires": "2999-01-01T00:00:00+00:00",
                      "expired": False}}
    c.delete_reference_value("isvsvn")
    assert set(c.list_reference_values()) == {"mrenclave"}
    # the URL may name the API path itself
    assert KbsAdminClient(server.url + "/kbs/v0/", token=TOKEN, cacert=server.cacert).list_resources() == [
        "owner/key/one"]


def test_refusals_are_one_line(server: Server) -> None:
    c = client(server)
    cases = [
        (lambda: client(server, token="wrong-token-0123456789").list_resources(),
         "GET /kbs/v0/resource: 401 AdminAuthAccess: admin API: wrong admin token"),
        (lambda: c.get_reference_value("nothing"), "404 ReferenceValueNotFound: no reference value named 'nothing'"),
        (lambda: c.delete_resource("owner/key/none"), "404 ResourceNotFound: resource owner/key/none not found"),
        (lambda: c.set_resource("owner/key", b"x"), "404 InvalidRequestPath: resource path 'owner/key'"),
        (lambda: c.set_resource_policy(b"package policy\nallow if {"), "400 PolicyError: policy 'resource' not "
                                                                       "stored: "),
        (lambda: c.set_attestation_policy("default", POLICY), "400 PolicyError: attestation policy id 'default'"),
        (lambda: c.set_reference_value("mrenclave", ["xyz"]), "400 InvalidRequest: reference value 'mrenclave' "
                                                              "value 0: 'xyz' is not a hex string"),
        (lambda: c.set_reference_value("mrenclave", ["aa"], expires="2001-01-01T00:00:00Z"), "is already past"),
    ]
    for call, want in cases:
        with pytest.raises(VerdictdError) as e:
            call()
        msg = str(e.value)
        assert want in msg and "\n" not in msg and msg.startswith(f"KBS admin {server.url} "), msg
    assert server.store.get_policy("default") is None and c.list_reference_values() == {}


def test_tls_checks(server: Server) -> None:
    with pytest.raises(VerdictdError, match="TLS: certificate verify failed"):
        KbsAdminClient(server.url, token=TOKEN).list_resources()  # the system's CAs do not know the test CA
    port = server.http.server_address[1]
    with pytest.raises(VerdictdError, match="TLS: .*mismatch"):
        KbsAdminClient(f"https://localhost:{port}", token=TOKEN, cacert=server.cacert).list_resources()
    # the certificate names 127.0.0.1: asked for, it is accepted whatever host the URL names
    ok = KbsAdminClient(f"https://localhost:{port}", token=TOKEN, cacert=server.cacert, server_name="127.0.0.1")
    assert ok.list_resources() == []
    with pytest.raises(VerdictdError, match="cannot reach the server"):
        KbsAdminClient(f"http://127.0.0.1:{port}", token=TOKEN).list_resources()  # plain text to a TLS port
    with pytest.raises(VerdictdError, match="not usable PEM"):
        KbsAdminClient(server.url, token=TOKEN, cacert=b"not a certificate")


def test_server_down_or_silent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VerdictdError) as e:  # nothing listens there any more
        KbsAdminClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout=5).list_resources()
    assert str(e.value) == (f"KBS admin http://127.0.0.1:{port} GET /kbs/v0/resource: cannot reach the server "
                            f"(Connection refused)")
    with socket.socket() as s:  # listens, never answers: the kernel completes the handshake
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(VerdictdError, match=r"GET /kbs/v0/resource: no answer within 0.3 s$"):
            KbsAdminClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout=0.3).list_resources()


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://127.0.0.1:1", "give https://HOST"),
    ("127.0.0.1:8080", "give https://HOST"),
    ("http://10.0.0.1:8080", "plain http:// only to a loopback host"),
    ("http://kbs.example:8080", "plain http:// only to a loopback host"),
    ("https://kbs.example:99999", "port"),
    ("https://user@kbs.example", "no user, query or fragment"),
    ("https://kbs.example/?x=1", "no user, query or fragment"),
])
def test_bad_urls(url: str, why: str) -> None:
    with pytest.raises(VerdictdError, match=why):
        KbsAdminClient(url, token=TOKEN)


def test_loopback_http_allowed() -> None:
    for url in ("http://127.0.0.1:1", "http://[::1]:1", "http://localhost:1"):
        assert KbsAdminClient(url, token=TOKEN).tls is False
    with pytest.raises(VerdictdError, match="needs https"):
        KbsAdminClient("http://127.0.0.1:1", token=TOKEN, cacert=b"x")


def test_error_text() -> None:
    body = b'{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"no\\nway"}'
    assert _error_text(body, "Forbidden") == "PolicyDeny: no way"
    assert _error_text(b'{"detail":"only detail"}', "Bad Request") == "only detail"
    assert _error_text(b"<html>proxy error</html>", "Bad Gateway") == "Bad Gateway"
    assert _error_text(b"", "") == "error"
