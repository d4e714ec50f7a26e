"""cgroup manager for rune: cgroup v1, v2 and the hybrid layout, with runc 1.1.5 semantics.

What follows runc (libcontainer/cgroups/fs, fs2 and specconv):

* Layout.  v1 hierarchies come from /proc/self/mountinfo (fstype ``cgroup``, controllers from the
  super options, named hierarchies such as ``name=systemd``, co-mounts such as ``cpu,cpuacct``).
  A cgroup2 mount at /sys/fs/cgroup means pure v2; one at /sys/fs/cgroup/unified next to v1
  hierarchies means hybrid.  Detection runs once per process (:func:`current_layout`).
* Paths.  ``linux.cgroupsPath`` is cleaned like runc's ``utils.CleanPath``.  Absolute: below each
  hierarchy's mount point.  Relative: below the runtime's own cgroup in that hierarchy (mapped
  through the mount's root, field 4 of mountinfo); on v2 below the *parent* of the own cgroup, as
  runc's fs2 does.  Empty: runc's cgroupfs driver then uses the container id as a relative path.
  In hybrid mode the unified hierarchy is joined too (key ``""``), at ``<unified mount>/<path>``
  for absolute and relative paths alike, exactly as runc computes it.
* Resources.  Files, formats, write order and conversions of runc's fs (v1) and fs2 (v2) managers,
  including the v1 devices emulator (minimal transitions, refusal to punch holes in wildcard
  rules) and the v2 eBPF device filter (BPF_PROG_TYPE_CGROUP_DEVICE, attached with bpf(2)).
  runc's default device rules are appended after the spec's rules, as specconv does.

Deliberate differences from runc 1.1.5 (each a case where runc fails or silently drops a limit):
``memory.kernel``/``kernelTCP`` are written where the kmem files exist (runc ignores them);
``cpu.idle`` and ``cpu.burst`` are written (runc 1.1.5 knows neither); ``pids.limit <= 0`` writes ``max``; in hybrid
mode hugetlb limits (when hugetlb is not a v1 mount) and ``unified`` keys go to the unified
hierarchy (runc refuses ``unified`` on any host that is not pure v2; rune refuses it there only next to
limits that live in v1 hierarchies, with runc's words); v2 device rules never fail open;
:meth:`Manager.destroy` also removes the empty parent directories that :meth:`Manager.create` made.

Everything here is stdlib only and does no work at import time; ctypes is loaded only for eBPF.
"""

from __future__ import annotations

import errno
import time

from inclavare import _fastos as fos  # the posix builtin: `delete` imports this module, `import os` costs ~1.4 ms
from inclavare.errors import CgroupError, ConfigError
from inclavare.linux.cgpaths import CgroupPaths, _log, _read_text  # what delete needs lives there

TYPE_CHECKING = False  # spares importing typing (and re) at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CGROUP_ROOT",
    "DEFAULT_DEVICE_RULES",
    "DeviceEmulator",
    "Hierarchy",
    "Layout",
    "Manager",
    "OomWatcher",
    "blkio_weight_to_io_weight",
    "clean_path",
    "current_layout",
    "default_device_rules",
    "detect_layout",
    "device_filter_program",
    "memory_swap_to_v2",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "shares_to_weight",
    "validate",
]


CGROUP_ROOT = "/sys/fs/cgroup"

# Controllers a v1 hierarchy can carry (super options that are not plain mount options).
V1_CONTROLLERS = frozenset(
    {
        "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls", "perf_event",
        "net_prio", "hugetlb", "pids", "rdma", "misc", "debug",
    }
)  # fmt: skip

# runc's fs manager subsystem order (Apply and Set walk them in this order).
V1_SUBSYSTEMS = (
    "cpuset", "devices", "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb", "net_cls", "net_prio",
    "perf_event", "freezer", "rdma", "name=systemd",
)  # fmt: skip

_MAX_U64 = (1 << 64) - 1
_CLOCK_TICKS = 100  # sysconf(_SC_CLK_TCK) on Linux, as runc hard-codes it

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


# --------------------------------------------------------------------------------------------
# layout detection


class Hierarchy:
    """One mounted cgroup hierarchy: mount point, the hierarchy path mounted there, controllers."""

    __slots__ = ("mountpoint", "root", "controllers")

    def __init__(self, mountpoint: str, root: str = "/", controllers: tuple[str, ...] = ()) -> None:
        self.mountpoint = mountpoint
        self.root = root
        self.controllers = controllers

    def __repr__(self) -> str:
        return f"Hierarchy({self.mountpoint!r}, root={self.root!r}, controllers={self.controllers!r})"


class Layout:
    """The cgroup layout seen by this process.

    ``mode`` is "v1", "hybrid" or "v2"; ``v1`` maps each v1 controller (and ``name=X`` for named
    hierarchies) to its hierarchy; ``unified`` is the cgroup2 hierarchy (pure v2 or hybrid's);
    ``own`` maps controllers (``""`` for cgroup2) to this process's cgroup, from /proc/self/cgroup.
    """

    __slots__ = ("mode", "v1", "unified", "own")

    def __init__(self, mode: str, v1: dict[str, Hierarchy], unified: Hierarchy | None, own: dict[str, str]) -> None:
        self.mode = mode
        self.v1 = v1
        self.unified = unified
        self.own = own

    def __repr__(self) -> str:
        return f"Layout(mode={self.mode!r}, v1={self.v1!r}, unified={self.unified!r})"


def _unescape_mountinfo(s: str) -> str:
    if "\\" not in s:
        return s
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str, str, str]]:
    """Parse mountinfo text into (root, mountpoint, fstype, super options) tuples, in file order."""
    result = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 2:
            continue
        superopts = fields[sep + 3] if len(fields) > sep + 3 else ""
        result.append((_unescape_mountinfo(fields[3]), _unescape_mountinfo(fields[4]), fields[sep + 1], superopts))
    return result


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Parse /proc/PID/cgroup: each controller of a v1 line maps to its path, ``""`` to the v2 path."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) < 3:
            raise CgroupError(f"/proc/self/cgroup: malformed line {line!r} (want id:controllers:path)")
        if parts[0] == "0" and parts[1] == "":
            result[""] = parts[2]
            continue
        for ctrl in parts[1].split(","):
            if ctrl:
                result[ctrl] = parts[2]
    return result


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def detect_layout(
    mountinfo: str | None = None, proc_cgroup: str | None = None, cgroup_root: str = CGROUP_ROOT
) -> Layout:
    """Work out the cgroup layout from mountinfo and /proc/self/cgroup texts (read when None).

    ``cgroup_root`` is where the layout is expected (/sys/fs/cgroup); a cgroup2 mount there means
    pure v2, one at ``<cgroup_root>/unified`` next to v1 hierarchies means hybrid.
    """
    if mountinfo is None:
        mountinfo = _read_text("/proc/self/mountinfo")
    if proc_cgroup is None:
        proc_cgroup = _read_text("/proc/self/cgroup")
    cgroup_root = fos.path.normpath(cgroup_root)
    v1: dict[str, Hierarchy] = {}
    pure: Hierarchy | None = None
    hybrid: Hierarchy | None = None
    for root, mountpoint, fstype, superopts in parse_mountinfo(mountinfo):
        if fstype == "cgroup2":
            if mountpoint == cgroup_root:
                pure = Hierarchy(mountpoint, root)
            elif mountpoint == cgroup_root + "/unified" and hybrid is None:
                hybrid = Hierarchy(mountpoint, root)
        elif fstype == "cgroup":
            ctrls = tuple(o for o in superopts.split(",") if o in V1_CONTROLLERS or o.startswith("name="))
            if not ctrls:
                continue
            h = Hierarchy(mountpoint, root, ctrls)
            for c in ctrls:
                prev = v1.get(c)
                # First mount wins, but one below the cgroup root beats one elsewhere (runc tries
                # /sys/fs/cgroup/<controller> before scanning mountinfo).
                if prev is None or (not _under(prev.mountpoint, cgroup_root) and _under(mountpoint, cgroup_root)):
                    v1[c] = h
    own = parse_proc_cgroup(proc_cgroup)
    if pure is not None:
        return Layout("v2", {}, pure, own)
    if v1:
        return Layout("hybrid" if hybrid is not None else "v1", v1, hybrid, own)
    if hybrid is not None:
        return Layout("hybrid", {}, hybrid, own)
    raise CgroupError(f"no cgroup filesystem is mounted at {cgroup_root} (checked /proc/self/mountinfo)")


_LAYOUT: Layout | None = None


def current_layout() -> Layout:
    """This process's layout, detected once and cached."""
    global _LAYOUT
    if _LAYOUT is None:
        _LAYOUT = detect_layout()
    return _LAYOUT


# --------------------------------------------------------------------------------------------
# path rules


def clean_path(path: str) -> str:
    """runc's utils.CleanPath: normalise; relative paths cannot climb above their base."""
    if not path:
        return ""
    path = fos.path.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if not path.startswith("/"):
        path = fos.path.relpath(fos.path.normpath("/" + path), "/")
    return fos.path.normpath(path)


def _join(*parts: str) -> str:
    """filepath.Join: join the non-empty parts and clean the result."""
    joined = "/".join(p for p in parts if p)
    out = fos.path.normpath(joined) if joined else ""
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out


def _below_root(path: str, root: str) -> str:
    """``path`` relative to the hierarchy root mounted at the mount point ("" when outside it)."""
    if root in ("", "/"):
        return path.lstrip("/")
    if _under(path, root):
        return fos.path.relpath(path, root) if path != root else ""
    _log(
        "debug",
        "cgroup %s lies outside the mounted part %s of its hierarchy; using the mount point",
        path,
        root,
    )
    return ""


# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# file access (module functions so tests can observe writes)


def _write(path: str, data: str) -> None:
    fd = fos.open(path, fos.O_WRONLY | fos.O_CLOEXEC)
    try:
        fos.write(fd, data.encode())
    finally:
        fos.close(fd)


def _make_dir(path: str) -> None:
    fos.mkdir(path, 0o755)


def _fmt_data(data: str) -> str:
    return f'"{data}"' if (not data or any(c.isspace() for c in data)) else data


def _write_error(field: str, data: str, path: str, exc: OSError, extra: str = "") -> CgroupError:
    reason = exc.strerror or fos.strerror(exc.errno or 0)
    return CgroupError(f"{field}: writing {_fmt_data(data)} to {path}: {reason}{extra}")


def _parse_uint(text: str) -> int:
    """fscommon.GetCgroupParamUint semantics: "max" -> 2^64-1, negative -> 0."""
    text = text.strip()
    if text == "max":
        return _MAX_U64
    value = int(text)
    return 0 if value < 0 else min(value, _MAX_U64)


def _read_uint(path: str) -> int:
    return _parse_uint(_read_text(path))


def _read_opt_uint(path: str) -> int | None:
    try:
        return _read_uint(path)
    except FileNotFoundError:
        return None


def _read_key_values(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read_text(path).splitlines():
        parts = line.split(" ")
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = _parse_uint(parts[1])
        except ValueError:
            continue
    return out


# --------------------------------------------------------------------------------------------
# device rules: emulator (runc's cgroups/devices Emulator) and eBPF program


_PERM_BITS = {"r": 1, "w": 2, "m": 4}
_RWM = 7


def _perm_bits(access: str) -> int:
    bits = 0
    for ch in access:
        bits |= _PERM_BITS.get(ch, 0)
    return bits


def _perm_str(bits: int) -> str:
    return "".join(ch for ch, b in _PERM_BITS.items() if bits & b)


def _rule_string(typ: str, major: int, minor: int, bits: int) -> str:
    ma = "*" if major == -1 else str(major)
    mi = "*" if minor == -1 else str(minor)
    return f"{typ} {ma}:{mi} {_perm_str(bits)}"


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
                    f"rule {_rule_string(typ, major, minor, bits)} cannot punch a hole in the wildcard "
                    f"rule {_rule_string(*partial, self.rules[partial])} (the devices cgroup cannot do that)"
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
            if typ == "a":
                emu.default_allow = True
                emu.rules = {}
                continue
            if typ not in ("b", "c"):
                raise ValueError(f"unknown device type in devices.list line {line!r}")
            major = -1 if ma == "*" else int(ma)
            minor = -1 if mi == "*" else int(mi)
            bits = _perm_bits(perms)
            if not bits or _perm_str(bits) != perms:
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
            out.append(("a", -1, -1, _RWM, target.default_allow))
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


def _oci_device_rules(devices: list[dict[str, Any]]) -> list[Rule]:
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
                _perm_bits(d.get("access") or ""),
                bool(d.get("allow", False)),
            )
        )
    return rules


# eBPF instruction encoding (linux/bpf_common.h, linux/bpf.h)
_BPF_LDX_MEM_W = 0x61
_BPF_ALU32_AND_K = 0x54
_BPF_ALU32_RSH_K = 0x74
_BPF_ALU32_MOV_X = 0xBC
_BPF_ALU32_MOV_K = 0xB4
_BPF_JNE_K = 0x55
_BPF_JNE_X = 0x5D
_BPF_EXIT = 0x95
_BPF_DEVCG_DEV_BLOCK = 1
_BPF_DEVCG_DEV_CHAR = 2


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> tuple[int, int, int, int, int]:
    return (code, dst, src, off, imm)


def device_filter_program(rules: list[Rule]) -> bytes:
    """Assemble the BPF_PROG_TYPE_CGROUP_DEVICE program for ``rules`` (runc's devicefilter).

    The rules are first normalised through :class:`DeviceEmulator`, so v2 enforces exactly what
    v1 would.  Returns the raw instructions (8 bytes each, little endian).
    """
    import struct

    emu = DeviceEmulator.from_rules(rules)
    default_allow = emu.default_allow
    # Prologue: R2 = device type, R3 = access, R4 = major, R5 = minor (struct bpf_cgroup_dev_ctx).
    insns = [
        _insn(_BPF_LDX_MEM_W, 2, 1, 0),
        _insn(_BPF_ALU32_AND_K, 2, imm=0xFFFF),
        _insn(_BPF_LDX_MEM_W, 3, 1, 0),
        _insn(_BPF_ALU32_RSH_K, 3, imm=16),
        _insn(_BPF_LDX_MEM_W, 4, 1, 4),
        _insn(_BPF_LDX_MEM_W, 5, 1, 8),
    ]
    for idx, (typ, major, minor, bits, allow) in enumerate(emu.clean_rules()):
        if typ == "a":
            if idx != 0 or allow != default_allow:
                raise ValueError("internal error: misplaced wildcard rule in device filter")
            continue
        if allow == default_allow:
            raise ValueError("internal error: no-op rule in device filter")
        if major > 0xFFFFFFFF or minor > 0xFFFFFFFF:
            raise ValueError(f"device number out of range in {_rule_string(typ, major, minor, bits)}")
        block: list[tuple[int, int, int, int | None, int]] = []  # off None = "to next block"
        block.append((_BPF_JNE_K, 2, 0, None, _BPF_DEVCG_DEV_CHAR if typ == "c" else _BPF_DEVCG_DEV_BLOCK))
        if bits != _RWM:
            access = (2 if bits & 1 else 0) | (4 if bits & 2 else 0) | (1 if bits & 4 else 0)
            block.append((_BPF_ALU32_MOV_X, 1, 3, 0, 0))
            block.append((_BPF_ALU32_AND_K, 1, 0, 0, access))
            block.append((_BPF_JNE_X, 1, 3, None, 0))
        if major >= 0:
            block.append((_BPF_JNE_K, 4, 0, None, _s32(major)))
        if minor >= 0:
            block.append((_BPF_JNE_K, 5, 0, None, _s32(minor)))
        block.append((_BPF_ALU32_MOV_K, 0, 0, 0, 1 if allow else 0))
        block.append((_BPF_EXIT, 0, 0, 0, 0))
        n = len(block)
        for i, (code, dst, src, off, imm) in enumerate(block):
            insns.append(_insn(code, dst, src, (n - i - 1) if off is None else off, imm))
    insns.append(_insn(_BPF_ALU32_MOV_K, 0, imm=1 if default_allow else 0))
    insns.append(_insn(_BPF_EXIT))
    return b"".join(struct.pack("<BBhi", c, (s << 4) | d, o, i) for c, d, s, o, i in insns)


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= (1 << 31) else v


# --------------------------------------------------------------------------------------------
# bpf(2) through ctypes


_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_PROG_QUERY = 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2
_BPF_F_REPLACE = 4
_NR_BPF = {
    "x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280, "ppc64le": 361,
    "ppc64": 361, "s390x": 351, "armv7l": 386, "armv8l": 386, "i686": 357, "i386": 357,
}  # fmt: skip
_libc_handle: Any = None


def _bpf(cmd: int, attr: bytearray) -> int:
    import ctypes

    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(None, use_errno=True)
        _libc_handle.syscall.restype = ctypes.c_long
    nr = _NR_BPF.get(fos.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown on {fos.uname().machine}")
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    res = _libc_handle.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.byref(buf), ctypes.c_ulong(len(attr)))
    if res < 0:
        e = ctypes.get_errno()
        raise OSError(e, fos.strerror(e))
    return int(res)


def _bpf_load_device_prog(program: bytes) -> int:
    import ctypes
    import struct

    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"Apache\0")
    for log_size in (0, 1 << 16):
        logbuf = ctypes.create_string_buffer(log_size) if log_size else None
        attr = bytearray(72)
        struct.pack_into(
            "<IIQQIIQ",
            attr,
            0,
            _BPF_PROG_TYPE_CGROUP_DEVICE,
            len(program) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(license_),
            1 if log_size else 0,
            log_size,
            ctypes.addressof(logbuf) if logbuf is not None else 0,
        )
        try:
            return _bpf(_BPF_PROG_LOAD, attr)
        except OSError as e:
            if log_size:
                text = logbuf.value.decode(errors="replace").strip() if logbuf is not None else ""
                raise OSError(e.errno, f"{e.strerror}{': ' + text.splitlines()[-1] if text else ''}") from None
            if e.errno not in (errno.EACCES, errno.EINVAL):
                raise
    raise AssertionError("unreachable")


def _bpf_query_device_progs(dirfd: int) -> list[int]:
    import ctypes
    import struct

    size = 64
    for _ in range(10):
        ids = (ctypes.c_uint32 * size)()
        attr = bytearray(40)
        struct.pack_into("<IIIIQI", attr, 0, dirfd, _BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), size)
        try:
            _bpf(_BPF_PROG_QUERY, attr)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                size = struct.unpack_from("<I", attr, 24)[0] or size * 2
                continue
            raise
        count = struct.unpack_from("<I", attr, 24)[0]
        return [ids[i] for i in range(count)]
    raise OSError(errno.EAGAIN, "could not list the attached device programs")


def _bpf_prog_fd_by_id(prog_id: int) -> int | None:
    import struct

    attr = bytearray(12)
    struct.pack_into("<I", attr, 0, prog_id)
    try:
        return _bpf(_BPF_PROG_GET_FD_BY_ID, attr)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES, errno.ENOENT):
            return None  # hidden by an LSM or gone meanwhile; extra filters only restrict further
        raise


def _bpf_attach(dirfd: int, prog_fd: int, flags: int, replace_fd: int = 0) -> None:
    import struct

    attr = bytearray(20)
    struct.pack_into("<IIIII", attr, 0, dirfd, prog_fd, _BPF_CGROUP_DEVICE, flags, replace_fd)
    _bpf(_BPF_PROG_ATTACH, attr)


def _bpf_detach(dirfd: int, prog_fd: int) -> None:
    import struct

    attr = bytearray(20)
    struct.pack_into("<III", attr, 0, dirfd, prog_fd, _BPF_CGROUP_DEVICE)
    _bpf(_BPF_PROG_DETACH, attr)


def _attach_device_filter(dirpath: str, program: bytes) -> None:
    """Load ``program`` and make it the only device filter on cgroup ``dirpath`` (runc's way)."""
    try:  # raise the soft memlock limit to the hard one; kernels >= 5.11 do not need it
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    dirfd = fos.open(dirpath, fos.O_RDONLY | fos.O_DIRECTORY | fos.O_CLOEXEC)
    old_fds: list[int] = []
    prog_fd = -1
    try:
        for prog_id in _bpf_query_device_progs(dirfd):
            fd = _bpf_prog_fd_by_id(prog_id)
            if fd is not None:
                old_fds.append(fd)
        prog_fd = _bpf_load_device_prog(program)
        if len(old_fds) == 1:
            try:
                _bpf_attach(dirfd, prog_fd, _BPF_F_ALLOW_MULTI | _BPF_F_REPLACE, old_fds[0])
                return
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: kernel without BPF_F_REPLACE
                    raise
        _bpf_attach(dirfd, prog_fd, _BPF_F_ALLOW_MULTI)
        for fd in old_fds:
            _bpf_detach(dirfd, fd)
    finally:
        for fd in [*old_fds, prog_fd, dirfd]:
            if fd >= 0:
                fos.close(fd)


# --------------------------------------------------------------------------------------------
# misc helpers


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


# --------------------------------------------------------------------------------------------
# the manager


class Manager(CgroupPaths):
    """The cgroups of one container (queries and removal are :class:`CgroupPaths`').

    Build one with :meth:`for_container` (resolves paths, touches nothing) or :meth:`from_dict`
    (what :meth:`to_dict` saved in state.json).  ``paths`` maps subsystem names ("" for the
    unified hierarchy) to directories; ``mode`` is "v1", "hybrid" or "v2".
    """

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def for_container(cls, cgroups_path: str, container_id: str, layout: Layout | None = None) -> Manager:
        """Resolve the container's cgroup directories from ``linux.cgroupsPath`` (runc's rules)."""
        if layout is None:
            layout = current_layout()
        inner = clean_path(cgroups_path or "") or clean_path(container_id)
        if not inner:
            raise ConfigError("linux.cgroupsPath", "empty, and there is no container id to name the cgroup after")
        if inner in (".", "/"):
            # runc would use the runtime's own (or the root) cgroup and later try to remove it.
            raise ConfigError("linux.cgroupsPath", f"{cgroups_path!r} names no cgroup of its own")
        absolute = inner.startswith("/")
        paths: dict[str, str] = {}
        mounts: dict[str, str] = {}
        if layout.mode == "v2":
            h = layout.unified
            assert h is not None
            if absolute:
                paths[""] = _join(h.mountpoint, inner)
            else:
                own = layout.own.get("")
                if own is None:
                    raise CgroupError("/proc/self/cgroup: no cgroup v2 entry (0::PATH) for this process")
                paths[""] = _join(h.mountpoint, _below_root(fos.path.dirname(own), h.root), inner)
            mounts[""] = h.mountpoint
            return cls("v2", paths, mounts)
        for key in V1_SUBSYSTEMS:
            hier = layout.v1.get(key)
            if hier is None:
                if key == "devices":
                    raise CgroupError(
                        "the devices cgroup controller is not mounted; refusing to run a container "
                        "without device access control"
                    )
                continue
            if absolute:
                path = _join(hier.mountpoint, inner)
            else:
                own = layout.own.get(key)
                if own is None:
                    if key == "devices":
                        raise CgroupError("/proc/self/cgroup: this process has no devices cgroup")
                    continue
                path = _join(hier.mountpoint, _below_root(own, hier.root), inner)
            paths[key] = path
            mounts[key] = hier.mountpoint
        if layout.mode == "hybrid" and layout.unified is not None:
            # runc joins <unified mount>/<path> whatever the kind of path (GetOwnCgroupPath("")
            # returns the mount point itself).
            paths[""] = _join(layout.unified.mountpoint, inner)
            mounts[""] = layout.unified.mountpoint
        return cls(layout.mode, paths, mounts)

    # -- helpers -----------------------------------------------------------------------------

    def _mkdir(self, path: str) -> bool:
        """mkdir one cgroup directory, recording it; False if it existed.  ENOENT passes through."""
        try:
            _make_dir(path)
        except FileExistsError:
            return False
        except FileNotFoundError:
            raise
        except OSError as e:
            raise CgroupError(f"linux.cgroupsPath: creating cgroup {path}: {e.strerror}") from None
        self.created.append(path)
        return True

    def _makedirs(self, path: str, stop: str) -> None:
        """mkdir -p ``path`` below the existing directory ``stop``, recording what was made."""
        for attempt in range(5):
            missing = []
            cur = path
            while cur != stop and _under(cur, stop) and not fos.path.isdir(cur):
                missing.append(cur)
                cur = fos.path.dirname(cur)
            try:
                for p in reversed(missing):
                    self._mkdir(p)
                return
            except FileNotFoundError as e:
                # A concurrent destroy removed a shared parent between our mkdirs: start again.
                if attempt == 4:
                    raise CgroupError(f"linux.cgroupsPath: creating cgroup {e.filename}: {e.strerror}") from None
                time.sleep(0.005)

    # -- create / apply ----------------------------------------------------------------------

    def create(self, resources: dict[str, Any] | None = None) -> None:
        """Create the cgroup directories (mkdir -p), seeding new cpuset cgroups from their parents.

        ``resources`` (optional) pre-sets what must be in place before a task joins: cpuset
        cpus/mems and v1 real-time bandwidth (runc does this in Apply).
        """
        res = resources or {}
        cpu = res.get("cpu") or {}
        if self.mode == "v2":
            self._create_v2(res)
            return
        for key, path in self.paths.items():
            mount = self.mounts.get(key) or fos.path.dirname(path)
            try:
                if key == "cpuset":
                    self._create_cpuset(path, mount, cpu)
                else:
                    self._makedirs(path, mount)
                if key == "cpu":
                    self._set_rt(path, cpu, "linux.resources.cpu")
            except CgroupError:
                if self._join_only(key):
                    _log("debug", "cannot create %s cgroup %s; not joining it", key or "unified", path)
                    continue
                raise

    def _create_cpuset(self, path: str, mount: str, cpu: dict[str, Any]) -> None:
        chain = []
        cur = path
        while cur != mount and _under(cur, mount):
            chain.append(cur)
            cur = fos.path.dirname(cur)
        parent = mount
        for d in reversed(chain):
            try:
                self._mkdir(d)
            except FileNotFoundError as e:
                raise CgroupError(f"linux.cgroupsPath: creating cgroup {d}: {e.strerror}") from None
            if d == path:
                if cpu.get("cpus"):
                    self._w("linux.resources.cpu.cpus", d, "cpuset.cpus", str(cpu["cpus"]))
                if cpu.get("mems"):
                    self._w("linux.resources.cpu.mems", d, "cpuset.mems", str(cpu["mems"]))
            self._cpuset_copy(d, parent)
            parent = d

    def _cpuset_copy(self, cur: str, parent: str) -> None:
        for name in ("cpuset.cpus", "cpuset.mems"):
            try:
                mine = _read_text(fos.path.join(cur, name))
                if mine.strip():
                    continue
                theirs = _read_text(fos.path.join(parent, name))
            except OSError as e:
                raise CgroupError(f"linux.cgroupsPath: reading {e.filename}: {e.strerror}") from None
            self._w("linux.cgroupsPath", cur, name, theirs.strip())

    def _create_v2(self, res: dict[str, Any]) -> None:
        path = self.paths[""]
        mount = self.mounts.get("") or CGROUP_ROOT
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
                    self._mkdir(cur)
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
                        _write(fos.path.join(cur, "cgroup.type"), "threaded")
                    except OSError:
                        pass
                elif cgtype in ("domain threaded", "threaded") and domain:
                    raise CgroupError(
                        f"linux.cgroupsPath: cannot enter cgroup {cur} with domain controllers: it is in {cgtype} mode"
                    )
            if i < len(chain) - 1 and enable:
                target = fos.path.join(cur, "cgroup.subtree_control")
                try:
                    _write(target, enable)
                except OSError:
                    for one in enable.split():
                        try:
                            _write(target, one)
                        except OSError:
                            pass  # a missing controller surfaces when a limit needs it

    def apply(self, pid: int) -> None:
        """Move ``pid`` into every cgroup of the container (creating missing directories)."""
        if pid == -1:
            return
        if any(not fos.path.isdir(p) for k, p in self.paths.items() if not self._join_only(k)):
            self.create()
        for key, path in self.paths.items():
            try:
                self._write_procs(path, pid)
            except CgroupError:
                if self._join_only(key):
                    _log("debug", "cannot join %s cgroup %s; ignored as runc does", key or "unified", path)
                    continue
                raise

    def _write_procs(self, path: str, pid: int) -> None:
        target = fos.path.join(path, "cgroup.procs")
        try:
            _write_pid(target, pid)
        except OSError as e:
            raise CgroupError(f"adding pid {pid} to {target}: {e.strerror}") from None

    # -- set ---------------------------------------------------------------------------------

    def _w(self, field: str, path: str | None, name: str, data: str, missing: str = "") -> None:
        if path is None:
            raise CgroupError(f"{field}: cannot set this limit: {missing or 'controller'} is not available")
        target = fos.path.join(path, name)
        try:
            _write(target, data)
        except OSError as e:
            raise _write_error(field, data, target, e) from None

    def set(
        self,
        resources: dict[str, Any] | None,
        *,
        linux_devices: list[dict[str, Any]] | None = None,
        default_devices: bool = True,
        skip_devices: bool = False,
        field: str = "linux.resources",
    ) -> None:
        """Apply OCI ``linux.resources`` to the container's cgroups.

        Pass the complete resources (``rune update`` merges first): device rules are always
        re-applied, as the spec's rules followed by runc's default allowed devices (those whose
        path ``linux_devices`` redefines are left out; ``default_devices=False`` drops them all).
        ``skip_devices`` leaves device access control untouched.
        """
        res = resources or {}
        validate(res, field)
        self.check_resources(res)  # before any write
        rules: list[Rule] | None = None
        if not skip_devices:
            devs = list(res.get("devices") or [])
            if default_devices:
                devs += default_device_rules(linux_devices)
            rules = _oci_device_rules(devs)
        if self.mode == "v2":
            self._set_v2(res, rules, field)
        else:
            self._set_v1(res, rules, field)

    # v1 -----------------------------------------------------------------------------------

    def _v1(self, key: str) -> str | None:
        return self.paths.get(key)

    def _set_v1(self, res: dict[str, Any], rules: list[Rule] | None, field: str) -> None:
        cpu = res.get("cpu") or {}
        # cpuset
        cs = self._v1("cpuset")
        if cpu.get("cpus"):
            self._w(f"{field}.cpu.cpus", cs, "cpuset.cpus", str(cpu["cpus"]), "the cpuset controller")
        if cpu.get("mems"):
            self._w(f"{field}.cpu.mems", cs, "cpuset.mems", str(cpu["mems"]), "the cpuset controller")
        # devices
        if rules is not None:
            self._set_v1_devices(rules, field)
        # memory
        if res.get("memory"):
            self._set_v1_memory(res["memory"], f"{field}.memory")
        # cpu
        if cpu:
            self._set_v1_cpu(cpu, f"{field}.cpu")
        # pids
        pids = res.get("pids")
        if pids and pids.get("limit") is not None:
            limit = int(pids["limit"])
            self._w(
                f"{field}.pids.limit",
                self._v1("pids"),
                "pids.max",
                str(limit) if limit > 0 else "max",
                "the pids controller",
            )
        # blkio
        if res.get("blockIO"):
            self._set_v1_blkio(res["blockIO"], f"{field}.blockIO")
        # hugetlb
        if res.get("hugepageLimits"):
            self._set_hugetlb(res["hugepageLimits"], f"{field}.hugepageLimits")
        # net_cls / net_prio
        net = res.get("network") or {}
        if net.get("classID"):
            self._w(
                f"{field}.network.classID",
                self._v1("net_cls"),
                "net_cls.classid",
                str(int(net["classID"])),
                "the net_cls controller",
            )
        for i, prio in enumerate(net.get("priorities") or []):
            self._w(
                f"{field}.network.priorities[{i}]",
                self._v1("net_prio"),
                "net_prio.ifpriomap",
                f"{prio['name']} {int(prio['priority'])}",
                "the net_prio controller",
            )
        # rdma
        for dev, lim in (res.get("rdma") or {}).items():
            self._w(
                f"{field}.rdma.{dev}",
                self._v1("rdma"),
                "rdma.max",
                _rdma_line(dev, lim),
                "the rdma controller",
            )
        # unified
        if res.get("unified"):
            self._set_unified(res["unified"], self.paths[""], f"{field}.unified")

    def _set_rt(self, path: str | None, cpu: dict[str, Any], field: str) -> None:
        if cpu.get("realtimePeriod"):
            self._w(
                f"{field}.realtimePeriod",
                path,
                "cpu.rt_period_us",
                str(int(cpu["realtimePeriod"])),
                "the cpu controller",
            )
        if cpu.get("realtimeRuntime"):
            self._w(
                f"{field}.realtimeRuntime",
                path,
                "cpu.rt_runtime_us",
                str(int(cpu["realtimeRuntime"])),
                "the cpu controller",
            )

    def _set_v1_cpu(self, cpu: dict[str, Any], field: str) -> None:
        path = self._v1("cpu")
        what = "the cpu controller"
        shares = int(cpu.get("shares") or 0)
        if shares:
            self._w(f"{field}.shares", path, "cpu.shares", str(shares), what)
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
                self._w(f"{field}.period", path, "cpu.cfs_period_us", str(period), what)
            except CgroupError:
                # The kernel may refuse a smaller period until the quota is lowered; retry after it.
                if not quota or path is None:
                    raise
                retry_period = True
        if quota:
            self._w(f"{field}.quota", path, "cpu.cfs_quota_us", str(quota), what)
            if retry_period:
                self._w(f"{field}.period", path, "cpu.cfs_period_us", str(period), what)
        if cpu.get("burst") is not None:
            self._w(f"{field}.burst", path, "cpu.cfs_burst_us", str(int(cpu["burst"])), what)
        self._set_rt(path, cpu, field)
        if cpu.get("idle") is not None:
            self._w(f"{field}.idle", path, "cpu.idle", str(int(cpu["idle"])), what)

    def _set_v1_memory(self, mem: dict[str, Any], field: str) -> None:
        path = self._v1("memory")
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
                _write(target, str(limit))
            except OSError as e:
                extra = ""
                if e.errno == errno.EBUSY:
                    usage = _read_opt_uint(fos.path.join(path, "memory.usage_in_bytes"))
                    peak = _read_opt_uint(fos.path.join(path, "memory.max_usage_in_bytes"))
                    extra = f" (limit below current usage {usage}, peak usage {peak})"
                raise _write_error(f"{field}.limit", str(limit), target, e, extra) from None

        def set_swap() -> None:
            if swap:
                self._w(f"{field}.swap", path, memsw, str(swap), what)

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
                self._w(f"{field}.{key}", path, fname, str(value), what)
            elif value:
                _log("debug", "%s.%s ignored: %s is not available on this kernel", field, key, fname)
        if mem.get("reservation"):
            self._w(f"{field}.reservation", path, "memory.soft_limit_in_bytes", str(int(mem["reservation"])), what)
        if mem.get("disableOOMKiller"):
            self._w(f"{field}.disableOOMKiller", path, "memory.oom_control", "1", what)
        swappiness = mem.get("swappiness")
        if swappiness is not None and int(swappiness) not in (-1, _MAX_U64):
            self._w(f"{field}.swappiness", path, "memory.swappiness", str(int(swappiness)), what)

    def _set_v1_blkio(self, bio: dict[str, Any], field: str) -> None:
        path = self._v1("blkio")
        what = "the blkio controller"
        if path is not None and fos.path.exists(fos.path.join(path, "blkio.weight")):
            wfile, wdfile = "blkio.weight", "blkio.weight_device"
        else:
            wfile, wdfile = "blkio.bfq.weight", "blkio.bfq.weight_device"
        if bio.get("weight"):
            self._w(f"{field}.weight", path, wfile, str(int(bio["weight"])), what)
        if bio.get("leafWeight"):
            self._w(f"{field}.leafWeight", path, "blkio.leaf_weight", str(int(bio["leafWeight"])), what)
        for i, wd in enumerate(bio.get("weightDevice") or []):
            dev = f"{int(wd['major'])}:{int(wd['minor'])}"
            if wd.get("weight"):
                self._w(f"{field}.weightDevice[{i}]", path, wdfile, f"{dev} {int(wd['weight'])}", what)
            if wd.get("leafWeight"):
                self._w(
                    f"{field}.weightDevice[{i}]",
                    path,
                    "blkio.leaf_weight_device",
                    f"{dev} {int(wd['leafWeight'])}",
                    what,
                )
        for key, fname in (
            ("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
            ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
            ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
            ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"),
        ):
            for i, td in enumerate(bio.get(key) or []):
                self._w(
                    f"{field}.{key}[{i}]",
                    path,
                    fname,
                    f"{int(td['major'])}:{int(td['minor'])} {int(td['rate'])}",
                    what,
                )

    def _hugetlb_target(self) -> tuple[str | None, bool]:
        """(directory, is_v2) where hugetlb limits go."""
        if self.mode == "v2":
            return self.paths[""], True
        if "hugetlb" in self.paths:
            return self.paths["hugetlb"], False
        if self.mode == "hybrid" and "" in self.paths:
            return self.paths[""], True
        return None, False

    def _set_hugetlb(self, limits: list[dict[str, Any]], field: str) -> None:
        path, v2 = self._hugetlb_target()
        if v2 and path is not None and self.mode == "hybrid":
            self._enable_unified_controller("hugetlb", field)
        for i, hl in enumerate(limits):
            name = f"hugetlb.{hl['pageSize']}.{'max' if v2 else 'limit_in_bytes'}"
            self._w(f"{field}[{i}]", path, name, str(int(hl["limit"])), "the hugetlb controller")

    def _enable_unified_controller(self, ctrl: str, field: str) -> None:
        """Hybrid mode: make ``ctrl`` available in the unified cgroup by enabling it down the path."""
        path = self.paths[""]
        mount = self.mounts.get("") or fos.path.dirname(path)
        try:
            available = _read_text(fos.path.join(mount, "cgroup.controllers")).split()
        except OSError as e:
            raise CgroupError(f"{field}: reading {mount}/cgroup.controllers: {e.strerror}") from None
        if ctrl not in available:
            raise CgroupError(
                f"{field}: the {ctrl} controller is neither mounted as cgroup v1 nor available in {mount}"
            )
        cur = mount
        parts = fos.path.relpath(path, mount).split("/") if path != mount else []
        for part in parts:
            st = fos.path.join(cur, "cgroup.subtree_control")
            try:
                enabled = _read_text(st).split()
            except OSError as e:
                raise CgroupError(f"{field}: reading {st}: {e.strerror}") from None
            if ctrl not in enabled:
                self._w(field, cur, "cgroup.subtree_control", "+" + ctrl)
            cur = fos.path.join(cur, part)

    def _set_unified(self, unified: dict[str, str], path: str, field: str) -> None:
        for key, value in unified.items():
            target = fos.path.join(path, key)
            try:
                _write(target, str(value))
            except OSError as e:
                if e.errno in (errno.EPERM, errno.ENOENT, errno.EACCES):
                    ctrl = key.split(".", 1)[0]
                    try:
                        available = _read_text(fos.path.join(path, "cgroup.controllers")).split()
                    except OSError:
                        available = []
                    if ctrl != "cgroup" and ctrl not in available:
                        raise CgroupError(
                            f"{field}.{key}: cannot be set: controller {ctrl!r} is not available in {path}"
                        ) from None
                raise _write_error(f"{field}.{key}", str(value), target, e) from None

    def _set_v1_devices(self, rules: list[Rule], field: str) -> None:
        path = self._v1("devices")
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
            self._w(
                f"{field}.devices",
                path,
                "devices.allow" if allow else "devices.deny",
                _rule_string(typ, major, minor, bits),
            )
        try:
            after = DeviceEmulator.from_list(_read_text(list_file))
        except (OSError, ValueError) as e:
            raise CgroupError(f"{field}.devices: reading {list_file}: {e}") from None
        if (not target.default_allow and after != target) or after.default_allow != target.default_allow:
            raise CgroupError(f"{field}.devices: {list_file} does not match the requested rules after writing them")

    # v2 -----------------------------------------------------------------------------------

    def _set_v2(self, res: dict[str, Any], rules: list[Rule] | None, field: str) -> None:
        path = self.paths[""]
        # pids
        pids = res.get("pids")
        if pids and pids.get("limit") is not None:
            limit = int(pids["limit"])
            self._w(f"{field}.pids.limit", path, "pids.max", str(limit) if limit > 0 else "max")
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
                self._w(f"{field}.memory.swap", path, "memory.swap.max", swap_str)
            if _num_to_str(limit):
                self._w(f"{field}.memory.limit", path, "memory.max", _num_to_str(limit))
            if _num_to_str(resv):
                self._w(f"{field}.memory.reservation", path, "memory.low", _num_to_str(resv))
        # io
        if res.get("blockIO"):
            self._set_v2_io(res["blockIO"], path, f"{field}.blockIO")
        # cpu
        cpu = res.get("cpu") or {}
        weight = shares_to_weight(int(cpu.get("shares") or 0))
        if weight:
            self._w(f"{field}.cpu.shares", path, "cpu.weight", str(weight))
        quota = int(cpu.get("quota") or 0)
        period = int(cpu.get("period") or 0)
        if quota or period:
            value = f"{quota if quota > 0 else 'max'} {period or 100000}"
            self._w(f"{field}.cpu.quota", path, "cpu.max", value)
        if cpu.get("burst") is not None:
            self._w(f"{field}.cpu.burst", path, "cpu.max.burst", str(int(cpu["burst"])))
        if cpu.get("idle") is not None:
            self._w(f"{field}.cpu.idle", path, "cpu.idle", str(int(cpu["idle"])))
        # devices
        if rules is not None:
            try:
                program = device_filter_program(rules)
            except ValueError as e:
                raise ConfigError(f"{field}.devices", str(e)) from None
            try:
                _attach_device_filter(path, program)
            except OSError as e:
                raise CgroupError(
                    f"{field}.devices: cannot install the eBPF device filter on {path}: "
                    f"{e.strerror or e}; refusing to run without device access control"
                ) from None
        # cpuset
        if cpu.get("cpus"):
            self._w(f"{field}.cpu.cpus", path, "cpuset.cpus", str(cpu["cpus"]))
        if cpu.get("mems"):
            self._w(f"{field}.cpu.mems", path, "cpuset.mems", str(cpu["mems"]))
        # hugetlb
        if res.get("hugepageLimits"):
            self._set_hugetlb(res["hugepageLimits"], f"{field}.hugepageLimits")
        # rdma
        for dev, lim in (res.get("rdma") or {}).items():
            self._w(f"{field}.rdma.{dev}", path, "rdma.max", _rdma_line(dev, lim))
        # unified
        if res.get("unified"):
            self._set_unified(res["unified"], path, f"{field}.unified")

    def _set_v2_io(self, bio: dict[str, Any], path: str, field: str) -> None:
        weight = int(bio.get("weight") or 0)
        wdevs = bio.get("weightDevice") or []
        bfq = fos.path.join(path, "io.bfq.weight")
        have_bfq = (weight or wdevs) and fos.path.exists(bfq)
        if weight:
            if have_bfq:
                self._w(f"{field}.weight", path, "io.bfq.weight", str(weight))
            else:
                self._w(f"{field}.weight", path, "io.weight", str(blkio_weight_to_io_weight(weight)))
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
                self._w(
                    f"{field}.weightDevice[{i}]",
                    path,
                    "io.bfq.weight",
                    f"{int(wd['major'])}:{int(wd['minor'])} {int(wd['weight'])}",
                )
        for key, name in (
            ("throttleReadBpsDevice", "rbps"),
            ("throttleWriteBpsDevice", "wbps"),
            ("throttleReadIOPSDevice", "riops"),
            ("throttleWriteIOPSDevice", "wiops"),
        ):
            for i, td in enumerate(bio.get(key) or []):
                self._w(
                    f"{field}.{key}[{i}]",
                    path,
                    "io.max",
                    f"{int(td['major'])}:{int(td['minor'])} {name}={int(td['rate'])}",
                )

    # -- freezer -----------------------------------------------------------------------------

    def _freezer_path(self) -> str:
        path = self.paths[""] if self.mode == "v2" else self.paths.get("freezer")
        if not path:
            raise CgroupError("cannot toggle the freezer: the container has no freezer cgroup")
        return path

    def freeze(self) -> None:
        """Freeze every task of the container and wait until the kernel reports it frozen."""
        path = self._freezer_path()
        if self.mode == "v2":
            self._v2_freezer(path, True)
        else:
            self._v1_freeze(path)

    def thaw(self) -> None:
        """Thaw the container."""
        path = self._freezer_path()
        if self.mode == "v2":
            self._v2_freezer(path, False)
        else:
            self._w("freezer.state", path, "freezer.state", "THAWED")

    def _v1_freeze(self, path: str) -> None:
        state_file = fos.path.join(path, "freezer.state")
        try:
            # runc's loop: a v1 freeze can stay FREEZING while tasks keep appearing; thaw and retry.
            for i in range(1000):
                if i % 50 == 49:
                    _write(state_file, "THAWED")
                    time.sleep(0.01)
                self._w("freezer.state", path, "freezer.state", "FROZEN")
                if i % 25 == 24:
                    time.sleep(0.00001)
                state = _read_text(state_file).strip()
                if state == "FREEZING":
                    continue
                if state == "FROZEN":
                    return
                raise CgroupError(f"freezer.state: unexpected state {state!r} in {state_file} while freezing")
            raise CgroupError(f"freezer.state: {state_file} stayed FREEZING; unable to freeze")
        except BaseException as e:
            try:
                _write(state_file, "THAWED")  # never leave a half-frozen container behind
            except OSError:
                pass
            if isinstance(e, OSError):
                raise CgroupError(f"freezer.state: reading {state_file}: {e.strerror}") from None
            raise

    def _v2_freezer(self, path: str, frozen: bool) -> None:
        target = fos.path.join(path, "cgroup.freeze")
        want = "1" if frozen else "0"
        if not fos.path.exists(target):
            if not frozen:
                return
            raise CgroupError(f"cgroup.freeze: freezer not supported: {target} does not exist")
        self._w("cgroup.freeze", path, "cgroup.freeze", want)
        state = self._v2_state(path)
        expect = "frozen" if frozen else "thawed"
        if state != expect:
            raise CgroupError(f"cgroup.freeze: expected {target} to be {expect} but it is {state}")

    def _v2_state(self, path: str) -> str:
        try:
            value = _read_text(fos.path.join(path, "cgroup.freeze")).strip()
        except FileNotFoundError:
            return "undefined"
        except OSError as e:
            if e.errno == errno.ENODEV:
                return "undefined"
            raise CgroupError(f"reading {path}/cgroup.freeze: {e.strerror}") from None
        if value == "0":
            return "thawed"
        if value != "1":
            raise CgroupError(f"{path}/cgroup.freeze: unknown state {value!r}")
        events = fos.path.join(path, "cgroup.events")
        for _ in range(1000):
            try:
                text = _read_text(events)
            except OSError as e:
                raise CgroupError(f"reading {events}: {e.strerror}") from None
            for line in text.splitlines():
                if line.startswith("frozen "):
                    if line[7:].strip() == "1":
                        return "frozen"
                    break
            else:
                return "undefined"
            time.sleep(0.01)
        raise CgroupError(f"timed out after 10s waiting for {path} to freeze")

    def freezer_state(self) -> str:
        """ "frozen", "thawed" or "undefined" (no freezer)."""
        if self.mode == "v2":
            return self._v2_state(self.paths[""])
        path = self.paths.get("freezer")
        if not path:
            return "undefined"
        for _ in range(10000):
            try:
                state = _read_text(fos.path.join(path, "freezer.state")).strip()
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENODEV):
                    return "undefined"
                raise CgroupError(f"reading {path}/freezer.state: {e.strerror}") from None
            if state == "THAWED":
                return "thawed"
            if state == "FROZEN":
                try:
                    own = _read_text(fos.path.join(path, "freezer.self_freezing")).strip()
                except OSError:
                    return "frozen"
                # frozen only through an ancestor counts as thawed for this container, as in runc
                return "frozen" if own == "1" else "thawed"
            if state == "FREEZING":
                time.sleep(0.001)
                continue
            raise CgroupError(f"{path}/freezer.state: unknown state {state!r}")
        raise CgroupError(f"{path}/freezer.state: stuck in FREEZING")

    # -- queries -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Usage statistics shaped like the "data" object of ``runc events --stats``."""
        try:
            if self.mode == "v2":
                return self._stats_v2()
            return self._stats_v1()
        except (OSError, ValueError) as e:
            raise CgroupError(f"reading cgroup statistics: {e}") from None

    def _stats_v1(self) -> dict[str, Any]:
        usage: dict[str, Any] = {}
        throttling: dict[str, Any] = {}
        kernel = user = 0
        acct = self.paths.get("cpuacct")
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
        cpu_path = self.paths.get("cpu")
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
        cs = self.paths.get("cpuset")
        if cs and fos.path.isdir(cs):
            out["cpuset"] = _cpuset_stats(cs)
        mp = self.paths.get("memory")
        if mp and fos.path.isdir(mp):
            out["memory"] = _memory_stats_v1(mp)
        pp = self.paths.get("pids")
        if pp and fos.path.isdir(pp):
            cur = _read_uint(fos.path.join(pp, "pids.current"))
            lim = _read_uint(fos.path.join(pp, "pids.max"))
            out["pids"] = _pids_dict(cur, 0 if lim == _MAX_U64 else lim)
        bp = self.paths.get("blkio")
        if bp and fos.path.isdir(bp):
            out["blkio"] = _blkio_stats_v1(bp)
        hp, v2 = self._hugetlb_target()
        if hp and fos.path.isdir(hp):
            out["hugetlb"] = _hugetlb_stats(hp, v2)
        return out

    def _stats_v2(self) -> dict[str, Any]:
        path = self.paths[""]
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

    # -- destroy -----------------------------------------------------------------------------

    # -- checks before create -----------------------------------------------------------------

    def check_resources(self, resources: dict[str, Any] | None) -> None:
        """Refuse, before anything is made, ``linux.resources.unified`` next to limits that this
        layout keeps in v1 hierarchies: runc allows ``unified`` on cgroup v2 only. (On hybrid hosts
        rune writes ``unified`` alone to the unified hierarchy; see the module notes.)"""
        res = resources or {}
        if not res.get("unified") or self.mode == "v2":
            return
        v1 = [k for k in ("cpu", "memory", "pids", "blockIO", "network", "rdma") if res.get(k)]
        if res.get("hugepageLimits") and self._hugetlb_target()[1] is False:
            v1.append("hugepageLimits")
        if self.mode == "v1" or "" not in self.paths:
            raise CgroupError("invalid configuration: cannot use unified on cgroup v1 "
                              "(linux.resources.unified: this host has no cgroup v2 hierarchy)")
        if v1:
            raise CgroupError("invalid configuration: cannot use unified on cgroup v1 (linux.resources.unified "
                              f"together with {', '.join('linux.resources.' + k for k in v1)}, which this "
                              "hybrid host keeps in cgroup v1 hierarchies)")

    # -- events -------------------------------------------------------------------------------

    def oom_watcher(self) -> OomWatcher:
        """What `events` waits on for OOM kills in the container's memory cgroup."""
        if self.mode == "v2":
            return OomWatcher(None, fos.path.join(self.paths[""], "memory.events"))
        path = self.paths.get("memory")
        if not path:
            raise CgroupError("events: the container has no memory cgroup to watch for OOM kills")
        return OomWatcher(path, None)

    # -- exec --cgroup ------------------------------------------------------------------------

    def sub_paths(self, specs: list[str]) -> dict[str, str]:
        """The cgroup paths for `exec --cgroup`: each spec is ``[ctrl[,ctrl...]:]path`` relative to
        the container's cgroup; a spec without a controller (the only form on v2) applies to every
        hierarchy and must be the only one. runc 1.1's rules and words."""
        subs: dict[str, str] = {}
        for spec in specs:
            parts = spec.split(":")
            if len(parts) > 2:
                raise CgroupError(f"invalid --cgroup argument: {spec}")
            if len(parts) == 1:
                if len(specs) != 1:
                    raise CgroupError(f"invalid --cgroup argument: {spec} (missing <controller>: prefix)")
                subs[""] = spec
            else:
                for ctrl in parts[0].split(","):
                    subs[ctrl] = parts[1]
        paths = dict(self.paths)
        if "" in subs:
            targets = {key: subs[""] for key in paths}
        else:
            targets = {}
            for ctrl, sub in subs.items():
                if ctrl not in paths:
                    raise CgroupError(f"unknown controller {ctrl} in SubCgroupPaths (--cgroup {ctrl}:{sub}; "
                                      f"this container has: {', '.join(k or '(unified)' for k in paths)})")
                targets[ctrl] = sub
        for key, sub in targets.items():
            joined = fos.path.normpath(fos.path.join(paths[key], sub))
            if not _under(joined, paths[key]):
                raise CgroupError(f"{sub} is not a sub cgroup path (--cgroup: it leaves the container's cgroup)")
            paths[key] = joined
        return paths

    def join(self, pid: int, paths: dict[str, str]) -> None:
        """Move ``pid`` into existing cgroups ``paths`` (from :meth:`sub_paths`); nothing is created.
        Hierarchies the container itself only joins on a best-effort basis stay best-effort where
        the path is the container's own."""
        for key, path in paths.items():
            target = fos.path.join(path, "cgroup.procs")
            try:
                _write_pid(target, pid)
            except OSError as e:
                if self._join_only(key) and path == self.paths.get(key):
                    continue
                reason = (e.strerror or str(e)).lower()
                raise CgroupError(f"error adding pid {pid} to cgroups: failed to write {pid}: "
                                  f"{target}: {reason}") from None

def _write_pid(target: str, pid: int) -> None:
    """Write ``pid`` to a cgroup.procs file; EINVAL (the task may still be TASK_NEW) is retried, as runc does."""
    for attempt in range(5):
        try:
            _write(target, str(pid))
            return
        except OSError as e:
            if e.errno != errno.EINVAL or attempt == 4:
                raise
            time.sleep(0.03)


class OomWatcher:
    """OOM notifications of one memory cgroup.

    v1: an eventfd registered on memory.oom_control through cgroup.event_control (the kernel signals
    each OOM in the cgroup, and the cgroup's removal). v2: the ``oom_kill`` count of memory.events,
    read when :meth:`wait` times out or returns (cgroup2 files have no eventfd interface).
    """

    def __init__(self, v1_path: str | None, v2_events: str | None) -> None:
        self.v1_path, self.v2_events = v1_path, v2_events
        self.efd = -1
        self._last = 0
        if v1_path is not None:
            control = fos.path.join(v1_path, "cgroup.event_control")
            try:
                ofd = fos.open(fos.path.join(v1_path, "memory.oom_control"), fos.O_RDONLY | fos.O_CLOEXEC)
            except OSError as e:
                raise CgroupError(f"events: opening {v1_path}/memory.oom_control: {e.strerror}") from None
            try:
                self.efd = fos.eventfd(0, fos.EFD_CLOEXEC | fos.EFD_NONBLOCK)
                _write(control, f"{self.efd} {ofd}")
            except OSError as e:
                self.close()
                raise CgroupError(f"events: registering for OOM notifications in {control}: {e.strerror}") from None
            finally:
                fos.close(ofd)  # the kernel holds its own reference
        else:
            self._last = self._v2_count() or 0

    def _v2_count(self) -> int | None:
        assert self.v2_events is not None
        try:
            return _read_key_values(self.v2_events).get("oom_kill", 0)
        except (OSError, CgroupError, ValueError):
            return None

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds; the number of OOM events seen, or None once the cgroup is gone."""
        import select

        if self.v1_path is not None:
            ready, _, _ = select.select([self.efd], [], [], max(timeout, 0))
            if not ready:
                return 0
            try:
                n = int.from_bytes(fos.read(self.efd, 8), "little")
            except BlockingIOError:
                return 0
            # the kernel also signals when the cgroup is removed
            if not fos.path.exists(fos.path.join(self.v1_path, "cgroup.event_control")):
                return None
            return n
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            count = self._v2_count()
            if count is None:
                return None
            if count > self._last:
                new, self._last = count - self._last, count
                return new
            left = deadline - time.monotonic()
            if left <= 0:
                return 0
            time.sleep(min(left, 0.1))

    def close(self) -> None:
        if self.efd >= 0:
            fos.close(self.efd)
            self.efd = -1


def _rdma_line(dev: str, lim: dict[str, Any]) -> str:
    line = dev
    if lim.get("hcaHandles") is not None:
        line += f" hca_handle={int(lim['hcaHandles'])}"
    if lim.get("hcaObjects") is not None:
        line += f" hca_object={int(lim['hcaObjects'])}"
    return line


def _needs_domain_controller(res: dict[str, Any]) -> bool:
    mem = res.get("memory") or {}
    cpu = res.get("cpu") or {}
    bio = res.get("blockIO") or {}
    io_keys = (
        "weight",
        "weightDevice",
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOPSDevice",
        "throttleWriteIOPSDevice",
    )
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


# --------------------------------------------------------------------------------------------
# validation


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
_I64_MAX = (1 << 63) - 1


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
        try:
            DeviceEmulator.from_rules(_oci_device_rules(res["devices"]))
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
        for key in (
            "throttleReadBpsDevice",
            "throttleWriteBpsDevice",
            "throttleReadIOPSDevice",
            "throttleWriteIOPSDevice",
        ):
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

