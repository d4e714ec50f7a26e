"""The README's demo (scripts/demo.sh) works as shipped: a plain container, then an enclave container on the
simulated platform, attested, its quote verified; then the encrypted-image story (skopeo encrypts, verdictd
holds the key, the measured sim enclave prints the secret, a changed enclave is refused, shelter checks the
enclave through inclavared). It uses the installed programs (scripts/setup.sh); the ones a checkout has not
installed yet (inclavare-image, inclavared, ...) it runs from the checkout. Whatever happens, it leaves no
process, container or file behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]
TOP = Path(__file__).resolve().parents[2]
SECRET_LINE = "app: my secret is \"the owner's secret: 42\""


def demo(env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """Run the demo; returns the result, its work directory and its shell's pid (container name suffix)."""
    for prog in ("rune", "sgx-tools", "shelter", "openssl", "skopeo", "jq"):
        if shutil.which(prog) is None:
            pytest.skip(f"{prog} is not installed (scripts/setup.sh installs it)")
    p = subprocess.run(["bash", str(TOP / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=300,
                       env=env)
    m = re.search(r"^\$ rune run --bundle (/tmp/rune-demo\.\w+)/bundle demo-(\d+)$", p.stdout, re.M)
    assert m, p.stdout + p.stderr
    return p, m.group(1), m.group(2)


def leftovers(work: str, pid: str) -> list[str]:
    """Processes whose command line or working directory is in the demo's work directory, the demo's
    containers still known to rune, and the work directory itself if it is still there."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if work in cmdline or cwd.startswith(work):
            found.append(f"process {entry}: {cmdline.strip()}")
    ids = subprocess.run(["rune", "list", "-q"], capture_output=True, text=True).stdout.split()
    found += [f"container {c}" for c in ids if c.endswith(f"-{pid}")]
    if os.path.lexists(work):
        found.append(f"directory {work}")
    return found


def test_demo_runs() -> None:
    p, work, pid = demo()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "hello from a rune container: pid 1" in p.stdout
    assert "hello from inside a (simulated) SGX enclave" in p.stdout
    assert "tee: sim" in p.stdout and "result: OK" in p.stdout
    # the encrypted image: the host held only ciphertext, the measured enclave printed the secret, once
    assert "(grep: the secret is nowhere in the bundle)" in p.stdout
    assert p.stdout.count("the owner's secret: 42") == 1 and SECRET_LINE in p.stdout
    # the changed enclave: refused by verdictd's policy, on one line, and it printed nothing
    refused = [line for line in p.stdout.splitlines() if line.startswith("  refused: ")]
    assert len(refused) == 1, p.stdout
    assert "403 PolicyDeny" in refused[0] and "is not a reference value" in refused[0]
    # shelter through inclavared: the reference from verdictd matches; the changed enclave's does not
    assert "Reference mrenclave: 1 accepted value (verdictd http://127.0.0.1:" in p.stdout
    assert "Remote attestation is successful." in p.stdout
    mismatch = r"^  shelter: MRENCLAVE mismatch: the enclave's is [0-9a-f]{64}, --mrenclave accepts [0-9a-f]{64}$"
    assert re.search(mismatch, p.stdout, re.M), p.stdout
    assert leftovers(work, pid) == []


def test_demo_cleans_up_when_a_step_fails(tmp_path: Path) -> None:
    """An inclavared that cannot start stops the demo after verdictd and the sample container are running: the
    trap stops them and removes everything."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "inclavared").write_text("#!/bin/sh\necho 'inclavared: the stub refuses to start' >&2\nexit 1\n")
    (stub / "inclavared").chmod(0o755)
    p, work, pid = demo({**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "demo: inclavared did not start: inclavared: the stub refuses to start" in p.stderr
    assert SECRET_LINE in p.stdout and "Remote attestation is successful." not in p.stdout
    assert leftovers(work, pid) == []
