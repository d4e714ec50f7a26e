"""Fallback reading of RA-TLS certificates whose ECDSA AlgorithmIdentifier carries an explicit NULL parameter.

mbedTLS before 3.5.0 (and 2.28.x before 2.28.5) wrote ``ecdsa-with-SHA256`` as ``SEQUENCE { OID, NULL }``
in both the TBSCertificate ``signature`` field and the outer ``signatureAlgorithm``; RFC 5758 says the
parameters MUST be absent, and ``cryptography`` refuses such certificates. Gramine 1.4 and 1.5 (P-384 keys,
mbedTLS 3.3/3.4) and many SGX SDK samples made their RA-TLS certificates that way.

Used only for RA-TLS certificates, and only after ``cryptography``'s strict parse failed. The certificate is
decoded with pyasn1's RFC 5280 ``Certificate`` spec and must re-encode to exactly the input (DER, nothing
trailing). The one deviation tolerated is an explicit NULL on an ECDSA signature algorithm (with SHA-256, -384
or -512), identical in the inner and outer AlgorithmIdentifier. Then the canonical form (parameters absent)
is loaded by ``cryptography`` for the fields and extensions, and the self-signature is verified here over the
original TBSCertificate bytes with the key of the original SubjectPublicKeyInfo: a deviating certificate is
accepted only when its own key signed exactly what was received.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inclavare.ratls.dice import RatlsError

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["ECDSA_SIGNATURE_OIDS", "NULL_DER", "LenientCertificate", "load_null_param_certificate"]

# ecdsa-with-SHA256/384/512 -> hash name (RFC 5758 3.2: parameters MUST be absent)
ECDSA_SIGNATURE_OIDS = {"1.2.840.10045.4.3.2": "sha256", "1.2.840.10045.4.3.3": "sha384",
                        "1.2.840.10045.4.3.4": "sha512"}
NULL_DER = b"\x05\x00"


@dataclass(frozen=True)
class LenientCertificate:
    """A certificate read through the fallback: ``cert`` is the canonical re-encoding (for fields and
    extensions; its signature does not cover its own TBS), ``tbs`` and ``spki`` the original bytes."""

    cert: x509.Certificate
    tbs: bytes
    spki: bytes
    canonical_der: bytes


def _alg(item: Any) -> tuple[str, bytes | None]:
    params = item["parameters"]
    return str(item["algorithm"]), (bytes(params) if params.isValue else None)


@functools.lru_cache(maxsize=16)
def load_null_param_certificate(der: bytes) -> LenientCertificate | None:
    """Read ``der`` if it is a DER certificate whose only deviation is an explicit NULL on its ECDSA signature
    algorithm, with a valid self-signature; None when it does not show that quirk at all (the caller reports its
    strict parser's error); :class:`RatlsError` for a certificate with the quirk and any other defect. Cached
    per input: a verifier reads a peer's certificate once to parse it and again to check its validity."""
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.error import PyAsn1Error
    from pyasn1_modules import rfc5280

    try:
        decoded, rest = decoder.decode(der, asn1Spec=rfc5280.Certificate())
    except (PyAsn1Error, ValueError, TypeError, IndexError):
        return None
    try:
        outer_oid, outer_params = _alg(decoded["signatureAlgorithm"])
        tbs = decoded["tbsCertificate"]
        inner_oid, inner_params = _alg(tbs["signature"])
    except (PyAsn1Error, ValueError, TypeError, KeyError):
        return None
    if outer_params is None and inner_params is None:
        return None  # not the NULL-parameter quirk: the strict parser's error stands
    where = "certificate (explicit signature-algorithm parameters)"
    if rest:
        raise RatlsError(f"{where}: {len(rest)} bytes follow the certificate")
    try:
        tbs_der, spki_der, reencoded = (encoder.encode(tbs), encoder.encode(tbs["subjectPublicKeyInfo"]),
                                        encoder.encode(decoded))
    except PyAsn1Error as e:
        raise RatlsError(f"{where}: cannot be re-encoded ({e})") from None
    if reencoded != der:
        raise RatlsError(f"{where}: not in canonical DER (it does not re-encode to the same bytes)")
    if (inner_oid, inner_params) != (outer_oid, outer_params):
        raise RatlsError(f"{where}: the TBSCertificate signature algorithm ({inner_oid}, parameters "
                         f"{_hex(inner_params)}) differs from the certificate's ({outer_oid}, parameters "
                         f"{_hex(outer_params)})")
    hash_name = ECDSA_SIGNATURE_OIDS.get(outer_oid)
    if hash_name is None:
        raise RatlsError(f"{where}: signature algorithm {outer_oid} with parameters {_hex(outer_params)}; only an "
                         "explicit NULL on ecdsa-with-SHA256/384/512 is tolerated")
    if outer_params != NULL_DER:
        raise RatlsError(f"{where}: {outer_oid} with parameters {_hex(outer_params)}; only an explicit NULL "
                         "(05 00) is tolerated")

    # the canonical form: the same certificate with the parameters absent in both AlgorithmIdentifiers (the
    # decoded object is ours; the original bytes were taken above)
    canonical_alg = rfc5280.AlgorithmIdentifier()
    canonical_alg["algorithm"] = decoded["signatureAlgorithm"]["algorithm"]
    tbs["signature"] = canonical_alg
    decoded["signatureAlgorithm"] = canonical_alg.clone(cloneValueFlag=True)
    try:
        canonical_der = encoder.encode(decoded)
    except PyAsn1Error as e:
        raise RatlsError(f"{where}: cannot be re-encoded without the parameters ({e})") from None

    signature = decoded["signature"]
    if len(signature) % 8:
        raise RatlsError(f"{where}: the signature BIT STRING has unused bits")
    sig_bytes = signature.asOctets()
    _verify(spki_der, tbs_der, sig_bytes, hash_name, where)

    from cryptography import x509 as _x509

    try:
        cert = _x509.load_der_x509_certificate(canonical_der)
    except Exception as e:
        raise RatlsError(f"certificate: not a valid X.509 certificate ({e})") from None
    return LenientCertificate(cert=cert, tbs=tbs_der, spki=spki_der, canonical_der=canonical_der)


def _verify(spki_der: bytes, tbs: bytes, signature: bytes, hash_name: str, where: str) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_der_public_key(spki_der)
    except Exception as e:
        raise RatlsError(f"{where}: unusable public key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise RatlsError(f"{where}: an ECDSA signature algorithm with a {type(key).__name__} key")
    algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[hash_name]
    try:
        key.verify(signature, tbs, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise RatlsError(f"{where}: the self-signature does not verify over the received TBSCertificate with the "
                         "certificate's own key") from None


def _hex(value: bytes | None) -> str:
    return "absent" if value is None else (value.hex(" ") if len(value) <= 16 else value[:16].hex(" ") + " ...")
