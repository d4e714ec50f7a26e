"""Opt-in timing marks for performance work: RUNE_TRACE_FILE=/path appends "<monotonic ns> <pid> <label>"."""

from __future__ import annotations

import os
import time

_FILE = os.environ.get("RUNE_TRACE_FILE")


def mark(label: str) -> None:
    if _FILE:
        try:
            with open(_FILE, "a") as f:
                f.write(f"{time.monotonic_ns()} {os.getpid()} {label}\n")
        except OSError:
            pass  # e.g. inside the container after pivot_root
