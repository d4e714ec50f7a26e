"""The verifying commands' shared part (``shelter verify`` and ``sgx-tools verify-quote``): their common
flags, the verifier's options built from them, and the printed result."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from inclavare.cli._inputs import KEY_LIMIT, read_file, sim_root_fingerprint
from inclavare.errors import UsageError


def add_verify_flags(p: argparse.ArgumentParser) -> None:
    """The flags both verifying commands take: collateral, trust material, time, the sim platform, JSON."""
    p.add_argument("--collateral", help="DCAP collateral bundle JSON (TCB status, CRLs)")
    p.add_argument("--certs", help="directory of issuer certificates the collateral does not carry")
    p.add_argument("--as-of", help="evaluate validity at this time (ISO 8601), default now")
    p.add_argument("--trust-sim", action="store_true", help="accept evidence of the simulated SGX platform")
    p.add_argument("--sim-root", help="the sim root CA certificate to trust (default: this host's sim platform)")
    p.add_argument("--json", action="store_true")


def parse_as_of(text: str | None) -> datetime.datetime | None:
    """The --as-of time (ISO 8601; no zone means UTC), or None when not given."""
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

        chain = read_file(a.cert_chain, "--cert-chain", KEY_LIMIT) if a.cert_chain else None
        if cert_table:
            collateral = SnpCollateral.from_cert_table(read_file(cert_table, "--cert-table", KEY_LIMIT),
                                                       f"--cert-table {cert_table}").with_chain(chain)
        else:
            collateral = SnpCollateral.load(read_file(a.vcek, "--vcek", KEY_LIMIT), chain)
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
        print_text(result, ok, material)


def print_text(result: Any, ok: bool, material: Any = None) -> None:
    """The result as ``name: value`` lines, ending in ``result: OK`` or ``result: FAILED``."""
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
