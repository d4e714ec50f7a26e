"""Container lifecycle: create, start, run, state, kill, delete, exec, pause/resume, ps, events, update.

A library: no printing, no exit, errors as :mod:`inclavare.errors` types, logging through the ``log``
callable the caller injects. Each operation may be one short-lived `rune` invocation, exactly like runc,
or a call from a resident caller: state lives under the runtime root, guarded by a per-container flock.
The container process is built by :mod:`inclavare.runtime.init` and run by the caller's
:class:`~inclavare.runtime.launch.Executor` (execve by default).
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.
import time

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~2 ms per call
from inclavare.errors import ContainerError, InclavareError, NotRunningError
from inclavare.runtime import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.runtime.launch import Executor, PickExecutor

    Log = Any  # a callable(level, message)

SIGKILL = 9  # the signal module costs an enum import on every call


def _noop_log(level: str, msg: str) -> None:
    pass


def _manager(state: "st.State", light: bool = False) -> "Any":
    """The container's cgroups from state.json. ``light``: only listing processes and removing the
    directories are needed (:class:`CgroupPaths`), so the full manager module is not imported."""
    if not state.cgroup or state.cgroup is st.UNSET:
        return None
    if light:
        from inclavare.linux.cgpaths import CgroupPaths

        return CgroupPaths.from_dict(state.cgroup)
    from inclavare.linux.cgroups import Manager

    return Manager.from_dict(state.cgroup)


def _wait_gone(pid: int, start: str | None, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while st.process_alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


class Runtime:
    def __init__(self, root: str = "/run/rune", log: "Log" = _noop_log) -> None:
        self.store = st.Store(root)
        self.log = log
        self.debug = bool(getattr(log, "debug", False))  # debug lines are built only when asked for

    # ------------------------------------------------------------------ queries

    def load(self, cid: str) -> "tuple[st.State, str]":
        """The container's state and its status (created, running, paused or stopped)."""
        state = self.store.load(cid)
        return state, st.status_of(self.store, state)

    def state(self, cid: str) -> "dict[str, Any]":
        state, status = self.load(cid)
        return st.oci_state(state, status)

    def list_containers(self) -> "list[dict[str, Any]]":
        out = []
        for cid in self.store.ids():
            try:
                state, status = self.load(cid)
            except ContainerError:
                continue
            out.append(st.oci_state(state, status))
        return out

    # ------------------------------------------------------------------ create / start

    def create(self, cid: str, bundle: str | None, *, pid_file: str | None = None,
               console_socket: str | None = None, console_fd: int | None = None, no_pivot: bool = False,
               no_new_keyring: bool = False, preserve_fds: int = 0,
               config: "dict[str, Any] | None" = None, foreground: bool = False,
               executor: "Executor | PickExecutor | None" = None) -> "st.State":
        """Create container ``cid`` from ``bundle`` (see :func:`inclavare.runtime.launch.create`).
        ``config``: the bundle's config.json when the caller has already loaded and validated it.
        ``foreground``: fds 0-2 are the caller's own (`run` without --detach), not handed over.
        ``executor``: what runs the workload (execve when None), or a function of the config that picks it."""
        from inclavare.runtime.launch import create

        return create(self, cid, bundle, pid_file=pid_file, console_socket=console_socket, console_fd=console_fd,
                      no_pivot=no_pivot, no_new_keyring=no_new_keyring, preserve_fds=preserve_fds,
                      config=config, foreground=foreground, executor=executor)

    def run(self, cid: str, bundle: str | None, *, detach: bool = False, keep: bool = False,
            pid_file: str | None = None, console_socket: str | None = None, no_pivot: bool = False,
            no_new_keyring: bool = False, preserve_fds: int = 0,
            executor: "Executor | PickExecutor | None" = None) -> int:
        """create + start (see :func:`inclavare.runtime.foreground.run`); without ``detach`` wait for the
        workload (relaying its terminal if it has one and no console socket is given) and return its
        shell-style exit status, deleting the container unless ``keep``."""
        from inclavare.runtime.foreground import run

        return run(self, cid, bundle, detach=detach, keep=keep, pid_file=pid_file, console_socket=console_socket,
                   no_pivot=no_pivot, no_new_keyring=no_new_keyring, preserve_fds=preserve_fds, executor=executor)

    def _warn(self, msg: str) -> None:
        self.log("warning", msg)

    def _teardown(self, state: "st.State", mgr: "Any") -> None:
        """Undo a failed create: kill what was started, remove the cgroup and the state dir."""
        pid = int(state.pid or 0)
        if pid and st.process_alive(pid, state.start_time()):
            try:
                fos.kill(pid, SIGKILL)
            except OSError:
                pass
            _wait_gone(pid, state.start_time())
        if mgr is not None:
            self._remove_cgroup(mgr, strict=False)
        self.store.remove(state.id)

    def _remove_cgroup(self, mgr: "Any", strict: bool) -> None:
        """Kill what is left in the container's cgroup, then remove it (a warning unless ``strict``).

        Done even when ``mgr.exists()`` says no: a create killed half-way through making the
        directories leaves some hierarchies with one, and a create killed before it recorded the
        init pid leaves processes behind.
        """
        self._kill_cgroup(mgr)
        try:
            mgr.destroy()
        except InclavareError as e:
            if strict:
                raise
            self.log("warning", str(e))

    def _kill_cgroup(self, mgr: "Any") -> None:
        for _ in range(50):
            try:
                pids = [p for p in mgr.pids() if p != fos.getpid()]
            except InclavareError:
                return
            if not pids:
                return
            for p in pids:
                try:
                    fos.kill(p, SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def start(self, cid: str) -> None:
        with self.store.lock(cid):
            state, status = self.load(cid)
            if status != "created":
                raise ContainerError(start_refusal(cid, status))
            fifo = self.store.path(cid, st.FIFO)
            fd = fos.open(fifo, fos.O_RDONLY | fos.O_NONBLOCK | fos.O_CLOEXEC)
            try:
                self._await_fifo(fd, state)
            finally:
                fos.close(fd)
            try:
                fos.unlink(fifo)
            except FileNotFoundError:
                pass
        hooks = state.hooks()
        if hooks.get("poststart"):
            from inclavare.runtime.hooks import hook_state, run_hooks

            run_hooks("poststart", hooks["poststart"], hook_state(state.hook_seed(), "running"), warn=self._warn)

    def _await_fifo(self, fd: int, state: "st.State") -> None:
        """Wait for the init's byte on the exec FIFO, then for EOF: the init keeps its O_CLOEXEC
        write end open until it execs the workload (or dies), so poststart hooks run after the
        exec, as runc's start does. The second wait is bounded: startContainer hooks run in it."""
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        pid, start = int(state.pid), state.start_time()
        while True:
            # reset each round: a poll that times out (init slow to reach the FIFO) reads nothing
            data: bytes | None = None
            if poller.poll(50):
                try:
                    data = fos.read(fd, 1)
                except BlockingIOError:
                    data = None
                if data:
                    break
            if not st.process_alive(pid, start):
                raise ContainerError(f'container "{state.id}": init process exited before start')
            if data == b"":
                time.sleep(0.002)  # no writer yet: a FIFO without one reads as EOF
        hooks = state.hooks().get("startContainer") or []
        limit = 10.0 + sum(float(h.get("timeout") or 0) for h in hooks)
        deadline = time.monotonic() + limit
        while True:
            if poller.poll(50):
                try:
                    if fos.read(fd, 512) == b"":
                        return  # every write end is closed: the workload runs (or the init is gone)
                except BlockingIOError:
                    pass
            elif not st.process_alive(pid, start):
                return
            if time.monotonic() > deadline:
                self._warn(f'container "{state.id}": the init process has not started the workload '
                           f"{limit:g}s after start; running the poststart hooks anyway")
                return

    # ------------------------------------------------------------------ signals, delete

    def kill(self, cid: str, sig: int, all_procs: bool = False) -> None:
        state, status = self.load(cid)
        mgr = _manager(state, light=not all_procs and status != "paused")  # freezing needs the manager
        if all_procs:
            self._kill_all(cid, state, status, mgr, sig)
            return
        # runc's words first: containerd's shim and CRI-O take "container not running" for "already finished"
        if status == "stopped":
            raise NotRunningError(f'container not running: "{cid}" has stopped')
        pid = int(state.pid)
        try:
            fos.kill(pid, sig)
        except ProcessLookupError:
            raise NotRunningError(f'container not running: "{cid}" has stopped (no such process {pid})') from None
        if self.debug:
            self.log("debug", f"sent signal {sig} to the init process {pid} of container {cid} ({status})")
        if status == "paused" and sig == SIGKILL and mgr is not None:
            # as runc: a SIGKILL stays pending in a frozen (v1) cgroup until it is thawed
            self._thaw_quietly(mgr)

    def _kill_all(self, cid: str, state: "st.State", status: str, mgr: "Any", sig: int) -> None:
        """`kill --all`, as runc: nothing to do for a stopped container whose cgroup is gone; otherwise
        freeze, signal every process of the cgroup, thaw (a paused container ends up thawed)."""
        if mgr is None:
            if status != "stopped":
                try:
                    fos.kill(int(state.pid), sig)
                except ProcessLookupError:
                    pass
            return
        if status == "stopped" and not mgr.exists():
            return
        frozen = self._freeze_quietly(mgr)
        try:
            pids = mgr.pids()
        except InclavareError:
            if frozen or status == "paused":
                self._thaw_quietly(mgr)
            raise
        for p in pids:
            try:
                fos.kill(p, sig)
            except ProcessLookupError:
                pass
        if self.debug:
            self.log("debug", f"sent signal {sig} to {len(pids)} processes of container {cid}")
        if frozen or status == "paused":
            self._thaw_quietly(mgr)

    def _freeze_quietly(self, mgr: "Any") -> bool:
        try:
            mgr.freeze()
            return True
        except InclavareError as e:  # as runc: a freezer that cannot be used is a warning, not a failure
            self.log("warning", str(e))
            return False

    def _thaw_quietly(self, mgr: "Any") -> None:
        try:
            mgr.thaw()
        except InclavareError as e:
            self.log("warning", str(e))

    def delete(self, cid: str, force: bool = False) -> None:
        if force:
            from inclavare.formats.container_id import problem

            if problem(cid) is not None:
                return  # no container can have that id: nothing is left (runc's delete -f would fail here)
        with self.store.lock(cid, missing_ok=True) as exists:
            if not exists:
                if force:
                    return
                raise ContainerError(st.not_exist(cid, self.store.root))
            state, status = self.load(cid)
            if status in ("running", "paused") and not force:
                # runc's words exactly (no quotes around the id): a created container is deleted, as runc
                raise ContainerError(f"cannot delete container {cid} that is not stopped: {status}")
            mgr = _manager(state, light=status != "paused")  # a paused one is thawed first
            pid = int(state.pid or 0)
            if status != "stopped":
                if status == "paused" and mgr is not None:
                    mgr.thaw()
                try:
                    fos.kill(pid, SIGKILL)
                except OSError:
                    pass
                if not _wait_gone(pid, state.start_time()):
                    raise ContainerError(f'container "{cid}": init process {pid} did not die after SIGKILL')
            if mgr is not None:
                self._remove_cgroup(mgr, strict=not force)
            hooks = state.hooks()
            if hooks.get("poststop") and not state.is_incomplete():
                from inclavare.runtime.hooks import hook_state, run_hooks

                run_hooks("poststop", hooks["poststop"], hook_state(state.hook_seed(), "stopped"), warn=self._warn)
            self.store.remove(cid)
            if self.debug:
                self.log("debug", f"delete: container {cid} ({status}) destroyed")

    # ------------------------------------------------------------------ pause, resume, ps, stats

    def pause(self, cid: str) -> None:
        with self.store.lock(cid):
            state, status = self.load(cid)
            if status not in ("running", "created"):  # runc pauses a created container too
                raise NotRunningError(f'container not running: "{cid}" is {status}')
            mgr = _manager(state)
            if mgr is None:
                raise ContainerError(f'container "{cid}" has no cgroup to freeze')
            mgr.freeze()

    def resume(self, cid: str) -> None:
        with self.store.lock(cid):
            state, status = self.load(cid)
            if status != "paused":
                raise ContainerError(f'container not paused: "{cid}" is {status}')
            _manager(state).thaw()

    def pids(self, cid: str) -> list[int]:
        state, status = self.load(cid)
        mgr = _manager(state, light=True)
        if mgr is None or not mgr.exists():
            return []
        return list(mgr.pids())

    def stats(self, cid: str) -> "dict[str, Any]":
        state, status = self.load(cid)
        if status == "stopped":
            raise ContainerError(f'container "{cid}" is not running')
        return _manager(state).stats()  # type: ignore[no-any-return]

    def oom_watcher(self, cid: str) -> "Any":
        """An :class:`~inclavare.linux.cgroups.OomWatcher` on a live container's memory cgroup."""
        state, status = self.load(cid)
        if status == "stopped":
            raise ContainerError(f"container with id {cid} is not running")
        mgr = _manager(state)
        if mgr is None:
            raise ContainerError(f'container "{cid}" has no cgroup to watch')
        return mgr.oom_watcher()

    def update(self, cid: str, resources: "dict[str, Any]") -> None:
        from inclavare.linux import cgroups

        cgroups.validate(resources)
        with self.store.lock(cid):
            state, status = self.load(cid)
            if status == "stopped":
                raise ContainerError(f'container "{cid}" is not running')
            linux = state.config.setdefault("linux", {})
            merged = dict(linux.get("resources") or {})
            for k, v in resources.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            # the whole merged set: a partial one would reset the device rules to the defaults
            _manager(state).set(merged, linux_devices=linux.get("devices"))
            linux["resources"] = merged
            self.store.save(cid, state)

    # ------------------------------------------------------------------ exec

    def exec(self, cid: str, process: "dict[str, Any]", *, pid_file: str | None = None,
             console_socket: str | None = None, console_fd: int | None = None,
             preserve_fds: int = 0, foreground: bool = False, cgroup: list[str] | None = None,
             ignore_paused: bool = False, executor: "Executor | None" = None) -> int:
        """Start ``process`` in the container; returns its host pid (see
        :func:`inclavare.runtime.launch.exec_in`)."""
        from inclavare.runtime.launch import exec_in

        return exec_in(self, cid, process, pid_file=pid_file, console_socket=console_socket,
                       console_fd=console_fd, preserve_fds=preserve_fds, foreground=foreground, cgroup=cgroup,
                       ignore_paused=ignore_paused, executor=executor)

    def exec_wait(self, cid: str, process: "dict[str, Any]", *, detach: bool = False,
                  pid_file: str | None = None, console_socket: str | None = None, preserve_fds: int = 0,
                  cgroup: list[str] | None = None, ignore_paused: bool = False,
                  executor: "Executor | None" = None) -> int:
        """exec, and without ``detach`` wait for the process (relaying its terminal if it has one and no
        console socket is given); returns its shell-style exit status (0 when detached)."""
        from inclavare.runtime.foreground import exec_wait

        return exec_wait(self, cid, process, detach=detach, pid_file=pid_file, console_socket=console_socket,
                         preserve_fds=preserve_fds, cgroup=cgroup, ignore_paused=ignore_paused, executor=executor)


def start_refusal(cid: str, status: str) -> str:
    """Why `start` refuses a container that is not created: runc's words, then the id."""
    if status == "stopped":
        return f'cannot start a container that has stopped: "{cid}"'
    if status == "running":
        return f'cannot start an already running container: "{cid}"'
    return f'cannot start a container in the {status} state: "{cid}"'


def check_exec_state(cid: str, status: str, ignore_paused: bool) -> None:
    """runc's refusals for `exec`: a stopped container, or a paused one without --ignore-paused."""
    if status == "stopped":
        raise ContainerError(f'cannot exec in a stopped container: "{cid}"')
    if status == "paused" and not ignore_paused:
        raise ContainerError(f'cannot exec in a paused container (use --ignore-paused to override): "{cid}"')


def wait_child(pid: int, forward_signals: bool = True) -> int:
    """Wait for our child ``pid`` (we are its subreaper), forwarding signals; returns a shell-style status."""
    if forward_signals:
        import _signal  # the C module: `signal` would build its IntEnums (~10 ms)

        def fwd(signum: int, _frame: "Any") -> None:
            try:
                fos.kill(pid, signum)
            except OSError:
                pass

        for s in range(1, _signal.NSIG):
            if s in (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD):
                continue
            try:
                _signal.signal(s, fwd)
            except (OSError, ValueError):
                pass
    while True:
        try:
            wpid, status = fos.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if wpid == pid:
            if fos.WIFSIGNALED(status):
                return 128 + fos.WTERMSIG(status)
            return fos.WEXITSTATUS(status)
