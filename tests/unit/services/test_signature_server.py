"""signature-server: upstream's API, HTTPS and mTLS, the token / certificate allow-lists, refusal of malformed
material, the audit log, 200 concurrent signing requests, and `sgx-tools sign --server`."""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import http.client
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from inclavare.cli import signature_server as server_cli
from inclavare.cli.sgx_tools import main as sgx_tools
from inclavare.enclave import image
from inclavare.formats.sgx import XFRM_LEGACY, AttributeFlags, Attributes
from inclavare.services.signature_server import (
    ServerConfig,
    SignatureClient,
    SignatureServer,
    SignatureServerError,
    hash_token,
    load_signing_key,
    load_token_hashes,
    make_server,
)
from inclavare.sgx import signing
from tests.unit.sgx_helpers import public_pem, rsa3072_e3_key, rsa3072_e3_pem

REPO = Path(__file__).resolve().parents[3]
WASM = b"\0asm\x01\0\0\0" + bytes(range(256)) * 20
TOKEN = "s3cret-token-for-ci"
PKCS1 = "/api/v1/signature/pkcs1"


# --------------------------------------------------------------------------------------------------
# Fixtures: the signing key, a test PKI, servers


def material(i: int = 0, **kw: Any) -> bytes:
    flags = int(AttributeFlags.MODE64BIT) | (int(AttributeFlags.DEBUG) if kw.pop("debug", False) else 0)
    sig = signing.build_sigstruct(hashlib.sha256(f"enclave {i}".encode()).digest(),
                                  attributes=Attributes(flags, XFRM_LEGACY),
                                  attribute_mask=Attributes(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFF1B),
                                  miscmask=0xFFFFFFFF, isvprodid=7, isvsvn=i % 0x10000, **kw)
    return sig.signing_material()


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool = False, server: bool = False) -> Any:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A test CA with a server certificate for 127.0.0.1 and client certificates alice, bob, mallory; an
    unrelated CA with its own client certificate (rogue). Paths to PEM files, plus fingerprints."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path_factory.mktemp("pki")
    out: dict[str, Any] = {"dir": d}

    def keypair() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def save(name: str, cert: Any, key: Any | None = None) -> None:
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[name] = str(d / f"{name}.pem")
        out[f"{name}_fp"] = cert.fingerprint(hashes.SHA256()).hex()
        if key is not None:
            p = d / f"{name}.key"
            p.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
            out[f"{name}_key"] = str(p)

    ca_key, other_key = keypair(), keypair()
    save("ca", _cert("test signing CA", ca_key, "test signing CA", ca_key, ca=True))
    save("other_ca", _cert("some other CA", other_key, "some other CA", other_key, ca=True))
    k = keypair()
    save("server", _cert("signature-server", k, "test signing CA", ca_key, server=True), k)
    for who in ("alice", "bob", "mallory"):
        k = keypair()
        save(who, _cert(who, k, "test signing CA", ca_key), k)
    k = keypair()
    save("rogue", _cert("alice", k, "some other CA", other_key), k)
    return out


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("sigkey") / "signing.pem"
    p.write_bytes(rsa3072_e3_pem(0))
    p.chmod(0o600)
    return str(p)


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("tokens") / "tokens"
    p.write_text(f"# allowed signers\n{hash_token(TOKEN)} ci\n\n{hash_token('another')}\n")
    return str(p)


@contextmanager
def running(keyfile: str, **kw: Any) -> Iterator[SignatureServer]:
    srv = make_server(ServerConfig(key_path=keyfile, listen="127.0.0.1:0", **kw), key=rsa3072_e3_key(0)).start()
    try:
        yield srv
    finally:
        srv.stop()


def raw(srv: SignatureServer, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, ctx: ssl.SSLContext | None = None) -> tuple[int, Any, bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    port = srv.server_address[1]
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10) if ctx is not None
            else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@functools.lru_cache(maxsize=1)
def pub_pem() -> bytes:
    return public_pem(rsa3072_e3_key(0))


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify_pkcs1(signature: bytes, data: bytes) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    rsa3072_e3_key(0).public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


# --------------------------------------------------------------------------------------------------
# The upstream API


def test_api_shapes(keyfile: str) -> None:
    with running(keyfile, allow_anyone=True) as srv:
        for path, text in (("/ping", b"ping"), ("/healthz", b"ok")):
            status, headers, body = raw(srv, "GET", path)
            assert (status, body) == (200, text) and headers["Content-Type"].startswith("text/plain")
        assert raw(srv, "HEAD", "/")[0] == 200
        status, headers, body = raw(srv, "GET", "/api/v1/signature/public-key")
        assert status == 200 and body == pub_pem()
        m = material(1)
        # upstream's client posts the material as text/plain
        status, headers, body = raw(srv, "POST", PKCS1, m, {"Content-Type": "text/plain"})
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        reply = json.loads(body)
        assert set(reply) == {"signature", "publicKey"}
        sig = base64.b64decode(reply["signature"], validate=True)
        assert len(sig) == 384 and reply["publicKey"].encode() == pub_pem()
        verify_pkcs1(sig, m)
        # the reply assembles into a SIGSTRUCT that verifies as EINIT checks it
        assert signing.assemble(m, sig, reply["publicKey"]).enclavehash == hashlib.sha256(b"enclave 1").digest()
        status, _, body = raw(srv, "GET", "/api/v1/signature/nothing")
        assert status == 404 and "no such resource" in json.loads(body)["error"]
        status, headers, body = raw(srv, "GET", PKCS1)
        assert status == 405 and headers["Allow"] == "POST" and "POST" in json.loads(body)["error"]
        with SignatureClient(srv.url + "/api/v1/signature/") as client:  # upstream-style URL with the prefix
            assert client.ping() and client.public_key() == pub_pem()
            sig2, pub = client.sign(m)
            sig3, _ = client.sign(material(2))  # the same kept-alive connection
        assert sig2 == sig and pub == pub_pem()
        verify_pkcs1(sig3, material(2))


def test_client_and_server_signing_give_the_same_loadable_image(keyfile: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "app.wasm"
    payload.write_bytes(WASM)
    common = ["--payload", str(payload), "--kind", "wasm", "--isvprodid", "3", "--isvsvn", "9", "--debug"]
    local, remote = tmp_path / "local.img", tmp_path / "remote.img"
    assert sgx_tools(["sign", "--key", keyfile, *common, "--out", str(local)]) == 0
    with running(keyfile, allow_anyone=True) as srv:
        assert sgx_tools(["sign", "--server", srv.url, *common, "--out", str(remote)]) == 0
        # the library path: signing material -> remote signature + public key -> image.assemble
        unsigned = image.build(WASM, "wasm", image.EnclaveSettings(isvprodid=3, isvsvn=9, debug=True))
        with SignatureClient(srv.url) as client:
            lib_image = image.assemble(unsigned, *client.sign(unsigned.signing_material()))
    capsys.readouterr()
    n = rsa3072_e3_key(0).public_key().public_numbers().n
    loaded = [image.load(str(local)), image.load(str(remote)), image.load(lib_image)]
    assert {img.mrenclave for img in loaded} == {unsigned.mrenclave}
    assert {img.mrsigner for img in loaded} == {hashlib.sha256(n.to_bytes(384, "little")).digest()}
    assert all((img.isvprodid, img.isvsvn, img.settings.debug) == (3, 9, True) for img in loaded)
    assert sgx_tools(["sigstruct", "verify", str(remote)]) == 0


# --------------------------------------------------------------------------------------------------
# Malformed material


def _patched(offset: int, data: bytes) -> bytes:
    m = bytearray(material(5))
    m[offset:offset + len(data)] = data
    return bytes(m)


MALFORMED = [
    (material(5)[:255], "255 bytes, expected 256"),
    (b"", "0 bytes, expected 256"),
    (material(5) + b"\0", "257 bytes, expected 256"),
    (_patched(0, b"\x07"), "HEADER (bytes 0..11)"),
    (_patched(24, b"\x02"), "HEADER2 (bytes 24..39)"),
    (_patched(12, b"\x01"), "TYPE=0x1"),
    (_patched(16, b"\x34\x12"), "VENDOR=0x1234"),
    (_patched(60, b"\x01"), "reserved"),
    (_patched(188, bytes(32)), "ENCLAVEHASH is all zero"),
    (_patched(156, (int(AttributeFlags.MODE64BIT | AttributeFlags.INIT)).to_bytes(8, "little")), "INIT"),
    (_patched(156, (4 | 1 << 40).to_bytes(8, "little")), "reserved bits 0x10000000000"),
    (_patched(164, bytes(8)), "lacks x87 and SSE"),
]


def test_malformed_material_is_refused_and_audited(keyfile: str, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with running(keyfile, allow_anyone=True, audit_log=str(audit)) as srv:
        for body, expected in MALFORMED:
            status, headers, reply = raw(srv, "POST", PKCS1, body)
            assert status == 400 and headers["Content-Type"].startswith("application/json"), expected
            assert expected in json.loads(reply)["error"]
        # an oversized body is refused from its Content-Length, unread
        status, _, reply = raw(srv, "POST", PKCS1, None, {"Content-Length": str(1 << 20)})
        assert status == 413 and "expected 256" in json.loads(reply)["error"]
        with SignatureClient(srv.url) as client, pytest.raises(SignatureServerError) as err:
            client.sign(material(5)[:100])
        assert str(err.value) == (f"signature server {srv.url}: HTTP 400: signing material is 100 bytes, expected "
                                  "256 (SIGSTRUCT HEADER || BODY)")
    lines = audit_lines(audit)
    assert len(lines) == len(MALFORMED) + 1
    assert all(line["outcome"] == "refused" and line["status"] == 400 and line["client"] == "anonymous"
               for line in lines)
    assert [line["material_sha256"] for line in lines[:len(MALFORMED)]] == [
        hashlib.sha256(body).hexdigest() for body, _ in MALFORMED]
    assert not any("signature_sha256" in line for line in lines)
    assert oct(audit.stat().st_mode & 0o777) == oct(0o600)


def _send(srv: SignatureServer, head: bytes, body: bytes = b"") -> bytes:
    """Raw bytes on a fresh connection (http.client would not send conflicting headers); the whole answer."""
    import socket

    with socket.create_connection(srv.server_address[:2], timeout=10) as s:
        s.sendall(head + b"\r\n" + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize(("extra", "status", "words"), [
    (b"Content-Length: 256\r\nContent-Length: 100\r\n", 400, "2 Content-Length headers"),
    (b"Content-Length: 256\r\nTransfer-Encoding: chunked\r\n", 411, "not a Transfer-Encoding"),
    (b"Content-Length: +256\r\n", 400, "is not a byte count"),
    (b"Content-Length: 0x100\r\n", 400, "is not a byte count"),
])
def test_ambiguous_body_framing_is_refused_unsigned(keyfile: str, tmp_path: Path, extra: bytes, status: int,
                                                    words: str) -> None:
    """Two parsers must never disagree on where a body ends (request smuggling): conflicting or encoded lengths
    are refused, and nothing is signed."""
    audit = tmp_path / "audit.jsonl"
    with running(keyfile, allow_anyone=True, audit_log=str(audit)) as srv:
        head = b"POST " + PKCS1.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra
        reply = _send(srv, head, material(1))
        first, _, rest = reply.partition(b"\r\n")
        assert first.split()[1] == str(status).encode(), reply[:200]
        assert words in json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]
        assert b"signature" not in rest.split(b"\r\n\r\n", 1)[1]


def test_no_signature_without_an_audit_line(keyfile: str, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with running(keyfile, allow_anyone=True, audit_log=str(audit)) as srv:
        assert raw(srv, "POST", PKCS1, material(8))[0] == 200
        assert srv.signer.audit is not None
        srv.signer.audit.close()  # from now on every audit write fails
        status, _, body = raw(srv, "POST", PKCS1, material(9))
        assert status == 500 and json.loads(body) == {
            "error": "the audit log cannot be written, so the signature is withheld"}
    assert [line["isvsvn"] for line in audit_lines(audit)] == [8]


# --------------------------------------------------------------------------------------------------
# Allow-lists and the audit log


def test_token_allow_list(keyfile: str, tokens_file: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                          capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    caplog.set_level(logging.DEBUG, logger="inclavare")
    with running(keyfile, tokens_file=tokens_file, audit_log=str(audit)) as srv:
        m = material(11)
        status, headers, body = raw(srv, "POST", PKCS1, m)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert "authentication required: a bearer token" in json.loads(body)["error"]
        for auth, expected in ((f"Bearer {TOKEN}x", "unknown bearer token"), (f"Basic {TOKEN}", "malformed"),
                               ("Bearer", "malformed")):
            status, _, body = raw(srv, "POST", PKCS1, m, {"Authorization": auth})
            assert status == 401 and expected in json.loads(body)["error"]
        # reading the public key needs no credentials
        assert raw(srv, "GET", "/api/v1/signature/public-key")[0] == 200
        status, _, body = raw(srv, "POST", PKCS1, m, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        signature = base64.b64decode(json.loads(body)["signature"])
        verify_pkcs1(signature, m)
        with SignatureClient(srv.url, token="wrong") as client, pytest.raises(SignatureServerError, match="HTTP 401"):
            client.sign(m)
        with SignatureClient(srv.url, token="another") as client:
            verify_pkcs1(client.sign(m)[0], m)
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        payload = tmp_path / "p.wasm"
        payload.write_bytes(WASM)
        out = tmp_path / "img"
        assert sgx_tools(["sign", "--server", srv.url, "--token-file", str(token_file), "--payload", str(payload),
                          "--kind", "wasm", "--out", str(out)]) == 0
        image.load(str(out))
        assert sgx_tools(["sign", "--server", srv.url, "--payload", str(payload), "--kind", "wasm",
                          "--out", str(tmp_path / "x")]) == 1
        assert capsys.readouterr().err == (f"sgx-tools: signature server {srv.url}: HTTP 401: authentication "
                                           "required: a bearer token\n")
    lines = audit_lines(audit)
    assert [(line["client"], line["outcome"]) for line in lines] == [
        ("unauthenticated", "refused")] * 4 + [("token:ci", "signed"), ("unauthenticated", "refused"),
                                               (f"token:{hash_token('another')[:12]}", "signed"),
                                               ("token:ci", "signed"), ("unauthenticated", "refused")]
    signed = lines[4]
    assert signed["signature_sha256"] == hashlib.sha256(signature).hexdigest()
    assert signed["mrenclave"] == hashlib.sha256(b"enclave 11").hexdigest()
    assert (signed["isvprodid"], signed["isvsvn"], signed["debug"]) == (7, 11, False)
    assert signed["attributes"] == {"flags": "0x0000000000000004", "xfrm": "0x0000000000000003"}
    assert signed["remote"] == "127.0.0.1" and signed["time"].endswith("+00:00")
    # tokens never reach the audit log or the logs; the key's private parts neither
    text = audit.read_text() + "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in text and "another" not in text and "PRIVATE" not in text


def _ctx(pki: dict[str, Any], who: str | None = None, ca: str = "ca") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki[ca])
    if who:
        ctx.load_cert_chain(pki[who], pki[f"{who}_key"])
    return ctx


def test_mtls_allow_list(keyfile: str, tokens_file: str, pki: dict[str, Any], tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    https = {"cert": pki["server"], "tls_key": pki["server_key"], "client_ca": pki["ca"]}
    m = material(21)
    with running(keyfile, **https, tokens_file=tokens_file, allow_cns=("alice",),
                 allow_fingerprints=(pki["bob_fp"].upper(),), audit_log=str(audit)) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        for who in ("alice", "bob"):
            status, _, body = raw(srv, "POST", PKCS1, m, ctx=_ctx(pki, who))
            assert status == 200, body
            verify_pkcs1(base64.b64decode(json.loads(body)["signature"]), m)
        status, _, body = raw(srv, "POST", PKCS1, m, ctx=_ctx(pki, "mallory"))
        assert status == 403 and "CN='mallory'" in json.loads(body)["error"]
        status, _, body = raw(srv, "POST", PKCS1, m, ctx=_ctx(pki))
        assert status == 401 and "a bearer token or a client certificate" in json.loads(body)["error"]
        # a token works without a certificate (the server asks for one but does not require it)
        with SignatureClient(srv.url, ca_cert=pki["ca"], token=TOKEN) as client:
            verify_pkcs1(client.sign(m)[0], m)
        with SignatureClient(srv.url, ca_cert=pki["ca"], client_cert=pki["alice"],
                             client_key=pki["alice_key"]) as client:
            verify_pkcs1(client.sign(m)[0], m)
        # a certificate from another CA (even with an allowed CN) fails the handshake
        with SignatureClient(srv.url, ca_cert=pki["ca"], client_cert=pki["rogue"], client_key=pki["rogue_key"]) \
                as client, pytest.raises(SignatureServerError):
            client.sign(m)
        # the client verifies the server: another CA, or the system's CAs, do not vouch for it
        for ca in (pki["other_ca"], None):
            with SignatureClient(srv.url, ca_cert=ca, token=TOKEN) as client, \
                    pytest.raises(SignatureServerError, match="TLS certificate verification failed"):
                client.sign(m)
    clients = [(line["client"], line["outcome"], line.get("status")) for line in audit_lines(audit)]
    assert clients == [
        (f"cert:CN=alice;sha256={pki['alice_fp']}", "signed", 200),
        (f"cert:CN=bob;sha256={pki['bob_fp']}", "signed", 200),
        (f"cert:CN=mallory;sha256={pki['mallory_fp']}", "refused", 403),
        ("unauthenticated", "refused", 401),
        ("token:ci", "signed", 200),
        (f"cert:CN=alice;sha256={pki['alice_fp']}", "signed", 200),
    ]


def test_mtls_only_requires_a_client_certificate(keyfile: str, pki: dict[str, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with running(keyfile, cert=pki["server"], tls_key=pki["server_key"], client_ca=pki["ca"]) as srv:
        with SignatureClient(srv.url, ca_cert=pki["ca"], client_cert=pki["mallory"],
                             client_key=pki["mallory_key"]) as client:
            verify_pkcs1(client.sign(material(3))[0], material(3))  # the CA alone is the allow-list
        with SignatureClient(srv.url, ca_cert=pki["ca"]) as client, pytest.raises(SignatureServerError):
            client.sign(material(3))
        payload = tmp_path / "p.wasm"
        payload.write_bytes(WASM)
        out = tmp_path / "img"
        argv = ["sign", "--server", srv.url, "--payload", str(payload), "--kind", "wasm", "--out", str(out)]
        assert sgx_tools([*argv, "--ca-cert", pki["ca"], "--client-cert", pki["alice"],
                          "--client-key", pki["alice_key"]]) == 0
        n = rsa3072_e3_key(0).public_key().public_numbers().n
        assert image.load(str(out)).mrsigner == hashlib.sha256(n.to_bytes(384, "little")).digest()
        capsys.readouterr()
        assert sgx_tools([*argv, "--ca-cert", pki["other_ca"]]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"sgx-tools: signature server {srv.url}: TLS certificate verification failed: ")
        assert err.count("\n") == 1


def test_200_concurrent_signing_requests(keyfile: str, tokens_file: str, pki: dict[str, Any],
                                         tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    n = 200
    results: dict[int, tuple[bytes, bytes]] = {}
    errors: list[BaseException] = []
    with running(keyfile, cert=pki["server"], tls_key=pki["server_key"], tokens_file=tokens_file,
                 audit_log=str(audit)) as srv:
        barrier = threading.Barrier(n, timeout=60)

        def one(i: int) -> None:
            try:
                with SignatureClient(srv.url, ca_cert=pki["ca"], token=TOKEN, timeout=60) as client:
                    barrier.wait()
                    results[i] = client.sign(material(i))
            except BaseException as e:  # noqa: BLE001 (collected and reported below)
                errors.append(e)
                barrier.abort()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert sorted(results) == list(range(n))
    for i, (sig, pub) in results.items():
        sigstruct = signing.assemble(material(i), sig, pub)  # raises unless RSA, Q1 and Q2 all verify
        assert signing.verify(sigstruct.pack()).isvsvn == i
    lines = audit_lines(audit)
    assert len(lines) == n and {line["outcome"] for line in lines} == {"signed"}
    assert {line["signature_sha256"] for line in lines} == {hashlib.sha256(s).hexdigest() for s, _ in
                                                            results.values()}
    assert {line["mrenclave"] for line in lines} == {hashlib.sha256(f"enclave {i}".encode()).hexdigest()
                                                     for i in range(n)}


# --------------------------------------------------------------------------------------------------
# Configuration, keys, tokens, the CLI


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, "no allow-list"),
    ({"allow_anyone": True, "tokens_file": "TOKENS"}, "--allow-anyone contradicts"),
    ({"cert": "X", "allow_anyone": True}, "needs both --cert and --tls-key"),
    ({"client_ca": "X"}, "--client-ca (mutual TLS) needs HTTPS"),
    ({"allow_cns": ("alice",), "tokens_file": "TOKENS"}, "need --client-ca"),
    ({"allow_anyone": True, "listen": "127.0.0.1:http"}, "listen address '127.0.0.1:http'"),
    ({"allow_anyone": True, "listen": "127.0.0.1:70000"}, "port in 0..65535"),
])
def test_config_errors(keyfile: str, tokens_file: str, kw: dict[str, Any], expected: str) -> None:
    kw = {k: tokens_file if v == "TOKENS" else v for k, v in kw.items()}
    with pytest.raises(SignatureServerError) as err:
        make_server(ServerConfig(key_path=keyfile, **kw), key=rsa3072_e3_key(0))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_bad_fingerprint_and_tokens_file(keyfile: str, pki: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(SignatureServerError, match="--allow-fingerprint 'abc'"):
        make_server(ServerConfig(key_path=keyfile, cert=pki["server"], tls_key=pki["server_key"],
                                 client_ca=pki["ca"], allow_fingerprints=("abc",)), key=rsa3072_e3_key(0))
    bad = tmp_path / "tokens"
    bad.write_text(f"{hash_token('a')} a\nplaintext-token\n")
    with pytest.raises(SignatureServerError, match=f"tokens file {bad}:2: expected the SHA-256"):
        load_token_hashes(str(bad))
    bad.write_text(f"{hash_token('a')} a\n{hash_token('a').upper()} b\n")
    with pytest.raises(SignatureServerError, match="listed twice"):
        load_token_hashes(str(bad))
    bad.write_text("# nothing\n")
    with pytest.raises(SignatureServerError, match="lists no token hashes"):
        load_token_hashes(str(bad))


def test_signing_key_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    asked = []

    def generate(public_exponent: int, key_size: int) -> Any:  # a fresh RSA-3072 takes seconds: reuse one
        asked.append((public_exponent, key_size))
        return rsa3072_e3_key(0)

    monkeypatch.setattr(rsa, "generate_private_key", generate)
    path = tmp_path / "k.pem"
    with pytest.raises(SignatureServerError, match="no such file .--generate-key creates one."):
        load_signing_key(str(path))
    key = load_signing_key(str(path), generate=True)
    assert asked == [(3, 3072)]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, as upstream reads it
    nums = key.public_key().public_numbers()
    assert (nums.n.bit_length(), nums.e) == (3072, 3)
    again = load_signing_key(str(path), generate=True)  # an existing key is kept, not replaced
    assert again.public_key().public_numbers() == nums and len(asked) == 1
    path.chmod(0o640)
    with pytest.raises(SignatureServerError, match="mode 0640 lets other users read the key; chmod 600"):
        load_signing_key(str(path))
    weak = tmp_path / "weak.pem"
    from cryptography.hazmat.primitives import serialization

    monkeypatch.undo()
    weak.write_bytes(rsa.generate_private_key(65537, 1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    weak.chmod(0o600)
    with pytest.raises(SignatureServerError, match="1024 bits, SGX needs 3072"):
        load_signing_key(str(weak))


def test_client_refuses_unsafe_setups(pki: dict[str, Any]) -> None:
    with pytest.raises(SignatureServerError, match="refusing to send a bearer token over plain http"):
        SignatureClient("http://signer.example:9080", token=TOKEN)
    with pytest.raises(SignatureServerError, match="client certificates need an https"):
        SignatureClient("http://127.0.0.1:9080", client_cert=pki["alice"])
    with pytest.raises(SignatureServerError, match="expected an http:// or https:// URL"):
        SignatureClient("ftp://127.0.0.1/")
    with pytest.raises(SignatureServerError, match="cannot connect|Connection refused"):
        # a port nothing listens on: bind one, close it
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        SignatureClient(f"http://127.0.0.1:{port}").sign(material())


def test_sgx_tools_sign_flag_errors(keyfile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "p.wasm"
    payload.write_bytes(WASM)
    base = ["sign", "--payload", str(payload), "--kind", "wasm", "--out", str(tmp_path / "o")]
    cases = [
        ([*base, "--key", keyfile, "--token", "t"], "--token is for server-side signing (--server), not --key"),
        ([*base, "--key", keyfile, "--server", "http://127.0.0.1:1"], "not allowed with argument"),
        ([*base], "one of the arguments --key --server is required"),
        ([*base, "--server", "http://127.0.0.1:1", "--token", "a", "--token-file", "f"], "not allowed with"),
    ]
    for argv, expected in cases:
        assert sgx_tools(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("sgx-tools: ") and expected in err and err.count("\n") == 1, err


@pytest.fixture
def restore_logging() -> Iterator[None]:
    lg = logging.getLogger("inclavare")
    saved = (lg.handlers[:], lg.level, lg.propagate)
    yield
    lg.handlers[:], lg.level, lg.propagate = saved[0], saved[1], saved[2]


def test_cli_errors_and_hash_token(keyfile: str, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    assert server_cli.main(["--key", keyfile, "--listen", "127.0.0.1:0"]) == 1
    assert capsys.readouterr().err.endswith("signature-server: no allow-list: give --tokens-file and/or --client-ca "
                                            "[--allow-cn NAME], or --allow-anyone to sign for every client that "
                                            "can connect\n")
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(TOKEN + "\n"))
    assert server_cli.main(["--hash-token"]) == 0
    assert capsys.readouterr().out == f"{hashlib.sha256(TOKEN.encode()).hexdigest()} client\n"


def test_cli_serves_until_sigterm(keyfile: str, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    pub = tmp_path / "pub.pem"
    pub.write_bytes(pub_pem())
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.signature_server", "--private-key", keyfile,
                             "--public-key", str(pub), "--listen", "127.0.0.1:0", "--allow-anyone",
                             "--audit-log", str(audit)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while True:
            line = proc.stderr.readline()
            assert line, f"server exited: {''.join(lines)}"
            lines.append(line)
            if "listening on" in line:
                break
        url = line.split("listening on ", 1)[1].split()[0]
        with SignatureClient(url) as client:
            assert client.ping()
            verify_pkcs1(client.sign(material(4))[0], material(4))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert [line["outcome"] for line in audit_lines(audit)] == ["signed"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_slow_clients_are_cut_off(keyfile: str) -> None:
    """Headers or a body dripped faster than the per-read timeout still end at the request's deadline, and
    nothing is signed for them."""
    import socket
    import time

    with running(keyfile, allow_anyone=True) as srv:
        srv.io_timeout = 1.0
        port = srv.server_address[1]
        heads = [b"GET /ping HTTP/1.1\r\nHost: x\r\n",
                 b"POST " + PKCS1.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"]
        drips = [b"X-a: b\r\n", b"x"]
        for head, drip in zip(heads, drips, strict=True):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(head)
                s.settimeout(0.25)
                deadline, answer = time.monotonic() + 10, None
                while answer is None and time.monotonic() < deadline:
                    try:
                        answer = s.recv(4096)
                    except TimeoutError:
                        s.sendall(drip)
                    except OSError:
                        answer = b""
                assert answer == b"", f"a slow client was not cut off: {answer!r}"
        assert raw(srv, "GET", "/ping")[0] == 200
