"""What ``inclavared``, ``inclavare-enclave-info`` and ``shelter remoteattestation`` share: upstream inclavared's and
shelter's long instance flags (``--attester --verifier --tls --crypto``), our trust flags, the RatsTlsConfig
they describe, and serving a RATS-TLS handler on an address until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from inclavare.cli._ratstls import build_config
from inclavare.errors import InclavareError, UsageError

if TYPE_CHECKING:
    from inclavare.ratls.server import Handler

# The RatsTlsServer limits of both servers: upstream has no flags for them (it has no limits at all).
LIMITS: dict[str, Any] = {"max_connections": 128, "queue_timeout": 5.0, "handshake_timeout": 30.0,
                          "read_timeout": 30.0, "write_timeout": 30.0, "max_request": 64 * 1024}


def add_instance_flags(p: argparse.ArgumentParser, *, short: bool = False, mutual_help: str = "") -> None:
    """--attester --verifier --tls --crypto (-a -v -t -c too with ``short``), -m/--mutual, and ours: --trust-sim,
    --sim-root, --collateral, --pccs, --certs, --log-level."""
    def names(s: str, long: str) -> list[str]:
        return [s, long] if short else [long]

    p.add_argument(*names("-a", "--attester"), default="", help="the type of quote attester")
    p.add_argument(*names("-v", "--verifier"), default="", help="the type of quote verifier")
    p.add_argument(*names("-t", "--tls"), default="", help="the type of TLS wrapper (openssl)")
    p.add_argument(*names("-c", "--crypto"), default="", help="the type of crypto wrapper: openssl (ECDSA), ecdsa, rsa")
    p.add_argument("-m", "--mutual", action="store_true", help=mutual_help or "mutual attestation")
    p.add_argument("--log-level", default="info", help="debug, info, warn, error, fatal or off")
    p.add_argument("--trust-sim", action="store_true", help="accept the simulated SGX platform (sim verifier)")
    p.add_argument("--sim-root", metavar="PEM", help="the sim root CA to trust (default: the local platform's)")
    p.add_argument("--collateral", metavar="BUNDLE", help="DCAP collateral bundle (JSON) for the peer's quotes")
    p.add_argument("--pccs", metavar="URL", help="PCS/PCCS base URL to fetch DCAP collateral from")
    p.add_argument("--certs", metavar="DIR", help="folder of issuer certificates and the root CA CRL")
    p.set_defaults(freshness=False, endorsements=False)


def config_from(a: argparse.Namespace, *, mutual: bool, attester: Any = None) -> Any:
    """A RatsTlsConfig from the flags, with ``mutual`` (and an attester object standing in for --attester)."""
    ns = argparse.Namespace(**vars(a))
    ns.mutual = mutual
    config = build_config(ns)
    if attester is not None:
        config.attester = attester
    return config


def parse_seconds(value: float, flag: str) -> float:
    if not value > 0 or value != value:
        raise UsageError(f"{flag} {value!r}: expected a positive number of seconds")
    return value


def serve_until_signalled(config: Any, handler: Handler, listen: str, name: str, connections: int = 0) -> int:
    """Listen on ``listen`` and serve ``handler`` until SIGTERM/SIGINT (or ``connections`` connections). Prints
    ``{"ready": true, "listen": ADDRESS}`` on stdout once listening (the port chosen for port 0)."""
    from inclavare.ratls.server import RatsTlsServer, ServerLimits
    from inclavare.services.inclavared.protocol import parse_address
    from inclavare.services.inclavared.transport import bound_address
    from inclavare.services.inclavared.transport import listen as listen_on

    try:
        addr = parse_address(listen, "--listen")
    except InclavareError as e:
        raise UsageError(str(e)) from None
    server = RatsTlsServer(config, handler, ServerLimits(**LIMITS), name=name)
    sock = listen_on(addr, "--listen")
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with sock:
            thread = server.start(sock, connections)
            print(json.dumps({"ready": True, "listen": str(bound_address(sock, addr))}), flush=True)
            while not stop.is_set() and thread.is_alive():
                stop.wait(0.25)
            server.shutdown()
            thread.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if addr.is_unix:
            import contextlib
            import os

            with contextlib.suppress(OSError):
                os.unlink(addr.path)
        sys.stdout.flush()
    return 0
