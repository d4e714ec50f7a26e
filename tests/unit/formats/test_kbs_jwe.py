"""formats.kbs_jwe: the KBS 0.4.0 resource answer, checked against independent decryptions and tampering."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from joserfc import jwe as joserfc_jwe
from joserfc.jwk import ECKey, RSAKey

from inclavare.formats import kbs_jwe as jwe
from inclavare.formats.kbs import KbsFormatError

SECRET = b"resource: the disk key \x00\xff" * 3


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module", params=["P-256", "P-521"])
def ec_key(request: pytest.FixtureRequest) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1() if request.param == "P-256" else ec.SECP521R1())


# -- independent decryption: pyca primitives and hashlib, written from RFC 7516/7518, not from jwe.py --------

def _hand_concat_kdf(z: bytes) -> bytes:
    alg = b"ECDH-ES+A256KW"
    other = len(alg).to_bytes(4, "big") + alg + b"\0" * 8 + (256).to_bytes(4, "big")
    return hashlib.sha256((1).to_bytes(4, "big") + z + other).digest()  # one round: 256 bits needed


def _hand_open(private_key: object, response: dict[str, str]) -> bytes:
    header = json.loads(_b64d(response["protected"]))
    ek = _b64d(response["encrypted_key"])
    if isinstance(private_key, rsa.RSAPrivateKey):
        assert header == {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
        cek = private_key.decrypt(ek, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    else:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        epk = header["epk"]
        peer = ec.EllipticCurvePublicNumbers(int.from_bytes(_b64d(epk["x"]), "big"),
                                             int.from_bytes(_b64d(epk["y"]), "big"), private_key.curve).public_key()
        cek = aes_key_unwrap(_hand_concat_kdf(private_key.exchange(ec.ECDH(), peer)), ek)
    # Trustee's client: AAD is the header re-serialised (alg, enc, then the rest with maps in key order).
    rest = {k: v for k, v in header.items() if k not in ("alg", "enc")}
    reserialised = json.dumps({"alg": header["alg"], "enc": header["enc"]}, separators=(",", ":"))[:-1]
    if rest:
        reserialised += "," + json.dumps(rest, separators=(",", ":"), sort_keys=True)[1:-1]
    reserialised += "}"
    aad = _b64e(reserialised.encode())
    assert aad == response["protected"], "header does not survive the Trustee client's re-serialisation"
    return AESGCM(cek).decrypt(_b64d(response["iv"]), _b64d(response["ciphertext"]) + _b64d(response["tag"]),
                               aad.encode())


def _compact(response: dict[str, str]) -> str:
    return ".".join(response[k] for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag"))


# -- wire shape and interop ---------------------------------------------------------------------------------

def test_rsa_wire_shape_and_independent_decrypt(rsa_key: rsa.RSAPrivateKey) -> None:
    pub = jwe.tee_pubkey(rsa_key)
    assert pub["kty"] == "RSA" and pub["alg"] == "RSA-OAEP-256" and pub["e"] == "AQAB"
    response = jwe.seal(pub, SECRET)
    assert list(response) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    assert _b64d(response["protected"]) == b'{"alg":"RSA-OAEP-256","enc":"A256GCM"}'
    assert len(_b64d(response["encrypted_key"])) == 256 and len(_b64d(response["iv"])) == 12
    assert len(_b64d(response["tag"])) == 16 and len(_b64d(response["ciphertext"])) == len(SECRET)
    assert all("=" not in v for v in response.values())
    assert _hand_open(rsa_key, response) == SECRET
    registry = joserfc_jwe.JWERegistry(algorithms=["RSA-OAEP-256", "A256GCM"])
    assert joserfc_jwe.decrypt_compact(_compact(response), RSAKey.import_key(rsa_key),
                                       registry=registry).plaintext == SECRET
    assert jwe.open(rsa_key, response) == SECRET


def test_ec_wire_shape_and_independent_decrypt(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pub = jwe.tee_pubkey(ec_key)
    assert pub["kty"] == "EC" and pub["alg"] == "ECDH-ES+A256KW"
    response = jwe.seal(pub, SECRET)
    header = json.loads(_b64d(response["protected"]))
    assert list(header) == ["alg", "enc", "epk"] and list(header["epk"]) == ["crv", "kty", "x", "y"]
    assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
    assert header["epk"]["crv"] == pub["crv"] and header["epk"]["kty"] == "EC"
    assert header["epk"]["x"] != pub["x"]  # an ephemeral key, not the TEE's own
    assert len(_b64d(response["encrypted_key"])) == 40  # A256KW of a 32-byte CEK
    assert _hand_open(ec_key, response) == SECRET
    registry = joserfc_jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "A256GCM"])
    assert joserfc_jwe.decrypt_compact(_compact(response), ECKey.import_key(ec_key),
                                       registry=registry).plaintext == SECRET
    assert jwe.open(ec_key, response) == SECRET


def test_each_seal_is_fresh(rsa_key: rsa.RSAPrivateKey) -> None:
    a, b = (jwe.seal(jwe.tee_pubkey(rsa_key), SECRET) for _ in range(2))
    assert a["iv"] != b["iv"] and a["encrypted_key"] != b["encrypted_key"] and a["ciphertext"] != b["ciphertext"]


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "ECDH-ES+A256KW"])
def test_open_accepts_another_producer(alg: str, rsa_key: rsa.RSAPrivateKey,
                                       ec_key: ec.EllipticCurvePrivateKey) -> None:
    private = rsa_key if alg.startswith("RSA") else ec_key
    jkey = (RSAKey if alg.startswith("RSA") else ECKey).import_key(jwe.tee_pubkey(private))
    token = joserfc_jwe.encrypt_compact({"alg": alg, "enc": "A256GCM"}, SECRET, jkey,
                                        registry=joserfc_jwe.JWERegistry(algorithms=[alg, "A256GCM"]))
    response = dict(zip(jwe.RESPONSE_FIELDS, token.split("."), strict=True))
    assert jwe.open(private, response) == SECRET


def test_private_key_forms(ec_key: ec.EllipticCurvePrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization
    response = jwe.seal(jwe.tee_pubkey(ec_key), b"")
    pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    assert jwe.open(pem, response) == b""
    assert jwe.open(pem.decode(), response) == b""
    assert jwe.open(ECKey.import_key(ec_key).as_dict(private=True), response) == b""
    with pytest.raises(KbsFormatError, match="private key"):
        jwe.open(ECKey.import_key(ec_key).as_dict(private=False), response)
    with pytest.raises(KbsFormatError, match="private key"):
        jwe.open(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", response)
    for bad in ({"kty": "EC", "d": "AQAB"}, {"kty": "RSA", "d": "AQAB", "n": "AQAB", "e": "AQAB"}, 42):
        with pytest.raises(KbsFormatError, match="^jwe private key: "):
            jwe.open(bad, response)
    with pytest.raises(KbsFormatError, match="curve secp384r1 is not supported"):
        jwe.open(ec.generate_private_key(ec.SECP384R1()), response)


# -- tampering and wrong keys ----------------------------------------------------------------------------------

def _flip(text: str) -> str:
    raw = bytearray(_b64d(text))
    raw[len(raw) // 2] ^= 0x01
    return _b64e(bytes(raw))


@pytest.mark.parametrize("field", ["tag", "ciphertext", "iv", "encrypted_key"])
def test_tampered_member_fails(field: str, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    for key in (rsa_key, ec_key):
        response = jwe.seal(jwe.tee_pubkey(key), SECRET)
        response[field] = _flip(response[field])
        with pytest.raises(KbsFormatError, match="does not decrypt"):
            jwe.open(key, response)


def test_tampered_protected_fails(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    response = jwe.seal(jwe.tee_pubkey(rsa_key), SECRET)
    response["protected"] = _b64e(b'{"alg":"RSA-OAEP-256", "enc":"A256GCM"}')  # same meaning, other bytes
    with pytest.raises(KbsFormatError, match="does not decrypt"):
        jwe.open(rsa_key, response)
    response = jwe.seal(jwe.tee_pubkey(ec_key), SECRET)
    header = json.loads(_b64d(response["protected"]))
    other = jwe.tee_pubkey(ec.generate_private_key(ec_key.curve))
    header["epk"]["x"], header["epk"]["y"] = other["x"], other["y"]
    response["protected"] = _b64e(json.dumps(header, separators=(",", ":")).encode())
    with pytest.raises(KbsFormatError, match="does not decrypt"):
        jwe.open(ec_key, response)


def test_wrong_key_fails(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(KbsFormatError, match="does not decrypt"):
        jwe.open(rsa.generate_private_key(65537, 2048), jwe.seal(jwe.tee_pubkey(rsa_key), SECRET))
    with pytest.raises(KbsFormatError, match="does not decrypt"):
        jwe.open(ec.generate_private_key(ec_key.curve), jwe.seal(jwe.tee_pubkey(ec_key), SECRET))
    with pytest.raises(KbsFormatError, match="does not fit the RSA key"):
        jwe.open(rsa_key, jwe.seal(jwe.tee_pubkey(ec_key), SECRET))


# -- malformed TEE keys ------------------------------------------------------------------------------------------

def _bad_keys(rsa_pub: dict[str, str], ec_pub: dict[str, str]) -> list[tuple[object, str]]:
    small_n = rsa.generate_private_key(65537, 1024).public_key().public_numbers().n
    off_curve = dict(ec_pub, y=_b64e((int.from_bytes(_b64d(ec_pub["y"]), "big") ^ 1).to_bytes(32, "big")))
    return [
        ("not a key", "expected a JSON object"),
        (dict(rsa_pub, alg="RSA1_5"), "PKCS#1 v1.5"),
        (dict(rsa_pub, alg="RSA-OAEP"), "SHA-1"),
        (dict(rsa_pub, alg="RS256"), "only RSA-OAEP-256"),
        ({k: v for k, v in rsa_pub.items() if k != "alg"}, "missing member 'alg'"),
        ({k: v for k, v in rsa_pub.items() if k != "n"}, "missing member 'n'"),
        (dict(rsa_pub, n=_b64e(small_n.to_bytes(128, "big"))), "1024-bit RSA modulus"),
        (dict(rsa_pub, e=_b64e(b"\x01\x00\x00")), "not an odd number"),
        (dict(rsa_pub, e="AQAB="), "not base64url"),
        (dict(rsa_pub, n=rsa_pub["n"][:-4] + "+/+/"), "not base64url"),
        (dict(rsa_pub, d="AQAB"), "private key members d"),
        (dict(rsa_pub, kty="oct"), "kty"),
        (dict(ec_pub, alg="ECDH-ES"), "only ECDH-ES\\+A256KW"),
        (dict(ec_pub, crv="P-384"), "P-384"),
        (dict(ec_pub, x=_b64e(b"\x01" * 31)), "31 bytes"),
        (off_curve, "not on P-256"),
    ]


def test_malformed_tee_keys_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    ec_pub = jwe.tee_pubkey(ec.generate_private_key(ec.SECP256R1()))
    for bad, message in _bad_keys(jwe.tee_pubkey(rsa_key), ec_pub):
        with pytest.raises(KbsFormatError, match=message) as info:
            jwe.seal(bad, SECRET)  # type: ignore[arg-type]
        assert "\n" not in str(info.value) and str(info.value).startswith("tee-pubkey")


# -- malformed responses ----------------------------------------------------------------------------------------

def test_malformed_responses_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    good = jwe.seal(jwe.tee_pubkey(rsa_key), SECRET)

    def header(h: dict[str, object]) -> str:
        return _b64e(json.dumps(h, separators=(",", ":")).encode())

    cases: list[tuple[object, str]] = [
        ([good], "expected a JSON object"),
        (dict(good, aad=_b64e(b"x")), "unexpected member"),
        ({k: v for k, v in good.items() if k != "tag"}, "missing member"),
        (dict(good, protected=header({"alg": "RSA-OAEP-256", "enc": "A128GCM"})), "only A256GCM"),
        (dict(good, protected=header({"alg": "RSA-OAEP-256", "enc": "A256GCM", "zip": "DEF"})), "zip"),
        (dict(good, protected=header({"alg": "RSA1_5", "enc": "A256GCM"})), "does not fit"),
        (dict(good, protected=_b64e(b"[1]")), "not a JSON object"),
        (dict(good, protected="A" * 2000), "more than the limit"),
        (dict(good, iv=_b64e(b"\0" * 11)), "iv: 11 bytes"),
        (dict(good, tag=_b64e(b"\0" * 8)), "tag: 8 bytes"),
        (dict(good, iv=_b64e(b"\0" * 16)), "response.iv: 22 characters"),
        (dict(good, encrypted_key=_b64e(b"\0" * 40)), "encrypted_key: 40 bytes"),
        (dict(good, ciphertext="!!!!"), "not base64url"),
        (dict(good, ciphertext=7), "expected a base64url string"),
    ]
    for bad, message in cases:
        with pytest.raises(KbsFormatError, match=message) as info:
            jwe.open(rsa_key, bad)
        assert "\n" not in str(info.value)


def test_plaintext_bounds(rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    pub = jwe.tee_pubkey(rsa_key)
    with pytest.raises(KbsFormatError, match="expected bytes"):
        jwe.seal(pub, "text")  # type: ignore[arg-type]
    monkeypatch.setattr(jwe, "MAX_PLAINTEXT", 16)
    assert jwe.open(rsa_key, jwe.seal(pub, b"x" * 16)) == b"x" * 16
    with pytest.raises(KbsFormatError, match="17 bytes, more than the limit 16"):
        jwe.seal(pub, b"x" * 17)


def test_b64url_decode_is_strict() -> None:
    assert jwe.b64url_decode("AQAB", "f", 10) == b"\x01\x00\x01"
    for bad in ("AQAB=", "AQ AB", "A", "AQ+B", "AR"):  # "AR": stray low bits in the last character
        with pytest.raises(KbsFormatError, match="^f: "):
            jwe.b64url_decode(bad, "f", 10)
