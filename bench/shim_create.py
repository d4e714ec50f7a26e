#!/usr/bin/env python3
"""Create latency: the shim core's fork server against the `rune create` CLI, same bundle, same machine.

One round = one container each way, order alternating round by round (paired):
  shim  ShimCore.create(id, bundle, no stdio): request to the fork server -> worker -> runtime library ->
        init waiting for start, pid back in the shim. Timed from the call to its return.
  cli   `rune --root R create --bundle B id` as a subprocess (a CPython start, the runtime's imports, the
        same library call). Timed from the spawn to the exit.
Each container is deleted afterwards, untimed. A second pair times a whole lifecycle of a `true` bundle:
  shim  create + start + wait + delete through ShimCore,
  cli   `rune create`, `rune start`, `rune state` every 5 ms until stopped, `rune delete` (the calls runc's
        shim makes, with the wait it does through its reaper replaced by polling).
Reported: the medians, their ratio, the median of the paired ratios. rune defaults to this checkout's rune
(a launcher written into the work dir). Needs root.

usage: bench/shim_create.py [--rounds N] [--rune PATH] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

DEVNULL = subprocess.DEVNULL


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--rune", default="")
    ap.add_argument("--markdown", action="store_true")
    opts = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-shim-")
    # the core first: its fork server must be forked before any thread exists
    from inclavare.shim.core import ShimCore
    from inclavare.shim.stdio import Stdio

    core = ShimCore(os.path.join(work, "shim-root"), reap_orphans=False)
    from inclavare.testing.bundle import make_bundle
    from inclavare.testing.launcher import write_rune_launcher

    rune = opts.rune or write_rune_launcher(os.path.join(work, "rune"))
    bundle = make_bundle(os.path.join(work, "bundle"), ["sleep", "1000"])
    cli_root = os.path.join(work, "cli-root")
    shim_t: list[float] = []
    cli_t: list[float] = []

    def shim_once(cid: str) -> None:
        t0 = time.perf_counter()
        core.create(cid, bundle, Stdio())
        shim_t.append(time.perf_counter() - t0)
        core.delete(cid)

    def cli_once(cid: str) -> None:
        t0 = time.perf_counter()
        subprocess.run([rune, "--root", cli_root, "create", "--bundle", bundle, cid], stdin=DEVNULL,
                       stdout=DEVNULL, stderr=DEVNULL, check=True)
        cli_t.append(time.perf_counter() - t0)
        subprocess.run([rune, "--root", cli_root, "delete", "--force", cid], stdin=DEVNULL, stdout=DEVNULL,
                       stderr=DEVNULL, check=True)

    true_bundle = make_bundle(os.path.join(work, "bundle-true"), ["true"])
    shim_l: list[float] = []
    cli_l: list[float] = []

    def shim_life(cid: str) -> None:
        t0 = time.perf_counter()
        core.create(cid, true_bundle, Stdio())
        core.start(cid)
        core.wait(cid)
        core.delete(cid)
        shim_l.append(time.perf_counter() - t0)

    def cli_life(cid: str) -> None:
        def rune_call(*args: str) -> None:
            # never pipes: the container inherits create's stdio, and a pipe would stay open with it
            subprocess.run([rune, "--root", cli_root, *args], stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL,
                           check=True)

        def state() -> str:
            return subprocess.run([rune, "--root", cli_root, "state", cid], stdin=DEVNULL, capture_output=True,
                                  text=True, check=True).stdout

        t0 = time.perf_counter()
        rune_call("create", "--bundle", true_bundle, cid)
        rune_call("start", cid)
        while '"stopped"' not in state():
            time.sleep(0.005)
        rune_call("delete", cid)
        cli_l.append(time.perf_counter() - t0)

    shim_once("warm-s")  # first-time costs (imports in the worker path, cgroup parents) out of the sample
    cli_once("warm-c")
    shim_t.clear()
    cli_t.clear()
    for i in range(opts.rounds):
        first, second = (shim_once, cli_once) if i % 2 == 0 else (cli_once, shim_once)
        first(f"b{i}a")
        second(f"b{i}b")
        first, second = (shim_life, cli_life) if i % 2 == 0 else (cli_life, shim_life)
        first(f"l{i}a")
        second(f"l{i}b")
    core.shutdown()
    rows = [("create to created (`sleep`, no stdio)", shim_t, cli_t),
            ("lifecycle of `true`: create, start, wait, delete", shim_l, cli_l)]
    if opts.markdown:
        print(f"| {opts.rounds} rounds, median | shim core | rune CLI | shim / CLI | paired ratio (median) |")
        print("|---|---|---|---|---|")
    for name, a, b in rows:
        sm, cm = statistics.median(a) * 1000, statistics.median(b) * 1000
        paired = statistics.median([x / y for x, y in zip(a, b, strict=True)])
        if opts.markdown:
            print(f"| {name} | {sm:.1f} ms | {cm:.1f} ms | **{sm / cm:.2f}x** | {paired:.2f}x |")
        else:
            print(f"{name}: shim {sm:.1f} ms   CLI {cm:.1f} ms   ratio {sm / cm:.2f}x   paired {paired:.2f}x   "
                  f"({opts.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
