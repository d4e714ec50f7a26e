"""X.509 certificates, CRLs and ECDSA-P256 signatures as the DCAP checks use them, each answer memoised.

The shared core under the PCK chain checks (:mod:`.pck`) and the collateral document checks (:mod:`.documents`).
``cryptography`` is imported where it is used, never at module level. Names and algorithm identifiers are cut
out of the certificate and CRL bytes with :class:`inclavare.formats.der.DerReader` (the project's one DER
reader), so an encoding seen before is compared as bytes instead of being parsed again.

Memoisation: every cache below is an ``lru_cache`` keyed by the complete bytes (and other values) its answer
depends on, never by a digest or a part, so a changed byte is a different key and is checked afresh. Time is
never part of a memoised answer: what depends on ``as_of`` is recorded as a check to run (validity windows)
and run on every verification, so a verifier asked about "now" keeps its caches useful.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from inclavare.formats.der import TAG_INTEGER, TAG_SEQUENCE, DerReader

if TYPE_CHECKING:
    from cryptography import x509


def iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Bad(Exception):
    """Internal: a check failed; the message is the user-facing reason."""


def crypto_errors() -> tuple[type[Exception], ...]:
    """Everything cryptography raises on hostile bytes (its x509 errors are not ValueErrors)."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.x509 import (
        AttributeNotFound,
        DuplicateExtension,
        ExtensionNotFound,
        InvalidVersion,
        UnsupportedGeneralNameType,
    )

    return (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, InvalidVersion, DuplicateExtension,
            UnsupportedGeneralNameType, AttributeNotFound, ExtensionNotFound)


@functools.lru_cache(maxsize=256)
def load_cert(der: bytes) -> x509.Certificate:
    from cryptography import x509

    fields = _cert_fields(der)
    known = _converted_names()
    try:
        with warnings.catch_warnings():  # a mutated certificate (a non-positive serial, an attribute of the wrong
            warnings.simplefilter("ignore")  # length) warns while it loads; it fails the chain checks later
            cert = x509.load_der_x509_certificate(der)
            # parse the lazy parts now, inside the try; a name whose exact encoding has been turned into a Name
            # before (the issuer is usually the subject of another certificate of the chain) turns out the same
            subject = known.get(fields[2]) if fields is not None else None
            if subject is None:
                subject = cert.subject
            issuer = known.get(fields[1]) if fields is not None else None
            if issuer is None:
                issuer = cert.issuer
            cert.extensions  # noqa: B018
    except crypto_errors() as e:
        raise Bad(f"not a valid DER certificate ({e})") from None
    _whole_byte_bit_strings(der)
    if fields is not None:
        if len(known) >= _MAX_CONVERTED_NAMES:
            known.clear()
        known[fields[2]], known[fields[1]] = subject, issuer
    return cert


@functools.lru_cache(maxsize=1)
def _converted_names() -> dict[bytes, x509.Name]:
    """Encodings of X.509 names that cryptography has turned into ``Name`` objects without an error, and those
    objects (emptied with the other caches); bounded by :data:`_MAX_CONVERTED_NAMES`."""
    return {}


def _subject(der: bytes) -> x509.Name:
    """The subject of the certificate ``der`` (which must load), converted once per encoding."""
    fields = _cert_fields(der)
    name = _converted_names().get(fields[2]) if fields is not None else None
    return name if name is not None else load_cert(der).subject


_MAX_CONVERTED_NAMES = 1024


def _cn(cert: x509.Certificate) -> str:
    try:
        with warnings.catch_warnings():  # a mutated name warns as it is read
            warnings.simplefilter("ignore")
            return _name_cn(cert.subject)
    except crypto_errors():
        return ""


def _name_cn(name: x509.Name) -> str:
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    v = values[0].value if values else ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


@functools.lru_cache(maxsize=256)
def cn_of(der: bytes) -> str:
    """:func:`_cn` of the certificate ``der`` (which must load)."""
    load_cert(der)
    try:
        return _name_cn(_subject(der))
    except crypto_errors():
        return ""


def describe(cert: x509.Certificate) -> str:
    return repr(_cn(cert) or cert.subject.rfc4514_string())


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()

@functools.lru_cache(maxsize=512)
def issued_by(child_der: bytes, issuer_der: bytes) -> str | None:
    """None if ``issuer`` is a CA certificate whose key signed ``child`` (and names match), else the reason."""
    from cryptography import x509

    child, issuer = load_cert(child_der), load_cert(issuer_der)
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            return f"{describe(issuer)} is not a CA certificate (basicConstraints CA is false)"
    except x509.ExtensionNotFound:
        return f"{describe(issuer)} has no basicConstraints, so it cannot issue certificates"
    signed = _p256_sha256_issued(child_der, issuer_der)
    if signed is None:
        try:
            child.verify_directly_issued_by(issuer)
        except crypto_errors() as e:
            why = "issuer name differs" if isinstance(e, ValueError) else "bad signature"
            return f"{describe(child)} is not signed by {describe(issuer)} ({why})"
    elif not signed:
        return f"{describe(child)} is not signed by {describe(issuer)} (bad signature)"
    return None


# AlgorithmIdentifier { ecdsa-with-SHA256 } without parameters, as DER
_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


class _NotDer(Exception):
    """Internal: the bytes do not have the shape the fast paths cut fields from (the slow path then decides)."""


def _not_der(field_name: str, offset: int, problem: str) -> Exception:
    return _NotDer(f"{field_name} at byte {offset}: {problem}")


def _tbs(der: bytes) -> tuple[DerReader, DerReader]:
    """Readers over the outer SEQUENCE's contents (after the TBS part) and over the TBS SEQUENCE's contents."""
    outer = DerReader(der, _not_der).sub(TAG_SEQUENCE, "certificate or CRL")
    return outer, outer.sub(TAG_SEQUENCE, "TBS")


@functools.lru_cache(maxsize=256)
def _cert_fields(der: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """The encoded (TBS signature algorithm, issuer, subject, outer signature algorithm) of the certificate
    ``der``, cut out of its bytes; None if the bytes do not have that shape."""
    try:
        outer, tbs = _tbs(der)
        if tbs.peek_tag() == 0xA0:  # [0] version
            tbs.read("version")
        tbs.read("serialNumber")
        signature, issuer = tbs.element("signature"), tbs.element("issuer")
        tbs.read("validity")
        return signature, issuer, tbs.element("subject"), outer.element("signatureAlgorithm")
    except _NotDer:
        return None


def _whole_byte_bit_strings(der: bytes) -> None:
    """The certificate's public key and signature BIT STRINGs say they have no unused bits (DER: a signature or
    key is whole bytes; cryptography reads their bytes whatever the unused-bits octet says, so a mutated one
    would still verify)."""
    try:
        outer, tbs = _tbs(der)
        if tbs.peek_tag() == 0xA0:  # [0] version
            tbs.read("version")
        for name in ("serialNumber", "signature", "issuer", "validity", "subject"):
            tbs.read(name)
        spki = tbs.sub(TAG_SEQUENCE, "subjectPublicKeyInfo")
        spki.read("algorithm")
        spki.bit_string("subjectPublicKey")
        outer.read("signatureAlgorithm")
        outer.bit_string("signatureValue")
        outer.done("certificate")
    except _NotDer as e:
        raise Bad(f"not a valid DER certificate ({e})") from None


@functools.lru_cache(maxsize=64)
def _crl_issuer(der: bytes) -> bytes | None:
    """The encoded issuer name of the CRL ``der``, cut out of its bytes; None if they do not have that shape."""
    try:
        _, tbs = _tbs(der)
        if tbs.peek_tag() == TAG_INTEGER:  # version
            tbs.read("version")
        tbs.read("signature")
        if tbs.peek_tag() != TAG_SEQUENCE:
            return None
        return tbs.element("issuer")
    except _NotDer:
        return None


def _p256_sha256_issued(child_der: bytes, issuer_der: bytes) -> bool | None:
    """``verify_directly_issued_by`` for the usual case, with the issuer's (already loaded) key: whether the
    ECDSA-P256-SHA256 signature of ``child`` verifies with the key of ``issuer``; None when the case is another
    (other algorithm or key, names or inner and outer algorithm not byte-identical), which the caller then hands
    to ``verify_directly_issued_by`` itself. Byte-identical fields are what that method compares (it would
    compare parsed values, which are equal when the bytes are), and it verifies this algorithm with this call."""
    child_fields, issuer_fields = _cert_fields(child_der), _cert_fields(issuer_der)
    if child_fields is None or issuer_fields is None:
        return None
    inner_alg, issuer_name, _, outer_alg = child_fields
    if inner_alg != _ECDSA_WITH_SHA256 or outer_alg != _ECDSA_WITH_SHA256 or issuer_name != issuer_fields[2]:
        return None
    from cryptography.exceptions import InvalidSignature

    key_type, curve_type, algorithm, _ = _p256()
    child, issuer = load_cert(child_der), load_cert(issuer_der)
    try:
        pub = issuer.public_key()
        if not isinstance(pub, key_type) or not isinstance(pub.curve, curve_type):
            return None
        pub.verify(child.signature, child.tbs_certificate_bytes, algorithm)
    except InvalidSignature:
        return False
    except crypto_errors():  # anything else: as verify_directly_issued_by has it
        return None
    return True


def check_validity(cert: x509.Certificate, as_of: datetime.datetime, what: str) -> str | None:
    if as_of < cert.not_valid_before_utc:
        return f"{what} {describe(cert)} is not yet valid at {iso(as_of)} (valid from " \
               f"{iso(cert.not_valid_before_utc)})"
    if as_of > cert.not_valid_after_utc:
        return f"{what} {describe(cert)} expired at {iso(cert.not_valid_after_utc)} (checked as of {iso(as_of)})"
    return None


@functools.lru_cache(maxsize=256)
def validity(der: bytes) -> tuple[datetime.datetime, datetime.datetime]:
    """(notBefore, notAfter) of the certificate ``der`` (which must load)."""
    cert = load_cert(der)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


@functools.lru_cache(maxsize=1)
def _p256() -> tuple[Any, Any, Any, Callable[[int, int], bytes]]:
    """(EllipticCurvePublicKey, SECP256R1, the ECDSA-SHA256 algorithm object, encode_dss_signature)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    return ec.EllipticCurvePublicKey, ec.SECP256R1, ec.ECDSA(hashes.SHA256()), encode_dss_signature


def verify_p256(pub: Any, sig: bytes, data: bytes, *, p256_key: bool = False) -> bool:
    """Does ECDSA-P256-SHA256 signature ``sig`` (r || s) over ``data`` verify with ``pub``? ``p256_key``: the
    caller made ``pub`` as a P-256 key (:func:`raw_p256_key`), so its type need not be checked."""
    key_type, curve_type, algorithm, encode = _p256()
    if not p256_key and (not isinstance(pub, key_type) or not isinstance(pub.curve, curve_type)):
        return False
    if len(sig) != 64:
        return False
    try:
        pub.verify(encode(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")), data, algorithm)
    except crypto_errors():
        return False
    return True


@functools.lru_cache(maxsize=256)
def raw_p256_key(xy: bytes) -> Any:
    """The P-256 public key with coordinates ``xy`` (x || y), or None if that is not a point on the curve."""
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except crypto_errors():
        return None


@functools.lru_cache(maxsize=256)
def cert_signed(signer_der: bytes, sig: bytes, data: bytes) -> bool:
    """Did the key of certificate ``signer_der`` make ECDSA-P256-SHA256 signature ``sig`` (r||s) over ``data``?"""
    try:
        pub = load_cert(signer_der).public_key()
    except crypto_errors():
        return False
    return verify_p256(pub, sig, data)

@functools.lru_cache(maxsize=64)
def load_crl(der: bytes) -> x509.CertificateRevocationList:
    from cryptography import x509

    issuer = _crl_issuer(der)
    try:
        crl = x509.load_der_x509_crl(der)
        if issuer is None or issuer not in _converted_names():  # parse the lazy parts now (see load_cert)
            crl.issuer  # noqa: B018
        crl.extensions  # noqa: B018
    except crypto_errors() as e:
        raise Bad(f"not a valid DER CRL ({e})") from None
    return crl


@functools.lru_cache(maxsize=64)
def crl_issued_by(crl_der: bytes, issuer_der: bytes) -> bool:
    crl_issuer, cert_fields = _crl_issuer(crl_der), _cert_fields(issuer_der)
    if crl_issuer is not None and cert_fields is not None and crl_issuer == cert_fields[2]:
        return True  # the same encoding is the same Name
    return bool(load_crl(crl_der).issuer == load_cert(issuer_der).subject)


@functools.lru_cache(maxsize=64)
def crl_signed(crl_der: bytes, issuer_der: bytes) -> bool:
    crl, issuer = load_crl(crl_der), load_cert(issuer_der)
    try:
        return crl_issued_by(crl_der, issuer_der) and crl.is_signature_valid(
            issuer.public_key())  # type: ignore[arg-type]
    except crypto_errors():
        return False


@functools.lru_cache(maxsize=256)
def crl_revokes(crl_der: bytes, serial: int) -> bool:
    try:
        return load_crl(crl_der).get_revoked_certificate_by_serial_number(serial) is not None
    except crypto_errors() as e:
        raise Bad(f"cannot read the revoked entries ({e})") from None
