"""The daemon's adapters over the real store, reference values, policy engine and token issuer: which policy text
is used (stored over default), the EAR-shaped input every resource/key decision sees, the sim platform only when
trusted, KBS admin changes compiled before they are stored, and the EAR signing key kept across restarts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.services.verdictd.daemon import (
    KEY_POLICY,
    RESOURCE_POLICY,
    Policies,
    StoreBackend,
    default_policies,
    ear_input,
    load_token_issuer,
    open_state,
)
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.kbs import KbsError
from inclavare.services.verdictd.policy import PolicyEngine
from inclavare.services.verdictd.refvalues import ReferenceValues
from inclavare.services.verdictd.store import Store

KEK = hashlib.sha256(b"daemon unit KEK").digest()
MRENCLAVE = "aa" * 32
CLAIMS = {"mrenclave": MRENCLAVE, "mrsigner": "bb" * 32, "isvprodid": 1, "isvsvn": 2, "debug": False}
DENY_ALL = "package policy\n\ndefault allow := false\n"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Store, ReferenceValues]]:
    store, refs = open_state(str(tmp_path / "state"), KEK)
    try:
        yield store, refs
    finally:
        store.close()


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine()


def test_defaults_only_name_sim_when_trusted() -> None:
    assert "sim" not in default_policies(False) and "sim" in default_policies(True)
    assert {"sgx", "tdx", "snp", RESOURCE_POLICY, KEY_POLICY} <= set(default_policies(False))


def test_appraise_default_then_stored(state: tuple[Store, ReferenceValues], engine: PolicyEngine) -> None:
    store, refs = state
    p = Policies(store, refs, engine, trust_sim=True)
    d = p.appraise("sim", CLAIMS, "UpToDate")
    assert not d.allow and any("no reference value" in r for r in d.reasons)
    refs.set("mrenclave", [MRENCLAVE], "test")
    d = p.appraise("sim", CLAIMS, "UpToDate")
    assert d.allow and d.tier == "warning"
    store.put_policy("sim", DENY_ALL)
    assert not p.appraise("sim", CLAIMS, "UpToDate").allow


def test_untrusted_sim_and_unknown_tee_refused(state: tuple[Store, ReferenceValues], engine: PolicyEngine) -> None:
    store, refs = state
    refs.set("mrenclave", [MRENCLAVE], "test")
    p = Policies(store, refs, engine, trust_sim=False)
    d = p.appraise("sim", CLAIMS, "UpToDate")
    assert not d.allow and "does not trust" in d.reasons[0]
    store.put_policy("sim", "package policy\n\nallow := true\ntier := \"warning\"\n")
    assert not p.appraise("sim", CLAIMS, "UpToDate").allow  # even a stored allow-all policy
    assert not p.appraise("sev", CLAIMS, None).allow


def grant(tier: str, **extra: Any) -> dict[str, Any]:
    return {**CLAIMS, "tee": "sgx", "tcb_status": "UpToDate", "tier": tier, "tee-pubkey": {"kty": "EC"}, **extra}


def test_ear_input_shape() -> None:
    doc = ear_input(grant("affirming", plugin="resource", resource="a/b/c", query={}))
    (appraisal,) = doc["submods"].values()
    assert list(doc["submods"]) == ["sgx"] and appraisal["ear.status"] == "affirming"
    evidence = appraisal["ear.veraison.annotated-evidence"]
    assert evidence["mrenclave"] == MRENCLAVE and "tee-pubkey" not in evidence and "plugin" not in evidence
    with pytest.raises(VerdictdError, match="no tee or tier"):
        ear_input({"mrenclave": MRENCLAVE})


def test_resource_and_key_policies(state: tuple[Store, ReferenceValues], engine: PolicyEngine) -> None:
    store, refs = state
    p = Policies(store, refs, engine, trust_sim=False)
    res = {"plugin": "resource", "resource": "owner/key/one", "resource-path": ["owner", "key", "one"], "query": {}}
    assert p.allow_resource(grant("warning", **res))
    assert not p.allow_resource(grant("contraindicated", **res))
    key = {"plugin": "keyprovider", "kid": "k1", "resource": "k1", "resource-path": ["k1"]}
    assert p.allow_resource(grant("affirming", **key))
    assert not p.allow_resource(grant("warning", **key))  # the default key policy wants affirming
    assert not p.allow_resource(grant("affirming", **{**res, "plugin": "other"}))
    per_path = ('package policy\nimport rego.v1\ndefault allow := false\n'
                'allow if data["resource-path"] == "owner/key/one"\n')
    store.put_policy(RESOURCE_POLICY, per_path)
    assert p.allow_resource(grant("warning", **res))
    assert not p.allow_resource(grant("warning", **{**res, "resource": "owner/key/two"}))
    store.put_policy(KEY_POLICY, DENY_ALL)
    assert not p.allow_resource(grant("affirming", **key))


def test_backend_admin_and_lookups(state: tuple[Store, ReferenceValues], engine: PolicyEngine) -> None:
    store, refs = state
    b = StoreBackend(store, refs, engine)
    with pytest.raises(KbsError) as e:
        b.set_resource_policy("package policy\nallow if {")
    assert e.value.status == 400 and store.get_policy(RESOURCE_POLICY) is None
    b.set_attestation_policy("sgx", DENY_ALL)
    assert store.get_policy("sgx") == DENY_ALL
    for pid in ("default", "resource", "keyprovider"):  # stored under these, it would never appraise evidence
        with pytest.raises(KbsError, match="named after its TEE") as e:
            b.set_attestation_policy(pid, DENY_ALL)
        assert e.value.status == 400 and store.get_policy(pid) is None
    b.set_reference_value("mrenclave", [MRENCLAVE], "test", None)
    assert b.get_reference_value("mrenclave") == [MRENCLAVE] and b.get_reference_value("nope") is None
    for name, values in (("mrenclave", ["xyz"]), ("bad/name", ["aa"]), ("isvsvn", [1, "aa"])):
        with pytest.raises(KbsError) as e:  # the caller's mistake: 400, not the server's 500
            b.set_reference_value(name, values, "test", None)
        assert e.value.status == 400
    assert set(b.list_reference_values()) == {"mrenclave"}
    assert b.delete_reference_value("mrenclave") and not b.delete_reference_value("mrenclave")
    assert not b.delete_reference_value("bad/name") and b.list_reference_values() == {}
    b.put_resource("owner/key/one", b"v")
    assert b.get_resource("owner/key/one") == b"v" and b.get_resource("one") is None
    assert b.list_resources() == ["owner/key/one"]
    assert b.delete_resource("owner/key/one") and not b.delete_resource("owner/key/one")
    assert b.get_resource("owner/key/one") is None and b.list_resources() == []
    assert b.get_resource("Policy") is None  # no image policy set: nothing, never a permissive default
    store.put_secret("key", "kek-1", b"k" * 32)
    assert b.get_kek("kek-1") == b"k" * 32 and b.get_kek("kek-2") is None


def test_token_key_generated_once(tmp_path: Path) -> None:
    store, _ = open_state(str(tmp_path / "s"), KEK)
    try:
        with pytest.raises(VerdictdError, match="no EAR signing key"):
            load_token_issuer(store, None, create=False)
        first = load_token_issuer(store, None)
        token = first.issue("sgx", dict(CLAIMS), "UpToDate", "affirming", None, 60)
    finally:
        store.close()
    store, _ = open_state(str(tmp_path / "s"), KEK)
    try:
        again = load_token_issuer(store, None, create=False)
        assert again.kid == first.kid and again.verify(token)["submods"]["sgx"]["ear.status"] == "affirming"
    finally:
        store.close()
