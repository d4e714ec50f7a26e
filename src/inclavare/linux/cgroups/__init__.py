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

  layout      v1/v2/hybrid detection from mountinfo and /proc/self/cgroup; cgroupsPath -> directories
  manager     :class:`Manager`: create, set, apply, freeze/thaw, `exec --cgroup`; extends
              :class:`inclavare.linux.cgpaths.CgroupPaths` (the state.json record, pids, destroy)
  v1, v2      directories and limits of each hierarchy kind (hybrid hosts use v1 and the unified part)
  devices     default device rules and the devices cgroup emulator; ebpf: the v2 device filter program
  validation  checks of ``linux.resources`` that need no system
  stats       ``events --stats`` counters; events: OOM notifications
  (here)      cgroupfs file access that the modules share: every write and mkdir goes through
              :func:`_write` and :func:`_make_dir` of this module, which a test can replace

Everything is stdlib only and does no work at import time. Each public name is loaded from its module
on first use, so `rune create` on a v1 or hybrid host never loads v2, ebpf (ctypes), stats or events,
and with an empty ``linux.resources`` not validation either. (Every module costs its own import; that
is why the shared file helpers live here rather than in a module of their own.)

May import: formats (and inclavare.errors, _fastos), like the rest of ``linux``.
"""

from __future__ import annotations

import errno
import time

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError
from inclavare.linux.cgpaths import CgroupPaths as CgroupPaths  # the base of Manager, loaded anyway
from inclavare.linux.cgpaths import _log as _log  # for the modules of this package
from inclavare.linux.cgpaths import _read_text as _read_text

# name -> (module of this package, attribute there); the one table of what the package offers.
_LAZY: dict[str, tuple[str, str]] = {
    "Hierarchy": ("layout", "Hierarchy"),
    "Layout": ("layout", "Layout"),
    "V1_CONTROLLERS": ("layout", "V1_CONTROLLERS"),
    "V1_SUBSYSTEMS": ("layout", "V1_SUBSYSTEMS"),
    "clean_path": ("layout", "clean_path"),
    "current_layout": ("layout", "current_layout"),
    "detect_layout": ("layout", "detect_layout"),
    "parse_mountinfo": ("layout", "parse_mountinfo"),
    "parse_proc_cgroup": ("layout", "parse_proc_cgroup"),
    "Manager": ("manager", "Manager"),
    "DEFAULT_DEVICE_RULES": ("devices", "DEFAULT_DEVICE_RULES"),
    "DeviceEmulator": ("devices", "DeviceEmulator"),
    "Rule": ("devices", "Rule"),
    "default_device_rules": ("devices", "default_device_rules"),
    "device_filter_program": ("ebpf", "device_filter_program"),
    "blkio_weight_to_io_weight": ("v2", "blkio_weight_to_io_weight"),
    "memory_swap_to_v2": ("v2", "memory_swap_to_v2"),
    "shares_to_weight": ("v2", "shares_to_weight"),
    "validate": ("validation", "validate"),
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
    from inclavare.linux.cgroups.layout import V1_CONTROLLERS as V1_CONTROLLERS
    from inclavare.linux.cgroups.layout import V1_SUBSYSTEMS as V1_SUBSYSTEMS
    from inclavare.linux.cgroups.layout import Hierarchy as Hierarchy
    from inclavare.linux.cgroups.layout import Layout as Layout
    from inclavare.linux.cgroups.layout import clean_path as clean_path
    from inclavare.linux.cgroups.layout import current_layout as current_layout
    from inclavare.linux.cgroups.layout import detect_layout as detect_layout
    from inclavare.linux.cgroups.layout import parse_mountinfo as parse_mountinfo
    from inclavare.linux.cgroups.layout import parse_proc_cgroup as parse_proc_cgroup
    from inclavare.linux.cgroups.manager import Manager as Manager
    from inclavare.linux.cgroups.v2 import blkio_weight_to_io_weight as blkio_weight_to_io_weight
    from inclavare.linux.cgroups.v2 import memory_swap_to_v2 as memory_swap_to_v2
    from inclavare.linux.cgroups.v2 import shares_to_weight as shares_to_weight
    from inclavare.linux.cgroups.validation import validate as validate


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
