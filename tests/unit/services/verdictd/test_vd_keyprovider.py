"""verdictd's ocicrypt key provider: the JSON codec against documents shaped as ocicrypt's Go structs marshal
them, wrap -> unwrap with the real store and EAR tokens, tampered annotations, and the attestation gate."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.keyprovider import (
    MAX_INPUT,
    TOKEN_PARAM,
    KeyProvider,
    KeyProviderError,
    UnwrapRequest,
    WrapRequest,
    decode_input,
    decode_output,
    encode_unwrap_input,
    encode_wrap_input,
    parse_annotation,
    run_cmd,
)
from inclavare.services.verdictd.store import Store
from inclavare.services.verdictd.tokens import TokenIssuer

KEK = bytes(range(1, 33))
LAYER_KEY = bytes(range(200, 232))
# ocicrypt's optsData: the layer's private options as JSON (blockcipher.PrivateLayerBlockCipherOptions)
OPTS = json.dumps({"symkey": base64.b64encode(bytes(range(32))).decode(), "cipheroptions": {"nonce": "AAAA"},
                   "digest": "sha256:" + "ab" * 32}, separators=(",", ":")).encode()
MRENCLAVE = "c5" * 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Hand-made: Go's json.Marshal of KeyProviderKeyWrapProtocolInput for `skopeo copy --encryption-key
# provider:verdictd:layers/k1` (config.EncryptWithKeyProvider: DecryptConfig{} -> {"Parameters":null};
# struct omitempty has no effect in encoding/json, so the unused half is written with nulls).
GO_WRAP = ('{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"verdictd":["' + b64(b"layers/k1") + '"]},'
           '"DecryptConfig":{"Parameters":null}},"optsdata":"' + b64(OPTS) + '"},'
           '"keyunwrapparams":{"dc":null,"annotation":null}}').encode()


def go_unwrap(annotation: bytes, params: dict[str, list[bytes]] | None) -> bytes:
    """Go's json.Marshal of the keyunwrap input (config.DecryptWithKeyProvider's dc)."""
    dc = "null" if params is None else '{"Parameters":{' + ",".join(
        json.dumps(k) + ":[" + ",".join('"' + b64(v) + '"' for v in vs) + "]" for k, vs in params.items()) + "}}"
    return ('{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},"keyunwrapparams":{"dc":' + dc +
            ',"annotation":"' + b64(annotation) + '"}}').encode()


class Policy:
    """The key policy double: records its inputs; allows keys under ``layers/`` to SGX with our MRENCLAVE."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []

    def allow_resource(self, input: dict[str, Any]) -> bool:  # noqa: A002
        self.inputs.append(input)
        return (input["tee"] == "sgx" and input.get("mrenclave") == MRENCLAVE
                and input["resource"].startswith("layers/"))


@pytest.fixture
def store(tmp_path: Path):
    s = Store(str(tmp_path / "state"), KEK)
    s.put_secret("key", "layers/k1", LAYER_KEY)
    s.put_secret("key", "other/k2", bytes(range(50, 82)))
    yield s
    s.close()


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
def policy() -> Policy:
    return Policy()


@pytest.fixture
def kp(store: Store, issuer: TokenIssuer, policy: Policy) -> KeyProvider:
    return KeyProvider(store, issuer, policy, audit=store.audit)


def token(issuer: TokenIssuer, tier: str = "affirming", tee: str = "sgx", mrenclave: str = MRENCLAVE) -> bytes:
    return issuer.issue(tee, {"mrenclave": mrenclave, "debug": False}, "UpToDate", tier).encode()


def wrap_annotation(kp: KeyProvider) -> bytes:
    out = decode_output(run_cmd(GO_WRAP, kp))
    assert out["annotation"] is not None
    return out["annotation"]


# -------------------------------------------------------------------------------------------------
# the codec


def test_encoders_write_what_go_marshals() -> None:
    assert encode_wrap_input({"verdictd": [b"layers/k1"]}, OPTS, None) == GO_WRAP
    ann = b'{"kid":"x"}'
    params = {"verdictd": [b"tok"], "other": [b"a", b"b"]}
    assert encode_unwrap_input(params, ann) == go_unwrap(ann, params)
    assert encode_unwrap_input(None, ann) == go_unwrap(ann, None)


def test_decode_go_documents() -> None:
    req = decode_input(GO_WRAP)
    assert isinstance(req, WrapRequest)
    assert req.parameters == {"verdictd": [b"layers/k1"]} and req.dc_parameters == {} and req.optsdata == OPTS
    req2 = decode_input(go_unwrap(b"ANN", {"verdictd": [b"t1"], TOKEN_PARAM: [b"t2"]}))
    assert isinstance(req2, UnwrapRequest)
    assert req2.annotation == b"ANN" and req2.parameters == {"verdictd": [b"t1"], TOKEN_PARAM: [b"t2"]}


def test_decode_nulls_and_unknown_keys_as_go() -> None:
    doc = {"op": "keyunwrap", "extra": 1, "keyunwrapparams": {"dc": {"Parameters": {"a": None, "b": [None]}},
                                                              "annotation": None}}
    req = decode_input(json.dumps(doc).encode())
    assert isinstance(req, UnwrapRequest)
    assert req.parameters == {"a": [], "b": [b""]} and req.annotation == b""
    # Go's base64 decoder skips CR and LF
    doc2 = {"op": "keyunwrap", "keyunwrapparams": {"annotation": "QU\r\nJD"}}
    req2 = decode_input(json.dumps(doc2).encode())
    assert isinstance(req2, UnwrapRequest) and req2.annotation == b"ABC"


def test_output_shapes() -> None:
    from inclavare.services.verdictd.keyprovider import encode_unwrap_output, encode_wrap_output

    assert encode_wrap_output(b"ann") == b'{"keywrapresults":{"annotation":"YW5u"}}'
    assert encode_unwrap_output(b"opts") == b'{"keyunwrapresults":{"optsdata":"b3B0cw=="}}'
    # what a Go key provider writes (both halves) reads back the same way
    assert decode_output(b'{"keywrapresults":{"annotation":"YW5u"},"keyunwrapresults":{"optsdata":null}}') == \
        {"annotation": b"ann", "optsdata": None}


@pytest.mark.parametrize(("doc", "where"), [
    (b"[]", "expected a JSON object"),
    (b"{", "not JSON"),
    (b"\xff", "not UTF-8"),
    (b'{"op":"wrap"}', "op 'wrap'"),
    (b'{"op":"keywrap","keywrapparams":{"ec":null,"optsdata":"QQ=="}}', "keywrapparams.ec: missing"),
    (b'{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"v":"QQ=="}},"optsdata":"QQ=="}}',
     "keywrapparams.ec.Parameters['v']: expected an array"),
    (b'{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"v":["Q"]}},"optsdata":"QQ=="}}',
     "keywrapparams.ec.Parameters['v'][0]: not standard base64"),
    (b'{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{}},"optsdata":"QQ-_"}}',
     "keywrapparams.optsdata: not standard base64"),
    (b'{"op":"keyunwrap","keyunwrapparams":{"dc":[],"annotation":"QQ=="}}', "keyunwrapparams.dc: expected an"),
    (b'{"op":"keyunwrap","keyunwrapparams":{"annotation":5}}', "annotation: expected base64, a byte"),
    (b'{"op":"keyunwrap","x":' + b"[" * 50 + b"]" * 50 + b"}", "nested deeper"),
])
def test_decode_refuses_with_the_field_named(doc: bytes, where: str) -> None:
    with pytest.raises(KeyProviderError, match="^.*" + __import__("re").escape(where)) as e:
        decode_input(doc)
    assert e.value.code == "invalid" and "\n" not in str(e.value)


def test_decode_limits() -> None:
    with pytest.raises(KeyProviderError, match="more than"):
        decode_input(b" " * (MAX_INPUT + 1))
    many = {"op": "keyunwrap", "keyunwrapparams": {"dc": {"Parameters": {str(i): [] for i in range(65)}}}}
    with pytest.raises(KeyProviderError, match="65 names"):
        decode_input(json.dumps(many).encode())
    big = {"op": "keywrap", "keywrapparams": {"ec": {"Parameters": {}}, "optsdata": b64(b"x" * (65 << 10))}}
    with pytest.raises(KeyProviderError, match="keywrapparams.optsdata: more than"):
        decode_input(json.dumps(big).encode())


# -------------------------------------------------------------------------------------------------
# wrap and unwrap


def test_round_trip_with_token_in_provider_parameter(kp: KeyProvider, issuer: TokenIssuer, policy: Policy,
                                                     store: Store) -> None:
    ann = wrap_annotation(kp)
    doc = json.loads(ann)
    assert set(doc) == {"kid", "alg", "iv", "wrapped"} and doc["kid"] == "layers/k1" and doc["alg"] == "A256GCM"
    assert len(base64.b64decode(doc["iv"])) == 12
    assert OPTS not in ann and len(base64.b64decode(doc["wrapped"])) == len(OPTS) + 16
    out = decode_output(run_cmd(go_unwrap(ann, {"verdictd": [token(issuer)]}), kp))
    assert out["optsdata"] == OPTS
    seen = policy.inputs[-1]
    assert seen["tee"] == "sgx" and seen["tier"] == "affirming" and seen["kid"] == "layers/k1"
    assert seen["plugin"] == "keyprovider" and seen["mrenclave"] == MRENCLAVE and seen["tcb_status"] == "UpToDate"
    events = [(r["event"], r["detail"]["outcome"]) for r in store.audit_records(10)]
    assert ("keyprovider.wrap", "wrapped") in events and ("keyprovider.unwrap", "released") in events


def test_round_trip_with_token_param_and_fresh_iv(kp: KeyProvider, issuer: TokenIssuer) -> None:
    a1, a2 = wrap_annotation(kp), wrap_annotation(kp)
    assert json.loads(a1)["iv"] != json.loads(a2)["iv"]
    for ann in (a1, a2):
        params = {"verdictd": [b"Enabled"], TOKEN_PARAM: [token(issuer)]}
        assert decode_output(run_cmd(go_unwrap(ann, params), kp))["optsdata"] == OPTS


def test_wrap_refusals(kp: KeyProvider) -> None:
    cases = [
        ({"verdictd": [b"Enabled"]}, OPTS, "no key id", "invalid"),
        ({"other": [b"layers/k1"]}, OPTS, "no key id", "invalid"),
        ({"verdictd": [b"layers/k1", b"other/k2"]}, OPTS, "2 different key ids", "invalid"),
        ({"verdictd": [b"../etc"]}, OPTS, "is not a key id", "invalid"),
        ({"verdictd": [b"layers/none"]}, OPTS, "no such key", "not_found"),
        ({"verdictd": [b"layers/k1"]}, b"", "optsdata: empty", "invalid"),
    ]
    for params, opts, msg, code in cases:
        with pytest.raises(KeyProviderError, match=msg) as e:
            run_cmd(encode_wrap_input(params, opts), kp)
        assert e.value.code == code


def test_wrong_size_key_refused(store: Store, kp: KeyProvider) -> None:
    store.put_secret("key", "layers/short", b"k" * 16)
    with pytest.raises(KeyProviderError, match="not an AES-256 key"):
        run_cmd(encode_wrap_input({"verdictd": [b"layers/short"]}, OPTS), kp)


def _tampered(ann: bytes, **changes: Any) -> bytes:
    doc = json.loads(ann)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_tampered_annotation_refused(kp: KeyProvider, issuer: TokenIssuer, store: Store) -> None:
    ann = wrap_annotation(kp)
    doc = json.loads(ann)
    wrapped = bytearray(base64.b64decode(doc["wrapped"]))
    wrapped[3] ^= 1
    iv = bytearray(base64.b64decode(doc["iv"]))
    iv[0] ^= 1
    store.put_secret("key", "layers/k3", LAYER_KEY)  # the same key under another name: the kid is bound
    params = {"verdictd": [token(issuer)]}
    for bad in (_tampered(ann, wrapped=b64(bytes(wrapped))), _tampered(ann, iv=b64(bytes(iv))),
                _tampered(ann, kid="layers/k3")):
        with pytest.raises(KeyProviderError, match="does not open under key") as e:
            run_cmd(go_unwrap(bad, params), kp)
        assert e.value.code == "invalid"
    for bad, msg in ((_tampered(ann, alg="A128GCM"), "annotation.alg"), (_tampered(ann, iv=b64(b"x" * 16)),
                                                                         "annotation.iv"),
                     (_tampered(ann, wrapped=b64(b"short")), "shorter than"), (b"not json", "not verdictd's"),
                     (_tampered(ann, kid="a/../b"), "annotation.kid")):
        with pytest.raises(KeyProviderError, match=msg):
            run_cmd(go_unwrap(bad, params), kp)


def test_unwrap_without_token_refused(kp: KeyProvider, store: Store) -> None:
    ann = wrap_annotation(kp)
    for params in (None, {}, {"verdictd": [b"Enabled"]}, {"verdictd": [b""]}, {"someone-else": [b"x.y.z"]}):
        with pytest.raises(KeyProviderError, match="no attestation token") as e:
            run_cmd(go_unwrap(ann, params), kp)
        assert e.value.code == "unauthenticated"
    assert store.audit_records(1)[0]["detail"]["outcome"] == "unauthenticated"


def test_unwrap_invalid_tokens_refused(kp: KeyProvider, issuer: TokenIssuer) -> None:
    ann = wrap_annotation(kp)
    good = token(issuer).decode()
    head, body, sig = good.split(".")
    forged_sig = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    other = token(TokenIssuer())  # signed with a key verdictd does not hold
    expired = issuer.issue("sgx", {"mrenclave": MRENCLAVE}, "UpToDate", "affirming", ttl=10, now=1_000_000).encode()
    for bad, msg in ((f"{head}.{body}.{forged_sig}".encode(), "signature does not verify"),
                     (other, "is not in the JWKS"), (expired, "expired"), (b"garbage", "dot-separated"),
                     ("é".encode(), "not ASCII")):
        with pytest.raises(KeyProviderError, match="attestation token: .*" + msg) as e:
            run_cmd(go_unwrap(ann, {"verdictd": [bad]}), kp)
        assert e.value.code == "unauthenticated"


def test_unwrap_denied_by_tier_and_policy(kp: KeyProvider, issuer: TokenIssuer, store: Store) -> None:
    ann = wrap_annotation(kp)
    for tok, msg in ((token(issuer, tier="warning"), "ear.status 'warning'"),
                     (token(issuer, tier="contraindicated"), "ear.status 'contraindicated'"),
                     (token(issuer, mrenclave="00" * 32), "key policy denied"),
                     (token(issuer, tee="snp"), "key policy denied")):
        with pytest.raises(KeyProviderError, match=msg) as e:
            run_cmd(go_unwrap(ann, {TOKEN_PARAM: [tok]}), kp)
        assert e.value.code == "denied"
    # a key the policy does not grant (other/), even with a good token
    kp2_ann = seal_for(store, "other/k2")
    with pytest.raises(KeyProviderError, match="key policy denied key 'other/k2'"):
        run_cmd(go_unwrap(kp2_ann, {TOKEN_PARAM: [token(issuer)]}), kp)
    assert store.audit_records(1)[0]["detail"]["outcome"] == "denied"


def seal_for(store: Store, kid: str) -> bytes:
    from inclavare.services.verdictd.keyprovider import seal_annotation

    key = store.get_secret("key", kid)
    assert key is not None
    return seal_annotation(key, kid, OPTS)


def test_warning_tier_allowed_when_configured(store: Store, issuer: TokenIssuer, policy: Policy) -> None:
    kp = KeyProvider(store, issuer, policy, tiers=("affirming", "warning"))
    ann = wrap_annotation(kp)
    assert decode_output(run_cmd(go_unwrap(ann, {"verdictd": [token(issuer, tier="warning")]}), kp))["optsdata"] \
        == OPTS


def test_failing_policy_and_audit_release_nothing(store: Store, issuer: TokenIssuer) -> None:
    class Broken:
        def allow_resource(self, input: dict[str, Any]) -> bool:  # noqa: A002
            raise RuntimeError("rego exploded")

    class Truthy:
        def allow_resource(self, input: dict[str, Any]) -> Any:  # noqa: A002
            return "yes"  # only True allows

    ann = seal_for(store, "layers/k1")
    for pol in (Broken(), Truthy()):
        with pytest.raises(KeyProviderError) as e:
            run_cmd(go_unwrap(ann, {"verdictd": [token(issuer)]}), KeyProvider(store, issuer, pol))
        assert e.value.code == "denied"

    def bad_audit(event: str, detail: dict[str, Any]) -> None:
        raise VerdictdError("disk full")

    with pytest.raises(KeyProviderError, match="audit record failed") as e2:
        run_cmd(go_unwrap(ann, {"verdictd": [token(issuer)]}), KeyProvider(store, issuer, Policy(), audit=bad_audit))
    assert e2.value.code == "unavailable"


def test_custom_provider_name(store: Store, issuer: TokenIssuer, policy: Policy) -> None:
    kp = KeyProvider(store, issuer, policy, name="vd")
    out = decode_output(run_cmd(encode_wrap_input({"vd": [b"layers/k1"]}, OPTS), kp))
    assert out["annotation"] is not None and parse_annotation(out["annotation"]).kid == "layers/k1"
    assert decode_output(run_cmd(go_unwrap(out["annotation"], {"vd": [token(issuer)]}), kp))["optsdata"] == OPTS


# -------------------------------------------------------------------------------------------------
# bytes as JSON arrays (Rust serde Vec<u8>: ocicrypt-rs, upstream Inclavare's verdictd)


def test_byte_arrays_read_as_go_reads_them(kp: KeyProvider, issuer: TokenIssuer) -> None:
    doc = {"op": "keywrap", "keywrapparams": {"ec": {"Parameters": {"verdictd": [list(b"layers/k1")]}},
                                              "optsdata": list(OPTS)}}
    ann = decode_output(run_cmd(json.dumps(doc).encode(), kp))["annotation"]
    assert ann is not None
    doc2 = {"op": "keyunwrap", "keyunwrapparams": {"dc": {"Parameters": {"verdictd": [list(token(issuer))]}},
                                                   "annotation": list(ann)}}
    assert decode_output(run_cmd(json.dumps(doc2).encode(), kp))["optsdata"] == OPTS
    for bad in ([256], [-1], [True], [1.0], ["a"]):
        with pytest.raises(KeyProviderError, match=r"keyunwrapparams.annotation: a byte array must hold"):
            decode_input(json.dumps({"op": "keyunwrap", "keyunwrapparams": {"annotation": bad}}).encode())


def test_byte_array_answers(store: Store, issuer: TokenIssuer, policy: Policy) -> None:
    kp = KeyProvider(store, issuer, policy, byte_arrays=True)
    raw = json.loads(run_cmd(GO_WRAP, kp))
    ann = raw["keywrapresults"]["annotation"]
    assert isinstance(ann, list) and json.loads(bytes(ann))["kid"] == "layers/k1"
    out = json.loads(run_cmd(go_unwrap(bytes(ann), {"verdictd": [token(issuer)]}), kp))
    assert out == {"keyunwrapresults": {"optsdata": list(OPTS)}}


# -------------------------------------------------------------------------------------------------
# malformed input of any shape: a KeyProviderError, nothing else


def _json_values() -> Any:
    from hypothesis import strategies as st

    leaves = st.none() | st.booleans() | st.integers(-300, 300) | st.text(max_size=12) | \
        st.sampled_from(["QQ==", "keywrap", "keyunwrap", "verdictd", "Parameters", "Enabled"])
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["op", "keywrapparams", "keyunwrapparams", "ec", "dc", "Parameters", "DecryptConfig",
                         "optsdata", "annotation", "verdictd", TOKEN_PARAM, "kid", "iv", "wrapped", "alg"]),
        inner, max_size=5), max_leaves=20)


def test_any_input_gets_a_key_provider_error_or_an_answer(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    st_ = Store(str(tmp_path / "fuzz"), KEK)
    st_.put_secret("key", "verdictd", LAYER_KEY)
    kp = KeyProvider(st_, TokenIssuer(), Policy())

    @settings(max_examples=200, deadline=None)
    @given(doc=_json_values(), raw=st.binary(max_size=64))
    def check(doc: Any, raw: bytes) -> None:
        for data in (json.dumps(doc).encode(), raw):
            try:
                out = run_cmd(data, kp)
            except KeyProviderError as e:
                assert str(e) and "\n" not in str(e)
            else:
                assert decode_output(out)["annotation"] is not None  # only a wrap can succeed without a token

    try:
        check()
    finally:
        st_.close()
