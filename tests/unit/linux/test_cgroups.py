"""Unit tests for inclavare.linux.cgroups: layout detection, path rules, conversions, and the exact
files and values set()/create()/apply() write, against fake cgroup trees under a temp directory."""

from __future__ import annotations

import errno
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from inclavare.errors import CgroupError, ConfigError
from inclavare.linux import cgroups as cg
from inclavare.linux.cgroups import ebpf, stats

# /proc/self/mountinfo and /proc/self/cgroup of our machines at boot: v1 controllers each on their own,
# name=systemd, cgroup2 at /sys/fs/cgroup/unified, hugetlb/net_cls/perf_event not mounted.
HYBRID_MOUNTINFO = """\
22 1 254:1 / / rw,relatime - ext4 /dev/vda rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/8449
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

# A classic systemd v1 host (co-mounted controllers, shared propagation, no unified mount).
V1_MOUNTINFO = """\
25 21 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid shared:14 - cgroup cgroup rw,net_cls,net_prio
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/devices rw,nosuid shared:16 - cgroup cgroup rw,devices
33 25 0:30 / /sys/fs/cgroup/hugetlb rw,nosuid shared:17 - cgroup cgroup rw,hugetlb
"""
V1_CGROUP = """\
8:hugetlb:/
7:devices:/user.slice
6:memory:/user.slice/user-0.slice
5:net_cls,net_prio:/
4:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-0.slice/session-1.scope
"""

V2_MOUNTINFO = """\
24 22 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
V2_CGROUP = "0::/user.slice/user-0.slice/session-3.scope\n"

MAX = "9223372036854771712"


# --------------------------------------------------------------------------------------------
# layout detection


def test_parse_mountinfo_unescapes_and_reads_fields() -> None:
    text = r"40 31 0:37 /in\040dir /mnt/with\040space rw,relatime shared:1 master:2 - cgroup cgroup rw,pids"
    assert cg.parse_mountinfo(text) == [("/in dir", "/mnt/with space", "cgroup", "rw,pids")]


def test_detect_hybrid_layout_of_our_machines() -> None:
    layout = cg.detect_layout(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert layout.mode == "hybrid"
    assert layout.unified is not None and layout.unified.mountpoint == "/sys/fs/cgroup/unified"
    assert sorted(layout.v1) == sorted(
        ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "name=systemd"]
    )
    assert "hugetlb" not in layout.v1
    assert layout.v1["name=systemd"].mountpoint == "/sys/fs/cgroup/systemd"
    assert layout.own["memory"] == "/process_api/8449"
    assert layout.own[""] == "/"


def test_detect_v1_comounts_and_named_hierarchy() -> None:
    layout = cg.detect_layout(V1_MOUNTINFO, V1_CGROUP)
    assert layout.mode == "v1"
    assert layout.unified is None
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    assert layout.v1["cpu"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v1["net_prio"].controllers == ("net_cls", "net_prio")
    # plain mount options (xattr, release_agent=...) are not controllers
    assert layout.v1["name=systemd"].controllers == ("name=systemd",)
    assert layout.own["net_prio"] == "/"


def test_detect_pure_v2() -> None:
    layout = cg.detect_layout(V2_MOUNTINFO, V2_CGROUP)
    assert layout.mode == "v2"
    assert layout.v1 == {}
    assert layout.unified is not None and layout.unified.mountpoint == "/sys/fs/cgroup"


def test_detect_prefers_hierarchy_mounted_below_cgroup_root() -> None:
    text = (
        "50 1 0:32 / /mnt/elsewhere rw - cgroup cgroup rw,memory\n"
        "51 1 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "52 1 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n"
    )
    layout = cg.detect_layout(text, "2:memory:/\n1:devices:/\n")
    assert layout.v1["memory"].mountpoint == "/sys/fs/cgroup/memory"


def test_detect_without_cgroups_fails() -> None:
    with pytest.raises(CgroupError, match="no cgroup filesystem"):
        cg.detect_layout("22 1 254:1 / / rw - ext4 /dev/vda rw\n", "")


def test_parse_proc_cgroup_rejects_garbage() -> None:
    assert cg.parse_proc_cgroup("3:cpu,cpuacct:/a\n0::/b\n") == {"cpu": "/a", "cpuacct": "/a", "": "/b"}
    with pytest.raises(CgroupError, match="malformed"):
        cg.parse_proc_cgroup("nonsense\n")


def test_current_layout_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = cg.detect_layout(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    monkeypatch.setattr(cg, "_LAYOUT", None)

    def detect() -> cg.Layout:
        calls.append(1)
        return fake

    monkeypatch.setattr(cg, "detect_layout", detect)
    assert cg.current_layout() is fake
    assert cg.current_layout() is fake
    assert calls == [1]


# --------------------------------------------------------------------------------------------
# path rules


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("", ""),
        ("/a/b", "/a/b"),
        ("//a//b/", "/a/b"),
        ("/../../a", "/a"),
        ("../../a/b", "a/b"),
        ("a/../../b", "b"),
        ("a/./b/..", "a"),
        ("..", "."),
    ],
)
def test_clean_path_like_runc(raw: str, clean: str) -> None:
    assert cg.clean_path(raw) == clean


def test_v1_absolute_path_goes_below_each_mount() -> None:
    layout = cg.detect_layout(V1_MOUNTINFO, V1_CGROUP)
    m = cg.Manager.for_container("/machine/ctr", "id", layout)
    assert m.mode == "v1"
    assert m.paths == {
        "devices": "/sys/fs/cgroup/devices/machine/ctr",
        "memory": "/sys/fs/cgroup/memory/machine/ctr",
        "cpu": "/sys/fs/cgroup/cpu,cpuacct/machine/ctr",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/machine/ctr",
        "hugetlb": "/sys/fs/cgroup/hugetlb/machine/ctr",
        "net_cls": "/sys/fs/cgroup/net_cls,net_prio/machine/ctr",
        "net_prio": "/sys/fs/cgroup/net_cls,net_prio/machine/ctr",
        "name=systemd": "/sys/fs/cgroup/systemd/machine/ctr",
    }


def test_v1_relative_path_goes_below_own_cgroup() -> None:
    layout = cg.detect_layout(V1_MOUNTINFO, V1_CGROUP)
    m = cg.Manager.for_container("pod/ctr", "id", layout)
    assert m.paths["memory"] == "/sys/fs/cgroup/memory/user.slice/user-0.slice/pod/ctr"
    assert m.paths["cpu"] == "/sys/fs/cgroup/cpu,cpuacct/user.slice/pod/ctr"
    assert m.paths["name=systemd"] == "/sys/fs/cgroup/systemd/user.slice/user-0.slice/session-1.scope/pod/ctr"
    assert m.paths["hugetlb"] == "/sys/fs/cgroup/hugetlb/pod/ctr"


def test_relative_path_respects_mount_root() -> None:
    # Inside a container: the host's /docker/abc subtree is what is mounted at /sys/fs/cgroup/memory.
    mountinfo = (
        "60 50 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
        "61 50 0:33 /docker/abc /sys/fs/cgroup/devices ro - cgroup cgroup rw,devices\n"
    )
    own = "2:memory:/docker/abc/sub\n1:devices:/docker/abc\n"
    m = cg.Manager.for_container("ctr", "id", cg.detect_layout(mountinfo, own))
    assert m.paths == {
        "memory": "/sys/fs/cgroup/memory/sub/ctr",
        "devices": "/sys/fs/cgroup/devices/ctr",
    }


def test_empty_path_uses_container_id_relative_like_runc() -> None:
    layout = cg.detect_layout(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    m = cg.Manager.for_container("", "my-ctr", layout)
    assert m.mode == "hybrid"
    assert m.paths["memory"] == "/sys/fs/cgroup/memory/process_api/8449/my-ctr"
    assert m.paths["cpu"] == "/sys/fs/cgroup/cpu/my-ctr"
    # hybrid: the unified hierarchy is joined at <mount>/<path>, as runc computes it
    assert m.paths[""] == "/sys/fs/cgroup/unified/my-ctr"
    assert list(m.paths)[:3] == ["cpuset", "devices", "memory"]  # runc's subsystem order


def test_v2_paths() -> None:
    layout = cg.detect_layout(V2_MOUNTINFO, V2_CGROUP)
    # relative: below the *parent* of our own cgroup (runc fs2)
    m = cg.Manager.for_container("", "c1", layout)
    assert m.mode == "v2"
    assert m.paths == {"": "/sys/fs/cgroup/user.slice/user-0.slice/c1"}
    assert cg.Manager.for_container("/k8s/c1", "c1", layout).paths == {"": "/sys/fs/cgroup/k8s/c1"}


def test_missing_devices_hierarchy_is_fatal() -> None:
    layout = cg.detect_layout("31 1 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "1:cpu:/\n")
    with pytest.raises(CgroupError, match="devices cgroup controller is not mounted"):
        cg.Manager.for_container("/x", "x", layout)


@pytest.mark.parametrize("path", [".", "/", "a/.."])
def test_path_naming_no_cgroup_of_its_own_is_refused(path: str) -> None:
    layout = cg.detect_layout(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    with pytest.raises(ConfigError, match="linux.cgroupsPath"):
        cg.Manager.for_container(path, "id", layout)


def test_state_round_trip_needs_no_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = cg.detect_layout(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    m = cg.Manager.for_container("/a/b", "id", layout)
    m.created = ["/sys/fs/cgroup/cpu/a", "/sys/fs/cgroup/cpu/a/b"]
    saved = json.loads(json.dumps(m.to_dict()))

    def boom(*_a: Any, **_k: Any) -> None:
        raise AssertionError("from_dict must not detect the layout")

    monkeypatch.setattr(cg, "detect_layout", boom)
    monkeypatch.setattr(cg, "current_layout", boom)
    back = cg.Manager.from_dict(saved)
    assert (back.mode, back.paths, back.mounts, back.created) == (m.mode, m.paths, m.mounts, m.created)
    with pytest.raises(CgroupError, match="unknown mode"):
        cg.Manager.from_dict({"mode": "v3", "paths": {}})
    with pytest.raises(CgroupError, match="malformed"):
        cg.Manager.from_dict({"paths": {}})


# --------------------------------------------------------------------------------------------
# conversions


@pytest.mark.parametrize(("shares", "weight"), [(0, 0), (2, 1), (1024, 39), (262144, 10000)])
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert cg.shares_to_weight(shares) == weight


@pytest.mark.parametrize(("blkio", "io"), [(0, 0), (10, 1), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight(blkio: int, io: int) -> None:
    assert cg.blkio_weight_to_io_weight(blkio) == io


@pytest.mark.parametrize(
    ("swap", "limit", "v2"),
    [(0, 0, 0), (0, -1, -1), (-1, 100, -1), (0, 100, 0), (300, 100, 200), (100, 100, 0)],
)
def test_memory_swap_to_v2(swap: int, limit: int, v2: int) -> None:
    assert cg.memory_swap_to_v2(swap, limit) == v2


@pytest.mark.parametrize(
    ("swap", "limit", "msg"),
    [(100, 0, "without memory limit"), (100, -1, "without memory limit"), (50, 100, ">= memory limit")],
)
def test_memory_swap_to_v2_errors(swap: int, limit: int, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        cg.memory_swap_to_v2(swap, limit)


# --------------------------------------------------------------------------------------------
# device rules


def _rules(*specs: tuple[str, int, int, str, bool]) -> list[cg.Rule]:
    return [(t, ma, mi, cg._perm_bits(acc), allow) for t, ma, mi, acc, allow in specs]


def _strings(rules: list[cg.Rule]) -> list[tuple[str, str]]:
    return [("allow" if r[4] else "deny", cg._rule_string(r[0], r[1], r[2], r[3])) for r in rules]


def test_transition_from_default_cgroup_to_runc_defaults() -> None:
    current = cg.DeviceEmulator.from_list("a *:* rwm\n")
    target = cg.DeviceEmulator.from_rules(
        cg._oci_device_rules([{"allow": False, "access": "rwm"}, *cg.default_device_rules()])
    )
    # in the listed order (default_device_rules' order), as the runtime-spec requires; runc sorts them
    assert _strings(current.transition(target)) == [
        ("deny", "a *:* rwm"),
        ("allow", "c *:* m"),
        ("allow", "b *:* m"),
        ("allow", "c 1:3 rwm"),
        ("allow", "c 1:8 rwm"),
        ("allow", "c 1:7 rwm"),
        ("allow", "c 5:0 rwm"),
        ("allow", "c 1:5 rwm"),
        ("allow", "c 1:9 rwm"),
        ("allow", "c 136:* rwm"),
        ("allow", "c 5:2 rwm"),
        ("allow", "c 10:200 rwm"),
    ]


def test_transition_is_minimal_between_allow_lists() -> None:
    current = cg.DeviceEmulator.from_list("c 1:3 rwm\nc 1:5 rwm\nb 8:0 r\n")
    target = cg.DeviceEmulator.from_rules(
        _rules(("c", 1, 3, "r", True), ("c", 1, 5, "rwm", True), ("c", 4, 1, "w", True))
    )
    assert _strings(current.transition(target)) == [
        ("deny", "c 1:3 wm"),
        ("deny", "b 8:0 r"),
        ("allow", "c 4:1 w"),
    ]
    assert current.transition(current) == []


def test_emulator_refuses_holes_in_wildcards() -> None:
    with pytest.raises(ValueError, match="punch a hole"):
        cg.DeviceEmulator.from_rules(_rules(("c", -1, -1, "rwm", True), ("c", 1, 3, "w", False)))
    with pytest.raises(ConfigError, match=r"linux\.resources\.devices: .*punch a hole"):
        cg.validate(
            {
                "devices": [
                    {"allow": True, "type": "c", "access": "rwm"},
                    {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
                ]
            }
        )


def test_default_device_rules_dedupe_by_linux_devices_path() -> None:
    rules = cg.default_device_rules([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}])
    assert len(rules) == len(cg.DEFAULT_DEVICE_RULES) - 1
    assert all((r["major"], r["minor"]) != (1, 3) for r in rules)


_OPS = {
    0x61: "LdXMemW",
    0x54: "And32Imm",
    0x74: "RSh32Imm",
    0xBC: "Mov32Reg",
    0xB4: "Mov32Imm",
    0x55: "JNEImm",
    0x5D: "JNEReg",
    0x95: "Exit",
}


def _disasm(prog: bytes) -> list[str]:
    out = []
    for idx in range(0, len(prog), 8):
        code, regs, off, imm = struct.unpack_from("<BBhi", prog, idx)
        name = _OPS[code]
        dst, src = regs & 0xF, regs >> 4
        if name == "Exit":
            out.append("Exit")
        elif name == "LdXMemW":
            out.append(f"{name} r{dst} r{src}+{off}")
        elif name == "Mov32Reg":
            out.append(f"{name} r{dst} r{src}")
        elif name == "JNEReg":
            out.append(f"{name} r{dst} r{src} ->{idx // 8 + 1 + off}")
        elif name == "JNEImm":
            out.append(f"{name} r{dst} {imm} ->{idx // 8 + 1 + off}")
        else:
            out.append(f"{name} r{dst} {imm}")
    return out


PROLOGUE = [
    "LdXMemW r2 r1+0",
    "And32Imm r2 65535",
    "LdXMemW r3 r1+0",
    "RSh32Imm r3 16",
    "LdXMemW r4 r1+4",
    "LdXMemW r5 r1+8",
]


def test_device_filter_program_deny_all() -> None:
    assert _disasm(cg.device_filter_program([])) == [*PROLOGUE, "Mov32Imm r0 0", "Exit"]


def test_device_filter_program_blocks() -> None:
    rules = _rules(
        ("a", -1, -1, "rwm", False),
        ("b", -1, -1, "m", True),
        ("c", 1, 5, "rwm", True),
        ("c", 136, -1, "rw", True),
    )
    assert _disasm(cg.device_filter_program(rules)) == [
        *PROLOGUE,
        # b *:* m -> allow
        "JNEImm r2 1 ->12",
        "Mov32Reg r1 r3",
        "And32Imm r1 1",
        "JNEReg r1 r3 ->12",
        "Mov32Imm r0 1",
        "Exit",
        # c 1:5 rwm -> allow (no access check for rwm)
        "JNEImm r2 2 ->17",
        "JNEImm r4 1 ->17",
        "JNEImm r5 5 ->17",
        "Mov32Imm r0 1",
        "Exit",
        # c 136:* rw -> allow (BPF read=2 | write=4)
        "JNEImm r2 2 ->24",
        "Mov32Reg r1 r3",
        "And32Imm r1 6",
        "JNEReg r1 r3 ->24",
        "JNEImm r4 136 ->24",
        "Mov32Imm r0 1",
        "Exit",
        # default: deny
        "Mov32Imm r0 0",
        "Exit",
    ]


def test_device_filter_program_deny_list() -> None:
    rules = _rules(("a", -1, -1, "rwm", True), ("c", 1, 3, "w", False))
    assert _disasm(cg.device_filter_program(rules)) == [
        *PROLOGUE,
        "JNEImm r2 2 ->14",
        "Mov32Reg r1 r3",
        "And32Imm r1 4",
        "JNEReg r1 r3 ->14",
        "JNEImm r4 1 ->14",
        "JNEImm r5 3 ->14",
        "Mov32Imm r0 0",
        "Exit",
        "Mov32Imm r0 1",
        "Exit",
    ]


# --------------------------------------------------------------------------------------------
# fake cgroup trees


CONTROL_FILES: dict[str, dict[str, str]] = {
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "memory": {
        "memory.limit_in_bytes": MAX,
        "memory.memsw.limit_in_bytes": MAX,
        "memory.soft_limit_in_bytes": MAX,
        "memory.swappiness": "60",
        "memory.oom_control": "oom_kill_disable 0\n",
        "memory.usage_in_bytes": "4096",
        "memory.max_usage_in_bytes": "8192",
        "memory.kmem.tcp.limit_in_bytes": MAX,
    },
    "cpu": {
        "cpu.shares": "1024",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "-1",
        "cpu.rt_period_us": "1000000",
        "cpu.rt_runtime_us": "0",
        "cpu.cfs_burst_us": "0",
        "cpu.idle": "0",
    },
    "cpuacct": {},
    "pids": {"pids.max": "max"},
    "blkio": {
        "blkio.weight": "100",
        "blkio.weight_device": "",
        "blkio.leaf_weight": "100",
        "blkio.leaf_weight_device": "",
        "blkio.throttle.read_bps_device": "",
        "blkio.throttle.write_bps_device": "",
        "blkio.throttle.read_iops_device": "",
        "blkio.throttle.write_iops_device": "",
    },
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": MAX},
    "net_cls,net_prio": {"net_cls.classid": "0", "net_prio.ifpriomap": "lo 0\n"},
    "freezer": {"freezer.state": "THAWED"},
    "systemd": {},
    "unified": {
        "cgroup.controllers": "hugetlb\n",
        "cgroup.subtree_control": "",
        "cgroup.freeze": "0",
        "cgroup.max.depth": "max",
        "cgroup.events": "populated 0\nfrozen 0\n",
    },
}

V2_FILES = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids\n",
    "cgroup.subtree_control": "",
    "cgroup.type": "domain",
    "pids.max": "max",
    "memory.swap.max": "max",
    "memory.max": "max",
    "memory.low": "0",
    "memory.high": "max",
    "io.weight": "default 100",
    "io.max": "",
    "cpu.weight": "100",
    "cpu.max": "max 100000",
    "cpu.idle": "0",
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "hugetlb.2MB.max": "max",
    "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0\n",
}


class FakeCgroupFS:
    """Stands in for cgroupfs below a temp dir: new directories get their control files, writes are
    recorded (relative path, data) and land in the files; devices.allow/deny maintain devices.list
    the way the kernel does for the rules runc writes (reset on "a", append otherwise)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, v2: bool = False) -> None:
        self.root = root
        self.v2 = v2
        self.writes: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}  # relative path -> errno to raise on write
        monkeypatch.setattr(cg, "_write", self.write)
        monkeypatch.setattr(cg, "_make_dir", self.mkdir)

    def populate(self, d: Path, hierarchy: str) -> None:
        files = V2_FILES if self.v2 else CONTROL_FILES[hierarchy]
        for name, content in {"cgroup.procs": "", **files}.items():
            (d / name).write_text(content)

    def mount(self, hierarchy: str, **root_files: str) -> Path:
        d = self.root / hierarchy if hierarchy else self.root
        d.mkdir(parents=True, exist_ok=True)
        self.populate(d, hierarchy)
        for name, content in root_files.items():
            (d / name.replace("_", ".", 1) if "." not in name else d / name).write_text(content)
        return d

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)
        rel = Path(path).relative_to(self.root)
        self.populate(Path(path), "" if self.v2 else rel.parts[0])

    def write(self, path: str, data: str) -> None:
        rel = str(Path(path).relative_to(self.root))
        if rel in self.fail:
            raise OSError(self.fail[rel], os.strerror(self.fail[rel]))
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self.writes.append((rel, data))
        if p.name in ("devices.allow", "devices.deny"):
            lst = p.parent / "devices.list"
            if data.startswith("a "):
                lst.write_text("a *:* rwm\n" if p.name == "devices.allow" else "")
            elif p.name == "devices.allow":
                lst.write_text(lst.read_text() + data + "\n")
            return
        p.write_text(data)


def _v1_mountinfo(root: Path, hierarchies: list[str], unified: bool = True) -> str:
    lines = []
    for i, h in enumerate(hierarchies):
        opts = "name=systemd" if h == "systemd" else h
        lines.append(f"{40 + i} 31 0:{40 + i} / {root}/{h} rw,relatime - cgroup cgroup rw,{opts}")
    if unified:
        lines.append(f"99 31 0:99 / {root}/unified rw,relatime - cgroup2 cgroup2 rw")
    return "\n".join(lines) + "\n"


ALL_V1 = [
    "cpuset",
    "devices",
    "memory",
    "cpu",
    "cpuacct",
    "pids",
    "blkio",
    "hugetlb",
    "net_cls,net_prio",
    "freezer",
    "systemd",
]
OWN_V1 = (
    "11:cpuset:/\n10:devices:/\n9:memory:/\n8:cpu:/\n7:cpuacct:/\n6:pids:/\n5:blkio:/\n4:hugetlb:/\n"
    "3:net_cls,net_prio:/\n2:freezer:/\n1:name=systemd:/\n0::/\n"
)


@pytest.fixture
def v1fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCgroupFS, cg.Layout]:
    fs = FakeCgroupFS(tmp_path, monkeypatch)
    for h in [*ALL_V1, "unified"]:
        fs.mount(h)
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    layout = cg.detect_layout(_v1_mountinfo(tmp_path, ALL_V1), OWN_V1, cgroup_root=str(tmp_path))
    assert layout.mode == "hybrid"
    return fs, layout


def test_create_seeds_cpuset_from_parents_and_apply_joins_everything(
    v1fs: tuple[FakeCgroupFS, cg.Layout],
) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/pod/c1", "c1", layout)
    m.create()
    assert [w for w in fs.writes if w[0].startswith("cpuset")] == [
        ("cpuset/pod/cpuset.cpus", "0-3"),
        ("cpuset/pod/cpuset.mems", "0"),
        ("cpuset/pod/c1/cpuset.cpus", "0-3"),
        ("cpuset/pod/c1/cpuset.mems", "0"),
    ]
    assert all(w[0].startswith("cpuset") for w in fs.writes)
    # every directory made is recorded for destroy(); the shared comount dir only once
    made = [str(Path(p).relative_to(fs.root)) for p in m.created]
    assert "net_cls,net_prio/pod/c1" in made and made.count("net_cls,net_prio/pod/c1") == 1
    assert "memory/pod" in made and "unified/pod/c1" in made
    fs.writes.clear()
    m.apply(4242)
    assert {w[1] for w in fs.writes} == {"4242"}
    assert sorted(w[0] for w in fs.writes) == sorted(
        f"{h}/pod/c1/cgroup.procs" for h in [*ALL_V1, "unified", "net_cls,net_prio"]
    )


def test_create_with_explicit_cpuset_writes_it_before_copying(v1fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/c2", "c2", layout)
    m.create({"cpu": {"cpus": "2", "realtimePeriod": 500000, "realtimeRuntime": 1000}})
    cpuset = [w for w in fs.writes if w[0].startswith("cpuset")]
    assert cpuset == [("cpuset/c2/cpuset.cpus", "2"), ("cpuset/c2/cpuset.mems", "0")]
    assert ("cpu/c2/cpu.rt_period_us", "500000") in fs.writes
    assert ("cpu/c2/cpu.rt_runtime_us", "1000") in fs.writes


FULL_RESOURCES: dict[str, Any] = {
    "devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
    ],
    "memory": {
        "limit": 1 << 30,
        "reservation": 1 << 29,
        "swap": 2 << 30,
        "kernel": 1 << 20,
        "kernelTCP": 1 << 21,
        "swappiness": 0,
        "disableOOMKiller": True,
    },
    "cpu": {
        "shares": 512,
        "quota": 50000,
        "period": 100000,
        "realtimeRuntime": 950000,
        "realtimePeriod": 1000000,
        "burst": 1000,
        "cpus": "1-2",
        "mems": "0",
        "idle": 1,
    },
    "pids": {"limit": 100},
    "blockIO": {
        "weight": 500,
        "leafWeight": 300,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 600, "leafWeight": 200}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
    },
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
    "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
}


def test_v1_set_writes_runc_files_in_runc_order(v1fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/c1", "c1", layout)
    m.create()
    fs.writes.clear()
    m.set(FULL_RESOURCES)
    # the spec's rule first, then runc's defaults, each in the listed order
    defaults = [
        "c 10:229 rwm",
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:8 rwm",
        "c 1:7 rwm",
        "c 5:0 rwm",
        "c 1:5 rwm",
        "c 1:9 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ]
    assert fs.writes == [
        ("cpuset/c1/cpuset.cpus", "1-2"),
        ("cpuset/c1/cpuset.mems", "0"),
        ("devices/c1/devices.deny", "a *:* rwm"),
        *[("devices/c1/devices.allow", r) for r in defaults],
        # memory: the current limit (unlimited) is above the new memory+swap, so limit goes first
        ("memory/c1/memory.limit_in_bytes", "1073741824"),
        ("memory/c1/memory.memsw.limit_in_bytes", "2147483648"),
        # kernel: memory.kmem.limit_in_bytes is absent here (as on 6.x kernels) and is skipped
        ("memory/c1/memory.kmem.tcp.limit_in_bytes", "2097152"),
        ("memory/c1/memory.soft_limit_in_bytes", "536870912"),
        ("memory/c1/memory.oom_control", "1"),
        ("memory/c1/memory.swappiness", "0"),
        ("cpu/c1/cpu.shares", "512"),
        ("cpu/c1/cpu.cfs_period_us", "100000"),
        ("cpu/c1/cpu.cfs_quota_us", "50000"),
        ("cpu/c1/cpu.cfs_burst_us", "1000"),
        ("cpu/c1/cpu.rt_period_us", "1000000"),
        ("cpu/c1/cpu.rt_runtime_us", "950000"),
        ("cpu/c1/cpu.idle", "1"),
        ("pids/c1/pids.max", "100"),
        ("blkio/c1/blkio.weight", "500"),
        ("blkio/c1/blkio.leaf_weight", "300"),
        ("blkio/c1/blkio.weight_device", "8:0 600"),
        ("blkio/c1/blkio.leaf_weight_device", "8:0 200"),
        ("blkio/c1/blkio.throttle.read_bps_device", "8:0 1048576"),
        ("blkio/c1/blkio.throttle.write_iops_device", "8:16 100"),
        ("hugetlb/c1/hugetlb.2MB.limit_in_bytes", "4194304"),
        ("net_cls,net_prio/c1/net_cls.classid", "1048577"),
        ("net_cls,net_prio/c1/net_prio.ifpriomap", "eth0 5"),
    ]
    # applying the same rules again changes nothing in the devices cgroup
    fs.writes.clear()
    m.set({"devices": FULL_RESOURCES["devices"]})
    assert fs.writes == []


def test_v1_memory_write_order_when_raising_limits(v1fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/c1", "c1", layout)
    m.create()
    (fs.root / "memory/c1/memory.limit_in_bytes").write_text("1073741824\n")
    fs.writes.clear()
    m.set({"memory": {"limit": 2 << 30, "swap": 4 << 30}}, skip_devices=True)
    assert fs.writes == [
        ("memory/c1/memory.memsw.limit_in_bytes", "4294967296"),
        ("memory/c1/memory.limit_in_bytes", "2147483648"),
    ]
    fs.writes.clear()
    m.set({"memory": {"limit": -1}, "pids": {"limit": 0}}, skip_devices=True)
    assert fs.writes == [
        ("memory/c1/memory.memsw.limit_in_bytes", "-1"),
        ("memory/c1/memory.limit_in_bytes", "-1"),
        ("pids/c1/pids.max", "max"),
    ]


def test_write_errors_name_field_file_and_reason(v1fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/x", "x", layout)
    m.create()
    fs.fail["memory/x/memory.limit_in_bytes"] = errno.EBUSY
    with pytest.raises(CgroupError) as ei:
        m.set({"memory": {"limit": 1}}, skip_devices=True)
    assert str(ei.value).startswith(
        f"linux.resources.memory.limit: writing 1 to {fs.root}/memory/x/memory.limit_in_bytes: "
        "Device or resource busy (limit below current usage 4096, peak usage 8192)"
    )
    fs.fail["cpu/x/cpu.cfs_quota_us"] = errno.EINVAL
    with pytest.raises(CgroupError, match=r"^linux\.resources\.cpu\.quota: writing 1 to .*cpu\.cfs_quota_us: Invalid"):
        m.set({"cpu": {"quota": 1}}, skip_devices=True)
    with pytest.raises(CgroupError, match=r'^linux\.resources\.devices: writing "a \*:\* rwm" to .*devices\.deny'):
        fs.fail["devices/x/devices.deny"] = errno.EPERM
        m.set({})


def test_v1_cpu_shares_are_read_back(v1fs: tuple[FakeCgroupFS, cg.Layout], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/x", "x", layout)
    m.create()
    real = fs.write

    def clamp(path: str, data: str) -> None:  # the kernel clamps cpu.shares to [2, 262144]
        real(path, str(min(int(data), 262144)) if path.endswith("cpu.shares") else data)

    monkeypatch.setattr(cg, "_write", clamp)
    with pytest.raises(CgroupError, match="maximum allowed cpu-shares is 262144"):
        m.set({"cpu": {"shares": 300000}}, skip_devices=True)


def test_v1_unmounted_controller_and_unified_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FakeCgroupFS(tmp_path, monkeypatch)
    hier = ["devices", "memory"]
    for h in hier:
        fs.mount(h)
    own = "2:devices:/\n1:memory:/\n"
    layout = cg.detect_layout(_v1_mountinfo(tmp_path, hier, unified=False), own, cgroup_root=str(tmp_path))
    assert layout.mode == "v1"
    m = cg.Manager.for_container("/x", "x", layout)
    m.create()
    with pytest.raises(CgroupError, match=r"^linux\.resources\.network\.classID: .*net_cls controller"):
        m.set({"network": {"classID": 1}}, skip_devices=True)
    with pytest.raises(CgroupError, match=r"^linux\.resources\.hugepageLimits\[0\]: .*hugetlb controller"):
        m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}, skip_devices=True)
    with pytest.raises(CgroupError, match=r"^invalid configuration: cannot use unified on cgroup v1"):
        m.set({"unified": {"memory.high": "1"}}, skip_devices=True)


def test_hybrid_hugetlb_and_unified_go_to_the_unified_hierarchy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = FakeCgroupFS(tmp_path, monkeypatch)
    hier = ["devices", "memory"]
    for h in [*hier, "unified"]:
        fs.mount(h)
    layout = cg.detect_layout(_v1_mountinfo(tmp_path, hier), "2:devices:/\n1:memory:/\n0::/\n", str(tmp_path))
    m = cg.Manager.for_container("/pod/x", "x", layout)
    m.create()
    (tmp_path / "unified/pod/x/hugetlb.2MB.max").write_text("max")
    fs.writes.clear()
    m.set(
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}], "unified": {"cgroup.max.depth": "3"}},
        skip_devices=True,
    )
    assert fs.writes == [
        ("unified/cgroup.subtree_control", "+hugetlb"),
        ("unified/pod/cgroup.subtree_control", "+hugetlb"),
        ("unified/pod/x/hugetlb.2MB.max", "2097152"),
        ("unified/pod/x/cgroup.max.depth", "3"),
    ]
    with pytest.raises(CgroupError, match=r"unified\.memory\.high: cannot be set: controller 'memory'"):
        m.set({"unified": {"memory.high": "1G"}}, skip_devices=True)


def test_hybrid_unified_next_to_v1_limits_is_refused_before_any_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = FakeCgroupFS(tmp_path, monkeypatch)
    hier = ["devices", "memory"]
    for h in [*hier, "unified"]:
        fs.mount(h)
    layout = cg.detect_layout(_v1_mountinfo(tmp_path, hier), "2:devices:/\n1:memory:/\n0::/\n", str(tmp_path))
    m = cg.Manager.for_container("/pod/x", "x", layout)
    res = {"memory": {"limit": 1 << 26}, "pids": {"limit": 5}, "unified": {"cgroup.max.depth": "3"}}
    with pytest.raises(CgroupError, match=r"^invalid configuration: cannot use unified on cgroup v1 .*"
                                          r"linux\.resources\.memory, linux\.resources\.pids"):
        m.check_resources(res)
    m.create()
    fs.writes.clear()
    with pytest.raises(CgroupError, match="cannot use unified on cgroup v1"):
        m.set(res, skip_devices=True)
    assert fs.writes == []
    m.check_resources({"unified": {"cgroup.max.depth": "3"}, "devices": [{"allow": False, "access": "rwm"}]})
    m.check_resources({"memory": {"limit": 1 << 26}})
    v2 = cg.Manager("v2", {"": str(tmp_path / "unified/x")}, {"": str(tmp_path / "unified")})
    v2.check_resources(res)  # cgroup v2: both together are fine (unified wins), as in runc's fs2


def test_exec_cgroup_sub_paths() -> None:
    m = cg.Manager("hybrid", {"memory": "/cg/memory/c", "pids": "/cg/pids/c", "": "/cg/unified/c"}, {})
    assert m.sub_paths(["sub"]) == {"memory": "/cg/memory/c/sub", "pids": "/cg/pids/c/sub", "": "/cg/unified/c/sub"}
    assert m.sub_paths(["memory,pids:a/b", "memory:z"]) == {
        "memory": "/cg/memory/c/z", "pids": "/cg/pids/c/a/b", "": "/cg/unified/c"}
    assert m.sub_paths([":s"])[""] == "/cg/unified/c/s"  # an empty controller name means all, as in runc
    assert m.sub_paths(["."]) == m.paths
    for specs, words in (
        (["a:b:c"], "invalid --cgroup argument: a:b:c"),
        (["memory:x", "y"], "invalid --cgroup argument: y (missing <controller>: prefix)"),
        (["cpu:x"], "unknown controller cpu in SubCgroupPaths"),
        (["memory:../d"], "../d is not a sub cgroup path"),
        (["../c2"], "../c2 is not a sub cgroup path"),  # runc's prefix test would let c2 through
        (["/abs/../../.."], "is not a sub cgroup path"),
    ):
        with pytest.raises(CgroupError, match=re.escape(words)):
            m.sub_paths(specs)
    v2 = cg.Manager("v2", {"": "/cg/c"}, {})
    with pytest.raises(CgroupError, match="unknown controller memory in SubCgroupPaths"):
        v2.sub_paths(["memory:s"])


def test_exec_cgroup_join_creates_nothing(tmp_path: Path) -> None:
    top = tmp_path / "memory/c"
    (top / "sub").mkdir(parents=True)
    (top / "sub/cgroup.procs").write_text("")
    m = cg.Manager("v1", {"memory": str(top)}, {"memory": str(tmp_path / "memory")})
    m.join(4242, m.sub_paths(["memory:sub"]))
    assert (top / "sub/cgroup.procs").read_text() == "4242"
    with pytest.raises(CgroupError, match=r"^error adding pid 7 to cgroups: failed to write 7: .*/gone/cgroup\.procs: "
                                          r"no such file or directory$"):
        m.join(7, m.sub_paths(["memory:gone"]))
    assert not (top / "gone").exists()


def test_freeze_thaw_v1(v1fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/x", "x", layout)
    m.create()
    assert m.freezer_state() == "thawed"
    m.freeze()
    assert (fs.root / "freezer/x/freezer.state").read_text() == "FROZEN"
    assert m.freezer_state() == "frozen"
    (fs.root / "freezer/x/freezer.self_freezing").write_text("0\n")
    assert m.freezer_state() == "thawed"  # frozen only through an ancestor
    m.thaw()
    assert m.freezer_state() == "thawed"
    no_freezer = cg.Manager("v1", {"devices": str(fs.root / "devices/x")}, {})
    assert no_freezer.freezer_state() == "undefined"
    with pytest.raises(CgroupError, match="no freezer cgroup"):
        no_freezer.freeze()


def test_freeze_that_fails_thaws_again(v1fs: tuple[FakeCgroupFS, cg.Layout], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/x", "x", layout)
    m.create()
    real = fs.write

    def odd_state(path: str, data: str) -> None:
        real(path, "BROKEN" if data == "FROZEN" else data)

    monkeypatch.setattr(cg, "_write", odd_state)
    with pytest.raises(CgroupError, match="unexpected state 'BROKEN'"):
        m.freeze()
    assert (fs.root / "freezer/x/freezer.state").read_text() == "THAWED"


def test_pids_walks_sub_cgroups(tmp_path: Path) -> None:
    top = tmp_path / "devices" / "c"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "cgroup.procs").write_text("10\n11\n")
    (top / "sub" / "cgroup.procs").write_text("")
    (top / "sub" / "deeper" / "cgroup.procs").write_text("12\n")
    m = cg.Manager("v1", {"devices": str(top), "memory": str(tmp_path / "memory/c")}, {})
    assert sorted(m.pids()) == [10, 11, 12]
    assert m.exists()
    gone = cg.Manager("v2", {"": str(tmp_path / "nope")}, {})
    assert gone.pids() == [] and not gone.exists()


def test_destroy_removes_leaves_and_parents_it_made(tmp_path: Path) -> None:
    for d in ("cpu/pre/made/c1/child", "memory/pre/made/c1"):
        (tmp_path / d).mkdir(parents=True)
    paths = {"cpu": str(tmp_path / "cpu/pre/made/c1"), "memory": str(tmp_path / "memory/pre/made/c1")}
    created = [str(tmp_path / p) for p in ("cpu/pre/made", "cpu/pre/made/c1", "memory/pre/made", "memory/pre/made/c1")]
    m = cg.Manager("v1", paths, {}, created)
    m.destroy()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "cpu",
        "cpu/pre",
        "memory",
        "memory/pre",
    ]
    m.destroy()  # nothing left: still fine


# --------------------------------------------------------------------------------------------
# v2 on a fake tree


@pytest.fixture
def v2fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCgroupFS, cg.Layout]:
    fs = FakeCgroupFS(tmp_path, monkeypatch, v2=True)
    fs.mount("")
    (tmp_path / "user.slice").mkdir()
    fs.populate(tmp_path / "user.slice", "")
    mountinfo = f"30 24 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    layout = cg.detect_layout(mountinfo, "0::/user.slice/session-1.scope\n", str(tmp_path))
    return fs, layout


def test_v2_create_enables_controllers_down_the_path(v2fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v2fs
    m = cg.Manager.for_container("pod/c1", "c1", layout)
    assert m.paths == {"": str(fs.root / "user.slice/pod/c1")}
    m.create()
    enable = "+cpuset +cpu +io +memory +hugetlb +pids"
    assert fs.writes == [
        ("cgroup.subtree_control", enable),
        ("user.slice/cgroup.subtree_control", enable),
        ("user.slice/pod/cgroup.subtree_control", enable),
    ]
    assert m.created == [str(fs.root / "user.slice/pod"), str(fs.root / "user.slice/pod/c1")]


def test_v2_create_refuses_threaded_parent_for_domain_controllers(
    v2fs: tuple[FakeCgroupFS, cg.Layout],
) -> None:
    fs, layout = v2fs
    (fs.root / "user.slice/cgroup.type").write_text("threaded\n")
    m = cg.Manager.for_container("c1", "c1", layout)
    with pytest.raises(CgroupError, match="it is in threaded mode"):
        m.create({"memory": {"limit": 1 << 20}})


def test_v2_set_conversions(v2fs: tuple[FakeCgroupFS, cg.Layout], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, layout = v2fs
    attached: list[tuple[str, bytes]] = []
    monkeypatch.setattr(ebpf, "attach_device_filter", lambda path, prog: attached.append((path, prog)))
    m = cg.Manager.for_container("c1", "c1", layout)
    m.create()
    fs.writes.clear()
    res = {
        "devices": [{"allow": False, "access": "rwm"}],
        "pids": {"limit": -1},
        "memory": {"limit": 1 << 30, "swap": 3 << 29, "reservation": 1 << 28, "swappiness": 10},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        "cpu": {"shares": 1024, "quota": 50000, "idle": 1, "cpus": "0", "mems": "0", "realtimeRuntime": 5},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "unified": {"memory.high": "900M"},
    }
    m.set(res)
    assert fs.writes == [
        ("user.slice/c1/pids.max", "max"),
        ("user.slice/c1/memory.swap.max", "536870912"),
        ("user.slice/c1/memory.max", "1073741824"),
        ("user.slice/c1/memory.low", "268435456"),
        ("user.slice/c1/io.weight", "4950"),
        ("user.slice/c1/io.max", "8:0 rbps=1048576"),
        ("user.slice/c1/cpu.weight", "39"),
        ("user.slice/c1/cpu.max", "50000 100000"),
        ("user.slice/c1/cpu.idle", "1"),
        ("user.slice/c1/cpuset.cpus", "0"),
        ("user.slice/c1/cpuset.mems", "0"),
        ("user.slice/c1/hugetlb.2MB.max", "0"),
        ("user.slice/c1/memory.high", "900M"),
    ]
    expected_rules = cg._oci_device_rules([{"allow": False, "access": "rwm"}, *cg.default_device_rules()])
    assert attached == [(m.paths[""], cg.device_filter_program(expected_rules))]
    fs.writes.clear()
    m.set(
        {"cpu": {"quota": -1, "period": 20000}, "memory": {"limit": 1 << 20, "swap": 1 << 20}},
        skip_devices=True,
    )
    assert fs.writes == [
        ("user.slice/c1/memory.swap.max", "0"),
        ("user.slice/c1/memory.max", "1048576"),
        ("user.slice/c1/cpu.max", "max 20000"),
    ]
    with pytest.raises(ConfigError, match=r"memory\.swap: unable to set swap limit without memory limit"):
        m.set({"memory": {"swap": 1 << 20}}, skip_devices=True)


def test_v2_device_filter_failure_fails_closed(
    v2fs: tuple[FakeCgroupFS, cg.Layout], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, layout = v2fs

    def no_bpf(path: str, prog: bytes) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(ebpf, "attach_device_filter", no_bpf)
    m = cg.Manager.for_container("c1", "c1", layout)
    m.create()
    with pytest.raises(CgroupError, match=r"^linux\.resources\.devices: cannot install the eBPF device filter"):
        m.set({"devices": [{"allow": True, "access": "rwm"}]})


def test_v2_freezer(v2fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v2fs
    m = cg.Manager.for_container("c1", "c1", layout)
    m.create()
    events = fs.root / "user.slice/c1/cgroup.events"
    events.write_text("populated 1\nfrozen 1\n")  # what the kernel reports once every task stopped
    m.freeze()
    assert (fs.root / "user.slice/c1/cgroup.freeze").read_text() == "1"
    assert m.freezer_state() == "frozen"
    events.write_text("populated 1\nfrozen 0\n")
    m.thaw()
    assert m.freezer_state() == "thawed"


# --------------------------------------------------------------------------------------------
# stats


def test_stats_v1_shape(v1fs: tuple[FakeCgroupFS, cg.Layout], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, layout = v1fs
    monkeypatch.setattr(stats, "_HUGEPAGE_SIZES", ["2MB", "1GB"])
    m = cg.Manager.for_container("/s", "s", layout)
    m.create()
    files = {
        "cpuacct/s/cpuacct.stat": "user 150\nsystem 50\n",
        "cpuacct/s/cpuacct.usage": "2000000000\n",
        "cpuacct/s/cpuacct.usage_percpu": "1500000000 500000000 \n",
        "cpuacct/s/cpuacct.usage_all": "cpu user system\n0 1000 500\n1 400 100\n",
        "cpu/s/cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n",
        "cpuset/s/cpuset.cpus": "0-1,3\n",
        "cpuset/s/cpuset.sched_load_balance": "1\n",
        "memory/s/memory.stat": "cache 4096\nrss 8192\ntotal_cache 4096\n",
        "memory/s/memory.usage_in_bytes": "12288\n",
        "memory/s/memory.max_usage_in_bytes": "16384\n",
        "memory/s/memory.failcnt": "3\n",
        "memory/s/memory.limit_in_bytes": "1073741824\n",
        "pids/s/pids.current": "2\n",
        "blkio/s/blkio.throttle.io_service_bytes_recursive": "8:0 Read 100\n8:0 Write 200\nTotal 300\n",
        "blkio/s/blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
        "hugetlb/s/hugetlb.2MB.usage_in_bytes": "2097152\n",
        "hugetlb/s/hugetlb.2MB.max_usage_in_bytes": "4194304\n",
        "hugetlb/s/hugetlb.2MB.failcnt": "0\n",
    }
    for rel, text in files.items():
        (fs.root / rel).write_text(text)
    st = m.stats()
    assert list(st) == [
        "cpu",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "hugetlb",
        "intel_rdt",
        "network_interfaces",
    ]
    assert st["cpu"] == {
        "usage": {
            "total": 2000000000,
            "percpu": [1500000000, 500000000],
            "percpu_kernel": [500, 100],
            "percpu_user": [1000, 400],
            "kernel": 500000000,
            "user": 1500000000,
        },
        "throttling": {"periods": 10, "throttledPeriods": 2, "throttledTime": 5000},
    }
    assert st["cpuset"]["cpus"] == [0, 1, 3] and st["cpuset"]["mems"] == [0]  # mems copied from the parent
    assert st["cpuset"]["sched_load_balance"] == 1
    assert st["memory"]["cache"] == 4096
    assert st["memory"]["usage"] == {"limit": 1073741824, "usage": 12288, "max": 16384, "failcnt": 3}
    assert st["memory"]["raw"] == {"cache": 4096, "rss": 8192, "total_cache": 4096}
    assert st["memory"]["kernel"] == {"limit": 0, "failcnt": 0}  # no kmem accounting files: zero entry
    assert st["pids"] == {"current": 2}  # pids.max "max" -> 0 -> omitted, as runc
    assert st["blkio"] == {
        "ioServiceBytesRecursive": [
            {"major": 8, "op": "Read", "value": 100},
            {"major": 8, "op": "Write", "value": 200},
        ],
        "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 1}, {"major": 8, "op": "Write", "value": 2}],
    }
    assert st["hugetlb"] == {"2MB": {"usage": 2097152, "max": 4194304, "failcnt": 0}}
    assert st["intel_rdt"] == {} and st["network_interfaces"] is None
    json.dumps(st)


def test_stats_v2_shape(v2fs: tuple[FakeCgroupFS, cg.Layout], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, layout = v2fs
    monkeypatch.setattr(stats, "_HUGEPAGE_SIZES", ["2MB"])
    m = cg.Manager.for_container("c1", "c1", layout)
    m.create()
    d = fs.root / "user.slice/c1"
    (d / "cpu.stat").write_text(
        "usage_usec 300\nuser_usec 200\nsystem_usec 100\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n"
    )
    (d / "pids.current").write_text("3\n")
    (d / "pids.max").write_text("64\n")
    (d / "memory.stat").write_text("anon 8192\nfile 4096\n")
    (d / "memory.current").write_text("12288\n")
    (d / "memory.max").write_text("1048576\n")
    (d / "memory.swap.current").write_text("100\n")
    (d / "memory.swap.max").write_text("max\n")
    (d / "io.stat").write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    (d / "hugetlb.2MB.current").write_text("0\n")
    (d / "hugetlb.2MB.events").write_text("max 5\n")
    st = m.stats()
    assert st["cpu"] == {
        "usage": {"total": 300000, "kernel": 100000, "user": 200000},
        "throttling": {"periods": 4, "throttledPeriods": 1, "throttledTime": 7000},
    }
    assert st["pids"] == {"current": 3, "limit": 64}
    assert st["memory"]["cache"] == 4096
    assert st["memory"]["usage"] == {"limit": 1048576, "usage": 12288, "failcnt": 0}
    # swap reported as memory+swap, like v1
    assert st["memory"]["swap"] == {"limit": (1 << 64) - 1, "usage": 12388, "failcnt": 0}
    assert st["blkio"] == {
        "ioServiceBytesRecursive": [{"major": 8, "op": "Read", "value": 10}, {"major": 8, "op": "Write", "value": 20}],
        "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 1}, {"major": 8, "op": "Write", "value": 2}],
    }
    assert st["hugetlb"] == {"2MB": {"failcnt": 5}}


# --------------------------------------------------------------------------------------------
# validate


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ([], "linux.resources: must be an object"),
        ({"devices": [{"allow": True, "type": "u", "access": "rwm"}]}, "linux.resources.devices[0].type"),
        ({"devices": [{"allow": True, "type": "c", "access": ""}]}, "linux.resources.devices[0].access"),
        ({"devices": [{"allow": True, "access": "rwx"}]}, "linux.resources.devices[0].access"),
        ({"devices": [{"allow": "yes", "access": "r"}]}, "linux.resources.devices[0].allow"),
        ({"devices": [{"allow": True, "type": "c", "major": -2, "access": "r"}]}, "linux.resources.devices[0].major"),
        ({"memory": {"limit": -2}}, "linux.resources.memory.limit"),
        ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit"),
        ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness"),
        ({"memory": {"limit": 200, "swap": 100}}, "linux.resources.memory.swap"),
        ({"memory": {"disableOOMKiller": 1}}, "linux.resources.memory.disableOOMKiller"),
        ({"cpu": {"shares": -1}}, "linux.resources.cpu.shares"),
        ({"cpu": {"quota": -5}}, "linux.resources.cpu.quota"),
        ({"cpu": {"period": -1}}, "linux.resources.cpu.period"),
        ({"cpu": {"idle": 2}}, "linux.resources.cpu.idle"),
        ({"cpu": {"cpus": "0-x"}}, "linux.resources.cpu.cpus"),
        ({"cpu": {"mems": "3-1"}}, "linux.resources.cpu.mems"),
        ({"pids": {}}, "linux.resources.pids.limit: is required"),
        ({"blockIO": {"weight": -1}}, "linux.resources.blockIO.weight"),
        ({"blockIO": {"weightDevice": [{"major": 8, "weight": 10}]}}, "linux.resources.blockIO.weightDevice[0].minor"),
        (
            {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": -1}]}},
            "linux.resources.blockIO.throttleReadBpsDevice[0].rate",
        ),
        ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}, "linux.resources.hugepageLimits[0].pageSize"),
        ({"hugepageLimits": [{"pageSize": "0MB", "limit": 1}]}, "linux.resources.hugepageLimits[0].pageSize"),
        ({"hugepageLimits": [{"pageSize": "2MB", "limit": -1}]}, "linux.resources.hugepageLimits[0].limit"),
        ({"network": {"classID": -1}}, "linux.resources.network.classID"),
        ({"network": {"priorities": [{"name": "eth 0", "priority": 1}]}}, "linux.resources.network.priorities[0].name"),
        ({"unified": {"../memory.max": "1"}}, "linux.resources.unified.../memory.max"),
        ({"unified": {"memorymax": "1"}}, "linux.resources.unified.memorymax"),
        ({"unified": {"memory.max": 1}}, "linux.resources.unified.memory.max"),
    ],
)
def test_validate_rejects(resources: Any, field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        cg.validate(resources)
    assert str(ei.value).startswith(field)
    assert "\n" not in str(ei.value)


def test_validate_accepts_full_resources_and_custom_field() -> None:
    cg.validate(FULL_RESOURCES)
    cg.validate(None)
    cg.validate({"memory": {"swappiness": -1, "limit": -1, "swap": -1}, "cpu": {"quota": -1, "cpus": ""}})
    with pytest.raises(ConfigError, match=r"^update\.memory\.limit"):
        cg.validate({"memory": {"limit": -9}}, field="update")


def test_v2_apply_creates_and_does_not_swallow_errors(v2fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v2fs
    m = cg.Manager.for_container("c1", "c1", layout)
    m.apply(77)  # no create() first: apply makes the directory like runc's Apply
    assert ("user.slice/c1/cgroup.procs", "77") in fs.writes
    fs.fail["user.slice/c1/cgroup.procs"] = errno.ESRCH
    with pytest.raises(CgroupError, match=r"adding pid 78 to .*user\.slice/c1/cgroup\.procs: No such process"):
        m.apply(78)


def test_hybrid_join_of_unified_and_named_is_best_effort(v1fs: tuple[FakeCgroupFS, cg.Layout]) -> None:
    fs, layout = v1fs
    m = cg.Manager.for_container("/x", "x", layout)
    m.create()
    fs.fail["unified/x/cgroup.procs"] = errno.EBUSY
    fs.fail["systemd/x/cgroup.procs"] = errno.EACCES
    m.apply(55)
    assert ("memory/x/cgroup.procs", "55") in fs.writes
    fs.fail["devices/x/cgroup.procs"] = errno.EACCES
    with pytest.raises(CgroupError, match=r"adding pid 56 to .*devices/x/cgroup\.procs: Permission denied"):
        m.apply(56)


def test_oom_watcher_v2_counts_oom_kills_and_sees_the_cgroup_go(tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")  # one kill before `events` started
    m = cg.Manager("v2", {"": str(tmp_path)}, {"": str(tmp_path)})
    w = m.oom_watcher()
    assert w.wait(0) == 0
    events.write_text("low 0\nhigh 0\nmax 5\noom 3\noom_kill 3\n")
    assert w.wait(5) == 2
    assert w.wait(0) == 0
    events.unlink()
    assert w.wait(5) is None
    w.close()


def test_oom_watcher_v1_needs_a_memory_cgroup(tmp_path: Path) -> None:
    m = cg.Manager("v1", {"devices": str(tmp_path)}, {})
    with pytest.raises(CgroupError, match="no memory cgroup"):
        m.oom_watcher()
    m = cg.Manager("v1", {"memory": str(tmp_path / "gone")}, {})
    with pytest.raises(CgroupError, match="memory.oom_control"):
        m.oom_watcher()


# --------------------------------------------------------------------------------------------
# the package: names and what the create path loads


def test_package_names_resolve_from_their_modules() -> None:
    for name in [*cg.__all__, *cg._LAZY]:
        assert getattr(cg, name) is not None, name
    assert cg.Manager.__module__ == "inclavare.linux.cgroups.manager"
    assert cg.validate is __import__("inclavare.linux.cgroups.manager", fromlist=["validate"]).validate
    assert {"Manager", "validate", "OomWatcher"} <= set(dir(cg))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        cg.nope  # noqa: B018


# A v1 create as rune runs it (validate, resolve, create, set, apply), in a fresh interpreter, against plain
# files standing in for cgroupfs: devices.list already holds the wanted rules, so set() writes no device rule.
_CREATE_PATH = r"""
import os, sys
before = set(sys.modules)
from inclavare.linux import cgroups as cg
from inclavare.linux.cgroups.devices import DeviceEmulator, default_device_rules, oci_device_rules, rule_string

root = sys.argv[1]
res = {"devices": [{"allow": False, "access": "rwm"}], "memory": {"limit": 1048576}}
cg.validate(res)
info = "".join(f"{40 + i} 31 0:{40 + i} / {root}/{h} rw - cgroup cgroup rw,{h}\n"
               for i, h in enumerate(["devices", "memory"]))
layout = cg.detect_layout(info, "2:devices:/\n1:memory:/\n", cgroup_root=root)
m = cg.Manager.for_container("c", "c", layout)
want = DeviceEmulator.from_rules(oci_device_rules(res["devices"] + default_device_rules()))
files = {"devices/c/devices.list": "".join(rule_string(*r[:4]) + "\n" for r in want.clean_rules()),
         "devices/c/devices.allow": "", "devices/c/devices.deny": "", "devices/c/cgroup.procs": "",
         "memory/c/memory.limit_in_bytes": "", "memory/c/cgroup.procs": ""}
for rel, text in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    with open(os.path.join(root, rel), "w") as f:
        f.write(text)
m.create(res)
m.set(res)
m.apply(os.getpid())
print(" ".join(sorted(set(sys.modules) - before)))
"""


def test_v1_create_path_loads_neither_v2_nor_ebpf_nor_stats(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CREATE_PATH, str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert {"inclavare.linux.cgroups.manager", "inclavare.linux.cgroups.v1"} <= loaded  # it did run
    assert (tmp_path / "memory/c/memory.limit_in_bytes").read_text() == "1048576"
    assert (tmp_path / "devices/c/cgroup.procs").read_text().isdigit()
    assert (tmp_path / "devices/c/devices.allow").read_text() == ""  # nothing to change
    package = {m.rsplit(".", 1)[1] for m in loaded if m.startswith("inclavare.linux.cgroups.")}
    assert package == {"devices", "manager", "v1"}
    assert not loaded & {"ctypes", "struct", "select", "resource", "logging", "typing"}


class _CpusetMgr:
    """A cpuset hierarchy in a temp dir; ``_mkdir`` fails with ENOENT at the calls listed (a concurrent
    destroy removing a shared parent between our mkdirs)."""

    def __init__(self, fail_at: set[int]) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.created: list[str] = []

    def _mkdir(self, path: str) -> bool:
        import os

        self.calls += 1
        if self.calls in self.fail_at:
            raise FileNotFoundError(2, "No such file or directory", path)
        if os.path.isdir(path):
            return False
        os.mkdir(path)
        for name in ("cpuset.cpus", "cpuset.mems"):  # the kernel makes them empty
            with open(os.path.join(path, name), "w"):
                pass
        self.created.append(path)
        return True

    def _w(self, field: str, d: str, name: str, value: str) -> None:
        with open(f"{d}/{name}", "w") as f:
            f.write(value)


def test_cpuset_chain_starts_again_when_a_parent_vanishes(tmp_path: Path) -> None:
    from inclavare.linux.cgroups import v1

    mount = tmp_path / "cpuset"
    mount.mkdir()
    (mount / "cpuset.cpus").write_text("0-1\n")
    (mount / "cpuset.mems").write_text("0\n")
    mgr = _CpusetMgr({2})
    v1._create_cpuset(mgr, str(mount / "ns" / "c1"), str(mount), {})  # type: ignore[arg-type]
    assert (mount / "ns" / "c1" / "cpuset.cpus").read_text() == "0-1"
    assert (mount / "ns" / "c1" / "cpuset.mems").read_text() == "0"
    always = _CpusetMgr(set(range(1, 100)))
    with pytest.raises(CgroupError, match="creating cgroup .*/ns2: No such file or directory"):
        v1._create_cpuset(always, str(mount / "ns2" / "c2"), str(mount), {})  # type: ignore[arg-type]
