"""`rats-tls-client`: the RATS-TLS sample client. It connects, negotiates attested TLS, sends a greeting, and
prints the server's echo and what was verified about the server, as rats-tls' sample client does.

    rats-tls-client [-a ATTESTER] [-v VERIFIER] [-t TLS] [-c CRYPTO] [-m] [-e] [-l LEVEL] [-i IP] [-p PORT] [-D]
                    [-E] [--freshness] [--trust-sim] [--sim-root PEM] [--collateral BUNDLE] [--pccs URL]
                    [--certs DIR] [--message TEXT]

The flags are the server's (see ``rats-tls-server``), plus upstream's ``-E/--verdictd`` (send the greeting
as verdictd's JSON echo command) and ``--message`` (send this text instead of the greeting). Output, on
stdout: the verification callback's lines for each custom claim (as upstream's sample prints them), then
``Server: <echo>`` and ``Peer claims: <JSON>`` (verifier, TEE, TCB status, the verified claims). Exit 0 when
the echo matches what was sent; errors: ``rats-tls-client: <message>`` on one line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

from inclavare.cli._common import run_program
from inclavare.cli._ratstls import build_config, common_parser, parse_port, setup_logging
from inclavare.errors import UsageError

PROG = "rats-tls-client"
GREETING = "Hello and welcome to RATS-TLS!\n"
VERDICTD_COMMAND = '{ "command": "echo", "data": "Hello and welcome to RATS-TLS!\\n" }'
BUFFER = 256


def build_parser() -> argparse.ArgumentParser:
    p = common_parser(PROG, "client")
    p.add_argument("-E", "--verdictd", action="store_true", help="connect to verdictd (EAA protocol echo)")
    p.add_argument("--message", help="send this text instead of the greeting")
    return p


def _callback(peer: object) -> bool:
    """Upstream's sample callback: print the custom claims, accept."""
    claims = getattr(peer, "custom_claims", {})
    print(f"verify_callback called, claims_size {len(claims)}")
    for i, (name, value) in enumerate(claims.items()):
        text = value.rstrip(b"\x00").decode("utf-8", "backslashreplace")
        print(f"custom_claims[{i}] -> name: '{name}' value_size: {len(value)} value: '{text}'")
    return True


def run(a: argparse.Namespace) -> int:
    from inclavare.ratls.tls import RatsTls

    setup_logging(PROG, a.log_level, a.debug)
    port = parse_port(a.port)
    config = build_config(a, callback=_callback)
    config.prepare(presents=a.mutual)
    message = a.message if a.message is not None else GREETING
    sent = VERDICTD_COMMAND if a.verdictd and a.message is None else message
    try:
        sock = socket.create_connection((a.ip, port), timeout=60)
    except OSError as e:
        raise UsageError(f"connect to {a.ip}:{port}: {e.strerror or e}") from None
    with sock:
        handle = RatsTls(config, server_side=False)
        try:
            peer = handle.negotiate(sock)
            data = sent.encode()
            if handle.transmit(data) != len(data):
                raise UsageError("failed to transmit the message")
            echo = handle.receive(BUFFER)
        finally:
            handle.close()
    text = echo.decode("utf-8", "replace")
    print(f"Server: {text}", end="" if text.endswith("\n") else "\n")
    if peer is not None:
        print("Peer claims: " + json.dumps(peer.to_dict(), sort_keys=True))
    if text != message:
        raise UsageError("invalid response from the rats-tls server: the echo differs from the message sent")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
