"""Trust folders (--certs DIR): what is read, what is ignored, what is an error, and which CRL is the root's."""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.attestation.api import CollateralError
from inclavare.attestation.collateral import DcapCollateral
from inclavare.attestation.trust import MAX_TRUST_FILE, read_trust_dir

T0 = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
DER, PEM = serialization.Encoding.DER, serialization.Encoding.PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
          ) -> x509.Certificate:
    issuer_cn, issuer_key = issuer or (cn, key)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(T0).not_valid_after(T0 + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def _crl(cn: str, key: ec.EllipticCurvePrivateKey, days: int) -> x509.CertificateRevocationList:
    return (x509.CertificateRevocationListBuilder().issuer_name(_name(cn))
            .last_update(T0 + datetime.timedelta(days=days)).next_update(T0 + datetime.timedelta(days=days + 30))
            .sign(key, hashes.SHA256()))


@pytest.fixture
def pki() -> dict[str, object]:
    root_key, ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _cert("Test Root CA", root_key)
    ca = _cert("Test Issuing CA", ca_key, ("Test Root CA", root_key))
    return {"root_key": root_key, "root": root, "ca": ca, "ca_key": ca_key,
            "fp": hashlib.sha256(root.public_bytes(DER)).hexdigest()}


def _collateral(root_crl: bytes | None = None) -> DcapCollateral:
    return DcapCollateral(tcb_info_raw=b"{}", tcb_info_signature=bytes(64), tcb_info_issuer_chain=[],
                          qe_identity_raw=b"{}", qe_identity_signature=bytes(64), qe_identity_issuer_chain=[],
                          root_ca_crl=root_crl)


def test_a_folder_as_operators_keep_it(tmp_path: Path, pki: dict, caplog: pytest.LogCaptureFixture) -> None:
    root, ca = pki["root"], pki["ca"]
    older, newer = _crl("Test Root CA", pki["root_key"], 0), _crl("Test Root CA", pki["root_key"], 60)
    bundle = b"Issuing CA, then root (openssl x509 -text output kept):\n" + ca.public_bytes(PEM) + \
        b"\nsubject=CN = Test Root CA\n" + root.public_bytes(PEM)
    (tmp_path / "bundle.pem").write_bytes(bundle)
    (tmp_path / "root.der").write_bytes(root.public_bytes(DER))
    (tmp_path / "root_2025-01.crl").write_bytes(older.public_bytes(DER))
    (tmp_path / "root_2025-03.pem").write_bytes(newer.public_bytes(PEM))
    (tmp_path / "README.md").write_text("Downloaded from the vendor on 2025-03-02.\n")
    (tmp_path / "tcbinfo.json").write_text('{"tcbInfo": {}}')
    (tmp_path / "signing.key").write_bytes(pki["ca_key"].private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / ".hidden.pem").write_bytes(b"not read")
    (tmp_path / "old").mkdir()
    os.mkfifo(tmp_path / "pipe")  # must be skipped, not block the reader
    with caplog.at_level(logging.DEBUG, logger="inclavare.attestation.trust"):
        m = read_trust_dir(tmp_path)
    assert m.certificates == (ca.public_bytes(DER), root.public_bytes(DER), root.public_bytes(DER))
    kinds = {os.path.basename(f.path): f.kind for f in m.files}
    assert kinds == {"README.md": "ignored", "bundle.pem": "certificates", "root.der": "certificates",
                     "root_2025-01.crl": "crl", "root_2025-03.pem": "crl", "signing.key": "ignored",
                     "tcbinfo.json": "ignored"}
    notes = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(notes) == 1 and "README.md" in notes[0] and "signing.key" in notes[0]

    # the newest CRL signed by the given root completes collateral that has none; a given CRL wins
    got = m.apply_root_ca_crl(_collateral(), (pki["fp"],))
    assert got.root_ca_crl == newer.public_bytes(DER)
    by_name = {os.path.basename(f.path): f.to_json() for f in m.files}
    assert by_name["root_2025-03.pem"]["used_as"] == "root_ca_crl"
    assert by_name["root_2025-01.crl"]["used_as"] is None
    assert by_name["root_2025-01.crl"]["note"] == "superseded by root_2025-03.pem"
    assert by_name["root_2025-03.pem"]["this_update"] == "2025-03-02T00:00:00Z"
    given = _collateral(b"\x30given")
    assert m.apply_root_ca_crl(given, (pki["fp"],)) is given


def test_a_crl_is_the_roots_only_if_the_root_signed_it(tmp_path: Path, pki: dict) -> None:
    (tmp_path / "root.pem").write_bytes(pki["root"].public_bytes(PEM))
    # issued in the root's name, signed by another key: not the root's CRL
    (tmp_path / "forged.crl").write_bytes(_crl("Test Root CA", pki["ca_key"], 90).public_bytes(DER))
    # the intermediate's own CRL: not a root CA CRL either
    (tmp_path / "ca.crl").write_bytes(_crl("Test Issuing CA", pki["ca_key"], 90).public_bytes(DER))
    m = read_trust_dir(tmp_path)
    assert m.apply_root_ca_crl(_collateral(), (pki["fp"],)).root_ca_crl is None
    # nor is a CRL of a root that is not trusted (not among the fingerprints)
    (tmp_path / "good.crl").write_bytes(_crl("Test Root CA", pki["root_key"], 90).public_bytes(DER))
    assert read_trust_dir(tmp_path).apply_root_ca_crl(_collateral(), ()).root_ca_crl is None
    assert read_trust_dir(tmp_path).apply_root_ca_crl(_collateral(), (pki["fp"],)).root_ca_crl is not None


@pytest.mark.parametrize(("name", "content", "message"), [
    ("corrupt.pem", b"-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n", "PEM block 1"),
    ("empty.crt", b"", "not a valid X.509 certificate or CRL"),
    ("truncated.der", b"ROOT", "not a valid X.509 certificate or CRL"),
    ("noext", b"\x30\x82\x01\x00" + bytes(10), "not a valid X.509 certificate or CRL"),
    ("mixed.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END X509 CRL-----\n", "begins as"),
    ("unterminated.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n", "no END line"),
])
def test_a_file_that_claims_to_be_trust_material_must_parse(tmp_path: Path, pki: dict, name: str, content: bytes,
                                                             message: str) -> None:
    (tmp_path / "root.pem").write_bytes(pki["root"].public_bytes(PEM))
    (tmp_path / name).write_bytes(content if name != "truncated.der" else pki["root"].public_bytes(DER)[:-20])
    with pytest.raises(CollateralError) as e:
        read_trust_dir(tmp_path)
    text = str(e.value)
    assert f"certificate file {tmp_path / name}" in text and message in text and "\n" not in text


def test_labels_and_bundles_must_agree(tmp_path: Path, pki: dict) -> None:
    crl = _crl("Test Root CA", pki["root_key"], 0)
    der = crl.public_bytes(DER)
    relabelled = crl.public_bytes(PEM).replace(b"X509 CRL", b"CERTIFICATE")
    (tmp_path / "a.pem").write_bytes(relabelled)
    with pytest.raises(CollateralError, match="labelled 'CERTIFICATE' but holds a crl"):
        read_trust_dir(tmp_path)
    (tmp_path / "a.pem").write_bytes(pki["root"].public_bytes(PEM) + crl.public_bytes(PEM))
    with pytest.raises(CollateralError, match="a CRL in a file with other PEM blocks"):
        read_trust_dir(tmp_path)
    (tmp_path / "a.pem").write_bytes(der)
    assert read_trust_dir(tmp_path).files[0].kind == "crl"


def test_limits_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(CollateralError, match=f"certificate directory {tmp_path / 'nope'}: No such file"):
        read_trust_dir(tmp_path / "nope")
    big = tmp_path / "big.pem"
    with open(big, "wb") as f:
        f.truncate(MAX_TRUST_FILE + 1)
    with pytest.raises(CollateralError, match=f"certificate file {big}: larger than"):
        read_trust_dir(tmp_path)
