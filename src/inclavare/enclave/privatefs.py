"""The enclave's private file tree: a tmpfs that is mounted nowhere, reachable only through a file descriptor.

Decrypted image layers must not land on disk, nor anywhere in the container's or the host's mount tree where
another process could open them by path. ``fsopen("tmpfs")`` + ``fsmount`` (Linux 5.2) make a mount that is
attached to no mount namespace: it lives exactly as long as the descriptor (and its copies) held by the enclave
runtime, and vanishes with the process -- also when it is killed with SIGKILL. Files are written through
``*at`` calls relative to that descriptor; a WebAssembly payload gets it as a WASI preopen through the magic link
``/proc/self/fd/N``; a native payload inherits the descriptor.

Making the mount needs CAP_SYS_ADMIN, so it is made on the host side (``load``, before the container's
namespaces and capabilities apply); writing into it later needs nothing. With type ``sim`` this keeps the
plaintext away from the file system, not from the host's root, who can read any process's memory -- see
docs/encrypted-images.md.

:func:`extract_tar` unpacks a layer tar into the tree (OCI whiteouts applied), never following a symlink: every
path is walked one component at a time with ``O_NOFOLLOW`` from the tree's root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import tarfile
from typing import IO

from inclavare.errors import InclavareError

_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432  # the same numbers on every architecture
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 1
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8

DEFAULT_SIZE = 256 << 20
MAX_ENTRIES = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class PrivateFsError(InclavareError):
    """The private tree could not be made or filled; the message says what and where."""


def _syscall(nr: int, *args: object) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(nr), *args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(r)


class PrivateFs:
    """A detached tmpfs (see the module docstring). ``fd`` is its root directory."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def create(cls, size: int = DEFAULT_SIZE, uid: int = 0, gid: int = 0) -> PrivateFs:
        """A new empty tree of at most ``size`` bytes, its root owned by ``uid``:``gid`` with mode 0700."""
        fs = -1
        try:
            fs = _syscall(_SYS_FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC)
            for key, value in (("mode", "0700"), ("size", str(size)), ("uid", str(uid)), ("gid", str(gid))):
                _syscall(_SYS_FSCONFIG, fs, _FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
            _syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0)
            mnt = _syscall(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC,
                           _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOEXEC)
        except OSError as e:
            hint = " (needs CAP_SYS_ADMIN and Linux 5.2 or later)" if e.errno in (errno.EPERM, errno.ENOSYS) else ""
            raise PrivateFsError(f"private tmpfs: {e.strerror}{hint}") from None
        finally:
            if fs >= 0:
                os.close(fs)
        return cls(mnt)

    @property
    def path(self) -> str:
        """The tree's root as a path, for this process only (a magic link through /proc)."""
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, relpath: str) -> bytes:
        """A file's content (tests, and payloads that read through the runtime)."""
        parent, name = _walk(self.fd, relpath, create=False)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        finally:
            _close_walked(parent, self.fd)
        with os.fdopen(fd, "rb") as f:
            return f.read()


def _parts(relpath: str) -> list[str]:
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise PrivateFsError(f"layer entry {relpath[:200]!r}: not a path inside the layer")
    return parts


def _close_walked(fd: int, root: int) -> None:
    if fd != root:
        os.close(fd)


def _walk(root: int, relpath: str, create: bool, uid: int = 0, gid: int = 0) -> tuple[int, str]:
    """(directory fd, last component) for ``relpath`` under ``root``; intermediate directories are opened with
    O_NOFOLLOW (a symlink in the way is an error, never followed) and made 0755 when ``create``."""
    parts = _parts(relpath)
    fd = root
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                os.chown(part, uid, gid, dir_fd=fd, follow_symlinks=False)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            _close_walked(fd, root)
            fd = nxt
    except OSError as e:
        _close_walked(fd, root)
        if e.errno == errno.ELOOP or e.errno == errno.ENOTDIR:
            raise PrivateFsError(f"layer entry {relpath[:200]!r}: a parent is not a directory (symlinks are "
                                 "never followed)") from None
        raise PrivateFsError(f"layer entry {relpath[:200]!r}: {e.strerror}") from None
    return fd, parts[-1]


def _remove(dirfd: int, name: str) -> None:
    """Remove ``name`` (a whole directory tree too) under ``dirfd``; absent is fine."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        sub = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
        try:
            for child in os.listdir(sub):
                _remove(sub, child)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=dirfd)
    else:
        os.unlink(name, dir_fd=dirfd)


def extract_tar(tree: PrivateFs, stream: IO[bytes], *, where: str, uid: int = 0, gid: int = 0,
                max_bytes: int = DEFAULT_SIZE) -> int:
    """Unpack an (uncompressed or gzip) layer tar from ``stream`` into ``tree``; returns the number of entries.

    Regular files, directories, symlinks and hard links (inside the tree) are made; OCI whiteouts remove what
    earlier layers put there; devices and FIFOs are refused (a tmpfs mounted nodev could not use them anyway).
    Files are owned by ``uid``:``gid`` (the payload's user), modes kept without setuid/setgid/sticky bits."""
    count, total = 0, 0
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise PrivateFsError(f"{where}: not a tar stream ({e})") from None
    try:
        for member in tar:
            count += 1
            if count > MAX_ENTRIES:
                raise PrivateFsError(f"{where}: more than {MAX_ENTRIES} entries")
            total += max(member.size, 0)
            if total > max_bytes:
                raise PrivateFsError(f"{where}: more than {max_bytes} bytes of files")
            _extract_one(tree.fd, tar, member, where, uid, gid)
    except (tarfile.TarError, EOFError) as e:
        raise PrivateFsError(f"{where}: broken tar stream ({e})") from None
    finally:
        tar.close()
    return count


def _extract_one(root: int, tar: tarfile.TarFile, m: tarfile.TarInfo, where: str, uid: int, gid: int) -> None:
    name = m.name
    if name.rstrip("/") in ("", "."):
        return  # the layer's root directory entry
    mode = m.mode & 0o777
    dirfd, base = _walk(root, name, create=True, uid=uid, gid=gid)
    try:
        if base == OPAQUE:
            for child in os.listdir(dirfd):
                _remove(dirfd, child)
            return
        if base.startswith(WHITEOUT):
            _remove(dirfd, base[len(WHITEOUT):])
            return
        if m.isdir():
            try:
                st = os.stat(base, dir_fd=dirfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    _remove(dirfd, base)
                    os.mkdir(base, mode, dir_fd=dirfd)
            except FileNotFoundError:
                os.mkdir(base, mode, dir_fd=dirfd)
            os.chmod(base, mode, dir_fd=dirfd, follow_symlinks=False)
        elif m.isreg():
            _remove(dirfd, base)
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=dirfd)
            with os.fdopen(fd, "wb") as out:
                src = tar.extractfile(m)
                assert src is not None
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                os.fchmod(out.fileno(), mode)
        elif m.issym():
            _remove(dirfd, base)
            os.symlink(m.linkname, base, dir_fd=dirfd)  # stored, never followed while extracting
        elif m.islnk():
            srcdir, srcbase = _walk(root, m.linkname, create=False)
            try:
                _remove(dirfd, base)
                os.link(srcbase, base, src_dir_fd=srcdir, dst_dir_fd=dirfd, follow_symlinks=False)
            finally:
                _close_walked(srcdir, root)
            return
        else:
            raise PrivateFsError(f"{where}: entry {name[:200]!r}: devices, FIFOs and sockets are not unpacked")
        os.chown(base, uid, gid, dir_fd=dirfd, follow_symlinks=False)
    except PrivateFsError:
        raise
    except OSError as e:
        raise PrivateFsError(f"{where}: entry {name[:200]!r}: {e.strerror}") from None
    finally:
        _close_walked(dirfd, root)
