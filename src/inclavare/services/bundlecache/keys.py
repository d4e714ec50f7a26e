"""Cache keys: SHA-256 over a canonical encoding of a level and its inputs.

The encoding is JSON with sorted keys, no insignificant whitespace, ASCII only (``\\uXXXX`` escapes) and no
floats (their text is not canonical), of the object::

    {"domain": "inclavare-bundle-cache", "version": 1, "level": "L1", "inputs": {...}}

The key is the lower-case hex SHA-256 of those bytes. The domain and version make keys of this scheme unlike
any other hash of the same inputs; the level is hashed too, so the same inputs at two levels never collide.

Levels chain as upstream's shim-rune does: L0 is keyed by the image digest (``image_digest``, ``sha256:`` and
64 hex digits); L1 by the L0 key (``l0``) and the carrier configuration (``carrier``, any JSON value); L2 by
the L1 key (``l1``) and the signing key (``signing_key``, e.g. the SHA-256 of the public key or MRSIGNER).
Other inputs may be added at any level (they become part of the key).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

from inclavare.services.bundlecache.errors import BundleCacheError

L0, L1, L2 = "L0", "L1", "L2"
LEVELS = (L0, L1, L2)
DOMAIN = "inclavare-bundle-cache"
VERSION = 1
MAX_INPUTS = 64 << 10  # canonical encoding of one key's inputs, bytes
MAX_DEPTH = 16

_KEY_RE = re.compile(r"[0-9a-f]{64}")
_IMAGE_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_REQUIRED: dict[str, dict[str, re.Pattern[str] | None]] = {
    L0: {"image_digest": _IMAGE_DIGEST_RE},
    L1: {"l0": _KEY_RE, "carrier": None},
    L2: {"l1": _KEY_RE, "signing_key": None},
}


def is_key(text: object) -> bool:
    """Whether ``text`` has the shape of a cache key (64 lower-case hex digits)."""
    return isinstance(text, str) and _KEY_RE.fullmatch(text) is not None


def canonical_inputs(level: str, key_inputs: Mapping[str, object]) -> bytes:
    """The canonical bytes hashed into the key of ``key_inputs`` at ``level`` (see the module docstring)."""
    if level not in LEVELS:
        raise BundleCacheError(f"cache level {level!r}: not one of {', '.join(LEVELS)}")
    if not isinstance(key_inputs, Mapping):
        raise BundleCacheError(f"cache {level} key inputs: must be a mapping, not {type(key_inputs).__name__}")
    for name, pattern in _REQUIRED[level].items():
        if name not in key_inputs:
            raise BundleCacheError(f"cache {level} key inputs: {name!r} is missing")
        value = key_inputs[name]
        if pattern is not None and (not isinstance(value, str) or not pattern.fullmatch(value)):
            raise BundleCacheError(f"cache {level} key inputs: {name!r} must match {pattern.pattern} "
                                   f"(got {value!r:.80})")
    _check_value(key_inputs, f"cache {level} key inputs", 0)
    doc = {"domain": DOMAIN, "version": VERSION, "level": level, "inputs": dict(key_inputs)}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    if len(data) > MAX_INPUTS:
        raise BundleCacheError(f"cache {level} key inputs: {len(data)} bytes encoded, more than {MAX_INPUTS}")
    return data


def derive_key(level: str, key_inputs: Mapping[str, object]) -> str:
    """The cache key (64 hex digits) of ``key_inputs`` at ``level``."""
    return hashlib.sha256(canonical_inputs(level, key_inputs)).hexdigest()


def _check_value(value: object, where: str, depth: int) -> None:
    """Refuse what has no single canonical JSON text: floats, non-string keys, bytes, other objects."""
    if depth > MAX_DEPTH:
        raise BundleCacheError(f"{where}: nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise BundleCacheError(f"{where}: key {k!r} is not a string")
            _check_value(v, f"{where}.{k}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]", depth + 1)
        return
    raise BundleCacheError(f"{where}: a {type(value).__name__} has no canonical encoding "
                           f"(use str, int, bool, None, lists and string-keyed dicts)")
