"""runtime/hooks.py without root: real /bin/sh hooks in a tmp directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from inclavare import OCI_VERSION
from inclavare.errors import HookError
from inclavare.runtime.hooks import hook_state, run_hooks
from inclavare.runtime.state import proc_start_time

STATE = {"ociVersion": OCI_VERSION, "id": "c1", "status": "created", "pid": 4242, "bundle": "/b",
         "annotations": {"k": "v\u00e9"}}
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def script(tmp_path: Path, name: str, body: str, mode: int = 0o755) -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(mode)
    return str(p)


def test_no_hooks_is_a_noop() -> None:
    run_hooks("prestart", None, STATE)
    run_hooks("prestart", [], STATE)


def test_state_arrives_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "stdin.json"
    path = script(tmp_path, "h", 'cat > "$OUT"\n')
    run_hooks("createRuntime", [{"path": path, "env": [PATH, f"OUT={out}"]}], STATE)
    assert json.loads(out.read_bytes()) == STATE


def test_large_state_to_a_hook_that_ignores_stdin(tmp_path: Path) -> None:
    big = {**STATE, "annotations": {f"k{i}": "x" * 1000 for i in range(300)}}  # > a pipe buffer
    path = script(tmp_path, "h", "exit 0\n")
    run_hooks("poststart", [{"path": path}], big)


def test_args_and_argv0(tmp_path: Path) -> None:
    out = tmp_path / "cmdline"
    hook = {"path": "/bin/sh", "args": ["my-argv0", "-c", 'cat /proc/$$/cmdline > "$OUT"', "x", "y z"],
            "env": [f"OUT={out}"]}
    run_hooks("prestart", [hook], STATE)
    assert out.read_bytes().split(b"\0")[:-1] == [b"my-argv0", b"-c", b'cat /proc/$$/cmdline > "$OUT"', b"x",
                                                  b"y z"]


def test_script_receives_args(tmp_path: Path) -> None:
    out = tmp_path / "args"
    path = script(tmp_path, "h", 'for a in "$@"; do echo "[$a]"; done > "$OUT"\n')
    run_hooks("poststop", [{"path": path, "args": ["h", "one", "two words", ""], "env": [f"OUT={out}"]}], STATE)
    assert out.read_text() == "[one]\n[two words]\n[]\n"


def test_without_args_argv0_is_path(tmp_path: Path) -> None:
    out = tmp_path / "n"
    path = script(tmp_path, "h", 'echo "$#" > "$OUT"\n')
    run_hooks("poststop", [{"path": path, "env": [f"OUT={out}"]}], STATE)
    assert out.read_text() == "0\n"


def test_env_is_exactly_the_hook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNE_TEST_LEAK", "1")
    out = tmp_path / "env"
    path = script(tmp_path, "h", '/usr/bin/env > "$OUT"\n')
    run_hooks("prestart", [{"path": path, "env": [f"OUT={out}", "FOO=bar=baz", "EMPTY="]}], STATE)
    env = dict(line.partition("=")[::2] for line in out.read_text().splitlines())
    assert env["FOO"] == "bar=baz"
    assert env["EMPTY"] == ""
    assert "RUNE_TEST_LEAK" not in env
    assert "HOME" not in env


def test_nonzero_exit_names_hook_and_last_stderr_line(tmp_path: Path) -> None:
    ok = script(tmp_path, "ok", "exit 0\n")
    bad = script(tmp_path, "bad", "echo noise\necho first >&2\necho 'the real reason' >&2\nexit 3\n")
    with pytest.raises(HookError) as ei:
        run_hooks("createContainer", [{"path": ok}, {"path": bad}], STATE)
    assert str(ei.value) == f"hooks.createContainer[1]: {bad} failed with exit status 3: the real reason"


def test_failure_detail_falls_back_to_stdout(tmp_path: Path) -> None:
    bad = script(tmp_path, "bad", "echo 'on stdout'\nexit 1\n")
    with pytest.raises(HookError) as ei:
        run_hooks("poststart", [{"path": bad}], STATE)
    assert str(ei.value) == f"hooks.poststart[0]: {bad} failed with exit status 1: on stdout"


def test_failure_without_output(tmp_path: Path) -> None:
    bad = script(tmp_path, "bad", "exit 42\n")
    with pytest.raises(HookError) as ei:
        run_hooks("prestart", [{"path": bad}], STATE)
    assert str(ei.value) == f"hooks.prestart[0]: {bad} failed with exit status 42"


def test_killed_by_signal(tmp_path: Path) -> None:
    bad = script(tmp_path, "bad", "kill -9 $$\n")
    with pytest.raises(HookError) as ei:
        run_hooks("prestart", [{"path": bad}], STATE)
    assert str(ei.value) == f"hooks.prestart[0]: {bad} failed with signal 9"


def test_first_failure_stops_the_rest(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = script(tmp_path, "bad", "exit 1\n")
    later = script(tmp_path, "later", f"echo > {marker}\n")
    with pytest.raises(HookError, match=r"hooks\.startContainer\[0\]"):
        run_hooks("startContainer", [{"path": bad}, {"path": later}], STATE)
    assert not marker.exists()


def test_warn_mode_reports_each_failure_and_runs_the_rest(tmp_path: Path) -> None:
    log = tmp_path / "log"
    bad1 = script(tmp_path, "bad1", "echo oops >&2\nexit 2\n")
    good = script(tmp_path, "good", f"echo ran >> {log}\n")
    missing = str(tmp_path / "missing")
    warnings: list[str] = []
    run_hooks("poststop", [{"path": bad1}, {"path": missing}, {"path": good}], STATE, warn=warnings.append)
    assert warnings == [f"hooks.poststop[0]: {bad1} failed with exit status 2: oops",
                        f"hooks.poststop[1]: {missing}: No such file or directory"]
    assert log.read_text() == "ran\n"


def test_hooks_run_in_order(tmp_path: Path) -> None:
    log = tmp_path / "log"
    hooks = [{"path": script(tmp_path, f"h{i}", f"echo {i} >> {log}\n")} for i in range(4)]
    run_hooks("prestart", hooks, STATE)
    assert log.read_text().split() == ["0", "1", "2", "3"]


def _gone(pid: int) -> bool:
    st = proc_start_time(pid)
    return st is None or st[0] in ("Z", "X")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    path = script(tmp_path, "slow", f"/bin/sleep 300 </dev/null >/dev/null 2>&1 &\necho $! > {pidfile}\nwait\n")
    with pytest.raises(HookError) as ei:
        run_hooks("prestart", [{"path": path, "timeout": 1}], STATE)
    assert str(ei.value) == f"hooks.prestart[0]: {path} timed out after 1s"
    grandchild = int(pidfile.read_text())
    # SIGKILL is delivered asynchronously; wait (bounded) for the grandchild to disappear
    for _ in range(1000):
        if _gone(grandchild):
            break
        time.sleep(0.01)
    assert _gone(grandchild), f"grandchild sleeper {grandchild} survived the hook timeout"


def test_hook_in_its_own_session(tmp_path: Path) -> None:
    out = tmp_path / "ids"
    path = script(tmp_path, "h", f"cut -d' ' -f5,6 /proc/$$/stat > {out}\n")
    run_hooks("prestart", [{"path": path, "env": [PATH]}], STATE)
    pgrp, sid = out.read_text().split()
    assert pgrp == sid  # start_new_session: the hook leads its own group, so killpg reaches its children
    assert int(sid) != os.getsid(0)


def test_missing_executable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(HookError) as ei:
        run_hooks("poststop", [{"path": missing}], STATE)
    assert str(ei.value) == f"hooks.poststop[0]: {missing}: No such file or directory"


def test_not_executable(tmp_path: Path) -> None:
    path = script(tmp_path, "noexec", "exit 0\n", mode=0o644)
    if os.geteuid() == 0 and os.access(path, os.X_OK):
        pytest.skip("root can execute anything here")
    with pytest.raises(HookError) as ei:
        run_hooks("prestart", [{"path": path}], STATE)
    assert str(ei.value) == f"hooks.prestart[0]: {path}: Permission denied"


# ------------------------------------------------------------------------------ hook_state


def test_hook_state_fields() -> None:
    internal = {"id": "c1", "pid": 77, "bundle": "/b", "rootfs": "/b/rootfs", "pid_start": "5", "config": {},
                "annotations": {"a": "1"}}
    out = hook_state(internal, "creating")
    assert list(out) == ["ociVersion", "id", "status", "pid", "bundle", "annotations"]
    assert out == {"ociVersion": OCI_VERSION, "id": "c1", "status": "creating", "pid": 77, "bundle": "/b",
                   "annotations": {"a": "1"}}


def test_hook_state_defaults() -> None:
    out = hook_state({"id": "c1", "bundle": "/b", "annotations": {}}, "stopped")
    # as runc: a stopped container's state has no pid
    assert out == {"ociVersion": OCI_VERSION, "id": "c1", "status": "stopped", "bundle": "/b"}
    assert hook_state({"id": "c1", "bundle": "/b", "pid": None}, "created")["pid"] == 0
    assert hook_state({"id": "c1", "bundle": "/b", "pid": 7}, "running")["pid"] == 7
