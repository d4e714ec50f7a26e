"""Where the cgroups are: the layout (v1, v2 or hybrid) from mountinfo and /proc/self/cgroup, and a
container's cgroup directories under it from ``linux.cgroupsPath`` (runc's path rules).

Detection reads two proc files and runs once per process (:func:`current_layout`); nothing here writes.
"""

from __future__ import annotations

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError, ConfigError
from inclavare.linux.cgroups import CGROUP_ROOT, _join, _log, _read_text, _under

__all__ = [
    "CGROUP_ROOT", "Hierarchy", "Layout", "V1_CONTROLLERS", "V1_SUBSYSTEMS", "clean_path", "current_layout",
    "detect_layout", "parse_mountinfo", "parse_proc_cgroup", "resolve",
]  # fmt: skip

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
