"""verdictd's ocicrypt key provider over real gRPC (grpcio): WrapKey then UnWrapKey on a unix socket as
ocicrypt dials it, the attestation gate's status codes, size limits, a wrap-less listener, and TLS on TCP."""

from __future__ import annotations

import base64
import datetime
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from inclavare.services.verdictd.keyprovider import (
    TOKEN_PARAM,
    KeyProvider,
    decode_output,
    encode_unwrap_input,
    encode_wrap_input,
)
from inclavare.services.verdictd.keyprovider_grpc import MAX_MESSAGE, Listening, serve
from inclavare.services.verdictd.proto import keyprovider_pb2 as pb
from inclavare.services.verdictd.proto import keyprovider_pb2_grpc as pb_grpc
from inclavare.services.verdictd.store import Store
from inclavare.services.verdictd.tokens import TokenIssuer

KEK = bytes(range(1, 33))
OPTS = b'{"symkey":"' + base64.b64encode(bytes(range(32))) + b'","cipheroptions":{"nonce":"AAAA"}}'
MRENCLAVE = "c5" * 32
TIMEOUT = 20.0


class Policy:
    def allow_resource(self, input: dict[str, Any]) -> bool:  # noqa: A002
        return input["tee"] == "sgx" and input.get("mrenclave") == MRENCLAVE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "state"), KEK)
    s.put_secret("key", "layers/k1", bytes(range(200, 232)))
    yield s
    s.close()


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
def provider(store: Store, issuer: TokenIssuer) -> KeyProvider:
    return KeyProvider(store, issuer, Policy(), audit=store.audit)


@pytest.fixture
def sock(tmp_path: Path) -> str:
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return str(d / "keyprovider.sock")


@pytest.fixture
def listening(provider: KeyProvider, sock: str) -> Iterator[Listening]:
    srv = serve(provider, "unix:" + sock, workers=2, max_concurrent=4)
    yield srv
    srv.stop(None)


def call(channel: grpc.Channel, method: str, payload: bytes) -> bytes:
    stub = pb_grpc.KeyProviderServiceStub(channel)  # type: ignore[no-untyped-call]
    req = pb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=payload)
    out = getattr(stub, method)(req, timeout=TIMEOUT)
    return bytes(out.KeyProviderKeyWrapProtocolOutput)


def raw_call(channel: grpc.Channel, method: str, payload: bytes) -> bytes:
    """The call with the protobuf written by hand (field 1, bytes), on ocicrypt's method path: what a Go
    client sends, independent of our generated code."""
    def varint(n: int) -> bytes:
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | 0x80 if n else b])
            if not n:
                return out

    fn = channel.unary_unary(f"/keyprovider.KeyProviderService/{method}",
                             request_serializer=lambda b: b, response_deserializer=lambda b: b)
    wire = fn(b"\x0a" + varint(len(payload)) + payload, timeout=TIMEOUT)
    assert wire[:1] == b"\x0a"
    return bytes(pb.keyProviderKeyWrapProtocolOutput.FromString(wire).KeyProviderKeyWrapProtocolOutput)


def token(issuer: TokenIssuer, mrenclave: str = MRENCLAVE) -> bytes:
    return issuer.issue("sgx", {"mrenclave": mrenclave}, "UpToDate", "affirming").encode()


def test_wrap_unwrap_over_unix_socket(listening: Listening, sock: str, issuer: TokenIssuer, store: Store) -> None:
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(sock).st_mode)
    with grpc.insecure_channel("unix:" + sock) as ch:
        ann = decode_output(raw_call(ch, "WrapKey", encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS)))
        assert ann["annotation"] is not None and json.loads(ann["annotation"])["kid"] == "layers/k1"
        out = raw_call(ch, "UnWrapKey", encode_unwrap_input({"verdictd": [token(issuer)]}, ann["annotation"]))
        assert decode_output(out)["optsdata"] == OPTS
        # the generated stub speaks the same
        out2 = call(ch, "UnWrapKey", encode_unwrap_input({TOKEN_PARAM: [token(issuer)]}, ann["annotation"]))
        assert decode_output(out2)["optsdata"] == OPTS
    assert [r["detail"]["outcome"] for r in store.audit_records(3)] == ["released", "released", "wrapped"]


def _code(ch: grpc.Channel, method: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call(ch, method, payload)
    err: Any = e.value
    return err.code(), err.details()


def test_refusals_carry_status_and_one_line(listening: Listening, sock: str, issuer: TokenIssuer) -> None:
    with grpc.insecure_channel("unix:" + sock) as ch:
        ann = decode_output(call(ch, "WrapKey", encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS)))["annotation"]
        assert ann is not None
        cases = [
            ("UnWrapKey", encode_unwrap_input(None, ann), grpc.StatusCode.UNAUTHENTICATED, "no attestation token"),
            ("UnWrapKey", encode_unwrap_input({"verdictd": [b"a.b.c"]}, ann), grpc.StatusCode.UNAUTHENTICATED,
             "attestation token:"),
            ("UnWrapKey", encode_unwrap_input({"verdictd": [token(issuer, "00" * 32)]}, ann),
             grpc.StatusCode.PERMISSION_DENIED, "key policy denied"),
            ("UnWrapKey", encode_unwrap_input({"verdictd": [token(issuer)]}, ann[:-3] + b"}}}"),
             grpc.StatusCode.INVALID_ARGUMENT, "annotation"),
            ("WrapKey", encode_wrap_input({"verdictd": [b"layers/none"]}, OPTS), grpc.StatusCode.NOT_FOUND,
             "no such key"),
            ("WrapKey", encode_unwrap_input(None, ann), grpc.StatusCode.INVALID_ARGUMENT, "op is not 'keywrap'"),
            ("UnWrapKey", encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS), grpc.StatusCode.INVALID_ARGUMENT,
             "op is not 'keyunwrap'"),
            ("WrapKey", b"{not json", grpc.StatusCode.INVALID_ARGUMENT, "not JSON"),
            ("UnWrapKey", b" " * ((1 << 20) + 1), grpc.StatusCode.INVALID_ARGUMENT, "more than"),
        ]
        for method, payload, code, text in cases:
            got, details = _code(ch, method, payload)
            assert got == code and text in details and "\n" not in details, (method, got, details)
        # over the message cap: refused by grpc itself, and the server keeps serving
        got, _ = _code(ch, "WrapKey", b"x" * (MAX_MESSAGE + 1))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
        out = call(ch, "UnWrapKey", encode_unwrap_input({"verdictd": [token(issuer)]}, ann))
        assert decode_output(out)["optsdata"] == OPTS


def test_listener_without_wrap(provider: KeyProvider, sock: str, issuer: TokenIssuer, store: Store) -> None:
    from inclavare.services.verdictd.keyprovider import seal_annotation

    srv = serve(provider, sock, allow_wrap=False)  # a bare path is a unix socket
    try:
        with grpc.insecure_channel("unix:" + sock) as ch:
            got, details = _code(ch, "WrapKey", encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS))
            assert got == grpc.StatusCode.PERMISSION_DENIED and "not served" in details
            key = store.get_secret("key", "layers/k1")
            assert key is not None
            ann = seal_annotation(key, "layers/k1", OPTS)
            out = call(ch, "UnWrapKey", encode_unwrap_input({"verdictd": [token(issuer)]}, ann))
            assert decode_output(out)["optsdata"] == OPTS
    finally:
        srv.stop(None)


def _cert(tmp_path: Path) -> tuple[str, str, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "kp.crt", tmp_path / "kp.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path), pem


def test_tls_on_tcp(provider: KeyProvider, tmp_path: Path, issuer: TokenIssuer) -> None:
    cert, key, pem = _cert(tmp_path)
    srv = serve(provider, "127.0.0.1:0", cert=cert, key=key)
    try:
        assert srv.port > 0
        creds = grpc.ssl_channel_credentials(root_certificates=pem)
        opts = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(f"127.0.0.1:{srv.port}", creds, options=opts) as ch:
            ann = decode_output(call(ch, "WrapKey", encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS)))
            assert ann["annotation"] is not None
            out = call(ch, "UnWrapKey", encode_unwrap_input({"verdictd": [token(issuer)]}, ann["annotation"]))
            assert decode_output(out)["optsdata"] == OPTS
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as plain:  # no TLS: no answer
            with pytest.raises(grpc.RpcError) as e:
                call(plain, "WrapKey", encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    finally:
        srv.stop(None)


def test_mutual_tls(provider: KeyProvider, tmp_path: Path) -> None:
    cert, key, pem = _cert(tmp_path)  # self-signed: the server's certificate, the client CA and the client's
    srv = serve(provider, "127.0.0.1:0", cert=cert, key=key, client_ca=cert)
    opts = [("grpc.ssl_target_name_override", "localhost")]
    payload = encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS)
    try:
        mutual = grpc.ssl_channel_credentials(root_certificates=pem, private_key=Path(key).read_bytes(),
                                              certificate_chain=pem)
        with grpc.secure_channel(f"127.0.0.1:{srv.port}", mutual, options=opts) as ch:
            assert decode_output(call(ch, "WrapKey", payload))["annotation"] is not None
        anonymous = grpc.ssl_channel_credentials(root_certificates=pem)
        with grpc.secure_channel(f"127.0.0.1:{srv.port}", anonymous, options=opts) as ch:
            with pytest.raises(grpc.RpcError) as e:
                call(ch, "WrapKey", payload)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    finally:
        srv.stop(None)


def test_bad_listen_configuration(provider: KeyProvider, tmp_path: Path) -> None:
    from inclavare.services.verdictd.errors import VerdictdError

    cert, key, _ = _cert(tmp_path)
    with pytest.raises(VerdictdError, match="both a certificate and its key"):
        serve(provider, "127.0.0.1:0", cert=cert)
    with pytest.raises(VerdictdError, match="client CA needs"):
        serve(provider, "127.0.0.1:0", client_ca=cert)
    with pytest.raises(VerdictdError, match=r"TLS key .*/missing.key: No such file"):
        serve(provider, "127.0.0.1:0", cert=cert, key=str(tmp_path / "missing.key"))
    with pytest.raises(VerdictdError, match="out of range"):
        serve(provider, "127.0.0.1:0", workers=0)
