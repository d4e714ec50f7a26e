"""`rune run -d` driven as an engine drives runc: pid file, state, kill, kill again, delete."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from inclavare.runtime.state import process_alive
from tests.conftest import needs_busybox, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_busybox]


def wait_status(rune, cid: str, want: str) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    status = rune.state(cid)["status"]
    while status != want and time.monotonic() < deadline:
        time.sleep(0.02)
        status = rune.state(cid)["status"]
    return str(status)


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_detached_run_state_kill_delete(rune, cid, make_bundle, tmp_path, sig):
    # a pid-1 shell that exits 3 on SIGTERM; SIGKILL needs no handler
    b = make_bundle(["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.1; done"])
    pid_file = tmp_path / "init.pid"
    p = rune.run("run", "-d", "--pid-file", str(pid_file), "--bundle", b, cid)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p
    st = rune.state(cid)
    assert st["status"] == "running" and st["pid"] == int(pid_file.read_text())
    assert Path(f"/proc/{st['pid']}").exists()
    assert rune.run("kill", cid, sig).returncode == 0
    assert wait_status(rune, cid, "stopped") == "stopped"
    assert not process_alive(st["pid"], None)
    # what containerd's shim matches to take a second kill as "already finished"
    again = rune.run("kill", cid, "KILL")
    assert again.returncode == 1 and "container not running" in again.stderr
    assert rune.run("kill", "--all", cid, "KILL").returncode == 0
    assert rune.run("delete", cid).returncode == 0
    assert not Path(rune.root, cid).exists()
    assert rune.run("delete", "--force", cid).returncode == 0  # the shim's second delete
    assert os.path.exists(pid_file)


def test_detached_run_kill_of_a_running_container_then_force_delete(rune, cid, make_bundle):
    b = make_bundle(["sleep", "120"])
    assert rune.run("run", "-d", "--bundle", b, cid).returncode == 0
    pid = rune.state(cid)["pid"]
    # sleep as pid 1 ignores SIGTERM (no handler): still running, and kill succeeds
    assert rune.run("kill", cid).returncode == 0
    assert rune.state(cid)["status"] == "running"
    assert rune.run("delete", cid).returncode == 1  # running: refused
    assert rune.run("delete", "--force", cid).returncode == 0
    assert not Path(rune.root, cid).exists()
    assert not process_alive(pid, None)
