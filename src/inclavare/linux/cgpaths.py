"""A container's cgroup directories as state.json records them, and what needs no more than that.

`delete`, `kill` and `state`-side commands run once per container and only list the processes of a
container's cgroups and remove the directories; they should not pay for importing the package
:mod:`inclavare.linux.cgroups` (layout detection, resources, devices, stats) that `create` and
`update` need. :class:`inclavare.linux.cgroups.Manager` extends :class:`CgroupPaths`.
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.
import errno
import time

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms per call
from inclavare.errors import CgroupError

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Self

# Paths joined on a best-effort basis (runc's NameGroup{Join: true}): errors are ignored.
_JOIN_ONLY = frozenset({"name=systemd", ""})


def _log(level: str, msg: str, *args: "Any") -> None:
    """Log through the stdlib logging module, imported only when something is worth saying."""
    import logging

    getattr(logging.getLogger("inclavare.linux.cgroups"), level)(msg, *args)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _dirs_below(top: str) -> "Iterator[str]":
    """``top`` and every directory below it, top-down, as fos.walk yields them (nothing if ``top`` is gone)."""
    try:
        with fos.scandir(top) as it:
            subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    yield top
    for sub in subs:
        yield from _dirs_below(sub)


def _rmdir(path: str) -> "str | None":
    """rmdir ``path``: None when it is gone (removed or absent), else the error text."""
    try:
        fos.rmdir(path)
        return None
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror or str(e)


def _remove_tree(path: str) -> str:
    """rmdir ``path`` after its sub-cgroups; returns the last error text ("" when removed/absent)."""
    first = _rmdir(path)
    if first is None:
        return ""
    try:
        entries = list(fos.scandir(path))
    except FileNotFoundError:
        return ""
    except OSError as e:
        return e.strerror or str(e)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            err = _remove_tree(entry.path)
            if err:
                return err
    last = _rmdir(path)
    return "" if last is None else (last or first)


class CgroupPaths:
    """The cgroup directories of one container: ``paths`` maps subsystem names ("" for the unified
    hierarchy) to directories, ``mounts`` the same keys to mount points, ``created`` the directories
    create made; ``mode`` is "v1", "hybrid" or "v2"."""

    def __init__(
        self,
        mode: str,
        paths: dict[str, str],
        mounts: dict[str, str],
        created: list[str] | None = None,
    ) -> None:
        self.mode = mode
        self.paths = paths
        self.mounts = mounts  # key of paths -> mount point of that hierarchy
        self.created: list[str] = list(created or [])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, paths={self.paths!r})"

    def to_dict(self) -> "dict[str, Any]":
        """A JSON-able record of these cgroups for state.json."""
        return {
            "version": 1,
            "mode": self.mode,
            "paths": dict(self.paths),
            "mounts": dict(self.mounts),
            "created": list(self.created),
        }

    @classmethod
    def from_dict(cls, d: "dict[str, Any]") -> "Self":
        """Rebuild the record (or manager) from :meth:`to_dict` output without looking at the system."""
        try:
            mode = d["mode"]
            paths = {str(k): str(v) for k, v in d["paths"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise CgroupError(f"saved cgroup state is malformed: {e!r}") from None
        if mode not in ("v1", "hybrid", "v2"):
            raise CgroupError(f"saved cgroup state has unknown mode {mode!r}")
        mounts = {str(k): str(v) for k, v in (d.get("mounts") or {}).items()}
        return cls(mode, paths, mounts, [str(p) for p in d.get("created") or []])

    def _join_only(self, key: str) -> bool:
        """Whether failing to create/join this path is ignored (runc's NameGroup{Join: true})."""
        return key in _JOIN_ONLY and not (key == "" and self.mode == "v2")

    def _unique_paths(self) -> list[str]:
        seen: list[str] = []
        for p in self.paths.values():
            if p not in seen:
                seen.append(p)
        return seen

    def _main_path(self) -> str:
        return self.paths[""] if self.mode == "v2" else self.paths.get("devices") or next(iter(self.paths.values()))

    def exists(self) -> bool:
        """Whether the container's cgroup (devices cgroup on v1, the v2 directory) exists."""
        return fos.path.isdir(self._main_path())

    def pids(self) -> list[int]:
        """Every process in the container's cgroup and its sub-cgroups."""
        top = self._main_path()
        out: list[int] = []
        for dirpath in _dirs_below(top):
            try:
                text = _read_text(fos.path.join(dirpath, "cgroup.procs"))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise CgroupError(f"reading {dirpath}/cgroup.procs: {e.strerror}") from None
            out.extend(int(x) for x in text.split())
        return out

    def destroy(self) -> None:
        """Remove the container's cgroups (and sub-cgroups); ENOENT is fine, EBUSY is retried."""
        remaining = self._unique_paths()
        delay = 0.01
        last: dict[str, str] = {}
        for attempt in range(5):
            if attempt:
                time.sleep(delay)
                delay *= 2
            still = []
            for p in remaining:
                err = _remove_tree(p)
                if fos.path.isdir(p):
                    still.append(p)
                    last[p] = err or "still exists"
            remaining = still
            if not remaining:
                break
        if remaining:
            detail = "; ".join(f"{p}: {last[p]}" for p in remaining)
            raise CgroupError(f"removing cgroups: {detail}")
        leaves = set(self.paths.values())
        for p in reversed(self.created):
            if p in leaves:
                continue
            try:
                fos.rmdir(p)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST):
                    _log("debug", "cannot remove cgroup parent %s: %s", p, e)
        self.created = []
