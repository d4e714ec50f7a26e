#!/usr/bin/env python3
"""verdictd under load: N concurrent KBS clients (auth -> attest -> resource) against a local daemon with
simulated-platform evidence, and the verifier alone on the same quotes, in the same run.

The daemon is the real `verdictd` process (python -m inclavare.cli.verdictd) with a fresh state directory, the
default sim policy, one reference value and one resource; plain HTTP unless --https (a self-signed certificate
made here). Each client thread: POST /auth, make a sim quote over the KBS runtime-data hash (not timed: that is
the TEE's work), POST /attest, GET /resource; the resource is opened with the TEE key afterwards (a client whose
answer does not open counts as failed). The clients start together, behind a barrier.

Reported: verdictd's own CPU time per flow (from /proc, all its threads) and flows per verdictd CPU-second
against the verifier alone per CPU-second (the issue's ratio), the flow latency (the three requests, quote
making excluded) p50 / p99, attestations per second over the whole batch (wall clock), failures. The verifier
alone: verify_raw (sim quote, collateral given, report data checked) on the quotes the clients made, one
thread, per CPU-second of this process.

usage: bench/verdictd.py [--clients N] [--https] [--new-connection] [--markdown]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import select
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "src"))
sys.path.insert(0, str(TOP))

from tests.unit.services.verdictd.kbs_doubles import APP, SimTee, open_response  # noqa: E402

from inclavare.attestation.api import Options  # noqa: E402
from inclavare.attestation.collateral import from_bundle  # noqa: E402
from inclavare.attestation.evidence import verify_raw  # noqa: E402
from inclavare.formats.kbs import expected_report_data  # noqa: E402
from inclavare.sim.platform import SimPlatform  # noqa: E402

ADMIN = "bench-admin-token-0123456789"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK
SECRET = b"bench resource"


def self_signed(d: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verdictd-bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(key, hashes.SHA256()))
    (d / "kbs.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "kbs.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    os.chmod(d / "kbs.key", 0o600)
    return str(d / "kbs.crt"), str(d / "kbs.key")


class Http:
    """One client's HTTP connection. ``keep_alive`` reuses it across requests, as Trustee's KBS client (reqwest)
    does; otherwise every request opens a new one (the worst case for the server)."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None, keep_alive: bool = True) -> None:
        self.port, self.ctx, self.keep_alive = port, ctx, keep_alive
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.ctx:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=120)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def __call__(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, Any, str | None]:
        conn = self.conn or self._connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            conn.close()
            self.conn = None
            raise
        if self.keep_alive and not resp.will_close:
            self.conn = conn
        else:
            conn.close()
            self.conn = None
        cookie = resp.getheader("Set-Cookie")
        return resp.status, json.loads(data) if data else None, cookie.split(";", 1)[0] if cookie else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def start_daemon(d: Path, sim_dir: str, https: bool) -> tuple[subprocess.Popen[bytes], dict[str, Any], Any]:
    platform = SimPlatform.open(sim_dir)
    (d / "root.pem").write_bytes(platform.root_ca_pem())
    (d / "collateral.json").write_text(json.dumps(platform.collateral_bundle()))
    (d / "admin.token").write_text(ADMIN)
    os.chmod(d / "admin.token", 0o600)
    tls: list[str] = ["--insecure-http"]
    ctx = None
    if https:
        cert, key = self_signed(d)
        tls = ["--kbs-cert", cert, "--kbs-key", key]
        ctx = ssl.create_default_context(cafile=cert)
    env = {**os.environ, "VERDICTD_KEK": hashlib.sha256(b"bench").hexdigest(), "INCLAVARE_SIM_STATE_DIR": sim_dir,
           "PYTHONPATH": str(TOP / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.verdictd", "--state-dir", str(d / "state"),
                             "--log-level", "error", "--kbs-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                             *tls, "--admin-token-file", str(d / "admin.token"), "--trust-sim", "--sim-root",
                             str(d / "root.pem"), "--collateral", str(d / "collateral.json")],
                            stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], 60)[0]:
        proc.kill()
        raise SystemExit("verdictd did not start within 60 s")
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"verdictd exited with {proc.wait()}")
    return proc, json.loads(line), ctx


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def run(n: int, https: bool, keep_alive: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="verdictd-bench-") as tmp:
        d = Path(tmp)
        sim_dir = str(d / "sim")
        tee = SimTee(sim_dir)
        proc, addresses, ctx = start_daemon(d, sim_dir, https)
        try:
            admin = Http(port_of(addresses["admin"]), ctx, keep_alive=False)
            auth_h = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
            ref = json.dumps({"name": "mrenclave", "values": [APP.mrenclave.hex()], "provenance": "bench"}).encode()
            assert admin("POST", "/kbs/v0/reference-value", ref, auth_h)[0] == 200
            assert admin("POST", "/kbs/v0/resource/bench/key/one", SECRET, auth_h)[0] == 200
            quote_lock = threading.Lock()
            barrier = threading.Barrier(n)
            latencies: list[float] = []
            quote_time: list[float] = []
            failures: list[str] = []
            quotes: list[tuple[bytes, bytes]] = []
            lock = threading.Lock()

            def client() -> None:
                kbs = Http(port_of(addresses["kbs"]), ctx, keep_alive)
                try:
                    barrier.wait()
                    t0 = time.perf_counter()
                    status, answer, cookie = kbs("POST", "/kbs/v0/auth", json.dumps(
                        {"version": "0.4.0", "tee": "sample", "extra-params": ""}).encode(),
                        {"Content-Type": "application/json"})
                    if status != 200 or cookie is None:
                        raise RuntimeError(f"auth {status} {answer}")
                    t1 = time.perf_counter()
                    with quote_lock:  # the TEE's part: not timed
                        body = tee.attestation(answer["nonce"])
                        rd = expected_report_data(answer["nonce"], tee.pubkey, "")
                    t2 = time.perf_counter()
                    status, answer, cookie2 = kbs("POST", "/kbs/v0/attest", json.dumps(body).encode(),
                                                  {"Content-Type": "application/json", "Cookie": cookie})
                    if status != 200:
                        raise RuntimeError(f"attest {status} {answer}")
                    status, response, _ = kbs("GET", "/kbs/v0/resource/bench/key/one", None,
                                              {"Cookie": cookie2 or cookie})
                    t3 = time.perf_counter()
                    if status != 200 or open_response(tee.key, response) != SECRET:
                        raise RuntimeError(f"resource {status}")
                    with lock:
                        latencies.append((t1 - t0) + (t3 - t2))
                        quote_time.append(t2 - t1)
                        quotes.append((base64.b64decode(body["tee-evidence"]["primary_evidence"]["quote"]), rd))
                except Exception as e:  # noqa: BLE001 (counted and reported)
                    with lock:
                        failures.append(f"{type(e).__name__}: {e}"[:200])
                finally:
                    kbs.close()

            threads = [threading.Thread(target=client) for _ in range(n)]
            server_cpu0 = cpu_seconds(proc.pid)
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            server_cpu = cpu_seconds(proc.pid) - server_cpu0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        # the verifier alone, on the same quotes, in this process
        root = SimPlatform.open(sim_dir).root_ca_fingerprint()
        collateral = from_bundle((d / "collateral.json").read_bytes()) if (d / "collateral.json").exists() else None
        cpu0, w0 = time.process_time(), time.perf_counter()
        ok = 0
        for quote, rd in quotes:
            r = verify_raw(quote, "sim", Options(report_data=rd, trust_sim=True, sim_root_fingerprints=(root,),
                                                 collateral=collateral))
            ok += bool(r.verified and r.collateral_valid)
        cpu, vwall = time.process_time() - cpu0, time.perf_counter() - w0
    lat = sorted(latencies)
    return {"clients": n, "https": https, "keep_alive": keep_alive, "ok": len(lat), "failed": len(failures),
            "first_failure": failures[0] if failures else None, "wall_s": wall, "attestations_per_s": len(lat) / wall,
            "server_cpu_s": server_cpu, "per_server_cpu_s": len(lat) / server_cpu if server_cpu > 0 else None,
            "p50_ms": 1000 * statistics.median(lat) if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            "quote_ms": 1000 * statistics.median(quote_time) if quote_time else None,
            "verifier_quotes": len(quotes), "verifier_ok": ok,
            "verifier_per_cpu_s": len(quotes) / cpu if cpu > 0 else None,
            "verifier_per_wall_s": len(quotes) / vwall if vwall > 0 else None,
            "cpus": os.cpu_count(), "load": os.getloadavg()[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--https", action="store_true")
    p.add_argument("--new-connection", action="store_true",
                   help="a new connection per request (default: each client keeps one, as Trustee's client does)")
    p.add_argument("--markdown", action="store_true", help="(the table is always printed; kept for symmetry)")
    a = p.parse_args()
    r = run(a.clients, a.https, keep_alive=not a.new_connection)
    print(f"verdictd KBS load: {r['clients']} concurrent clients, {'HTTPS' if r['https'] else 'HTTP'}, "
          f"{'one connection per client' if r['keep_alive'] else 'a connection per request'}, "
          f"{r['cpus']} CPUs, load {r['load']:.1f} at the end")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| flows ok / failed | {r['ok']} / {r['failed']} |")
    print(f"| flow latency p50 (auth+attest+resource, quote making excluded) | {r['p50_ms']:.1f} ms |")
    print(f"| flow latency p99 | {r['p99_ms']:.1f} ms |")
    print(f"| attestations/s (whole batch, wall clock) | {r['attestations_per_s']:.1f} |")
    print(f"| verdictd CPU per flow (its process, all threads) | {1000 * r['server_cpu_s'] / max(1, r['ok']):.2f} ms |")
    print(f"| flows per verdictd CPU-second | {r['per_server_cpu_s']:.1f} /s |")
    print(f"| client-side sim quote making, median (serialised, not in the latency) | {r['quote_ms']:.1f} ms |")
    print(f"| verifier alone (verify_raw, sim quote + collateral), per CPU-second | "
          f"{r['verifier_per_cpu_s']:.1f} /s ({r['verifier_ok']}/{r['verifier_quotes']} verified) |")
    ratio = r["per_server_cpu_s"] / r["verifier_per_cpu_s"] if r["verifier_per_cpu_s"] else float("nan")
    print(f"| flows per verdictd CPU-second / verifier alone per CPU-second | {ratio:.3f} |")
    if r["first_failure"]:
        print(f"\nfirst failure: {r['first_failure']}")
    return 0 if r["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
