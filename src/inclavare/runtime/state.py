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


class Store:
    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, cid: str, name: str = "") -> str:
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

    def load(self, cid: str) -> "dict[str, Any]":
        try:
            with open(self.path(cid, STATE_FILE), "rb") as f:
                return json.loads(f.read())  # type: ignore[no-any-return]
        except FileNotFoundError:
            if self.exists(cid):
                # a create that was interrupted before it recorded anything
                return {"id": cid, "pid": 0, "incomplete": True}
            raise ContainerError(not_exist(cid, self.root)) from None
        except ValueError as e:
            return {"id": cid, "pid": 0, "incomplete": True, "corrupt": str(e)}

    def save(self, cid: str, state: "dict[str, Any]") -> None:
        final = self.path(cid, STATE_FILE)
        tmp = final + ".tmp"
        data = json.dumps(state).encode()
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
            return sorted(n for n in fos.listdir(self.root) if fos.path.isdir(fos.path.join(self.root, n)))
        except FileNotFoundError:
            return []


def status_of(store: Store, state: "dict[str, Any]") -> str:
    """runc's status rules: no live init -> stopped; frozen -> paused (a created container can be
    paused too); fifo present -> created; else running."""
    if state.get("incomplete"):
        return "stopped"
    if not process_alive(int(state.get("pid") or 0), state.get("pid_start")):
        return "stopped"
    freezer = state.get("freezer_file")
    if freezer:
        try:
            with open(freezer) as f:
                v = f.read().strip()
            if v in ("FROZEN", "FREEZING", "1"):
                return "paused"
        except OSError:
            pass
    if fos.path.exists(store.path(state["id"], FIFO)):
        return "created"
    return "running"


def oci_state(state: "dict[str, Any]", status: str) -> "dict[str, Any]":
    """The state JSON `rune state` prints (runc's field set and order)."""
    from inclavare import OCI_VERSION

    out: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "id": state["id"],
        "pid": 0 if status == "stopped" else int(state.get("pid") or 0),
        "status": status,
        "bundle": state.get("bundle", ""),
        "rootfs": state.get("rootfs", ""),
        "created": state.get("created", ""),
    }
    if state.get("annotations"):
        out["annotations"] = state["annotations"]
    out["owner"] = state.get("owner", "")
    return out
