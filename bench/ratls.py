#!/usr/bin/env python3
"""RATS-TLS cost against plain TLS 1.3, same run, loopback, one core each side.

Handshakes per second (connect + handshake + close, sequential) for:
  plain TLS 1.3   Python's ssl module (OpenSSL), a self-signed ECDSA P-256 server certificate, client CERT_NONE:
                  the baseline a Python service pays today
  null-attested   RATS-TLS with nullattester / nullverifier (our pyOpenSSL wrapper, no evidence)
  sim-attested    RATS-TLS with the sim attester on the server and the sim verifier on the client: the server's
                  certificate carries a sim DCAP quote and its collateral; the client verifies it fully (quote
                  signatures, PCK chain to the trusted sim root, collateral, TCB status, key binding) on every
                  handshake (no session resumption)
and bulk throughput after the handshake (client -> server, 64 KiB writes) for plain TLS and RATS-TLS, the latter
both on the ssl module's record layer (ratls/ssl_hook.py: the verify callback installed through ctypes) and on the
pyOpenSSL fallback used where that hook is off: the measured cost of not having it.

Goals (issue 7): attested handshake cost <= 2x plain; throughput >= 0.95x plain.

usage: bench/ratls.py [--seconds S] [--rounds N] [--megabytes M] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from inclavare.ratls import ssl_hook  # noqa: E402
from inclavare.ratls.tls import RatsTls, RatsTlsConfig  # noqa: E402

CHUNK = 64 * 1024


def self_signed(tmp: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cp, kp = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    Path(cp).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(kp).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cp, kp


class Server:
    """Accepts connections in a thread; ``mode`` is "plain" or a RatsTlsConfig."""

    def __init__(self, mode: object, certs: tuple[str, str], sink: bool) -> None:
        self.mode, self.sink = mode, sink
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        if mode == "plain":
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            self.ctx.load_cert_chain(*certs)
            self.ctx.num_tickets = 0
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self) -> None:
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            try:
                self.handle(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def handle(self, conn: socket.socket) -> None:
        if self.mode == "plain":
            s = self.ctx.wrap_socket(conn, server_side=True)
            recv, recv_into = s.recv, s.recv_into
        else:
            t = RatsTls(self.mode, server_side=True)  # type: ignore[arg-type]
            t.negotiate(conn)
            recv, recv_into = t.receive, t.receive_into
        if self.sink:
            buf = bytearray(CHUNK)  # both sides read into one buffer, as a server moving bulk data would
            while recv_into(buf, CHUNK):
                pass
        else:
            recv(1)  # the client closes


def client_plain(port: int) -> tuple[object, object]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    return s, s.sendall


def client_ratls(port: int, cfg: RatsTlsConfig) -> tuple[object, object]:
    sock = socket.create_connection(("127.0.0.1", port))
    t = RatsTls(cfg, server_side=False)
    t.negotiate(sock)

    def sendall(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[t.transmit(view):]

    return (t, sock), sendall


def close(obj: object) -> None:
    if isinstance(obj, tuple):
        obj[0].close()
        obj[1].close()
    else:
        obj.close()  # type: ignore[attr-defined]


def handshake_rate(connect, seconds: float) -> float:  # type: ignore[no-untyped-def]
    close(connect()[0])  # warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        close(connect()[0])
        n += 1
    return n / (time.perf_counter() - t0)


def throughput(connect, megabytes: int) -> float:  # type: ignore[no-untyped-def]
    conn, sendall = connect()
    data = os.urandom(CHUNK)
    total = megabytes * 1024 * 1024
    t0 = time.perf_counter()
    for _ in range(total // CHUNK):
        sendall(data)
    el = time.perf_counter() - t0
    close(conn)
    return megabytes / el


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--megabytes", type=int, default=256)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ratls-bench-")
    os.environ["INCLAVARE_SIM_STATE_DIR"] = os.path.join(tmp, "sim")
    certs = self_signed(tmp)
    null_srv = RatsTlsConfig(attester="nullattester", verifier="nullverifier")
    null_cli = RatsTlsConfig(attester="nullattester", verifier="nullverifier")
    sim_srv = RatsTlsConfig(attester="sim", verifier="nullverifier", provide_endorsements=True)
    sim_cli = RatsTlsConfig(attester="nullattester", verifier="sim", trust_sim=True, require_collateral=True)
    for c in (null_srv, null_cli, sim_srv, sim_cli):
        c.prepare()  # certificates are made once per instance, as upstream does
    servers = {"plain TLS 1.3 (ssl module)": Server("plain", certs, False),
               "null-attested RATS-TLS": Server(null_srv, certs, False),
               "sim-attested RATS-TLS (full verification)": Server(sim_srv, certs, False)}
    clients = {"plain TLS 1.3 (ssl module)": lambda p: client_plain(p),
               "null-attested RATS-TLS": lambda p: client_ratls(p, null_cli),
               "sim-attested RATS-TLS (full verification)": lambda p: client_ratls(p, sim_cli)}
    rates: dict[str, list[float]] = {k: [] for k in servers}
    for _ in range(args.rounds):
        for k, srv in servers.items():
            rates[k].append(handshake_rate(lambda k=k, srv=srv: clients[k](srv.port), args.seconds))
    fallback = "RATS-TLS (sim-attested), pyOpenSSL fallback"
    sinks = {"plain TLS 1.3 (ssl module)": Server("plain", certs, True),
             "RATS-TLS (sim-attested)": Server(sim_srv, certs, True),
             fallback: Server(sim_srv, certs, True)}
    sink_clients = {"plain TLS 1.3 (ssl module)": lambda p: client_plain(p),
                    "RATS-TLS (sim-attested)": lambda p: client_ratls(p, sim_cli),
                    fallback: lambda p: client_ratls(p, sim_cli)}
    if not ssl_hook.available():
        del sinks[fallback], sink_clients[fallback]  # every RATS-TLS row is the fallback already
    hook = ssl_hook.AVAILABLE
    tput: dict[str, list[float]] = {k: [] for k in sinks}
    for _ in range(args.rounds):
        for k, srv in sinks.items():
            ssl_hook.AVAILABLE = hook and k != fallback  # both ends of this run take the fallback
            try:
                tput[k].append(throughput(lambda k=k, srv=srv: sink_clients[k](srv.port), args.megabytes))
            finally:
                ssl_hook.AVAILABLE = hook
    best = {k: max(v) for k, v in rates.items()}
    base = best["plain TLS 1.3 (ssl module)"]
    tbest = {k: max(v) for k, v in tput.items()}
    tbase = tbest["plain TLS 1.3 (ssl module)"]
    if args.markdown:
        print(f"| handshakes (best of {args.rounds} x {args.seconds:g} s) | per second | cost vs plain |")
        print("|---|---:|---:|")
        for k, r in best.items():
            print(f"| {k} | {r:.0f} | {base / r:.2f}x |")
        print()
        print(f"| bulk, client -> server ({args.megabytes} MiB, best of {args.rounds}) | MiB/s | vs plain |")
        print("|---|---:|---:|")
        for k, r in tbest.items():
            print(f"| {k} | {r:.0f} | {r / tbase:.2f}x |")
    else:
        for k, r in best.items():
            print(f"{k:45s} {r:7.0f} handshakes/s  cost {base / r:.2f}x plain")
        for k, r in tbest.items():
            print(f"{k:45s} {r:7.0f} MiB/s  {r / tbase:.2f}x plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
