"""Container state on disk: one directory per container under the runtime root.

``state.json`` is written atomically (temp file + rename) and every command that changes a
container holds an exclusive flock on the container's directory, so concurrent calls are safe and a
runtime killed at any point leaves a directory that ``delete --force`` can clean. As runc's, the file
is not fsync'd: it describes processes that do not outlive a crash of the machine, and a file a crash
leaves empty or truncated loads as an incomplete container, which ``delete --force`` removes.
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.
import time

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~2 ms per call
from inclavare.errors import ContainerError
from inclavare.formats import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "state.json"
FIFO = "exec.fifo"


class _Unset:
    """A key state.json does not have (yet): distinct from a recorded null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: "Any" = _Unset()

# state.json's keys in the order the runtime writes them; the executor's keys (State.extra) go before
# pid_start, which create records last. Engines and tests read the file: keep names and order.
_HEAD = ("id", "pid", "bundle", "rootfs", "created", "owner", "annotations", "config", "creating", "cgroup",
         "freezer_file")
_TAIL = ("pid_start", "incomplete", "corrupt")
_KNOWN = frozenset(_HEAD + _TAIL)
_UNSET_AT_FIRST = _HEAD[2:] + _TAIL


class State:
    """One container's state (its state.json), typed. A plain class with __slots__: it is built on every
    `rune` call. A key the file lacks is :data:`UNSET` here and stays absent when saved.

    ``pid_start``: the init's start time in clock ticks (tells a reused pid apart); ``cgroup``: the
    cgroup manager's record; ``freezer_file``: where `paused` is read; ``creating``: create has not
    finished; ``incomplete``: no (readable) state.json, only the directory (``corrupt``: why);
    ``extra``: the keys an executor recorded (:meth:`Executor.state_fields`), kept as they are.
    """

    __slots__ = ("id", "pid", "bundle", "rootfs", "created", "owner", "annotations", "config", "creating",
                 "cgroup", "freezer_file", "pid_start", "incomplete", "corrupt", "extra")
    id: str
    pid: int
    bundle: "Any"
    rootfs: "Any"
    created: "Any"
    owner: "Any"
    annotations: "Any"
    config: "Any"
    creating: "Any"
    cgroup: "Any"
    freezer_file: "Any"
    pid_start: "Any"
    incomplete: "Any"
    corrupt: "Any"
    extra: "dict[str, Any]"

    def __init__(self, cid: str, pid: int = 0) -> None:
        self.id = cid
        self.pid = pid
        for k in _UNSET_AT_FIRST:
            setattr(self, k, UNSET)
        self.extra = {}

    @classmethod
    def from_dict(cls, d: "dict[str, Any]") -> "State":
        """From state.json's object; unknown keys go to ``extra``."""
        self = cls(d["id"], d.get("pid", 0))
        for k, v in d.items():
            if k in _KNOWN:
                setattr(self, k, v)
            elif k != "id" and k != "pid":
                self.extra[k] = v
        return self

    def to_dict(self) -> "dict[str, Any]":
        """state.json's object: the keys that are set, in the runtime's order."""
        out: dict[str, Any] = {"id": self.id, "pid": self.pid}
        for k in _HEAD[2:]:
            v = getattr(self, k)
            if v is not UNSET:
                out[k] = v
        out.update(self.extra)
        for k in _TAIL:
            v = getattr(self, k)
            if v is not UNSET:
                out[k] = v
        return out

    # the values with their defaults, for readers
    def start_time(self) -> "str | None":
        return None if self.pid_start is UNSET else self.pid_start

    def config_dict(self) -> "dict[str, Any]":
        return self.config if isinstance(self.config, dict) else {}

    def hooks(self) -> "dict[str, Any]":
        return self.config_dict().get("hooks") or {}

    def annotations_dict(self) -> "dict[str, Any]":
        return self.annotations if isinstance(self.annotations, dict) else {}

    def is_incomplete(self) -> bool:
        return bool(self.incomplete) and self.incomplete is not UNSET

    def hook_seed(self) -> "dict[str, Any]":
        """What :func:`inclavare.runtime.hooks.hook_state` reads: id, pid, bundle, annotations."""
        return {"id": self.id, "pid": self.pid, "bundle": "" if self.bundle is UNSET else self.bundle,
                "annotations": self.annotations_dict()}


def now_rfc3339() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def not_exist(cid: str, root: str) -> str:
    """runc's words first (containerd, CRI-O and podman match "does not exist"), then which id where."""
    return f'container does not exist: "{cid}" (no state under {root})'


def proc_start_time(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0].decode(), rest[19].decode()


def process_alive(pid: int, start: str | None) -> bool:
    if pid <= 0:
        return False
    st = proc_start_time(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[1] == start


class _Lock:
    def __init__(self, path: str, cid: str, missing_ok: bool, root: str) -> None:
        self.path, self.cid, self.missing_ok, self.root = path, cid, missing_ok, root
        self.fd = -1

    def __enter__(self) -> bool:
        try:
            self.fd = fos.open(self.path, fos.O_RDONLY | fos.O_DIRECTORY | fos.O_CLOEXEC)
        except FileNotFoundError:
            if self.missing_ok:
                return False
            raise ContainerError(not_exist(self.cid, self.root)) from None
        import fcntl  # here: `state` and `list` take no lock

        fcntl.flock(self.fd, fcntl.LOCK_EX)
        # a concurrent delete may have removed the directory while we waited
        return fos.path.isdir(self.path)

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            fos.close(self.fd)
            self.fd = -1


def valid_id(cid: str) -> bool:
    """True for an id runc accepts; else a ContainerError naming it."""
    from inclavare.formats.container_id import problem

    bad = problem(cid)
    if bad is not None:
        raise ContainerError(f"{bad[0]}: {bad[1]}")
    return True


class Store:
    def __init__(self, root: str) -> None:
        self.root = root
        self._valid: set[str] = set()

    def path(self, cid: str, name: str = "") -> str:
        """A container's state directory (or a file in it); a ContainerError for an id runc would refuse, so
        that no id reaches the file system as a path (``../x``) or fails there (too long)."""
        if cid in self._valid or valid_id(cid):
            self._valid.add(cid)
        return fos.path.join(self.root, cid, name) if name else fos.path.join(self.root, cid)

    def make(self, cid: str) -> str:
        try:
            fos.mkdir(self.root, 0o711)  # the common cases without importing os (~1.4 ms)
        except FileExistsError:
            if not fos.path.isdir(self.root):
                import os as real_os

                real_os.makedirs(self.root, 0o711, exist_ok=True)  # its error for a root that is no directory
        except FileNotFoundError:
            import os as real_os

            real_os.makedirs(self.root, 0o711, exist_ok=True)
        d = self.path(cid)
        try:
            fos.mkdir(d, 0o711)
        except FileExistsError:
            raise ContainerError(f'container with given ID already exists: "{cid}" (its state is in {d})') from None
        return d

    def exists(self, cid: str) -> bool:
        return fos.path.isdir(self.path(cid))

    def load(self, cid: str) -> State:
        incomplete = State(cid)
        incomplete.incomplete = True
        try:
            with open(self.path(cid, STATE_FILE), "rb") as f:
                d = json.loads(f.read())
        except FileNotFoundError:
            if self.exists(cid):
                return incomplete  # a create that was interrupted before it recorded anything
            raise ContainerError(not_exist(cid, self.root)) from None
        except ValueError as e:
            incomplete.corrupt = str(e)
            return incomplete
        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            incomplete.corrupt = "state.json: not an object with an id"
            return incomplete
        return State.from_dict(d)

    def save(self, cid: str, state: State) -> None:
        final = self.path(cid, STATE_FILE)
        tmp = final + ".tmp"
        data = json.dumps(state.to_dict()).encode()
        fd = fos.open(tmp, fos.O_WRONLY | fos.O_CREAT | fos.O_TRUNC | fos.O_CLOEXEC, 0o600)
        try:
            fos.write(fd, data)
        finally:
            fos.close(fd)
        fos.rename(tmp, final)

    def lock(self, cid: str, missing_ok: bool = False) -> _Lock:
        """``with store.lock(cid) as exists:`` exclusive flock on the container directory."""
        return _Lock(self.path(cid), cid, missing_ok, self.root)

    def remove(self, cid: str) -> None:
        d = self.path(cid)
        try:
            names = fos.listdir(d)
        except FileNotFoundError:
            return
        for name in names:
            p = fos.path.join(d, name)
            if fos.path.isdir(p) and not fos.path.islink(p):
                import shutil

                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    fos.unlink(p)
                except FileNotFoundError:
                    pass
        try:
            fos.rmdir(d)
        except FileNotFoundError:
            pass

    def ids(self) -> list[str]:
        try:
            from inclavare.formats.container_id import problem

            return sorted(n for n in fos.listdir(self.root)
                          if problem(n) is None and fos.path.isdir(fos.path.join(self.root, n)))
        except FileNotFoundError:
            return []


def status_of(store: Store, state: State) -> str:
    """runc's status rules: no live init -> stopped; frozen -> paused (a created container can be
    paused too); fifo present -> created; else running."""
    if state.is_incomplete():
        return "stopped"
    if not process_alive(int(state.pid or 0), state.start_time()):
        return "stopped"
    freezer = state.freezer_file if state.freezer_file is not UNSET else None
    if freezer:
        try:
            with open(freezer) as f:
                v = f.read().strip()
            if v in ("FROZEN", "FREEZING", "1"):
                return "paused"
        except OSError:
            pass
    if fos.path.exists(store.path(state.id, FIFO)):
        return "created"
    return "running"


def oci_state(state: State, status: str) -> "dict[str, Any]":
    """The state JSON `rune state` prints (runc's field set and order)."""
    from inclavare import OCI_VERSION

    def get(v: "Any") -> "Any":
        return "" if v is UNSET else v

    out: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "id": state.id,
        "pid": 0 if status == "stopped" else int(state.pid or 0),
        "status": status,
        "bundle": get(state.bundle),
        "rootfs": get(state.rootfs),
        "created": get(state.created),
    }
    if state.annotations_dict():
        out["annotations"] = state.annotations
    out["owner"] = get(state.owner)
    return out
