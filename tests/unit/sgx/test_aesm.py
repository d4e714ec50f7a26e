"""The AESM client: its hand-written proto2 codec against protoc's code for Intel's messages, the quoting and
launch-token flows against the fake aesmd (backed by the simulated platform), AESM error codes, and transport
faults (socket missing, truncated, oversized, garbage, silent, wrong replies)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.formats.dcap import Quote3
from inclavare.formats.sgx import AttributeFlags, Attributes, EInitToken, Report, SigStruct
from inclavare.sgx import aesm
from inclavare.sgx.aesm import (
    ALG_ECDSA_P256,
    ALG_EPID,
    AesmClient,
    AesmError,
    AesmProtocolError,
    AesmQuotingService,
    DecodeError,
    algorithm_of,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from inclavare.sgx.proto import messages_pb2
from inclavare.sim.report import EnclaveIdentity, ReportKey
from inclavare.testing.fake_aesm import FakeAesm, SimAesmBackend

SRC = Path(__file__).resolve().parents[3] / "src"
APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"aesm test enclave").digest(),
                      mrsigner=hashlib.sha256(b"aesm test signer").digest(), attributes=Attributes(0x4, 0x3),
                      isvprodid=3, isvsvn=1)

# ---- the generated codec keeps the bytes of the hand-written one it replaced

# (encoder, kind, fields, the hand-written codec's bytes, captured before the switch to generated messages)
GOLDEN = [
    (encode_request, "SelectAttKeyID", {"timeout": 30000}, "9a010410b0ea01"),
    (encode_request, "InitQuoteEx", {"att_key_id": b"\x01" * 4, "b_pub_key_id": True, "buf_size": 32,
                                     "timeout": 7000}, "7a0d0a04010101011801202048d836"),
    (encode_request, "GetQuoteEx", {"report": b"\x02" * 5, "att_key_id": b"\x03" * 3, "buf_size": 4660,
                                    "timeout": 30000}, "8a01130a050202020202120303030320b42448b0ea01"),
    (encode_request, "GetLaunchToken", {"mr_enclave": b"e", "mr_signer": b"s", "se_attributes": b"a", "timeout": 1},
     "1a0b0a01651201731a01614801"),
    (encode_request, "GetSupportedAttKeyIDs", {"buf_size": 512, "timeout": 30000}, "b2010708800448b0ea01"),
    (encode_request, "GetSupportedAttKeyIDNum", {"timeout": 30000}, "aa010448b0ea01"),
    (encode_response, "InitQuoteEx", {"errorCode": 0, "target_info": b"ttt", "pub_key_id_size": 2**40,
                                      "pub_key_id": b"k"}, "7a11080012037474741880808080802022016b"),
    (encode_response, "GetQuoteEx", {"errorCode": 45}, "8a0102082d"),
    (encode_response, "UnsupportedRequest", {"errorCode": 1}, "a201020801"),
    (encode_response, "GetSupportedAttKeyIDNum", {"errorCode": 0, "att_key_id_num": 2}, "aa010408001002"),
]


@pytest.mark.parametrize(("encode", "kind", "fields", "hexbytes"), GOLDEN,
                         ids=[f"{e.__name__}-{k}" for e, k, _, _ in GOLDEN])
def test_wire_bytes_match_the_former_hand_written_codec(encode: Any, kind: str, fields: dict[str, Any],
                                                        hexbytes: str) -> None:
    raw = bytes.fromhex(hexbytes)
    assert encode(kind, **fields) == raw
    decode = decode_request if encode is encode_request else decode_response
    assert decode(raw) == {kind: fields}
    outer = messages_pb2.Request() if encode is encode_request else messages_pb2.Response()
    outer.ParseFromString(raw)
    sub = getattr(outer, (aesm.REQUESTS if encode is encode_request else aesm.RESPONSES)[kind])
    assert {f.name: v for f, v in sub.ListFields()} == fields
    assert outer.SerializePartialToString() == raw


def test_field_numbers_are_intels() -> None:
    # a few numbers from Intel's messages.proto, checked apart from the golden bytes
    req, res = messages_pb2.Request.DESCRIPTOR, messages_pb2.Response.DESCRIPTOR
    assert {k: req.fields_by_name[f].number for k, f in aesm.REQUESTS.items()} == {
        "GetLaunchToken": 3, "InitQuoteEx": 15, "GetQuoteSizeEx": 16, "GetQuoteEx": 17, "SelectAttKeyID": 19,
        "GetSupportedAttKeyIDNum": 21, "GetSupportedAttKeyIDs": 22}
    assert res.fields_by_name["unsupportedRequestResponse"].number == 20
    assert req.fields_by_name["selectAttKeyIDReq"].message_type.fields_by_name["timeout"].number == 2
    assert req.fields_by_name["getQuoteExReq"].message_type.fields_by_name["timeout"].number == 9


def _value(fd: Any) -> st.SearchStrategy[Any]:
    if fd.type == fd.TYPE_BYTES:
        return st.binary(max_size=600)
    if fd.type == fd.TYPE_BOOL:
        return st.booleans()
    return st.integers(0, (1 << (64 if fd.type == fd.TYPE_UINT64 else 32)) - 1)


def _fields_strategy(outer: Any, field: str) -> st.SearchStrategy[dict[str, Any]]:
    sub = outer.DESCRIPTOR.fields_by_name[field].message_type
    return st.fixed_dictionaries({}, optional={fd.name: _value(fd) for fd in sub.fields})


@pytest.mark.parametrize("kind", sorted(aesm.REQUESTS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_requests_round_trip(kind: str, data: st.DataObject) -> None:
    fields = data.draw(_fields_strategy(messages_pb2.Request, aesm.REQUESTS[kind]))
    assert decode_request(encode_request(kind, **fields)) == {kind: fields}


@pytest.mark.parametrize("kind", sorted(aesm.RESPONSES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_responses_round_trip(kind: str, data: st.DataObject) -> None:
    fields = data.draw(_fields_strategy(messages_pb2.Response, aesm.RESPONSES[kind]))
    assert decode_response(encode_response(kind, **fields)) == {kind: fields}


def test_absent_error_code_means_failure_as_in_intels_default() -> None:
    raw = encode_response("GetQuoteEx", quote=b"q")
    assert "errorCode" not in decode_response(raw)["GetQuoteEx"]
    oracle = messages_pb2.Response()
    oracle.ParseFromString(raw)
    assert oracle.getQuoteExRes.errorCode == aesm.ERROR_CODE_DEFAULT == 1


def _key(number: int, wire: int) -> bytes:
    """A protobuf field key (a varint), written out independently of the codec under test."""
    value, out = number << 3 | wire, bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def test_unknown_fields_are_skipped_and_repeated_messages_merge_as_protobuf_does() -> None:
    # inside the sub-message: unknown varint (5), fixed64 (6), fixed32 (7) and bytes (8) fields
    extra = _key(5, 0) + b"\x96\x01" + _key(6, 1) + bytes(8) + _key(7, 5) + bytes(4) + _key(8, 2) + b"\x03abc"
    inner = _key(1, 0) + b"\x00" + _key(2, 2) + b"\x02qq" + extra
    first = _key(17, 2) + bytes([len(inner)]) + inner
    second = encode_response("GetQuoteEx", qe_report_info=b"info")
    unknown_top = _key(40, 0) + b"\x07"
    assert decode_response(first + unknown_top + second) == {
        "GetQuoteEx": {"errorCode": 0, "quote": b"qq", "qe_report_info": b"info"}}
    # a known field number with the wrong wire type is an unknown field to protobuf: errorCode stays absent
    assert decode_response(_key(17, 2) + b"\x02" + _key(1, 2) + b"\x00") == {"GetQuoteEx": {}}


def test_truncated_and_malformed_messages_are_refused() -> None:
    good = encode_response("GetQuoteEx", errorCode=0, quote=b"x" * 300)
    for cut in (1, 2, 3, 5, len(good) - 1):
        with pytest.raises(DecodeError) as e:
            decode_response(good[:cut])
        assert "\n" not in str(e.value) and "aesm.message.Response" in str(e.value)
    for bad in (_key(15, 2) + b"\xff" * 11, _key(1, 3), b"\x7a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"):
        with pytest.raises(DecodeError):
            decode_response(bad)
    assert issubclass(DecodeError, ValueError)


def test_encoder_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match=r"^GetQuoteEx.buf_size: .*out of range"):
        encode_request("GetQuoteEx", report=b"", buf_size=1 << 32)
    with pytest.raises(ValueError, match="no field 'quote'"):
        encode_request("GetQuoteEx", quote=b"")
    with pytest.raises(ValueError, match=r"^GetQuoteEx.report: "):
        encode_request("GetQuoteEx", report="not bytes")
    with pytest.raises(ValueError, match="unknown AESM message"):
        encode_request("Nope")


def test_att_key_id_layout() -> None:
    qe_signer = hashlib.sha256(b"qe").digest()
    akid = aesm.make_att_key_id(ALG_ECDSA_P256, qe_signer, 1)
    assert len(akid) == aesm.ATT_KEY_ID_SIZE
    assert algorithm_of(akid) == ALG_ECDSA_P256
    assert algorithm_of(aesm.make_att_key_id(ALG_EPID, qe_signer)) == ALG_EPID
    assert akid[4:6] == b"\x20\x00" and akid[6:38] == qe_signer
    assert algorithm_of(akid[:100]) == -1


def test_importing_the_client_loads_neither_protobuf_nor_cryptography() -> None:
    code = ("import sys; import inclavare.sgx.aesm; "
            "bad = [m for m in ('google.protobuf', 'cryptography') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(SRC)}, check=True).stdout
    assert out.strip() == "[]"


# ---- against the fake aesmd


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("aesm-sim") / "state")


@pytest.fixture(scope="module")
def backend(state: str) -> SimAesmBackend:
    return SimAesmBackend(state)


@pytest.fixture
def sockdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="aesm-")  # short: sun_path holds 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake(backend: SimAesmBackend, sockdir: str) -> Iterator[FakeAesm]:
    with FakeAesm(os.path.join(sockdir, "aesm.socket"), backend=backend) as f:
        yield f


def _report(state: str, targetinfo: bytes, data: bytes = b"\x5a" * 64) -> bytes:
    return ReportKey.load(state).make_report(APP, data, targetinfo)


def test_qe_target_info_is_the_sim_qes_and_the_requests_are_intels_sequence(fake: FakeAesm,
                                                                              backend: SimAesmBackend) -> None:
    qs = AesmQuotingService(fake.socket_path, timeout=7)
    assert qs.qe_target_info() == backend.quoting.qe_target_info()
    assert fake.kinds() == ["SelectAttKeyID", "InitQuoteEx", "InitQuoteEx"]
    (_, select), (_, first), (_, second) = fake.requests
    assert select == {"timeout": 7000}
    assert first == {"att_key_id": backend.ecdsa_key_id, "b_pub_key_id": False, "buf_size": 0, "timeout": 7000}
    assert second == {"att_key_id": backend.ecdsa_key_id, "b_pub_key_id": True, "buf_size": 32, "timeout": 7000}


def test_quote_over_a_report_carries_its_body(fake: FakeAesm, state: str) -> None:
    qs = AesmQuotingService(fake.socket_path)
    report = _report(state, qs.qe_target_info())
    quote = qs.get_quote(report)
    parsed = Quote3.parse(quote)
    assert parsed.report_body == Report.parse(report).body
    assert parsed.report_body.reportdata == b"\x5a" * 64
    assert fake.kinds()[-2:] == ["GetQuoteSizeEx", "GetQuoteEx"]
    sent = fake.requests[-1][1]
    assert sent["report"] == report and sent["buf_size"] == len(quote)


def test_quote_before_init_initializes_and_retries(fake: FakeAesm, backend: SimAesmBackend, state: str) -> None:
    report = _report(state, backend.qe_target_info())
    quote = AesmQuotingService(fake.socket_path).get_quote(report)
    assert Quote3.parse(quote).report_body == Report.parse(report).body
    assert fake.kinds() == ["SelectAttKeyID", "GetQuoteSizeEx", "GetQuoteEx", "InitQuoteEx", "InitQuoteEx",
                            "GetQuoteSizeEx", "GetQuoteEx"]


def test_an_epid_default_key_makes_the_client_search_for_the_ecdsa_key(backend: SimAesmBackend,
                                                                       sockdir: str) -> None:
    with FakeAesm(os.path.join(sockdir, "s"), backend=backend, epid_first=True) as fake:
        AesmQuotingService(fake.socket_path).qe_target_info()
        assert fake.kinds()[:3] == ["SelectAttKeyID", "GetSupportedAttKeyIDNum", "GetSupportedAttKeyIDs"]
        assert fake.requests[2][1]["buf_size"] == 2 * aesm.ATT_KEY_ID_SIZE
        assert all(r.get("att_key_id") == backend.ecdsa_key_id for k, r in fake.requests if k == "InitQuoteEx")


def test_no_ecdsa_key_is_an_error(fake: FakeAesm, backend: SimAesmBackend) -> None:
    fake.epid_first = True
    fake.override("GetSupportedAttKeyIDs", att_key_ids=backend.epid_key_id * 2)
    with pytest.raises(AesmError, match="no ECDSA attestation key"):
        AesmQuotingService(fake.socket_path).qe_target_info()


def _sigstruct(attributes: Attributes) -> bytes:
    return SigStruct(enclavehash=hashlib.sha256(b"enclave").digest(), modulus=os.urandom(384), exponent=3,
                     attributes=attributes, attribute_mask=Attributes(0xFFFFFFFFFFFFFFFF, 0)).pack()


def test_launch_token_for_a_sigstruct(fake: FakeAesm, backend: SimAesmBackend) -> None:
    raw = _sigstruct(Attributes(0x6, 0x3))
    sig = SigStruct.parse(raw)
    token = EInitToken.parse(AesmClient(fake.socket_path).launch_token_for(raw))
    assert token.is_valid
    assert (token.mrenclave, token.mrsigner, token.attributes) == (sig.enclavehash, sig.mrsigner, sig.attributes)
    assert token.cpusvnle == backend.quoting.platform.cpusvn
    assert fake.requests == [("GetLaunchToken", {"mr_enclave": sig.enclavehash, "mr_signer": sig.modulus,
                                                 "se_attributes": sig.attributes.pack(), "timeout": 30000})]


def test_a_refused_launch_token_names_the_aesm_code(fake: FakeAesm) -> None:
    raw = _sigstruct(Attributes(int(AttributeFlags.MODE64BIT | AttributeFlags.EINITTOKENKEY), 0x3))
    with pytest.raises(AesmError) as e:
        AesmClient(fake.socket_path).launch_token_for(raw)
    assert e.value.code == 6 and e.value.call == "GetLaunchToken"
    assert str(e.value).startswith("AESM GetLaunchToken failed: AESM_GET_LICENSETOKEN_ERROR (6): ")


# ---- error mapping


@pytest.mark.parametrize(("code", "name"), [(41, "AESM_PLATFORM_LIB_UNAVAILABLE"), (2, "AESM_NO_DEVICE_ERROR"),
                                            (18, "AESM_BUSY"), (999, "unknown AESM error 999")])
def test_aesm_error_codes_are_named(fake: FakeAesm, code: int, name: str) -> None:
    fake.fail("InitQuoteEx", code)
    with pytest.raises(AesmError) as e:
        AesmQuotingService(fake.socket_path).qe_target_info()
    assert e.value.code == code
    msg = str(e.value)
    assert msg.startswith(f"AESM InitQuoteEx failed: {name} ({code}): ") and "\n" not in msg


def test_a_report_for_another_target_is_refused_by_the_qe(fake: FakeAesm, state: str) -> None:
    qs = AesmQuotingService(fake.socket_path)
    qs.qe_target_info()
    report = _report(state, APP.targetinfo())  # made for the app enclave itself, not for the QE
    with pytest.raises(AesmError, match=r"AESM_ERROR_REPORT \(45\)") as e:
        qs.get_quote(report)
    assert e.value.code == 45


def test_a_transient_failure_is_reported_not_retried(fake: FakeAesm) -> None:
    fake.fail("SelectAttKeyID", 18, times=1)
    with pytest.raises(AesmError, match="AESM_BUSY"):
        AesmQuotingService(fake.socket_path).qe_target_info()
    assert len(AesmQuotingService(fake.socket_path).qe_target_info()) == 512


def test_socket_missing(sockdir: str) -> None:
    path = os.path.join(sockdir, "aesm.socket")
    with pytest.raises(AesmError) as e:
        AesmQuotingService(path).qe_target_info()
    assert str(e.value) == f"AESM is not running ({path}: No such file or directory)"


def test_not_a_socket(sockdir: str) -> None:
    path = os.path.join(sockdir, "aesm.socket")
    Path(path).write_bytes(b"")
    with pytest.raises(AesmError, match=r"^AESM is not running \(.*: Connection refused\)$"):
        AesmClient(path).select_att_key_id()


def test_default_socket_path_and_env_override(monkeypatch: pytest.MonkeyPatch, fake: FakeAesm,
                                              backend: SimAesmBackend) -> None:
    monkeypatch.delenv(aesm.AESM_SOCKET_ENV, raising=False)
    assert AesmClient().socket_path == "/var/run/aesmd/aesm.socket"
    monkeypatch.setenv(aesm.AESM_SOCKET_ENV, fake.socket_path)
    from inclavare.enclave.attest import quoting_service

    qs = quoting_service("intelSgx")
    assert isinstance(qs, AesmQuotingService)
    assert qs.qe_target_info() == backend.qe_target_info()


@pytest.mark.parametrize(("mode", "pattern", "cls"), [
    ("close", r"connection closed after 0 of 4 bytes of the reply length", AesmProtocolError),
    ("short-length", r"connection closed after 2 of 4 bytes of the reply length", AesmProtocolError),
    ("truncate", r"connection closed after \d+ of \d+ bytes of the reply \(", AesmProtocolError),
    ("garbage", r"malformed reply \(", AesmProtocolError),
    ("oversize", r"reply claims 4294967280 bytes", AesmProtocolError),
    ("wrong-kind", r"the reply carries GetQuoteEx, not a GetQuoteSizeEx response", AesmProtocolError),
    ("unsupported", r"this aesmd does not support the request \(AESM_UNEXPECTED_ERROR", AesmError),
])
def test_transport_faults(fake: FakeAesm, mode: str, pattern: str, cls: type[AesmError]) -> None:
    qs = AesmQuotingService(fake.socket_path)
    akid = qs.att_key_id()
    fake.misbehave("GetQuoteSizeEx", mode)
    with pytest.raises(cls, match=pattern) as e:
        qs.client.quote_size(akid)
    assert "\n" not in str(e.value) and fake.socket_path in str(e.value)
    assert e.value.call == "GetQuoteSizeEx"


def test_a_silent_aesm_times_out(fake: FakeAesm) -> None:
    fake.misbehave("*", "hang")
    with pytest.raises(AesmError, match=r"^AESM SelectAttKeyID: no reply within 0.2 s \(") as e:
        AesmClient(fake.socket_path, timeout=0.2).select_att_key_id()
    assert not isinstance(e.value, AesmProtocolError)


@pytest.mark.parametrize(("kind", "fields", "pattern"), [
    ("InitQuoteEx", {"target_info": b"t" * 100}, r"the TARGETINFO is 100 bytes, expected 512"),
    ("InitQuoteEx", {"target_info": b"\xff" * 512}, r"malformed TARGETINFO"),
    ("InitQuoteEx", {"pub_key_id_size": 0}, r"public key ID size 0 is not plausible"),
    ("SelectAttKeyID", {"selected_att_key_id": b"k" * 10}, r"the key ID is 10 bytes, expected 256"),
])
def test_unusable_replies_to_init(fake: FakeAesm, kind: str, fields: dict[str, Any], pattern: str) -> None:
    fake.override(kind, **fields)
    with pytest.raises(AesmProtocolError, match=pattern):
        AesmQuotingService(fake.socket_path).qe_target_info()


def test_unusable_replies_to_quote_and_token(fake: FakeAesm, state: str) -> None:
    qs = AesmQuotingService(fake.socket_path)
    report = _report(state, qs.qe_target_info())
    fake.override("GetQuoteSizeEx", quote_size=0)
    with pytest.raises(AesmProtocolError, match="quote size 0 is not plausible"):
        qs.get_quote(report)
    fake.reset()
    fake.override("GetQuoteEx", quote=b"q" * 100)
    with pytest.raises(AesmProtocolError, match=r"the quote is 100 bytes, GetQuoteSizeEx said \d+"):
        qs.get_quote(report)
    with pytest.raises(AesmError, match="the REPORT is 431 bytes, expected 432"):
        qs.get_quote(report[:431])
    fake.override("GetLaunchToken", token=b"\0" * 300)
    with pytest.raises(AesmProtocolError, match="the token is 300 bytes, expected 304"):
        qs.client.launch_token_for(_sigstruct(Attributes(0x4, 0x3)))
    fake.override("GetLaunchToken", token=b"\xff" * 304)
    with pytest.raises(AesmProtocolError, match="malformed EINITTOKEN"):
        qs.client.launch_token_for(_sigstruct(Attributes(0x4, 0x3)))
