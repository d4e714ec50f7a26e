"""`sgx-tools gen-token`, `gen-qe-target-info` and `gen-quote` end to end: against the fake aesmd (the AESM
protocol in front of the simulated platform) and with --sim; size checks and one-line errors as upstream."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.cli import sgx_tools
from inclavare.formats.dcap import Quote3
from inclavare.formats.sgx import AttributeFlags, Attributes, EInitToken, Report, SigStruct, TargetInfo
from inclavare.sim.report import STATE_DIR_ENV, EnclaveIdentity, ReportKey
from inclavare.testing.fake_aesm import FakeAesm, SimAesmBackend

APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"gen-quote enclave").digest(),
                      mrsigner=hashlib.sha256(b"gen-quote signer").digest(), attributes=Attributes(0x4, 0x3),
                      isvprodid=9, isvsvn=4)
SIM_NOTICE = "protects nothing"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("gen-sim") / "state")


@pytest.fixture(scope="module")
def backend(state: str) -> SimAesmBackend:
    return SimAesmBackend(state)


@pytest.fixture
def fake(backend: SimAesmBackend, monkeypatch: pytest.MonkeyPatch, state: str) -> Iterator[FakeAesm]:
    monkeypatch.setenv(STATE_DIR_ENV, state)  # what --sim opens
    monkeypatch.delenv("INCLAVARE_AESM_SOCKET", raising=False)
    d = tempfile.mkdtemp(prefix="aesm-")
    try:
        with FakeAesm(os.path.join(d, "aesm.socket"), backend=backend) as f:
            yield f
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = sgx_tools.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _report(state: str, targetinfo: bytes, data: bytes = b"\x11" * 64) -> bytes:
    return ReportKey.load(state).make_report(APP, data, targetinfo)


def _sigstruct(path: Path, attributes: Attributes | None = None) -> SigStruct:
    attributes = attributes or Attributes(0x6, 0x3)
    sig = SigStruct(enclavehash=hashlib.sha256(b"gen-token enclave").digest(), modulus=os.urandom(384), exponent=3,
                    attributes=attributes, attribute_mask=Attributes(0xFFFFFFFFFFFFFFFF, 0))
    path.write_bytes(sig.pack())
    return sig


@pytest.mark.parametrize("sim", [False, True])
def test_gen_qe_target_info(fake: FakeAesm, backend: SimAesmBackend, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str], sim: bool) -> None:
    out = tmp_path / "ti.bin"
    where = ["--sim"] if sim else ["--aesm-socket", fake.socket_path]
    rc, stdout, err = _run(capsys, "gen-qe-target-info", "--quote-type", "ECDSA", "--targetinfo", str(out), *where)
    assert rc == 0, err
    ti = out.read_bytes()
    assert ti == backend.qe_target_info()
    assert TargetInfo.parse(ti).measurement == backend.quoting.platform.qe_identity.mrenclave
    assert str(out) in stdout
    assert (SIM_NOTICE in err) is sim
    assert ("InitQuoteEx" in fake.kinds()) is not sim


@pytest.mark.parametrize("sim", [False, True])
def test_gen_quote_carries_the_reports_body(fake: FakeAesm, backend: SimAesmBackend, state: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], sim: bool) -> None:
    report = _report(state, backend.qe_target_info())
    rpath, qpath = tmp_path / "enclave.rep", tmp_path / "quote.bin"
    rpath.write_bytes(report)
    where = ["--sim"] if sim else ["--aesm-socket", fake.socket_path]
    rc, stdout, err = _run(capsys, "gen-quote", "--quote-type", "ecdsa", "--report", str(rpath), "--quote",
                           str(qpath), *where)
    assert rc == 0, err
    quote = Quote3.parse(qpath.read_bytes())
    assert quote.report_body == Report.parse(report).body
    assert quote.report_body.mrenclave == APP.mrenclave and quote.report_body.reportdata == b"\x11" * 64
    assert (SIM_NOTICE in err) is sim
    assert ("GetQuoteEx" in fake.kinds()) is not sim


def test_gen_quote_and_target_info_default_output_names(fake: FakeAesm, backend: SimAesmBackend, state: str,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INCLAVARE_AESM_SOCKET", fake.socket_path)
    assert _run(capsys, "gen-qe-target-info", "--quote-type", "ecdsa")[0] == 0
    Path("r.bin").write_bytes(_report(state, Path("qe_targetinfo.bin").read_bytes()))
    assert _run(capsys, "gen-quote", "--quote-type", "ecdsa", "--report", "r.bin")[0] == 0
    assert Quote3.parse(Path("quote.bin").read_bytes()).report_body.isvprodid == APP.isvprodid


@pytest.mark.parametrize("sim", [False, True])
def test_gen_token(fake: FakeAesm, backend: SimAesmBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   sim: bool) -> None:
    sig = _sigstruct(tmp_path / "hello.sig")
    where = ["--sim"] if sim else ["--aesm-socket", fake.socket_path]
    rc, stdout, err = _run(capsys, "gen-token", "--signature", str(tmp_path / "hello.sig"), *where)
    assert rc == 0, err
    token = EInitToken.parse((tmp_path / "hello.token").read_bytes())  # upstream's default name
    assert token.is_valid
    assert (token.mrenclave, token.mrsigner, token.attributes) == (sig.enclavehash, sig.mrsigner, sig.attributes)
    assert (SIM_NOTICE in err) is sim
    assert (fake.kinds() == ["GetLaunchToken"]) is not sim


def test_gen_token_explicit_output(fake: FakeAesm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sig = _sigstruct(tmp_path / "enclave.ss")
    out = tmp_path / "t.bin"
    rc, _, err = _run(capsys, "gen-token", "--signature", str(tmp_path / "enclave.ss"), "--token", str(out),
                      "--aesm-socket", fake.socket_path)
    assert rc == 0, err
    assert EInitToken.parse(out.read_bytes()).mrenclave == sig.enclavehash


def test_gen_token_refused_by_the_launch_enclave(fake: FakeAesm, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _sigstruct(tmp_path / "le.sig", Attributes(int(AttributeFlags.MODE64BIT | AttributeFlags.EINITTOKENKEY), 3))
    rc, _, err = _run(capsys, "gen-token", "--signature", str(tmp_path / "le.sig"), "--aesm-socket", fake.socket_path)
    assert rc == 1
    assert err.startswith("sgx-tools: AESM GetLaunchToken failed: AESM_GET_LICENSETOKEN_ERROR (6): ")
    assert not (tmp_path / "le.token").exists()
    rc, _, err = _run(capsys, "gen-token", "--signature", str(tmp_path / "le.sig"), "--sim")
    assert rc == 1 and "the launch enclave refuses a token" in err


# ---- one-line errors


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    lines = [line for line in err.splitlines() if SIM_NOTICE not in line]
    assert len(lines) == 1 and lines[0].startswith("sgx-tools: "), err
    return lines[0]


def test_size_checks(fake: FakeAesm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 1000)
    sock = ["--aesm-socket", fake.socket_path]
    assert _one_line_error(capsys, "gen-token", "--signature", str(bad), *sock) == (
        f"sgx-tools: --signature {bad}: 1000 bytes, a SIGSTRUCT is 1808")
    assert _one_line_error(capsys, "gen-quote", "--quote-type", "ecdsa", "--report", str(bad), *sock) == (
        f"sgx-tools: --report {bad}: 1000 bytes, a REPORT is 432")
    bad.write_bytes(b"\0" * 1808)
    assert "HEADER" in _one_line_error(capsys, "gen-token", "--signature", str(bad), *sock)
    assert fake.requests == []  # nothing malformed reached AESM


def test_quote_type_checks(fake: FakeAesm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = ["--aesm-socket", fake.socket_path]
    msg = _one_line_error(capsys, "gen-qe-target-info", "--quote-type", "epidLinkable", *sock)
    assert "EPID attestation has been retired" in msg
    msg = _one_line_error(capsys, "gen-quote", "--quote-type", "rsa", "--report", "x", *sock)
    assert msg == "sgx-tools: --quote-type 'rsa' is not supported (supported: ecdsa)"
    assert "--quote-type" in _one_line_error(capsys, "gen-qe-target-info", *sock)


def test_sim_and_aesm_socket_are_exclusive(fake: FakeAesm, capsys: pytest.CaptureFixture[str]) -> None:
    msg = _one_line_error(capsys, "gen-qe-target-info", "--quote-type", "ecdsa", "--sim", "--aesm-socket", "/x")
    assert "not allowed with argument" in msg


def test_aesm_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "aesm.socket")
    msg = _one_line_error(capsys, "gen-qe-target-info", "--quote-type", "ecdsa", "--targetinfo",
                          str(tmp_path / "ti"), "--aesm-socket", path)
    assert msg == f"sgx-tools: AESM is not running ({path}: No such file or directory)"
    assert not (tmp_path / "ti").exists()


def test_aesm_error_reaches_the_user(fake: FakeAesm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake.fail("GetQuoteSizeEx", 44)
    rpath = tmp_path / "r"
    rpath.write_bytes(bytes(432))
    msg = _one_line_error(capsys, "gen-quote", "--quote-type", "ecdsa", "--report", str(rpath), "--quote",
                          str(tmp_path / "q"), "--aesm-socket", fake.socket_path)
    assert msg.startswith("sgx-tools: AESM GetQuoteSizeEx failed: AESM_NO_PLATFORM_CERT_DATA (44): ")
