"""The two RATS-TLS sample programs' shared part (``rats-tls-server`` and ``rats-tls-client``): upstream's
common flags, logging at its levels, and the RatsTlsConfig those flags describe."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from inclavare.cli._common import Parser
from inclavare.cli._inputs import read_file, sim_root_fingerprint
from inclavare.errors import UsageError

DEFAULT_IP = "127.0.0.1"
DEFAULT_PORT = 1234
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
              "fatal": logging.CRITICAL, "off": logging.CRITICAL + 10}
TLS_WRAPPERS = ("", "openssl")
CRYPTO_WRAPPERS = {"": "ecdsa", "openssl": "ecdsa", "ecdsa": "ecdsa", "rsa": "rsa"}

log = logging.getLogger("inclavare.ratls.program")


def add_wrapper_flags(p: Any, mutual_help: str = "enable mutual attestation") -> None:
    """Upstream rats-tls's instance flags (-a -v -t -c -m -e), as its sample programs and verdictd take them."""
    p.add_argument("-a", "--attester", default="", help="the type of quote attester")
    p.add_argument("-v", "--verifier", default="", help="the type of quote verifier")
    p.add_argument("-t", "--tls", default="", help="the type of tls wrapper (openssl)")
    p.add_argument("-c", "--crypto", default="", help="the type of crypto wrapper: openssl (ECDSA), ecdsa or rsa")
    p.add_argument("-m", "--mutual", action="store_true", help=mutual_help)
    p.add_argument("-e", "--endorsements", action="store_true", help="let the attester provide endorsements")


def common_parser(prog: str, role: str) -> argparse.ArgumentParser:
    """The flags both sample programs take."""
    p = Parser(prog=prog, description=f"RATS-TLS sample {role}")
    add_wrapper_flags(p)
    p.add_argument("-l", "--log-level", default="info", help="debug, info, warn, error, fatal or off")
    p.add_argument("-i", "--ip", default=DEFAULT_IP, help=f"the {'listening' if role == 'server' else 'server'} "
                   f"IP address (default {DEFAULT_IP})")
    p.add_argument("-p", "--port", default=str(DEFAULT_PORT), help=f"the TCP port (default {DEFAULT_PORT})")
    p.add_argument("-D", "--debug-enclave", "--debug", dest="debug", action="store_true",
                   help="debug logging (no enclave is loaded by this program)")
    p.add_argument("--freshness", action="store_true", help="bind a per-connection nonce into the certificates")
    p.add_argument("--trust-sim", action="store_true", help="accept the simulated SGX platform (sim verifier)")
    p.add_argument("--sim-root", metavar="PEM", help="the sim root CA to trust (default: the local platform's)")
    p.add_argument("--collateral", metavar="BUNDLE", help="DCAP collateral bundle (JSON) for the peer's quotes")
    p.add_argument("--pccs", metavar="URL", help="PCS/PCCS base URL to fetch DCAP collateral from")
    p.add_argument("--certs", metavar="DIR", help="folder of issuer certificates and the root CA CRL (PEM or DER) "
                   "the collateral does not carry")
    return p


def setup_logging(prog: str, level_name: str, debug: bool) -> None:
    """Log lines ``PROG: [LEVEL] message`` on stderr at upstream's -l level (debug with -D)."""
    level = LOG_LEVELS.get(level_name.lower())
    if level is None:
        raise UsageError(f"-l {level_name!r}: expected one of {', '.join(LOG_LEVELS)}")
    if debug:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: [%(levelname)s] %(message)s"))
    root = logging.getLogger("inclavare")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def parse_port(text: str) -> int:
    """The -p flag: a TCP port number (0 lets the system pick one)."""
    try:
        port = int(text, 10)
    except ValueError:
        raise UsageError(f"-p {text!r}: not a port number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"-p {port}: not a TCP port (0..65535)")
    return port


def build_config(a: argparse.Namespace, *, custom_claims: dict[str, bytes] | None = None,
                 callback: Any = None) -> Any:
    """A RatsTlsConfig from the common flags."""
    from inclavare.ratls.tls import RatsTlsConfig

    if a.tls not in TLS_WRAPPERS:
        raise UsageError(f"-t {a.tls!r}: this implementation's only TLS wrapper is openssl")
    crypto = CRYPTO_WRAPPERS.get(a.crypto)
    if crypto is None:
        raise UsageError(f"-c {a.crypto!r}: expected openssl, ecdsa or rsa")
    fps: tuple[str, ...] = (sim_root_fingerprint(a.sim_root),) if a.sim_root else ()
    if a.sim_root and not a.trust_sim:
        raise UsageError("--sim-root needs --trust-sim")
    material = None
    if a.certs:
        from inclavare.attestation.trust import read_trust_dir

        material = read_trust_dir(a.certs)
    collateral = None
    if a.collateral:
        from inclavare.attestation.collateral import from_bundle

        collateral = from_bundle(read_file(a.collateral, "--collateral"))
        if material is not None:  # a root CA CRL kept in the folder, when the bundle carries none
            sim_roots = fps or ((sim_root_fingerprint(None),) if a.trust_sim else ())
            collateral = material.apply_root_ca_crl(collateral, sim_roots)
    if material is not None:
        used = [f.path for f in material.files if f.used_as]
        n = len(material.certificates)
        log.info("--certs %s: %d certificate%s%s", material.directory, n, "" if n == 1 else "s",
                 f", root CA CRL {used[0]}" if used else "")
    return RatsTlsConfig(attester=a.attester or None, verifier=a.verifier or None, crypto=crypto, mutual=a.mutual,
                         freshness=a.freshness, callback=callback, custom_claims=custom_claims or {},
                         provide_endorsements=a.endorsements, collateral=collateral, pccs=a.pccs or None,
                         trust_sim=a.trust_sim, sim_root_fingerprints=fps,
                         extra_certs=material.certificates if material is not None else ())
