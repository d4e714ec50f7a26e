"""epm's cache metadata: one SQLite file (upstream keeps it in boltdb).

Built as verdictd's store is (services/verdictd/store.py): WAL journal with ``synchronous=FULL`` so a
committed change survives ``kill -9`` and power loss; every write one ``BEGIN IMMEDIATE`` transaction; the
database's directory 0700 and the file 0600 (an existing one other users can reach is refused); a schema
version in ``meta`` (a newer one is refused). Rows are keyed by (pool type, ID); ``state`` is ``saved``
(SaveCache) or ``final`` (SaveFinalCache: ready to be picked); ``seq`` orders picks oldest first. A
``subtype`` argument of "" matches every subtype; another value only rows of that subtype (a row of another one
is "not found"). ``parent`` and ``options`` are the client's opaque bytes (a serialized parent Cache, a
serialized Any), size-capped.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from inclavare.services.epm.errors import EpmError
from inclavare.services.statedb import PrivateStateError, connect_durable, prepare_private_db, prepare_private_dir

SCHEMA_VERSION = 1
MAX_ID = 256
MAX_OPAQUE = 1 << 20  # parent / options bytes
MAX_ROWS_PER_TYPE = 100_000
MAX_LIST = 1000  # rows one list call returns at most
STATE_SAVED = "saved"
STATE_FINAL = "final"

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    "CREATE TABLE caches (type TEXT NOT NULL, id TEXT NOT NULL, subtype TEXT NOT NULL, save_path TEXT NOT NULL, "
    "owned INTEGER NOT NULL, parent BLOB NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL, "
    "options BLOB NOT NULL, state TEXT NOT NULL CHECK (state IN ('saved', 'final')), seq INTEGER NOT NULL, "
    "PRIMARY KEY (type, id)) STRICT",
    "CREATE INDEX caches_pick ON caches (type, state, seq)",
)
_COLUMNS = "type, id, subtype, save_path, owned, parent, size, created, options, state, seq"


@dataclass(frozen=True)
class CacheRecord:
    """One cache's metadata. ``owned``: epm copied the data into ``save_path`` and deletes it with the row."""

    type: str
    id: str
    subtype: str = ""
    save_path: str = ""
    owned: bool = False
    parent: bytes = b""
    size: int = 0
    created: int = 0
    options: bytes = b""
    state: str = STATE_SAVED
    seq: int = 0


def check_id(value: object, what: str = "cache ID") -> str:
    """``value`` if it is a usable ID: 1..256 printable ASCII characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID:
        raise EpmError(f"{what} {value!r}: expected 1..{MAX_ID} characters")
    if any(not " " <= c <= "~" for c in value):
        raise EpmError(f"{what} {value!r}: has a character that is not printable ASCII")
    return value


def _row(r: tuple[Any, ...]) -> CacheRecord:
    t, i, sub, path, owned, parent, size, created, options, state, seq = r
    return CacheRecord(str(t), str(i), str(sub), str(path), bool(owned), bytes(parent), int(size), int(created),
                       bytes(options), str(state), int(seq))


class Store:
    """The metadata database at ``db_path`` (its directory created 0700 if absent). Thread-safe: one
    connection, serialised by a lock (epm's calls are short)."""

    def __init__(self, db_path: str, timeout: float = 10.0) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        try:
            prepare_private_dir(os.path.dirname(db_path) or ".", "epm db directory", parents=True)
            prepare_private_db(db_path, "epm db")
        except PrivateStateError as e:
            raise EpmError(str(e), "FAILED_PRECONDITION") from None
        self._db: sqlite3.Connection | None = None
        try:
            self._db = connect_durable(db_path, timeout, "epm db")
            self._init_schema()
        except sqlite3.Error as e:
            self.close()
            raise EpmError(f"epm db {db_path}: cannot open: {e}", "INTERNAL") from None
        except PrivateStateError as e:
            self.close()
            raise EpmError(str(e), "INTERNAL") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, fsync'd); rolled back if the block raises."""
        with self._lock:
            db = self._db
            if db is None:
                raise EpmError(f"epm db {self.db_path}: closed", "UNAVAILABLE")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise EpmError(f"epm db {self.db_path}: {what}: {e}", "INTERNAL") from None

    def _init_schema(self) -> None:
        with self._tx("cannot initialise") as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                return
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() if "meta" in tables else None
            if row is None or row[0] != str(SCHEMA_VERSION):
                raise EpmError(f"epm db {self.db_path}: schema {row[0] if row else 'unknown'!s}, this epm "
                               f"reads {SCHEMA_VERSION}", "FAILED_PRECONDITION")

    # -- operations

    def add(self, rec: CacheRecord) -> None:
        """Record a new cache (state ``saved``); ALREADY_EXISTS if (type, ID) is taken."""
        check_id(rec.id)
        for what, blob in (("parent", rec.parent), ("options", rec.options)):
            if len(blob) > MAX_OPAQUE:
                raise EpmError(f"cache {rec.type}/{rec.id}: {what} is {len(blob)} bytes, more than {MAX_OPAQUE}")
        with self._tx("cannot save") as db:
            if db.execute("SELECT 1 FROM caches WHERE type = ? AND id = ?", (rec.type, rec.id)).fetchone():
                raise EpmError(f"cache {rec.type}/{rec.id}: already exists", "ALREADY_EXISTS")
            n = db.execute("SELECT count(*) FROM caches WHERE type = ?", (rec.type,)).fetchone()[0]
            if n >= MAX_ROWS_PER_TYPE:
                raise EpmError(f"pool {rec.type}: full ({n} caches)", "RESOURCE_EXHAUSTED")
            seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM caches").fetchone()[0]
            db.execute(f"INSERT INTO caches ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (rec.type, rec.id, rec.subtype, rec.save_path, int(rec.owned), rec.parent, rec.size,
                        rec.created, rec.options, STATE_SAVED, seq))

    @staticmethod
    def _one(db: sqlite3.Connection, ctype: str, cid: str, subtype: str) -> tuple[Any, ...]:
        """The row (type, ID) of ``subtype`` ("" any); NOT_FOUND if there is none."""
        r = db.execute(f"SELECT {_COLUMNS} FROM caches WHERE type = ? AND id = ? AND (? = '' OR subtype = ?)",
                       (ctype, cid, subtype, subtype)).fetchone()
        if r is None:
            raise EpmError(f"cache {ctype}/{cid}{f' of subType {subtype!r}' if subtype else ''}: not found",
                           "NOT_FOUND")
        return tuple(r)

    def get(self, ctype: str, cid: str, subtype: str = "") -> CacheRecord:
        """The cache (type, ID); NOT_FOUND if there is none (of ``subtype``)."""
        with self._tx("cannot read") as db:
            return _row(self._one(db, ctype, cid, subtype))

    def finalize(self, ctype: str, cid: str, subtype: str = "") -> None:
        """Mark a saved cache ready to be picked (SaveFinalCache); NOT_FOUND if there is none (of ``subtype``)."""
        with self._tx("cannot finalize") as db:
            self._one(db, ctype, cid, subtype)
            db.execute("UPDATE caches SET state = ? WHERE type = ? AND id = ?", (STATE_FINAL, ctype, cid))

    def pick(self, ctype: str, cid: str = "", subtype: str = "") -> CacheRecord:
        """Remove and return a final cache of ``subtype``: ``cid``, or with no ID the oldest final one.
        NOT_FOUND if there is none; FAILED_PRECONDITION if ``cid`` is saved but not final."""
        with self._tx("cannot pick") as db:
            if cid:
                r = self._one(db, ctype, cid, subtype)
                if r[9] != STATE_FINAL:
                    raise EpmError(f"cache {ctype}/{cid}: not final (SaveFinalCache it first)", "FAILED_PRECONDITION")
            else:
                found = db.execute(f"SELECT {_COLUMNS} FROM caches WHERE type = ? AND state = ? "
                                   "AND (? = '' OR subtype = ?) ORDER BY seq LIMIT 1",
                                   (ctype, STATE_FINAL, subtype, subtype)).fetchone()
                if found is None:
                    raise EpmError(f"pool {ctype}{f' subType {subtype!r}' if subtype else ''}: no final cache to "
                                   "pick", "NOT_FOUND")
                r = tuple(found)
            db.execute("DELETE FROM caches WHERE type = ? AND id = ?", (r[0], r[1]))
        return _row(r)

    def list(self, ctype: str, after: str = "", limit: int = MAX_LIST, subtype: str = "") -> list[CacheRecord]:
        """Caches of ``ctype`` (and ``subtype``) with IDs after ``after`` (byte order), at most ``limit`` (capped at
        MAX_LIST)."""
        limit = min(max(limit, 1), MAX_LIST)
        with self._tx("cannot list") as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM caches WHERE type = ? AND id > ? AND (? = '' OR subtype = ?) "
                              "ORDER BY id LIMIT ?", (ctype, after, subtype, subtype, limit)).fetchall()
        return [_row(r) for r in rows]

    def delete(self, ctype: str, cid: str, subtype: str = "") -> CacheRecord:
        """Remove and return the cache (type, ID); NOT_FOUND if there is none (of ``subtype``)."""
        with self._tx("cannot delete") as db:
            r = self._one(db, ctype, cid, subtype)
            db.execute("DELETE FROM caches WHERE type = ? AND id = ?", (ctype, cid))
        return _row(r)

    def owned_paths(self) -> set[str]:
        """The data paths of every cache epm owns (what the orphan sweep keeps)."""
        with self._tx("cannot read") as db:
            return {str(r[0]) for r in db.execute("SELECT save_path FROM caches WHERE owned = 1")}

    def path_in_use(self, path: str) -> bool:
        """Whether an owned cache's data is at ``path``."""
        with self._tx("cannot read") as db:
            return db.execute("SELECT 1 FROM caches WHERE owned = 1 AND save_path = ?", (path,)).fetchone() is not None

    def healthy(self) -> bool:
        """Whether the database answers a trivial query."""
        try:
            with self._tx("health check") as db:
                db.execute("SELECT count(*) FROM meta").fetchone()
            return True
        except EpmError:
            return False


