#!/usr/bin/env python3
"""inclavared's relay round trips per second against a direct RATS-TLS round trip to the same container, in the
same run, interleaved round by round (issue 16: "inclavared relay round trips per second").

Starts the real programs on loopback with a private sim platform: the sample confidential container
(``inclavare-enclave-info``, sim attester, mutual) and ``inclavared -x`` to it. Each round, in an order that
alternates, sequentially from this process:
  relay     N exchanges shelter -> inclavared: connect, RATS-TLS handshake verifying inclavared's sim evidence,
            GETENCLAVEINFO, ENCLAVEINFO read and decoded (inclavared meanwhile does a mutual handshake with the
            container, verifying its evidence, and reads its identity answer)
  direct    N exchanges straight to the container, as inclavared's own hop: connect, mutual RATS-TLS handshake,
            greeting, identity answer read and checked against the verified evidence
Reported: round trips per second per kind (median over rounds) and the ratio relay/direct (median of the
per-round ratios). One relay round trip costs two handshakes and three processes' work, so about half the
direct rate is what a relay can do.

usage: bench/inclavared.py [--rounds R] [--exchanges N]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

from inclavare.ratls.tls import RatsTlsConfig  # noqa: E402
from inclavare.services.inclavared.protocol import decode_enclave_info, encode_request, parse_address  # noqa: E402
from inclavare.services.inclavared.relay import fetch_enclave_info  # noqa: E402
from inclavare.services.inclavared.transport import round_trip  # noqa: E402


def start(env: dict[str, str], module: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", module, *args, "--log-level", "warn"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        raise SystemExit(f"{module} did not start")
    return proc, str(json.loads(line)["listen"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--exchanges", type=int, default=10, help="round trips per kind per round")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-inclavared-") as tmp:
        env = dict(os.environ, INCLAVARE_SIM_STATE_DIR=f"{tmp}/sim",
                   PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        os.environ["INCLAVARE_SIM_STATE_DIR"] = env["INCLAVARE_SIM_STATE_DIR"]
        procs = []
        try:
            c, caddr = start(env, "inclavare.cli.enclave_info", "-l", "127.0.0.1:0", "-m", "--trust-sim")
            procs.append(c)
            d, daddr = start(env, "inclavare.cli.inclavared", "-l", "127.0.0.1:0", "-x", caddr, "--attester", "sim",
                             "--trust-sim")
            procs.append(d)
            shelter_cfg = RatsTlsConfig(verifier="sim", trust_sim=True)
            hop_cfg = RatsTlsConfig(attester="sim", verifier="sim", trust_sim=True, mutual=True)
            shelter_cfg.prepare(presents=False)
            hop_cfg.prepare(presents=True)
            relay_addr, container_addr = parse_address(daddr, "relay"), parse_address(caddr, "container")

            def relay() -> None:
                answer, _ = round_trip(shelter_cfg, relay_addr, encode_request(), 30, "inclavared")
                info = decode_enclave_info(answer)
                assert not info.is_error and info.attested, info.message

            def direct() -> None:
                assert fetch_enclave_info(hop_cfg, container_addr, 30).attested

            relay()
            direct()  # warm both paths (imports, certificates)
            rates: dict[str, list[float]] = {"relay": [], "direct": []}
            ratios = []
            for r in range(a.rounds):
                kinds = [("relay", relay), ("direct", direct)]
                for name, fn in (kinds if r % 2 == 0 else kinds[::-1]):
                    t0 = time.perf_counter()
                    for _ in range(a.exchanges):
                        fn()
                    rates[name].append(a.exchanges / (time.perf_counter() - t0))
                ratios.append(rates["relay"][-1] / rates["direct"][-1])
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    print(f"{a.rounds} rounds x {a.exchanges} sequential round trips per kind, interleaved (CPUs: {os.cpu_count()})")
    for name in ("relay", "direct"):
        v = rates[name]
        print(f"  {name:6s} {statistics.median(v):6.2f} round trips/s (median; min {min(v):.2f}, max {max(v):.2f})")
    print(f"  relay/direct: {statistics.median(ratios):.2f} (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
