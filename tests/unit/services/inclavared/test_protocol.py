"""inclavared's codecs: the GETENCLAVEINFO request, the ENCLAVEINFO answer (upstream's field names), the
confidential container's 64-byte identity answer, addresses; and the relay's use of the verified evidence."""

from __future__ import annotations

import json

import pytest

from inclavare.formats.enclave_info import IdentityAnswerError, decode_identity_answer, encode_identity_answer
from inclavare.ratls.verifiers import PeerClaims
from inclavare.services.inclavared.protocol import (
    Address,
    EnclaveInfo,
    InclavaredError,
    decode_enclave_info,
    decode_request,
    encode_request,
    parse_address,
)
from inclavare.services.inclavared.relay import Relay, enclave_info_from

MRE = bytes(range(32))
MRS = bytes(range(32, 64))


def sgx_peer(mrenclave: bytes = MRE, mrsigner: bytes = MRS, verified: bool = True) -> PeerClaims:
    return PeerClaims(verifier="sim", evidence_type="sgx_ecdsa", tee="sim", format="dice", verified=verified,
                      claims={"mrenclave": mrenclave.hex(), "mrsigner": mrsigner.hex(), "isvsvn": 0})


def test_request_is_upstream_shelters_json() -> None:
    assert encode_request() == b'{"type":"GETENCLAVEINFO"}'
    assert decode_request(encode_request()) == "GETENCLAVEINFO"
    assert decode_request(b'{ "type": "OTHER", "x": 1 }') == "OTHER"


@pytest.mark.parametrize("data, needle", [
    (b"", "not JSON"), (b"hello from inclavared", "not JSON"), (b"[1]", "JSON object"), (b"\xff{}", "not JSON"),
    (b'{"type": 3}', "type"), (b'{"kind": "GETENCLAVEINFO"}', "type"), (b"{" + b" " * 70000 + b"}", "bytes"),
])
def test_bad_requests_are_refused(data: bytes, needle: str) -> None:
    with pytest.raises(InclavaredError, match=needle) as e:
        decode_request(data)
    assert "\n" not in str(e.value)


def test_enclaveinfo_has_upstreams_fields_and_round_trips() -> None:
    info = EnclaveInfo(mrenclave=MRE.hex(), mrsigner=MRS.hex(), message="hi\n", id="123456", attested=True,
                       tee="sim", verifier="sim", claims={"mrenclave": MRE.hex()})
    obj = json.loads(info.encode())
    assert list(obj)[:6] == ["id", "msgtype", "version", "mrenclave", "mrsigner", "message"]
    assert (obj["msgtype"], obj["version"], obj["id"]) == ("ENCLAVEINFO", 1, "123456")
    assert decode_enclave_info(info.encode()) == info


def test_claims_json_has_no_form_for_are_written_as_text() -> None:
    info = EnclaveInfo(mrenclave=MRE.hex(), attested=True, claims={"raw": b"\x01\x02", "when": object()})
    obj = json.loads(info.encode())
    assert obj["claims"]["raw"] == "0102" and obj["claims"]["when"].startswith("<object")


def test_upstream_inclavareds_answer_decodes_as_not_attested() -> None:
    upstream = json.dumps({"id": "123456", "msgtype": "ENCLAVEINFO", "version": 1, "mrenclave": MRE.hex().upper(),
                           "mrsigner": MRS.hex(), "message": "Hello"}).encode()
    info = decode_enclave_info(upstream)
    assert info.mrenclave == MRE.hex() and not info.attested and info.claims == {}


def test_error_answer() -> None:
    err = EnclaveInfo(msgtype="ERROR", message="container down", id="1")
    assert set(json.loads(err.encode())) == {"id", "msgtype", "version", "mrenclave", "mrsigner", "message"}
    back = decode_enclave_info(err.encode())
    assert back.is_error and back.message == "container down"


@pytest.mark.parametrize("change, needle", [
    ({"msgtype": "HELLO"}, "msgtype"), ({"version": 2}, "version"), ({"version": True}, "version"),
    ({"mrenclave": "abcd"}, "mrenclave"), ({"mrsigner": 5}, "mrsigner"), ({"attested": "yes"}, "attested"),
    ({"claims": []}, "claims"), ({"message": 1}, "message"), ({"mrenclave": "", "claims": {}}, "no measurement"),
    ({"id": []}, "id"),
])
def test_malformed_enclaveinfo(change: dict[str, object], needle: str) -> None:
    obj = EnclaveInfo(mrenclave=MRE.hex(), mrsigner=MRS.hex(), attested=True).to_dict()
    obj.update(change)
    with pytest.raises(InclavaredError, match=needle):
        decode_enclave_info(json.dumps(obj).encode())


def test_identity_answer_is_rats_tls_samples_layout() -> None:
    data = encode_identity_answer(MRE, MRS, "Hello and welcome to RATS-TLS!\n")
    assert data[:32] == MRE and data[32:64] == MRS and data[64:] == b"Hello and welcome to RATS-TLS!\n"
    back = decode_identity_answer(data, "here")
    assert (back.mrenclave, back.mrsigner, back.message) == (MRE, MRS, "Hello and welcome to RATS-TLS!\n")
    assert decode_identity_answer(MRE + MRS, "here").message == ""


@pytest.mark.parametrize("data, needle", [
    (b"short", "5 bytes"), (MRE + MRS + b"\xff\xfe", "UTF-8"), (MRE + MRS + b"a\x00b", "control"),
    (MRE + MRS + b"x" * 5000, "more than"),
])
def test_malformed_identity_answers(data: bytes, needle: str) -> None:
    with pytest.raises(IdentityAnswerError, match=needle) as e:
        decode_identity_answer(data, "unix:///c.sock")
    assert "unix:///c.sock" in str(e.value)
    with pytest.raises(IdentityAnswerError):
        encode_identity_answer(MRE[:31], MRS, "")


@pytest.mark.parametrize("text, want", [
    ("tcp://127.0.0.1:1234", Address(host="127.0.0.1", port=1234)),
    ("127.0.0.1:0", Address(host="127.0.0.1", port=0)),
    ("tcp://[::1]:5", Address(host="::1", port=5)),
    ("unix:///run/x.sock", Address(path="/run/x.sock")),
    ("unix:/run/x.sock", Address(path="/run/x.sock")),
    ("/run/x.sock", Address(path="/run/x.sock")),
])
def test_addresses(text: str, want: Address) -> None:
    assert parse_address(text, "--addr") == want
    assert parse_address(str(want), "--addr") == want


@pytest.mark.parametrize("text", ["ftp://host/x", "http://1.2.3.4:80",
                                  "tcp://1.2.3.4", "1.2.3.4:99999", "unix://", "tcp://:5", "host:port",
                                  "unix://" + "x" * 200])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(InclavaredError, match="--addr"):
        parse_address(text, "--addr")


def test_relay_reports_the_attested_measurement() -> None:
    info = enclave_info_from(encode_identity_answer(MRE, MRS, "hi"), sgx_peer(), "c")
    assert (info.mrenclave, info.mrsigner, info.message, info.attested, info.tee) == (MRE.hex(), MRS.hex(), "hi",
                                                                                      True, "sim")
    assert info.claims["isvsvn"] == 0


def test_relay_refuses_an_answer_that_contradicts_the_evidence() -> None:
    with pytest.raises(InclavaredError, match="MRENCLAVE is .* attested evidence says"):
        enclave_info_from(encode_identity_answer(bytes(32), MRS, "hi"), sgx_peer(), "c")
    with pytest.raises(InclavaredError, match="MRSIGNER"):
        enclave_info_from(encode_identity_answer(MRE, bytes(32), "hi"), sgx_peer(), "c")


def test_relay_without_a_verifier_says_not_attested() -> None:
    null = PeerClaims(verifier="nullverifier", evidence_type=None, tee=None, format="none", verified=False)
    for peer in (None, null, sgx_peer(verified=False)):
        info = enclave_info_from(encode_identity_answer(MRE, MRS, "hi"), peer, "c")
        assert not info.attested and info.claims == {}


def test_relay_with_tdx_evidence_takes_the_claims() -> None:
    peer = PeerClaims(verifier="tdx_ecdsa", evidence_type="tdx_ecdsa", tee="tdx", format="dice", verified=True,
                      claims={"mrtd": "ab" * 48})
    info = enclave_info_from(b"Hello", peer, "c")
    assert info.attested and info.mrenclave == "" and info.claims["mrtd"] == "ab" * 48 and info.message == "Hello"
    assert decode_enclave_info(info.encode()) == info


def test_relay_answers_bad_requests_with_an_error() -> None:
    from inclavare.ratls.tls import RatsTlsConfig

    relay = Relay(None, RatsTlsConfig(attester="nullattester", verifier="nullverifier"), 5.0)
    for request, needle in ((b"junk", "not JSON"), (b'{"type":"PING"}', "only GETENCLAVEINFO"),
                            (encode_request(), "without -x")):
        info = relay.answer(request)
        assert info.is_error and needle in info.message
    with pytest.raises(InclavaredError, match="timeout"):
        Relay(None, RatsTlsConfig(), 0)


def test_listen_replaces_a_stale_socket_never_a_file(tmp_path: object) -> None:
    import socket
    from pathlib import Path

    from inclavare.services.inclavared.transport import listen

    base = Path(str(tmp_path))
    stale = base / "stale.sock"
    old = socket.socket(socket.AF_UNIX)
    old.bind(str(stale))
    old.close()  # the path stays behind, as after a crash
    listen(Address(path=str(stale)), "--listen").close()
    regular = base / "file"
    regular.write_text("keep me")
    with pytest.raises(InclavaredError, match="exists and is not a socket"):
        listen(Address(path=str(regular)), "--listen")
    assert regular.read_text() == "keep me"
