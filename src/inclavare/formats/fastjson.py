"""JSON for the runtime's hot path, through CPython's own C accelerator (``_json``).

``import json`` pulls in ``re`` and ``enum`` (about 12 ms here), and `rune` is started 3-4 times per
container lifecycle. The parsing and string escaping below are the stdlib's C implementation, the
same code ``json`` runs; only the Python wrapper is skipped. On a parse error we re-parse with the
real ``json`` module so callers get its ``JSONDecodeError`` (line, column, message).
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.
import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _constant(name: str) -> "Any":
    raise ValueError(f"invalid JSON constant {name}")


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = staticmethod(lambda literal: _finite(literal))  # _finite is defined below
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed context, as json does
_WS = " \t\n\r"


def loads(text: str | bytes) -> "Any":
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    idx = 0
    n = len(text)
    while idx < n and text[idx] in _WS:
        idx += 1
    try:
        obj, end = _scan(text, idx)
    except (StopIteration, ValueError, SystemError):
        # SystemError: _json's error path needs json.decoder, which is not imported here
        end = -1
    if end >= 0:
        while end < n and text[end] in _WS:
            end += 1
        if end == n:
            return obj
    import json

    try:
        return json.loads(text, parse_constant=_refuse, parse_float=_finite)  # JSONDecodeError has the position
    except NonStandardNumber:
        pass
    # NaN, Infinity, -Infinity or a number beyond a double somewhere (RFC 8259 has no such numbers): say where
    raise NonStandardNumber(*_nonfinite(json.loads(text, parse_constant=_Spelled, parse_float=_spelled), ""))


class NonStandardNumber(ValueError):
    """NaN, Infinity or -Infinity in the text: ``path`` (``a.b[2].c``, "" for the top) and ``constant``."""

    def __init__(self, path: str = "", constant: str = "") -> None:
        super().__init__(f"{path or 'the document'}: {constant} is not a JSON number")
        self.path, self.constant = path, constant


def _refuse(name: str) -> "Any":
    raise NonStandardNumber("", name)


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (_INF, -_INF):
        raise NonStandardNumber("", literal)
    return value


class _Spelled(str):
    """A number JSON cannot carry, as the text spelled it (what the path search looks for)."""


def _spelled(literal: str) -> "Any":
    value = float(literal)
    return _Spelled(literal) if value in (_INF, -_INF) else value


_INF = float("inf")


def _nonfinite(obj: "Any", path: str) -> "tuple[str, str]":
    """The first number JSON cannot carry in ``obj`` (parsed with them as _Spelled): its path and spelling."""
    if isinstance(obj, _Spelled):
        return path, str(obj)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _nonfinite(v, f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}" if path else str(k))
        if found[1]:
            return found
    return path, ""


_encode_str = _json.encode_basestring
_compact = _json.make_encoder(None, None, _encode_str, None, ":", ",", False, False, False)  # type: ignore[arg-type]
_ascii = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, False)  # type: ignore[arg-type]


def dumps(obj: "Any") -> str:
    """Compact JSON (no spaces), UTF-8 characters kept."""
    return "".join(_compact(obj, 0))


def quote(s: "Any") -> str:
    """A value as JSON for error messages: quoted, escaped, ASCII only (like json.dumps)."""
    return _json.encode_basestring_ascii(s) if isinstance(s, str) else "".join(_ascii(s, 0))


def _key(k: "Any") -> str:
    """A dict key as json writes it: true/false/null for those constants, str() otherwise."""
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    return str(k)


def dumps_pretty(obj: "Any", indent: str = "  ", level: int = 0) -> str:
    """Indented JSON like Go's json.MarshalIndent (runc's `state` output)."""
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        pad = indent * (level + 1)
        items = [f"{pad}{_encode_str(_key(k))}: {dumps_pretty(v, indent, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent * level + "}"
    if isinstance(obj, list | tuple):
        if not obj:
            return "[]"
        pad = indent * (level + 1)
        return "[\n" + ",\n".join(pad + dumps_pretty(v, indent, level + 1) for v in obj) + "\n" + indent * level + "]"
    return dumps(obj)
