"""The :class:`Manager` of one container's cgroups: creates the directories, applies the spec's
resources, moves processes in, freezes and thaws, answers `events`; the record and removal it
inherits from :class:`~inclavare.linux.cgpaths.CgroupPaths`.

The resource checks that need no system (:func:`validate`) live here too: `create` and `update` run them
before anything is written, and every `create` loads this module anyway. The rest of the work lives in
sibling modules that the methods import when first needed, so that `rune create` loads only what its
layout uses: :mod:`.v1` or :mod:`.v2` (directories and limits), :mod:`.devices` (and :mod:`.ebpf` on v2
only), :mod:`.stats` and :mod:`.events` (only for `events`); where the cgroups are is the package's.
"""

from __future__ import annotations

import errno
import time

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError, ConfigError
from inclavare.linux import cgroups as _cg
from inclavare.linux.cgpaths import CgroupPaths
from inclavare.linux.cgroups import _MAX_U64, _THROTTLE_DEVICES, _log, _read_text, _under, _write_error

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from inclavare.linux.cgroups import Layout
    from inclavare.linux.cgroups.devices import Rule
    from inclavare.linux.cgroups.events import OomWatcher

__all__ = ["Manager", "validate"]


class Manager(CgroupPaths):
    """The cgroups of one container (queries and removal are :class:`CgroupPaths`').

    Build one with :meth:`for_container` (resolves paths, touches nothing) or :meth:`from_dict`
    (what :meth:`to_dict` saved in state.json).  ``paths`` maps subsystem names ("" for the
    unified hierarchy) to directories; ``mode`` is "v1", "hybrid" or "v2".
    """

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def for_container(cls, cgroups_path: str, container_id: str, layout: Layout | None = None) -> Manager:
        """Resolve the container's cgroup directories from ``linux.cgroupsPath`` (runc's rules) in
        ``layout`` (this process's, detected once, when None)."""
        return cls(*_cg.resolve(cgroups_path, container_id, layout))

    # -- helpers (also called by the v1 and v2 modules of this package) ---------------------

    def _mkdir(self, path: str) -> bool:
        """mkdir one cgroup directory, recording it; False if it existed.  ENOENT passes through."""
        try:
            _cg._make_dir(path)
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
        if self.mode == "v2":
            from inclavare.linux.cgroups import v2

            v2.create(self, res)
        else:
            from inclavare.linux.cgroups import v1

            v1.create(self, res)

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
            _cg._write_pid(target, pid)
        except OSError as e:
            raise CgroupError(f"adding pid {pid} to {target}: {e.strerror}") from None

    # -- set ---------------------------------------------------------------------------------

    def _w(self, field: str, path: str | None, name: str, data: str, missing: str = "") -> None:
        """Write ``data`` to ``path``/``name`` for spec ``field``; ``path`` None means the controller
        (``missing`` names it) is not there, which fails as every other write does."""
        if path is None:
            raise CgroupError(f"{field}: cannot set this limit: {missing or 'controller'} is not available")
        target = fos.path.join(path, name)
        try:
            _cg._write(target, data)
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
        if res:  # an empty set has nothing to check
            validate(res, field)
        self.check_resources(res)  # before any write
        rules: list[Rule] | None = None
        if not skip_devices:
            from inclavare.linux.cgroups.devices import default_device_rules, oci_device_rules

            devs = list(res.get("devices") or [])
            if default_devices:
                devs += default_device_rules(linux_devices)
            rules = oci_device_rules(devs)
        if self.mode == "v2":
            from inclavare.linux.cgroups import v2

            v2.set_resources(self, res, rules, field)
        else:
            from inclavare.linux.cgroups import v1

            v1.set_resources(self, res, rules, field)

    # -- both hierarchies: hugetlb (v1 or unified) and `unified` keys ------------------------

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
        """``linux.resources.unified``: raw key/value writes; a missing controller is named as such."""
        for key, value in unified.items():
            target = fos.path.join(path, key)
            try:
                _cg._write(target, str(value))
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
                    _cg._write(state_file, "THAWED")
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
                _cg._write(state_file, "THAWED")  # never leave a half-frozen container behind
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
        from inclavare.linux.cgroups import stats

        try:
            if self.mode == "v2":
                return stats.stats_v2(self)
            return stats.stats_v1(self)
        except (OSError, ValueError) as e:
            raise CgroupError(f"reading cgroup statistics: {e}") from None

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

    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in the container's memory cgroup (0 when unknown)."""
        if self.mode == "v2":
            path = fos.path.join(self.paths.get("", ""), "memory.events")
        else:
            path = fos.path.join(self.paths.get("memory", ""), "memory.oom_control")
        try:
            return _cg._read_key_values(path).get("oom_kill", 0)
        except (OSError, CgroupError):
            return 0

    def oom_watcher(self) -> OomWatcher:
        """What `events` waits on for OOM kills in the container's memory cgroup."""
        from inclavare.linux.cgroups.events import OomWatcher

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
                _cg._write_pid(target, pid)
            except OSError as e:
                if self._join_only(key) and path == self.paths.get(key):
                    continue
                reason = (e.strerror or str(e)).lower()
                raise CgroupError(f"error adding pid {pid} to cgroups: failed to write {pid}: "
                                  f"{target}: {reason}") from None


# --------------------------------------------------------------------------------------------
# checks of the spec's ``linux.resources`` that need no system: types, ranges and formats, each failure a
# ConfigError naming the field. `create` and `update` run them before anything is written.


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
