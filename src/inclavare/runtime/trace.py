"""Opt-in timing marks for performance work: RUNE_TRACE_FILE=/path appends "<monotonic ns> <pid> <label>".

The file is opened at the first mark and kept open (close-on-exec), so marks made after pivot_root -- in the
container's init, in an enclave runtime -- still reach it.
"""

from __future__ import annotations

import posix  # not os: this module is imported on every rune call
import time

_RAW = posix.environ.get(b"RUNE_TRACE_FILE")
_FILE = _RAW.decode() if _RAW else None
_fd = -1


def mark(label: str) -> None:
    global _fd
    if not _FILE:
        return
    try:
        if _fd < 0:
            _fd = posix.open(_FILE, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o644)
        posix.write(_fd, f"{time.monotonic_ns()} {posix.getpid()} {label}\n".encode())
    except OSError:
        pass
