#!/usr/bin/env python3
"""containerd-shim-rune-v2 against containerd's runc shim, driven by the same private containerd in one run.

  rune shim    `ctr run --rm --runtime io.containerd.rune.v2 IMAGE ID true` (this checkout's shim, through a
               launcher placed first on containerd's PATH)
  runc shim    `ctr run --rm --runtime io.containerd.runc.v2 IMAGE ID true` with runc (the baseline)
  runc shim + rune  the same with `--runc-binary rune` (how rune runs under containerd without our shim)

Runtimes are interleaved round by round (their order rotating) so that machine noise hits them alike; medians
are reported, and the median of the per-round ratios against the baseline (paired).

usage: bench/shim.py [--rounds N] [--runc PATH] [--rune PATH] [--no-rune-binary] [--markdown]
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
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

IMAGE = "localhost/busybox:latest"


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--runc", default=shutil.which("runc") or "/usr/sbin/runc")
    ap.add_argument("--rune", default=None, help="rune for the runc-shim + rune row (default: this checkout's)")
    ap.add_argument("--no-rune-binary", action="store_true", help="skip the runc shim + rune row")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    from inclavare.testing.containerd import PrivateContainerd
    from inclavare.testing.image import build_image_tar
    from inclavare.testing.launcher import write_rune_launcher, write_shim_launcher

    work = tempfile.mkdtemp(prefix="rune-bench-shim-")
    ctrd = PrivateContainerd(os.path.join(work, "c"), namespace="bench")
    try:
        os.makedirs(ctrd.bin_dir, exist_ok=True)
        write_shim_launcher(os.path.join(ctrd.bin_dir, "containerd-shim-rune-v2"),
                            env={"RUNE_SHIM_ROOT": os.path.join(work, "rune-shim-root")})
        rune = args.rune or write_rune_launcher(os.path.join(work, "rune"))
        ctrd.start()
        ctrd.import_image(build_image_tar(os.path.join(work, "busybox-oci.tar"), name=IMAGE))

        def run(name: str, flags: list[str]) -> Callable[[str], float]:
            return lambda tag: timed(ctrd.ctr_cmd("run", "--rm", *flags, IMAGE, f"{name}-{tag}", "true"))

        runners = {
            "rune shim": run("ru", ["--runtime", "io.containerd.rune.v2"]),
            "runc shim + runc": run("rc", ["--runtime", "io.containerd.runc.v2", "--runc-binary", args.runc,
                                           "--runc-root", os.path.join(work, "runc-root")]),
        }
        if not args.no_rune_binary:
            runners["runc shim + rune"] = run("rr", ["--runtime", "io.containerd.runc.v2", "--runc-binary", rune,
                                                     "--runc-root", os.path.join(work, "rune-root")])
        names = list(runners)
        for n in names:
            runners[n]("warm")
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for n in order:
                times[n].append(runners[n](f"r{i}"))
    finally:
        ctrd.purge()
        shutil.rmtree(work, ignore_errors=True)
    base = times["runc shim + runc"]
    rows = []
    for n in names:
        med = statistics.median(times[n]) * 1000
        paired = statistics.median(a / b for a, b in zip(times[n], base, strict=True))
        rows.append((n, med, med / (statistics.median(base) * 1000), paired))
    if args.markdown:
        print(f"| `ctr run --rm` of `true` ({args.rounds} rounds, interleaved) | median | vs runc shim + runc | "
              "paired ratio (median) |")
        print("|---|---|---|---|")
        for n, med, ratio, paired in rows:
            print(f"| {n} | {med:.1f} ms | {ratio:.2f}x | {paired:.2f}x |")
    else:
        for n, med, ratio, paired in rows:
            print(f"{n}: {med:.1f} ms, {ratio:.2f}x of runc shim + runc (paired {paired:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
