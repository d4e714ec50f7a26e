"""Usage statistics of a container's cgroups, shaped like the "data" object of ``runc events --stats``
(runc's fs and fs2 GetStats: which files, which fallbacks, Go's omitempty).

Imported only by `events` (through :meth:`~inclavare.linux.cgroups.manager.Manager.stats`).
"""

from __future__ import annotations

import errno

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.linux.cgroups import _MAX_U64, _read_key_values, _read_opt_uint, _read_text, _read_uint

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from inclavare.linux.cgroups.manager import Manager


_CLOCK_TICKS = 100  # sysconf(_SC_CLK_TCK) on Linux, as runc hard-codes it
_HUGEPAGE_SIZES: list[str] | None = None


def _hugepage_size_name(kb: int) -> str:
    if kb >= 1 << 20:
        return f"{kb >> 20}GB"
    if kb >= 1 << 10:
        return f"{kb >> 10}MB"
    return f"{kb}KB"


def _hugepage_sizes() -> list[str]:
    """Huge page sizes as cgroup file names use them ("2MB", "1GB"), from /sys/kernel/mm/hugepages."""
    global _HUGEPAGE_SIZES
    if _HUGEPAGE_SIZES is None:
        sizes = []
        try:
            names = fos.listdir("/sys/kernel/mm/hugepages")
        except OSError:
            names = []
        for name in sorted(names):
            if name.startswith("hugepages-") and name.endswith("kB") and name[10:-2].isdigit():
                sizes.append(_hugepage_size_name(int(name[10:-2])))
        _HUGEPAGE_SIZES = sizes
    return _HUGEPAGE_SIZES


def _cpu_list(text: str) -> list[int]:
    out: list[int] = []
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if hi:
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(lo))
    return out


def _nz(d: dict[str, Any], key: str, value: Any) -> None:
    """Go's omitempty: set only non-zero / non-empty values."""
    if value:
        d[key] = value


def _mem_entry(limit: int = 0, usage: int = 0, max_usage: int = 0, failcnt: int = 0) -> dict[str, int]:
    d = {"limit": limit}
    _nz(d, "usage", usage)
    _nz(d, "max", max_usage)
    d["failcnt"] = failcnt
    return d


_BLKIO_KEYS = (
    "ioServiceBytesRecursive", "ioServicedRecursive", "ioQueueRecursive", "ioServiceTimeRecursive",
    "ioWaitTimeRecursive", "ioMergedRecursive", "ioTimeRecursive", "sectorsRecursive",
)  # fmt: skip


# io.stat keys -> (runc blkio table, cgroup v1 op name)
_IO_STAT_KEYS = {
    "rbytes": ("ioServiceBytesRecursive", "Read"),
    "wbytes": ("ioServiceBytesRecursive", "Write"),
    "rios": ("ioServicedRecursive", "Read"),
    "wios": ("ioServicedRecursive", "Write"),
}


def _blkio_entry(major: int, minor: int, op: str, value: int) -> dict[str, Any]:
    d: dict[str, Any] = {}
    _nz(d, "major", major)
    _nz(d, "minor", minor)
    _nz(d, "op", op)
    _nz(d, "value", value)
    return d


def stats_v1(mgr: Manager) -> dict[str, Any]:
    """The v1 hierarchies' counters (cpuacct, cpu, cpuset, memory, pids, blkio, hugetlb)."""
    usage: dict[str, Any] = {}
    throttling: dict[str, Any] = {}
    kernel = user = 0
    acct = mgr.paths.get("cpuacct")
    if acct and fos.path.isdir(acct):
        fields = _read_text(fos.path.join(acct, "cpuacct.stat")).split()
        if len(fields) >= 4 and fields[0] == "user" and fields[2] == "system":
            user = int(fields[1]) * 1_000_000_000 // _CLOCK_TICKS
            kernel = int(fields[3]) * 1_000_000_000 // _CLOCK_TICKS
        _nz(usage, "total", _read_uint(fos.path.join(acct, "cpuacct.usage")))
        _nz(
            usage,
            "percpu",
            [int(x) for x in _read_text(fos.path.join(acct, "cpuacct.usage_percpu")).split()],
        )
        pk: list[int] = []
        pu: list[int] = []
        try:
            lines = _read_text(fos.path.join(acct, "cpuacct.usage_all")).splitlines()[1:]
        except FileNotFoundError:
            lines = []
        for line in lines:
            cols = line.split(" ")
            if len(cols) == 3:
                pu.append(int(cols[1]))
                pk.append(int(cols[2]))
        _nz(usage, "percpu_kernel", pk)
        _nz(usage, "percpu_user", pu)
    usage["kernel"] = kernel
    usage["user"] = user
    cpu_path = mgr.paths.get("cpu")
    if cpu_path:
        try:
            kv = _read_key_values(fos.path.join(cpu_path, "cpu.stat"))
        except FileNotFoundError:
            kv = {}
        _nz(throttling, "periods", kv.get("nr_periods", 0))
        _nz(throttling, "throttledPeriods", kv.get("nr_throttled", 0))
        _nz(throttling, "throttledTime", kv.get("throttled_time", 0))
    out = _stats_skeleton()
    out["cpu"] = {"usage": usage, "throttling": throttling}
    cs = mgr.paths.get("cpuset")
    if cs and fos.path.isdir(cs):
        out["cpuset"] = _cpuset_stats(cs)
    mp = mgr.paths.get("memory")
    if mp and fos.path.isdir(mp):
        out["memory"] = _memory_stats_v1(mp)
    pp = mgr.paths.get("pids")
    if pp and fos.path.isdir(pp):
        cur = _read_uint(fos.path.join(pp, "pids.current"))
        lim = _read_uint(fos.path.join(pp, "pids.max"))
        out["pids"] = _pids_dict(cur, 0 if lim == _MAX_U64 else lim)
    bp = mgr.paths.get("blkio")
    if bp and fos.path.isdir(bp):
        out["blkio"] = _blkio_stats_v1(bp)
    hp, v2 = mgr._hugetlb_target()
    if hp and fos.path.isdir(hp):
        out["hugetlb"] = _hugetlb_stats(hp, v2)
    return out


def stats_v2(mgr: Manager) -> dict[str, Any]:
    """The unified cgroup's counters, mapped onto the v1-shaped fields runc reports."""
    path = mgr.paths[""]
    out = _stats_skeleton()
    # pids
    cur = _read_opt_uint(fos.path.join(path, "pids.current"))
    if cur is None:
        try:
            cur = len(_read_text(fos.path.join(path, "cgroup.procs")).split())
        except FileNotFoundError:
            cur = 0
        lim = 0
    else:
        lim = _read_uint(fos.path.join(path, "pids.max"))
        lim = 0 if lim == _MAX_U64 else lim
    out["pids"] = _pids_dict(cur, lim)
    # memory
    try:
        raw = _read_key_values(fos.path.join(path, "memory.stat"))
    except FileNotFoundError:
        raw = None
    if raw is not None:
        mem: dict[str, Any] = {}
        _nz(mem, "cache", raw.get("file", 0))
        m_usage = _read_opt_uint(fos.path.join(path, "memory.current"))
        if m_usage is None:
            u, s = _meminfo_usage()
            mem["usage"] = _mem_entry(_MAX_U64, u[0])
            mem["swap"] = _mem_entry(_MAX_U64, s[0])
        else:
            m_limit = _read_uint(fos.path.join(path, "memory.max"))
            mem["usage"] = _mem_entry(m_limit, m_usage)
            s_usage = _read_opt_uint(fos.path.join(path, "memory.swap.current"))
            if s_usage is None:
                mem["swap"] = _mem_entry()
            else:
                s_limit = _read_uint(fos.path.join(path, "memory.swap.max"))
                # v1 reports memory+swap; keep that meaning
                if s_limit != _MAX_U64:
                    s_limit = min(s_limit + m_limit, _MAX_U64)
                mem["swap"] = _mem_entry(s_limit, s_usage + m_usage)
        mem["kernel"] = _mem_entry()
        mem["kernelTCP"] = _mem_entry()
        _nz(mem, "raw", raw)
        out["memory"] = mem
    # io
    try:
        text = _read_text(fos.path.join(path, "io.stat"))
    except FileNotFoundError:
        text = ""
    blkio: dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].count(":") != 1:
            continue
        ma, mi = (int(x) for x in parts[0].split(":"))
        for item in parts[1:]:
            key, _, val = item.partition("=")
            table = _IO_STAT_KEYS.get(key)
            if table and val:
                blkio.setdefault(table[0], []).append(_blkio_entry(ma, mi, table[1], int(val)))
    out["blkio"] = blkio
    # cpu
    usage: dict[str, Any] = {}
    throttling: dict[str, Any] = {}
    try:
        kv = _read_key_values(fos.path.join(path, "cpu.stat"))
    except FileNotFoundError:
        kv = {}
    _nz(usage, "total", kv.get("usage_usec", 0) * 1000)
    usage["kernel"] = kv.get("system_usec", 0) * 1000
    usage["user"] = kv.get("user_usec", 0) * 1000
    _nz(throttling, "periods", kv.get("nr_periods", 0))
    _nz(throttling, "throttledPeriods", kv.get("nr_throttled", 0))
    _nz(throttling, "throttledTime", kv.get("throttled_usec", 0) * 1000)
    out["cpu"] = {"usage": usage, "throttling": throttling}
    out["hugetlb"] = _hugetlb_stats(path, True)
    return out


def _stats_skeleton() -> dict[str, Any]:
    return {
        "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
        "cpuset": _cpuset_dict({}),
        "memory": {
            "usage": _mem_entry(),
            "swap": _mem_entry(),
            "kernel": _mem_entry(),
            "kernelTCP": _mem_entry(),
        },
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def _pids_dict(current: int, limit: int) -> dict[str, int]:
    d: dict[str, int] = {}
    _nz(d, "current", current)
    _nz(d, "limit", limit)
    return d


# cpuset.* files reported as unsigned integers, in runc's stats order
_CPUSET_FLAGS = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
                 "memory_spread_slab", "memory_pressure", "sched_load_balance")


def _cpuset_dict(v: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    _nz(d, "cpus", v.get("cpus"))
    d["cpu_exclusive"] = v.get("cpu_exclusive", 0)
    _nz(d, "mems", v.get("mems"))
    for key in _CPUSET_FLAGS[1:] + ("sched_relax_domain_level",):
        d[key] = v.get(key, 0)
    return d


def _cpuset_stats(path: str) -> dict[str, Any]:
    v: dict[str, Any] = {}
    for key in ("cpus", "mems"):
        try:
            v[key] = _cpu_list(_read_text(fos.path.join(path, f"cpuset.{key}")))
        except FileNotFoundError:
            pass
    for key in _CPUSET_FLAGS:
        value = _read_opt_uint(fos.path.join(path, f"cpuset.{key}"))
        if value is not None:
            v[key] = value
    try:
        v["sched_relax_domain_level"] = int(_read_text(fos.path.join(path, "cpuset.sched_relax_domain_level")))
    except FileNotFoundError:
        pass
    return _cpuset_dict(v)


def _memory_data_v1(path: str, prefix: str, optional: bool) -> dict[str, int]:
    usage = _read_opt_uint(fos.path.join(path, f"{prefix}.usage_in_bytes"))
    if usage is None:
        if optional:
            return _mem_entry()
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", f"{path}/{prefix}.usage_in_bytes")
    return _mem_entry(
        _read_opt_uint(fos.path.join(path, f"{prefix}.limit_in_bytes")) or 0,
        usage,
        _read_opt_uint(fos.path.join(path, f"{prefix}.max_usage_in_bytes")) or 0,
        _read_opt_uint(fos.path.join(path, f"{prefix}.failcnt")) or 0,
    )


def _memory_stats_v1(path: str) -> dict[str, Any]:
    raw = _read_key_values(fos.path.join(path, "memory.stat"))
    mem: dict[str, Any] = {}
    _nz(mem, "cache", raw.get("cache", 0))
    mem["usage"] = _memory_data_v1(path, "memory", False)
    mem["swap"] = _memory_data_v1(path, "memory.memsw", True)
    mem["kernel"] = _memory_data_v1(path, "memory.kmem", True)
    mem["kernelTCP"] = _memory_data_v1(path, "memory.kmem.tcp", True)
    _nz(mem, "raw", raw)
    return mem


def _read_blkio_entries(path: str) -> list[dict[str, Any]] | None:
    try:
        text = _read_text(path)
    except FileNotFoundError:
        return None
    out = []
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) < 3:
            if len(fields) == 2 and fields[0] == "Total":
                continue
            raise ValueError(f"{path}: malformed line {line!r}")
        op, value = (fields[2], fields[3]) if len(fields) >= 4 else ("", fields[2])
        out.append(_blkio_entry(int(fields[0]), int(fields[1]), op, int(value)))
    return out or None


def _blkio_stats_v1(path: str) -> dict[str, Any]:
    # runc's order of preference: BFQ debug, BFQ, CFQ, throttle recursive, throttle.
    groups = (
        (("blkio.bfq.sectors_recursive", "sectorsRecursive"),
         ("blkio.bfq.io_service_time_recursive", "ioServiceTimeRecursive"),
         ("blkio.bfq.io_wait_time_recursive", "ioWaitTimeRecursive"),
         ("blkio.bfq.io_merged_recursive", "ioMergedRecursive"),
         ("blkio.bfq.io_queued_recursive", "ioQueueRecursive"),
         ("blkio.bfq.time_recursive", "ioTimeRecursive"),
         ("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
         ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
        (("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
         ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
        (("blkio.sectors_recursive", "sectorsRecursive"),
         ("blkio.io_service_time_recursive", "ioServiceTimeRecursive"),
         ("blkio.io_wait_time_recursive", "ioWaitTimeRecursive"),
         ("blkio.io_merged_recursive", "ioMergedRecursive"),
         ("blkio.io_queued_recursive", "ioQueueRecursive"),
         ("blkio.time_recursive", "ioTimeRecursive"),
         ("blkio.io_serviced_recursive", "ioServicedRecursive"),
         ("blkio.io_service_bytes_recursive", "ioServiceBytesRecursive")),
        (("blkio.throttle.io_serviced_recursive", "ioServicedRecursive"),
         ("blkio.throttle.io_service_bytes_recursive", "ioServiceBytesRecursive")),
        (("blkio.throttle.io_serviced", "ioServicedRecursive"),
         ("blkio.throttle.io_service_bytes", "ioServiceBytesRecursive")),
    )  # fmt: skip
    for group in groups:
        out: dict[str, Any] = {}
        for i, (fname, key) in enumerate(group):
            entries = _read_blkio_entries(fos.path.join(path, fname))
            if entries is None:
                if i == 0:
                    break  # this family is not available: try the next one
                return {k: out[k] for k in _BLKIO_KEYS if k in out}
            out[key] = entries
        else:
            return {k: out[k] for k in _BLKIO_KEYS if k in out}
    return {}


def _hugetlb_stats(path: str, v2: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in _hugepage_sizes():
        base = fos.path.join(path, f"hugetlb.{size}")
        entry: dict[str, Any] = {}
        if v2:
            usage = _read_opt_uint(base + ".current")
            if usage is None:
                continue
            _nz(entry, "usage", usage)
            try:
                failcnt = _read_key_values(base + ".events").get("max", 0)
            except FileNotFoundError:
                failcnt = 0
        else:
            usage = _read_opt_uint(base + ".usage_in_bytes")
            if usage is None:
                continue
            _nz(entry, "usage", usage)
            _nz(entry, "max", _read_opt_uint(base + ".max_usage_in_bytes") or 0)
            failcnt = _read_opt_uint(base + ".failcnt") or 0
        entry["failcnt"] = failcnt
        out[size] = entry
    return out


def _meminfo_usage() -> tuple[tuple[int], tuple[int]]:
    vals: dict[str, int] = {}
    for line in _read_text("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemFree", "SwapTotal", "SwapFree"):
            vals[key] = int(rest.strip().split()[0]) * 1024
    return (
        (vals.get("MemTotal", 0) - vals.get("MemFree", 0),),
        (vals.get("SwapTotal", 0) - vals.get("SwapFree", 0),),
    )
