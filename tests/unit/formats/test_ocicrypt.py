"""ocicrypt's formats: the options JSON byte for byte as Go's json.Marshal writes it (checked against what
skopeo 1.9.3 wrote, in tests/unit/services/imagecrypt/data), strict parsing, media types, wrapped-key
annotations and the key provider protocol's JSON."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from inclavare.formats import ocicrypt as oc
from inclavare.formats.ocicrypt import OcicryptError, PrivateOptions, PublicOptions

DATA = Path(__file__).resolve().parents[1] / "services" / "imagecrypt" / "data"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_public_options_as_go_writes_them() -> None:
    pub = PublicOptions(oc.CIPHER_AES256CTR, bytes(range(32)), {})
    assert pub.encode() == ('{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"' + b64(bytes(range(32))) +
                            '","cipheroptions":{}}').encode()
    assert oc.decode_pubopts_annotation(pub.annotation()) == pub


def test_private_options_as_go_writes_them() -> None:
    priv = PrivateOptions(b"\x01" * 32, "sha256:" + "ab" * 32, {"nonce": b"\x02" * 16, "a": b""})
    # maps sorted by key, []byte base64, struct fields in declaration order
    assert priv.encode() == ('{"symkey":"' + b64(b"\x01" * 32) + '","digest":"sha256:' + "ab" * 32 +
                             '","cipheroptions":{"a":"","nonce":"' + b64(b"\x02" * 16) + '"}}').encode()
    assert oc.decode_private(priv.encode()) == priv
    assert "symkey=<32 bytes>" in repr(priv) and b64(b"\x01" * 32) not in repr(priv)


def test_skopeo_pubopts_round_trip_byte_for_byte() -> None:
    manifest = json.loads((DATA / "skopeo-jwe-rsa" / "blobs" / "sha256" /
                           "647253520171950f77015a7135776848a7a16a8009c0cba80ab624a5adf9e7ee").read_bytes())
    for layer in manifest["layers"]:
        value = layer["annotations"][oc.ANNOTATION_PUBOPTS]
        pub = oc.decode_pubopts_annotation(value)
        assert pub.cipher == oc.CIPHER_AES256CTR and len(pub.hmac) == 32
        assert pub.annotation() == value


def test_go_string_escapes() -> None:
    assert oc.go_json_string('a<b>&"\\\n\x01\u2028é') == '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\u0001\\u2028é"'


@pytest.mark.parametrize(("doc", "message"), [
    (b"[]", "expected a JSON object"),
    (b"{", "not JSON"),
    (b'{"cipher":"AES_256_CTR_HMAC_SHA256","cipher":"x","hmac":null}', "duplicate key"),
    (b'{"hmac":"AAAA"}', "pubopts.cipher: missing"),
    (b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"AA*A"}', "pubopts.hmac: not standard base64"),
    (b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":1}', "pubopts.hmac: expected base64"),
    (b'{"cipher":"AES_256_CTR_HMAC_SHA256","extra":1}', "unknown member 'extra'"),
    (b'{"cipher":"AES_256_CTR_HMAC_SHA256","cipheroptions":[]}', "pubopts.cipheroptions: expected an object"),
    (b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"AAAA","cipheroptions":{"hmac":"AAAA"}}', "hmac given twice"),
])
def test_public_options_refusals(doc: bytes, message: str) -> None:
    with pytest.raises(OcicryptError, match=message):
        oc.decode_public(doc)


def test_old_hmac_place_is_read() -> None:
    pub = oc.decode_public(b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":null,"cipheroptions":{"hmac":"AAAA"}}')
    assert pub.hmac == b"\x00\x00\x00" and pub.cipheroptions == {}


@pytest.mark.parametrize(("doc", "message"), [
    ({"digest": "sha256:" + "00" * 32}, "symkey: missing"),
    ({"symkey": "AAAA", "digest": "sha256:00"}, "digest: 'sha256:00' is not"),
    ({"symkey": "AAAA", "digest": "SHA256:" + "00" * 32}, "is not a sha256"),
    ({"symkey": "AAAA", "digest": "sha256:" + "00" * 32, "previouslayersdigest": "sha256:" + "11" * 32},
     "previouslayersdigest: set, and not supported"),
    ({"symkey": "AAAA", "digest": "sha256:" + "00" * 32, "somethingnew": 1}, "unknown member 'somethingnew'"),
])
def test_private_options_refusals(doc: dict[str, object], message: str) -> None:
    with pytest.raises(OcicryptError, match=message):
        oc.decode_private(json.dumps(doc).encode())


def test_private_options_accepts_an_empty_previouslayersdigest() -> None:
    doc = {"symkey": "AAAA", "digest": "sha512:" + "00" * 64, "cipheroptions": None, "previouslayersdigest": ""}
    assert oc.decode_private(json.dumps(doc).encode()).digest == "sha512:" + "00" * 64


def test_pubopts_annotation_missing_or_bad() -> None:
    with pytest.raises(OcicryptError, match="missing; an encrypted layer needs its public options"):
        oc.decode_pubopts_annotation(None)
    with pytest.raises(OcicryptError, match="not standard base64"):
        oc.decode_pubopts_annotation("!!")


def test_media_types() -> None:
    assert oc.encrypted_media_type("application/vnd.oci.image.layer.v1.tar+gzip") == \
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    assert oc.plain_media_type("application/vnd.oci.image.layer.v1.tar+zstd+encrypted") == \
        "application/vnd.oci.image.layer.v1.tar+zstd"
    assert oc.compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted") == "gzip"
    assert oc.compression("application/vnd.oci.image.layer.v1.tar") == ""
    with pytest.raises(OcicryptError, match="already encrypted"):
        oc.encrypted_media_type("application/vnd.oci.image.layer.v1.tar+encrypted")
    with pytest.raises(OcicryptError, match="not a layer media type ocicrypt encrypts"):
        oc.encrypted_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
    with pytest.raises(OcicryptError, match="not an encrypted layer media type"):
        oc.plain_media_type("application/vnd.oci.image.layer.v1.tar")


def test_wrapped_annotations() -> None:
    assert oc.join_wrapped([b"a", b"bc"]) == "YQ==,YmM="
    assert oc.split_wrapped("YQ==,YmM=", "w") == [b"a", b"bc"]
    with pytest.raises(OcicryptError, match=r"w\[1\]: not standard base64"):
        oc.split_wrapped("YQ==,?", "w")
    with pytest.raises(OcicryptError, match="w: empty"):
        oc.split_wrapped("", "w")
    ann = {oc.ANNOTATION_JWE: "x", oc.ANNOTATION_PUBOPTS: "y", "org.example": "z",
           oc.provider_annotation("verdictd"): "w"}
    assert set(oc.wrapped_key_annotations(ann)) == {oc.ANNOTATION_JWE,
                                                    "org.opencontainers.image.enc.keys.provider.verdictd"}
    assert oc.without_encryption_annotations(ann) == {"org.example": "z"}
    with pytest.raises(OcicryptError, match="key provider name"):
        oc.provider_annotation("a b")


def test_keyprovider_inputs_as_ocicrypt_marshals_them() -> None:
    wrap = oc.keyprovider_wrap_input({"verdictd": [b"layers/k1"], "pubkeys": []}, b"opts", {})
    assert wrap == ('{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"pubkeys":[],"verdictd":["' +
                    b64(b"layers/k1") + '"]},"DecryptConfig":{"Parameters":{}}},"optsdata":"' + b64(b"opts") +
                    '"},"keyunwrapparams":{"dc":null,"annotation":null}}').encode()
    unwrap = oc.keyprovider_unwrap_input({"verdictd": [b"tok"]}, b"ann")
    assert unwrap == ('{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},"keyunwrapparams":{"dc":'
                      '{"Parameters":{"verdictd":["' + b64(b"tok") + '"]}},"annotation":"' + b64(b"ann") +
                      '"}}').encode()
    # verdictd's server reads both as ocicrypt's would be read
    from inclavare.services.verdictd.keyprovider import decode_input

    req = decode_input(wrap)
    assert req.parameters["verdictd"] == [b"layers/k1"] and req.optsdata == b"opts"  # type: ignore[union-attr]


def test_keyprovider_output() -> None:
    assert oc.keyprovider_output(b'{"keywrapresults":{"annotation":"YQ=="}}', "keywrap") == b"a"
    assert oc.keyprovider_output(b'{"keyunwrapresults":{"optsdata":[97,98]}}', "keyunwrap") == b"ab"
    with pytest.raises(OcicryptError, match="keyunwrapresults: missing"):
        oc.keyprovider_output(b'{"keywrapresults":{"annotation":"YQ=="}}', "keyunwrap")
    with pytest.raises(OcicryptError, match="optsdata: empty"):
        oc.keyprovider_output(b'{"keyunwrapresults":{"optsdata":null}}', "keyunwrap")
    with pytest.raises(OcicryptError, match="integers 0..255"):
        oc.keyprovider_output(b'{"keyunwrapresults":{"optsdata":[256]}}', "keyunwrap")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                  max_size=4), max_leaves=12)
_members = st.fixed_dictionaries({}, optional={k: _json | st.just("AAAA") | st.just("sha256:" + "0" * 64)
                                               for k in ("cipher", "hmac", "cipheroptions", "symkey", "digest",
                                                         "previouslayersdigest")})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _members.map(lambda d: json.dumps(d).encode()),
                 _json.map(lambda d: json.dumps(d).encode())))
def test_parsers_raise_only_their_error(data: bytes) -> None:
    for parse in (oc.decode_public, oc.decode_private, lambda d: oc.keyprovider_output(d, "keyunwrap"),
                  lambda d: oc.split_wrapped(d.decode("latin-1"), "w")):
        try:
            parse(data)
        except OcicryptError:
            pass
