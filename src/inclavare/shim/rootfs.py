"""The rootfs mounts of a Task Create request (the snapshot containerd prepared: an overlay, a bind), mounted
on ``BUNDLE/rootfs`` before the container is created and unmounted when it is deleted, as containerd's runc
shim does (``mount.All`` / ``mount.UnmountAll``). mount(2) is a plain system call: this runs in the shim's
main process, not in a worker.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from inclavare.errors import InclavareError, ShimError
from inclavare.linux import syscalls as sc


def mount_all(mounts: list[dict[str, Any]], target: str) -> None:
    """Mount each ``{"type", "source", "options"}`` on ``target`` in order (made if missing); on a failure
    undo what was mounted and raise ShimError naming the mount."""
    from inclavare.linux.rootfs import parse_options

    if not mounts:
        return
    os.makedirs(target, 0o711, exist_ok=True)
    done = 0
    try:
        for i, m in enumerate(mounts):
            if not isinstance(m, dict) or not isinstance(m.get("type", ""), str):
                raise ShimError(f"rootfs[{i}]: not a mount object", "invalid_argument")
            options = [str(o) for o in m.get("options") or []]
            spec = parse_options(options)
            mtype = str(m.get("type") or "")
            flags = spec.flags
            if mtype == "bind":
                flags |= sc.MS_BIND
            data = ",".join(spec.data) or None
            try:
                sc.mount(str(m.get("source") or "none"), target, None if flags & sc.MS_BIND else mtype, flags, data)
                done += 1
                if flags & sc.MS_BIND and flags & sc.MS_RDONLY:
                    # a bind mount ignores MS_RDONLY: read-only takes a remount
                    sc.mount(None, target, None, flags | sc.MS_REMOUNT, None)
                for prop in spec.propagation:
                    sc.mount(None, target, None, prop, None)
            except InclavareError as e:
                raise ShimError(f"rootfs[{i}] ({mtype} {m.get('source')}): {e}", "invalid_argument") from None
    except BaseException:
        for _ in range(done):
            _umount_quietly(target)
        raise


def _umount_quietly(target: str) -> bool:
    try:
        sc.umount(target, 0)
        return True
    except InclavareError as e:
        if getattr(e, "errno", 0) == errno.EBUSY:
            try:
                sc.umount(target, sc.MNT_DETACH)
                return True
            except InclavareError:
                return False
        return False


def is_mount_point(path: str) -> bool:
    """Whether something is mounted on ``path`` (from mountinfo: a bind mount of the same filesystem looks
    like a plain directory to stat)."""
    from inclavare.linux.rootfs import _unescape

    real = os.path.realpath(path)
    return any(len(f) > 4 and _unescape(f[4]) == real for f in sc.mountinfo())


def unmount_all(target: str) -> None:
    """Unmount everything stacked on ``target`` (nothing to do when it is not a mount point)."""
    for _ in range(64):  # a bound on a stack of mounts
        if not is_mount_point(target) or not _umount_quietly(target):
            return
