"""rune lifecycle against real kernels: create/start/state/kill/delete, run, exit codes, signals."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]


def wait_status(rune, cid, want, timeout=10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = rune.state(cid)
        if s["status"] == want:
            return s
        time.sleep(0.02)
    raise AssertionError(f"{cid} never reached {want}: {rune.state(cid)}")


def test_run_prints_output_and_returns_exit_code(rune, cid, make_bundle):
    b = make_bundle(["sh", "-c", "echo out; echo err >&2; exit 7"])
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 7
    assert p.stdout == "out\n"
    assert "err" in p.stderr
    # run deletes the container afterwards
    assert rune.run("state", cid).returncode == 1
    assert not Path(rune.root, cid).exists()


def test_create_start_state_delete(rune, cid, make_bundle, tmp_path):
    b = make_bundle(["sh", "-c", "read x < /dev/null; sleep 30"])
    pidfile = tmp_path / "pid"
    rune.run("create", "--bundle", b, "--pid-file", str(pidfile), cid, check=True)
    s = rune.state(cid)
    assert s["status"] == "created"
    assert s["id"] == cid and s["bundle"] == b and s["rootfs"] == os.path.join(b, "rootfs")
    assert s["pid"] == int(pidfile.read_text())
    assert set(s) >= {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
    # the init waits: it has not exec'd the workload yet
    assert "sleep" not in Path(f"/proc/{s['pid']}/cmdline").read_bytes().decode()
    rune.run("start", cid, check=True)
    s = wait_status(rune, cid, "running")
    time.sleep(0.05)
    assert Path(f"/proc/{s['pid']}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    p = rune.run("start", cid)
    assert p.returncode == 1 and p.stderr == f'rune: cannot start an already running container: "{cid}"\n'
    p = rune.run("delete", cid)
    assert p.returncode == 1 and p.stderr == f"rune: cannot delete container {cid} that is not stopped: running\n"
    rune.run("kill", cid, "KILL", check=True)
    wait_status(rune, cid, "stopped")
    assert rune.state(cid)["pid"] == 0
    rune.run("delete", cid, check=True)
    assert rune.run("state", cid).returncode == 1
    assert not Path(rune.root, cid).exists()


@pytest.mark.parametrize("sig,expect", [("TERM", 15), ("SIGUSR1", 10), ("12", 12)])
def test_kill_delivers_signal_names_and_numbers(rune, cid, make_bundle, sig, expect):
    # pid 1 ignores signals it has no handler for, so the workload traps them and exits with their number
    script = "trap 'exit 15' TERM; trap 'exit 10' USR1; trap 'exit 12' USR2; echo up; while :; do sleep 0.05; done"
    b = make_bundle(["sh", "-c", script])
    proc = subprocess.Popen(rune.cmd("run", "--bundle", b, cid), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    rune.run("kill", cid, sig, check=True)
    assert proc.wait(timeout=20) == expect


def test_kill_sigkill_stops_container(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    rune.run("kill", cid, "KILL", check=True)
    wait_status(rune, cid, "stopped")
    p = rune.run("kill", cid, "KILL")
    assert p.returncode == 1 and "not running" in p.stderr
    rune.run("delete", cid, check=True)


def test_kill_unknown_signal_is_an_error(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    p = rune.run("kill", cid, "SIGNOPE")
    assert p.returncode == 1 and 'unknown signal "SIGNOPE"' in p.stderr
    assert rune.state(cid)["status"] == "running"


def test_foreground_run_exit_status_of_signal(rune, cid, make_bundle):
    b = make_bundle(["sh", "-c", "echo up; sleep 60"])
    proc = subprocess.Popen(rune.cmd("run", "--bundle", b, cid), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    rune.run("kill", cid, "KILL", check=True)
    assert proc.wait(timeout=20) == 128 + 9


def test_delete_force_running_and_missing(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("run", "--detach", "--bundle", b, cid, check=True)
    pid = rune.state(cid)["pid"]
    rune.run("delete", "--force", cid, check=True)
    assert not Path(rune.root, cid).exists()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        if stat[2] == "Z":
            break
        time.sleep(0.02)
    # deleting again: --force exits 0, plain delete says it does not exist
    assert rune.run("delete", "--force", cid).returncode == 0
    p = rune.run("delete", cid)
    assert p.returncode == 1 and p.stderr.startswith("rune: container does not exist: ")


def test_delete_created_container_kills_it(rune, cid, make_bundle):
    b = make_bundle(["true"])
    rune.run("create", "--bundle", b, cid, check=True)
    pid = rune.state(cid)["pid"]
    rune.run("delete", cid, check=True)
    assert not Path(rune.root, cid).exists()
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_duplicate_id_rejected_and_first_untouched(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("create", "--bundle", b, cid, check=True)
    before = rune.state(cid)
    p = rune.run("create", "--bundle", b, cid)
    assert p.returncode == 1 and p.stderr.startswith(f'rune: container with given ID already exists: "{cid}"')
    assert rune.state(cid) == before


def test_list_formats(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("create", "--bundle", b, cid, check=True)
    table = rune.run("list", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert any(line.split()[0] == cid and line.split()[2] == "created" for line in table[1:])
    items = json.loads(rune.run("list", "--format", "json", check=True).stdout)
    assert [i["id"] for i in items] == [cid] and items[0]["status"] == "created"
    assert rune.run("list", "-q", check=True).stdout.split() == [cid]


def test_log_json_records_the_error(rune, cid, make_bundle, tmp_path):
    log = tmp_path / "log.json"
    p = subprocess.run([rune.binary, "--root", rune.root, "--log", str(log), "--log-format", "json",
                        "start", "nope"], capture_output=True, text=True)
    assert p.returncode == 1
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[-1]["level"] == "error" and lines[-1]["msg"].startswith('container does not exist: "nope"')


def test_version_and_features(rune):
    p = rune.run("--version", check=True)
    lines = p.stdout.splitlines()
    assert lines[0].startswith("rune version ")
    assert lines[1].startswith("commit: ") and lines[2].startswith("spec: 1.")
    f = json.loads(rune.run("features", check=True).stdout)
    assert "pid" in f["linux"]["namespaces"] and f["ociVersionMin"] == "1.0.0"


def test_systemd_cgroup_flag_is_refused_clearly(rune, cid, make_bundle):
    b = make_bundle(["true"])
    p = rune.run("--systemd-cgroup", "run", "--bundle", b, cid)
    assert p.returncode == 1 and "systemd" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not Path(rune.root, cid).exists()


def test_spec_writes_default_config(rune, tmp_path):
    rune.run("spec", "--bundle", str(tmp_path), check=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    p = rune.run("spec", "--bundle", str(tmp_path))
    assert p.returncode == 1 and "exists" in p.stderr


def test_concurrent_lifecycles(rune, make_bundle):
    b = make_bundle(["sh", "-c", "echo $$ > /dev/null"])
    ids = [f"conc-{i}" for i in range(12)]
    procs = [subprocess.Popen(rune.cmd("run", "--bundle", b, i), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in ids]
    results = [p.wait(timeout=120) for p in procs]
    errors = [p.stderr.read().decode() for p in procs]
    assert results == [0] * len(ids), errors
    assert not any(Path(rune.root, i).exists() for i in ids)


def test_concurrent_calls_on_one_container(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    procs = [subprocess.Popen(rune.cmd("delete", "--force", cid), stderr=subprocess.PIPE) for _ in range(6)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    assert not Path(rune.root, cid).exists()
