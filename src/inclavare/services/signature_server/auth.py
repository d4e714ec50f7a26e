"""Who may sign: bearer tokens (stored as SHA-256 hashes) and client certificates, as one AccessPolicy."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from inclavare.services.signature_server.common import SignatureServerError


def hash_token(token: str) -> str:
    """The hex SHA-256 of a bearer token, as the tokens file lists it."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_token_hashes(path: str) -> dict[str, str]:
    """Read a tokens file: one ``<sha256 hex of the token> [label]`` per line; ``#`` starts a comment.

    Returns {hash: label}; the label (default: the hash's first 12 digits) names the client in the audit log."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SignatureServerError(f"tokens file {path}: {getattr(e, 'strerror', None) or e}") from None
    out: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        digest, _, label = text.partition(" ")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise SignatureServerError(f"tokens file {path}:{number}: expected the SHA-256 hex (64 digits) of a "
                                       "token, then an optional label")
        if digest in out:
            raise SignatureServerError(f"tokens file {path}:{number}: the same token hash is listed twice")
        out[digest] = label.strip() or digest[:12]
    if not out:
        raise SignatureServerError(f"tokens file {path}: lists no token hashes")
    return out


def _cn_of(peercert: dict[str, Any]) -> str:
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@dataclass(frozen=True)
class Decision:
    """What the allow-list says about a request: HTTP status (200 = allowed), client identity, reason."""

    status: int
    identity: str
    reason: str = ""


@dataclass(frozen=True)
class AccessPolicy:
    """Who may get material signed.

    ``token_hashes``: {sha256 hex: label}. ``mtls``: client certificates (verified by the TLS layer against the
    client CA) grant access; ``allow_cns`` / ``allow_fingerprints`` (SHA-256 of the DER certificate, hex)
    narrow that to the listed certificates (any listed CN or fingerprint is enough). ``allow_anyone``: no
    allow-list at all (upstream's behaviour)."""

    token_hashes: dict[str, str] = field(default_factory=dict)
    mtls: bool = False
    allow_cns: frozenset[str] = frozenset()
    allow_fingerprints: frozenset[str] = frozenset()
    allow_anyone: bool = False

    def decide(self, authorization: str | None, peercert: dict[str, Any] | None, peer_der: bytes | None) -> Decision:
        """Check a request's ``Authorization`` header and its verified client certificate (if any)."""
        if self.allow_anyone:
            return Decision(200, "anonymous")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return Decision(401, "unauthenticated", "malformed Authorization header (expected: Bearer TOKEN)")
            if not self.token_hashes:
                return Decision(401, "unauthenticated", "this server does not accept bearer tokens")
            digest = hash_token(token)
            label = None
            for known, name in self.token_hashes.items():
                if hmac.compare_digest(known, digest):
                    label = name
            if label is None:
                return Decision(401, "unauthenticated", "unknown bearer token")
            return Decision(200, f"token:{label}")
        if self.mtls and peercert and peer_der:
            cn = _cn_of(peercert)
            fingerprint = hashlib.sha256(peer_der).hexdigest()
            who = f"cert:CN={cn};sha256={fingerprint}"
            if not self.allow_cns and not self.allow_fingerprints:
                return Decision(200, who)
            if cn in self.allow_cns or fingerprint in self.allow_fingerprints:
                return Decision(200, who)
            return Decision(403, who, f"client certificate CN={cn!r} (sha256 {fingerprint}) is not on the "
                                      "allow-list")
        wanted = " or ".join(w for w, on in (("a bearer token", bool(self.token_hashes)),
                                             ("a client certificate", self.mtls)) if on)
        return Decision(401, "unauthenticated", f"authentication required: {wanted}")
