#!/usr/bin/env python3
"""Enclave container start latency: the same busybox bundle as a plain container and as enclave
containers (a native C PAL, builtin:wasm, builtin:sim with a signed enclave image), all with rune, in the
same run, interleaved round by round; medians and ratios to the plain container.

Two measures per variant:
  create   `rune create` (for enclaves this includes loading the PAL and pal_init: image checks, etc.)
  run      `rune run` of a payload that exits at once (create, start, payload, wait, delete)

With --epm, an epm (issue 17) runs on a private root and socket and two more variants use it: builtin:wasm and
builtin:sim "(epm warm)", the same bundles with rune pointed at that epm (INCLAVARE_EPM_SOCKET/ROOT); round 0
fills the pools (a precompiled module, the image's measurement), so every timed round is a pool hit (the
size threshold below which rune skips the pools is set to 0 for them: the modules here are tiny). rune here
is a fresh interpreter per command, so a warm create also pays for importing grpc in the epm helper; the shim's
fork server (its enclave server imports it) is where the pools pay off -- bench/epm.py measures that.

With --also PATH (repeatable), other rune builds run in the same rounds, the builds alternating round by round
and variant by variant (paired comparisons, e.g. before and after a change); each is printed with its ratio to
--rune's medians. --only NAME (repeatable) keeps the named variants (and plain).

usage: bench/enclave.py [--rounds N] [--rune PATH] [--also PATH]... [--only NAME]... [--epm] [--markdown]
"""

from __future__ import annotations

import argparse
import json
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

from inclavare.testing.bundle import make_bundle  # noqa: E402

DEVNULL = subprocess.DEVNULL
EXIT_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'


def call(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, check=True, env=env)


def variant_bundle(work: str, name: str, args: list[str], env: list[str], files: dict[str, bytes]) -> str:
    b = make_bundle(os.path.join(work, f"bundle-{name}"), tuple(args))
    with open(os.path.join(b, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"]["env"] += env
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(cfg, f)
    for rel, data in files.items():
        p = os.path.join(b, "rootfs", rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    return b


def start_epm(work: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """An epm on a private root and socket (this checkout's code); the env that points rune at it."""
    top = os.path.join(work, "epm")
    os.makedirs(top, 0o700)
    conf = os.path.join(top, "epm.toml")
    with open(conf, "w") as f:
        f.write(f'root = "{top}/root"\ndb_path = "{top}/db/epm.db"\n[grpc]\naddress = "{top}/run/epm.sock"\n')
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.epm", "--config", conf], stdout=subprocess.PIPE,
                            stderr=DEVNULL, env=dict(os.environ, PYTHONPATH=os.path.join(TOP, "src")))
    assert proc.stdout is not None
    if not proc.stdout.readline():
        raise SystemExit("bench: epm did not start")
    return proc, {"INCLAVARE_EPM_SOCKET": f"{top}/run/epm.sock", "INCLAVARE_EPM_ROOT": f"{top}/root",
                  "INCLAVARE_EPM_MIN_BYTES": "0"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--rune", default=shutil.which("rune") or "/usr/local/bin/rune")
    ap.add_argument("--also", action="append", default=[], help="another rune build, alternated with --rune")
    ap.add_argument("--only", action="append", default=[], help="keep only this variant (and plain)")
    ap.add_argument("--epm", action="store_true", help="add epm-warm variants (an epm on a private root)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="rune-enclave-bench-")
    env = dict(os.environ, INCLAVARE_SIM_STATE_DIR=os.path.join(work, "sim"))
    epm: subprocess.Popen[bytes] | None = None
    try:
        sim = ["ENCLAVE_TYPE=sim"]
        variants: dict[str, str] = {"plain": variant_bundle(work, "plain", ["true"], [], {})}
        if shutil.which("gcc"):
            from tests.fixtures.pal.build import build_pal

            pal = str(build_pal("pal_v2", __import__("pathlib").Path(work)))
            variants["native PAL v2"] = variant_bundle(work, "pal", ["true"], sim + [f"ENCLAVE_RUNTIME_PATH={pal}"],
                                                       {})
        try:
            import wasmtime
        except ImportError:
            wasmtime = None
        if wasmtime is not None:
            variants["builtin:wasm"] = variant_bundle(work, "wasm", ["/exit.wat"],
                                                      sim + ["ENCLAVE_RUNTIME_PATH=builtin:wasm"],
                                                      {"exit.wat": EXIT_WAT.encode()})
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            from inclavare.enclave import image

            key = rsa.generate_private_key(public_exponent=3, key_size=3072).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            img = image.sign(image.build(wasmtime.wat2wasm(EXIT_WAT), "wasm"), key)
            variants["builtin:sim (wasm image)"] = variant_bundle(
                work, "sim", ["exit"], sim + ["ENCLAVE_RUNTIME_PATH=builtin:sim"], {"enclave/enclave.img": img})
        envs = {k: env for k in variants}
        if args.epm:
            epm, epm_env = start_epm(work)
            for k in ("builtin:wasm", "builtin:sim (wasm image)"):
                if k in variants:
                    name = k.split(" ")[0] + " (epm warm)"
                    variants[name], envs[name] = variants[k], dict(env, **epm_env)
        if args.only:
            variants = {k: v for k, v in variants.items() if k == "plain" or k in args.only}
        builds = [args.rune, *args.also]
        res: dict[str, dict[str, dict[str, list[float]]]] = {
            r: {k: {"create": [], "run": []} for k in variants} for r in builds}
        for i in range(args.rounds + 1):  # round 0 warms the page cache and the .pyc files
            for name, b in variants.items():
                for j, build in enumerate(builds if i % 2 == 0 else builds[::-1]):
                    rune = [build, "--root", os.path.join(work, f"root{builds.index(build)}")]
                    cid = f"c{i}-{j}-{abs(hash(name)) % 1000}"
                    t0 = time.perf_counter()
                    e = envs[name]
                    call(rune + ["create", "--bundle", b, cid], e)
                    t1 = time.perf_counter()
                    call(rune + ["delete", "--force", cid], e)
                    t2 = time.perf_counter()
                    call(rune + ["run", "--bundle", b, cid + "r"], e)
                    t3 = time.perf_counter()
                    if i:
                        res[build][name]["create"].append(t1 - t0)
                        res[build][name]["run"].append(t3 - t2)
        meds = {r: {k: {w: statistics.median(v) * 1000 for w, v in ws.items()} for k, ws in rs.items()}
                for r, rs in res.items()}
        med = meds[args.rune]
        base = med["plain"]
        if args.markdown:
            print(f"| variant ({args.rounds} rounds, median) | create | ratio | run | ratio |")
            print("|---|---|---|---|---|")
            for k in variants:
                print(f"| {k} | {med[k]['create']:.1f} ms | {med[k]['create'] / base['create']:.2f}x | "
                      f"{med[k]['run']:.1f} ms | {med[k]['run'] / base['run']:.2f}x |")
        else:
            for k in variants:
                print(f"{k:26s} create {med[k]['create']:7.1f} ms ({med[k]['create'] / base['create']:.2f}x)   "
                      f"run {med[k]['run']:7.1f} ms ({med[k]['run'] / base['run']:.2f}x)")
        for other in args.also:
            print(f"{other} (ratio to {args.rune}, same rounds):")
            for k in variants:
                o = meds[other][k]
                print(f"  {k:24s} create {o['create']:7.1f} ms ({o['create'] / med[k]['create']:.2f}x)   "
                      f"run {o['run']:7.1f} ms ({o['run'] / med[k]['run']:.2f}x)")
    finally:
        if epm is not None:
            epm.terminate()
            epm.wait(20)
        for j, build in enumerate([args.rune, *args.also]):
            subprocess.run([build, "--root", os.path.join(work, f"root{j}"), "list", "-q"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
