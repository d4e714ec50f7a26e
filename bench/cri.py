#!/usr/bin/env python3
"""Kubernetes-path benchmark: pods through containerd's CRI plugin, rune's handlers against runc's.

A private containerd with the CRI plugin (inclavare.testing.cri.containerd) has these runtime handlers:

  rune shim         runtime_type io.containerd.rune.v2: this checkout's containerd-shim-rune-v2 (a launcher put
                    first on containerd's PATH), the resident shim of issue 14
  runc shim + runc  runtime_type io.containerd.runc.v2, BinaryName runc: the baseline
  runc shim + rune  the same shim with BinaryName rune (issue 11's handler; --with-runc-shim-rune)

A client speaks the CRI gRPC API (runtime.v1) to it, as a kubelet would. One round, per handler, one pod
(host network, no CNI) with one container (`sleep 1000` from the busybox test image):

  start     RunPodSandbox + CreateContainer + StartContainer, then ContainerStatus until RUNNING
  teardown  StopContainer (no grace period: SIGKILL at once) + RemoveContainer + StopPodSandbox +
            RemovePodSandbox

With --pod-calls it times issue 11's calls instead: RunPodSandbox alone, and StopPodSandbox of the pod with its
container running (or of the sandbox only, --no-container); the container's create/start and the pod's removal
are not timed.

The handlers are interleaved round by round, their order rotating, so machine noise hits them alike. Reported:
medians, the ratio of the medians to runc shim + runc, and the median of the per-round (paired) ratios. After the
run the script checks that nothing is left (rune shims and the shim template of this containerd, mounts,
cgroups, runtime state) and exits 1 if something is.

usage: bench/cri.py [--rounds N] [--runc PATH] [--rune PATH] [--with-runc-shim-rune]
                    [--pod-calls [--no-container]] [--markdown]
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
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

BUSYBOX = "localhost/busybox:latest"
DEADLINE = 10.0  # seconds: a call (or the wait for RUNNING) that hangs is an error, not a long sample
BASELINE = "runc"
LABELS = {"rune": "rune shim", "runc": "runc shim + runc", "runc-rune": "runc shim + rune"}

Timings = dict[str, float]


class BenchError(RuntimeError):
    """A pod did not get where it had to (no RUNNING container within the deadline)."""


def new_pod(cri: Any, ctrd: Any, handler: str) -> Any:
    """The config of a fresh pod for ``handler``: its own uid, cgroup parent and log directory."""
    uid = uuid.uuid4().hex[:12]
    return cri.pod_config(f"bench-{handler}-{uid}", uid=uid, cgroup_parent=ctrd.pod_cgroup(uid),
                          log_directory=os.path.join(ctrd.log_root, uid))


def start_sleeper(cri: Any, pod: Any) -> str:
    """CreateContainer + StartContainer of `sleep 1000` in ``pod``; its id."""
    cid: str = cri.create_container(pod, "sleep", BUSYBOX, ["sleep", "1000"], log_path="sleep.log",
                                    timeout=DEADLINE)
    cri.start_container(cid, timeout=DEADLINE)
    return cid


def wait_running(cri: Any, cid: str) -> None:
    from inclavare.testing.cri import api_pb2 as pb

    deadline = time.monotonic() + DEADLINE
    while (st := cri.container_status(cid, timeout=DEADLINE)).state != pb.CONTAINER_RUNNING:
        if time.monotonic() > deadline:
            raise BenchError(f"container {cid[:13]}: {pb.ContainerState.Name(st.state)} after {DEADLINE:.0f} s, "
                             "not RUNNING")
        time.sleep(0.005)


def lifecycle(cri: Any, ctrd: Any, handler: str, container: bool) -> Timings:
    """Issue 14's two numbers for one pod of ``handler``: start (to a RUNNING container) and teardown."""
    cfg = new_pod(cri, ctrd, handler)
    pod = None
    try:
        t0 = time.perf_counter()
        pod = cri.run_pod(cfg.metadata.name, handler, config=cfg, timeout=DEADLINE)
        cid = start_sleeper(cri, pod)
        wait_running(cri, cid)
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        cri.stop_container(cid, grace=0, timeout=DEADLINE)
        cri.remove_container(cid, timeout=DEADLINE)
        cri.stop_pod(pod.id, timeout=DEADLINE)
        cri.remove_pod(pod.id, timeout=DEADLINE)
        t_teardown = time.perf_counter() - t0
        pod = None
    finally:
        if pod is not None:  # a failed round: take the pod down untimed
            cleanup_pod(cri, pod.id)
        ctrd.remove_namespace_cgroups()  # kubelet's part: the (now empty) per-pod cgroups
    return {"start": t_start, "teardown": t_teardown}


def pod_calls(cri: Any, ctrd: Any, handler: str, container: bool) -> Timings:
    """Issue 11's two numbers for one pod of ``handler``: RunPodSandbox, and StopPodSandbox of the pod with its
    container running (``container``) or of the sandbox only."""
    cfg = new_pod(cri, ctrd, handler)
    t0 = time.perf_counter()
    pod = cri.run_pod(cfg.metadata.name, handler, config=cfg, timeout=DEADLINE)
    t_run = time.perf_counter() - t0
    try:
        if container:
            start_sleeper(cri, pod)
        t0 = time.perf_counter()
        cri.stop_pod(pod.id, timeout=DEADLINE)
        t_stop = time.perf_counter() - t0
    finally:
        cleanup_pod(cri, pod.id)
        ctrd.remove_namespace_cgroups()
    return {"RunPodSandbox": t_run, "StopPodSandbox": t_stop}


def cleanup_pod(cri: Any, pod_id: str) -> None:
    """StopPodSandbox + RemovePodSandbox (its containers go with it), untimed."""
    cri.stop_pod(pod_id, timeout=DEADLINE)
    cri.remove_pod(pod_id, timeout=DEADLINE)


def interleave(run: Callable[[str], Timings], names: list[str], rounds: int) -> dict[str, list[Timings]]:
    """One warm-up pod per handler (image unpack, binaries in the page cache, the rune shim's template), then
    ``rounds`` rounds of one pod per handler, the order rotating round by round."""
    for n in names:
        run(n)
    samples: dict[str, list[Timings]] = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            samples[n].append(run(n))
    return samples


def pod_leftovers(ctrd: Any, work: str) -> list[str]:
    """What the pods left once all are removed (containerd still up): resident rune shims of this containerd
    (given a few seconds to exit), mounts under the work directory, pod cgroups, runtime state."""
    from inclavare.testing.mounts import mounts_under
    from inclavare.testing.shimprocs import shim_pids

    deadline = time.monotonic() + 5
    while shim_pids(ctrd.address) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [f"rune shim pid {p}" for p in shim_pids(ctrd.address)]
    left += [f"mount {m}" for m in mounts_under(work)]
    rel = {os.path.relpath(d, top) for top in ctrd.namespace_cgroups() for d in ctrd.leftover_cgroups()
           if d.startswith(top + "/")}
    left += [f"cgroup {ctrd.cgroup_parent}/{r} (in some hierarchy)" for r in sorted(rel)]
    for h in ctrd.handlers:
        root = ctrd.runtime_root(h)
        if root and os.path.isdir(root):
            left += [f"{h} state {os.path.join(root, e)}" for e in os.listdir(root)]
    return left


def process_leftovers(ctrd: Any, work: str) -> list[str]:
    """What is left once containerd is stopped: rune shims and the shim template of this containerd, mounts."""
    from inclavare.testing.mounts import mounts_under
    from inclavare.testing.shimprocs import shim_pids, template_pids

    left = [f"rune shim pid {p} (after containerd stopped)" for p in shim_pids(ctrd.address)]
    left += [f"rune shim template pid {p}" for p in template_pids(ctrd.address)]
    left += [f"mount {m} (after containerd stopped)" for m in mounts_under(work)]
    return left


def kill_shims(address: str) -> None:
    import signal

    from inclavare.testing.shimprocs import shim_pids

    for pid in shim_pids(address):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def version(binary: str) -> str:
    p = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return (p.stdout.splitlines() or ["?"])[0]


def table(samples: dict[str, list[Timings]], names: list[str]) -> list[tuple[str, str, float, float, float]]:
    """(measure, handler, median ms, ratio of medians to the baseline, median of paired ratios) rows."""
    rows = []
    for key in samples[BASELINE][0]:
        base = [s[key] for s in samples[BASELINE]]
        for n in names:
            mine = [s[key] for s in samples[n]]
            med = statistics.median(mine)
            paired = statistics.median(a / b for a, b in zip(mine, base, strict=True))
            rows.append((key, n, med * 1000, med / statistics.median(base), paired))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="pods per handler (default 20)")
    ap.add_argument("--runc", default=shutil.which("runc") or "/usr/sbin/runc")
    ap.add_argument("--rune", help="rune for the runc shim + rune row (default: a launcher for this checkout)")
    ap.add_argument("--with-runc-shim-rune", action="store_true", help="add the runc shim + rune handler")
    ap.add_argument("--pod-calls", action="store_true", help="time issue 11's RunPodSandbox and StopPodSandbox")
    ap.add_argument("--no-container", action="store_true", help="with --pod-calls: pods with the sandbox only")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table for docs/benchmarks.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    if args.no_container and not args.pod_calls:
        print("bench: --no-container needs --pod-calls (the start/teardown pods have a container)", file=sys.stderr)
        return 1
    from inclavare.testing.containerd import ContainerdError
    from inclavare.testing.cri.client import CriError
    from inclavare.testing.cri.containerd import CriContainerd, RuntimeHandler
    from inclavare.testing.launcher import write_rune_launcher

    work = tempfile.mkdtemp(prefix="rune-bench-cri-")
    handlers = {"rune": RuntimeHandler.rune_shim(), "runc": RuntimeHandler.runc_shim(args.runc)}
    binaries = {"runc": args.runc}
    if args.with_runc_shim_rune:
        binaries["rune"] = args.rune or write_rune_launcher(os.path.join(work, "rune"))
        handlers["runc-rune"] = RuntimeHandler.runc_shim(binaries["rune"])
    for name, path in binaries.items():
        if not os.access(path, os.X_OK):
            print(f"bench: {name} is not an executable at {path!r}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
            return 1
    ctrd = CriContainerd(os.path.join(work, "containerd"), handlers)
    ctrd.install_rune_shim(os.path.join(work, "rune-shim-root"))
    names = list(handlers)
    scenario = pod_calls if args.pod_calls else lifecycle
    container = not args.no_container
    failed = False
    left: list[str] = []
    try:
        ctrd.start()
        ctrd.import_test_images(work)
        with ctrd.client(timeout=60) as cri:
            samples = interleave(lambda n: scenario(cri, ctrd, n, container), names, args.rounds)
        load = os.getloadavg()
        left = pod_leftovers(ctrd, work)
    except (ContainerdError, CriError, BenchError) as e:
        print(f"bench: {e}", file=sys.stderr)
        print(ctrd.log_tail(), file=sys.stderr)
        failed = True
    finally:
        ctrd.stop()  # CRI stop/remove of any pod left, containerd stopped, its rune shim template killed
        left += process_leftovers(ctrd, work)
        kill_shims(ctrd.address)  # reported above if any: do not leave them running either
        ctrd.purge()
        shutil.rmtree(work, ignore_errors=True)
    if left:
        print("bench: left behind: " + "; ".join(left), file=sys.stderr)
    if failed or left:
        return 1

    labels = {"start": "start: Run + Create + Start to RUNNING", "teardown": "teardown: Stop + Remove, container "
              "and pod", "RunPodSandbox": "RunPodSandbox",
              "StopPodSandbox": f"StopPodSandbox ({'with one running container' if container else 'sandbox only'})"}
    rows = table(samples, names)
    if args.markdown:
        print(f"| CRI, one pod ({args.rounds} rounds, interleaved) | handler | median | vs runc shim + runc | "
              "paired ratio (median) |")
        print("|---|---|---|---|---|")
        for key, n, med, ratio, paired in rows:
            print(f"| {labels[key]} | {LABELS[n]} | {med:.1f} ms | **{ratio:.2f}x** | {paired:.2f}x |")
        print()
        print(f"- {datetime.date.today()}, {platform.node()}: {platform.system()} {platform.release()}, "
              f"{os.cpu_count()} cores, load average {load[0]:.1f} at the end; "
              f"containerd {version(ctrd.containerd_bin).split()[-2]}")
        rune_src = os.path.normpath(os.path.join(HERE, "..", "src"))
        print(f"- rune shim: this checkout ({rune_src}); runc: {version(args.runc)}"
              + (f"; rune (runc shim + rune): {args.rune or 'this checkout'}" if args.with_runc_shim_rune else ""))
    else:
        for key, n, med, ratio, paired in rows:
            print(f"{labels[key]}: {LABELS[n]} {med:.1f} ms, {ratio:.2f}x of runc shim + runc (paired {paired:.2f}x)")
        print(f"load average {load[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
