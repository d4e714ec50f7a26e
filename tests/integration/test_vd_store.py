"""verdictd's store survives ``kill -9``: a child process commits secrets (and audit records) in a loop and
reports each one after its call returned; we SIGKILL it mid-stream, several times over one state directory,
and every reported value must read back intact from a sound database."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from inclavare.services.verdictd.store import Store

KEK = bytes(range(7, 39))

# The child: value i is derived from (round, i) so the parent can recompute it; sizes vary from a few bytes to
# ~200 KiB so kills land inside small and large commits (WAL frames of many pages).
CHILD = textwrap.dedent("""
    import hashlib, os, sys
    from inclavare.services.verdictd.store import Store
    state, rnd = sys.argv[1], sys.argv[2]
    s = Store(state, bytes.fromhex(os.environ["VERDICTD_KEK"]))
    i = 0
    while True:
        name = f"repo/r{rnd}/{i}"
        seed = hashlib.sha256(name.encode()).digest()
        value = seed * (1 + (seed[0] * 37 + i) % 6400)
        s.put_secret("resource", name, value, {"i": i})
        s.audit("test.put", {"name": name})
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
""")


def expected(name: str, i: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return seed * (1 + (seed[0] * 37 + i) % 6400)


def run_and_kill(state: str, rnd: int, kill_after: int) -> list[int]:
    """Start the child, SIGKILL it once it has reported ``kill_after`` commits, and return every index it
    reported (lines still in the pipe after the kill count too: each was written after its commit)."""
    env = dict(os.environ, VERDICTD_KEK=KEK.hex())
    child = subprocess.Popen([sys.executable, "-c", CHILD, state, str(rnd)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None
    reported: list[int] = []
    try:
        for line in child.stdout:
            reported.append(int(line))
            if len(reported) >= kill_after:
                os.kill(child.pid, signal.SIGKILL)
                break
        reported.extend(int(line) for line in child.stdout)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    return reported


def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    committed: dict[str, bytes] = {}
    for rnd, kill_after in enumerate((1, 17, 60, 130)):
        reported = run_and_kill(state, rnd, kill_after)
        assert len(reported) >= kill_after
        assert reported == list(range(len(reported)))
        committed.update({f"repo/r{rnd}/{i}": expected(f"repo/r{rnd}/{i}", i) for i in reported})
        with Store(state, KEK) as s:  # after each kill: everything reported so far is there and intact
            assert s.integrity_check() == "ok"
            for name, value in committed.items():
                assert s.get_secret("resource", name) == value, name
                assert s.get_secret_meta("resource", name) == {"i": int(name.rsplit("/", 1)[1])}
            audited = {r["detail"]["name"] for r in s.audit_records(10_000)}
            assert set(committed) <= audited  # each report came after its audit record's commit too
            names = set(s.list_secrets("resource"))
            assert set(committed) <= names
            # at most one unreported put per round (the kill landed after its commit, before its report)
            assert len(names - set(committed)) <= rnd + 1
