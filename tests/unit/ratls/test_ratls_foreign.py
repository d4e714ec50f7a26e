"""RA-TLS certificates of other stacks (Open Enclave, Intel sgx_ttls, Occlum), built here around sim quotes the
way each stack frames and binds them: the genuine shapes verify, forged framings and bindings are refused."""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation.api import AttestationError, Options
from inclavare.cli import shelter
from inclavare.formats.sgx import Attributes
from inclavare.ratls.appraise import verify_certificate
from inclavare.ratls.cert import check_binding, parse_certificate
from inclavare.ratls.dice import (
    TCG_DICE_TAGGED_EVIDENCE_OID,
    RatlsError,
    build_claims_buffer,
    build_evidence_extension,
    hash_public_key,
    report_data_for,
)
from inclavare.ratls.foreign import (
    MAX_FOREIGN_EXTENSION,
    OE_FORMAT_SGX_ECDSA,
    OE_FORMAT_TDX_ECDSA,
    check_foreign_binding,
    pem_public_key,
)
from inclavare.ratls.verifiers import VERIFIERS, EvidenceRejected, VerifyOptions, verify_peer_certificate
from inclavare.sim.platform import SimPlatform
from inclavare.sim.quoting import SimQuotingService
from inclavare.sim.report import EnclaveIdentity, ReportKey

OE_EVIDENCE = "1.3.6.1.4.1.311.105.2"
OE_EVIDENCE_OLD = "1.2.840.113556.10.1.2"
OE_REPORT = "1.3.6.1.4.1.311.105.1"
OE_REPORT_OLD = "1.2.840.113556.10.1.1"
TTLS = "1.2.840.113741.1.13.1"
OCCLUM = "1.2.840.113741.1"
RATS_TLS_SGX = "1.2.840.113741.1337.6"

APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"foreign app").digest(), mrsigner=hashlib.sha256(b"foreign").digest(),
                      attributes=Attributes(0x4, 0x3), isvprodid=2, isvsvn=1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Callable[[bytes], bytes], str, Path]:
    state = tmp_path_factory.mktemp("foreign-sim") / "state"
    qs, rk = SimQuotingService.open(str(state)), ReportKey.load(str(state))
    platform = SimPlatform.open(str(state))
    root = state.parent / "root.pem"
    root.write_bytes(platform.root_ca_pem())

    def quote(report_data: bytes) -> bytes:
        return qs.get_quote(rk.make_report(APP, report_data, qs.qe_target_info()))

    return quote, platform.root_ca_fingerprint(), root


def _spki(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert(key: Any, extensions: list[tuple[str, bytes]]) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Open Enclave SDK")])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False))
    for oid, value in extensions:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _sha1_resign(key: rsa.RSAPrivateKey, der: bytes) -> bytes:
    """The same RSA-2048 certificate signed with sha1WithRSAEncryption (cryptography refuses to make one): the
    AlgorithmIdentifiers differ in one byte and the signature keeps its 256-byte length."""
    sha256_alg = bytes.fromhex("300d06092a864886f70d01010b0500")
    assert der.count(sha256_alg) == 2
    der = der.replace(sha256_alg, sha256_alg[:12] + b"\x05" + sha256_alg[13:])
    cert = x509.load_der_x509_certificate(der)
    signature = key.sign(cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1())
    assert der.endswith(cert.signature) and len(signature) == len(cert.signature)
    return der[:-len(signature)] + signature


def _sha256_rd(data: bytes) -> bytes:
    return hashlib.sha256(data).digest().ljust(64, b"\x00")


def oe_evidence(quote: bytes, claims: bytes, *, version: int = 3, fmt: bytes = OE_FORMAT_SGX_ECDSA,
                size: int | None = None) -> bytes:
    data = quote + claims
    return struct.pack("<I16sQ", version, fmt, len(data) if size is None else size) + data


def oe_report(quote: bytes, *, version: int = 1, rtype: int = 2, size: int | None = None) -> bytes:
    return struct.pack("<IIQ", version, rtype, len(quote) if size is None else size) + quote


def _verify(der: bytes, fp: str) -> Any:
    return verify_peer_certificate(der, VERIFIERS["sim"], enforced=False,
                                   options=VerifyOptions(trust_sim=True, sim_root_fingerprints=(fp,)))


def _report_data(quote: bytes) -> bytes:
    return quote[48 + 320:48 + 384]


# --------------------------------------------------------------------------------------------------
# Genuine shapes


def test_pem_public_key_is_what_openssl_writes() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pem_public_key(_spki(key)) == pem + b"\x00"


@pytest.mark.parametrize("oid", [OE_EVIDENCE, OE_EVIDENCE_OLD])
def test_open_enclave_evidence_certificate_verifies(sim: Any, oid: str) -> None:
    quote_fn, fp, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pem_public_key(_spki(key))
    quote = quote_fn(_sha256_rd(pem))
    der = _cert(key, [(oid, oe_evidence(quote, pem))])
    p = parse_certificate(der)
    assert (p.format, p.oid, p.evidence_type, p.evidence) == ("openenclave", oid, "sgx_ecdsa", quote)
    assert p.claims == {"custom_claims_buffer": pem} and p.expected_report_data == _sha256_rd(pem)
    peer = _verify(der, fp)
    assert peer.verified and peer.format == "openenclave" and peer.tee == "sim"
    assert peer.claims["mrenclave"] == APP.mrenclave.hex()


@pytest.mark.parametrize("oid", [OE_REPORT, OE_REPORT_OLD])
def test_open_enclave_report_certificate_verifies(sim: Any, oid: str) -> None:
    quote_fn, fp, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    quote = quote_fn(_sha256_rd(pem_public_key(_spki(key))))
    der = _cert(key, [(oid, oe_report(quote))])
    p = parse_certificate(der)
    assert (p.format, p.evidence) == ("openenclave_report", quote)
    assert _verify(der, fp).verified


def test_intel_sgx_ttls_legacy_certificate_verifies(sim: Any) -> None:
    quote_fn, fp, _ = sim
    key = ec.generate_private_key(ec.SECP384R1())
    quote = quote_fn(_sha256_rd(pem_public_key(_spki(key))))
    der = _cert(key, [(TTLS, quote)])
    p = parse_certificate(der)
    assert (p.format, p.evidence_type, p.evidence) == ("intel_ttls", "sgx_ecdsa", quote)
    assert _verify(der, fp).format == "intel_ttls"


def test_intel_sgx_ttls_dice_certificate_uses_dice_and_checks_the_twin_quote(sim: Any) -> None:
    quote_fn, fp, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    claims = build_claims_buffer(hash_public_key(_spki(key)))
    quote = quote_fn(report_data_for(claims))
    dice = build_evidence_extension(60000, quote, claims)
    der = _cert(key, [(TTLS, quote), (TCG_DICE_TAGGED_EVIDENCE_OID, dice)])
    assert parse_certificate(der).format == "dice"
    assert _verify(der, fp).verified
    other = quote_fn(report_data_for(claims))  # a second quote for the same claims: not the one DICE carries
    with pytest.raises(RatlsError, match="different quotes"):
        parse_certificate(_cert(key, [(TTLS, other), (TCG_DICE_TAGGED_EVIDENCE_OID, dice)]))


def test_occlum_certificate_verifies_with_its_rsa_sha1_shape(sim: Any) -> None:
    quote_fn, fp, _ = sim
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    quote = quote_fn(_sha256_rd(_spki(key)))
    der = _sha1_resign(key, _cert(key, [(OCCLUM, quote)]))  # occlum_get_key_cert signs with SHA-1
    assert x509.load_der_x509_certificate(der).signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.5"
    p = parse_certificate(der)
    assert (p.format, p.oid, p.public_key_type) == ("occlum", OCCLUM, "rsa")
    assert _verify(der, fp).verified


def test_shelter_verify_reads_an_open_enclave_certificate(sim: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    quote_fn, _, root = sim
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pem_public_key(_spki(key))
    path = tmp_path / "oe.der"
    path.write_bytes(_cert(key, [(OE_EVIDENCE, oe_evidence(quote_fn(_sha256_rd(pem)), pem))]))
    code = shelter.main(["verify", str(path), "--trust-sim", "--sim-root", str(root), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["verified"] and res["claims"]["ratls_format"] == "openenclave"
    wrong = quote_fn(_sha256_rd(pem_public_key(_spki(ec.generate_private_key(ec.SECP256R1())))))
    path.write_bytes(_cert(key, [(OE_REPORT, oe_report(wrong))]))
    code = shelter.main(["verify", str(path), "--trust-sim", "--sim-root", str(root), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 1 and any("binding" in e for e in res["errors"])


def test_tdx_sgx_ttls_binding_is_sha384_over_48_bytes() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    digest = hashlib.sha384(pem_public_key(_spki(key))).digest()
    p = parse_certificate(_cert(key, [(TTLS, _tdx_quote(digest + bytes(16)))]))
    assert p.evidence_type == "tdx_ecdsa" and p.expected_report_data == digest.ljust(64, b"\x00")
    check_binding(p, digest + bytes(16))
    with pytest.raises(RatlsError, match="48-byte hash"):
        check_binding(p, digest + b"\x01" + bytes(15))
    with pytest.raises(RatlsError, match="SHA-384"):
        check_binding(p, hashlib.sha256(pem_public_key(_spki(key))).digest() + bytes(32))


# --------------------------------------------------------------------------------------------------
# Forgeries


@pytest.mark.parametrize("oid", [OE_EVIDENCE, OE_REPORT, TTLS, OCCLUM])
def test_evidence_for_another_key_is_refused(sim: Any, oid: str) -> None:
    quote_fn, fp, _ = sim
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    foreign_pem = pem_public_key(_spki(other))
    if oid == OE_EVIDENCE:  # the quote and claims of the other key, in this key's certificate
        value = oe_evidence(quote_fn(_sha256_rd(foreign_pem)), foreign_pem)
        with pytest.raises(RatlsError, match="another key"):
            parse_certificate(_cert(key, [(oid, value)]))
        return
    rd = _sha256_rd(_spki(other)) if oid == OCCLUM else _sha256_rd(foreign_pem)
    quote = quote_fn(rd)
    der = _cert(key, [(oid, oe_report(quote) if oid == OE_REPORT else quote)])
    with pytest.raises(EvidenceRejected, match="binding"):
        _verify(der, fp)
    result = verify_certificate(der, "auto", Options(trust_sim=True, sim_root_fingerprints=(fp,)))
    assert not result.verified and any("binding" in e for e in result.errors)


def test_open_enclave_binding_with_the_right_claims_but_a_quote_for_other_data(sim: Any) -> None:
    quote_fn, fp, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pem_public_key(_spki(key))
    der = _cert(key, [(OE_EVIDENCE, oe_evidence(quote_fn(_sha256_rd(b"something else")), pem))])
    with pytest.raises(EvidenceRejected, match="custom claims buffer"):
        _verify(der, fp)


def test_binding_refuses_nonzero_tail_and_short_report_data() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pem_public_key(_spki(key))
    quote = bytearray(struct.pack("<HHI", 3, 2, 0) + bytes(1100))
    p = parse_certificate(_cert(key, [(TTLS, bytes(quote))]))
    good = hashlib.sha256(pem).digest()
    check_foreign_binding(p, good + bytes(32))
    with pytest.raises(RatlsError, match="not zero"):
        check_binding(p, good + b"\x01" + bytes(31))
    with pytest.raises(RatlsError, match="too short"):
        check_binding(p, good[:16])


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda q, c: oe_evidence(q, c, fmt=OE_FORMAT_TDX_ECDSA), "TDX evidence"),
    (lambda q, c: oe_evidence(q, c, fmt=uuid.UUID("f228aa3f-de4d-49d3-884c-b2aa87a50da6").bytes), "EPID linkable"),
    (lambda q, c: oe_evidence(q, c, fmt=bytes(range(16))), "unknown"),
    (lambda q, c: oe_evidence(q, c, version=2), "header version 2"),
    (lambda q, c: oe_evidence(q, c)[:20], "too short for OE's 28-byte"),
    (lambda q, c: oe_evidence(q, c, size=len(q) + len(c) + 1), "header says"),
    (lambda q, c: oe_evidence(q, c, size=len(q)), "header says"),
    (lambda q, c: oe_evidence(q[:400], b""), "too short for an SGX quote"),
    (lambda q, c: oe_evidence(q[:432] + struct.pack("<I", 1 << 20) + q[436:], c), "runs past"),
    (lambda q, c: oe_evidence(struct.pack("<H", 4) + q[2:], c), "quote v3"),
    (lambda q, c: oe_evidence(q, c[:-1]), "custom claims buffer"),
    (lambda q, c: oe_evidence(q, b""), "custom claims buffer"),
])
def test_open_enclave_evidence_forgeries(sim: Any, mutate: Callable[[bytes, bytes], bytes], match: str) -> None:
    quote_fn, _, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pem_public_key(_spki(key))
    quote = quote_fn(_sha256_rd(pem))
    with pytest.raises(RatlsError, match=match):
        parse_certificate(_cert(key, [(OE_EVIDENCE, mutate(quote, pem))]))


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda q: oe_report(q, version=2), "report header version 2"),
    (lambda q: oe_report(q, rtype=1), "report type 1"),
    (lambda q: oe_report(q, size=len(q) - 1), "header says"),
    (lambda q: oe_report(q, size=1 << 40), "header says"),
    (lambda q: oe_report(q)[:10], "too short"),
    (lambda q: oe_report(q[:100]), "too short for a sgx_ecdsa quote"),
])
def test_open_enclave_report_forgeries(sim: Any, mutate: Callable[[bytes], bytes], match: str) -> None:
    quote_fn, _, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    quote = quote_fn(_sha256_rd(pem_public_key(_spki(key))))
    with pytest.raises(RatlsError, match=match):
        parse_certificate(_cert(key, [(OE_REPORT, mutate(quote))]))


@pytest.mark.parametrize("pair", [(OE_EVIDENCE, OCCLUM), (OE_REPORT, OE_EVIDENCE), (TTLS, OCCLUM),
                                  (OCCLUM, RATS_TLS_SGX), (OE_EVIDENCE_OLD, OE_EVIDENCE)])
def test_two_evidence_extensions_are_ambiguous(sim: Any, pair: tuple[str, str]) -> None:
    quote_fn, _, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pem_public_key(_spki(key))
    quote = quote_fn(_sha256_rd(pem))
    values = {OE_EVIDENCE: oe_evidence(quote, pem), OE_EVIDENCE_OLD: oe_evidence(quote, pem),
              OE_REPORT: oe_report(quote), TTLS: quote, OCCLUM: quote, RATS_TLS_SGX: quote}
    with pytest.raises(RatlsError, match="ambiguous"):
        parse_certificate(_cert(key, [(oid, values[oid]) for oid in pair]))


def test_dice_beside_a_non_ttls_foreign_extension_is_ambiguous(sim: Any) -> None:
    quote_fn, _, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    claims = build_claims_buffer(hash_public_key(_spki(key)))
    quote = quote_fn(report_data_for(claims))
    der = _cert(key, [(OCCLUM, quote), (TCG_DICE_TAGGED_EVIDENCE_OID, build_evidence_extension(60000, quote, claims))])
    with pytest.raises(RatlsError, match="ambiguous"):
        parse_certificate(der)


def test_oversized_and_wrong_kind_extensions(sim: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(RatlsError, match="cap"):
        parse_certificate(_cert(key, [(OCCLUM, bytes(MAX_FOREIGN_EXTENSION + 1))]))
    tdx = struct.pack("<HHI", 4, 2, 0x81) + bytes(1100)
    with pytest.raises(RatlsError, match="Occlum's RA-TLS holds an SGX quote"):
        parse_certificate(_cert(key, [(OCCLUM, tdx)]))
    with pytest.raises(RatlsError, match="OE remote report holds an SGX quote"):
        parse_certificate(_cert(key, [(OE_REPORT, oe_report(tdx))]))
    with pytest.raises(AttestationError):
        parse_certificate(_cert(key, [(TTLS, b"\x00" * 8)]))


def _tdx_quote(report_data: bytes) -> bytes:
    quote = bytearray(struct.pack("<HHI", 4, 2, 0x81) + bytes(1100))
    quote[48 + 520:48 + 584] = report_data  # TD report body: report data at 520
    return bytes(quote)


def test_sgx_ttls_tdx_dice_binds_sha384_of_the_claims() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    claims = build_claims_buffer(hash_public_key(_spki(key), 7), hash_alg=7)
    rd = hashlib.sha384(claims).digest() + bytes(16)
    quote = _tdx_quote(rd)
    p = parse_certificate(_cert(key, [(TCG_DICE_TAGGED_EVIDENCE_OID, build_evidence_extension(60000, quote, claims)),
                                      (TTLS, quote)]))
    assert (p.format, p.evidence_type) == ("dice", "tdx_ecdsa")
    check_binding(p, rd)
    check_binding(p, report_data_for(claims))  # the rats-tls rule still holds
    with pytest.raises(RatlsError, match="wrong report data"):
        check_binding(p, hashlib.sha384(claims).digest() + b"\x01" + bytes(15))
    with pytest.raises(RatlsError, match="wrong report data"):
        check_binding(p, hashlib.sha384(claims + b"x").digest() + bytes(16))
    # the SHA-384 rule is for TDX quotes only: an SGX quote must carry the SHA-256 of the claims
    sgx = parse_certificate(_cert(key, [(TCG_DICE_TAGGED_EVIDENCE_OID, build_evidence_extension(
        60000, struct.pack("<HHI", 3, 2, 0) + bytes(1100), claims))]))
    with pytest.raises(RatlsError, match="wrong report data"):
        check_binding(sgx, rd)
    # and the pubkey-hash claim must still name this key
    other = parse_certificate(_cert(ec.generate_private_key(ec.SECP384R1()), [
        (TCG_DICE_TAGGED_EVIDENCE_OID, build_evidence_extension(60000, quote, claims))]))
    with pytest.raises(RatlsError, match="another key"):
        check_binding(other, rd)


_FUZZ_KEY = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(oid=st.sampled_from([OE_EVIDENCE, OE_REPORT, TTLS, OCCLUM, "1.3.6.1.4.1.62397.1.1"]),
       head=st.sampled_from([b"", struct.pack("<I16sQ", 3, OE_FORMAT_SGX_ECDSA, 500), struct.pack("<IIQ", 1, 2, 500),
                             struct.pack("<HHI", 3, 2, 0), struct.pack("<HHI", 4, 2, 0x81), b"\x04\x82\x04\x00"]),
       body=st.binary(max_size=1500))
def test_arbitrary_extension_values_fail_closed(oid: str, head: bytes, body: bytes) -> None:
    der = _cert(_FUZZ_KEY, [(oid, head + body)])
    try:
        p = parse_certificate(der)
    except RatlsError as e:
        assert "\n" not in str(e)
        return
    # whatever parses must still be bound: random report data never is
    with pytest.raises(RatlsError, match="binding"):
        check_binding(p, bytes(64))


# --------------------------------------------------------------------------------------------------
# Phala dstack


DSTACK = "1.3.6.1.4.1.62397.1.1"
DSTACK_EVENT_LOG = "1.3.6.1.4.1.62397.1.2"


def _octets(data: bytes) -> bytes:
    n, size = len(data), (len(data).bit_length() + 7) // 8
    head = bytes([n]) if n < 0x80 else bytes([0x80 | size]) + n.to_bytes(size, "big")
    return b"\x04" + head + data


def _dstack_rd(spki: bytes) -> bytes:
    return hashlib.sha512(b"ratls-cert:" + spki).digest()


def test_dstack_certificate_verifies_and_binds_all_64_bytes(sim: Any) -> None:
    quote_fn, fp, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    quote = quote_fn(_dstack_rd(_spki(key)))
    der = _cert(key, [(DSTACK, _octets(quote)), (DSTACK_EVENT_LOG, _octets(b"[]"))])
    p = parse_certificate(der)
    assert (p.format, p.evidence_type, p.evidence) == ("dstack", "sgx_ecdsa", quote)
    assert p.expected_report_data == _dstack_rd(_spki(key))
    assert _verify(der, fp).format == "dstack"
    rd = _dstack_rd(_spki(key))
    with pytest.raises(RatlsError, match="ratls-cert"):
        check_binding(p, rd[:63] + bytes([rd[63] ^ 1]))  # the last byte counts too
    untagged = quote_fn(hashlib.sha512(_spki(key)).digest())
    with pytest.raises(EvidenceRejected, match="binding"):
        _verify(_cert(key, [(DSTACK, _octets(untagged))]), fp)


def test_dstack_leaf_signed_by_its_app_ca_is_bound_but_not_self_signed(sim: Any) -> None:
    quote_fn, fp, _ = sim
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    der = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "RA-TLS TEMP Cert")]))
           .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "App CA")]))
           .public_key(key.public_key()).serial_number(7)
           .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
           .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(DSTACK),
                                                     _octets(quote_fn(_dstack_rd(_spki(key))))), critical=False)
           .sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    result = verify_certificate(der, "auto", Options(trust_sim=True, sim_root_fingerprints=(fp,)))
    assert not result.verified
    assert any("not self-signed" in e for e in result.errors) and not any("binding" in e for e in result.errors)


@pytest.mark.parametrize(("value", "match"), [
    (lambda q: q, "OCTET STRING around the quote at byte 0: DER tag 0x03, expected 0x04"),
    (lambda q: _octets(q) + b"\x00", "1 unexpected bytes"),
    (lambda q: _octets(q)[:-1], "runs past the end"),
    (lambda q: b"\x04\x82\x00\x05" + q[:5], "non-minimal DER length"),
    (lambda q: b"\x04\x80" + q, "indefinite length is not DER"),
    (lambda q: _octets(q[:300]), "too short for a sgx_ecdsa quote"),
])
def test_dstack_framing_forgeries(sim: Any, value: Callable[[bytes], bytes], match: str) -> None:
    quote_fn, _, _ = sim
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(RatlsError, match=match):
        parse_certificate(_cert(key, [(DSTACK, value(quote_fn(_dstack_rd(_spki(key)))))]))
