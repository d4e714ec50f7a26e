"""sim/report.py: the per-host report key on disk, EREPORT, the target's MAC check, the documented derivation."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from inclavare.formats.sgx import Attributes, Report, SgxFormatError, SigStruct, TargetInfo
from inclavare.sim import report as simreport
from inclavare.sim.report import EnclaveIdentity, ReportKey, SimPlatformError
from tests.unit.sgx_helpers import flip

ALICE = EnclaveIdentity(mrenclave=b"A" * 32, mrsigner=b"S" * 32, attributes=Attributes(0x4, 0x3), miscselect=0,
                        isvprodid=5, isvsvn=9, isvfamilyid=b"F" * 16, isvextprodid=b"E" * 16, configsvn=2)
BOB = EnclaveIdentity(mrenclave=b"B" * 32, mrsigner=b"S" * 32, attributes=Attributes(0x6, 0x3))
DATA = bytes(range(64))


@pytest.fixture
def key(tmp_path: Path) -> ReportKey:
    return ReportKey.load(str(tmp_path / "sim"))


def test_key_is_created_once_private_and_hidden(tmp_path: Path) -> None:
    state = tmp_path / "state" / "sim"
    k1 = ReportKey.load(str(state))
    path = state / "report-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
    secret = path.read_bytes()
    assert len(secret) == 16
    assert secret.hex() not in repr(k1) and "hidden" in repr(k1)
    k2 = ReportKey.load(str(state))
    assert path.read_bytes() == secret  # not replaced
    r = k1.make_report(ALICE, DATA, BOB.targetinfo())
    assert k2.verify_report(r, BOB)
    assert sorted(os.listdir(state)) == [".lock", "report-key"]


def test_insecure_or_odd_key_files_are_refused(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    ReportKey.load(str(state))
    path = state / "report-key"
    path.chmod(0o644)
    with pytest.raises(SimPlatformError, match="mode 0644 lets others read it"):
        ReportKey.load(str(state))
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(SimPlatformError, match="5 bytes, expected 16"):
        ReportKey.load(str(state))
    path.unlink()
    os.symlink("/etc/hostname", path)
    with pytest.raises(SimPlatformError, match="symbolic link"):
        ReportKey.load(str(state))
    with pytest.raises(SimPlatformError, match="does not exist"):
        ReportKey.load(str(tmp_path / "other"), create=False)


def test_read_private_reads_at_most_one_byte_past_the_limit(tmp_path: Path) -> None:
    """The shared reader of the sim state files: missing is None, the check sees the fstat, reading is bounded."""
    path = tmp_path / "f"
    assert simreport.read_private(str(path), "f", lambda p, st: None, 4) is None
    path.write_bytes(b"0123456789")
    seen: list[int] = []
    assert simreport.read_private(str(path), "f", lambda p, st: seen.append(st.st_size), 4) == b"01234"
    assert seen == [10]
    assert simreport.read_private(str(path), "f", lambda p, st: None, 64) == b"0123456789"
    os.symlink(path, tmp_path / "link")
    with pytest.raises(SimPlatformError, match=r"^the link: is a symbolic link$"):
        simreport.read_private(str(tmp_path / "link"), "the link", lambda p, st: None, 64)


def test_report_reports_the_enclave(key: ReportKey) -> None:
    raw = key.make_report(ALICE, DATA, BOB.targetinfo())
    assert len(raw) == 432
    body = Report.parse(raw).body
    assert (body.mrenclave, body.mrsigner, body.isvprodid, body.isvsvn) == (b"A" * 32, b"S" * 32, 5, 9)
    assert body.attributes == Attributes(0x5, 0x3)  # INIT: the reporting enclave is running
    assert body.reportdata == DATA and body.cpusvn == simreport.SIM_CPUSVN
    assert (body.isvfamilyid, body.isvextprodid, body.configsvn) == (b"F" * 16, b"E" * 16, 2)


def test_only_the_target_verifies(key: ReportKey, tmp_path: Path) -> None:
    raw = key.make_report(ALICE, DATA, BOB.targetinfo())
    assert key.verify_report(raw, BOB)
    assert not key.verify_report(raw, ALICE)
    assert not key.verify_report(raw, EnclaveIdentity(b"B" * 32, b"S" * 32, Attributes(0x4, 0x3)))  # no DEBUG
    assert not key.verify_report(raw, EnclaveIdentity(b"B" * 32, b"S" * 32, Attributes(0x6, 0x3), miscselect=1))
    other_platform = ReportKey.load(str(tmp_path / "other"))
    assert not other_platform.verify_report(raw, BOB)
    for offset in (64, 256, 330, 400, 420):  # MRENCLAVE, ISVPRODID, REPORTDATA, KEYID, MAC
        assert not key.verify_report(flip(raw, offset), BOB)
    # a fresh KEYID per report
    assert Report.parse(key.make_report(ALICE, DATA, BOB.targetinfo())).keyid != Report.parse(raw).keyid


def test_mac_follows_the_documented_derivation(key: ReportKey, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    def aes_cmac(k: bytes, msg: bytes) -> bytes:
        c = cmac.CMAC(algorithms.AES128(k))
        c.update(msg)
        return c.finalize()

    target = TargetInfo(measurement=b"T" * 32, attributes=Attributes(0x7, 0x3), cet_attributes=1, configsvn=3,
                        miscselect=1, configid=b"C" * 64)
    raw = key.make_report(ALICE, DATA, target.pack())
    platform = (tmp_path / "sim" / "report-key").read_bytes()
    keyid = raw[384:416]
    deps = (b"INCLAVARE-SIM-REPORT-KEY-V1" + struct.pack("<H", 3) + simreport.SIM_CPUSVN
            + struct.pack("<QQ", 0x7, 0x3) + b"T" * 32 + struct.pack("<IHB", 1, 3, 1) + b"C" * 64 + keyid)
    assert raw[416:] == aes_cmac(aes_cmac(platform, deps), raw[:384])


def test_identity_from_sigstruct_and_targetinfo() -> None:
    sig = SigStruct(enclavehash=b"H" * 32, attributes=Attributes(0x6, 0x3), isvprodid=4, isvsvn=2, modulus=b"m" * 384)
    ident = EnclaveIdentity.from_sigstruct(sig)
    assert ident.mrenclave == b"H" * 32 and ident.mrsigner == sig.mrsigner
    assert ident.attributes == Attributes(0x7, 0x3) and (ident.isvprodid, ident.isvsvn) == (4, 2)
    ti = TargetInfo.parse(ident.targetinfo())
    assert ti.measurement == b"H" * 32 and ti.attributes == Attributes(0x7, 0x3)


def test_bad_requests(key: ReportKey) -> None:
    with pytest.raises(SimPlatformError, match="report_data is 63 bytes, expected 64"):
        key.make_report(ALICE, DATA[:-1], BOB.targetinfo())
    with pytest.raises(SgxFormatError, match="TARGETINFO: is 511 bytes"):
        key.make_report(ALICE, DATA, BOB.targetinfo()[:-1])
    with pytest.raises(SgxFormatError, match="TARGETINFO: reserved bytes 128..511"):
        key.make_report(ALICE, DATA, BOB.targetinfo()[:-1] + b"\x01")
    with pytest.raises(SgxFormatError, match="REPORT: is 10 bytes"):
        key.verify_report(bytes(10), BOB)


def test_module_functions_use_the_state_dir_from_the_environment(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "envstate"
    monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", str(state))
    raw = simreport.make_report(ALICE, DATA, BOB.targetinfo())
    assert (state / "report-key").exists()
    assert simreport.verify_report(raw, BOB)
    assert ReportKey.load(str(state)).verify_report(raw, BOB)
    explicit = ReportKey.load(str(tmp_path / "explicit"))
    assert not simreport.verify_report(raw, BOB, key=explicit)
