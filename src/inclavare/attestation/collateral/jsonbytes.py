"""The exact bytes of a JSON document's top-level members, which Intel signs (TCB info, QE identity).

The loaders cut those bytes out of the served document and never parse-and-reserialise. The stdlib scanner
(scanstring for keys, raw_decode for values) finds the boundaries; positions are characters of the decoded
text and are mapped back to byte offsets of the document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.formats import strictjson

__all__ = ["DECODER", "JSON_WS", "MAX_DOCUMENT", "json_error", "members", "raw_json_value"]

JSON_WS = " \t\n\r"
_UTF8_BOM = b"\xef\xbb\xbf"
MAX_DOCUMENT = 16 * 1024 * 1024  # far above any collateral document PCS serves (a PCK CRL is a few hundred KiB)



# Duplicate members anywhere make "the" value ambiguous between parsers: fail closed.
DECODER = strictjson.DECODER


@dataclass(frozen=True)
class _Member:
    value: Any  # parsed
    raw: bytes  # exact bytes of the value in the document


def json_error(where: str, e: ValueError) -> CollateralError:
    if isinstance(e, json.JSONDecodeError):
        return CollateralError(f"{where}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    return CollateralError(f"{where}: invalid JSON: {e}")


def members(document: bytes, where: str) -> dict[str, _Member]:
    """The top-level members of a JSON object document, each with its parsed value and its exact bytes."""
    if not isinstance(document, bytes | bytearray | memoryview):
        raise CollateralError(f"{where}: expected bytes, got {type(document).__name__}")
    document = bytes(document)
    base = len(_UTF8_BOM) if document.startswith(_UTF8_BOM) else 0
    try:
        text = document[base:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise CollateralError(f"{where}: not UTF-8 text (bad byte at offset {base + e.start})") from None
    ascii_only = len(text) == len(document) - base

    def byte_at(i: int) -> int:
        return base + (i if ascii_only else len(text[:i].encode("utf-8")))

    def skip(i: int) -> int:
        while i < len(text) and text[i] in JSON_WS:
            i += 1
        return i

    def expect(i: int, ch: str, what: str) -> int:
        if i >= len(text) or text[i] != ch:
            got = "end of document" if i >= len(text) else repr(text[i])
            raise CollateralError(f"{where}: expected {what} at byte {byte_at(i)}, found {got}")
        return i + 1

    out: dict[str, _Member] = {}
    try:
        i = expect(skip(0), "{", "a JSON object")
        i = skip(i)
        if i < len(text) and text[i] == "}":
            i += 1
        else:
            while True:
                i = expect(i, '"', "a member name")
                key, i = json.decoder.scanstring(text, i, True)  # type: ignore[attr-defined]
                if key in out:
                    raise CollateralError(f"{where}: duplicate top-level member {key!r}")
                i = expect(skip(i), ":", "':'")
                start = skip(i)
                value, end = DECODER.raw_decode(text, start)
                out[key] = _Member(value, document[byte_at(start):byte_at(end)])
                i = skip(end)
                if i < len(text) and text[i] == ",":
                    i = skip(i + 1)
                    continue
                i = expect(i, "}", "',' or '}'")
                break
    except RecursionError:
        raise CollateralError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, duplicates, NaN/Infinity
        raise json_error(where, e) from None
    if skip(i) != len(text):
        raise CollateralError(f"{where}: unexpected data at byte {byte_at(skip(i))} after the JSON object")
    return out


def raw_json_value(document: bytes, key: str, *, where: str = "JSON document") -> bytes:
    """The exact bytes of the value of top-level member ``key`` of the JSON object ``document``, as they
    appear in it (whitespace, escapes and member order inside the value untouched)."""
    found = members(document, where)
    if key not in found:
        raise CollateralError(f"{where}: no top-level member {key!r}")
    return found[key].raw
