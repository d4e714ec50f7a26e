"""AMD SEV-SNP: the report codec, AMD certificate reading, and SnpVerifier.

Real evidence (a Milan report, its VCEK, AMD's ASK/ARK bundles and trustee's known-bad VCEKs) is read in place
from ../shared/vectors/attestation (skipped with the reason when absent); expected values come from VECTORS.md.
Everything else -- other products, VLEKs, v3/v5 reports, out-of-date TCBs, forged chains -- is built here with
cryptography and verified by an SnpVerifier pinned to the test's own ARK, next to a default verifier that must
refuse the same evidence.
"""

from __future__ import annotations

import datetime
import struct
import warnings
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation.api import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Options,
    Result,
    VerificationError,
)
from inclavare.attestation.snp import AMD_ARK_SHA256, SnpCollateral, SnpVerifier
from inclavare.formats.snp import (
    REPORT_SIZE,
    FirmwareVersion,
    GuestPolicy,
    PlatformInfo,
    SnpFormatError,
    SnpReport,
    TcbVersion,
)
from inclavare.formats.snp_certs import decode_vcek_extensions, parse_certificate, pem_certificates
from tests.unit.sgx_helpers import vectors_root

UTC = datetime.UTC
IN_WINDOW = datetime.datetime(2024, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------
# real vectors

def vec(rel: str) -> bytes:
    path: Path = vectors_root() / "attestation" / rel
    if not path.is_file():
        pytest.skip(f"SNP vector {path} not found (set INCLAVARE_VECTORS)")
    return path.read_bytes()


def real_report() -> bytes:
    return vec("snp/gosevguest_attestation.bin")


def real_collateral() -> SnpCollateral:
    return SnpCollateral.load(vec("snp/gosevguest_vcek.der"), vec("roots/amd_ask_ark_milan.pem"), "go-sev-guest")


def negative_files() -> list[Path]:
    d = vectors_root() / "attestation" / "snp" / "negative"
    return sorted(d.iterdir()) if d.is_dir() else []


# Decoded fields of snp/gosevguest_attestation.bin as listed in VECTORS.md.
REAL_CLAIMS = {
    "version": 2, "guest_svn": 0, "policy": 0xB0000, "vmpl": 0, "platform_info": 1, "signing_key": "VCEK",
    "reported_tcb": "0200000000000544", "current_tcb": "0200000000000544", "committed_tcb": "0200000000000544",
    "launch_tcb": "0200000000000544", "family_id": "00" * 16, "image_id": "00" * 16,
    "report_data": "0102030405" + "00" * 59,
    "measurement": "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01",
    "host_data": "00" * 32, "id_key_digest": "00" * 48, "author_key_digest": "00" * 48,
    "report_id": "8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a", "report_id_ma": "ff" * 32,
    "chip_id": "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564e"
               "a464cdce40c05f63c9b610c5068b006b5d",
    "debug": True, "smt": True, "migration_agent": False, "single_socket": False, "abi_major": 0, "abi_minor": 0,
    "current_version": "1.49.3", "committed_version": "1.49.3", "product": "Milan", "product_name": "Milan-B0",
    "reported_tcb_bootloader": 2, "reported_tcb_tee": 0, "reported_tcb_snp": 5, "reported_tcb_microcode": 68,
    "vcek_tcb_bootloader": 2, "vcek_tcb_tee": 0, "vcek_tcb_snp": 5, "vcek_tcb_microcode": 68,
}


# ---------------------------------------------------------------------------------------------------------
# a PKI of our own, shaped like AMD's

AMD = "1.3.6.1.4.1.3704.1"


def _der_int(v: int) -> bytes:
    body = v.to_bytes(v.bit_length() // 8 + 1, "big")
    return bytes([0x02, len(body)]) + body


def _ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode()


@cache
def rsa_key(n: int):
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(n: int):
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP384R1())


def amd_name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject, issuer, public_key, signing_key, *, ca: bool, exts=(),
              nb: datetime.datetime = datetime.datetime(2023, 1, 1, tzinfo=UTC),
              na: datetime.datetime = datetime.datetime(2030, 1, 1, tzinfo=UTC), pss_salt: int = 48) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import Encoding
    b = (x509.CertificateBuilder().subject_name(subject if isinstance(subject, x509.Name) else amd_name(subject))
         .issuer_name(issuer if isinstance(issuer, x509.Name) else amd_name(issuer)).public_key(public_key)
         .serial_number(1).not_valid_before(nb).not_valid_after(na))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    for oid, value in exts:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=pss_salt)
    return b.sign(signing_key, hashes.SHA384(), rsa_padding=pss).public_bytes(Encoding.DER)


def key_exts(product: str = "Milan-B0", *, bl: int = 3, tee: int = 0, snp: int = 8, ucode: int = 115,
             fmc: int | None = None, hwid: bytes | None = None, csp: str | None = None) -> list[tuple[str, bytes]]:
    exts = [(f"{AMD}.1", _der_int(0)), (f"{AMD}.2", _ia5(product)), (f"{AMD}.3.1", _der_int(bl)),
            (f"{AMD}.3.2", _der_int(tee)), (f"{AMD}.3.3", _der_int(snp)), (f"{AMD}.3.8", _der_int(ucode))]
    if fmc is not None:
        exts.append((f"{AMD}.3.9", _der_int(fmc)))
    if hwid is not None:
        exts.append((f"{AMD}.4", hwid))
    if csp is not None:
        exts.append((f"{AMD}.5", _ia5(csp)))
    return exts


CHIP = bytes(range(0x40, 0x80))
TURIN_CHIP = bytes(range(1, 9)) + bytes(56)
CPUID = {"Milan": (0x19, 0x01), "Genoa": (0x19, 0x11), "Turin": (0x1A, 0x02)}


@cache
def fake_roots(product: str) -> dict[str, bytes]:
    """Our ARK, ASK and ASVK for a product line (same key material, AMD's names)."""
    ark, ica = rsa_key(0), rsa_key(1)
    return {"ark": make_cert(f"ARK-{product}", f"ARK-{product}", ark.public_key(), ark, ca=True,
                             na=datetime.datetime(2045, 1, 1, tzinfo=UTC)),
            "ask": make_cert(f"SEV-{product}", f"ARK-{product}", ica.public_key(), ark, ca=True),
            "asvk": make_cert(f"SEV-VLEK-{product}", f"ARK-{product}", ica.public_key(), ark, ca=True)}


def pins(product: str) -> dict[str, str]:
    return {product: parse_certificate(fake_roots(product)["ark"]).sha256}


def make_report(product: str = "Milan", **kw: object) -> SnpReport:
    turin = product == "Turin"
    tcb = (TcbVersion.compose(fmc=1, bootloader=3, tee=0, snp=8, microcode=115, turin=True) if turin
           else TcbVersion.compose(bootloader=3, tee=0, snp=8, microcode=115)).raw
    fam, mod = CPUID[product]
    base = SnpReport(
        version=3, guest_svn=7, policy=GuestPolicy(0x1F0000 | 0x0105), family_id=b"\x11" * 16,
        image_id=b"\x22" * 16, vmpl=1, signature_algo=1, current_tcb=tcb, platform_info=PlatformInfo(0x25),
        flags=0, report_data=b"\x33" * 64, measurement=b"\x44" * 48, host_data=b"\x55" * 32,
        id_key_digest=b"\x66" * 48, author_key_digest=bytes(48), report_id=b"\x77" * 32, report_id_ma=b"\xff" * 32,
        reported_tcb=tcb, cpuid_fam_id=fam, cpuid_mod_id=mod, cpuid_step=1, chip_id=TURIN_CHIP if turin else CHIP,
        committed_tcb=tcb, current_version=FirmwareVersion(1, 55, 21), committed_version=FirmwareVersion(1, 55, 19),
        launch_tcb=tcb, launch_mit_vector=None, current_mit_vector=None, signature_r=0, signature_s=0)
    return replace(base, **kw)


def sign(report: SnpReport, key) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r, s = decode_dss_signature(key.sign(report.to_bytes()[:0x2A0], ec.ECDSA(hashes.SHA384())))
    return replace(report, signature_r=r, signature_s=s).to_bytes()


def scenario(line: str = "Milan", role: str = "VCEK", report: SnpReport | None = None,
             report_key: int = 0, **ext: object) -> tuple[bytes, SnpCollateral]:
    """A report signed by a VCEK/VLEK of our own product-line chain, and that chain as collateral."""
    roots = fake_roots(line)
    leaf_key = ec_key(0)
    turin = line == "Turin"
    defaults: dict[str, object] = {"product": f"{line}-B0"}
    if turin:
        defaults["fmc"] = 1
    if role == "VCEK":
        defaults["hwid"] = TURIN_CHIP[:8] if turin else CHIP
        ica = "ask"
    else:
        defaults["csp"] = "ExampleCloud"
        ica = "asvk"
    defaults.update(ext)
    leaf = make_cert(f"SEV-{role}", parse_certificate(roots[ica]).subject_cn, leaf_key.public_key(), rsa_key(1),
                     ca=False, exts=key_exts(**defaults))
    if report is None:
        report = make_report(line, flags=0 if role == "VCEK" else 1 << 2)
    return sign(report, ec_key(report_key)), SnpCollateral(leaf, [roots[ica], roots["ark"]])


def verify_own(evidence: bytes, coll: SnpCollateral, product: str = "Milan", **opts: object) -> Result:
    return SnpVerifier(pins(product)).verify(evidence, Options(collateral=coll, as_of=IN_WINDOW, **opts))


# ---------------------------------------------------------------------------------------------------------
# the real sample

def test_real_report_verifies_with_listed_claims() -> None:
    res = SnpVerifier().verify(real_report(), Options(collateral=real_collateral(), as_of=IN_WINDOW,
                                                      report_data=bytes([1, 2, 3, 4, 5])))
    assert (res.tee, res.verified, res.collateral_valid, res.tcb_status, res.errors) == (
        "snp", True, True, "UpToDate", [])
    for key, want in REAL_CLAIMS.items():
        assert res.claims[key] == want, key
    assert res.claims["tcb_detail"] == ""
    assert "cpuid_fam_id" not in res.claims  # a v2 report has no CPUID fields


def test_real_report_validity_follows_as_of() -> None:
    report, coll = real_report(), real_collateral()
    late = SnpVerifier().verify(report, Options(collateral=coll, as_of=datetime.datetime(2029, 9, 25, tzinfo=UTC)))
    assert late.verified and late.collateral_valid is False
    assert len(late.errors) == 1 and "VCEK certificate" in late.errors[0] and "expired 2029-09-24" in late.errors[0]
    early = SnpVerifier().verify(report, Options(collateral=coll, as_of=datetime.datetime(2022, 9, 23)))  # naive=UTC
    assert early.collateral_valid is False and "not valid before 2022-09-24" in early.errors[0]
    now = SnpVerifier().verify(report, Options(collateral=coll))
    assert now.collateral_valid is (datetime.datetime.now(UTC) < datetime.datetime(2029, 9, 24, 0, 55, 28, tzinfo=UTC))


def test_real_vcek_serial_zero_without_warnings() -> None:
    der = vec("snp/gosevguest_vcek.der")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_certificate(der).serial == 0
        SnpVerifier().verify(real_report(), Options(collateral=real_collateral(), as_of=IN_WINDOW))


def test_collateral_as_pem_bundle_and_extra_certs() -> None:
    import base64
    vcek = vec("snp/gosevguest_vcek.der")
    chain_pem = vec("roots/amd_ask_ark_milan.pem")
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(vcek) + b"-----END CERTIFICATE-----\n"
    res = SnpVerifier().verify(real_report(), Options(collateral=pem + chain_pem, as_of=IN_WINDOW))
    assert res.verified and res.claims["measurement"] == REAL_CLAIMS["measurement"]
    res = SnpVerifier().verify(real_report(), Options(collateral=vcek, extra_certs=tuple(pem_certificates(chain_pem)),
                                                      as_of=IN_WINDOW))
    assert res.verified
    coll = SnpCollateral.load(pem.decode() + chain_pem.decode())
    assert coll.vcek == vcek and len(coll.chain) == 2


def test_real_report_against_wrong_product_chain_or_missing_certs() -> None:
    genoa = SnpCollateral.load(vec("snp/gosevguest_vcek.der"), vec("roots/amd_ask_ark_genoa.pem"))
    with pytest.raises(CollateralError, match="'SEV-Milan'.*not among"):
        SnpVerifier().verify(real_report(), Options(collateral=genoa, as_of=IN_WINDOW))
    ask_only = SnpCollateral(vec("snp/gosevguest_vcek.der"), pem_certificates(vec("roots/amd_ask_ark_milan.pem"))[:1])
    with pytest.raises(CollateralError, match="ARK"):
        SnpVerifier().verify(real_report(), Options(collateral=ask_only, as_of=IN_WINDOW))
    with pytest.raises(CollateralError, match="no VCEK/VLEK"):
        SnpVerifier().verify(real_report(), Options(as_of=IN_WINDOW))
    with pytest.raises(CollateralError, match="not understood"):
        SnpVerifier().verify(real_report(), Options(collateral=12, as_of=IN_WINDOW))
    with pytest.raises(CollateralError):
        SnpVerifier().verify(real_report(), Options(collateral=b"\x30\x03\x02\x01", as_of=IN_WINDOW))


def test_report_data_binding() -> None:
    with pytest.raises(VerificationError, match="report_data at offset 0x50"):
        SnpVerifier().verify(real_report(), Options(collateral=real_collateral(), as_of=IN_WINDOW,
                                                    report_data=bytes([1, 2, 3, 4, 6])))
    with pytest.raises(VerificationError, match="65 bytes"):
        SnpVerifier().verify(real_report(), Options(collateral=real_collateral(), report_data=bytes(65)))


@pytest.mark.parametrize("path", negative_files() or [None], ids=lambda p: p.name if p else "absent")
def test_negative_vectors_refused(path: Path | None) -> None:
    if path is None:
        pytest.skip("snp/negative vectors not found (set INCLAVARE_VECTORS)")
    # VECTORS.md: trustee's test VCEKs are not signed by AMD -> leaf_signed_by_SEV-Milan = FAIL.
    coll = SnpCollateral.load(path.read_bytes(), vec("roots/amd_ask_ark_milan.pem"))
    with pytest.raises(VerificationError, match=r"VCEK certificate \(SEV-VCEK\) signed by ASK \(SEV-Milan\)"):
        SnpVerifier().verify(real_report(), Options(collateral=coll, as_of=IN_WINDOW))


def test_negative_vcek_extensions_decode() -> None:
    # VECTORS.md: hwID = 00 01 .. 3f; "legacy" raw, "new" DER OCTET STRING-wrapped; SPLs as listed.
    for name, spl, wrapped in (("legacy", (3, 0, 10, 169), False), ("new", (0, 0, 0, 30), True)):
        ext = decode_vcek_extensions(parse_certificate(vec(f"snp/negative/trustee_test_vcek_invalid_{name}.der")))
        assert (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl) == spl
        assert ext.hwid == bytes(range(64)) and ext.hwid_der_wrapped is wrapped and ext.product_name == "Milan-B0"


def test_every_signed_byte_flipped_is_refused() -> None:
    report, coll = real_report(), real_collateral()
    verifier = SnpVerifier()
    for off in range(0x2A0):
        bad = bytearray(report)
        bad[off] ^= 0x01
        with pytest.raises((VerificationError, EvidenceFormatError)):
            verifier.verify(bytes(bad), Options(collateral=coll, as_of=IN_WINDOW))
    for off in (0x2A0, 0x2C7, 0x2E8, 0x30F):  # low bytes of r and s
        bad = bytearray(report)
        bad[off] ^= 0x80
        with pytest.raises(VerificationError, match="signature"):
            verifier.verify(bytes(bad), Options(collateral=coll, as_of=IN_WINDOW))
    for off in (0x2D0, 0x318):  # bytes past the 48 that carry a P-384 value
        bad = bytearray(report)
        bad[off] = 1
        with pytest.raises(VerificationError, match="non-zero bytes past the 48"):
            verifier.verify(bytes(bad), Options(collateral=coll, as_of=IN_WINDOW))


def test_flipped_bytes_in_the_certificates_are_refused() -> None:
    report = real_report()
    vcek = vec("snp/gosevguest_vcek.der")
    ask, ark = pem_certificates(vec("roots/amd_ask_ark_milan.pem"))
    verifier = SnpVerifier()
    for which in ("vcek", "ask", "ark"):
        certs = {"vcek": vcek, "ask": ask, "ark": ark}
        der = certs[which]
        tbs = parse_certificate(der).tbs
        start = der.index(tbs)
        for off in range(start + 4, start + len(tbs), max(1, len(tbs) // 40)):
            bad = bytearray(der)
            bad[off] ^= 0x04
            certs[which] = bytes(bad)
            with pytest.raises(AttestationError):
                verifier.verify(report, Options(collateral=SnpCollateral(certs["vcek"], [certs["ask"], certs["ark"]]),
                                                as_of=IN_WINDOW))


# ---------------------------------------------------------------------------------------------------------
# forged chains

def test_fake_chain_refused_by_pinned_verifier_but_otherwise_sound() -> None:
    evidence, coll = scenario("Milan")
    with pytest.raises(VerificationError, match="not the pinned ARK of Milan"):
        SnpVerifier().verify(evidence, Options(collateral=coll, as_of=IN_WINDOW))
    res = verify_own(evidence, coll)  # the same evidence, trusting our ARK: everything else is in order
    assert res.verified and res.tcb_status == "UpToDate" and res.claims["vmpl"] == 1


def test_fake_vcek_under_real_ask_refused() -> None:
    ask, ark = pem_certificates(vec("roots/amd_ask_ark_milan.pem"))
    real_ask_subject = parse_certificate(ask).subject
    from cryptography import x509
    ask_name = x509.load_der_x509_certificate(ask).subject
    report = make_report("Milan", version=2, cpuid_fam_id=None, cpuid_mod_id=None, cpuid_step=None)
    leaf = make_cert("SEV-VCEK", ask_name, ec_key(0).public_key(), rsa_key(1), ca=False, exts=key_exts(hwid=CHIP))
    assert parse_certificate(leaf).issuer == real_ask_subject
    with pytest.raises(VerificationError, match=r"VCEK certificate \(SEV-VCEK\) signed by ASK.*does not verify"):
        SnpVerifier().verify(sign(report, ec_key(0)), Options(collateral=SnpCollateral(leaf, [ask, ark]),
                                                              as_of=IN_WINDOW))


def test_fake_ask_under_real_ark_refused() -> None:
    from cryptography import x509
    _, ark = pem_certificates(vec("roots/amd_ask_ark_milan.pem"))
    ark_name = x509.load_der_x509_certificate(ark).subject
    fake_ask = make_cert("SEV-Milan", ark_name, rsa_key(1).public_key(), rsa_key(0), ca=True)
    leaf = make_cert("SEV-VCEK", "SEV-Milan", ec_key(0).public_key(), rsa_key(1), ca=False, exts=key_exts(hwid=CHIP))
    report = make_report("Milan", version=2, cpuid_fam_id=None, cpuid_mod_id=None, cpuid_step=None)
    with pytest.raises(VerificationError, match=r"ASK \(SEV-Milan\) signed by ARK \(ARK-Milan\).*does not verify"):
        SnpVerifier().verify(sign(report, ec_key(0)), Options(collateral=SnpCollateral(leaf, [fake_ask, ark]),
                                                              as_of=IN_WINDOW))


def test_real_vcek_with_report_signed_by_another_key_refused() -> None:
    report = SnpReport.parse(real_report())
    forged = sign(replace(report, measurement=b"\x99" * 48), ec_key(1))
    with pytest.raises(VerificationError, match="ECDSA P-384 signature over bytes 0x000-0x29f does not verify"):
        SnpVerifier().verify(forged, Options(collateral=real_collateral(), as_of=IN_WINDOW))


def test_report_signed_by_other_key_under_own_chain_refused() -> None:
    evidence, coll = scenario("Genoa", report_key=1)
    with pytest.raises(VerificationError, match="does not verify with the VCEK key"):
        verify_own(evidence, coll, "Genoa")


def test_wrong_pss_salt_refused() -> None:
    roots = fake_roots("Milan")
    leaf = make_cert("SEV-VCEK", "SEV-Milan", ec_key(0).public_key(), rsa_key(1), ca=False,
                     exts=key_exts(hwid=CHIP), pss_salt=32)
    with pytest.raises(VerificationError, match="salt 48"):
        verify_own(sign(make_report(), ec_key(0)), SnpCollateral(leaf, [roots["ask"], roots["ark"]]))


# ---------------------------------------------------------------------------------------------------------
# VCEK / VLEK, products, report versions, TCB

def test_vlek_chain_verifies() -> None:
    evidence, coll = scenario("Genoa", "VLEK")
    res = verify_own(evidence, coll, "Genoa")
    assert res.verified and res.claims["signing_key"] == "VLEK" and res.claims["csp_id"] == "ExampleCloud"
    assert res.claims["vlek_tcb_snp"] == 8 and res.claims["product"] == "Genoa"


def test_vlek_vcek_mismatch_refused() -> None:
    evidence, coll = scenario("Milan", "VLEK", report=make_report("Milan", flags=0))  # report claims VCEK
    with pytest.raises(VerificationError, match="says VCEK signed it, but the certificate given is a VLEK"):
        verify_own(evidence, coll)
    evidence, coll = scenario("Milan", "VCEK", report=make_report("Milan", flags=1 << 2))  # report claims VLEK
    with pytest.raises(VerificationError, match="says VLEK signed it, but the certificate given is a VCEK"):
        verify_own(evidence, coll)


def test_vcek_issued_by_asvk_refused() -> None:
    roots = fake_roots("Milan")
    leaf = make_cert("SEV-VCEK", "SEV-VLEK-Milan", ec_key(0).public_key(), rsa_key(1), ca=False,
                     exts=key_exts(hwid=CHIP))
    with pytest.raises(VerificationError, match="not 'SEV-<product>'"):
        verify_own(sign(make_report(), ec_key(0)), SnpCollateral(leaf, [roots["asvk"], roots["ark"]]))


def test_vcek_without_hwid_or_vlek_without_csp_refused() -> None:
    roots = fake_roots("Milan")
    leaf = make_cert("SEV-VCEK", "SEV-Milan", ec_key(0).public_key(), rsa_key(1), ca=False, exts=key_exts())
    with pytest.raises(VerificationError, match="hwID"):
        verify_own(sign(make_report(), ec_key(0)), SnpCollateral(leaf, [roots["ask"], roots["ark"]]))
    leaf = make_cert("SEV-VLEK", "SEV-VLEK-Milan", ec_key(0).public_key(), rsa_key(1), ca=False, exts=key_exts())
    with pytest.raises(VerificationError, match="CSP ID"):
        verify_own(sign(make_report(flags=4), ec_key(0)), SnpCollateral(leaf, [roots["asvk"], roots["ark"]]))


def test_hwid_must_match_chip_id() -> None:
    evidence, coll = scenario("Milan", hwid=bytes(range(64)))
    with pytest.raises(VerificationError, match="chip_id at offset 0x1a0"):
        verify_own(evidence, coll)
    masked, coll = scenario("Milan", report=make_report(chip_id=bytes(64)))
    assert verify_own(masked, coll).claims["chip_id_masked"] is True


def test_turin_layout_and_eight_byte_hwid() -> None:
    evidence, coll = scenario("Turin")
    res = verify_own(evidence, coll, "Turin")
    assert res.verified and res.tcb_status == "UpToDate" and res.claims["product"] == "Turin"
    assert res.claims["reported_tcb"] == "0103000800000073"  # fmc bl tee snp . . . ucode
    assert (res.claims["reported_tcb_fmc"], res.claims["reported_tcb_bootloader"], res.claims["reported_tcb_snp"],
            res.claims["reported_tcb_microcode"]) == (1, 3, 8, 115)
    assert res.claims["cpuid_fam_id"] == 0x1A
    wrong_tail, coll = scenario("Turin", report=make_report("Turin", chip_id=TURIN_CHIP[:8] + b"\x01" + bytes(55)))
    with pytest.raises(VerificationError, match="chip_id"):
        verify_own(wrong_tail, coll, "Turin")
    no_fmc, coll = scenario("Turin", fmc=None)
    with pytest.raises(VerificationError, match="fmcSPL"):
        verify_own(no_fmc, coll, "Turin")


def test_tcb_out_of_date_names_components() -> None:
    old = TcbVersion.compose(bootloader=3, tee=0, snp=7, microcode=110).raw
    evidence, coll = scenario("Milan", report=make_report(reported_tcb=old))
    res = verify_own(evidence, coll)
    assert res.verified and res.collateral_valid and res.tcb_status == "OutOfDate"
    assert res.claims["tcb_detail"] == "snp: reported 7 < VCEK 8; microcode: reported 110 < VCEK 115"
    newer = TcbVersion.compose(bootloader=4, tee=1, snp=9, microcode=200).raw
    evidence, coll = scenario("Milan", report=make_report(reported_tcb=newer))
    assert verify_own(evidence, coll).tcb_status == "UpToDate"


def test_cpuid_must_match_product() -> None:
    evidence, coll = scenario("Milan", report=make_report("Genoa", chip_id=CHIP))
    with pytest.raises(VerificationError, match="is Genoa, but the VCEK is for Milan"):
        verify_own(evidence, coll)
    evidence, coll = scenario("Milan", product="Genoa-B1")
    with pytest.raises(VerificationError, match="productName 'Genoa-B1'"):
        verify_own(evidence, coll)


def test_v5_report_fields_and_policy_claims() -> None:
    report = make_report("Genoa", version=5, launch_mit_vector=0x3, current_mit_vector=0x7,
                         policy=GuestPolicy(0x3E0000 | 0x0203))  # bits 17-21, not 16
    evidence, coll = scenario("Genoa", report=report)
    c = verify_own(evidence, coll, "Genoa").claims
    assert (c["launch_mit_vector"], c["current_mit_vector"]) == (3, 7)
    assert (c["debug"], c["smt"], c["migration_agent"], c["single_socket"], c["policy_cxl_allow"]) == (
        True, False, True, True, True)
    assert (c["abi_major"], c["abi_minor"]) == (2, 3)
    assert (c["platform_smt_enabled"], c["platform_tsme_enabled"], c["platform_ecc_enabled"],
            c["platform_alias_check_complete"]) == (True, False, True, True)  # 0x25
    assert c["current_version"] == "1.55.21" and c["committed_version"] == "1.55.19"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("signature_algo", 2, "signature_algo at offset 0x34 is 2"),
    ("flags", 7 << 2, "not signed"),
    ("flags", 1 << 1, "mask_chip_key"),
])
def test_unsigned_or_unknown_algorithm_refused(field: str, value: int, message: str) -> None:
    evidence, coll = scenario("Milan", report=make_report(**{field: value}))
    with pytest.raises(VerificationError, match=message):
        verify_own(evidence, coll)


def test_zero_signature_refused() -> None:
    _, coll = scenario("Milan")
    with pytest.raises(VerificationError, match="zero"):
        verify_own(make_report().to_bytes(), coll)


# ---------------------------------------------------------------------------------------------------------
# sizes and the codec

@pytest.mark.parametrize(("size", "field", "offset"), [
    (0, "version", "0x0"), (0x2A0, "signature_r", "0x2a0"), (0x1A5, "chip_id", "0x1a5"),
    (REPORT_SIZE - 1, "signature_reserved", "0x49f"), (REPORT_SIZE + 1, "end of report", "0x4a0"),
    (REPORT_SIZE * 2, "end of report", "0x4a0"),
])
def test_truncated_and_oversized_reports(size: int, field: str, offset: str) -> None:
    data = (real_report() * 2)[:size] if size else b""
    with pytest.raises(EvidenceFormatError, match=f"{field} at offset {offset}"):
        SnpVerifier().verify(data, Options(collateral=real_collateral()))


def test_codec_round_trip_and_layouts() -> None:
    raw = real_report()
    report = SnpReport.parse(raw)
    assert report.to_bytes() == raw and report.signed_bytes() == raw[:0x2A0]
    assert report.policy.debug and report.policy.smt and report.policy.reserved_one and not report.policy.migrate_ma
    assert report.tcb("reported_tcb", turin=False).components() == {
        "bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert TcbVersion(bytes.fromhex("0102030400000005"), turin=True).components() == {
        "fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 5}
    assert TcbVersion(bytes.fromhex("0102030400000005")).components() == {
        "bootloader": 1, "tee": 2, "snp": 0, "microcode": 5}
    with pytest.raises(SnpFormatError, match="only Turin"):
        TcbVersion.compose(bootloader=1, tee=1, snp=1, microcode=1, fmc=1)
    v5 = make_report(version=5, launch_mit_vector=1, current_mit_vector=2)
    assert SnpReport.parse(v5.to_bytes()) == replace(v5, raw=v5.to_bytes())
    assert struct.unpack_from("<QQ", v5.to_bytes(), 0x1F8) == (1, 2)
    bad = bytearray(raw)
    bad[0] = 1
    with pytest.raises(SnpFormatError, match="version at offset 0x0"):
        SnpReport.parse(bytes(bad))
    bad = bytearray(raw)
    bad[0x48] = 3 << 2
    with pytest.raises(SnpFormatError, match="flags at offset 0x48: signing_key 3"):
        SnpReport.parse(bytes(bad))


def test_certificate_reader_is_strict() -> None:
    der = vec("snp/gosevguest_vcek.der")
    cert = parse_certificate(der, "VCEK")
    assert (cert.version, cert.subject_cn, cert.issuer_cn) == (3, "SEV-VCEK", "SEV-Milan")
    assert cert.not_after == datetime.datetime(2029, 9, 24, 0, 55, 28, tzinfo=UTC)
    with pytest.raises(SnpFormatError, match="Certificate at offset"):
        parse_certificate(der + b"\x00", "VCEK")
    with pytest.raises(SnpFormatError, match="runs past the end"):
        parse_certificate(der[:-1], "VCEK")
    ark = pem_certificates(vec("roots/amd_ask_ark_milan.pem"))[1]
    assert parse_certificate(ark).sha256 == AMD_ARK_SHA256["Milan"]


def test_pinned_fingerprints_match_the_shipped_roots() -> None:
    for product in ("milan", "genoa", "turin"):
        for kind in ("ask", "asvk"):
            ica, ark = pem_certificates(vec(f"roots/amd_{kind}_ark_{product}.pem"))
            assert parse_certificate(ark).sha256 == AMD_ARK_SHA256[product.capitalize()]
            assert parse_certificate(ica).issuer == parse_certificate(ark).subject


# ---------------------------------------------------------------------------------------------------------
# properties: nothing but AttestationError escapes

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPS
@given(st.binary(max_size=1300))
def test_random_evidence_only_attestation_errors(data: bytes) -> None:
    coll = real_collateral()
    with pytest.raises(AttestationError):
        SnpVerifier().verify(data, Options(collateral=coll, as_of=IN_WINDOW))


@PROPS
@given(st.lists(st.tuples(st.integers(0, REPORT_SIZE - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_report_only_attestation_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(real_report())
    for off, value in edits:
        data[off] = value
    try:
        res = SnpVerifier().verify(bytes(data), Options(collateral=real_collateral(), as_of=IN_WINDOW))
    except AttestationError:
        return
    # only the unsigned reserved tail of the signature area may change without breaking the signature
    assert bytes(data[:0x330]) == real_report()[:0x330]
    assert res.verified


@PROPS
@given(st.integers(0, 2), st.lists(st.tuples(st.integers(0, 1700), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(-3, 3))
def test_mutated_certificates_only_attestation_errors(which: int, edits: list[tuple[int, int]], cut: int) -> None:
    certs = [vec("snp/gosevguest_vcek.der"), *pem_certificates(vec("roots/amd_ask_ark_milan.pem"))]
    der = bytearray(certs[which])
    for off, value in edits:
        der[off % len(der)] = value
    if cut < 0:
        der = der[:cut]
    elif cut:
        der += bytes(cut)
    certs[which] = bytes(der)
    try:
        SnpVerifier().verify(real_report(), Options(collateral=SnpCollateral(certs[0], certs[1:]), as_of=IN_WINDOW))
    except AttestationError:
        return
    assert bytes(der) == [vec("snp/gosevguest_vcek.der"), *pem_certificates(vec("roots/amd_ask_ark_milan.pem"))][which]


@PROPS
@given(st.binary(max_size=400), st.binary(max_size=200))
def test_random_collateral_only_attestation_errors(vcek: bytes, chain: bytes) -> None:
    for collateral in (vcek, SnpCollateral(vcek, [chain]), b"-----BEGIN CERTIFICATE-----" + vcek):
        with pytest.raises(AttestationError):
            SnpVerifier().verify(real_report(), Options(collateral=collateral, as_of=IN_WINDOW))


@PROPS
@given(st.binary(max_size=300))
def test_codec_only_format_errors(data: bytes) -> None:
    for fn in (SnpReport.parse, parse_certificate):
        try:
            fn(data)
        except SnpFormatError:
            pass
