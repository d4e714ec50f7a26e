"""signature-server: sign SGX enclave SIGSTRUCTs on behalf of clients that do not hold the signing key.

The HTTP API is upstream's (inclavare-containers ``shim/runtime/signature``), so its clients work unchanged:

    POST /api/v1/signature/pkcs1        body: the 256 bytes of SIGSTRUCT signing material (HEADER || BODY)
                                        200 {"signature": base64 big-endian PKCS#1 v1.5 SHA-256,
                                             "publicKey": PEM SubjectPublicKeyInfo}
    GET  /api/v1/signature/public-key   200 text/plain, the public key PEM
    GET  /ping                          200 "ping"
    GET  /healthz                       200 "ok"
    HEAD /                              200

What upstream does not have:

* HTTPS (``cert`` + ``tls_key``), and mutual TLS with ``client_ca``;
* an allow-list for signing: bearer tokens, stored only as SHA-256 hashes (``tokens_file``), and/or client
  certificates issued by ``client_ca``, optionally narrowed to subject CNs and SHA-256 fingerprints. A
  server without an allow-list refuses to start unless ``allow_anyone`` is set;
* an append-only, fsync'd JSON-lines audit log of every signing request (who, what enclave, outcome). A
  signature is only returned once its audit line is on disk;
* refusal of material that is not a SIGSTRUCT's HEADER || BODY: 400 with ``{"error": "..."}``.

Errors are JSON ``{"error": "..."}`` with 400 (malformed material or request), 401 (no or unknown
credentials), 403 (authenticated but not allowed), 404, 405, 411, 413 or 500.

:class:`SignatureClient` is the matching client (it always verifies the server's certificate).
"""

# The package splits the server by responsibility: common (constants, errors), audit, auth (tokens, policy),
# signing (material, key, signer), config, server (HTTP handler, server), client. Every public name is
# re-exported here, so `inclavare.services.signature_server` imports as before.

from inclavare.services.signature_server.audit import AuditLog
from inclavare.services.signature_server.auth import AccessPolicy, Decision, hash_token, load_token_hashes
from inclavare.services.signature_server.client import SignatureClient
from inclavare.services.signature_server.common import (
    API_PREFIX,
    DEFAULT_LISTEN,
    IO_TIMEOUT,
    MAX_BODY,
    MaterialError,
    SignatureServerError,
)
from inclavare.services.signature_server.config import ServerConfig, parse_listen
from inclavare.services.signature_server.server import SignatureServer, make_server
from inclavare.services.signature_server.signing import check_material, load_signing_key

__all__ = [
    "API_PREFIX",
    "DEFAULT_LISTEN",
    "IO_TIMEOUT",
    "MAX_BODY",
    "AccessPolicy",
    "AuditLog",
    "Decision",
    "MaterialError",
    "ServerConfig",
    "SignatureClient",
    "SignatureServer",
    "SignatureServerError",
    "check_material",
    "hash_token",
    "load_signing_key",
    "load_token_hashes",
    "make_server",
    "parse_listen",
]
