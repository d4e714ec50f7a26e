"""DCAP collateral loaders: exact raw JSON bytes, PCS-shaped files, bundle JSON (both ways), and the PCS/PCCS
client with its on-disk cache against the local fake service. Real collateral comes from
../shared/vectors/attestation (VECTORS.md); tests that need it are skipped with the reason when it is absent.
Signatures are checked here with plain `cryptography` only to prove the loaders keep the signed bytes exact."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.attestation.api import CollateralError
from inclavare.attestation.collateral import (
    DcapCollateral,
    PcsClient,
    from_bundle,
    from_files,
    load_crl,
    parse_certificate_chain,
    raw_json_value,
    to_bundle,
)
from inclavare.testing.fake_pcs import FakePcs, pcs_document
from tests.unit.sgx_helpers import vectors_root

UTC = datetime.UTC

# sha256 of DER, from VECTORS.md
ROOT_CA = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
PLATFORM_CA = "22eb770dca215b607b5ccfc21a672b1da5cc660b1ad0365020567979edcaa0e1"
PROCESSOR_CA = "13b2dccef8fc4ec977ee5249743b0f758ebd1e28d768b2e1e12bc348adaa09fb"
TCB_SIGNING_2025 = "c0575e76d0303b61d09cde8cbdb70db34a74f38318300d7c0e6ba8cf4bf45aea"
TCB_SIGNING_2018 = "ec37d98107bfb7dab6ff8de4d4dda6fde30a6f50b0d7b03eefb5652f1e652969"
ROOT_CRL_2025_03 = "ad6f3f4e0673bb14ed4dffa7686f203cdfd25f07183e826ce928a9466801b3ec"
PLATFORM_CRL_2025_10 = "466d4e8b20dfe563327331c7a40eeb2d1ba81cccad0c599e8d16623fd6269937"

# bundle file -> (TCB info id, FMSPC, TCB signing cert, PCK CRL issuer, root CRL sha256 or None)
BUNDLES = {
    "sgx/dcapqvl_sgx_quote_collateral_2025-06.json": ("SGX", "00A067110000", TCB_SIGNING_2025, PROCESSOR_CA,
                                                      ROOT_CRL_2025_03),
    "sgx/dcapqvl_sgx_quote_collateral_2023-11.json": ("SGX", "00A067110000", TCB_SIGNING_2018, PROCESSOR_CA, None),
    "tdx/dcapqvl_tdx_quote_collateral_2025-06.json": ("TDX", "B0C06F000000", TCB_SIGNING_2025, PLATFORM_CA,
                                                      ROOT_CRL_2025_03),
}
TDX_TCB = "tdx/automata_tdx_tcbinfo_00806f050000_2025-10.json"
TDX_QE = "tdx/automata_td_qe_identity_2025-10.json"
TDX_PCK_CRL = "tdx/automata_pck_platform_crl_2025-10.der"
ROOT_CRL = "roots/intel_sgx_root_ca_crl_2025-03.der"


def vec(rel: str) -> Path:
    d = vectors_root() / "attestation"
    if not d.is_dir():
        pytest.skip(f"attestation vectors not found at {d} (set INCLAVARE_VECTORS)")
    return d / rel


def sha(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def der_of_pem(rel: str) -> bytes:
    return x509.load_pem_x509_certificate(vec(rel).read_bytes()).public_bytes(serialization.Encoding.DER)


def intel_certs() -> list[bytes]:
    """What `--certs DIR` would hold: both TCB signing certificates (same key), root, both PCK CAs."""
    return [der_of_pem(f"roots/{n}.pem") for n in ("intel_sgx_tcb_signing_2018", "intel_sgx_root_ca",
                                                   "intel_sgx_pck_platform_ca", "intel_sgx_tcb_signing_2025",
                                                   "intel_sgx_pck_processor_ca")]


def assert_signed(raw: bytes, signature: bytes, signer_der: bytes) -> None:
    """ECDSA-P256-SHA256 r||s over exactly ``raw`` with the certificate's key (raises if not)."""
    key = x509.load_der_x509_certificate(signer_der).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der_sig = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(der_sig, raw, ec.ECDSA(hashes.SHA256()))


def assert_crl_issued_by(crl_der: bytes, issuer_der: bytes) -> None:
    crl = x509.load_der_x509_crl(crl_der)
    issuer = x509.load_der_x509_certificate(issuer_der)
    assert crl.issuer == issuer.subject
    key: Any = issuer.public_key()
    assert crl.is_signature_valid(key)


def one_line(e: pytest.ExceptionInfo[CollateralError]) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------------
# raw_json_value


@pytest.mark.parametrize(("document", "key", "expected"), [
    (b'{"a":1,"b":{"c":"}"}}', "b", b'{"c":"}"}'),
    (b' \r\n{\n "tcbInfo" :\t{ "x" : "a\\"}{[" , "y":[ ] } ,"signature":"00"}\n', "tcbInfo",
     b'{ "x" : "a\\"}{[" , "y":[ ] }'),
    (b'{"tcb\\u0049nfo":[1, 2 ,3] }', "tcbInfo", b"[1, 2 ,3]"),
    ('{"é":"ü", "k" :{"v":"ß\\u00df"}}'.encode(), "k", '{"v":"ß\\u00df"}'.encode()),
    (b'\xef\xbb\xbf{"k":"a\\n\\u00e9\\"\\\\"}', "k", b'"a\\n\\u00e9\\"\\\\"'),
    (b'{"k":-1.5e+3}', "k", b"-1.5e+3"),
    (b'{"a":{"k":1},"k":null}', "k", b"null"),
])
def test_raw_json_value_cuts_the_exact_bytes(document: bytes, key: str, expected: bytes) -> None:
    assert raw_json_value(document, key) == expected


@pytest.mark.parametrize(("document", "key", "fragment"), [
    (b"[1]", "a", "JSON object"),
    (b"", "a", "JSON object"),
    (b'{"a":1,"a":2}', "a", "duplicate top-level member 'a'"),
    (b'{"a":{"b":1,"b":2}}', "a", "duplicate key 'b'"),
    (b'{"a":NaN}', "a", "NaN is not a JSON number"),
    (b'{"a":1} x', "a", "after the JSON object"),
    (b'{"a":1', "a", "expected ',' or '}'"),
    (b'{"a":1,}', "a", "expected a member name"),
    (b'{"a" 1}', "a", "expected ':'"),
    (b'{"a":tru}', "a", "invalid JSON"),
    (b'\xff{"a":1}', "a", "not UTF-8"),
    (b'{"b":1}', "a", "no top-level member 'a'"),
    (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "a", "nested too deeply"),
])
def test_raw_json_value_rejects_bad_documents(document: bytes, key: str, fragment: str) -> None:
    with pytest.raises(CollateralError) as e:
        raw_json_value(document, key, where="doc.json")
    msg = one_line(e)
    assert msg.startswith("doc.json: ") and fragment in msg


JSON_WS = st.text(alphabet=" \t\n\r", max_size=3)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=16)


def dump(value: Any, data: st.DataObject, ascii_only: bool) -> bytes:
    """Serialise with random whitespace between all tokens."""
    def ws() -> bytes:
        return data.draw(JSON_WS).encode()

    if isinstance(value, dict):
        items = [ws() + json.dumps(k, ensure_ascii=ascii_only).encode() + ws() + b":" + ws()
                 + dump(v, data, ascii_only) + ws() for k, v in value.items()]
        return b"{" + (b",".join(items) if items else ws()) + b"}"
    if isinstance(value, list):
        elems = [ws() + dump(v, data, ascii_only) + ws() for v in value]
        return b"[" + (b",".join(elems) if elems else ws()) + b"]"
    return json.dumps(value, ensure_ascii=ascii_only).encode()


@settings(max_examples=100, deadline=None)
@given(obj=st.dictionaries(st.text(max_size=6), VALUES, min_size=1, max_size=5), ascii_only=st.booleans(),
       data=st.data())
def test_raw_json_value_round_trips_random_objects(obj: dict[str, Any], ascii_only: bool,
                                                   data: st.DataObject) -> None:
    expected: dict[str, bytes] = {}
    members = []
    for k, v in obj.items():
        expected[k] = dump(v, data, ascii_only)
        members.append(data.draw(JSON_WS).encode() + json.dumps(k, ensure_ascii=ascii_only).encode()
                       + data.draw(JSON_WS).encode() + b":" + data.draw(JSON_WS).encode() + expected[k]
                       + data.draw(JSON_WS).encode())
    document = data.draw(JSON_WS).encode() + b"{" + b",".join(members) + b"}" + data.draw(JSON_WS).encode()
    assert json.loads(document) == obj  # the generator itself writes valid JSON
    for k, v in obj.items():
        raw = raw_json_value(document, k)
        assert raw == expected[k]
        assert json.loads(raw) == v


@settings(max_examples=200, deadline=None)
@given(document=st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_raw_json_value_raises_only_collateral_error(document: bytes) -> None:
    try:
        raw = raw_json_value(document, "a")
    except CollateralError:
        return
    assert isinstance(raw, bytes) and json.loads(raw) == json.loads(document)["a"]


# --------------------------------------------------------------------------------------------------
# Bundles (vectors)


@pytest.mark.parametrize("rel", sorted(BUNDLES))
def test_vector_bundles_load_with_exact_signed_bytes(rel: str) -> None:
    tee_id, fmspc, signer, pck_ca, root_crl = BUNDLES[rel]
    path = vec(rel)
    doc = json.loads(path.read_bytes())
    c = from_bundle(path)
    assert isinstance(c, DcapCollateral) and str(path) in c.source
    assert c.tcb_info_raw == doc["tcb_info"].encode() and c.qe_identity_raw == doc["qe_identity"].encode()
    assert c.tcb_info_signature == bytes.fromhex(doc["tcb_info_signature"]) and len(c.tcb_info_signature) == 64
    tcb = json.loads(c.tcb_info_raw)
    assert (tcb["id"], tcb["fmspc"]) == (tee_id, fmspc)
    assert json.loads(c.qe_identity_raw)["id"] == ("QE" if tee_id == "SGX" else "TD_QE")
    for chain in (c.tcb_info_issuer_chain, c.qe_identity_issuer_chain):
        assert [sha(d) for d in chain] == [signer, ROOT_CA]
    assert [sha(d) for d in c.pck_crl_issuer_chain] == [pck_ca, ROOT_CA]
    assert_signed(c.tcb_info_raw, c.tcb_info_signature, c.tcb_info_issuer_chain[0])
    assert_signed(c.qe_identity_raw, c.qe_identity_signature, c.qe_identity_issuer_chain[0])
    assert c.pck_crl is not None and c.root_ca_crl is not None
    assert_crl_issued_by(c.pck_crl, c.pck_crl_issuer_chain[0])
    assert_crl_issued_by(c.root_ca_crl, c.pck_crl_issuer_chain[1])
    if root_crl:
        assert sha(c.root_ca_crl) == root_crl
    # the same from bytes and from the parsed dict; and to_bundle gives the file's values back exactly
    assert replace(from_bundle(path.read_bytes()), source="") == replace(c, source="")
    assert replace(from_bundle(doc), source="") == replace(c, source="")
    assert to_bundle(c) == doc


def test_a_reserialised_value_no_longer_verifies() -> None:
    """Guards the premise: the signature covers the served bytes, not the JSON value."""
    from cryptography.exceptions import InvalidSignature

    c = from_bundle(vec("tdx/dcapqvl_tdx_quote_collateral_2025-06.json"))
    reserialised = json.dumps(json.loads(c.tcb_info_raw)).encode()
    assert reserialised != c.tcb_info_raw
    with pytest.raises(InvalidSignature):
        assert_signed(reserialised, c.tcb_info_signature, c.tcb_info_issuer_chain[0])


@pytest.fixture
def sim_platform(tmp_path: Path) -> Any:
    from inclavare.sim.platform import SimPlatform

    return SimPlatform.open(str(tmp_path / "sim"))


def test_sim_bundle_round_trips(sim_platform: Any) -> None:
    bundle = sim_platform.collateral_bundle()
    c = from_bundle(json.dumps(bundle).encode())
    assert to_bundle(c) == bundle
    assert [sha(d) for d in c.tcb_info_issuer_chain][-1] == sim_platform.root_ca_fingerprint()
    assert_signed(c.tcb_info_raw, c.tcb_info_signature, c.tcb_info_issuer_chain[0])
    assert from_bundle(to_bundle(c)) == replace(c, source="collateral bundle")


def test_bundle_without_crls_and_chains_round_trips(sim_platform: Any) -> None:
    bundle = sim_platform.collateral_bundle()
    for key in ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain",
                "qe_identity_issuer_chain"):
        bundle[key] = ""
    c = from_bundle(bundle)
    assert (c.pck_crl, c.root_ca_crl, c.tcb_info_issuer_chain, c.pck_crl_issuer_chain) == (None, None, [], [])
    assert to_bundle(c) == bundle


def _bad(bundle: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = dict(bundle)
    if value is None:
        del out[key]
    else:
        out[key] = value(out[key]) if callable(value) else value
    return out


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("tcb_info", None, "tcb_info: missing"),
    ("qe_identity_signature", None, "qe_identity_signature: missing"),
    ("tcb_info_signature", lambda s: s[:-2], "expected 64 bytes"),
    ("qe_identity_signature", lambda s: s[:-1] + "g", "expected a hex string"),
    ("pck_crl", "zz", "pck_crl: expected a hex string"),
    ("root_ca_crl", "3000", "root_ca_crl: not an X.509 CRL"),
    ("tcb_info", lambda s: " " + s, "nothing around it"),
    ("tcb_info", lambda s: '{"tcbInfo":' + s + ',"signature":"00"}', "whole PCS document"),
    ("qe_identity", "[1,2]", "qe_identity: expected the 'enclaveIdentity' JSON object"),
    ("tcb_info", '{"a":1,"a":2}', "duplicate key 'a'"),
    ("tcb_info_issuer_chain", "not a certificate", "no complete CERTIFICATE PEM block"),
    ("qe_identity_issuer_chain", 12, "expected a string, got int"),
    ("pck_crl_issuer_chain", lambda s: s.replace("MII", "MIX", 1), "not a valid X.509 certificate"),
])
def test_bad_bundles_are_refused(sim_platform: Any, key: str, value: Any, fragment: str) -> None:
    bundle = _bad(sim_platform.collateral_bundle(), key, value)
    with pytest.raises(CollateralError) as e:
        from_bundle(json.dumps(bundle).encode())
    msg = one_line(e)
    assert msg.startswith("collateral bundle") and fragment in msg, msg


def test_bundle_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(b'{"tcb_info": ')
    with pytest.raises(CollateralError) as e:
        from_bundle(path)
    assert one_line(e).startswith(f"collateral bundle {path}: invalid JSON")
    with pytest.raises(CollateralError) as e:
        from_bundle(tmp_path / "absent.json")
    assert "absent.json" in one_line(e) and "No such file" in str(e.value)


# --------------------------------------------------------------------------------------------------
# Files in PCS shapes


def test_pcs_files_with_issuers_from_extra_certs() -> None:
    c = from_files(tcb_info=vec(TDX_TCB), qe_identity=vec(TDX_QE), pck_crl=vec(TDX_PCK_CRL),
                   root_crl=vec(ROOT_CRL), extra_certs=intel_certs(),
                   as_of=datetime.datetime(2025, 10, 20, tzinfo=UTC))
    # VECTORS.md: the signatures cover the raw tcbInfo value (4766 bytes) and enclaveIdentity value (461 bytes)
    assert (len(c.tcb_info_raw), len(c.qe_identity_raw)) == (4766, 461)
    assert c.tcb_info_raw == raw_json_value(vec(TDX_TCB).read_bytes(), "tcbInfo")
    assert c.tcb_info_signature == bytes.fromhex(json.loads(vec(TDX_TCB).read_bytes())["signature"])
    assert [sha(d) for d in c.tcb_info_issuer_chain] == [TCB_SIGNING_2025, ROOT_CA]
    assert [sha(d) for d in c.qe_identity_issuer_chain] == [TCB_SIGNING_2025, ROOT_CA]
    assert [sha(d) for d in c.pck_crl_issuer_chain] == [PLATFORM_CA, ROOT_CA]
    assert c.pck_crl is not None and c.root_ca_crl is not None
    assert (sha(c.pck_crl), sha(c.root_ca_crl)) == (PLATFORM_CRL_2025_10, ROOT_CRL_2025_03)
    assert_signed(c.tcb_info_raw, c.tcb_info_signature, c.tcb_info_issuer_chain[0])
    assert_signed(c.qe_identity_raw, c.qe_identity_signature, c.qe_identity_issuer_chain[0])
    assert_crl_issued_by(c.pck_crl, c.pck_crl_issuer_chain[0])


def test_of_two_fitting_signers_the_one_valid_at_as_of_is_chosen() -> None:
    """Intel re-issued the TCB signing certificate with the same key: both verify the document."""
    old = from_files(tcb_info=vec(TDX_TCB), qe_identity=vec(TDX_QE), extra_certs=intel_certs(),
                     as_of=datetime.datetime(2023, 12, 1, tzinfo=UTC))
    assert sha(old.tcb_info_issuer_chain[0]) == TCB_SIGNING_2018
    now = from_files(tcb_info=vec(TDX_TCB), qe_identity=vec(TDX_QE), extra_certs=intel_certs())
    assert sha(now.tcb_info_issuer_chain[0]) == TCB_SIGNING_2025  # valid now, or expires last
    bare = from_files(tcb_info=vec(TDX_TCB), qe_identity=vec(TDX_QE))
    assert (bare.tcb_info_issuer_chain, bare.pck_crl, bare.root_ca_crl) == ([], None, None)


def test_chain_and_crl_files_in_every_served_encoding(tmp_path: Path) -> None:
    chain_pem = (vec("roots/intel_sgx_tcb_signing_2025.pem").read_bytes()
                 + vec("roots/intel_sgx_root_ca.pem").read_bytes())
    pca_chain = (vec("roots/intel_sgx_pck_platform_ca.pem").read_bytes()
                 + vec("roots/intel_sgx_root_ca.pem").read_bytes())
    crl_pem = x509.load_der_x509_crl(vec(TDX_PCK_CRL).read_bytes()).public_bytes(serialization.Encoding.PEM)
    files = {
        "chain.pem": chain_pem,
        "chain.urlenc": urllib.parse.quote(chain_pem.decode(), safe="").encode(),  # as in the PCS header
        "chain.plus": urllib.parse.quote_plus(chain_pem.decode()).encode(),  # spaces as '+'
        "pca.pem": pca_chain,
        "pck.crl.pem": crl_pem,
        "root.crl.hex": vec(ROOT_CRL).read_bytes().hex().encode() + b"\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    expected = [TCB_SIGNING_2025, ROOT_CA]
    for chain_file in ("chain.pem", "chain.urlenc", "chain.plus"):
        c = from_files(tcb_info=vec(TDX_TCB), qe_identity=vec(TDX_QE), tcb_chain=tmp_path / chain_file,
                       qe_chain=tmp_path / chain_file, pck_crl=tmp_path / "pck.crl.pem",
                       root_crl=tmp_path / "root.crl.hex", pck_crl_chain=tmp_path / "pca.pem",
                       extra_certs=[der_of_pem("roots/intel_sgx_tcb_signing_2018.pem")])  # given chains win
        assert [sha(d) for d in c.tcb_info_issuer_chain] == expected, chain_file
        assert [sha(d) for d in c.qe_identity_issuer_chain] == expected
        assert [sha(d) for d in c.pck_crl_issuer_chain] == [PLATFORM_CA, ROOT_CA]
        assert c.pck_crl == vec(TDX_PCK_CRL).read_bytes() and c.root_ca_crl == vec(ROOT_CRL).read_bytes()


def _doc_variants(tcb: bytes, qe: bytes) -> list[tuple[str, bytes, bytes, str]]:
    """(label, tcb_info file, qe_identity file, message fragment)."""
    return [
        ("extra member", tcb[:-1] + b',"x":1}', qe, "unexpected member(s) 'x'"),
        ("no signature", tcb[:tcb.rindex(b',"signature"')] + b"}", qe, "no 'signature' member"),
        ("short signature", tcb[:tcb.rindex(b'"}')] + b'00"}', qe, "expected 64 bytes"),
        ("value not object", b'{"tcbInfo":[],"signature":"' + b"00" * 64 + b'"}', qe, "'tcbInfo' is not a JSON object"),
        ("swapped", qe, qe, "no 'tcbInfo' member (it holds 'enclaveIdentity' instead)"),
        ("qe v1", tcb, b'{"qeIdentity":{},"signature":"' + b"00" * 64 + b'"}', "QE identity v1"),
        ("trailing junk", tcb + b"}", qe, "after the JSON object"),
    ]


def test_bad_pcs_files_are_refused_naming_file_and_field(tmp_path: Path) -> None:
    tcb, qe = vec(TDX_TCB).read_bytes(), vec(TDX_QE).read_bytes()
    for label, tcb_doc, qe_doc, fragment in _doc_variants(tcb, qe):
        (tmp_path / "tcb.json").write_bytes(tcb_doc)
        (tmp_path / "qe.json").write_bytes(qe_doc)
        with pytest.raises(CollateralError) as e:
            from_files(tcb_info=tmp_path / "tcb.json", qe_identity=tmp_path / "qe.json")
        msg = one_line(e)
        assert fragment in msg and str(tmp_path) in msg, (label, msg)
    (tmp_path / "tcb.json").write_bytes(tcb)
    (tmp_path / "qe.json").write_bytes(qe)
    (tmp_path / "junk").write_bytes(b"\x30\x03\x02\x01\x00")
    (tmp_path / "key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pck_crl": tmp_path / "junk"}, f"PCK CRL file {tmp_path / 'junk'}: not an X.509 CRL"),
        ({"root_crl": tmp_path / "tcb.json"}, "root CA CRL file"),
        ({"tcb_chain": tmp_path / "key.pem"}, "is 'PRIVATE KEY', not 'CERTIFICATE'"),
        ({"pck_crl_chain": tmp_path / "junk"}, "not a valid X.509 certificate"),
        ({"qe_chain": tmp_path / "none"}, f"QE identity issuer chain file {tmp_path / 'none'}: No such file"),
        ({"extra_certs": [b"nope"]}, "extra certificate 1: not a DER X.509 certificate"),
    ]
    for kw, fragment in cases:
        with pytest.raises(CollateralError) as e:
            from_files(tcb_info=tmp_path / "tcb.json", qe_identity=tmp_path / "qe.json", **kw)
        assert fragment in one_line(e), (kw, str(e.value))


def test_load_crl_and_chain_helpers_refuse_mixed_content() -> None:
    der = vec(ROOT_CRL).read_bytes()
    pem = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
    assert load_crl(pem) == load_crl(der) == load_crl(der.hex().upper().encode()) == der
    with pytest.raises(CollateralError, match="holds 2 CRLs"):
        load_crl(pem + pem)
    cert_pem = vec("roots/intel_sgx_root_ca.pem").read_bytes()
    with pytest.raises(CollateralError, match="is 'X509 CRL', not 'CERTIFICATE'"):
        parse_certificate_chain(cert_pem + pem)
    with pytest.raises(CollateralError, match="unexpected text before PEM block 2"):
        parse_certificate_chain(cert_pem + b"subject=x\n" + cert_pem)


# --------------------------------------------------------------------------------------------------
# PCS client against the fake service

TDX_FMSPC = "b0c06f000000"
IN_WINDOW = datetime.datetime(2025, 6, 20, tzinfo=UTC)  # the 2025-06 TDX bundle's validity window


class Clock:
    def __init__(self, t: datetime.datetime) -> None:
        self.t = t

    def __call__(self) -> datetime.datetime:
        return self.t


@pytest.fixture
def tdx_bundle() -> dict[str, str]:
    return dict(json.loads(vec("tdx/dcapqvl_tdx_quote_collateral_2025-06.json").read_bytes()))


@pytest.fixture
def tdx_pcs(tdx_bundle: dict[str, str]) -> Iterator[FakePcs]:
    with FakePcs.for_bundle(tdx_bundle, tee="tdx", fmspc=TDX_FMSPC, ca="platform") as pcs:
        yield pcs


def cache_files(d: Path) -> list[Path]:
    return sorted(d.iterdir())


def test_pcs_client_fetches_caches_and_refetches_after_next_update(tdx_pcs: FakePcs, tdx_bundle: dict[str, str],
                                                                   tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    clock = Clock(IN_WINDOW)
    client = PcsClient(tdx_pcs.url, cache, clock=clock)
    c = client.collateral_for("tdx", TDX_FMSPC, "platform")
    # what came over HTTP (headers, PCS document shapes) is exactly the bundle's collateral
    assert replace(c, source="") == replace(from_bundle(tdx_bundle), source="")
    assert c.source == f"PCS {tdx_pcs.url}"
    assert_signed(c.tcb_info_raw, c.tcb_info_signature, c.tcb_info_issuer_chain[0])
    assert tdx_pcs.count() == 4 and (client.fetches, client.cache_hits) == (4, 0)
    assert set(tdx_pcs.requests) == {
        f"/tdx/certification/v4/tcb?fmspc={TDX_FMSPC.upper()}", "/tdx/certification/v4/qe/identity",
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der", "/sgx/certification/v4/rootcacrl"}
    # on disk: one 0600 file per URL in a 0700 directory, nothing left over
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = cache_files(cache)
    assert len(files) == 4 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert not any(f.name.startswith(".") for f in files)

    # before nextUpdate: everything from the cache, also for a new client on the same directory
    assert client.collateral_for("tdx", TDX_FMSPC, "platform") == c
    again = PcsClient(tdx_pcs.url, cache, clock=clock)
    assert again.collateral_for("tdx", TDX_FMSPC, "platform") == c
    assert tdx_pcs.count() == 4 and again.cache_hits == 4

    # after the TCB info / QE identity / PCK CRL nextUpdate (2025-07-19) but before the root CRL's (2026-04)
    clock.t = datetime.datetime(2025, 7, 25, tzinfo=UTC)
    assert client.collateral_for("tdx", TDX_FMSPC, "platform") == c
    assert tdx_pcs.count() == 7 and tdx_pcs.count("/sgx/certification/v4/rootcacrl") == 1
    assert len(cache_files(cache)) == 4


def test_offline_serves_only_the_cache(tdx_pcs: FakePcs, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    online = PcsClient(tdx_pcs.url, cache, clock=Clock(IN_WINDOW)).collateral_for("tdx", TDX_FMSPC, "platform")
    url = tdx_pcs.url
    tdx_pcs.stop()
    late = Clock(datetime.datetime(2030, 1, 1, tzinfo=UTC))  # all stale: served anyway, the verifier judges
    offline = PcsClient(url, cache, offline=True, clock=late)
    c = offline.collateral_for("tdx", TDX_FMSPC, "platform")
    assert replace(c, source="") == replace(online, source="") and "offline" in c.source
    assert offline.fetches == 0 and offline.cache_hits == 4
    with pytest.raises(CollateralError) as e:  # a stale cache is not enough when online and the service is down
        PcsClient(url, cache, clock=late).collateral_for("tdx", TDX_FMSPC, "platform")
    assert one_line(e).startswith(f"PCS {url}/tdx/certification/v4/tcb")
    with pytest.raises(CollateralError) as e:
        PcsClient(url, tmp_path / "empty", offline=True).collateral_for("sgx", TDX_FMSPC, "platform")
    assert "not in the collateral cache" in one_line(e)
    with pytest.raises(CollateralError, match="offline use needs a cache directory"):
        PcsClient(url, None, offline=True)


def test_cache_hit_with_the_real_clock_on_sim_collateral(sim_platform: Any, tmp_path: Path) -> None:
    with FakePcs.for_sim(sim_platform) as pcs:
        client = PcsClient(pcs.url, tmp_path / "cache")
        fmspc = sim_platform.fmspc.hex()
        first = client.collateral_for("sgx", fmspc, "platform")
        second = client.collateral_for("sgx", fmspc, "platform")
        assert first == second and pcs.count() == 4 and client.cache_hits == 4
    served = sim_platform.tcb_info_document()
    assert len(first.tcb_info_raw) == len(raw_json_value(served, "tcbInfo"))
    assert_signed(first.tcb_info_raw, first.tcb_info_signature, first.tcb_info_issuer_chain[0])
    assert_signed(first.qe_identity_raw, first.qe_identity_signature, first.qe_identity_issuer_chain[0])
    assert first.pck_crl is not None
    assert_crl_issued_by(first.pck_crl, first.pck_crl_issuer_chain[0])


def _bad_responses(bundle: dict[str, str]) -> list[tuple[str, int, bytes, dict[str, str], str]]:
    tcb_path = f"/tdx/certification/v4/tcb?fmspc={TDX_FMSPC.upper()}"
    chain = {"TCB-Info-Issuer-Chain": urllib.parse.quote(bundle["tcb_info_issuer_chain"], safe="")}
    good_tcb = pcs_document("tcbInfo", bundle["tcb_info"].encode(), bundle["tcb_info_signature"])
    qe_chain = {"SGX-Enclave-Identity-Issuer-Chain": urllib.parse.quote(bundle["qe_identity_issuer_chain"],
                                                                        safe="")}
    return [
        (tcb_path, 404, b"", {"Error-Code": "FmspcNotFound", "Error-Message": "no such FMSPC"},
         "HTTP 404 FmspcNotFound no such FMSPC"),
        (tcb_path, 503, b"busy", {}, "HTTP 503"),
        (tcb_path, 200, good_tcb, {}, "no TCB-Info-Issuer-Chain header"),
        (tcb_path, 200, b"<html>", chain, "expected a JSON object at byte 0"),
        (tcb_path, 200, good_tcb[:-1], chain, "expected ',' or '}'"),
        (tcb_path, 200, good_tcb, {"TCB-Info-Issuer-Chain": "garbage"}, "no complete CERTIFICATE PEM block"),
        (tcb_path, 200, good_tcb.replace(b'"nextUpdate"', b'"nextUpdat"'), chain, "no 'nextUpdate' string"),
        ("/tdx/certification/v4/qe/identity", 200,
         pcs_document("enclaveIdentity", bundle["qe_identity"].encode(), "00" * 63), qe_chain, "expected 64 bytes"),
        ("/sgx/certification/v4/pckcrl?ca=platform&encoding=der", 200, b"\x30\x00",
         {"SGX-PCK-CRL-Issuer-Chain": "x"}, "not an X.509 CRL"),
        ("/sgx/certification/v4/rootcacrl", 200, b"abcd", {}, "not an X.509 CRL"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_responses_are_refused_and_never_cached(tdx_pcs: FakePcs, tdx_bundle: dict[str, str], tmp_path: Path,
                                                    case: int) -> None:
    path, status, body, headers, fragment = _bad_responses(tdx_bundle)[case]
    tdx_pcs.override(path, status, body, headers)
    client = PcsClient(tdx_pcs.url, tmp_path / "cache", clock=Clock(IN_WINDOW))
    with pytest.raises(CollateralError) as e:
        client.collateral_for("tdx", TDX_FMSPC, "platform")
    msg = one_line(e)
    assert msg.startswith(f"PCS {tdx_pcs.url}{path}") and fragment in msg, msg
    del tdx_pcs.overrides[path]
    before = tdx_pcs.count(path)
    client.collateral_for("tdx", TDX_FMSPC, "platform")
    assert tdx_pcs.count(path) == before + 1  # the bad response was not cached


def test_damaged_cache_entries_are_fetched_again(tdx_pcs: FakePcs, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    client = PcsClient(tdx_pcs.url, cache, clock=Clock(IN_WINDOW))
    c = client.collateral_for("tdx", TDX_FMSPC, "platform")
    victim = max(cache_files(cache), key=lambda p: p.stat().st_size)
    victim.write_bytes(b"{not json")
    assert client.collateral_for("tdx", TDX_FMSPC, "platform") == c
    assert client.fetches == 5 and json.loads(victim.read_bytes())["version"] == 1
    entry = json.loads(victim.read_bytes())
    entry["body"] = "AAAA"  # well-formed entry, bad document
    victim.write_text(json.dumps(entry))
    assert client.collateral_for("tdx", TDX_FMSPC, "platform") == c and client.fetches == 6
    victim.write_text(json.dumps(entry))
    with pytest.raises(CollateralError, match=r"\(cached\)"):  # offline cannot fetch: says what is wrong
        PcsClient(tdx_pcs.url, cache, offline=True).collateral_for("tdx", TDX_FMSPC, "platform")


def test_root_crl_from_intels_distribution_point_shape(tdx_pcs: FakePcs, tdx_bundle: dict[str, str],
                                                       tmp_path: Path) -> None:
    client = PcsClient(tdx_pcs.url, tmp_path / "c", root_ca_crl_url=tdx_pcs.url + "/IntelSGXRootCA.der",
                       clock=Clock(IN_WINDOW))
    assert client.root_ca_crl() == bytes.fromhex(tdx_bundle["root_ca_crl"])
    assert tdx_pcs.count("/IntelSGXRootCA.der") == 1 and tdx_pcs.count("/sgx/certification/v4/rootcacrl") == 0
    assert PcsClient("https://api.trustedservices.intel.com/", None).root_ca_crl_url == (
        "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der")


def test_api_v3_headers(sim_platform: Any, tmp_path: Path) -> None:
    pcs = FakePcs.for_sim(sim_platform, api_version="v3")
    with pcs:
        c = PcsClient(pcs.url, tmp_path / "c", api_version="v3").collateral_for(
            "sgx", sim_platform.fmspc.hex(), "platform")
        assert "/sgx/certification/v3/qe/identity" in pcs.requests
    assert [sha(d) for d in c.tcb_info_issuer_chain][-1] == sim_platform.root_ca_fingerprint()


def test_tls_is_verified_and_ca_file_pins(sim_platform: Any, tmp_path: Path) -> None:
    with FakePcs.for_sim(sim_platform, tls=True) as pcs:
        assert pcs.url.startswith("https://") and pcs.ca_file
        fmspc = sim_platform.fmspc.hex()
        c = PcsClient(pcs.url, tmp_path / "a", ca_file=pcs.ca_file).collateral_for("sgx", fmspc, "platform")
        assert_signed(c.tcb_info_raw, c.tcb_info_signature, c.tcb_info_issuer_chain[0])
        with pytest.raises(CollateralError) as e:
            PcsClient(pcs.url, tmp_path / "b").collateral_for("sgx", fmspc, "platform")
        assert "CERTIFICATE_VERIFY_FAILED" in one_line(e)
        with pytest.raises(CollateralError) as e:
            PcsClient(pcs.url, tmp_path / "b", ca_file=tmp_path / "nope.pem").collateral_for("sgx", fmspc)
        assert one_line(e).startswith(f"CA file {tmp_path / 'nope.pem'}")


@pytest.mark.parametrize(("kwargs", "call", "fragment"), [
    ({"base_url": "file:///etc/passwd"}, None, "expected http(s)://"),
    ({"base_url": "https://pccs.example/?x=1"}, None, "expected http(s)://"),
    ({"api_version": "v2"}, None, "PCS API version 'v2'"),
    ({"timeout": 0}, None, "PCS timeout"),
    ({"root_ca_crl_url": "ftp://x/crl"}, None, "root CA CRL URL"),
    ({}, ("snp", "00606a000000", "platform"), "collateral TEE 'snp'"),
    ({}, ("sgx", "00606a00000", "platform"), "FMSPC '00606a00000'"),
    ({}, ("sgx", "00606a000000", "root"), "PCK CA 'root'"),
    ({"api_version": "v3"}, ("tdx", "00606a000000", "platform"), "TDX collateral needs PCS API v4"),
])
def test_bad_client_arguments(tmp_path: Path, kwargs: dict[str, Any], call: tuple[str, str, str] | None,
                              fragment: str) -> None:
    args = {"base_url": "http://127.0.0.1:9", "cache_dir": tmp_path, **kwargs}
    with pytest.raises(CollateralError) as e:
        client = PcsClient(**args)
        assert call is not None
        client.collateral_for(*call)
    assert fragment in one_line(e)


def test_cache_directory_must_be_private(tdx_pcs: FakePcs, tmp_path: Path) -> None:
    cache = tmp_path / "shared"
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    with pytest.raises(CollateralError, match="not group/world-writable"):
        PcsClient(tdx_pcs.url, cache, clock=Clock(IN_WINDOW)).collateral_for("tdx", TDX_FMSPC, "platform")
