"""runtime/'s executor seam and typed State without root: the order of the hooks in the container process
(a recording executor), the start FIFO's hand-over, state.json's bytes, and the layer rules (runtime/ never
imports enclave/; the CLI does not import linux/)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import pytest

from inclavare.runtime import init
from inclavare.runtime.launch import EXECVE, Executor
from inclavare.runtime.state import UNSET, State, Store

SRC = Path(__file__).resolve().parents[3] / "src" / "inclavare"


# ------------------------------------------------------------------------------ layer rules


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                pkg = path.parent.relative_to(SRC.parent).parts
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ((base,) if base else ()))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


@pytest.mark.parametrize("path", sorted((SRC / "runtime").glob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_nothing_from_enclave(path: Path) -> None:
    bad = [m for m in _imports(path) if m == "inclavare.enclave" or m.startswith("inclavare.enclave.")]
    assert not bad, f"{path.name} imports {bad}: runtime/ must not depend on enclave/"


@pytest.mark.parametrize("path", sorted((SRC / "runtime").glob("*.py")), ids=lambda p: p.name)
def test_runtime_has_no_enclave_fields(path: Path) -> None:
    """The seam is the executor: no enclave-specific attributes or parameters in runtime/."""
    tree = ast.parse(path.read_text(), str(path))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
              for a in n.args + n.kwonlyargs + n.posonlyargs}
    assert not names & {"enclave", "agent_fd", "runelet"}, path.name


@pytest.mark.parametrize("path", sorted((SRC / "cli").glob("rune*.py")), ids=lambda p: p.name)
def test_rune_cli_does_not_import_linux(path: Path) -> None:
    bad = [m for m in _imports(path) if m == "inclavare.linux" or m.startswith("inclavare.linux.")]
    assert not bad, f"{path.name} imports {bad}: the CLI goes through runtime/"


def test_the_layer_scan_sees_imports() -> None:
    """The scan itself: enclave/runelet.py does import the seam (the allowed direction)."""
    assert "inclavare.runtime.launch" in _imports(SRC / "enclave" / "runelet.py")


# ------------------------------------------------------------------------------ State and state.json

# state.json as create writes it for an enclave container (the executor's key before pid_start)
LEGACY = {"id": "c1", "pid": 4242, "bundle": "/b", "rootfs": "/b/rootfs", "created": "2026-01-01T00:00:00.000000001Z",
          "owner": "", "annotations": {"a": "1"}, "config": {"process": {"args": ["true"]}}, "creating": False,
          "cgroup": {"paths": {"": "/sys/fs/cgroup/c1"}}, "freezer_file": "/sys/fs/cgroup/c1/cgroup.freeze",
          "enclave": {"type": "sim", "path": "builtin:sim", "args": "", "loglevel": "info"}, "pid_start": "99"}


def test_state_json_round_trips_byte_for_byte(tmp_path: Path) -> None:
    from inclavare.formats import fastjson

    store = Store(str(tmp_path))
    store.make("c1")
    raw = fastjson.dumps(LEGACY).encode()
    Path(store.path("c1", "state.json")).write_bytes(raw)
    state = store.load("c1")
    assert state.pid == 4242 and state.start_time() == "99" and state.extra == {"enclave": LEGACY["enclave"]}
    store.save("c1", state)
    assert Path(store.path("c1", "state.json")).read_bytes() == raw


def test_state_built_as_create_does_keeps_the_key_order() -> None:
    s = State("c1")
    s.bundle, s.rootfs, s.created, s.owner = "/b", "/b/rootfs", LEGACY["created"], ""
    s.annotations, s.config, s.creating = {"a": "1"}, LEGACY["config"], True
    s.cgroup, s.freezer_file = LEGACY["cgroup"], LEGACY["freezer_file"]
    assert "pid_start" not in s.to_dict()  # not recorded yet: absent, not null
    s.extra.update({"enclave": LEGACY["enclave"]})
    s.pid, s.pid_start, s.creating = 4242, "99", False
    assert list(s.to_dict()) == list(LEGACY)
    assert s.to_dict() == LEGACY


def test_state_keeps_a_null_start_time_apart_from_a_missing_one() -> None:
    recorded = {"id": "c", "pid": 1, "pid_start": None}
    assert State.from_dict(recorded).to_dict() == recorded
    assert State.from_dict({"id": "c", "pid": 1}).pid_start is UNSET


def test_unreadable_state_json_loads_as_incomplete(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.make("c1")
    Path(store.path("c1", "state.json")).write_text("[1, 2")
    s = store.load("c1")
    assert s.is_incomplete() and s.corrupt and s.pid == 0
    Path(store.path("c1", "state.json")).write_text("[1, 2]")
    assert store.load("c1").is_incomplete()


# ------------------------------------------------------------------------------ the hooks, in order


class Recorder(Executor):
    def __init__(self, log: list[str], *, replaces: bool = True, strict: bool = True) -> None:
        self.log = log
        self.replaces_process = replaces
        self.strict_resolve = strict

    def preload(self) -> None:
        self.log.append("preload")

    def before_ready(self) -> None:
        self.log.append("before_ready")

    def run(self, fin: Any) -> None:
        self.log.append("run")


class FakeFinalizer:
    nnp = False
    env: list[str] = []

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def load_seccomp(self) -> None:
        return None

    def chdir_early(self) -> None:
        self.log.append("chdir_early")

    def identity_and_caps(self) -> None:
        self.log.append("identity")

    def chdir(self) -> None:
        self.log.append("chdir")

    def resolve(self) -> None:
        self.log.append("resolve")

    def resolve_lenient(self) -> None:
        self.log.append("resolve_lenient")


class FakeChannel:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def send(self, **msg: Any) -> None:
        self.log.append(f"send {msg['t']}")

    def close(self) -> None:
        self.log.append("channel closed")


class FakeSyscalls:
    @staticmethod
    def cloexec_from(fd: int) -> None:
        pass


def _finalize(monkeypatch: pytest.MonkeyPatch, executor: Executor, log: list[str], exec_mode: bool) -> int:
    """Run the container process's last steps in-process; returns the start FIFO fd it was given."""
    r, w = os.pipe()
    monkeypatch.setattr(init, "sc", FakeSyscalls)

    def wait_for_start(req: init.SpawnRequest) -> int:
        log.append("start")
        return w

    monkeypatch.setattr(init, "_wait_for_start", wait_for_start)
    req = init.SpawnRequest("c", {}, {"args": ["true"]}, exec_mode=exec_mode, executor=executor)
    try:
        init._finalize_and_wait(req, FakeChannel(log), FakeFinalizer(log), {},  # type: ignore[arg-type]
                                {"id": "c", "bundle": "/b"})
        if exec_mode:
            return w
        try:
            os.fstat(w)
            log.append("fifo open at run")
        except OSError:
            log.append("fifo closed at run")
    finally:
        os.close(r)
        try:
            os.close(w)
        except OSError:
            pass
    return w


def test_create_hooks_in_order_with_execve_semantics(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    _finalize(monkeypatch, Recorder(log), log, exec_mode=False)
    assert log == ["chdir_early", "identity", "chdir", "resolve", "before_ready", "send ready", "channel closed",
                   "start", "run", "fifo open at run"]  # execve closes the O_CLOEXEC FIFO itself


def test_an_executor_that_does_not_exec_gets_the_fifo_closed_first(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    _finalize(monkeypatch, Recorder(log, replaces=False, strict=False), log, exec_mode=False)
    assert log == ["chdir_early", "identity", "chdir", "resolve_lenient", "before_ready", "send ready",
                   "channel closed", "start", "run", "fifo closed at run"]


def test_exec_side_runs_without_waiting_for_start(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    _finalize(monkeypatch, Recorder(log, replaces=False), log, exec_mode=True)
    assert "start" not in log
    assert log[-4:] == ["before_ready", "send ready", "channel closed", "run"]


def test_before_ready_failure_is_reported_instead_of_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    from inclavare.errors import InclavareError

    class Failing(Recorder):
        def before_ready(self) -> None:
            raise InclavareError("pal_init failed")

    log: list[str] = []
    with pytest.raises(InclavareError, match="pal_init"):
        _finalize(monkeypatch, Failing(log), log, exec_mode=False)
    assert "send ready" not in log and "run" not in log


def test_preload_runs_in_the_child_before_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    req = init.SpawnRequest("c", {}, {"args": ["true"]}, executor=Recorder(log))
    init._preload(req)
    assert log == ["preload"]
    assert req.finalizer is not None


def test_the_default_executor_is_execve() -> None:
    req = init.SpawnRequest("c", {}, {"args": ["true"]})
    assert req.executor is EXECVE and EXECVE.replaces_process and EXECVE.strict_resolve
    calls: list[str] = []

    class Fin:
        def execute(self) -> None:
            calls.append("execute")

    EXECVE.run(Fin())
    assert calls == ["execute"]
    assert EXECVE.open("/nonexistent", 0, 0) == [] and EXECVE.state_fields() == {}


def test_enclave_executors_are_picked_only_for_enclave_configs() -> None:
    from inclavare.cli.rune import pick_executor
    from inclavare.enclave.runelet import ExecRunelet, InitRunelet, for_state

    assert pick_executor({"process": {"env": ["PATH=/bin"]}}) is None
    ex = pick_executor({"process": {"env": ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim"]}})
    assert isinstance(ex, InitRunelet) and ex.state_fields()["enclave"]["type"] == "sim"
    assert not ex.replaces_process and not ex.strict_resolve
    assert isinstance(for_state(State.from_dict(dict(LEGACY))), ExecRunelet)
    assert for_state(State.from_dict({"id": "c", "pid": 1})) is None
    assert json.loads(json.dumps(ex.state_fields()))  # recorded in state.json as JSON
