"""The jwe key wrapper: the layout go-jose writes (flattened for one recipient, general for several), round
trips for RSA and EC keys, skopeo's own JWEs opened (known answers in data/), joserfc reading ours, and the
refusals: a wrong key, a changed protected header or ciphertext, zip/crit, weak RSA, unsupported enc/alg."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inclavare.formats import ocicrypt as oc
from inclavare.formats import ocicrypt_jwe as jwe
from inclavare.formats.ocicrypt import OcicryptError

DATA = Path(__file__).resolve().parents[1] / "services" / "imagecrypt" / "data"  # skopeo outputs, shared
OPTS = b'{"symkey":"AAAA","digest":"sha256:' + b"00" * 32 + b'","cipheroptions":{}}'


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {c.name: ec.generate_private_key(c) for c in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1())}


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _protected(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(_unb64(doc["protected"]))  # type: ignore[no-any-return]


def test_one_rsa_recipient_is_flattened_with_everything_protected(rsa_key: rsa.RSAPrivateKey) -> None:
    out = jwe.wrap(OPTS, [rsa_key.public_key()])
    doc = json.loads(out)
    assert list(doc) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    assert _unb64(doc["protected"]) == b'{"alg":"RSA-OAEP","enc":"A256GCM"}'  # what go-jose writes
    assert jwe.unwrap(out, [rsa_key]) == OPTS


@pytest.mark.parametrize("curve", ["secp256r1", "secp384r1", "secp521r1"])
def test_ec_recipient(ec_keys: dict[str, ec.EllipticCurvePrivateKey], curve: str) -> None:
    key = ec_keys[curve]
    doc = json.loads(jwe.wrap(OPTS, [key.public_key()]))
    header = _protected(doc)
    assert list(header) == ["alg", "enc", "epk"] and header["alg"] == "ECDH-ES+A256KW"
    assert list(header["epk"]) == ["kty", "crv", "x", "y"]
    assert jwe.unwrap(json.dumps(doc).encode(), [key]) == OPTS


def test_several_recipients_use_the_general_form(rsa_key: rsa.RSAPrivateKey,
                                                 ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    p256 = ec_keys["secp256r1"]
    out = jwe.wrap(OPTS, [rsa_key.public_key(), p256.public_key()])
    doc = json.loads(out)
    assert list(doc) == ["protected", "recipients", "encrypted_key", "iv", "ciphertext", "tag"]
    assert doc["encrypted_key"] == doc["recipients"][0]["encrypted_key"]  # go-jose's copy
    assert _protected(doc) == {"enc": "A256GCM"}
    assert [r["header"]["alg"] for r in doc["recipients"]] == ["RSA-OAEP", "ECDH-ES+A256KW"]
    assert jwe.unwrap(out, [p256]) == OPTS and jwe.unwrap(out, [rsa_key]) == OPTS


def test_joserfc_reads_ours(rsa_key: rsa.RSAPrivateKey) -> None:
    from joserfc import jwe as jjwe
    from joserfc.jwk import RSAKey

    doc = json.loads(jwe.wrap(OPTS, [rsa_key.public_key()]))
    got = jjwe.decrypt_json(doc, RSAKey.import_key(rsa_key), algorithms=["RSA-OAEP", "A256GCM"])
    assert got.plaintext == OPTS


@pytest.mark.parametrize(("layout", "keys"), [("skopeo-jwe-rsa", ["rsa"]), ("skopeo-jwe-rsa-ec", ["rsa", "ec"])])
def test_skopeo_wrapped_keys_open(layout: str, keys: list[str]) -> None:
    index = json.loads((DATA / layout / "index.json").read_text())
    manifest = json.loads((DATA / layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    for layer in manifest["layers"]:
        (blob,) = oc.split_wrapped(layer["annotations"][oc.ANNOTATION_JWE], "jwe")
        doc = json.loads(blob)
        assert ("recipients" in doc) == (len(keys) > 1)
        for name in keys:
            key = jwe.load_private_key((DATA / f"{name}-key.pem").read_bytes())
            priv = oc.decode_private(jwe.unwrap(blob, [key]))
            assert len(priv.symkey) == 32 and len(priv.cipheroptions["nonce"]) == 16
            assert priv.encode() == jwe.unwrap(blob, [key])  # Go's marshalling, byte for byte


def test_wrong_key_is_refused(rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    out = jwe.wrap(OPTS, [rsa_key.public_key(), ec_keys["secp256r1"].public_key()])
    other_rsa = rsa.generate_private_key(65537, 2048)
    with pytest.raises(OcicryptError, match="none of the 2 private key"):
        jwe.unwrap(out, [other_rsa, ec_keys["secp384r1"]])
    with pytest.raises(OcicryptError, match="no private key given"):
        jwe.unwrap(out, [])


def _edit(out: bytes, **changes: Any) -> bytes:
    doc = json.loads(out)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_tampering_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    out = jwe.wrap(OPTS, [rsa_key.public_key()])
    doc = json.loads(out)
    # the same header, written differently: the AAD is the received string, so it no longer authenticates
    respaced = base64.urlsafe_b64encode(b'{"alg": "RSA-OAEP", "enc": "A256GCM"}').rstrip(b"=").decode()
    with pytest.raises(OcicryptError, match="does not authenticate"):
        jwe.unwrap(_edit(out, protected=respaced), [rsa_key])
    ct = _unb64(doc["ciphertext"])
    flipped = base64.urlsafe_b64encode(bytes([ct[0] ^ 1]) + ct[1:]).rstrip(b"=").decode()
    with pytest.raises(OcicryptError, match="does not authenticate"):
        jwe.unwrap(_edit(out, ciphertext=flipped), [rsa_key])
    with pytest.raises(OcicryptError, match="does not authenticate"):
        jwe.unwrap(_edit(out, aad="eA"), [rsa_key])


@pytest.mark.parametrize(("header", "message"), [
    ({"alg": "RSA-OAEP", "enc": "A128GCM"}, "enc 'A128GCM' is not supported"),
    ({"alg": "RSA1_5", "enc": "A256GCM"}, "alg: 'RSA1_5' is not supported"),
    ({"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF"}, "header 'zip' is not supported"),
    ({"alg": "RSA-OAEP", "enc": "A256GCM", "crit": ["x"]}, "header 'crit' is not supported"),
])
def test_unsupported_headers(rsa_key: rsa.RSAPrivateKey, header: dict[str, Any], message: str) -> None:
    out = jwe.wrap(OPTS, [rsa_key.public_key()])
    protected = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(OcicryptError, match=message):
        jwe.unwrap(_edit(out, protected=protected), [rsa_key])


def test_header_member_given_twice(rsa_key: rsa.RSAPrivateKey) -> None:
    out = jwe.wrap(OPTS, [rsa_key.public_key()])
    with pytest.raises(OcicryptError, match="alg: given in more than one header"):
        jwe.unwrap(_edit(out, header={"alg": "RSA-OAEP"}), [rsa_key])
    general = jwe.wrap(OPTS, [rsa_key.public_key(), rsa_key.public_key()])
    with pytest.raises(OcicryptError, match="both general"):
        jwe.unwrap(_edit(general, encrypted_key="AAAA"), [rsa_key])


def test_malformed_documents(rsa_key: rsa.RSAPrivateKey) -> None:
    for bad, message in ((b"[]", "expected a JSON object"), (b'{"protected":""}', "protected: missing"),
                         (b'{"protected":"e30","iv":"!"}', "iv: not base64url"),
                         (b'{"protected":"e30","other":1}', "unknown member 'other'")):
        with pytest.raises(OcicryptError, match=message):
            jwe.unwrap(bad, [rsa_key])


def test_key_loading(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert jwe.load_public_key(pem).public_numbers() == rsa_key.public_key().public_numbers()  # type: ignore[union-attr]
    assert jwe.load_public_key(der).public_numbers() == rsa_key.public_key().public_numbers()  # type: ignore[union-attr]
    from joserfc.jwk import RSAKey

    jwk = json.dumps(RSAKey.import_key(rsa_key).as_dict(private=False)).encode()
    assert jwe.load_public_key(jwk).public_numbers() == rsa_key.public_key().public_numbers()  # type: ignore[union-attr]
    sec1 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    assert isinstance(jwe.load_private_key(sec1), ec.EllipticCurvePrivateKey)  # SEC1 too, unlike skopeo
    encrypted = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pw"))
    assert isinstance(jwe.load_private_key(encrypted, password=b"pw"), rsa.RSAPrivateKey)
    with pytest.raises(OcicryptError, match="private key"):
        jwe.load_private_key(encrypted)
    with pytest.raises(OcicryptError, match="1024-bit RSA key"):
        jwe.load_public_key(rsa.generate_private_key(65537, 1024).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(OcicryptError, match="curve secp256k1"):
        jwe.load_public_key(ec.generate_private_key(ec.SECP256K1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(OcicryptError, match="not a PEM or DER public key"):
        jwe.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(OcicryptError, match="kty 'oct'"):
        jwe.load_public_key(b'{"kty":"oct","k":"AAAA"}')


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_B64 = st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())


def _b64n(n: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=n, max_size=n).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())


_HEADER = st.fixed_dictionaries({}, optional={
    "alg": st.sampled_from(["RSA-OAEP", "RSA-OAEP-256", "ECDH-ES+A256KW", "dir", 3]),
    "enc": st.sampled_from(["A256GCM", "A128GCM", None]),
    "epk": st.fixed_dictionaries({}, optional={"kty": st.sampled_from(["EC", "RSA"]),
                                               "crv": st.sampled_from(["P-256", "P-384", "P-521", "X"]),
                                               "x": _B64, "y": _B64}),
    "apu": _B64 | st.integers(), "zip": st.just("DEF")})
_DOC = st.fixed_dictionaries({"protected": _HEADER.map(lambda h: base64.urlsafe_b64encode(json.dumps(h).encode())
                                                       .rstrip(b"=").decode())},
                             optional={"encrypted_key": _B64, "iv": _b64n(12) | _B64, "ciphertext": _B64,
                                       "tag": _b64n(16) | _B64,
                                       "aad": _B64, "header": _HEADER, "unprotected": _HEADER,
                                       "recipients": st.lists(st.fixed_dictionaries(
                                           {}, optional={"header": _HEADER, "encrypted_key": _B64}), max_size=3)})


@settings(max_examples=200, deadline=None)
@given(_DOC)
def test_unwrap_raises_only_its_error(doc: dict[str, Any]) -> None:
    keys = [_FUZZ_KEYS[0], _FUZZ_KEYS[1]]
    try:
        jwe.unwrap(json.dumps(doc).encode(), keys)  # type: ignore[arg-type]
    except OcicryptError:
        pass


_FUZZ_KEYS = (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1()))


def test_rsa_key_check_can_be_skipped_for_a_key_from_the_kbs() -> None:
    """check_rsa=False loads the same key (used for keys the attested KBS session delivered); garbage is still
    refused."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fast = jwe.load_private_key(pem, check_rsa=False)
    assert fast.private_numbers() == jwe.load_private_key(pem).private_numbers()  # type: ignore[union-attr]
    with pytest.raises(OcicryptError, match="not a PEM or DER private key"):
        jwe.load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", check_rsa=False)
