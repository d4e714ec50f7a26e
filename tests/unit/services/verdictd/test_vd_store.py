"""verdictd's state store: sealed secrets, policies, audit, the KEK, permissions, schema versions, names and
sizes, and concurrent writers (threads, and two Store objects on one file)."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from inclavare.services.verdictd import store as store_mod
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.store import (
    DB_NAME,
    KEK_ENV,
    MAX_AUDIT_READ,
    MAX_POLICY,
    MAX_SECRET,
    SCHEMA_VERSION,
    Store,
    check_name,
    check_resource_path,
    load_kek,
)

KEK = bytes(range(1, 33))
OTHER_KEK = bytes(range(101, 133))


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def st(state: str):
    s = Store(state, KEK)
    yield s
    s.close()


def raw(state: str) -> sqlite3.Connection:
    """A plain connection to the store's file, to play the attacker who edits rows."""
    return sqlite3.connect(os.path.join(state, DB_NAME), isolation_level=None)


# -------------------------------------------------------------------------------------------------
# files and permissions


def test_creates_private_directory_and_file(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = str(tmp_path / "s")
        with Store(state, KEK) as s:
            s.put_secret("key", "k1", b"v")
            wal = Path(state, DB_NAME + "-wal")
            assert wal.exists()  # WAL mode: the -wal file gets the database's mode
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
            assert s.db_path == os.path.join(state, DB_NAME)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(state, DB_NAME)).st_mode) == 0o600
    assert sorted(p.name for p in Path(state).iterdir() if not p.name.endswith(("-wal", "-shm"))) == [DB_NAME]


def test_wal_and_full_sync(st: Store) -> None:
    db = st._conn()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o755)
    with pytest.raises(VerdictdError, match=r"state directory .*open: mode 0755 lets other users in"):
        Store(str(d), KEK)


def test_refuses_a_database_file_others_can_read(state: str) -> None:
    Store(state, KEK).close()
    os.chmod(os.path.join(state, DB_NAME), 0o644)
    with pytest.raises(VerdictdError, match=r"verdictd.db: mode 0644 lets other users at it"):
        Store(state, KEK)


def test_refuses_a_symlinked_database_and_a_non_directory(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    (state / DB_NAME).symlink_to(target)
    with pytest.raises(VerdictdError, match="verdictd.db: not a regular file"):
        Store(str(state), KEK)
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(VerdictdError, match="file: not a directory"):
        Store(str(plain), KEK)


def test_refuses_a_file_that_is_not_sqlite_or_not_ours(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    db = state / DB_NAME
    db.write_bytes(b"this is not a database at all, just some text to fill a page" * 100)
    db.chmod(0o600)
    with pytest.raises(VerdictdError, match=r"verdictd.db: cannot open: file is not a database"):
        Store(str(state), KEK)
    db.unlink()
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    db.chmod(0o600)
    with pytest.raises(VerdictdError, match="not a verdictd state database"):
        Store(str(state), KEK)


# -------------------------------------------------------------------------------------------------
# schema version and KEK check


def test_schema_version_recorded_and_newer_refused(state: str) -> None:
    with Store(state, KEK) as s:
        assert s.schema_version() == SCHEMA_VERSION
    raw(state).execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(VerdictdError, match=rf"schema version {SCHEMA_VERSION + 1} is newer than this verdictd "
                                            rf"supports \({SCHEMA_VERSION}\)"):
        Store(state, KEK)
    raw(state).execute("UPDATE meta SET value = 'x' WHERE key = 'schema_version'")
    with pytest.raises(VerdictdError, match="schema_version 'x' is not a number"):
        Store(state, KEK)


def test_wrong_kek_is_refused_on_open(state: str) -> None:
    with Store(state, KEK) as s:
        s.put_secret("key", "k", b"secret")
    with pytest.raises(VerdictdError, match="the key-encryption key is not the one this state was sealed with"):
        Store(state, OTHER_KEK)
    with Store(state, KEK) as s:  # and the right one still works
        assert s.get_secret("key", "k") == b"secret"


def test_bad_kek_values_refused(state: str) -> None:
    with pytest.raises(VerdictdError, match="must be 32 bytes"):
        Store(state, b"short")
    with pytest.raises(VerdictdError, match="one byte repeated"):
        Store(state, b"\x00" * 32)


# -------------------------------------------------------------------------------------------------
# secrets


def test_secret_round_trip_list_delete(st: Store) -> None:
    st.put_secret("resource", "default/key/1", b"one", {"content-type": "application/octet-stream"})
    st.put_secret("resource", "repo/cert/tls.pem", b"two")
    st.put_secret("key", "6b3a0f8e-1c1d-4b8b-9f0e-2f3a4b5c6d7e", bytes(range(256)))
    assert st.get_secret("resource", "default/key/1") == b"one"
    assert st.get_secret_meta("resource", "default/key/1") == {"content-type": "application/octet-stream"}
    assert st.get_secret_meta("resource", "repo/cert/tls.pem") == {}
    assert st.list_secrets("resource") == ["default/key/1", "repo/cert/tls.pem"]
    assert st.list_secrets("key") == ["6b3a0f8e-1c1d-4b8b-9f0e-2f3a4b5c6d7e"]
    assert st.list_secrets("other") == []
    st.put_secret("resource", "default/key/1", b"replaced")
    assert st.get_secret("resource", "default/key/1") == b"replaced"
    assert st.delete_secret("resource", "default/key/1") is True
    assert st.delete_secret("resource", "default/key/1") is False
    assert st.get_secret("resource", "default/key/1") is None
    assert st.get_secret_meta("resource", "default/key/1") is None
    st.put_secret("key", "empty", b"")
    assert st.get_secret("key", "empty") == b""


def test_secret_is_not_stored_in_clear(state: str) -> None:
    marker = b"VERY-SECRET-MARKER-" * 8
    with Store(state, KEK) as s:
        s.put_secret("key", "k", marker)
    files = b"".join(p.read_bytes() for p in Path(state).iterdir())
    assert marker[:19] not in files
    assert KEK not in files
    nonce, sealed = raw(state).execute("SELECT nonce, sealed FROM secrets").fetchone()
    assert len(nonce) == 12 and len(sealed) == len(marker) + 16


def test_each_write_uses_a_fresh_nonce(st: Store) -> None:
    nonces = set()
    for _ in range(20):
        st.put_secret("key", "k", b"same value")
        nonces.add(st._conn().execute("SELECT nonce FROM secrets").fetchone()[0])
    assert len(nonces) == 20


def test_swapped_rows_do_not_open(state: str) -> None:
    with Store(state, KEK) as s:
        s.put_secret("key", "alice", b"alice's key")
        s.put_secret("key", "bob", b"bob's key")
        s.put_secret("resource", "r/t/alice", b"alice's resource")
    db = raw(state)
    nonce, sealed = db.execute("SELECT nonce, sealed FROM secrets WHERE name = 'alice'").fetchone()
    db.execute("UPDATE secrets SET nonce = ?, sealed = ? WHERE name = 'bob'", (nonce, sealed))
    db.execute("UPDATE secrets SET kind = 'key', name = 'carol' WHERE name = 'r/t/alice'")
    with Store(state, KEK) as s:
        assert s.get_secret("key", "alice") == b"alice's key"
        with pytest.raises(VerdictdError, match="secret key 'bob' does not open"):
            s.get_secret("key", "bob")
        with pytest.raises(VerdictdError, match="secret key 'carol' does not open"):
            s.get_secret("key", "carol")


def test_tampered_ciphertext_and_meta_do_not_open(state: str) -> None:
    with Store(state, KEK) as s:
        s.put_secret("key", "a", b"value a", {"alg": "A256GCM"})
        s.put_secret("key", "b", b"value b")
    db = raw(state)
    sealed = bytearray(db.execute("SELECT sealed FROM secrets WHERE name = 'a'").fetchone()[0])
    sealed[0] ^= 1
    db.execute("UPDATE secrets SET sealed = ? WHERE name = 'a'", (bytes(sealed),))
    db.execute("""UPDATE secrets SET meta = '{"alg":"none"}' WHERE name = 'b'""")
    with Store(state, KEK) as s:
        with pytest.raises(VerdictdError, match="secret key 'a' does not open"):
            s.get_secret("key", "a")
        with pytest.raises(VerdictdError, match="secret key 'b' does not open"):
            s.get_secret("key", "b")
        with pytest.raises(VerdictdError, match="secret key 'b' does not open"):
            s.get_secret_meta("key", "b")  # meta is only handed out from a row that opens


def test_secret_size_and_type_limits(st: Store) -> None:
    st.put_secret("key", "max", b"\x01" * MAX_SECRET)
    assert len(st.get_secret("key", "max") or b"") == MAX_SECRET
    with pytest.raises(VerdictdError, match=rf"secret key 'big': {MAX_SECRET + 1} bytes, more than {MAX_SECRET}"):
        st.put_secret("key", "big", b"\x01" * (MAX_SECRET + 1))
    with pytest.raises(VerdictdError, match="the value must be bytes, not str"):
        st.put_secret("key", "s", "text")  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="meta: must be a JSON object"):
        st.put_secret("key", "m", b"v", ["list"])  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="meta: not JSON-serialisable"):
        st.put_secret("key", "m", b"v", {"x": object()})
    with pytest.raises(VerdictdError, match="meta: .* bytes as JSON, more than"):
        st.put_secret("key", "m", b"v", {"x": "y" * 20000})
    assert st.list_secrets("key") == ["max"]


@pytest.mark.parametrize("kind, name, message", [
    ("resource", "only/two", "not a resource path repo/type/tag"),
    ("resource", "a/b/c/d", "not a resource path repo/type/tag"),
    ("resource", "a/b/../c", "empty, '.' or '..' path part"),
    ("resource", "../b/c", "empty, '.' or '..' path part"),
    ("resource", "a//c", "empty, '.' or '..' path part"),
    ("resource", "a/b/c d", "not a resource path"),
    ("resource", "a/b/ta:g", "not a resource path"),
    ("key", "", "must be 1..256 characters"),
    ("key", "x" * 257, "must be 1..256 characters"),
    ("key", "tab\there", "not printable ASCII"),
    ("key", "caf\u00e9", "not printable ASCII"),
    ("key", " padded", "starts or ends with a space"),
    ("key", "back\\slash", "backslash"),
    ("key", "a/../b", "'..' path part"),
    ("Key", "x", "secret kind 'Key'"),
    ("", "x", "secret kind ''"),
])
def test_bad_names_and_kinds(st: Store, kind: str, name: str, message: str) -> None:
    with pytest.raises(VerdictdError, match=message):
        st.put_secret(kind, name, b"v")
    with pytest.raises(VerdictdError, match=message):
        st.get_secret(kind, name)


def test_name_checks_accept_good_names() -> None:
    assert check_name("x" * 256, "n") == "x" * 256
    assert check_name("sgx policy v2.rego", "n") == "sgx policy v2.rego"
    assert check_resource_path("default/key/my_key-1.0") == "default/key/my_key-1.0"
    with pytest.raises(VerdictdError, match="name must be a string"):
        check_name(5, "n")


def test_row_count_limit(st: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "MAX_ROWS", 3)
    for i in range(3):
        st.put_secret("key", f"k{i}", b"v")
    with pytest.raises(VerdictdError, match="already 3 secrets of kind key, the limit"):
        st.put_secret("key", "k3", b"v")
    st.put_secret("key", "k0", b"replacing is fine")
    st.put_secret("resource", "a/b/c", b"another kind has its own count")
    for i in range(3):
        st.put_policy(f"p{i}", "package p")
    with pytest.raises(VerdictdError, match="already 3 policies"):
        st.put_policy("p3", "package p")


# -------------------------------------------------------------------------------------------------
# policies


def test_policy_round_trip(st: Store) -> None:
    text = "package policy\n\ndefault allow = false\n# ünïcödé comment\n"
    st.put_policy("sgx", text)
    st.put_policy("resource/default/key/1", "package policy\n")
    assert st.get_policy("sgx") == text
    assert st.get_policy("nope") is None
    assert st.list_policies() == ["resource/default/key/1", "sgx"]
    st.put_policy("sgx", "package policy\ndefault allow = true\n")
    assert st.get_policy("sgx") == "package policy\ndefault allow = true\n"
    assert st.delete_policy("sgx") is True
    assert st.delete_policy("sgx") is False
    assert st.list_policies() == ["resource/default/key/1"]


def test_policy_limits(st: Store) -> None:
    st.put_policy("max", "a" * MAX_POLICY)
    with pytest.raises(VerdictdError, match=rf"policy 'big': {MAX_POLICY + 1} bytes, more than {MAX_POLICY}"):
        st.put_policy("big", "a" * MAX_POLICY + "b")
    with pytest.raises(VerdictdError, match="policy 'big': .* more than"):  # counted in UTF-8 bytes
        st.put_policy("big", "\u00e9" * (MAX_POLICY // 2 + 1))
    with pytest.raises(VerdictdError, match="text must be a string"):
        st.put_policy("b", b"package x")  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="NUL"):
        st.put_policy("n", "package\x00x")
    with pytest.raises(VerdictdError, match="not valid Unicode"):
        st.put_policy("u", "\udc80")
    with pytest.raises(VerdictdError, match=r"policy '\.\./x'"):
        st.put_policy("../x", "package x")
    assert st.list_policies() == ["max"]


# -------------------------------------------------------------------------------------------------
# audit


def test_audit_append_and_read_newest_first(st: Store) -> None:
    ids = [st.audit("kbs.attest", {"tee": "sgx", "n": i}) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    recs = st.audit_records(3)
    assert [r["detail"]["n"] for r in recs] == [4, 3, 2]
    assert all(r["event"] == "kbs.attest" and isinstance(r["time"], float) for r in recs)
    older = st.audit_records(10, before=recs[-1]["id"])
    assert [r["detail"]["n"] for r in older] == [1, 0]
    assert st.audit_records(MAX_AUDIT_READ)[0]["id"] == ids[-1]


def test_audit_is_append_only(state: str) -> None:
    with Store(state, KEK) as s:
        s.audit("policy.set", {"name": "sgx"})
    db = raw(state)
    with pytest.raises(sqlite3.IntegrityError, match="audit is append-only"):
        db.execute("UPDATE audit SET event = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="audit is append-only"):
        db.execute("DELETE FROM audit")
    with Store(state, KEK) as s:
        assert [r["event"] for r in s.audit_records(10)] == ["policy.set"]


@pytest.mark.parametrize("event, detail, message", [
    ("", {}, "must be 1..64 characters"),
    ("has space", {}, "must be 1..64 characters"),
    ("e" * 65, {}, "must be 1..64 characters"),
    ("ok", "not a dict", "must be a JSON object"),
    ("ok", {"f": float("nan")}, "not JSON-serialisable"),
    ("ok", {"big": "x" * (64 << 10)}, "bytes as JSON, more than"),
])
def test_audit_bad_input(st: Store, event: str, detail: object, message: str) -> None:
    with pytest.raises(VerdictdError, match=message):
        st.audit(event, detail)  # type: ignore[arg-type]
    assert st.audit_records(10) == []


@pytest.mark.parametrize("limit", [0, -1, MAX_AUDIT_READ + 1, True, 1.5])
def test_audit_read_limit_bounded(st: Store, limit: object) -> None:
    with pytest.raises(VerdictdError, match="audit read: limit"):
        st.audit_records(limit)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------------
# lifecycle and concurrency


def test_closed_store_refuses_calls(state: str) -> None:
    s = Store(state, KEK)
    s.close()
    s.close()
    with pytest.raises(VerdictdError, match="the store is closed"):
        s.get_policy("x")


def test_state_survives_reopen(state: str) -> None:
    with Store(state, KEK) as s:
        s.put_secret("key", "k", b"persisted")
        s.put_policy("p", "package p")
        s.audit("e", {"a": 1})
    with Store(state, KEK) as s:
        assert s.get_secret("key", "k") == b"persisted"
        assert s.get_policy("p") == "package p"
        assert s.audit_records(1)[0]["detail"] == {"a": 1}
        assert s.integrity_check() == "ok"


def test_two_threads_writing_one_store(st: Store) -> None:
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(100):
                st.put_secret("key", f"{tag}-{i}", f"{tag}:{i}".encode())
                st.audit("write", {"tag": tag, "i": i})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = st.list_secrets("key")
    assert len(names) == 200
    assert all(st.get_secret("key", n) == n.replace("-", ":").encode() for n in names)
    assert len(st.audit_records(1000)) == 200


def test_two_store_objects_on_one_file(state: str) -> None:
    s1, s2 = Store(state, KEK), Store(state, KEK)
    errors: list[BaseException] = []

    def writer(s: Store, tag: str) -> None:
        try:
            for i in range(100):
                s.put_secret("resource", f"repo/{tag}/{i}", f"{tag}{i}".encode())
                s.put_policy(f"{tag}-last", f"package {tag}{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=writer, args=a) for a in ((s1, "x"), (s2, "y"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for reader in (s1, s2):  # each sees the other's writes
            assert len(reader.list_secrets("resource")) == 200
            assert reader.get_secret("resource", "repo/y/99") == b"y99"
            assert reader.get_secret("resource", "repo/x/42") == b"x42"
            assert reader.get_policy("x-last") == "package x99"
            assert reader.get_policy("y-last") == "package y99"
        assert s1.integrity_check() == "ok"
    finally:
        s1.close()
        s2.close()


def _wait_for(cond) -> None:
    for _ in range(10_000):
        if cond():
            return
        threading.Event().wait(0.001)
    raise AssertionError("condition never became true")


def test_concurrent_audits_commit_as_one_group(st: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    transactions: list[str] = []
    real_write = Store._write

    def counting_write(self: Store, what: str):  # type: ignore[no-untyped-def]
        transactions.append(what)
        return real_write(self, what)

    monkeypatch.setattr(Store, "_write", counting_write)
    ids: list[int] = []
    n = 12
    with st._lock:  # a write in progress: every audit call queues its record and waits
        threads = [threading.Thread(target=lambda i=i: ids.append(st.audit("grouped", {"i": i}))) for i in range(n)]
        for t in threads:
            t.start()
        _wait_for(lambda: len(st._pending) == n)
    for t in threads:
        t.join()
    assert len(transactions) == 1  # one transaction (one fsync) for all twelve
    assert len(ids) == n and sorted(ids) == list(range(min(ids), min(ids) + n))
    recs = st.audit_records(100)
    assert sorted(r["detail"]["i"] for r in recs) == list(range(n))
    assert {r["id"]: r["detail"]["i"] for r in recs}.keys() == set(ids)


def test_a_failed_group_commit_fails_every_caller(state: str) -> None:
    with Store(state, KEK) as s:
        s._conn().execute("PRAGMA busy_timeout = 50")
        blocker = raw(state)
        errors: list[str] = []

        def call(i: int) -> None:
            try:
                s.audit("lost", {"i": i})
            except VerdictdError as e:
                errors.append(str(e))

        blocker.execute("BEGIN IMMEDIATE")
        try:
            with s._lock:
                threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
                for t in threads:
                    t.start()
                _wait_for(lambda: len(s._pending) == 5)
            for t in threads:
                t.join()
        finally:
            blocker.execute("ROLLBACK")
        assert len(errors) == 5 and all("database is locked" in e for e in errors)
        assert s.audit_records(10) == []
        assert s.audit("after", {}) > 0  # and the store goes on


def test_reads_do_not_wait_for_a_write_in_progress(st: Store) -> None:
    st.put_secret("key", "k", b"v")
    holding, release = threading.Event(), threading.Event()

    def writer_in_progress() -> None:
        with st._lock:
            holding.set()
            release.wait()

    holder = threading.Thread(target=writer_in_progress)
    holder.start()
    holding.wait()
    try:
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(st.get_secret("key", "k")))
        reader.start()
        reader.join(30)
        assert got == [b"v"]
    finally:
        release.set()
        holder.join()


def test_busy_database_gives_a_clear_error(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(state, KEK) as s:
        blocker = raw(state)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            s._conn().execute("PRAGMA busy_timeout = 50")
            with pytest.raises(VerdictdError, match=r"verdictd.db: put policy 'p': database is locked"):
                s.put_policy("p", "package p")
        finally:
            blocker.execute("ROLLBACK")
        s.put_policy("p", "package p")  # the store is still usable
        assert s.get_policy("p") == "package p"


# -------------------------------------------------------------------------------------------------
# load_kek


def write_key(path: Path, data: bytes, mode: int = 0o600) -> str:
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def test_load_kek_from_file_raw_and_hex(tmp_path: Path) -> None:
    assert load_kek(write_key(tmp_path / "raw", KEK)) == KEK
    assert load_kek(write_key(tmp_path / "hex", KEK.hex().encode() + b"\n")) == KEK
    assert load_kek(write_key(tmp_path / "HEX", KEK.hex().upper().encode())) == KEK


def test_load_kek_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEK_ENV, KEK.hex())
    assert load_kek() == KEK
    assert load_kek(None) == KEK
    monkeypatch.setenv(KEK_ENV, "abcd")
    with pytest.raises(VerdictdError, match=r"\$VERDICTD_KEK: the KEK must be 64 hex digits"):
        load_kek()
    monkeypatch.delenv(KEK_ENV)
    with pytest.raises(VerdictdError, match="no key-encryption key"):
        load_kek()


@pytest.mark.parametrize("data, mode, message", [
    (KEK, 0o640, "mode 0640 lets other users at it"),
    (KEK, 0o604, "mode 0604 lets other users at it"),
    (b"\x01" * 31, 0o600, "neither 32 raw bytes nor 64 hex digits|must be 64 hex digits"),
    (b"zz" * 32, 0o600, "must be 64 hex digits"),
    (b"\xff" * 40, 0o600, "neither 32 raw bytes nor 64 hex digits"),
    (b"\x07" * 32, 0o600, "one byte repeated"),
    (KEK.hex().encode() * 5, 0o600, "320 bytes; expected 32 raw bytes or 64 hex digits"),
])
def test_load_kek_file_errors(tmp_path: Path, data: bytes, mode: int, message: str) -> None:
    with pytest.raises(VerdictdError, match=f"KEK file .*key: .*({message})"):
        load_kek(write_key(tmp_path / "key", data, mode))


def test_load_kek_missing_file_and_inside_state_dir(tmp_path: Path) -> None:
    with pytest.raises(VerdictdError, match="KEK file .*absent: No such file"):
        load_kek(str(tmp_path / "absent"))
    state = tmp_path / "state"
    Store(str(state), KEK).close()
    inside = write_key(state / "kek", KEK)
    with pytest.raises(VerdictdError, match="inside the state directory"):
        load_kek(inside, state_dir=str(state))
    outside = write_key(tmp_path / "kek", KEK)
    assert load_kek(outside, state_dir=str(state)) == KEK
    with pytest.raises(VerdictdError, match="not a regular file"):
        load_kek(str(tmp_path))
