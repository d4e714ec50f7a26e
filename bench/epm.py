#!/usr/bin/env python3
"""Warm enclave starts (issue 17): `create` through the shim's fork server, cold against warm, same run.

Four fork servers side by side, requests rotating between them round by round (paired):
  cold     ForkServer(warm=False) and no epm: every enclave create imports the enclave runtimes' modules,
           measures and checks the sim image; the wasm module is compiled at start;
  imports  ForkServer(warm=True), no epm: after the first enclave create (round 0) the server starts its
           enclave server (shim/warmup.py), which has the enclave modules imported; no pools;
  warm     ForkServer(warm=True) with an epm on a private root and socket: the enclave server starts at once
           (epm's socket exists) and the pools are filled in round 0 (a
           precompiled module, the image's measurement), so every timed create is a pool hit;
  born warm  ForkServer forked from a process that has imported the enclave modules (what a warm shim template's
           spare does): no enclave server, every create -- plain ones too -- forks from the bigger server; epm as
           for warm.
Variants: plain (`true`), builtin:wasm with a tiny module (under the 16 KiB threshold: no pool, only the warm
imports) and with a ~40 KB one (1000 functions: compilation is what the wasm pool saves), builtin:sim with a
signed image of that module. Timed: ``create``, the fork server's create call (request, worker, runtime, init
waiting for start; for the warm enclave variants also the epm helper), and ``run``, create + start + the
payload (which exits at once) + delete. Reported: medians, and ratios to plain of the same server.

--only NAME (repeatable) times only the named variants and plain (round 0 still runs them all: it warms up).

usage: bench/epm.py [--rounds N] [--only NAME]... [--markdown]     (root; a few rounds check that it works)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(TOP, "src"))
sys.path.insert(0, TOP)

EXIT_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'
PR_SET_CHILD_SUBREAPER = 36


def big_wat(n: int) -> str:
    funcs = "".join(f"(func $f{i} (param i32) (result i32) (i32.add (i32.mul (local.get 0) (i32.const {i})) "
                    f"(i32.const 1)))" for i in range(n))
    return f'(module (memory (export "memory") 1) {funcs} (func (export "_start")))'


def reap() -> None:
    """Containers' inits are re-parented to us (a subreaper): collect the ones that have exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--only", action="append", default=[], help="time only this variant (and plain)")
    ap.add_argument("--markdown", action="store_true")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="bench-epm-")
    os.environ["INCLAVARE_SIM_STATE_DIR"] = os.path.join(work, "sim")
    os.environ.pop("INCLAVARE_EPM_SOCKET", None)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # both fork servers before any thread (the readers are threads); the cold one before epm is in the env
    from inclavare.shim.forkserver import ForkServer

    cold = ForkServer(os.path.join(work, "root-cold"), warm=False)
    cold.start()
    imports = ForkServer(os.path.join(work, "root-imports"), warm=True)
    imports.start()
    sys.path.insert(0, HERE)
    from enclave import start_epm  # bench/enclave.py

    epm, epm_env = start_epm(work)
    epm_env.pop("INCLAVARE_EPM_MIN_BYTES")  # the default threshold: the tiny module skips the pools
    os.environ.update(epm_env)
    warm = ForkServer(os.path.join(work, "root-warm"), warm=True)
    warm.start()
    # last: a server forked from a process that has the enclave modules (a spare of a warm shim template): every
    # create, plain ones too, forks from the bigger process
    from inclavare.shim.warmup import import_enclave_modules

    import_enclave_modules()
    born = ForkServer(os.path.join(work, "root-born"), warm=True)
    born.start()
    servers = {"cold": cold, "imports": imports, "warm": warm, "born warm": born}
    try:
        for fs in servers.values():
            fs.start_reader()
        import wasmtime
        from bench.enclave import variant_bundle
        from tests.unit.sgx_helpers import rsa3072_e3_pem

        from inclavare.enclave import image

        sim = ["ENCLAVE_TYPE=sim"]
        big = big_wat(1000)
        img = image.sign(image.build(wasmtime.wat2wasm(big), "wasm"), rsa3072_e3_pem(0))
        variants = {
            "plain": variant_bundle(work, "plain", ["true"], [], {}),
            "builtin:wasm (tiny module)": variant_bundle(work, "wasm", ["/exit.wat"],
                                                         sim + ["ENCLAVE_RUNTIME_PATH=builtin:wasm"],
                                                         {"exit.wat": EXIT_WAT.encode()}),
            "builtin:wasm (40 KB module)": variant_bundle(work, "wasmbig", ["/app.wasm"],
                                                          sim + ["ENCLAVE_RUNTIME_PATH=builtin:wasm"],
                                                          {"app.wasm": bytes(wasmtime.wat2wasm(big))}),
            "builtin:sim (40 KB wasm image)": variant_bundle(work, "sim", ["app"],
                                                             sim + ["ENCLAVE_RUNTIME_PATH=builtin:sim"],
                                                             {"enclave/enclave.img": img}),
        }
        res: dict[str, dict[str, dict[str, list[float]]]] = {
            m: {k: {"create": [], "run": []} for k in variants} for m in servers}
        time.sleep(2.0)  # the warm server starts its enclave server while idle (shim/warmup.py IDLE_SECONDS)
        for i in range(opts.rounds + 1):  # round 0 fills the pools and warms the page cache
            for name, b in variants.items():
                if i and opts.only and name != "plain" and name not in opts.only:
                    continue
                order = list(servers)
                order = order[i % len(order):] + order[:i % len(order)]
                for mode in order:
                    fs = servers[mode]
                    cid = f"c{i}-{abs(hash(name)) % 1000}-{mode.replace(' ', '_')}"
                    t0 = time.perf_counter()
                    fs.call("create", {"id": cid, "bundle": b})
                    t1 = time.perf_counter()
                    fs.call("delete", {"id": cid, "force": True})
                    reap()
                    t2 = time.perf_counter()
                    pid = int(fs.call("create", {"id": cid + "r", "bundle": b})["pid"])
                    fs.call("start", {"id": cid + "r"})
                    os.waitpid(pid, 0)
                    fs.call("delete", {"id": cid + "r"})
                    t3 = time.perf_counter()
                    reap()
                    if i:
                        res[mode][name]["create"].append(t1 - t0)
                        res[mode][name]["run"].append(t3 - t2)
            if i == 0:
                time.sleep(2.0)  # idle: the "imports" server starts its enclave server now
        if opts.only:
            variants = {k: v for k, v in variants.items() if k == "plain" or k in opts.only}
        med = {m: {k: {w: statistics.median(v) * 1000 for w, v in ws.items()} for k, ws in r.items() if k in variants}
               for m, r in res.items()}
        for what in ("create", "run"):
            if opts.markdown:
                heads = " | ".join(f"{m} | ratio" for m in servers)
                print(f"\n| {what} ({opts.rounds} rounds, median) | {heads} |")
                print("|---|" + "---|---|" * len(servers))
            else:
                print(f"{what}:")
            for k in variants:
                cells = [(med[m][k][what], med[m][k][what] / med[m]["plain"][what]) for m in servers]
                if opts.markdown:
                    print(f"| {k} | " + " | ".join(f"{v:.1f} ms | {r:.2f}x" for v, r in cells) + " |")
                else:
                    print(f"  {k:32s} " + "   ".join(f"{m} {v:7.1f} ms ({r:.2f}x)" for m, (v, r) in
                                                      zip(servers, cells, strict=True)))
    finally:
        for fs in servers.values():
            fs.close()
        if epm is not None:
            epm.terminate()
            epm.wait(20)
        time.sleep(0.2)
        reap()
        subprocess.run(["true"])
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
