"""ocicrypt's ``jwe`` key wrapper (keywrap/jwe): the layer's private options as a JWE in JSON serialization.

What ocicrypt (go-jose) writes, and so ``skopeo copy --encryption-key jwe:PUBKEY``, into the layer's
``org.opencontainers.image.enc.keys.jwe`` annotation (base64 of the JSON below):

* content encryption ``A256GCM`` (a random 256-bit CEK, 96-bit IV, 128-bit tag; the additional data is the
  ASCII of the ``protected`` member, RFC 7516 section 5.1);
* per recipient: ``RSA-OAEP`` (OAEP with SHA-1, go-jose's ``jose.RSA_OAEP``) for an RSA key, ``ECDH-ES+A256KW``
  (ephemeral ECDH on the recipient's curve, Concat KDF with SHA-256, no ``apu``/``apv``, AES key wrap) for an
  EC key;
* one recipient: the flattened form ``{"protected", "encrypted_key", "iv", "ciphertext", "tag"}`` with every
  header member protected (``{"alg","enc"[,"epk"]}``, sorted, as go-jose moves a lone recipient's header into
  the protected one); several: the general form ``{"protected": {"enc"}, "recipients": [{"header": {"alg"
  [,"epk"]}, "encrypted_key"}], "encrypted_key", "iv", "ciphertext", "tag"}`` (go-jose repeats the first
  recipient's encrypted key at the top level; read only as that copy).

RSA-OAEP with SHA-1 is kept because go-jose and every ocicrypt reader use it (OAEP's security does not rest on
SHA-1's collision resistance); RSA keys under 2048 bits are refused. Reading also takes ``RSA-OAEP-256``
(ocicrypt-rs) and P-256/P-384/P-521. Decryption uses the received ``protected`` string as the additional data,
byte for byte (joserfc's JSON path re-serialises the header instead, which would accept a rewritten one and
reject a header go-jose escaped differently), so it is composed here from pyca/cryptography's primitives.
Refused: ``zip``, ``crit``, any other ``enc`` or ``alg``, a member given in two headers.

Imports only inclavare.formats and pyca/cryptography (see the package docstring).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from inclavare.formats.ocicrypt import OcicryptError, parse_json_object

if TYPE_CHECKING:
    from typing import TypeAlias

    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

    PublicKey: TypeAlias = RSAPublicKey | EllipticCurvePublicKey
    PrivateKey: TypeAlias = RSAPrivateKey | EllipticCurvePrivateKey

ENC = "A256GCM"
ALG_RSA = "RSA-OAEP"
ALG_RSA256 = "RSA-OAEP-256"
ALG_ECDH = "ECDH-ES+A256KW"
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16384
MAX_JWE = 256 << 10
MAX_RECIPIENTS = 64
_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEADER_MEMBERS = ("protected", "unprotected", "header", "encrypted_key", "iv", "ciphertext", "tag", "aad",
                   "recipients")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise OcicryptError(f"{where}: not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise OcicryptError(f"{where}: not base64url") from None


# --------------------------------------------------------------------------------------------------
# keys


def _check_key(key: Any, where: str, private: bool) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    kinds = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey) if private else (rsa.RSAPublicKey,
                                                                             ec.EllipticCurvePublicKey)
    if not isinstance(key, kinds):
        raise OcicryptError(f"{where}: a {type(key).__name__}; jwe takes RSA or EC (P-256/P-384/P-521) keys")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
        raise OcicryptError(f"{where}: a {key.key_size}-bit RSA key; give {RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.name not in _CURVES:
        raise OcicryptError(f"{where}: curve {key.curve.name}; jwe takes P-256, P-384 or P-521")
    return key


def _jwk_key(data: bytes, where: str, private: bool) -> Any:
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    try:
        doc = json.loads(data)
        kty = doc.get("kty") if isinstance(doc, dict) else None
        cls: Any = {"RSA": RSAKey, "EC": ECKey}.get(kty) if isinstance(kty, str) else None
        if cls is None:
            raise OcicryptError(f"{where}: a JWK of kty {str(kty)[:16]!r}; jwe takes RSA or EC")
        key = cls.import_key(doc)
        raw = key.private_key if private else key.public_key
    except (ValueError, JoseError, TypeError) as e:
        raise OcicryptError(f"{where}: not a usable JWK ({str(e).splitlines()[0][:80] or type(e).__name__})") from None
    if raw is None:
        raise OcicryptError(f"{where}: the JWK holds no private key")
    return raw


def load_public_key(data: bytes, where: str = "public key") -> PublicKey:
    """An RSA or EC public key from PEM (SubjectPublicKeyInfo, or an X.509 certificate's), DER or a JWK, the
    forms ocicrypt's ParsePublicKey takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    text = data.lstrip()
    if text.startswith(b"{"):
        return _check_key(_jwk_key(data, where, False), where, False)  # type: ignore[no-any-return]
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError) as e:
        raise OcicryptError(f"{where}: not a PEM or DER public key ({str(e).splitlines()[0][:80]})") from None
    return _check_key(key, where, False)  # type: ignore[no-any-return]


def load_private_key(data: bytes, where: str = "private key", password: bytes | None = None, *,
                     check_rsa: bool = True) -> PrivateKey:
    """An RSA or EC private key from PEM (PKCS#8, PKCS#1, SEC1), DER or a JWK; ``password`` for encrypted PEM.

    ``check_rsa=False`` skips OpenSSL's consistency check of an RSA key (~70 ms for 2048 bits): for a key that
    arrived over an authenticated channel from the owner's key broker, where a broken key can only fail to
    unwrap (the layer key is authenticated by the JWE's GCM tag, the layer by its HMAC)."""
    from cryptography.hazmat.primitives import serialization

    if data.lstrip().startswith(b"{"):
        return _check_key(_jwk_key(data, where, True), where, True)  # type: ignore[no-any-return]
    try:
        if b"-----BEGIN" in data:
            key: Any = serialization.load_pem_private_key(data, password, unsafe_skip_rsa_key_validation=not check_rsa)
        else:
            key = serialization.load_der_private_key(data, password, unsafe_skip_rsa_key_validation=not check_rsa)
    except TypeError as e:  # a password missing or not wanted
        raise OcicryptError(f"{where}: {str(e).splitlines()[0][:100]}") from None
    except ValueError as e:
        raise OcicryptError(f"{where}: not a PEM or DER private key, or a wrong password "
                            f"({str(e).splitlines()[0][:80]})") from None
    return _check_key(key, where, True)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------
# the algorithms


def _oaep(alg: str) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    h = hashes.SHA1() if alg == ALG_RSA else hashes.SHA256()  # noqa: S303 (RSA-OAEP is SHA-1 by definition)
    return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)


def _concat_kdf(z: bytes, apu: bytes, apv: bytes) -> bytes:
    """RFC 7518 4.6.2: the 256-bit KEK from the ECDH secret; AlgorithmID is ``alg``, PartyUInfo/PartyVInfo the
    ``apu``/``apv`` bytes (go-jose sends none), SuppPubInfo the key length in bits."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

    alg = ALG_ECDH.encode("ascii")
    other = (len(alg).to_bytes(4, "big") + alg + len(apu).to_bytes(4, "big") + apu + len(apv).to_bytes(4, "big")
             + apv + (256).to_bytes(4, "big"))
    return ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)


def _epk(pub: EllipticCurvePublicKey) -> dict[str, str]:
    crv, size = _CURVES[pub.curve.name]
    n = pub.public_numbers()
    return {"kty": "EC", "crv": crv, "x": _b64url(n.x.to_bytes(size, "big")), "y": _b64url(n.y.to_bytes(size, "big"))}


def _recipient(key: PublicKey, cek: bytes) -> tuple[dict[str, Any], bytes]:
    """(the recipient's header, its encrypted key) for ``cek``."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    if isinstance(key, rsa.RSAPublicKey):
        return {"alg": ALG_RSA}, key.encrypt(cek, _oaep(ALG_RSA))
    eph = ec.generate_private_key(key.curve)
    kek = _concat_kdf(eph.exchange(ec.ECDH(), key), b"", b"")
    return {"alg": ALG_ECDH, "epk": _epk(eph.public_key())}, aes_key_wrap(kek, cek)


def _protected(header: dict[str, Any]) -> str:
    # go-jose keeps headers in a map: members sorted; the epk JWK in go-jose's field order (kty, crv, x, y)
    return _b64url(json.dumps({k: header[k] for k in sorted(header)}, separators=(",", ":")).encode())


def wrap(optsdata: bytes, recipients: list[PublicKey]) -> bytes:
    """The JWE JSON (UTF-8) of ``optsdata`` for ``recipients``, in go-jose's layout (see the module doc)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not recipients:
        raise OcicryptError("jwe: no recipient public keys")
    if len(recipients) > MAX_RECIPIENTS:
        raise OcicryptError(f"jwe: {len(recipients)} recipients, more than {MAX_RECIPIENTS}")
    cek = secrets.token_bytes(32)
    iv = secrets.token_bytes(12)
    parts = [_recipient(k, cek) for k in recipients]
    doc: dict[str, Any]
    if len(parts) == 1:
        header, ek = parts[0]
        protected = _protected({**header, "enc": ENC})
        doc = {"protected": protected, "encrypted_key": _b64url(ek)}
    else:
        protected = _protected({"enc": ENC})
        # go-jose's FullSerialize also puts the first recipient's encrypted key at the top level
        doc = {"protected": protected,
               "recipients": [{"header": {k: h[k] for k in sorted(h)}, "encrypted_key": _b64url(ek)}
                              for h, ek in parts],
               "encrypted_key": _b64url(parts[0][1])}
    sealed = AESGCM(cek).encrypt(iv, optsdata, protected.encode("ascii"))
    doc.update(iv=_b64url(iv), ciphertext=_b64url(sealed[:-16]), tag=_b64url(sealed[-16:]))
    return json.dumps(doc, separators=(",", ":")).encode()


def _header(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OcicryptError(f"{where}: expected an object")
    return value


def _merge(parts: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for header, where in parts:
        for k, v in header.items():
            if k in out:
                raise OcicryptError(f"{where}.{k[:32]}: given in more than one header")
            out[k] = v
    return out


def _cek(header: dict[str, Any], encrypted_key: bytes, key: PrivateKey, where: str) -> bytes | None:
    """The CEK this recipient entry yields with ``key``, or None when the key does not fit it."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

    alg = header.get("alg")
    if alg in (ALG_RSA, ALG_RSA256):
        if not isinstance(key, rsa.RSAPrivateKey):
            return None
        try:
            return key.decrypt(encrypted_key, _oaep(alg))
        except ValueError:
            return None
    if alg == ALG_ECDH:
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return None
        epk = header.get("epk")
        if not isinstance(epk, dict) or epk.get("kty") != "EC":
            raise OcicryptError(f"{where}.epk: missing or not an EC JWK")
        crv, size = _CURVES[key.curve.name]
        if epk.get("crv") != crv:
            return None
        x, y = _unb64url(epk.get("x"), f"{where}.epk.x"), _unb64url(epk.get("y"), f"{where}.epk.y")
        if len(x) != size or len(y) != size:
            raise OcicryptError(f"{where}.epk: coordinates must be {size} bytes on {crv}")
        try:
            peer = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                                 key.curve).public_key()
        except ValueError:
            raise OcicryptError(f"{where}.epk: not a point on {crv}") from None
        apu = _unb64url(header["apu"], f"{where}.apu") if "apu" in header else b""
        apv = _unb64url(header["apv"], f"{where}.apv") if "apv" in header else b""
        try:
            return aes_key_unwrap(_concat_kdf(key.exchange(ec.ECDH(), peer), apu, apv), encrypted_key)
        except InvalidUnwrap:
            return None
    raise OcicryptError(f"{where}.alg: {str(alg)[:32]!r} is not supported ({ALG_RSA}, {ALG_RSA256}, {ALG_ECDH})")


def unwrap(annotation: bytes, keys: list[PrivateKey], where: str = "jwe") -> bytes:
    """The private options inside a JWE annotation, opened with whichever of ``keys`` fits a recipient. No key
    fitting, or a JWE that does not authenticate, is an OcicryptError."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    doc = parse_json_object(annotation, where, MAX_JWE)
    extra = [k for k in doc if k not in _HEADER_MEMBERS]
    if extra:
        raise OcicryptError(f"{where}: unknown member {extra[0][:32]!r}")
    protected_b64 = doc.get("protected")
    if not isinstance(protected_b64, str) or not protected_b64:
        raise OcicryptError(f"{where}.protected: missing")
    protected = parse_json_object(_unb64url(protected_b64, f"{where}.protected"), f"{where}.protected", MAX_JWE)
    unprotected = _header(doc.get("unprotected"), f"{where}.unprotected")
    if "recipients" in doc:
        entries = doc["recipients"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_RECIPIENTS:
            raise OcicryptError(f"{where}.recipients: expected 1..{MAX_RECIPIENTS} entries")
        # go-jose also writes the first recipient's encrypted_key at the top: allowed only as that copy
        first = entries[0].get("encrypted_key") if isinstance(entries[0], dict) else None
        if "header" in doc or doc.get("encrypted_key", first) != first:
            raise OcicryptError(f"{where}: both general (recipients) and flattened members")
        recipients = [(e if isinstance(e, dict) else {}, f"{where}.recipients[{i}]") for i, e in enumerate(entries)]
    else:
        recipients = [(doc, where)]
    iv = _unb64url(doc.get("iv"), f"{where}.iv")
    ciphertext = _unb64url(doc.get("ciphertext"), f"{where}.ciphertext")
    tag = _unb64url(doc.get("tag"), f"{where}.tag")
    if len(iv) != 12 or len(tag) != 16:
        raise OcicryptError(f"{where}: {ENC} needs a 12-byte iv and a 16-byte tag")
    aad = protected_b64.encode("ascii")
    if "aad" in doc:
        _unb64url(doc["aad"], f"{where}.aad")
        aad += b"." + str(doc["aad"]).encode("ascii")
    if not keys:
        raise OcicryptError(f"{where}: no private key given to unwrap the layer key")
    for entry, ewhere in recipients:
        header = _merge([(protected, f"{where}.protected"), (unprotected, f"{where}.unprotected"),
                         (_header(entry.get("header"), f"{ewhere}.header"), f"{ewhere}.header")])
        if header.get("enc") != ENC:
            raise OcicryptError(f"{ewhere}: enc {str(header.get('enc'))[:24]!r} is not supported (only {ENC})")
        for name in ("zip", "crit"):
            if name in header:
                raise OcicryptError(f"{ewhere}: header {name!r} is not supported")
        encrypted_key = _unb64url(entry.get("encrypted_key"), f"{ewhere}.encrypted_key")
        for key in keys:
            cek = _cek(header, encrypted_key, key, ewhere)
            if cek is None or len(cek) != 32:
                continue
            try:
                return AESGCM(cek).decrypt(iv, ciphertext + tag, aad)
            except InvalidTag:
                raise OcicryptError(f"{where}: does not authenticate ({ENC} tag mismatch: altered)") from None
    raise OcicryptError(f"{where}: none of the {len(keys)} private key(s) given is a recipient of this layer's key")
