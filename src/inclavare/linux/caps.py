"""Linux capabilities: the five sets of an OCI process (bounding, effective, permitted, inheritable, ambient)."""

from __future__ import annotations

import ctypes

from inclavare.errors import SysError
from inclavare.linux import syscalls as sc

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def _mask(numbers: list[int]) -> int:
    m = 0
    for n in numbers:
        m |= 1 << n
    return m


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_Data * 2)()
    sc.syscall("capget", ctypes.byref(hdr), ctypes.byref(data))
    eff, perm, inh = (getattr(data[0], f) | (getattr(data[1], f) << 32)
                      for f in ("effective", "permitted", "inheritable"))
    return eff, perm, inh


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    sc.syscall("capset", ctypes.byref(hdr), ctypes.byref(data))


def names_to_numbers(names: list[str] | None) -> list[int]:
    from inclavare.formats.oci import capability_number

    top = last_cap()
    # Capabilities the running kernel does not know are dropped silently, as runc does.
    return [n for n in (capability_number(x) for x in names or []) if n <= top]


def drop_bounding(keep: list[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP)."""
    keepset = set(keep)
    for cap in range(last_cap() + 1):
        if cap not in keepset:
            try:
                sc.prctl(sc.PR_CAPBSET_DROP, cap)
            except SysError as e:
                if e.errno != 22:  # EINVAL: cap unknown to this kernel
                    raise SysError(f"dropping capability {cap} from the bounding set: {e}", e.errno) from None


def apply(caps: dict[str, list[str]] | None) -> None:
    """Set effective/permitted/inheritable and raise ambient. Call after the uid switch."""
    caps = caps or {}
    eff = _mask(names_to_numbers(caps.get("effective")))
    perm = _mask(names_to_numbers(caps.get("permitted")))
    inh = _mask(names_to_numbers(caps.get("inheritable")))
    capset(eff, perm, inh)
    try:
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    except SysError:
        pass
    for cap in names_to_numbers(caps.get("ambient")):
        try:
            sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
        except SysError as e:
            # ambient needs the cap in permitted and inheritable; runc ignores the failure too
            if e.errno not in (1, 22):
                raise
