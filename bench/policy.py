#!/usr/bin/env python3
"""verdictd's policy engine (regopy / rego-cpp): what one appraisal costs, and what a hostile input can cost.

  appraise   PolicyEngine.appraise with each default policy on real claims (our verifiers run on
             ../shared/vectors/attestation, or $INCLAVARE_VECTORS; TEEs whose vectors are absent are skipped) and
             on a simulated-platform quote; the compiled bundle is cached, so this is one rego query each;
             median of --rounds (default 200), plus the first (compiling) call
  resource   PolicyEngine.allow_resource with the default resource policy on an EAR-shaped input
  hostile    inputs at the engine's caps (512 JSON values, 64 KiB, 16 levels deep) through the default sgx policy,
             and the same inputs through owner policies that walk the whole input or compare it pairwise
             (quadratic): rego-cpp has no timeout, so the caps are what bound these

usage: bench/policy.py [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from inclavare.attestation.api import Options, Result  # noqa: E402
from inclavare.services.verdictd.policy import (  # noqa: E402
    MAX_DEPTH,
    MAX_INPUT,
    MAX_INPUT_VALUES,
    PolicyEngine,
    default_policy,
)


def timed(fn: Callable[[PolicyEngine], Any], rounds: int) -> tuple[float, float]:
    """(first call on a new engine: compiles; median of the next ``rounds`` calls: cached), in milliseconds."""
    engine = PolicyEngine()
    t = time.perf_counter()
    fn(engine)
    first = (time.perf_counter() - t) * 1e3
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn(engine)
        samples.append((time.perf_counter() - t) * 1e3)
    return first, statistics.median(samples)


def real_results() -> dict[str, Result]:
    out: dict[str, Result] = {}
    try:
        from tests.unit.attestation.test_dcap_verify import CASES, middle, run

        for name, tee in (("sgx-2025-06", "sgx"), ("tdx-dcapqvl", "tdx")):
            out[tee] = run(CASES[name], middle(CASES[name]))
    except BaseException as e:  # pytest.skip raises a BaseException subclass
        print(f"# DCAP vectors skipped: {e}", file=sys.stderr)
    try:
        from tests.unit.sgx_helpers import vectors_root

        from inclavare.attestation.snp import SnpCollateral, SnpVerifier

        d = vectors_root() / "attestation"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            col = SnpCollateral.load((d / "snp/gosevguest_vcek.der").read_bytes(),
                                     (d / "roots/amd_ask_ark_milan.pem").read_bytes(), "go-sev-guest")
            out["snp"] = SnpVerifier().verify((d / "snp/gosevguest_attestation.bin").read_bytes(),
                                              Options(as_of=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
                                                      collateral=col))
    except OSError as e:
        print(f"# SNP vectors skipped: {e}", file=sys.stderr)
    return out


def sim_result() -> Result:
    from inclavare.attestation.collateral import DcapCollateral
    from inclavare.attestation.dcap import SgxVerifier
    from inclavare.formats.dcap import split_pem_chain
    from inclavare.formats.sgx import Attributes
    from inclavare.sim.quoting import SimQuotingService
    from inclavare.sim.report import EnclaveIdentity, ReportKey

    state = tempfile.mkdtemp(prefix="bench-policy-") + "/state"
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
    fingerprint = qs.platform.root_ca_fingerprint()
    return SgxVerifier().verify(quote, Options(trust_sim=True, sim_root_fingerprints=(fingerprint,), collateral=col))


REFERENCE_KEYS = {"sgx": ["mrenclave"], "sim": ["mrenclave"], "tdx": ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"],
                  "snp": ["measurement", "host_data"]}

WALK = "package policy\n\nimport rego.v1\n\nallow if count([v | walk(input, [_, v])]) > 0\n"
PAIRS = ("package policy\n\nimport rego.v1\n\nallow if count([1 | some a in input.xs; some b in input.xs; a == b]) "
         "> 0\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    a = ap.parse_args()
    engine = PolicyEngine()
    results = real_results()
    results["sim"] = sim_result()
    print(f"{'case':42} {'first ms':>9} {'median ms':>10}  outcome")
    for tee, r in results.items():
        claims = dict(r.claims)
        if tee == "snp":
            claims["debug"] = False  # the sample report is a debug guest; measure the allow path
        ref = {k: [claims[k]] for k in REFERENCE_KEYS[tee]}
        policy = default_policy(tee)
        d = engine.appraise(policy, tee, claims, r.tcb_status, ref)
        first, median = timed(lambda e: e.appraise(policy, tee, claims, r.tcb_status, ref), a.rounds)  # noqa: B023
        print(f"appraise {tee:6} ({len(claims)} claims){'':19} {first:9.2f} {median:10.3f}  {d.allow} {d.tier}")

    token = {"submods": {"cpu0": {"ear.status": "affirming",
                                  "ear.veraison.annotated-evidence": {"sim": results["sim"].claims}}}}
    res = default_policy("resource")
    first, median = timed(lambda e: e.allow_resource(res, token, "repo/key/tag"), a.rounds)
    print(f"{'allow_resource (default)':42} {first:9.2f} {median:10.3f}  {engine.allow_resource(res, token, 'r/k/t')}")

    # hostile inputs at the caps
    n = MAX_INPUT_VALUES - 4  # the object, the list, tee, tcb_status
    wide = {"xs": list(range(n))}
    strings = {f"k{i}": "a" * 40 for i in range(min(MAX_INPUT_VALUES - 3, (MAX_INPUT - 200) // 50))}
    deep: Any = 1
    for _ in range(MAX_DEPTH - 1):
        deep = {"a": deep}
    sgx = default_policy("sgx")
    hostile: list[tuple[str, str, dict[str, Any], int]] = [
        (f"sgx policy, {n} list items", sgx, wide, a.rounds),
        (f"sgx policy, {len(strings)} string claims", sgx, strings, a.rounds),
        (f"sgx policy, {MAX_DEPTH - 1} levels deep", sgx, {"d": deep}, a.rounds),
        (f"walk policy, {n} list items", WALK, wide, 5),
        (f"walk policy, {len(strings)} string claims", WALK, strings, 5),
    ]
    for m in (100, 300, n):
        hostile.append((f"pairwise policy, {m} items", PAIRS, {"xs": list(range(m))}, 3))
    for name, policy, claims, rounds in hostile:
        first, median = timed(lambda e: e.appraise(policy, "sgx", claims, "UpToDate", {}), rounds)  # noqa: B023
        print(f"{name:42} {first:9.2f} {median:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
