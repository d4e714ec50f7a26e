"""SIGSTRUCT signing and verification (RSA-3072, public exponent 3, RSASSA-PKCS1-v1_5 with SHA-256).

The signer covers 256 bytes, the *signing material*: SIGSTRUCT HEADER (bytes 0..127) followed by BODY (bytes
900..1027). The signature, modulus, Q1 and Q2 are stored as 384-byte little-endian integers, where Q1 =
floor(S^2 / N) and Q2 = floor((S^3 - Q1*S*N) / N) let EINIT check the signature without a division.

Two ways to sign:

* client side: :func:`sign` with the private key at hand;
* server side: send :func:`signing_material` to a remote signer (e.g. ``signature-server``), which returns a
  standard big-endian PKCS#1 v1.5 signature and its public key; :func:`assemble` puts them together and
  checks the result before returning it.

``cryptography`` is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from inclavare.errors import InclavareError
from inclavare.formats.sgx import (
    MODULUS_SIZE,
    SIGNING_MATERIAL_SIZE,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_TYPE_DEBUG,
    VENDOR_OTHER,
    Attributes,
    SgxFormatError,
    SigStruct,
    encode_bcd_date,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "SigningError",
    "SigstructVerifyError",
    "assemble",
    "build_sigstruct",
    "compute_q1_q2",
    "load_private_key",
    "load_public_key",
    "public_key_of",
    "sign",
    "sign_digest",
    "sign_material",
    "signing_material",
    "verify",
]

RSA_BITS = 3072


class SigningError(InclavareError):
    """A key or signature cannot be used to sign a SIGSTRUCT (wrong size, wrong exponent, unreadable PEM)."""


class SigstructVerifyError(InclavareError):
    """A SIGSTRUCT does not verify; the message names the check that failed."""


def _le(value: int) -> bytes:
    return value.to_bytes(MODULUS_SIZE, "little")


def _from_le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def compute_q1_q2(signature_le: bytes, modulus_le: bytes) -> tuple[bytes, bytes]:
    """Q1 and Q2 (384-byte little-endian) for a little-endian signature S and modulus N."""
    s, n = _from_le(signature_le), _from_le(modulus_le)
    if n == 0:
        raise SigningError("SIGSTRUCT: the modulus is zero")
    if s >= n:
        raise SigningError("SIGSTRUCT: the signature is not below the modulus (another key made it)")
    q1 = s * s // n
    q2 = (s * s * s - q1 * s * n) // n
    return _le(q1), _le(q2)


def _check_key_numbers(what: str, n: int, e: int) -> None:
    if n.bit_length() != RSA_BITS:
        raise SigningError(f"{what}: RSA key is {n.bit_length()} bits, SGX needs {RSA_BITS}")
    if e != SIGSTRUCT_EXPONENT:
        raise SigningError(f"{what}: RSA public exponent is {e}, SGX needs {SIGSTRUCT_EXPONENT}")


def load_private_key(key: bytes | str | RSAPrivateKey, password: bytes | None = None) -> RSAPrivateKey:
    """An RSA-3072 e=3 private key from PEM bytes/text (or a key object), checked for SGX use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if isinstance(key, rsa.RSAPrivateKey):
        obj: Any = key
    else:
        data = key.encode() if isinstance(key, str) else bytes(key)
        try:
            obj = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError):
            raise SigningError("signing key: not a readable PEM private key (or a wrong password)") from None
        if not isinstance(obj, rsa.RSAPrivateKey):
            raise SigningError(f"signing key: {type(obj).__name__} is not an RSA key")
    nums = obj.public_key().public_numbers()
    _check_key_numbers("signing key", nums.n, nums.e)
    return obj  # type: ignore[no-any-return]


def load_public_key(key: bytes | str | RSAPublicKey) -> RSAPublicKey:
    """An RSA-3072 e=3 public key from PEM (SubjectPublicKeyInfo or PKCS#1) or a key object."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if isinstance(key, rsa.RSAPublicKey):
        obj: Any = key
    else:
        data = key.encode() if isinstance(key, str) else bytes(key)
        try:
            obj = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise SigningError("public key: not a readable PEM public key") from None
        if not isinstance(obj, rsa.RSAPublicKey):
            raise SigningError(f"public key: {type(obj).__name__} is not an RSA key")
    nums = obj.public_numbers()
    _check_key_numbers("public key", nums.n, nums.e)
    return obj  # type: ignore[no-any-return]


def public_key_of(sig: SigStruct) -> RSAPublicKey:
    """The RSA public key stored in a SIGSTRUCT (modulus and exponent)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    n = _from_le(sig.modulus)
    if n == 0:
        raise SigstructVerifyError("SIGSTRUCT: no modulus (the SIGSTRUCT is not signed)")
    return rsa.RSAPublicNumbers(sig.exponent, n).public_key()


def build_sigstruct(
    mrenclave: bytes,
    *,
    attributes: Attributes,
    attribute_mask: Attributes,
    miscselect: int = 0,
    miscmask: int = 0,
    isvprodid: int = 0,
    isvsvn: int = 0,
    date: int | datetime.date | None = None,
    vendor: int = VENDOR_OTHER,
    debug: bool = False,
    swdefined: int = 0,
    isvfamilyid: bytes = bytes(16),
    isvextprodid: bytes = bytes(16),
    cet_attributes: int = 0,
    cet_attributes_mask: int = 0,
) -> SigStruct:
    """An unsigned SIGSTRUCT for an enclave. ``date`` is a ``datetime.date`` (stored as BCD), a raw DATE word,
    or None for today's UTC date. ``debug`` sets TYPE bit 31 (a debug signature)."""
    if date is None:
        date = datetime.datetime.now(datetime.UTC).date()
    raw_date = encode_bcd_date(date) if isinstance(date, datetime.date) else date
    try:
        return SigStruct(
            enclavehash=bytes(mrenclave), attributes=attributes, attribute_mask=attribute_mask,
            miscselect=miscselect, miscmask=miscmask, isvprodid=isvprodid, isvsvn=isvsvn, vendor=vendor,
            date=raw_date, header_type=SIGSTRUCT_TYPE_DEBUG if debug else 0, swdefined=swdefined,
            isvfamilyid=bytes(isvfamilyid), isvextprodid=bytes(isvextprodid), cet_attributes=cet_attributes,
            cet_attributes_mask=cet_attributes_mask, exponent=SIGSTRUCT_EXPONENT,
        )
    except SgxFormatError as e:
        raise SigningError(str(e)) from None


def signing_material(sig: SigStruct) -> bytes:
    """The 256 bytes an SGX signer signs (HEADER || BODY)."""
    return sig.signing_material()


def sign_material(material: bytes, key: bytes | str | RSAPrivateKey, password: bytes | None = None) -> bytes:
    """A standard (big-endian) PKCS#1 v1.5 SHA-256 signature over 256 bytes of signing material.

    This is what a remote signer does; :func:`assemble` consumes its output.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if len(material) != SIGNING_MATERIAL_SIZE:
        raise SigningError(f"signing material is {len(material)} bytes, expected {SIGNING_MATERIAL_SIZE}")
    priv = load_private_key(key, password)
    return priv.sign(bytes(material), padding.PKCS1v15(), hashes.SHA256())


def sign_digest(digest: bytes, key: bytes | str | RSAPrivateKey, password: bytes | None = None) -> bytes:
    """A big-endian PKCS#1 v1.5 signature of a precomputed SHA-256 digest (32 bytes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    if len(digest) != 32:
        raise SigningError(f"digest is {len(digest)} bytes, expected 32 (SHA-256)")
    priv = load_private_key(key, password)
    return priv.sign(bytes(digest), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def _complete(sig: SigStruct, n: int, signature_be: bytes) -> SigStruct:
    sig_le = int.from_bytes(signature_be, "big").to_bytes(MODULUS_SIZE, "little")
    modulus = _le(n)
    q1, q2 = compute_q1_q2(sig_le, modulus)
    return replace(sig, modulus=modulus, exponent=SIGSTRUCT_EXPONENT, signature=sig_le, q1=q1, q2=q2)


def sign(sig: SigStruct, key: bytes | str | RSAPrivateKey, password: bytes | None = None) -> SigStruct:
    """Sign a SIGSTRUCT with an RSA-3072 e=3 private key: fills MODULUS, EXPONENT, SIGNATURE, Q1, Q2."""
    priv = load_private_key(key, password)
    signature = sign_material(sig.signing_material(), priv)
    return _complete(replace(sig, exponent=SIGSTRUCT_EXPONENT), priv.public_key().public_numbers().n, signature)


def assemble(material: bytes, signature: bytes, public_key: bytes | str | RSAPublicKey) -> SigStruct:
    """A complete SIGSTRUCT from signing material, a big-endian PKCS#1 v1.5 signature and the signer's public
    key (server-side signing). The result is verified before it is returned."""
    if len(material) != SIGNING_MATERIAL_SIZE:
        raise SigningError(f"signing material is {len(material)} bytes, expected {SIGNING_MATERIAL_SIZE}")
    if len(signature) != MODULUS_SIZE:
        raise SigningError(f"signature is {len(signature)} bytes, expected {MODULUS_SIZE}")
    pub = load_public_key(public_key)
    try:
        template = SigStruct.from_signing_material(bytes(material))
    except SgxFormatError as e:
        raise SigningError(f"signing material: {e}") from None
    if template.exponent not in (0, SIGSTRUCT_EXPONENT):
        raise SigningError(f"signing material: EXPONENT={template.exponent}")
    try:
        out = _complete(template, pub.public_numbers().n, bytes(signature))
        verify(out)
    except (SigningError, SigstructVerifyError) as e:
        raise SigningError(f"remote signature does not match the signing material or key: {e}") from None
    return out


def verify(sig: SigStruct | bytes) -> SigStruct:
    """Check a SIGSTRUCT as EINIT would: exponent 3, a 3072-bit modulus, the RSA signature over the signing
    material, and Q1 / Q2. Returns the parsed SIGSTRUCT; raises :class:`SigstructVerifyError`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if not isinstance(sig, SigStruct):
        try:
            sig = SigStruct.parse(sig)
        except SgxFormatError as e:
            raise SigstructVerifyError(str(e)) from None
    if not sig.is_signed:
        raise SigstructVerifyError("SIGSTRUCT: not signed (MODULUS or SIGNATURE is all zero)")
    if sig.exponent != SIGSTRUCT_EXPONENT:
        raise SigstructVerifyError(f"SIGSTRUCT: EXPONENT is {sig.exponent}, must be {SIGSTRUCT_EXPONENT}")
    n = _from_le(sig.modulus)
    if n.bit_length() != RSA_BITS:
        raise SigstructVerifyError(f"SIGSTRUCT: MODULUS is {n.bit_length()} bits, must be {RSA_BITS}")
    s = _from_le(sig.signature)
    if s >= n:
        raise SigstructVerifyError("SIGSTRUCT: SIGNATURE is not smaller than MODULUS")
    pub = public_key_of(sig)
    try:
        pub.verify(s.to_bytes(MODULUS_SIZE, "big"), sig.signing_material(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SigstructVerifyError("SIGSTRUCT: RSA signature does not verify over HEADER and BODY") from None
    q1, q2 = compute_q1_q2(sig.signature, sig.modulus)
    if q1 != sig.q1:
        raise SigstructVerifyError("SIGSTRUCT: Q1 does not match SIGNATURE and MODULUS")
    if q2 != sig.q2:
        raise SigstructVerifyError("SIGSTRUCT: Q2 does not match SIGNATURE and MODULUS")
    return sig
