#!/usr/bin/env python3
"""Engine benchmarks: rune against runc driven by real container engines, in the same run, as ratios.

  containerd  `ctr run --rm IMAGE ID true` on a private containerd (inclavare.testing.containerd), through
              the stock runc v2 shim: `--runtime io.containerd.runc.v2 --runc-binary RUNTIME`.
  podman      `podman run --rm IMAGE true` on a private, offline podman (inclavare.testing.podman) with
              `--runtime RUNTIME` per call (no network, cgroupfs, file events, pinned ulimits).

Runtimes are interleaved round by round (their order alternating) so that machine noise hits them alike;
medians are reported, with the ratio rune / runc. The image is the registry-free busybox OCI image.

usage: bench/engines.py [--rounds N] [--rune PATH] [--runc PATH] [--engine containerd ...] [--markdown]
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
DEVNULL = subprocess.DEVNULL

# An engine benchmark takes the parsed arguments and a work dir and returns
# (workload label, {runtime name: [seconds per round]}), runtimes measured interleaved.
Result = tuple[str, dict[str, list[float]]]
Bench = Callable[[argparse.Namespace, str], Result]


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return dt


def interleave(runtimes: dict[str, Callable[[str], float]], rounds: int) -> dict[str, list[float]]:
    """One warm-up call each, then ``rounds`` rounds; the order flips every round."""
    names = list(runtimes)
    for n in names:
        runtimes[n]("warm")
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for n in (names if i % 2 == 0 else names[::-1]):
            out[n].append(runtimes[n](f"r{i}"))
    return out


# ---------------------------------------------------------------------------------------------- containerd

def bench_containerd(args: argparse.Namespace, work: str) -> Result:
    from inclavare.testing.containerd import PrivateContainerd
    from inclavare.testing.image import build_image_tar

    ctrd = PrivateContainerd(os.path.join(work, "containerd"), namespace="bench")
    try:
        ctrd.start()
        ctrd.import_image(build_image_tar(os.path.join(work, "busybox-oci.tar"), name=IMAGE))

        def runner(name: str, binary: str) -> Callable[[str], float]:
            flags = ["--runtime", "io.containerd.runc.v2", "--runc-binary", binary,
                     "--runc-root", os.path.join(ctrd.base, f"{name}-root")]
            return lambda tag: timed(ctrd.ctr_cmd("run", "--rm", *flags, IMAGE, f"{name}-{tag}", "true"))

        times = interleave({"rune": runner("rune", args.rune), "runc": runner("runc", args.runc)}, args.rounds)
    finally:
        ctrd.purge()
    return "`ctr run --rm` of `true` (runc v2 shim)", times


# ---------------------------------------------------------------------------------------------- podman

def bench_podman(args: argparse.Namespace, work: str) -> Result:
    """`podman run --rm` of `true` on a private, offline podman (inclavare.testing.podman), --runtime per call."""
    from inclavare.testing.image import build_image_tar
    from inclavare.testing.podman import PrivatePodman

    pm = PrivatePodman(os.path.join(work, "podman"))
    try:
        pm.load_image(build_image_tar(os.path.join(work, "busybox-oci.tar"), name=IMAGE), IMAGE)
        env = dict(os.environ, **pm.env)

        def runner(binary: str) -> Callable[[str], float]:
            argv = pm.cmd("run", "--rm", "--pull=never", IMAGE, "true", runtime=binary)

            def once(tag: str) -> float:
                t0 = time.perf_counter()
                p = subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=subprocess.PIPE, env=env)
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    raise RuntimeError(f"podman run ({binary}) -> {p.returncode}: {p.stderr.decode().strip()}")
                return dt

            return once

        times = interleave({"rune": runner(args.rune), "runc": runner(args.runc)}, args.rounds)
    finally:
        problems = pm.cleanup()
        if problems:
            print(f"bench: podman cleanup: {problems}", file=sys.stderr)
    return "`podman run --rm` of `true`", times


ENGINES: dict[str, Bench] = {
    "containerd": bench_containerd,
    "podman": bench_podman,
}


def version(binary: str) -> str:
    p = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return (p.stdout.splitlines() or ["?"])[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--rune", default=shutil.which("rune") or "/usr/local/bin/rune")
    ap.add_argument("--runc", default=shutil.which("runc") or "/usr/sbin/runc")
    ap.add_argument("--engine", action="append", choices=sorted(ENGINES),
                    help="engine to measure (repeatable; default: all)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table for docs/benchmarks.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    for name in ("rune", "runc"):
        if not os.path.exists(getattr(args, name)):
            print(f"bench: {name} not found at {getattr(args, name)!r}", file=sys.stderr)
            return 1
    rows: list[tuple[str, float, float]] = []
    work = tempfile.mkdtemp(prefix="rune-bench-engines-")
    try:
        for engine in args.engine or list(ENGINES):
            label, times = ENGINES[engine](args, os.path.join(work, engine))
            rows.append((label, statistics.median(times["rune"]) * 1000, statistics.median(times["runc"]) * 1000))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.markdown:
        print(f"| engine workload ({args.rounds} rounds, median) | rune | runc | rune / runc |")
        print("|---|---|---|---|")
        for label, rune_ms, runc_ms in rows:
            print(f"| {label} | {rune_ms:.1f} ms | {runc_ms:.1f} ms | {rune_ms / runc_ms:.2f}x |")
        print()
        print(f"- rune: {version(args.rune)} ({args.rune})")
        print(f"- runc: {version(args.runc)}")
    else:
        for label, rune_ms, runc_ms in rows:
            print(f"{label}: rune {rune_ms:.1f} ms, runc {runc_ms:.1f} ms, ratio {rune_ms / runc_ms:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
