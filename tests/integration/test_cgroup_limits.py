"""cgroup limits of real rune containers (v1 hybrid host): files on the host and inside, update, pause, ps, events."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_busybox,
              pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/pids/"), reason="needs cgroup v1 controllers")]

CG = Path("/sys/fs/cgroup")


def ok(p):  # type: ignore[no-untyped-def]
    assert p.returncode == 0, f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def own_cgroup(ctrl: str, pid: int | str = "self") -> str:
    """The cgroup path of `pid` in the v1 hierarchy that has controller `ctrl`."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if ctrl in ctrls.split(","):
            return path
    raise AssertionError(f"no {ctrl} hierarchy for {pid}")


def cg_dir(ctrl: str, pid: int) -> Path:
    return CG / ctrl / own_cgroup(ctrl, pid).lstrip("/")


def all_cg_dirs(pid: int) -> list[Path]:
    """Every v1 and v2 cgroup directory the process is in, except the hierarchy roots."""
    out = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if path == "/":
            continue
        if ctrls == "":
            out.append(CG / "unified" / path.lstrip("/"))
        else:
            name = ctrls.split(",")[0].replace("name=", "") if ctrls.startswith("name=") else ctrls
            base = CG / name if (CG / name).is_dir() else CG / ctrls.split(",")[0]
            out.append(base / path.lstrip("/"))
    return out


def detached(rune, cid, make_bundle, args=("sleep", "60"), edit=None):  # type: ignore[no-untyped-def]
    b = make_bundle(list(args), edit=edit)
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    return rune.state(cid)["pid"]


def read(p: Path) -> str:
    return p.read_text().strip()


# ------------------------------------------------------------------------------ limits at create

def test_memory_limit_host_and_inside(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20, "reservation": 32 << 20}

    pid = detached(rune, cid, make_bundle, edit=edit)
    d = cg_dir("memory", pid)
    assert d.name == cid
    assert read(d / "memory.limit_in_bytes") == str(64 << 20)
    assert read(d / "memory.soft_limit_in_bytes") == str(32 << 20)
    assert str(pid) in read(d / "cgroup.procs").split()
    p = rune.run("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert ok(p).strip() == str(64 << 20)


def test_pids_limit_stops_forks(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"]["pids"] = {"limit": 10}

    b = make_bundle(["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max; for i in $(seq 50); do sleep 10 & done; "
                                 "echo survived"], edit=edit)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode != 0
    assert p.stdout.splitlines()[0] == "10"
    assert "survived" not in p.stdout
    assert "can't fork" in p.stderr or "Resource temporarily unavailable" in p.stderr


def test_pids_limit_on_host(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"]["pids"] = {"limit": 10}

    pid = detached(rune, cid, make_bundle, args=("sh", "-c", "sleep 60 & sleep 60 & wait"), edit=edit)
    d = cg_dir("pids", pid)
    assert read(d / "pids.max") == "10"
    deadline = time.monotonic() + 5
    while int(read(d / "pids.current")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert int(read(d / "pids.current")) == 3


def test_cpu_shares_quota_period_and_cpuset(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"]["cpu"] = {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}

    pid = detached(rune, cid, make_bundle, edit=edit)
    cpu = cg_dir("cpu", pid)
    assert read(cpu / "cpu.shares") == "512"
    assert read(cpu / "cpu.cfs_quota_us") == "50000"
    assert read(cpu / "cpu.cfs_period_us") == "100000"
    cpuset = cg_dir("cpuset", pid)
    assert read(cpuset / "cpuset.cpus") == "0"
    assert read(cpuset / "cpuset.mems") == "0"
    out = ok(rune.run("exec", cid, "sh", "-c", "grep Cpus_allowed_list /proc/self/status; "
                                               "cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
    lines = out.splitlines()
    assert lines[0].split() == ["Cpus_allowed_list:", "0"]
    assert lines[1:] == ["512", "50000"]
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Cpus_allowed_list:\t0\n" in status


def test_default_cgroup_path_is_the_id_below_own_cgroup(rune, cid, make_bundle):
    pid = detached(rune, cid, make_bundle)
    for ctrl in ("pids", "memory", "cpu", "freezer", "devices"):
        assert own_cgroup(ctrl, pid) == os.path.join(own_cgroup(ctrl), cid)


def test_relative_cgroups_path(rune, cid, make_bundle):
    rel = f"rune-itest-{cid}/inner"

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["cgroupsPath"] = rel

    pid = detached(rune, cid, make_bundle, edit=edit)
    dirs = {}
    for ctrl in ("pids", "memory", "freezer"):
        want = os.path.join(own_cgroup(ctrl), rel)
        assert own_cgroup(ctrl, pid) == want
        dirs[ctrl] = CG / ctrl / want.lstrip("/")
        assert str(pid) in read(dirs[ctrl] / "cgroup.procs").split()
    ok(rune.run("delete", "--force", cid))
    for d in dirs.values():
        assert not d.exists()
        assert not d.parent.exists(), f"{d.parent} (made by create) was left behind"


def test_absolute_cgroups_path(rune, cid, make_bundle):
    absolute = f"/rune-itest-{cid}/leaf"

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["cgroupsPath"] = absolute
        cfg["linux"]["resources"]["pids"] = {"limit": 33}

    pid = detached(rune, cid, make_bundle, edit=edit)
    for ctrl in ("pids", "memory", "cpu"):
        assert own_cgroup(ctrl, pid) == absolute
    assert read(CG / "pids" / absolute.lstrip("/") / "pids.max") == "33"
    # absolute paths do not nest below the runtime's own memory cgroup
    assert (CG / "memory" / absolute.lstrip("/")).is_dir()
    ok(rune.run("delete", "--force", cid))
    for ctrl in ("pids", "memory", "cpu"):
        assert not (CG / ctrl / absolute.lstrip("/")).exists()
        assert not (CG / ctrl / absolute.lstrip("/")).parent.exists()


# ------------------------------------------------------------------------------ update, pause, ps, events

def test_update_flags(rune, cid, make_bundle):
    pid = detached(rune, cid, make_bundle)
    ok(rune.run("update", "--memory", "64M", "--pids-limit", "20", "--cpu-share", "300", cid))
    assert read(cg_dir("memory", pid) / "memory.limit_in_bytes") == str(64 << 20)
    assert read(cg_dir("pids", pid) / "pids.max") == "20"
    assert read(cg_dir("cpu", pid) / "cpu.shares") == "300"
    assert ok(rune.run("exec", cid, "cat", "/sys/fs/cgroup/pids/pids.max")).strip() == "20"


def test_update_resources_file(rune, cid, make_bundle, tmp_path):
    pid = detached(rune, cid, make_bundle)
    f = tmp_path / "res.json"
    f.write_text(json.dumps({"memory": {"limit": 32 << 20}, "pids": {"limit": 30},
                             "cpu": {"quota": 20000, "period": 100000}}))
    ok(rune.run("update", "-r", str(f), cid))
    assert read(cg_dir("memory", pid) / "memory.limit_in_bytes") == str(32 << 20)
    assert read(cg_dir("pids", pid) / "pids.max") == "30"
    assert read(cg_dir("cpu", pid) / "cpu.cfs_quota_us") == "20000"
    # from stdin too
    with open(f, "w") as fh:
        fh.write(json.dumps({"pids": {"limit": 40}}))
    with open(f) as fh:
        ok(rune.run("update", "-r", "-", cid, stdin=fh))
    assert read(cg_dir("pids", pid) / "pids.max") == "40"
    assert read(cg_dir("memory", pid) / "memory.limit_in_bytes") == str(32 << 20)


def test_update_invalid_is_one_line_error(rune, cid, make_bundle, tmp_path):
    pid = detached(rune, cid, make_bundle)
    f = tmp_path / "res.json"
    f.write_text("{nope")
    p = rune.run("update", "-r", str(f), cid)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1 and p.stderr.startswith("rune: ")
    assert read(cg_dir("pids", pid) / "pids.max") == "max"


def test_pause_resume(rune, cid, make_bundle):
    pid = detached(rune, cid, make_bundle, args=("sh", "-c", "sleep 60 & wait"))
    freezer = cg_dir("freezer", pid) / "freezer.state"
    assert read(freezer) == "THAWED"
    ok(rune.run("pause", cid))
    assert read(freezer) == "FROZEN"
    assert rune.state(cid)["status"] == "paused"
    p = rune.run("pause", cid)
    assert p.returncode == 1 and p.stderr == f'rune: container not running: "{cid}" is paused\n'
    ok(rune.run("resume", cid))
    assert read(freezer) == "THAWED"
    assert rune.state(cid)["status"] == "running"
    p = rune.run("resume", cid)
    assert p.returncode == 1 and p.stderr == f'rune: container not paused: "{cid}" is running\n'


def test_ps_table_and_json(rune, cid, make_bundle):
    pid = detached(rune, cid, make_bundle, args=("sh", "-c", "sleep 60 & wait"))
    deadline = time.monotonic() + 5
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        children = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        time.sleep(0.02)
    assert children
    table = ok(rune.run("ps", cid)).splitlines()
    header = table[0].split()
    idx = header.index("PID")
    pids = {int(line.split()[idx]) for line in table[1:]}
    assert pids == {pid, *children}
    assert sorted(json.loads(ok(rune.run("ps", "--format", "json", cid)))) == sorted([pid, *children])
    assert sorted(json.loads(ok(rune.run("ps", "-f", "json", cid)))) == sorted([pid, *children])


def test_events_stats(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}
        cfg["linux"]["resources"]["pids"] = {"limit": 50}

    detached(rune, cid, make_bundle, args=("sh", "-c", "sleep 60 & wait"), edit=edit)
    lines = ok(rune.run("events", "--stats", cid)).splitlines()
    assert len(lines) == 1
    ev = json.loads(lines[0])
    assert ev["type"] == "stats" and ev["id"] == cid
    data = ev["data"]
    assert {"cpu", "memory", "pids"} <= set(data)
    assert data["pids"]["current"] == 2
    assert data["pids"]["limit"] == 50
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["memory"]["usage"]["usage"] > 0
    assert data["cpu"]["usage"]["total"] > 0


def test_delete_leaves_no_cgroup_dirs(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}

    pid = detached(rune, cid, make_bundle, args=("sh", "-c", "sleep 60 & sleep 60 & wait"), edit=edit)
    dirs = all_cg_dirs(pid)
    assert len(dirs) >= 10, dirs
    assert all(d.is_dir() for d in dirs), [d for d in dirs if not d.is_dir()]
    ok(rune.run("delete", "--force", cid))
    assert [d for d in dirs if d.exists()] == []
    assert [p for p in CG.glob(f"*/{cid}")] == []
