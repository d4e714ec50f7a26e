"""RATS-TLS connections: TLS (1.2 or 1.3, 1.3 preferred) whose certificates carry TEE evidence.

Configure once (:class:`RatsTlsConfig`), then per connection:

* blocking: ``h = RatsTls(config, server_side)``, ``h.negotiate(sock)``, ``h.transmit(data)``,
  ``h.receive(n)``, ``h.close()``;
* asyncio: ``h = AsyncRatsTls(config, server_side)``, ``await h.negotiate(reader, writer)`` (or
  ``await h.negotiate(sock)`` for a non-blocking socket), ``await h.transmit(data)``, ``await h.receive(n)``,
  ``await h.close()``; TLS runs over memory BIOs;
* socket style: ``s = wrap_socket(sock, config, server_side=...)`` gives ``send``, ``sendall``, ``recv``,
  ``recv_into``, ``makefile``, ``peer_claims``, ``getpeercert``, ``close``, so existing servers and clients
  (socketserver, http.client, ...) speak RATS-TLS unchanged.

Roles follow rats-tls: the server always presents an attested certificate and the client always verifies it;
with ``mutual`` the client presents one too and the server verifies it. One-way attestation is the default
(the client then needs no attester; ``nullattester`` says so explicitly). Certificates are made by the
configured attester once per configuration and reused, or per connection with ``freshness`` (below).

Peer certificates are judged in OpenSSL's verify callback (RA-TLS certificates are self-signed), so a rejected
peer gets a TLS alert and the handshake fails with :class:`PeerRejected` saying why. The blocking form runs TLS in
Python's ``ssl`` module (bulk data at its speed) and sets that callback, and the session cache off, on the
module's OpenSSL objects through ctypes; where those cannot be reached, and in the asyncio form, pyOpenSSL runs
it. Sessions are never resumed (no tickets, no session cache): every handshake
carries and verifies evidence.

Freshness (opt-in, beyond rats-tls; docs/ratls.md has the protocol): before the TLS handshake each verifying
side sends a random nonce on the plain socket, the attesting side puts it in its certificate's claims as the
``nonce`` custom claim (CCC interoperable RA-TLS), and the verifier accepts only evidence carrying its own
nonce, so a certificate captured from an earlier connection is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inclavare.ratls.tls.blocking import RatsTls
from inclavare.ratls.tls.config import CRYPTO as CRYPTO
from inclavare.ratls.tls.config import NULLATTESTER as NULLATTESTER
from inclavare.ratls.tls.config import RatsTlsConfig
from inclavare.ratls.tls.core import _SslConnection as _SslConnection
from inclavare.ratls.tls.errors import FreshnessError, PeerRejected, RatsTlsError, RatsTlsTimeout
from inclavare.ratls.tls.freshness import FLAG_MUTUAL as FLAG_MUTUAL
from inclavare.ratls.tls.freshness import FRESHNESS_HEADER as FRESHNESS_HEADER
from inclavare.ratls.tls.freshness import (
    FRESHNESS_MAGIC,
    FRESHNESS_VERSION,
    decode_freshness_hello,
    encode_freshness_hello,
)
from inclavare.ratls.tls.freshness import NONCE_SIZE as NONCE_SIZE
from inclavare.ratls.tls.material import _load_material as _load_material
from inclavare.ratls.tls.sockets import RatsTlsSocket, wrap_socket
from inclavare.ratls.tls.sockets import certificate_fingerprint as certificate_fingerprint

__all__ = [
    "FRESHNESS_MAGIC",
    "FRESHNESS_VERSION",
    "AsyncRatsTls",
    "FreshnessError",
    "PeerRejected",
    "RatsTls",
    "RatsTlsConfig",
    "RatsTlsError",
    "RatsTlsSocket",
    "RatsTlsTimeout",
    "decode_freshness_hello",
    "encode_freshness_hello",
    "wrap_socket",
]


if TYPE_CHECKING:
    from inclavare.ratls.tls.aio import AsyncRatsTls


def __getattr__(name: str) -> Any:
    """``AsyncRatsTls`` is imported on first use: asyncio costs ~70 ms that blocking users (rune's in-enclave
    server, inclavared, shelter) never need."""
    if name == "AsyncRatsTls":
        from inclavare.ratls.tls.aio import AsyncRatsTls

        return AsyncRatsTls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
