"""The simulated platform's quoting side: every signature of a sim quote checks with plain `cryptography`,
the PCK extension and collateral carry the platform's values, bad reports are refused, state persists with
safe permissions."""

from __future__ import annotations

import datetime
import hashlib
import json
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from inclavare.formats.dcap import INTEL_QE_VENDOR_ID, SGX_EXTENSION_OID, PckExtension, Quote3
from inclavare.formats.sgx import Attributes, Report
from inclavare.sim.platform import ROOT_CA_CN, SIM_FMSPC, SimPlatform
from inclavare.sim.quoting import QE_AUTH_DATA, SimQuoteError, SimQuotingService
from inclavare.sim.report import EnclaveIdentity, ReportKey, SimPlatformError

APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"app enclave").digest(),
                      mrsigner=hashlib.sha256(b"app signer").digest(), attributes=Attributes(0x4, 0x3),
                      isvprodid=7, isvsvn=2)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "state"


@pytest.fixture(scope="module")
def qs(state: Path) -> SimQuotingService:
    return SimQuotingService.open(str(state))


@pytest.fixture(scope="module")
def rkey(state: Path, qs: SimQuotingService) -> ReportKey:
    return ReportKey.load(str(state))


def _report(rkey: ReportKey, qs: SimQuotingService, data: bytes = b"\x42" * 64) -> bytes:
    return rkey.make_report(APP, data, qs.qe_target_info())


def _sig(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _pub(raw: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicNumbers(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"),
                                         ec.SECP256R1()).public_key()


def _ec_pub(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    return pub


def verify_quote(quote: bytes, trusted_root_der: bytes) -> Quote3:
    """A quote check written against cryptography only, as any DCAP verifier does it."""
    q = Quote3.parse(quote)
    s = q.signature
    _pub(s.attestation_key).verify(_sig(s.isv_signature), quote[:432], ec.ECDSA(hashes.SHA256()))
    assert s.qe_report.reportdata == hashlib.sha256(s.attestation_key + s.qe_auth_data).digest() + bytes(32)
    leaf, ca, root = (x509.load_der_x509_certificate(d) for d in q.pck_chain_der())
    _ec_pub(leaf).verify(_sig(s.qe_report_signature), quote[564:948], ec.ECDSA(hashes.SHA256()))
    leaf.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert root.public_bytes(serialization.Encoding.DER) == trusted_root_der
    return q


def test_quote_verifies_with_plain_cryptography(qs: SimQuotingService, rkey: ReportKey) -> None:
    report = _report(rkey, qs, b"nonce" + bytes(59))
    quote = qs.get_quote(report)
    p = qs.platform
    q = verify_quote(quote, p.root_ca_der())
    assert q.report_body.pack() == report[:384]
    assert q.report_body.reportdata == b"nonce" + bytes(59)
    assert q.report_body.mrenclave == APP.mrenclave and q.report_body.isvprodid == 7
    h = q.header
    assert (h.version, h.att_key_type, h.tee_type) == (3, 2, 0)
    assert h.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert (h.qe_svn, h.pce_svn) == (p.qe_svn, p.pce_svn)
    assert h.user_data == p.qe_id + bytes(4)
    assert q.signature.qe_auth_data == QE_AUTH_DATA
    assert q.signature.attestation_key == p.attestation_public_key()
    qe = q.signature.qe_report
    assert (qe.mrenclave, qe.mrsigner, qe.isvprodid, qe.isvsvn) == (
        p.qe_identity.mrenclave, p.qe_identity.mrsigner, 1, p.qe_svn)
    assert qe.cpusvn == rkey.cpusvn
    assert q.certification.cert_type == 5
    assert q.trailing == b""
    assert Quote3.parse(quote).pack() == quote


def test_tampered_quote_fails_verification(qs: SimQuotingService, rkey: ReportKey) -> None:
    from cryptography.exceptions import InvalidSignature

    quote = qs.get_quote(_report(rkey, qs))
    for offset in (100, 48 + 320, 564 + 64):  # ISV body, ISV REPORTDATA, QE report MRENCLAVE
        bad = bytearray(quote)
        bad[offset] ^= 1
        with pytest.raises((InvalidSignature, AssertionError)):
            verify_quote(bytes(bad), qs.platform.root_ca_der())
    other_root = x509.load_pem_x509_certificate(qs.platform.pck_platform_ca_pem())
    with pytest.raises(AssertionError):
        verify_quote(quote, other_root.public_bytes(serialization.Encoding.DER))


def test_pck_certificate_and_extension(qs: SimQuotingService, rkey: ReportKey) -> None:
    q = Quote3.parse(qs.get_quote(_report(rkey, qs)))
    leaf, ca, root = (x509.load_der_x509_certificate(d) for d in q.pck_chain_der())
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert not ext.critical
    parsed = PckExtension.parse_der(ext.value.value)  # type: ignore[attr-defined]
    p = qs.platform
    assert parsed == p.pck_extension
    assert parsed.fmspc == SIM_FMSPC == bytes.fromhex("53494d000000")
    assert parsed.ppid == p.ppid and len(set(parsed.ppid)) > 1
    assert parsed.pce_svn == q.header.pce_svn
    assert parsed.cpusvn == q.signature.qe_report.cpusvn
    assert list(parsed.comp_svns) == list(parsed.cpusvn)
    assert parsed.pce_id == b"\x00\x00" and parsed.sgx_type == 1
    assert parsed.platform_instance_id is not None
    # Intel's layout: 16 component SVN entries, then PCESVN and CPUSVN, in one SEQUENCE
    assert ext.value.value.count(bytes.fromhex("2a864886f84d010d0102")) == 1 + 18  # type: ignore[attr-defined]
    assert root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == ROOT_CA_CN
    assert "Intel" not in root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    for cert, is_ca in ((leaf, False), (ca, True), (root, True)):
        assert isinstance(_ec_pub(cert).curve, ec.SECP256R1)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is is_ca
    assert root.subject == root.issuer and ca.issuer == root.subject and leaf.issuer == ca.subject
    assert p.root_ca_fingerprint() == hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert x509.load_pem_x509_certificate(p.root_ca_pem()) == root


def _check_collateral_sig(raw: bytes, sig_hex: str, chain_pem: str, root_der: bytes) -> None:
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    assert len(certs) == 2
    signer, root = certs
    signer.verify_directly_issued_by(root)
    assert root.public_bytes(serialization.Encoding.DER) == root_der
    _ec_pub(signer).verify(_sig(bytes.fromhex(sig_hex)), raw, ec.ECDSA(hashes.SHA256()))


def test_collateral_bundle(qs: SimQuotingService, rkey: ReportKey) -> None:
    from cryptography.exceptions import InvalidSignature

    p = qs.platform
    q = Quote3.parse(qs.get_quote(_report(rkey, qs)))
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    b = p.collateral_bundle()
    assert set(b) == {"pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
                      "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature"}
    root_der = p.root_ca_der()
    _check_collateral_sig(b["tcb_info"].encode(), b["tcb_info_signature"], b["tcb_info_issuer_chain"], root_der)
    _check_collateral_sig(b["qe_identity"].encode(), b["qe_identity_signature"], b["qe_identity_issuer_chain"],
                          root_der)
    with pytest.raises(InvalidSignature):  # the signature is over the exact bytes
        _check_collateral_sig(b["tcb_info"].replace(":", ": ").encode(), b["tcb_info_signature"],
                              b["tcb_info_issuer_chain"], root_der)

    tcb = json.loads(b["tcb_info"])
    ext = p.pck_extension
    assert (tcb["id"], tcb["version"], tcb["tcbType"]) == ("SGX", 3, 0)
    assert bytes.fromhex(tcb["fmspc"]) == ext.fmspc and bytes.fromhex(tcb["pceId"]) == ext.pce_id
    level = tcb["tcbLevels"][0]
    assert [c["svn"] for c in level["tcb"]["sgxtcbcomponents"]] == list(ext.comp_svns)
    assert level["tcb"]["pcesvn"] == q.header.pce_svn and level["tcbStatus"] == "UpToDate"
    issue = datetime.datetime.fromisoformat(tcb["issueDate"])
    nxt = datetime.datetime.fromisoformat(tcb["nextUpdate"])
    assert before <= issue <= datetime.datetime.now(datetime.UTC) < nxt

    qe_id = json.loads(b["qe_identity"])
    qe = q.signature.qe_report
    assert (qe_id["id"], qe_id["version"], qe_id["isvprodid"]) == ("QE", 2, qe.isvprodid)
    assert bytes.fromhex(qe_id["mrsigner"]) == qe.mrsigner
    mask = bytes.fromhex(qe_id["attributesMask"])
    assert bytes(a & m for a, m in zip(qe.attributes.pack(), mask, strict=True)) == bytes.fromhex(qe_id["attributes"])
    assert int(qe_id["miscselect"], 16) == qe.miscselect & int(qe_id["miscselectMask"], 16)
    assert qe_id["tcbLevels"][0]["tcb"]["isvsvn"] == qe.isvsvn

    for key, issuer_chain in (("root_ca_crl", b["pck_crl_issuer_chain"]), ("pck_crl", b["pck_crl_issuer_chain"])):
        crl = x509.load_der_x509_crl(bytes.fromhex(b[key]))
        ca, root = x509.load_pem_x509_certificates(issuer_chain.encode())
        issuer = root if key == "root_ca_crl" else ca
        assert crl.issuer == issuer.subject and crl.is_signature_valid(_ec_pub(issuer))
        assert len(crl) == 0
        assert crl.next_update_utc is not None and crl.next_update_utc > datetime.datetime.now(datetime.UTC)


def test_served_documents_sign_the_embedded_bytes(qs: SimQuotingService) -> None:
    p = qs.platform
    root_der = p.root_ca_der()
    chain = p.tcb_issuer_chain_pem().decode()
    for doc, key in ((p.tcb_info_document(), b"tcbInfo"), (p.qe_identity_document(), b"enclaveIdentity")):
        prefix = b'{"' + key + b'":'
        assert doc.startswith(prefix)
        raw = doc[len(prefix):doc.rindex(b',"signature":"')]
        parsed = json.loads(doc)
        assert json.loads(raw) == parsed[key.decode()]
        _check_collateral_sig(raw, parsed["signature"], chain, root_der)


def test_report_for_another_target_is_refused(qs: SimQuotingService, rkey: ReportKey) -> None:
    other = EnclaveIdentity(mrenclave=bytes(32), mrsigner=bytes(32), attributes=Attributes(0x4, 0x3))
    report = rkey.make_report(APP, bytes(64), other.targetinfo())
    with pytest.raises(SimQuoteError, match="MAC does not verify for the QE") as e:
        qs.get_quote(report)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("offset", [0, 64, 320, 383, 384, 431])  # CPUSVN, MRENCLAVE, REPORTDATA, KEYID, MAC
def test_tampered_report_is_refused(qs: SimQuotingService, rkey: ReportKey, offset: int) -> None:
    report = bytearray(_report(rkey, qs))
    report[offset] ^= 0x01
    with pytest.raises(SimQuoteError):
        qs.get_quote(bytes(report))


def test_report_from_another_platform_is_refused(qs: SimQuotingService, tmp_path: Path) -> None:
    foreign = ReportKey.load(str(tmp_path / "other"))
    with pytest.raises(SimQuoteError, match="MAC does not verify"):
        qs.get_quote(foreign.make_report(APP, bytes(64), qs.qe_target_info()))


def test_malformed_report_is_refused(qs: SimQuotingService, rkey: ReportKey) -> None:
    report = _report(rkey, qs)
    with pytest.raises(SimQuoteError, match="REPORT is 431 bytes, expected 432"):
        qs.get_quote(report[:-1])
    bad = bytearray(report)
    bad[21] = 1  # a reserved byte of the REPORTBODY
    with pytest.raises(SimQuoteError, match="malformed REPORT"):
        qs.get_quote(bytes(bad))


def test_qe_target_info_names_the_qe(qs: SimQuotingService) -> None:
    from inclavare.formats.sgx import TargetInfo

    ti = TargetInfo.parse(qs.qe_target_info())
    assert ti.measurement == qs.platform.qe_identity.mrenclave
    assert ti.attributes.flags & 0x1  # INIT
    report = ReportKey.load(qs.platform.state_dir).make_report(APP, bytes(64), qs.qe_target_info())
    assert Report.parse(report).body.mrenclave == APP.mrenclave


def test_persistence_and_permissions(qs: SimQuotingService, rkey: ReportKey, state: Path) -> None:
    again = SimQuotingService.open(str(state))
    assert again.platform.root_ca_fingerprint() == qs.platform.root_ca_fingerprint()
    assert again.platform.attestation_public_key() == qs.platform.attestation_public_key()
    assert again.platform.pck_cert_pem() == qs.platform.pck_cert_pem()
    assert again.qe_target_info() == qs.qe_target_info()
    verify_quote(again.get_quote(_report(rkey, qs)), qs.platform.root_ca_der())
    d = state / "dcap"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    files = sorted(p.name for p in d.iterdir())
    assert "platform.json" in files and "qe-attestation.key" in files and len(files) == 10
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert not any(".tmp." in name for name in files)
    for text in (repr(qs), repr(qs.platform)):
        assert "PRIVATE" not in text and "hidden" in text


def test_open_refuses_unsafe_or_inconsistent_state(tmp_path: Path) -> None:
    state = tmp_path / "s"
    SimPlatform.open(str(state))
    d = state / "dcap"
    key = d / "pck.key"
    key.chmod(0o640)
    with pytest.raises(SimPlatformError, match=r"pck.key: mode 0640 lets others read it"):
        SimPlatform.open(str(state))
    key.chmod(0o600)
    d.chmod(0o755)
    with pytest.raises(SimPlatformError, match=r"dcap: mode 0755 \(must be 0700\)"):
        SimPlatform.open(str(state))
    d.chmod(0o700)
    # a key that does not belong to its certificate
    saved = key.read_bytes()
    key.write_bytes((d / "tcb-signing.key").read_bytes())
    with pytest.raises(SimPlatformError, match="pck.pem: its public key does not match pck.key"):
        SimPlatform.open(str(state))
    key.write_bytes(saved)
    SimPlatform.open(str(state))
    # a symlink is refused
    (d / "root-ca.key").rename(d / "real.key")
    (d / "root-ca.key").symlink_to(d / "real.key")
    with pytest.raises(SimPlatformError, match="root-ca.key: is a symbolic link"):
        SimPlatform.open(str(state))


def test_configured_qe_svn(tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    p = SimPlatform.open(state, qe_isvsvn=5, pce_svn=3)
    assert (p.qe_svn, p.pce_svn, p.qe_identity.isvsvn) == (5, 3, 5)
    assert p.pck_extension.pce_svn == 3
    qs = SimQuotingService.open(state)
    quote = Quote3.parse(qs.get_quote(ReportKey.load(state).make_report(APP, bytes(64), qs.qe_target_info())))
    assert (quote.header.qe_svn, quote.header.pce_svn, quote.signature.qe_report.isvsvn) == (5, 3, 5)
    assert json.loads(p.qe_identity_json())["tcbLevels"][0]["tcb"]["isvsvn"] == 5
    # the QE of another SVN is another build
    assert SimPlatform.open(str(tmp_path / "t"), qe_isvsvn=6).qe_identity.mrenclave != p.qe_identity.mrenclave
    with pytest.raises(SimPlatformError, match="was created with qe_isvsvn=5, not 6"):
        SimPlatform.open(state, qe_isvsvn=6)


def test_concurrent_first_use_creates_one_platform(tmp_path: Path) -> None:
    state = str(tmp_path / "race")
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(SimPlatform.open(state).root_ca_fingerprint())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4 and len(set(results)) == 1


def test_default_state_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", str(tmp_path / "env"))
    qs = SimQuotingService.open()
    assert qs.platform.state_dir == str(tmp_path / "env")
    assert (tmp_path / "env" / "dcap" / "platform.json").is_file()
    assert (tmp_path / "env" / "report-key").is_file()
