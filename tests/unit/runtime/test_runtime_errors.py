"""runtime/container.py refusals without root: runc's words first (docs/runc-compat.md), then rune's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inclavare.errors import ContainerError, NotRunningError
from inclavare.runtime import container as ct
from inclavare.runtime import state as st
from inclavare.runtime.container import Runtime


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return Runtime(str(tmp_path / "root"))


def _stopped(rt: Runtime, cid: str = "c1") -> str:
    """A container whose init is gone (pid 0): status "stopped", no cgroup recorded."""
    rt.store.make(cid)
    rt.store.save(cid, st.State.from_dict({"id": cid, "pid": 0, "bundle": "/b", "rootfs": "/b/rootfs", "created": "",
                                          "owner": ""}))
    assert st.status_of(rt.store, rt.store.load(cid)) == "stopped"
    return cid


def test_kill_of_a_stopped_container_says_container_not_running(rt: Runtime) -> None:
    cid = _stopped(rt)
    for sig in (15, 9):
        with pytest.raises(NotRunningError) as ei:
            rt.kill(cid, sig)
        # containerd's checkKillError and CRI-O's runtimeCmd match these words
        assert str(ei.value) == 'container not running: "c1" has stopped'


def test_kill_all_of_a_stopped_container_is_not_an_error(rt: Runtime) -> None:
    rt.kill(_stopped(rt), 9, all_procs=True)


@pytest.mark.parametrize("op", ["state", "kill", "start", "pause", "resume", "delete", "pids"])
def test_missing_container(rt: Runtime, op: str) -> None:
    call = {"state": lambda: rt.state("nope"), "kill": lambda: rt.kill("nope", 15),
            "start": lambda: rt.start("nope"), "pause": lambda: rt.pause("nope"),
            "resume": lambda: rt.resume("nope"), "delete": lambda: rt.delete("nope"),
            "pids": lambda: rt.pids("nope")}[op]
    with pytest.raises(ContainerError) as ei:
        call()
    assert str(ei.value) == f'container does not exist: "nope" (no state under {rt.store.root})'


def test_delete_force_of_a_missing_container_is_quiet(rt: Runtime) -> None:
    rt.delete("nope", force=True)


def test_delete_of_a_stopped_container_removes_its_state(rt: Runtime) -> None:
    cid = _stopped(rt)
    rt.delete(cid)
    assert not rt.store.exists(cid)


def test_refusals_of_a_stopped_container(rt: Runtime) -> None:
    cid = _stopped(rt)
    with pytest.raises(ContainerError, match=r'^cannot start a container that has stopped: "c1"$'):
        rt.start(cid)
    with pytest.raises(NotRunningError, match=r'^container not running: "c1" is stopped$'):
        rt.pause(cid)
    with pytest.raises(ContainerError, match=r'^container not paused: "c1" is stopped$'):
        rt.resume(cid)
    with pytest.raises(ContainerError, match=r'^cannot exec in a stopped container: "c1"$'):
        rt.exec(cid, {"args": ["true"], "cwd": "/"})


@pytest.mark.parametrize(("status", "words"), [
    ("running", "cannot start an already running container"),
    ("stopped", "cannot start a container that has stopped"),
    ("paused", "cannot start a container in the paused state"),
])
def test_start_refusal_words(status: str, words: str) -> None:
    assert ct.start_refusal("x", status) == f'{words}: "x"'


def test_exec_state_check() -> None:
    ct.check_exec_state("x", "running", False)
    ct.check_exec_state("x", "created", False)
    ct.check_exec_state("x", "paused", True)  # --ignore-paused
    with pytest.raises(ContainerError) as ei:
        ct.check_exec_state("x", "paused", False)
    assert str(ei.value) == 'cannot exec in a paused container (use --ignore-paused to override): "x"'
    with pytest.raises(ContainerError, match="^cannot exec in a stopped container"):
        ct.check_exec_state("x", "stopped", True)


def test_duplicate_id_words(rt: Runtime) -> None:
    _stopped(rt)
    with pytest.raises(ContainerError) as ei:
        rt.store.make("c1")
    assert str(ei.value).startswith('container with given ID already exists: "c1"')


def test_state_json_of_a_stopped_container(rt: Runtime) -> None:
    cid = _stopped(rt)
    out = rt.state(cid)
    assert (out["status"], out["pid"]) == ("stopped", 0)
    assert json.loads(json.dumps(out)) == out


def test_delete_of_several_ids(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # rune accepts several ids (runc takes one): each failure is its own line, exit 1 if any failed
    from inclavare.cli.rune import main

    root = tmp_path / "root"
    rt = Runtime(str(root))
    _stopped(rt, "gone")
    rc = main(["--root", str(root), "delete", "a", "gone", "b"])
    out, err = capfd.readouterr()
    assert (rc, out) == (1, "")
    assert err.splitlines() == [f'rune: container does not exist: "{c}" (no state under {root})' for c in ("a", "b")]
    assert not rt.store.exists("gone")
    rc = main(["--root", str(root), "delete", "--force", "a", "b"])
    assert (rc, *capfd.readouterr()) == (0, "", "")
