#!/usr/bin/env python3
"""Carriers through containerd-shim-rune-v2 (issue 17): `ctr run --rm` of a wasm app image (a WASI module that
prints one line), one private containerd, rows interleaved round by round (order rotating), medians and the
median of per-round ratios (paired).

  carrier cold   RUNE_CARRIER=wasm with an empty bundle cache and empty epm pools (both emptied before each run):
                 build, measure, sign (node-local key), commit L0/L1/L2, then the enclave runs
  carrier warm   RUNE_CARRIER=wasm with the cache filled and epm running (the node config's [epm] socket): an L2
                 hit, the shim's pre-warmed enclave server, epm's pools where the files are big enough to gain
  builtin:sim    the same app's module as an enclave image signed beforehand and bind-mounted, ENCLAVE_TYPE=sim
                 ENCLAVE_RUNTIME_PATH=builtin:sim, no carrier: what the carried container runs, minus the shim's
                 carrier work (so warm - builtin:sim is the carrier's own cost)
  builtin:wasm   the same app without a carrier: ENCLAVE_TYPE=sim ENCLAVE_RUNTIME_PATH=builtin:wasm (a WebAssembly
                 sandbox, no enclave image, nothing signed)
  plain          busybox `echo` as an ordinary container through the same shim (the baseline of the ratios)

Then the cache over 20 pods of 3 images (empty cache first, one `ctr run --rm` per pod, images in turn): the
node-wide hit ratio (every lookup: L2, and L1 on an L2 miss), builds, entries and bytes on disk.

usage: bench/carrier.py [--rounds N] [--pods N] [--markdown]
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
sys.path.insert(0, os.path.join(HERE, ".."))

BUSYBOX = "localhost/busybox:latest"
APP = "localhost/wasm-app-{}:latest"
WAT = r"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello {}\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0 or not p.stdout.startswith(b"hello"):
        raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return dt


def empty_pools(sock: str) -> None:
    """Delete every entry of epm's warm pools (a cold start must not find a precompiled module or a measurement)."""
    import grpc

    from inclavare.enclave.epm.proto import epm_pb2 as pb
    from inclavare.enclave.epm.proto import epm_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"unix:{sock}") as ch:
        stub = pb_grpc.EnclavePoolManagerStub(ch)
        for kind in ("wasm-module", "sim-image"):
            for c in stub.ListCache(pb.ListCacheRequest(type=kind), timeout=10).caches:
                stub.DeleteCache(pb.DeleteCacheRequest(type=kind, ID=c.ID), timeout=10)


def app_image(work: str, i: int) -> str:
    import wasmtime

    from inclavare.testing.image import build_layout_tar

    root = os.path.join(work, f"app{i}")
    os.makedirs(os.path.join(root, "app"))
    word = f"app{i}"
    with open(os.path.join(root, "app", "hello.wasm"), "wb") as f:
        f.write(wasmtime.wat2wasm(WAT.replace("hello {}", f"hello {word}").replace("{}", str(len(word) + 7))))
    return build_layout_tar(os.path.join(work, f"app{i}.tar"), root, APP.format(i), cmd=("/app/hello.wasm",))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    from tests.unit.sgx_helpers import rsa3072_e3_pem

    from inclavare.services.bundlecache import BundleCache
    from inclavare.testing.containerd import PrivateContainerd
    from inclavare.testing.image import build_image_tar
    from inclavare.testing.launcher import write_shim_launcher

    work = tempfile.mkdtemp(prefix="rune-bench-carrier-")
    cache_root = os.path.join(work, "cache")
    key = os.path.join(work, "signing.pem")
    with open(key, "wb") as f:
        f.write(rsa3072_e3_pem(0))
    os.chmod(key, 0o600)
    from enclave import start_epm  # bench/enclave.py

    epm, epm_env = start_epm(work)
    epm_env.pop("INCLAVARE_EPM_MIN_BYTES")  # the default threshold
    conf = os.path.join(work, "config.toml")
    with open(conf, "w") as f:
        f.write(f'[enclave_runtime]\nsignature_method = "local"\n[signature]\nlocal_key = "{key}"\n'
                f'[bundle_cache]\nroot = "{cache_root}"\n[epm]\nsocket = "{epm_env["INCLAVARE_EPM_SOCKET"]}"\n')
    ctrd = PrivateContainerd(os.path.join(work, "c"), namespace="bench-carrier")
    rt = ["--runtime", "io.containerd.rune.v2"]
    try:
        os.makedirs(ctrd.bin_dir, exist_ok=True)
        write_shim_launcher(os.path.join(ctrd.bin_dir, "containerd-shim-rune-v2"),
                            env={"RUNE_SHIM_ROOT": os.path.join(work, "rune-shim-root"),
                                 "INCLAVARE_SIM_STATE_DIR": os.path.join(work, "sim"), "INCLAVARE_SHIM_CONFIG": conf,
                                 "INCLAVARE_EPM_ROOT": epm_env["INCLAVARE_EPM_ROOT"],
                                 **({"RUNE_TRACE_FILE": os.environ["RUNE_TRACE_FILE"]}
                                    if os.environ.get("RUNE_TRACE_FILE") else {})})
        ctrd.start()
        ctrd.import_image(build_image_tar(os.path.join(work, "busybox.tar"), name=BUSYBOX))
        for i in range(3):
            ctrd.import_image(app_image(work, i))
        app = APP.format(0)
        from inclavare.enclave import image

        with open(os.path.join(work, "app0", "app", "hello.wasm"), "rb") as f:
            signed = image.sign(image.build(f.read(), "wasm"), rsa3072_e3_pem(0))
        os.makedirs(os.path.join(work, "enclave"))
        with open(os.path.join(work, "enclave", "enclave.img"), "wb") as f:
            f.write(signed)

        def evict() -> None:
            with BundleCache(cache_root) as c:
                c.evict(0)
            empty_pools(epm_env["INCLAVARE_EPM_SOCKET"])

        def run(name: str, image: str, flags: list[str], cmd: list[str], before: Callable[[], None] | None = None
                ) -> Callable[[str], float]:
            def go(tag: str) -> float:
                if before is not None:
                    before()
                return timed(ctrd.ctr_cmd("run", "--rm", *rt, *flags, image, f"{name}-{tag}", *cmd))
            return go

        carrier = ["--env", "RUNE_CARRIER=wasm"]
        runners = {
            "carrier cold": run("cc", app, carrier, [], before=evict),
            "carrier warm": run("cw", app, carrier, []),
            "builtin:sim": run("bs", app, ["--env", "ENCLAVE_TYPE=sim", "--env", "ENCLAVE_RUNTIME_PATH=builtin:sim",
                                           "--mount", f"type=bind,src={work}/enclave,dst=/enclave,options=rbind:ro"],
                               []),
            "builtin:wasm": run("bw", app, ["--env", "ENCLAVE_TYPE=sim", "--env",
                                            "ENCLAVE_RUNTIME_PATH=builtin:wasm"], []),
            "plain": run("pl", BUSYBOX, [], ["echo", "hello"]),
        }
        names = list(runners)
        for n in names:
            runners[n]("warm")
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for n in order:
                if n == "carrier warm":
                    runners["carrier warm"]("fill")  # the cold row may have emptied the cache just before
                times[n].append(runners[n](f"r{i}"))
        # 20 pods of 3 images, from an empty cache
        evict()
        with BundleCache(cache_root) as c:
            s0 = c.stats()
        for p in range(args.pods):
            timed(ctrd.ctr_cmd("run", "--rm", *rt, *carrier, APP.format(p % 3), f"pod-{p}"))
        with BundleCache(cache_root) as c:
            s1 = c.stats()
    finally:
        ctrd.purge()
        epm.terminate()
        epm.wait(20)
        shutil.rmtree(work, ignore_errors=True)
    base = times["plain"]
    rows = []
    for n in names:
        med = statistics.median(times[n]) * 1000
        paired = statistics.median(a / b for a, b in zip(times[n], base, strict=True))
        rows.append((n, med, med / (statistics.median(base) * 1000), paired))
    hits, misses = s1.hits - s0.hits, s1.misses - s0.misses
    ratio = hits / (hits + misses) if hits + misses else 0.0
    cache_line = (f"{args.pods} pods of 3 images: hit ratio {ratio:.2f} ({hits} hits, {misses} misses), "
                  f"{s1.builds - s0.builds} builds, {s1.entries} entries, {s1.bytes} bytes on disk")
    if args.markdown:
        print(f"| `ctr run --rm` of a wasm app ({args.rounds} rounds, interleaved) | median | vs plain | "
              "paired ratio (median) |")
        print("|---|---|---|---|")
        for n, med, r, paired in rows:
            print(f"| {n} | {med:.1f} ms | {r:.2f}x | {paired:.2f}x |")
        print(f"\n{cache_line}")
    else:
        for n, med, r, paired in rows:
            print(f"{n}: {med:.1f} ms, {r:.2f}x of plain (paired {paired:.2f}x)")
        print(cache_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
