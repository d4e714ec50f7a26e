"""`rats-tls-server`: the RATS-TLS sample server. It accepts connections, negotiates attested TLS on each, and
echoes back what the client sends (at most 255 bytes per connection), as rats-tls' sample server does.

    rats-tls-server [-a ATTESTER] [-v VERIFIER] [-t TLS] [-c CRYPTO] [-m] [-e] [-l LEVEL] [-i IP] [-p PORT] [-D]
                    [--freshness] [--trust-sim] [--sim-root PEM] [--collateral BUNDLE] [--pccs URL]
                    [--certs DIR] [-n CONNECTIONS]

Upstream's flags: ``-a/--attester`` (nullattester, sim, sgx_ecdsa, tdx_ecdsa, sev_snp; default: by priority),
``-v/--verifier`` (nullverifier, sim, sgx_ecdsa, tdx_ecdsa, sev_snp; default: by priority, re-selected per
peer), ``-t/--tls`` (openssl, the only TLS wrapper), ``-c/--crypto`` (openssl = ECDSA P-256, or ecdsa / rsa),
``-m/--mutual``, ``-e/--endorsements`` (put collateral in the certificate), ``-l/--log-level``
(debug/info/warn/error/fatal/off), ``-i/--ip`` (default 127.0.0.1), ``-p/--port`` (default 1234; 0 picks a
free port, logged), ``-D/--debug-enclave`` (no enclave is loaded here: it turns on debug logging). The
certificate carries the custom claims ``key_0`` = "value_0" and ``key_1`` = "value_1" (with their NUL, as
upstream's sample). Ours: ``--freshness`` (nonce-bound certificates, docs/ratls.md), ``--trust-sim``
(accept the simulated platform, through the sim verifier; ``--sim-root`` pins its root CA, default the local
platform's), ``--collateral`` / ``--pccs`` (DCAP collateral for verifying clients), ``--certs`` (a trust folder:
issuer certificates and the root CA CRL, see attestation/trust.py), ``-n`` (stop after that
many connections; default: serve forever).

A failed handshake is logged on one line and the server goes on with the next client (upstream's sample
exits). Errors in the flags or the configuration: ``rats-tls-server: <message>``, exit 1.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from inclavare.cli._common import run_program
from inclavare.cli._ratstls import build_config, common_parser, log, parse_port, setup_logging
from inclavare.errors import InclavareError, UsageError

PROG = "rats-tls-server"
CONNECTION_TIMEOUT = 60.0
BUFFER = 256  # upstream's echo buffer; at most BUFFER - 1 bytes are echoed
CUSTOM_CLAIMS = {"key_0": b"value_0\x00", "key_1": b"value_1\x00"}


def build_parser() -> argparse.ArgumentParser:
    p = common_parser(PROG, "server")
    p.add_argument("-n", "--connections", type=int, default=0, metavar="N",
                   help="stop after N connections (default: serve forever)")
    return p


def _listen(ip: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 5)):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        sock.bind((ip, port))
        sock.listen(5)
    except OSError as e:
        raise UsageError(f"listen on {ip}:{port}: {e.strerror or e}") from None
    return sock


def serve_one(conn: socket.socket, config: Any) -> bool:
    """Negotiate with one client and echo its message; False (logged) when the connection failed."""
    from inclavare.ratls.tls import RatsTls

    handle = RatsTls(config, server_side=True)
    conn.settimeout(CONNECTION_TIMEOUT)  # a silent client must not hold the (one-at-a-time) server forever
    try:
        peer = handle.negotiate(conn)
        log.debug("client connected: %s", handle.connection.get_protocol_version_name())
        if peer is not None:
            log.info("client verified by %s (%s)", peer.verifier, peer.tee or "no TEE")
        data = handle.receive(BUFFER)
        data = data[:BUFFER - 1]
        log.info("Client: %s", data.decode("utf-8", "replace").rstrip("\n"))
        handle.transmit(data)
        return True
    except InclavareError as e:
        log.error("%s", e)
        return False
    finally:
        handle.close()


def run(a: argparse.Namespace) -> int:
    setup_logging(PROG, a.log_level, a.debug)
    port = parse_port(a.port)
    if a.connections < 0:
        raise UsageError(f"-n {a.connections}: expected a number of connections (0: forever)")
    config = build_config(a, custom_claims=dict(CUSTOM_CLAIMS))
    config.prepare(presents=True)
    print("    Welcome to RATS-TLS sample server", flush=True)
    sock = _listen(a.ip, port)
    with sock:
        host, bound = sock.getsockname()[:2]
        log.info("attester %s, verifier %s%s; listening on %s:%d", config.attester_name, config.verifier_name,
                 " (mutual)" if a.mutual else "", host, bound)
        served = 0
        while not a.connections or served < a.connections:
            log.info("Waiting for a connection from client ...")
            conn, addr = sock.accept()
            with conn:
                serve_one(conn, config)
            served += 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
