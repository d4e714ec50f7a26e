"""The part of :mod:`os` that `rune`'s hot path needs, built on the ``posix`` builtin.

``import os`` (with ``posixpath``, ``stat``, ``_collections_abc``) costs about 2 ms, and `rune` is
started 3-4 times per container lifecycle. Modules on the hot path (the CLI, the lifecycle and the
state store) do ``from inclavare import _fastos as fos``: the ``posix`` functions are the same objects
``os`` re-exports, and ``os.path`` is replaced by the few pure functions below, with posixpath's
semantics. Everything else imports the real ``os`` where it needs it.
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.
import _stat
from posix import *  # noqa: F403 - the functions os re-exports from posix
from posix import _exit as _exit  # not in posix.__all__, so not covered by the star import
from posix import getcwd, lstat
from posix import stat as _posix_stat

sep = "/"


def _join(a: str, *parts: str) -> str:
    out = a
    for p in parts:
        if p.startswith("/"):
            out = p
        elif not out or out.endswith("/"):
            out += p
        else:
            out += "/" + p
    return out


def _normpath(p: str) -> str:
    if not p:
        return "."
    initial = 2 if p.startswith("//") and not p.startswith("///") else 1 if p.startswith("/") else 0
    comps: list[str] = []
    for c in p.split("/"):
        if c in ("", "."):
            continue
        if c != ".." or (not initial and not comps) or (comps and comps[-1] == ".."):
            comps.append(c)
        elif comps:
            comps.pop()
    out = "/".join(comps)
    if initial:
        out = "/" * initial + out
    return out or "."


def _abspath(p: str) -> str:
    return _normpath(p if p.startswith("/") else _join(getcwd(), p))


def _relpath(p: str, start: str = ".") -> str:
    if not p:
        raise ValueError("no path specified")
    start_parts = [x for x in _abspath(start).split("/") if x]
    parts = [x for x in _abspath(p).split("/") if x]
    i = 0
    while i < min(len(start_parts), len(parts)) and start_parts[i] == parts[i]:
        i += 1
    rel = [".."] * (len(start_parts) - i) + parts[i:]
    return "/".join(rel) if rel else "."


def _exists(p: str) -> bool:
    try:
        _posix_stat(p)
    except (OSError, ValueError):
        return False
    return True


def _isdir(p: str) -> bool:
    try:
        return _stat.S_ISDIR(_posix_stat(p).st_mode)
    except (OSError, ValueError):
        return False


def _islink(p: str) -> bool:
    try:
        return _stat.S_ISLNK(lstat(p).st_mode)
    except (OSError, ValueError):
        return False


def _dirname(p: str) -> str:
    i = p.rfind("/") + 1
    head = p[:i]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def _basename(p: str) -> str:
    return p[p.rfind("/") + 1:]


class path:  # noqa: N801 - stands in for the os.path module
    join = staticmethod(_join)
    normpath = staticmethod(_normpath)
    abspath = staticmethod(_abspath)
    relpath = staticmethod(_relpath)
    exists = staticmethod(_exists)
    isdir = staticmethod(_isdir)
    islink = staticmethod(_islink)
    dirname = staticmethod(_dirname)
    basename = staticmethod(_basename)
