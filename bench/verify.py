#!/usr/bin/env python3
"""Evidence verifications per second on one core, beside the floor measured in the same run.

The real samples (an SGX quote and a TDX quote with their collateral, evaluated inside the collateral's
validity window; an SNP report with its VCEK and the Milan ASK/ARK), two ways:

  warm   a verifier service that has seen the platform before: collateral (TCB info, QE identity, CRLs, the TCB
         signing chain) and the platform's PCK chain and QE report are memoised by their bytes, so each new quote
         needs one signature check. Floor: the attestation-key ECDSA-P256 verification over the quote.
  cold   nothing memoised (every cache cleared before each verification): quote signature, QE report
         signature, PCK leaf by CA, CA by root, TCB info and QE identity signatures, TCB signing cert by root,
         PCK CRL and root CA CRL signatures. Floor: those 9 ECDSA-P256 verifications with cryptography.
  SNP    the verifier memoises nothing: report ECDSA-P384, VCEK by ASK, ASK by ARK, ARK by itself (RSA-PSS 4096).
         Floor: those 4 verifications.

Goal (issue 6): verify >= 50% of the floor. Needs ../shared/vectors (or INCLAVARE_VECTORS).

usage: bench/verify.py [--seconds S] [--rounds N] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402

from inclavare.attestation import certs, dcap, documents, pck, tcb, tcbinfo  # noqa: E402
from inclavare.attestation import collateral as col  # noqa: E402
from inclavare.attestation.api import Options  # noqa: E402
from inclavare.attestation.snp import SnpCollateral, SnpVerifier  # noqa: E402
from inclavare.formats.dcap import DcapQuote  # noqa: E402

V = Path(os.environ.get("INCLAVARE_VECTORS", HERE.parent.parent / "shared" / "vectors")) / "attestation"


def _dcap_caches() -> list[functools._lru_cache_wrapper[object]]:
    """Every memo of the DCAP verifier's modules (see attestation/certs.py), each once (a module also lists the
    memoised functions it imports)."""
    found: dict[int, functools._lru_cache_wrapper[object]] = {}
    for module in (certs, dcap, documents, pck, tcb, tcbinfo):
        for value in vars(module).values():
            if isinstance(value, functools._lru_cache_wrapper):
                found[id(value)] = value
    return list(found.values())


DCAP_CACHES = _dcap_caches()


def clear_caches() -> None:
    for cache in DCAP_CACHES:
        cache.cache_clear()


def rate(fn, seconds: float) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n / el


def ecdsa_der(sig: bytes) -> bytes:
    half = len(sig) // 2
    return encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))


def dcap_case(quote_file: str, bundle: str, as_of: str):  # type: ignore[no-untyped-def]
    data = (V / quote_file).read_bytes()
    coll = col.from_bundle(V / bundle)
    opts = Options(as_of=datetime.datetime.fromisoformat(as_of), collateral=coll)
    res = dcap.verify_quote(data, opts)
    assert res.verified and res.collateral_valid, res.errors

    def warm() -> None:
        assert dcap.verify_quote(data, opts).verified

    def cold() -> None:
        clear_caches()
        assert dcap.verify_quote(data, opts).verified

    q = DcapQuote.parse(data)
    chain = [x509.load_der_x509_certificate(d) for d in q.certification.pem_chain()]
    att = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + q.attestation_key)
    signed, isv_sig = q.signed_bytes(), ecdsa_der(q.isv_signature)
    qe_bytes, qe_sig = q.qe_report_raw, ecdsa_der(q.qe_report_signature)
    tcb_signer = x509.load_der_x509_certificate(coll.tcb_info_issuer_chain[0])
    root = chain[-1]
    pck_crl = x509.load_der_x509_crl(coll.pck_crl or b"")
    root_crl = x509.load_der_x509_crl(coll.root_ca_crl or b"")
    tcb_sig, qe_id_sig = ecdsa_der(coll.tcb_info_signature), ecdsa_der(coll.qe_identity_signature)
    algo = ec.ECDSA(hashes.SHA256())

    def floor_warm() -> None:
        att.verify(isv_sig, signed, algo)

    def floor_cold() -> None:
        att.verify(isv_sig, signed, algo)
        chain[0].public_key().verify(qe_sig, qe_bytes, algo)  # type: ignore[union-attr,call-arg]
        for child, parent in ((chain[0], chain[1]), (chain[1], root), (tcb_signer, root)):
            parent.public_key().verify(child.signature, child.tbs_certificate_bytes, algo)  # type: ignore[union-attr,call-arg]
        tcb_signer.public_key().verify(tcb_sig, coll.tcb_info_raw, algo)  # type: ignore[union-attr,call-arg]
        tcb_signer.public_key().verify(qe_id_sig, coll.qe_identity_raw, algo)  # type: ignore[union-attr,call-arg]
        assert pck_crl.is_signature_valid(chain[1].public_key())  # type: ignore[arg-type]
        assert root_crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]

    return (warm, floor_warm), (cold, floor_cold)


def snp_case():  # type: ignore[no-untyped-def]
    report = (V / "snp/gosevguest_attestation.bin").read_bytes()
    vcek_der = (V / "snp/gosevguest_vcek.der").read_bytes()
    chain_pem = (V / "roots/amd_ask_ark_milan.pem").read_bytes()
    opts = Options(as_of=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
                   collateral=SnpCollateral.load(vcek_der, chain_pem))
    verifier = SnpVerifier()
    assert verifier.verify(report, opts).verified

    def verify() -> None:
        assert verifier.verify(report, opts).verified

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AMD's certificates have serial 0
        vcek = x509.load_der_x509_certificate(vcek_der)
        ask, ark = x509.load_pem_x509_certificates(chain_pem)[:2]
    r = int.from_bytes(report[0x2A0:0x2A0 + 72], "little")
    s = int.from_bytes(report[0x2E8:0x2E8 + 72], "little")
    rep_sig, rep_signed = encode_dss_signature(r, s), report[:0x2A0]
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

    def floor() -> None:
        vcek.public_key().verify(rep_sig, rep_signed, ec.ECDSA(hashes.SHA384()))  # type: ignore[union-attr,call-arg]
        for child, parent in ((vcek, ask), (ask, ark), (ark, ark)):
            parent.public_key().verify(child.signature, child.tbs_certificate_bytes, pss, hashes.SHA384())  # type: ignore[union-attr,call-arg]

    return verify, floor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if not V.is_dir():
        print(f"bench: {V} is missing (the shared vectors)", file=sys.stderr)
        return 1
    sgx_warm, sgx_cold = dcap_case("sgx/dcapqvl_sgx_quote.bin", "sgx/dcapqvl_sgx_quote_collateral_2025-06.json",
                                   "2025-07-01T00:00:00+00:00")
    tdx_warm, tdx_cold = dcap_case("tdx/dcapqvl_tdx_quote.bin", "tdx/dcapqvl_tdx_quote_collateral_2025-06.json",
                                   "2025-07-01T00:00:00+00:00")
    cases = {"SGX quote v3, warm": sgx_warm, "SGX quote v3, cold": sgx_cold, "TDX quote v4, warm": tdx_warm,
             "TDX quote v4, cold": tdx_cold, "SNP report": snp_case()}
    results: dict[str, dict[str, list[float]]] = {k: {"verify": [], "floor": []} for k in cases}
    for _ in range(args.rounds):  # interleaved: noise hits both alike
        for name, (verify, floor) in cases.items():
            results[name]["verify"].append(rate(verify, args.seconds))
            results[name]["floor"].append(rate(floor, args.seconds))
    best = {k: {w: max(v) for w, v in ws.items()} for k, ws in results.items()}
    if args.markdown:
        print(f"| evidence (best of {args.rounds} x {args.seconds:g} s, one core) | verifications/s | floor/s "
              "| verify / floor |")
        print("|---|---:|---:|---:|")
        for k, r in best.items():
            print(f"| {k} | {r['verify']:.0f} | {r['floor']:.0f} | {r['verify'] / r['floor']:.2f} |")
    else:
        for k, r in best.items():
            ratio = r["verify"] / r["floor"]
            print(f"{k:20s} verify {r['verify']:7.0f}/s  floor {r['floor']:7.0f}/s  ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
