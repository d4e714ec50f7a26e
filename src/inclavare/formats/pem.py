"""PEM text (RFC 7468): labelled base64 blocks between ``-----BEGIN L-----`` and ``-----END L-----`` lines.

One splitter for the formats that arrive as PEM (certificates, CRLs, chains in collateral and trust folders).
It is strict about the blocks themselves (matching labels, valid base64, non-empty) and tolerant of what
tools leave between them: whitespace, and the trailing NUL that Intel's quoting enclave writes after a chain.
Explanatory text between blocks (as ``openssl x509 -text`` writes it) is reported through ``allow_text``.

Errors come from the caller's ``fail(problem)`` factory so each user raises its own error type, naming its
own input.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PemBlock", "blocks", "has_pem", "labels"]

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\s]*?)-----END ([A-Z0-9 ]+)-----")
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_FILLER = b" \t\r\n\x00"

Fail = Callable[[str], Exception]


@dataclass(frozen=True)
class PemBlock:
    label: str  # e.g. "CERTIFICATE", "X509 CRL"
    der: bytes
    start: int  # offset of "-----BEGIN" in the input
    end: int  # offset just after the END marker


def has_pem(data: bytes) -> bool:
    """Whether ``data`` holds at least one PEM BEGIN marker."""
    return _BEGIN.search(data) is not None


def labels(data: bytes) -> list[str]:
    """The labels of the BEGIN markers in ``data``, in order (no decoding, no checks)."""
    return [m[1].decode("ascii") for m in _BEGIN.finditer(data)]


def blocks(data: bytes, fail: Fail, *, allow_text: bool = False) -> list[PemBlock]:
    """Every PEM block of ``data``, decoded. Raises ``fail(problem)`` for a block whose END label differs from
    its BEGIN label, whose body is not valid base64 or is empty, for a BEGIN marker without its block, and
    (unless ``allow_text``) for anything but whitespace or NUL bytes outside the blocks."""
    out: list[PemBlock] = []
    pos = 0
    for m in _BLOCK.finditer(data):
        n = len(out) + 1
        if not allow_text and data[pos:m.start()].strip(_FILLER):
            raise fail(f"unexpected text before PEM block {n}")
        if _BEGIN.search(data, pos, m.start()):
            raise fail(f"PEM block {n} has no END line")
        if m[1] != m[3]:
            raise fail(f"PEM block {n} begins as {m[1].decode()!r} but ends as {m[3].decode()!r}")
        try:
            der = base64.b64decode(b"".join(m[2].split()), validate=True)
        except (binascii.Error, ValueError):
            raise fail(f"PEM block {n} ({m[1].decode()}) is not valid base64") from None
        if not der:
            raise fail(f"PEM block {n} ({m[1].decode()}) is empty")
        out.append(PemBlock(m[1].decode("ascii"), der, m.start(), m.end()))
        pos = m.end()
    rest = data[pos:]
    if _BEGIN.search(rest):
        raise fail(f"PEM block {len(out) + 1} has no END line or a body that is not base64")
    if not allow_text and rest.strip(_FILLER):
        raise fail("unexpected text after the last PEM block" if out else "no PEM block")
    return out
