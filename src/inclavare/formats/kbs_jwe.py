"""The KBS 0.4.0 resource answer: a JWE that only the attested TEE's key can open.

Wire shape (Trustee 0.4.0, ``kbs_types::Response`` as the kbs crate and guest-components' kbs_protocol use it):
a JSON object with exactly ``protected``, ``encrypted_key``, ``iv``, ``ciphertext`` and ``tag``, each base64url
without padding (RFC 7516 flattened JSON without a per-recipient ``header``; Trustee never sends ``aad``).
``protected`` encodes ``{"alg":..,"enc":"A256GCM"}`` and, for ECDH-ES, ``"epk":{"crv","kty","x","y"}``; the
content is AES-256-GCM with ``ASCII(protected)`` as its additional data and a 12-byte IV.

The TEE key is the ``tee-pubkey`` the client put into its attestation's runtime data: ``{"kty":"RSA","alg":
"RSA-OAEP-256","n","e"}`` or ``{"kty":"EC","crv":"P-256"|"P-521","alg":"ECDH-ES+A256KW","x","y"}`` (what
guest-components sends; P-521 keys are accepted by Trustee since v0.16 and offered by guest-components since
v0.19). ``RSA1_5`` is refused although Trustee still accepts it with a warning: PKCS#1 v1.5 key transport
invites padding-oracle attacks and no 0.4.0 client sends it. ``RSA-OAEP`` (SHA-1) and every other algorithm
are refused too.

Why the protected header is written here and not by joserfc: the Trustee client does not use the received
``protected`` string as the AAD; it decodes it into a struct and serialises it again (``alg``, ``enc``, then the
other members, maps in serde_json's key order, which is sorted unless ``preserve_order`` is enabled). Only the
header Trustee's own server emits -- compact, ``alg``, ``enc``, ``epk`` with ``crv``, ``kty``, ``x``, ``y`` --
survives that round trip in every build, while joserfc writes the ``epk`` members as ``crv``, ``x``, ``y``,
``kty``. So :func:`seal` composes pyca/cryptography's primitives (OAEP, ECDH, Concat KDF, AES key wrap,
AES-GCM) under a fixed header. :func:`open` (the client side) decrypts through joserfc's compact path, whose
AAD is the received ``protected`` string byte for byte (RFC 7516; joserfc's JSON path would re-serialise the
header and so accept a rewritten one). The tests check seal and open against each other, against joserfc, and
against a hand-written decryption that also re-serialises the header as the Trustee client does.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import TYPE_CHECKING, Any

from inclavare.formats.kbs import KbsFormatError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

ALG_RSA = "RSA-OAEP-256"
ALG_ECDH = "ECDH-ES+A256KW"
ENC = "A256GCM"
RESPONSE_FIELDS = ("protected", "encrypted_key", "iv", "ciphertext", "tag")

MAX_PLAINTEXT = 32 * 1024 * 1024  # a KBS resource (key, certificate, config); far above any real one
MAX_PROTECTED = 1024  # characters of the encoded protected header (a P-521 epk header is ~330)
RSA_MIN_BITS = 2048  # guest-components generates 2048-bit keys; anything smaller is refused as weak
RSA_MAX_BITS = 8192  # bounds the work one request can cause
_CURVES = {"P-256": 32, "P-521": 66}  # curve -> coordinate length in bytes
_CURVE_NAMES = {"secp256r1": "P-256", "secp521r1": "P-521"}  # pyca's names -> JOSE's
_IV_LEN = 12
_TAG_LEN = 16
_KEY_BYTES = 32  # A256GCM content key, A256KW wrapping key
_WEAK_ALGS = {"RSA1_5": "PKCS#1 v1.5 key transport is refused (padding oracles)",
              "RSA-OAEP": "RSA-OAEP with SHA-1 is refused; use RSA-OAEP-256"}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2), as every JOSE member here is written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, where: str, limit: int) -> bytes:
    """Strict base64url without padding: only the URL-safe alphabet, canonical trailing bits, at most
    ``limit`` characters. Python's decoder alone would skip stray characters; a wire field must not."""
    if not isinstance(text, str):
        raise KbsFormatError(f"{where}: expected a base64url string, got {type(text).__name__}")
    if len(text) > limit:
        raise KbsFormatError(f"{where}: {len(text)} characters, more than the limit {limit}")
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise KbsFormatError(f"{where}: not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise KbsFormatError(f"{where}: not base64url without padding ({exc})") from None
    if b64url_encode(data) != text:
        raise KbsFormatError(f"{where}: non-canonical base64url (stray bits in the last character)")
    return data


def _b64_limit(n_bytes: int) -> int:
    return (n_bytes * 4 + 2) // 3


def _member(jwk: dict[str, Any], name: str, where: str) -> Any:
    if name not in jwk:
        raise KbsFormatError(f"{where}: missing member {name!r}")
    return jwk[name]


def parse_tee_pubkey(jwk: object, where: str = "tee-pubkey") -> RSAPublicKey | EllipticCurvePublicKey:
    """Check a Trustee ``tee-pubkey`` JWK and return it as a pyca/cryptography public key.

    Refuses, with one line naming the member: a non-object, an unknown ``kty``, a weak or unknown ``alg``, an
    RSA modulus outside 2048..8192 bits or an even/too small exponent, an unknown curve, coordinates of the
    wrong length, a point not on the curve, and a JWK carrying private members (``d``...): a TEE that sends its
    private key in the clear has no secret left to protect the answer with.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if not isinstance(jwk, dict):
        raise KbsFormatError(f"{where}: expected a JSON object (a JWK), got {type(jwk).__name__}")
    private = sorted(k for k in ("d", "p", "q", "dp", "dq", "qi", "oth") if k in jwk)
    if private:
        raise KbsFormatError(f"{where}: carries private key members {', '.join(private)}; send the public key only")
    kty = _member(jwk, "kty", where)
    alg = _member(jwk, "alg", where)
    if not isinstance(alg, str):
        raise KbsFormatError(f"{where}: alg must be a string")
    if kty == "RSA":
        if alg != ALG_RSA:
            why = _WEAK_ALGS.get(alg, f"only {ALG_RSA} is accepted for an RSA key")
            raise KbsFormatError(f"{where}: alg {alg[:40]!r}: {why}")
        n_bytes = b64url_decode(_member(jwk, "n", where), f"{where}.n", _b64_limit(RSA_MAX_BITS // 8 + 1))
        e_bytes = b64url_decode(_member(jwk, "e", where), f"{where}.e", 12)
        n = int.from_bytes(n_bytes, "big")
        e = int.from_bytes(e_bytes, "big")
        bits = n.bit_length()
        if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
            raise KbsFormatError(f"{where}.n: {bits}-bit RSA modulus, outside {RSA_MIN_BITS}..{RSA_MAX_BITS} bits")
        if e < 3 or e % 2 == 0:
            raise KbsFormatError(f"{where}.e: RSA exponent {e} is not an odd number >= 3")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise KbsFormatError(f"{where}: not a valid RSA public key ({exc})") from None
    if kty == "EC":
        crv = _member(jwk, "crv", where)
        if crv not in _CURVES:
            raise KbsFormatError(f"{where}.crv: {str(crv)[:40]!r} is not supported (P-256, P-521)")
        if alg != ALG_ECDH:
            raise KbsFormatError(f"{where}: alg {alg[:40]!r}: only {ALG_ECDH} is accepted for an EC key")
        size = _CURVES[crv]
        coords = []
        for name in ("x", "y"):
            raw = b64url_decode(_member(jwk, name, where), f"{where}.{name}", _b64_limit(size))
            if len(raw) != size:
                raise KbsFormatError(f"{where}.{name}: {len(raw)} bytes, {crv} needs {size}")
            coords.append(int.from_bytes(raw, "big"))
        curve: ec.EllipticCurve = ec.SECP256R1() if crv == "P-256" else ec.SECP521R1()
        try:
            return ec.EllipticCurvePublicNumbers(coords[0], coords[1], curve).public_key()
        except ValueError:
            raise KbsFormatError(f"{where}: the point (x, y) is not on {crv}") from None
    raise KbsFormatError(f"{where}.kty: {str(kty)[:40]!r} is not supported (RSA, EC)")


def _concat_kdf(z: bytes) -> bytes:
    """RFC 7518 section 4.6.2: the A256KW key from the ECDH secret; AlgorithmID is the ``alg`` value, PartyU/V
    info empty (no ``apu``/``apv``), SuppPubInfo the key length in bits."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

    alg = ALG_ECDH.encode("ascii")
    other = (len(alg).to_bytes(4, "big") + alg + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
             + (_KEY_BYTES * 8).to_bytes(4, "big"))
    return ConcatKDFHash(hashes.SHA256(), _KEY_BYTES, other).derive(z)


def _protected(header: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii"))


def seal(tee_pubkey: dict[str, Any], plaintext: bytes) -> dict[str, str]:
    """Encrypt ``plaintext`` to the TEE's key as Trustee's resource ``Response`` JSON (see the module doc)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise KbsFormatError(f"jwe plaintext: expected bytes, got {type(plaintext).__name__}")
    if len(plaintext) > MAX_PLAINTEXT:
        raise KbsFormatError(f"jwe plaintext: {len(plaintext)} bytes, more than the limit {MAX_PLAINTEXT}")
    key = parse_tee_pubkey(tee_pubkey)
    cek = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
    header: dict[str, Any]
    if isinstance(key, rsa.RSAPublicKey):
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        encrypted_key = key.encrypt(cek, oaep)
        header = {"alg": ALG_RSA, "enc": ENC}
    else:
        ephemeral = ec.generate_private_key(key.curve)
        z = ephemeral.exchange(ec.ECDH(), key)
        encrypted_key = aes_key_wrap(_concat_kdf(z), cek)
        numbers = ephemeral.public_key().public_numbers()
        crv = str(tee_pubkey["crv"])
        size = _CURVES[crv]
        # Member order is Trustee's (and sorted): the client re-serialises this header to get the AAD.
        header = {"alg": ALG_ECDH, "enc": ENC, "epk": {
            "crv": crv, "kty": "EC",
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big"))}}
    protected = _protected(header)
    iv = os.urandom(_IV_LEN)
    sealed = AESGCM(cek).encrypt(iv, bytes(plaintext), protected.encode("ascii"))
    return {"protected": protected, "encrypted_key": b64url_encode(encrypted_key), "iv": b64url_encode(iv),
            "ciphertext": b64url_encode(sealed[:-_TAG_LEN]), "tag": b64url_encode(sealed[-_TAG_LEN:])}


def _joserfc_private_key(private_key: object) -> Any:
    """Accept a pyca/cryptography private key, its PEM, or a private JWK, as joserfc's RSAKey/ECKey."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    key: Any = private_key
    try:
        if isinstance(key, str):
            key = key.encode("ascii")
        if isinstance(key, (bytes, bytearray)):
            key = load_pem_private_key(bytes(key), password=None)
        if isinstance(key, dict):
            kty = key.get("kty")
            if kty not in ("RSA", "EC") or "d" not in key:
                raise KbsFormatError("jwe private key: expected a private RSA or EC JWK")
            key = (RSAKey if kty == "RSA" else ECKey).import_key(key).private_key
    except (ValueError, TypeError, KeyError, UnicodeEncodeError, JoseError) as exc:
        raise KbsFormatError(f"jwe private key: cannot be loaded ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVE_NAMES:
            raise KbsFormatError(f"jwe private key: curve {key.curve.name} is not supported (P-256, P-521)")
        return ECKey.import_key(key)
    raise KbsFormatError(f"jwe private key: expected an RSA or EC private key, got {type(key).__name__}")


def _parse_header(response: dict[str, Any], kty: str) -> dict[str, Any]:
    raw = b64url_decode(response["protected"], "jwe response.protected", MAX_PROTECTED)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise KbsFormatError("jwe response.protected: not a JSON object") from None
    if not isinstance(header, dict):
        raise KbsFormatError("jwe response.protected: not a JSON object")
    alg, enc = header.get("alg"), header.get("enc")
    if enc != ENC:
        raise KbsFormatError(f"jwe response.protected.enc: {str(enc)[:40]!r}, only {ENC} is accepted")
    expected = {"RSA": (ALG_RSA, {"alg", "enc"}), "EC": (ALG_ECDH, {"alg", "enc", "epk"})}[kty]
    if alg != expected[0]:
        raise KbsFormatError(f"jwe response.protected.alg: {str(alg)[:40]!r} does not fit the {kty} key "
                            f"(expected {expected[0]})")
    extra = sorted(set(header) - expected[1])
    missing = sorted(expected[1] - set(header))
    if extra or missing:
        what = f"unexpected member(s) {', '.join(extra)}" if extra else f"missing {', '.join(missing)}"
        raise KbsFormatError(f"jwe response.protected: {what}")
    return header


def open(private_key: object, response: object) -> bytes:  # shadows the builtin: callers write kbs_jwe.open
    """Decrypt a resource ``Response`` with the TEE's private key (the client side of :func:`seal`).

    The response must have exactly Trustee's five members, the header must name the algorithm that fits the
    key and nothing else (no ``zip``, no ``crit``), and the sizes must be the ones A256GCM and the key imply;
    any failure -- including a wrong key or a tampered member -- is one :class:`KbsFormatError` line.
    """
    from joserfc import jwe
    from joserfc.errors import JoseError

    if not isinstance(response, dict):
        raise KbsFormatError(f"jwe response: expected a JSON object, got {type(response).__name__}")
    extra = sorted(str(k)[:40] for k in response if k not in RESPONSE_FIELDS)
    if extra:
        raise KbsFormatError(f"jwe response: unexpected member(s) {', '.join(extra)} (KBS 0.4.0 sends none)")
    missing = [k for k in RESPONSE_FIELDS if k not in response]
    if missing:
        raise KbsFormatError(f"jwe response: missing member(s) {', '.join(missing)}")
    key = _joserfc_private_key(private_key)
    kty = key.key_type
    header = _parse_header(response, kty)
    if kty == "EC":
        epk = header["epk"]
        own_crv = _CURVE_NAMES[key.private_key.curve.name]
        if not isinstance(epk, dict) or epk.get("kty") != "EC" or epk.get("crv") != own_crv:
            raise KbsFormatError(f"jwe response.protected.epk: not an EC key on the private key's curve {own_crv}")
        parse_tee_pubkey({**epk, "alg": ALG_ECDH}, "jwe response.protected.epk")
        key_len = 40  # A256KW output: the 32-byte CEK plus the 8-byte integrity block
    else:
        key_len = (key.private_key.key_size + 7) // 8
    sizes = {"encrypted_key": key_len, "iv": _IV_LEN, "tag": _TAG_LEN}
    for name, size in sizes.items():
        value = b64url_decode(response[name], f"jwe response.{name}", _b64_limit(size))
        if len(value) != size:
            raise KbsFormatError(f"jwe response.{name}: {len(value)} bytes, expected {size}")
    b64url_decode(response["ciphertext"], "jwe response.ciphertext", _b64_limit(MAX_PLAINTEXT))
    registry = jwe.JWERegistry(algorithms=[header["alg"], ENC])
    compact = ".".join(response[name] for name in RESPONSE_FIELDS)  # AAD: the protected string as received
    try:
        result = jwe.decrypt_compact(compact, key, registry=registry)
    except (JoseError, ValueError) as exc:
        raise KbsFormatError(f"jwe response: does not decrypt with this key (tampered, or another key's answer: "
                            f"{type(exc).__name__})") from None
    assert result.plaintext is not None
    return bytes(result.plaintext)


def tee_pubkey(private_key: object) -> dict[str, str]:
    """The ``tee-pubkey`` JWK a Trustee client sends for ``private_key``, in kbs_types' member names."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = _joserfc_private_key(private_key)
    pub = key.private_key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "alg": ALG_RSA, "n": b64url_encode(nums.n.to_bytes((nums.n.bit_length() + 7) // 8,
                                                                                "big")),
                "e": b64url_encode(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big"))}
    crv = _CURVE_NAMES[pub.curve.name]
    size = _CURVES[crv]
    nums = pub.public_numbers()
    return {"kty": "EC", "crv": crv, "alg": ALG_ECDH, "x": b64url_encode(nums.x.to_bytes(size, "big")),
            "y": b64url_encode(nums.y.to_bytes(size, "big"))}
