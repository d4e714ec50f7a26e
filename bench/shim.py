#!/usr/bin/env python3
"""containerd-shim-rune-v2 against containerd's runc shim, driven by the same private containerd in one run.

  rune shim    `ctr run --rm --runtime io.containerd.rune.v2 IMAGE ID true` (this checkout's shim, through a
               launcher placed first on containerd's PATH)
  runc shim    `ctr run --rm --runtime io.containerd.runc.v2 IMAGE ID true` with runc (the baseline)
  runc shim + rune  the same with `--runc-binary rune` (how rune runs under containerd without our shim)

Runtimes are interleaved round by round (their order rotating) so that machine noise hits them alike; medians
are reported, and the median of the per-round ratios against the baseline (paired).

With --memory: after the timing, one `ctr run -d IMAGE ID sleep 1000` each and the PSS
(/proc/PID/smaps_rollup) of the shim's own processes (the rune shim with its fork server and workers; the runc
shim), plus the rune shim template and its spare, which exist once per containerd.

usage: bench/shim.py [--rounds N] [--runc PATH] [--rune PATH] [--no-rune-binary] [--memory] [--markdown]
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
    ap.add_argument("--memory", action="store_true", help="also the PSS of one shim per runtime")
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
        memory = shim_memory(ctrd, args.runc, os.path.join(work, "runc-root")) if args.memory else {}
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
    for what, kb in memory.items():
        print(f"| PSS: {what} | {kb / 1024:.1f} MB |" if args.markdown else f"PSS {what}: {kb / 1024:.1f} MB")
    return 0


def _pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def _children(pid: int) -> list[int]:
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def shim_memory(ctrd: object, runc: str, runc_root: str) -> dict[str, int]:
    """PSS in kB of one sleeping container's shim processes, per runtime, and of the template and its spare."""
    from inclavare.testing.shimprocs import shim_pids, template_pids

    address = ctrd.address  # type: ignore[attr-defined]
    ctr = ctrd.ctr  # type: ignore[attr-defined]
    ctr("run", "-d", "--runtime", "io.containerd.rune.v2", IMAGE, "mem-ru", "sleep", "1000")
    ctr("run", "-d", "--runtime", "io.containerd.runc.v2", "--runc-binary", runc, "--runc-root", runc_root,
        IMAGE, "mem-rc", "sleep", "1000")
    time.sleep(1.0)  # the shims settle (the spare is rebuilt, workers pre-forked)
    try:
        out: dict[str, int] = {}
        (shim,) = shim_pids(address)
        procs = [shim] + [c for c in _children(shim) if _comm(c).startswith("rune-shim")]
        procs += [w for p in procs[1:] for w in _children(p)]
        out[f"rune shim, {len(procs)} processes (shim, fork server, workers)"] = sum(_pss_kb(p) for p in procs)
        (runc_shim,) = [int(p) for p in os.listdir("/proc") if p.isdigit() and _argv(int(p))[:1] and
                        _argv(int(p))[0].endswith("containerd-shim-runc-v2") and "mem-rc" in _argv(int(p))]
        out["runc shim"] = _pss_kb(runc_shim)
        for tmpl in template_pids(address):
            out["rune shim template (once per containerd)"] = _pss_kb(tmpl)
            spare = [c for c in _children(tmpl) if _comm(c) == "rune-shim-spare"]
            tree = spare + [w for p in spare for w in _children(p)]
            tree += [w for p in tree[len(spare):] for w in _children(p)]
            if spare:
                out[f"rune spare shim, {len(tree)} processes (once per containerd)"] = sum(_pss_kb(p) for p in tree)
        return out
    finally:
        for cid in ("mem-ru", "mem-rc"):
            ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        time.sleep(0.5)
        for cid in ("mem-ru", "mem-rc"):
            ctr("tasks", "delete", cid, check=False)
            ctr("containers", "delete", cid, check=False)


if __name__ == "__main__":
    sys.exit(main())
