"""The DCAP verifier (inclavare.attestation.dcap): real SGX and TDX quotes with real collateral give exactly the
outcomes listed in ../shared/vectors/attestation/VECTORS.md (read in place, skipped when absent); a self-made PKI
(root pin overridden through the test-only parameter) drives what real data cannot: revocation, Intel's TCB
level / TDX module / QE identity rules, v5 quotes; the simulated platform's quotes verify only with trust_sim;
hypothesis checks that nothing but AttestationError leaves verify_quote."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation.api import AttestationError, CollateralError, EvidenceFormatError, Options, Result
from inclavare.attestation.collateral import DcapCollateral
from inclavare.attestation.dcap import SgxVerifier, TdxVerifier, verify_quote
from inclavare.attestation.pck import INTEL_SGX_ROOT_CA_SHA256
from inclavare.attestation.tcbinfo import parse_qe_identity, parse_tcb_info
from inclavare.formats.dcap import SGX_EXTENSION_OID, DcapQuote, PckExtension, split_pem_chain
from tests.unit.sgx_helpers import vectors_root

UTC = datetime.UTC
SECOND = datetime.timedelta(seconds=1)


def t(iso: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(iso).astimezone(UTC)


def vec_path(rel: str) -> Path:
    path = vectors_root() / "attestation" / rel
    if not path.is_file():
        pytest.skip(f"attestation vector {path} not found (set INCLAVARE_VECTORS)")
    return path


def vec(rel: str) -> bytes:
    return vec_path(rel).read_bytes()


def bundle(rel: str) -> DcapCollateral:
    """A dcap-qvl QuoteCollateralV3 JSON file as DcapCollateral (tcb_info / qe_identity are the signed text)."""
    d = json.loads(vec(rel))
    return DcapCollateral(
        tcb_info_raw=d["tcb_info"].encode(), tcb_info_signature=bytes.fromhex(d["tcb_info_signature"]),
        tcb_info_issuer_chain=split_pem_chain(d["tcb_info_issuer_chain"].encode()),
        qe_identity_raw=d["qe_identity"].encode(), qe_identity_signature=bytes.fromhex(d["qe_identity_signature"]),
        qe_identity_issuer_chain=split_pem_chain(d["qe_identity_issuer_chain"].encode()),
        pck_crl=bytes.fromhex(d["pck_crl"]), root_ca_crl=bytes.fromhex(d["root_ca_crl"]),
        pck_crl_issuer_chain=split_pem_chain(d["pck_crl_issuer_chain"].encode()), source=rel)


def pcs_value(rel: str, key: str) -> tuple[bytes, bytes]:
    """(exact bytes of the signed value, signature) of a PCS document ``{"<key>":{...},"signature":"<hex>"}``."""
    raw = vec(rel)
    prefix, sig_at = b'{"' + key.encode() + b'":', raw.rindex(b',"signature":"')
    assert raw.startswith(prefix)
    value, sig_hex = raw[len(prefix):sig_at], json.loads(raw)["signature"]
    assert raw == prefix + value + b',"signature":"' + sig_hex.encode() + b'"}'  # nothing else in the document
    return value, bytes.fromhex(sig_hex)


def automata_tdx() -> tuple[DcapCollateral, tuple[bytes, ...]]:
    """PCS-style files: no issuer chain inside, the TCB signing certificate comes as an extra certificate."""
    tcb, tcb_sig = pcs_value("tdx/automata_tdx_tcbinfo_00806f050000_2025-10.json", "tcbInfo")
    qe, qe_sig = pcs_value("tdx/automata_td_qe_identity_2025-10.json", "enclaveIdentity")
    col = DcapCollateral(tcb, tcb_sig, [], qe, qe_sig, [], pck_crl=vec("tdx/automata_pck_platform_crl_2025-10.der"),
                         root_ca_crl=vec("roots/intel_sgx_root_ca_crl_2025-03.der"))
    return col, tuple(split_pem_chain(vec("roots/intel_sgx_tcb_signing_2025.pem")))


@dataclass(frozen=True)
class Case:
    quote: str
    collateral: Callable[[], tuple[DcapCollateral, tuple[bytes, ...]]]
    start: str  # VECTORS.md validity_window
    end: str
    status: str
    advisories: tuple[str, ...]


CASES = {
    "sgx-2025-06": Case("sgx/dcapqvl_sgx_quote.bin",
                        lambda: (bundle("sgx/dcapqvl_sgx_quote_collateral_2025-06.json"), ()),
                        "2025-06-19T10:56:11+00:00", "2025-07-19T10:01:18+00:00",
                        "ConfigurationAndSWHardeningNeeded", ("INTEL-SA-00289", "INTEL-SA-00615")),
    "sgx-2023-11": Case("sgx/dcapqvl_sgx_quote.bin",
                        lambda: (bundle("sgx/dcapqvl_sgx_quote_collateral_2023-11.json"), ()),
                        "2023-11-21T00:39:26+00:00", "2023-12-21T00:06:09+00:00",
                        "ConfigurationAndSWHardeningNeeded", ("INTEL-SA-00289", "INTEL-SA-00615")),
    "tdx-dcapqvl": Case("tdx/dcapqvl_tdx_quote.bin",
                        lambda: (bundle("tdx/dcapqvl_tdx_quote_collateral_2025-06.json"), ()),
                        "2025-06-19T10:32:27+00:00", "2025-07-19T10:00:35+00:00", "UpToDate", ()),
    "tdx-cos113": Case("tdx/gotdxguest_cos113_tdx_quote.bin", automata_tdx,
                       "2025-10-19T17:48:50+00:00", "2025-11-12T10:45:32+00:00", "UpToDate", ()),
}


def run(case: Case, as_of: datetime.datetime | None, **kw: Any) -> Result:
    col, extra = case.collateral()
    return verify_quote(vec(case.quote), Options(as_of=as_of, collateral=col, extra_certs=extra, **kw))


def middle(case: Case) -> datetime.datetime:
    a, b = t(case.start), t(case.end)
    return a + (b - a) / 2


# --------------------------------------------------------------------------------------------------
# Real quotes, real collateral


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_collateral_gives_the_listed_outcome(name: str) -> None:
    case = CASES[name]
    r = run(case, middle(case))
    assert r.errors == []
    assert r.verified is True and r.collateral_valid is True
    assert r.tcb_status == case.status
    assert tuple(r.advisory_ids) == case.advisories
    assert r.tee == ("tdx" if case.quote.startswith("tdx/") else "sgx")
    json.dumps(r.to_json())  # plain JSON types only


@pytest.mark.parametrize("name", sorted(CASES))
def test_validity_window_edges(name: str) -> None:
    """Valid exactly from the window's start to its end (VECTORS.md), not one second outside."""
    case = CASES[name]
    start, end = t(case.start), t(case.end)
    for as_of in (start, end):
        assert run(case, as_of).collateral_valid is True
    before, after = run(case, start - SECOND), run(case, end + SECOND)
    for r, word in ((before, "not yet valid"), (after, "expired")):
        assert r.collateral_valid is False and r.verified is True
        assert any(word in e for e in r.errors), r.errors
        assert r.tcb_status == case.status  # reported, not judged


@pytest.mark.parametrize("name", sorted(CASES))
def test_verifying_now_reports_expired_collateral(name: str) -> None:
    case = CASES[name]
    r = run(case, None)
    assert r.verified is True
    assert r.collateral_valid is False
    assert any("expired" in e for e in r.errors)
    assert r.tcb_status == case.status


def test_expired_tcb_signing_certificate_is_named() -> None:
    r = run(CASES["sgx-2023-11"], t("2025-06-01T00:00:00+00:00"))
    assert r.collateral_valid is False
    assert any("signing certificate 'Intel SGX TCB Signing' expired at 2025-05-21" in e for e in r.errors)


def test_real_sgx_claims() -> None:
    r = verify_quote(vec("sgx/dcapqvl_sgx_quote.bin"), Options(as_of=middle(CASES["sgx-2025-06"])))
    assert (r.verified, r.collateral_valid, r.tcb_status, r.errors) == (True, None, None, [])
    c = r.claims
    assert c["mrenclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert c["mrsigner"] == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert (c["isvprodid"], c["isvsvn"], c["debug"]) == (0, 0, False)
    assert c["attributes"] == "0500000000000000e700000000000000"
    assert c["cpusvn"] == "0b0b1a18ffff04000000000000000000"
    assert bytes.fromhex(c["report_data"]) == b"Hello, world!".ljust(64, b"\x00")
    assert (c["fmspc"], c["pceid"]) == ("00a067110000", "0000")


def test_real_tdx_claims() -> None:
    r = verify_quote(vec("tdx/dcapqvl_tdx_quote.bin"), Options(as_of=middle(CASES["tdx-dcapqvl"])))
    assert (r.verified, r.tee, r.errors) == (True, "tdx", [])
    c = r.claims
    assert c["mrtd"] == ("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b"
                         "2538873118b7")
    assert c["rtmr0"] == ("44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540c"
                          "f994b9bc9c0")
    assert c["rtmr3"] == "00" * 48 and c["mrconfigid"] == "00" * 48
    assert c["mrseam"].startswith("5b38e33a6487958b") and c["tee_tcb_svn"] == "06010300000000000000000000000000"
    assert (c["td_attributes"], c["xfam"], c["debug"]) == ("0000001000000000", "e702060000000000", False)
    assert c["report_data"].startswith("9a9d48e7f6799642")
    assert (c["fmspc"], c["pceid"]) == ("b0c06f000000", "0000")
    assert {"mrowner", "mrownerconfig", "rtmr1", "rtmr2"} <= set(c)


def test_older_root_issue_of_the_same_intel_key_is_trusted() -> None:
    """This real quote's chain ends in the 2018 issue of Intel's root (valid to 2033, same key)."""
    path = vectors_root() / "sgx-kat" / "dcap-quote" / "quote.bin"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    r = verify_quote(path.read_bytes(), Options(as_of=t("2024-01-01T00:00:00+00:00")))
    assert r.verified is True and r.errors == []
    assert r.claims["mrenclave"] == "2531fd89facb97c6bab5f343805afe4dc051c2bef0d11309ac553c404326dda2"


def test_tdx_module_rule_edge_case() -> None:
    """cos113: TEE_TCB_SVN = 04 01 07 ...; Intel's rule skips indices 0 and 1 (TDX_01 judges them): UpToDate.
    Comparing all 16 components instead would pick a lower level with status OutOfDate (VECTORS.md)."""
    case = CASES["tdx-cos113"]
    col, _ = case.collateral()
    tcb = parse_tcb_info(col.tcb_info_raw)
    svn = DcapQuote.parse(vec(case.quote)).body.tee_tcb_svn  # type: ignore[union-attr]
    ext = PckExtension.parse_der(_leaf_ext(vec(case.quote)))
    naive = next(lv for lv in tcb.levels
                 if all(p >= x for p, x in zip(ext.comp_svns, lv.sgx_components, strict=True))
                 and ext.pce_svn >= lv.pce_svn and lv.tdx_components is not None
                 and all(s >= x for s, x in zip(svn, lv.tdx_components, strict=True)))
    assert naive.status == "OutOfDate" and svn[1] == 1
    assert run(case, middle(case)).tcb_status == "UpToDate"


def _leaf_ext(quote: bytes) -> bytes:
    leaf = x509.load_der_x509_certificate(DcapQuote.parse(quote).pck_chain_der()[0])
    value: bytes = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value.value  # type: ignore[attr-defined]
    return value


def test_real_fmspc_mismatch() -> None:
    """The dcap-qvl TDX quote (FMSPC b0c06f000000) against the cos113 platform's TCB info (00806f050000)."""
    col, extra = automata_tdx()
    r = verify_quote(vec("tdx/dcapqvl_tdx_quote.bin"), Options(as_of=t("2025-11-01T00:00:00+00:00"),
                                                               collateral=col, extra_certs=extra))
    assert r.verified is True and r.collateral_valid is False and r.tcb_status is None
    assert any("FMSPC 00806f050000 is not the PCK certificate's b0c06f000000" in e for e in r.errors)


def test_real_collateral_of_the_other_tee_is_refused() -> None:
    sgx_col = bundle("sgx/dcapqvl_sgx_quote_collateral_2025-06.json")
    r = verify_quote(vec("tdx/dcapqvl_tdx_quote.bin"), Options(as_of=t("2025-07-01T00:00:00+00:00"),
                                                               collateral=sgx_col))
    assert r.collateral_valid is False and r.tcb_status is None
    # the SGX bundle's PCK CRL is the Processor CA's, the TDX quote's PCK CA is the Platform CA
    assert any("PCK CRL: issued by" in e for e in r.errors)
    assert any("TCB info: is for SGX" in e for e in r.errors)
    assert any("QE identity: is for QE, a TDX quote needs TD_QE" in e for e in r.errors)


def test_collateral_signature_covers_the_exact_bytes() -> None:
    case = CASES["sgx-2025-06"]
    col, _ = case.collateral()
    reformatted = json.dumps(json.loads(col.tcb_info_raw)).encode()  # same content, other bytes
    col = DcapCollateral(**{**col.__dict__, "tcb_info_raw": reformatted})
    r = verify_quote(vec(case.quote), Options(as_of=middle(case), collateral=col))
    assert r.collateral_valid is False and r.tcb_status is None
    assert any("TCB info: the signature does not verify" in e for e in r.errors)


def test_pcs_files_without_the_signing_certificate() -> None:
    case = CASES["tdx-cos113"]
    col, _ = case.collateral()
    r = verify_quote(vec(case.quote), Options(as_of=middle(case), collateral=col))
    assert r.verified is True and r.collateral_valid is False and r.tcb_status is None
    assert any("issuer chain is empty" in e for e in r.errors)


def test_report_data_option() -> None:
    quote = vec("sgx/dcapqvl_sgx_quote.bin")
    at = middle(CASES["sgx-2025-06"])
    assert verify_quote(quote, Options(as_of=at, report_data=b"Hello, world!")).verified is True
    r = verify_quote(quote, Options(as_of=at, report_data=b"Hello"))
    assert r.verified is False and any("report data" in e for e in r.errors)
    with pytest.raises(AttestationError, match="at most 64 bytes"):
        verify_quote(quote, Options(as_of=at, report_data=bytes(65)))
    with pytest.raises(AttestationError, match="timezone-aware"):
        verify_quote(quote, Options(as_of=datetime.datetime(2025, 7, 1)))  # noqa: DTZ001


def test_verifiers_refuse_the_other_tee() -> None:
    at = t("2025-07-01T00:00:00+00:00")
    assert TdxVerifier().verify(vec("tdx/dcapqvl_tdx_quote.bin"), Options(as_of=at)).verified is True
    assert SgxVerifier().verify(vec("sgx/dcapqvl_sgx_quote.bin"), Options(as_of=at)).verified is True
    with pytest.raises(EvidenceFormatError, match="is a TDX quote"):
        SgxVerifier().verify(vec("tdx/dcapqvl_tdx_quote.bin"), Options(as_of=at))
    with pytest.raises(EvidenceFormatError, match="is a SGX quote"):
        TdxVerifier().verify(vec("sgx/dcapqvl_sgx_quote.bin"), Options(as_of=at))


# ---- flipped bytes in every signed region of the real quotes

# (offset, what) per VECTORS.md "Offsets used"
SGX_FLIPS = [(30, "header user data"), (48 + 64, "body MRENCLAVE"), (48 + 320, "body REPORTDATA"),
             (440, "quote signature"), (470, "quote signature s"), (505, "attestation key"),
             (564 + 128, "QE report MRSIGNER"), (564 + 320, "QE report REPORTDATA"), (950, "QE report signature"),
             (1020, "QE auth data"), (1100, "PCK leaf certificate"), (2400, "PCK CA certificate"),
             (4000, "root certificate")]
TDX_FLIPS = [(9, "header"), (48 + 136, "body MRTD"), (48 + 400, "body RTMR1"), (48 + 520, "body REPORTDATA"),
             (640, "quote signature"), (710, "attestation key"), (770 + 128, "QE report MRSIGNER"),
             (1160, "QE report signature"), (1230, "QE auth data"), (1300, "PCK leaf certificate"),
             (3000, "PCK CA certificate"), (4500, "root certificate")]


@pytest.mark.parametrize("rel, offset, what", [("sgx/dcapqvl_sgx_quote.bin", o, w) for o, w in SGX_FLIPS]
                         + [("tdx/dcapqvl_tdx_quote.bin", o, w) for o, w in TDX_FLIPS])
def test_flipped_byte_in_a_signed_region_fails(rel: str, offset: int, what: str) -> None:
    data = bytearray(vec(rel))
    at = t("2025-07-01T00:00:00+00:00")
    assert verify_quote(bytes(data), Options(as_of=at)).verified is True
    data[offset] ^= 0x01
    try:
        r = verify_quote(bytes(data), Options(as_of=at))
    except EvidenceFormatError:
        return  # refused while parsing: also a failure
    assert r.verified is False, what
    assert r.errors


def test_zero_padding_does_not_matter_and_other_trailing_bytes_are_reported() -> None:
    data = bytearray(vec("tdx/dcapqvl_tdx_quote.bin"))  # 70 zero bytes after the signature data
    r = verify_quote(bytes(data), Options(as_of=t("2025-07-01T00:00:00+00:00")))
    assert r.verified is True
    big = verify_quote(bytes(data) + bytes(1 << 20), Options(as_of=t("2025-07-01T00:00:00+00:00")))
    assert big.verified is True and big.claims == r.claims
    data[-1] ^= 0xFF  # unsigned, but not padding: a quote saved with junk after it is refused
    bad = verify_quote(bytes(data), Options(as_of=t("2025-07-01T00:00:00+00:00")))
    assert bad.verified is False and bad.claims == r.claims
    assert bad.errors == ["quote: non-zero byte at offset 5005 in the 70 bytes after the signature data (only zero "
                          "padding may follow a quote)"]


@pytest.mark.parametrize("cut", [0, 47, 48, 431, 435, 436, 1000, 4599])
def test_truncated_quotes_are_refused(cut: int) -> None:
    with pytest.raises(EvidenceFormatError):
        verify_quote(vec("sgx/dcapqvl_sgx_quote.bin")[:cut], Options())


def test_oversized_declared_lengths_are_refused() -> None:
    data = bytearray(vec("sgx/dcapqvl_sgx_quote.bin"))
    struct.pack_into("<I", data, 432, 0xFFFFFFFF)
    with pytest.raises(EvidenceFormatError, match="signature_data_len"):
        verify_quote(bytes(data), Options())
    data = bytearray(vec("tdx/dcapqvl_tdx_quote.bin"))
    struct.pack_into("<I", data, 766, 0x7FFFFFFF)  # type-6 size
    with pytest.raises(EvidenceFormatError):
        verify_quote(bytes(data), Options())
    with pytest.raises(EvidenceFormatError):
        verify_quote("not bytes", Options())  # type: ignore[arg-type]


def test_real_quote_with_another_pinned_root_fails() -> None:
    r = verify_quote(vec("sgx/dcapqvl_sgx_quote.bin"), Options(as_of=t("2025-07-01T00:00:00+00:00")),
                     _root_fingerprints=("00" * 32,))
    assert r.verified is False
    assert any("is not a trusted root" in e and "Intel SGX Root CA" in e for e in r.errors)


# --------------------------------------------------------------------------------------------------
# A self-made PKI, shaped like Intel's (and pinned through the test-only parameter)

AS_OF = t("2030-01-01T00:00:00+00:00")
QE_MRSIGNER = hashlib.sha256(b"test QE signer").digest()
QE_ATTRIBUTES = bytes.fromhex("15000000000000000700000000000000")
FMSPC = bytes.fromhex("00906ed50000")
COMPS = (4,) * 16
PCE_SVN = 10
AUTH = bytes(range(32))
INTEL_VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "inclavare tests")])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          ca: bool, ext: bytes | None = None) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer is not None else (_name(cn), key)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(t("2020-01-01T00:00:00+00:00")).not_valid_after(t("2040-01-01T00:00:00+00:00"))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ext is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), ext), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _xy(key: ec.EllipticCurvePrivateKey) -> bytes:
    n = key.public_key().public_numbers()
    return n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


class Pki:
    def __init__(self, root_cn: str = "Test SGX Root CA") -> None:
        self.root_key, self.ca_key, self.leaf_key, self.tcb_key, self.att_key = (
            ec.generate_private_key(ec.SECP256R1()) for _ in range(5))
        self.root = _cert(root_cn, self.root_key, None, True)
        self.ca = _cert("Test SGX PCK Platform CA", self.ca_key, (self.root.subject, self.root_key), True)
        self.ext = PckExtension(ppid=bytes(range(16)), comp_svns=COMPS, pce_svn=PCE_SVN, cpusvn=bytes(COMPS),
                                pce_id=b"\x00\x00", fmspc=FMSPC, sgx_type=1)
        self.leaf = _cert("Test SGX PCK Certificate", self.leaf_key, (self.ca.subject, self.ca_key), False,
                          self.ext.to_der())
        self.tcb = _cert("Test SGX TCB Signing", self.tcb_key, (self.root.subject, self.root_key), False)
        self.fp = hashlib.sha256(_der(self.root)).hexdigest()

    def chain_pem(self) -> bytes:
        return _pem(self.leaf) + _pem(self.ca) + _pem(self.root) + b"\x00"

    def crl(self, issuer: str, revoked: tuple[int, ...] = (), this: str = "2029-12-01T00:00:00+00:00",
            nxt: str = "2030-02-01T00:00:00+00:00", key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        cert, own_key = (self.ca, self.ca_key) if issuer == "ca" else (self.root, self.root_key)
        b = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject).last_update(t(this))
             .next_update(t(nxt)))
        for serial in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(t("2029-06-01T00:00:00+00:00")).build())
        return b.sign(key or own_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def collateral(self, tcb_info: dict[str, Any], qe_identity: dict[str, Any], **kw: Any) -> DcapCollateral:
        tcb_raw, qe_raw = _compact(tcb_info), _compact(qe_identity)
        chain = [_der(self.tcb), _der(self.root)]
        args: dict[str, Any] = {"pck_crl": self.crl("ca"), "root_ca_crl": self.crl("root")}
        args.update(kw)
        return DcapCollateral(tcb_raw, _sign(self.tcb_key, tcb_raw), chain, qe_raw, _sign(self.tcb_key, qe_raw),
                              chain, **args)


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def sgx_body(report_data: bytes = b"test" + bytes(60)) -> bytes:
    b = bytearray(384)
    b[0:16] = bytes(COMPS)
    b[48:64] = bytes.fromhex("0500000000000000e700000000000000")
    b[64:96] = hashlib.sha256(b"enclave").digest()
    b[128:160] = hashlib.sha256(b"signer").digest()
    struct.pack_into("<HH", b, 256, 3, 7)
    b[320:384] = report_data
    return bytes(b)


def td_body(tee_tcb_svn: bytes, *, mrsignerseam: bytes = bytes(48), td15: bool = False) -> bytes:
    b = bytearray(648 if td15 else 584)
    b[0:16] = tee_tcb_svn
    b[16:64] = b"\x11" * 48  # MRSEAM
    b[64:112] = mrsignerseam
    b[120:128] = bytes.fromhex("0000001000000000")
    b[136:184] = b"\x22" * 48  # MRTD
    b[328:376] = b"\x33" * 48  # RTMR0
    b[520:584] = b"\x44" * 64
    if td15:
        b[584:600] = b"\x55" * 16
        b[600:648] = b"\x66" * 48
    return bytes(b)


def qe_report(att_xy: bytes, isvsvn: int, isvprodid: int) -> bytes:
    b = bytearray(384)
    b[48:64] = QE_ATTRIBUTES
    b[64:96] = hashlib.sha256(b"QE build").digest()
    b[128:160] = QE_MRSIGNER
    struct.pack_into("<HH", b, 256, isvprodid, isvsvn)
    b[320:352] = hashlib.sha256(att_xy + AUTH).digest()
    return bytes(b)


def make_quote(pki: Pki, *, version: int = 3, tdx: bool = False, body: bytes | None = None, body_type: int = 0,
               qe_isvsvn: int = 8, chain_pem: bytes | None = None) -> bytes:
    """A quote assembled byte by byte from the layouts in VECTORS.md (independent of the codec)."""
    tee = 0x81 if tdx else 0
    body = body if body is not None else (td_body(bytes([4, 1, 2]) + bytes(13)) if tdx else sgx_body())
    header = struct.pack("<HHIHH", version, 2, tee, 0, 0) + INTEL_VENDOR + bytes(20)
    signed = header + (struct.pack("<HI", body_type, len(body)) if version == 5 else b"") + body
    xy = _xy(pki.att_key)
    qe = qe_report(xy, qe_isvsvn, 2 if tdx else 1)
    chain = chain_pem if chain_pem is not None else pki.chain_pem()
    block = (qe + _sign(pki.leaf_key, qe) + struct.pack("<H", len(AUTH)) + AUTH
             + struct.pack("<HI", 5, len(chain)) + chain)
    if version != 3:
        block = struct.pack("<HI", 6, len(block)) + block
    sig_data = _sign(pki.att_key, signed) + xy + block
    return signed + struct.pack("<I", len(sig_data)) + sig_data


def level(status: str, sgx: int | tuple[int, ...] = 4, pcesvn: int = PCE_SVN, tdx: tuple[int, ...] | None = None,
          adv: tuple[str, ...] = ()) -> dict[str, Any]:
    comps = sgx if isinstance(sgx, tuple) else (sgx,) * 16
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": s} for s in comps], "pcesvn": pcesvn}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": s} for s in tdx + (0,) * (16 - len(tdx))]
    out = {"tcb": tcb, "tcbDate": "2029-01-01T00:00:00Z", "tcbStatus": status}
    if adv:
        out["advisoryIDs"] = list(adv)
    return out


def tcb_info(levels: list[dict[str, Any]], *, tee: str = "SGX", fmspc: bytes = FMSPC, pce_id: str = "0000",
             identities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": tee, "version": 3, "issueDate": "2029-12-01T00:00:00Z",
                         "nextUpdate": "2030-02-01T00:00:00Z", "fmspc": fmspc.hex().upper(), "pceId": pce_id,
                         "tcbType": 0, "tcbEvaluationDataNumber": 17, "tcbLevels": levels}
    if tee == "TDX":
        d["tdxModule"] = {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8}
        d["tdxModuleIdentities"] = identities if identities is not None else [module("TDX_01", [(4, "UpToDate"),
                                                                                                (2, "OutOfDate")])]
    return d


def module(ident: str, levels: list[tuple[int, str]]) -> dict[str, Any]:
    return {"id": ident, "mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8,
            "tcbLevels": [{"tcb": {"isvsvn": s}, "tcbDate": "2029-01-01T00:00:00Z", "tcbStatus": st_}
                          for s, st_ in levels]}


def qe_identity(*, ident: str = "QE", isvprodid: int = 1, mrsigner: bytes = QE_MRSIGNER,
                attributes: str = "11000000000000000000000000000000", miscselect: str = "00000000",
                levels: tuple[tuple[int, str, tuple[str, ...]], ...] = ((8, "UpToDate", ()), (5, "OutOfDate", ()),
                                                                         (2, "Revoked", ()))) -> dict[str, Any]:
    return {"id": ident, "version": 2, "issueDate": "2029-12-01T00:00:00Z", "nextUpdate": "2030-02-01T00:00:00Z",
            "tcbEvaluationDataNumber": 17, "miscselect": miscselect, "miscselectMask": "FFFFFFFF",
            "attributes": attributes, "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": mrsigner.hex().upper(), "isvprodid": isvprodid,
            "tcbLevels": [{"tcb": {"isvsvn": s}, "tcbDate": "2029-01-01T00:00:00Z", "tcbStatus": st_,
                           **({"advisoryIDs": list(a)} if a else {})} for s, st_, a in levels]}


def check(pki: Pki, quote: bytes, col: DcapCollateral | None = None, **kw: Any) -> Result:
    return verify_quote(quote, Options(as_of=AS_OF, collateral=col, **kw), _root_fingerprints=(pki.fp,))


def test_self_made_pki_quote_verifies_only_with_its_root_pinned(pki: Pki) -> None:
    quote = make_quote(pki)
    ok = check(pki, quote)
    assert (ok.verified, ok.tee, ok.errors) == (True, "sgx", [])
    assert ok.claims["isvprodid"] == 3 and ok.claims["isvsvn"] == 7
    assert ok.claims["fmspc"] == FMSPC.hex()
    r = verify_quote(quote, Options(as_of=AS_OF))  # Intel's root pinned: a self-made root is refused
    assert r.verified is False and any("not a trusted root" in e for e in r.errors)
    # a self-made root that copies Intel's name is still refused
    fake = Pki(root_cn="Intel SGX Root CA")
    r = verify_quote(make_quote(fake), Options(as_of=AS_OF))
    assert r.verified is False
    assert any(f"is not a trusted root: Intel's SGX Root CA is {INTEL_SGX_ROOT_CA_SHA256}" in e for e in r.errors)


def test_chain_checks(pki: Pki) -> None:
    other = Pki()
    # leaf of another CA in front of this PKI's CA and root
    mixed = _pem(other.leaf) + _pem(pki.ca) + _pem(pki.root)
    r = check(pki, make_quote(pki, chain_pem=mixed))
    assert r.verified is False and any("is not signed by" in e for e in r.errors)
    # two-certificate chain: the root may come from extra_certs
    two = _pem(pki.leaf) + _pem(pki.ca)
    assert check(pki, make_quote(pki, chain_pem=two)).verified is False
    assert check(pki, make_quote(pki, chain_pem=two), extra_certs=(_der(pki.root),)).verified is True
    # outside the certificates' validity
    r = verify_quote(make_quote(pki), Options(as_of=t("2041-01-01T00:00:00+00:00")), _root_fingerprints=(pki.fp,))
    assert r.verified is False and any("expired at 2040-01-01" in e for e in r.errors)


def test_v4_and_v5_quotes(pki: Pki) -> None:
    tcb = tcb_info([level("UpToDate", tdx=(0, 0, 2))], tee="TDX")
    col = pki.collateral(tcb, qe_identity(ident="TD_QE", isvprodid=2))
    for version, body_type, td15 in ((4, 0, False), (5, 2, False), (5, 3, True)):
        quote = make_quote(pki, version=version, tdx=True, body_type=body_type,
                           body=td_body(bytes([4, 1, 2]) + bytes(13), td15=td15))
        r = check(pki, quote, col)
        assert (r.verified, r.tee, r.collateral_valid, r.tcb_status, r.errors) == (True, "tdx", True, "UpToDate",
                                                                                  []), (version, body_type)
        assert r.claims["quote_version"] == version and r.claims["mrtd"] == "22" * 48
        assert ("tee_tcb_svn2" in r.claims) is td15
        if td15:
            assert r.claims["mrservicetd"] == "66" * 48
    sgx5 = make_quote(pki, version=5, body_type=1, body=sgx_body())
    sgx_col = pki.collateral(tcb_info([level("UpToDate")]), qe_identity())
    r = check(pki, sgx5, sgx_col)
    assert (r.verified, r.tee, r.tcb_status) == (True, "sgx", "UpToDate")


def test_sgx_tcb_level_selection(pki: Pki) -> None:
    """First level in listed order with every component and PCESVN <= the PCK certificate's."""
    levels = [level("UpToDate", sgx=5, adv=("SA-5",)),                      # a component higher: skipped
              level("UpToDate", sgx=4, pcesvn=PCE_SVN + 1),                   # PCESVN higher: skipped
              level("SWHardeningNeeded", sgx=(4,) * 15 + (3,), adv=("SA-1", "SA-2")),
              level("OutOfDate", sgx=0, pcesvn=0, adv=("SA-3",))]
    qe = qe_identity(levels=((8, "UpToDate", ("SA-2", "SA-QE")),))
    r = check(pki, make_quote(pki), pki.collateral(tcb_info(levels), qe))
    assert (r.tcb_status, r.advisory_ids, r.collateral_valid) == ("SWHardeningNeeded", ["SA-1", "SA-2", "SA-QE"],
                                                                  True)
    r = check(pki, make_quote(pki), pki.collateral(tcb_info(levels[:2]), qe))
    assert (r.tcb_status, r.collateral_valid, r.verified) == ("TcbNotSupported", True, True)


@pytest.mark.parametrize("platform, qe_isvsvn, expected", [
    # Intel's convergence of the TCB level status with the QE identity status
    ("UpToDate", 8, "UpToDate"),
    ("UpToDate", 6, "OutOfDate"),
    ("SWHardeningNeeded", 6, "OutOfDate"),
    ("ConfigurationNeeded", 6, "OutOfDateConfigurationNeeded"),
    ("ConfigurationAndSWHardeningNeeded", 5, "OutOfDateConfigurationNeeded"),
    ("OutOfDate", 6, "OutOfDate"),
    ("OutOfDateConfigurationNeeded", 8, "OutOfDateConfigurationNeeded"),
    ("UpToDate", 3, "Revoked"),
    ("ConfigurationNeeded", 1, "TcbNotSupported"),
    ("Revoked", 8, "Revoked"),
])
def test_qe_identity_convergence(pki: Pki, platform: str, qe_isvsvn: int, expected: str) -> None:
    col = pki.collateral(tcb_info([level(platform)]), qe_identity())
    r = check(pki, make_quote(pki, qe_isvsvn=qe_isvsvn), col)
    assert r.tcb_status == expected and r.collateral_valid is True


@pytest.mark.parametrize("tee_tcb_svn, version, expected", [
    (bytes([4, 1, 2]), 4, "UpToDate"),          # indices 0, 1 skipped; TDX_01 level isvsvn 4: UpToDate
    (bytes([3, 1, 2]), 4, "OutOfDate"),         # TDX_01 level isvsvn 2: OutOfDate, converges UpToDate -> OutOfDate
    (bytes([1, 1, 2]), 4, "TcbNotSupported"),   # no TDX_01 level with isvsvn <= 1
    (bytes([4, 1, 1]), 4, "OutOfDate"),         # index 2 below the first level: the second level
    (bytes([5, 0, 2]), 4, "UpToDate"),          # module version 0 (v4): no module check, all 16 compared
    (bytes([4, 0, 2]), 4, "OutOfDate"),         # ... so index 0 counts: the second level
])
def test_tdx_module_rules(pki: Pki, tee_tcb_svn: bytes, version: int, expected: str) -> None:
    levels = [level("UpToDate", tdx=(5, 0, 2), adv=("SA-TDX-1",)),
              level("OutOfDate", sgx=4, tdx=(3, 0, 1), adv=("SA-TDX-2",))]
    col = pki.collateral(tcb_info(levels, tee="TDX"), qe_identity(ident="TD_QE", isvprodid=2))
    quote = make_quote(pki, version=version, tdx=True, body=td_body(tee_tcb_svn + bytes(13)))
    r = check(pki, quote, col)
    assert r.tcb_status == expected and r.collateral_valid is True and r.verified is True
    if expected == "UpToDate":
        assert r.advisory_ids == ["SA-TDX-1"]


def test_tdx_module_configuration_and_revocation(pki: Pki) -> None:
    levels = [level("ConfigurationNeeded", tdx=(5, 0, 2))]
    ident = [module("TDX_01", [(4, "UpToDate"), (3, "OutOfDate"), (2, "Revoked")])]
    col = pki.collateral(tcb_info(levels, tee="TDX", identities=ident), qe_identity(ident="TD_QE", isvprodid=2))
    for isvsvn, expected in ((4, "ConfigurationNeeded"), (3, "OutOfDateConfigurationNeeded"), (2, "Revoked")):
        quote = make_quote(pki, version=4, tdx=True, body=td_body(bytes([isvsvn, 1, 2]) + bytes(13)))
        assert check(pki, quote, col).tcb_status == expected


def test_tdx_module_mismatches(pki: Pki) -> None:
    tcb = tcb_info([level("UpToDate", tdx=(5, 0, 2))], tee="TDX")
    col = pki.collateral(tcb, qe_identity(ident="TD_QE", isvprodid=2))
    r = check(pki, make_quote(pki, version=4, tdx=True, body=td_body(bytes([4, 2, 2]) + bytes(13))), col)
    assert r.collateral_valid is False and r.tcb_status is None and r.verified is True
    assert any("no tdxModuleIdentities entry TDX_02" in e for e in r.errors)
    r = check(pki, make_quote(pki, version=4, tdx=True,
                              body=td_body(bytes([4, 1, 2]) + bytes(13), mrsignerseam=b"\x01" * 48)), col)
    assert r.collateral_valid is False and any("MRSIGNERSEAM" in e for e in r.errors)


def test_qe_identity_mismatches(pki: Pki) -> None:
    tcb = tcb_info([level("UpToDate")])
    for qe, needle in ((qe_identity(mrsigner=b"\x01" * 32), "MRSIGNER"), (qe_identity(isvprodid=9), "ISVPRODID"),
                       (qe_identity(attributes="13" + "00" * 15), "ATTRIBUTES"),
                       (qe_identity(miscselect="01000000"), "MISCSELECT"),
                       (qe_identity(ident="TD_QE"), "is for TD_QE, a SGX quote needs QE")):
        r = check(pki, make_quote(pki), pki.collateral(tcb, qe))
        assert r.collateral_valid is False and r.tcb_status is None, needle
        assert any(needle in e for e in r.errors), r.errors


@pytest.mark.parametrize("field, value, needle", [
    ("fmspc", bytes.fromhex("00906ed50001"), "FMSPC 00906ed50001 is not the PCK certificate's 00906ed50000"),
    ("pce_id", "0001", "PCE-ID 0001 is not the PCK certificate's 0000"),
    ("tee", "TDX", "TCB info: is for TDX"),
])
def test_tcb_info_mismatches(pki: Pki, field: str, value: Any, needle: str) -> None:
    lv = [level("UpToDate", tdx=(0,))] if field == "tee" else [level("UpToDate")]
    col = pki.collateral(tcb_info(lv, **{field: value}), qe_identity())
    r = check(pki, make_quote(pki), col)
    assert r.verified is True and r.collateral_valid is False and r.tcb_status is None
    assert any(needle in e for e in r.errors), r.errors


def test_pck_revoked_by_the_pck_crl(pki: Pki) -> None:
    col = pki.collateral(tcb_info([level("UpToDate")]), qe_identity(),
                         pck_crl=pki.crl("ca", revoked=(pki.leaf.serial_number + 1, pki.leaf.serial_number)))
    r = check(pki, make_quote(pki), col)
    assert r.verified is False and r.tcb_status == "Revoked"
    assert any(f"PCK certificate 'Test SGX PCK Certificate' (serial {pki.leaf.serial_number:x}) is revoked" in e
               for e in r.errors)
    # another serial on the CRL: not revoked
    col = pki.collateral(tcb_info([level("UpToDate")]), qe_identity(), pck_crl=pki.crl("ca", revoked=(12345,)))
    assert check(pki, make_quote(pki), col).tcb_status == "UpToDate"


def test_pck_ca_revoked_by_the_root_crl(pki: Pki) -> None:
    col = pki.collateral(tcb_info([level("UpToDate")]), qe_identity(),
                         root_ca_crl=pki.crl("root", revoked=(pki.ca.serial_number,)))
    r = check(pki, make_quote(pki), col)
    assert r.verified is False and r.tcb_status == "Revoked"
    assert any("PCK CA 'Test SGX PCK Platform CA'" in e and "root CA CRL" in e for e in r.errors)


def test_revoked_tcb_signing_certificate_invalidates_the_collateral(pki: Pki) -> None:
    col = pki.collateral(tcb_info([level("UpToDate")]), qe_identity(),
                         root_ca_crl=pki.crl("root", revoked=(pki.tcb.serial_number,)))
    r = check(pki, make_quote(pki), col)
    assert r.verified is True and r.collateral_valid is False and r.tcb_status is None
    assert any("TCB info signing certificate" in e and "revoked" in e for e in r.errors)


def test_crl_checks(pki: Pki) -> None:
    good = (tcb_info([level("UpToDate")]), qe_identity())
    forged = pki.crl("ca", key=ec.generate_private_key(ec.SECP256R1()))  # right name, wrong key
    r = check(pki, make_quote(pki), pki.collateral(*good, pck_crl=forged))
    assert r.collateral_valid is False and any("PCK CRL: the signature does not verify" in e for e in r.errors)
    r = check(pki, make_quote(pki), pki.collateral(*good, pck_crl=pki.crl("root")))  # issued by the root
    assert r.collateral_valid is False and any("PCK CRL: issued by" in e for e in r.errors)
    r = check(pki, make_quote(pki), pki.collateral(*good, pck_crl=None))
    assert r.collateral_valid is False and any("PCK CRL: missing" in e for e in r.errors)
    r = check(pki, make_quote(pki), pki.collateral(*good, root_ca_crl=None))
    assert r.collateral_valid is False and any("root CA CRL: missing" in e for e in r.errors)
    r = check(pki, make_quote(pki), pki.collateral(*good, root_ca_crl=pki.crl("root", nxt="2029-12-31T00:00:00Z")))
    assert r.collateral_valid is False and r.tcb_status == "UpToDate"
    assert any("root CA CRL: expired at 2029-12-31T00:00:00Z" in e for e in r.errors)
    r = check(pki, make_quote(pki), pki.collateral(*good, pck_crl=b"\x30\x03junk"))
    assert r.collateral_valid is False and any("PCK CRL: not a valid DER CRL" in e for e in r.errors)


def test_collateral_signing_chain_checks(pki: Pki) -> None:
    other = Pki()
    good = pki.collateral(tcb_info([level("UpToDate")]), qe_identity())
    # signed by another PKI's TCB signing key, chain to the other root
    raw = good.tcb_info_raw
    foreign = DcapCollateral(**{**good.__dict__, "tcb_info_signature": _sign(other.tcb_key, raw),
                                "tcb_info_issuer_chain": [_der(other.tcb), _der(other.root)]})
    r = check(pki, make_quote(pki), foreign)
    assert r.collateral_valid is False and any("is not the root the PCK chain ends in" in e for e in r.errors)
    # the other PKI's signing certificate in front of this root
    foreign = DcapCollateral(**{**good.__dict__, "tcb_info_signature": _sign(other.tcb_key, raw),
                                "tcb_info_issuer_chain": [_der(other.tcb)]})
    r = check(pki, make_quote(pki), foreign)
    assert r.collateral_valid is False and any("is not signed by" in e for e in r.errors)
    # empty chains with the signing certificate given as an extra certificate
    bare = DcapCollateral(**{**good.__dict__, "tcb_info_issuer_chain": [], "qe_identity_issuer_chain": []})
    assert check(pki, make_quote(pki), bare).collateral_valid is False
    r = check(pki, make_quote(pki), bare, extra_certs=(_der(pki.tcb),))
    assert (r.collateral_valid, r.tcb_status) == (True, "UpToDate")


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(version=4), "tcbInfo.version: 4 is not supported"),
    (lambda d: d.update(fmspc="00906ED5"), "tcbInfo.fmspc: is 8 hex digits, expected 12"),
    (lambda d: d["tcbLevels"][0].update(tcbStatus="Great"), "tcbInfo.tcbLevels[0].tcbStatus: 'Great' is not a "),
    (lambda d: d["tcbLevels"][0]["tcb"]["sgxtcbcomponents"].pop(), "has 15 components, expected 16"),
    (lambda d: d.update(issueDate="yesterday"), "tcbInfo.issueDate: 'yesterday' is not an ISO 8601 date"),
    (lambda d: d.pop("pceId"), "tcbInfo.pceId: missing"),
])
def test_malformed_tcb_info_is_named(pki: Pki, mutate: Callable[[dict[str, Any]], None], needle: str) -> None:
    info = tcb_info([level("UpToDate")])
    mutate(info)
    r = check(pki, make_quote(pki), pki.collateral(info, qe_identity()))
    assert r.collateral_valid is False and r.tcb_status is None
    assert any(needle in e for e in r.errors), r.errors


def test_collateral_json_parsers() -> None:
    with pytest.raises(CollateralError, match="duplicate key"):
        parse_tcb_info(b'{"version":3,"version":3}')
    with pytest.raises(CollateralError, match="not valid JSON"):
        parse_qe_identity(b"[" * 100000)
    with pytest.raises(CollateralError, match="expected a JSON object"):
        parse_qe_identity(b"[]")
    v2 = {"version": 2, "issueDate": "2029-12-01T00:00:00Z", "nextUpdate": "2030-02-01T00:00:00Z",
          "fmspc": "00906ED50000", "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 5,
          "tcbLevels": [{"tcb": {**{f"sgxtcbcomp{n:02d}svn": n for n in range(1, 17)}, "pcesvn": 9},
                         "tcbDate": "2029-01-01T00:00:00Z", "tcbStatus": "OutOfDate", "advisoryIDs": ["A"]}]}
    info = parse_tcb_info(_compact(v2))
    assert (info.id, info.version, info.levels[0].sgx_components, info.levels[0].advisory_ids) == (
        "SGX", 2, tuple(range(1, 17)), ("A",))


def test_tcb_info_v2_evaluates(pki: Pki) -> None:
    v2 = {"version": 2, "issueDate": "2029-12-01T00:00:00Z", "nextUpdate": "2030-02-01T00:00:00Z",
          "fmspc": FMSPC.hex(), "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 5,
          "tcbLevels": [{"tcb": {**{f"sgxtcbcomp{n:02d}svn": 4 for n in range(1, 17)}, "pcesvn": PCE_SVN},
                         "tcbDate": "2029-01-01T00:00:00Z", "tcbStatus": "ConfigurationNeeded"}]}
    r = check(pki, make_quote(pki), pki.collateral(v2, qe_identity()))
    assert (r.tcb_status, r.collateral_valid) == ("ConfigurationNeeded", True)
    tdx = make_quote(pki, version=4, tdx=True)
    r = check(pki, tdx, pki.collateral(v2, qe_identity(ident="TD_QE", isvprodid=2)))
    assert r.collateral_valid is False and any("TCB info: is for SGX (version 2)" in e for e in r.errors)


def test_options_are_checked(pki: Pki) -> None:
    quote = make_quote(pki)
    with pytest.raises(CollateralError, match="needs DcapCollateral"):
        check(pki, quote, col={"tcb_info": "{}"})  # type: ignore[arg-type]
    with pytest.raises(AttestationError, match="sim_root_fingerprints"):
        verify_quote(quote, Options(trust_sim=True, sim_root_fingerprints="abc"))  # type: ignore[arg-type]
    with pytest.raises(AttestationError, match="must be an Options"):
        verify_quote(quote, {"as_of": None})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The simulated platform


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, bytes]:
    from inclavare.formats.sgx import Attributes
    from inclavare.sim.quoting import SimQuotingService
    from inclavare.sim.report import EnclaveIdentity, ReportKey

    state = str(tmp_path_factory.mktemp("sim") / "state")
    qs = SimQuotingService.open(state)
    app = EnclaveIdentity(mrenclave=hashlib.sha256(b"app").digest(), mrsigner=hashlib.sha256(b"author").digest(),
                          attributes=Attributes(0x4, 0x3), isvprodid=5, isvsvn=1)
    report = ReportKey.load(state).make_report(app, b"sim nonce".ljust(64, b"\x00"), qs.qe_target_info())
    return qs.platform, qs.get_quote(report)


def _sim_collateral(platform: Any) -> DcapCollateral:
    b = platform.collateral_bundle()
    return DcapCollateral(b["tcb_info"].encode(), bytes.fromhex(b["tcb_info_signature"]),
                          split_pem_chain(b["tcb_info_issuer_chain"].encode()), b["qe_identity"].encode(),
                          bytes.fromhex(b["qe_identity_signature"]),
                          split_pem_chain(b["qe_identity_issuer_chain"].encode()), bytes.fromhex(b["pck_crl"]),
                          bytes.fromhex(b["root_ca_crl"]))


def test_sim_quote_verifies_only_with_trust_sim(sim: tuple[Any, bytes]) -> None:
    platform, quote = sim
    fp = platform.root_ca_fingerprint()
    refused = verify_quote(quote, Options())
    assert refused.verified is False and any("trust_sim" in e for e in refused.errors)
    no_fp = verify_quote(quote, Options(trust_sim=True, collateral=_sim_collateral(platform)))
    assert no_fp.verified is False and any("no sim_root_fingerprints" in e for e in no_fp.errors)
    assert no_fp.collateral_valid is None and no_fp.tcb_status is None
    assert any("collateral: not evaluated" in e for e in no_fp.errors)
    wrong_fp = verify_quote(quote, Options(trust_sim=True, sim_root_fingerprints=("ab" * 32,)))
    assert wrong_fp.verified is False
    fp_without_trust = verify_quote(quote, Options(sim_root_fingerprints=(fp,)))
    assert fp_without_trust.verified is False
    ok = SgxVerifier().verify(quote, Options(trust_sim=True, sim_root_fingerprints=(fp.upper(),),
                                             report_data=b"sim nonce", collateral=_sim_collateral(platform)))
    assert (ok.verified, ok.tee, ok.collateral_valid, ok.tcb_status, ok.errors) == (True, "sim", True, "UpToDate",
                                                                                   [])
    assert ok.claims["isvprodid"] == 5 and ok.claims["fmspc"] == platform.fmspc.hex()


def test_real_quote_stays_intel_with_trust_sim(sim: tuple[Any, bytes]) -> None:
    platform, _ = sim
    r = verify_quote(vec("sgx/dcapqvl_sgx_quote.bin"), Options(as_of=t("2025-07-01T00:00:00+00:00"), trust_sim=True,
                                                               sim_root_fingerprints=(platform.root_ca_fingerprint(),)))
    assert (r.verified, r.tee) == (True, "sgx")


# --------------------------------------------------------------------------------------------------
# Property tests: nothing but AttestationError leaves verify_quote

PROPS = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _outcome(data: bytes, options: Options) -> Result | None:
    try:
        return verify_quote(data, options)
    except AttestationError:
        return None


@PROPS
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    r = _outcome(data, Options())
    assert r is None or r.verified is False


@PROPS
@given(version=st.sampled_from([3, 4, 5]), tee=st.sampled_from([0, 0x81, 7]), rest=st.binary(max_size=2000))
def test_random_bytes_behind_a_plausible_header(version: int, tee: int, rest: bytes) -> None:
    data = struct.pack("<HHI", version, 2, tee) + rest
    r = _outcome(data, Options())
    assert r is None or r.verified is False


Edit = tuple[int, int]


def _mutate(data: bytes, edits: list[Edit], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, value in edits:
        b[pos % len(b)] = value
    return bytes(b[:cut]) if cut is not None else bytes(b)


@PROPS
@given(which=st.sampled_from(sorted(CASES)), edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)),
                                                             min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 6000)))
def test_mutated_real_quotes(which: str, edits: list[Edit], cut: int | None) -> None:
    case = CASES[which]
    original = vec(case.quote)
    col, extra = case.collateral()
    mutated = _mutate(original, edits, cut)
    r = _outcome(mutated, Options(as_of=middle(case), collateral=col, extra_certs=extra))
    if r is not None and r.verified:  # only unsigned bytes may have changed (trailing, PEM whitespace)
        signed = DcapQuote.parse(original).signed_bytes()
        assert mutated[:len(signed)] == signed
        assert DcapQuote.parse(mutated).qe_report_raw == DcapQuote.parse(original).qe_report_raw


@PROPS
@given(which=st.sampled_from(["sgx-2025-06", "tdx-cos113"]), doc=st.sampled_from(["tcb", "qe"]),
       edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_real_collateral(which: str, doc: str, edits: list[Edit]) -> None:
    case = CASES[which]
    col, extra = case.collateral()
    field = "tcb_info_raw" if doc == "tcb" else "qe_identity_raw"
    raw = _mutate(getattr(col, field), edits, None)
    parse = parse_tcb_info if doc == "tcb" else parse_qe_identity
    try:
        parse(raw)
    except CollateralError:
        pass
    r = verify_quote(vec(case.quote), Options(as_of=middle(case), collateral=DcapCollateral(
        **{**col.__dict__, field: raw}), extra_certs=extra))
    assert r.verified is True  # the quote itself is untouched
    if raw != getattr(col, field):
        assert r.collateral_valid is False and r.tcb_status is None


def test_pinned_intel_roots_are_self_signed_cas() -> None:
    """The verifier skips the self-signature check for the two pinned roots; make sure that is sound."""
    import hashlib

    from cryptography import x509

    from inclavare.attestation.pck import INTEL_SGX_ROOT_CA_FINGERPRINTS
    from inclavare.formats.dcap import DcapQuote

    V = Path(os.environ.get("INCLAVARE_VECTORS", Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors"))
    ders = []
    root_der = V / "attestation/roots/intel_sgx_root_ca.der"
    if root_der.exists():
        ders.append(root_der.read_bytes())
    old_quote = V / "sgx-kat/dcap-quote/quote.bin"
    if old_quote.exists():
        ders.append(DcapQuote.parse(old_quote.read_bytes()).certification.pem_chain()[-1])
    if not ders:
        pytest.skip("the shared vectors are absent")
    for der in ders:
        assert hashlib.sha256(der).hexdigest() in INTEL_SGX_ROOT_CA_FINGERPRINTS
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(cert)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
