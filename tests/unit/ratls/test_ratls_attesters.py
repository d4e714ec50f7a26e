"""RATS-TLS attesters against fakes of the kernel interfaces (configfs-tsm, /dev/tdx_guest, /dev/sev-guest, QGS)
and of aesmd: selection as rats-tls does it, report data placed where each TEE carries it, one-line errors when
an interface is missing or misbehaves, and certificates made with each attester that parse and bind."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.attestation.api import AttestationError, Options
from inclavare.attestation.dcap import verify_quote
from inclavare.attestation.snp import SnpVerifier
from inclavare.formats.dcap import DcapQuote, TdReportBody
from inclavare.formats.sgx import Report
from inclavare.formats.snp import SnpReport
from inclavare.ratls import attesters as A
from inclavare.ratls.attesters import (
    AttesterError,
    ConfigfsTsm,
    NullAttester,
    SevSnpAttester,
    SgxEcdsaAttester,
    SimAttester,
    TdxEcdsaAttester,
    make_attested_certificate,
    parse_cert_table,
    select_attester,
    snp_collateral_of,
)
from inclavare.ratls.cert import check_binding, make_certificate, parse_certificate
from inclavare.ratls.dice import evidence_type_of, tag_for
from inclavare.testing.fake_tee import (
    GUID_ARK,
    GUID_ASK,
    GUID_VCEK,
    FakeConfigfsTsm,
    FakeGuestIoctl,
    FakeQgs,
    FakeSnpFirmware,
    FakeTdxModule,
    build_cert_table,
)

RD = bytes(range(64))


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def sim_state(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("sim") / "state")


@pytest.fixture(scope="module")
def sim(sim_state: str) -> SimAttester:
    return SimAttester(sim_state)


@pytest.fixture(scope="module")
def tdx() -> FakeTdxModule:
    return FakeTdxModule()


@pytest.fixture(scope="module")
def snp() -> FakeSnpFirmware:
    return FakeSnpFirmware()


@pytest.fixture
def tdx_tsm(tmp_path: Path, tdx: FakeTdxModule) -> FakeConfigfsTsm:
    return FakeConfigfsTsm(str(tmp_path / "tsm" / "report"), "tdx_guest", tdx.configfs)


@pytest.fixture
def snp_tsm(tmp_path: Path, snp: FakeSnpFirmware) -> FakeConfigfsTsm:
    return FakeConfigfsTsm(str(tmp_path / "tsm" / "report"), "sev_guest", snp.configfs)


@pytest.fixture
def device(tmp_path: Path) -> str:
    """A stand-in for the guest device node: a file the attester can open (the fake ioctl does the rest)."""
    path = tmp_path / "guest-device"
    path.write_bytes(b"")
    return str(path)


@pytest.fixture
def qgs(tdx: FakeTdxModule) -> Iterator[FakeQgs]:
    q = FakeQgs(tdx)
    yield q
    q.close()


@pytest.fixture(scope="module")
def aesm(sim_state: str) -> Iterator[str]:
    from inclavare.testing.fake_aesm import FakeAesm

    d = tempfile.mkdtemp(prefix="aesm", dir="/tmp")  # short: unix socket paths are limited to 108 bytes
    path = os.path.join(d, "aesm.socket")
    with FakeAesm(path, state_dir=sim_state):
        yield path
    shutil.rmtree(d, ignore_errors=True)


def enclave_report_fn(sim_state: str):
    """What an enclave runtime's local report does on the simulated platform: EREPORT for the given target."""
    from inclavare.sim.report import ReportKey

    key = ReportKey.load(sim_state)
    identity = A.sim_attester_identity()
    return lambda targetinfo, report_data: key.make_report(identity, report_data, targetinfo)


def quote_report_data(quote: bytes) -> bytes:
    q = DcapQuote.parse(quote)
    return q.body.report_data if isinstance(q.body, TdReportBody) else q.body.reportdata


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# --------------------------------------------------------------------------------------------------
# registry and selection


def test_names_priorities_and_ioctl_numbers_follow_upstream() -> None:
    # rats-tls: sgx_ecdsa 52, tdx_ecdsa 42, sev_snp 42, nullattester 0; sim (ours) between null and hardware
    got = {name: cls.priority for name, cls in A.ATTESTERS.items()}
    assert got == {"sgx_ecdsa": 52, "tdx_ecdsa": 42, "sev_snp": 42, "sim": 10, "nullattester": 0}
    assert A.attester_names() == ["sgx_ecdsa", "tdx_ecdsa", "sev_snp", "sim", "nullattester"]
    for cls in A.ATTESTERS.values():
        if cls.evidence_kind != "nullattester":
            assert tag_for(cls.evidence_kind) in (60000, 0x1A7504)
    # Linux uapi: _IOWR('T', 1, 1088 bytes), _IOR('T', 4, 16), _IOWR('S', 0 / 2, 32)
    assert (A.TDX_CMD_GET_REPORT0, A.TDX_CMD_GET_QUOTE) == (0xC4405401, 0x80105404)
    assert (A.SNP_GET_REPORT, A.SNP_GET_EXT_REPORT) == (0xC0205300, 0xC0205302)


def test_unnamed_selection_takes_the_usable_attester_of_highest_priority(
        tmp_path: Path, tdx_tsm: FakeConfigfsTsm, sim: SimAttester) -> None:
    missing = str(tmp_path / "absent")
    tdx_att = TdxEcdsaAttester(tsm=tdx_tsm, device=missing)
    snp_att = SevSnpAttester(tsm=ConfigfsTsm(missing), device=missing)
    sgx_att = SgxEcdsaAttester(None, socket_path=missing)
    null = NullAttester()
    assert select_attester(candidates=[null, sim, snp_att, sgx_att, tdx_att]) is tdx_att
    assert select_attester(candidates=[null, sim, snp_att, sgx_att]) is sim
    assert select_attester(candidates=[snp_att, null, sgx_att]) is null
    with pytest.raises(AttesterError, match="no attester is usable"):
        select_attester(candidates=[snp_att, sgx_att])


def test_named_selection_is_exact_and_enforced(tmp_path: Path, tdx_tsm: FakeConfigfsTsm, sim: SimAttester) -> None:
    missing = str(tmp_path / "absent")
    tdx_att = TdxEcdsaAttester(tsm=tdx_tsm, device=missing)
    snp_att = SevSnpAttester(tsm=ConfigfsTsm(missing), device=missing)
    pool = [NullAttester(), sim, tdx_att, snp_att]
    assert select_attester("nullattester", candidates=pool).name == "nullattester"
    assert select_attester("sim", candidates=pool) is sim
    with pytest.raises(AttesterError) as e:
        select_attester("sev_snp", candidates=pool)
    msg = one_line(e)
    assert "'sev_snp': not usable here" in msg and f"{missing} does not exist" in msg
    with pytest.raises(AttesterError, match=r"'sgx_la': unknown; known: nullattester, sev_snp, sim, tdx_ecdsa"):
        select_attester("sgx_la", candidates=pool)


def test_default_instances_are_configured_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                sim_state: str) -> None:
    missing = str(tmp_path / "absent")
    for var in ("INCLAVARE_TSM_REPORT_DIR", "INCLAVARE_TDX_GUEST_DEVICE", "INCLAVARE_SEV_GUEST_DEVICE",
                "INCLAVARE_AESM_SOCKET"):
        monkeypatch.setenv(var, missing)
    monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", sim_state)
    assert select_attester().name == "sim"
    with pytest.raises(AttesterError, match="not a TDX guest"):
        select_attester("tdx_ecdsa")
    with pytest.raises(AttesterError, match="no enclave to make the REPORT"):
        select_attester("sgx_ecdsa")
    # without a named sim state directory, and no platform at the default place, the sim is not chosen
    monkeypatch.delenv("INCLAVARE_SIM_STATE_DIR")
    monkeypatch.setattr("inclavare.sim.report.DEFAULT_STATE_DIR", missing)
    assert select_attester().name == "nullattester"
    with pytest.raises(AttesterError, match=r"INCLAVARE_SIM_STATE_DIR"):
        select_attester("sim")


# --------------------------------------------------------------------------------------------------
# nullattester and sim


def test_null_attester_collects_nothing() -> None:
    ev = NullAttester().collect(RD)
    assert (ev.kind, ev.data, ev.endorsements) == ("nullattester", b"", None)
    with pytest.raises(AttesterError, match="at most 64"):
        NullAttester().collect(bytes(65))


def test_sim_quote_verifies_against_the_sim_root_and_carries_the_report_data(sim: SimAttester) -> None:
    rd = hashlib.sha256(b"claims").digest()  # 32 bytes, zero-padded like rats-tls does
    ev = sim.collect(rd)
    assert ev.kind == "sim" and ev.endorsements is not None
    assert evidence_type_of(tag_for(ev.kind), ev.data) == "sgx_ecdsa"
    fp = ev.extra["platform_root_fingerprint"]
    assert fp == sim.platform.root_ca_fingerprint()
    res = verify_quote(ev.data, Options(trust_sim=True, sim_root_fingerprints=(fp,), collateral=ev.endorsements))
    assert (res.tee, res.verified, res.collateral_valid, res.errors) == ("sim", True, True, [])
    assert bytes.fromhex(res.claims["report_data"]) == rd + bytes(32)
    assert Report.parse(ev.extra["report"]).body.reportdata == rd + bytes(32)
    untrusted = verify_quote(ev.data, Options())
    assert not untrusted.verified and "not a trusted root" in untrusted.errors[0]


def test_sim_refuses_a_report_for_other_data(sim_state: str) -> None:
    make = enclave_report_fn(sim_state)
    liar = SimAttester(sim_state, report_fn=lambda ti, rd: make(ti, bytes(64)))
    with pytest.raises(AttesterError) as e:
        liar.collect(RD)
    assert "the enclave REPORT carries report data 0000" in one_line(e) and RD.hex() in str(e.value)
    broken = SimAttester(sim_state, report_fn=lambda ti, rd: b"short")
    with pytest.raises(AttesterError, match="sim: the enclave REPORT"):
        broken.collect(RD)
    honest = SimAttester(sim_state, report_fn=make, endorsements=False)
    ev = honest.collect(RD)
    assert quote_report_data(ev.data) == RD and ev.endorsements is None


# --------------------------------------------------------------------------------------------------
# sgx_ecdsa


def test_sgx_ecdsa_quotes_the_enclaves_report_through_aesm(aesm: str, sim_state: str, sim: SimAttester) -> None:
    att = SgxEcdsaAttester(enclave_report_fn(sim_state), socket_path=aesm)
    assert att.available()
    ev = att.collect(RD)
    assert ev.kind == "sgx_ecdsa" and quote_report_data(ev.data) == RD
    fp = sim.platform.root_ca_fingerprint()
    assert verify_quote(ev.data, Options(trust_sim=True, sim_root_fingerprints=(fp,), report_data=RD)).verified


def test_sgx_ecdsa_needs_an_enclave_and_aesm(aesm: str, sim_state: str, tmp_path: Path) -> None:
    reason = SgxEcdsaAttester(None, socket_path=aesm).unavailable_reason()
    assert reason is not None and "report_fn" in reason
    reason = SgxEcdsaAttester(enclave_report_fn(sim_state), socket_path=str(tmp_path / "nope")).unavailable_reason()
    assert reason is not None and "no AESM socket" in reason
    make = enclave_report_fn(sim_state)
    liar = SgxEcdsaAttester(lambda ti, rd: make(ti, bytes(64)), socket_path=aesm)
    with pytest.raises(AttesterError, match="sgx_ecdsa: the evidence from the enclave REPORT carries report data"):
        liar.collect(RD)
    gone = SgxEcdsaAttester(make, socket_path=str(tmp_path / "nope"))
    with pytest.raises(AttesterError) as e:
        gone.collect(RD)
    assert one_line(e).startswith("sgx_ecdsa: ")


# --------------------------------------------------------------------------------------------------
# tdx_ecdsa over configfs-tsm


def test_tdx_configfs_returns_exactly_the_kernels_quote(tdx_tsm: FakeConfigfsTsm, tdx: FakeTdxModule,
                                                        tmp_path: Path) -> None:
    att = TdxEcdsaAttester(tsm=tdx_tsm, device=str(tmp_path / "absent"))
    assert att.available()
    ev = att.collect(RD)
    assert ev.data == tdx.quotes[-1] and tdx_tsm.inblobs == [RD]
    assert evidence_type_of(tag_for(ev.kind), ev.data) == "tdx_ecdsa"
    assert quote_report_data(ev.data) == RD and ev.extra["generation"] == 1
    writes = [(name, data) for op, name, data in tdx_tsm.log if op == "write"]
    assert writes == [("inblob", RD)]
    assert os.listdir(tdx_tsm.root) == []  # the entry (and the availability probe's) was removed


def test_configfs_generation_race_is_refused(tdx_tsm: FakeConfigfsTsm) -> None:
    tdx_tsm.foreign_writes = 1
    with pytest.raises(AttesterError) as e:
        TdxEcdsaAttester(method="configfs", tsm=tdx_tsm).collect(RD)
    assert "generation went from 0 to 2, expected 1" in one_line(e)
    assert os.listdir(tdx_tsm.root) == []


def test_configfs_misbehaviour_is_one_line(tdx_tsm: FakeConfigfsTsm, snp_tsm: FakeConfigfsTsm,
                                           tmp_path: Path) -> None:
    with pytest.raises(AttesterError, match=r"provider is 'sev_guest', not 'tdx_guest'"):
        TdxEcdsaAttester(method="configfs", tsm=snp_tsm).collect(RD)
    reason = TdxEcdsaAttester(tsm=snp_tsm, device=str(tmp_path / "absent")).unavailable_reason()
    assert reason is not None and "the provider is 'sev_guest'" in reason
    with pytest.raises(AttesterError) as e:
        TdxEcdsaAttester(method="configfs", tsm=ConfigfsTsm(str(tmp_path / "nothing"))).collect(RD)
    assert "does not exist" in one_line(e)
    tdx_tsm.outblob_errno = 5
    with pytest.raises(AttesterError) as e:
        TdxEcdsaAttester(method="configfs", tsm=tdx_tsm).collect(RD)
    assert "/outblob: Input/output error" in one_line(e)
    tdx_tsm.outblob_errno = None
    tdx_tsm.tamper = lambda quote: quote.replace(RD, bytes(64))
    with pytest.raises(AttesterError, match="carries report data 0000"):
        TdxEcdsaAttester(method="configfs", tsm=tdx_tsm).collect(RD)
    tdx_tsm.tamper = lambda quote: quote[:100]
    with pytest.raises(AttesterError, match="malformed quote"):
        TdxEcdsaAttester(method="configfs", tsm=tdx_tsm).collect(RD)


# --------------------------------------------------------------------------------------------------
# tdx_ecdsa over /dev/tdx_guest


def test_tdx_device_with_qgs_over_vsock(device: str, tdx: FakeTdxModule, qgs: FakeQgs) -> None:
    io = FakeGuestIoctl(tdx=tdx, qgs=qgs)
    att = TdxEcdsaAttester(method="vsock", device=device, ioctl=io, qgs_connect=qgs.connect)
    ev = att.collect(RD)
    assert io.calls == [("TDX_CMD_GET_REPORT0", {"reportdata": RD})]
    tdreport = ev.extra["tdreport"]
    assert tdreport[128:192] == RD and tdx.genuine(tdreport)
    assert ev.data == tdx.quotes[-1] and quote_report_data(ev.data) == RD
    (framed,) = qgs.requests
    assert struct.unpack_from(">I", framed)[0] == len(framed) - 4
    assert struct.unpack_from("<HHIIIII", framed, 4) == (1, 0, 0, 24 + 1024, 0, 1024, 0)
    assert framed[28:] == tdreport


def test_tdx_device_falls_back_to_the_get_quote_ioctl(device: str, tdx: FakeTdxModule, qgs: FakeQgs) -> None:
    io = FakeGuestIoctl(tdx=tdx, qgs=qgs)
    qgs.refuse = True
    ev = TdxEcdsaAttester(device=device, ioctl=io, qgs_connect=qgs.connect, tsm=ConfigfsTsm(device + ".x")).collect(RD)
    assert ev.extra["source"].endswith("TDX_CMD_GET_QUOTE") and ev.data == tdx.quotes[-1]
    name, fields = io.calls[-1]
    assert name == "TDX_CMD_GET_QUOTE" and fields["version"] == 1 and fields["in_len"] == 4 + 24 + 1024
    no_ioctl = FakeGuestIoctl(tdx=tdx)  # an in-tree kernel: no TDX_CMD_GET_QUOTE
    with pytest.raises(AttesterError) as e:
        TdxEcdsaAttester(method="auto", device=device, ioctl=no_ioctl, qgs_connect=qgs.connect,
                         tsm=ConfigfsTsm(device + ".x")).collect(RD)
    msg = one_line(e)
    assert "no TDX_CMD_GET_QUOTE" in msg and "QGS over vsock" in msg and "refused" in msg


def test_tdx_device_errors(device: str, tdx: FakeTdxModule, qgs: FakeQgs, tmp_path: Path) -> None:
    io = FakeGuestIoctl(tdx=tdx, qgs=qgs)
    qgs.error_code = 0x12001
    with pytest.raises(AttesterError, match=r"quote generation service failed with error 0x12001"):
        TdxEcdsaAttester(method="vsock", device=device, ioctl=io, qgs_connect=qgs.connect).collect(RD)
    with pytest.raises(AttesterError, match=r"quote generation service failed with error 0x12001"):
        TdxEcdsaAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    qgs.error_code = 0
    io.quote_status = 0x8000000000000001
    with pytest.raises(AttesterError, match=r"status 0x8000000000000001 \(quote service unavailable\)"):
        TdxEcdsaAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    io.quote_status = 0
    qgs.reply = b"\x00\x00\x00\x08" + b"garbage!"
    with pytest.raises(AttesterError, match="too short for a GET_QUOTE_RESP"):
        TdxEcdsaAttester(method="vsock", device=device, ioctl=io, qgs_connect=qgs.connect).collect(RD)
    qgs.reply = None
    io.report_data = bytes(64)
    with pytest.raises(AttesterError, match=r"\(TDREPORT\) carries report data 0000"):
        TdxEcdsaAttester(method="vsock", device=device, ioctl=io, qgs_connect=qgs.connect).collect(RD)
    io.report_data = None
    io.errno_for[A.TDX_CMD_GET_REPORT0] = 5
    with pytest.raises(AttesterError) as e:
        TdxEcdsaAttester(method="vsock", device=device, ioctl=io, qgs_connect=qgs.connect).collect(RD)
    assert "TDX_CMD_GET_REPORT0 failed: Input/output error" in one_line(e)
    with pytest.raises(AttesterError) as e:
        TdxEcdsaAttester(method="vsock", device=str(tmp_path / "absent"), ioctl=io).collect(RD)
    assert "No such file or directory" in one_line(e)
    with pytest.raises(AttesterError, match="method 'tdcall' is not one of"):
        TdxEcdsaAttester(method="tdcall")


# --------------------------------------------------------------------------------------------------
# sev_snp over configfs-tsm


def test_snp_configfs_report_and_certificate_table(snp_tsm: FakeConfigfsTsm, snp: FakeSnpFirmware,
                                                   tmp_path: Path) -> None:
    att = SevSnpAttester(tsm=snp_tsm, device=str(tmp_path / "absent"))
    assert att.available()
    ev = att.collect(RD)
    assert ev.kind == "sev_snp" and ev.data == snp.reports[-1] and snp_tsm.inblobs == [RD]
    assert SnpReport.parse(ev.data).report_data == RD
    assert ev.extra["certificates"] == {"vcek": snp.leaf, "ask": snp.ask, "ark": snp.ark}
    assert ev.extra["cert_table"] == snp.cert_table()
    res = SnpVerifier(snp.ark_pins).verify(ev.data, Options(collateral=snp_collateral_of(ev), report_data=RD))
    assert (res.verified, res.collateral_valid, res.tcb_status) == (True, True, "UpToDate")
    assert os.listdir(snp_tsm.root) == []


def test_snp_configfs_privilege_level(tmp_path: Path, snp: FakeSnpFirmware) -> None:
    floor = FakeConfigfsTsm(str(tmp_path / "a"), "sev_guest", snp.configfs, privlevel_floor=1)
    ev = SevSnpAttester(method="configfs", tsm=floor).collect(RD)
    assert SnpReport.parse(ev.data).vmpl == 1
    assert [(n, d) for op, n, d in floor.log if op == "write"] == [("privlevel", b"1\n"), ("inblob", RD)]
    assert ev.extra["generation"] == 2
    ev = SevSnpAttester(method="configfs", tsm=floor, vmpl=3).collect(RD)
    assert SnpReport.parse(ev.data).vmpl == 3
    high = FakeConfigfsTsm(str(tmp_path / "b"), "sev_guest", snp.configfs, privlevel_floor=2)
    with pytest.raises(AttesterError) as e:
        SevSnpAttester(method="configfs", tsm=high, vmpl=1).collect(RD)
    assert "/privlevel: Invalid argument" in one_line(e)
    with pytest.raises(AttesterError, match="vmpl 4 is not 0..3"):
        SevSnpAttester(vmpl=4)


def test_snp_vlek_table(tmp_path: Path) -> None:
    fw = FakeSnpFirmware(signing_key="vlek")
    tsm = FakeConfigfsTsm(str(tmp_path / "r"), "sev_guest", fw.configfs)
    ev = SevSnpAttester(tsm=tsm).collect(RD)
    assert set(ev.extra["certificates"]) == {"vlek", "ask", "ark"}
    coll = snp_collateral_of(ev)
    assert coll is not None and coll.vcek == fw.leaf
    assert SnpVerifier(fw.ark_pins).verify(ev.data, Options(collateral=coll, report_data=RD)).claims[
        "signing_key"] == "VLEK"


# --------------------------------------------------------------------------------------------------
# sev_snp over /dev/sev-guest


def test_snp_ext_report_ioctl(device: str, snp: FakeSnpFirmware) -> None:
    io = FakeGuestIoctl(snp=snp)
    ev = SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    ((name, fields),) = io.calls
    assert name == "SNP_GET_EXT_REPORT"
    assert (fields["msg_version"], fields["user_data"], fields["vmpl"], fields["certs_len"]) == (1, RD, 0, 16384)
    assert ev.data == snp.reports[-1] and ev.extra["certificates"]["vcek"] == snp.leaf
    assert SnpVerifier(snp.ark_pins).verify(ev.data, Options(collateral=snp_collateral_of(ev), report_data=RD)).verified
    plain = SevSnpAttester(method="ioctl", device=device, ioctl=io, extended=False, vmpl=2).collect(RD)
    assert io.calls[-1][0] == "SNP_GET_REPORT" and io.calls[-1][1]["vmpl"] == 2
    assert plain.extra["certificates"] == {} and SnpReport.parse(plain.data).vmpl == 2
    assert snp_collateral_of(plain) is None


def test_snp_ioctl_grows_the_certificate_buffer_once(device: str, snp: FakeSnpFirmware) -> None:
    io = FakeGuestIoctl(snp=snp)
    io.certs = snp.cert_table(pad_to=5 * 4096 - 100)  # a host with more certificate bytes than 4 pages
    io.max_certs_len = 64 * 1024
    ev = SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    assert [f["certs_len"] for _, f in io.calls] == [16384, 20480]
    assert ev.extra["certificates"]["ark"] == snp.ark
    io.max_certs_len = 16384  # today's kernels: SEV_FW_BLOB_MAX_SIZE
    with pytest.raises(AttesterError) as e:
        SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    assert "SNP_GET_EXT_REPORT failed: Invalid argument" in one_line(e)


def test_snp_ioctl_errors(device: str, snp: FakeSnpFirmware, tmp_path: Path) -> None:
    io = FakeGuestIoctl(snp=snp)
    io.fw_error = 0x16
    with pytest.raises(AttesterError) as e:
        SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    assert "firmware error 0x16, VMM error 0x0" in one_line(e)
    io.fw_error, io.status = 0, 0x27
    with pytest.raises(AttesterError, match="the firmware answered status 0x27"):
        SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    io.status, io.report_data = 0, bytes(64)
    with pytest.raises(AttesterError, match="carries report data 0000"):
        SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    io.report_data, io.certs = None, b"\x01" * 30  # an entry pointing far outside the buffer
    outside = r"SNP certificate table: .* are not between the end of the table \(72\) and the end of the blob \(16384\)"
    with pytest.raises(AttesterError, match=outside):
        SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD)
    io.certs = b""
    assert SevSnpAttester(method="ioctl", device=device, ioctl=io).collect(RD).extra["certificates"] == {}
    reason = SevSnpAttester(device=str(tmp_path / "absent"), tsm=ConfigfsTsm(str(tmp_path / "x"))).unavailable_reason()
    assert reason is not None and reason.startswith("not an SEV-SNP guest: configfs-tsm: ")


def test_the_fake_device_checks_the_request_structs(device: str, snp: FakeSnpFirmware) -> None:
    import ctypes

    io = FakeGuestIoctl(snp=snp)
    req, resp, certs = (ctypes.create_string_buffer(n) for n in (112, 4000, 4096))
    struct.pack_into("<64sIQI", req, 0, RD, 0, 0, 0)
    struct.pack_into("<QI", req, 96, ctypes.addressof(certs), 4000)  # not a page multiple
    arg = bytearray(struct.pack("<B7xQQQ", 1, ctypes.addressof(req), ctypes.addressof(resp), 0))
    fd = os.open(device, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="Invalid argument"):
            io(fd, A.SNP_GET_EXT_REPORT, arg)
        arg[0] = 0  # msg_version must be non-zero
        with pytest.raises(OSError, match="Invalid argument"):
            io(fd, A.SNP_GET_REPORT, arg)
        with pytest.raises(OSError, match="Inappropriate ioctl"):
            io(fd, 0xC0205301, arg)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# the certificate table


def test_cert_table_parsing() -> None:
    table = build_cert_table([(GUID_VCEK, b"leaf"), (GUID_ASK, b"ask!"), (GUID_ARK, b"root")], pad_to=4096)
    assert table[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")
    assert parse_cert_table(table) == {"vcek": b"leaf", "ask": b"ask!", "ark": b"root"}
    other = bytes.fromhex("92f81bc358114d3d97ffd19f88dc67ea")
    assert parse_cert_table(build_cert_table([(other, b"crl")])) == {"92f81bc3-5811-4d3d-97ff-d19f88dc67ea": b"crl"}
    assert parse_cert_table(b"") == {} and parse_cert_table(bytes(4096)) == {}
    bad = {
        "no all-zero terminating entry": table[:24 * 3],
        "a second ASK entry": build_cert_table([(GUID_ASK, b"a"), (GUID_ASK, b"b")]),
        "are not between the end of the table": build_cert_table([(GUID_ARK, b"root")])[:-1],
        "length 0": build_cert_table([(GUID_ARK, b"")]),
        "terminating entry at offset 0x18: .*terminator is all zero":
            GUID_ARK + struct.pack("<II", 48, 1) + bytes(20) + b"\x01" + bytes(3) + b"x",
    }
    for problem, blob in bad.items():
        with pytest.raises(AttesterError, match=problem):
            parse_cert_table(blob)
    inside = GUID_ARK + struct.pack("<II", 0, 8) + bytes(24)  # points into the table itself
    with pytest.raises(AttesterError, match="are not between the end of the table"):
        parse_cert_table(inside)


# --------------------------------------------------------------------------------------------------
# certificates made with each attester


def evidence_report_data(kind: str, evidence: bytes) -> bytes:
    """What a verifier reads as the evidence's report data."""
    return SnpReport.parse(evidence).report_data if kind == "sev_snp" else quote_report_data(evidence)


@pytest.mark.parametrize("which", ["sim", "sgx_ecdsa", "tdx_configfs", "tdx_device", "snp_configfs", "snp_ioctl"])
@pytest.mark.parametrize("legacy", [False, True], ids=["dice", "legacy"])
def test_certificate_round_trip(which: str, legacy: bool, sim: SimAttester, sim_state: str, aesm: str,
                                tdx_tsm: FakeConfigfsTsm, snp_tsm: FakeConfigfsTsm, device: str, tdx: FakeTdxModule,
                                snp: FakeSnpFirmware, qgs: FakeQgs) -> None:
    att = {
        "sim": lambda: sim,
        "sgx_ecdsa": lambda: SgxEcdsaAttester(enclave_report_fn(sim_state), socket_path=aesm),
        "tdx_configfs": lambda: TdxEcdsaAttester(method="configfs", tsm=tdx_tsm),
        "tdx_device": lambda: TdxEcdsaAttester(method="vsock", device=device, ioctl=FakeGuestIoctl(tdx=tdx),
                                               qgs_connect=qgs.connect),
        "snp_configfs": lambda: SevSnpAttester(method="configfs", tsm=snp_tsm),
        "snp_ioctl": lambda: SevSnpAttester(method="ioctl", device=device, ioctl=FakeGuestIoctl(snp=snp)),
    }[which]()
    claims = None if legacy else {"key_0": b"value 0"}
    collected: list[bytes] = []

    def evidence_fn(report_data: bytes) -> bytes:
        ev = att.collect(report_data)
        collected.append(ev.data)
        return ev.data

    cert, _ = make_certificate(att.evidence_kind, evidence_fn, custom_claims=claims, legacy=legacy)
    parsed = parse_certificate(cert)
    assert parsed.format == ("legacy" if legacy else "dice") and parsed.evidence == collected[0]
    rd = evidence_report_data(att.evidence_kind, parsed.evidence)
    assert rd == parsed.expected_report_data
    check_binding(parsed, rd)
    if not legacy:
        assert parsed.custom_claims == {"key_0": b"value 0"}
    other = parse_certificate(make_certificate(att.evidence_kind, lambda _rd: collected[0], legacy=legacy)[0])
    with pytest.raises(AttestationError, match="binding"):  # the same evidence is not bound to another key
        check_binding(other, rd)


def test_attested_certificate_carries_the_sim_endorsements(sim: SimAttester) -> None:
    cert, key_pem, ev = make_attested_certificate(sim, custom_claims={"key_1": b"v"})
    assert ev is not None and b"PRIVATE KEY" in key_pem
    parsed = parse_certificate(cert)
    assert parsed.collateral is not None and parsed.evidence == ev.data
    check_binding(parsed, quote_report_data(parsed.evidence))
    fp = ev.extra["platform_root_fingerprint"]
    res = verify_quote(parsed.evidence, Options(trust_sim=True, sim_root_fingerprints=(fp,),
                                                report_data=parsed.expected_report_data, collateral=parsed.collateral))
    assert (res.verified, res.collateral_valid, res.tcb_status) == (True, True, "UpToDate")
    null_cert, _, none = make_attested_certificate(NullAttester())
    assert none is None and parse_certificate(null_cert, require_evidence=False).format == "none"
    legacy_cert, _, _ = make_attested_certificate(sim, legacy=True)
    assert parse_certificate(legacy_cert).endorsements is None
