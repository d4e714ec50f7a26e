"""PEM text (RFC 7468): labelled base64 blocks between ``-----BEGIN L-----`` and ``-----END L-----`` lines.

One splitter for the formats that arrive as PEM (certificates, CRLs, chains in quotes, collateral and trust
folders, RA-TLS certificates). It is strict about the blocks themselves (matching labels, valid base64,
non-empty) and tolerant of what tools leave between them: whitespace, and the trailing NUL that Intel's
quoting enclave writes after a chain. Explanatory text between blocks (as ``openssl x509 -text`` writes it) is
accepted through ``allow_text``.

The markers are found with ``bytes.find`` rather than a regular expression: a quote's chain is split for every
verification, and a lazy regular expression over a few kilobytes of base64 costs several times more.

Errors come from the caller's ``fail(problem)`` factory so each user raises its own error type, naming its
own input.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["PemBlock", "blocks", "has_pem", "labels"]

_BEGIN = b"-----BEGIN "
_END = b"-----END "
_DASHES = b"-----"
_LABEL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
_WHITESPACE = b" \t\n\r\x0b\x0c"  # ASCII whitespace (what bytes.split() splits on)
_FILLER = b" \t\r\n\x00"

Fail = Callable[[str], Exception]


@dataclass(frozen=True)
class PemBlock:
    label: str  # e.g. "CERTIFICATE", "X509 CRL"
    der: bytes
    start: int  # offset of "-----BEGIN" in the input
    end: int  # offset just after the END marker


def _label_end(data: bytes, pos: int) -> int:
    """Where the label that starts at ``pos`` ends, if it is non-empty, of label characters only and "-----"
    follows it; else -1. (No label character is "-", so the label ends at the first "-----".)"""
    end = data.find(_DASHES, pos)
    return end if end > pos and not data[pos:end].translate(None, _LABEL_CHARS) else -1


def _markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, label end) of each ``-----BEGIN <label>-----`` marker of ``data``, in order."""
    pos = 0
    while (start := data.find(_BEGIN, pos)) >= 0:
        pos = start + 1
        if (end := _label_end(data, start + len(_BEGIN))) >= 0:
            yield start, end


def has_pem(data: bytes) -> bool:
    """Whether ``data`` holds at least one PEM BEGIN marker."""
    return next(_markers(bytes(data)), None) is not None


def labels(data: bytes) -> list[str]:
    """The labels of the BEGIN markers in ``data``, in order (no decoding, no checks)."""
    data = bytes(data)
    return [data[start + len(_BEGIN):end].decode("ascii") for start, end in _markers(data)]


def _text_at(data: bytes, start: int, end: int) -> int:
    """The offset of the first byte of ``data[start:end]`` that is neither whitespace nor NUL, or -1."""
    rest = data[start:end].lstrip(_FILLER)
    return end - len(rest) if rest else -1


def _problem(data: bytes, n: int, name: str, body_start: int, end_at: int) -> str:
    """What is wrong with PEM block ``n``, which did not read (the slow path, for the message only)."""
    body = data[body_start:end_at]
    if end_at < 0 or _BEGIN in body:
        return f"PEM block {n} ({name}) has no END line"
    end_label_end = _label_end(data, end_at + len(_END))
    if end_label_end < 0:
        return f"PEM block {n} ({name}) has a malformed END line"
    end_label = data[end_at + len(_END):end_label_end].decode("ascii")
    if end_label != name:
        return f"PEM block {n} begins as {name!r} but ends as {end_label!r}"
    return f"PEM block {n} ({name}) is not valid base64"


def blocks(data: bytes, fail: Fail, *, allow_text: bool = False) -> list[PemBlock]:
    """Every PEM block of ``data``, decoded. Raises ``fail(problem)`` for a BEGIN marker without its END line,
    a block whose END label differs from its BEGIN label, whose body is not valid base64 or is empty, and
    (unless ``allow_text``) for anything but whitespace or NUL bytes outside the blocks."""
    data = bytes(data)
    out: list[PemBlock] = []
    pos = 0  # the end of the last block
    for start, label_end in _markers(data):
        n = len(out) + 1
        if not allow_text and (text := _text_at(data, pos, start)) >= 0:
            raise fail(f"unexpected text before PEM block {n}, at offset {text}")
        label = data[start + len(_BEGIN):label_end]
        name = label.decode("ascii")
        body_start = label_end + len(_DASHES)
        end_at = data.find(_END, body_start)
        body = data[body_start:end_at]
        stop = end_at + len(_END) + len(label)
        try:  # strict mode refuses any character outside the base64 alphabet, and misplaced padding
            der = binascii.a2b_base64(body.translate(None, _WHITESPACE), strict_mode=True)
        except (binascii.Error, ValueError):
            der = None
        if der is None or end_at < 0 or not data.startswith(label + _DASHES, end_at + len(_END)):
            raise fail(_problem(data, n, name, body_start, end_at))
        if not der:
            raise fail(f"PEM block {n} ({name}) is empty")
        pos = stop + len(_DASHES)
        out.append(PemBlock(name, der, start, pos))
    if not allow_text and (text := _text_at(data, pos, len(data))) >= 0:
        raise fail(f"unexpected text after the last PEM block, at offset {text}" if out else "no PEM block")
    return out
