"""verdictd's clientapi operations (AdminApi) over a real Store in a tmp dir, and its authentication settings
(AdminAuth, the token file, the listen address rules). The gRPC wire is tested in
tests/integration/test_vd_clientapi.py."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from inclavare.services.verdictd.clientapi import (
    IMAGE_POLICY,
    KIND_IMAGE,
    KIND_OPA_REFERENCE,
    AdminApi,
    AdminAuth,
    AdminServer,
    _principal,
    cert_fingerprint,
    image_resource,
    load_token,
)
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.proto import clientapi_pb2 as pb
from inclavare.services.verdictd.store import KIND_KEY, MAX_POLICY, Store
from tests.unit.services.verdictd.clientapi_doubles import (
    BAD_INPUT,
    GOOD_INPUT,
    KEK,
    POLICY,
    REFERENCE,
    TOKEN,
    make_pki,
    make_tester,
)

DEFAULT_SGX = "package policy\n\ndefault allow := false\n"
IMAGE_POLICY_JSON = json.dumps({"default": [{"type": "reject"}], "transports": {}}).encode()


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(str(tmp_path / "state"), KEK)
    yield s
    s.close()


@pytest.fixture
def api(store: Store) -> AdminApi:
    return AdminApi(store, make_tester(), {"sgx": DEFAULT_SGX})


def events(store: Store) -> list[tuple[str, dict[str, Any]]]:
    return [(r["event"], r["detail"]) for r in reversed(store.audit_records(100))]


# -- keys


def test_create_key_is_a_fresh_sealed_aes256_key(api: AdminApi, store: Store) -> None:
    a, b = api.create_key(), api.create_key()
    assert a != b
    key = store.get_secret(KIND_KEY, a)
    assert key is not None and len(key) == 32 and key != store.get_secret(KIND_KEY, b)
    assert api.get_key(a.encode()) == key
    with open(store.db_path, "rb") as f:
        assert key not in f.read()  # sealed at rest


def test_delete_key_then_get_refused(api: AdminApi) -> None:
    kid = api.create_key()
    api.delete_key(kid.encode())
    with pytest.raises(VerdictdError, match="does not exist"):
        api.get_key(kid.encode())
    with pytest.raises(VerdictdError, match="does not exist"):
        api.delete_key(kid.encode())


@pytest.mark.parametrize(("raw", "why"), [(b"", "empty"), (b"\xff\xfe", "not UTF-8"), (b"a" * 300, "bytes, more"),
                                          (b"../x", "path part"), (b"a\x00b", "NUL")])
def test_bad_key_ids_refused(api: AdminApi, raw: bytes, why: str) -> None:
    with pytest.raises(VerdictdError, match=why):
        api.get_key(raw)


def test_key_audit_names_the_caller_never_the_key(api: AdminApi, store: Store) -> None:
    token = _principal.set("token")
    try:
        kid = api.create_key()
        key = api.get_key(kid.encode())
    finally:
        _principal.reset(token)
    recs = events(store)
    assert [e for e, _ in recs] == ["clientapi.create-key", "clientapi.get-key"]
    assert all(d == {"by": "token", "kid": kid} for _, d in recs)
    assert base64.b64encode(key).decode() not in json.dumps(recs) and key.hex() not in json.dumps(recs)


def test_key_not_released_when_the_audit_cannot_record(api: AdminApi, store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    kid = api.create_key()

    def broken(event: str, detail: dict[str, Any]) -> int:
        raise VerdictdError("audit: disk full")

    monkeypatch.setattr(store, "audit", broken)
    with pytest.raises(VerdictdError, match="disk full"):
        api.get_key(kid.encode())


# -- OPA policies


def test_policy_round_trip_and_default_fallback(api: AdminApi, store: Store) -> None:
    api.set_policy(b"mine", POLICY.encode())
    assert api.export_policy(b"mine") == POLICY == store.get_policy("mine")
    assert api.export_policy(b"sgx") == DEFAULT_SGX  # never set: the daemon's default
    api.set_policy(b"sgx", POLICY.encode())
    assert api.export_policy(b"sgx") == POLICY  # the owner's wins
    with pytest.raises(VerdictdError, match="'nothing' is not set"):
        api.export_policy(b"nothing")


@pytest.mark.parametrize(("content", "why"), [
    (b"package policy\nallow if {", "policy"),  # does not compile
    (b"\xc3\x28", "not UTF-8"),
    (b"package policy\n" + b"#" * MAX_POLICY, "more than"),
])
def test_bad_policy_refused_and_old_one_kept(api: AdminApi, store: Store, content: bytes, why: str) -> None:
    api.set_policy(b"p", POLICY.encode())
    with pytest.raises(VerdictdError, match=why):
        api.set_policy(b"p", content)
    assert store.get_policy("p") == POLICY


# -- OPA reference documents


def test_reference_kept_byte_for_byte(api: AdminApi, store: Store) -> None:
    api.set_reference(b"sgxData", REFERENCE)
    assert api.export_reference(b"sgxData").encode() == REFERENCE
    assert store.get_secret(KIND_OPA_REFERENCE, "sgxData") == REFERENCE
    assert events(store)[-1] == ("clientapi.set-opa-reference", {"by": "?", "name": "sgxData",
                                                                 "size": len(REFERENCE)})


@pytest.mark.parametrize(("content", "why"), [(b"[1, 2]", "not a JSON object"), (b"{", "not JSON"),
                                              (b'{"a": 1, "a": 2}', "duplicate key 'a'"), (b"\xff", "not UTF-8")])
def test_bad_reference_refused(api: AdminApi, content: bytes, why: str) -> None:
    with pytest.raises(VerdictdError, match=why):
        api.set_reference(b"r", content)
    with pytest.raises(VerdictdError, match="'r' is not set"):
        api.export_reference(b"r")


# -- TestOpa


def test_opa_remote_and_local_decide(api: AdminApi) -> None:
    api.set_policy(b"p", POLICY.encode())
    api.set_reference(b"r", REFERENCE)
    remote = pb.TestOpaRequest(policyname=b"p", referencename=b"r", input=GOOD_INPUT)
    assert api.test(remote)["allow"] is True
    remote.input = BAD_INPUT
    assert api.test(remote)["allow"] is False
    local = pb.TestOpaRequest(policycontent=POLICY.encode(), policylocal=True, referencecontent=REFERENCE,
                              referencelocal=True, input=GOOD_INPUT)
    out = api.test(local)
    assert out["allow"] is True
    assert out["parseInfo"]["svn"] == [3, 2]  # upstream's [input value, reference value]
    mixed = pb.TestOpaRequest(policycontent=POLICY.encode(), policylocal=True, referencename=b"r", input=BAD_INPUT)
    assert api.test(mixed)["allow"] is False


@pytest.mark.parametrize(("req", "why"), [
    (pb.TestOpaRequest(policyname=b"", referencename=b"r", input=GOOD_INPUT), "policy name: empty"),
    (pb.TestOpaRequest(policyname=b"p", referencename=b"missing", input=GOOD_INPUT), "'missing' is not set"),
    (pb.TestOpaRequest(policyname=b"p", referencename=b"r", input=b""), "parse input failed"),
    (pb.TestOpaRequest(policylocal=True, referencename=b"r", input=GOOD_INPUT), "parse policycontent failed"),
    (pb.TestOpaRequest(policyname=b"p", referencelocal=True, input=GOOD_INPUT), "parse referencecontent failed"),
    (pb.TestOpaRequest(policyname=b"p", referencename=b"r", input=b"a" * (65 << 10)), "input: .* more than"),
])
def test_opa_bad_requests(api: AdminApi, req: Any, why: str) -> None:
    api.set_policy(b"p", POLICY.encode())
    api.set_reference(b"r", REFERENCE)
    with pytest.raises(VerdictdError, match=why):
        api.test(req)


def test_opa_bad_input_json_is_an_error_not_a_denial(api: AdminApi) -> None:
    req = pb.TestOpaRequest(policycontent=POLICY.encode(), policylocal=True, referencecontent=REFERENCE,
                            referencelocal=True, input=b"{not json")
    with pytest.raises(VerdictdError):
        api.test(req)


# -- image verification files


def test_image_policy_and_sigstore(api: AdminApi, store: Store) -> None:
    with pytest.raises(VerdictdError, match="not set"):  # no insecure default
        api.export_image(IMAGE_POLICY)
    assert image_resource(store, "Policy") is None
    api.set_image_policy(IMAGE_POLICY_JSON)
    api.set_image_sigstore(b"default-docker:\n  sigstore: file:///var/lib/containers/sigstore\n")
    assert api.export_image(IMAGE_POLICY).encode() == IMAGE_POLICY_JSON
    assert image_resource(store, "Policy") == IMAGE_POLICY_JSON == store.get_secret(KIND_IMAGE, IMAGE_POLICY)
    assert image_resource(store, "Sigstore Config", ).startswith(b"default-docker:")  # type: ignore[union-attr]
    assert image_resource(store, "GPG Keyring") is None


@pytest.mark.parametrize("content", [b'{"transports": {}}', b'{"default": []}', b"[]", b'{"default": [}'])
def test_bad_image_policy_refused(api: AdminApi, content: bytes) -> None:
    with pytest.raises(VerdictdError, match="image policy"):
        api.set_image_policy(content)


def test_empty_sigstore_refused(api: AdminApi) -> None:
    with pytest.raises(VerdictdError, match="empty"):
        api.set_image_sigstore(b"  \n")


# -- authentication settings


def test_auth_is_never_open() -> None:
    with pytest.raises(VerdictdError, match="never open"):
        AdminAuth()
    pki = make_pki()
    with pytest.raises(VerdictdError, match="never open"):
        AdminAuth(cert_pem=pki.server_cert, key_pem=pki.server_key)  # TLS alone authenticates nobody


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"token": b"short"}, "16..4096"),
    ({"token": b"has a space in the token"}, "without spaces"),
    ({"token": TOKEN, "cert_pem": b"x"}, "both the certificate and its key"),
    ({"client_ca_pem": b"x"}, "need the server's TLS certificate"),
    ({"token": TOKEN, "client_pins": frozenset({"ab" * 32})}, "need the client CA"),
])
def test_auth_config_refusals(kwargs: dict[str, Any], why: str) -> None:
    with pytest.raises(VerdictdError, match=why):
        AdminAuth(**kwargs)


def test_pins_normalised_and_checked() -> None:
    pki = make_pki()
    fp = cert_fingerprint(pki.client_cert)
    colon = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
    auth = AdminAuth(cert_pem=pki.server_cert, key_pem=pki.server_key, client_ca_pem=pki.ca_pem,
                     client_pins=frozenset({colon}))
    assert auth.client_pins == frozenset({fp})
    with pytest.raises(VerdictdError, match="not a SHA-256 fingerprint"):
        AdminAuth(cert_pem=pki.server_cert, key_pem=pki.server_key, client_ca_pem=pki.ca_pem,
                  client_pins=frozenset({"abc"}))


class _Ctx:
    def __init__(self, certs: list[bytes]) -> None:
        self.certs = certs

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": self.certs} if self.certs else {}


def test_token_check() -> None:
    auth = AdminAuth(token=TOKEN)
    ok = [("authorization", "Bearer " + TOKEN.decode())]
    assert auth.check(ok, _Ctx([])) == "token"
    assert auth.check([("authorization", "bearer " + TOKEN.decode())], _Ctx([])) == "token"
    for bad in ([], [("authorization", TOKEN.decode())], [("authorization", "Bearer " + TOKEN.decode()[:-1])],
                [("authorization", "Bearer " + TOKEN.decode() + "x")], [("x-token", "Bearer " + TOKEN.decode())],
                [("authorization", "Bearer ")]):
        assert auth.check(bad, _Ctx([])) is None


def test_cert_and_token_both_required_when_both_configured() -> None:
    pki = make_pki()
    fp = cert_fingerprint(pki.client_cert)
    auth = AdminAuth(token=TOKEN, cert_pem=pki.server_cert, key_pem=pki.server_key, client_ca_pem=pki.ca_pem,
                     client_pins=frozenset({fp}))
    md = [("authorization", "Bearer " + TOKEN.decode())]
    assert auth.check(md, _Ctx([pki.client_cert])) == f"cert:{fp[:16]}+token"
    assert auth.check([], _Ctx([pki.client_cert])) is None
    assert auth.check(md, _Ctx([])) is None
    assert auth.check(md, _Ctx([pki.other_cert])) is None  # not the pinned certificate


def test_load_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_bytes(TOKEN + b"\n")
    f.chmod(0o600)
    assert load_token(str(f)) == TOKEN
    f.chmod(0o640)
    with pytest.raises(VerdictdError, match="chmod 600"):
        load_token(str(f))
    with pytest.raises(VerdictdError, match="No such file"):
        load_token(str(tmp_path / "absent"))
    with pytest.raises(VerdictdError, match="not a regular file"):
        load_token(str(tmp_path))


@pytest.mark.parametrize("address", ["0.0.0.0:60000", "[::]:60000", "192.0.2.1:60000", "verdictd.example:60000"])
def test_plain_text_only_on_unix_or_loopback(api: AdminApi, address: str) -> None:
    with pytest.raises(VerdictdError, match="plain text is allowed only"):
        AdminServer(api, AdminAuth(token=TOKEN), address)


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:0", "localhost:0", "/tmp/x.sock", "unix:/tmp/y.sock"])
def test_plain_text_accepted_locally(api: AdminApi, address: str) -> None:
    AdminServer(api, AdminAuth(token=TOKEN), address)  # built, not started


@pytest.mark.parametrize("address", ["60000", "host:", ":", "1.2.3.4:99999", "unix:"])
def test_bad_addresses(api: AdminApi, address: str) -> None:
    with pytest.raises(VerdictdError, match="admin address"):
        AdminServer(api, AdminAuth(token=TOKEN), address)


def test_unix_socket_is_private_and_a_stale_one_replaced(api: AdminApi, tmp_path: Path) -> None:
    import socket
    import stat

    path = str(tmp_path / "a.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    srv = AdminServer(api, AdminAuth(token=TOKEN), path).start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        srv.stop()
    assert not os.path.exists(path)
    Path(path).write_text("not a socket")
    with pytest.raises(VerdictdError, match="not a socket"):
        AdminServer(api, AdminAuth(token=TOKEN), path).start()
