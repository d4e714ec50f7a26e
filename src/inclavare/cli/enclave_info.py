"""`inclavare-enclave-info`: the sample confidential container's server side. A RATS-TLS server whose ``sim``
attester reports an enclave identity, answering each client (inclavared's xfer hop) with that identity's
MRENCLAVE || MRSIGNER || greeting, as rats-tls' sample server does inside an SGX enclave.

    inclavare-enclave-info -l ADDR [--image IMAGE | --mrenclave HEX [--mrsigner HEX]] [--message TEXT]
                           [-m] [-v VERIFIER] [--trust-sim [--sim-root PEM]] [--collateral BUNDLE] [--certs DIR]
                           [--log-level L] [-n CONNECTIONS]

``--image``: a signed enclave image (docs/enclave-image.md; fully checked) whose SIGSTRUCT gives the identity;
``--mrenclave``/``--mrsigner``: the identity in hex; neither: the sim attester's fixed identity. ``-m``: require
the client's evidence (inclavared always presents it). ``-n``: stop after that many connections. Prints
``{"ready": true, "listen": ADDRESS}`` once listening; SIGTERM/SIGINT stop it. The sim platform gives NO
confidentiality: this is the code path a real enclave would take, for development and tests. Errors:
``inclavare-enclave-info: <message>``, exit 1.
"""

from __future__ import annotations

import argparse
import sys

from inclavare.cli._common import Parser, run_program
from inclavare.cli._inclavared import add_instance_flags, config_from, serve_until_signalled
from inclavare.cli._ratstls import setup_logging
from inclavare.errors import UsageError

PROG = "inclavare-enclave-info"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="sample confidential container: answers inclavared with its identity")
    p.add_argument("-l", "--listen", required=True, metavar="ADDR", help="HOST:PORT or a unix socket path")
    p.add_argument("--image", metavar="IMAGE", help="signed enclave image whose identity to attest")
    p.add_argument("--mrenclave", metavar="HEX", help="the MRENCLAVE to attest (64 hex digits)")
    p.add_argument("--mrsigner", metavar="HEX", help="the MRSIGNER to attest (64 hex digits)")
    p.add_argument("--message", help="the greeting after the measurements (default rats-tls' sample's)")
    p.add_argument("-n", "--connections", type=int, default=0, metavar="N",
                   help="stop after N connections (default: serve until signalled)")
    add_instance_flags(p, short=False, mutual_help="require the client's evidence")
    return p


def run(a: argparse.Namespace) -> int:
    from inclavare.services.inclavared.enclave_info import HELLO, enclave_info_handler, identity_of, sim_attester

    setup_logging(PROG, a.log_level, False)
    if a.attester not in ("", "sim"):
        raise UsageError(f"--attester {a.attester!r}: this sample attests its identity with the sim attester only")
    if a.connections < 0:
        raise UsageError(f"-n {a.connections}: expected a number of connections (0: until signalled)")
    identity = identity_of(a.image, a.mrenclave, a.mrsigner)
    config = config_from(a, mutual=a.mutual, attester=sim_attester(identity))
    handler = enclave_info_handler(identity, HELLO if a.message is None else a.message)
    return serve_until_signalled(config, handler, a.listen, PROG, a.connections)


def main(argv: list[str] | None = None) -> int:
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
