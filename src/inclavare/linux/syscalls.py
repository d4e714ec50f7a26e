"""Thin ctypes layer over the libc calls the runtime needs and the stdlib lacks.

Everything raises SysError naming the call and its target, so callers need no errno handling
beyond the cases they want to tolerate (check ``SysError.errno``).

:class:`Syscalls` gathers the operations of the container setup plan (mounts, root switch, device
nodes, /dev links, names, capabilities) behind one small interface, as youki's ``Syscall`` trait:
``KERNEL`` does them for real, and ``inclavare.testing.syscalls.RecordingSyscalls`` logs them so that
the plan of linux/rootfs.py and linux/caps.py is unit-tested without root.
"""

from __future__ import annotations

import ctypes
import os

from inclavare.errors import SysError

# clone/unshare/setns flags (linux/sched.h)
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# OCI namespace type -> (clone flag, /proc/PID/ns entry)
NAMESPACES: dict[str, tuple[int, str]] = {
    "user": (CLONE_NEWUSER, "user"),
    "mount": (CLONE_NEWNS, "mnt"),
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "time": (CLONE_NEWTIME, "time"),
}

# mount(2) flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# mount_setattr(2) (linux/mount.h), Linux 5.12+
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# x86_64 / aarch64 syscall numbers for calls glibc does not wrap
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126, "keyctl": 250,
               "pidfd_open": 434, "close_range": 436, "pidfd_getfd": 438, "mount_setattr": 442},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91, "keyctl": 219,
                "pidfd_open": 434, "close_range": 436, "pidfd_getfd": 438, "mount_setattr": 442},
}

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL("libc.so.6", use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.unshare.argtypes = [ctypes.c_int]
        lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        lib.syscall.restype = ctypes.c_long
        lib.personality.argtypes = [ctypes.c_ulong]
        _libc = lib
    return _libc


def sys_error(call: str, target: str, err: int) -> SysError:
    """The error a failed ``call`` on ``target`` raises: "call target: strerror", with its errno."""
    return SysError(f"{call}{' ' + target if target else ''}: {os.strerror(err)}", err)


def _raise(call: str, target: str, err: int) -> None:
    raise sys_error(call, target, err)


def mount_target(source: str | None, target: str, fstype: str | None) -> str:
    """How a mount(2) error names what it tried: "SOURCE on TARGET (FSTYPE)"."""
    return f"{source or 'none'} on {target}" + (f" ({fstype})" if fstype else "")


def _enc(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    if libc().mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) < 0:
        _raise("mount", mount_target(source, target, fstype), ctypes.get_errno())


def umount(target: str, flags: int = 0) -> None:
    if libc().umount2(_enc(target), flags) < 0:
        _raise("umount", target, ctypes.get_errno())


def unshare(flags: int) -> None:
    if libc().unshare(flags) < 0:
        _raise("unshare", hex(flags), ctypes.get_errno())


def setns(fd: int, nstype: int = 0, what: str = "") -> None:
    if libc().setns(fd, nstype) < 0:
        _raise("setns", what, ctypes.get_errno())


def sethostname(name: str) -> None:
    b = name.encode()
    if libc().sethostname(b, len(b)) < 0:
        _raise("sethostname", repr(name), ctypes.get_errno())


def setdomainname(name: str) -> None:
    b = name.encode()
    if libc().setdomainname(b, len(b)) < 0:
        _raise("setdomainname", repr(name), ctypes.get_errno())


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = libc().prctl(option, arg2, arg3, arg4, arg5)
    if ret < 0:
        _raise("prctl", str(option), ctypes.get_errno())
    return int(ret)


def _nr(name: str) -> int:
    arch = os.uname().machine
    try:
        return _SYSCALLS[arch][name]
    except KeyError:
        raise SysError(f"{name}: unsupported architecture {arch}") from None


def syscall(name: str, *args: object) -> int:
    ret = libc().syscall(_nr(name), *args)
    if ret < 0:
        _raise(name, "", ctypes.get_errno())
    return int(ret)


def pivot_root(new_root: str, put_old: str) -> None:
    lib = libc()
    if lib.syscall(_nr("pivot_root"), _enc(new_root), _enc(put_old)) < 0:
        _raise("pivot_root", new_root, ctypes.get_errno())


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int, flags: int = AT_RECURSIVE) -> None:
    """Change the attributes of the mount at ``path`` (and, with AT_RECURSIVE, of every mount below it)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    if libc().syscall(_nr("mount_setattr"), ctypes.c_int(-100), _enc(path), ctypes.c_uint(flags),
                      ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) < 0:
        _raise("mount_setattr", path, ctypes.get_errno())


def personality(persona: int) -> None:
    if libc().personality(persona) < 0:
        _raise("personality", hex(persona), ctypes.get_errno())


def set_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SETPERM = 5


def join_session_keyring(name: str) -> None:
    """Give the container its own session keyring, as runc does unless --no-new-keyring."""
    lib = libc()
    serial = lib.syscall(_nr("keyctl"), KEYCTL_JOIN_SESSION_KEYRING, _enc(name))
    if serial < 0:
        err = ctypes.get_errno()
        if err in (38, 1, 13):  # ENOSYS/EPERM/EACCES: keyrings unavailable here, like runc we go on
            return
        _raise("keyctl", "join session keyring", err)
    # possessor: all; user: view, read, write, search, link, setattr (runc's 0x3f3f0000 minus nothing)
    lib.syscall(_nr("keyctl"), KEYCTL_SETPERM, ctypes.c_long(serial), ctypes.c_ulong(0x3F3F0000))


CLOSE_RANGE_CLOEXEC = 4


def cloexec_from(first: int) -> None:
    """Mark every fd >= first close-on-exec (runc's CloseExecFrom)."""
    lib = libc()
    if lib.syscall(_nr("close_range"), ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                   ctypes.c_uint(CLOSE_RANGE_CLOEXEC)) == 0:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def pidfd_getfd(pid: int, fd: int) -> int:
    """A copy, in this process, of file descriptor ``fd`` of process ``pid`` (Linux 5.6+)."""
    pidfd = syscall("pidfd_open", pid, 0)
    try:
        return syscall("pidfd_getfd", pidfd, fd, 0)
    finally:
        os.close(pidfd)


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) capability sets of ``pid`` (0: this thread) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    syscall("capget", ctypes.byref(hdr), ctypes.byref(data))
    eff, perm, inh = (getattr(data[0], f) | (getattr(data[1], f) << 32)
                      for f in ("effective", "permitted", "inheritable"))
    return eff, perm, inh


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's effective, permitted and inheritable capability sets (64-bit masks)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    syscall("capset", ctypes.byref(hdr), ctypes.byref(data))


def mountinfo() -> list[list[str]]:
    """This process's mount table, one whitespace-split /proc/self/mountinfo line per mount."""
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f]


def write_sysctl(key: str, value: str) -> None:
    """Write ``value`` to the sysctl ``key`` (dotted, as in the OCI config) under /proc/sys; OSError as open/write."""
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


class Syscalls:
    """The kernel operations of the container setup plan, as one small interface.

    Each method is the module (or ``os``) function of the same name itself, so ``KERNEL.mount(...)`` costs
    one attribute lookup more than ``mount(...)``. Filesystem queries (stat, secure_join) are not here:
    the plan makes them on the real rootfs. The recording double overrides every method.
    """

    __slots__ = ()

    mount = staticmethod(mount)
    umount = staticmethod(umount)
    pivot_root = staticmethod(pivot_root)
    mount_setattr = staticmethod(mount_setattr)
    mountinfo = staticmethod(mountinfo)
    chdir = staticmethod(os.chdir)
    fchdir = staticmethod(os.fchdir)
    chroot = staticmethod(os.chroot)
    mknod = staticmethod(os.mknod)
    chown = staticmethod(os.chown)
    chmod = staticmethod(os.chmod)
    symlink = staticmethod(os.symlink)
    unlink = staticmethod(os.unlink)
    write_sysctl = staticmethod(write_sysctl)
    sethostname = staticmethod(sethostname)
    setdomainname = staticmethod(setdomainname)
    prctl = staticmethod(prctl)
    capget = staticmethod(capget)
    capset = staticmethod(capset)


KERNEL = Syscalls()
