"""Mounts left under a directory: find them and take them down (engine test helpers)."""

from __future__ import annotations

import errno
import os
import time

from inclavare.linux.cgroups import parse_mountinfo


def mounts_under(base: str) -> list[str]:
    """Mount points at or under ``base``, deepest first."""
    base = os.path.abspath(base)
    prefix = base.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        found = {mp for _root, mp, _fstype, _opts in parse_mountinfo(f.read())
                 if mp.startswith(prefix) or mp == base}
    return sorted(found, key=lambda m: (m.count("/"), m), reverse=True)


def unmount_under(base: str) -> list[str]:
    """Lazily unmount everything at or under ``base``; returns the failures (never raises)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    problems: list[str] = []
    for _ in range(3):
        left = mounts_under(base)
        if not left:
            return []
        problems = []
        for mp in left:
            if libc.umount2(mp.encode(), 2) != 0:  # MNT_DETACH
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):  # not a mount (any more)
                    problems.append(f"umount {mp}: {os.strerror(err)}")
        time.sleep(0.05)
    return problems + [f"still mounted: {m}" for m in mounts_under(base)]
