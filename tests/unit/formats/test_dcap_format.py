"""DCAP quote codecs (v3, and v3/v4/v5 through DcapQuote) and the PCK SGX extension codec, against real quotes
(../shared/vectors; skipped with the reason when absent) and hand-made malformed inputs."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from inclavare.formats.dcap import (
    SGX_EXTENSION_OID,
    CertificationData,
    DcapFormatError,
    DcapQuote,
    PckConfiguration,
    PckExtension,
    Quote3,
    QuoteHeader,
    QuoteSignatureData,
    TdReportBody,
    qe_report_data_for,
    report_body_lenient,
    split_pem_chain,
)
from inclavare.formats.sgx import ReportBody, SgxFormatError
from tests.unit.sgx_helpers import vectors_root


def vector(rel: str) -> bytes:
    path: Path = vectors_root() / rel
    if not path.is_file():
        pytest.skip(f"quote vector {path} not found (set INCLAVARE_VECTORS)")
    return path.read_bytes()


# Facts from sgx-kat/KAT.md and attestation/VECTORS.md.
REAL = {
    "sgx-kat/dcap-quote/quote.bin": dict(
        size=4575, qe_svn=5, pce_svn=10, sig_len=4139, cert_size=3523,
        mrenclave="2531fd89facb97c6bab5f343805afe4dc051c2bef0d11309ac553c404326dda2",
        qe_mrsigner="8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff", qe_isvsvn=5),
    "attestation/sgx/dcapqvl_sgx_quote.bin": dict(
        size=4600, qe_svn=10, pce_svn=15, sig_len=4164, cert_size=3548,
        mrenclave="33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
        qe_mrsigner="8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff", qe_isvsvn=10),
}


@pytest.mark.parametrize("rel", sorted(REAL))
def test_real_quote_parses_and_round_trips(rel: str) -> None:
    facts = REAL[rel]
    data = vector(rel)
    assert len(data) == facts["size"]
    q = Quote3.parse(data)
    assert q.pack() == data
    assert q.header.version == 3 and q.header.att_key_type == 2 and q.header.tee_type == 0
    assert q.header.is_intel_qe
    assert (q.header.qe_svn, q.header.pce_svn) == (facts["qe_svn"], facts["pce_svn"])
    assert struct.unpack_from("<I", data, 432)[0] == facts["sig_len"] == len(q.signature.pack())
    assert q.signed_bytes() == data[:432]
    assert q.report_body.mrenclave.hex() == facts["mrenclave"]
    assert q.signature.qe_report.mrsigner.hex() == facts["qe_mrsigner"]
    assert q.signature.qe_report.isvsvn == facts["qe_isvsvn"]
    assert q.signature.attestation_key == data[500:564]
    assert q.signature.qe_report.pack() == data[564:948]
    assert q.trailing == b""
    cert = q.certification
    assert cert.cert_type == 5 and len(cert.data) == facts["cert_size"]
    # the QE report binds the attestation key (KAT.md: confirmed on this quote)
    assert q.signature.qe_report.reportdata == hashlib.sha256(data[500:564] + q.signature.qe_auth_data).digest() \
        + bytes(32)
    assert q.signature.expected_qe_report_data() == q.signature.qe_report.reportdata
    chain = q.pck_chain_der()
    assert len(chain) == 3
    assert all(der[0] == 0x30 for der in chain)


def test_real_quote_signatures_check_with_offsets_from_the_codec() -> None:
    """The codec's fields are the right bytes: the real quote's signatures verify over them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    q = Quote3.parse(vector("attestation/sgx/dcapqvl_sgx_quote.bin"))
    sig = q.signature

    def der(raw: bytes) -> bytes:
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    att = ec.EllipticCurvePublicNumbers(int.from_bytes(sig.attestation_key[:32], "big"),
                                        int.from_bytes(sig.attestation_key[32:], "big"), ec.SECP256R1()).public_key()
    att.verify(der(sig.isv_signature), q.signed_bytes(), ec.ECDSA(hashes.SHA256()))
    leaf = x509.load_der_x509_certificate(q.pck_chain_der()[0])
    pub = leaf.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(der(sig.qe_report_signature), sig.qe_report_signed_bytes(), ec.ECDSA(hashes.SHA256()))


def test_trailing_bytes_are_reported_not_signed() -> None:
    data = vector("sgx-kat/dcap-quote/quote.bin")
    q = Quote3.parse(data + bytes(70) + b"junk")
    assert q.trailing == bytes(70) + b"junk"
    assert q.signed_bytes() == data[:432]
    assert q.pack() == data + bytes(70) + b"junk"
    assert Quote3(q.header, q.report_body, q.signature).pack() == data


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("cut, field", [
    (0, "header"), (47, "header"), (48, "report_body"), (431, "report_body"), (433, "signature_data_len"),
])
def test_truncated_quote_names_the_field(cut: int, field: str) -> None:
    data = vector("sgx-kat/dcap-quote/quote.bin")
    with pytest.raises(DcapFormatError) as e:
        Quote3.parse(data[:cut])
    assert e.value.field == field
    assert "\n" not in str(e.value)


def test_signature_data_length_checks() -> None:
    data = vector("sgx-kat/dcap-quote/quote.bin")
    sig_len = struct.unpack_from("<I", data, 432)[0]
    # declares more than is present
    with pytest.raises(DcapFormatError, match=r"signature_data_len at offset 432: declares 4140 bytes, only 4139"):
        Quote3.parse(_patch(data, 432, "<I", sig_len + 1))
    # declares one byte less: the certification data no longer fits inside it
    with pytest.raises(DcapFormatError) as e:
        Quote3.parse(_patch(data, 432, "<I", sig_len - 1))
    assert e.value.field == "signature_data.cert_data" and e.value.offset == 1052
    # an unexplained byte inside the declared signature data
    with pytest.raises(DcapFormatError, match="1 bytes inside the declared signature data") as e:
        Quote3.parse(_patch(data, 432, "<I", sig_len + 1) + b"\x00")
    assert e.value.offset == len(data)
    # truncated in the middle of the fixed-size fields (length patched to match)
    short = _patch(data[:700], 432, "<I", 700 - 436)
    with pytest.raises(DcapFormatError) as e:
        Quote3.parse(short)
    assert e.value.field == "signature_data.qe_report" and e.value.offset == 564


def test_inner_length_fields_are_bounded() -> None:
    data = vector("sgx-kat/dcap-quote/quote.bin")
    with pytest.raises(DcapFormatError) as e:
        Quote3.parse(_patch(data, 1012, "<H", 0xFFFF))
    assert e.value.field == "signature_data.qe_auth_data" and e.value.offset == 1014
    with pytest.raises(DcapFormatError) as e:
        Quote3.parse(_patch(data, 1048, "<I", 0xFFFFFFFF))
    assert e.value.field == "signature_data.cert_data" and e.value.offset == 1052
    # a smaller cert size leaves bytes over inside the signature data
    with pytest.raises(DcapFormatError, match="follow the certification data"):
        Quote3.parse(_patch(data, 1048, "<I", 3522))


@pytest.mark.parametrize("offset, fmt, value, field", [
    (0, "<H", 4, "header.version"),
    (0, "<H", 2, "header.version"),
    (2, "<H", 3, "header.att_key_type"),
    (2, "<H", 7, "header.att_key_type"),
    (4, "<I", 0x81, "header.tee_type"),
    (48 + 21, "<B", 1, "report_body"),            # ISV REPORTBODY reserved byte
    (564 + 300, "<B", 1, "signature_data.qe_report"),  # QE REPORTBODY reserved byte
])
def test_bad_constants_and_reserved_bytes(offset: int, fmt: str, value: int, field: str) -> None:
    data = vector("sgx-kat/dcap-quote/quote.bin")
    with pytest.raises(DcapFormatError) as e:
        Quote3.parse(_patch(data, offset, fmt, value))
    assert e.value.field == field
    assert isinstance(e.value, SgxFormatError)
    assert str(e.value).startswith(f"SGX quote v3: {field} at offset ")


def test_v4_quote_is_refused_by_the_v3_parser() -> None:
    data = vector("attestation/tdx/dcapqvl_tdx_quote.bin")
    with pytest.raises(DcapFormatError, match="version at offset 0: is 4"):
        Quote3.parse(data)


def test_quote_built_from_fields_round_trips() -> None:
    body = ReportBody(mrenclave=bytes(range(32)), reportdata=b"r" * 64, isvsvn=3)
    att = bytes(range(64))
    auth = b"\xaa" * 5
    qe = ReportBody(isvprodid=1, reportdata=qe_report_data_for(att, auth))
    sig = QuoteSignatureData(b"s" * 64, att, qe, b"q" * 64, auth, CertificationData(1, b"ppid"))
    q = Quote3(QuoteHeader(qe_svn=2, pce_svn=9, user_data=b"u" * 20), body, sig)
    raw = q.pack()
    assert len(raw) == 436 + 64 + 64 + 384 + 64 + 2 + 5 + 6 + 4
    assert struct.unpack_from("<HH", raw, 8) == (2, 9)
    assert Quote3.parse(raw) == q
    assert qe.reportdata[:32] == hashlib.sha256(att + auth).digest()
    with pytest.raises(SgxFormatError, match="not a PCK certificate chain"):
        q.pck_chain_der()
    with pytest.raises(SgxFormatError, match="attestation key is 63 bytes"):
        QuoteSignatureData(b"s" * 64, att[:63], qe, b"q" * 64, auth, CertificationData(1, b""))
    with pytest.raises(SgxFormatError, match="user data is 19 bytes"):
        QuoteHeader(user_data=bytes(19))


# --------------------------------------------------------------------------------------------------
# PEM chains

def _real_chain() -> bytes:
    return Quote3.parse(vector("sgx-kat/dcap-quote/quote.bin")).certification.data


def test_pem_chain_splitting() -> None:
    pem = _real_chain()
    ders = split_pem_chain(pem)
    assert len(ders) == 3
    assert split_pem_chain(pem + b"\x00") == ders           # Intel's QE may NUL-terminate
    assert split_pem_chain(pem.replace(b"\n", b"\r\n")) == ders
    first_end = pem.index(b"-----END CERTIFICATE-----\n") + 26
    with pytest.raises(SgxFormatError, match=f"unexpected text before PEM block 2, at offset {first_end}"):
        split_pem_chain(pem[:first_end] + b"junk\n" + pem[first_end:])
    with pytest.raises(SgxFormatError, match=f"after the last PEM block, at offset {len(pem)}"):
        split_pem_chain(pem + b"junk")
    with pytest.raises(SgxFormatError, match="is 'PRIVATE KEY', not CERTIFICATE"):
        split_pem_chain(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SgxFormatError, match="not valid base64"):
        split_pem_chain(b"-----BEGIN CERTIFICATE-----\nA*AA\n-----END CERTIFICATE-----\n")
    with pytest.raises(SgxFormatError, match="holds no certificate"):
        split_pem_chain(b"\n\x00")


# --------------------------------------------------------------------------------------------------
# PCK SGX extension

def _leaf_extension(quote_rel: str, pem_only: bool = False) -> bytes:
    from cryptography import x509

    data = vector(quote_rel)
    if pem_only:  # a v4 quote: take the PEM chain straight out of the bytes
        start = data.index(b"-----BEGIN CERTIFICATE-----")
        leaf = x509.load_der_x509_certificate(split_pem_chain(data[start:data.index(b"-----END", start) + 26])[0])
    else:
        leaf = x509.load_der_x509_certificate(Quote3.parse(data).pck_chain_der()[0])
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert not ext.critical
    value: bytes = ext.value.value  # type: ignore[attr-defined]
    return value


def test_pck_extension_of_real_processor_ca_leaf() -> None:
    raw = _leaf_extension("attestation/sgx/dcapqvl_sgx_quote.bin")
    ext = PckExtension.parse_der(raw)
    # VECTORS.md: fmspc=00a067110000 pceid=0000 sgx_type=0 pcesvn=13 cpusvn=0b0b0202ff01... ppid=d04ec06d...
    assert ext.fmspc.hex() == "00a067110000"
    assert ext.pce_id == b"\x00\x00"
    assert ext.sgx_type == 0
    assert ext.pce_svn == 13
    assert ext.cpusvn.hex() == "0b0b0202ff0100000000000000000000"
    assert list(ext.comp_svns) == [11, 11, 2, 2, 255, 1] + [0] * 10
    assert ext.ppid.hex() == "d04ec06d4e6d92dc90d0ad3cf5ee2ddf"
    assert ext.platform_instance_id is None and ext.configuration is None
    assert ext.to_der() == raw


def test_pck_extension_of_real_platform_ca_leaf() -> None:
    raw = _leaf_extension("attestation/tdx/dcapqvl_tdx_quote.bin", pem_only=True)
    ext = PckExtension.parse_der(raw)
    # VECTORS.md: fmspc=b0c06f000000 sgx_type=1 pcesvn=11 comp_svns=[3,3,2,2,4,1,0,5,...] ppid=811dca2a...
    assert ext.fmspc.hex() == "b0c06f000000" and ext.sgx_type == 1 and ext.pce_svn == 11
    assert list(ext.comp_svns) == [3, 3, 2, 2, 4, 1, 0, 5] + [0] * 8
    assert ext.ppid.hex() == "811dca2a26b952e85bb6448b097ba4fd"
    assert ext.platform_instance_id is not None and len(ext.platform_instance_id) == 16
    assert ext.configuration == PckConfiguration(dynamic_platform=True, cached_keys=True, smt_enabled=True)
    assert ext.to_der() == raw


def _sample() -> PckExtension:
    return PckExtension(ppid=bytes(range(16)), comp_svns=tuple(range(16)), pce_svn=300, cpusvn=bytes(range(16)),
                        pce_id=b"\x00\x01", fmspc=b"\x10\x20\x30\x40\x50\x60", sgx_type=1,
                        platform_instance_id=b"\x99" * 16,
                        configuration=PckConfiguration(dynamic_platform=False, smt_enabled=True))


def test_pck_extension_encoder_round_trip() -> None:
    ext = _sample()
    der = ext.to_der()
    assert PckExtension.parse_der(der) == ext
    # INTEGER 300 needs two content bytes, 255 needs a leading zero: both DER-minimal
    assert bytes.fromhex("0202012c") in der
    big = PckExtension(ppid=bytes(16), comp_svns=(255,) * 16, pce_svn=0, cpusvn=bytes(16), pce_id=bytes(2),
                       fmspc=bytes(6))
    assert bytes.fromhex("020200ff") in big.to_der()
    assert PckExtension.parse_der(big.to_der()) == big


def _entry_oid(n: str) -> bytes:
    """DER of OID 1.2.840.113741.1.13.1.<n> (n one arc, < 128)."""
    base = bytes.fromhex("2a864886f84d010d01")
    return bytes([0x06, len(base) + 1]) + base + bytes([int(n)])


def test_pck_extension_malformed() -> None:
    der = _sample().to_der()
    fmspc_entry = bytes([0x30, 12 + 8]) + _entry_oid("4") + bytes.fromhex("0406102030405060")
    assert fmspc_entry in der
    # FMSPC missing
    without = der.replace(fmspc_entry, b"")
    without = bytes([0x30, 0x82]) + (len(without) - 4).to_bytes(2, "big") + without[4:]
    with pytest.raises(DcapFormatError, match=r"FMSPC at offset \d+: 1.2.840.113741.1.13.1.4 is missing"):
        PckExtension.parse_der(without)
    # FMSPC twice
    twice = der[4:] + fmspc_entry
    twice = bytes([0x30, 0x82]) + len(twice).to_bytes(2, "big") + twice
    with pytest.raises(DcapFormatError, match="appears twice"):
        PckExtension.parse_der(twice)
    # wrong size FMSPC
    short = der.replace(fmspc_entry, bytes([0x30, 12 + 7]) + _entry_oid("4") + bytes.fromhex("04051020304050"))
    short = bytes([0x30, 0x82]) + (len(short) - 4).to_bytes(2, "big") + short[4:]
    with pytest.raises(DcapFormatError, match="FMSPC at offset .*is 5 bytes, expected 6"):
        PckExtension.parse_der(short)
    # truncated, trailing garbage, non-minimal length, wrong outer tag
    with pytest.raises(DcapFormatError, match="runs past the end"):
        PckExtension.parse_der(der[:-1])
    with pytest.raises(DcapFormatError, match="bytes after the outer SEQUENCE"):
        PckExtension.parse_der(der + b"\x00")
    with pytest.raises(DcapFormatError, match="non-minimal DER length"):
        PckExtension.parse_der(bytes([0x30, 0x81, 0x05]) + bytes(5))
    with pytest.raises(DcapFormatError, match="DER tag 0x31, expected 0x30"):
        PckExtension.parse_der(b"\x31" + der[1:])
    # a negative INTEGER for an SVN
    first_svn = bytes([0x06, 11]) + _entry_oid("2")[2:] + b"\x01\x02\x01\x00"  # ...1.2.1 INTEGER 0
    assert first_svn in der
    with pytest.raises(DcapFormatError, match="COMP01_SVN .*negative INTEGER"):
        PckExtension.parse_der(der.replace(first_svn, first_svn[:-1] + b"\x80"))
    with pytest.raises(SgxFormatError, match="15 component SVNs"):
        PckExtension(ppid=bytes(16), comp_svns=(0,) * 15, pce_svn=0, cpusvn=bytes(16), pce_id=bytes(2),
                     fmspc=bytes(6))


# --------------------------------------------------------------------------------------------------
# DcapQuote: quote v3, v4 and v5 (TDX) in one version-independent view

TDX_QVL = "attestation/tdx/dcapqvl_tdx_quote.bin"
TDX_COS = "attestation/tdx/gotdxguest_cos113_tdx_quote.bin"


@pytest.mark.parametrize("rel, sig_len, cert_size, trailing, tee_tcb_svn, mrtd", [
    # VECTORS.md "Offsets used" and "Decoded body"
    (TDX_QVL, 4300, 3678, 70, "06010300000000000000000000000000",
     "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"),
    (TDX_COS, 4299, 3677, 3065, "04010700000000000000000000000000",
     "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a"),
])
def test_real_tdx_v4_quote(rel: str, sig_len: int, cert_size: int, trailing: int, tee_tcb_svn: str,
                           mrtd: str) -> None:
    data = vector(rel)
    q = DcapQuote.parse(data)
    assert (q.version, q.tee_type, q.is_tdx, q.body_type) == (4, 0x81, True, 2)
    assert q.pack() == data
    assert q.signed_bytes() == data[:632]
    assert struct.unpack_from("<I", data, 632)[0] == sig_len
    assert q.isv_signature == data[636:700] and q.attestation_key == data[700:764]
    assert struct.unpack_from("<H", data, 764)[0] == 6
    assert q.qe_report_raw == data[770:1154] and q.qe_report_signature == data[1154:1218]
    assert len(q.qe_auth_data) == 32 and q.qe_auth_data == data[1220:1252]
    assert q.certification.cert_type == 5 and len(q.certification.data) == cert_size
    assert len(q.trailing) == trailing and not any(q.trailing)
    assert len(q.pck_chain_der()) == 3
    body = q.body
    assert isinstance(body, TdReportBody) and not body.is_td15 and body.size == 584
    assert body.tee_tcb_svn.hex() == tee_tcb_svn and body.mrtd.hex() == mrtd
    assert body.td_attributes.hex() == "0000001000000000" and not body.debug
    assert body.pack() == data[48:632]
    assert body.rtmrs[0] == data[48 + 328:48 + 376]
    assert q.qe_report.mrsigner.hex() == "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"
    assert (q.qe_report.isvprodid, q.qe_report.isvsvn) == (2, 6)
    assert q.qe_report.reportdata == q.expected_qe_report_data()


def test_dcap_quote_reads_v3_like_quote3() -> None:
    data = vector("attestation/sgx/dcapqvl_sgx_quote.bin")
    q, q3 = DcapQuote.parse(data), Quote3.parse(data)
    assert (q.version, q.is_tdx, q.body_type) == (3, False, 1)
    assert q.pack() == data and q.signed_bytes() == q3.signed_bytes() == data[:432]
    assert q.body == q3.report_body and q.qe_report == q3.signature.qe_report
    assert q.certification == q3.certification and q.qe_auth_data == q3.signature.qe_auth_data


def test_lenient_report_body_ignores_reserved_bytes() -> None:
    data = bytearray(vector("attestation/sgx/dcapqvl_sgx_quote.bin"))
    data[48 + 100] = 0x5A  # reserved byte of the ISV REPORTBODY (96..127)
    with pytest.raises(DcapFormatError):
        Quote3.parse(bytes(data))
    q = DcapQuote.parse(bytes(data))
    assert q.pack() == bytes(data)  # the raw bytes are kept
    assert q.body == report_body_lenient(bytes(data[48:432]))
    assert q.body.mrenclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    with pytest.raises(SgxFormatError, match="383 bytes"):
        report_body_lenient(bytes(383))


def _as_v5(v4: bytes, body_type: int = 2, extra_body: bytes = b"") -> bytes:
    """A v5 quote with the v4 quote's parts (signatures are not valid any more; the codec does not check them)."""
    body = v4[48:632] + extra_body
    return (struct.pack("<H", 5) + v4[2:48] + struct.pack("<HI", body_type, len(body)) + body + v4[632:])


def test_v5_quote_td10_and_td15() -> None:
    v4 = vector(TDX_QVL)
    q10 = DcapQuote.parse(_as_v5(v4))
    assert (q10.version, q10.body_type) == (5, 2)
    assert q10.signed_bytes() == _as_v5(v4)[:54 + 584]
    assert q10.body == DcapQuote.parse(v4).body
    assert q10.pack() == _as_v5(v4)
    extra = bytes(range(16)) + b"\x77" * 48
    raw15 = _as_v5(v4, 3, extra)
    q15 = DcapQuote.parse(raw15)
    assert q15.body_type == 3 and isinstance(q15.body, TdReportBody) and q15.body.is_td15
    assert q15.body.tee_tcb_svn2 == bytes(range(16)) and q15.body.mrservicetd == b"\x77" * 48
    assert q15.signed_bytes() == raw15[:702]
    assert struct.unpack_from("<I", raw15, 702)[0] == len(q15.signature_data())
    assert q15.pack() == raw15


@pytest.mark.parametrize("patch, field", [
    ((48, "<H", 4), "body_type"),     # unknown body type
    ((48, "<H", 1), "body_type"),     # SGX body in a TDX quote
    ((50, "<I", 648), "body_size"),   # TD 1.0 type with the TD 1.5 size
    ((4, "<I", 0x82), "header.tee_type"),
])
def test_v5_header_checks(patch: tuple[int, str, int], field: str) -> None:
    raw = _as_v5(vector(TDX_QVL))
    with pytest.raises(DcapFormatError) as e:
        DcapQuote.parse(_patch(raw, *patch))
    assert e.value.field == field
    assert str(e.value).startswith("DCAP quote v5: ")


def test_v4_signature_data_structure_checks() -> None:
    data = vector(TDX_QVL)
    with pytest.raises(DcapFormatError, match="carries type 6") as e:
        DcapQuote.parse(_patch(data, 764, "<H", 5))
    assert e.value.offset == 764
    # type-6 size one larger than its content: runs into the next field / past the signature data
    outer = struct.unpack_from("<I", data, 766)[0]
    with pytest.raises(DcapFormatError):
        DcapQuote.parse(_patch(data, 766, "<I", outer + 1))
    # the inner PCK chain one byte shorter leaves a byte over inside the type-6 block
    inner = struct.unpack_from("<I", data, 1254)[0]
    with pytest.raises(DcapFormatError, match="inside the type-6 certification data"):
        DcapQuote.parse(_patch(data, 1254, "<I", inner - 1))
    with pytest.raises(DcapFormatError) as e:
        DcapQuote.parse(data[:1000])
    assert e.value.field == "signature_data_len"
    with pytest.raises(DcapFormatError, match="versions 3, 4 and 5"):
        DcapQuote.parse(_patch(data, 0, "<H", 6))
    with pytest.raises(DcapFormatError, match="a v3 quote is SGX"):
        DcapQuote.parse(_patch(data, 0, "<H", 3))


def test_td_report_body_fields() -> None:
    with pytest.raises(SgxFormatError, match="both present"):
        TdReportBody(tee_tcb_svn2=bytes(16))
    with pytest.raises(SgxFormatError, match="mrtd is 47 bytes"):
        TdReportBody(mrtd=bytes(47))
    with pytest.raises(SgxFormatError, match="expected 584"):
        TdReportBody.parse(bytes(600))
    b = TdReportBody(td_attributes=b"\x01" + bytes(7), rtmr2=b"\x02" * 48)
    assert b.debug and TdReportBody.parse(b.pack()) == b and len(b.pack()) == 584
    assert b.pack()[424:472] == b"\x02" * 48
