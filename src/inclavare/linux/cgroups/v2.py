"""cgroup v2: creating the container's cgroup (subtree_control down the path, threaded cgroups) and
writing ``linux.resources`` to it with runc's fs2 files and conversions from the v1-shaped spec.

Functions of a :class:`~inclavare.linux.cgroups.manager.Manager`, imported by it only on pure v2 hosts;
the eBPF device filter is imported from here, only when device rules are set.
"""

from __future__ import annotations

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError, ConfigError
from inclavare.linux import cgroups as _cg
from inclavare.linux.cgroups import CGROUP_ROOT, _log, _rdma_line, _read_text, _under

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from inclavare.linux.cgroups.devices import Rule
    from inclavare.linux.cgroups.manager import Manager


# conversions (runc's cgroups.Convert* helpers)


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000]; 0 stays 0 (unset)."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000]; 0 stays 0 (unset)."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def memory_swap_to_v2(swap: int, limit: int) -> int:
    """OCI memory.swap (memory+swap) -> memory.swap.max (swap only); -1 means max, 0 unset.

    Raises ValueError on combinations runc rejects.
    """
    if limit == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise ValueError("unable to set swap limit without memory limit")
    if limit < 0:
        raise ValueError(f"invalid memory value: {limit}")
    if swap < limit:
        raise ValueError("memory+swap limit should be >= memory limit")
    return swap - limit


def _num_to_str(value: int) -> str:
    """fs2 numToStr: 0 -> "" (skip), -1 -> "max", else the number."""
    if value == 0:
        return ""
    if value == -1:
        return "max"
    return str(value)


def create(mgr: Manager, res: dict[str, Any]) -> None:
    """mkdir the cgroup and its missing parents, enabling every available controller down the path;
    refuses a path whose cgroup.type cannot take the domain controllers that ``res`` needs."""
    path = mgr.paths[""]
    mount = mgr.mounts.get("") or CGROUP_ROOT
    if not _under(path, mount):
        raise CgroupError(f"linux.cgroupsPath: {path} is not below the cgroup2 mount {mount}")
    try:
        controllers = _read_text(fos.path.join(mount, "cgroup.controllers")).split()
    except OSError as e:
        raise CgroupError(f"reading {mount}/cgroup.controllers: {e.strerror}") from None
    enable = " ".join("+" + c for c in controllers)
    domain = _needs_domain_controller(res)
    chain = [mount]
    rel = fos.path.relpath(path, mount)
    if rel != ".":
        cur = mount
        for part in rel.split("/"):
            cur = fos.path.join(cur, part)
            chain.append(cur)
    for i, cur in enumerate(chain):
        if i > 0:
            try:
                mgr._mkdir(cur)
            except FileNotFoundError as e:
                raise CgroupError(f"linux.cgroupsPath: creating cgroup {cur}: {e.strerror}") from None
            try:
                cgtype = _read_text(fos.path.join(cur, "cgroup.type")).strip()
            except OSError:
                cgtype = ""
            if cgtype == "domain invalid":
                if domain:
                    raise CgroupError(
                        f"linux.cgroupsPath: cannot enter cgroup {cur} with domain controllers: "
                        "it is in an invalid state"
                    )
                try:
                    _cg._write(fos.path.join(cur, "cgroup.type"), "threaded")
                except OSError:
                    pass
            elif cgtype in ("domain threaded", "threaded") and domain:
                raise CgroupError(
                    f"linux.cgroupsPath: cannot enter cgroup {cur} with domain controllers: it is in {cgtype} mode"
                )
        if i < len(chain) - 1 and enable:
            target = fos.path.join(cur, "cgroup.subtree_control")
            try:
                _cg._write(target, enable)
            except OSError:
                for one in enable.split():
                    try:
                        _cg._write(target, one)
                    except OSError:
                        pass  # a missing controller surfaces when a limit needs it


def set_resources(mgr: Manager, res: dict[str, Any], rules: list[Rule] | None, field: str) -> None:
    """Write ``linux.resources`` to the unified cgroup with runc's fs2 conversions; ``rules`` (None: leave
    device access alone) become the cgroup's only eBPF device filter."""
    path = mgr.paths[""]
    # pids
    pids = res.get("pids")
    if pids and pids.get("limit") is not None:
        limit = int(pids["limit"])
        mgr._w(f"{field}.pids.limit", path, "pids.max", str(limit) if limit > 0 else "max")
    # memory
    mem = res.get("memory") or {}
    limit = int(mem.get("limit") or 0)
    swap = int(mem.get("swap") or 0)
    resv = int(mem.get("reservation") or 0)
    if limit or swap or resv:
        try:
            swap2 = memory_swap_to_v2(swap, limit)
        except ValueError as e:
            raise ConfigError(f"{field}.memory.swap", str(e)) from None
        swap_str = _num_to_str(swap2)
        if swap_str == "" and swap2 == 0 and swap > 0:
            swap_str = "0"  # memory == memory+swap: no swap at all
        if swap_str:
            mgr._w(f"{field}.memory.swap", path, "memory.swap.max", swap_str)
        if _num_to_str(limit):
            mgr._w(f"{field}.memory.limit", path, "memory.max", _num_to_str(limit))
        if _num_to_str(resv):
            mgr._w(f"{field}.memory.reservation", path, "memory.low", _num_to_str(resv))
    # io
    if res.get("blockIO"):
        _set_io(mgr, res["blockIO"], path, f"{field}.blockIO")
    # cpu
    cpu = res.get("cpu") or {}
    weight = shares_to_weight(int(cpu.get("shares") or 0))
    if weight:
        mgr._w(f"{field}.cpu.shares", path, "cpu.weight", str(weight))
    quota = int(cpu.get("quota") or 0)
    period = int(cpu.get("period") or 0)
    if quota or period:
        value = f"{quota if quota > 0 else 'max'} {period or 100000}"
        mgr._w(f"{field}.cpu.quota", path, "cpu.max", value)
    if cpu.get("burst") is not None:
        mgr._w(f"{field}.cpu.burst", path, "cpu.max.burst", str(int(cpu["burst"])))
    if cpu.get("idle") is not None:
        mgr._w(f"{field}.cpu.idle", path, "cpu.idle", str(int(cpu["idle"])))
    # devices
    if rules is not None:
        from inclavare.linux.cgroups import ebpf  # ctypes and struct: only here

        try:
            program = ebpf.device_filter_program(rules)
        except ValueError as e:
            raise ConfigError(f"{field}.devices", str(e)) from None
        try:
            ebpf.attach_device_filter(path, program)
        except OSError as e:
            raise CgroupError(
                f"{field}.devices: cannot install the eBPF device filter on {path}: "
                f"{e.strerror or e}; refusing to run without device access control"
            ) from None
    # cpuset
    if cpu.get("cpus"):
        mgr._w(f"{field}.cpu.cpus", path, "cpuset.cpus", str(cpu["cpus"]))
    if cpu.get("mems"):
        mgr._w(f"{field}.cpu.mems", path, "cpuset.mems", str(cpu["mems"]))
    # hugetlb
    if res.get("hugepageLimits"):
        mgr._set_hugetlb(res["hugepageLimits"], f"{field}.hugepageLimits")
    # rdma
    for dev, lim in (res.get("rdma") or {}).items():
        mgr._w(f"{field}.rdma.{dev}", path, "rdma.max", _rdma_line(dev, lim))
    # unified
    if res.get("unified"):
        mgr._set_unified(res["unified"], path, f"{field}.unified")


def _set_io(mgr: Manager, bio: dict[str, Any], path: str, field: str) -> None:
    weight = int(bio.get("weight") or 0)
    wdevs = bio.get("weightDevice") or []
    bfq = fos.path.join(path, "io.bfq.weight")
    have_bfq = (weight or wdevs) and fos.path.exists(bfq)
    if weight:
        if have_bfq:
            mgr._w(f"{field}.weight", path, "io.bfq.weight", str(weight))
        else:
            mgr._w(f"{field}.weight", path, "io.weight", str(blkio_weight_to_io_weight(weight)))
    if wdevs:
        per_device = False
        if have_bfq:
            try:  # kernels >= 5.4 list "default N" plus per-device lines; older ones one number
                int(_read_text(bfq).strip())
            except ValueError:
                per_device = True
            except OSError:
                pass
        for i, wd in enumerate(wdevs):
            if not wd.get("weight"):
                continue
            if not per_device:
                _log(
                    "warning",
                    "%s.weightDevice[%d] ignored: no per-device BFQ weights here (as runc)",
                    field,
                    i,
                )
                continue
            mgr._w(
                f"{field}.weightDevice[{i}]",
                path,
                "io.bfq.weight",
                f"{int(wd['major'])}:{int(wd['minor'])} {int(wd['weight'])}",
            )
    for where, _, name, dev, rate in _cg._throttles(bio, field):
        mgr._w(where, path, "io.max", f"{dev} {name}={rate}")

# -- freezer -----------------------------------------------------------------------------
def _needs_domain_controller(res: dict[str, Any]) -> bool:
    """Whether ``res`` sets limits of domain controllers (memory, cpu weight/max, io, hugetlb), which a
    threaded cgroup cannot have."""
    mem = res.get("memory") or {}
    cpu = res.get("cpu") or {}
    bio = res.get("blockIO") or {}
    io_keys = ("weight", "weightDevice", *_cg._THROTTLE_DEVICES)
    return bool(
        mem.get("limit")
        or mem.get("swap")
        or mem.get("reservation")
        or cpu.get("shares")
        or cpu.get("quota")
        or cpu.get("period")
        or res.get("hugepageLimits")
        or any(bio.get(k) for k in io_keys)
    )
