"""The executor seam end to end, in-process as a resident caller (the shim) uses runtime/: a recording
executor sees its hooks in order across the fork, its state keys land in state.json, and a failing
before_ready fails create and leaves nothing behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from inclavare.errors import InclavareError
from inclavare.runtime.container import Runtime
from inclavare.runtime.launch import Executor
from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]


class FileRecorder(Executor):
    """Parent hooks go to a list; child hooks to a host file opened in preload (before any namespace
    switch: the fd survives pivot_root, and nothing execs to close it)."""

    replaces_process = False

    def __init__(self, path: Path, fail: bool = False) -> None:
        self.path = path
        self.fail = fail
        self.parent: list[str] = []
        self.fd = -1

    def prepare(self, config: dict[str, Any], process: dict[str, Any], log: Any) -> None:
        self.parent.append("prepare")
        config.setdefault("annotations", {})["seam.prepared"] = "yes"

    def state_fields(self) -> dict[str, Any]:
        self.parent.append("state_fields")
        return {"seam": {"recorded": True}}

    def open(self, state_dir: str, root_uid: int, root_gid: int) -> list[int]:
        self.parent.append("open")
        assert os.path.isdir(state_dir)
        return []

    def _say(self, what: str) -> None:
        os.write(self.fd, f"{what}\n".encode())

    def preload(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._say("preload")

    def before_ready(self) -> None:
        self._say("before_ready")
        if self.fail:
            raise InclavareError("before_ready: refused by the test executor")

    def run(self, fin: Any) -> None:
        self._say("run " + " ".join(fin.process["args"]))
        os._exit(7)


def _lines(path: Path) -> list[str]:
    return [ln.split(" ")[0] for ln in path.read_text().splitlines()] if path.exists() else []


def test_a_caller_supplied_executor_runs_in_order(tmp_path: Path, make_bundle, cid: str) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime(str(tmp_path / "root"))
    log = tmp_path / "hooks.log"
    ex = FileRecorder(log)
    bundle = make_bundle(["true"])
    state = rt.create(cid, bundle, executor=lambda cfg: ex)
    try:
        assert ex.parent == ["prepare", "state_fields", "open"]
        assert _lines(log) == ["preload", "before_ready"]  # ready only after before_ready
        raw = json.loads(Path(rt.store.path(cid, "state.json")).read_text())
        keys = list(raw)
        assert keys.index("seam") == keys.index("pid_start") - 1 and raw["seam"] == {"recorded": True}
        assert raw["config"]["annotations"]["seam.prepared"] == "yes"  # prepare ran before the config was kept
        assert state.pid == raw["pid"] > 0
        loaded, status = rt.load(cid)
        assert status == "created" and loaded.extra == {"seam": {"recorded": True}}
        rt.start(cid)
        deadline = time.monotonic() + 10
        while rt.load(cid)[1] != "stopped":
            assert time.monotonic() < deadline, "the executor's run never ended the init"
            time.sleep(0.02)
        assert _lines(log) == ["preload", "before_ready", "run"]
        assert log.read_text().splitlines()[-1] == "run true"
    finally:
        rt.delete(cid, force=True)
    assert not rt.store.exists(cid)


def test_before_ready_failure_fails_create(tmp_path: Path, make_bundle, cid: str) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime(str(tmp_path / "root"))
    log = tmp_path / "hooks.log"
    with pytest.raises(InclavareError, match="refused by the test executor"):
        rt.create(cid, make_bundle(["true"]), executor=FileRecorder(log, fail=True))
    assert _lines(log) == ["preload", "before_ready"]
    assert not rt.store.exists(cid)
