"""Container ids, as runc accepts them: ``^[\\w+-\\.]+$`` (Go RE2, ASCII ``\\w``; inside the class ``+-\\.`` is
the range '+'..'.', so ',' is accepted as well), not "." or "..". An id names the container's state directory,
so it must also fit in one file name (NAME_MAX, 255 bytes; runc fails later with "file name too long").
Only a C module is imported: the runtime checks every id it is given, on every call."""

from _json import encode_basestring_ascii as _quote

CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+,-.")
MAX_LENGTH = 255


def problem(cid: str) -> "tuple[str, str] | None":
    """None for a valid id, else (what, why) for a one-line error: what names the id (shortened if long)."""
    if not cid:
        return "container id", "must not be empty"
    if len(cid) > MAX_LENGTH:
        return f"container id {_quote(cid[:32])}... ({len(cid)} characters)", f"longer than {MAX_LENGTH} characters"
    if cid in (".", "..") or not set(cid) <= CHARS:
        return f"container id {_quote(cid)}", "must match [A-Za-z0-9_+,.-]+"
    return None
