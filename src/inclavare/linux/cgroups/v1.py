"""cgroup v1: creating a container's directories in every hierarchy and writing ``linux.resources`` to
them with runc's fs manager's files, formats and order (hybrid hosts too: their limits live in v1).

Functions of a :class:`~inclavare.linux.cgroups.manager.Manager`, imported by it only when the layout
is v1 or hybrid.
"""

from __future__ import annotations

import errno

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError, ConfigError
from inclavare.linux import cgroups as _cg
from inclavare.linux.cgroups import (
    _MAX_U64,
    _log,
    _rdma_line,
    _read_opt_uint,
    _read_text,
    _read_uint,
    _under,
    _write_error,
)
from inclavare.linux.cgroups.devices import DeviceEmulator, Rule, rule_string

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from inclavare.linux.cgroups.manager import Manager


def create(mgr: Manager, res: dict[str, Any]) -> None:
    """mkdir -p every hierarchy's directory; new cpuset cgroups get the spec's cpus/mems or their
    parent's, the cpu cgroup the real-time bandwidth (runc does both in Apply, before a task joins)."""
    cpu = res.get("cpu") or {}
    for key, path in mgr.paths.items():
        mount = mgr.mounts.get(key) or fos.path.dirname(path)
        try:
            if key == "cpuset":
                _create_cpuset(mgr, path, mount, cpu)
            else:
                mgr._makedirs(path, mount)
            if key == "cpu":
                set_rt(mgr, path, cpu, "linux.resources.cpu")
        except CgroupError:
            if mgr._join_only(key):
                _log("debug", "cannot create %s cgroup %s; not joining it", key or "unified", path)
                continue
            raise


def _create_cpuset(mgr: Manager, path: str, mount: str, cpu: dict[str, Any]) -> None:
    """mkdir -p the cpuset chain, seeding each new level from its parent; a concurrent destroy that removes
    a shared parent between our mkdirs makes us start again (as Manager._makedirs does)."""
    import time

    for attempt in range(5):
        try:
            _create_cpuset_chain(mgr, path, mount, cpu)
            return
        except FileNotFoundError as e:
            if attempt == 4:
                raise CgroupError(f"linux.cgroupsPath: creating cgroup {e.filename}: {e.strerror}") from None
            time.sleep(0.005)


def _create_cpuset_chain(mgr: Manager, path: str, mount: str, cpu: dict[str, Any]) -> None:
    chain = []
    cur = path
    while cur != mount and _under(cur, mount):
        chain.append(cur)
        cur = fos.path.dirname(cur)
    parent = mount
    for d in reversed(chain):
        mgr._mkdir(d)  # FileNotFoundError: a parent went meanwhile (see _create_cpuset)
        if d == path:
            if cpu.get("cpus"):
                mgr._w("linux.resources.cpu.cpus", d, "cpuset.cpus", str(cpu["cpus"]))
            if cpu.get("mems"):
                mgr._w("linux.resources.cpu.mems", d, "cpuset.mems", str(cpu["mems"]))
        _cpuset_copy(mgr, d, parent)
        parent = d


def _cpuset_copy(mgr: Manager, cur: str, parent: str) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        try:
            mine = _read_text(fos.path.join(cur, name))
            if mine.strip():
                continue
            theirs = _read_text(fos.path.join(parent, name))
        except OSError as e:
            raise CgroupError(f"linux.cgroupsPath: reading {e.filename}: {e.strerror}") from None
        mgr._w("linux.cgroupsPath", cur, name, theirs.strip())


def set_resources(mgr: Manager, res: dict[str, Any], rules: list[Rule] | None, field: str) -> None:
    """Write ``linux.resources`` to the v1 hierarchies in runc's order (``rules``: the device rules,
    None to leave them alone); ``unified`` and, without a v1 hugetlb mount, hugepage limits go to
    the unified hierarchy of a hybrid host."""
    cpu = res.get("cpu") or {}
    # cpuset
    cs = mgr.paths.get("cpuset")
    if cpu.get("cpus"):
        mgr._w(f"{field}.cpu.cpus", cs, "cpuset.cpus", str(cpu["cpus"]), "the cpuset controller")
    if cpu.get("mems"):
        mgr._w(f"{field}.cpu.mems", cs, "cpuset.mems", str(cpu["mems"]), "the cpuset controller")
    # devices
    if rules is not None:
        _set_devices(mgr, rules, field)
    # memory
    if res.get("memory"):
        _set_memory(mgr, res["memory"], f"{field}.memory")
    # cpu
    if cpu:
        _set_cpu(mgr, cpu, f"{field}.cpu")
    # pids
    pids = res.get("pids")
    if pids and pids.get("limit") is not None:
        limit = int(pids["limit"])
        mgr._w(
            f"{field}.pids.limit",
            mgr.paths.get("pids"),
            "pids.max",
            str(limit) if limit > 0 else "max",
            "the pids controller",
        )
    # blkio
    if res.get("blockIO"):
        _set_blkio(mgr, res["blockIO"], f"{field}.blockIO")
    # hugetlb
    if res.get("hugepageLimits"):
        mgr._set_hugetlb(res["hugepageLimits"], f"{field}.hugepageLimits")
    # net_cls / net_prio
    net = res.get("network") or {}
    if net.get("classID"):
        mgr._w(
            f"{field}.network.classID",
            mgr.paths.get("net_cls"),
            "net_cls.classid",
            str(int(net["classID"])),
            "the net_cls controller",
        )
    for i, prio in enumerate(net.get("priorities") or []):
        mgr._w(
            f"{field}.network.priorities[{i}]",
            mgr.paths.get("net_prio"),
            "net_prio.ifpriomap",
            f"{prio['name']} {int(prio['priority'])}",
            "the net_prio controller",
        )
    # rdma
    for dev, lim in (res.get("rdma") or {}).items():
        mgr._w(
            f"{field}.rdma.{dev}",
            mgr.paths.get("rdma"),
            "rdma.max",
            _rdma_line(dev, lim),
            "the rdma controller",
        )
    # unified
    if res.get("unified"):
        mgr._set_unified(res["unified"], mgr.paths[""], f"{field}.unified")


def set_rt(mgr: Manager, path: str | None, cpu: dict[str, Any], field: str) -> None:
    """Real-time bandwidth (period first, as runc); needed before a real-time task can join, hence also
    in :func:`create`."""
    for key, name in (("realtimePeriod", "cpu.rt_period_us"), ("realtimeRuntime", "cpu.rt_runtime_us")):
        if cpu.get(key):
            mgr._w(f"{field}.{key}", path, name, str(int(cpu[key])), "the cpu controller")


def _set_cpu(mgr: Manager, cpu: dict[str, Any], field: str) -> None:
    path = mgr.paths.get("cpu")
    what = "the cpu controller"
    shares = int(cpu.get("shares") or 0)
    if shares:
        mgr._w(f"{field}.shares", path, "cpu.shares", str(shares), what)
        assert path is not None
        try:
            got = _read_uint(fos.path.join(path, "cpu.shares"))
        except (OSError, ValueError) as e:
            raise CgroupError(f"{field}.shares: reading back {path}/cpu.shares: {e}") from None
        if shares > got:
            raise CgroupError(f"{field}.shares: {shares} is too large: the maximum allowed cpu-shares is {got}")
        if shares < got:
            raise CgroupError(f"{field}.shares: {shares} is too small: the minimum allowed cpu-shares is {got}")
    period = int(cpu.get("period") or 0)
    quota = int(cpu.get("quota") or 0)
    retry_period = False
    if period:
        try:
            mgr._w(f"{field}.period", path, "cpu.cfs_period_us", str(period), what)
        except CgroupError:
            # The kernel may refuse a smaller period until the quota is lowered; retry after it.
            if not quota or path is None:
                raise
            retry_period = True
    if quota:
        mgr._w(f"{field}.quota", path, "cpu.cfs_quota_us", str(quota), what)
        if retry_period:
            mgr._w(f"{field}.period", path, "cpu.cfs_period_us", str(period), what)
    if cpu.get("burst") is not None:
        mgr._w(f"{field}.burst", path, "cpu.cfs_burst_us", str(int(cpu["burst"])), what)
    set_rt(mgr, path, cpu, field)
    if cpu.get("idle") is not None:
        mgr._w(f"{field}.idle", path, "cpu.idle", str(int(cpu["idle"])), what)


def _set_memory(mgr: Manager, mem: dict[str, Any], field: str) -> None:
    path = mgr.paths.get("memory")
    what = "the memory controller"
    limit = int(mem.get("limit") or 0)
    swap = int(mem.get("swap") or 0)
    memsw = "memory.memsw.limit_in_bytes"
    if limit == -1 and swap == 0 and path is not None and fos.path.exists(fos.path.join(path, memsw)):
        swap = -1

    def set_limit() -> None:
        if not limit:
            return
        if path is None:
            raise CgroupError(f"{field}.limit: cannot set this limit: {what} is not available")
        target = fos.path.join(path, "memory.limit_in_bytes")
        try:
            _cg._write(target, str(limit))
        except OSError as e:
            extra = ""
            if e.errno == errno.EBUSY:
                usage = _read_opt_uint(fos.path.join(path, "memory.usage_in_bytes"))
                peak = _read_opt_uint(fos.path.join(path, "memory.max_usage_in_bytes"))
                extra = f" (limit below current usage {usage}, peak usage {peak})"
            raise _write_error(f"{field}.limit", str(limit), target, e, extra) from None

    def set_swap() -> None:
        if swap:
            mgr._w(f"{field}.swap", path, memsw, str(swap), what)

    if limit and swap and path is not None:
        try:
            current = _read_uint(fos.path.join(path, "memory.limit_in_bytes"))
        except (OSError, ValueError) as e:
            raise CgroupError(f"{field}.limit: reading {path}/memory.limit_in_bytes: {e}") from None
        if swap == -1 or current < swap:
            set_swap()
            set_limit()
        else:
            set_limit()
            set_swap()
    else:
        set_limit()
        set_swap()
    for key, fname in (
        ("kernel", "memory.kmem.limit_in_bytes"),
        ("kernelTCP", "memory.kmem.tcp.limit_in_bytes"),
    ):
        value = int(mem.get(key) or 0)
        if value and path is not None and fos.path.exists(fos.path.join(path, fname)):
            mgr._w(f"{field}.{key}", path, fname, str(value), what)
        elif value:
            _log("debug", "%s.%s ignored: %s is not available on this kernel", field, key, fname)
    if mem.get("reservation"):
        mgr._w(f"{field}.reservation", path, "memory.soft_limit_in_bytes", str(int(mem["reservation"])), what)
    if mem.get("disableOOMKiller"):
        mgr._w(f"{field}.disableOOMKiller", path, "memory.oom_control", "1", what)
    swappiness = mem.get("swappiness")
    if swappiness is not None and int(swappiness) not in (-1, _MAX_U64):
        mgr._w(f"{field}.swappiness", path, "memory.swappiness", str(int(swappiness)), what)


def _set_blkio(mgr: Manager, bio: dict[str, Any], field: str) -> None:
    path = mgr.paths.get("blkio")
    what = "the blkio controller"
    if path is not None and fos.path.exists(fos.path.join(path, "blkio.weight")):
        wfile, wdfile = "blkio.weight", "blkio.weight_device"
    else:
        wfile, wdfile = "blkio.bfq.weight", "blkio.bfq.weight_device"
    if bio.get("weight"):
        mgr._w(f"{field}.weight", path, wfile, str(int(bio["weight"])), what)
    if bio.get("leafWeight"):
        mgr._w(f"{field}.leafWeight", path, "blkio.leaf_weight", str(int(bio["leafWeight"])), what)
    for i, wd in enumerate(bio.get("weightDevice") or []):
        dev = f"{int(wd['major'])}:{int(wd['minor'])}"
        if wd.get("weight"):
            mgr._w(f"{field}.weightDevice[{i}]", path, wdfile, f"{dev} {int(wd['weight'])}", what)
        if wd.get("leafWeight"):
            mgr._w(
                f"{field}.weightDevice[{i}]",
                path,
                "blkio.leaf_weight_device",
                f"{dev} {int(wd['leafWeight'])}",
                what,
            )
    for where, fname, _, dev, rate in _cg._throttles(bio, field):
        mgr._w(where, path, fname, f"{dev} {rate}", what)


def _set_devices(mgr: Manager, rules: list[Rule], field: str) -> None:
    """Bring devices.list to the rules' state with the fewest writes, then check that it got there."""
    path = mgr.paths.get("devices")
    if path is None:
        raise CgroupError(f"{field}.devices: the devices cgroup controller is not available")
    list_file = fos.path.join(path, "devices.list")
    try:
        current = DeviceEmulator.from_list(_read_text(list_file))
    except (OSError, ValueError) as e:
        raise CgroupError(f"{field}.devices: reading {list_file}: {e}") from None
    try:
        target = DeviceEmulator.from_rules(rules)
    except ValueError as e:
        raise ConfigError(f"{field}.devices", str(e)) from None
    for typ, major, minor, bits, allow in current.transition(target):
        mgr._w(
            f"{field}.devices",
            path,
            "devices.allow" if allow else "devices.deny",
            rule_string(typ, major, minor, bits),
        )
    try:
        after = DeviceEmulator.from_list(_read_text(list_file))
    except (OSError, ValueError) as e:
        raise CgroupError(f"{field}.devices: reading {list_file}: {e}") from None
    if (not target.default_allow and after != target) or after.default_allow != target.default_allow:
        raise CgroupError(f"{field}.devices: {list_file} does not match the requested rules after writing them")
