"""Short libFuzzer runs (atheris) of every evidence parser, seeded with the real samples when present.

Each run is bounded (-runs) so the suite stays fast; a crash makes libFuzzer exit non-zero and print the
input. Longer campaigns: python tests/fuzz/targets.py TARGET -max_total_time=600 CORPUS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris (libFuzzer for Python) is not installed")

HERE = Path(__file__).resolve().parents[1]
V = Path(os.environ.get("INCLAVARE_VECTORS", HERE.parent.parent / "shared" / "vectors"))
SEEDS = {
    "dcap": ["attestation/sgx/dcapqvl_sgx_quote.bin", "attestation/tdx/dcapqvl_tdx_quote.bin"],
    "snp": ["attestation/snp/gosevguest_attestation.bin"],
    "ccel": ["attestation/tdx/gotdxguest_cos113_ccel_data.bin", "attestation/tdx/gotdxguest_cos113_ccel_table.bin"],
    "collateral": ["attestation/sgx/dcapqvl_sgx_quote_collateral_2025-06.json"],
    "ratls": ["attestation/ratls/ccc_rats_tls_cert.pem"],
    "evidence": ["attestation/snp/gosevguest_attestation.bin", "attestation/ratls/ccc_rats_tls_cert.pem"],
    "envelopes": ["attestation/snp/gosevguest_attestation.bin"],
    "agent": [],
}


@pytest.mark.parametrize("target", sorted(SEEDS))
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for rel in SEEDS[target]:
        if (V / rel).exists():
            shutil.copy(V / rel, corpus)  # a throwaway working copy for libFuzzer; never part of the project
    p = subprocess.run([sys.executable, str(HERE / "fuzz" / "targets.py"), target, "-runs=1500", "-max_len=12000",
                        "-seed=1", f"-artifact_prefix={tmp_path}/", str(corpus)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Done" in p.stderr
