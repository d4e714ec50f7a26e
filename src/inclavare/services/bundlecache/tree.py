"""The content digest of a cache entry: SHA-256 over a canonical walk of its directory tree.

Every item under the entry's directory contributes one record of length-prefixed fields: its kind (``D``
directory, ``F`` regular file, ``L`` symbolic link), its relative path, and then for a directory its
permission bits, for a file its permission bits, size and the SHA-256 of its content, for a link its
target. The walk is deterministic: a directory's children in byte order of their names, then its
subdirectories depth-first. Anything else (devices, FIFOs, sockets) is refused: a bundle has no
use for them and they have no content to digest. The digest is recorded when an entry is committed and
recomputed on every hit, so a flipped byte, a truncated, missing or extra file, or a changed mode makes the
entry a miss that is rebuilt, never a hit.
"""

from __future__ import annotations

import hashlib
import os
import stat

from inclavare.services.bundlecache.errors import BundleCacheError

_CHUNK = 1 << 20
_MAX_ITEMS = 1_000_000


def tree_digest(root: str, *, sync: bool = False) -> tuple[str, int]:
    """``(hex digest, bytes)`` of the tree under ``root`` (see the module docstring); ``bytes`` counts file
    contents and link targets. With ``sync``, every file and directory is fsync'd on the way (a commit
    makes the entry durable before its name appears). Raises :class:`BundleCacheError` for an item that
    is not a directory, regular file or link, and ``FileNotFoundError`` when ``root`` is gone."""
    h = hashlib.sha256(b"inclavare-bundle-cache-tree-v1\x00")
    total = 0
    count = 0
    stack = [b""]
    root_b = os.fsencode(root)
    st = os.lstat(root_b)
    if not stat.S_ISDIR(st.st_mode):
        raise BundleCacheError(f"cache entry {root}: not a directory")
    _record(h, b"D", b"", _perm(st.st_mode))
    while stack:
        rel = stack.pop()
        dir_path = os.path.join(root_b, rel) if rel else root_b
        children = sorted(os.listdir(dir_path))
        if sync:
            _fsync(dir_path, os.O_RDONLY | os.O_DIRECTORY)
        subdirs = []
        for name in children:
            count += 1
            if count > _MAX_ITEMS:
                raise BundleCacheError(f"cache entry {root}: more than {_MAX_ITEMS} items")
            child_rel = os.path.join(rel, name) if rel else name
            path = os.path.join(root_b, child_rel)
            cst = os.lstat(path)
            if stat.S_ISDIR(cst.st_mode):
                _record(h, b"D", child_rel, _perm(cst.st_mode))
                subdirs.append(child_rel)
            elif stat.S_ISREG(cst.st_mode):
                digest, size = _file_digest(path, sync)
                _record(h, b"F", child_rel, _perm(cst.st_mode), str(size).encode(), digest)
                total += size
            elif stat.S_ISLNK(cst.st_mode):
                target = os.readlink(path)
                _record(h, b"L", child_rel, target)
                total += len(target)
            else:
                raise BundleCacheError(f"cache entry {root}: {os.fsdecode(child_rel)} is neither a directory, "
                                       f"a regular file nor a symbolic link")
        # Depth-first, children in byte order: push in reverse so the smallest name is walked first.
        stack.extend(reversed(subdirs))
    return h.hexdigest(), total


def _perm(mode: int) -> bytes:
    return b"%o" % stat.S_IMODE(mode)


def _record(h: hashlib._Hash, kind: bytes, *fields: bytes) -> None:
    h.update(kind)
    for f in fields:
        h.update(len(f).to_bytes(8, "big"))
        h.update(f)


def _file_digest(path: bytes, sync: bool) -> tuple[bytes, int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        h = hashlib.sha256()
        size = 0
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return h.digest(), size


def _fsync(path: bytes, flags: int) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
