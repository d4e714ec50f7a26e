"""shelter: the off-cloud verifier CLI (``verify`` here; ``remoteattestation`` and ``mrverify``: cli/_shelter_ra.py).

  shelter verify EVIDENCE [--tee auto|sgx|tdx|snp|sim] [--collateral BUNDLE.json] [--tcb-info F] [--qe-identity F]
                 [--pck-crl F] [--root-crl F] [--vcek F] [--cert-chain F] [--cert-table F] [--certs DIR]
                 [--as-of ISO8601] [--report-data HEX] [--trust-sim] [--sim-root PEM] [--ccel-table F --ccel-log F]
                 [--json]

EVIDENCE is a DCAP quote (SGX v3, TDX v4/v5), an SEV-SNP report, or an RA-TLS certificate (PEM or DER); also a
quote followed by zero padding or inside a TDX GetQuote buffer, and a report inside the sev-guest MSG_REPORT_RSP
(docs/attestation-variants.md). For SNP, ``--vcek`` takes the VCEK/VLEK or the extended report's certificate
table (so does ``--cert-table``); with neither, the VCEK is looked for among the ``--certs`` certificates.
Exit 0 iff the evidence is verified (and the collateral valid when collateral was given); the TCB status is
reported, not judged. Errors in the input: one line, exit 2. ``--certs DIR`` is a trust folder as operators keep
it (certificates, the root CA CRL, README files beside them; see attestation/trust.py); ``--json`` then lists
what it held and used under ``trust_material``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from inclavare.cli._common import run_program
from inclavare.cli._inputs import EVIDENCE_LIMIT, read_file
from inclavare.cli._verify import add_verify_flags, build_options, parse_as_of, report
from inclavare.errors import UsageError

PROG = "shelter"


def cmd_verify(a: argparse.Namespace) -> int:
    from inclavare.attestation import evidence as ev
    from inclavare.attestation.api import AttestationError

    data = read_file(a.evidence, "EVIDENCE", EVIDENCE_LIMIT)
    parse_as_of(a.as_of)  # flag errors first, before the evidence is judged
    material = None
    try:
        opts, with_collateral, material = build_options(a, ev.detect(data))
        tee = "sgx" if a.tee == "sim" else a.tee
        if a.tee == "sim" and not a.trust_sim:
            raise UsageError("--tee sim needs --trust-sim: simulated evidence is never trusted by default")
        from inclavare.ratls.appraise import verify_evidence

        result = verify_evidence(data, tee, opts)
        if a.tee == "sim" and result.tee != "sim":
            result.verified = False
            result.errors.append("the quote does not chain to the trusted sim root")
        if a.ccel_table or a.ccel_log:
            _check_ccel(a, result)
    except AttestationError as e:
        if a.json:
            out = ev.empty_result(a.tee, str(e))
            if material is not None:
                out["trust_material"] = material.to_json()
            print(json.dumps(out, indent=2))
        else:
            sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    ok = ev.summary(result, with_collateral)
    report(result, ok, material, a.json)
    return 0 if ok else 1


def _check_ccel(a: argparse.Namespace, result: Any) -> None:
    from inclavare.attestation import ccel

    if result.tee != "tdx":
        raise UsageError("--ccel-table/--ccel-log: only for TDX quotes")
    if not (a.ccel_table and a.ccel_log):
        raise UsageError("--ccel-table and --ccel-log go together")
    table = ccel.parse_table(read_file(a.ccel_table, "--ccel-table"))
    log = ccel.parse_event_log(read_file(a.ccel_log, "--ccel-log"), table)
    rtmrs = [bytes.fromhex(result.claims[f"rtmr{i}"]) for i in range(4)]
    problems = ccel.check_against_quote(log, rtmrs)
    result.claims["ccel_replayed"] = not problems
    result.claims["ccel_events"] = ccel.summarize(log)
    if problems:
        result.verified = False
        result.errors.extend(f"CCEL: {p}" for p in problems)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="off-cloud verifier for TEE evidence")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="verify a quote, an SNP report or an RA-TLS certificate")
    v.add_argument("evidence")
    v.add_argument("--tee", choices=("auto", "sgx", "tdx", "snp", "sim"), default="auto")
    v.add_argument("--tcb-info")
    v.add_argument("--qe-identity")
    v.add_argument("--pck-crl")
    v.add_argument("--root-crl")
    v.add_argument("--vcek", help="VCEK/VLEK (DER, or a PEM bundle: VCEK first, then the chain)")
    v.add_argument("--cert-chain", help="ASK/ASVK and ARK (PEM)")
    v.add_argument("--cert-table", help="SNP: the extended report's certificate table (SNP_GET_EXT_REPORT certs, "
                   "configfs-tsm auxblob): VCEK/VLEK, ASK, ARK")
    add_verify_flags(v)
    v.add_argument("--report-data", help="hex the evidence's report data must equal (prefix; rest zero)")
    v.add_argument("--ccel-table", help="TDX: the CCEL ACPI table, to replay the event log into RTMR0-3")
    v.add_argument("--ccel-log", help="TDX: the CCEL event log")
    v.set_defaults(run=cmd_verify)
    from inclavare.cli._shelter_ra import add_parsers

    add_parsers(sub)
    return p


def dispatch(a: argparse.Namespace) -> int:
    return int(a.run(a))


def main(argv: list[str] | None = None) -> int:
    """Errors in the input: one line, exit 2 (exit 1 means the evidence was judged and failed)."""
    return run_program(PROG, build_parser(), dispatch, argv, error_status=2)


if __name__ == "__main__":
    os._exit(main())
