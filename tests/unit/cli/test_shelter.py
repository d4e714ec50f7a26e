"""shelter verify / sgx-tools verify-quote: one core over every kind of evidence, with the outcomes the
shared vectors list (VECTORS.md), sim quotes only when trusted, and one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inclavare.cli import sgx_tools, shelter

V = Path(os.environ.get("INCLAVARE_VECTORS", Path(__file__).resolve().parents[3] / ".." / "shared" / "vectors"))
A = V / "attestation"
needs_vectors = pytest.mark.skipif(not A.is_dir(), reason="the shared attestation vectors are absent")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | str, str]:
    code = shelter.main(["verify", *argv])
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


@needs_vectors
def test_sgx_quote_with_collateral_inside_its_window(capsys) -> None:  # type: ignore[no-untyped-def]
    code, res, _ = run(capsys, str(A / "sgx/dcapqvl_sgx_quote.bin"), "--collateral",
                       str(A / "sgx/dcapqvl_sgx_quote_collateral_2025-06.json"), "--as-of", "2025-07-01T00:00:00Z",
                       "--json")
    assert code == 0
    assert res["tee"] == "sgx" and res["verified"] and res["collateral_valid"]
    assert res["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert set(res["advisory_ids"]) == {"INTEL-SA-00289", "INTEL-SA-00615"}
    assert {"mrenclave", "mrsigner", "isvprodid", "isvsvn", "attributes", "debug", "report_data", "cpusvn", "fmspc",
            "pceid"} <= set(res["claims"])


@needs_vectors
def test_expired_collateral_now_fails_but_says_why(capsys) -> None:  # type: ignore[no-untyped-def]
    code, res, _ = run(capsys, str(A / "sgx/dcapqvl_sgx_quote.bin"), "--collateral",
                       str(A / "sgx/dcapqvl_sgx_quote_collateral_2025-06.json"), "--json")
    assert code == 1
    assert res["verified"] is True and res["collateral_valid"] is False
    assert any("expired" in e for e in res["errors"])


@needs_vectors
def test_genuineness_only_without_collateral(capsys) -> None:  # type: ignore[no-untyped-def]
    code, res, _ = run(capsys, str(A / "tdx/dcapqvl_tdx_quote.bin"), "--json")
    assert code == 0 and res["tee"] == "tdx" and res["collateral_valid"] is None and res["tcb_status"] is None
    assert {"mrtd", "rtmr0", "rtmr3", "mrseam", "td_attributes", "xfam", "tee_tcb_svn"} <= set(res["claims"])


@needs_vectors
def test_tdx_ccel_replay_matches_and_tamper_fails(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = [str(A / "tdx/gotdxguest_cos113_tdx_quote.bin"),
            "--ccel-table", str(A / "tdx/gotdxguest_cos113_ccel_table.bin")]
    code, res, _ = run(capsys, *args, "--ccel-log", str(A / "tdx/gotdxguest_cos113_ccel_data.bin"), "--json")
    assert code == 0 and res["claims"]["ccel_replayed"] is True
    log = bytearray((A / "tdx/gotdxguest_cos113_ccel_data.bin").read_bytes())
    from inclavare.attestation.ccel import parse_event_log

    ev = parse_event_log(bytes(log)).events[5]
    log[ev.offset + len(ev.encode()) - len(ev.data) - 5] ^= 1  # inside that event's last digest
    bad = tmp_path / "ccel.bin"
    bad.write_bytes(bytes(log))
    code, res, _ = run(capsys, *args, "--ccel-log", str(bad), "--json")
    assert code == 1 and res["claims"]["ccel_replayed"] is False
    assert any(e.startswith("CCEL: ") for e in res["errors"])


@needs_vectors
def test_snp_report_with_vcek_and_chain(capsys) -> None:  # type: ignore[no-untyped-def]
    code, res, _ = run(capsys, str(A / "snp/gosevguest_attestation.bin"), "--vcek", str(A / "snp/gosevguest_vcek.der"),
                       "--cert-chain", str(A / "roots/amd_ask_ark_milan.pem"), "--as-of", "2025-01-01T00:00:00Z",
                       "--json")
    assert code == 0 and res["tee"] == "snp" and res["tcb_status"] == "UpToDate"
    assert {"measurement", "host_data", "report_data", "policy", "chip_id", "reported_tcb", "vmpl", "guest_svn",
            "family_id", "image_id", "id_key_digest", "author_key_digest", "signing_key", "debug"} <= set(res["claims"])
    code, _, err = run(capsys, str(A / "snp/gosevguest_attestation.bin"), "--vcek", str(A / "snp/gosevguest_vcek.der"))
    assert code == 1 and "ASK" in err and len(err.strip().splitlines()) == 1


@needs_vectors
@pytest.mark.parametrize(("name", "as_of", "expect"), [
    ("ccc_rats_tls_cert.pem", "2023-06-01T00:00:00Z", 0),
    ("ccc_rats_tls_cert.pem", None, 1),  # the certificate expired in 2024
    ("inclavare_rats_tls_cert_sample.pem", None, 0),
])
def test_ratls_certificates(capsys, name: str, as_of: str | None, expect: int) -> None:  # type: ignore[no-untyped-def]
    args = [str(A / "ratls" / name), "--json"] + (["--as-of", as_of] if as_of else [])
    code, res, _ = run(capsys, *args)
    assert code == expect, res
    assert res["verified"] is (expect == 0)
    if name.startswith("ccc"):
        assert res["claims"]["ratls_format"] == "dice"
        assert set(res["claims"]["ratls_custom_claims"]) == {"key_0", "key_1"}
    else:
        assert res["claims"]["ratls_format"] == "legacy"


def _sim_quote(state: Path) -> tuple[bytes, Path]:
    from inclavare.sim.platform import SimPlatform
    from inclavare.sim.quoting import SimQuotingService
    from inclavare.sim.report import EnclaveIdentity, ReportKey

    qs = SimQuotingService.open(str(state))
    ident = EnclaveIdentity(mrenclave=bytes(range(32)), mrsigner=bytes(32), attributes=__import__(
        "inclavare.formats.sgx", fromlist=["Attributes"]).Attributes(0x4, 0x3), miscselect=0, isvprodid=3, isvsvn=1)
    report = ReportKey.load(str(state)).make_report(ident, b"\x11" * 64, qs.qe_target_info())
    root = state / "root.pem"
    root.write_bytes(SimPlatform.open(str(state)).root_ca_pem())
    return qs.get_quote(report), root


def test_sim_quotes_only_when_the_sim_root_is_trusted(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    quote, root = _sim_quote(tmp_path / "sim")
    q = tmp_path / "quote.bin"
    q.write_bytes(quote)
    code, res, _ = run(capsys, str(q), "--json")
    assert code == 1 and res["verified"] is False
    code, res, _ = run(capsys, str(q), "--trust-sim", "--sim-root", str(root), "--json")
    assert code == 0 and res["tee"] == "sim" and res["claims"]["report_data"] == "11" * 64
    code, res, _ = run(capsys, str(q), "--tee", "sim", "--json")
    assert code == 2 or (code == 1 and not res["verified"])
    code, res, _ = run(capsys, str(q), "--trust-sim", "--sim-root", str(root), "--report-data", "22", "--json")
    assert code == 1 and res["verified"] is False


def test_sim_quote_with_sim_collateral(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from inclavare.sim.platform import SimPlatform

    quote, root = _sim_quote(tmp_path / "sim")
    q, c = tmp_path / "quote.bin", tmp_path / "collateral.json"
    q.write_bytes(quote)
    c.write_text(json.dumps(SimPlatform.open(str(tmp_path / "sim")).collateral_bundle()))
    code, res, _ = run(capsys, str(q), "--trust-sim", "--sim-root", str(root), "--collateral", str(c), "--json")
    assert code == 0 and res["collateral_valid"] is True and res["tcb_status"] == "UpToDate"


def test_bad_input_is_one_line(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, str(tmp_path / "missing.bin"))
    assert code == 2 and err.strip() == f"shelter: EVIDENCE {tmp_path / 'missing.bin'}: No such file or directory"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    code, _, err = run(capsys, str(junk))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "neither a DCAP quote" in err
    code, _, err = run(capsys, str(junk), "--as-of", "yesterday")
    assert code == 2 and "--as-of" in err


@needs_vectors
def test_sgx_tools_verify_quote_uses_the_same_core(capsys) -> None:  # type: ignore[no-untyped-def]
    code = sgx_tools.main(["verify-quote", "--quote-type", "ecdsa", "--quote", str(A / "sgx/dcapqvl_sgx_quote.bin"),
                           "--collateral", str(A / "sgx/dcapqvl_sgx_quote_collateral_2025-06.json"),
                           "--as-of", "2025-07-01T00:00:00Z", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    flipped = bytearray((A / "sgx/dcapqvl_sgx_quote.bin").read_bytes())
    flipped[100] ^= 1
    p = Path(os.environ.get("TMPDIR", "/tmp")) / f"flipped-{os.getpid()}.bin"
    p.write_bytes(bytes(flipped))
    try:
        assert sgx_tools.main(["verify-quote", "--quote-type", "ecdsa", "--quote", str(p)]) == 1
    finally:
        p.unlink()


# Every vector, verified the way operators run it: --certs pointing at roots/ exactly as shipped (Intel and AMD
# certificates, the Intel root CA CRL), with the outcome VECTORS.md lists.
_VECTOR_CASES = [
    # (id, evidence, extra flags, exit code, tcb_status, root CA CRL taken from the folder)
    ("sgx-genuine", "sgx/dcapqvl_sgx_quote.bin", [], 0, None, False),
    ("sgx-2025-06", "sgx/dcapqvl_sgx_quote.bin", ["--collateral", "sgx/dcapqvl_sgx_quote_collateral_2025-06.json",
                                                   "--as-of", "2025-07-01T00:00:00Z"],
     0, "ConfigurationAndSWHardeningNeeded", False),
    ("sgx-2023-11", "sgx/dcapqvl_sgx_quote.bin", ["--collateral", "sgx/dcapqvl_sgx_quote_collateral_2023-11.json",
                                                   "--as-of", "2023-12-01T00:00:00Z"],
     0, "ConfigurationAndSWHardeningNeeded", False),
    ("sgx-expired-now", "sgx/dcapqvl_sgx_quote.bin", ["--collateral",
                                                       "sgx/dcapqvl_sgx_quote_collateral_2025-06.json"],
     1, "ConfigurationAndSWHardeningNeeded", False),  # expired now: the status is still reported
    ("tdx-genuine", "tdx/dcapqvl_tdx_quote.bin", [], 0, None, False),
    ("tdx-2025-06", "tdx/dcapqvl_tdx_quote.bin", ["--collateral", "tdx/dcapqvl_tdx_quote_collateral_2025-06.json",
                                                   "--as-of", "2025-07-01T00:00:00Z"], 0, "UpToDate", False),
    ("tdx-pcs-files", "tdx/gotdxguest_cos113_tdx_quote.bin",
     ["--tcb-info", "tdx/automata_tdx_tcbinfo_00806f050000_2025-10.json",
      "--qe-identity", "tdx/automata_td_qe_identity_2025-10.json",
      "--pck-crl", "tdx/automata_pck_platform_crl_2025-10.der",
      "--as-of", "2025-10-25T00:00:00Z"], 0, "UpToDate", True),
    ("snp-vcek", "snp/gosevguest_attestation.bin", ["--vcek", "snp/gosevguest_vcek.der", "--as-of",
                                                    "2025-01-01T00:00:00Z"], 0, "UpToDate", False),
    ("snp-forged-vcek-legacy", "snp/gosevguest_attestation.bin",
     ["--vcek", "snp/negative/trustee_test_vcek_invalid_legacy.der"], 1, None, False),
    ("snp-forged-vcek-new", "snp/gosevguest_attestation.bin",
     ["--vcek", "snp/negative/trustee_test_vcek_invalid_new.der"], 1, None, False),
    ("ratls-inclavare", "ratls/inclavare_rats_tls_cert_sample.pem", [], 0, None, False),
    ("ratls-ccc-in-validity", "ratls/ccc_rats_tls_cert.pem", ["--as-of", "2023-06-01T00:00:00Z"], 0, None, False),
    ("ratls-ccc-expired", "ratls/ccc_rats_tls_cert.pem", [], 1, None, False),
]


@needs_vectors
@pytest.mark.parametrize(("evidence", "flags", "code", "status", "crl_used"), [c[1:] for c in _VECTOR_CASES],
                         ids=[c[0] for c in _VECTOR_CASES])
def test_every_vector_with_the_roots_folder_as_shipped(capsys, evidence, flags, code, status,  # type: ignore[no-untyped-def]
                                                       crl_used) -> None:
    args = [str(A / f) if f.split("/")[0] in ("sgx", "tdx", "snp", "ratls") else f for f in flags]
    got, res, err = run(capsys, str(A / evidence), *args, "--certs", str(A / "roots"), "--json")
    assert got == code, (res, err)
    assert isinstance(res, dict), err
    assert res["tcb_status"] == status
    if code == 0:
        assert res["verified"] is True and res["errors"] == []
    crls = [f for f in res["trust_material"] if f["kind"] == "crl"]
    assert [c["file"] for c in crls] == [str(A / "roots/intel_sgx_root_ca_crl_2025-03.der")]
    assert crls[0]["used_as"] == ("root_ca_crl" if crl_used else None)
    listed = {f["file"] for f in res["trust_material"]}
    assert listed == {str(p) for p in (A / "roots").iterdir()}


@needs_vectors
def test_the_folders_crl_revokes_like_an_explicit_one(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The root CA CRL found in --certs is the one the verifier checks: a folder whose only CRL is not signed by the
    Intel root is not used, and then revocation cannot be checked (collateral_valid false)."""
    import shutil

    folder = tmp_path / "roots"
    shutil.copytree(A / "roots", folder)
    base = [str(A / "tdx/gotdxguest_cos113_tdx_quote.bin"),
            "--tcb-info", str(A / "tdx/automata_tdx_tcbinfo_00806f050000_2025-10.json"),
            "--qe-identity", str(A / "tdx/automata_td_qe_identity_2025-10.json"),
            "--pck-crl", str(A / "tdx/automata_pck_platform_crl_2025-10.der"), "--as-of", "2025-10-25T00:00:00Z",
            "--certs", str(folder), "--json"]
    (folder / "intel_sgx_root_ca_crl_2025-03.der").unlink()
    code, res, _ = run(capsys, *base)
    assert code == 1 and res["collateral_valid"] is False and any("root CA CRL" in e for e in res["errors"])
    # a CRL named as the root's but signed by another key (the PCK Platform CA's CRL re-labelled) is not taken
    (folder / "root.crl").write_bytes((A / "tdx/automata_pck_platform_crl_2025-10.der").read_bytes())
    code, res, _ = run(capsys, *base)
    assert code == 1 and [f["used_as"] for f in res["trust_material"] if f["kind"] == "crl"] == [None]


@needs_vectors
def test_sgx_tools_verify_quote_takes_the_roots_folder(capsys) -> None:  # type: ignore[no-untyped-def]
    code = sgx_tools.main(["verify-quote", "--quote", str(A / "sgx/dcapqvl_sgx_quote.bin"), "--certs", str(A / "roots"),
                           "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["verified"] is True
    assert {f["kind"] for f in res["trust_material"]} == {"certificates", "crl"}
