"""The freshness exchange's codec (opt-in, beyond rats-tls; docs/ratls.md has the protocol): before the TLS
handshake each verifying side sends a random nonce on the plain socket, version 1 framed as magic(4) version(1)
flags(1) nonce length(1) nonce(length).
"""

from __future__ import annotations

import struct

from inclavare.ratls.tls.errors import FreshnessError

FRESHNESS_MAGIC = b"RTFN"
FRESHNESS_VERSION = 1
FRESHNESS_HEADER = struct.Struct(">4sBBB")
FLAG_MUTUAL = 0x01
NONCE_SIZE = 32
NONCE_MIN, NONCE_MAX = 16, 64
TLS_HANDSHAKE_RECORD = 0x16


def encode_freshness_hello(mutual: bool, nonce: bytes | None) -> bytes:
    """One side's freshness hello: magic, version, flags (bit 0: mutual), nonce length, nonce."""
    nonce = nonce or b""
    if nonce and not NONCE_MIN <= len(nonce) <= NONCE_MAX:
        raise FreshnessError(f"freshness: a nonce is {NONCE_MIN}..{NONCE_MAX} bytes, not {len(nonce)}")
    return FRESHNESS_HEADER.pack(FRESHNESS_MAGIC, FRESHNESS_VERSION, FLAG_MUTUAL if mutual else 0, len(nonce)) + nonce


def decode_freshness_hello(header: bytes) -> tuple[bool, int]:
    """(peer is mutual, nonce length) from the 7-byte header; raises :class:`FreshnessError`."""
    if len(header) < FRESHNESS_HEADER.size:
        raise FreshnessError("freshness: the peer closed the connection during the freshness exchange (is "
                             "freshness enabled on both sides?)")
    magic, version, flags, length = FRESHNESS_HEADER.unpack(header[:FRESHNESS_HEADER.size])
    if magic != FRESHNESS_MAGIC:
        if header[0] == TLS_HANDSHAKE_RECORD or header[0] == 0x15:
            raise FreshnessError("freshness: the peer started TLS without the freshness exchange; enable "
                                 "freshness on both sides")
        raise FreshnessError(f"freshness: bad hello magic {magic.hex()} (expected {FRESHNESS_MAGIC.hex()})")
    if version != FRESHNESS_VERSION:
        raise FreshnessError(f"freshness: the peer speaks version {version}, this side version "
                             f"{FRESHNESS_VERSION}")
    if flags & ~FLAG_MUTUAL:
        raise FreshnessError(f"freshness: unknown flags {flags:#04x} in the peer's hello")
    if length and not NONCE_MIN <= length <= NONCE_MAX:
        raise FreshnessError(f"freshness: the peer's nonce is {length} bytes ({NONCE_MIN}..{NONCE_MAX} allowed)")
    return bool(flags & FLAG_MUTUAL), length
