"""RA-TLS certificates as mbedTLS-based stacks make them (Gramine's RA-TLS library, SGX SDK samples): the explicit
NULL parameter on the ECDSA signature algorithm, read through the pyasn1 fallback, end to end (parse, validity,
shelter verify, a real RATS-TLS handshake) and every other deviation refused; and Gramine's extension layouts
of every version (raw quote under the mis-encoded OID, DICE evidence, both), with forged variants refused.

Certificates are built here from sim quotes and re-encoded with pyasn1, then re-signed with the same key."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_modules import rfc5280

from inclavare.cli import shelter
from inclavare.formats.dcap import DcapQuote
from inclavare.formats.sgx import Attributes
from inclavare.ratls.cert import (
    GRAMINE_QUOTE_OID,
    check_binding,
    check_validity,
    make_certificate,
    null_param_der,
    parse_certificate,
)
from inclavare.ratls.dice import (
    TCG_DICE_TAGGED_EVIDENCE_OID,
    RatlsError,
    build_claims_buffer,
    build_evidence_extension,
    hash_public_key,
    report_data_for,
)
from inclavare.ratls.tls import RatsTlsConfig
from inclavare.ratls.verifiers import VERIFIERS, EvidenceRejected, VerifyOptions, verify_peer_certificate
from inclavare.sim.platform import SimPlatform
from inclavare.sim.quoting import SimQuotingService
from inclavare.sim.report import EnclaveIdentity, ReportKey
from tests.unit.ratls.test_ratls_cert import _MUTATION, _mutate
from tests.unit.ratls.test_ratls_tls import pair

ECDSA_SHA256 = "1.2.840.10045.4.3.2"
ECDSA_SHA384 = "1.2.840.10045.4.3.3"
NULL = b"\x05\x00"
P256_OID_DER = bytes.fromhex("06082a8648ce3d030107")
HASHES = {ECDSA_SHA256: hashes.SHA256(), ECDSA_SHA384: hashes.SHA384(), "1.2.840.10045.4.3.4": hashes.SHA512(),
          "1.2.840.10045.4.3.1": hashes.SHA224(), "1.2.840.10045.4.1": hashes.SHA1()}
APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"gramine app").digest(), mrsigner=hashlib.sha256(b"gr").digest(),
                      attributes=Attributes(0x4, 0x3), isvprodid=7, isvsvn=2)
OTHER_APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"another app").digest(), mrsigner=APP.mrsigner,
                            attributes=Attributes(0x4, 0x3), isvprodid=7, isvsvn=2)
TIMEOUT = 20.0


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("mbedtls-sim") / "state")
    SimPlatform.open(d)
    return d


@pytest.fixture(scope="module")
def quote_for(sim_dir: str) -> Callable[..., bytes]:
    qs, rk = SimQuotingService.open(sim_dir), ReportKey.load(sim_dir)

    def make(report_data: bytes, identity: EnclaveIdentity = APP) -> bytes:
        return qs.get_quote(rk.make_report(identity, report_data, qs.qe_target_info()))
    return make


@pytest.fixture(scope="module")
def options(sim_dir: str) -> VerifyOptions:
    return VerifyOptions(trust_sim=True, sim_root_fingerprints=(SimPlatform.open(sim_dir).root_ca_fingerprint(),))


def _der(pem_or_der: bytes) -> bytes:
    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).public_bytes(serialization.Encoding.DER)
    return pem_or_der


def _pem(der: bytes) -> bytes:
    import base64
    import textwrap

    b64 = base64.b64encode(der).decode()
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(textwrap.wrap(b64, 64))
            + "\n-----END CERTIFICATE-----\n").encode()


def _params(value: bytes | None) -> Any:
    return univ.noValue if value is None else value


def reencode(der: bytes, key: Any, *, inner: bytes | None = NULL, outer: bytes | None = NULL,
             inner_oid: str | None = None, outer_oid: str | None = None, sign_oid: str | None = None,
             edit_tbs: Callable[[bytes], bytes] | None = None, signature: bytes | None = None) -> bytes:
    """``der`` with the given parameters on the inner (TBSCertificate) and outer signature AlgorithmIdentifier,
    re-signed with ``key`` over the new TBSCertificate (the hash of ``sign_oid``, default the outer OID)."""
    cert, rest = decoder.decode(der, asn1Spec=rfc5280.Certificate())
    assert not rest
    oid = str(cert["signatureAlgorithm"]["algorithm"])

    def alg(o: str | None, p: bytes | None) -> Any:
        a = rfc5280.AlgorithmIdentifier()
        a["algorithm"] = univ.ObjectIdentifier(o or oid)
        if p is not None:
            a["parameters"] = p
        return a

    cert["tbsCertificate"]["signature"] = alg(inner_oid, inner)
    cert["signatureAlgorithm"] = alg(outer_oid, outer)
    tbs = encoder.encode(cert["tbsCertificate"])
    if edit_tbs is not None:
        tbs = edit_tbs(tbs)
    sig = signature if signature is not None else key.sign(tbs, ec.ECDSA(HASHES[sign_oid or outer_oid or oid]))
    body = tbs + encoder.encode(cert["signatureAlgorithm"]) + encoder.encode(univ.BitString.fromOctetString(sig))
    return b"\x30" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _key_pem(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def strict_and_null(ec_key: Any, quote_for: Callable[..., bytes]) -> tuple[bytes, bytes]:
    """A DICE certificate with a sim quote as we make it, and the same re-encoded mbedTLS-style."""
    pem, _ = make_certificate("sim", quote_for, ec_key, {"key_0": b"value_0\x00"})
    der = _der(pem)
    return der, reencode(der, ec_key)


# --------------------------------------------------------------------------------------------------
# The NULL-parameter certificate is read, validated and verified like the strict one


def test_null_parameter_certificate_is_read_like_the_strict_one(strict_and_null: tuple[bytes, bytes]) -> None:
    strict, null = strict_and_null
    assert null.count(bytes.fromhex("300c06082a8648ce3d0403020500")) == 2  # inner and outer
    with pytest.raises(ValueError, match="signature_alg"):
        x509.load_der_x509_certificate(null)
    s, n = parse_certificate(strict), parse_certificate(null)
    assert not s.sigalg_null_params and n.sigalg_null_params and not n.x509_version_quirk
    assert n.der == null and n.format == "dice" and n.evidence == s.evidence
    assert (n.claims_buffer, n.custom_claims, n.public_key_spki) == (s.claims_buffer, s.custom_claims,
                                                                    s.public_key_spki)
    assert (n.subject, n.serial_number, n.not_before, n.not_after) == (s.subject, s.serial_number, s.not_before,
                                                                       s.not_after)
    assert n.expected_report_data == s.expected_report_data
    check_binding(n, s.expected_report_data)
    check_validity(n)
    check_validity(null)
    check_validity(_pem(null))
    assert parse_certificate(_pem(null)).der == null
    assert null_param_der(_pem(null)) == null and null_param_der(strict) is None and null_param_der(b"junk") is None


def test_null_parameter_certificate_passes_the_verifier(strict_and_null: tuple[bytes, bytes],
                                                        options: VerifyOptions) -> None:
    peer = verify_peer_certificate(strict_and_null[1], VERIFIERS["sim"], enforced=True, options=options)
    assert peer.verified and peer.format == "dice" and peer.custom_claims == {"key_0": b"value_0\x00"}
    assert peer.certificate_der == strict_and_null[1]


def test_shelter_verifies_a_null_parameter_certificate(strict_and_null: tuple[bytes, bytes], sim_dir: str,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(SimPlatform.open(sim_dir).root_ca_pem())
    for name, data in (("cert.der", strict_and_null[1]), ("cert.pem", _pem(strict_and_null[1]))):
        (tmp_path / name).write_bytes(data)
        code = shelter.main(["verify", str(tmp_path / name), "--trust-sim", "--sim-root", str(root), "--json"])
        res = json.loads(capsys.readouterr().out)
        assert code == 0 and res["verified"] is True, res
        assert res["claims"]["ratls_format"] == "dice"
    # and a tampered one is not
    bad = bytearray(strict_and_null[1])
    bad[bad.index(b"RATS-TLS")] ^= 0x01
    (tmp_path / "bad.der").write_bytes(bytes(bad))
    code = shelter.main(["verify", str(tmp_path / "bad.der"), "--trust-sim", "--sim-root", str(root), "--json"])
    out, err = capsys.readouterr()
    assert code != 0 and "self-signature does not verify" in out + err


# --------------------------------------------------------------------------------------------------
# A real RATS-TLS handshake presenting the NULL-parameter certificate



def test_handshake_with_a_null_parameter_certificate(tls_library: str, strict_and_null: tuple[bytes, bytes],
                                                     ec_key: Any, options: VerifyOptions, sim_dir: str) -> None:
    null = strict_and_null[1]
    fps = options.sim_root_fingerprints
    served = RatsTlsConfig(certificate=_pem(null), private_key=_key_pem(ec_key))
    out = pair(served, RatsTlsConfig(trust_sim=True, sim_root_fingerprints=fps))
    assert "client_error" not in out and "server_error" not in out, out
    peer = out["client_peer"]
    assert out["echo"] == b"ping" and peer.verified and peer.certificate_der == null  # the exact bytes went out
    # mutual: the client presents it (DER this time) and the server verifies it
    from inclavare.ratls.attesters import SimAttester

    server = RatsTlsConfig(attester=SimAttester(sim_dir), mutual=True, trust_sim=True, sim_root_fingerprints=fps)
    client = RatsTlsConfig(certificate=null, private_key=_key_pem(ec_key), mutual=True, trust_sim=True,
                           sim_root_fingerprints=fps)
    out = pair(server, client)
    assert "client_error" not in out and "server_error" not in out, out
    assert out["server_peer"].verified and out["server_peer"].certificate_der == null


def test_a_tampered_null_parameter_certificate_is_neither_presented_nor_accepted(
        strict_and_null: tuple[bytes, bytes], ec_key: Any, options: VerifyOptions) -> None:
    from inclavare.ratls.tls import _load_material

    other = reencode(strict_and_null[0], ec.generate_private_key(ec.SECP256R1()))  # signed by another key
    with pytest.raises(RatlsError, match="not loadable"):
        _load_material(_pem(other), _key_pem(ec_key))
    with pytest.raises(EvidenceRejected, match="self-signature does not verify"):
        verify_peer_certificate(other, VERIFIERS["sim"], enforced=True, options=options)


# --------------------------------------------------------------------------------------------------
# Every other deviation is refused


@pytest.mark.parametrize(("kw", "message"), [
    (dict(inner=None), "TBSCertificate signature algorithm .* differs"),
    (dict(outer=None), "differs"),
    (dict(inner_oid=ECDSA_SHA384), "differs"),
    (dict(inner_oid=ECDSA_SHA384, outer_oid=ECDSA_SHA384, inner=P256_OID_DER, outer=P256_OID_DER),
     "only an explicit NULL"),
    (dict(inner=b"\x04\x00", outer=b"\x04\x00"), "only an explicit NULL"),
    (dict(inner_oid="1.2.840.10045.4.3.1", outer_oid="1.2.840.10045.4.3.1"), "1.2.840.10045.4.3.1 with parameters"),
    (dict(inner_oid="2.16.840.1.101.3.4.3.2", outer_oid="2.16.840.1.101.3.4.3.2", sign_oid=ECDSA_SHA256),
     "only an explicit NULL on ecdsa"),
    (dict(inner_oid="1.3.101.112", outer_oid="1.3.101.112", sign_oid=ECDSA_SHA256), "1.3.101.112 with parameters"),
])
def test_other_deviations_are_refused(strict_and_null: tuple[bytes, bytes], ec_key: Any, kw: dict[str, Any],
                                      message: str) -> None:
    der = reencode(strict_and_null[0], ec_key, **kw)
    with pytest.raises(RatlsError, match=message):
        parse_certificate(der)
    with pytest.raises(RatlsError, match=message):
        check_validity(der)
    assert null_param_der(der) is None


def test_trailing_bytes_tampering_and_other_signers_are_refused(strict_and_null: tuple[bytes, bytes],
                                                                ec_key: Any) -> None:
    strict, null = strict_and_null
    with pytest.raises(RatlsError, match="2 bytes follow the certificate"):
        parse_certificate(null + b"\x00\x00")
    with pytest.raises(RatlsError, match="not a valid X.509"):  # the strict certificate with garbage: as before
        parse_certificate(strict + b"\x00\x00")
    tampered = bytearray(null)
    tampered[tampered.index(b"RATS-TLS")] ^= 0x01  # TBS changed, signature kept
    with pytest.raises(RatlsError, match="self-signature does not verify over the received TBSCertificate"):
        parse_certificate(bytes(tampered))
    with pytest.raises(RatlsError, match="self-signature does not verify"):
        check_validity(bytes(tampered))
    other = reencode(strict, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(RatlsError, match="self-signature does not verify"):
        parse_certificate(other)
    # the NULL-parameter certificate carrying the signature over the canonical TBSCertificate: the signature
    # must cover exactly the bytes received
    canonical_sig = x509.load_der_x509_certificate(strict).signature
    with pytest.raises(RatlsError, match="self-signature does not verify"):
        parse_certificate(reencode(strict, ec_key, signature=canonical_sig))
    assert parse_certificate(reencode(strict, ec_key, inner=None, outer=None, signature=canonical_sig)).der == strict


def test_non_canonical_der_is_refused(strict_and_null: tuple[bytes, bytes], ec_key: Any) -> None:
    def long_form_serial(tbs: bytes) -> bytes:
        # serial 1 as 02 81 01 01 (a non-minimal length), the TBSCertificate header re-made around it
        i = tbs.index(b"\xa0\x03\x02\x01\x02\x02\x01\x01") + 5
        hdr = 2 + (tbs[1] & 0x7F if tbs[1] & 0x80 else 0)
        content = tbs[hdr:i] + b"\x02\x81\x01\x01" + tbs[i + 3:]
        return b"\x30" + _der_len(len(content)) + content

    der = reencode(strict_and_null[0], ec_key, edit_tbs=long_form_serial)
    with pytest.raises(RatlsError, match="canonical DER|not a valid X.509"):
        parse_certificate(der)
    # an explicit NULL with a non-canonical length (05 81 00)
    null = strict_and_null[1]
    bad = null.replace(bytes.fromhex("300c06082a8648ce3d0403020500"), bytes.fromhex("300d06082a8648ce3d040302058100"))
    with pytest.raises(RatlsError):
        parse_certificate(bad)


def test_strict_certificates_with_mismatched_algorithms_are_refused_too(strict_and_null: tuple[bytes, bytes],
                                                                         ec_key: Any) -> None:
    der = reencode(strict_and_null[0], ec_key, inner=None, outer=None, inner_oid=ECDSA_SHA384)
    x509.load_der_x509_certificate(der)  # cryptography itself does not compare them
    with pytest.raises(RatlsError, match="signature algorithm differs from the certificate's signatureAlgorithm"):
        parse_certificate(der)
    with pytest.raises(RatlsError, match="differs"):
        check_validity(der)


def test_null_parameter_and_version_quirk_together_are_refused(strict_and_null: tuple[bytes, bytes],
                                                               ec_key: Any) -> None:
    def v4(tbs: bytes) -> bytes:
        i = tbs.index(b"\xa0\x03\x02\x01\x02")
        return tbs[:i + 4] + b"\x03" + tbs[i + 5:]

    with pytest.raises(RatlsError):
        parse_certificate(reencode(strict_and_null[0], ec_key, edit_tbs=v4))


# --------------------------------------------------------------------------------------------------
# Gramine's layouts (tools/sgx/ra-tls/ra_tls_attest.c), built with sim quotes

GRAMINE_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "RATLS"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GramineDevelopers"),
                          x509.NameAttribute(NameOID.COUNTRY_NAME, "US")])


def _spki(key: Any) -> bytes:
    return bytes(key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))


def gramine_cert(key: Any, *, raw_quote: bytes | None, dice: bytes | None, null_params: bool = False) -> bytes:
    """A certificate shaped as Gramine's: CN=RATLS,O=GramineDevelopers,C=US, 2001-01-01..2030-12-31, basic
    constraints CA:FALSE, SKI/AKI, then the raw quote extension and/or the DICE one, SHA-256 signature."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = (x509.CertificateBuilder().subject_name(GRAMINE_NAME).issuer_name(GRAMINE_NAME).public_key(key.public_key())
         .serial_number(1)
         .not_valid_before(datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC))
         .not_valid_after(datetime.datetime(2030, 12, 31, 23, 59, 59, tzinfo=datetime.UTC))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
         .add_extension(ski, critical=False)
         .add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), critical=False))
    if raw_quote is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(GRAMINE_QUOTE_OID), raw_quote),
                            critical=False)
    if dice is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID), dice),
                            critical=False)
    der = b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return reencode(der, key) if null_params else der


def gramine_dice(key: Any, quote_for: Callable[..., bytes], identity: EnclaveIdentity = APP) -> bytes:
    claims = build_claims_buffer(hash_public_key(_spki(key)))  # only pubkey-hash, SHA-256 (hash-alg-id 1)
    return build_evidence_extension(60000, quote_for(report_data_for(claims), identity), claims)


def spki_report_data(key: Any) -> bytes:
    return hashlib.sha256(_spki(key)).digest() + bytes(32)


@pytest.fixture(scope="module")
def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())  # Gramine >= 1.4


@pytest.mark.parametrize("version", ["1.0-1.3 (RSA-3072)", "1.4-1.5 (P-384, mbedTLS < 3.5)", "1.6-1.7 (P-384)",
                                     "1.8+ (P-384, both extensions)"])
def test_gramine_certificates_of_every_version(version: str, p384: Any, quote_for: Callable[..., bytes],
                                               options: VerifyOptions) -> None:
    if version.startswith("1.0"):
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        key = p384
    raw = quote_for(spki_report_data(key))
    dice = gramine_dice(key, quote_for) if version.startswith("1.8") else None
    der = gramine_cert(key, raw_quote=raw, dice=dice, null_params=version.startswith("1.4"))
    p = parse_certificate(der)
    assert p.sigalg_null_params == version.startswith("1.4")
    assert p.format == ("dice" if dice else "gramine") and p.evidence_type == "sgx_ecdsa"
    check_validity(p)
    check_binding(p, DcapQuote.parse(p.evidence).body.reportdata)
    peer = verify_peer_certificate(der, VERIFIERS["sim"], enforced=False, options=options)
    assert peer.verified and peer.format == p.format, peer
    assert peer.claims["mrenclave"] == APP.mrenclave.hex()  # from the quote the format designates


def test_gramine_forgeries_are_refused(p384: Any, quote_for: Callable[..., bytes], options: VerifyOptions) -> None:
    other_key = ec.generate_private_key(ec.SECP384R1())
    good_raw, good_dice = quote_for(spki_report_data(p384)), gramine_dice(p384, quote_for)
    # legacy-only quote bound to another key: parsed, but the binding (and so the verifier) refuses it
    der = gramine_cert(p384, raw_quote=quote_for(spki_report_data(other_key)), dice=None, null_params=True)
    with pytest.raises(EvidenceRejected, match="wrong report data"):
        verify_peer_certificate(der, VERIFIERS["sim"], enforced=False, options=options)
    # both extensions, the raw quote bound to another key
    with pytest.raises(RatlsError, match="not SHA-256 of the certificate's SubjectPublicKeyInfo"):
        parse_certificate(gramine_cert(p384, raw_quote=quote_for(spki_report_data(other_key)), dice=good_dice))
    # both extensions, the raw quote from another enclave (a verifier reading only it would see another app)
    with pytest.raises(RatlsError, match="report body .* differs from the DICE quote's"):
        parse_certificate(gramine_cert(p384, raw_quote=quote_for(spki_report_data(p384), OTHER_APP),
                                       dice=good_dice))
    # both extensions, the DICE quote from another enclave
    with pytest.raises(RatlsError, match="quotes conflict"):
        parse_certificate(gramine_cert(p384, raw_quote=good_raw, dice=gramine_dice(p384, quote_for, OTHER_APP)))
    # a raw quote with another header (QE SVN) than the DICE quote
    header_changed = good_raw[:8] + bytes([good_raw[8] ^ 1]) + good_raw[9:]
    with pytest.raises(RatlsError, match="quote header"):
        parse_certificate(gramine_cert(p384, raw_quote=header_changed, dice=good_dice))
    # a raw "quote" that is no quote, beside the DICE evidence
    with pytest.raises(RatlsError, match="Gramine quote extension"):
        parse_certificate(gramine_cert(p384, raw_quote=b"\x03\x00\x02\x00" + bytes(60), dice=good_dice))
    # DICE evidence that is not a quote, beside a raw quote
    claims = build_claims_buffer(hash_public_key(_spki(p384)))
    report = build_evidence_extension(60002, bytes(432) + report_data_for(claims), claims)
    with pytest.raises(RatlsError, match="not an Intel quote"):
        parse_certificate(gramine_cert(p384, raw_quote=good_raw, dice=report))
    # the DICE quote is still bound through the claims: swapping in a quote for other claims is refused
    forged_dice = build_evidence_extension(60000, good_raw, claims)
    der = gramine_cert(p384, raw_quote=good_raw, dice=forged_dice)
    with pytest.raises(EvidenceRejected, match="wrong report data"):
        verify_peer_certificate(der, VERIFIERS["sim"], enforced=False, options=options)


# --------------------------------------------------------------------------------------------------
# Fuzz: a mutated NULL-parameter certificate is refused with RatlsError, or was still validly self-signed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_MUTATION)
def test_fuzz_null_parameter_certificate(strict_and_null: tuple[bytes, bytes], ops: list[tuple[str, int, int]]) -> None:
    data = _mutate(strict_and_null[1], ops)
    try:
        p = parse_certificate(data)
    except RatlsError:
        return
    check_validity(p)  # what was accepted carries a valid self-signature
