"""SCMP_ACT_NOTIFY end to end: the runtime hands the notify fd to a seccomp agent, which answers.

The agent is tests/integration/seccomp_agent.py (a separate process using the project's binding).  It
records the container process state it receives and every trapped call, and answers mkdir with a
chosen errno (or lets calls continue).  Each case runs under rune and, when installed, under runc
1.1.5 on the same bundle; both must behave alike.  The container writes its results into /out, a
bind mount of a host directory.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.errors import SeccompError
from inclavare.linux import seccomp
from tests.conftest import RUNC, SRC, Rune, needs_busybox, needs_root
from tests.integration.test_bad_input import check_clean_failure

AGENT = Path(__file__).with_name("seccomp_agent.py")
_WAIT = 30.0


def _notify_supported() -> bool:
    try:
        return int(seccomp._lib().seccomp_api_get()) >= 6
    except SeccompError:
        return False


pytestmark = [
    pytest.mark.root,
    needs_root,
    needs_busybox,
    pytest.mark.skipif(not _notify_supported(), reason="libseccomp/kernel without SCMP_ACT_NOTIFY (API level < 6)"),
]


class Agent:
    def __init__(self, proc: subprocess.Popen[str], socket: str, record: Path) -> None:
        self.proc, self.socket, self.record = proc, socket, record

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        out = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [e for e in out if kind is None or e["event"] == kind]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[subprocess.Popen[str]] = []

    def start(*options: str, abstract: bool = False) -> Agent:
        n = len(started)
        socket = f"@inclavare-test-{uuid.uuid4().hex}" if abstract else str(tmp_path / f"agent{n}.sock")
        record = tmp_path / f"agent{n}.jsonl"
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        proc = subprocess.Popen([sys.executable, str(AGENT), socket, str(record), *options],
                                stdout=subprocess.PIPE, text=True, env=env)
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "listening", "the seccomp agent did not start"
        return Agent(proc, socket, record)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _bundle(make_bundle: Any, tmp_path: Path, script: str, *, listener: str | None, metadata: str | None = "meta",
            names: tuple[str, ...] = ("mkdir", "mkdirat"), nnp: bool = True,
            extra: Callable[[dict[str, Any]], None] | None = None) -> tuple[str, Path]:
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    out.mkdir()

    def edit(cfg: dict[str, Any]) -> None:
        sec: dict[str, Any] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": list(names), "action": "SCMP_ACT_NOTIFY"}]}
        if listener is not None:
            sec["listenerPath"] = listener
        if metadata is not None:
            sec["listenerMetadata"] = metadata
        cfg["linux"]["seccomp"] = sec
        cfg["process"]["noNewPrivileges"] = nnp
        cfg["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]})
        cfg["annotations"] = {"org.inclavare.test": "seccomp-notify"}
        if extra is not None:
            extra(cfg)

    return make_bundle(["sh", "-c", script], edit=edit), out


def _wait_stopped(runtime: Rune, cid: str) -> None:
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        if runtime.state(cid)["status"] == "stopped":
            return
        time.sleep(0.05)
    raise AssertionError(f"container {cid} did not stop within {_WAIT}s")


def _create_start_wait(runtime: Rune, bundle: str, cid: str) -> int:
    """create (the agent gets the fd here), start, wait for the end; returns the init's pid."""
    runtime.run("create", "--bundle", bundle, cid, check=True)
    pid = int(runtime.state(cid)["pid"])
    runtime.run("start", cid, check=True)
    _wait_stopped(runtime, cid)
    return pid


MKDIR = "mkdir /out/d 2>/out/err; echo $? >/out/rc; echo after >/out/after"


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_agent_fails_mkdir_with_the_chosen_errno(runtime, make_bundle, tmp_path, cid, start_agent, nnp):  # type: ignore[no-untyped-def]
    agent = start_agent("--mkdir-errno", str(errno.EXDEV))
    bundle, out = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket, metadata=f"meta-{cid}", nnp=nnp)
    pid = _create_start_wait(runtime, bundle, cid)
    assert (out / "rc").read_text() == "1\n"
    assert os.strerror(errno.EXDEV) in (out / "err").read_text()
    assert not (out / "d").exists()
    (got,) = agent.events("fd")
    assert got["fds"] == 1
    msg = got["message"]
    assert set(msg) == {"ociVersion", "fds", "pid", "metadata", "state"}
    assert msg["fds"] == ["seccompFd"] and msg["pid"] == pid and msg["metadata"] == f"meta-{cid}"
    state = msg["state"]
    assert {k: state.get(k) for k in ("id", "status", "pid", "bundle", "annotations")} == {
        "id": cid, "status": "creating", "pid": pid, "bundle": bundle,
        "annotations": {"org.inclavare.test": "seccomp-notify"},
    }
    assert isinstance(msg["ociVersion"], str) and msg["ociVersion"] == state["ociVersion"]
    calls = agent.events("call")
    assert [c["name"] for c in calls] in (["mkdir"], ["mkdirat"])
    assert calls[0]["answer"] == {"error": errno.EXDEV}


def test_agent_letting_mkdir_continue(runtime, make_bundle, tmp_path, cid, start_agent):  # type: ignore[no-untyped-def]
    agent = start_agent()
    bundle, out = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket)
    _create_start_wait(runtime, bundle, cid)
    assert (out / "rc").read_text() == "0\n"
    assert (out / "d").is_dir()
    assert len(agent.events("call")) == 1


def test_agent_dying_after_the_fd_leaves_enosys_and_a_working_container(runtime, make_bundle, tmp_path, cid,  # type: ignore[no-untyped-def]
                                                                        start_agent):
    agent = start_agent("--die-after-fd")
    bundle, out = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket)
    _create_start_wait(runtime, bundle, cid)
    assert agent.proc.wait(_WAIT) == 0
    assert len(agent.events("fd")) == 1
    assert (out / "rc").read_text() == "1\n"
    assert os.strerror(errno.ENOSYS) in (out / "err").read_text()
    assert (out / "after").read_text() == "after\n"
    assert runtime.state(cid)["status"] == "stopped"


def test_abstract_listener_socket_and_no_metadata(runtime, make_bundle, tmp_path, cid, start_agent):  # type: ignore[no-untyped-def]
    agent = start_agent("--mkdir-errno", str(errno.EROFS), abstract=True)
    bundle, out = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket, metadata=None)
    _create_start_wait(runtime, bundle, cid)
    assert os.strerror(errno.EROFS) in (out / "err").read_text()
    (got,) = agent.events("fd")
    assert "metadata" not in got["message"]  # left out when empty, as runc's omitempty does


def test_start_container_hook_runs_under_the_filter(runtime, make_bundle, tmp_path, cid, start_agent):  # type: ignore[no-untyped-def]
    agent = start_agent("--mkdir-errno", str(errno.EXDEV))

    def hook(cfg: dict[str, Any]) -> None:
        script = "mkdir /out/hook 2>/out/hookerr; echo $? >/out/hookrc"
        cfg["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}

    bundle, out = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket, extra=hook)
    _create_start_wait(runtime, bundle, cid)
    assert (out / "hookrc").read_text() == "1\n"
    assert os.strerror(errno.EXDEV) in (out / "hookerr").read_text()
    assert (out / "rc").read_text() == "1\n"
    assert len(agent.events("fd")) == 1
    assert len(agent.events("call")) == 2  # the hook's mkdir and the process's


def test_exec_hands_over_its_own_fd_with_status_running(runtime, make_bundle, tmp_path, cid, start_agent):  # type: ignore[no-untyped-def]
    agent = start_agent("--mkdir-errno", str(errno.EXDEV))
    bundle, out = _bundle(make_bundle, tmp_path, "sleep 60", listener=agent.socket)
    runtime.run("run", "--detach", "--bundle", bundle, cid, check=True)
    init_pid = int(runtime.state(cid)["pid"])
    pid_file = tmp_path / "exec.pid"
    p = runtime.run("exec", "--pid-file", str(pid_file), cid, "mkdir", "/out/e")
    assert p.returncode == 1
    assert os.strerror(errno.EXDEV) in p.stderr
    exec_pid = int(pid_file.read_text())
    first, second = agent.events("fd")
    assert first["message"]["state"]["status"] == "creating" and first["message"]["pid"] == init_pid
    msg = second["message"]
    assert msg["pid"] == exec_pid
    assert msg["state"]["status"] == "running"
    assert msg["state"]["pid"] == init_pid and msg["state"]["id"] == cid
    assert [c["pid"] for c in agent.events("call")] == [exec_pid]
    runtime.run("delete", "--force", cid, check=True)


def test_trapping_read_and_close_without_nnp_does_not_hang_create(runtime, make_bundle, tmp_path, cid,  # type: ignore[no-untyped-def]
                                                                  start_agent):
    # the init reads and closes after loading the filter: the agent must already hold the fd
    agent = start_agent("--mkdir-errno", str(errno.EXDEV))
    bundle, out = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket, nnp=False,
                          names=("read", "close", "mkdir", "mkdirat"))
    _create_start_wait(runtime, bundle, cid)
    assert (out / "rc").read_text() == "1\n"
    names = {c["name"] for c in agent.events("call")}
    assert {"read", "close"} <= names


# ------------------------------------------------------------------------------------------ bad input


def _failed(runtime: Rune, cid: str, p: Any, *needles: str) -> None:
    assert p.returncode == 1, p.stderr
    for n in needles:
        assert n in p.stderr
    assert runtime.run("state", cid).returncode == 1
    assert not Path(runtime.root, cid).exists()


def test_missing_listener_fails_create_and_leaves_nothing(runtime, make_bundle, tmp_path, cid):  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "nobody-listens.sock")
    bundle, _ = _bundle(make_bundle, tmp_path, MKDIR, listener=missing)
    p = runtime.run("create", "--bundle", bundle, cid)
    _failed(runtime, cid, p, "failed to connect with seccomp agent", missing)
    if runtime.binary != RUNC:
        check_clean_failure(runtime, cid, bundle, p, "linux.seccomp.listenerPath", "No such file or directory")


@pytest.mark.parametrize("listener", [None, ""], ids=["absent", "empty"])
def test_notify_without_listener_path_is_refused(runtime, make_bundle, tmp_path, cid, listener):  # type: ignore[no-untyped-def]
    bundle, _ = _bundle(make_bundle, tmp_path, MKDIR, listener=listener, metadata=None)
    p = runtime.run("create", "--bundle", bundle, cid)
    _failed(runtime, cid, p, "listenerPath is not set")
    if runtime.binary != RUNC:
        check_clean_failure(runtime, cid, bundle, p, "linux.seccomp.listenerPath")


def test_notify_on_write_is_refused(runtime, make_bundle, tmp_path, cid, start_agent):  # type: ignore[no-untyped-def]
    agent = start_agent()
    bundle, _ = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket, names=("write",))
    p = runtime.run("create", "--bundle", bundle, cid)
    _failed(runtime, cid, p, "SCMP_ACT_NOTIFY cannot be used for the write syscall")
    assert agent.events() == []


def test_notify_as_default_action_is_refused(runtime, make_bundle, tmp_path, cid, start_agent):  # type: ignore[no-untyped-def]
    agent = start_agent()

    def notify_default(cfg: dict[str, Any]) -> None:
        cfg["linux"]["seccomp"]["defaultAction"] = "SCMP_ACT_NOTIFY"
        cfg["linux"]["seccomp"]["syscalls"] = [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]

    bundle, _ = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket, extra=notify_default)
    p = runtime.run("create", "--bundle", bundle, cid)
    _failed(runtime, cid, p, "SCMP_ACT_NOTIFY cannot be used as default action")
    assert agent.events() == []


def test_listener_is_not_contacted_without_notify_rules(runtime, make_bundle, tmp_path, cid, start_agent):  # type: ignore[no-untyped-def]
    agent = start_agent()

    def errno_rule(cfg: dict[str, Any]) -> None:
        cfg["linux"]["seccomp"]["syscalls"] = [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]

    bundle, out = _bundle(make_bundle, tmp_path, MKDIR, listener=agent.socket, extra=errno_rule)
    _create_start_wait(runtime, bundle, cid)
    assert os.strerror(errno.EPERM) in (out / "err").read_text()
    assert agent.events() == []
