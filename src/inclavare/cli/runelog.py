"""`rune --log FILE --log-format text|json [--debug]`: log lines as runc writes them through logrus.

Engines read these lines: containerd's runc shim decodes every line of ``log.json`` into
``{Level, Msg, Time}`` (``Time`` as an RFC 3339 time) and reports the last ``level=error`` message;
podman reads its ``oci-log`` as one JSON object. So the formats follow logrus exactly:

- json: one object per line, keys in sorted order (Go's encoding/json sorts map keys), ``<``, ``>``,
  ``&``, U+2028 and U+2029 escaped as ``\\u003c`` ... as encoding/json does, ``time`` in RFC 3339 with
  seconds and the local offset (``Z`` for UTC).
- text: ``time="..." level=error msg="..."`` then extra fields in sorted order; a value is quoted
  (Go ``%q``) unless it is made only of letters, digits and ``-._/@^+``.

Without ``--log``, ``--debug`` lines go to stderr in the chosen format, as runc's; warnings keep the
project's CLI form ``rune: warning: <message>``, and the final error is printed by the CLI as
``rune: <message>`` (so it is not repeated). Debug lines are only formatted with ``--debug``.
"""

from __future__ import annotations

import time

from inclavare import _fastos as fos
from inclavare.formats import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMATS = ("text", "json")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")
_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               "\\": "\\\\", '"': '\\"'}
_HTML_SAFE = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def rfc3339_now(now: float | None = None) -> str:
    """logrus' default timestamp: RFC 3339, whole seconds, local offset (``Z`` when it is UTC)."""
    lt = time.localtime(time.time() if now is None else now)
    off = lt.tm_gmtoff or 0
    if off == 0:
        tz = "Z"
    else:
        sign = "+" if off > 0 else "-"
        off = abs(off)
        tz = f"{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + tz


def go_quote(s: str) -> str:
    """Go's ``%q`` of a string (strconv.Quote) for the characters a log message holds."""
    out = ['"']
    for ch in s:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable() and ch not in (" ",):
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _text_value(v: str) -> str:
    if v and all(c in _PLAIN for c in v):
        return v
    return go_quote(v) if v else ""


def format_line(fmt: str, level: str, msg: str, fields: dict[str, str] | None = None, now: float | None = None) -> str:
    """One log line (no newline) in logrus' ``json`` or ``text`` format."""
    ts = rfc3339_now(now)
    if fmt == "json":
        data: dict[str, Any] = dict(fields or {})
        data.update(level=level, msg=msg, time=ts)
        line = json.dumps({k: data[k] for k in sorted(data)})
        for raw, esc in _HTML_SAFE:
            if raw in line:
                line = line.replace(raw, esc)
        return line
    parts = [f"time={_text_value(ts)}", f"level={_text_value(level)}", f"msg={_text_value(msg)}"]
    for k in sorted(fields or {}):
        parts.append(f"{k}={_text_value(str((fields or {})[k]))}")
    return " ".join(parts)


class Logger:
    """The callable ``log(level, msg, **fields)`` given to the runtime; ``debug``: are debug lines wanted."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        from inclavare.errors import InclavareError

        if fmt not in FORMATS:
            raise InclavareError(f"invalid log-format: {fmt} (text or json)")
        # absolute now: `create` changes into the bundle directory before anything is logged
        self.path = fos.path.abspath(path) if path else None
        self.fmt = fmt
        self.debug = debug
        self.fd: int | None = None

    @staticmethod
    def _stderr(data: bytes) -> None:
        try:
            fos.write(2, data)
        except OSError:
            pass

    def __call__(self, level: str, msg: str, **fields: str) -> None:
        if level == "debug" and not self.debug:
            return
        if self.path is None and level != "debug":
            if level != "error":  # the CLI prints the error itself, as "rune: <message>"
                extra = "".join(f" ({k}: {v})" for k, v in sorted(fields.items()))
                self._stderr(f"rune: {level}: {msg}{extra}\n".encode())
            return
        line = (format_line(self.fmt, level, msg, fields) + "\n").encode()
        try:
            if self.path is None:
                fos.write(2, line)
                return
            if self.fd is None:
                self.fd = fos.open(self.path, fos.O_WRONLY | fos.O_APPEND | fos.O_CREAT | fos.O_CLOEXEC, 0o644)
            fos.write(self.fd, line)
        except OSError:
            pass
