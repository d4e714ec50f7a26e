"""Strict JSON for documents that a verifier or a service must not read differently from another parser: a member
name twice in one object (two parsers may keep different ones) and NaN / Infinity (not JSON, RFC 8259), also in
disguise as a number too large for a double (``1e999``, which Python would read as infinity), are refused. The
stdlib's decoder does the parsing; these are its hooks, written once.
"""

from __future__ import annotations

import json
import math
from typing import Any


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members as a dict; ValueError naming the first name that appears twice."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return out


def no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent as a float; ValueError if it is out of a double's range."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]!r} is out of range")
    return value


# json.loads(text, object_pairs_hook=..., parse_constant=...) builds this for every call; it keeps no state between
# documents (the scanner's key memo is emptied after each one)
DECODER = json.JSONDecoder(object_pairs_hook=unique_members, parse_constant=no_constants, parse_float=finite_float)


def loads(text: str | bytes) -> Any:
    """Parse ``text`` strictly (bytes: UTF-8, UTF-16 or UTF-32 as json.loads detects). ValueError
    (json.JSONDecodeError for syntax, with its position), RecursionError for absurd nesting."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode(json.detect_encoding(bytes(text)), "surrogatepass")
    return DECODER.decode(text)
