"""Checks of the spec's ``linux.resources`` that need no system: types, ranges and formats, each
failure a :class:`~inclavare.errors.ConfigError` naming the field. `create` and `update` run them
before anything is written.
"""

from __future__ import annotations

from inclavare.errors import ConfigError
from inclavare.linux.cgroups import _MAX_U64, _THROTTLE_DEVICES

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(
    obj: dict[str, Any],
    key: str,
    field: str,
    lo: int | None = None,
    hi: int | None = None,
    required: bool = False,
) -> None:
    if key not in obj or obj[key] is None:
        if required:
            raise ConfigError(f"{field}.{key}", "is required")
        return
    v = obj[key]
    if not _is_int(v):
        raise ConfigError(f"{field}.{key}", f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{field}.{key}", f"{v} is out of range (must be >= {lo})")
    if hi is not None and v > hi:
        raise ConfigError(f"{field}.{key}", f"{v} is out of range (must be <= {hi})")


def _check_dict(v: Any, field: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(field, f"must be an object, got {type(v).__name__}")
    return v


def _check_list(v: Any, field: str) -> list[Any]:
    if not isinstance(v, list):
        raise ConfigError(field, f"must be an array, got {type(v).__name__}")
    return v


def _valid_cpu_list(s: str) -> bool:
    if not s:
        return True
    for part in s.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            return False
    return True


_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


def validate(resources: dict[str, Any] | None, field: str = "linux.resources") -> None:
    """Check OCI ``linux.resources`` without touching the system; raise ConfigError on the first problem."""
    if resources is None:
        return
    res = _check_dict(resources, field)
    if res.get("devices") is not None:
        for i, d in enumerate(_check_list(res["devices"], f"{field}.devices")):
            f = f"{field}.devices[{i}]"
            _check_dict(d, f)
            if "allow" in d and not isinstance(d["allow"], bool):
                raise ConfigError(f"{f}.allow", f"must be true or false, got {d['allow']!r}")
            typ = d.get("type")
            if typ not in (None, "", "a", "b", "c"):
                raise ConfigError(f"{f}.type", f"invalid cgroup device type {typ!r} (want a, b or c)")
            access = d.get("access")
            if not isinstance(access, str) or not access:
                raise ConfigError(f"{f}.access", "cannot be empty (want a combination of r, w and m)")
            if set(access) - set("rwm"):
                raise ConfigError(f"{f}.access", f"invalid device access {access!r} (want a combination of r, w, m)")
            _check_int(d, "major", f, -1, _U32)
            _check_int(d, "minor", f, -1, _U32)
        from inclavare.linux.cgroups.devices import DeviceEmulator, oci_device_rules

        try:
            DeviceEmulator.from_rules(oci_device_rules(res["devices"]))
        except ValueError as e:
            raise ConfigError(f"{field}.devices", str(e)) from None
    if res.get("memory") is not None:
        f = f"{field}.memory"
        mem = _check_dict(res["memory"], f)
        for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
            _check_int(mem, key, f, -1)
        sw = mem.get("swappiness")
        if sw is not None and (not _is_int(sw) or not (0 <= sw <= 100 or sw in (-1, _MAX_U64))):
            raise ConfigError(f"{f}.swappiness", f"invalid memory swappiness value {sw!r} (valid range is 0-100)")
        for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
            if mem.get(key) is not None and not isinstance(mem[key], bool):
                raise ConfigError(f"{f}.{key}", f"must be true or false, got {mem[key]!r}")
        limit, swap = mem.get("limit") or 0, mem.get("swap") or 0
        if limit > 0 and swap > 0 and swap < limit:
            raise ConfigError(f"{f}.swap", f"memory+swap limit {swap} must be >= the memory limit {limit}")
    if res.get("cpu") is not None:
        f = f"{field}.cpu"
        cpu = _check_dict(res["cpu"], f)
        _check_int(cpu, "shares", f, 0)
        _check_int(cpu, "quota", f, -1)
        _check_int(cpu, "burst", f, 0)
        _check_int(cpu, "period", f, 0)
        _check_int(cpu, "realtimeRuntime", f, -1)
        _check_int(cpu, "realtimePeriod", f, 0)
        _check_int(cpu, "idle", f, 0, 1)
        for key in ("cpus", "mems"):
            v = cpu.get(key)
            if v is not None and (not isinstance(v, str) or not _valid_cpu_list(v)):
                raise ConfigError(f"{f}.{key}", f'invalid list {v!r} (want e.g. "0-3,6")')
    if res.get("pids") is not None:
        f = f"{field}.pids"
        _check_int(_check_dict(res["pids"], f), "limit", f, required=True)
    if res.get("blockIO") is not None:
        f = f"{field}.blockIO"
        bio = _check_dict(res["blockIO"], f)
        _check_int(bio, "weight", f, 0, _U16)
        _check_int(bio, "leafWeight", f, 0, _U16)
        for i, wd in enumerate(_check_list(bio.get("weightDevice") or [], f"{f}.weightDevice")):
            g = f"{f}.weightDevice[{i}]"
            _check_dict(wd, g)
            _check_int(wd, "major", g, 0, required=True)
            _check_int(wd, "minor", g, 0, required=True)
            _check_int(wd, "weight", g, 0, _U16)
            _check_int(wd, "leafWeight", g, 0, _U16)
        for key in _THROTTLE_DEVICES:
            for i, td in enumerate(_check_list(bio.get(key) or [], f"{f}.{key}")):
                g = f"{f}.{key}[{i}]"
                _check_dict(td, g)
                _check_int(td, "major", g, 0, required=True)
                _check_int(td, "minor", g, 0, required=True)
                _check_int(td, "rate", g, 0, _MAX_U64, required=True)
    if res.get("hugepageLimits") is not None:
        for i, hl in enumerate(_check_list(res["hugepageLimits"], f"{field}.hugepageLimits")):
            g = f"{field}.hugepageLimits[{i}]"
            _check_dict(hl, g)
            size = hl.get("pageSize")
            if (
                not isinstance(size, str)
                or len(size) < 3
                or size[-2:] not in ("KB", "MB", "GB")
                or not size[:-2].isdigit()
                or size[0] == "0"
            ):
                raise ConfigError(f"{g}.pageSize", f'invalid huge page size {size!r} (want e.g. "2MB" or "1GB")')
            _check_int(hl, "limit", g, 0, _MAX_U64, required=True)
    if res.get("network") is not None:
        f = f"{field}.network"
        net = _check_dict(res["network"], f)
        _check_int(net, "classID", f, 0, _U32)
        for i, p in enumerate(_check_list(net.get("priorities") or [], f"{f}.priorities")):
            g = f"{f}.priorities[{i}]"
            _check_dict(p, g)
            name = p.get("name")
            if not isinstance(name, str) or not name or any(c.isspace() for c in name):
                raise ConfigError(f"{g}.name", f"invalid interface name {name!r}")
            _check_int(p, "priority", g, 0, _U32, required=True)
    if res.get("rdma") is not None:
        f = f"{field}.rdma"
        for dev, lim in _check_dict(res["rdma"], f).items():
            _check_dict(lim, f"{f}.{dev}")
            if not dev or any(c.isspace() for c in dev):
                raise ConfigError(f, f"invalid rdma device name {dev!r}")
            _check_int(lim, "hcaHandles", f"{f}.{dev}", 0, _U32)
            _check_int(lim, "hcaObjects", f"{f}.{dev}", 0, _U32)
    if res.get("unified") is not None:
        f = f"{field}.unified"
        for key, value in _check_dict(res["unified"], f).items():
            if not key or "/" in key or key in (".", ".."):
                raise ConfigError(f"{f}.{key}", "must be a cgroup file name (no slashes)")
            if "." not in key.strip("."):
                raise ConfigError(f"{f}.{key}", "must be in the form CONTROLLER.PARAMETER")
            if not isinstance(value, str):
                raise ConfigError(f"{f}.{key}", f"value must be a string, got {value!r}")
