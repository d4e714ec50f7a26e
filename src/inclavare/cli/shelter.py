"""shelter: the off-cloud verifier CLI.

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
import datetime
import json
import os
import sys
from typing import Any

from inclavare.cli._inputs import read_file, sim_root_fingerprint
from inclavare.errors import InclavareError, UsageError

PROG = "shelter"


def parse_as_of(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {text!r}: not an ISO 8601 time (e.g. 2025-07-01T00:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=datetime.UTC)


def build_options(a: argparse.Namespace, kind: str) -> tuple[Any, bool, Any]:
    """Options for the verifier from the flags; returns (options, collateral given, the --certs folder's
    TrustMaterial or None)."""
    from inclavare.attestation.api import Options

    extra: list[bytes] = []
    material = None
    if a.certs:
        from inclavare.attestation.trust import read_trust_dir

        material = read_trust_dir(a.certs)
        extra = list(material.certificates)
    report_data = None
    if a.report_data:
        try:
            report_data = bytes.fromhex(a.report_data)
        except ValueError:
            raise UsageError(f"--report-data: not hex: {a.report_data!r}") from None
        if len(report_data) > 64:
            raise UsageError(f"--report-data: {len(report_data)} bytes, at most 64")
    sim_roots: tuple[str, ...] = ()
    if a.trust_sim:
        sim_roots = (sim_root_fingerprint(a.sim_root),)
    collateral: Any = None
    dcap_files = a.tcb_info or a.qe_identity or a.pck_crl or a.root_crl
    if a.collateral or dcap_files:
        from inclavare.attestation import collateral as col

        if a.collateral:
            collateral = col.from_bundle(read_file(a.collateral, "--collateral"))
        else:
            if not (a.tcb_info and a.qe_identity):
                raise UsageError("--tcb-info and --qe-identity go together (with --pck-crl and --root-crl)")
            collateral = col.from_files(tcb_info=a.tcb_info, qe_identity=a.qe_identity, pck_crl=a.pck_crl,
                                        root_crl=a.root_crl, extra_certs=tuple(extra), as_of=parse_as_of(a.as_of))
        if material is not None:  # a root CA CRL kept in the folder, when the collateral carries none
            collateral = material.apply_root_ca_crl(collateral, sim_roots)
    cert_table = getattr(a, "cert_table", None)  # sgx-tools verify-quote has no such flag
    if a.vcek and cert_table:
        raise UsageError("--vcek and --cert-table both name the VCEK/VLEK; give one")
    if a.vcek or cert_table:
        from inclavare.attestation.snp import SnpCollateral

        chain = read_file(a.cert_chain, "--cert-chain") if a.cert_chain else None
        if cert_table:
            collateral = SnpCollateral.from_cert_table(read_file(cert_table, "--cert-table"),
                                                       f"--cert-table {cert_table}").with_chain(chain)
        else:
            collateral = SnpCollateral.load(read_file(a.vcek, "--vcek"), chain)
    opts = Options(as_of=parse_as_of(a.as_of), report_data=report_data, trust_sim=bool(a.trust_sim),
                   sim_root_fingerprints=sim_roots, collateral=collateral, extra_certs=tuple(extra))
    return opts, bool(a.collateral or dcap_files), material


def report(result: Any, ok: bool, material: Any, as_json: bool) -> None:
    """Print the result (text or JSON), with what the --certs folder supplied."""
    if as_json:
        out = result.to_json()
        if material is not None:
            out["trust_material"] = material.to_json()
        print(json.dumps(out, indent=2))
    else:
        _print_text(result, ok, material)


def cmd_verify(a: argparse.Namespace) -> int:
    from inclavare.attestation import evidence as ev
    from inclavare.attestation.api import AttestationError

    data = read_file(a.evidence, "EVIDENCE")
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


def _print_text(result: Any, ok: bool, material: Any = None) -> None:
    out = sys.stdout
    out.write(f"tee: {result.tee}\nverified: {str(result.verified).lower()}\n")
    if result.collateral_valid is not None:
        out.write(f"collateral_valid: {str(result.collateral_valid).lower()}\n")
    if result.tcb_status is not None:
        out.write(f"tcb_status: {result.tcb_status}\n")
    if result.advisory_ids:
        out.write(f"advisory_ids: {','.join(result.advisory_ids)}\n")
    for k, v in result.claims.items():
        if isinstance(v, dict | list):
            v = json.dumps(v)
        out.write(f"claim {k}: {v}\n")
    if material is not None:
        n = len(material.certificates)
        out.write(f"trust_material: {n} certificate{'s' if n != 1 else ''} from {material.directory}\n")
        for f in material.files:
            if f.used_as:
                out.write(f"trust_material {f.used_as}: {f.path}\n")
    for e in result.errors:
        out.write(f"error: {e}\n")
    out.write("result: " + ("OK" if ok else "FAILED") + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="off-cloud verifier for TEE evidence")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="verify a quote, an SNP report or an RA-TLS certificate")
    v.add_argument("evidence")
    v.add_argument("--tee", choices=("auto", "sgx", "tdx", "snp", "sim"), default="auto")
    v.add_argument("--collateral", help="DCAP collateral bundle JSON")
    v.add_argument("--tcb-info")
    v.add_argument("--qe-identity")
    v.add_argument("--pck-crl")
    v.add_argument("--root-crl")
    v.add_argument("--vcek", help="VCEK/VLEK (DER, or a PEM bundle: VCEK first, then the chain)")
    v.add_argument("--cert-chain", help="ASK/ASVK and ARK (PEM)")
    v.add_argument("--cert-table", help="SNP: the extended report's certificate table (SNP_GET_EXT_REPORT certs, "
                   "configfs-tsm auxblob): VCEK/VLEK, ASK, ARK")
    v.add_argument("--certs", help="directory of issuer certificates the collateral does not carry")
    v.add_argument("--as-of", help="evaluate validity at this time (ISO 8601), default now")
    v.add_argument("--report-data", help="hex the evidence's report data must equal (prefix; rest zero)")
    v.add_argument("--trust-sim", action="store_true", help="accept the simulated SGX platform's root")
    v.add_argument("--sim-root", help="the sim root CA certificate to trust (default: this host's sim platform)")
    v.add_argument("--ccel-table", help="TDX: the CCEL ACPI table, to replay the event log into RTMR0-3")
    v.add_argument("--ccel-log", help="TDX: the CCEL event log")
    v.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if a.cmd == "verify":
            return cmd_verify(a)
    except InclavareError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    except BrokenPipeError:
        return 1
    return 2


if __name__ == "__main__":
    os._exit(main())
