"""The shim's supervisor: it is the child subreaper of its containers, reaps every child, and records each
exit's status (a signal ``n`` as ``128 + n``, as containerd expects) and time.

Who is whose parent: the fork server forks a worker per request, the worker runs the runtime library's
``create``/``exec``, whose stage 1 forks the container process and exits. The orphan goes to the nearest
ancestor that is a child subreaper: this process (neither the fork server nor its workers are one), so the
container's init and every exec'd process become our children, exactly as under runc's shim (which is the
subreaper of what ``runc`` forks). Binary loggers, started by a worker, are re-parented to us the same way.

One thread reaps: it peeks with ``waitid(WNOWAIT)``, records the exit under the lock, and only then
reaps the pid, so a pid is never reused while anyone could still mistake it for the process it was.
A process can exit before the caller who started it learns its pid (a workload that fails at once):
callers start a :meth:`Supervisor.watch` before asking the fork server, and the exits of pids nobody has
claimed yet are kept in every open watch, where :meth:`Supervisor.adopt` finds them (containerd's runc
shim does the same with its exit subscriptions).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from inclavare.errors import ShimError


class Exit(NamedTuple):
    """How a process ended: shell-style status and the wall-clock time (ns since the epoch) it was reaped."""

    status: int
    exited_at_ns: int


def exit_status(wait_status: int) -> int:
    """A waitpid status as containerd reports it: the exit code, or 128 + the signal that killed it."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255


class Proc:
    """One supervised process: its pid, a pidfd while it lives (signals cannot hit a reused pid), and its
    exit once reaped."""

    def __init__(self, pid: int, pidfd: int | None, exited: Exit | None = None) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._exit = exited
        self._done = threading.Event()
        self._lock = threading.Lock()
        if exited is not None:
            self._done.set()

    @property
    def exit(self) -> Exit | None:
        return self._exit

    def wait(self, timeout: float | None = None) -> Exit | None:
        """Block until the process has exited (None when ``timeout`` passed first)."""
        self._done.wait(timeout)
        return self._exit

    def signal(self, sig: int) -> None:
        """Send ``sig``; ProcessLookupError once the process has exited (and been reaped)."""
        import signal as _signal

        with self._lock:
            if self._exit is not None or self._pidfd is None:
                raise ProcessLookupError(f"process {self.pid} has already exited")
            _signal.pidfd_send_signal(self._pidfd, sig)

    def _finish(self, exited: Exit) -> None:
        with self._lock:
            self._exit = exited
            fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)
        self._done.set()


class Watch:
    """Exits of pids nobody had claimed while the watch was open."""

    def __init__(self) -> None:
        self.exits: dict[int, Exit] = {}


class Supervisor:
    """Reaper of this process's children; becomes the child subreaper when constructed, which must happen
    before anything that will be re-parented to it is forked."""

    def __init__(self, on_exit: Callable[[Proc], None] | None = None) -> None:
        from inclavare.linux.syscalls import set_subreaper

        set_subreaper()
        self._lock = threading.Lock()
        self._procs: dict[int, Proc] = {}
        self._watches: set[Watch] = set()
        self._on_exit = on_exit
        self._stop = False
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the reaping thread (after the fork server: no thread may exist when it forks)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shim-reaper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._kick.set()

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        """Open while a process is being started, until :meth:`adopt` has its pid."""
        w = Watch()
        with self._lock:
            self._watches.add(w)
        try:
            yield w
        finally:
            with self._lock:
                self._watches.discard(w)

    def adopt(self, pid: int, watch: Watch | None = None) -> Proc:
        """Supervise our child ``pid``, started while ``watch`` was open (it may have exited already)."""
        with self._lock:
            if pid in self._procs:
                raise ShimError(f"process {pid} is already supervised")
            exited = watch.exits.pop(pid, None) if watch is not None else None
            if exited is not None:
                return Proc(pid, None, exited)
            try:
                pidfd = os.pidfd_open(pid)  # the pid is our unreaped child: it cannot have been reused
            except OSError as e:
                raise ShimError(f"supervising process {pid}: pidfd_open: {e.strerror}") from None
            proc = Proc(pid, pidfd)
            self._procs[pid] = proc
        self._kick.set()
        return proc

    def forget(self, pid: int) -> None:
        """Stop tracking ``pid`` (its exit, if it comes, is then discarded)."""
        with self._lock:
            proc = self._procs.pop(pid, None)
        if proc is not None and proc.exit is None:
            proc._finish(Exit(255, time.time_ns()))

    def _loop(self) -> None:
        while not self._stop:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                self._kick.wait(0.2)  # no children at the moment
                self._kick.clear()
                continue
            except InterruptedError:
                continue
            if info is None:
                continue
            self._record(info.si_pid)

    def _record(self, pid: int) -> None:
        now = time.time_ns()
        with self._lock:
            try:
                _, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            exited = Exit(exit_status(status), now)
            proc = self._procs.pop(pid, None)
            if proc is None:
                for w in self._watches:
                    w.exits[pid] = exited
        if proc is not None:
            proc._finish(exited)
            if self._on_exit is not None:
                try:
                    self._on_exit(proc)
                except Exception:  # noqa: BLE001 - a listener's failure must not stop the reaping
                    pass
