#!/usr/bin/env python3
"""The rats-tls-server program under concurrent and stalled clients (issue 19, item 3), on loopback.

Starts the real program (``python -m inclavare.cli.rats_tls_server``, sim attester, one-way attestation) and
measures, each round:
  burst     N clients at once (threads in this process), each: connect, RATS-TLS handshake verifying the
            server's sim evidence, send a line, read the echo; wall time from the first connect to the last echo
  stalled   one client sends 5 bytes of a ClientHello and then nothing; seconds until another client's full
            exchange completes meanwhile (a one-at-a-time server makes this the stalled client's timeout)

usage: bench/ratls_server.py [--clients N] [--rounds R] [--give-up S] [--server-src DIR]
(--server-src: the src/ folder of another checkout, to run its server against the same clients: before/after)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

from inclavare.ratls.tls import RatsTls, RatsTlsConfig  # noqa: E402


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """The program, logging at warn (100 clients' info lines are not what is measured)."""
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.rats_tls_server", "-a", "sim", "-p", "0",
                             "-l", "warn"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    # the port is logged at info; -l warn hides it, so ask the kernel which port the child listens on
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        port = _listening_port(proc.pid)
        if port:
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.communicate()}")


def _listening_port(pid: int) -> int:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                return int(parts[1].split(":")[1], 16)
    return 0


def exchange(port: int, cfg: RatsTlsConfig, timeout: float) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        h = RatsTls(cfg, server_side=False)
        h.negotiate(sock)
        h.transmit(b"hello\n")
        ok = h.receive(256) == b"hello\n"
        h.close()
        return ok


def burst(port: int, cfg: RatsTlsConfig, n: int, timeout: float) -> tuple[float, int]:
    results: list[bool] = []
    lock = threading.Lock()
    go = threading.Event()

    def one() -> None:
        go.wait()
        try:
            ok = exchange(port, cfg, timeout)
        except Exception:
            ok = False
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, sum(results)


def stalled(port: int, cfg: RatsTlsConfig, timeout: float) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as slow:
        slow.sendall(b"\x16\x03\x01\x02\x00")
        time.sleep(0.2)  # let the server take it first
        t0 = time.perf_counter()
        try:
            exchange(port, cfg, timeout)
        except Exception as e:
            print(f"  (the other client failed: {e})")
            return float("inf")
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--give-up", type=float, default=90.0, help="a client's socket timeout (seconds)")
    ap.add_argument("--server-src", default=str(SRC), help="the src/ folder the server program runs from")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ratls-server-bench-")
    env = dict(os.environ, INCLAVARE_SIM_STATE_DIR=os.path.join(tmp, "sim"),
               PYTHONPATH=args.server_src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.environ["INCLAVARE_SIM_STATE_DIR"] = env["INCLAVARE_SIM_STATE_DIR"]
    cfg = RatsTlsConfig(attester="nullattester", verifier="sim", trust_sim=True)
    cfg.prepare(presents=False)
    proc, port = start_server(env)
    print(f"server from {args.server_src}, {os.cpu_count()} CPUs")
    try:
        exchange(port, cfg, args.give_up)  # warm
        for r in range(args.rounds):
            wall, ok = burst(port, cfg, args.clients, args.give_up)
            print(f"round {r + 1}: burst of {args.clients}: {ok} ok in {wall:.2f} s")
        print(f"stalled client: another client's exchange took {stalled(port, cfg, args.give_up):.2f} s")
    finally:
        proc.kill()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
