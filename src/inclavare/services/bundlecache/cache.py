"""The node's bundle cache: built entries on disk, an SQLite index, per-key file locks.

Layout under the root (0700, owned by the caller)::

    index.db            SQLite (WAL, synchronous=FULL, 0600): committed entries, LRU order, counters
    entries/<key>/      a committed entry's tree (the path get_or_build returns)
    tmp/<key>.<random>/ a build in progress (renamed to entries/<key> when done)
    locks/<key>.lock    the key's lock file (flock)

Concurrency: a hit is verified under a shared ``flock`` on the key's lock file; every change to a key (build,
commit, repair, evict) happens under an exclusive one, so of two processes wanting one missing key one builds
and the other waits and then finds a hit, and users of an entry never block each other. ``flock`` is released
by the kernel when its holder dies, so a builder killed with ``kill -9`` leaves no stale lock, only a temp
directory that the next holder of the key removes. Evicting an entry unlinks its lock file while holding it; a
locker that finds its open file no longer the one at the path opens and locks again, so two holders never
coexist.

Commit order: the tree is built in a temp directory, its content digest computed (every file and directory
fsync'd), the directory renamed to ``entries/<key>``, and only then is the index row (digest, bytes) written.
A directory without a row (a kill between rename and row) is an orphan and is removed, never used; a row whose
tree does not match its digest is corruption: the row and the tree go and the entry is rebuilt.

LRU: each hit or commit stamps the row with the next value of a counter (no clocks); eviction removes the
smallest stamps first until the cached bytes fit ``max_bytes``, skipping entries being built or held by
:meth:`BundleCache.use`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from inclavare.atomicfile import fsync_dir
from inclavare.services.bundlecache.errors import BundleCacheError
from inclavare.services.bundlecache.keys import canonical_inputs, derive_key, is_key
from inclavare.services.bundlecache.tree import tree_digest
from inclavare.services.statedb import PrivateStateError, connect_durable, prepare_private_db, prepare_private_dir

DEFAULT_ROOT = "/var/lib/inclavare/bundle-cache"
DB_NAME = "index.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT = 30.0  # seconds an index write waits for another writer

_COUNTERS = ("hits", "misses", "builds", "corrupt", "evictions")
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    "CREATE TABLE entries (key TEXT PRIMARY KEY, level TEXT NOT NULL, digest TEXT NOT NULL, "
    "bytes INTEGER NOT NULL, last_used INTEGER NOT NULL, inputs TEXT NOT NULL) STRICT",
    "CREATE INDEX entries_lru ON entries (last_used)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT",
)

Build = Callable[[str], None]


@dataclass(frozen=True)
class CacheStats:
    """Node-wide counters (kept in the index, so they survive restarts) and what is on disk now."""

    hits: int
    misses: int
    builds: int
    corrupt: int
    evictions: int
    entries: int
    bytes: int

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups (0.0 before the first lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class BundleCache:
    """A size-bounded, LRU-evicted, crash-safe cache of built bundles shared by every process on the node."""

    def __init__(self, root: str = DEFAULT_ROOT, max_bytes: int = 10 << 30) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise BundleCacheError(f"bundle cache {root}: max_bytes must be a positive integer (got {max_bytes!r})")
        self.root = os.path.abspath(root)
        self.max_bytes = max_bytes
        self._entries = os.path.join(self.root, "entries")
        self._tmp = os.path.join(self.root, "tmp")
        self._locks = os.path.join(self.root, "locks")
        try:
            for d in (self.root, self._entries, self._tmp, self._locks):
                prepare_private_dir(d, "bundle cache directory")
        except PrivateStateError as e:
            raise BundleCacheError(str(e)) from None
        self._db_lock = threading.Lock()
        self._db = self._open_index(os.path.join(self.root, DB_NAME))

    # ---------------------------------------------------------------------------------------------
    # Public API

    def key(self, level: str, key_inputs: Mapping[str, object]) -> str:
        """The key of ``key_inputs`` at ``level`` (see :mod:`inclavare.services.bundlecache.keys`)."""
        return derive_key(level, key_inputs)

    def get_or_build(self, level: str, key_inputs: Mapping[str, object], build: Build) -> str:
        """The path of the verified entry for ``key_inputs`` at ``level``, calling ``build(tmpdir)`` to fill
        a fresh directory when there is none (or it is corrupt). ``build``'s exception propagates and leaves
        nothing behind. The path stays valid until the entry is evicted; to keep eviction away while using
        it, use :meth:`use`."""
        key = derive_key(level, key_inputs)
        with self._hit_or_exclusive(key) as fd:
            if fd is None:
                self._touch(key, "hits")
            else:
                self._get_or_build_locked(key, level, key_inputs, build, fd)
        return self._entry_path(key)

    def store(self, level: str, key_inputs: Mapping[str, object], build: Build) -> str:
        """Commit an entry whose content the caller already made (after a :meth:`lookup` that counted the
        miss, so a failed pipeline caches nothing): like :meth:`get_or_build`, counting only the build."""
        key = derive_key(level, key_inputs)
        with self._key_lock(key) as fd:
            self._get_or_build_locked(key, level, key_inputs, build, fd, counting=False)
        return self._entry_path(key)

    @contextlib.contextmanager
    def use(self, level: str, key_inputs: Mapping[str, object], build: Build) -> Iterator[str]:
        """Like :meth:`get_or_build`, but holds a shared lock on the entry while the ``with`` body runs, so
        no process evicts or rebuilds it meanwhile (users and hits of one entry do not block each other; a
        rebuild of a corrupt entry waits for them)."""
        key = derive_key(level, key_inputs)
        while True:
            with self._hit_or_exclusive(key) as fd:
                if fd is None:
                    self._touch(key, "hits")
                    yield self._entry_path(key)
                    return
                self._get_or_build_locked(key, level, key_inputs, build, fd)
                fcntl.flock(fd, fcntl.LOCK_SH)  # downgrade; not atomic, so check the entry survived it
                if self._row(key) is not None and os.path.isdir(self._entry_path(key)):
                    yield self._entry_path(key)
                    return

    def lookup(self, level: str, key_inputs: Mapping[str, object]) -> str | None:
        """The path of the verified entry, or ``None`` (a corrupt entry is removed); counts a hit or a miss."""
        key = derive_key(level, key_inputs)
        with self._hit_or_exclusive(key) as fd:
            if fd is None or self._verified(key):  # (repaired by another process meanwhile)
                self._touch(key, "hits")
                return self._entry_path(key)
        self._bump("misses")
        return None

    def stats(self) -> CacheStats:
        """The node-wide counters and the entries and bytes cached now."""
        with self._db_lock:
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            n, total = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM entries").fetchone()
        return CacheStats(entries=n, bytes=total, **{c: counters.get(c, 0) for c in _COUNTERS})

    def evict(self, target_bytes: int | None = None) -> list[str]:
        """Remove least recently used entries until at most ``target_bytes`` (default ``max_bytes``) are
        cached; entries locked by a builder or a user are skipped. Returns the evicted keys, oldest first."""
        return self._evict(self.max_bytes if target_bytes is None else target_bytes, protect=None)

    def clean(self) -> int:
        """Remove what no committed entry owns: trees without an index row, left-over temp directories
        (of builders that died) and rows whose tree is missing. Entries in use are left alone. Returns the
        number of items removed."""
        removed = 0
        keys = {name[:64] for name in os.listdir(self._tmp)} | set(os.listdir(self._entries))
        for key in sorted(k for k in keys if is_key(k)):
            with self._try_key_lock(key) as fd:
                if fd is None:
                    continue
                removed += self._clear_tmp(key)
                if self._row(key) is None and os.path.lexists(self._entry_path(key)):
                    _remove_tree(self._entry_path(key))
                    removed += 1
        for (key,) in self._query("SELECT key FROM entries"):
            with self._try_key_lock(key) as fd:
                if fd is not None and not os.path.isdir(self._entry_path(key)):
                    self._drop_row(key)
                    removed += 1
        return removed

    def close(self) -> None:
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> BundleCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------
    # Building and verifying (the caller holds the key's lock)

    def _get_or_build_locked(self, key: str, level: str, key_inputs: Mapping[str, object], build: Build,
                             lock_fd: int, counting: bool = True) -> None:
        if self._verified(key):
            if counting:
                self._touch(key, "hits")
            return
        if counting:
            self._bump("misses")
        self._clear_tmp(key)
        tmp = tempfile.mkdtemp(prefix=key + ".", dir=self._tmp)  # 0700
        try:
            build(tmp)
            try:
                digest, nbytes = tree_digest(tmp, sync=True)
            except OSError as e:
                raise BundleCacheError(f"bundle cache {self.root}: the {level} entry built in {tmp} cannot be "
                                       f"read back ({e.strerror}: {e.filename})") from None
            if nbytes > self.max_bytes:
                raise BundleCacheError(f"bundle cache {self.root}: the {level} entry built is {nbytes} bytes, "
                                       f"more than the cache's bound of {self.max_bytes}")
            os.rename(tmp, self._entry_path(key))
        except BaseException:
            _remove_tree(tmp)
            raise
        fsync_dir(self._entries)
        inputs = canonical_inputs(level, key_inputs).decode("ascii")
        with self._write() as db:
            stamp = db.execute("SELECT COALESCE(MAX(last_used), 0) + 1 FROM entries").fetchone()[0]
            db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                       (key, level, digest, nbytes, stamp, inputs))
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'builds'")
        self._evict(self.max_bytes, protect=key)

    def _intact(self, key: str) -> bool:
        """Whether ``key`` has a committed entry whose tree matches the digest recorded at commit (changes
        nothing; a shared lock is enough)."""
        row = self._row(key)
        if row is None:
            return False
        try:
            digest, _ = tree_digest(self._entry_path(key))
        except (OSError, BundleCacheError):
            return False
        return digest == row[0]

    def _verified(self, key: str) -> bool:
        """Like :meth:`_intact`, with the exclusive lock held: an orphan tree or a corrupt entry is removed
        (counted as ``corrupt``) so the caller rebuilds it."""
        path = self._entry_path(key)
        if self._intact(key):
            return True
        if self._row(key) is None:
            if os.path.lexists(path):
                _remove_tree(path)  # renamed in but never committed: its content is unknown
            return False
        self._drop_row(key)
        _remove_tree(path)
        self._bump("corrupt")
        return False

    def _clear_tmp(self, key: str) -> int:
        n = 0
        for name in os.listdir(self._tmp):
            if name.startswith(key + "."):
                _remove_tree(os.path.join(self._tmp, name))
                n += 1
        return n

    def _evict(self, target: int, protect: str | None) -> list[str]:
        evicted: list[str] = []
        skipped: set[str] = set() if protect is None else {protect}
        while True:
            rows = self._query("SELECT key, bytes FROM entries ORDER BY last_used")
            total = sum(b for _, b in rows)
            if total <= target:
                return evicted
            victim = next((k for k, _ in rows if k not in skipped), None)
            if victim is None:
                return evicted
            skipped.add(victim)
            with self._try_key_lock(victim) as fd:
                if fd is None or self._row(victim) is None:
                    continue
                self._drop_row(victim, evicted=True)
                _remove_tree(self._entry_path(victim))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._lock_path(victim))  # while held: see _key_lock
                evicted.append(victim)

    # ---------------------------------------------------------------------------------------------
    # Locks

    def _entry_path(self, key: str) -> str:
        return os.path.join(self._entries, key)

    def _lock_path(self, key: str) -> str:
        return os.path.join(self._locks, key + ".lock")

    @contextlib.contextmanager
    def _hit_or_exclusive(self, key: str) -> Iterator[int | None]:
        """``None`` with a shared lock held if the entry is intact, else the fd of an exclusive lock on the key.

        Never *waits* for the exclusive lock: users of an entry hold shared locks for as long as they use it (a
        container's life, through :meth:`use`), so a blocked exclusive request made just before the entry was
        committed would wait for all of them. Instead: wait on a shared lock (that waits out a builder, who
        downgrades or releases when done), check, and try the exclusive lock without blocking; when it is busy,
        someone is building or using the key: back off briefly and look again."""
        delay = 0.002
        while True:
            with self._key_lock(key, shared=True):
                if self._intact(key):
                    yield None
                    return
            with self._try_key_lock(key) as fd:
                if fd is not None:
                    yield fd
                    return
            time.sleep(delay)  # a corrupt entry still in use, or another locker between our two steps
            delay = min(delay * 2, 0.1)

    @contextlib.contextmanager
    def _key_lock(self, key: str, shared: bool = False) -> Iterator[int]:
        fd = self._lock(key, blocking=True, shared=shared)
        assert fd is not None
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _try_key_lock(self, key: str) -> Iterator[int | None]:
        fd = self._lock(key, blocking=False)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _lock(self, key: str, blocking: bool, shared: bool = False) -> int | None:
        """An fd holding a flock (exclusive unless ``shared``) on the key's lock file, or ``None`` (not
        blocking, and busy). An evicter unlinks the file while holding it, so after locking check the fd is
        still the file at the path; if not, start over on the new file."""
        path = self._lock_path(key)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise BundleCacheError(f"bundle cache lock {path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                raise BundleCacheError(f"bundle cache lock {path}: {e.strerror}") from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    # ---------------------------------------------------------------------------------------------
    # The index

    def _open_index(self, path: str) -> sqlite3.Connection:
        try:
            prepare_private_db(path, "bundle cache index")
            db = connect_durable(path, BUSY_TIMEOUT, "bundle cache index")
        except PrivateStateError as e:
            raise BundleCacheError(str(e)) from None
        except sqlite3.Error as e:
            raise BundleCacheError(f"bundle cache index {path}: {e}") from None
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "meta" not in tables:
                    for sql in _SCHEMA:
                        db.execute(sql)
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    db.executemany("INSERT INTO counters VALUES (?, 0)", [(c,) for c in _COUNTERS])
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None or row[0] != str(SCHEMA_VERSION):
                    raise BundleCacheError(f"bundle cache index {path}: schema version {row and row[0]!r}, "
                                           f"this code knows {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise BundleCacheError(f"bundle cache index {path}: {e}") from None
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise BundleCacheError(f"bundle cache index {self.root}/{DB_NAME}: {e}") from None

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._db_lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise BundleCacheError(f"bundle cache index {self.root}/{DB_NAME}: {e}") from None

    def _row(self, key: str) -> tuple[str, int] | None:
        rows = self._query("SELECT digest, bytes FROM entries WHERE key = ?", (key,))
        return (rows[0][0], rows[0][1]) if rows else None

    def _drop_row(self, key: str, evicted: bool = False) -> None:
        with self._write() as db:
            db.execute("DELETE FROM entries WHERE key = ?", (key,))
            if evicted:
                db.execute("UPDATE counters SET value = value + 1 WHERE name = 'evictions'")

    def _touch(self, key: str, counter: str) -> None:
        with self._write() as db:
            db.execute("UPDATE entries SET last_used = (SELECT MAX(last_used) + 1 FROM entries) WHERE key = ?",
                       (key,))
            db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (counter,))

    def _bump(self, counter: str) -> None:
        with self._write() as db:
            db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (counter,))


# --------------------------------------------------------------------------------------------------
# Files and permissions





def _remove_tree(path: str) -> None:
    """Remove a tree (or a stray file) if present; directories a builder made read-only or unreadable are
    opened up first (the cache's owner may always chmod its own tree)."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    try:
        shutil.rmtree(path)
    except OSError:
        _open_up(path)
        shutil.rmtree(path)


def _open_up(root: str) -> None:
    """Give every directory under ``root`` mode 0700, top down (a directory must be opened before its
    children can be listed)."""
    stack = [root]
    while stack:
        d = stack.pop()
        with contextlib.suppress(FileNotFoundError):
            os.chmod(d, 0o700)
            for entry in os.scandir(d):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
