"""Writing a file so that readers see the old content or the new, never a part: a private temporary file
in the same directory, fsync, rename (and optionally fsync of the directory, so the rename survives a crash);
and :func:`fsync_dir`, the directory fsync every durable writer needs.

The container state store keeps its own minimal writer (runtime/state.py): it sits on rune's start-up path,
which avoids importing ``os``.
"""

from __future__ import annotations

import os
import secrets


def write_atomic(path: str, data: bytes, *, mode: int = 0o600, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``); raises OSError and leaves no temporary file."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # whatever the umask said
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(d)


def fsync_dir(path: str) -> None:
    """fsync a directory, so that names created, renamed or removed in it survive a crash."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
