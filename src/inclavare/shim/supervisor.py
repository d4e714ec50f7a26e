"""The shim's supervisor: it is the child subreaper of its containers, reaps them, and records each exit's
status (a signal ``n`` as ``128 + n``, as containerd expects) and time.

Who is whose parent: the fork server forks a worker per request, the worker runs the runtime library's
``create``/``exec``, whose stage 1 forks the container process and exits. The orphan goes to the nearest
ancestor that is a child subreaper: this process (neither the fork server nor its workers are one), so the
container's init and every exec'd process become our children, exactly as under runc's shim (which is the
subreaper of what ``runc`` forks). Binary loggers, started by a worker, are re-parented to us the same way.

A process can exit before the caller who started it learns its pid (a workload that fails at once). It
stays a zombie, our child, until it is reaped, and only the process it is handed to reaps it: each adopted
process gets a pidfd, one thread polls them and reaps exactly those pids (``waitpid(pid)``), so a pid is
never reused while anyone could still mistake it for the process it was, signals go through the pidfd, and
children of the embedding program (a ``subprocess`` of the Task service, a test) are left to their owner.
Orphans nobody adopts (daemons of a container in the host's pid namespace) are swept from time to time
when ``reap_orphans`` is set -- never while a start is in flight (:meth:`Supervisor.watch`), when the
zombie may be the process whose pid is about to be adopted.
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
    """A start in flight: while one is open, unadopted zombies are left alone."""


class Supervisor:
    """Reaper of the processes handed to it; becomes the child subreaper when constructed, which must happen
    before anything that will be re-parented to it is forked."""

    SWEEP_INTERVAL = 1.0  # seconds between sweeps of unadopted orphans (reap_orphans only)

    def __init__(self, on_exit: Callable[[Proc], None] | None = None, reap_orphans: bool = True) -> None:
        from inclavare.linux.syscalls import set_subreaper

        set_subreaper()
        self._lock = threading.Lock()
        self._procs: dict[int, Proc] = {}  # by pidfd
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._watches = 0
        self._on_exit = on_exit
        self._reap_orphans = reap_orphans
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the reaping thread (after the fork server: no thread may exist when it forks)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shim-reaper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop reaping (processes still supervised are left as they are)."""
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(5)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        """Open while a process is being started, until :meth:`adopt` has its pid."""
        with self._lock:
            self._watches += 1
        try:
            yield Watch()
        finally:
            with self._lock:
                self._watches -= 1

    def adopt(self, pid: int, watch: Watch | None = None) -> Proc:
        """Supervise our child ``pid`` (alive, or a zombie nobody has reaped)."""
        with self._lock:
            if pid in self._pidfds:
                raise ShimError(f"process {pid} is already supervised")
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as e:
                raise ShimError(f"supervising process {pid}: pidfd_open: {e.strerror}") from None
            proc = Proc(pid, pidfd)
            self._procs[pidfd] = proc
            self._pidfds[pid] = pidfd
        self._wake()
        return proc

    def _loop(self) -> None:
        import select

        last_sweep = time.monotonic()
        while not self._stop:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            with self._lock:
                for fd in self._procs:
                    poller.register(fd, select.POLLIN)
            timeout = int(self.SWEEP_INTERVAL * 1000) if self._reap_orphans else -1
            try:
                ready = poller.poll(timeout)
            except InterruptedError:
                continue
            for fd, _ev in ready:
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                else:
                    self._reap(fd)
            if self._reap_orphans and time.monotonic() - last_sweep >= self.SWEEP_INTERVAL:
                last_sweep = time.monotonic()
                self._sweep()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _reap(self, pidfd: int) -> None:
        now = time.time_ns()
        with self._lock:
            proc = self._procs.get(pidfd)
            if proc is None:
                return
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = proc.pid, 255 << 8  # reaped by someone else: the status is lost
            if pid == 0:
                return  # not exited yet (a stop or continue woke the pidfd)
            del self._procs[pidfd]
            del self._pidfds[proc.pid]
        proc._finish(Exit(exit_status(status), now))
        if self._on_exit is not None:
            try:
                self._on_exit(proc)
            except Exception:  # noqa: BLE001 - a listener's failure must not stop the reaping
                pass

    def _sweep(self) -> None:
        """Reap zombie children nobody adopted (only while no start is in flight)."""
        while True:
            with self._lock:
                if self._watches:
                    return
                try:
                    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return
                if info is None:
                    return
                pid = info.si_pid
                pidfd = self._pidfds.get(pid)
                if pidfd is None:
                    try:
                        os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        pass
                    continue
            self._reap(pidfd)
