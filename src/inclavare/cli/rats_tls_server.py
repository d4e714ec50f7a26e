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
import logging
import socket
import sys
from typing import Any, NoReturn

from inclavare.cli._inputs import read_file, sim_root_fingerprint
from inclavare.errors import InclavareError, UsageError

PROG = "rats-tls-server"
DEFAULT_IP = "127.0.0.1"
DEFAULT_PORT = 1234
CONNECTION_TIMEOUT = 60.0
BUFFER = 256  # upstream's echo buffer; at most BUFFER - 1 bytes are echoed
CUSTOM_CLAIMS = {"key_0": b"value_0\x00", "key_1": b"value_1\x00"}
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
              "fatal": logging.CRITICAL, "off": logging.CRITICAL + 10}
TLS_WRAPPERS = ("", "openssl")
CRYPTO_WRAPPERS = {"": "ecdsa", "openssl": "ecdsa", "ecdsa": "ecdsa", "rsa": "rsa"}

log = logging.getLogger("inclavare.ratls.program")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def common_parser(prog: str, role: str) -> argparse.ArgumentParser:
    """The flags both sample programs take."""
    p = _Parser(prog=prog, description=f"RATS-TLS sample {role}")
    p.add_argument("-a", "--attester", default="", help="the type of quote attester")
    p.add_argument("-v", "--verifier", default="", help="the type of quote verifier")
    p.add_argument("-t", "--tls", default="", help="the type of tls wrapper (openssl)")
    p.add_argument("-c", "--crypto", default="", help="the type of crypto wrapper: openssl (ECDSA), ecdsa or rsa")
    p.add_argument("-m", "--mutual", action="store_true", help="enable mutual attestation")
    p.add_argument("-e", "--endorsements", action="store_true", help="let the attester provide endorsements")
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


def _port(text: str) -> int:
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
    port = _port(a.port)
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
    try:
        a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        return run(a)
    except InclavareError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
