"""The EAA protocol without sockets: each command's answer byte for byte as upstream verdictd writes it, every
failure shape, the checks on hostile requests, and the server's configuration rules."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from inclavare.services.verdictd.eaa import EaaServer, Limits, _decision, parse_address
from inclavare.services.verdictd.eaa_protocol import (
    MAX_ITEMS,
    MAX_REQUEST,
    EaaSession,
    encrypt_blob,
    parse_request,
)
from inclavare.services.verdictd.errors import VerdictdError

KEY = bytes(range(32))
IV = b"0123456789ab"


class Keys:
    def __init__(self, keys: dict[str, bytes]) -> None:
        self.keys = keys
        self.asked: list[str] = []

    def get_kek(self, kid: str) -> bytes | None:
        self.asked.append(kid)
        return self.keys.get(kid)


class Resources:
    def __init__(self, items: dict[str, bytes]) -> None:
        self.items = items

    def get_resource(self, name: str) -> bytes | None:
        return self.items.get(name)


def session(**kw: Any) -> tuple[EaaSession, list[tuple[str, dict[str, Any]]]]:
    records: list[tuple[str, dict[str, Any]]] = []
    keys = kw.pop("keys", Keys({"k1": KEY, "short": b"x" * 16}))
    resources = kw.pop("resources", Resources({"Policy": b'{"default":[]}', "default/key/1": b"\x00secret"}))
    s = EaaSession(keys, resources, peer={"tee": "sim"}, audit=lambda e, d: records.append((e, d)), **kw)
    return s, records


def ask(s: EaaSession, obj: Any) -> tuple[bytes, bool]:
    r = s.handle(json.dumps(obj).encode())
    return r.body, r.close


def blob(kid: str = "k1", plaintext: bytes = b"layer key", **over: Any) -> dict[str, Any]:
    b = {"kid": kid, "encrypted_data": base64.b64encode(encrypt_blob(KEY, IV, plaintext)).decode(),
         "algorithm": "AES", "key_length": 256, "iv": base64.b64encode(IV).decode()}
    b.update(over)
    return b


# --------------------------------------------------------------------------------------------------
# Commands


def test_version_is_upstreams_answer() -> None:
    s, _ = session()
    assert ask(s, {"command": "version"}) == (b'{"status":"OK","version":"v1"}', False)


def test_echo_answers_the_text_and_ends_the_connection() -> None:
    s, _ = session()
    assert ask(s, {"command": "echo", "data": "héllo"}) == ("héllo".encode(), True)
    assert ask(s, {"command": "echo"}) == (b"Echo parameters error", True)
    assert ask(s, {"command": "echo", "data": 5}) == (b"Echo parameters error", True)


def test_decrypt_opens_aes_256_gcm_blobs_keyed_by_their_encrypted_data() -> None:
    s, records = session()
    b1, b2 = blob(plaintext=b"one"), blob(plaintext=b"two")
    body, close = ask(s, {"command": "Decrypt", "blobs": [b1, b2]})
    assert not close
    expected = {"data": {b1["encrypted_data"]: base64.b64encode(b"one").decode(),
                         b2["encrypted_data"]: base64.b64encode(b"two").decode()}, "status": "OK"}
    assert body == json.dumps(expected, separators=(",", ":"), sort_keys=True).encode()
    assert records == [("eaa.decrypt", {"kids": ["k1", "k1"], "peer": {"tee": "sim"}})]


@pytest.mark.parametrize(("over", "error"), [
    ({"algorithm": "DES"}, 'parameters error: blobs[0].algorithm: expected "AES"'),
    ({"key_length": 128}, "parameters error: blobs[0].key_length: expected 256"),
    ({"key_length": 256.0}, "parameters error: blobs[0].key_length: expected 256"),
    ({"key_length": True}, "parameters error: blobs[0].key_length: expected 256"),
    ({"iv": "!!"}, "parameters error: blobs[0].iv: not base64"),
    ({"iv": base64.b64encode(b"short").decode()}, "parameters error: blobs[0].iv: 5 bytes, AES-256-GCM takes 12"),
    ({"encrypted_data": None}, "parameters error: blobs[0].encrypted_data: expected base64 text"),
    ({"encrypted_data": "AAAA"}, "parameters error: blobs[0].encrypted_data: shorter than the 16-byte tag"),
    ({"kid": "nokey"}, 'kid: "nokey"\'s key not found'),
    ({"kid": "../../etc/passwd"}, "parameters error: blobs[0].kid: '../../etc/passwd' is not a valid key id"),
    ({"kid": "default/../x"}, "parameters error: blobs[0].kid: 'default/../x' is not a valid key id"),
    ({"kid": "/abs/key/1"}, "parameters error: blobs[0].kid: '/abs/key/1' is not a valid key id"),
    ({"kid": "k" * 257}, f"parameters error: blobs[0].kid: {'k' * 64 + '...'!r} is not a valid key id"),
    ({"kid": ""}, "parameters error: blobs[0].kid: expected a non-empty string"),
    ({"kid": "short"}, 'kid: "short"\'s key is not an AES-256 key'),
])
def test_decrypt_failures_use_upstreams_shape_and_name_the_field(over: dict[str, Any], error: str) -> None:
    s, records = session()
    body, close = ask(s, {"command": "Decrypt", "blobs": [blob(**over)]})
    assert json.loads(body) == {"status": "Fail", "data": {}, "error": error}
    assert not close
    assert records == []


def test_decrypt_refuses_a_tampered_blob_and_a_wrong_iv() -> None:
    s, _ = session()
    b = blob()
    raw = bytearray(base64.b64decode(b["encrypted_data"]))
    raw[0] ^= 1
    body, _ = ask(s, {"command": "Decrypt", "blobs": [dict(b, encrypted_data=base64.b64encode(raw).decode())]})
    assert json.loads(body)["error"] == "decryption failed"
    body, _ = ask(s, {"command": "Decrypt", "blobs": [dict(b, iv=base64.b64encode(b"ba9876543210").decode())]})
    assert json.loads(body)["error"] == "decryption failed"


def test_decrypt_bounds_and_types() -> None:
    s, _ = session()
    body, _ = ask(s, {"command": "Decrypt"})
    assert json.loads(body)["error"] == "decrypt parameters error: 'blobs': expected a list"
    body, _ = ask(s, {"command": "Decrypt", "blobs": [blob()] * (MAX_ITEMS + 1)})
    assert json.loads(body)["error"] == f"decrypt parameters error: 'blobs': {MAX_ITEMS + 1} items, at most {MAX_ITEMS}"
    body, _ = ask(s, {"command": "Decrypt", "blobs": ["x"]})
    assert json.loads(body)["error"] == "parameters error: blobs[0]: expected an object"


def test_kbs_resource_paths_are_key_ids_too() -> None:
    """Today's EAA KBC sends the encrypted layer's kid as a KBS resource path (repo/type/tag)."""
    s, _ = session(keys=Keys({"default/key/layer-1": KEY}))
    body, _ = ask(s, {"command": "Decrypt", "blobs": [blob("default/key/layer-1", b"lk")]})
    assert base64.b64decode(next(iter(json.loads(body)["data"].values()))) == b"lk"
    body, _ = ask(s, {"command": "Get KEK", "kids": ["default/key/layer-1"]})
    assert json.loads(body)["data"] == {"default/key/layer-1": base64.b64encode(KEY).decode()}


def test_get_kek_returns_keys_by_id() -> None:
    s, records = session()
    body, close = ask(s, {"command": "Get KEK", "kids": ["k1"]})
    assert body == b'{"data":{"k1":"' + base64.b64encode(KEY) + b'"},"status":"OK"}'
    assert not close
    assert records == [("eaa.kek", {"kids": ["k1"], "peer": {"tee": "sim"}})]
    body, _ = ask(s, {"command": "Get KEK", "kids": ["k1", "gone"]})
    assert json.loads(body) == {"status": "Fail", "data": {}, "error": "kid: gone's key not found"}
    body, _ = ask(s, {"command": "Get KEK", "kids": "k1"})
    assert json.loads(body)["error"] == "get KEK parameters error: 'kids': expected a list"
    body, _ = ask(s, {"command": "Get KEK", "kids": ["a/b"]})
    assert json.loads(body)["error"] == "get KEK parameters error: kids[0]: 'a/b' is not a valid key id"
    body, _ = ask(s, {"command": "Get KEK", "kids": [".."]})
    assert json.loads(body)["error"] == "get KEK parameters error: kids[0]: '..' is not a valid key id"
    assert len(records) == 1  # failures release nothing


def test_resources_info_and_get() -> None:
    s, records = session()
    body, _ = ask(s, {"command": "Get Resource Info", "name": "Policy"})
    size = len(base64.b64encode(b'{"default":[]}'))
    assert body == b'{"data":{"base64size":"%d"},"status":"OK"}' % size
    body, close = ask(s, {"command": "Get Policy", "optional": {}})
    assert body == base64.b64encode(b'{"default":[]}') and not close
    body, _ = ask(s, {"command": "Get default/key/1"})
    assert base64.b64decode(body) == b"\x00secret"
    assert [e for e, _ in records] == ["eaa.resource", "eaa.resource"]
    # absent: Get answers the base64 of a failure object; Resource Info the failure object itself
    body, _ = ask(s, {"command": "Get GPG Keyring", "optional": {}})
    assert json.loads(base64.b64decode(body)) == {"status": "Fail", "error": "Can't fetch GPG Keyring: not found"}
    body, _ = ask(s, {"command": "Get Resource Info", "name": "Cosign Key"})
    assert json.loads(body) == {"status": "Fail", "error": "Can't fetch Cosign Key: not found"}
    body, _ = ask(s, {"command": "Get Resource Info", "name": "/etc/shadow"})
    assert json.loads(body) == {"status": "Fail", "error": "file name error"}
    body, _ = ask(s, {"command": "Get Resource Info"})
    assert json.loads(body) == {"status": "Fail", "error": "file name error"}


def test_unattested_clients_get_no_keys_or_resources() -> None:
    s, records = session(attested=False)
    assert ask(s, {"command": "version"})[0] == b'{"status":"OK","version":"v1"}'
    body, _ = ask(s, {"command": "Get KEK", "kids": ["k1"]})
    assert json.loads(body)["status"] == "Fail" and "not attested" in json.loads(body)["error"]
    body, _ = ask(s, {"command": "Decrypt", "blobs": [blob()]})
    assert json.loads(body)["status"] == "Fail"
    body, _ = ask(s, {"command": "Get Policy"})
    assert json.loads(base64.b64decode(body))["status"] == "Fail"
    assert records == []


def test_a_failing_store_or_audit_releases_nothing() -> None:
    class Broken:
        def get_kek(self, kid: str) -> bytes | None:
            raise OSError("disk gone")

    s, _ = session(keys=Broken())
    body, close = ask(s, {"command": "Get KEK", "kids": ["k1"]})
    assert json.loads(body) == {"status": "Fail", "data": {},
                                "error": "internal error (OSError); nothing was released"}
    assert not close

    def audit(event: str, detail: dict[str, Any]) -> None:
        raise RuntimeError("audit table locked")

    s = EaaSession(Keys({"k1": KEY}), Resources({"Policy": b"p"}), audit=audit)
    body, _ = ask(s, {"command": "Get KEK", "kids": ["k1"]})
    assert base64.b64encode(KEY) not in body and json.loads(body)["status"] == "Fail"
    body, _ = ask(s, {"command": "Get Policy"})
    assert json.loads(base64.b64decode(body))["status"] == "Fail"


# --------------------------------------------------------------------------------------------------
# Hostile requests: one Fail answer, then the connection ends


@pytest.mark.parametrize(("data", "error"), [
    (b'{"command": "version"', "Parse request failed: Expecting ',' delimiter at line 1 column 22"),
    (b"\xff\xfe", "Parse request failed: not UTF-8 at byte 0"),
    (b'["version"]', "Parse request failed: expected a JSON object, got list"),
    (b'{"command": "echo", "data": NaN}', "Parse request failed: NaN is not a JSON number"),
    (b'{"command": "version", "command": "Get KEK"}', "Parse request failed: duplicate key 'command'"),
    (b'{"data": 1}', "Command error: 'command': expected a string"),
    (b'{"command": "Format Disk"}', "Command error: unknown command 'Format Disk'"),
    (b'{"command": "Get ../../etc/shadow"}', "Command error: unknown command 'Get ../../etc/shadow'"),
    (b"[" * 100_000, "request too large: 100000 bytes, at most 65536"),
])
def test_malformed_requests_get_one_fail_answer_and_the_end(data: bytes, error: str) -> None:
    s, _ = session()
    r = s.handle(data)
    assert json.loads(r.body) == {"status": "Fail", "error": error}
    assert r.close


def test_deep_nesting_is_a_parse_error() -> None:
    s, _ = session()
    data = b"[" * 30_000 + b"]" * 30_000
    assert len(data) <= MAX_REQUEST
    r = s.handle(data)
    assert json.loads(r.body) == {"status": "Fail", "error": "Parse request failed: nested too deeply"}
    assert r.close
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_request(data)


# --------------------------------------------------------------------------------------------------
# The server's rules


def test_parse_address() -> None:
    import socket

    assert parse_address("127.0.0.1:1234") == (socket.AF_INET, ("127.0.0.1", 1234))
    assert parse_address("[::1]:0") == (socket.AF_INET6, ("::1", 0))
    assert parse_address("/run/verdictd.sock") == (socket.AF_UNIX, "/run/verdictd.sock")
    assert parse_address("unix:eaa.sock") == (socket.AF_UNIX, "eaa.sock")
    for bad, why in (("1234", "expected IP:PORT"), ("::1:80", "in brackets"), ("1.2.3.4:99999", "not a TCP port"),
                     ("localhost:80", "not an IP address"), ("/" + "x" * 200, "1..107 bytes")):
        with pytest.raises(VerdictdError, match=why):
            parse_address(bad)


def test_a_server_refuses_configurations_that_let_clients_skip_attestation() -> None:
    from inclavare.ratls.tls import RatsTlsConfig

    one_way = RatsTlsConfig(attester="nullattester", verifier="nullverifier")
    with pytest.raises(VerdictdError, match="not mutual"):
        EaaServer(one_way, Keys({}), lambda *a: True)  # type: ignore[arg-type]
    mutual = RatsTlsConfig(attester="nullattester", verifier="nullverifier", mutual=True)
    with pytest.raises(VerdictdError, match="no appraiser"):
        EaaServer(mutual, Keys({}), None)
    with pytest.raises(VerdictdError, match="max_connections"):
        EaaServer(mutual, Keys({}), None, limits=Limits(max_connections=0), allow_unattested=True)
    with pytest.raises(VerdictdError, match="config: expected a RatsTlsConfig"):
        EaaServer(object(), Keys({}), None)


def test_appraisal_answers_fail_closed() -> None:
    class Decision:
        def __init__(self, allow: Any, reasons: list[str]) -> None:
            self.allow, self.reasons = allow, reasons

    assert _decision(True) == (True, [])
    assert _decision(False) == (False, [])
    assert _decision(None) == (False, [])
    assert _decision("yes") == (False, [])
    assert _decision(1) == (False, [])
    assert _decision(Decision(True, [])) == (True, [])
    assert _decision(Decision("true", ["x"])) == (False, ["x"])
    assert _decision(Decision(False, ["debug enclave"])) == (False, ["debug enclave"])
