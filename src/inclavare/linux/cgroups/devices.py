"""Device access rules: runc's default allowed devices, OCI rules as tuples, and the devices cgroup
emulator (runc's cgroups/devices Emulator) that both hierarchies use: v1 writes the fewest
devices.allow/deny lines that reach the wanted state, v2 compiles the same state into an eBPF
program (:mod:`inclavare.linux.cgroups.ebpf`, imported only on cgroup v2).
"""

from __future__ import annotations

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

# runc's specconv.AllowedDevices: (path or None, type, major, minor, access); -1 is a wildcard.
DEFAULT_DEVICE_RULES: tuple[tuple[str | None, str, int, int, str], ...] = (
    (None, "c", -1, -1, "m"),
    (None, "b", -1, -1, "m"),
    ("/dev/null", "c", 1, 3, "rwm"),
    ("/dev/random", "c", 1, 8, "rwm"),
    ("/dev/full", "c", 1, 7, "rwm"),
    ("/dev/tty", "c", 5, 0, "rwm"),
    ("/dev/zero", "c", 1, 5, "rwm"),
    ("/dev/urandom", "c", 1, 9, "rwm"),
    (None, "c", 136, -1, "rwm"),  # /dev/pts/*
    (None, "c", 5, 2, "rwm"),  # /dev/ptmx
    (None, "c", 10, 200, "rwm"),  # /dev/net/tun
)

_PERM_BITS = {"r": 1, "w": 2, "m": 4}
RWM = 7


def perm_bits(access: str) -> int:
    """Permission bits of the letters r (1), w (2) and m (4) in ``access``; other letters count for nothing."""
    bits = 0
    for ch in access:
        bits |= _PERM_BITS.get(ch, 0)
    return bits


def perm_str(bits: int) -> str:
    return "".join(ch for ch, b in _PERM_BITS.items() if bits & b)


def rule_string(typ: str, major: int, minor: int, bits: int) -> str:
    """A rule as devices.allow/deny and devices.list spell it: "c 1:3 rwm", "*" for -1."""
    ma = "*" if major == -1 else str(major)
    mi = "*" if minor == -1 else str(minor)
    return f"{typ} {ma}:{mi} {perm_str(bits)}"


Rule = tuple[str, int, int, int, bool]  # (type, major, minor, permission bits, allow)


class DeviceEmulator:
    """State of a devices cgroup: default policy plus exceptions, as runc's Emulator models it."""

    __slots__ = ("default_allow", "rules")

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.rules: dict[tuple[str, int, int], int] = {}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DeviceEmulator)
            and self.default_allow == other.default_allow
            and self.rules == other.rules
        )

    __hash__ = None  # type: ignore[assignment]

    def _add(self, meta: tuple[str, int, int], bits: int) -> None:
        self.rules[meta] = self.rules.get(meta, 0) | bits

    def _remove(self, meta: tuple[str, int, int], bits: int) -> None:
        typ, major, minor = meta
        for partial in ((typ, -1, minor), (typ, major, -1), (typ, -1, -1)):
            if partial == meta:
                continue
            if self.rules.get(partial, 0) & bits:
                raise ValueError(
                    f"rule {rule_string(typ, major, minor, bits)} cannot punch a hole in the wildcard "
                    f"rule {rule_string(*partial, self.rules[partial])} (the devices cgroup cannot do that)"
                )
        left = self.rules.get(meta, 0) & ~bits
        if left:
            self.rules[meta] = left
        else:
            self.rules.pop(meta, None)

    def apply(self, typ: str, major: int, minor: int, bits: int, allow: bool) -> None:
        """Apply one rule the way the kernel's devices cgroup would."""
        if typ == "a":
            self.default_allow = allow
            self.rules = {}
            return
        if typ not in ("b", "c"):
            raise ValueError(f"device type {typ!r} cannot be used in a cgroup rule")
        meta = (typ, major, minor)
        if allow == self.default_allow:
            self._remove(meta, bits)
        else:
            self._add(meta, bits)

    @classmethod
    def from_rules(cls, rules: list[Rule]) -> DeviceEmulator:
        emu = cls(default_allow=False)  # an empty rule list is a deny-all allow-list, as in runc
        for typ, major, minor, bits, allow in rules:
            emu.apply(typ, major, minor, bits, allow)
        return emu

    @classmethod
    def from_list(cls, text: str) -> DeviceEmulator:
        """State from a devices.list text ("a *:* rwm" means default-allow)."""
        emu = cls(default_allow=False)
        for line in text.splitlines():
            fields = line.replace(":", " ").split()
            if not fields:
                continue
            if len(fields) != 4:
                raise ValueError(f"malformed devices.list line {line!r}")
            typ, ma, mi, perms = fields
            if typ not in ("a", "b", "c"):
                raise ValueError(f"unknown device type in devices.list line {line!r}")
            major = -1 if ma == "*" else int(ma)
            minor = -1 if mi == "*" else int(mi)
            bits = perm_bits(perms)
            if not bits or perm_str(bits) != perms:
                raise ValueError(f"bad access {perms!r} in devices.list line {line!r}")
            emu.apply(typ, major, minor, bits, True)
        return emu

    def _ordered(self) -> list[tuple[tuple[str, int, int], int]]:
        # the order the rules were given in: "the runtime MUST apply entries in the listed order"
        # (runc sorts them, and fails the validation suite's devices tests for it)
        return list(self.rules.items())

    def transition(self, target: DeviceEmulator) -> list[Rule]:
        """Fewest rules that turn this state into ``target`` (runc's Emulator.Transition)."""
        out: list[Rule] = []
        old = self.rules
        if self.default_allow or self.default_allow != target.default_allow:
            out.append(("a", -1, -1, RWM, target.default_allow))
            old = {}
        for meta, bits in sorted(old.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            dropped = bits & ~target.rules.get(meta, 0)
            if dropped:
                out.append((*meta, dropped, target.default_allow))
        for meta, bits in target._ordered():
            gained = bits & ~old.get(meta, 0)
            if gained:
                out.append((*meta, gained, not target.default_allow))
        return out

    def clean_rules(self) -> list[Rule]:
        """Rules that build this state from a deny-all cgroup (runc's Emulator.Rules)."""
        return DeviceEmulator(default_allow=False).transition(self)


def default_device_rules(linux_devices: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """runc's default allowed device rules, minus those whose path ``linux.devices`` redefines."""
    paths = {d.get("path") for d in (linux_devices or []) if isinstance(d, dict)}
    return [
        {"allow": True, "type": t, "major": ma, "minor": mi, "access": acc}
        for path, t, ma, mi, acc in DEFAULT_DEVICE_RULES
        if path is None or path not in paths
    ]


def oci_device_rules(devices: list[dict[str, Any]]) -> list[Rule]:
    """OCI device rules as :data:`Rule` tuples: no type means "a", no major/minor means -1 (any)."""
    rules: list[Rule] = []
    for d in devices:
        typ = d.get("type") or "a"
        major = d.get("major")
        minor = d.get("minor")
        rules.append(
            (
                typ,
                -1 if major is None else int(major),
                -1 if minor is None else int(minor),
                perm_bits(d.get("access") or ""),
                bool(d.get("allow", False)),
            )
        )
    return rules
