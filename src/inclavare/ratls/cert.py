"""RA-TLS certificates: make them as rats-tls does, read any of the formats peers send.

Made certificates follow rats-tls' OpenSSL crypto wrapper: X.509 v3, serial 1, subject = issuer =
``O=Inclavare Containers, CN=RATS-TLS`` (UTF8String), notBefore = now - 1 hour (rats-tls' allowance for peers
whose clocks lag), notAfter = now + 365 days, extensions basicConstraints CA:FALSE, subjectKeyIdentifier
(SHA-1 of the key bits), authorityKeyIdentifier (keyid only), then the evidence extension(s), all non-critical,
signed with SHA-256 by the certificate's own key (ECDSA P-256 by default, RSA-3072 on request).

Formats read by :func:`parse_certificate`:

* ``dice``: TCG DICE tagged evidence 2.23.133.5.4.9 (+ optional endorsements 2.23.133.5.4.2), see
  :mod:`inclavare.ratls.dice`. Binding: the pubkey-hash claim is the hash of the certificate's
  SubjectPublicKeyInfo, and the evidence's report data is SHA-256(claims buffer) zero-padded.
* ``legacy``: rats-tls <= 0.6.x / Enclave-TLS raw evidence under 1.2.840.113741.1337.N: .6 SGX ECDSA quote,
  .8 TDX ECDSA quote, .14 SGX local-attestation REPORT, .20 SEV-SNP report, .22 SEV(-ES) evidence, .24 Hygon CSV
  evidence. Binding: report_data[0:32] = SHA-256 of the SubjectPublicKeyInfo for EC keys and of the PKCS#1
  RSAPublicKey for RSA keys, the rest zero. rats-tls of that era also wrote X.509 version field 3 (an invalid
  "v4"); such certificates are read (the version is treated as v3, see ``x509_version_quirk``).
* ``gramine``: Gramine's SGX quote extension, whose OID bytes mistakenly include the DER tag and length
  (content ``06 09 2a 86 48 86 f8 4d 8a 39 06``, i.e. OID 0.6.9.42.840.113741.1337.6). Binding:
  report_data[0:32] = SHA-256 of the SubjectPublicKeyInfo, whatever the key type.
* Other stacks' formats (Open Enclave, Intel sgx_ttls, Occlum): read by :mod:`inclavare.ratls.foreign`.

When a certificate carries the DICE extension, it is used and rats-tls legacy extensions are ignored; a Gramine
quote extension beside it (Gramine >= 1.8 writes both) must agree with it, see :mod:`inclavare.ratls.gramine`.

Certificates whose ECDSA AlgorithmIdentifiers carry an explicit NULL parameter (mbedTLS < 3.5: Gramine 1.4 and
1.5, SGX SDK samples) are read through :mod:`inclavare.ratls.lenient` when ``cryptography`` refuses them
(``sigalg_null_params``). The TBSCertificate's signature algorithm must equal the certificate's.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from inclavare.attestation.collateral import DcapCollateral
from inclavare.formats import pem
from inclavare.formats.der import TAG_SEQUENCE, DerReader
from inclavare.ratls.dice import (
    MAX_ENDORSEMENTS_EXTENSION,
    MAX_EVIDENCE_EXTENSION,
    REPORT_DATA_SIZE,
    TAG_INTEL_TEE_QUOTE,
    TCG_DICE_ENDORSEMENT_MANIFEST_OID,
    TCG_DICE_TAGGED_EVIDENCE_OID,
    DiceEndorsements,
    RatlsError,
    build_claims_buffer,
    build_endorsements_extension,
    build_evidence_extension,
    evidence_type_of,
    hash_public_key,
    parse_endorsements_extension,
    parse_evidence_extension,
    report_data_for,
    tag_for,
)
from inclavare.ratls.foreign import (
    FOREIGN_FORMATS,
    FOREIGN_OIDS,
    check_foreign_binding,
    read_foreign,
    ttls_tdx_dice_bound,
)
from inclavare.ratls.gramine import check_companion_quote

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "CERT_SERIAL_NUMBER",
    "GRAMINE_QUOTE_OID",
    "LEGACY_OIDS",
    "MAX_CERTIFICATE",
    "MAX_LEGACY_EXTENSION",
    "RatlsCertificate",
    "RatlsError",
    "check_binding",
    "check_validity",
    "make_certificate",
    "null_param_der",
    "parse_certificate",
]

_INTEL = "1.2.840.113741.1337"
LEGACY_OIDS: dict[str, str] = {
    f"{_INTEL}.6": "sgx_ecdsa",
    f"{_INTEL}.8": "tdx_ecdsa",
    f"{_INTEL}.14": "sgx_la",
    f"{_INTEL}.20": "sev_snp",
    f"{_INTEL}.22": "sev",
    f"{_INTEL}.24": "csv",
}
_LEGACY_OID_OF = {"sgx_ecdsa": f"{_INTEL}.6", "sim": f"{_INTEL}.6", "tdx_ecdsa": f"{_INTEL}.8",
                  "sgx_la": f"{_INTEL}.14", "sev_snp": f"{_INTEL}.20", "sev": f"{_INTEL}.22", "csv": f"{_INTEL}.24"}
# Enclave-TLS' SGX EPID evidence (IAS report, its signing CA and leaf, the signature): recognised, not supported.
_EPID_OIDS = {f"{_INTEL}.2", f"{_INTEL}.3", f"{_INTEL}.4", f"{_INTEL}.5"}
GRAMINE_QUOTE_OID = "0.6.9.42.840.113741.1337.6"
_HANDLED_OIDS = {TCG_DICE_TAGGED_EVIDENCE_OID, TCG_DICE_ENDORSEMENT_MANIFEST_OID, GRAMINE_QUOTE_OID, *LEGACY_OIDS,
                 *FOREIGN_OIDS}

MAX_CERTIFICATE = MAX_ENDORSEMENTS_EXTENSION + MAX_EVIDENCE_EXTENSION + 64 * 1024
MAX_LEGACY_EXTENSION = 64 * 1024

CERT_SERIAL_NUMBER = 1
SUBJECT_ORGANIZATION = "Inclavare Containers"
SUBJECT_COMMON_NAME = "RATS-TLS"
NOT_BEFORE_BACKDATE = datetime.timedelta(hours=1)
VALIDITY = datetime.timedelta(days=365)


# --------------------------------------------------------------------------------------------------
# Raw fields through formats/der: the exact SubjectPublicKeyInfo bytes, and rats-tls 0.6's invalid version field


def _der_fail(field_name: str, offset: int, problem: str) -> RatlsError:
    return RatlsError(f"certificate: {field_name} at byte {offset}: {problem}")


class _Tbs(NamedTuple):
    start: int  # of the TBSCertificate element
    end: int
    fields: list[tuple[int, int]]  # (start, end) of its first 7 fields: version .. subjectPublicKeyInfo
    signature_algorithm: bytes  # the certificate's signatureAlgorithm element, after the TBSCertificate


def _tbs(der: bytes) -> _Tbs:
    top = DerReader(der, _der_fail)
    cert = top.sub(TAG_SEQUENCE, "Certificate")
    top.done("Certificate")
    start = cert.pos
    tbs = cert.sub(TAG_SEQUENCE, "TBSCertificate")
    fields: list[tuple[int, int]] = []
    while tbs.pos < tbs.end and len(fields) < 7:
        field_start = tbs.pos
        tbs.read("TBSCertificate field")
        fields.append((field_start, tbs.pos))
    if len(fields) < 7 or der[fields[0][0]] != 0xA0:
        raise RatlsError("certificate: TBSCertificate lacks the version, key or name fields")
    return _Tbs(start, cert.pos, fields, cert.element("signatureAlgorithm"))


def _spki_and_check_sigalg(der: bytes) -> bytes:
    """The exact SubjectPublicKeyInfo DER; raises when the TBSCertificate's signature algorithm is not byte for
    byte the certificate's signatureAlgorithm (RFC 5280 4.1.1.2; ``cryptography`` does not compare them)."""
    tbs = _tbs(der)
    start, end = tbs.fields[2]
    if der[start:end] != tbs.signature_algorithm:
        raise RatlsError("certificate: the TBSCertificate's signature algorithm differs from the certificate's "
                         "signatureAlgorithm")
    start, end = tbs.fields[6]
    return der[start:end]


def _pkcs1_of(spki: bytes) -> bytes:
    """The subjectPublicKey bits of an RSA SubjectPublicKeyInfo: the PKCS#1 RSAPublicKey DER."""
    seq = DerReader(spki, _der_fail).sub(TAG_SEQUENCE, "SubjectPublicKeyInfo")
    seq.element("AlgorithmIdentifier")
    return seq.bit_string("subjectPublicKey")


def _patch_v4(der: bytes) -> tuple[bytes, bytes] | None:
    """For a certificate whose version field is 3 (rats-tls <= 0.6's ``X509_set_version(cert, 3)``): the same
    bytes with version 2 (v3), and the original TBSCertificate (what the signature covers)."""
    tbs = _tbs(der)
    start = tbs.fields[0][0]
    if der[start:start + 5] != b"\xa0\x03\x02\x01\x03":
        return None
    return der[:start + 4] + b"\x02" + der[start + 5:], der[tbs.start:tbs.end]


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class RatlsCertificate:
    """What an RA-TLS certificate says. ``expected_report_data`` is what the evidence's report data must be
    (64 bytes) for the evidence to be bound to this certificate's key; :func:`check_binding` compares."""

    format: str  # "dice", "legacy", "gramine", a foreign format (see foreign.py), or "none" (no evidence)
    oid: str | None  # extension the evidence came from
    tag: int | None  # CBOR tag (dice)
    evidence_type: str | None  # sgx_ecdsa, tdx_ecdsa, sgx_la, sev_snp, sev, csv, intel_tee_report
    evidence: bytes
    claims_buffer: bytes | None
    claims: dict[str, bytes]  # every claim of the claims buffer, raw values (dice)
    custom_claims: dict[str, bytes]  # without pubkey-hash
    pubkey_hash_alg: int | None
    pubkey_hash: bytes | None
    endorsements: DiceEndorsements | None
    public_key_spki: bytes  # exact SubjectPublicKeyInfo DER of the certificate
    public_key_type: str  # "ec", "rsa" or the key's class name
    expected_report_data: bytes
    serial_number: int
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    der: bytes
    evidence_critical: bool = False
    x509_version_quirk: bool = False
    sigalg_null_params: bool = False  # read through the lenient fallback (mbedTLS < 3.5 ECDSA encoding)
    _tbs: bytes = field(default=b"", repr=False)

    @property
    def collateral(self) -> DcapCollateral | None:
        return self.endorsements.collateral if self.endorsements is not None else None

    @property
    def binding_key(self) -> bytes:
        """The bytes whose SHA-256 a legacy certificate's report data carries."""
        if self.format == "legacy" and self.public_key_type == "rsa":
            return _pkcs1_of(self.public_key_spki)
        return self.public_key_spki


def _pem_fail(problem: str) -> RatlsError:
    return RatlsError(f"certificate: {problem}")


def _der_input(cert: Any) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if isinstance(cert, x509.Certificate):
        return cert.public_bytes(serialization.Encoding.DER)
    if isinstance(cert, str):
        cert = cert.encode("utf-8", "surrogateescape")
    if not isinstance(cert, bytes | bytearray | memoryview):
        raise RatlsError(f"certificate: expected PEM or DER bytes, got {type(cert).__name__}")
    data = bytes(cert)
    if len(data) > 2 * MAX_CERTIFICATE:
        raise RatlsError(f"certificate: {len(data)} bytes exceeds the cap")
    if data[:1] != b"\x30" and b"-----BEGIN" in data:  # DER starts with a SEQUENCE; its quote may hold PEM text
        certs = [b.der for b in pem.blocks(data, _pem_fail, allow_text=True) if b.label == "CERTIFICATE"]
        if len(certs) != 1:
            raise RatlsError(f"certificate: expected one PEM CERTIFICATE block, found {len(certs)}")
        data = certs[0]
    if not data:
        raise RatlsError("certificate: empty")
    if len(data) > MAX_CERTIFICATE:
        raise RatlsError(f"certificate: {len(data)} bytes exceeds the {MAX_CERTIFICATE}-byte cap")
    return data


class _Loaded(NamedTuple):
    cert: x509.Certificate  # for fields and extensions (a re-encoding when a quirk was tolerated)
    tbs: bytes  # the original TBSCertificate: what the signature covers
    spki: bytes  # the original SubjectPublicKeyInfo DER
    version_quirk: bool = False
    sigalg_null_params: bool = False


def _load(der: bytes) -> _Loaded:
    """Read a certificate strictly with ``cryptography``; on failure tolerate exactly one of two quirks: rats-tls
    0.6's version field 3, or mbedTLS' explicit NULL on the ECDSA signature algorithm (see
    :mod:`inclavare.ratls.lenient`, which also verifies the self-signature then)."""
    from cryptography import x509

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cert = x509.load_der_x509_certificate(der)
            return _Loaded(cert, cert.tbs_certificate_bytes, _spki_and_check_sigalg(der))
        except x509.InvalidVersion:
            patched = _patch_v4(der)
            if patched is None:
                raise RatlsError("certificate: unsupported X.509 version") from None
            try:
                cert = x509.load_der_x509_certificate(patched[0])
            except Exception as e:
                raise RatlsError(f"certificate: not a valid X.509 certificate ({e})") from None
            return _Loaded(cert, patched[1], _spki_and_check_sigalg(der), version_quirk=True)
        except RatlsError:
            raise
        except Exception as e:
            strict_error = e
    from inclavare.ratls.lenient import load_null_param_certificate

    lenient = load_null_param_certificate(der)
    if lenient is None:
        raise RatlsError(f"certificate: not a valid X.509 certificate ({strict_error})")
    return _Loaded(lenient.cert, lenient.tbs, lenient.spki, sigalg_null_params=True)


def null_param_der(cert: Any) -> bytes | None:
    """The DER of a certificate (PEM or DER) that ``cryptography`` refuses and this module reads only by
    tolerating mbedTLS' explicit NULL on the ECDSA signature algorithm (self-signature verified); None for any
    other certificate or input."""
    try:
        der = _der_input(cert)
        return der if _load(der).sigalg_null_params else None
    except RatlsError:
        return None


def _key_type(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = cert.public_key()
    except (ValueError, TypeError) as e:
        raise RatlsError(f"certificate: unusable public key ({e})") from None
    except Exception as e:  # UnsupportedAlgorithm and friends
        raise RatlsError(f"certificate: unsupported public key ({e})") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return type(key).__name__


def parse_certificate(cert: Any, *, require_evidence: bool = True) -> RatlsCertificate:
    """Read an RA-TLS certificate (PEM or DER bytes/str, or a ``cryptography`` certificate). Structure only:
    nothing here says the evidence is genuine or bound; see :func:`check_binding` and the verifiers. A
    certificate without evidence raises unless ``require_evidence`` is False (format ``"none"``)."""
    from cryptography import x509

    der = _der_input(cert)
    loaded = _load(der)
    c = loaded.cert
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extensions = list(c.extensions)
            not_before, not_after = c.not_valid_before_utc, c.not_valid_after_utc
            subject = c.subject.rfc4514_string()
            serial = c.serial_number
    except x509.DuplicateExtension as e:
        raise RatlsError(f"certificate: extension {e.oid.dotted_string} appears more than once") from None
    except Exception as e:  # cryptography's lazy field parsing: fail closed on whatever it raises
        raise RatlsError(f"certificate: malformed extension or field ({e})") from None
    spki = loaded.spki
    key_type = _key_type(c)

    found: dict[str, tuple[bytes, bool]] = {}
    for ext in extensions:
        oid = ext.oid.dotted_string
        if isinstance(ext.value, x509.UnrecognizedExtension):
            if oid in _HANDLED_OIDS or oid in _EPID_OIDS:
                found[oid] = (ext.value.value, ext.critical)
            elif ext.critical:
                raise RatlsError(f"certificate: critical extension {oid} is not understood")

    common: dict[str, Any] = dict(public_key_spki=spki, public_key_type=key_type, serial_number=serial,
                                  subject=subject, not_before=not_before, not_after=not_after, der=der,
                                  x509_version_quirk=loaded.version_quirk,
                                  sigalg_null_params=loaded.sigalg_null_params, _tbs=loaded.tbs)
    endorsements = None
    if TCG_DICE_ENDORSEMENT_MANIFEST_OID in found:
        endorsements = parse_endorsements_extension(found[TCG_DICE_ENDORSEMENT_MANIFEST_OID][0])

    foreign = read_foreign(found, spki)  # Open Enclave, Intel sgx_ttls, Occlum: see inclavare.ratls.foreign
    if foreign is not None:
        return RatlsCertificate(endorsements=endorsements, **foreign, **common)

    if TCG_DICE_TAGGED_EVIDENCE_OID in found:
        value, critical = found[TCG_DICE_TAGGED_EVIDENCE_OID]
        te = parse_evidence_extension(value)
        if GRAMINE_QUOTE_OID in found:
            raw = found[GRAMINE_QUOTE_OID][0]
            if len(raw) > MAX_LEGACY_EXTENSION:
                raise RatlsError(f"Gramine quote extension {GRAMINE_QUOTE_OID}: {len(raw)} bytes exceeds the "
                                 f"{MAX_LEGACY_EXTENSION}-byte cap")
            check_companion_quote(te.tag, te.evidence, raw, spki, GRAMINE_QUOTE_OID)
        if endorsements is not None and te.tag != TAG_INTEL_TEE_QUOTE:
            raise RatlsError(f"certificate: endorsements extension with {te.evidence_type} evidence; endorsements "
                             "are defined only for Intel TEE quotes (tag 60000)")
        return RatlsCertificate(
            format="dice", oid=TCG_DICE_TAGGED_EVIDENCE_OID, tag=te.tag, evidence_type=te.evidence_type,
            evidence=te.evidence, claims_buffer=te.claims_buffer, claims=te.claims.as_dict(),
            custom_claims=dict(te.claims.custom), pubkey_hash_alg=te.claims.pubkey_hash_alg,
            pubkey_hash=te.claims.pubkey_hash, endorsements=endorsements,
            expected_report_data=report_data_for(te.claims_buffer), evidence_critical=critical, **common)

    legacy = [oid for oid in (*LEGACY_OIDS, GRAMINE_QUOTE_OID) if oid in found]
    if len(legacy) > 1:
        raise RatlsError(f"certificate: several legacy evidence extensions ({', '.join(legacy)}) and no DICE "
                         "evidence; which one binds the key is ambiguous")
    if legacy:
        oid = legacy[0]
        value, critical = found[oid]
        where = f"legacy evidence extension {oid}"
        if len(value) > MAX_LEGACY_EXTENSION:
            raise RatlsError(f"{where}: {len(value)} bytes exceeds the {MAX_LEGACY_EXTENSION}-byte cap")
        evidence_type = "sgx_ecdsa" if oid == GRAMINE_QUOTE_OID else LEGACY_OIDS[oid]
        tag = TAG_INTEL_TEE_QUOTE if evidence_type in ("sgx_ecdsa", "tdx_ecdsa") else tag_for(evidence_type)
        actual = evidence_type_of(tag, value, where=where)
        if actual != evidence_type:
            raise RatlsError(f"{where}: the extension is for {evidence_type} but holds a {actual} quote")
        if endorsements is not None and tag != TAG_INTEL_TEE_QUOTE:
            raise RatlsError(f"certificate: endorsements extension with {evidence_type} evidence; endorsements "
                             "are defined only for Intel TEE quotes")
        fmt = "gramine" if oid == GRAMINE_QUOTE_OID else "legacy"
        binding = spki if (fmt == "gramine" or key_type != "rsa") else _pkcs1_of(spki)
        if fmt == "legacy" and key_type not in ("ec", "rsa"):
            raise RatlsError(f"certificate: legacy RA-TLS binds EC or RSA keys only, this key is {key_type}")
        return RatlsCertificate(
            format=fmt, oid=oid, tag=None, evidence_type=evidence_type, evidence=value, claims_buffer=None,
            claims={}, custom_claims={}, pubkey_hash_alg=None, pubkey_hash=None, endorsements=endorsements,
            expected_report_data=hashlib.sha256(binding).digest().ljust(REPORT_DATA_SIZE, b"\x00"),
            evidence_critical=critical, **common)

    if found.keys() & _EPID_OIDS:
        raise RatlsError("certificate: SGX EPID (IAS report) evidence is not supported")
    if endorsements is not None:
        raise RatlsError("certificate: endorsements extension without evidence")
    if require_evidence:
        raise RatlsError("certificate: no evidence (neither the DICE extension 2.23.133.5.4.9 nor a legacy "
                         "RA-TLS extension); the peer may be using the null attester")
    return RatlsCertificate(
        format="none", oid=None, tag=None, evidence_type=None, evidence=b"", claims_buffer=None, claims={},
        custom_claims={}, pubkey_hash_alg=None, pubkey_hash=None, endorsements=None,
        expected_report_data=bytes(REPORT_DATA_SIZE), **common)


# --------------------------------------------------------------------------------------------------
# Checks


def check_binding(parsed: RatlsCertificate, report_data_from_evidence: bytes) -> None:
    """Raise unless the evidence is bound to the certificate's key: for DICE, the pubkey-hash claim must be the
    hash of the certificate's SubjectPublicKeyInfo and the report data SHA-256(claims buffer); for legacy
    formats the report data must be SHA-256 of the key (see the module docstring). ``report_data_from_evidence``
    is the report data a verifier read from the (verified) evidence; bytes after the 32-byte hash must be zero."""
    if parsed.format == "none":
        raise RatlsError("binding: the certificate carries no evidence, nothing binds its key")
    if parsed.format in FOREIGN_FORMATS:
        return check_foreign_binding(parsed, report_data_from_evidence)
    if parsed.format == "dice":
        if parsed.pubkey_hash is None or parsed.pubkey_hash_alg is None or parsed.claims_buffer is None:
            raise RatlsError("binding: the DICE evidence has no pubkey-hash claim")
        actual = hash_public_key(parsed.public_key_spki, parsed.pubkey_hash_alg)
        if not hmac.compare_digest(actual, parsed.pubkey_hash):
            raise RatlsError(f"binding: the evidence is bound to another key: pubkey-hash claim "
                             f"{parsed.pubkey_hash.hex()} != hash of the certificate's public key {actual.hex()}")
        if ttls_tdx_dice_bound(parsed, report_data_from_evidence):  # Intel sgx_ttls' TDX variant, see foreign.py
            return
        what = "SHA-256 of the claims buffer"
    elif parsed.format == "legacy" and parsed.public_key_type == "rsa":
        what = "SHA-256 of the certificate's PKCS#1 RSAPublicKey (legacy binding)"
    else:
        what = "SHA-256 of the certificate's SubjectPublicKeyInfo (legacy binding)"
    if not isinstance(report_data_from_evidence, bytes | bytearray | memoryview):
        raise RatlsError(f"binding: report data must be bytes, got {type(report_data_from_evidence).__name__}")
    rd = bytes(report_data_from_evidence)
    expected = parsed.expected_report_data[:32]
    if len(rd) < 32:
        raise RatlsError(f"binding: the evidence's report data is {len(rd)} bytes, too short for a SHA-256")
    if not hmac.compare_digest(rd[:32], expected):
        raise RatlsError(f"binding: wrong report data: the evidence carries {rd[:32].hex()}, expected {what} "
                         f"{expected.hex()} (evidence made for another key or claims)")
    if any(rd[32:]):
        raise RatlsError("binding: the evidence's report data is not zero after the 32-byte hash")


def _verify_self_signature(cert: x509.Certificate, tbs: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

    key = cert.public_key()
    try:
        params = cert.signature_algorithm_parameters
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, tbs, params)
        elif (isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PKCS1v15 | padding.PSS)
              and cert.signature_hash_algorithm is not None):
            key.verify(cert.signature, tbs, params, cert.signature_hash_algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, tbs)
        else:
            raise RatlsError(f"certificate: cannot check a {cert.signature_algorithm_oid.dotted_string} signature "
                             f"with a {type(key).__name__}")
    except InvalidSignature:
        raise RatlsError("certificate: the self-signature does not verify with the certificate's own key") from None
    except RatlsError:
        raise
    except Exception as e:  # unsupported algorithm combinations
        raise RatlsError(f"certificate: cannot check the self-signature ({e})") from None


def check_validity(cert: Any, as_of: datetime.datetime | None = None, *, verify_signature: bool = True) -> None:
    """Check a peer's certificate the way rats-tls' OpenSSL verify callback ends up judging it.

    rats-tls presents the certificate alone and tolerates exactly one verification error,
    X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: a self-signed certificate at depth 0 needs no trust anchor. So the
    certificate must be self-issued (issuer = subject, and an authority key id, if present, must name its own
    key), its self-signature must verify (OpenSSL skips this for self-signed leaves; we do not), and ``as_of``
    (default now) must lie within notBefore..notAfter: expired and not-yet-valid certificates are refused, with
    no further slack (rats-tls backdates notBefore by an hour when it makes certificates instead)."""
    from cryptography import x509

    der = cert.der if isinstance(cert, RatlsCertificate) else _der_input(cert)
    c, tbs = _load(der)[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if c.issuer != c.subject:
                raise RatlsError(f"certificate: not self-signed (issuer {c.issuer.rfc4514_string()!r}, subject "
                                 f"{c.subject.rfc4514_string()!r}); a peer certificate is accepted only as a "
                                 "self-signed certificate at depth 0")
            try:
                aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
            except x509.ExtensionNotFound:
                aki = None
            if aki is not None:
                try:
                    ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
                except x509.ExtensionNotFound:
                    ski = x509.SubjectKeyIdentifier.from_public_key(c.public_key()).digest
                if aki != ski:
                    raise RatlsError("certificate: its authority key identifier names another key; not "
                                     "self-signed")
            not_before, not_after = c.not_valid_before_utc, c.not_valid_after_utc
        except RatlsError:
            raise
        except Exception as e:
            raise RatlsError(f"certificate: malformed ({e})") from None
    if verify_signature:
        _verify_self_signature(c, tbs)
    now = as_of if as_of is not None else datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    if now < not_before:
        raise RatlsError(f"certificate: not yet valid (notBefore {not_before.isoformat()}, checked at "
                         f"{now.isoformat()}); check that both peers' clocks agree")
    if now > not_after:
        raise RatlsError(f"certificate: expired (notAfter {not_after.isoformat()}, checked at {now.isoformat()})")


# --------------------------------------------------------------------------------------------------
# Making


def _private_key(key: Any) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if key is None or key in ("ec", "ecdsa", "ec256", "ecc256"):
        return ec.generate_private_key(ec.SECP256R1())
    if key in ("rsa", "rsa3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if isinstance(key, str):
        if "-----BEGIN" not in key:
            raise RatlsError(f"key: {key!r} is neither 'ec', 'rsa' nor a PEM private key")
        key = key.encode()
    if isinstance(key, bytes | bytearray):
        try:
            key = serialization.load_pem_private_key(bytes(key), password=None)
        except (ValueError, TypeError) as e:
            raise RatlsError(f"key: not an unencrypted PEM private key ({e})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise RatlsError(f"key: EC curve {key.curve.name} is not supported (P-256 or P-384)")
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise RatlsError(f"key: RSA-{key.key_size} is too small (at least 2048 bits; rats-tls uses 3072)")
        return key
    raise RatlsError(f"key: unsupported key {type(key).__name__} (ECDSA P-256/P-384 or RSA)")


def make_certificate(evidence_kind: str | int, evidence_fn: Callable[[bytes], bytes] | None, key: Any = None,
                     custom_claims: Mapping[str, bytes] | None = None, legacy: bool = False,
                     endorsements: DcapCollateral | DiceEndorsements | None = None, *,
                     now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """Make a self-signed RA-TLS certificate and return ``(cert_pem, key_pem)``.

    ``evidence_kind``: an evidence type name (``sgx_ecdsa``, ``tdx_ecdsa``, ``sim``, ``sgx_la``, ``sev_snp``,
    ``sev``, ``csv``, ``intel_tee_report``), a DICE CBOR tag, or ``nullattester`` (no evidence extension, as
    rats-tls' null attester). ``evidence_fn(report_data)`` gets the 64-byte report data the evidence must carry
    and returns the raw evidence (the attester is the caller's). ``key``: None or ``"ec"`` (new ECDSA P-256),
    ``"rsa"`` (new RSA-3072), a private key object or PEM. ``legacy``: write rats-tls 0.6's raw-evidence
    extension instead of DICE (no custom claims, no endorsements). ``endorsements``: collateral for the
    2.23.133.5.4.2 extension (Intel quotes only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private_key = _private_key(key)
    public = private_key.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    extensions: list[tuple[str, bytes]] = []
    null = evidence_kind in ("nullattester", "null")
    if null:
        if custom_claims or endorsements is not None:
            raise RatlsError("nullattester: a certificate without evidence carries no claims or endorsements")
    else:
        if evidence_fn is None:
            raise RatlsError(f"evidence kind {evidence_kind!r}: an evidence function is required")
        tag = tag_for(evidence_kind)
        if legacy:
            if not isinstance(evidence_kind, str) or evidence_kind not in _LEGACY_OID_OF:
                raise RatlsError(f"legacy certificate: evidence kind {evidence_kind!r} has no legacy OID; use one "
                                 f"of {', '.join(sorted(_LEGACY_OID_OF))}")
            if custom_claims:
                raise RatlsError("legacy certificate: custom claims need the DICE format")
            if endorsements is not None:
                raise RatlsError("legacy certificate: endorsements need the DICE format")
            binding = spki
            if isinstance(private_key, rsa.RSAPrivateKey):
                binding = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
            evidence = _call(evidence_fn, hashlib.sha256(binding).digest().ljust(REPORT_DATA_SIZE, b"\x00"))
            oid = _LEGACY_OID_OF[evidence_kind]
            if len(evidence) > MAX_LEGACY_EXTENSION:
                raise RatlsError(f"legacy evidence: {len(evidence)} bytes exceeds the {MAX_LEGACY_EXTENSION}-byte "
                                 "cap")
            actual = evidence_type_of(tag, evidence, where="legacy evidence")
            if tag == TAG_INTEL_TEE_QUOTE and actual != LEGACY_OIDS[oid]:
                raise RatlsError(f"legacy evidence: {evidence_kind} evidence is a {actual} quote")
            extensions.append((oid, evidence))
        else:
            claims_buffer = build_claims_buffer(hash_public_key(spki), custom_claims)
            evidence = _call(evidence_fn, report_data_for(claims_buffer))
            extensions.append((TCG_DICE_TAGGED_EVIDENCE_OID, build_evidence_extension(tag, evidence, claims_buffer)))
            if endorsements is not None:
                if tag != TAG_INTEL_TEE_QUOTE:
                    raise RatlsError(f"endorsements: defined only for Intel TEE quotes, not {evidence_kind!r}")
                if isinstance(endorsements, DiceEndorsements):
                    value = build_endorsements_extension(endorsements.collateral, version=endorsements.version,
                                                         creation_datetime=endorsements.creation_datetime)
                else:
                    value = build_endorsements_extension(endorsements)
                extensions.append((TCG_DICE_ENDORSEMENT_MANIFEST_OID, value))

    t = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, SUBJECT_ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, SUBJECT_COMMON_NAME)])
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name).public_key(public)
               .serial_number(CERT_SERIAL_NUMBER)
               .not_valid_before(t - NOT_BEFORE_BACKDATE).not_valid_after(t + VALIDITY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
               .add_extension(ski, critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), critical=False))
    for oid, value in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value),
                                        critical=False)
    cert = builder.sign(private_key, hashes.SHA256())
    key_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), bytes(key_pem)


def _call(evidence_fn: Callable[[bytes], bytes], report_data: bytes) -> bytes:
    evidence = evidence_fn(report_data)
    if not isinstance(evidence, bytes | bytearray | memoryview):
        raise RatlsError(f"evidence function returned {type(evidence).__name__}, expected bytes")
    if not evidence:
        raise RatlsError("evidence function returned no evidence")
    return bytes(evidence)
