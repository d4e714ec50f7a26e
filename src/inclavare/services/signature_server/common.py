"""Constants, the logger and the error types the signature server's modules share."""

from __future__ import annotations

import logging

from inclavare.errors import InclavareError

log = logging.getLogger("inclavare.signature_server")

API_PREFIX = "/api/v1/signature"
DEFAULT_LISTEN = ":9080"
MAX_BODY = 64 << 10  # bodies beyond this are refused without being read
IO_TIMEOUT = 30.0  # seconds a client may take for the TLS handshake or one request
MAX_CONNECTIONS = 1024  # concurrent connections; beyond that a client is answered 503 (HTTP) or closed (TLS)


class SignatureServerError(InclavareError):
    """The signature server cannot be configured or started, or a request to one failed."""


class MaterialError(InclavareError):
    """A signing request's body is not SIGSTRUCT signing material; the message says what is wrong."""
