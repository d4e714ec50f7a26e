"""`inclavared`: the RATS-TLS relay between an off-cloud verifier (shelter) and a confidential container.

    inclavared -l ADDR [-x ADDR] [--attester A] [--verifier V] [--tls T] [--crypto C] [-m]
               [--log-level L] [--trust-sim [--sim-root PEM]] [--collateral BUNDLE] [--pccs URL] [--certs DIR]
               [--xfer-timeout SECONDS]
    inclavared -c ADDR [same instance flags]

Upstream's flags: ``-l/--listen`` (serve; ``HOST:PORT`` or a unix socket path; ``tcp://`` and ``unix://`` forms
too), ``-x/--xfer`` (the confidential container's address), ``-c/--connect`` (client mode: ask a confidential
container directly and print its ENCLAVEINFO), ``--attester``, ``--verifier``, ``--tls``, ``--crypto``,
``-m/--mutual``. For each client's ``{"type":"GETENCLAVEINFO"}`` it opens a mutual RATS-TLS connection to the
xfer address (inclavared always presents its evidence there, as upstream's ``-m`` did) and answers the
``ENCLAVEINFO`` JSON built from what its verifier accepted (services/inclavared/relay.py). ``-m`` here also makes
the listening side require the client's evidence (upstream never verified shelter). Ours: ``--trust-sim`` /
``--sim-root`` (accept the simulated platform), ``--collateral`` / ``--pccs`` / ``--certs`` (DCAP collateral and
trust material for the peers' quotes), ``--xfer-timeout`` (seconds for a whole round trip to the container,
default 30).

Once listening it prints ``{"ready": true, "listen": ADDRESS}`` on stdout. Clients are served concurrently (at
most 128, each phase under a deadline); a failing client or container is logged on one line and answered with
an ``ERROR`` message; the server goes on. SIGTERM/SIGINT stop it (exit 0). Errors (flags, a busy address, an
unusable attester, in client mode a failed round trip): ``inclavared: <message>`` on one line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from inclavare.cli._common import Parser, run_program
from inclavare.cli._inclavared import add_instance_flags, config_from, parse_seconds, serve_until_signalled
from inclavare.cli._ratstls import setup_logging
from inclavare.errors import InclavareError, UsageError

PROG = "inclavared"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="RATS-TLS relay between shelter and confidential containers")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-l", "--listen", metavar="ADDR", help="serve on ADDR (HOST:PORT or a unix socket path)")
    mode.add_argument("-c", "--connect", metavar="ADDR", help="client mode: ask the confidential container at ADDR")
    p.add_argument("-x", "--xfer", metavar="ADDR", help="the confidential container to relay requests to")
    p.add_argument("--xfer-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="seconds for a whole round trip to the confidential container (default 30)")
    add_instance_flags(p, mutual_help="also require the clients' evidence (the xfer hop is always mutual)")
    return p


def run(a: argparse.Namespace) -> int:
    from inclavare.services.inclavared.protocol import parse_address
    from inclavare.services.inclavared.relay import Relay, fetch_enclave_info

    setup_logging(PROG, a.log_level, False)
    timeout = parse_seconds(a.xfer_timeout, "--xfer-timeout")
    if not a.listen and not a.connect:
        raise UsageError("nothing to do: give -l/--listen ADDR (serve) or -c/--connect ADDR (client mode)")
    if a.connect and a.xfer:
        raise UsageError("-x/--xfer goes with -l/--listen, not with -c/--connect")
    try:
        xfer = parse_address(a.xfer, "-x/--xfer") if a.xfer else None
        target = parse_address(a.connect, "-c/--connect") if a.connect else None
    except InclavareError as e:
        raise UsageError(str(e)) from None
    xfer_config = config_from(a, mutual=True)
    xfer_config.prepare(presents=True)
    if target is not None:
        info = fetch_enclave_info(xfer_config, target, timeout)
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    server_config = config_from(a, mutual=a.mutual)
    return serve_until_signalled(server_config, Relay(xfer, xfer_config, timeout), a.listen, PROG)


def main(argv: list[str] | None = None) -> int:
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
