"""The errors of RATS-TLS connections."""

from __future__ import annotations

from inclavare.ratls.dice import RatlsError


class RatsTlsError(RatlsError, OSError):
    """A RATS-TLS connection failed (handshake, freshness exchange, I/O). Also an OSError, like ``ssl.SSLError``,
    so socket servers treat it as a failed connection."""


class PeerRejected(RatsTlsError):
    """This side rejected the peer's certificate or evidence; the message says why."""


class FreshnessError(RatsTlsError):
    """The freshness exchange before the handshake failed."""


class RatsTlsTimeout(RatsTlsError, TimeoutError):
    """A receive or transmit timed out (the socket's timeout); the connection stays usable."""
