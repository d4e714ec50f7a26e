"""RA-TLS certificates: the DICE / CCC interoperable extensions, the legacy OIDs, key binding, and rejections.

Real certificates from ../shared/vectors/attestation/ratls are read in place (skipped when absent).
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation.api import AttestationError
from inclavare.attestation.collateral import DcapCollateral, from_bundle
from inclavare.formats.dcap import DcapQuote
from inclavare.formats.sgx import Attributes, ReportBody
from inclavare.ratls.cert import (
    GRAMINE_QUOTE_OID,
    RatlsCertificate,
    check_binding,
    check_validity,
    make_certificate,
    parse_certificate,
)
from inclavare.ratls.dice import (
    MAX_ENDORSEMENTS_EXTENSION,
    MAX_EVIDENCE_EXTENSION,
    TCG_DICE_ENDORSEMENT_MANIFEST_OID,
    TCG_DICE_TAGGED_EVIDENCE_OID,
    RatlsError,
    build_claims_buffer,
    build_endorsements_extension,
    build_evidence_extension,
    parse_claims_buffer,
    parse_endorsements_extension,
    parse_evidence_extension,
)
from inclavare.sim.quoting import SimQuotingService
from inclavare.sim.report import EnclaveIdentity, ReportKey
from tests.unit.sgx_helpers import vectors_root

VECTORS = vectors_root() / "attestation" / "ratls"
CCC_CERT = VECTORS / "ccc_rats_tls_cert.pem"
INCLAVARE_CERT = VECTORS / "inclavare_rats_tls_cert_sample.pem"
needs_ccc = pytest.mark.skipif(not CCC_CERT.exists(), reason=f"{CCC_CERT} is absent")
needs_inclavare = pytest.mark.skipif(not INCLAVARE_CERT.exists(), reason=f"{INCLAVARE_CERT} is absent")

# DER of rats-tls' subject/issuer name "O=Inclavare Containers, CN=RATS-TLS" (UTF8String), as in the CCC cert.
UPSTREAM_NAME_DER = bytes.fromhex("3032311d301b060355040a0c14496e636c617661726520436f6e7461696e65727331113"
                                  "00f06035504030c08524154532d544c53")
CLAIMS = {"key_0": b"value_0\x00", "key_1": b"value_1\x00"}


# --------------------------------------------------------------------------------------------------
# Synthetic evidence of every type: a header the parser recognises, the report data at the TEE's offset

def _quote(version: int, key_type: int, tee_type: int, rd_offset: int, size: int) -> Callable[[bytes], bytes]:
    def make(report_data: bytes) -> bytes:
        buf = bytearray(size)
        struct.pack_into("<HHI", buf, 0, version, key_type, tee_type)
        buf[rd_offset:rd_offset + 64] = report_data
        return bytes(buf)
    return make


def _blob(rd_offset: int, size: int, fill: int) -> Callable[[bytes], bytes]:
    def make(report_data: bytes) -> bytes:
        buf = bytearray([fill]) * size
        buf[rd_offset:rd_offset + 64] = report_data
        return bytes(buf)
    return make


# kind -> (evidence maker, report-data offset, DICE tag, evidence type parsed back)
KINDS: dict[str, tuple[Callable[[bytes], bytes], int, int, str]] = {
    "sgx_ecdsa": (_quote(3, 2, 0, 48 + 320, 1200), 48 + 320, 60000, "sgx_ecdsa"),
    "tdx_ecdsa": (_quote(4, 2, 0x81, 48 + 520, 1400), 48 + 520, 60000, "tdx_ecdsa"),
    "intel_tee_report": (_blob(128, 1024, 0x81), 128, 60001, "intel_tee_report"),
    "sgx_la": (_blob(320, 432, 0x11), 320, 60002, "sgx_la"),
    "sev_snp": (_blob(0x50, 1184, 0x02), 0x50, 0x1A7504, "sev_snp"),
    "sev": (_blob(0x40, 800, 0x05), 0x40, 0x1A7505, "sev"),
    "csv": (_blob(0x20, 900, 0x06), 0x20, 0x1A7506, "csv"),
}
LEGACY_OID = {"sgx_ecdsa": "1.2.840.113741.1337.6", "tdx_ecdsa": "1.2.840.113741.1337.8",
              "sgx_la": "1.2.840.113741.1337.14", "sev_snp": "1.2.840.113741.1337.20",
              "sev": "1.2.840.113741.1337.22", "csv": "1.2.840.113741.1337.24"}


def _sgx_body(quote: bytes) -> ReportBody:
    body = DcapQuote.parse(quote).body
    assert isinstance(body, ReportBody)
    return body


def _report_data(kind: str, evidence: bytes) -> bytes:
    off = KINDS[kind][1]
    return evidence[off:off + 64]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _spki(key: Any) -> bytes:
    return bytes(key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))


# --------------------------------------------------------------------------------------------------
# Real certificates


@needs_ccc
def test_ccc_interoperable_certificate() -> None:
    p = parse_certificate(CCC_CERT.read_bytes())
    assert (p.format, p.oid, p.tag, p.evidence_type) == ("dice", TCG_DICE_TAGGED_EVIDENCE_OID, 60000, "sgx_ecdsa")
    assert len(p.evidence) == 4734 and p.claims_buffer is not None and len(p.claims_buffer) == 81
    assert list(p.claims) == ["pubkey-hash", "key_0", "key_1"]
    assert p.custom_claims == CLAIMS
    assert p.pubkey_hash_alg == 1
    assert p.pubkey_hash is not None
    assert p.pubkey_hash.hex() == "72c0b70c2092741a4cfda0c2465487faf132998617b0aad53118aa5d6e180006"
    assert hashlib.sha256(p.public_key_spki).digest() == p.pubkey_hash
    assert p.endorsements is None and not p.evidence_critical
    quote = _sgx_body(p.evidence)
    assert quote.mrenclave.hex() == "38e1b40b8c68186f359c97ecb6a89965d9d8638f2df06fbe18e84d79a266c041"
    rd = quote.reportdata
    assert rd.hex() == "3ef61b935603341747b96c602397da1c4761afe4eeed2cdc08cbf5f4ff61c533" + "00" * 32
    assert p.expected_report_data == rd
    check_binding(p, rd)
    # expired since 2024-02-22; fine inside its window (its ECDSA self-signature checks too)
    with pytest.raises(RatlsError, match="expired"):
        check_validity(p)
    check_validity(p, datetime.datetime(2023, 6, 1, tzinfo=datetime.UTC))
    with pytest.raises(RatlsError, match="not yet valid"):
        check_validity(p, datetime.datetime(2023, 2, 22, 16, 0, tzinfo=datetime.UTC))
    # upstream's certificate conventions, which make_certificate copies
    c = _cert(CCC_CERT.read_bytes())
    assert c.subject.public_bytes() == c.issuer.public_bytes() == UPSTREAM_NAME_DER
    assert c.serial_number == 1
    assert c.not_valid_after_utc - c.not_valid_before_utc == datetime.timedelta(days=365, hours=1)
    ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    point = c.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert ski.digest == hashlib.sha1(point).digest()  # OpenSSL's "hash" method


@needs_inclavare
def test_inclavare_legacy_sample_binds_the_pkcs1_key() -> None:
    p = parse_certificate(INCLAVARE_CERT.read_bytes())
    assert (p.format, p.oid, p.evidence_type, p.public_key_type) == (
        "legacy", "1.2.840.113741.1337.6", "sgx_ecdsa", "rsa")
    assert len(p.evidence) == 4728 and p.claims == {} and p.tag is None
    quote = _sgx_body(p.evidence)
    assert quote.mrenclave.hex() == "144e81488fc3d59ddbe69b03bd939a3b938d85b6a7c9897e2b09808ade956574"
    rd = quote.reportdata
    pkcs1 = _cert(INCLAVARE_CERT.read_bytes()).public_key().public_bytes(serialization.Encoding.DER,
                                                                          serialization.PublicFormat.PKCS1)
    assert rd[:32] == hashlib.sha256(pkcs1).digest() != hashlib.sha256(p.public_key_spki).digest()
    assert p.binding_key == pkcs1
    check_binding(p, rd)
    with pytest.raises(RatlsError, match="wrong report data"):
        check_binding(p, hashlib.sha256(p.public_key_spki).digest() + bytes(32))
    check_validity(p, datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))  # sha1WithRSAEncryption self-signature


# --------------------------------------------------------------------------------------------------
# Round trips


def _check_upstream_shape(pem: bytes, extension_oids: list[str], now: datetime.datetime) -> None:
    c = _cert(pem)
    assert c.version == x509.Version.v3 and c.serial_number == 1
    assert c.subject.public_bytes() == c.issuer.public_bytes() == UPSTREAM_NAME_DER
    assert c.not_valid_before_utc == now - datetime.timedelta(hours=1)
    assert c.not_valid_after_utc == now + datetime.timedelta(days=365)
    assert isinstance(c.signature_hash_algorithm, hashes.SHA256)
    oids = [e.oid.dotted_string for e in c.extensions]
    assert oids == ["2.5.29.19", "2.5.29.14", "2.5.29.35", *extension_oids]
    assert not any(e.critical for e in c.extensions)
    assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.public_bytes() == b"\x30\x00"
    aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest and aki.authority_cert_issuer is None


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("key_name", ["ec", "rsa"])
def test_dice_round_trip_every_tag(kind: str, key_name: str, ec_key: Any, rsa_key: Any) -> None:
    make, _, tag, parsed_type = KINDS[kind]
    key = ec_key if key_name == "ec" else rsa_key
    seen: list[bytes] = []

    def attester(report_data: bytes) -> bytes:
        seen.append(report_data)
        return make(report_data)

    now = datetime.datetime(2025, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    cert_pem, key_pem = make_certificate(kind, attester, key=key, custom_claims=CLAIMS, now=now)
    _check_upstream_shape(cert_pem, [TCG_DICE_TAGGED_EVIDENCE_OID], now)
    assert serialization.load_pem_private_key(key_pem, None).public_key() == key.public_key()
    p = parse_certificate(cert_pem)
    assert (p.format, p.tag, p.evidence_type, p.public_key_type) == ("dice", tag, parsed_type, key_name)
    assert p.custom_claims == CLAIMS and list(p.claims) == ["pubkey-hash", "key_0", "key_1"]
    assert p.pubkey_hash == hashlib.sha256(_spki(key)).digest()
    assert p.claims_buffer is not None
    assert seen == [hashlib.sha256(p.claims_buffer).digest() + bytes(32)] == [p.expected_report_data]
    check_binding(p, _report_data(kind, p.evidence))
    check_validity(p, now)


@pytest.mark.parametrize("kind", list(LEGACY_OID))
@pytest.mark.parametrize("key_name", ["ec", "rsa"])
def test_legacy_round_trip(kind: str, key_name: str, ec_key: Any, rsa_key: Any) -> None:
    key = ec_key if key_name == "ec" else rsa_key
    now = datetime.datetime(2025, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    cert_pem, _ = make_certificate(kind, KINDS[kind][0], key=key, legacy=True, now=now)
    _check_upstream_shape(cert_pem, [LEGACY_OID[kind]], now)
    p = parse_certificate(cert_pem)
    assert (p.format, p.oid, p.evidence_type) == ("legacy", LEGACY_OID[kind], kind)
    rd = _report_data(kind, p.evidence)
    fmt = serialization.PublicFormat.PKCS1 if key_name == "rsa" else serialization.PublicFormat.SubjectPublicKeyInfo
    bound = key.public_key().public_bytes(serialization.Encoding.DER, fmt)
    assert rd == hashlib.sha256(bound).digest() + bytes(32)
    check_binding(p, rd)


def test_null_attester_certificate_has_no_evidence() -> None:
    cert_pem, _ = make_certificate("nullattester", None)
    assert [e.oid.dotted_string for e in _cert(cert_pem).extensions] == ["2.5.29.19", "2.5.29.14", "2.5.29.35"]
    with pytest.raises(RatlsError, match="no evidence"):
        parse_certificate(cert_pem)
    p = parse_certificate(cert_pem, require_evidence=False)
    assert p.format == "none" and p.evidence == b""
    with pytest.raises(RatlsError, match="no evidence"):
        check_binding(p, bytes(64))


def test_tdx_v5_quote_and_sha384_pubkey_hash() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    claims = build_claims_buffer(hashlib.sha384(_spki(key)).digest(), {"nonce": b"n" * 16}, hash_alg=7)
    ev = build_evidence_extension(60000, _quote(5, 2, 0x81, 64, 128)(bytes(64)), claims)
    te = parse_evidence_extension(ev)
    assert te.evidence_type == "tdx_ecdsa" and te.claims.pubkey_hash_alg == 7
    assert te.claims.custom == {"nonce": b"n" * 16}


# --------------------------------------------------------------------------------------------------
# Sim quotes (genuine format) and the endorsements extension

APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"ratls app").digest(), mrsigner=hashlib.sha256(b"ratls").digest(),
                      attributes=Attributes(0x4, 0x3), isvprodid=1, isvsvn=1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimQuotingService, ReportKey]:
    state = str(tmp_path_factory.mktemp("sim") / "state")
    return SimQuotingService.open(state), ReportKey.load(state)


def _sim_attester(sim: tuple[SimQuotingService, ReportKey]) -> Callable[[bytes], bytes]:
    qs, rk = sim
    return lambda report_data: qs.get_quote(rk.make_report(APP, report_data, qs.qe_target_info()))


@pytest.fixture(scope="module")
def sim_collateral(sim: tuple[SimQuotingService, ReportKey]) -> DcapCollateral:
    return from_bundle(sim[0].platform.collateral_bundle())


def test_sim_quote_certificate_with_endorsements(sim: Any, sim_collateral: DcapCollateral) -> None:
    cert_pem, _ = make_certificate("sim", _sim_attester(sim), custom_claims=CLAIMS, endorsements=sim_collateral)
    p = parse_certificate(cert_pem)
    assert p.evidence_type == "sgx_ecdsa" and p.endorsements is not None
    check_binding(p, _sgx_body(p.evidence).reportdata)
    check_validity(p)
    got = p.collateral
    assert got is not None
    for name in ("tcb_info_raw", "tcb_info_signature", "tcb_info_issuer_chain", "qe_identity_raw",
                 "qe_identity_signature", "qe_identity_issuer_chain", "pck_crl", "root_ca_crl",
                 "pck_crl_issuer_chain"):
        assert getattr(got, name) == getattr(sim_collateral, name), name
    # the wire shape rats-tls writes: tag 60000, 8 entries, VERSION as a 4-byte uint (3.1), NUL-ended text
    ext = _cert(cert_pem).extensions.get_extension_for_oid(x509.ObjectIdentifier(TCG_DICE_ENDORSEMENT_MANIFEST_OID))
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    raw = ext.value.value
    assert raw[:9] == bytes.fromhex("d9ea6088") + bytes.fromhex("1a00010003")
    e = p.endorsements
    assert e.version == 0x00010003 and e.version_text == "3.1" and e.creation_datetime is None
    assert e.tcb_info.startswith(b'{"tcbInfo":' + sim_collateral.tcb_info_raw + b',"signature":"')
    assert e.tcb_info.endswith(b'"}\x00') and e.qe_identity_issuer_chain.endswith(b"-----\n\x00")
    assert e.pck_crl == sim_collateral.pck_crl


@pytest.mark.parametrize("version", [1, 3, 0x00010003])
def test_endorsements_versions_and_creation_time(sim_collateral: DcapCollateral, version: int) -> None:
    raw = build_endorsements_extension(sim_collateral, version=version, creation_datetime=b"2025-05-01T00:00:00Z")
    e = parse_endorsements_extension(raw)
    assert e.version == version and e.creation_datetime == b"2025-05-01T00:00:00Z"
    assert raw[3] == 0x89  # nine entries
    assert e.collateral.pck_crl == sim_collateral.pck_crl and e.collateral.root_ca_crl == sim_collateral.root_ca_crl
    if version == 1:
        assert e.pck_crl.startswith(b"-----BEGIN X509 CRL-----")
    elif version == 3:
        assert sim_collateral.pck_crl is not None
        assert e.pck_crl == sim_collateral.pck_crl.hex().encode() + b"\x00"


# --------------------------------------------------------------------------------------------------
# Rejections


def _dice_cert(key: Any, ext_value: bytes, *, oid: str = TCG_DICE_TAGGED_EVIDENCE_OID, critical: bool = False,
               extra: list[tuple[str, bytes, bool]] | None = None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Inclavare Containers"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "RATS-TLS")])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), ext_value), critical=critical))
    for o, v, crit in extra or []:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(o), v), critical=crit)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _sgx_ext(claims_buffer: bytes, report_data: bytes | None = None) -> bytes:
    rd = report_data if report_data is not None else hashlib.sha256(claims_buffer).digest() + bytes(32)
    return build_evidence_extension(60000, KINDS["sgx_ecdsa"][0](rd), claims_buffer)


def test_evidence_bound_to_another_key(ec_key: Any) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    claims = build_claims_buffer(hashlib.sha256(_spki(other)).digest())
    p = parse_certificate(_dice_cert(ec_key, _sgx_ext(claims)))
    with pytest.raises(RatlsError, match="bound to another key"):
        check_binding(p, _report_data("sgx_ecdsa", p.evidence))


def test_wrong_report_data(ec_key: Any) -> None:
    claims = build_claims_buffer(hashlib.sha256(_spki(ec_key)).digest(), CLAIMS)
    stale = hashlib.sha256(b"another claims buffer").digest() + bytes(32)
    p = parse_certificate(_dice_cert(ec_key, _sgx_ext(claims, stale)))
    with pytest.raises(RatlsError, match="wrong report data"):
        check_binding(p, _report_data("sgx_ecdsa", p.evidence))
    good = parse_certificate(_dice_cert(ec_key, _sgx_ext(claims)))
    rd = bytearray(_report_data("sgx_ecdsa", good.evidence))
    rd[40] = 1
    with pytest.raises(RatlsError, match="not zero after"):
        check_binding(good, bytes(rd))
    with pytest.raises(RatlsError, match="too short"):
        check_binding(good, bytes(rd[:16]))


def test_evidence_function_must_carry_the_claims() -> None:
    cert_pem, _ = make_certificate("sgx_ecdsa", lambda rd: KINDS["sgx_ecdsa"][0](bytes(64)))
    p = parse_certificate(cert_pem)
    with pytest.raises(RatlsError, match="wrong report data"):
        check_binding(p, _report_data("sgx_ecdsa", p.evidence))


def _claims(ec_key: Any) -> bytes:
    return build_claims_buffer(hashlib.sha256(_spki(ec_key)).digest(), CLAIMS)


@pytest.mark.parametrize("tag", [60003, 0x1A7501, 0x1A7507, 1])
def test_unknown_tag_is_refused(tag: int, ec_key: Any) -> None:
    raw = cbor2.dumps(cbor2.CBORTag(tag, [KINDS["sgx_ecdsa"][0](bytes(64)), _claims(ec_key)]))
    with pytest.raises(RatlsError, match="unknown CBOR tag"):
        parse_evidence_extension(raw)
    with pytest.raises(RatlsError, match="unknown CBOR tag"):
        parse_certificate(_dice_cert(ec_key, raw))


def test_oversized_extensions_are_refused(ec_key: Any, sim_collateral: DcapCollateral) -> None:
    big = KINDS["sgx_ecdsa"][0](bytes(64)) + bytes(MAX_EVIDENCE_EXTENSION)
    raw = cbor2.dumps(cbor2.CBORTag(60000, [big, _claims(ec_key)]))
    with pytest.raises(RatlsError, match="exceeds the 65536-byte cap"):
        parse_evidence_extension(raw)
    with pytest.raises(RatlsError, match="exceeds"):
        build_evidence_extension(60000, big, _claims(ec_key))
    with pytest.raises(RatlsError, match="exceeds the 65536-byte cap"):
        parse_certificate(_dice_cert(ec_key, raw))
    huge = build_endorsements_extension(sim_collateral, creation_datetime=bytes(MAX_ENDORSEMENTS_EXTENSION // 2))
    with pytest.raises(RatlsError, match="exceeds the 1048576-byte cap"):
        parse_endorsements_extension(huge + bytes(MAX_ENDORSEMENTS_EXTENSION // 2 + 1))
    with pytest.raises(RatlsError, match="cap"):
        build_endorsements_extension(sim_collateral, creation_datetime=bytes(MAX_ENDORSEMENTS_EXTENSION))
    legacy = _dice_cert(ec_key, KINDS["sgx_ecdsa"][0](bytes(64)) + bytes(70000), oid=LEGACY_OID["sgx_ecdsa"])
    with pytest.raises(RatlsError, match="exceeds the 65536-byte cap"):
        parse_certificate(legacy)


def test_missing_evidence_and_malformed_structure(ec_key: Any) -> None:
    quote = KINDS["sgx_ecdsa"][0](bytes(64))
    claims = _claims(ec_key)
    cases = {
        "expected a tagged": cbor2.dumps([quote, claims]),
        "2 \\(evidence, claims buffer\\)": cbor2.dumps(cbor2.CBORTag(60000, [quote])),
        "evidence is empty": cbor2.dumps(cbor2.CBORTag(60000, [b"", claims])),
        "entry 0 \\(evidence\\) must be a byte string": cbor2.dumps(cbor2.CBORTag(60000, ["q", claims])),
        "entry 1 \\(claims buffer\\)": cbor2.dumps(cbor2.CBORTag(60000, [quote, {"pubkey-hash": b""}])),
        "EPID": cbor2.dumps(cbor2.CBORTag(60000, [_quote(3, 0, 0, 64, 128)(bytes(64)), claims])),
        "unrecognised Intel quote": cbor2.dumps(cbor2.CBORTag(60000, [_quote(4, 2, 0x7, 64, 128)(bytes(64)), claims])),
        "no 'pubkey-hash' claim": cbor2.dumps(cbor2.CBORTag(60000, [quote, cbor2.dumps({"k": b"v"})])),
        "unsupported hash-alg-id 2": cbor2.dumps(cbor2.CBORTag(60000, [quote, cbor2.dumps(
            {"pubkey-hash": cbor2.dumps([2, bytes(32)])})])),
        "hash-value is 31 bytes": cbor2.dumps(cbor2.CBORTag(60000, [quote, cbor2.dumps(
            {"pubkey-hash": cbor2.dumps([1, bytes(31)])})])),
        "claim 'k' must be a byte string": cbor2.dumps(cbor2.CBORTag(60000, [quote, cbor2.dumps(
            {"pubkey-hash": cbor2.dumps([1, bytes(32)]), "k": "text"})])),
        "claim names must be text": cbor2.dumps(cbor2.CBORTag(60000, [quote, cbor2.dumps(
            {"pubkey-hash": cbor2.dumps([1, bytes(32)]), b"k": b"v"})])),
    }
    for reason, raw in cases.items():
        with pytest.raises(RatlsError, match=reason):
            parse_evidence_extension(raw)
    with pytest.raises(RatlsError, match="reserved"):
        build_claims_buffer(bytes(32), {"pubkey-hash": b"x"})


def test_tampered_cbor_encodings_are_refused(ec_key: Any) -> None:
    quote = KINDS["sgx_ecdsa"][0](bytes(64))
    claims = _claims(ec_key)
    good = build_evidence_extension(60000, quote, claims)
    assert parse_evidence_extension(good).claims.custom == CLAIMS
    # trailing byte, indefinite-length array, non-shortest length prefix of the claims bstr
    indefinite = good[:3] + b"\x9f" + good[4:] + b"\xff"
    head = cbor2.dumps(quote)
    longform = good[:4] + head + b"\x59" + struct.pack(">H", len(claims)) + claims
    for raw in (good + b"\x00", indefinite, longform):
        with pytest.raises(RatlsError):
            parse_evidence_extension(raw)
    # duplicate claim names in the claims buffer
    dup = b"\xa2" + cbor2.dumps("pubkey-hash") + cbor2.dumps(cbor2.dumps([1, bytes(32)])) \
        + cbor2.dumps("pubkey-hash") + cbor2.dumps(cbor2.dumps([1, b"\x01" * 32]))
    with pytest.raises(RatlsError, match="not valid CBOR"):
        parse_claims_buffer(dup)
    # pubkey-hash entry with a long-form uint for the algorithm id
    with pytest.raises(RatlsError, match="shortest-form"):
        parse_claims_buffer(cbor2.dumps({"pubkey-hash": b"\x82\x18\x01\x58\x20" + bytes(32)}))


def test_endorsements_rejections(sim_collateral: DcapCollateral, ec_key: Any) -> None:
    good = build_endorsements_extension(sim_collateral)
    assert parse_endorsements_extension(good).version == 0x00010003
    items = cbor2.loads(good).value
    one_byte_version = cbor2.dumps(cbor2.CBORTag(60000, [3, *items[1:]]))  # rats-tls asserts a 32-bit uint
    with pytest.raises(RatlsError, match="4-byte VERSION"):
        parse_endorsements_extension(one_byte_version)
    with pytest.raises(RatlsError, match="only for Intel TEE quotes"):
        parse_endorsements_extension(cbor2.dumps(cbor2.CBORTag(0x1A7504, list(items))))
    with pytest.raises(RatlsError, match="expected 8 or 9"):
        parse_endorsements_extension(good[:3] + b"\x87" + good[9:])
    broken = list(items)
    broken[1] = b'{"tcbInfo":{"x":1}}\x00'
    with pytest.raises(RatlsError, match="signature"):
        parse_endorsements_extension(good[:9] + b"".join(cbor2.dumps(i) for i in broken[1:]))
    # endorsements beside SNP evidence
    snp = build_evidence_extension(0x1A7504, KINDS["sev_snp"][0](bytes(64)), _claims(ec_key))
    cert = _dice_cert(ec_key, snp, extra=[(TCG_DICE_ENDORSEMENT_MANIFEST_OID, good, False)])
    with pytest.raises(RatlsError, match="only for Intel TEE quotes"):
        parse_certificate(cert)


def test_unknown_critical_extension_and_critical_dice(ec_key: Any) -> None:
    ext = _sgx_ext(_claims(ec_key))
    p = parse_certificate(_dice_cert(ec_key, ext, critical=True))  # rats-tls of 2022-12..2023-02 did
    assert p.evidence_critical
    with pytest.raises(RatlsError, match="critical extension 1.2.3.4 is not understood"):
        parse_certificate(_dice_cert(ec_key, ext, extra=[("1.2.3.4", b"\x05\x00", True)]))
    with pytest.raises(RatlsError, match="ambiguous"):
        q = KINDS["sgx_ecdsa"][0](bytes(64))
        parse_certificate(_dice_cert(ec_key, q, oid=LEGACY_OID["sgx_ecdsa"],
                                     extra=[(GRAMINE_QUOTE_OID, q, False)]))
    with pytest.raises(RatlsError, match="EPID"):
        parse_certificate(_dice_cert(ec_key, b"{}", oid="1.2.840.113741.1337.2"))


def test_validity_rejections(ec_key: Any) -> None:
    now = datetime.datetime(2025, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    cert_pem, _ = make_certificate("sgx_ecdsa", KINDS["sgx_ecdsa"][0], key=ec_key, now=now)
    check_validity(cert_pem, now - datetime.timedelta(minutes=59))  # the one-hour backdating
    with pytest.raises(RatlsError, match="not yet valid"):
        check_validity(cert_pem, now - datetime.timedelta(hours=2))
    with pytest.raises(RatlsError, match="expired"):
        check_validity(cert_pem, now + datetime.timedelta(days=366))
    # a certificate issued by someone else is not the tolerated self-signed depth-0 case
    c = _cert(cert_pem)
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some CA")])
    issued = (x509.CertificateBuilder().subject_name(c.subject).issuer_name(other).public_key(ec_key.public_key())
              .serial_number(2).not_valid_before(c.not_valid_before_utc).not_valid_after(c.not_valid_after_utc)
              .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    with pytest.raises(RatlsError, match="not self-signed"):
        check_validity(issued.public_bytes(serialization.Encoding.PEM), now)
    # self-issued name, but signed by another key
    forged = (x509.CertificateBuilder().subject_name(c.subject).issuer_name(c.subject).public_key(ec_key.public_key())
              .serial_number(3).not_valid_before(c.not_valid_before_utc).not_valid_after(c.not_valid_after_utc)
              .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    with pytest.raises(RatlsError, match="self-signature does not verify"):
        check_validity(forged.public_bytes(serialization.Encoding.DER), now)


# --------------------------------------------------------------------------------------------------
# Gramine's mis-encoded OID and rats-tls 0.6's version-4 certificates


def test_gramine_misencoded_quote_oid(rsa_key: Any) -> None:
    rd = hashlib.sha256(_spki(rsa_key)).digest() + bytes(32)  # Gramine hashes the SPKI, also for RSA keys
    pem = _dice_cert(rsa_key, KINDS["sgx_ecdsa"][0](rd), oid=GRAMINE_QUOTE_OID)
    der = _cert(pem).public_bytes(serialization.Encoding.DER)
    # the extnID as Gramine writes it: OID content = 06 09 2a 86 48 86 f8 4d 8a 39 06
    assert bytes.fromhex("060b06092a864886f84d8a3906") in der
    p = parse_certificate(pem)
    assert (p.format, p.oid, p.evidence_type) == ("gramine", GRAMINE_QUOTE_OID, "sgx_ecdsa")
    check_binding(p, rd)


def _resign_as_v4(cert_pem: bytes, key: Any) -> bytes:
    """The certificate with X.509 version field 3 (as rats-tls <= 0.6 wrote it), correctly signed."""
    c = _cert(cert_pem)
    tbs = c.tbs_certificate_bytes
    i = tbs.index(b"\xa0\x03\x02\x01\x02")
    tbs = tbs[:i + 4] + b"\x03" + tbs[i + 5:]
    sig: bytes = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    alg = bytes.fromhex("300a06082a8648ce3d040302")
    bits = b"\x03" + _der_len(len(sig) + 1) + b"\x00" + sig
    body = tbs + alg + bits
    return b"\x30" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")


def test_rats_tls_06_version_4_certificate(ec_key: Any) -> None:
    cert_pem, _ = make_certificate("sgx_ecdsa", KINDS["sgx_ecdsa"][0], key=ec_key, legacy=True)
    der = _resign_as_v4(cert_pem, ec_key)
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_certificate(der)
    p = parse_certificate(der)
    assert p.x509_version_quirk and p.format == "legacy" and p.der == der
    check_binding(p, _report_data("sgx_ecdsa", p.evidence))
    check_validity(p)  # the signature covers the original (version 3) TBSCertificate


# --------------------------------------------------------------------------------------------------
# Fuzz: mutated extension bytes give a result or RatlsError, nothing else

_MUTATION = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                               st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=4)


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, val in ops:
        i = pos % (len(buf) + 1)
        if op == "flip" and buf:
            buf[i % len(buf)] ^= val or 1
        elif op == "insert":
            buf[i:i] = bytes([val])
        elif op == "delete" and buf:
            del buf[i % len(buf)]
        elif op == "truncate":
            del buf[i:]
    return bytes(buf)


@pytest.fixture(scope="module")
def fuzz_seed() -> dict[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = build_claims_buffer(hashlib.sha256(_spki(key)).digest(), CLAIMS)
    ev = build_evidence_extension(60000, KINDS["sgx_ecdsa"][0](hashlib.sha256(claims).digest() + bytes(32)), claims)
    cert = _cert(_dice_cert(key, ev)).public_bytes(serialization.Encoding.DER)
    return {"evidence": ev, "claims": claims, "cert": cert}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_MUTATION)
def test_fuzz_evidence_extension(fuzz_seed: dict[str, bytes], ops: list[tuple[str, int, int]]) -> None:
    for name, parse in (("evidence", parse_evidence_extension), ("claims", parse_claims_buffer)):
        data = _mutate(fuzz_seed[name], ops)
        try:
            parse(data)
        except RatlsError:
            pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_MUTATION)
def test_fuzz_endorsements_extension(sim_collateral: DcapCollateral, ops: list[tuple[str, int, int]]) -> None:
    data = _mutate(build_endorsements_extension(sim_collateral), ops)
    try:
        parse_endorsements_extension(data)
    except RatlsError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_MUTATION)
def test_fuzz_certificate(fuzz_seed: dict[str, bytes], ops: list[tuple[str, int, int]]) -> None:
    data = _mutate(fuzz_seed["cert"], ops)
    try:
        p = parse_certificate(data)
    except RatlsError:
        return
    assert isinstance(p, RatlsCertificate)
    try:
        check_binding(p, _report_data("sgx_ecdsa", p.evidence))
    except RatlsError:
        pass
    try:
        check_validity(p)
    except RatlsError:
        pass


def test_ratls_error_is_an_attestation_error() -> None:
    assert issubclass(RatlsError, AttestationError)


# --------------------------------------------------------------------------------------------------
# Interop: a DICE extension built by hand, put into a certificate by Debian's openssl


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_req_addext_certificate_with_hand_built_dice_extension(tmp_path: Path, sim: Any) -> None:
    key = tmp_path / "key.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
                   check=True, capture_output=True)
    spki = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                          capture_output=True).stdout
    # the CCC format, spelled out with cbor2 only
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([1, hashlib.sha256(spki).digest()]), "key_0": b"interop"})
    quote = _sim_attester(sim)(hashlib.sha256(claims).digest() + bytes(32))
    ext = cbor2.dumps(cbor2.CBORTag(60000, [quote, claims]))
    cert = tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-new", "-key", str(key), "-days", "1",
                    "-subj", "/O=Inclavare Containers/CN=RATS-TLS",
                    "-addext", f"{TCG_DICE_TAGGED_EVIDENCE_OID}=DER:{ext.hex()}", "-out", str(cert)],
                   check=True, capture_output=True)
    p = parse_certificate(cert.read_bytes())
    assert (p.format, p.tag, p.evidence_type, p.custom_claims) == ("dice", 60000, "sgx_ecdsa", {"key_0": b"interop"})
    # and the other way round: openssl reads what make_certificate writes
    ours = tmp_path / "ours.pem"
    ours.write_bytes(make_certificate("sim", _sim_attester(sim))[0])
    text = subprocess.run(["openssl", "x509", "-in", str(ours), "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    assert "Version: 3 (0x2)" in text and "Serial Number: 1 (0x1)" in text and "2.23.133.5.4.9" in text
    assert "Issuer: O = Inclavare Containers, CN = RATS-TLS" in text
    assert p.evidence == quote and p.public_key_spki == spki
    check_binding(p, _sgx_body(p.evidence).reportdata)
    check_validity(p)
