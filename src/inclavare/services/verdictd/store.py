"""verdictd's state: one SQLite database in a private state directory.

What it holds: secrets (KBS resources, EAA keys: anything of a ``kind``) sealed at rest, Rego policies,
reference values (the rows behind :class:`~inclavare.services.verdictd.refvalues.ReferenceValues`) and an
append-only audit trail.

Why it is built this way:

* **Durability.** WAL journal with ``synchronous=FULL``: a transaction's WAL frames are fsync'd before
  ``COMMIT`` returns, so once a call here returns its change survives ``kill -9`` (and a power cut). Every
  write is one ``BEGIN IMMEDIATE`` transaction, so two threads or two processes on one file queue up on the
  write lock instead of failing half-way (a busy database waits up to :data:`BUSY_TIMEOUT` seconds).
* **Confidentiality at rest.** A secret's value is sealed with AES-256-GCM under the key-encryption key
  (KEK), a fresh random 96-bit nonce per write and the row's kind, name and meta as associated data, so a
  row copied over another (or meta edited) fails to open rather than yielding the wrong secret. The KEK comes
  from a file or ``$VERDICTD_KEK`` (:func:`load_kek`), never from the database; the database holds only a
  sealed check value, so a wrong KEK is refused when the store opens, never turned into garbage.
* **Tight permissions.** The state directory is 0700 and the database file 0600 (SQLite gives its ``-wal``
  and ``-shm`` files the database's mode); a directory or file other users could reach is refused.
* **Schema version** in the ``meta`` table; a database written by a newer verdictd is refused, not guessed at.
* **Bounded inputs.** Names, values, policies, meta and audit details have size caps; audit reads a row cap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from inclavare.services.statedb import (
    PrivateStateError,
    connect,
    connect_durable,
    prepare_private_db,
    prepare_private_dir,
)
from inclavare.services.statedb import (
    read_secret_file as _read_secret,
)
from inclavare.services.verdictd.errors import VerdictdError

DB_NAME = "verdictd.db"
SCHEMA_VERSION = 1
KEK_SIZE = 32  # AES-256
KEK_ENV = "VERDICTD_KEK"
NONCE_SIZE = 12  # 96-bit GCM nonce

MAX_NAME = 256
MAX_SECRET = 1 << 20  # 1 MiB per secret value
MAX_POLICY = 256 << 10  # 256 KiB per policy text (UTF-8)
MAX_META = 16 << 10  # a secret's meta, as JSON
MAX_EVENT = 64
MAX_AUDIT_DETAIL = 64 << 10  # one audit record's detail, as JSON
MAX_AUDIT_READ = 10_000  # rows one audit_records call may return
MAX_ROWS = 100_000  # secrets of one kind, policies, reference values
BUSY_TIMEOUT = 10.0  # seconds a write waits for another writer

KIND_KEY = "key"  # EAA / key-provider keys
KIND_RESOURCE = "resource"  # KBS resources, named repo/type/tag

_KIND_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_EVENT_RE = re.compile(r"[A-Za-z0-9._:-]+")
_KEK_CHECK = b"verdictd key-encryption key check"
_AAD_SECRET = b"verdictd-secret-v1\x00"
_AAD_CHECK = b"verdictd-kek-check-v1\x00"

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    "CREATE TABLE secrets (kind TEXT NOT NULL, name TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL, "
    "meta TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (kind, name)) STRICT",
    "CREATE TABLE policies (name TEXT PRIMARY KEY, text TEXT NOT NULL, updated REAL NOT NULL) STRICT",
    "CREATE TABLE reference_values (name TEXT PRIMARY KEY, value_json TEXT NOT NULL, provenance TEXT NOT NULL, "
    "expires REAL, updated REAL NOT NULL) STRICT",
    "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, event TEXT NOT NULL, "
    "detail TEXT NOT NULL) STRICT",
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
)


# --------------------------------------------------------------------------------------------------
# The key-encryption key


def load_kek(path: str | None = None, *, state_dir: str | None = None) -> bytes:
    """The 32-byte KEK: from ``path`` (32 raw bytes, or 64 hex digits and optional whitespace; mode 0600 or
    tighter) or, with no path, from ``$VERDICTD_KEK`` (64 hex digits). With ``state_dir``, a key file inside
    that directory is refused: the key must not sit beside the secrets it protects."""
    if path is None:
        text = os.environ.get(KEK_ENV)
        if text is None:
            raise VerdictdError(f"no key-encryption key: give a KEK file or set ${KEK_ENV} (64 hex digits)")
        return _check_kek(_parse_hex_kek(text.strip(), f"${KEK_ENV}"), f"${KEK_ENV}")
    if state_dir is not None:
        key_real, dir_real = os.path.realpath(path), os.path.realpath(state_dir)
        if os.path.commonpath([key_real, dir_real]) == dir_real:
            raise VerdictdError(f"KEK file {path}: inside the state directory {state_dir}; keep it elsewhere")
    data = read_secret_file(path, "KEK file", 256, "expected 32 raw bytes or 64 hex digits")
    if len(data) == KEK_SIZE:
        return _check_kek(data, f"KEK file {path}")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise VerdictdError(f"KEK file {path}: neither 32 raw bytes nor 64 hex digits "
                            f"({len(data)} bytes)") from None
    return _check_kek(_parse_hex_kek(text, f"KEK file {path}"), f"KEK file {path}")


def read_secret_file(path: str, what: str, limit: int, expected: str, follow: bool = True) -> bytes:
    """:func:`inclavare.services.statedb.read_secret_file` with verdictd's error type."""
    try:
        return _read_secret(path, what, limit, expected, follow=follow)
    except PrivateStateError as e:
        raise VerdictdError(str(e)) from None


def _parse_hex_kek(text: str, where: str) -> bytes:
    if len(text) != 2 * KEK_SIZE or not re.fullmatch(r"[0-9A-Fa-f]+", text):
        raise VerdictdError(f"{where}: the KEK must be {2 * KEK_SIZE} hex digits ({KEK_SIZE} bytes)")
    return bytes.fromhex(text)


def _check_kek(kek: bytes, where: str) -> bytes:
    if not isinstance(kek, bytes) or len(kek) != KEK_SIZE:
        raise VerdictdError(f"{where}: the KEK must be {KEK_SIZE} bytes")
    if len(set(kek)) == 1:
        raise VerdictdError(f"{where}: the KEK is one byte repeated; generate a random one")
    return kek


# --------------------------------------------------------------------------------------------------
# Names


def check_name(name: object, what: str) -> str:
    """``name`` if it is a usable name: 1..256 printable ASCII characters, no surrounding space, no
    backslash, and when it has ``/``-separated parts none is empty, ``.`` or ``..`` (names may end up in
    paths and URLs)."""
    if not isinstance(name, str):
        raise VerdictdError(f"{what}: the name must be a string, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME:
        raise VerdictdError(f"{what}: the name must be 1..{MAX_NAME} characters (got {len(name)})")
    bad = next((c for c in name if not " " <= c <= "~"), None)
    if bad is not None:
        raise VerdictdError(f"{what} {name!r}: the name has a character that is not printable ASCII ({bad!r})")
    if name != name.strip():
        raise VerdictdError(f"{what} {name!r}: the name starts or ends with a space")
    if "\\" in name:
        raise VerdictdError(f"{what} {name!r}: the name has a backslash")
    if "/" in name and any(part in ("", ".", "..") for part in name.split("/")):
        raise VerdictdError(f"{what} {name!r}: the name has an empty, '.' or '..' path part")
    return name


def check_resource_path(path: object, what: str = "resource") -> str:
    """``path`` if it is a KBS resource path ``repo/type/tag`` (Trustee's shape: three parts, each
    ``[A-Za-z0-9._-]+``, none ``.`` or ``..``)."""
    name = check_name(path, what)
    parts = name.split("/")
    if len(parts) != 3 or not all(_SEGMENT_RE.fullmatch(p) for p in parts):
        raise VerdictdError(f"{what} {name!r}: not a resource path repo/type/tag (each part [A-Za-z0-9._-]+)")
    return name


def check_kind(kind: object) -> str:
    """``kind`` if it is a secret kind: a short lower-case word (``key``, ``resource``, ...)."""
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise VerdictdError(f"secret kind {kind!r}: must match [a-z][a-z0-9_-]{{0,31}}")
    return kind


def _check_secret_name(kind: str, name: object) -> str:
    if kind == KIND_RESOURCE:
        return check_resource_path(name, f"secret {kind}")
    return check_name(name, f"secret {kind}")


def _json_dict(value: object, what: str, limit: int) -> str:
    """``value`` (a dict with string keys) as canonical JSON of at most ``limit`` bytes."""
    if not isinstance(value, dict):
        raise VerdictdError(f"{what}: must be a JSON object (dict), not {type(value).__name__}")
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise VerdictdError(f"{what}: not JSON-serialisable ({e})") from None
    if len(text.encode()) > limit:
        raise VerdictdError(f"{what}: {len(text.encode())} bytes as JSON, more than {limit}")
    return text


# --------------------------------------------------------------------------------------------------
# The store


class Store:
    """verdictd's state in ``path`` (a directory, created 0700 if absent) as one SQLite file
    ``verdictd.db`` (0600). Secrets are sealed under ``kek`` (32 bytes, see :func:`load_kek`).

    One object may be shared by threads: writes are serialised on one connection, reads use a second one so
    they never wait behind a write's fsync (WAL readers see the last commit). Concurrent :meth:`audit` calls
    are committed together (group commit: one transaction and fsync for every record queued meanwhile; each
    call still returns only once its own record is on disk). Several objects, in one process or several, may
    use the same directory (SQLite's locking; writers queue for up to :data:`BUSY_TIMEOUT` seconds).
    """

    def __init__(self, path: str, kek: bytes) -> None:
        self.path = path
        self.db_path = os.path.join(path, DB_NAME)
        self._aead = AESGCM(_check_kek(kek, f"state {path}"))
        self._lock = threading.RLock()  # the write connection
        self._rlock = threading.Lock()  # the read connection
        self._db: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None
        self._pending_lock = threading.Lock()
        self._pending: list[_PendingAudit] = []
        try:
            prepare_private_dir(path, "state directory")
            prepare_private_db(self.db_path, "state db")
        except PrivateStateError as e:
            raise VerdictdError(str(e)) from None
        try:
            self._db = connect_durable(self.db_path, BUSY_TIMEOUT, "state db")
            self._init_schema()
            self._rdb = connect(self.db_path, BUSY_TIMEOUT)
            self._rdb.execute("PRAGMA query_only = ON")
        except sqlite3.Error as e:
            self.close()
            raise self._err("cannot open", e) from None
        except PrivateStateError as e:
            self.close()
            raise VerdictdError(str(e)) from None
        except BaseException:
            self.close()
            raise

    # -- plumbing

    def _err(self, what: str, e: sqlite3.Error) -> VerdictdError:
        return VerdictdError(f"state db {self.db_path}: {what}: {e}")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise VerdictdError(f"state db {self.db_path}: the store is closed")
        return self._db

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE (take the write lock now, so no upgrade can fail later),
        COMMIT when the block ends (fsync'd: synchronous=FULL), ROLLBACK if it raises."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._err(what, e) from None
            try:
                yield db
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise self._err(what, e) from None
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise self._err(what, e) from None

    def _read(self, what: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._rlock:
            if self._rdb is None:
                raise VerdictdError(f"state db {self.db_path}: the store is closed")
            try:
                return self._rdb.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise self._err(what, e) from None

    def _init_schema(self) -> None:
        with self._write("cannot initialise") as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in _SCHEMA:  # (executescript would commit the open transaction first)
                    db.execute(statement)
                nonce = secrets.token_bytes(NONCE_SIZE)
                check = nonce + self._aead.encrypt(nonce, _KEK_CHECK, _AAD_CHECK)
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("kek_check", check.hex()),
                    ("created", repr(time.time()))])
                return
            if "meta" not in tables:
                raise VerdictdError(f"state db {self.db_path}: not a verdictd state database (no meta table)")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema_version", "")
        if not version.isdigit():
            raise VerdictdError(f"state db {self.db_path}: meta schema_version {version!r} is not a number")
        if int(version) > SCHEMA_VERSION:
            raise VerdictdError(f"state db {self.db_path}: schema version {version} is newer than this verdictd "
                                f"supports ({SCHEMA_VERSION}); use a newer verdictd")
        if int(version) < 1:
            raise VerdictdError(f"state db {self.db_path}: schema version {version} is not known")
        try:
            check = bytes.fromhex(meta.get("kek_check", ""))
            ok = self._aead.decrypt(check[:NONCE_SIZE], check[NONCE_SIZE:], _AAD_CHECK) == _KEK_CHECK
        except (ValueError, InvalidTag):
            ok = False
        if not ok:
            raise VerdictdError(f"state db {self.db_path}: the key-encryption key is not the one this state "
                                f"was sealed with")

    def _loads(self, text: str, what: str) -> Any:
        try:
            return json.loads(text)
        except (ValueError, TypeError):
            raise VerdictdError(f"state db {self.db_path}: {what} is not valid JSON") from None

    def close(self) -> None:
        """Close the database (idempotent); later calls raise VerdictdError."""
        with self._lock, self._rlock:
            for db in (self._db, self._rdb):
                if db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        db.close()
            self._db = self._rdb = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer: ``"ok"`` for a sound file, else its problems."""
        return "; ".join(str(r[0]) for r in self._read("integrity check", "PRAGMA integrity_check"))

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        rows = self._read("read meta", "SELECT value FROM meta WHERE key = 'schema_version'")
        return int(rows[0][0])

    # -- secrets

    def _aad(self, kind: str, name: str, meta_json: str) -> bytes:
        return _AAD_SECRET + b"\x00".join((kind.encode(), name.encode(), meta_json.encode()))

    def put_secret(self, kind: str, name: str, value: bytes, meta: dict[str, Any] | None = None) -> None:
        """Store (or replace) secret ``kind``/``name``, sealed; ``meta`` is a small JSON object kept beside
        it in clear (content type, algorithm, ...) but bound to the sealed value."""
        kind = check_kind(kind)
        name = _check_secret_name(kind, name)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise VerdictdError(f"secret {kind} {name!r}: the value must be bytes, not {type(value).__name__}")
        value = bytes(value)
        if len(value) > MAX_SECRET:
            raise VerdictdError(f"secret {kind} {name!r}: {len(value)} bytes, more than {MAX_SECRET}")
        meta_json = _json_dict({} if meta is None else meta, f"secret {kind} {name!r} meta", MAX_META)
        nonce = secrets.token_bytes(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, value, self._aad(kind, name, meta_json))
        with self._write(f"put secret {kind} {name!r}") as db:
            self._check_room(db, "SELECT 1 FROM secrets WHERE kind = ? AND name = ?", (kind, name),
                             "SELECT COUNT(*) FROM secrets WHERE kind = ?", (kind,), f"secrets of kind {kind}")
            db.execute("INSERT INTO secrets (kind, name, nonce, sealed, meta, updated) VALUES (?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (kind, name) DO UPDATE SET nonce = excluded.nonce, sealed = excluded.sealed, "
                       "meta = excluded.meta, updated = excluded.updated",
                       (kind, name, nonce, sealed, meta_json, time.time()))

    def _check_room(self, db: sqlite3.Connection, exists_sql: str, exists_args: tuple[Any, ...], count_sql: str,
                    count_args: tuple[Any, ...], what: str) -> None:
        """Refuse a new row once a table (or a kind) already has MAX_ROWS; replacing a row is always fine."""
        if db.execute(exists_sql, exists_args).fetchone() is None:
            (count,) = db.execute(count_sql, count_args).fetchone()
            if count >= MAX_ROWS:
                raise VerdictdError(f"state db {self.db_path}: already {count} {what}, the limit")

    def get_secret(self, kind: str, name: str) -> bytes | None:
        """Secret ``kind``/``name`` in clear, or None if there is none. A row that does not open (tampered,
        moved to another name, sealed under another key) raises VerdictdError."""
        entry = self.get_secret_entry(kind, name)
        return None if entry is None else entry[0]

    def get_secret_meta(self, kind: str, name: str) -> dict[str, Any] | None:
        """The meta object stored with secret ``kind``/``name`` (checked: the row must open), or None."""
        entry = self.get_secret_entry(kind, name)
        return None if entry is None else entry[1]

    def get_secret_entry(self, kind: str, name: str) -> tuple[bytes, dict[str, Any]] | None:
        """``(value, meta)`` of secret ``kind``/``name``, or None; raises VerdictdError if the row does not
        open."""
        kind = check_kind(kind)
        name = _check_secret_name(kind, name)
        rows = self._read(f"get secret {kind} {name!r}",
                          "SELECT nonce, sealed, meta FROM secrets WHERE kind = ? AND name = ?", (kind, name))
        if not rows:
            return None
        nonce, sealed, meta_json = rows[0]
        try:
            value = self._aead.decrypt(nonce, sealed, self._aad(kind, name, meta_json))
        except (InvalidTag, ValueError, TypeError):
            raise VerdictdError(f"state db {self.db_path}: secret {kind} {name!r} does not open (the row was "
                                f"altered or moved)") from None
        meta = self._loads(meta_json, f"secret {kind} {name!r} meta")
        if not isinstance(meta, dict):
            raise VerdictdError(f"state db {self.db_path}: secret {kind} {name!r} meta is not a JSON object")
        return value, meta

    def list_secrets(self, kind: str) -> list[str]:
        """Names of the secrets of ``kind``, sorted."""
        kind = check_kind(kind)
        return [r[0] for r in self._read(f"list secrets {kind}",
                                         "SELECT name FROM secrets WHERE kind = ? ORDER BY name", (kind,))]

    def delete_secret(self, kind: str, name: str) -> bool:
        """Remove secret ``kind``/``name``; True if there was one."""
        kind = check_kind(kind)
        name = _check_secret_name(kind, name)
        with self._write(f"delete secret {kind} {name!r}") as db:
            return db.execute("DELETE FROM secrets WHERE kind = ? AND name = ?", (kind, name)).rowcount > 0

    # -- policies

    def put_policy(self, name: str, text: str) -> None:
        """Store (or replace) Rego policy ``name`` (text at most 256 KiB as UTF-8; not checked as Rego here)."""
        name = check_name(name, "policy")
        if not isinstance(text, str):
            raise VerdictdError(f"policy {name!r}: the text must be a string, not {type(text).__name__}")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise VerdictdError(f"policy {name!r}: the text is not valid Unicode") from None
        if size > MAX_POLICY:
            raise VerdictdError(f"policy {name!r}: {size} bytes, more than {MAX_POLICY}")
        if "\x00" in text:
            raise VerdictdError(f"policy {name!r}: the text has a NUL character")
        with self._write(f"put policy {name!r}") as db:
            self._check_room(db, "SELECT 1 FROM policies WHERE name = ?", (name,),
                             "SELECT COUNT(*) FROM policies", (), "policies")
            db.execute("INSERT INTO policies (name, text, updated) VALUES (?, ?, ?) ON CONFLICT (name) "
                       "DO UPDATE SET text = excluded.text, updated = excluded.updated", (name, text, time.time()))

    def get_policy(self, name: str) -> str | None:
        """Policy ``name``'s text, or None."""
        name = check_name(name, "policy")
        rows = self._read(f"get policy {name!r}", "SELECT text FROM policies WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def list_policies(self) -> list[str]:
        """Names of the stored policies, sorted."""
        return [r[0] for r in self._read("list policies", "SELECT name FROM policies ORDER BY name")]

    def delete_policy(self, name: str) -> bool:
        """Remove policy ``name``; True if there was one."""
        name = check_name(name, "policy")
        with self._write(f"delete policy {name!r}") as db:
            return db.execute("DELETE FROM policies WHERE name = ?", (name,)).rowcount > 0

    # -- reference value rows (ReferenceValues validates and interprets them)

    def put_reference_row(self, name: str, value_json: str, provenance: str, expires: float | None) -> None:
        """Store (or replace) one reference value row; callers go through ReferenceValues.set."""
        if expires is not None and not math.isfinite(expires):
            raise VerdictdError(f"reference value {name!r}: expiry is not a finite time")
        with self._write(f"put reference value {name!r}") as db:
            self._check_room(db, "SELECT 1 FROM reference_values WHERE name = ?", (name,),
                             "SELECT COUNT(*) FROM reference_values", (), "reference values")
            db.execute("INSERT INTO reference_values (name, value_json, provenance, expires, updated) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET value_json = excluded.value_json, "
                       "provenance = excluded.provenance, expires = excluded.expires, updated = excluded.updated",
                       (name, value_json, provenance, expires, time.time()))

    def reference_rows(self, name: str | None = None) -> list[tuple[str, str, str, float | None]]:
        """``(name, value_json, provenance, expires)`` rows, sorted by name; only ``name``'s if given."""
        if name is None:
            rows = self._read("list reference values", "SELECT name, value_json, provenance, expires "
                              "FROM reference_values ORDER BY name")
        else:
            rows = self._read(f"get reference value {name!r}", "SELECT name, value_json, provenance, expires "
                              "FROM reference_values WHERE name = ?", (name,))
        return [(str(n), str(v), str(p), None if e is None else float(e)) for n, v, p, e in rows]

    def delete_reference_row(self, name: str) -> bool:
        """Remove reference value ``name``; True if there was one."""
        with self._write(f"delete reference value {name!r}") as db:
            return db.execute("DELETE FROM reference_values WHERE name = ?", (name,)).rowcount > 0

    # -- audit

    def audit(self, event: str, detail: dict[str, Any]) -> int:
        """Append an audit record (now, ``event``, ``detail`` as JSON) and return its id; the record is on
        disk when this returns. Records cannot be changed or removed (the table refuses UPDATE and DELETE)."""
        if not isinstance(event, str) or not 1 <= len(event) <= MAX_EVENT or not _EVENT_RE.fullmatch(event):
            raise VerdictdError(f"audit event {event!r}: must be 1..{MAX_EVENT} characters of [A-Za-z0-9._:-]")
        mine = _PendingAudit(time.time(), event, _json_dict(detail, f"audit event {event} detail",
                                                              MAX_AUDIT_DETAIL))
        with self._pending_lock:
            self._pending.append(mine)
        with self._lock:
            if not mine.done:  # nobody committed it while we waited: commit everything queued so far
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    with self._write(f"audit {event}") as db:
                        for rec in batch:
                            rec.id = int(db.execute("INSERT INTO audit (time, event, detail) VALUES (?, ?, ?)",
                                                    (rec.time, rec.event, rec.detail)).lastrowid or 0)
                except BaseException as e:
                    for rec in batch:
                        rec.id, rec.error = 0, e
                    raise
                finally:
                    for rec in batch:
                        rec.done = True
        if mine.error is not None:
            raise VerdictdError(f"audit {event}: not recorded ({mine.error})")
        return mine.id

    def audit_records(self, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` (1..10000) audit records, newest first, each ``{id, time, event, detail}``
        (time: seconds since the epoch). With ``before``, only records whose id is below it (to page back)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_AUDIT_READ:
            raise VerdictdError(f"audit read: limit {limit!r} is not in 1..{MAX_AUDIT_READ}")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
            raise VerdictdError(f"audit read: before {before!r} is not a record id")
        sql = "SELECT id, time, event, detail FROM audit"
        args: tuple[Any, ...] = (limit,)
        if before is not None:
            sql += " WHERE id < ?"
            args = (before, limit)
        rows = self._read("read audit", sql + " ORDER BY id DESC LIMIT ?", args)
        return [{"id": i, "time": t, "event": e, "detail": self._loads(d, f"audit record {i}")}
                for i, t, e, d in rows]


class _PendingAudit:
    """An audit record queued for the next group commit, and what became of it."""

    __slots__ = ("time", "event", "detail", "done", "id", "error")

    def __init__(self, when: float, event: str, detail: str) -> None:
        self.time, self.event, self.detail = when, event, detail
        self.done = False
        self.id = 0
        self.error: BaseException | None = None


# --------------------------------------------------------------------------------------------------
# Files and permissions


