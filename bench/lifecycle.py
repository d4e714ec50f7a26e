#!/usr/bin/env python3
"""Container lifecycle benchmark: rune against runc (and crun) in the same run, as ratios.

Two workloads on a busybox `true` bundle:
  lifecycle  create + start + poll `state` every 5 ms until stopped + delete, each a separate CLI call:
             the pattern containerd's runc shim and podman's conmon use.
  run        one `run` call (create, start, wait, delete inside the runtime).
Runtimes are interleaved round by round so that machine noise hits them alike; medians are reported.

usage: bench/lifecycle.py [--rounds N] [--rune PATH] [--runc PATH] [--crun PATH] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from inclavare.testing.bundle import make_bundle  # noqa: E402

DEVNULL = subprocess.DEVNULL


def call(argv: list[str]) -> None:
    subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, check=True)


def lifecycle(rt: str, root: str, bundle: str, cid: str) -> float:
    t0 = time.perf_counter()
    call([rt, "--root", root, "create", "--bundle", bundle, cid])
    call([rt, "--root", root, "start", cid])
    for _ in range(2000):
        out = subprocess.run([rt, "--root", root, "state", cid], stdin=DEVNULL, capture_output=True, text=True)
        if '"stopped"' in out.stdout:
            break
        time.sleep(0.005)
    call([rt, "--root", root, "delete", cid])
    return time.perf_counter() - t0


def run_once(rt: str, root: str, bundle: str, cid: str) -> float:
    t0 = time.perf_counter()
    call([rt, "--root", root, "run", "--bundle", bundle, cid])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--rune", default=shutil.which("rune") or "/usr/local/bin/rune")
    ap.add_argument("--runc", default=shutil.which("runc"))
    ap.add_argument("--crun", default=shutil.which("crun"))
    ap.add_argument("--markdown", action="store_true", help="print a markdown table for docs/benchmarks.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    runtimes = {"rune": args.rune, "runc": args.runc, "crun": args.crun}
    runtimes = {k: v for k, v in runtimes.items() if v and os.path.exists(v)}
    if "rune" not in runtimes or "runc" not in runtimes:
        print("bench: needs rune and runc (the baseline)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="rune-bench-")
    try:
        bundle = make_bundle(os.path.join(work, "bundle"), ("true",))
        results: dict[str, dict[str, list[float]]] = {k: {"lifecycle": [], "run": []} for k in runtimes}
        for name, rt in runtimes.items():  # warm-up: page cache, pyc files
            root = os.path.join(work, f"root-{name}")
            lifecycle(rt, root, bundle, "warm")
            run_once(rt, root, bundle, "warm")
        for i in range(args.rounds):
            for name, rt in runtimes.items():
                root = os.path.join(work, f"root-{name}")
                results[name]["lifecycle"].append(lifecycle(rt, root, bundle, f"b{i}"))
                results[name]["run"].append(run_once(rt, root, bundle, f"r{i}"))
        med = {k: {w: statistics.median(v) * 1000 for w, v in ws.items()} for k, ws in results.items()}
        base = med["runc"]
        versions = {k: subprocess.run([v, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
                    for k, v in runtimes.items()}
        if args.markdown:
            print(f"| workload ({args.rounds} rounds, median) | " + " | ".join(runtimes) + " | rune / runc |")
            print("|---|" + "---|" * len(runtimes) + "---|")
            for w in ("lifecycle", "run"):
                cells = " | ".join(f"{med[k][w]:.1f} ms" for k in runtimes)
                print(f"| {w} | {cells} | {med['rune'][w] / base[w]:.2f}x |")
            print()
            for k, v in versions.items():
                print(f"- {k}: {v}")
        else:
            for w in ("lifecycle", "run"):
                for k in runtimes:
                    print(f"{w:10s} {k:5s} median {med[k][w]:7.1f} ms  ratio to runc {med[k][w] / base[w]:.2f}x")
    finally:
        for name in runtimes:
            subprocess.run([runtimes[name], "--root", os.path.join(work, f"root-{name}"), "list", "-q"],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
