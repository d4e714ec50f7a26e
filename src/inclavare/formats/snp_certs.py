"""The X.509 certificates of AMD's key distribution service (VCEK/VLEK, ASK/ASVK, ARK) and AMD's VCEK
extensions, read through :mod:`inclavare.formats.der`.

Pure codecs: no I/O and no cryptography (verifying signatures is the attestation layer's job).

:func:`parse_certificate` is a small strict reader that keeps the exact TBS bytes for signature checks and
reads the serial number itself -- genuine VCEKs have serial number 0, which general-purpose X.509 libraries
deprecate. :func:`decode_vcek_extensions` reads AMD's extensions under 1.3.6.1.4.1.3704.1 (struct version,
product name, the SPLs, hwID, CSP ID). Malformed input raises :class:`~inclavare.formats.snp.SnpFormatError`
naming the structure, the field and the byte offset.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass

from inclavare.formats import pem
from inclavare.formats.der import (
    TAG_BOOLEAN,
    TAG_INTEGER,
    TAG_NULL,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    TAG_SET,
    DerReader,
)
from inclavare.formats.snp import SnpFormatError, TcbVersion

__all__ = [
    "AMD_OID",
    "OID_BASIC_CONSTRAINTS",
    "OID_KEY_USAGE",
    "OID_MGF1",
    "OID_RSASSA_PSS",
    "OID_SHA1",
    "OID_SHA384",
    "Certificate",
    "Extension",
    "PssParams",
    "VcekExtensions",
    "decode_vcek_extensions",
    "parse_certificate",
    "parse_pss_params",
    "pem_certificates",
]

_UTCTIME, _GENTIME = 0x17, 0x18
_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}

AMD_OID = "1.3.6.1.4.1.3704.1"
OID_COMMON_NAME = "2.5.4.3"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA1 = "1.3.14.3.2.26"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"


def _der_reader(data: bytes, what: str, pos: int = 0, end: int | None = None) -> DerReader:
    """A strict DER reader whose errors are SnpFormatErrors about ``what``."""

    def fail(field_name: str, offset: int, problem: str) -> SnpFormatError:
        return SnpFormatError(what, field_name, offset, problem)

    return DerReader(data, fail, pos, end)


def _decode_time(der: DerReader, field_name: str) -> datetime.datetime:
    start = der.pos
    tag, cstart, cend = der.read(field_name)
    text = der.data[cstart:cend]
    if tag == _UTCTIME and re.fullmatch(rb"\d{12}Z", text):
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:12]
    elif tag == _GENTIME and re.fullmatch(rb"\d{14}Z", text):
        year = int(text[:4])
        rest = text[4:14]
    else:
        raise der.fail(field_name, start, "not a DER UTCTime or GeneralizedTime (YYMMDDhhmmssZ)")
    try:
        return datetime.datetime(year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]),
                                 int(rest[8:10]), tzinfo=datetime.UTC)
    except ValueError as e:
        raise der.fail(field_name, start, f"impossible date: {e}") from None


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes  # the content of the extnValue OCTET STRING


@dataclass(frozen=True)
class Certificate:
    """An X.509 v3 certificate, read field by field; ``tbs`` is the exact signed bytes."""

    der: bytes
    tbs: bytes
    version: int  # 1, 2 or 3
    serial: int
    tbs_signature_algorithm: bytes  # the AlgorithmIdentifier inside the TBS (DER)
    signature_algorithm: bytes  # the outer AlgorithmIdentifier (DER); must equal the inner one
    signature_oid: str
    signature_params: bytes | None  # DER of the algorithm parameters, if present
    issuer: bytes  # the Name (DER), compared byte for byte
    subject: bytes
    issuer_cn: str | None
    subject_cn: str | None
    not_before: datetime.datetime
    not_after: datetime.datetime
    spki: bytes  # SubjectPublicKeyInfo (DER)
    extensions: tuple[Extension, ...]
    signature: bytes
    name: str = "certificate"

    def extension(self, oid: str) -> Extension | None:
        for ext in self.extensions:
            if ext.oid == oid:
                return ext
        return None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def self_issued(self) -> bool:
        return self.issuer == self.subject

    def basic_constraints_ca(self) -> bool:
        """True iff a basicConstraints extension says cA = TRUE."""
        ext = self.extension(OID_BASIC_CONSTRAINTS)
        if ext is None:
            return False
        der = _der_reader(ext.value, self.name)
        seq = der.sub(TAG_SEQUENCE, "basicConstraints")
        der.done("basicConstraints")
        ca = seq.boolean("basicConstraints.cA") if seq.peek_tag() == TAG_BOOLEAN else False
        if seq.peek_tag() == TAG_INTEGER:
            seq.integer("basicConstraints.pathLenConstraint")
        seq.done("basicConstraints")
        return ca


def _name(der: DerReader, field_name: str) -> tuple[bytes, str | None]:
    start = der.pos
    seq = der.sub(TAG_SEQUENCE, field_name)
    cn: str | None = None
    while not seq.at_end():
        rdn = seq.sub(TAG_SET, field_name)
        while not rdn.at_end():
            atv = rdn.sub(TAG_SEQUENCE, field_name)
            oid = atv.oid(field_name)
            vstart = atv.pos
            tag, cstart, cend = atv.read(field_name)
            atv.done(field_name)
            if oid == OID_COMMON_NAME:
                codec = _STRING_TAGS.get(tag)
                if codec is None:
                    raise der.fail(field_name, vstart, f"commonName has string tag {tag:#04x}")
                try:
                    cn = der.data[cstart:cend].decode(codec)
                except UnicodeDecodeError:
                    raise der.fail(field_name, vstart, "commonName is not valid text") from None
    return der.data[start:der.pos], cn


def parse_certificate(data: bytes, name: str = "certificate") -> Certificate:
    """Read a DER X.509 certificate strictly (no trailing bytes, TBS and outer algorithms equal)."""
    data = bytes(data)
    top = _der_reader(data, name)
    cert = top.sub(TAG_SEQUENCE, "Certificate")
    top.done("Certificate")
    tbs_start = cert.pos
    tbs = cert.sub(TAG_SEQUENCE, "tbsCertificate")
    tbs_bytes = data[tbs_start:cert.pos]
    outer_alg = cert.element("signatureAlgorithm")
    signature = cert.bit_string("signatureValue")
    cert.done("Certificate")

    version = 1
    if tbs.peek_tag() == 0xA0:
        vwrap = tbs.sub(0xA0, "version")
        version = vwrap.integer("version") + 1
        vwrap.done("version")
        if version not in (2, 3):
            raise top.fail("version", tbs_start, f"X.509 version {version} is not 1, 2 or 3")
    serial = tbs.integer("serialNumber")
    alg_pos = tbs.pos
    inner_alg = tbs.element("signature")
    if inner_alg != outer_alg:
        raise top.fail("signature", alg_pos, "TBS signature algorithm differs from the outer one")
    alg = _der_reader(data, name, alg_pos, alg_pos + len(inner_alg)).sub(TAG_SEQUENCE, "signature")
    sig_oid = alg.oid("signature.algorithm")
    params = None if alg.at_end() else alg.element("signature.parameters")
    alg.done("signature")
    issuer, issuer_cn = _name(tbs, "issuer")
    validity = tbs.sub(TAG_SEQUENCE, "validity")
    not_before = _decode_time(validity, "validity.notBefore")
    not_after = _decode_time(validity, "validity.notAfter")
    validity.done("validity")
    subject, subject_cn = _name(tbs, "subject")
    spki = tbs.element("subjectPublicKeyInfo")
    if spki[0] != TAG_SEQUENCE:
        raise top.fail("subjectPublicKeyInfo", tbs.pos - len(spki), "not a SEQUENCE")
    for tag, what in ((0x81, "issuerUniqueID"), (0x82, "subjectUniqueID")):
        if tbs.peek_tag() == tag:
            tbs.read(what)
    extensions: list[Extension] = []
    if tbs.peek_tag() == 0xA3:
        if version != 3:
            raise top.fail("extensions", tbs.pos, "extensions in a certificate that is not version 3")
        wrap = tbs.sub(0xA3, "extensions")
        seq = wrap.sub(TAG_SEQUENCE, "extensions")
        wrap.done("extensions")
        seen: set[str] = set()
        while not seq.at_end():
            epos = seq.pos
            ext = seq.sub(TAG_SEQUENCE, "extension")
            oid = ext.oid("extension.extnID")
            critical = ext.boolean("extension.critical") if ext.peek_tag() == TAG_BOOLEAN else False
            vstart, vend = ext.expect(TAG_OCTET_STRING, "extension.extnValue")
            ext.done("extension")
            if oid in seen:
                raise top.fail("extensions", epos, f"extension {oid} appears twice")
            seen.add(oid)
            extensions.append(Extension(oid, critical, data[vstart:vend]))
    tbs.done("tbsCertificate")
    return Certificate(der=data, tbs=tbs_bytes, version=version, serial=serial, tbs_signature_algorithm=inner_alg,
                       signature_algorithm=outer_alg, signature_oid=sig_oid, signature_params=params,
                       issuer=issuer, subject=subject, issuer_cn=issuer_cn, subject_cn=subject_cn,
                       not_before=not_before, not_after=not_after, spki=spki, extensions=tuple(extensions),
                       signature=signature, name=name)


@dataclass(frozen=True)
class PssParams:
    hash_oid: str
    mgf_oid: str
    mgf_hash_oid: str
    salt_length: int
    trailer_field: int


def parse_pss_params(params: bytes | None, what: str = "RSASSA-PSS parameters") -> PssParams:
    """RSASSA-PSS-params (RFC 4055), with the RFC's defaults for absent fields (SHA-1, MGF1-SHA-1, 20, 1)."""
    if params is None:
        return PssParams(OID_SHA1, OID_MGF1, OID_SHA1, 20, 1)
    top = _der_reader(params, what)
    seq = top.sub(TAG_SEQUENCE, "RSASSA-PSS-params")
    top.done("RSASSA-PSS-params")
    hash_oid, mgf_oid, mgf_hash, salt, trailer = OID_SHA1, OID_MGF1, OID_SHA1, 20, 1

    def hash_alg(der: DerReader, field_name: str) -> str:
        alg = der.sub(TAG_SEQUENCE, field_name)
        oid = alg.oid(field_name)
        if alg.peek_tag() == TAG_NULL:
            alg.expect(TAG_NULL, field_name)
        alg.done(field_name)
        return oid

    if seq.peek_tag() == 0xA0:
        w = seq.sub(0xA0, "hashAlgorithm")
        hash_oid = hash_alg(w, "hashAlgorithm")
        w.done("hashAlgorithm")
    if seq.peek_tag() == 0xA1:
        w = seq.sub(0xA1, "maskGenAlgorithm")
        m = w.sub(TAG_SEQUENCE, "maskGenAlgorithm")
        w.done("maskGenAlgorithm")
        mgf_oid = m.oid("maskGenAlgorithm")
        mgf_hash = hash_alg(m, "maskGenAlgorithm.parameters")
        m.done("maskGenAlgorithm")
    if seq.peek_tag() == 0xA2:
        w = seq.sub(0xA2, "saltLength")
        salt = w.integer("saltLength")
        w.done("saltLength")
    if seq.peek_tag() == 0xA3:
        w = seq.sub(0xA3, "trailerField")
        trailer = w.integer("trailerField")
        w.done("trailerField")
    seq.done("RSASSA-PSS-params")
    return PssParams(hash_oid, mgf_oid, mgf_hash, salt, trailer)


# ---------------------------------------------------------------------------------------------------------
# AMD's VCEK / VLEK extensions


@dataclass(frozen=True)
class VcekExtensions:
    """AMD's extensions of a VCEK or VLEK certificate (OIDs under 1.3.6.1.4.1.3704.1)."""

    struct_version: int
    product_name: str  # e.g. "Milan-B0", "Genoa", "Turin-B0"
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    fmc_spl: int | None  # Turin only
    hwid: bytes | None  # VCEK: the chip ID it was issued for (64 bytes; 8 for Turin)
    csp_id: str | None  # VLEK: the cloud provider it was issued to
    hwid_der_wrapped: bool = False

    @property
    def product_line(self) -> str:
        """The generation part of the product name ("Milan-B0" -> "Milan")."""
        return self.product_name.split("-", 1)[0]

    def tcb(self, turin: bool) -> TcbVersion:
        return TcbVersion.compose(bootloader=self.bl_spl, tee=self.tee_spl, snp=self.snp_spl,
                                  microcode=self.ucode_spl, fmc=self.fmc_spl if turin else None, turin=turin)


def _ext_der(cert: Certificate, oid: str, label: str, tag: int) -> bytes | None:
    ext = cert.extension(oid)
    if ext is None:
        return None
    der = _der_reader(ext.value, cert.name)
    start, end = der.expect(tag, label)
    der.done(label)
    return ext.value[start:end]


def _ext_spl(cert: Certificate, oid: str, label: str, required: bool = True) -> int | None:
    if cert.extension(oid) is None:
        if required:
            raise SnpFormatError(cert.name, label, 0, f"extension {oid} ({label}) is missing")
        return None
    ext = cert.extension(oid)
    assert ext is not None
    der = _der_reader(ext.value, cert.name)
    value = der.integer(label)
    der.done(label)
    if not 0 <= value <= 0xFF:
        raise SnpFormatError(cert.name, label, 0, f"SPL {value} is outside 0..255")
    return value


def _ext_string(cert: Certificate, oid: str, label: str) -> str | None:
    raw = _ext_der(cert, oid, label, 0x16)  # IA5String
    if raw is None:
        return None
    if any(b > 0x7F for b in raw):
        raise SnpFormatError(cert.name, label, 0, "IA5String holds non-ASCII bytes")
    return raw.decode("ascii")


def decode_vcek_extensions(cert: Certificate) -> VcekExtensions:
    """Read AMD's VCEK/VLEK extensions. hwID is taken as raw bytes (as AMD's KDS issues it); a DER OCTET
    STRING wrapper is also understood and flagged in ``hwid_der_wrapped``."""
    struct_version = _ext_spl(cert, AMD_OID + ".1", "structVersion")
    product = _ext_string(cert, AMD_OID + ".2", "productName")
    if product is None:
        raise SnpFormatError(cert.name, "productName", 0, f"extension {AMD_OID}.2 (productName) is missing")
    hwid: bytes | None = None
    wrapped = False
    ext = cert.extension(AMD_OID + ".4")
    if ext is not None:
        value = ext.value
        if len(value) in (8, 64):
            hwid = value
        elif len(value) in (10, 66) and value[:2] == bytes([TAG_OCTET_STRING, len(value) - 2]):
            hwid, wrapped = value[2:], True
        else:
            raise SnpFormatError(cert.name, "hwID", 0, f"{len(value)} bytes, expected a 64-byte (or Turin "
                                 "8-byte) chip ID")
    csp_id = _ext_string(cert, AMD_OID + ".5", "cspId")
    if hwid is not None and csp_id is not None:
        raise SnpFormatError(cert.name, "hwID", 0, "certificate carries both a hwID and a CSP ID")
    spl = {label: _ext_spl(cert, f"{AMD_OID}.3.{n}", label)
           for n, label in ((1, "blSPL"), (2, "teeSPL"), (3, "snpSPL"), (8, "ucodeSPL"))}
    fmc = _ext_spl(cert, AMD_OID + ".3.9", "fmcSPL", required=False)
    assert struct_version is not None
    return VcekExtensions(struct_version=struct_version, product_name=product, bl_spl=spl["blSPL"] or 0,
                          tee_spl=spl["teeSPL"] or 0, snp_spl=spl["snpSPL"] or 0, ucode_spl=spl["ucodeSPL"] or 0,
                          fmc_spl=fmc, hwid=hwid, csp_id=csp_id, hwid_der_wrapped=wrapped)


# ---------------------------------------------------------------------------------------------------------
# PEM


def pem_certificates(data: bytes | str) -> list[bytes]:
    """The DER certificates of a PEM bundle, in order (other PEM blocks and text between them are ignored)."""
    raw = data.encode("latin-1", "replace") if isinstance(data, str) else bytes(data)

    def fail(problem: str) -> SnpFormatError:
        return SnpFormatError("PEM bundle", "certificates", 0, problem)

    return [block.der for block in pem.blocks(raw, fail, allow_text=True) if block.label == "CERTIFICATE"]
