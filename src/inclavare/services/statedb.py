"""Private, durable service state on disk: the directory and database-file checks and the SQLite settings that
verdictd's store, epm's metadata and the bundle cache's index share.

* :func:`prepare_private_dir` creates a directory 0700, or accepts an existing one only if it is a directory
  owned by this user that no other user can enter (mode & 0o077 == 0).
* :func:`prepare_private_file` creates a file 0600 (fsync'd, and its name fsync'd into the directory), or accepts
  an existing one only if it is a regular file (not a symlink) owned by this user and private;
  :func:`check_private_file` checks a file that may be absent (SQLite's ``-wal`` / ``-shm``).
* :func:`read_secret_file` reads a secret kept in a file (a key, a token): a regular file no other user can
  read, of a bounded size.
* :func:`connect_durable` opens a database as these services want it: autocommit mode (callers BEGIN
  IMMEDIATE themselves), a busy timeout, ``trusted_schema = OFF`` (a tampered schema cannot run SQL functions
  with side effects), WAL journaling (refused if the file system cannot do it) and ``synchronous = FULL`` (a
  committed transaction survives kill -9 and power loss).

Every refusal is a :class:`PrivateStateError` whose message names the path and what is wrong; callers re-raise
it as their own error type. sqlite3.Error passes through unchanged, for the caller to word.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time

from inclavare.atomicfile import fsync_dir
from inclavare.errors import InclavareError


class PrivateStateError(InclavareError):
    """A state directory or file that cannot be created or is not private to this user."""


def prepare_private_dir(path: str, what: str, *, parents: bool = False) -> None:
    """Create ``path`` mode 0700 (with missing parents if ``parents``), or check an existing one. ``what`` names
    it in errors (``"state directory"``)."""
    try:
        if parents:
            os.makedirs(path, 0o700)
        else:
            os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask said
        return
    except FileExistsError:
        pass
    except OSError as e:
        raise PrivateStateError(f"{what} {path}: cannot create ({e.strerror})") from None
    try:
        st = os.stat(path)
    except OSError as e:
        raise PrivateStateError(f"{what} {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PrivateStateError(f"{what} {path}: not a directory")
    if st.st_uid != os.geteuid():
        raise PrivateStateError(f"{what} {path}: owned by uid {st.st_uid}, not by this user")
    if st.st_mode & 0o077:
        raise PrivateStateError(f"{what} {path}: mode {st.st_mode & 0o777:04o} lets other users in (chmod 700)")


def prepare_private_file(path: str, what: str) -> None:
    """Create ``path`` empty, mode 0600 (an empty file is an empty SQLite database), its name made durable; or
    check an existing one with :func:`check_private_file`."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        check_private_file(path, what)
        return
    except OSError as e:
        raise PrivateStateError(f"{what} {path}: cannot create ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o600)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(path) or ".")


def check_private_file(path: str, what: str) -> None:
    """Nothing if ``path`` is absent; else it must be a regular file (not a symlink) of this user, private."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise PrivateStateError(f"{what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PrivateStateError(f"{what} {path}: not a regular file")
    if st.st_uid != os.geteuid():
        raise PrivateStateError(f"{what} {path}: owned by uid {st.st_uid}, not by this user")
    if st.st_mode & 0o077:
        raise PrivateStateError(f"{what} {path}: mode {st.st_mode & 0o777:04o} lets other users at it (chmod 600)")


def read_secret_file(path: str, what: str, limit: int, expected: str, *, follow: bool = True,
                     owners: tuple[int, ...] | None = None) -> bytes:
    """The bytes of a secret kept in a file: a regular file no other user can read (group/other bits clear), at
    most ``limit`` bytes (``expected`` says what it should hold), owned by one of ``owners`` if given; ``follow``
    False refuses a symlink. One-line errors start with ``what`` and the path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError as e:
        raise PrivateStateError(f"{what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateStateError(f"{what} {path}: not a regular file")
        if st.st_mode & 0o077:
            raise PrivateStateError(f"{what} {path}: mode {st.st_mode & 0o777:04o} lets other users at it "
                                    "(chmod 600)")
        if owners is not None and st.st_uid not in owners:
            raise PrivateStateError(f"{what} {path}: owned by uid {st.st_uid}, not by root")
        if st.st_size > limit:
            raise PrivateStateError(f"{what} {path}: {st.st_size} bytes; {expected}")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise PrivateStateError(f"{what} {path}: more than {limit} bytes; {expected}")
    return data


def prepare_private_db(path: str, what: str) -> None:
    """:func:`prepare_private_file` for a SQLite database, and :func:`check_private_file` of its ``-wal`` and
    ``-shm`` companions (SQLite creates them with the database's mode, but a stale one may be anyone's)."""
    prepare_private_file(path, what)
    for suffix in ("-wal", "-shm"):
        check_private_file(path + suffix, what)


def connect(path: str, timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode, usable from any thread (callers serialise), with the busy timeout and
    ``trusted_schema = OFF``. For extra (e.g. read-only) connections to a database :func:`connect_durable`
    has set up."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        db.execute("PRAGMA trusted_schema = OFF")
    except BaseException:
        db.close()
        raise
    return db


def connect_durable(path: str, timeout: float, what: str) -> sqlite3.Connection:
    """:func:`connect`, then WAL journaling (PrivateStateError if the file system cannot) and
    ``synchronous = FULL``."""
    db = connect(path, timeout)
    try:
        mode = _journal_mode_wal(db, timeout)
        if str(mode).lower() != "wal":
            raise PrivateStateError(f"{what} {path}: cannot switch to WAL journaling (got {mode!r})")
        db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        db.close()
        raise
    return db


def _journal_mode_wal(db: sqlite3.Connection, timeout: float) -> str:
    """Switch to WAL and return the journal mode now in force. Connections switching a new (rollback-journal)
    database at the same moment each hold the read lock the others must see released; SQLite answers one of them
    SQLITE_BUSY at once instead of calling the busy handler (waiting could deadlock). So a busy answer is retried
    here, with backoff, until ``timeout``; once one connection has switched the file, the switch is a no-op."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if (getattr(e, "sqlite_errorcode", 0) & 0xFF) != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
