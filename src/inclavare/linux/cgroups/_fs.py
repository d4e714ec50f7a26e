"""File and path access to cgroupfs, shared by the other modules of this package.

Every write and every mkdir goes through :func:`write` and :func:`make_dir`, called as attributes of
this module (``_fs.write(...)``), so that a test can replace the two and observe what would be
written to a real cgroup.
"""

from __future__ import annotations

import errno
import time

from inclavare import _fastos as os  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError
from inclavare.linux.cgpaths import _log, _read_text

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CGROUP_ROOT", "MAX_U64", "join", "log", "make_dir", "parse_uint", "rdma_line", "read_key_values",
    "read_opt_uint", "read_text", "read_uint", "under", "write", "write_error", "write_pid",
]  # fmt: skip

CGROUP_ROOT = "/sys/fs/cgroup"
MAX_U64 = (1 << 64) - 1
log = _log
read_text = _read_text


def write(path: str, data: str) -> None:
    """Write ``data`` to an existing cgroup file in one write(2), as the kernel wants it."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def make_dir(path: str) -> None:
    os.mkdir(path, 0o755)


def write_pid(target: str, pid: int) -> None:
    """Write ``pid`` to a cgroup.procs file; EINVAL (the task may still be TASK_NEW) is retried, as runc does."""
    for attempt in range(5):
        try:
            write(target, str(pid))
            return
        except OSError as e:
            if e.errno != errno.EINVAL or attempt == 4:
                raise
            time.sleep(0.03)


def _fmt_data(data: str) -> str:
    return f'"{data}"' if (not data or any(c.isspace() for c in data)) else data


def write_error(field: str, data: str, path: str, exc: OSError, extra: str = "") -> CgroupError:
    """The one-line error for a failed write of ``data`` to ``path``, naming the spec ``field``."""
    reason = exc.strerror or os.strerror(exc.errno or 0)
    return CgroupError(f"{field}: writing {_fmt_data(data)} to {path}: {reason}{extra}")


def parse_uint(text: str) -> int:
    """fscommon.GetCgroupParamUint semantics: "max" -> 2^64-1, negative -> 0."""
    text = text.strip()
    if text == "max":
        return MAX_U64
    value = int(text)
    return 0 if value < 0 else min(value, MAX_U64)


def read_uint(path: str) -> int:
    return parse_uint(_read_text(path))


def read_opt_uint(path: str) -> int | None:
    """:func:`read_uint`, or None when the file does not exist."""
    try:
        return read_uint(path)
    except FileNotFoundError:
        return None


def read_key_values(path: str) -> dict[str, int]:
    """A flat-keyed file ("key value" lines, e.g. cpu.stat); lines that do not parse are skipped."""
    out: dict[str, int] = {}
    for line in _read_text(path).splitlines():
        parts = line.split(" ")
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = parse_uint(parts[1])
        except ValueError:
            continue
    return out


def under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (plain string paths, already clean)."""
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def join(*parts: str) -> str:
    """filepath.Join: join the non-empty parts and clean the result."""
    joined = "/".join(p for p in parts if p)
    out = os.path.normpath(joined) if joined else ""
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out


def rdma_line(dev: str, lim: dict[str, Any]) -> str:
    """One rdma.max line (the same format on v1 and v2)."""
    line = dev
    if lim.get("hcaHandles") is not None:
        line += f" hca_handle={int(lim['hcaHandles'])}"
    if lim.get("hcaObjects") is not None:
        line += f" hca_object={int(lim['hcaObjects'])}"
    return line
