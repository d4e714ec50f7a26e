"""`verdictd`: the relying party daemon (attestation, policy, key broker) and its ocicrypt ``cmd`` key provider.

    verdictd [--state-dir DIR] [--kek-file FILE] [--log-level LEVEL]
             [-l ADDR -m [-a ATTESTER] [-v VERIFIER] [-t TLS] [-c CRYPTO] [-e]]
             [--kbs-listen HOST:PORT (--kbs-cert PEM --kbs-key PEM | --insecure-http)]
             [--admin-listen HOST:PORT] [--admin-token-file FILE]
             [--client-api ADDR [--client-api-cert PEM --client-api-key PEM [--client-api-ca PEM]]]
             [--keyprovider-listen ADDR [--keyprovider-cert PEM --keyprovider-key PEM [--keyprovider-ca PEM]]]
             [--trust-sim [--sim-root PEM]] [--collateral BUNDLE] [--snp-certs PEM]
             [--token-key PEM] [--token-ttl SECONDS]
             [--io-timeout SECONDS] [--max-connections N] [--grpc-connection-age SECONDS]
    verdictd keyprovider [--state-dir DIR] [--kek-file FILE] [--token-key PEM]

Upstream verdictd's flags for the EAA listener: ``-l/--listen`` (``ip:port``, ``[ipv6]:port`` or a unix socket
path), ``-t/--tls``, ``-c/--crypto``, ``-a/--attester``, ``-v/--verifier``, ``-m/--mutual`` (required here: every
EAA client attests), and ``--client-api`` (the gRPC admin API; the ocicrypt key provider service is served
beside it, ``UnWrapKey`` authorised by the caller's attestation token, everything else by the admin token from
``--admin-token-file`` and/or client certificates). Unlike upstream, no listener is on unless asked for.
Ours: ``--kbs-listen`` (Trustee KBS 0.4.0 over HTTPS, or plain HTTP with the explicit ``--insecure-http``, for
tests), ``--admin-listen`` (the KBS admin endpoints on their own listener; without it they are on the KBS
listener), ``--keyprovider-listen`` (the key provider alone; ``WrapKey`` only on a unix socket),
``--trust-sim`` (accept simulated-platform evidence; never by default), ``--collateral`` (a DCAP collateral
bundle, as ``shelter`` takes it), ``--snp-certs`` (AMD certificates for SNP evidence: the ASK/ASVK and ARK of
the product lines served, VCEKs/VLEKs fetched ahead; a PEM bundle), ``--token-key`` (the EAR signing key;
otherwise generated at first start and kept sealed in the state directory). The key-encryption key comes from
``--kek-file`` or ``$VERDICTD_KEK``.

Once every listener is up, one JSON line goes to stdout: ``{"ready": true, "<listener>": "<address>", ...}``.
SIGTERM / SIGINT stop it cleanly (exit 0). Bad flags: ``verdictd: <message>``, exit 2; a configuration or
runtime failure: one line, exit 1.

``verdictd keyprovider`` is ocicrypt's ``cmd`` protocol: the request JSON on stdin, the answer on stdout; a
refusal is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from inclavare.cli._common import Parser
from inclavare.cli._inputs import InputError, read_file, sim_root_fingerprint
from inclavare.cli._ratstls import LOG_LEVELS, add_wrapper_flags, build_config, setup_logging
from inclavare.errors import InclavareError, UsageError

PROG = "verdictd"
DEFAULT_STATE_DIR = "/var/lib/verdictd"
PEM_LIMIT = 1 << 20


def _state_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"state directory (default {DEFAULT_STATE_DIR})")
    p.add_argument("--kek-file", metavar="FILE", help="key-encryption key file (else $VERDICTD_KEK, 64 hex digits)")
    p.add_argument("--token-key", metavar="PEM", help="EAR signing key (P-256, PEM); default: generated at first "
                   "start and kept sealed in the state directory")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="verdictd: attestation, policy and key broker")
    _state_flags(p)
    p.add_argument("--log-level", "--log", default="info", help=f"{', '.join(LOG_LEVELS)} (default info)")
    eaa = p.add_argument_group("EAA over RATS-TLS (upstream verdictd)")
    eaa.add_argument("-l", "--listen", metavar="ADDR", help="EAA listener: IP:PORT, [IPv6]:PORT or a unix path")
    add_wrapper_flags(eaa, mutual_help="clients attest too (required)")
    kbs = p.add_argument_group("KBS 0.4.0 over HTTP(S)")
    kbs.add_argument("--kbs-listen", metavar="HOST:PORT")
    kbs.add_argument("--kbs-cert", metavar="PEM", help="TLS certificate chain of the KBS and admin listeners")
    kbs.add_argument("--kbs-key", metavar="PEM", help="its private key")
    kbs.add_argument("--insecure-http", action="store_true", help="plain HTTP (tests only)")
    kbs.add_argument("--admin-listen", metavar="HOST:PORT", help="the KBS admin endpoints on their own listener")
    kbs.add_argument("--admin-token-file", metavar="FILE", help="the admin bearer token (KBS admin, client API)")
    kbs.add_argument("--token-ttl", type=int, default=300, metavar="SECONDS", help="EAR token lifetime (300)")
    g = p.add_argument_group("gRPC")
    g.add_argument("--client-api", metavar="ADDR", help="upstream's clientapi (admin) listener, with the key "
                   "provider service beside it")
    g.add_argument("--client-api-cert", metavar="PEM")
    g.add_argument("--client-api-key", metavar="PEM")
    g.add_argument("--client-api-ca", metavar="PEM", help="client CA: mutual TLS on the client API")
    g.add_argument("--keyprovider-listen", metavar="ADDR", help="the ocicrypt key provider alone")
    g.add_argument("--keyprovider-cert", metavar="PEM")
    g.add_argument("--keyprovider-key", metavar="PEM")
    g.add_argument("--keyprovider-ca", metavar="PEM")
    lim = p.add_argument_group("limits (docs/verdictd.md, Limits)")
    lim.add_argument("--io-timeout", type=float, metavar="SECONDS", help="deadline of each handshake, read and "
                     "write on the KBS, admin and EAA listeners, and of gRPC handshakes and the close of an aged "
                     "gRPC connection (default: KBS 30, EAA handshake 10 and read/write 30, gRPC 30)")
    lim.add_argument("--max-connections", type=int, metavar="N", help="concurrent connections per KBS, admin or "
                     "EAA listener (default: KBS 256, EAA 128)")
    lim.add_argument("--grpc-connection-age", type=float, default=300.0, metavar="SECONDS",
                     help="a gRPC connection is closed after this (clients reconnect), so a call stalled by its "
                     "client frees its worker (300)")
    ev = p.add_argument_group("evidence")
    ev.add_argument("--trust-sim", action="store_true", help="accept the simulated platform (never by default)")
    ev.add_argument("--sim-root", metavar="PEM", help="the sim root CA to trust (default: this host's)")
    ev.add_argument("--collateral", metavar="BUNDLE", help="DCAP collateral bundle (JSON)")
    ev.add_argument("--snp-certs", metavar="PEM", help="AMD certificates for SNP evidence (ASK/ASVK, ARK, VCEKs), "
                    "a PEM bundle; the ARK is pinned")
    p.set_defaults(freshness=False, certs=None, pccs=None)
    return p


def _host_port(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag} {text!r}: expected HOST:PORT")
    return host, int(port)


def _pem(path: str | None, flag: str) -> bytes | None:
    return None if path is None else read_file(path, flag, PEM_LIMIT)


def _snp_certs(path: str | None) -> tuple[bytes, ...]:
    """The DER certificates of the ``--snp-certs`` PEM bundle (at least one)."""
    if path is None:
        return ()
    from inclavare.formats.snp import SnpFormatError
    from inclavare.formats.snp_certs import parse_certificate, pem_certificates

    try:
        certs = pem_certificates(read_file(path, "--snp-certs", PEM_LIMIT))
        for i, der in enumerate(certs):
            parse_certificate(der, f"certificate {i}")
    except SnpFormatError as e:
        raise InputError(f"--snp-certs {path}: {e}") from None
    if not certs:
        raise InputError(f"--snp-certs {path}: no CERTIFICATE block")
    return tuple(certs)


def _kek(a: argparse.Namespace) -> bytes:
    from inclavare.services.verdictd.store import load_kek

    return load_kek(a.kek_file, state_dir=a.state_dir)


def _check_flags(a: argparse.Namespace) -> None:
    if a.listen is not None and not a.mutual:
        raise UsageError("-l: EAA clients must attest; add -m (--mutual)")
    if a.kbs_listen is None and a.admin_listen is None and a.listen is None and a.client_api is None \
            and a.keyprovider_listen is None:
        raise UsageError("nothing to serve: give -l, --kbs-listen, --admin-listen, --client-api or "
                         "--keyprovider-listen")
    if (a.kbs_listen or a.admin_listen) and not a.insecure_http and not (a.kbs_cert and a.kbs_key):
        raise UsageError("--kbs-listen / --admin-listen: give --kbs-cert and --kbs-key, or --insecure-http (tests)")
    if a.insecure_http and (a.kbs_cert or a.kbs_key):
        raise UsageError("--insecure-http and --kbs-cert/--kbs-key exclude each other")
    if a.sim_root and not a.trust_sim:
        raise UsageError("--sim-root needs --trust-sim")
    if a.client_api is not None and a.admin_token_file is None and a.client_api_ca is None:
        raise UsageError("--client-api: give --admin-token-file and/or --client-api-ca; it is never open")
    if not 1 <= a.token_ttl <= 24 * 3600:
        raise UsageError(f"--token-ttl {a.token_ttl}: 1..86400 seconds")
    if a.io_timeout is not None and not 0.1 <= a.io_timeout <= 3600:
        raise UsageError(f"--io-timeout {a.io_timeout}: 0.1..3600 seconds")
    if a.max_connections is not None and not 1 <= a.max_connections <= 65536:
        raise UsageError(f"--max-connections {a.max_connections}: 1..65536")
    if not 0.1 <= a.grpc_connection_age <= 7 * 24 * 3600:
        raise UsageError(f"--grpc-connection-age {a.grpc_connection_age}: 0.1..604800 seconds")


def daemon_config(a: argparse.Namespace) -> Any:
    """The DaemonConfig the flags describe (files read, TLS contexts built)."""
    from inclavare.services.verdictd.daemon import DaemonConfig

    _check_flags(a)
    fps: tuple[str, ...] = ()
    if a.trust_sim:
        fps = (sim_root_fingerprint(a.sim_root),)
    collateral = None
    if a.collateral:
        from inclavare.attestation.collateral import from_bundle

        collateral = from_bundle(read_file(a.collateral, "--collateral"))
    c = DaemonConfig(state_dir=a.state_dir, kek=_kek(a), trust_sim=a.trust_sim, sim_root_fingerprints=fps,
                     collateral=collateral, snp_certs=_snp_certs(a.snp_certs),
                     token_key_pem=_pem(a.token_key, "--token-key"), token_ttl=a.token_ttl,
                     io_timeout=a.io_timeout, max_connections=a.max_connections,
                     grpc_connection_age=a.grpc_connection_age)
    token: bytes | None = None
    if a.admin_token_file:
        from inclavare.services.verdictd.clientapi import load_token

        token = load_token(a.admin_token_file)
        c.admin_token = token.decode("ascii")
    if a.kbs_listen:
        c.kbs_listen = _host_port(a.kbs_listen, "--kbs-listen")
    if a.admin_listen:
        c.admin_listen = _host_port(a.admin_listen, "--admin-listen")
    if (a.kbs_listen or a.admin_listen) and not a.insecure_http:
        from inclavare.services.verdictd.kbs_http import tls_context

        c.kbs_tls = tls_context(a.kbs_cert, a.kbs_key)
    c.insecure_http = a.insecure_http
    if a.listen:
        c.eaa_listen = a.listen
        c.eaa_config = build_config(a)
    if a.client_api:
        from inclavare.services.verdictd.clientapi import AdminAuth

        c.client_api = a.client_api
        c.client_api_auth = AdminAuth(token=token, cert_pem=_pem(a.client_api_cert, "--client-api-cert"),
                                      key_pem=_pem(a.client_api_key, "--client-api-key"),
                                      client_ca_pem=_pem(a.client_api_ca, "--client-api-ca"))
    if a.keyprovider_listen:
        c.keyprovider_listen = a.keyprovider_listen
        c.keyprovider_tls = {"cert": a.keyprovider_cert, "key": a.keyprovider_key, "ca": a.keyprovider_ca}
    return c


def serve(a: argparse.Namespace) -> int:
    from inclavare.services.verdictd.daemon import Verdictd

    setup_logging(PROG, a.log_level, False)
    config = daemon_config(a)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon = Verdictd(config)
        try:
            daemon.start()
            sys.stdout.write(json.dumps({"ready": True, **daemon.addresses}) + "\n")
            sys.stdout.flush()
            while not stop.wait(1.0):
                pass
        finally:
            daemon.stop()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def keyprovider(argv: Sequence[str]) -> int:
    """ocicrypt's ``cmd`` protocol: stdin -> stdout."""
    from inclavare.services.verdictd.daemon import Policies, load_token_issuer, open_state
    from inclavare.services.verdictd.keyprovider import MAX_INPUT, KeyProvider, run_cmd
    from inclavare.services.verdictd.policy import PolicyEngine

    p = Parser(prog=f"{PROG} keyprovider", description="ocicrypt key provider (cmd protocol)")
    _state_flags(p)
    a = p.parse_args(list(argv))
    data = sys.stdin.buffer.read(MAX_INPUT + 1)
    store, refs = open_state(a.state_dir, _kek(a))
    try:
        tokens = load_token_issuer(store, _pem(a.token_key, "--token-key"), create=False)
        policies = Policies(store, refs, PolicyEngine(), trust_sim=False)  # key decisions only: no appraisal here
        provider = KeyProvider(store, tokens, policies, audit=store.audit)
        out = run_cmd(data, provider)
    finally:
        store.close()
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["keyprovider"]:
            return keyprovider(args[1:])
        return serve(build_parser().parse_args(args))
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    except InclavareError as e:
        sys.stderr.write(f"{PROG}: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
