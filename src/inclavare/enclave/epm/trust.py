"""The trust rule for an artifact from epm's pool (docs/epm.md, "Trust").

A precompiled wasm module is native code: deserializing it runs whatever it holds. So its bytes are used only
when all of these hold, and otherwise ignored (the caller compiles) with the reason logged at debug:

* the path epm gave is ``ROOT/data/NAME`` for epm's root (``INCLAVARE_EPM_ROOT``, default ``/var/local/epm``),
  with no symlink on the way;
* every directory from ``/`` down to it is owned by root (:data:`~.client.TRUSTED_UID`); epm's root and its
  data directory are not writable by group or others (epm makes them 0700); the directories above are not
  writable by others unless sticky (``/tmp``: others may add names there, but not replace root's). Group write
  is allowed above epm's root: Debian's ``/var/local`` is ``root:staff 2775``, and whoever could swap a
  directory there still cannot make root-owned files with the recorded digest's content;
* the file is a regular file owned by root, not writable by group or others, at most ``max_size`` bytes;
* the SHA-256 of the bytes read is the digest epm recorded for the cache (so a corrupted, truncated or swapped
  file is caught: the digest check is over the very bytes that are used, no time-of-check gap).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat

from inclavare.enclave.epm import client

log = logging.getLogger(__name__)

DATA_DIR = "data"  # epm keeps the data it owns in ROOT/data (services/epm/config.py)


def _dir_ok(st: os.stat_result, epms: bool) -> bool:
    """A directory on the way: root's; epm's own (``epms``) not writable by group or others; one above not
    writable by others unless sticky."""
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != client.TRUSTED_UID:
        return False
    if epms:
        return not st.st_mode & 0o022
    return not st.st_mode & 0o002 or bool(st.st_mode & stat.S_ISVTX)


def read_trusted(path: str, digest_hex: str, max_size: int) -> bytes | None:
    """The bytes of epm's artifact at ``path`` if it passes the rule above (digest ``digest_hex``), else None."""

    def refuse(why: str) -> bytes | None:
        log.debug("epm: ignoring the pool's artifact %s: %s", path, why)
        return None

    root = os.path.realpath(client.root_path())
    data = os.path.join(root, DATA_DIR)
    if not path.startswith("/") or os.path.normpath(path) != path or os.path.dirname(path) != data:
        return refuse(f"not directly inside epm's data directory {data}")
    if os.path.realpath(path) != path:
        return refuse("a symlink on the way")
    walk = "/"
    for part in [""] + data.strip("/").split("/"):
        walk = os.path.join(walk, part) if part else "/"
        try:
            st = os.lstat(walk)
        except OSError as e:
            return refuse(f"{walk}: {e.strerror}")
        if not _dir_ok(st, walk in (root, data)):
            return refuse(f"{walk}: owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o} (must be "
                          f"uid {client.TRUSTED_UID}'s and not writable by others)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        return refuse(e.strerror or str(e))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return refuse("not a regular file")
        if st.st_uid != client.TRUSTED_UID or st.st_mode & 0o022:
            return refuse(f"owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}")
        if st.st_size > max_size:
            return refuse(f"{st.st_size} bytes, more than {max_size}")
        chunks = []
        left = max_size + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        return refuse(e.strerror or str(e))
    finally:
        os.close(fd)
    blob = b"".join(chunks)
    if len(blob) > max_size:
        return refuse(f"grew past {max_size} bytes")
    if hashlib.sha256(blob).hexdigest() != digest_hex:
        return refuse("its SHA-256 is not the digest epm recorded (corrupted or changed)")
    return blob
