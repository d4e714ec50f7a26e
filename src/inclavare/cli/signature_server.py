"""`signature-server`: the HTTP(S) service that signs enclave SIGSTRUCT material for remote clients.

    signature-server --key PEM [--generate-key] [--listen :9080]
                     [--cert PEM --tls-key PEM [--client-ca PEM [--allow-cn NAME]... [--allow-fingerprint HEX]...]]
                     [--tokens-file FILE] [--allow-anyone] [--audit-log FILE] [--log-format text|json]
    signature-server --hash-token            read a token on stdin, print its tokens-file line

Configuration errors print ``signature-server: <message>`` on one line and exit 1; SIGTERM / SIGINT stop the
server and exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from inclavare.cli._common import Parser, run_program
from inclavare.errors import InclavareError, UsageError

PROG = "signature-server"
DEFAULT_KEY = "/etc/signature/pki/privatekey.pem"  # upstream's default --private-key


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                           "msg": record.getMessage()})


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="sign SGX enclave SIGSTRUCT material over HTTP(S) "
                                       "(POST /api/v1/signature/pkcs1)")
    p.add_argument("--listen", default=":9080", help="HOST:PORT or :PORT (default :9080, every address)")
    p.add_argument("--key", "--private-key", dest="key", default=DEFAULT_KEY,
                   help=f"RSA-3072 e=3 signing key, PEM, mode 0600 (default {DEFAULT_KEY})")
    p.add_argument("--public-key", help="upstream's public key file: checked to match --key (optional)")
    p.add_argument("--generate-key", action="store_true", help="create the signing key if the file is missing")
    p.add_argument("--cert", help="serve HTTPS with this certificate (chain) PEM")
    p.add_argument("--tls-key", help="the private key of --cert (PEM)")
    p.add_argument("--client-ca", help="require/accept client certificates issued by this CA (mutual TLS)")
    p.add_argument("--allow-cn", action="append", default=[], metavar="NAME",
                   help="allow client certificates with this subject CN (repeatable)")
    p.add_argument("--allow-fingerprint", action="append", default=[], metavar="SHA256",
                   help="allow the client certificate with this SHA-256 fingerprint (repeatable)")
    p.add_argument("--tokens-file", help="allowed bearer tokens, one '<sha256 hex> [label]' per line")
    p.add_argument("--allow-anyone", action="store_true", help="no allow-list: sign for every client (upstream)")
    p.add_argument("--audit-log", help="append a JSON line per signing request to this file (fsync'd)")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--hash-token", action="store_true",
                   help="read a token from stdin, print its tokens-file line and exit")
    return p


def _check_public_key(path: str, public_pem: bytes) -> None:
    from cryptography.hazmat.primitives import serialization

    from inclavare.sgx.signing import SigningError, load_public_key

    try:
        with open(path, "rb") as f:
            pub = load_public_key(f.read())
    except OSError as e:
        raise UsageError(f"public key {path}: {e.strerror}") from None
    except SigningError as e:
        raise UsageError(f"{path}: {e}") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if pub.public_bytes(*fmt) != load_public_key(public_pem).public_bytes(*fmt):
        raise UsageError(f"public key {path} does not belong to the signing key")


def _setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter(f"{PROG}: %(message)s"))
    root = logging.getLogger("inclavare")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    return run_program(PROG, build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    if args.hash_token:
        from inclavare.services.signature_server import hash_token

        token = sys.stdin.readline().strip()
        if not token:
            raise UsageError("--hash-token: no token on stdin")
        print(f"{hash_token(token)} client")
        return 0
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from inclavare.services.signature_server import ServerConfig, make_server

    _setup_logging(args.log_format)
    config = ServerConfig(
        key_path=args.key, listen=args.listen, cert=args.cert, tls_key=args.tls_key, client_ca=args.client_ca,
        tokens_file=args.tokens_file, allow_cns=tuple(args.allow_cn), allow_fingerprints=tuple(args.allow_fingerprint),
        audit_log=args.audit_log, allow_anyone=args.allow_anyone, generate_key=args.generate_key,
    )
    server = make_server(config)
    if args.public_key:
        try:
            _check_public_key(args.public_key, server.signer.public_pem)
        except InclavareError:
            server.server_close()
            raise

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    logging.getLogger("inclavare.signature_server").info("listening on %s (MRSIGNER %s)", server.url,
                                                         server.signer.mrsigner)
    try:
        server.serve_forever()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.server_close()
    logging.getLogger("inclavare.signature_server").info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
