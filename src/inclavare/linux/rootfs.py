"""Container root filesystem: mounts, devices, /dev links, pivot_root, masked and read-only paths.

Runs inside the container's new mount namespace (the init process, before it executes the workload).
:func:`prepare_rootfs`, :func:`enter_rootfs` and :func:`finish_rootfs` are the setup plan in its order.
Every kernel call goes through ``kernel``, a :class:`~inclavare.linux.syscalls.Syscalls` (``KERNEL`` unless
a test hands in a recording double); filesystem queries (stat, secure_join) are made on the real rootfs.
"""

from __future__ import annotations

import errno
import os
import stat

from inclavare.errors import ConfigError, SysError
from inclavare.linux import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.linux.syscalls import Syscalls

KERNEL = sc.KERNEL

# option -> (clear, set) as the mount(8) options runc understands
_FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS),
    "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC),
    "iversion": (False, sc.MS_I_VERSION),
    "lazytime": (False, sc.MS_LAZYTIME),
    "loud": (True, sc.MS_SILENT),
    "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME),
    "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC),
    "noiversion": (True, sc.MS_I_VERSION),
    "nolazytime": (True, sc.MS_LAZYTIME),
    "nomand": (True, sc.MS_MANDLOCK),
    "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosuid": (False, sc.MS_NOSUID),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "silent": (False, sc.MS_SILENT),
    "strictatime": (False, sc.MS_STRICTATIME),
    "suid": (True, sc.MS_NOSUID),
    "sync": (False, sc.MS_SYNCHRONOUS),
}

# runc 1.1.5's recursive options: option -> (clear, MOUNT_ATTR_* bit), applied to a bind mount and
# every mount below it with mount_setattr(AT_RECURSIVE)
_REC_OPTIONS: dict[str, tuple[bool, int]] = {
    "rro": (False, sc.MOUNT_ATTR_RDONLY),
    "rrw": (True, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, sc.MOUNT_ATTR_NOSUID),
    "rsuid": (True, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (False, sc.MOUNT_ATTR_NODEV),
    "rdev": (True, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (False, sc.MOUNT_ATTR_NOEXEC),
    "rexec": (True, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, sc.MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, sc.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, sc.MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, sc.MOUNT_ATTR_RELATIME),
    "rnoatime": (False, sc.MOUNT_ATTR_NOATIME),
    "ratime": (True, sc.MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, sc.MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, sc.MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, sc.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, sc.MOUNT_ATTR_NOSYMFOLLOW),
}

PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# statvfs f_flag bits that mean the same as the MS_* flags, for remounts that must keep locked flags
_ST_TO_MS = {1: sc.MS_RDONLY, 2: sc.MS_NOSUID, 4: sc.MS_NODEV, 8: sc.MS_NOEXEC, 16: sc.MS_SYNCHRONOUS,
             64: sc.MS_MANDLOCK, 1024: sc.MS_NOATIME, 2048: sc.MS_NODIRATIME, 4096: sc.MS_RELATIME}

# runc's default device nodes (path, major, minor)
DEFAULT_DEVICES = [
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/tty", 5, 0), ("/dev/urandom", 1, 9), ("/dev/random", 1, 8),
]


class MountSpec:
    """A mount's options split into mount(2) flags, propagation changes, fs data, and extensions."""

    def __init__(self, flags: int = 0) -> None:
        self.flags = flags
        self.propagation: list[int] = []
        self.data: list[str] = []
        self.extensions: set[str] = set()  # tmpcopyup, idmap, ...
        # mount_setattr(2) attributes for the recursive options (rro, rnosuid, ...)
        self.rec_set = 0
        self.rec_clr = 0


def parse_options(options: list[str] | None) -> MountSpec:
    spec = MountSpec()
    for opt in options or []:
        if opt in _FLAG_OPTIONS:
            clear, bit = _FLAG_OPTIONS[opt]
            if clear:
                spec.flags &= ~bit
            else:
                spec.flags |= bit
        elif opt in PROPAGATION:
            spec.propagation.append(PROPAGATION[opt])
        elif opt in _REC_OPTIONS:
            clear, bit = _REC_OPTIONS[opt]
            if clear:
                spec.rec_clr |= bit
            else:
                spec.rec_set |= bit
                if bit & sc.MOUNT_ATTR__ATIME == bit:
                    # an access-time mode is set only together with clearing the whole atime field
                    spec.rec_clr |= sc.MOUNT_ATTR__ATIME
        elif opt in ("tmpcopyup", "idmap", "ridmap"):
            spec.extensions.add(opt)
        else:
            spec.data.append(opt)
    return spec


def statfs_flags(path: str) -> int:
    st = os.statvfs(path)
    out = 0
    for bit, ms in _ST_TO_MS.items():
        if st.f_flag & bit:
            out |= ms
    return out


def secure_join(root: str, unsafe: str, *, strict: bool = False) -> str:
    """Resolve ``unsafe`` inside ``root`` as if root were '/', following symlinks without escaping: a ``..`` at
    the root stays there, as the kernel does at '/', or with ``strict`` is refused (SysError EXDEV: a path that
    tries to climb out is suspect)."""
    root = os.path.abspath(root)
    parts = [p for p in unsafe.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            elif strict:
                raise SysError(f"{unsafe} climbs out of {root}", errno.EXDEV)
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise SysError(f"too many symlinks resolving {unsafe} in {root}", errno.ELOOP)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _mkdir_all(path: str, mode: int = 0o755) -> None:
    try:
        os.makedirs(path, mode, exist_ok=True)
    except FileExistsError:
        pass


def _create_target(dest: str, source_is_dir: bool) -> None:
    if source_is_dir:
        _mkdir_all(dest)
        return
    _mkdir_all(os.path.dirname(dest))
    if not os.path.lexists(dest):
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))


def is_bind(m: dict[str, Any]) -> bool:
    """Whether config mount ``m`` is a bind mount (a bind/rbind option, or type "bind")."""
    return m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or ())


class RootfsContext:
    """``source_fds``: mount index -> O_PATH fd of its bind source, opened by the runtime with host
    credentials when the container has its own user namespace (runc's mount-source fds)."""

    def __init__(self, rootfs: str, cgroup_paths: dict[str, str] | None = None, cgroupns: bool = False,
                 source_fds: dict[int, int] | None = None) -> None:
        self.rootfs = rootfs
        self.cgroup_paths = cgroup_paths or {}
        self.cgroupns = cgroupns
        self.source_fds = source_fds or {}


def _apply_propagation(dest: str, spec: MountSpec, kernel: Syscalls) -> None:
    for p in spec.propagation:
        kernel.mount(None, dest, None, p)


def _bind(src: str, dest: str, spec: MountSpec, kernel: Syscalls) -> None:
    flags = sc.MS_BIND | (spec.flags & sc.MS_REC)
    kernel.mount(src, dest, None, flags)
    extra = spec.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
    if extra:
        remount_flags = sc.MS_BIND | sc.MS_REMOUNT | extra
        try:
            kernel.mount(None, dest, None, remount_flags)
        except SysError as e:
            if e.errno != errno.EPERM:
                raise
            # in a user namespace, flags locked on the source mount must be kept
            kernel.mount(None, dest, None, remount_flags | statfs_flags(dest))
    _apply_propagation(dest, spec, kernel)


def mount_one(index: int, m: dict[str, Any], ctx: RootfsContext, kernel: Syscalls = KERNEL) -> None:
    where = f"mounts[{index}] ({m.get('destination')})"
    mtype = m.get("type") or ""
    spec = parse_options(m.get("options"))
    dest = secure_join(ctx.rootfs, m["destination"])
    source = m.get("source") or mtype or "none"
    bind = bool(spec.flags & sc.MS_BIND) or mtype == "bind"
    if mtype in ("proc", "sysfs"):
        _check_plain_dir(where, mtype, ctx.rootfs, m["destination"])
    try:
        if bind:
            # a source the runtime opened for us is reached through its fd
            fd = ctx.source_fds.get(index)
            path = source if fd is None else f"/proc/self/fd/{fd}"
            try:
                st = os.stat(path)
            except OSError as e:
                raise ConfigError(where, f"bind source {source}: {e.strerror}") from None
            _create_target(dest, stat.S_ISDIR(st.st_mode))
            spec.flags |= sc.MS_BIND
            _bind(path, dest, spec, kernel)
            if spec.rec_set or spec.rec_clr:
                _set_rec_attr(dest, spec, kernel)
            return
        if mtype == "cgroup":
            _mount_cgroup(dest, spec, ctx, kernel)
            return
        if mtype == "proc" and os.path.relpath(dest, ctx.rootfs) != "proc":
            raise ConfigError(where, "proc can only be mounted on /proc")
        _mkdir_all(dest)
        if "tmpcopyup" in spec.extensions and mtype == "tmpfs":
            _tmpcopyup(source, dest, spec, kernel)
            return
        data = ",".join(spec.data) or None
        try:
            kernel.mount(source, dest, mtype or None, spec.flags & ~sc.MS_REMOUNT, data)
        except SysError as e:
            if e.errno == errno.EPERM and mtype in ("sysfs", "mqueue"):
                # not permitted in a user namespace without its own netns/ipcns: bind the host's
                host = "/sys" if mtype == "sysfs" else "/dev/mqueue"
                spec.flags |= sc.MS_BIND | sc.MS_REC
                _bind(host, dest, spec, kernel)
                return
            raise
        _apply_propagation(dest, spec, kernel)
    except SysError as e:
        raise SysError(f"{where}: {e}", e.errno) from None


def _check_plain_dir(where: str, mtype: str, rootfs: str, destination: str) -> None:
    """proc and sysfs go on a real directory of the rootfs: an image whose /proc or /sys is a symlink
    (or a file) would move them, and the masks over them, somewhere else (runc refuses it too)."""
    plain = os.path.join(rootfs, os.path.normpath("/" + destination).lstrip("/"))
    try:
        st = os.lstat(plain)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(where, f"{destination} in the rootfs: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ConfigError(where, f'filesystem "{mtype}" must be mounted on ordinary directory '
                                 f"({destination} in the rootfs is {kind})")


def _set_rec_attr(dest: str, spec: MountSpec, kernel: Syscalls = KERNEL) -> None:
    try:
        kernel.mount_setattr(dest, spec.rec_set, spec.rec_clr, sc.AT_RECURSIVE)
    except SysError as e:
        if e.errno == errno.ENOSYS:
            raise SysError(f"recursive mount options (rro, rnosuid, ...) need mount_setattr(2), "
                           f"Linux 5.12 or later: {e}", e.errno) from None
        raise


def _tmpcopyup(source: str, dest: str, spec: MountSpec, kernel: Syscalls) -> None:
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="rune-tmpcopyup-")
    try:
        kernel.mount(source, tmp, "tmpfs", spec.flags, ",".join(spec.data) or None)
        for name in os.listdir(dest):
            s, d = os.path.join(dest, name), os.path.join(tmp, name)
            if os.path.isdir(s) and not os.path.islink(s):
                shutil.copytree(s, d, symlinks=True)
            else:
                shutil.copy2(s, d, follow_symlinks=False)
        kernel.mount(tmp, dest, None, sc.MS_MOVE)
    finally:
        os.rmdir(tmp)
    _apply_propagation(dest, spec, kernel)


def _mount_cgroup(dest: str, spec: MountSpec, ctx: RootfsContext, kernel: Syscalls) -> None:
    """Mount the container's cgroups at ``dest`` (v1: a tmpfs with one bind per hierarchy)."""
    _mkdir_all(dest)
    paths = ctx.cgroup_paths
    unified_only = list(paths) == [""] or not paths
    if unified_only:
        if ctx.cgroupns:
            kernel.mount("cgroup2", dest, "cgroup2", spec.flags)
        elif paths:
            _bind(paths[""], dest, MountSpec(flags=sc.MS_BIND | spec.flags), kernel)
        return
    kernel.mount("tmpfs", dest, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=755")
    for subsys, host in sorted(paths.items()):
        name = "unified" if subsys == "" else subsys
        target = os.path.join(dest, name)
        _mkdir_all(target)
        bind_flags = sc.MS_BIND | sc.MS_REC | (spec.flags & ~sc.MS_REMOUNT)
        _bind(host, target, MountSpec(flags=bind_flags), kernel)
    # comounted controllers are reached through their single names too (cpu -> cpu,cpuacct)
    for subsys in paths:
        if "," in subsys:
            for part in subsys.split(","):
                link = os.path.join(dest, part.removeprefix("name="))
                if not os.path.lexists(link):
                    kernel.symlink(subsys, link)
    if spec.flags & sc.MS_RDONLY:
        kernel.mount(None, dest, None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 "mode=755")


def _mknod(dest: str, kind: str, major: int, minor: int, mode: int, uid: int, gid: int, kernel: Syscalls) -> None:
    fmt = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
    try:
        kernel.mknod(dest, fmt | (mode & 0o7777), os.makedev(major, minor))
    except FileExistsError:
        return
    kernel.chown(dest, uid, gid)
    kernel.chmod(dest, mode & 0o7777)


def create_devices(rootfs: str, devices: list[dict[str, Any]], in_userns: bool, kernel: Syscalls = KERNEL) -> None:
    todo: list[dict[str, Any]] = [
        {"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
        for p, ma, mi in DEFAULT_DEVICES
    ]
    seen = {d["path"] for d in devices}
    todo = [d for d in todo if d["path"] not in seen] + list(devices)
    old = os.umask(0)
    try:
        for _i, dev in enumerate(todo):
            dest = secure_join(rootfs, dev["path"])
            _mkdir_all(os.path.dirname(dest))
            try:
                if in_userns:
                    _create_target(dest, False)
                    kernel.mount(dev["path"], dest, None, sc.MS_BIND)
                else:
                    mode = dev.get("fileMode")
                    _mknod(dest, dev["type"], int(dev.get("major", 0)), int(dev.get("minor", 0)),
                           0o666 if mode is None else int(mode), int(dev.get("uid") or 0), int(dev.get("gid") or 0),
                           kernel)
            except (OSError, SysError) as e:
                raise SysError(f"devices: creating {dev['path']}: {getattr(e, 'strerror', None) or e}",
                               getattr(e, "errno", 0) or 0) from None
    finally:
        os.umask(old)


def dev_symlinks(rootfs: str, kernel: Syscalls = KERNEL) -> None:
    links = [("/proc/self/fd", "dev/fd"), ("/proc/self/fd/0", "dev/stdin"),
             ("/proc/self/fd/1", "dev/stdout"), ("/proc/self/fd/2", "dev/stderr")]
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "dev/core"))
    for target, name in links:
        try:
            kernel.symlink(target, os.path.join(rootfs, name))
        except FileExistsError:
            pass
    ptmx = os.path.join(rootfs, "dev/ptmx")
    try:
        kernel.unlink(ptmx)
    except FileNotFoundError:
        pass
    kernel.symlink("pts/ptmx", ptmx)


def make_parent_private(rootfs: str, kernel: Syscalls = KERNEL) -> None:
    """pivot_root refuses a new root whose parent mount is shared: make that parent private."""
    best = ""
    shared = False
    for fields in kernel.mountinfo():
        mp = fields[4]
        if (rootfs == mp or rootfs.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best = mp
            opt = fields[6:fields.index("-")]
            shared = any(o.startswith("shared:") for o in opt)
    if best and shared:
        kernel.mount(None, best, None, sc.MS_PRIVATE)


def pivot(rootfs: str, kernel: Syscalls = KERNEL) -> None:
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.fchdir(new)
        kernel.pivot_root(".", ".")
        kernel.fchdir(old)
        kernel.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        kernel.umount(".", sc.MNT_DETACH)
        kernel.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    import re

    return re.sub(r"\\([0-7]{3})", lambda mo: chr(int(mo.group(1), 8)), field)


def _detach_host_proc_sys(rootfs: str, kernel: Syscalls) -> None:
    """--no-pivot keeps the old root's mounts in the namespace, out of sight but counted by the kernel:
    a full host procfs or sysfs there would let the container mount an unmasked one. Detach every such
    mount outside the rootfs, or cover it with a tmpfs where it is locked (as runc's msMoveRoot)."""
    rootfs = os.path.realpath(rootfs)  # as mountinfo shows it
    inside = rootfs.rstrip("/") + "/"
    for fields in kernel.mountinfo():
        fstype = fields[fields.index("-") + 1]
        mp = _unescape(fields[4])
        if fields[3] != "/" or fstype not in ("proc", "sysfs") or mp == rootfs or mp.startswith(inside):
            continue
        try:
            kernel.mount(None, mp, None, sc.MS_SLAVE | sc.MS_REC)  # the detach must not reach the host
        except SysError as e:
            if e.errno == errno.ENOENT:
                continue  # under a mount already detached
            raise
        try:
            kernel.umount(mp, sc.MNT_DETACH)
        except SysError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            kernel.mount("tmpfs", mp, "tmpfs")


def move_root(rootfs: str, kernel: Syscalls = KERNEL) -> None:
    """--no-pivot: move the rootfs mount over / and chroot into it."""
    _detach_host_proc_sys(rootfs, kernel)
    kernel.chdir(rootfs)
    kernel.mount(rootfs, "/", None, sc.MS_MOVE)
    kernel.chroot(".")
    kernel.chdir("/")


def mask_path(path: str, kernel: Syscalls = KERNEL) -> None:
    try:
        kernel.mount("/dev/null", path, None, sc.MS_BIND)
    except SysError as e:
        if e.errno == errno.ENOENT:
            return
        if e.errno == errno.ENOTDIR:
            kernel.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
            return
        raise SysError(f"maskedPaths: {path}: {e}", e.errno) from None


def readonly_path(path: str, kernel: Syscalls = KERNEL) -> None:
    try:
        kernel.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except SysError as e:
        if e.errno == errno.ENOENT:
            return
        raise SysError(f"readonlyPaths: {path}: {e}", e.errno) from None
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
    try:
        kernel.mount(None, path, None, flags)
    except SysError:
        kernel.mount(None, path, None, flags | statfs_flags(path))


def set_readonly_root(kernel: Syscalls = KERNEL) -> None:
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    try:
        kernel.mount(None, "/", None, flags)
    except SysError:
        kernel.mount(None, "/", None, flags | statfs_flags("/"))


# ------------------------------------------------------------------------------------------------ the plan


def prepare_rootfs(rootfs: str, config: dict[str, Any], ctx: RootfsContext, in_userns: bool,
                   kernel: Syscalls = KERNEL) -> None:
    """Before the createContainer hooks, in the new mount namespace: the propagation of /, the rootfs
    bound onto itself (pivot_root needs a mount point), the config's mounts in order, device nodes, /dev links.
    Closes the mount-source fds of ``ctx`` once the mounts are done."""
    linux = config.get("linux") or {}
    prop = PROPAGATION.get(linux.get("rootfsPropagation") or "", sc.MS_SLAVE | sc.MS_REC)
    if prop & sc.MS_UNBINDABLE:
        prop = sc.MS_PRIVATE | (prop & sc.MS_REC)  # the rootfs must stay bindable until pivot_root
    kernel.mount(None, "/", None, prop)
    make_parent_private(rootfs, kernel)
    kernel.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    for i, m in enumerate(config.get("mounts") or []):
        mount_one(i, m, ctx, kernel)
    for fd in ctx.source_fds.values():
        os.close(fd)
    create_devices(rootfs, linux.get("devices") or [], in_userns, kernel)
    if os.path.isdir(os.path.join(rootfs, "dev")):
        dev_symlinks(rootfs, kernel)


def enter_rootfs(rootfs: str, has_mntns: bool, no_pivot: bool, kernel: Syscalls = KERNEL) -> None:
    """Make the rootfs the root: pivot_root, or (--no-pivot) move it over / and chroot; a plain chroot
    without a mount namespace."""
    if has_mntns:
        if no_pivot:
            move_root(rootfs, kernel)
        else:
            pivot(rootfs, kernel)
    else:
        kernel.chroot(rootfs)
        kernel.chdir("/")


def finish_rootfs(config: dict[str, Any], ns_types: set[str] | frozenset[str], kernel: Syscalls = KERNEL) -> None:
    """After the root switch: sysctls (first: readonlyPaths usually makes /proc/sys read-only), a shared or
    unbindable rootfsPropagation, masked and read-only paths, the read-only root, then hostname and domainname."""
    linux = config.get("linux") or {}
    for key, value in (linux.get("sysctl") or {}).items():
        try:
            kernel.write_sysctl(key, value)
        except OSError as e:
            raise SysError(f"linux.sysctl: {key}={value}: {e.strerror}", e.errno or 0) from None
    if "mount" in ns_types:
        if (linux.get("rootfsPropagation") or "") in ("shared", "rshared", "unbindable", "runbindable"):
            kernel.mount(None, "/", None, PROPAGATION[linux["rootfsPropagation"]])
        for p in linux.get("maskedPaths") or []:
            mask_path(p, kernel)
        for p in linux.get("readonlyPaths") or []:
            readonly_path(p, kernel)
        if (config.get("root") or {}).get("readonly"):
            set_readonly_root(kernel)
    if "uts" in ns_types:
        if config.get("hostname"):
            kernel.sethostname(config["hostname"])
        if config.get("domainname"):
            kernel.setdomainname(config["domainname"])
