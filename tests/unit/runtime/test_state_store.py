"""runtime/state.py without root: the on-disk store, status rules, OCI state JSON, liveness checks."""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from inclavare import OCI_VERSION
from inclavare.errors import ContainerError
from inclavare.runtime import state as st

S = st.State.from_dict  # state.json's object -> the typed State


@pytest.fixture
def store(tmp_path: Path) -> st.Store:
    return st.Store(str(tmp_path / "root"))


def _dead_pid() -> int:
    """A pid that existed a moment ago and is now reaped."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


# ------------------------------------------------------------------------------ Store


def test_make_creates_root_and_container_dir(store: st.Store) -> None:
    d = store.make("c1")
    assert d == os.path.join(store.root, "c1")
    assert os.path.isdir(d)
    assert store.exists("c1")
    assert not store.exists("c2")
    assert store.path("c1", "state.json") == os.path.join(store.root, "c1", "state.json")


def test_make_duplicate_id(store: st.Store) -> None:
    store.make("dup")
    with pytest.raises(ContainerError) as ei:
        store.make("dup")
    assert str(ei.value) == f'container with given ID already exists: "dup" (its state is in {store.root}/dup)'


def test_load_missing_container(store: st.Store) -> None:
    with pytest.raises(ContainerError) as ei:
        store.load("ghost")
    assert str(ei.value) == f'container does not exist: "ghost" (no state under {store.root})'


def test_load_dir_without_state_is_incomplete(store: st.Store) -> None:
    store.make("half")
    assert store.load("half").to_dict() == {"id": "half", "pid": 0, "incomplete": True}


@pytest.mark.parametrize("content", [b"", b"{", b'{"id": "x",}', b"\x00\x01", b'{"id": "x"} trailing'])
def test_load_corrupt_state_is_incomplete(store: st.Store, content: bytes) -> None:
    store.make("bad")
    Path(store.path("bad", st.STATE_FILE)).write_bytes(content)
    s = store.load("bad")
    assert s.id == "bad"
    assert s.pid == 0
    assert s.incomplete is True
    assert isinstance(s.corrupt, str) and s.corrupt


def test_save_round_trips_and_leaves_no_tmp(store: st.Store) -> None:
    store.make("c")
    state = {"id": "c", "pid": 1234, "pid_start": "98765", "bundle": "/b", "created": st.now_rfc3339(),
             "annotations": {"k": "v\u00e9\n"}, "config": {"process": {"args": ["sh", "-c", "echo \"hi\""]}}}
    store.save("c", S(state))
    assert os.listdir(store.path("c")) == [st.STATE_FILE]
    assert store.load("c").to_dict() == state
    assert json.loads(Path(store.path("c", st.STATE_FILE)).read_text()) == state
    assert stat.S_IMODE(os.stat(store.path("c", st.STATE_FILE)).st_mode) == 0o600


def test_save_replaces_previous_state_and_stale_tmp(store: st.Store) -> None:
    store.make("c")
    store.save("c", S({"id": "c", "pid": 1, "long": "x" * 10000}))
    Path(store.path("c", st.STATE_FILE + ".tmp")).write_text("garbage from a crashed writer" * 100)
    store.save("c", S({"id": "c", "pid": 2}))
    assert store.load("c").to_dict() == {"id": "c", "pid": 2}
    assert sorted(os.listdir(store.path("c"))) == [st.STATE_FILE]


def test_save_is_a_rename(store: st.Store) -> None:
    """A reader holding the old file keeps the old content: the new state is a new inode."""
    store.make("c")
    store.save("c", S({"id": "c", "pid": 1}))
    with open(store.path("c", st.STATE_FILE), "rb") as old:
        ino = os.fstat(old.fileno()).st_ino
        store.save("c", S({"id": "c", "pid": 2}))
        assert json.loads(old.read()) == {"id": "c", "pid": 1}
    assert os.stat(store.path("c", st.STATE_FILE)).st_ino != ino


def test_lock_missing_container(store: st.Store) -> None:
    with pytest.raises(ContainerError) as ei, store.lock("nope"):
        pass
    assert str(ei.value) == f'container does not exist: "nope" (no state under {store.root})'
    with store.lock("nope", missing_ok=True) as exists:
        assert exists is False


def test_lock_is_exclusive_and_released(store: st.Store) -> None:
    store.make("c")
    lk = store.lock("c")
    with lk as exists:
        assert exists is True
        other = os.open(store.path("c"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    assert lk.fd == -1
    other = os.open(store.path("c"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(other)


def test_lock_reports_container_deleted_while_waiting(store: st.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.make("c")
    real_flock = fcntl.flock

    def flock_after_concurrent_delete(fd: int, op: int) -> None:
        store.remove("c")  # the other holder deletes the container, then releases
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_concurrent_delete)
    with store.lock("c") as exists:
        assert exists is False


def test_remove(store: st.Store, tmp_path: Path) -> None:
    store.make("c")
    store.save("c", S({"id": "c"}))
    d = Path(store.path("c"))
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "sub" / "deeper" / "f").write_text("x")
    os.mkfifo(d / st.FIFO)
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "precious").write_text("y")
    (d / "link").symlink_to(outside)
    store.remove("c")
    assert not d.exists()
    assert not store.exists("c")
    assert (outside / "precious").read_text() == "y"  # the symlink was unlinked, not followed
    store.remove("c")  # already gone: no error


def test_ids(store: st.Store) -> None:
    assert store.ids() == []  # root does not exist yet
    for cid in ("b", "a", "c"):
        store.make(cid)
    Path(store.root, "not-a-container").write_text("")
    assert store.ids() == ["a", "b", "c"]
    store.remove("b")
    assert store.ids() == ["a", "c"]


# ------------------------------------------------------------------------------ liveness


def test_proc_start_time_of_self() -> None:
    got = st.proc_start_time(os.getpid())
    assert got is not None
    letter, start = got
    assert letter in ("R", "S")
    assert start.isdigit()
    assert st.proc_start_time(os.getpid()) == got


def test_proc_start_time_of_missing_pid() -> None:
    assert st.proc_start_time(_dead_pid()) is None


def test_process_alive() -> None:
    me = os.getpid()
    start = st.proc_start_time(me)[1]  # type: ignore[index]
    assert st.process_alive(me, start)
    assert st.process_alive(me, None)
    assert not st.process_alive(me, str(int(start) + 1))  # pid reused by another process
    assert not st.process_alive(0, None)
    assert not st.process_alive(-1, None)
    assert not st.process_alive(_dead_pid(), None)


def test_zombie_is_not_alive() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    try:
        # wait until the kernel shows the exited, unreaped child as a zombie
        for _ in range(2000):
            got = st.proc_start_time(pid)
            if got is not None and got[0] == "Z":
                break
            time.sleep(0.005)
        assert st.proc_start_time(pid)[0] == "Z"  # type: ignore[index]
        assert not st.process_alive(pid, None)
    finally:
        os.waitpid(pid, 0)


# ------------------------------------------------------------------------------ status_of


def _live(cid: str) -> dict[str, Any]:
    me = os.getpid()
    return {"id": cid, "pid": me, "pid_start": st.proc_start_time(me)[1]}  # type: ignore[index]


def test_status_running(store: st.Store) -> None:
    store.make("c")
    assert st.status_of(store, S(_live("c"))) == "running"


def test_status_created_when_fifo_exists(store: st.Store) -> None:
    store.make("c")
    os.mkfifo(store.path("c", st.FIFO))
    assert st.status_of(store, S(_live("c"))) == "created"


def test_status_stopped(store: st.Store) -> None:
    store.make("c")
    os.mkfifo(store.path("c", st.FIFO))
    assert st.status_of(store, S({"id": "c", "pid": _dead_pid()})) == "stopped"
    assert st.status_of(store, S({"id": "c", "pid": 0})) == "stopped"
    assert st.status_of(store, S({"id": "c"})) == "stopped"
    wrong = _live("c")
    wrong["pid_start"] = "1"
    assert st.status_of(store, S(wrong)) == "stopped"
    assert st.status_of(store, S({**_live("c"), "incomplete": True})) == "stopped"


@pytest.mark.parametrize(("content", "status"), [
    ("FROZEN\n", "paused"), ("FREEZING\n", "paused"), ("1\n", "paused"),
    ("THAWED\n", "running"), ("0\n", "running"),
])
def test_status_from_freezer_file(store: st.Store, tmp_path: Path, content: str, status: str) -> None:
    store.make("c")
    freezer = tmp_path / "freezer.state"
    freezer.write_text(content)
    assert st.status_of(store, S({**_live("c"), "freezer_file": str(freezer)})) == status


def test_status_with_missing_freezer_file(store: st.Store, tmp_path: Path) -> None:
    store.make("c")
    state = {**_live("c"), "freezer_file": str(tmp_path / "gone" / "freezer.state")}
    assert st.status_of(store, S(state)) == "running"


def test_frozen_wins_over_created(store: st.Store, tmp_path: Path) -> None:
    # as runc 1.1.5 (measured): `runc pause` of a created container makes `state` say "paused";
    # after `resume` it is "created" again
    store.make("c")
    os.mkfifo(store.path("c", st.FIFO))
    freezer = tmp_path / "freezer.state"
    freezer.write_text("FROZEN\n")
    assert st.status_of(store, S({**_live("c"), "freezer_file": str(freezer)})) == "paused"
    freezer.write_text("THAWED\n")
    assert st.status_of(store, S({**_live("c"), "freezer_file": str(freezer)})) == "created"


# ------------------------------------------------------------------------------ oci_state


FULL = {"id": "c1", "pid": 4242, "bundle": "/bundles/c1", "rootfs": "/bundles/c1/rootfs",
        "created": "2024-01-02T03:04:05.000000006Z", "owner": "", "pid_start": "1", "config": {}}


def test_oci_state_fields_and_order() -> None:
    out = st.oci_state(S(FULL), "running")
    assert list(out) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]
    assert out == {"ociVersion": OCI_VERSION, "id": "c1", "pid": 4242, "status": "running",
                   "bundle": "/bundles/c1", "rootfs": "/bundles/c1/rootfs",
                   "created": "2024-01-02T03:04:05.000000006Z", "owner": ""}


def test_oci_state_annotations_order_matches_runc() -> None:
    # runc's containerState: ... rootfs, created, annotations (omitempty), owner
    out = st.oci_state(S({**FULL, "annotations": {"a": "b"}}), "created")
    assert out["annotations"] == {"a": "b"}
    assert list(out) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "annotations",
                         "owner"]


def test_oci_state_empty_annotations_omitted() -> None:
    assert "annotations" not in st.oci_state(S({**FULL, "annotations": {}}), "running")


@pytest.mark.parametrize("status", ["created", "running", "paused"])
def test_oci_state_pid_for_live_states(status: str) -> None:
    assert st.oci_state(S(FULL), status)["pid"] == 4242


def test_oci_state_pid_zero_when_stopped() -> None:
    out = st.oci_state(S(FULL), "stopped")
    assert out["pid"] == 0
    assert out["status"] == "stopped"


def test_oci_state_of_incomplete_record() -> None:
    out = st.oci_state(S({"id": "x", "pid": 0, "incomplete": True}), "stopped")
    assert out == {"ociVersion": OCI_VERSION, "id": "x", "pid": 0, "status": "stopped", "bundle": "",
                   "rootfs": "", "created": "", "owner": ""}


# ------------------------------------------------------------------------------ now_rfc3339


def test_now_rfc3339_format() -> None:
    before = time.gmtime()
    s = st.now_rfc3339()
    after = time.gmtime()
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{9})Z", s)
    assert m, s
    parsed = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    assert time.mktime(before) - 1 <= time.mktime(parsed) <= time.mktime(after) + 1


def test_fifo_and_state_names() -> None:
    assert (st.STATE_FILE, st.FIFO) == ("state.json", "exec.fifo")



@pytest.mark.parametrize("cid", ["a" * 256, "../x", "a/b", "", ".", "x y"])
def test_the_store_refuses_ids_runc_refuses(store: st.Store, cid: str) -> None:
    """No id reaches the file system as a path (``../x``) or fails there (longer than a file name)."""
    with pytest.raises(ContainerError, match="container id"):
        store.path(cid)
    with pytest.raises(ContainerError, match="container id"):
        store.make(cid)
    assert store.path("a" * 255).endswith("/" + "a" * 255)


def test_ids_lists_only_container_directories(store: st.Store) -> None:
    store.make("c1")
    os.makedirs(os.path.join(store.root, "not an id"))
    assert store.ids() == ["c1"]
