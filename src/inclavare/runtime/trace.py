"""Opt-in timing marks for performance work: RUNE_TRACE_FILE=/path appends "<monotonic ns> <pid> <label>"."""

from __future__ import annotations

import posix  # not os: this module is imported on every rune call
import time

_RAW = posix.environ.get(b"RUNE_TRACE_FILE")
_FILE = _RAW.decode() if _RAW else None


def mark(label: str) -> None:
    if _FILE:
        try:
            with open(_FILE, "a") as f:
                f.write(f"{time.monotonic_ns()} {posix.getpid()} {label}\n")
        except OSError:
            pass  # e.g. inside the container after pivot_root
