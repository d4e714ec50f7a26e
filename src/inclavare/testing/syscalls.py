"""A recording double of :class:`inclavare.linux.syscalls.Syscalls` (youki's ``TestHelperSyscall``).

It logs every call as a tuple ``(name, *arguments)`` in :attr:`RecordingSyscalls.calls` and changes
nothing, so the setup plan of linux/rootfs.py and linux/caps.py runs without root. Failures are
configured with :meth:`RecordingSyscalls.fail`; they raise what the real call would: ``SysError`` with
the real one-line message for the ctypes calls, ``OSError`` for the ``os`` ones. Test support only: no
library code hands it in.
"""

from __future__ import annotations

import os
from typing import Any

from inclavare.linux import syscalls as sc

Call = tuple[Any, ...]


class _Fault:
    __slots__ = ("name", "err", "target", "times", "skip")

    def __init__(self, name: str, err: int, target: object, times: int | None, skip: int) -> None:
        self.name, self.err, self.target, self.times, self.skip = name, err, target, times, skip


class RecordingSyscalls(sc.Syscalls):
    """Logs each call in :attr:`calls`; returns configured results; raises configured errors.

    ``mountinfo``: the text of /proc/self/mountinfo the plan reads (default: no mounts).
    ``caps``: what :meth:`capget` returns (effective, permitted, inheritable).
    """

    def __init__(self, mountinfo: str = "", caps: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.calls: list[Call] = []
        self.mountinfo_text = mountinfo
        self.caps = caps
        self._faults: list[_Fault] = []

    def fail(self, name: str, err: int, target: object = None, times: int | None = 1, skip: int = 0) -> None:
        """Make ``times`` calls of ``name`` (all of them with ``times=None``) fail with ``err``, after letting
        ``skip`` of them succeed; with ``target``, count only the calls whose target (the path, the link for
        symlink, the name for sethostname, the option for prctl) is ``target``. Failed calls are logged too;
        the first fault that matches a call decides."""
        if name not in _TARGET:
            raise ValueError(f"RecordingSyscalls.fail: no call named {name!r}")
        self._faults.append(_Fault(name, err, target, times, skip))

    def names(self) -> list[str]:
        """The names of the calls so far, in order."""
        return [c[0] for c in self.calls]

    def _log(self, call: Call) -> int:
        """Record ``call``; the errno it must fail with, or 0."""
        self.calls.append(call)
        target = call[_TARGET[call[0]]]
        for f in self._faults:
            if f.name == call[0] and f.times != 0 and (f.target is None or f.target == target):
                if f.skip:
                    f.skip -= 1
                    return 0
                if f.times is not None:
                    f.times -= 1
                return f.err
        return 0

    def _os(self, call: Call) -> None:
        err = self._log(call)
        if err:
            raise OSError(err, os.strerror(err), call[1])

    # mounts
    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        err = self._log(("mount", source, target, fstype, flags, data))
        if err:
            raise sc.sys_error("mount", sc.mount_target(source, target, fstype), err)

    def umount(self, target: str, flags: int = 0) -> None:
        err = self._log(("umount", target, flags))
        if err:
            raise sc.sys_error("umount", target, err)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        err = self._log(("pivot_root", new_root, put_old))
        if err:
            raise sc.sys_error("pivot_root", new_root, err)

    def mount_setattr(self, path: str, attr_set: int, attr_clr: int, flags: int = sc.AT_RECURSIVE) -> None:
        err = self._log(("mount_setattr", path, attr_set, attr_clr, flags))
        if err:
            raise sc.sys_error("mount_setattr", path, err)

    def mountinfo(self) -> list[list[str]]:
        return [line.split() for line in self.mountinfo_text.splitlines() if line.strip()]

    # root and working directory
    def chdir(self, path: Any) -> None:
        self._os(("chdir", path))

    def fchdir(self, fd: Any) -> None:
        """Logged with the path the descriptor is open on, not its number."""
        self._os(("fchdir", os.readlink(f"/proc/self/fd/{int(fd)}")))

    def chroot(self, path: Any) -> None:
        self._os(("chroot", path))

    # files
    def mknod(self, path: Any, mode: int = 0o600, device: int = 0, *, dir_fd: int | None = None) -> None:
        self._os(("mknod", path, mode, device))

    def chown(self, path: Any, uid: int, gid: int, *, dir_fd: int | None = None,
              follow_symlinks: bool = True) -> None:
        self._os(("chown", path, uid, gid))

    def chmod(self, path: Any, mode: int, *, dir_fd: int | None = None, follow_symlinks: bool = True) -> None:
        self._os(("chmod", path, mode))

    def symlink(self, src: Any, dst: Any, target_is_directory: bool = False, *, dir_fd: int | None = None) -> None:
        err = self._log(("symlink", src, dst))
        if err:
            raise OSError(err, os.strerror(err), src, None, dst)

    def unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._os(("unlink", path))

    def write_sysctl(self, key: str, value: str) -> None:
        err = self._log(("write_sysctl", key, value))
        if err:
            raise OSError(err, os.strerror(err), "/proc/sys/" + key.replace(".", "/"))

    # names
    def sethostname(self, name: str) -> None:
        err = self._log(("sethostname", name))
        if err:
            raise sc.sys_error("sethostname", repr(name), err)

    def setdomainname(self, name: str) -> None:
        err = self._log(("setdomainname", name))
        if err:
            raise sc.sys_error("setdomainname", repr(name), err)

    # capabilities
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        err = self._log(("prctl", option, arg2, arg3, arg4, arg5))
        if err:
            raise sc.sys_error("prctl", str(option), err)
        return 0

    def capget(self, pid: int = 0) -> tuple[int, int, int]:
        err = self._log(("capget", pid))
        if err:
            raise sc.sys_error("capget", "", err)
        return self.caps

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        err = self._log(("capset", effective, permitted, inheritable))
        if err:
            raise sc.sys_error("capset", "", err)


# call name -> index in its logged tuple of what fail(target=...) matches
_TARGET: dict[str, int] = {
    "mount": 2, "umount": 1, "pivot_root": 1, "mount_setattr": 1, "chdir": 1, "fchdir": 1, "chroot": 1,
    "mknod": 1, "chown": 1, "chmod": 1, "symlink": 2, "unlink": 1, "write_sysctl": 1, "sethostname": 1,
    "setdomainname": 1, "prctl": 1, "capget": 1, "capset": 1,
}
