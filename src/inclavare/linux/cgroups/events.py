"""OOM-kill notifications of a container's memory cgroup, for `rune events`.

Imported only by :meth:`~inclavare.linux.cgroups.manager.Manager.oom_watcher`.
"""

from __future__ import annotations

import time

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.errors import CgroupError
from inclavare.linux import cgroups as _cg


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
                _cg._write(control, f"{self.efd} {ofd}")
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
            return _cg._read_key_values(self.v2_events).get("oom_kill", 0)
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
        """Release the eventfd (v1); idempotent."""
        if self.efd >= 0:
            fos.close(self.efd)
            self.efd = -1
