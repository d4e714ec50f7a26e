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

Clients are served concurrently (inclavare.ratls.server): at most 128 at once, each phase under a deadline
(handshake 30 s, the client's message 60 s, the answer 30 s), so a client that stalls holds only its own
connection; a connection beyond the cap waits up to 5 s for a slot and is then closed. Upstream has no flags for
these, so they are constants (``LIMITS``). ``-n N`` stops accepting after N connections and returns when they
have been served. A failed handshake is logged on one line and the server goes on with the other clients
(upstream's sample exits). Errors in the flags or the configuration: ``rats-tls-server: <message>``, exit 1.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import TYPE_CHECKING, Any

from inclavare.cli._common import run_program
from inclavare.cli._ratstls import build_config, common_parser, log, parse_port, setup_logging
from inclavare.errors import UsageError

if TYPE_CHECKING:
    from inclavare.ratls.server import ServerConnection
    from inclavare.ratls.verifiers import PeerClaims

PROG = "rats-tls-server"
# Upstream's sample has no flags for these (it serves one connection at a time, with no timeouts); ours serves
# connections concurrently (issue 19): a silent or slow client holds one slot until its deadline, nobody else.
# (inclavare.ratls.server.ServerLimits' fields; a plain dict so that --help does not load the TLS stack)
LIMITS: dict[str, Any] = {
    "max_connections": 128,  # beyond that a new connection waits up to queue_timeout for a slot, then is closed
    "queue_timeout": 5.0,
    "handshake_timeout": 30.0,  # room for a verifier that fetches DCAP collateral from a PCCS
    "read_timeout": 60.0,  # the client's message after the handshake
    "write_timeout": 30.0,
}
BACKLOG = 128  # a burst of clients waits in the kernel's queue for accept(), not in SYN retransmits
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
        sock.listen(BACKLOG)
    except OSError as e:
        raise UsageError(f"listen on {ip}:{port}: {e.strerror or e}") from None
    return sock


def echo(conn: ServerConnection, peer: PeerClaims | None) -> None:
    """One attested client: its message (one read of at most ``BUFFER - 1`` bytes) echoed back."""
    log.debug("client %s connected: %s", conn.address, conn.tls.connection.get_protocol_version_name())
    if peer is not None:
        log.info("client verified by %s (%s)", peer.verifier, peer.tee or "no TEE")
    data = conn.receive(BUFFER)[:BUFFER - 1]
    log.info("Client: %s", data.decode("utf-8", "replace").rstrip("\n"))
    conn.transmit(data)


def run(a: argparse.Namespace) -> int:
    from inclavare.ratls.server import RatsTlsServer, ServerLimits

    setup_logging(PROG, a.log_level, a.debug)
    port = parse_port(a.port)
    if a.connections < 0:
        raise UsageError(f"-n {a.connections}: expected a number of connections (0: forever)")
    config = build_config(a, custom_claims=dict(CUSTOM_CLAIMS))
    server = RatsTlsServer(config, echo, ServerLimits(**LIMITS), name=PROG)
    print("    Welcome to RATS-TLS sample server", flush=True)
    sock = _listen(a.ip, port)
    with sock:
        host, bound = sock.getsockname()[:2]
        log.info("attester %s, verifier %s%s; listening on %s:%d", config.attester_name, config.verifier_name,
                 " (mutual)" if a.mutual else "", host, bound)
        log.info("Waiting for connections from clients ...")
        server.serve(sock, a.connections)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
