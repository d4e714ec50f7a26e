"""ServerConfig and what is derived from it: the listen address, the TLS context and the access policy."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from inclavare.services import netaddr
from inclavare.services.signature_server.auth import AccessPolicy, load_token_hashes
from inclavare.services.signature_server.common import (
    DEFAULT_LISTEN,
    SignatureServerError,
)

# --------------------------------------------------------------------------------------------------
# Configuration and the server


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; see the module docstring and ``signature-server --help``."""

    key_path: str
    listen: str = DEFAULT_LISTEN
    cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    tokens_file: str | None = None
    allow_cns: tuple[str, ...] = ()
    allow_fingerprints: tuple[str, ...] = ()
    audit_log: str | None = None
    allow_anyone: bool = False
    generate_key: bool = False


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address), ``[V6]:PORT`` or ``PORT`` -> (host, port)."""
    try:
        host, port, _ = netaddr.host_port(listen, default_host="")
    except ValueError:
        raise SignatureServerError(f"listen address {listen!r}: expected HOST:PORT with a port in 0..65535") \
            from None
    return host, port


_is_loopback = netaddr.is_loopback


def _tls_context(config: ServerConfig, policy: AccessPolicy) -> ssl.SSLContext:
    assert config.cert is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.cert, config.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise SignatureServerError(f"TLS certificate {config.cert} / key {config.tls_key}: "
                                   f"{getattr(e, 'strerror', None) or e}") from None
    if config.client_ca:
        try:
            ctx.load_verify_locations(cafile=config.client_ca)
        except (OSError, ssl.SSLError) as e:
            raise SignatureServerError(f"client CA {config.client_ca}: {getattr(e, 'strerror', None) or e}") \
                from None
        # With tokens as well, a client may come without a certificate; one it presents must still verify.
        ctx.verify_mode = ssl.CERT_OPTIONAL if policy.token_hashes else ssl.CERT_REQUIRED
    return ctx


def _policy_for(config: ServerConfig) -> AccessPolicy:
    if bool(config.cert) != bool(config.tls_key):
        raise SignatureServerError("HTTPS needs both --cert and --tls-key")
    if config.client_ca and not config.cert:
        raise SignatureServerError("--client-ca (mutual TLS) needs HTTPS: give --cert and --tls-key too")
    if (config.allow_cns or config.allow_fingerprints) and not config.client_ca:
        raise SignatureServerError("--allow-cn / --allow-fingerprint need --client-ca to verify client certificates")
    has_list = bool(config.tokens_file or config.client_ca)
    if config.allow_anyone and has_list:
        raise SignatureServerError("--allow-anyone contradicts --tokens-file / --client-ca; give one or the other")
    if not has_list and not config.allow_anyone:
        raise SignatureServerError("no allow-list: give --tokens-file and/or --client-ca [--allow-cn NAME], or "
                                   "--allow-anyone to sign for every client that can connect")
    fingerprints = set()
    for fp in config.allow_fingerprints:
        norm = fp.replace(":", "").strip().lower()
        if len(norm) != 64 or any(c not in "0123456789abcdef" for c in norm):
            raise SignatureServerError(f"--allow-fingerprint {fp!r}: expected a SHA-256 fingerprint (64 hex digits)")
        fingerprints.add(norm)
    tokens = load_token_hashes(config.tokens_file) if config.tokens_file else {}
    return AccessPolicy(token_hashes=tokens, mtls=bool(config.client_ca), allow_cns=frozenset(config.allow_cns),
                        allow_fingerprints=frozenset(fingerprints), allow_anyone=config.allow_anyone)
