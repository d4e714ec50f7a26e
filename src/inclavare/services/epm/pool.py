"""epm's cache pools: upstream's semantics over :class:`~.store.Store` and the data directory.

* Pools are typed (``enclave-cache``, ``bundle-cache`` and any configured ``[cache_pools]``); a request for
  another type is refused.
* **SaveCache** records a cache. With a source path, the data there (a file or a directory tree; no device,
  fifo or socket) is copied into ``ROOT/data/<sha256(type, ID)>``, which becomes the cache's ``savePath`` and
  is epm's to delete. Without one, a given ``savePath`` is recorded as is (epm does not own it). Both paths
  must resolve inside ``root`` (symlinks followed): epm runs privileged and must not be made to read or
  publish files elsewhere.
* **SaveFinalCache** marks a saved cache ready to be handed out; **PickCache** removes one ready cache (the
  one its ``ID`` filter names, or the oldest of the type and subtype) and returns it: the pick consumes it, its
  data is discarded (its payload is ``options``, e.g. an ``Enclave``). **GetCache**/**ListCache** read,
  **DeleteCache** removes the cache and the data epm owns, **LoadCache** copies the data to a target path
  (which must not exist, or be an empty directory; its parent must exist).
* Subtypes (upstream's finer-grained pools inside a type): every request's ``subType`` narrows it to caches of
  that subtype; "" means any subtype (upstream leaves that open).
* One epm per root (a lock file, ``root/.lock``).
* Crash safety: data is copied to a temporary name, fsync'd and renamed before the row commits; rows are
  removed before their data. At start, data no row refers to (a crash between the two) is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Mapping

from inclavare.atomicfile import fsync_dir
from inclavare.services.epm.config import DATA_DIR, Config
from inclavare.services.epm.errors import EpmError
from inclavare.services.epm.store import CacheRecord, Store, check_id

MAX_SUBTYPE = 256
PICK_FILTERS = frozenset({"ID"})  # the PickCache filters epm understands (docs/epm.md); others are refused
_TMP_PREFIX = ".tmp-"


class Pools:
    """The pools of one epm: ``config`` says the root and the pool types, ``store`` keeps the metadata."""

    def __init__(self, config: Config, store: Store) -> None:
        self.types = frozenset(config.pools)
        self.store = store
        self.root = os.path.realpath(config.root)
        self.data = os.path.join(self.root, DATA_DIR)
        try:
            os.makedirs(self.root, 0o700, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.data, 0o700)
            os.chmod(self.data, 0o700)
        except OSError as e:
            raise EpmError(f"epm root {config.root}: {e.strerror}", "FAILED_PRECONDITION") from None
        self._lock_fd = _lock_root(self.root)  # one epm per root: the sweep below would eat another's copies
        self._save_lock = threading.Lock()
        self.sweep()

    def close(self) -> None:
        """Release the root (the store is the caller's to close)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- checks

    def _type(self, value: str) -> str:
        if value not in self.types:
            raise EpmError(f"cache type {value!r}: no such pool (pools: {', '.join(sorted(self.types))})")
        return value

    def _inside_root(self, path: str, what: str) -> str:
        """``path`` resolved (symlinks followed), if it is absolute and inside root; EpmError otherwise."""
        if not path.startswith("/") or "\0" in path:
            raise EpmError(f"{what} {path!r}: expected an absolute path")
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.root]) != self.root or real == self.root:
            raise EpmError(f"{what} {path}: not inside epm's root {self.root}", "PERMISSION_DENIED")
        return real

    def _data_path(self, ctype: str, cid: str) -> str:
        return os.path.join(self.data, hashlib.sha256(f"{ctype}\0{cid}".encode()).hexdigest())

    # -- RPC operations

    def save(self, rec: CacheRecord, source_path: str = "") -> CacheRecord:
        """SaveCache: record ``rec`` (copying ``source_path``'s data in when given); the stored record."""
        self._type(rec.type)
        check_id(rec.id)
        if len(rec.subtype) > MAX_SUBTYPE or any(not " " <= c <= "~" for c in rec.subtype):
            raise EpmError(f"cache {rec.type}/{rec.id}: subType must be at most {MAX_SUBTYPE} printable characters")
        if rec.size < 0 or rec.created < 0:
            raise EpmError(f"cache {rec.type}/{rec.id}: size and created must not be negative")
        created = rec.created or int(time.time())
        if not source_path:
            save_path = self._inside_root(rec.save_path, "savePath") if rec.save_path else ""
            if save_path and os.path.commonpath([save_path, self.data]) == self.data:
                raise EpmError(f"savePath {rec.save_path}: inside epm's data directory", "PERMISSION_DENIED")
            stored = CacheRecord(rec.type, rec.id, rec.subtype, save_path, False, rec.parent, rec.size, created,
                                 rec.options)
            self.store.add(stored)
            return stored
        src = self._inside_root(source_path, "sourcePath")
        if os.path.commonpath([src, self.data]) == self.data:
            raise EpmError(f"sourcePath {source_path}: inside epm's data directory", "PERMISSION_DENIED")
        tmp = os.path.join(self.data, _TMP_PREFIX + secrets.token_hex(8))
        try:
            size = _copy(src, tmp, f"sourcePath {source_path}")
            if not os.path.islink(tmp):  # whatever epm's umask: nobody but root may change its data
                os.chmod(tmp, stat.S_IMODE(os.lstat(tmp).st_mode) & ~0o022)
            final = self._data_path(rec.type, rec.id)
            stored = CacheRecord(rec.type, rec.id, rec.subtype, final, True, rec.parent, size, created, rec.options)
            with self._save_lock:
                try:
                    self.store.get(rec.type, rec.id)
                except EpmError:
                    pass
                else:
                    raise EpmError(f"cache {rec.type}/{rec.id}: already exists", "ALREADY_EXISTS")
                _remove(final)  # data left by a crash before its row committed
                os.rename(tmp, final)
                fsync_dir(self.data)
                try:
                    self.store.add(stored)
                except BaseException:
                    _remove(final)
                    raise
            return stored
        finally:
            _remove(tmp)

    def finalize(self, ctype: str, cid: str, subtype: str = "") -> None:
        """SaveFinalCache."""
        self.store.finalize(self._type(ctype), check_id(cid), subtype)

    def get(self, ctype: str, cid: str, subtype: str = "") -> CacheRecord:
        """GetCache."""
        return self.store.get(self._type(ctype), check_id(cid), subtype)

    def pick(self, ctype: str, cid: str = "", subtype: str = "") -> CacheRecord:
        """One pick: the record (removed, its owned data discarded); NOT_FOUND when there is none."""
        rec = self.store.pick(self._type(ctype), check_id(cid) if cid else "", subtype)
        self._discard(rec)
        return rec

    def pick_matching(self, ctype: str, subtype: str = "",
                      filters: Mapping[str, str] | None = None) -> list[CacheRecord]:
        """PickCache: the picked cache of ``subtype`` matching ``filters`` (at most one: a pick hands out one
        ready cache, as upstream's enclave pool hands out one enclave), or [] when none matches. Filters:
        ``ID`` (that cache); another key is refused."""
        filters = dict(filters or {})
        unknown = sorted(set(filters) - PICK_FILTERS)
        if unknown:
            raise EpmError(f"PickCache filter {unknown[0]!r}: not supported (supported: "
                           f"{', '.join(sorted(PICK_FILTERS))})")
        self._type(ctype)
        cid = filters.get("ID", "")
        if "ID" in filters:
            check_id(cid, "PickCache filter ID")
        try:
            return [self.pick(ctype, cid, subtype)]
        except EpmError as e:
            if e.code == "NOT_FOUND":
                return []
            raise

    def list(self, ctype: str, after: str = "", limit: int = 0, subtype: str = "") -> list[CacheRecord]:
        """ListCache; ``limit`` 0 means the store's cap."""
        if limit < 0:
            raise EpmError(f"ListCache limit {limit}: must not be negative")
        return self.store.list(self._type(ctype), after, limit or 1 << 30, subtype)

    def delete(self, ctype: str, cid: str, subtype: str = "") -> None:
        """DeleteCache."""
        self._discard(self.store.delete(self._type(ctype), check_id(cid), subtype))

    def load(self, ctype: str, cid: str, target: str, subtype: str = "") -> None:
        """LoadCache: copy the cache's data to ``target``."""
        rec = self.get(ctype, cid, subtype)
        if not rec.save_path:
            raise EpmError(f"cache {ctype}/{cid}: has no data to load", "FAILED_PRECONDITION")
        src = rec.save_path if rec.owned else self._inside_root(rec.save_path, f"cache {ctype}/{cid} savePath")
        if not target.startswith("/") or "\0" in target:
            raise EpmError(f"targetPath {target!r}: expected an absolute path")
        target = os.path.normpath(target)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            raise EpmError(f"targetPath {target}: its directory {parent} does not exist", "FAILED_PRECONDITION")
        try:
            st = os.lstat(target)
            if not stat.S_ISDIR(st.st_mode) or os.listdir(target):
                raise EpmError(f"targetPath {target}: exists (and is not an empty directory)", "ALREADY_EXISTS")
        except FileNotFoundError:
            pass
        tmp = os.path.join(parent, f".{os.path.basename(target)}{_TMP_PREFIX}{secrets.token_hex(8)}")
        try:
            _copy(src, tmp, f"cache {ctype}/{cid} data")
            try:
                os.rename(tmp, target)
            except OSError as e:
                raise EpmError(f"targetPath {target}: {e.strerror}", "FAILED_PRECONDITION") from None
            fsync_dir(parent)
        finally:
            _remove(tmp)

    def healthy(self, ctype: str = "") -> bool:
        """Healthz: the database answers and the data directory is there (``ctype``, when given, must be a pool:
        INVALID_ARGUMENT otherwise, as upstream)."""
        if ctype:
            self._type(ctype)
        return self.store.healthy() and os.path.isdir(self.data)

    # -- housekeeping

    def _discard(self, rec: CacheRecord) -> None:
        """Remove a removed row's data, unless a save of the same (type, ID) has already put new data there."""
        if rec.owned and os.path.dirname(rec.save_path) == self.data:
            with self._save_lock:
                if not self.store.path_in_use(rec.save_path):
                    _remove(rec.save_path)

    def sweep(self) -> int:
        """Remove data no committed row refers to (temporary copies, a crash's leftovers); how many."""
        keep = self.store.owned_paths()
        gone = 0
        for name in os.listdir(self.data):
            path = os.path.join(self.data, name)
            if path not in keep:
                _remove(path)
                gone += 1
        return gone


def _lock_root(root: str) -> int:
    """An exclusive lock on ``root/.lock`` held as long as the returned descriptor is open."""
    path = os.path.join(root, ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise EpmError(f"epm root lock {path}: {e.strerror}", "FAILED_PRECONDITION") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise EpmError(f"epm root {root}: another epm is using it", "FAILED_PRECONDITION") from None
    return fd


def _copy(src: str, dst: str, what: str) -> int:
    """Copy the file or tree ``src`` to ``dst`` (symlinks as symlinks; special files refused), fsync'd; bytes."""
    try:
        st = os.lstat(src)
    except OSError as e:
        raise EpmError(f"{what}: {e.strerror}", "FAILED_PRECONDITION") from None
    total = 0
    if stat.S_ISREG(st.st_mode):
        try:
            shutil.copyfile(src, dst, follow_symlinks=False)
        except OSError as e:
            raise EpmError(f"{what}: cannot copy ({e.strerror})", "INTERNAL") from None
        _fsync_file(dst)
        return st.st_size
    if not stat.S_ISDIR(st.st_mode):
        raise EpmError(f"{what}: not a regular file or a directory")
    for top, dirs, files in os.walk(src):
        for name in dirs + files:
            path = os.path.join(top, name)
            m = os.lstat(path).st_mode
            if not (stat.S_ISREG(m) or stat.S_ISDIR(m) or stat.S_ISLNK(m)):
                raise EpmError(f"{what}: {path} is a device, fifo or socket")
            if stat.S_ISREG(m):
                total += os.lstat(path).st_size
    try:
        shutil.copytree(src, dst, symlinks=True)
    except (OSError, shutil.Error) as e:
        raise EpmError(f"{what}: cannot copy ({str(e).splitlines()[0][:200]})", "INTERNAL") from None
    for top, _dirs, files in os.walk(dst):
        for name in files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                _fsync_file(path)
        fsync_dir(top)
    return total


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
