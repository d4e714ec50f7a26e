"""services/statedb: the private-directory, private-file and durable-SQLite rules the services share."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from inclavare.services.statedb import (
    PrivateStateError,
    check_private_file,
    connect,
    connect_durable,
    prepare_private_db,
    prepare_private_dir,
    prepare_private_file,
    read_secret_file,
)


def test_dir_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        prepare_private_dir(str(tmp_path / "a" / "b"), "state directory", parents=True)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a" / "b").st_mode & 0o777 == 0o700


def test_dir_missing_parent_without_parents(tmp_path):
    with pytest.raises(PrivateStateError, match=r"^state directory .*/x/y: cannot create"):
        prepare_private_dir(str(tmp_path / "x" / "y"), "state directory")


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o720, 0o755])
def test_existing_dir_open_to_others_refused(tmp_path, mode):
    d = tmp_path / "s"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(PrivateStateError, match=rf"mode {mode:04o} lets other users in"):
        prepare_private_dir(str(d), "state directory")


def test_existing_dir_that_is_a_file_refused(tmp_path):
    f = tmp_path / "s"
    f.write_bytes(b"")
    with pytest.raises(PrivateStateError, match="not a directory"):
        prepare_private_dir(str(f), "state directory")


def test_existing_dir_of_another_user_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    os.chown(d, 12345, 12345)
    with pytest.raises(PrivateStateError, match="owned by uid 12345"):
        prepare_private_dir(str(d), "state directory")


def test_file_created_0600_and_existing_checked(tmp_path):
    p = str(tmp_path / "db")
    prepare_private_file(p, "state db")
    assert os.stat(p).st_mode & 0o777 == 0o600
    prepare_private_file(p, "state db")  # an existing private file is accepted
    os.chmod(p, 0o640)
    with pytest.raises(PrivateStateError, match=r"^state db .*: mode 0640 lets other users at it"):
        prepare_private_file(p, "state db")


def test_symlinked_file_refused(tmp_path):
    target = tmp_path / "t"
    target.write_bytes(b"")
    os.chmod(target, 0o600)
    link = tmp_path / "db"
    link.symlink_to(target)
    with pytest.raises(PrivateStateError, match="not a regular file"):
        prepare_private_file(str(link), "state db")


def test_absent_companion_is_fine_present_one_checked(tmp_path):
    p = str(tmp_path / "db")
    check_private_file(p + "-wal", "state db")
    prepare_private_file(p, "state db")
    with open(p + "-shm", "wb"):
        pass
    os.chmod(p + "-shm", 0o644)
    with pytest.raises(PrivateStateError, match="-shm: mode 0644"):
        prepare_private_db(p, "state db")


def test_connect_durable_settings(tmp_path):
    p = str(tmp_path / "db")
    prepare_private_db(p, "state db")
    db = connect_durable(p, 2.5, "state db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert db.execute("PRAGMA trusted_schema").fetchone()[0] == 0
        assert db.isolation_level is None
    finally:
        db.close()
    ro = connect(p, 1.0)
    try:
        assert ro.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    finally:
        ro.close()


def _writer_on_a_new_database(path):
    """A connection in the middle of a write transaction on a new, still rollback-journal database: what a
    second service process opening the same new database at the same moment looks like."""
    prepare_private_db(path, "state db")
    w = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    w.execute("CREATE TABLE t (x)")
    w.execute("BEGIN IMMEDIATE")
    w.execute("INSERT INTO t VALUES (1)")
    return w


def test_connect_durable_waits_for_a_concurrent_writer_of_a_new_database(tmp_path):
    # SQLite answers the switch to WAL "database is locked" at once here, without its busy handler
    p = str(tmp_path / "db")
    w = _writer_on_a_new_database(p)
    done = threading.Event()

    def commit_when_waited_for():
        done.wait(0.2)
        w.execute("COMMIT")

    t = threading.Thread(target=commit_when_waited_for)
    t.start()
    try:
        db = connect_durable(p, 30.0, "state db")
    finally:
        done.set()
        t.join()
        w.close()
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        db.close()


def test_connect_durable_gives_up_busy_at_its_timeout(tmp_path):
    p = str(tmp_path / "db")
    w = _writer_on_a_new_database(p)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            connect_durable(p, 0.3, "state db")
    finally:
        w.close()


def test_connect_durable_not_a_database(tmp_path):
    p = tmp_path / "db"
    p.write_bytes(b"not sqlite at all, certainly not a database header" * 10)
    with pytest.raises(sqlite3.DatabaseError):
        connect_durable(str(p), 1.0, "state db")


def test_read_secret_file_rules(tmp_path):
    p = tmp_path / "key"
    p.write_bytes(b"s" * 10)
    os.chmod(p, 0o600)
    assert read_secret_file(str(p), "key file", 10, "10 bytes") == b"s" * 10
    with pytest.raises(PrivateStateError, match=r"^key file .*: 10 bytes; at most 9"):
        read_secret_file(str(p), "key file", 9, "at most 9")
    with pytest.raises(PrivateStateError, match=r"owned by uid \d+, not by root"):
        read_secret_file(str(p), "key file", 10, "", owners=(os.geteuid() + 1,))
    link = tmp_path / "link"
    link.symlink_to(p)
    assert read_secret_file(str(link), "key file", 10, "") == b"s" * 10
    with pytest.raises(PrivateStateError, match="key file .*/link: "):
        read_secret_file(str(link), "key file", 10, "", follow=False)
    os.chmod(p, 0o640)
    with pytest.raises(PrivateStateError, match="mode 0640 lets other users at it"):
        read_secret_file(str(p), "key file", 10, "")
    with pytest.raises(PrivateStateError, match="not a regular file"):
        read_secret_file(str(tmp_path), "key file", 10, "")
