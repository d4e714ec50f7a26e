"""Linux capabilities: the five sets of an OCI process (bounding, effective, permitted, inheritable, ambient).

The kernel calls go through a :class:`~inclavare.linux.syscalls.Syscalls` (``KERNEL`` unless a test hands
in a recording double).
"""

from __future__ import annotations

from inclavare.errors import SysError
from inclavare.linux import syscalls as sc
from inclavare.linux.syscalls import capget, capset  # noqa: F401  (their home was here)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.linux.syscalls import Syscalls


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


def names_to_numbers(names: list[str] | None) -> list[int]:
    from inclavare.formats.oci import capability_number

    top = last_cap()
    # Capabilities the running kernel does not know are dropped silently, as runc does.
    return [n for n in (capability_number(x) for x in names or []) if n <= top]


def drop_bounding(keep: list[int], kernel: Syscalls = sc.KERNEL) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP)."""
    keepset = set(keep)
    for cap in range(last_cap() + 1):
        if cap not in keepset:
            try:
                kernel.prctl(sc.PR_CAPBSET_DROP, cap)
            except SysError as e:
                if e.errno != 22:  # EINVAL: cap unknown to this kernel
                    raise SysError(f"dropping capability {cap} from the bounding set: {e}", e.errno) from None


def apply(caps: dict[str, list[str]] | None, kernel: Syscalls = sc.KERNEL) -> None:
    """Set effective/permitted/inheritable and raise ambient. Call after the uid switch."""
    caps = caps or {}
    eff = _mask(names_to_numbers(caps.get("effective")))
    perm = _mask(names_to_numbers(caps.get("permitted")))
    inh = _mask(names_to_numbers(caps.get("inheritable")))
    kernel.capset(eff, perm, inh)
    try:
        kernel.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    except SysError:
        pass
    for cap in names_to_numbers(caps.get("ambient")):
        try:
            kernel.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
        except SysError as e:
            # ambient needs the cap in permitted and inheritable; runc ignores the failure too
            if e.errno not in (1, 22):
                raise
