"""verdictd's clientapi end to end over gRPC: a real AdminServer on a unix socket (token auth) and on loopback TCP
(mutual TLS), driven by AdminClient, by raw gRPC calls (upstream's method paths, malformed protobuf, oversized
messages) and by the `verdict` CLI (in-process and as a subprocess)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from inclavare.cli import verdict
from inclavare.services.verdictd.clientapi import MAX_MESSAGE, AdminApi, AdminAuth, AdminServer, cert_fingerprint
from inclavare.services.verdictd.clientapi_client import AdminClient
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.proto import clientapi_pb2 as pb
from inclavare.services.verdictd.store import KIND_KEY, Store
from tests.unit.services.verdictd.clientapi_doubles import (
    BAD_INPUT,
    GOOD_INPUT,
    KEK,
    POLICY,
    REFERENCE,
    TOKEN,
    Pki,
    make_pki,
    make_tester,
    short_socket,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "state"), KEK)
    yield s
    s.close()


@pytest.fixture
def sock(tmp_path: Path, store: Store) -> Iterator[str]:
    path = short_socket(tmp_path)
    srv = AdminServer(AdminApi(store, make_tester(), {"sgx": "package policy\n"}), AdminAuth(token=TOKEN),
                      path).start()
    yield path
    srv.stop()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def tls_server(store: Store, pki: Pki, **auth: Any) -> AdminServer:
    a = AdminAuth(cert_pem=pki.server_cert, key_pem=pki.server_key, client_ca_pem=pki.ca_pem, **auth)
    return AdminServer(AdminApi(store, make_tester()), a, "127.0.0.1:0").start()


# -- token auth over a unix socket


def test_every_service_round_trips(sock: str, store: Store) -> None:
    with AdminClient(sock, token=TOKEN) as c:
        kid = c.create_key()
        assert c.get_key(kid) == store.get_secret(KIND_KEY, kid)
        c.delete_key(kid)
        with pytest.raises(VerdictdError, match="GetKey: key .* does not exist"):
            c.get_key(kid)
        c.set_opa_policy("p", POLICY.encode())
        assert c.export_opa_policy("p") == POLICY.encode()
        assert c.export_opa_policy("sgx") == b"package policy\n"
        c.set_opa_reference("r", REFERENCE)
        assert c.export_opa_reference("r") == REFERENCE
        assert c.test_opa(input_json=GOOD_INPUT, policy_name="p", reference_name="r")["allow"] is True
        assert c.test_opa(input_json=BAD_INPUT, policy_content=POLICY.encode(),
                          reference_content=REFERENCE)["allow"] is False
        c.set_image_policy(b'{"default": [{"type": "reject"}]}')
        assert c.export_image_policy() == b'{"default": [{"type": "reject"}]}'
        c.set_image_sigstore(b"default-docker:\n  sigstore: file:///s\n")
        assert c.export_image_sigstore() == b"default-docker:\n  sigstore: file:///s\n"
    recs = list(reversed(store.audit_records(20)))
    assert [r["event"][len("clientapi."):] for r in recs] == [
        "create-key", "get-key", "delete-key", "set-opa-policy", "set-opa-reference", "set-image-policy",
        "set-image-sigstore"]
    assert {r["detail"]["by"] for r in recs} == {"token"}


def test_errors_travel_in_the_status_as_upstream(sock: str) -> None:
    ch = grpc.insecure_channel("unix:" + sock)
    md = (("authorization", "Bearer " + TOKEN.decode()),)
    # upstream's lower-case method paths are the wire contract
    export = ch.unary_unary("/clientapi.OpaService/exportOpaPolicy",
                            request_serializer=pb.ExportOpaPolicyRequest.SerializeToString,
                            response_deserializer=pb.ExportOpaPolicyResponse.FromString)
    r = export(pb.ExportOpaPolicyRequest(name=b"nothing"), metadata=md, timeout=10)
    assert r.status == b"policy 'nothing' is not set" and r.content == b""
    test = ch.unary_unary("/clientapi.OpaService/TestOpa", request_serializer=pb.TestOpaRequest.SerializeToString,
                          response_deserializer=pb.TestOpaResponse.FromString)
    r = test(pb.TestOpaRequest(policyname=b"sgx", referencename=b"r", input=b"{}"), metadata=md, timeout=10)
    assert r.status.startswith(b"make_decision error: reference 'r' is not set")
    ch.close()


@pytest.mark.parametrize("token", [None, b"wrong-token-0123456789", TOKEN + b"x"])
def test_missing_or_wrong_token_unauthenticated(sock: str, store: Store, token: bytes | None) -> None:
    before = store.list_secrets(KIND_KEY)
    with AdminClient(sock, token=token) as c:
        for call in (c.create_key, lambda: c.export_opa_policy("sgx"), lambda: c.set_image_policy(b"{}")):
            with pytest.raises(VerdictdError, match="UNAUTHENTICATED"):
                call()
    assert store.list_secrets(KIND_KEY) == before
    assert store.audit_records(10) == []


def test_unknown_method_needs_auth_first(sock: str) -> None:
    ch = grpc.insecure_channel("unix:" + sock)
    probe = ch.unary_unary("/clientapi.GpgService/listGpgKeys")
    with pytest.raises(grpc.RpcError) as e:
        probe(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        probe(b"", timeout=10, metadata=(("authorization", "Bearer " + TOKEN.decode()),))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED  # GpgService is declared, not served
    ch.close()


def test_malformed_and_oversized_messages_refused_and_service_goes_on(sock: str) -> None:
    ch = grpc.insecure_channel("unix:" + sock, options=[("grpc.max_send_message_length", 8 << 20)])
    md = (("authorization", "Bearer " + TOKEN.decode()),)
    raw = ch.unary_unary("/clientapi.OpaService/SetOpaPolicy")
    with pytest.raises(grpc.RpcError) as e:
        raw(b"\x0a\xff\xff\xff\xff\x0f", metadata=md, timeout=10)  # field 1, length beyond the message
    assert e.value.code() == grpc.StatusCode.INTERNAL
    with pytest.raises(grpc.RpcError) as e:
        raw(pb.SetOpaPolicyRequest(name=b"big", content=b"#" * (MAX_MESSAGE + 1)).SerializeToString(), metadata=md,
            timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ch.close()
    with AdminClient(sock, token=TOKEN) as c:
        assert len(c.get_key(c.create_key())) == 32


# -- mutual TLS on loopback TCP


def test_mtls_client_certificate(store: Store, pki: Pki) -> None:
    srv = tls_server(store, pki)
    addr = f"127.0.0.1:{srv.port}"
    try:
        with AdminClient(addr, cacert=pki.ca_pem, cert=pki.client_cert, key=pki.client_key) as c:
            kid = c.create_key()
        fp = cert_fingerprint(pki.client_cert)
        assert store.audit_records(1)[0]["detail"] == {"by": f"cert:{fp[:16]}", "kid": kid}
        for kwargs in ({}, {"cert": pki.other_cert, "key": pki.other_key}):  # none, or one from another CA
            with AdminClient(addr, cacert=pki.ca_pem, timeout=5, **kwargs) as c, \
                    pytest.raises(VerdictdError, match="UNAVAILABLE"):
                c.create_key()
        with AdminClient(addr, token=TOKEN, timeout=5) as c, pytest.raises(VerdictdError, match="UNAVAILABLE"):
            c.create_key()  # plain text to a TLS port
    finally:
        srv.stop()


def test_mtls_pin_and_token_all_required(store: Store, pki: Pki) -> None:
    other_pin = "ab" * 32
    srv = tls_server(store, pki, client_pins=frozenset({other_pin}))
    addr = f"127.0.0.1:{srv.port}"
    try:
        with AdminClient(addr, cacert=pki.ca_pem, cert=pki.client_cert, key=pki.client_key) as c, \
                pytest.raises(VerdictdError, match="UNAUTHENTICATED"):
            c.create_key()  # a valid chain, but not the pinned certificate
    finally:
        srv.stop()
    srv = tls_server(store, pki, client_pins=frozenset({cert_fingerprint(pki.client_cert)}), token=TOKEN)
    addr = f"127.0.0.1:{srv.port}"
    try:
        with AdminClient(addr, cacert=pki.ca_pem, cert=pki.client_cert, key=pki.client_key) as c, \
                pytest.raises(VerdictdError, match="UNAUTHENTICATED"):
            c.create_key()  # certificate without the token
        with AdminClient(addr, cacert=pki.ca_pem, cert=pki.client_cert, key=pki.client_key, token=TOKEN) as c:
            assert c.create_key()
    finally:
        srv.stop()


# -- the verdict CLI


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = verdict.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_opa_flow(sock: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy, ref, good, bad = (tmp_path / n for n in ("p.rego", "r.json", "good.json", "bad.json"))
    policy.write_text(POLICY)
    ref.write_bytes(REFERENCE)
    good.write_bytes(GOOD_INPUT)
    bad.write_bytes(BAD_INPUT)
    base = ("-c", sock, "--token", TOKEN.decode())
    assert run_cli(capsys, *base, "--set-opa-policy", "mine", str(policy)) == (0, "set-opa-policy: OK\n", "")
    assert run_cli(capsys, *base, "--set-opa-reference", "ref", str(ref))[0] == 0
    code, out, _ = run_cli(capsys, *base, "--export-opa-policy", "mine", "-p", str(tmp_path / "out"))
    assert code == 2  # the export directory does not exist: a local problem
    (tmp_path / "out").mkdir()
    assert run_cli(capsys, *base, "--export-opa-policy", "mine", "-p", str(tmp_path / "out"))[0] == 0
    assert (tmp_path / "out" / "mine").read_text() == POLICY
    code, out, _ = run_cli(capsys, *base, "--export-opa-reference", "ref", "-p", "-")
    assert (code, out.encode()) == (0, REFERENCE)
    code, out, _ = run_cli(capsys, *base, "--json", "--test-opa-remote", "mine", "ref", str(good))
    assert code == 0 and json.loads(out)["decision"]["allow"] is True
    for flag, a, b in (("--test-opa-local", str(policy), str(ref)), ("--test-opa-local-policy", str(policy), "ref"),
                       ("--test-opa-local-reference", "mine", str(ref))):
        code, out, _ = run_cli(capsys, *base, "--json", flag, a, b, str(bad))
        assert code == 0 and json.loads(out)["decision"]["allow"] is False, flag


def test_cli_keys_and_images(sock: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], store: Store) -> None:
    base = ("-c", sock, "--token", TOKEN.decode())
    code, out, _ = run_cli(capsys, *base, "--create-key")
    kid = out.strip()
    assert code == 0 and store.get_secret(KIND_KEY, kid) is not None
    code, out, _ = run_cli(capsys, *base, "--json", "--get-key", kid)
    assert code == 0 and base64.b64decode(json.loads(out)["key"]) == store.get_secret(KIND_KEY, kid)
    assert run_cli(capsys, *base, "--delete-key", kid)[0] == 0
    code, out, err = run_cli(capsys, *base, "--json", "--get-key", kid)
    assert code == 1 and json.loads(out) == {"ok": False, "error": err.strip()[len("verdict: "):]}
    assert "does not exist" in err and err.count("\n") == 1
    img = tmp_path / "policy.json"
    img.write_text('{"default": [{"type": "reject"}]}')
    assert run_cli(capsys, *base, "--set-image-policy", str(img))[0] == 0
    assert run_cli(capsys, *base, "--export-image-policy", "-p", str(tmp_path))[0] == 0
    assert (tmp_path / "image_policy.json").read_text() == img.read_text()


@pytest.mark.parametrize(("argv", "code", "why"), [
    ((), 2, "exactly one action"),
    (("--create-key", "--get-key", "x"), 2, "not 2"),
    (("--set-opa-reference", "r", "/nonexistent"), 2, "No such file"),
    (("--token", "short", "--create-key"), 2, "--token"),
    (("--cert", "/x", "--create-key"), 2, "--cert and --key"),
    (("--export-opa-policy", "../x"), 2, "cannot be a file name"),
    (("--timeout", "-1", "--create-key"), 2, "--timeout"),
])
def test_cli_usage_errors(sock: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int,
                          why: str) -> None:
    got, _, err = run_cli(capsys, "-c", sock, *argv)
    assert got == code and why in err and err.startswith("verdict: ") and err.count("\n") == 1


def test_cli_not_json_input_refused_locally(sock: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "r.json"
    f.write_text("{nope")
    code, _, err = run_cli(capsys, "-c", sock, "--token", TOKEN.decode(), "--set-opa-reference", "r", str(f))
    assert code == 2 and "not JSON" in err


def test_cli_subprocess_token_from_env_and_refusal(sock: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "VERDICT_TOKEN": TOKEN.decode()}
    cmd = [sys.executable, "-m", "inclavare.cli.verdict", "-c", sock, "--create-key"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and len(ok.stdout.strip()) == 36, ok.stderr
    env["VERDICT_TOKEN"] = "wrong-token-0123456789"
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "UNAUTHENTICATED" in bad.stderr and bad.stdout == ""


def test_cli_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "-c", str(tmp_path / "none.sock"), "--token", TOKEN.decode(), "--timeout", "2",
                           "--create-key")
    assert code == 1 and "UNAVAILABLE" in err


def test_extra_services_share_the_server_and_a_bug_is_one_internal_line(store: Store, tmp_path: Path) -> None:
    """Upstream served the key provider beside clientapi: extra servicers are guarded unless declared public; a
    servicer's own abort keeps its status, an exception is INTERNAL and the server goes on."""
    from inclavare.services.verdictd.proto import clientapi_pb2_grpc as pbg

    class Gpg(pbg.GpgServiceServicer):
        def listGpgKeys(self, request: Any, context: Any) -> Any:  # noqa: N802
            raise RuntimeError("secret detail")

        def importGpgKey(self, request: Any, context: Any) -> Any:  # noqa: N802
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")

        def exportGpgKeyring(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.ExportGpgKeyringResponse(status=b"OK", content=b"public")

    path = short_socket(tmp_path, "x.sock")
    srv = AdminServer(AdminApi(store, make_tester()), AdminAuth(token=TOKEN), path,
                      extra=[(pbg.add_GpgServiceServicer_to_server, Gpg())],
                      public=["/clientapi.GpgService/exportGpgKeyring"]).start()
    try:
        ch = grpc.insecure_channel("unix:" + path)
        stub = pbg.GpgServiceStub(ch)
        md = (("authorization", "Bearer " + TOKEN.decode()),)
        assert stub.exportGpgKeyring(pb.ExportGpgKeyringRequest(), timeout=10).content == b"public"  # no token
        with pytest.raises(grpc.RpcError) as e:
            stub.listGpgKeys(pb.ListGpgKeysRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            stub.listGpgKeys(pb.ListGpgKeysRequest(), timeout=10, metadata=md)
        assert e.value.code() == grpc.StatusCode.INTERNAL and "secret detail" not in (e.value.details() or "")
        with pytest.raises(grpc.RpcError) as e:
            stub.importGpgKey(pb.ImportGpgKeyRequest(), timeout=10, metadata=md)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ch.close()
        with AdminClient(path, token=TOKEN) as c:
            assert c.create_key()
    finally:
        srv.stop()


def test_concurrent_call_cap(store: Store, tmp_path: Path) -> None:
    """Beyond max_concurrent_rpcs, a call ends at once with RESOURCE_EXHAUSTED; once the busy one ends, calls are
    served again."""
    import threading

    from inclavare.services.verdictd.proto import clientapi_pb2_grpc as pbg

    entered, release = threading.Event(), threading.Event()

    class Gpg(pbg.GpgServiceServicer):
        def listGpgKeys(self, request: Any, context: Any) -> Any:  # noqa: N802
            entered.set()
            release.wait(30)
            return pb.ListGpgKeysResponse(keys=b"k")

    path = short_socket(tmp_path, "cap.sock")
    srv = AdminServer(AdminApi(store, make_tester()), AdminAuth(token=TOKEN), path, max_workers=2,
                      max_concurrent_rpcs=1, extra=[(pbg.add_GpgServiceServicer_to_server, Gpg())]).start()
    md = (("authorization", "Bearer " + TOKEN.decode()),)
    try:
        ch = grpc.insecure_channel("unix:" + path)
        busy = pbg.GpgServiceStub(ch).listGpgKeys.future(pb.ListGpgKeysRequest(), timeout=30, metadata=md)
        assert entered.wait(30)
        with AdminClient(path, token=TOKEN) as c, pytest.raises(VerdictdError, match="RESOURCE_EXHAUSTED"):
            c.create_key()
        release.set()
        assert busy.result().keys == b"k"
        import time

        with AdminClient(path, token=TOKEN) as c:
            for _ in range(100):  # the server frees the slot just after the client has the answer
                try:
                    assert c.create_key()
                    break
                except VerdictdError:
                    time.sleep(0.05)
            else:
                pytest.fail("the slot was never freed")
        ch.close()
    finally:
        release.set()
        srv.stop()
