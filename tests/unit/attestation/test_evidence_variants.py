"""Evidence in the encodings guest tools save it in (formats/envelopes.py, docs/attestation-variants.md).

Each real vector from ../shared/vectors/attestation is turned here into every variant -- zero padded to the
GetQuote buffer sizes, inside a TDX GetQuote buffer, inside the sev-guest MSG_REPORT_RSP, with its VCEK and AMD
chain in an extended report's certificate table or in a ``--certs`` folder as snpguest writes it -- and must
verify with the same claims as the plain form; the forged variants must be refused with one line."""

from __future__ import annotations

import datetime
import json
import os
import struct
import uuid
from pathlib import Path

import pytest

from inclavare.attestation.api import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Options,
    Result,
    VerificationError,
)
from inclavare.attestation.evidence import detect, verify_raw
from inclavare.attestation.snp import SnpCollateral, SnpVerifier
from inclavare.cli import shelter
from inclavare.formats.dcap import DcapQuote
from inclavare.formats.envelopes import (
    CERT_TABLE_ENTRY,
    EnvelopeError,
    build_cert_table,
    parse_cert_table,
    unwrap_snp_report_resp,
    unwrap_tdx_quote_buf,
)
from inclavare.formats.snp_certs import pem_certificates

V = Path(os.environ.get("INCLAVARE_VECTORS", Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors"))
A = V / "attestation"
pytestmark = pytest.mark.skipif(not A.is_dir(), reason="the shared attestation vectors are absent")

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
CRL_GUID = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")  # a GUID the verifier does not use
SNP_AS_OF = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text
    return text


def plain_quote(rel: str) -> bytes:
    """The quote without whatever padding the sample was saved with."""
    data = (A / rel).read_bytes()
    q = DcapQuote.parse(data)
    return data[:len(data) - len(q.trailing)]


def quote_buf(quote: bytes, *, size: int = 8192, status: int = 0, in_len: int = 1024, out_len: int | None = None,
              version: int = 1) -> bytes:
    hdr = struct.pack("<QQII", version, status, in_len, len(quote) if out_len is None else out_len)
    return (hdr + quote).ljust(size, b"\0")


QUOTES = ["sgx/dcapqvl_sgx_quote.bin", "tdx/dcapqvl_tdx_quote.bin", "tdx/gotdxguest_cos113_tdx_quote.bin"]


# --------------------------------------------------------------------------------------------------
# DCAP: zero padding and the TDX GetQuote buffer


def genuine(data: bytes) -> Result:
    r = verify_raw(data, "auto", Options())
    assert r.verified is True and r.errors == [], r.errors
    return r


@pytest.mark.parametrize("rel", QUOTES)
def test_zero_padded_quotes_verify_with_the_plain_claims(rel: str) -> None:
    quote = plain_quote(rel)
    base = genuine(quote)
    for size in (len(quote) + 1, 8192, 16384):
        padded = quote.ljust(size, b"\0")
        assert detect(padded) == "dcap"
        r = genuine(padded)
        assert r.claims == base.claims and r.tee == base.tee


@pytest.mark.parametrize("rel", QUOTES)
def test_non_zero_bytes_after_a_quote_are_reported(rel: str) -> None:
    quote = plain_quote(rel)
    for junk, at in ((b"\x01", 0), (bytes(100) + b"junk", 100), (bytes(4000) + b"\xff", 4000)):
        r = verify_raw(quote + junk, "auto", Options())
        assert r.verified is False
        assert r.errors == [f"quote: non-zero byte at offset {len(quote) + at} in the {len(junk)} bytes after the "
                            "signature data (only zero padding may follow a quote)"]


@pytest.mark.parametrize("rel", ["tdx/dcapqvl_tdx_quote.bin", "tdx/gotdxguest_cos113_tdx_quote.bin"])
def test_tdx_getquote_buffer_verifies_with_the_plain_claims(rel: str) -> None:
    quote = plain_quote(rel)
    base = genuine(quote)
    for size in (24 + len(quote), 8192, 16384):
        buf = quote_buf(quote, size=size)
        assert unwrap_tdx_quote_buf(buf) == quote
        assert detect(buf) == "dcap"
        r = genuine(buf)
        assert r.claims == base.claims and r.tee == "tdx"
        shelter_ok = verify_raw(buf, "tdx", Options())
        assert shelter_ok.verified


@pytest.mark.parametrize(("kwargs", "tail", "message"), [
    ({"status": 0x8000000000000000}, b"", "status at offset 0x8: 0x8000000000000000 (error)"),
    ({"status": 0x8000000000000001}, b"", "(quoting service unavailable)"),
    ({"status": 0xFFFFFFFFFFFFFFFF}, b"", "(in flight"),
    ({"out_len": 0}, b"", "out_len at offset 0x14: 0"),
    ({"out_len": 9000}, b"", "out_len at offset 0x14: 9000, but 8168 bytes follow"),
    ({"in_len": 9000}, b"", "in_len at offset 0x10: 9000"),
    ({}, b"\x01", "padding at offset"),
])
def test_forged_tdx_getquote_buffers_are_refused(kwargs: dict[str, int], tail: bytes, message: str) -> None:
    quote = plain_quote("tdx/dcapqvl_tdx_quote.bin")
    buf = bytearray(quote_buf(quote, **kwargs))
    if tail:
        buf[-1:] = tail
    with pytest.raises(EvidenceFormatError) as e:
        verify_raw(bytes(buf), "auto", Options())
    assert message in one_line(e.value) and one_line(e.value).startswith("TDX GetQuote buffer: ")


def test_a_getquote_buffer_whose_out_len_cuts_the_quote_is_refused() -> None:
    quote = plain_quote("tdx/dcapqvl_tdx_quote.bin")
    hdr = struct.pack("<QQII", 1, 0, 1024, len(quote) - 100)
    with pytest.raises(EvidenceFormatError) as e:  # the cut-off bytes are not zero padding
        verify_raw(hdr + quote, "auto", Options())
    assert "padding" in one_line(e.value)
    short = hdr + quote[:-100]
    with pytest.raises(EvidenceFormatError) as e:  # the quote itself is truncated
        verify_raw(short, "auto", Options())
    one_line(e.value)


# --------------------------------------------------------------------------------------------------
# SNP: the MSG_REPORT_RSP


def snp_material() -> tuple[bytes, bytes, bytes, bytes]:
    ask, ark = pem_certificates((A / "roots/amd_ask_ark_milan.pem").read_bytes())
    return (A / "snp/gosevguest_attestation.bin").read_bytes(), (A / "snp/gosevguest_vcek.der").read_bytes(), ask, ark


def snp_verify(evidence: bytes, collateral: object = None, extra: tuple[bytes, ...] = ()) -> Result:
    return verify_raw(evidence, "auto", Options(as_of=SNP_AS_OF, collateral=collateral, extra_certs=extra))


def snp_base() -> Result:
    report, vcek, ask, ark = snp_material()
    r = snp_verify(report, SnpCollateral(vcek=vcek, chain=[ask, ark]))
    assert r.verified and r.errors == [] and r.tcb_status == "UpToDate"
    return r


def report_resp(report: bytes, *, status: int = 0, size: int = 1184, pad_to: int = 0) -> bytes:
    return (struct.pack("<II24x", status, size) + report).ljust(pad_to, b"\0")


@pytest.mark.parametrize("pad_to", [0, 4000])
def test_snp_report_response_verifies_with_the_plain_claims(pad_to: int) -> None:
    report, vcek, ask, ark = snp_material()
    resp = report_resp(report, pad_to=pad_to)
    assert unwrap_snp_report_resp(resp) == report and detect(resp) == "snp"
    r = snp_verify(resp, SnpCollateral(vcek=vcek, chain=[ask, ark]))
    assert r.verified and r.claims == snp_base().claims
    r = SnpVerifier().verify(resp, Options(as_of=SNP_AS_OF, collateral=SnpCollateral(vcek=vcek, chain=[ask, ark])))
    assert r.claims == snp_base().claims


@pytest.mark.parametrize(("resp", "message"), [
    (report_resp(bytes(1184), status=0x16, size=0), "status at offset 0x0: 0x16 (INVALID_PARAMETERS)"),
    (report_resp(b"", status=0x27, size=0, pad_to=4000), "status at offset 0x0: 0x27 (INVALID_KEY_SELECTION)"),
    (report_resp(bytes(1184), size=1000), "report_size at offset 0x4: 1000"),
    (report_resp(bytes(1184), size=1216), "report_size at offset 0x4: 1216"),
])
def test_snp_report_responses_without_a_report_are_refused(resp: bytes, message: str) -> None:
    report = snp_material()[0]
    if resp[32:] == bytes(len(resp) - 32) and len(resp) == 32 + 1184:
        resp = resp[:32] + report  # the report is there, the header is what is wrong
    with pytest.raises(EvidenceFormatError) as e:
        snp_verify(resp)
    assert message in one_line(e.value) and one_line(e.value).startswith("SNP MSG_REPORT_RSP: ")


def test_snp_report_response_with_junk_or_cut_short_is_refused() -> None:
    report = snp_material()[0]
    with pytest.raises(EvidenceFormatError, match="padding at offset 0xf9f: non-zero byte after the report"):
        snp_verify(report_resp(report, pad_to=4000)[:-1] + b"\x01")
    with pytest.raises(EvidenceFormatError, match="report at offset 0x20: 1100 bytes"):
        snp_verify(report_resp(report)[:32 + 1100])
    with pytest.raises(EvidenceFormatError, match="neither a DCAP quote"):  # zeros say nothing
        snp_verify(bytes(4000))


# --------------------------------------------------------------------------------------------------
# SNP: the extended report's certificate table


def table(*entries: tuple[uuid.UUID, bytes]) -> bytes:
    return build_cert_table(list(entries))


def test_cert_table_layout_and_guid_byte_order() -> None:
    _, vcek, ask, ark = snp_material()
    blob = table((VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark))
    # RFC 4122 byte order, as go-sev-guest and the kernel selftests write it: 63 da 75 8d e6 64 ...
    assert blob[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")
    assert blob[72:96] == bytes(24)  # the terminator
    entries = parse_cert_table(blob)
    assert [(e.name, e.offset, e.data) for e in entries] == [
        ("VCEK", 96, vcek), ("ASK", 96 + len(vcek), ask), ("ARK", 96 + len(vcek) + len(ask), ark)]


@pytest.mark.parametrize("order", ["vcek-first", "chain-first", "with-unknown", "padded"])
def test_cert_table_as_collateral_verifies_with_the_plain_claims(order: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    report, vcek, ask, ark = snp_material()
    entries = [(VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)]
    if order == "chain-first":
        entries = entries[::-1]
    if order == "with-unknown":
        entries.insert(1, (CRL_GUID, b"not a certificate, and not ours to read"))
    blob = table(*entries)
    if order == "padded":
        blob = blob.ljust(16384, b"\0")  # the page-sized certs buffer SNP_GET_EXT_REPORT fills
    base = snp_base()
    assert snp_verify(report, blob).claims == base.claims  # bytes as Options.collateral
    assert snp_verify(report, SnpCollateral.load(blob)).claims == base.claims
    assert snp_verify(report, SnpCollateral.from_cert_table(blob)).claims == base.claims
    path = tmp_path / "certs.bin"
    path.write_bytes(blob)
    for flag in ("--cert-table", "--vcek"):
        code = shelter.main(["verify", str(A / "snp/gosevguest_attestation.bin"), flag, str(path), "--as-of",
                             "2025-01-01T00:00:00Z", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["verified"] and out["claims"] == json.loads(json.dumps(base.claims))


def test_cert_table_with_a_vlek_beside_the_vcek_takes_the_signer() -> None:
    report, vcek, ask, ark = snp_material()
    decoy = (A / "snp/negative/trustee_test_vcek_invalid_new.der").read_bytes()  # any other certificate
    blob = table((VLEK_GUID, decoy), (VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark))
    coll = SnpCollateral.from_cert_table(blob)
    assert coll.vcek == vcek
    assert snp_verify(report, coll).claims == snp_base().claims


def _entry_bytes(guid: uuid.UUID, offset: int, length: int) -> bytes:
    return CERT_TABLE_ENTRY.pack(guid.bytes, offset, length)


FORGED_TABLES = ["overlapping entries", "out of range", "inside the table", "truncated before the terminator",
                 "duplicate VCEK", "zero length", "terminator not zero", "cut inside a certificate"]


def forged_tables() -> list[tuple[str, bytes, str]]:
    _, vcek, ask, ark = snp_material()
    good = table((VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark))
    head = 4 * 24
    overlap = (_entry_bytes(VCEK_GUID, head, len(vcek)) + _entry_bytes(ASK_GUID, head + 10, len(ask))
               + _entry_bytes(ARK_GUID, head + len(vcek) + len(ask), len(ark)) + bytes(24)) + good[head:]
    past_end = _entry_bytes(VCEK_GUID, head - 24, len(vcek) + 10_000) + bytes(24) + vcek
    into_table = _entry_bytes(VCEK_GUID, 0, 48) + bytes(24) + vcek
    twice = table((VCEK_GUID, vcek), (VCEK_GUID, vcek), (ASK_GUID, ask))
    empty = _entry_bytes(VCEK_GUID, 48, 0) + bytes(24)
    bad_end = _entry_bytes(VCEK_GUID, 48, len(vcek)) + bytes(16) + struct.pack("<II", 5, 0) + vcek
    return [
        ("overlapping entries", overlap, "overlap those of the entry at offset 0x0"),
        ("out of range", past_end, "are not between the end of the table"),
        ("inside the table", into_table, "are not between the end of the table (48)"),
        ("truncated before the terminator", good[:60], "truncated: no all-zero terminating entry in 60 bytes"),
        ("duplicate VCEK", twice, "a second VCEK entry"),
        ("zero length", empty, "length 0"),
        ("terminator not zero", bad_end, "the terminator is all zero"),
        ("cut inside a certificate", good[:len(good) - 100], "are not between the end of the table"),
    ]


@pytest.mark.parametrize("what", FORGED_TABLES)
def test_forged_cert_tables_are_refused(what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob, message = next((b, m) for w, b, m in forged_tables() if w == what)
    with pytest.raises(EnvelopeError) as e:
        parse_cert_table(blob)
    assert message in one_line(e.value), what
    report = snp_material()[0]
    with pytest.raises(CollateralError) as ce:
        snp_verify(report, SnpCollateral.from_cert_table(blob))
    assert one_line(ce.value).startswith("SNP certificate table: ")
    path = tmp_path / "certs.bin"
    path.write_bytes(blob)
    code = shelter.main(["verify", str(A / "snp/gosevguest_attestation.bin"), "--cert-table", str(path)])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize("bad", ["trustee_test_vcek_invalid_legacy.der", "trustee_test_vcek_invalid_new.der"])
def test_cert_table_whose_vcek_is_another_chips_is_refused(bad: str) -> None:
    report, _, ask, ark = snp_material()
    other = (A / "snp/negative" / bad).read_bytes()  # hwID 00 01 02 .. 3f, not signed by AMD
    with pytest.raises(VerificationError) as e:
        snp_verify(report, table((VCEK_GUID, other), (ASK_GUID, ask), (ARK_GUID, ark)))
    one_line(e.value)


def test_cert_table_without_a_vcek_or_vlek_is_refused() -> None:
    report, _, ask, ark = snp_material()
    with pytest.raises(CollateralError, match="no VCEK or VLEK entry among its 2 entries"):
        snp_verify(report, table((ASK_GUID, ask), (ARK_GUID, ark)))
    with pytest.raises(CollateralError, match="ASK"):  # a VCEK alone: its issuer is missing
        snp_verify(report, table((VCEK_GUID, snp_material()[1])))


# --------------------------------------------------------------------------------------------------
# SNP: a --certs folder as snpguest writes it


def snpguest_folder(root: Path, *, pem: bool, extra: tuple[str, ...] = (), with_vcek: bool = True) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    _, vcek, ask, ark = snp_material()
    root.mkdir()
    for name, der in (("vcek", vcek), ("ask", ask), ("ark", ark)):
        if name == "vcek" and not with_vcek:
            continue
        if pem:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # serial number 0
                (root / f"{name}.pem").write_bytes(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
        else:
            (root / f"{name}.der").write_bytes(der)
    for rel in extra:
        (root / Path(rel).name).write_bytes((A / rel).read_bytes())
    return root


@pytest.mark.parametrize("pem", [False, True])
def test_certs_folder_finds_the_vcek_without_vcek_flag(pem: bool, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = snpguest_folder(tmp_path / "certs", pem=pem,
                             extra=("snp/negative/trustee_test_vcek_invalid_legacy.der",
                                    "roots/amd_ask_ark_genoa.pem", "roots/intel_sgx_root_ca.pem"))
    code = shelter.main(["verify", str(A / "snp/gosevguest_attestation.bin"), "--certs", str(folder), "--as-of",
                         "2025-01-01T00:00:00Z", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["verified"] and out["tcb_status"] == "UpToDate"
    assert out["claims"] == json.loads(json.dumps(snp_base().claims))


def test_certs_folder_with_only_another_chips_vcek_is_refused(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = snpguest_folder(tmp_path / "certs", pem=False, with_vcek=False,
                             extra=("snp/negative/trustee_test_vcek_invalid_legacy.der",))
    code = shelter.main(["verify", str(A / "snp/gosevguest_attestation.bin"), "--certs", str(folder)])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "none of the 3 extra certificate(s) is the VCEK that signed this report (chip_id 3ac3fe21e13fb099" in err


def test_report_response_with_the_table_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, vcek, ask, ark = snp_material()
    (tmp_path / "resp.bin").write_bytes(report_resp(report, pad_to=4000))
    (tmp_path / "certs.bin").write_bytes(table((VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)))
    code = shelter.main(["verify", str(tmp_path / "resp.bin"), "--cert-table", str(tmp_path / "certs.bin"),
                         "--as-of", "2025-01-01T00:00:00Z", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["claims"] == json.loads(json.dumps(snp_base().claims))
    code = shelter.main(["verify", str(tmp_path / "resp.bin"), "--cert-table", str(tmp_path / "certs.bin"),
                         "--vcek", str(A / "snp/gosevguest_vcek.der")])
    assert code != 0 and "give one" in capsys.readouterr().err


def test_nothing_but_attestation_errors_escape_on_mutated_variants() -> None:
    report, vcek, ask, ark = snp_material()
    blob = table((VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark))
    resp = report_resp(report)
    buf = quote_buf(plain_quote("tdx/dcapqvl_tdx_quote.bin"), size=6000)
    for base, collateral in ((resp, blob), (buf, None)):
        for i in list(range(0, 120)) + list(range(len(base) - 40, len(base))):
            data = bytearray(base)
            data[i] ^= 0x5A
            try:
                verify_raw(bytes(data), "auto", Options(as_of=SNP_AS_OF, collateral=collateral))
            except AttestationError as e:
                one_line(e)
    for i in range(0, 200):
        mutated = bytearray(blob)
        mutated[i] ^= 0x5A
        try:
            snp_verify(report, bytes(mutated))
        except AttestationError as e:
            one_line(e)
