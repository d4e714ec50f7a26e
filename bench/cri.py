#!/usr/bin/env python3
"""Kubernetes-path benchmark: pod start and stop through containerd's CRI plugin, rune against runc.

A private containerd with the CRI plugin (inclavare.testing.cri.containerd) has two runtime handlers on the
stock runc v2 shim: `runc` (BinaryName = runc, the baseline) and `rune` (BinaryName = rune). A client speaks
the CRI gRPC API (runtime.v1) to it, as a kubelet would. One round, per handler:

  RunPodSandbox     timed: the pause sandbox is created and started (host-network pod, no CNI)
  (CreateContainer + StartContainer of `sleep 1000`, not timed)
  StopPodSandbox    timed: the running container and the sandbox are killed and their tasks deleted
  (RemovePodSandbox, not timed)

The handlers are interleaved round by round, their order alternating, so machine noise hits them alike.
Reported: medians, the ratio of the medians rune / runc, and the median of the per-round (paired) ratios.
rune defaults to this checkout's rune (a launcher written into the work dir).

usage: bench/cri.py [--rounds N] [--rune PATH] [--runc PATH] [--no-container] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

BUSYBOX = "localhost/busybox:latest"
STOP_DEADLINE = 10.0  # seconds: a stop that hangs is an error, not a long sample


def one_pod(cri: Any, ctrd: Any, handler: str, container: bool) -> tuple[float, float]:
    """(RunPodSandbox seconds, StopPodSandbox seconds) for one pod of ``handler``."""
    uid = uuid.uuid4().hex[:12]
    cfg = cri.pod_config(f"bench-{handler}-{uid}", uid=uid, cgroup_parent=ctrd.pod_cgroup(uid),
                         log_directory=os.path.join(ctrd.log_root, uid))
    t0 = time.perf_counter()
    pod = cri.run_pod(cfg.metadata.name, handler, config=cfg)
    t_run = time.perf_counter() - t0
    try:
        if container:
            cid = cri.create_container(pod, "sleep", BUSYBOX, ["sleep", "1000"], log_path="sleep.log")
            cri.start_container(cid)
        t0 = time.perf_counter()
        cri.stop_pod(pod.id, timeout=STOP_DEADLINE)
        t_stop = time.perf_counter() - t0
    finally:
        cri.remove_pod(pod.id, timeout=STOP_DEADLINE)
        ctrd.remove_namespace_cgroups()  # kubelet's part: the (now empty) per-pod cgroups
    return t_run, t_stop


def version(binary: str) -> str:
    p = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return (p.stdout.splitlines() or ["?"])[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="pods per handler (default 20)")
    ap.add_argument("--rune", help="rune binary (default: a launcher for this checkout)")
    ap.add_argument("--runc", default=shutil.which("runc") or "/usr/sbin/runc")
    ap.add_argument("--no-container", action="store_true", help="pods with the sandbox only, no container")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table for docs/benchmarks.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    from inclavare.testing.containerd import ContainerdError
    from inclavare.testing.cri.client import CriError
    from inclavare.testing.cri.containerd import CriContainerd, RuntimeHandler
    from inclavare.testing.launcher import write_rune_launcher

    work = tempfile.mkdtemp(prefix="rune-bench-cri-")
    rune = args.rune or write_rune_launcher(os.path.join(work, "rune"))
    for name, path in (("rune", rune), ("runc", args.runc)):
        if not os.access(path, os.X_OK):
            print(f"bench: {name} is not an executable at {path!r}", file=sys.stderr)
            return 1
    ctrd = CriContainerd(os.path.join(work, "containerd"),
                         {"runc": RuntimeHandler.runc_shim(args.runc), "rune": RuntimeHandler.runc_shim(rune)})
    names = ["rune", "runc"]
    runs: dict[str, list[float]] = {n: [] for n in names}
    stops: dict[str, list[float]] = {n: [] for n in names}
    container = not args.no_container
    try:
        ctrd.start()
        ctrd.import_test_images(work)
        with ctrd.client(timeout=60) as cri:
            for n in names:  # warm-up: image unpack, shim binaries in the page cache
                one_pod(cri, ctrd, n, container)
            for i in range(args.rounds):
                for n in (names if i % 2 == 0 else names[::-1]):
                    t_run, t_stop = one_pod(cri, ctrd, n, container)
                    runs[n].append(t_run)
                    stops[n].append(t_stop)
    except (ContainerdError, CriError) as e:
        print(f"bench: {e}", file=sys.stderr)
        print(ctrd.log_tail(), file=sys.stderr)
        return 1
    finally:
        ctrd.purge()
        shutil.rmtree(work, ignore_errors=True)

    what = "with one running container" if container else "sandbox only"
    rows = []
    for label, data in ((f"StopPodSandbox ({what})", stops), ("RunPodSandbox", runs)):
        med = {n: statistics.median(data[n]) * 1000 for n in names}
        paired = statistics.median(a / b for a, b in zip(data["rune"], data["runc"], strict=True))
        rows.append((label, med["rune"], med["runc"], med["rune"] / med["runc"], paired))
    if args.markdown:
        print(f"| CRI call ({args.rounds} pods each, median) | rune | runc | rune / runc | paired ratio (median) |")
        print("|---|---|---|---|---|")
        for label, a, b, ratio, paired in rows:
            print(f"| {label} | {a:.1f} ms | {b:.1f} ms | **{ratio:.2f}x** | {paired:.2f}x |")
        print()
        print(f"- {datetime.date.today()}, {platform.node()}: {platform.system()} {platform.release()}, "
              f"{os.cpu_count()} cores; containerd {version(ctrd.containerd_bin).split()[-2]}")
        print(f"- rune: {args.rune or 'this checkout (' + os.path.normpath(os.path.join(HERE, '..', 'src')) + ')'}; "
              f"runc: {version(args.runc)}")
    else:
        for label, a, b, ratio, paired in rows:
            print(f"{label}: rune {a:.1f} ms, runc {b:.1f} ms, ratio {ratio:.2f}x (paired {paired:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
