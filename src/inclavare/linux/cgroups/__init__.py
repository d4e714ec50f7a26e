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

The package, by responsibility (each module says what it owns):

  (here)      where the cgroups are: v1/v2/hybrid detection from mountinfo and /proc/self/cgroup, and
              cgroupsPath -> directories; and the cgroupfs file access that the modules share: every
              write and mkdir goes through :func:`_write` and :func:`_make_dir` of this module, which a
              test can replace
  manager     :class:`Manager`: create, set, apply, freeze/thaw, `exec --cgroup`; extends
              :class:`inclavare.linux.cgpaths.CgroupPaths` (the state.json record, pids, destroy); and
              :func:`validate`, the checks of ``linux.resources`` that need no system
  v1, v2      directories and limits of each hierarchy kind (hybrid hosts use v1 and the unified part)
  devices     default device rules and the devices cgroup emulator; ebpf: the v2 device filter program
  stats       ``events --stats`` counters; events: OOM notifications

Everything is stdlib only and does no work at import time. The other public names are loaded from their
modules on first use, so `rune create` on a v1 or hybrid host loads this module, manager, devices and v1
(never v2, ebpf (ctypes), stats or events). Every module costs its own import (~0.15 ms on the create path),
so what every `create` needs lives in few modules: the layout and the shared file helpers here, the
resource checks with the manager that applies them.

May import: formats (and inclavare.errors, _fastos), like the rest of ``linux``.
"""

from __future__ import annotations

import errno
import time

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError, ConfigError
from inclavare.linux.cgpaths import CgroupPaths as CgroupPaths  # the base of Manager, loaded anyway
from inclavare.linux.cgpaths import _log as _log  # for the modules of this package
from inclavare.linux.cgpaths import _read_text as _read_text

# name -> (module of this package, attribute there); the one table of what the package offers.
_LAZY: dict[str, tuple[str, str]] = {
    "Manager": ("manager", "Manager"),
    "DEFAULT_DEVICE_RULES": ("devices", "DEFAULT_DEVICE_RULES"),
    "DeviceEmulator": ("devices", "DeviceEmulator"),
    "Rule": ("devices", "Rule"),
    "default_device_rules": ("devices", "default_device_rules"),
    "device_filter_program": ("ebpf", "device_filter_program"),
    "blkio_weight_to_io_weight": ("v2", "blkio_weight_to_io_weight"),
    "memory_swap_to_v2": ("v2", "memory_swap_to_v2"),
    "shares_to_weight": ("v2", "shares_to_weight"),
    "validate": ("manager", "validate"),
    "OomWatcher": ("events", "OomWatcher"),
    # helpers tests reached under these names before the split
    "_oci_device_rules": ("devices", "oci_device_rules"),
    "_perm_bits": ("devices", "perm_bits"),
    "_rule_string": ("devices", "rule_string"),
    "_bpf_query_device_progs": ("ebpf", "_bpf_query_device_progs"),
}

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
    "forget_layout",
    "device_filter_program",
    "memory_swap_to_v2",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "shares_to_weight",
    "validate",
]

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from inclavare.linux.cgroups.devices import DEFAULT_DEVICE_RULES as DEFAULT_DEVICE_RULES
    from inclavare.linux.cgroups.devices import DeviceEmulator as DeviceEmulator
    from inclavare.linux.cgroups.devices import Rule as Rule
    from inclavare.linux.cgroups.devices import default_device_rules as default_device_rules
    from inclavare.linux.cgroups.devices import oci_device_rules as _oci_device_rules  # noqa: F401
    from inclavare.linux.cgroups.devices import perm_bits as _perm_bits  # noqa: F401
    from inclavare.linux.cgroups.devices import rule_string as _rule_string  # noqa: F401
    from inclavare.linux.cgroups.ebpf import _bpf_query_device_progs as _bpf_query_device_progs  # noqa: F401
    from inclavare.linux.cgroups.ebpf import device_filter_program as device_filter_program
    from inclavare.linux.cgroups.events import OomWatcher as OomWatcher
    from inclavare.linux.cgroups.manager import Manager as Manager
    from inclavare.linux.cgroups.manager import validate as validate
    from inclavare.linux.cgroups.v2 import blkio_weight_to_io_weight as blkio_weight_to_io_weight
    from inclavare.linux.cgroups.v2 import memory_swap_to_v2 as memory_swap_to_v2
    from inclavare.linux.cgroups.v2 import shares_to_weight as shares_to_weight


# --------------------------------------------------------------------------------------------
# cgroupfs file access shared by the modules of this package

CGROUP_ROOT = "/sys/fs/cgroup"
_MAX_U64 = (1 << 64) - 1


def _write(path: str, data: str) -> None:
    """Write ``data`` to an existing cgroup file in one write(2), as the kernel wants it."""
    fd = fos.open(path, fos.O_WRONLY | fos.O_CLOEXEC)
    try:
        fos.write(fd, data.encode())
    finally:
        fos.close(fd)


def _make_dir(path: str) -> None:
    fos.mkdir(path, 0o755)


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


def _fmt_data(data: str) -> str:
    return f'"{data}"' if (not data or any(c.isspace() for c in data)) else data


def _write_error(field: str, data: str, path: str, exc: OSError, extra: str = "") -> CgroupError:
    """The one-line error for a failed write of ``data`` to ``path``, naming the spec ``field``."""
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
    """:func:`_read_uint`, or None when the file does not exist."""
    try:
        return _read_uint(path)
    except FileNotFoundError:
        return None


def _read_key_values(path: str) -> dict[str, int]:
    """A flat-keyed file ("key value" lines, e.g. cpu.stat); lines that do not parse are skipped."""
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


def _under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (plain string paths, already clean)."""
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _join(*parts: str) -> str:
    """filepath.Join: join the non-empty parts and clean the result."""
    joined = "/".join(p for p in parts if p)
    out = fos.path.normpath(joined) if joined else ""
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out


def _rdma_line(dev: str, lim: dict[str, Any]) -> str:
    """One rdma.max line (the same format on v1 and v2)."""
    line = dev
    if lim.get("hcaHandles") is not None:
        line += f" hca_handle={int(lim['hcaHandles'])}"
    if lim.get("hcaObjects") is not None:
        line += f" hca_object={int(lim['hcaObjects'])}"
    return line


#: OCI ``blockIO`` throttle lists -> (the cgroup v1 file, the key in v2's ``io.max``)
_THROTTLE_DEVICES: dict[str, tuple[str, str]] = {
    "throttleReadBpsDevice": ("blkio.throttle.read_bps_device", "rbps"),
    "throttleWriteBpsDevice": ("blkio.throttle.write_bps_device", "wbps"),
    "throttleReadIOPSDevice": ("blkio.throttle.read_iops_device", "riops"),
    "throttleWriteIOPSDevice": ("blkio.throttle.write_iops_device", "wiops"),
}


def _throttles(bio: dict[str, Any], field: str) -> list[tuple[str, str, str, str, int]]:
    """The throttle entries of a ``blockIO`` object, each as (its field, v1 file, io.max key, "major:minor",
    rate), in runc's order: by list, then as given."""
    return [(f"{field}.{key}[{i}]", v1_file, v2_key, f"{int(td['major'])}:{int(td['minor'])}", int(td["rate"]))
            for key, (v1_file, v2_key) in _THROTTLE_DEVICES.items() for i, td in enumerate(bio.get(key) or [])]


# --------------------------------------------------------------------------------------------
# where the cgroups are: the layout (v1, v2 or hybrid) from mountinfo and /proc/self/cgroup, and a
# container's cgroup directories under it from ``linux.cgroupsPath`` (runc's path rules). Detection
# reads two proc files and runs once per process (:func:`current_layout`); nothing here writes.

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


def forget_layout() -> None:
    """Drop the cached layout: the process moved to other cgroups, so its own paths (``own``) changed."""
    global _LAYOUT
    _LAYOUT = None


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


def resolve(
    cgroups_path: str, container_id: str, layout: Layout | None = None
) -> tuple[str, dict[str, str], dict[str, str]]:
    """The container's cgroup directories from ``linux.cgroupsPath``, by runc's rules: (mode, paths, mounts)
    as :class:`~inclavare.linux.cgpaths.CgroupPaths` takes them.  Nothing on disk is touched."""
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
        return "v2", paths, mounts
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
    return layout.mode, paths, mounts


# --------------------------------------------------------------------------------------------
# the lazy names


def __getattr__(name: str) -> object:
    """Load a name of :data:`_LAZY` from its module on first access (PEP 562), then keep it here."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = where
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[attr]), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
