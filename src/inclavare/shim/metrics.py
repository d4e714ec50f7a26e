"""Task.Stats: a container's cgroup statistics (the runtime library's ``runc events --stats`` shape) as the
metrics message containerd decodes: ``io.containerd.cgroups.v1.Metrics`` on a cgroup v1 or hybrid host, and
``io.containerd.cgroups.v2.Metrics`` on a pure cgroup v2 host, as containerd's runc shim answers.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf import any_pb2

from inclavare.shim.events import pack_any
from inclavare.shim.proto.cgroups import v1_metrics_pb2 as v1
from inclavare.shim.proto.cgroups import v2_metrics_pb2 as v2

# runc's blkio tables -> v1 BlkIOStat fields
_BLKIO = {"ioServiceBytesRecursive": "io_service_bytes_recursive", "ioServicedRecursive": "io_serviced_recursive",
          "ioQueueRecursive": "io_queued_recursive", "ioServiceTimeRecursive": "io_service_time_recursive",
          "ioWaitTimeRecursive": "io_wait_time_recursive", "ioMergedRecursive": "io_merged_recursive",
          "ioTimeRecursive": "io_time_recursive", "sectorsRecursive": "sectors_recursive"}
# memory.stat keys whose v1 MemoryStat field is named differently
_V1_MEMORY_RENAMES = {"pgpgin": "pg_pg_in", "pgpgout": "pg_pg_out", "pgfault": "pg_fault", "pgmajfault": "pg_maj_fault",
                      "total_pgpgin": "total_pg_pg_in", "total_pgpgout": "total_pg_pg_out",
                      "total_pgfault": "total_pg_fault", "total_pgmajfault": "total_pg_maj_fault"}


def unified_host(root: str = "/sys/fs/cgroup") -> bool:
    """Whether cgroup2 is mounted alone at the cgroup root (no v1 hierarchies)."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def _u(value: Any) -> int:
    return int(value) if isinstance(value, int) and value > 0 else 0


def _memory_entry(entry: dict[str, Any] | None) -> v1.MemoryEntry:
    e = entry or {}
    return v1.MemoryEntry(limit=_u(e.get("limit")), usage=_u(e.get("usage")), max=_u(e.get("max")),
                          failcnt=_u(e.get("failcnt")))


def metrics_v1(stats: dict[str, Any]) -> v1.Metrics:
    m = v1.Metrics()
    pids = stats.get("pids") or {}
    m.pids.CopyFrom(v1.PidsStat(current=_u(pids.get("current")), limit=_u(pids.get("limit"))))
    cpu = stats.get("cpu") or {}
    usage, thr = cpu.get("usage") or {}, cpu.get("throttling") or {}
    m.cpu.usage.CopyFrom(v1.CPUUsage(total=_u(usage.get("total")), kernel=_u(usage.get("kernel")),
                                     user=_u(usage.get("user")), per_cpu=[_u(x) for x in usage.get("percpu") or []]))
    m.cpu.throttling.CopyFrom(v1.Throttle(periods=_u(thr.get("periods")),
                                          throttled_periods=_u(thr.get("throttledPeriods")),
                                          throttled_time=_u(thr.get("throttledTime"))))
    mem = stats.get("memory") or {}
    fields = v1.MemoryStat.DESCRIPTOR.fields_by_name
    for key, value in (mem.get("raw") or {}).items():
        name = _V1_MEMORY_RENAMES.get(key, key)
        if name in fields and fields[name].type == fields[name].TYPE_UINT64:
            setattr(m.memory, name, _u(value))
    m.memory.cache = _u(mem.get("cache")) or m.memory.cache
    m.memory.usage.CopyFrom(_memory_entry(mem.get("usage")))
    m.memory.swap.CopyFrom(_memory_entry(mem.get("swap")))
    m.memory.kernel.CopyFrom(_memory_entry(mem.get("kernel")))
    m.memory.kernel_tcp.CopyFrom(_memory_entry(mem.get("kernelTCP")))
    for key, field in _BLKIO.items():
        for e in (stats.get("blkio") or {}).get(key) or []:
            getattr(m.blkio, field).add(op=str(e.get("op", "")), major=_u(e.get("major")), minor=_u(e.get("minor")),
                                        value=_u(e.get("value")))
    for size, e in sorted((stats.get("hugetlb") or {}).items()):
        m.hugetlb.add(pagesize=size, usage=_u(e.get("usage")), max=_u(e.get("max")), failcnt=_u(e.get("failcnt")))
    return m


def metrics_v2(stats: dict[str, Any]) -> v2.Metrics:
    m = v2.Metrics()
    pids = stats.get("pids") or {}
    m.pids.CopyFrom(v2.PidsStat(current=_u(pids.get("current")), limit=_u(pids.get("limit"))))
    cpu = stats.get("cpu") or {}
    usage, thr = cpu.get("usage") or {}, cpu.get("throttling") or {}
    m.cpu.CopyFrom(v2.CPUStat(usage_usec=_u(usage.get("total")) // 1000, user_usec=_u(usage.get("user")) // 1000,
                              system_usec=_u(usage.get("kernel")) // 1000, nr_periods=_u(thr.get("periods")),
                              nr_throttled=_u(thr.get("throttledPeriods")),
                              throttled_usec=_u(thr.get("throttledTime")) // 1000))
    mem = stats.get("memory") or {}
    fields = v2.MemoryStat.DESCRIPTOR.fields_by_name
    for key, value in (mem.get("raw") or {}).items():
        if key in fields and fields[key].type == fields[key].TYPE_UINT64:
            setattr(m.memory, key, _u(value))
    u, s = mem.get("usage") or {}, mem.get("swap") or {}
    m.memory.usage, m.memory.usage_limit = _u(u.get("usage")), _u(u.get("limit"))
    m.memory.swap_usage, m.memory.swap_limit = _u(s.get("usage")), _u(s.get("limit"))
    return m


def metrics_any(stats: dict[str, Any], unified: bool | None = None) -> any_pb2.Any:
    """The Any Task.Stats answers with (``unified`` defaults to what this host mounts)."""
    if unified is None:
        unified = unified_host()
    return pack_any(metrics_v2(stats) if unified else metrics_v1(stats))
