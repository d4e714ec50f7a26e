"""KBS 0.4.0 protocol (inclavare.services.verdictd.kbs) without HTTP: the report-data binding byte for byte,
sessions, the RCAR steps with sim evidence, real SGX/TDX/SNP evidence through the same path, resources, admin."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from inclavare.formats.kbs import expected_report_data
from inclavare.services.verdictd.kbs import (
    ERROR_TYPE_PREFIX,
    EvidenceConfig,
    KbsError,
    KbsService,
    SessionTable,
    check_resource_path,
    verify_evidence,
)
from tests.unit.services.verdictd.kbs_doubles import (
    APP,
    DEBUG_APP,
    AllowList,
    DictStore,
    JoseSealer,
    RememberingIssuer,
    SimTee,
    open_response,
    utc,
)
from tests.unit.sgx_helpers import vectors_root

# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def sim_state(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("kbs-sim") / "state")


@pytest.fixture(scope="module")
def tee(sim_state: str) -> SimTee:
    return SimTee(sim_state)


class Parts:
    def __init__(self, tee: SimTee) -> None:
        self.store = DictStore({"owner/key/one": b"secret-one", "owner/key/denied": b"nope"})
        self.policy = AllowList(mrenclaves={APP.mrenclave.hex()}, paths={"owner/key/one", "owner/key/missing"})
        self.tokens = RememberingIssuer()
        self.audit: list[tuple[str, dict[str, Any]]] = []
        self.service = KbsService(
            appraiser=self.policy, resources=self.store, tokens=self.tokens, sealer=JoseSealer(),
            evidence=EvidenceConfig(trust_sim=True, sim_root_fingerprints=(tee.root,)),
            admin_token="admin-secret", audit=lambda e, d: self.audit.append((e, d)))


@pytest.fixture
def parts(tee: SimTee) -> Parts:
    return Parts(tee)


def auth(svc: KbsService, tee: str = "sample") -> tuple[str, str]:
    answer, session = svc.auth(json.dumps({"version": "0.4.0", "tee": tee, "extra-params": ""}).encode())
    assert answer["extra-params"] == ""
    assert len(base64.b64decode(answer["nonce"])) == 32
    return answer["nonce"], session.id


# --------------------------------------------------------------------------------------------------
# RCAR


def test_full_flow_with_sim_evidence(parts: Parts, tee: SimTee) -> None:
    svc = parts.service
    nonce, sid = auth(svc)
    answer, _ = svc.attest(json.dumps(tee.attestation(nonce)).encode(), sid)
    token = answer["token"]
    grant = parts.tokens.verify(token)["submods"]["sim"]["claims"]
    assert grant["mrenclave"] == APP.mrenclave.hex() and grant["tier"] == "affirming"
    assert grant["tee-pubkey"] == tee.pubkey
    # by cookie and by bearer token: the same JWE to the TEE key
    for sid_, bearer in ((sid, None), (None, token)):
        response = svc.resource(["owner", "key", "one"], {}, sid_, bearer)
        assert open_response(tee.key, response) == b"secret-one"
    seen = parts.policy.seen[-1]
    assert (seen["plugin"], seen["resource-path"], seen["tee"]) == ("resource", ["owner", "key", "one"], "sim")
    assert [e for e, _ in parts.audit] == ["kbs.attest", "kbs.resource", "kbs.resource"]


def test_rsa_tee_key(parts: Parts, sim_state: str) -> None:
    rsa = SimTee(sim_state, kty="RSA")
    nonce, sid = auth(parts.service)
    parts.service.attest(json.dumps(rsa.attestation(nonce)).encode(), sid)
    assert open_response(rsa.key, parts.service.resource(["owner", "key", "one"], {}, sid, None)) == b"secret-one"


def status_of(fn: Any, *args: Any) -> tuple[int, str, str]:
    with pytest.raises(KbsError) as info:
        fn(*args)
    e = info.value
    assert e.to_json()["type"] == ERROR_TYPE_PREFIX + e.name
    return e.status, e.name, e.detail


def test_auth_refusals(parts: Parts, tee: SimTee) -> None:
    svc = parts.service
    assert status_of(svc.auth, b'{"version":"0.3.0","tee":"sgx","extra-params":""}')[0] == 401
    assert status_of(svc.auth, b'{"version":"0.4.0","tee":"nvidia","extra-params":""}')[0] == 401
    assert status_of(svc.auth, b"not json")[:2] == (400, "InvalidRequest")
    assert status_of(svc.auth, b"[1]")[0] == 400
    strict = KbsService(appraiser=parts.policy, resources=parts.store, tokens=parts.tokens, sealer=JoseSealer())
    assert "does not trust the simulated platform" in status_of(strict.auth, b'{"version":"0.4.0","tee":"sample"}')[2]


def test_wrong_nonce_replay_unbound_key_and_policy(parts: Parts, tee: SimTee) -> None:
    svc = parts.service
    # the nonce sent is not the session's
    nonce, sid = auth(svc)
    other = base64.b64encode(b"x" * 32).decode()
    assert status_of(svc.attest, json.dumps(tee.attestation(other)).encode(), sid)[:2] == (401, "RcarAttestFailed")
    # replay: the session's nonce was used (even by a failed try) -> 401, whatever comes next
    assert "already used" in status_of(svc.attest, json.dumps(tee.attestation(nonce)).encode(), sid)[2]
    # a TEE key that is not the one in the report data
    nonce, sid = auth(svc)
    stranger = dict(tee.pubkey, x=tee.pubkey["y"])
    status, _, detail = status_of(svc.attest, json.dumps(tee.attestation(nonce, bind_key=stranger)).encode(), sid)
    assert status == 401 and "report data" in detail
    # report data over another nonce
    nonce, sid = auth(svc)
    body = tee.attestation(nonce, bind_nonce=base64.b64encode(b"y" * 32).decode())
    assert "report data" in status_of(svc.attest, json.dumps(body).encode(), sid)[2]
    # tampered evidence
    nonce, sid = auth(svc)
    body = tee.attestation(nonce)
    quote = bytearray(base64.b64decode(body["tee-evidence"]["primary_evidence"]["quote"]))
    quote[48 + 64] ^= 1  # MRENCLAVE
    body["tee-evidence"]["primary_evidence"]["quote"] = base64.b64encode(bytes(quote)).decode()
    assert status_of(svc.attest, json.dumps(body).encode(), sid)[0] == 401
    # debug enclave refused by policy: 403, no token
    nonce, sid = auth(svc)
    status, name, detail = status_of(svc.attest, json.dumps(tee.attestation(nonce, identity=DEBUG_APP)).encode(), sid)
    assert (status, name) == (403, "PolicyDeny") and "debug enclave" in detail
    assert status_of(svc.resource, ["owner", "key", "one"], {}, sid, None)[:2] == (401, "TokenNotFound")


def test_sim_quote_claimed_as_sgx_is_refused(parts: Parts, tee: SimTee) -> None:
    nonce, sid = auth(parts.service, "sgx")
    status, _, detail = status_of(parts.service.attest, json.dumps(tee.attestation(nonce)).encode(), sid)
    assert status == 401 and "sim" in detail


def test_malformed_attestations(parts: Parts, tee: SimTee) -> None:
    svc = parts.service
    good = tee.attestation(auth(svc)[0])
    cases: list[tuple[Any, int]] = [
        (b"{", 400),
        ({"tee-evidence": good["tee-evidence"]}, 400),
        ({**good, "runtime-data": {"nonce": "n", "tee-pubkey": {"kty": "OKP"}}}, 400),
        ({**good, "runtime-data": {**good["runtime-data"], "tee-pubkey": {**tee.pubkey, "d": "secret"}}}, 400),
        ({**good, "tee-evidence": {"primary_evidence": {"quote": "%%%"}, "additional_evidence": ""}}, None),
        ({**good, "tee-evidence": {"primary_evidence": "x", "additional_evidence": ""}}, None),
        ({**good, "tee-evidence": {"primary_evidence": {}, "additional_evidence": 5}}, 400),
    ]
    for body, status in cases:
        nonce, sid = auth(svc)
        if isinstance(body, dict):
            body = json.loads(json.dumps(body).replace(good["runtime-data"]["nonce"], nonce))
            raw = json.dumps(body).encode()
        else:
            raw = body
        got = status_of(svc.attest, raw, sid)[0]
        assert got == (status or 400), body
    # additional (device) evidence is refused, not ignored
    nonce, sid = auth(svc)
    body = tee.attestation(nonce)
    body["tee-evidence"]["additional_evidence"] = '{"nvidia":{}}'
    assert "additional" in status_of(svc.attest, json.dumps(body).encode(), sid)[2]


def test_sessions_expire_and_are_bounded() -> None:
    now = [1000.0]
    table = SessionTable(ttl=300, limit=2, clock=lambda: now[0])
    a = table.new("sgx", "n1")
    table.new("sgx", "n2")
    assert status_of(table.new, "sgx", "n3")[0] == 503
    assert table.get(a.id) is a
    now[0] += 299
    b = table.get(a.id)
    now[0] += 2
    assert status_of(table.get, b.id)[1] == "SessionExpired"  # an expired session is dropped when seen
    assert len(table) == 1
    table.new("sgx", "n4")
    table.new("sgx", "n5")  # full: the expired one makes room, live ones are never evicted
    assert len(table) == 2
    assert status_of(table.new, "sgx", "n6")[:2] == (503, "TooManySessions")
    assert status_of(table.get, None)[:2] == (401, "TokenNotFound")
    assert status_of(table.get, "nope")[:2] == (401, "SessionNotFound")


def test_expired_session_cannot_attest_or_fetch(parts: Parts, tee: SimTee) -> None:
    svc = parts.service
    nonce, sid = auth(svc)
    svc.sessions.get(sid).expires = 0
    assert status_of(svc.attest, json.dumps(tee.attestation(nonce)).encode(), sid)[:2] == (401, "SessionExpired")
    nonce, sid = auth(svc)
    svc.attest(json.dumps(tee.attestation(nonce)).encode(), sid)
    svc.sessions.get(sid).expires = 0
    assert status_of(svc.resource, ["owner", "key", "one"], {}, sid, None)[0] == 401


def test_resource_refusals(parts: Parts, tee: SimTee) -> None:
    svc = parts.service
    nonce, sid = auth(svc)
    svc.attest(json.dumps(tee.attestation(nonce)).encode(), sid)
    assert status_of(svc.resource, ["owner", "key", "denied"], {}, sid, None)[:2] == (403, "PolicyDeny")
    assert status_of(svc.resource, ["owner", "key", "missing"], {}, sid, None)[:2] == (404, "ResourceNotFound")
    assert status_of(svc.resource, ["owner", "key"], {}, sid, None)[0] == 404
    assert status_of(svc.resource, ["owner", "..", "x"], {}, sid, None)[0] == 404
    assert status_of(svc.resource, ["owner", "key", "one"], {}, None, "forged")[:2] == (401, "TokenVerifierError")
    assert status_of(svc.resource, ["owner", "key", "one"], {}, None, None)[:2] == (401, "TokenNotFound")
    unattested = auth(svc)[1]
    assert status_of(svc.resource, ["owner", "key", "one"], {}, unattested, None)[0] == 401
    # a TEE key the answer could not be encrypted to is refused at attest, although the evidence binds it
    nonce, sid = auth(svc)
    body = tee.attestation(nonce)
    bad_key = {**tee.pubkey, "x": "AAAA"}
    body["runtime-data"]["tee-pubkey"] = bad_key
    quote = tee.quote(expected_report_data(nonce, bad_key, ""))
    body["tee-evidence"]["primary_evidence"]["quote"] = base64.b64encode(quote).decode()
    status, kind, detail = status_of(svc.attest, json.dumps(body).encode(), sid)
    assert (status, kind) == (400, "InvalidRequest") and "tee-pubkey.x" in detail
    assert check_resource_path(["a", "b-1", "c_2.x"]) == "a/b-1/c_2.x"
    assert status_of(check_resource_path, ["a", "b", "\u00e9"])[0] == 404


class Admin:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refs: dict[str, list[Any]] = {}

    def set_resource_policy(self, text: str) -> None:
        self.calls.append(("resource-policy", text))

    def set_attestation_policy(self, policy_id: str, text: str) -> None:
        self.calls.append(("attestation-policy", policy_id, text))

    def set_reference_value(self, name: str, values: list[Any], provenance: str, expires: Any) -> None:
        self.calls.append(("reference-value", name, values, provenance, expires))
        self.refs[name] = values

    def get_reference_value(self, name: str) -> list[Any] | None:
        return self.refs.get(name)

    def list_reference_values(self) -> dict[str, dict[str, Any]]:
        return {name: {"values": v, "provenance": "build 7", "expires": utc("2030-01-01T00:00:00+00:00"),
                       "expired": False} for name, v in self.refs.items()}

    def delete_reference_value(self, name: str) -> bool:
        return self.refs.pop(name, None) is not None


def test_admin(parts: Parts) -> None:
    svc, admin = parts.service, Admin()
    svc.admin = admin
    for header in (None, "Basic x", "Bearer wrong", "Bearer "):
        assert status_of(svc.check_admin, header)[:2] == (401, "AdminAuthAccess")
    svc.check_admin("Bearer admin-secret")
    rego = "package policy\ndefault allow = false\n"
    svc.set_resource_policy(json.dumps({"policy": base64.urlsafe_b64encode(rego.encode()).decode().rstrip("=")})
                            .encode())
    svc.set_attestation_policy(json.dumps({"policy_id": "sgx", "policy": base64.urlsafe_b64encode(b"p").decode()})
                               .encode())
    svc.set_reference_value(b'{"name":"mrenclave","values":["aa"],"provenance":"build 7",'
                            b'"expires":"2030-01-01T00:00:00Z"}')
    assert admin.calls[0] == ("resource-policy", rego)
    assert admin.calls[1] == ("attestation-policy", "sgx", "p")
    assert admin.calls[2][:4] == ("reference-value", "mrenclave", ["aa"], "build 7")
    assert admin.calls[2][4] == utc("2030-01-01T00:00:00+00:00")
    assert svc.get_reference_value(["mrenclave"]) == ["aa"]
    assert status_of(svc.get_reference_value, ["nope"])[0] == 404
    assert status_of(svc.set_attestation_policy, b'{"policy_id":"../x","policy":"cA"}')[0] == 400
    assert status_of(svc.set_reference_value, b'{"name":"x","values":"aa"}')[0] == 400
    assert status_of(svc.set_reference_value, b'{"name":"x","values":[],"expires":"2030-01-01T00:00:00"}')[0] == 400
    svc.set_resource(["owner", "key", "new"], b"\x00\x01")
    assert parts.store.items["owner/key/new"] == b"\x00\x01"
    # ours: listing and removal
    assert svc.list_reference_values() == {"mrenclave": {"values": ["aa"], "provenance": "build 7",
                                                         "expires": "2030-01-01T00:00:00+00:00", "expired": False}}
    svc.delete_reference_value(["mrenclave"])
    assert svc.list_reference_values() == {} and status_of(svc.delete_reference_value, ["mrenclave"])[0] == 404
    assert "owner/key/new" in svc.list_resources() and svc.list_resources() == sorted(parts.store.items)
    svc.delete_resource(["owner", "key", "new"])
    assert "owner/key/new" not in parts.store.items
    assert status_of(svc.delete_resource, ["owner", "key", "new"])[:2] == (404, "ResourceNotFound")
    assert status_of(svc.delete_resource, ["owner", "..", "new"])[:2] == (404, "InvalidRequestPath")
    assert [(e, d["action"]) for e, d in parts.audit if d.get("action", "").startswith("delete")] == [
        ("kbs.admin", "delete-reference-value"), ("kbs.admin", "delete-resource")]
    no_token = KbsService(appraiser=parts.policy, resources=parts.store, tokens=parts.tokens, sealer=JoseSealer())
    assert "disabled" in status_of(no_token.check_admin, "Bearer admin-secret")[2]


# --------------------------------------------------------------------------------------------------
# Real evidence through the KBS evidence path (report data cannot match a fresh nonce: the binding must fail)


def vec(rel: str) -> bytes:
    path: Path = vectors_root() / "attestation" / rel
    if not path.is_file():
        pytest.skip(f"attestation vector {path} not found (set INCLAVARE_VECTORS)")
    return path.read_bytes()


KEY = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "xx", "y": "yy"}
FRESH = expected_report_data(base64.b64encode(bytes(32)).decode(), KEY, "")


@pytest.mark.parametrize(("tee", "rel", "as_of", "own"), [
    ("sgx", "sgx/dcapqvl_sgx_quote.bin", "2025-07-01T00:00:00+00:00", b"Hello, world!"),
    ("tdx", "tdx/dcapqvl_tdx_quote.bin", "2025-07-01T00:00:00+00:00", bytes.fromhex(
        "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec"
        "39b7e518fadb92c2b523f20")),
    ("tdx", "tdx/gotdxguest_cos113_tdx_quote.bin", "2025-11-01T00:00:00+00:00", bytes(64)),
])
def test_real_dcap_evidence(tee: str, rel: str, as_of: str, own: bytes) -> None:
    evidence = {"quote": base64.b64encode(vec(rel)).decode()}
    config = EvidenceConfig(as_of=utc(as_of))
    got = verify_evidence(tee, evidence, own.ljust(64, b"\0"), config)
    assert got.tee == tee and got.claims["debug"] is False
    with pytest.raises(KbsError) as info:
        verify_evidence(tee, evidence, FRESH, config)
    assert info.value.status == 401 and "report data" in info.value.detail
    with pytest.raises(KbsError, match=f"the evidence is {tee}, not"):  # a quote of one TEE claimed as the other
        verify_evidence("sgx" if tee == "tdx" else "tdx", evidence, own.ljust(64, b"\0"), config)


def test_real_snp_evidence() -> None:
    report, vcek = vec("snp/gosevguest_attestation.bin"), vec("snp/gosevguest_vcek.der")
    evidence = {"attestation_report": base64.b64encode(report).decode(),
                "cert_chain": [{"cert_type": "VCEK", "data": list(vcek)}]}
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ask_ark = tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(
        vec("roots/amd_ask_ark_milan.pem")))
    with pytest.raises(KbsError, match="ASK"):  # the operator configures AMD's ASK/ARK (the ARK is pinned)
        verify_evidence("snp", evidence, bytes([1, 2, 3, 4, 5]), EvidenceConfig(as_of=utc("2025-01-01T00:00:00Z")))
    config = EvidenceConfig(as_of=utc("2025-01-01T00:00:00+00:00"), extra_certs=ask_ark)
    got = verify_evidence("snp", evidence, bytes([1, 2, 3, 4, 5]).ljust(64, b"\0"), config)
    assert got.tee == "snp" and got.claims["measurement"].startswith("b07af9620f3b839b")
    with pytest.raises(KbsError) as info:
        verify_evidence("snp", evidence, FRESH, config)
    assert info.value.status == 401 and "report_data" in info.value.detail
    b64_chain = {**evidence, "cert_chain": [{"cert_type": "VCEK", "data": base64.b64encode(vcek).decode()}]}
    assert verify_evidence("snp", b64_chain, bytes([1, 2, 3, 4, 5]), config).tee == "snp"
    with pytest.raises(KbsError, match="missing field .guest_svn."):
        verify_evidence("snp", {"attestation_report": {"version": 2}}, FRESH, config)
    with pytest.raises(KbsError, match="cert_chain"):
        verify_evidence("snp", {**evidence, "cert_chain": [{"cert_type": "VCEK"}]}, FRESH, config)


def test_sim_evidence_needs_trust(tee: SimTee) -> None:
    rd = expected_report_data("n", tee.pubkey, "")
    evidence = {"quote": base64.b64encode(tee.quote(rd)).decode()}
    with pytest.raises(KbsError, match="does not trust"):
        verify_evidence("sample", evidence, rd, EvidenceConfig())
    with pytest.raises(KbsError, match="not verified|root|sim"):
        verify_evidence("sim", evidence, rd, EvidenceConfig(trust_sim=True, sim_root_fingerprints=("00" * 32,)))
    assert verify_evidence("sim", evidence, rd, EvidenceConfig(trust_sim=True,
                                                                sim_root_fingerprints=(tee.root,))).tee == "sim"
