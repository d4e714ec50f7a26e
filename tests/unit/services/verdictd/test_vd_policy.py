"""verdictd's policy engine (services/verdictd/policy.py) and its default Rego policies.

The default attestation policies are run on the claims our verifiers produce from real evidence
(../shared/vectors/attestation, read in place, skipped when absent; VECTORS.md lists the values) and from a
quote of the simulated platform (always available). The resource policy is run on EAR-shaped claims as
Trustee's KBS passes them; TestOpa on upstream verdictd's policy and reference shapes. Bounds and failure
modes: oversized or malformed policies, inputs and references are refused with a VerdictdError; a policy that
fails at run time or says something contradictory denies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation.api import Options, Result
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.policy import (
    MAX_DEPTH,
    MAX_INPUT,
    MAX_INPUT_VALUES,
    MAX_POLICY,
    MAX_REFERENCE_VALUES,
    TIERS,
    Decision,
    PolicyEngine,
    default_policy,
)
from tests.unit.sgx_helpers import vectors_root

SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
TDX_MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
SNP_MEASUREMENT = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
OTHER48 = "ab" * 48


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine()


def vec_path(rel: str) -> Path:
    path = vectors_root() / "attestation" / rel
    if not path.is_file():
        pytest.skip(f"attestation vector {path} not found (set INCLAVARE_VECTORS)")
    return path


# --------------------------------------------------------------------------------------------------
# Real evidence -> verifier results (each verified once per module)


@pytest.fixture(scope="module")
def sgx_result() -> Result:
    from tests.unit.attestation.test_dcap_verify import CASES, middle, run

    vec_path("sgx/dcapqvl_sgx_quote.bin")
    case = CASES["sgx-2025-06"]
    r = run(case, middle(case))
    assert (r.verified, r.collateral_valid, r.tcb_status) == (True, True, "ConfigurationAndSWHardeningNeeded")
    return r


@pytest.fixture(scope="module", params=["tdx-dcapqvl", "tdx-cos113"])
def tdx_result(request: pytest.FixtureRequest) -> Result:
    from tests.unit.attestation.test_dcap_verify import CASES, middle, run

    case = CASES[request.param]
    vec_path(case.quote)
    r = run(case, middle(case))
    assert (r.verified, r.collateral_valid, r.tcb_status, r.tee) == (True, True, "UpToDate", "tdx")
    return r


@pytest.fixture(scope="module")
def snp_result() -> Result:
    from inclavare.attestation.snp import SnpCollateral, SnpVerifier

    report = vec_path("snp/gosevguest_attestation.bin").read_bytes()
    with warnings.catch_warnings():  # AMD's VCEK has serial number 0 (VECTORS.md)
        warnings.simplefilter("ignore")
        col = SnpCollateral.load(vec_path("snp/gosevguest_vcek.der").read_bytes(),
                                 vec_path("roots/amd_ask_ark_milan.pem").read_bytes(), "go-sev-guest")
        r = SnpVerifier().verify(report, Options(as_of=_dt("2024-01-01T00:00:00+00:00"), collateral=col))
    assert (r.verified, r.collateral_valid, r.tcb_status) == (True, True, "UpToDate")
    return r


@pytest.fixture(scope="module")
def sim_result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    from inclavare.attestation.collateral import DcapCollateral
    from inclavare.attestation.dcap import SgxVerifier
    from inclavare.formats.dcap import split_pem_chain
    from inclavare.formats.sgx import Attributes
    from inclavare.sim.quoting import SimQuotingService
    from inclavare.sim.report import EnclaveIdentity, ReportKey

    state = str(tmp_path_factory.mktemp("vd-policy-sim") / "state")
    qs = SimQuotingService.open(state)
    app = EnclaveIdentity(mrenclave=hashlib.sha256(b"app").digest(), mrsigner=hashlib.sha256(b"author").digest(),
                          attributes=Attributes(0x4, 0x3), isvprodid=5, isvsvn=2)
    quote = qs.get_quote(ReportKey.load(state).make_report(app, bytes(64), qs.qe_target_info()))
    b = qs.platform.collateral_bundle()
    col = DcapCollateral(b["tcb_info"].encode(), bytes.fromhex(b["tcb_info_signature"]),
                         split_pem_chain(b["tcb_info_issuer_chain"].encode()), b["qe_identity"].encode(),
                         bytes.fromhex(b["qe_identity_signature"]),
                         split_pem_chain(b["qe_identity_issuer_chain"].encode()), bytes.fromhex(b["pck_crl"]),
                         bytes.fromhex(b["root_ca_crl"]))
    r = SgxVerifier().verify(quote, Options(trust_sim=True, sim_root_fingerprints=(qs.platform.root_ca_fingerprint(),),
                                            collateral=col))
    assert (r.verified, r.tee, r.tcb_status) == (True, "sim", "UpToDate")
    return r


def _dt(iso: str) -> Any:
    import datetime

    return datetime.datetime.fromisoformat(iso)


def appraise(engine: PolicyEngine, r: Result, reference: dict[str, Any], *, policy: str | None = None,
             tcb_status: str | None | bool = False, **claims: Any) -> Decision:
    """Appraise ``r`` with its TEE's default policy (or ``policy``), claims overridden by ``claims``."""
    status = r.tcb_status if tcb_status is False else tcb_status
    assert status is None or isinstance(status, str)
    return engine.appraise(policy or default_policy(r.tee), r.tee, {**r.claims, **claims}, status, reference)


# --------------------------------------------------------------------------------------------------
# Default policies


def test_default_policies_are_package_data_and_compile(engine: PolicyEngine) -> None:
    for name in ("sgx", "tdx", "snp", "sim", "resource"):
        text = default_policy(name)
        assert text.startswith("# verdictd default") and "\npackage policy\n" in text
        engine.check(text)
    with pytest.raises(VerdictdError, match="no default for 'tpm'"):
        default_policy("tpm")


def test_sgx_real_quote_allowed_by_mrenclave_with_warning_tier(engine: PolicyEngine, sgx_result: Result) -> None:
    assert sgx_result.claims["mrenclave"] == SGX_MRENCLAVE and sgx_result.claims["debug"] is False
    d = appraise(engine, sgx_result, {"mrenclave": [SGX_MRENCLAVE]})
    # ConfigurationAndSWHardeningNeeded: acceptable, not affirmed
    assert d == Decision(True, "warning", ["TCB status ConfigurationAndSWHardeningNeeded"])
    assert appraise(engine, sgx_result, {"mrenclave": [SGX_MRENCLAVE]}, tcb_status="UpToDate") == \
        Decision(True, "affirming", [])
    assert engine.appraise_result(default_policy("sgx"), sgx_result, {"mrenclave": [SGX_MRENCLAVE]}) == d


def test_sgx_real_quote_by_signer_needs_product_id(engine: PolicyEngine, sgx_result: Result) -> None:
    signer_only = appraise(engine, sgx_result, {"mrsigner": [SGX_MRSIGNER]}, tcb_status="UpToDate")
    assert (signer_only.allow, signer_only.tier) == (False, "none")
    assert signer_only.reasons == ["no reference value for isvprodid (required when mrenclave is not pinned)"]
    ok = appraise(engine, sgx_result, {"mrsigner": [SGX_MRSIGNER], "isvprodid": [0], "isvsvn": [0]},
                  tcb_status="UpToDate")
    assert ok == Decision(True, "affirming", [])
    wrong_product = appraise(engine, sgx_result, {"mrsigner": [SGX_MRSIGNER], "isvprodid": [1]})
    assert not wrong_product.allow and "isvprodid 0 is not a reference value" in wrong_product.reasons


def test_sgx_wrong_mrenclave_denied(engine: PolicyEngine, sgx_result: Result) -> None:
    d = appraise(engine, sgx_result, {"mrenclave": ["00" * 32, "11" * 32]})
    assert (d.allow, d.tier) == (False, "contraindicated")
    assert f"mrenclave {SGX_MRENCLAVE} is not a reference value" in d.reasons
    # both set: both must match
    d = appraise(engine, sgx_result, {"mrenclave": [SGX_MRENCLAVE], "mrsigner": ["22" * 32]})
    assert not d.allow and f"mrsigner {SGX_MRSIGNER} is not a reference value" in d.reasons


def test_sgx_no_reference_fails_closed_and_accept_any_is_explicit(engine: PolicyEngine, sgx_result: Result) -> None:
    d = appraise(engine, sgx_result, {}, tcb_status="UpToDate")
    assert d == Decision(False, "none", ["no reference value for mrenclave or mrsigner"])
    # An owner accepts any enclave only by saying so in the policy text.
    any_enclave = default_policy("sgx").replace("accept_any := set()", 'accept_any := {"mrenclave"}')
    assert any_enclave != default_policy("sgx")
    assert appraise(engine, sgx_result, {}, policy=any_enclave, tcb_status="UpToDate") == \
        Decision(True, "affirming", [])
    # ...and still not a debug enclave
    assert not appraise(engine, sgx_result, {}, policy=any_enclave, tcb_status="UpToDate", debug=True).allow


def test_sgx_isvsvn_minimum(engine: PolicyEngine, sgx_result: Result) -> None:
    ref = {"mrenclave": [SGX_MRENCLAVE]}
    assert appraise(engine, sgx_result, {**ref, "isvsvn": [0]}).allow
    d = appraise(engine, sgx_result, {**ref, "isvsvn": [1]})
    assert (d.allow, d.tier) == (False, "contraindicated") and "isvsvn 0 is below the reference minimum" in d.reasons
    assert appraise(engine, sgx_result, {**ref, "isvsvn": [2]}, isvsvn=3).allow
    assert appraise(engine, sgx_result, {**ref, "isvsvn": [5, 2]}, isvsvn=3).allow  # the smallest listed value
    assert not appraise(engine, sgx_result, {**ref, "isvsvn": ["02"]}, isvsvn=3).allow  # not a number: closed


@pytest.mark.parametrize("debug", [True, None, "false", 0])
def test_sgx_debug_enclave_refused(engine: PolicyEngine, sgx_result: Result, debug: Any) -> None:
    d = appraise(engine, sgx_result, {"mrenclave": [SGX_MRENCLAVE]}, debug=debug)
    assert (d.allow, d.tier) == (False, "contraindicated")
    assert "debug enclave (attributes DEBUG set, or no debug claim)" in d.reasons


def test_sgx_missing_debug_claim_refused(engine: PolicyEngine, sgx_result: Result) -> None:
    claims = {k: v for k, v in sgx_result.claims.items() if k != "debug"}
    d = engine.appraise(default_policy("sgx"), "sgx", claims, "UpToDate", {"mrenclave": [SGX_MRENCLAVE]})
    assert not d.allow and "debug enclave (attributes DEBUG set, or no debug claim)" in d.reasons


TCB_CASES = [
    ("UpToDate", True, "affirming"),
    ("SWHardeningNeeded", True, "warning"),
    ("ConfigurationNeeded", True, "warning"),
    ("ConfigurationAndSWHardeningNeeded", True, "warning"),
    ("OutOfDate", False, "contraindicated"),
    ("OutOfDateConfigurationNeeded", False, "contraindicated"),
    ("Revoked", False, "contraindicated"),
    ("TcbNotSupported", False, "contraindicated"),
    (None, False, "contraindicated"),
    ("uptodate", False, "contraindicated"),
]


@pytest.mark.parametrize(("status", "allow", "tier"), TCB_CASES)
def test_sgx_tier_by_tcb_status(engine: PolicyEngine, sgx_result: Result, status: str | None, allow: bool,
                                tier: str) -> None:
    d = appraise(engine, sgx_result, {"mrenclave": [SGX_MRENCLAVE]}, tcb_status=status)
    assert (d.allow, d.tier) == (allow, tier)
    if not allow:
        assert d.reasons == [f"TCB status {'null' if status is None else status} is not acceptable"]


def test_sgx_policy_refuses_other_tees(engine: PolicyEngine, sgx_result: Result) -> None:
    d = engine.appraise(default_policy("sgx"), "sim", sgx_result.claims, "UpToDate", {"mrenclave": [SGX_MRENCLAVE]})
    assert not d.allow and 'tee sim: this policy appraises sgx evidence' in d.reasons


def test_claims_cannot_override_tee_or_tcb_status(engine: PolicyEngine, sgx_result: Result) -> None:
    claims = {**sgx_result.claims, "tee": "sgx", "tcb_status": "UpToDate"}
    d = engine.appraise(default_policy("sgx"), "tdx", claims, "Revoked", {"mrenclave": [SGX_MRENCLAVE]})
    assert not d.allow and 'TCB status Revoked is not acceptable' in d.reasons


def test_tdx_real_quotes(engine: PolicyEngine, tdx_result: Result) -> None:
    c = tdx_result.claims
    assert c["debug"] is False
    ref = {"mrtd": [c["mrtd"]], "rtmr0": [c["rtmr0"]], "rtmr1": [c["rtmr1"]], "rtmr2": [c["rtmr2"]],
           "rtmr3": [c["rtmr3"]]}
    assert appraise(engine, tdx_result, ref) == Decision(True, "affirming", [])
    assert appraise(engine, tdx_result, {"mrtd": [c["mrtd"]]}, mrtd=c["mrtd"].upper()).allow  # claim in any case
    wrong_mrtd = appraise(engine, tdx_result, {**ref, "mrtd": [OTHER48]})
    assert (wrong_mrtd.allow, wrong_mrtd.tier) == (False, "contraindicated")
    assert f"mrtd {c['mrtd']} is not a reference value" in wrong_mrtd.reasons
    wrong_rtmr = appraise(engine, tdx_result, {**ref, "rtmr3": [OTHER48]})
    assert not wrong_rtmr.allow and wrong_rtmr.reasons == [f"rtmr3 {c['rtmr3']} is not a reference value"]
    assert appraise(engine, tdx_result, {"rtmr0": [c["rtmr0"]]}) == Decision(False, "none",
                                                                            ["no reference value for mrtd"])
    debug = appraise(engine, tdx_result, ref, debug=True)
    assert not debug.allow and debug.reasons == ["debug TD (TD attribute DEBUG set, or no debug claim)"]
    assert appraise(engine, tdx_result, ref, tcb_status="SWHardeningNeeded").tier == "warning"
    assert not appraise(engine, tdx_result, ref, tcb_status="OutOfDate").allow


def test_tdx_known_mrtd_of_dcapqvl_vector(engine: PolicyEngine) -> None:
    """The reference value written down from VECTORS.md, not read back from the claims."""
    from tests.unit.attestation.test_dcap_verify import CASES, middle, run

    case = CASES["tdx-dcapqvl"]
    vec_path(case.quote)
    r = run(case, middle(case))
    assert appraise(engine, r, {"mrtd": [TDX_MRTD]}) == Decision(True, "affirming", [])
    assert not appraise(engine, r, {"mrtd": [TDX_MRTD[:-2] + "00"]}).allow


def test_snp_real_report_is_a_debug_guest(engine: PolicyEngine, snp_result: Result) -> None:
    """go-sev-guest's sample report has guest policy 0xB0000: DEBUG allowed, so the default policy refuses it
    even with its exact measurement."""
    assert snp_result.claims["policy"] == 0xB0000 and snp_result.claims["debug"] is True
    d = appraise(engine, snp_result, {"measurement": [SNP_MEASUREMENT]})
    assert d == Decision(False, "contraindicated", ["debug guest (guest policy DEBUG bit set, or no debug claim)"])


def test_snp_real_report_with_debug_cleared(engine: PolicyEngine, snp_result: Result) -> None:
    ref = {"measurement": [SNP_MEASUREMENT]}
    assert appraise(engine, snp_result, ref, debug=False) == Decision(True, "affirming", [])
    assert appraise(engine, snp_result, {**ref, "host_data": ["00" * 32]}, debug=False).allow
    host = appraise(engine, snp_result, {**ref, "host_data": ["01" * 32]}, debug=False)
    assert not host.allow and host.reasons == [f"host_data {'00' * 32} is not a reference value"]
    wrong = appraise(engine, snp_result, {"measurement": [OTHER48]}, debug=False)
    assert (wrong.allow, wrong.tier) == (False, "contraindicated")
    assert appraise(engine, snp_result, {}, debug=False) == Decision(False, "none",
                                                                    ["no reference value for measurement"])
    assert not appraise(engine, snp_result, ref, debug=False, tcb_status="OutOfDate").allow


def test_snp_reported_tcb_minimums(engine: PolicyEngine, snp_result: Result) -> None:
    c = snp_result.claims
    assert (c["reported_tcb_bootloader"], c["reported_tcb_tee"], c["reported_tcb_snp"],
            c["reported_tcb_microcode"]) == (2, 0, 5, 68)
    ref = {"measurement": [SNP_MEASUREMENT]}
    ok = {"reported_tcb_bootloader": [2], "reported_tcb_tee": [0], "reported_tcb_snp": [5],
          "reported_tcb_microcode": [68], "guest_svn": [0]}
    assert appraise(engine, snp_result, {**ref, **ok}, debug=False).allow
    low = appraise(engine, snp_result, {**ref, **ok, "reported_tcb_snp": [6]}, debug=False)
    assert low == Decision(False, "contraindicated", ["reported_tcb_snp 5 is below the reference minimum"])
    # a minimum for a component this (Milan) report does not have: closed
    fmc = appraise(engine, snp_result, {**ref, "reported_tcb_fmc": [0]}, debug=False)
    assert fmc.reasons == ["reported_tcb_fmc null is below the reference minimum"]


def test_sim_quote_tier_at_most_warning(engine: PolicyEngine, sim_result: Result) -> None:
    c = sim_result.claims
    ref = {"mrenclave": [c["mrenclave"]]}
    d = appraise(engine, sim_result, ref)
    assert d == Decision(True, "warning", ["simulated platform: no hardware protection"])
    assert not appraise(engine, sim_result, {"mrenclave": ["00" * 32]}).allow
    by_signer = {"mrsigner": [c["mrsigner"]], "isvprodid": [5], "isvsvn": [2]}
    assert appraise(engine, sim_result, by_signer).allow
    assert not appraise(engine, sim_result, {**by_signer, "isvsvn": [3]}).allow
    assert not appraise(engine, sim_result, ref, debug=True).allow
    # the sgx policy never accepts sim evidence, nor the sim policy real sgx evidence
    assert not engine.appraise(default_policy("sgx"), "sim", c, "UpToDate", ref).allow
    assert not engine.appraise(default_policy("sim"), "sgx", c, "UpToDate", ref).allow


def test_sim_capped_at_warning_whatever_the_policy_says(engine: PolicyEngine, sim_result: Result) -> None:
    lax = "package policy\n\nallow := true\n\ntier := \"affirming\"\n"
    d = engine.appraise(lax, "sim", sim_result.claims, "UpToDate", {})
    assert d == Decision(True, "warning", ["simulated platform: capped at warning"])
    assert engine.appraise(lax, "sgx", sim_result.claims, "UpToDate", {}) == Decision(True, "affirming", [])


def test_appraise_result_refuses_unverified_and_stale(engine: PolicyEngine, sgx_result: Result) -> None:
    ref = {"mrenclave": [SGX_MRENCLAVE]}
    bad = dataclasses.replace(sgx_result, verified=False, errors=["quote signature: invalid"])
    assert engine.appraise_result(default_policy("sgx"), bad, ref) == Decision(
        False, "contraindicated", ["evidence not verified: quote signature: invalid"])
    stale = dataclasses.replace(sgx_result, collateral_valid=False, errors=["TCB info expired"])
    assert engine.appraise_result(default_policy("sgx"), stale, ref) == Decision(
        False, "none", ["collateral not valid: TCB info expired"])
    no_collateral = dataclasses.replace(sgx_result, collateral_valid=None, tcb_status=None)
    assert not engine.appraise_result(default_policy("sgx"), no_collateral, ref).allow


def test_reference_changes_are_seen(engine: PolicyEngine, sgx_result: Result) -> None:
    """Compiled bundles are cached per (policy, data): a new reference value set is never answered from a
    bundle built for the old one."""
    assert appraise(engine, sgx_result, {"mrenclave": [SGX_MRENCLAVE]}).allow
    assert not appraise(engine, sgx_result, {"mrenclave": ["00" * 32]}).allow
    assert appraise(engine, sgx_result, {"mrenclave": [SGX_MRENCLAVE]}).allow
    small = PolicyEngine(cache_entries=1)
    for ref, allow in (({"mrenclave": [SGX_MRENCLAVE]}, True), ({}, False), ({"mrenclave": [SGX_MRENCLAVE]}, True)):
        assert appraise(small, sgx_result, ref).allow is allow


def test_concurrent_appraisals_agree(engine: PolicyEngine, sim_result: Result) -> None:
    good = {"mrenclave": [sim_result.claims["mrenclave"]]}
    results: list[tuple[bool, bool]] = []

    def worker() -> None:
        for _ in range(20):
            results.append((appraise(engine, sim_result, good).allow, appraise(engine, sim_result, {}).allow))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(True, False)] * 160


# --------------------------------------------------------------------------------------------------
# Decisions from owner policies: contradictions and failures deny


CLAIMS = {"mrenclave": "aa" * 32, "debug": False}
FAILED = "policy evaluation failed (a rego runtime error, e.g. conflicting values for one rule)"
NO_RESULT = "policy produced no result (is it 'package policy' with an allow rule?)"


@pytest.mark.parametrize(("policy", "expected"), [
    ("package policy\nallow := true\n", Decision(True, "warning", [])),
    ("package policy\nallow := true\ntier := \"none\"\n",
     Decision(False, "none", ["policy allowed with tier none: refused"])),
    ("package policy\nallow := true\ntier := \"contraindicated\"\nreasons := {\"x\"}\n",
     Decision(False, "none", ["x", "policy allowed with tier contraindicated: refused"])),
    ("package policy\nallow := true\ntier := \"great\"\n",
     Decision(False, "none", ["policy tier 'great' is not an EAR trust tier"])),
    ("package policy\nallow := \"true\"\n", Decision(False, "none", [])),
    ("package policy\nallow := false\ntier := \"affirming\"\n", Decision(False, "none", [])),
    ("package other\nallow := true\n", Decision(False, "none", [NO_RESULT])),
    ("package policy\ntier := \"affirming\"\n", Decision(False, "none", [NO_RESULT])),
    ("package policy\nallow := true\ntier := \"affirming\" if input.debug == false\n"
     "tier := \"warning\" if input.debug == false\n", Decision(False, "none", [FAILED])),
])
def test_owner_policy_outcomes(engine: PolicyEngine, policy: str, expected: Decision) -> None:
    assert engine.appraise(policy, "sgx", CLAIMS, "UpToDate", {}) == expected


def test_upstream_v0_syntax_policy_works(engine: PolicyEngine) -> None:
    v0 = "package policy\n\ndefault allow = false\n\nallow {\n    input.mrenclave == data.reference.mrenclave[_]\n}\n"
    assert engine.appraise(v0, "sgx", CLAIMS, "UpToDate", {"mrenclave": ["aa" * 32]}).allow
    assert not engine.appraise(v0, "sgx", CLAIMS, "UpToDate", {"mrenclave": ["bb" * 32]}).allow


def test_check_refuses_bad_policies(engine: PolicyEngine) -> None:
    with pytest.raises(VerdictdError, match=r"^policy: line 4 col 5: Invalid boolean operator$"):
        engine.check("package policy\n\nallow if {\n  1 ==\n}\n")
    with pytest.raises(VerdictdError, match="not 'package policy'"):
        engine.check("package other\nallow := true\n")
    with pytest.raises(VerdictdError, match="more than 262144"):
        engine.check("package policy\n" + "#" * MAX_POLICY)
    with pytest.raises(VerdictdError, match="NUL"):
        engine.check("package policy\n\x00")
    with pytest.raises(VerdictdError, match="not a string"):
        engine.check(b"package policy\n")  # type: ignore[arg-type]


def test_bad_policy_in_appraise_names_the_line(engine: PolicyEngine) -> None:
    with pytest.raises(VerdictdError, match=r"^policy: line 3 col \d+: "):
        engine.appraise("package policy\n\nallow if input.x == == 1\n", "sgx", CLAIMS, "UpToDate", {})


# --------------------------------------------------------------------------------------------------
# Bounds on what reaches rego-cpp


def nested(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = {"a": v}
    return v


@pytest.mark.parametrize(("claims", "message"), [
    ({"blob": "x" * MAX_INPUT}, "appraise: claims: .* bytes of JSON, more than 65536"),
    ({"deep": nested(MAX_DEPTH)}, r"appraise: claims\['deep'\].*nested deeper than 16 levels"),
    ({"n": float("nan")}, r"appraise: claims\['n'\]: nan is not a finite number"),
    ({"n": 1 << 70}, r"appraise: claims\['n'\]: integer outside"),
    ({1: "a"}, "key 1 is not a string"),
    ({"b": b"bytes"}, r"a bytes is not a JSON value"),
    ({"t": (1, 2)}, r"a tuple is not a JSON value"),
])
def test_oversized_or_odd_claims_refused(engine: PolicyEngine, claims: dict[Any, Any], message: str) -> None:
    with pytest.raises(VerdictdError, match=message):
        engine.appraise(default_policy("sgx"), "sgx", claims, "UpToDate", {})


def test_value_counts_capped(engine: PolicyEngine) -> None:
    """rego-cpp's JSON/term parsers are superlinear in the number of values, so counts are capped, not just
    bytes (the largest real input, an SNP report's claims, has ~60 values)."""
    p = default_policy("sgx")
    few = {**CLAIMS, "xs": [0] * (MAX_INPUT_VALUES - 6)}  # + the object, 2 claims, tee, tcb_status, the list
    assert not engine.appraise(p, "sgx", few, "UpToDate", {}).allow
    with pytest.raises(VerdictdError, match=f"appraise: claims: more than {MAX_INPUT_VALUES} JSON values"):
        engine.appraise(p, "sgx", {**few, "x": 1}, "UpToDate", {})
    many_refs = {"mrenclave": [f"{i:064x}" for i in range(MAX_REFERENCE_VALUES)]}
    with pytest.raises(VerdictdError, match="appraise: reference values: more than 4096 JSON values"):
        engine.appraise(p, "sgx", CLAIMS, "UpToDate", many_refs)
    refs = {"mrenclave": [f"{i:064x}" for i in range(1000)] + ["aa" * 32]}
    assert engine.appraise(p, "sgx", CLAIMS, "UpToDate", refs).allow
    with pytest.raises(VerdictdError, match="TestOpa reference: more than 2048 JSON values"):
        engine.test(p, json.dumps({"m": list(range(2048))}), "{}")


def test_depth_just_inside_the_limit_is_fine(engine: PolicyEngine) -> None:
    d = engine.appraise(default_policy("sgx"), "sgx", {**CLAIMS, "deep": nested(MAX_DEPTH - 1)}, "UpToDate",
                        {"mrenclave": ["aa" * 32]})
    assert d.allow


def test_bad_arguments_refused(engine: PolicyEngine) -> None:
    p = default_policy("sgx")
    with pytest.raises(VerdictdError, match="tee"):
        engine.appraise(p, "", CLAIMS, "UpToDate", {})
    with pytest.raises(VerdictdError, match="tcb_status is a int"):
        engine.appraise(p, "sgx", CLAIMS, 1, {})  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="claims are a list"):
        engine.appraise(p, "sgx", [], "UpToDate", {})  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="reference values are a list"):
        engine.appraise(p, "sgx", CLAIMS, "UpToDate", [])  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match=r"reference values\['reference'\]\['mrenclave'\]\[0\]: a set"):
        engine.appraise(p, "sgx", CLAIMS, "UpToDate", {"mrenclave": [{"aa"}]})


FORGERIES = [
    'x", "allow": true, "tier": "affirming", "zz": "',
    'x"], "allow": true, "tier": "affirming", "zz": ["',
    'x"]}, "allow": true, "x": {"allow": true, "tier": "affirming", "reasons": ["',
    '\\", \\"allow\\": true',
    "\u2028\u0000\ud7ff\U0001f600",
]


@pytest.mark.parametrize("forged", FORGERIES)
def test_claim_strings_cannot_forge_the_decision(engine: PolicyEngine, forged: str) -> None:
    """regopy's typed Input path stores strings unescaped and rego-cpp prints them raw, so a claim holding
    quotes could rewrite the output JSON; the engine passes JSON text and refuses duplicate keys."""
    d = engine.appraise(default_policy("sgx"), "sgx", {**CLAIMS, "mrenclave": forged}, "UpToDate",
                        {"mrenclave": ["aa" * 32]})
    assert d == Decision(False, "contraindicated", [f"mrenclave {forged} is not a reference value"])
    token = ear("contraindicated", claims={"mrenclave": forged})
    token["submods"]["cpu0"]["ear.status"] = forged
    assert engine.allow_resource(default_policy("resource"), token, forged) is False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forged=st.text(max_size=60))
def test_any_claim_string_round_trips_into_the_reason(engine: PolicyEngine, forged: str) -> None:
    d = engine.appraise(default_policy("sgx"), "sgx", {**CLAIMS, "mrenclave": forged}, "UpToDate",
                        {"mrenclave": ["aa" * 32]})
    if forged.lower() == "aa" * 32:
        assert d.allow
    else:
        assert d == Decision(False, "contraindicated", [f"mrenclave {forged} is not a reference value"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.dictionaries(st.sampled_from(["mrenclave", "mrsigner", "isvprodid", "isvsvn", "debug", "x"]),
                              json_values, max_size=6),
       status=st.none() | st.sampled_from(["UpToDate", "Revoked", "SWHardeningNeeded"]))
def test_arbitrary_claims_give_a_decision_or_a_verdictd_error(engine: PolicyEngine, claims: dict[str, Any],
                                                              status: str | None) -> None:
    ref = {"mrenclave": ["aa" * 32], "isvsvn": [1]}
    try:
        d = engine.appraise(default_policy("sgx"), "sgx", claims, status, ref)
    except VerdictdError:
        return
    assert d.tier in TIERS
    if d.allow:  # only the exact good claims get through
        assert claims.get("mrenclave") == "aa" * 32 and claims.get("debug") is False
        assert isinstance(claims.get("isvsvn"), int | float) and claims["isvsvn"] >= 1
        assert status in ("UpToDate", "SWHardeningNeeded")


# --------------------------------------------------------------------------------------------------
# Resource policy (Trustee's data.policy.allow)


def ear(*statuses: str, tee: str = "sgx", claims: dict[str, Any] | None = None) -> dict[str, Any]:
    """EAR token claims shaped as Trustee's KBS passes them to its resource policy."""
    return {
        "eat_profile": "tag:github.com,2023:veraison/ear", "iat": 1700000000,
        "ear.verifier-id": {"developer": "inclavare", "build": "test"},
        "submods": {f"cpu{i}": {"ear.status": s, "ear.trustworthiness-vector": {},
                                "ear.veraison.annotated-evidence": {tee: claims or CLAIMS}}
                    for i, s in enumerate(statuses)},
    }


@pytest.mark.parametrize(("token", "plugin", "allow"), [
    (ear("affirming"), "resource", True),
    (ear("warning"), "resource", True),
    (ear("affirming", "warning"), "resource", True),
    (ear("contraindicated"), "resource", False),
    (ear("none"), "resource", False),
    (ear("affirming", "none"), "resource", False),
    (ear(), "resource", False),
    ({}, "resource", False),
    ({"submods": {"cpu0": {}}}, "resource", False),
    (ear("affirming"), "other-plugin", False),
])
def test_default_resource_policy(engine: PolicyEngine, token: dict[str, Any], plugin: str, allow: bool) -> None:
    assert engine.allow_resource(default_policy("resource"), token, "myrepo/key/prod", plugin=plugin) is allow


def test_resource_policy_per_path(engine: PolicyEngine) -> None:
    per_path = """package policy

import rego.v1

default allow := false

allow if {
    data["resource-path"] == "myrepo/key/prod"
    some s in input.submods
    s["ear.status"] == "affirming"
    s["ear.veraison.annotated-evidence"].sgx.mrenclave == "%s"
}
""" % ("aa" * 32)
    engine.check(per_path)
    assert engine.allow_resource(per_path, ear("affirming"), "myrepo/key/prod")
    assert not engine.allow_resource(per_path, ear("affirming"), "myrepo/key/dev")
    assert not engine.allow_resource(per_path, ear("warning"), "myrepo/key/prod")
    assert not engine.allow_resource(per_path, ear("affirming", claims={"mrenclave": "bb" * 32}), "myrepo/key/prod")


@pytest.mark.parametrize("policy", [
    "package policy\nallow := \"yes\"\n",
    "package policy\nallow := 1\n",
    "package other\nallow := true\n",
    "package policy\nallow := true if input.a == 1\nallow := false if input.a == 1\n",
])
def test_resource_policy_anything_but_true_denies(engine: PolicyEngine, policy: str) -> None:
    assert engine.allow_resource(policy, {"a": 1}, "r/t/x") is False


def test_resource_policy_bounds(engine: PolicyEngine) -> None:
    with pytest.raises(VerdictdError, match="resource policy: input"):
        engine.allow_resource(default_policy("resource"), {"x": "y" * MAX_INPUT}, "r/t/x")
    with pytest.raises(VerdictdError, match="resource path"):
        engine.allow_resource(default_policy("resource"), {}, "r" * 2000)


# --------------------------------------------------------------------------------------------------
# TestOpa


UPSTREAM_POLICY = """package policy

# By default, deny requests.
default allow = false

allow {
    mrEnclave_is_grant
    mrSigner_is_grant
    input.productId >= data.productId
    input.svn >= data.svn
}

mrEnclave_is_grant {
    count(data.mrEnclave) == 0
}
mrEnclave_is_grant {
    count(data.mrEnclave) > 0
    input.mrEnclave == data.mrEnclave[_]
}

mrSigner_is_grant {
    count(data.mrSigner) == 0
}
mrSigner_is_grant {
    count(data.mrSigner) > 0
    input.mrSigner == data.mrSigner[_]
}
"""


def test_testopa_upstream_policy_and_reference(engine: PolicyEngine) -> None:
    reference = json.dumps({"mrEnclave": ["123"], "mrSigner": [], "productId": 1, "svn": 2})
    good = engine.test(UPSTREAM_POLICY, reference, '{"mrEnclave": "123", "mrSigner": "x", "productId": 1, "svn": 3}')
    assert good["allow"] is True and good["tier"] == "warning"
    assert good["parseInfo"] == {"mrEnclave": ["123", ["123"]], "mrSigner": ["x", []], "productId": [1, 1],
                                 "svn": [3, 2]}
    old = engine.test(UPSTREAM_POLICY, reference, b'{"mrEnclave": "123", "mrSigner": "x", "productId": 1, "svn": 1}')
    assert old["allow"] is False and old["tier"] == "none"


def test_testopa_default_policy(engine: PolicyEngine) -> None:
    doc = {**CLAIMS, "tee": "sgx", "tcb_status": "SWHardeningNeeded"}
    out = engine.test(default_policy("sgx"), json.dumps({"mrenclave": ["aa" * 32]}), json.dumps(doc))
    assert (out["allow"], out["tier"], out["reasons"]) == (True, "warning", ["TCB status SWHardeningNeeded"])
    out = engine.test(default_policy("sgx"), "{}", json.dumps(doc))
    assert out["allow"] is False
    assert out["reasons"] == ["TCB status SWHardeningNeeded", "no reference value for mrenclave or mrsigner"]


def test_testopa_syntax_error_names_the_line(engine: PolicyEngine) -> None:
    broken = "package policy\n\ndefault allow = false\n\nallow {\n    input.svn >= \n}\n"
    with pytest.raises(VerdictdError, match=r"^policy: line 6 col \d+: "):
        engine.test(broken, "{}", "{}")


@pytest.mark.parametrize(("reference", "doc", "message"), [
    ("{", "{}", r"^TestOpa reference: not JSON \(Expecting property name"),
    ("[]", "{}", "^TestOpa reference: not a JSON object$"),
    ("{}", "3", "^TestOpa input: not a JSON object$"),
    ("{}", '{"a": NaN}', r"TestOpa input\['a'\]: nan is not a finite number"),
    ("{}", "[" * 100000 + "]" * 100000, "TestOpa input: (nested deeper|.*more than)"),
    ("{}", json.dumps(nested(MAX_DEPTH + 1)), "nested deeper than 16 levels"),
    ("{}", b"\xff\xfe", "TestOpa input: not JSON"),
])
def test_testopa_bad_json(engine: PolicyEngine, reference: str, doc: str | bytes, message: str) -> None:
    with pytest.raises(VerdictdError, match=message):
        engine.test(UPSTREAM_POLICY, reference, doc)
