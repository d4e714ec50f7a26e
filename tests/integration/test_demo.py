"""The README's demo (scripts/demo.sh) works as shipped: a plain container, then an enclave container on the
simulated platform, attested, its quote verified. It uses the installed programs (scripts/setup.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]
TOP = Path(__file__).resolve().parents[2]


def test_demo_runs() -> None:
    for prog in ("rune", "sgx-tools", "shelter", "openssl"):
        if shutil.which(prog) is None:
            pytest.skip(f"{prog} is not installed (scripts/setup.sh installs it)")
    p = subprocess.run(["bash", str(TOP / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "hello from a rune container: pid 1" in p.stdout
    assert "hello from inside a (simulated) SGX enclave" in p.stdout
    assert "tee: sim" in p.stdout and "result: OK" in p.stdout
