"""Integration tests for inclavare.linux.cgroups against the real /sys/fs/cgroup (needs root).

Every test uses absolute cgroup paths named /rune-test-<pid>-<random> so nothing it makes can be
confused with real containers, and a fixture kills its children and removes its cgroups even when
the test fails.  The v2 tests drive the cgroup2 hierarchy at /sys/fs/cgroup/unified of our hybrid
machines as if it were a pure v2 host (that hierarchy accepts eBPF device filters).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from inclavare.errors import CgroupError
from inclavare.linux import cgroups as cg

pytestmark = pytest.mark.root

UNIFIED = "/sys/fs/cgroup/unified"

# A child that waits for "go" on stdin (so the test can move it first), then opens each device named
# on its command line and prints "ok" or the errno name, then optionally allocates memory and sleeps.
CHILD = r"""
import errno, os, sys, time
sys.stdin.readline()
out = []
for dev in sys.argv[1:]:
    try:
        os.close(os.open(dev, os.O_RDONLY))
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
print(" ".join(out), flush=True)
if os.environ.get("ALLOC"):
    keep = b"x" * int(os.environ["ALLOC"])
    print("allocated", flush=True)
time.sleep(60)
"""


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def layout() -> cg.Layout:
    _require_root()
    try:
        lay = cg.detect_layout()
    except CgroupError as e:
        pytest.skip(f"no cgroups: {e}")
    return lay


@pytest.fixture
def v1_layout(layout: cg.Layout) -> cg.Layout:
    if layout.mode not in ("v1", "hybrid"):
        pytest.skip(f"needs cgroup v1 controllers, this host is {layout.mode}")
    return layout


@pytest.fixture
def name() -> str:
    return f"/rune-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Tracker:
    def __init__(self) -> None:
        self.managers: list[cg.Manager] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.restore: list[tuple[str, str]] = []  # (file, "-controller") written at teardown

    def manager(self, m: cg.Manager) -> cg.Manager:
        self.managers.append(m)
        return m

    def child(self, *devices: str, alloc: int = 0) -> subprocess.Popen[str]:
        env = dict(os.environ, ALLOC=str(alloc)) if alloc else dict(os.environ)
        p = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", CHILD, *devices],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for m in self.managers:
            try:
                if m.freezer_state() == "frozen":
                    m.thaw()
            except CgroupError:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for f in (p.stdin, p.stdout):
                if f:
                    f.close()
        for m in self.managers:
            try:
                m.destroy()
            except CgroupError:
                _force_remove(m)
        for path, value in self.restore:
            try:
                with open(path, "w") as f:
                    f.write(value)
            except OSError:
                pass


def _force_remove(m: cg.Manager) -> None:
    """Last resort: move stragglers to the hierarchy root and remove the directories bottom-up."""
    for key, path in m.paths.items():
        mount = m.mounts.get(key, "")
        for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -len(t[0])):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids = f.read().split()
                for pid in pids:
                    with open(os.path.join(mount, "cgroup.procs"), "w") as f:
                        f.write(pid)
                os.rmdir(dirpath)
            except OSError:
                pass
    for p in reversed(m.created):
        try:
            os.rmdir(p)
        except OSError:
            pass


@pytest.fixture
def track() -> Iterator[Tracker]:
    t = Tracker()
    try:
        yield t
    finally:
        t.cleanup()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _go(p: subprocess.Popen[str]) -> str:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def _assert_gone(m: cg.Manager) -> None:
    left = [p for p in [*m.paths.values(), *m.created] if os.path.exists(p)]
    assert left == []


def test_v1_create_apply_limits_freeze_stats_destroy(v1_layout: cg.Layout, name: str, track: Tracker) -> None:
    m = track.manager(cg.Manager.for_container(f"{name}/ctr", "ctr", v1_layout))
    m.create()
    for key in ("devices", "memory", "cpu", "pids", "freezer"):
        assert os.path.isdir(m.paths[key]), key
    # new cpuset cgroups start empty; create() copied the parent's cpus/mems so a task can join
    assert _read(f"{m.paths['cpuset']}/cpuset.cpus") == _read(f"{m.mounts['cpuset']}/cpuset.cpus")
    assert _read(f"{m.paths['cpuset']}/cpuset.mems") != ""

    child = track.child()
    m.apply(child.pid)
    resources: dict[str, Any] = {
        "memory": {"limit": 64 << 20, "reservation": 32 << 20},
        "pids": {"limit": 32},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0"},
    }
    m.set(resources)
    assert _read(f"{m.paths['memory']}/memory.limit_in_bytes") == str(64 << 20)
    assert _read(f"{m.paths['memory']}/memory.soft_limit_in_bytes") == str(32 << 20)
    assert _read(f"{m.paths['pids']}/pids.max") == "32"
    assert _read(f"{m.paths['cpu']}/cpu.shares") == "512"
    assert _read(f"{m.paths['cpu']}/cpu.cfs_quota_us") == "20000"
    assert _read(f"{m.paths['cpu']}/cpu.cfs_period_us") == "100000"
    assert _read(f"{m.paths['cpuset']}/cpuset.cpus") == "0"
    with open(f"/proc/{child.pid}/cgroup") as f:
        own = cg.parse_proc_cgroup(f.read())
    assert own["memory"] == f"{name}/ctr" and own["pids"] == f"{name}/ctr"

    assert m.pids() == [child.pid]
    # a later command works from the saved state alone
    again = cg.Manager.from_dict(m.to_dict())
    assert again.exists() and again.pids() == [child.pid]

    m.freeze()
    assert m.freezer_state() == "frozen"
    assert _read(f"{m.paths['freezer']}/freezer.state") == "FROZEN"
    m.thaw()
    assert m.freezer_state() == "thawed"
    assert _read(f"{m.paths['freezer']}/freezer.state") == "THAWED"

    st = m.stats()
    assert st["pids"] == {"current": 1, "limit": 32}
    assert st["memory"]["usage"]["limit"] == 64 << 20
    assert st["cpuset"]["cpus"] == [0]
    assert "usage" in st["cpu"] and "user" in st["cpu"]["usage"]

    with pytest.raises(CgroupError, match="removing cgroups"):
        m.destroy()  # a live task keeps the cgroup busy
    child.kill()
    child.wait()
    assert m.pids() == []
    m.destroy()
    _assert_gone(m)
    assert not os.path.exists(f"{m.mounts['memory']}{name}")  # the parent create() made is gone too
    assert not m.exists()


def test_v1_memory_limit_below_usage_is_reported(v1_layout: cg.Layout, name: str, track: Tracker) -> None:
    if "memory" not in v1_layout.v1:
        pytest.skip("memory controller not mounted as v1")
    with open("/proc/swaps") as f:
        if len(f.read().splitlines()) > 1:
            pytest.skip("swap is enabled: the kernel could reclaim and accept the limit")
    m = track.manager(cg.Manager.for_container(name, "x", v1_layout))
    m.create()
    child = track.child(alloc=16 << 20)
    m.apply(child.pid)
    assert _go(child) == ""
    assert child.stdout is not None and child.stdout.readline().strip() == "allocated"
    with pytest.raises(CgroupError) as ei:
        m.set({"memory": {"limit": 1}}, skip_devices=True)
    assert str(ei.value).startswith(
        f"linux.resources.memory.limit: writing 1 to {m.paths['memory']}/memory.limit_in_bytes: Device or resource busy"
    )


def test_v1_device_rules(v1_layout: cg.Layout, name: str, track: Tracker) -> None:
    if not os.path.exists("/dev/kmsg"):
        pytest.skip("/dev/kmsg is missing")
    m = track.manager(cg.Manager.for_container(name, "x", v1_layout))
    m.create()
    child = track.child("/dev/null", "/dev/kmsg")
    m.apply(child.pid)
    m.set({"devices": [{"allow": False, "access": "rwm"}]})
    listed = _read(f"{m.paths['devices']}/devices.list").splitlines()
    assert sorted(listed) == sorted(
        [
            "b *:* m", "c *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
            "c 5:2 rwm", "c 10:200 rwm", "c 136:* rwm",
        ]
    )  # fmt: skip
    assert _go(child) == "ok EPERM"


def _v2_layout() -> cg.Layout:
    _require_root()
    try:
        lay = cg.detect_layout(cgroup_root=UNIFIED)
    except CgroupError:
        pytest.skip(f"no cgroup2 hierarchy at {UNIFIED}")
    if lay.mode != "v2":
        pytest.skip(f"no cgroup2 hierarchy at {UNIFIED}")
    return lay


def test_v2_ebpf_device_filter_freeze_stats(name: str, track: Tracker) -> None:
    lay = _v2_layout()
    assert lay.unified is not None
    root_ctl = os.path.join(lay.unified.mountpoint, "cgroup.subtree_control")
    before = set(_read(root_ctl).split())
    m = track.manager(cg.Manager.for_container(name, "x", lay))
    assert m.mode == "v2" and m.paths == {"": f"{UNIFIED}{name}"}
    m.create()
    # create() enables every available controller in the parent; undo that at teardown so the
    # host can still mount those controllers as cgroup v1
    track.restore += [(root_ctl, f"-{c}") for c in set(_read(root_ctl).split()) - before]

    child = track.child("/dev/zero", "/dev/null")
    m.apply(child.pid)
    rules = {"devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 5,
                                                             "access": "rwm"}]}  # fmt: skip
    m.set(rules, default_devices=False)
    m.set(rules, default_devices=False)  # replaces the program rather than stacking a second one
    fd = os.open(m.paths[""], os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(cg._bpf_query_device_progs(fd)) == 1
    finally:
        os.close(fd)
    assert _go(child) == "ok EPERM"
    assert m.pids() == [child.pid]

    m.freeze()
    assert m.freezer_state() == "frozen"
    assert "frozen 1" in _read(f"{m.paths['']}/cgroup.events")
    m.thaw()
    assert m.freezer_state() == "thawed"

    st = m.stats()
    assert set(st) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"}
    assert st["pids"] == {"current": 1}  # no pids controller there: counted from cgroup.procs

    child.send_signal(signal.SIGKILL)
    child.wait()
    m.destroy()
    _assert_gone(m)


def test_v2_device_filter_default_rules_allow_dev_null(name: str, track: Tracker) -> None:
    lay = _v2_layout()
    assert lay.unified is not None
    root_ctl = os.path.join(lay.unified.mountpoint, "cgroup.subtree_control")
    before = set(_read(root_ctl).split())
    m = track.manager(cg.Manager.for_container(name, "x", lay))
    m.create()
    track.restore += [(root_ctl, f"-{c}") for c in set(_read(root_ctl).split()) - before]
    child = track.child("/dev/null", "/dev/kmsg")
    m.apply(child.pid)
    m.set({"devices": [{"allow": False, "access": "rwm"}]})
    assert _go(child) == "ok EPERM"


def test_hybrid_hugetlb_limit_in_unified_hierarchy(layout: cg.Layout, name: str, track: Tracker) -> None:
    if layout.mode != "hybrid" or layout.unified is None:
        pytest.skip("needs the hybrid layout")
    if "hugetlb" in layout.v1:
        pytest.skip("hugetlb is mounted as cgroup v1 here")
    if "hugetlb" not in _read(os.path.join(layout.unified.mountpoint, "cgroup.controllers")).split():
        pytest.skip("hugetlb is not available in the unified hierarchy")
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2MB huge pages")
    root_ctl = os.path.join(layout.unified.mountpoint, "cgroup.subtree_control")
    if "hugetlb" not in _read(root_ctl).split():
        track.restore.append((root_ctl, "-hugetlb"))
    m = track.manager(cg.Manager.for_container(name, "x", layout))
    m.create()
    m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]}, skip_devices=True)
    assert _read(f"{m.paths['']}/hugetlb.2MB.max") == str(4 << 20)
    assert m.stats()["hugetlb"]["2MB"] == {"failcnt": 0}
    m.destroy()
    _assert_gone(m)


def test_destroy_of_missing_cgroups_is_quiet(v1_layout: cg.Layout, name: str) -> None:
    m = cg.Manager.for_container(name, "x", v1_layout)
    assert not m.exists()
    m.destroy()
    assert m.pids() == []
    assert m.freezer_state() == "undefined"


def test_write_error_for_unknown_unified_key_in_v2(name: str, track: Tracker) -> None:
    lay = _v2_layout()
    assert lay.unified is not None
    root_ctl = os.path.join(lay.unified.mountpoint, "cgroup.subtree_control")
    before = set(_read(root_ctl).split())
    m = track.manager(cg.Manager.for_container(name, "x", lay))
    m.create()
    track.restore += [(root_ctl, f"-{c}") for c in set(_read(root_ctl).split()) - before]
    with pytest.raises(CgroupError, match=r"unified\.memory\.max: cannot be set: controller 'memory'"):
        m.set({"unified": {"memory.max": "1G"}}, skip_devices=True)
    m.set({"unified": {"cgroup.max.descendants": "5"}}, skip_devices=True)
    assert _read(f"{m.paths['']}/cgroup.max.descendants") == "5"
