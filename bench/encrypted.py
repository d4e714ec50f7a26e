#!/usr/bin/env python3
"""Encrypted vs plain enclave image: time from `rune run` to the app's first output byte (issue 16: "time from
`run` to the app's first output for an encrypted vs the same plain enclave image", goal <= 1.5x).

One sim enclave image (busybox as its native payload, signed, not debug) and one rootfs (busybox, the enclave at
/enclave/enclave.img), in two bundles that differ only in the secret layer:
  plain      /app/secret.txt as a plain file; the container names no key broker
  encrypted  the same layer encrypted for the owner's key (RSA-2048 or EC P-256; ocicrypt jwe, as `skopeo
             copy --encryption-key` writes it) and sealed (`inclavare-image seal`): the rootfs holds
             .inclavare/sealed/000/; the container names the owner's verdictd (ENCLAVE_KBS_URL, ENCLAVE_KBS_KEY),
             where the key is a KBS resource and the enclave's MRENCLAVE a reference value
The app (`sh -c`, the enclave's busybox) reads the secret and prints one line. A real verdictd runs on loopback
(plain HTTP, --trust-sim, the sim platform's collateral), with a private sim platform and a private rune root.

Rounds are paired and interleaved (the order alternates round by round; round 0 is a discarded warm-up). Each
run: Popen(rune run) -> the first byte on the container's stdout (the measure) -> exit; the output is checked.
Reported: medians (min-max) per variant and the ratio of medians, plus the median of the per-round ratios.

Then where the encrypted path spends its time: each variant's enclave runtime (builtin:sim) is driven in fresh
processes the way rune drives it (load() on the host, chroot into the rootfs as pivot_root would, pal_init),
with the steps timed: imports, host-side preparation (quoting enclave, the TCP connection to the KBS, the
private tmpfs), measuring the image, the attestation round trip (auth, quote, attest, resource), the key
(loading the owner's private key, unwrapping the layer key) and the unseal (decrypt + HMAC + digest, unpack).

usage: bench/encrypted.py [--rounds N] [--profile-runs N] [--filler-kib N] [--owner-key rsa|ec] [--rune PATH]
                          [--markdown]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOP = HERE.parent
sys.path.insert(0, str(TOP / "src"))
sys.path.insert(0, str(TOP))

SECRET = "the owner's secret: 42"
KEY_PATH = "owner/key/image"
APP = 'read -r s < "${ENCLAVE_DECRYPTED_DIR:-}/app/secret.txt"; echo "app: $s"'
ADMIN = "bench-admin-token-0123456789"


# -- the profile: one variant's enclave runtime in this (fresh) process

def profile_child(bundle: str) -> None:
    """Drive builtin:sim for ``bundle`` as rune does and print the steps' times (ms) as JSON."""
    t: dict[str, float] = {}

    def add(name: str, dt: float) -> None:
        t[name] = t.get(name, 0.0) + dt * 1000

    def timed(owner: Any, attr: str, name: Any) -> None:
        fn = getattr(owner, attr)

        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                add(name(*a) if callable(name) else name, time.perf_counter() - t0)
        setattr(owner, attr, wrapper)

    spec = json.loads((Path(bundle) / "config.json").read_text())
    import inclavare.runtime.launch  # noqa: F401 (rune's own, loaded before the enclave runtime is)

    t0 = time.perf_counter()
    from inclavare.enclave import image
    from inclavare.enclave.runtimes.sim import SimRuntime
    add("imports: the sim runtime", time.perf_counter() - t0)
    encrypted = any(e.startswith("ENCLAVE_KBS_URL=") for e in spec["process"]["env"])
    if encrypted:
        t0 = time.perf_counter()
        from inclavare.enclave import kbs_client, privatefs, unseal
        from inclavare.formats import ocicrypt_cipher, ocicrypt_jwe
        add("imports: unseal, KBS client", time.perf_counter() - t0)
        timed(unseal, "preload", "host: preload (imports, warm crypto)")
        timed(SimRuntime, "open_quoting", "host: open the quoting enclave")
        timed(kbs_client.PreConnected, "open", "host: TCP connect to the KBS")
        timed(privatefs.PrivateFs, "create", "host: private tmpfs")
        timed(SimRuntime, "quote", "attest: make the quote")
        timed(kbs_client.KbsClient, "_request", lambda self, method, path, body, step: f"attest: KBS {step.split()[0]}")
        timed(kbs_client.KbsClient, "__init__", "attest: session key (EC P-256)")
        timed(ocicrypt_jwe, "load_private_key", "key: load the owner's private key")
        timed(ocicrypt_jwe, "unwrap", "key: unwrap the layer key (JWE)")
        timed(ocicrypt_cipher, "decrypt_file", "unseal: decrypt, HMAC, digest")
        timed(unseal, "extract_tar", "unseal: unpack into the private tree")
    timed(image, "load", "pal_init: load and measure the image")
    rt = SimRuntime()
    t0 = time.perf_counter()
    rt.load(spec)
    add("load() total (host side)", time.perf_counter() - t0)
    os.chroot(str(Path(bundle) / "rootfs"))  # as pivot_root: the runtime's files are out of reach from here
    os.chdir("/")
    t0 = time.perf_counter()
    rt.init("", "error")
    add("pal_init total", time.perf_counter() - t0)
    rt.destroy()
    print(json.dumps(t))


# -- setup

def start_verdictd(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str]:
    from inclavare.sim.platform import SimPlatform

    (work / "collateral.json").write_text(json.dumps(SimPlatform.open().collateral_bundle()))
    (work / "kek").write_text(os.urandom(32).hex())
    (work / "admin.token").write_text(ADMIN + "\n")
    for f in ("kek", "admin.token"):
        (work / f).chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inclavare.cli.verdictd", "--state-dir", str(work / "vd-state"), "--kek-file",
         str(work / "kek"), "--kbs-listen", "127.0.0.1:0", "--insecure-http", "--admin-listen", "127.0.0.1:0",
         "--admin-token-file", str(work / "admin.token"), "--trust-sim", "--collateral", str(work / "collateral.json"),
         "--log-level", "warn"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        proc.wait()
        raise SystemExit("bench: verdictd did not start")
    addrs = json.loads(line)
    return proc, addrs["kbs"], addrs["admin"]


def admin(url: str, method: str, path: str, body: bytes) -> None:
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {ADMIN}"})
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise SystemExit(f"bench: verdictd {path}: {resp.status} {answer[:200]!r}")


def sealed_layer(work: Path, files: dict[str, bytes], owner_pub: bytes) -> bytes:
    """The secret layer encrypted for the owner (ocicrypt jwe) and sealed: the tar an engine unpacks."""
    from tests.unit.services.imagecrypt.helpers import LAYER_GZIP, blob, make_layout, manifests

    from inclavare.formats import ocicrypt_jwe as jwe
    from inclavare.services.imagecrypt.layout import EncryptConfig, encrypt_layout
    from inclavare.services.imagecrypt.seal import seal_layout

    make_layout(work / "oci-plain", [(LAYER_GZIP, files)])
    encrypt_layout(str(work / "oci-plain"), str(work / "oci-enc"),
                   EncryptConfig(jwe_recipients=[jwe.load_public_key(owner_pub)]))
    seal_layout(str(work / "oci-enc"), str(work / "oci-sealed"))
    (layer,) = manifests(work / "oci-sealed")[0]["layers"]
    return blob(work / "oci-sealed", layer["digest"])


def bundle(work: Path, name: str, enclave: bytes, env: list[str], files: dict[str, bytes] | None,
           layer: bytes | None) -> str:
    from inclavare.testing.bundle import make_bundle

    b = make_bundle(str(work / f"bundle-{name}"), ("sh", "-c", APP))
    cfg = json.loads((Path(b) / "config.json").read_text())
    cfg["process"]["env"] += ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim", *env]
    (Path(b) / "config.json").write_text(json.dumps(cfg))
    rootfs = Path(b) / "rootfs"
    (rootfs / "enclave").mkdir()
    (rootfs / "enclave" / "enclave.img").write_bytes(enclave)
    for rel, data in (files or {}).items():
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_bytes(data)
    if layer is not None:
        with tarfile.open(fileobj=io.BytesIO(layer)) as t:  # what containerd/podman unpack does
            t.extractall(rootfs)  # our own tar (no extraction filter in Debian 12's Python 3.11.2)
    return b


# -- the measure

def first_byte(rune: list[str], b: str, cid: str, env: dict[str, str]) -> float:
    """Seconds from starting `rune run` to the container's first output byte; checks the whole output."""
    t0 = time.perf_counter()
    p = subprocess.Popen([*rune, "run", "--bundle", b, cid], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    assert p.stdout is not None
    first = os.read(p.stdout.fileno(), 1)  # unbuffered: communicate() below reads the fd, not a buffer
    t1 = time.perf_counter()
    out, err = p.communicate(timeout=60)
    if p.returncode != 0 or first + out != f"app: {SECRET}\n".encode():
        raise SystemExit(f"bench: {cid}: exit {p.returncode}, output {(first + out)[:100]!r}, "
                         f"{err.decode(errors='replace').strip()[-300:]}")
    return t1 - t0


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--profile-runs", type=int, default=5, help="fresh processes per variant for the breakdown")
    ap.add_argument("--filler-kib", type=int, default=0, help="add a file of N KiB (random) to the secret layer")
    ap.add_argument("--owner-key", choices=("rsa", "ec"), default="rsa",
                    help="the owner's key pair: RSA-2048 (default, as in the demo) or EC P-256")
    ap.add_argument("--rune", help="a rune program (default: a launcher for this checkout)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--profile-child", metavar="BUNDLE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.profile_child:
        profile_child(a.profile_child)
        return 0
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from inclavare.enclave import image
    from inclavare.testing.launcher import write_rune_launcher

    work = Path(tempfile.mkdtemp(prefix="bench-encrypted-"))
    env = dict(os.environ, INCLAVARE_SIM_STATE_DIR=str(work / "sim"))
    os.environ["INCLAVARE_SIM_STATE_DIR"] = env["INCLAVARE_SIM_STATE_DIR"]
    rune = [a.rune or write_rune_launcher(str(work / "rune")), "--root", str(work / "root")]
    vd = None
    try:
        vd, kbs_url, admin_url = start_verdictd(work, env)
        signer = rsa.generate_private_key(public_exponent=3, key_size=3072)
        enclave = image.sign(image.build(Path("/bin/busybox").read_bytes(), "native"), signer)
        mrenclave = image.load(enclave).mrenclave.hex()
        owner: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if a.owner_key == "rsa"
                      else ec.generate_private_key(ec.SECP256R1()))
        admin(admin_url, "POST", f"/kbs/v0/resource/{KEY_PATH}", owner.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        admin(admin_url, "POST", "/kbs/v0/reference-value", json.dumps(
            {"name": "mrenclave", "values": [mrenclave], "provenance": "bench"}).encode())
        files = {"app/secret.txt": f"{SECRET}\n".encode()}
        if a.filler_kib:
            files["app/filler.bin"] = os.urandom(a.filler_kib * 1024)
        pub = owner.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        layer = sealed_layer(work, files, pub)
        variants = {
            "plain": bundle(work, "plain", enclave, [], files, None),
            "encrypted": bundle(work, "encrypted", enclave, [f"ENCLAVE_KBS_URL={kbs_url}",
                                                              f"ENCLAVE_KBS_KEY={KEY_PATH}"], None, layer),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        ratios = []
        for i in range(a.rounds + 1):
            order = list(variants) if i % 2 == 0 else list(variants)[::-1]
            got = {k: first_byte(rune, variants[k], f"r{i}-{k}", env) for k in order}
            if i:
                for k, v in got.items():
                    times[k].append(v)
                ratios.append(got["encrypted"] / got["plain"])
        prof: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
        for i in range(a.profile_runs):
            for k in (variants if i % 2 == 0 else list(variants)[::-1]):
                p = subprocess.run([sys.executable, __file__, "--profile-child", variants[k]], capture_output=True,
                                   text=True, env=env, timeout=120)
                if p.returncode != 0:
                    raise SystemExit(f"bench: profile of {k}: {p.stderr.strip()[-500:]}")
                prof[k].append(json.loads(p.stdout))
    finally:
        if vd is not None:
            vd.send_signal(signal.SIGTERM)
            try:
                vd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                vd.kill()
                vd.wait()
        for cid in subprocess.run([*rune, "list", "-q"], capture_output=True, text=True).stdout.split():
            subprocess.run([*rune, "delete", "--force", cid], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    steps = list(dict.fromkeys(s for k in prof for run in prof[k] for s in run))

    def step_ms(k: str, s: str) -> str:
        vals = [run.get(s, 0.0) for run in prof[k]]
        return f"{statistics.median(vals):.1f}" if any(vals) else "-"

    load = os.getloadavg()[0]
    if a.markdown:
        print(f"| variant ({a.rounds} rounds, paired) | run -> first output byte, median (min-max) |")
        print("|---|---|")
        for k in variants:
            print(f"| {k} | {ms(times[k])} |")
        print(f"\nratio of medians {med['encrypted'] / med['plain']:.2f}x; median of per-round ratios "
              f"{statistics.median(ratios):.2f}x (goal <= 1.5x); load average at the end {load:.2f}\n")
        print(f"| step (ms, median of {a.profile_runs} fresh processes) | plain | encrypted |")
        print("|---|---|---|")
        for s in steps:
            print(f"| {s} | {step_ms('plain', s)} | {step_ms('encrypted', s)} |")
    else:
        for k in variants:
            print(f"{k:10s} run -> first byte {ms(times[k])}")
        print(f"ratio of medians {med['encrypted'] / med['plain']:.2f}x, median of per-round ratios "
              f"{statistics.median(ratios):.2f}x (goal <= 1.5x); load average {load:.2f}")
        print(f"\nsteps (ms, median of {a.profile_runs} fresh processes)   plain  encrypted")
        for s in steps:
            print(f"  {s:46s} {step_ms('plain', s):>7s} {step_ms('encrypted', s):>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
