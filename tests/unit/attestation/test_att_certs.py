"""attestation/certs.py cuts names and algorithm identifiers out of certificate and CRL bytes (with formats/der.py)
so that an encoding seen before is compared as bytes: the cut bytes must be exactly what cryptography reads, and
anything that is not strict DER of that shape must give None (the callers then take the slow path)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.attestation import certs
from inclavare.attestation.collateral import from_bundle
from inclavare.formats.dcap import DcapQuote
from tests.unit.sgx_helpers import vectors_root

SGX = vectors_root() / "attestation" / "sgx"
ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"vector {path} not found (set INCLAVARE_VECTORS)")
    return path


def _pck_chain() -> list[bytes]:
    return list(DcapQuote.parse(_need(SGX / "dcapqvl_sgx_quote.bin").read_bytes()).certification.pem_chain())


def test_certificate_fields_are_the_encoded_names_and_algorithms() -> None:
    chain = _pck_chain()
    assert len(chain) == 3
    for der in chain:
        cert = x509.load_der_x509_certificate(der)
        fields = certs._cert_fields.__wrapped__(der)  # type: ignore[attr-defined]
        assert fields is not None
        tbs_alg, issuer, subject, outer_alg = fields
        assert issuer == cert.issuer.public_bytes() and subject == cert.subject.public_bytes()
        assert tbs_alg == outer_alg == ECDSA_WITH_SHA256
        assert issuer in cert.tbs_certificate_bytes and subject in cert.tbs_certificate_bytes


def test_crl_issuer_is_the_encoded_name() -> None:
    coll = from_bundle(_need(SGX / "dcapqvl_sgx_quote_collateral_2025-06.json"))
    for der in (coll.pck_crl, coll.root_ca_crl):
        assert der is not None
        crl = x509.load_der_x509_crl(der)
        assert certs._crl_issuer.__wrapped__(der) == crl.issuer.public_bytes()  # type: ignore[attr-defined]


def test_not_that_shape_gives_none() -> None:
    leaf = _pck_chain()[0]
    cut = certs._cert_fields.__wrapped__  # type: ignore[attr-defined]
    crl_cut = certs._crl_issuer.__wrapped__  # type: ignore[attr-defined]
    assert cut(leaf[:40]) is None  # truncated inside the TBS
    assert cut(b"\x31" + leaf[1:]) is None  # a SET, not a SEQUENCE
    # the outer length re-encoded non-minimally (0x82 -> 0x83 00 ..): not DER
    assert leaf[1] == 0x82
    assert cut(leaf[:1] + b"\x83\x00" + leaf[2:]) is None
    assert crl_cut(b"") is None and crl_cut(b"\x30\x03\x30\x01\x02") is None
    # a certificate is not a CRL: after its [0] version (taken as the CRL's signature algorithm) comes the INTEGER
    # serial where a CRL has its issuer SEQUENCE
    assert crl_cut(leaf) is None


def test_loaded_certificate_matches_cryptography() -> None:
    for der in _pck_chain():
        cert = certs.load_cert(der)
        assert cert.public_bytes(Encoding.DER) == der
        assert certs.cn_of(der) in ("Intel SGX PCK Certificate", "Intel SGX PCK Platform CA",
                                    "Intel SGX PCK Processor CA", "Intel SGX Root CA")
