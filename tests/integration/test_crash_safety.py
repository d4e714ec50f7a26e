"""A rune killed at any point can be cleaned up by `delete --force` with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]


def cgroup_dirs_named(cid: str) -> list[str]:
    found = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d == cid:
                found.append(os.path.join(top, d))
    return found


def processes_in_cgroup_of(cid: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/cgroup").read_text()
        except OSError:
            continue
        if f"/{cid}\n" in text or text.rstrip().endswith(f"/{cid}"):
            pids.append(int(name))
    return [p for p in pids if Path(f"/proc/{p}/stat").exists()
            and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"]


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if path in line]


def wait_no_processes(cid: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = processes_in_cgroup_of(cid)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = processes_in_cgroup_of(cid)
    return left


# kill points spread over create: argument parsing, cgroup setup, namespace/mount setup, waiting for start
@pytest.mark.parametrize("delay_ms", [0, 3, 8, 15, 25, 40, 80])
def test_killed_create_is_cleaned_by_delete_force(rune, make_bundle, delay_ms):
    cid = f"crash-{delay_ms}"
    b = make_bundle(["sleep", "60"])
    proc = subprocess.Popen(rune.cmd("create", "--bundle", b, cid), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    p = rune.run("delete", "--force", cid)
    assert p.returncode == 0, p.stderr
    assert not Path(rune.root, cid).exists()
    assert wait_no_processes(cid) == []
    assert cgroup_dirs_named(cid) == []
    assert mounts_under(b) == []


def test_killed_delete_is_finished_by_delete_force(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    proc = subprocess.Popen(rune.cmd("delete", "--force", cid), stderr=subprocess.DEVNULL)
    time.sleep(0.012)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert rune.run("delete", "--force", cid).returncode == 0
    assert not Path(rune.root, cid).exists()
    assert wait_no_processes(cid) == []
    assert cgroup_dirs_named(cid) == []


def test_killed_start_leaves_a_deletable_container(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("create", "--bundle", b, cid, check=True)
    proc = subprocess.Popen(rune.cmd("start", cid), stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = rune.state(cid)["status"]
    assert status in ("created", "running")
    assert rune.run("delete", "--force", cid).returncode == 0
    assert wait_no_processes(cid) == []
    assert cgroup_dirs_named(cid) == []
