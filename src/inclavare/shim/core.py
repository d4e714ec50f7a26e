"""The shim's process core: what the Task service calls. Containers and exec'd processes are made by the
fork server's workers (see :mod:`inclavare.shim.forkserver`), reaped by the supervisor (see
:mod:`inclavare.shim.supervisor`), their stdio copied by :mod:`inclavare.shim.stdio`. Everything that does
not fork (kill, pause, resume, update, stats, pids, state) calls the runtime library in this process.

Processes follow containerd's model: the init process of a container is made by :meth:`ShimCore.create`
and started by :meth:`ShimCore.start`; an exec'd process is registered by :meth:`ShimCore.exec` and made
and started by ``start(id, exec_id)`` (runc's shim runs ``runc exec`` there too). State lives under
``root`` in the runtime's own layout, so ``rune --root ROOT list/state/ps`` sees the shim's containers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from inclavare.errors import InclavareError, NotRunningError, ShimError
from inclavare.shim.forkserver import ForkServer
from inclavare.shim.stdio import LoggerSpec, ProcessIO, Stdio
from inclavare.shim.supervisor import Exit, Proc, Supervisor

IO_DRAIN_TIMEOUT = 2.0  # containerd's runc shim waits as long for a process's output at delete
LOGGER_STOP_TIMEOUT = 12.0  # and as long for a binary logger to exit after SIGTERM


class _Process:
    """One process of a container: the init (exec_id "") or an exec'd one."""

    def __init__(self, cid: str, exec_id: str, stdio: Stdio, spec: dict[str, Any] | None = None) -> None:
        self.cid, self.exec_id, self.stdio, self.spec = cid, exec_id, stdio, spec
        self.pid = 0
        self.proc: Proc | None = None
        self.io: ProcessIO | None = None
        self.logger: Proc | None = None
        self.started = False
        self.done = threading.Event()
        self.exit: Exit | None = None
        self.pending: Exit | None = None  # an init's exit, held until its exec'd processes have exited

    def exited(self, ex: Exit) -> None:
        self.exit, self.pending = ex, None
        self.done.set()

    @property
    def finished(self) -> bool:
        return self.exit is not None or self.pending is not None


class _Container:
    def __init__(self, cid: str, bundle: str, init: _Process) -> None:
        self.cid, self.bundle, self.init = cid, bundle, init
        self.execs: dict[str, _Process] = {}
        self.lock = threading.Lock()
        self.host_pid_ns = False
        self.rootfs_mounted = False
        self.io_owner: tuple[int, int] | None = None  # IoUid/IoGid of every process's pipes (init and exec)


def _check_terminal(bundle: str, terminal: bool) -> tuple[dict[str, Any], bytes] | None:
    """The request's terminal flag and the bundle's process.terminal must agree (containerd writes both).
    Returns config.json (parsed, and its bytes) for the carrier selection, or None when it is unreadable."""
    import json

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            raw = f.read()
        cfg = json.loads(raw)
        want = bool((cfg.get("process") or {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return None  # the runtime reports a missing or bad config.json in its own words
    if want != terminal:
        raise ShimError(f"{bundle}/config.json: process.terminal is {str(want).lower()} but the request's "
                        f"terminal is {str(terminal).lower()}", "invalid_argument")
    return cfg, raw


def _carrier(bundle: str, doc: tuple[dict[str, Any], bytes] | None, handler: str) -> Any:
    """The carrier's rewrite of the bundle (:mod:`inclavare.shim.carrier.prepare`) when one is selected; else
    None, after one env and annotation scan."""
    if doc is None:
        return None
    from inclavare.shim.carrier import select

    name, where = select(doc[0], handler)
    if not where:
        return None
    from inclavare.shim.carrier.prepare import prepare
    from inclavare.shim.carrier.signers import CarrierError

    try:
        return prepare(bundle, doc[0], doc[1], name, where)
    except CarrierError as e:
        raise ShimError(f"container create: {e}", e.code) from None


ExitListener = Callable[[str, str, int, int, int], None]  # (id, exec_id, pid, status, exited_at_ns)


class ShimCore:
    """Containers of one shim. Construct it before any thread is started (it forks the fork server)."""

    def __init__(self, root: str, namespace: str = "default", on_exit: ExitListener | None = None,
                 reap_orphans: bool = True, allow_threads: bool = False) -> None:
        """``reap_orphans``: also reap zombie children nobody adopted (the shim binary wants this; a program
        that embeds the core and has children of its own, such as a test, does not). ``allow_threads``: see
        :meth:`ForkServer.start`."""
        self.root = root
        self.namespace = namespace
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._containers: dict[str, _Container] = {}
        self._by_pid: dict[int, _Process] = {}
        self._exit_lock = threading.RLock()
        # the subreaper before anything is forked
        self.supervisor = Supervisor(on_exit=self._reaped, reap_orphans=reap_orphans)
        self.forkserver = ForkServer(root)
        fs_pid = self.forkserver.start(allow_threads)
        self.supervisor.start()
        self.forkserver.start_reader()
        self._fs_proc = self.supervisor.adopt(fs_pid)
        from inclavare.runtime.container import Runtime

        self.rt = Runtime(root)

    # ------------------------------------------------------------------ lookups

    def _container(self, cid: str) -> _Container:
        with self._lock:
            c = self._containers.get(cid)
        if c is None:
            raise ShimError(f"container {cid}: not found", "not_found")
        return c

    def _process(self, cid: str, exec_id: str = "") -> tuple[_Container, _Process]:
        c = self._container(cid)
        if not exec_id:
            return c, c.init
        p = c.execs.get(exec_id)
        if p is None:
            raise ShimError(f"process {exec_id} of container {cid}: not found", "not_found")
        return c, p

    # ------------------------------------------------------------------ exits

    def _reaped(self, proc: Proc) -> None:
        with self._lock:
            p = self._by_pid.pop(proc.pid, None)
        if p is None or proc.exit is None:
            return
        self._finish(p, proc.exit)

    def _finish(self, p: _Process, ex: Exit) -> None:
        """Record an exit and tell the listener. An init's exit waits until its started exec'd processes
        have exited (the kernel or :meth:`_kill_all_quietly` ends them), so that, as with runc's shim,
        containerd sees every exec's exit before the init's."""
        c = self._containers.get(p.cid)
        publish: list[tuple[_Process, Exit]] = []
        with self._exit_lock:
            if p.exit is not None or p.pending is not None:
                return
            if not p.exec_id:
                running = []
                for e in list(c.execs.values()) if c is not None else []:
                    if e.proc is None and not e.done.is_set():  # never started: it will not run now
                        e.exited(Exit(255, ex.exited_at_ns))
                    elif e.exit is None:
                        running.append(e)
                if running:
                    p.pending = ex
                else:
                    publish.append((p, ex))
            else:
                publish.append((p, ex))
                if c is not None and c.init.pending is not None and not any(
                        e.proc is not None and e.exit is None and e is not p for e in c.execs.values()):
                    publish.append((c.init, c.init.pending))
            for q, qex in publish:
                q.exit, q.pending = qex, None  # done is set once the listener has it (see below)
        if not p.exec_id and c is not None and c.host_pid_ns:
            self._kill_all_quietly(p.cid)
        for q, qex in publish:
            if self._on_exit is not None:
                try:
                    self._on_exit(q.cid, q.exec_id, q.pid, qex.status, qex.exited_at_ns)
                except Exception:  # noqa: BLE001 - the listener's failure must not lose the exit
                    pass
            q.done.set()  # only now: delete waits for done, so the listener has the exit before the delete

    def _kill_all_quietly(self, cid: str) -> None:
        """As runc's shim: an init in the host's pid namespace leaves its children to us; kill them."""
        try:
            self.rt.kill(cid, 9, all_procs=True)
        except InclavareError:
            pass

    def _adopt(self, p: _Process, pid: int, watch: Any) -> None:
        proc = self.supervisor.adopt(pid, watch)
        p.pid, p.proc = pid, proc
        if proc.exit is not None:
            self._finish(p, proc.exit)
            return
        with self._lock:
            self._by_pid[pid] = p
        if proc.exit is not None:  # raced with the reaper between adopt and registering
            with self._lock:
                self._by_pid.pop(pid, None)
            self._finish(p, proc.exit)

    # ------------------------------------------------------------------ stdio

    def _open_io(self, c: _Container, p: _Process) -> ProcessIO:
        def start_logger(spec: LoggerSpec, fds: dict[str, int]) -> int:
            with self.supervisor.watch() as w:
                res = self.forkserver.call("logger", {"path": spec.path, "args": spec.args, "env": spec.env},
                                           fds)
                p.logger = self.supervisor.adopt(int(res["pid"]), w)
            return int(res["pid"])

        return ProcessIO.open(p.stdio, c.cid, self.namespace, start_logger, io_owner=c.io_owner)

    def _close_io(self, p: _Process) -> None:
        if p.io is not None:
            p.io.wait_copied(IO_DRAIN_TIMEOUT)
            p.io.close()
            p.io = None
        if p.logger is not None:
            try:
                p.logger.signal(15)
            except ProcessLookupError:
                pass
            if p.logger.wait(LOGGER_STOP_TIMEOUT) is None:
                try:
                    p.logger.signal(9)
                except ProcessLookupError:
                    pass
            p.logger = None

    # ------------------------------------------------------------------ lifecycle

    def create(self, cid: str, bundle: str, stdio: Stdio, options: dict[str, Any] | None = None,
               rootfs: list[dict[str, Any]] | None = None, carrier: str = "") -> int:
        """Create container ``cid`` from ``bundle`` (its init waits for :meth:`start`); returns the init's pid.
        ``options``: no_pivot, no_new_keyring, io_uid, io_gid (runc's Options; the ids own the pipes of the
        container's processes, exec'd ones too, as runc's shim does). ``rootfs``: the request's mounts
        (``{"type", "source", "options"}``), mounted on BUNDLE/rootfs now and unmounted at delete. ``carrier``:
        the runtime handler's default carrier (see :mod:`inclavare.shim.carrier`); a carrier selected by it,
        the env or the annotations rewrites the bundle into an enclave container once the rootfs is mounted."""
        from inclavare.formats import oci

        try:
            oci.validate_container_id(cid)
        except InclavareError as e:
            raise ShimError(str(e), "invalid_argument") from None
        doc = _check_terminal(bundle, stdio.terminal)
        opts = options or {}
        prep: Any = None
        p = _Process(cid, "", stdio)
        c = _Container(cid, bundle, p)
        if opts.get("io_uid") or opts.get("io_gid"):
            c.io_owner = (int(opts.get("io_uid") or 0), int(opts.get("io_gid") or 0))
        with self._lock:
            if cid in self._containers:
                raise ShimError(f"container {cid}: already exists", "already_exists")
            self._containers[cid] = c
        try:
            if rootfs:
                from inclavare.shim.rootfs import mount_all

                mount_all(rootfs, os.path.join(bundle, "rootfs"))
                c.rootfs_mounted = True
            prep = _carrier(bundle, doc, carrier)
            p.io = self._open_io(c, p)
            with self.supervisor.watch() as w:
                try:
                    res = self.forkserver.call("create", {
                        "id": cid, "bundle": bundle, "no_pivot": bool(opts.get("no_pivot")),
                        "no_new_keyring": bool(opts.get("no_new_keyring"))}, p.io.child)
                finally:
                    p.io.handed()
                self._adopt(p, int(res["pid"]), w)
            p.io.attach()
            state, _ = self.rt.load(cid)
            namespaces = ((state.config_dict().get("linux") or {}).get("namespaces")) or []
            c.host_pid_ns = not any(n.get("type") == "pid" and not n.get("path") for n in namespaces)
        except BaseException:
            with self._lock:
                self._containers.pop(cid, None)
                self._by_pid.pop(p.pid, None)
            if p.pid:
                self._forkserver_quiet("delete", {"id": cid, "force": True})
            self._close_io(p)
            self._unmount(c)
            if prep is not None:
                try:
                    prep.restore()
                finally:
                    prep.release()
            raise
        if prep is not None:
            prep.release()  # the container has its own mount of the signed image now
        return p.pid

    @staticmethod
    def _unmount(c: _Container) -> None:
        if c.rootfs_mounted:
            from inclavare.shim.rootfs import unmount_all

            unmount_all(os.path.join(c.bundle, "rootfs"))
            c.rootfs_mounted = False

    def _lifecycle(self, op: str, cid: str, hook: str) -> None:
        """`start` or `delete` through the runtime library: in this process (neither forks), unless the
        container has ``hook`` hooks, which run as child processes and so go through a worker."""
        try:
            state, _ = self.rt.load(cid)
        except InclavareError:
            state = None
        if state is None or state.hooks().get(hook):
            self.forkserver.call(op, {"id": cid})
            return
        try:
            if op == "start":
                self.rt.start(cid)
            else:
                self.rt.delete(cid)
        except InclavareError as e:
            from inclavare.shim.forkserver import error_code

            raise ShimError(str(e), error_code(e)) from None

    def _forkserver_quiet(self, op: str, args: dict[str, Any]) -> None:
        try:
            self.forkserver.call(op, args)
        except ShimError:
            pass

    def start(self, cid: str, exec_id: str = "") -> int:
        """Start the init (after create) or an exec'd process (after exec); returns its pid."""
        c, p = self._process(cid, exec_id)
        with c.lock:
            if p.started:
                raise ShimError(f"process {exec_id or cid}: already started", "failed_precondition")
            if not exec_id:
                if p.finished:
                    raise ShimError(f"container {cid}: cannot start a stopped container", "failed_precondition")
                self._lifecycle("start", cid, "poststart")
                p.started = True
                return p.pid
            if c.init.finished:
                raise ShimError(f"container {cid}: cannot exec in a stopped container", "failed_precondition")
            p.started = True
        try:
            p.io = self._open_io(c, p)
            with self.supervisor.watch() as w:
                try:
                    res = self.forkserver.call("exec", {"id": cid, "process": p.spec}, p.io.child)
                finally:
                    p.io.handed()
                self._adopt(p, int(res["pid"]), w)
            if c.init.finished and c.host_pid_ns and p.proc is not None:
                # the init exited while this process was being started: it must not outlive it
                try:
                    p.proc.signal(9)
                except ProcessLookupError:
                    pass
            p.io.attach()
        except BaseException:
            self._close_io(p)
            if not p.finished:
                p.exited(Exit(255, time.time_ns()))
            raise
        return p.pid

    def exec(self, cid: str, exec_id: str, process: dict[str, Any], stdio: Stdio) -> None:
        """Register process ``exec_id`` (an OCI process object) in container ``cid``; :meth:`start` runs it."""
        from inclavare.formats import oci

        if not exec_id:
            raise ShimError("exec: an exec id is required", "invalid_argument")
        try:
            oci.validate_process(process, "process")
        except InclavareError as e:
            raise ShimError(f"exec {exec_id}: {e}", "invalid_argument") from None
        c = self._container(cid)
        with c.lock:
            if exec_id in c.execs:
                raise ShimError(f"process {exec_id} of container {cid}: already exists", "already_exists")
            if c.init.finished:
                raise ShimError(f"container {cid}: cannot exec in a stopped container", "failed_precondition")
            spec = dict(process)
            spec["terminal"] = bool(stdio.terminal)
            c.execs[exec_id] = _Process(cid, exec_id, stdio, spec)

    def kill(self, cid: str, exec_id: str = "", sig: int = 15, all_procs: bool = False) -> None:
        c, p = self._process(cid, exec_id)
        if exec_id:
            if p.proc is None:
                raise ShimError(f"process {exec_id}: not started", "failed_precondition")
            try:
                p.proc.signal(sig)
            except ProcessLookupError:
                raise ShimError(f"process {exec_id}: process already finished", "not_found") from None
            return
        if p.finished and not all_procs:
            raise ShimError(f"container {cid}: process already finished", "not_found")
        try:
            if p.proc is not None and not all_procs:
                p.proc.signal(sig)  # the pidfd: never a reused pid
                if sig == 9 and self._status(cid) == "paused":
                    self.rt.resume(cid)  # as runc: a SIGKILL stays pending in a frozen cgroup until thawed
            else:
                self.rt.kill(cid, sig, all_procs=all_procs)
        except ProcessLookupError:
            raise ShimError(f"container {cid}: process already finished", "not_found") from None
        except NotRunningError:
            raise ShimError(f"container {cid}: process already finished", "not_found") from None
        except InclavareError as e:
            # it exited between our check and the signal (seen: CRI's StopContainer SIGKILL, the thaw of a
            # container that had just stopped): what runc's shim answers for a stopped process
            if p.finished or self._status(cid) == "stopped":
                raise ShimError(f"container {cid}: process already finished", "not_found") from None
            raise ShimError(f"container {cid}: kill: {e}") from None

    def wait(self, cid: str, exec_id: str = "", timeout: float | None = None) -> tuple[int, int]:
        """Block until the process has exited: (exit status, exit time in ns since the epoch)."""
        _c, p = self._process(cid, exec_id)
        if not p.done.wait(timeout) or p.exit is None:
            raise ShimError(f"process {exec_id or cid}: still running after {timeout}s", "failed_precondition")
        return p.exit.status, p.exit.exited_at_ns

    def drain(self, cid: str, exec_id: str = "", timeout: float = IO_DRAIN_TIMEOUT) -> bool:
        """Wait (at most ``timeout``) until the process's output has been copied out (its pipes at EOF), so a
        client told of the exit finds the output already in its FIFOs. False if some is still flowing."""
        _c, p = self._process(cid, exec_id)
        io = p.io
        return io.wait_copied(timeout) if io is not None else True

    def delete(self, cid: str, exec_id: str = "") -> tuple[int, int, int]:
        """Delete an exited (or never started) process; the init's delete removes the container. Returns
        (pid, exit status, exit time ns)."""
        c, p = self._process(cid, exec_id)
        with c.lock:
            if exec_id:
                if p.proc is not None and p.exit is None:
                    raise ShimError(f"process {exec_id}: cannot delete a running process", "failed_precondition")
                self._close_io(p)
                c.execs.pop(exec_id, None)
            else:
                if p.started and p.exit is None:
                    status = self._status(cid)
                    if status in ("running", "paused"):
                        raise ShimError(f"cannot delete container {cid} that is not stopped: {status}",
                                        "failed_precondition")
                try:
                    self._lifecycle("delete", cid, "poststop")
                except ShimError as err:
                    if err.code != "not_found":
                        raise
                if p.proc is not None:
                    p.done.wait(10)
                for other in list(c.execs.values()):
                    self._close_io(other)
                self._close_io(p)
                self._unmount(c)
                with self._lock:
                    self._containers.pop(cid, None)
        ex = p.exit or Exit(255, time.time_ns())
        if p.exit is None:
            p.exited(ex)
        return p.pid, ex.status, ex.exited_at_ns

    # ------------------------------------------------------------------ the rest, in this process

    def _status(self, cid: str) -> str:
        try:
            return self.rt.load(cid)[1]
        except InclavareError:
            return "stopped"

    def state(self, cid: str, exec_id: str = "") -> dict[str, Any]:
        """What Task.State reports: pid, status (created, running, paused, stopped), exit status and time."""
        c, p = self._process(cid, exec_id)
        if p.exit is not None:
            status = "stopped"
        elif exec_id:
            status = "running" if p.proc is not None else "created"
        else:
            status = self._status(cid)
        return {"id": cid, "exec_id": exec_id, "bundle": c.bundle, "pid": p.pid, "status": status,
                "stdin": p.stdio.stdin, "stdout": p.stdio.stdout, "stderr": p.stdio.stderr,
                "terminal": p.stdio.terminal, "exit_status": p.exit.status if p.exit else 0,
                "exited_at_ns": p.exit.exited_at_ns if p.exit else 0}

    def pids(self, cid: str) -> list[dict[str, Any]]:
        """The container's processes, each with the exec id it was started as (if any)."""
        c = self._container(cid)
        by_pid = {e.pid: e.exec_id for e in c.execs.values() if e.pid}
        try:
            found = self.rt.pids(cid)
        except InclavareError as e:
            raise ShimError(f"container {cid}: pids: {e}") from None
        return [{"pid": pid, "exec_id": by_pid.get(pid, "")} for pid in found]

    def pause(self, cid: str) -> None:
        self._rt_call(cid, "pause", self.rt.pause)

    def resume(self, cid: str) -> None:
        self._rt_call(cid, "resume", self.rt.resume)

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        """Apply OCI LinuxResources (the JSON containerd sends in Update's Any)."""
        self._container(cid)
        try:
            self.rt.update(cid, resources)
        except InclavareError as e:
            raise ShimError(f"container {cid}: update: {e}", "invalid_argument") from None

    def stats(self, cid: str) -> dict[str, Any]:
        self._container(cid)
        try:
            return self.rt.stats(cid)
        except InclavareError as e:
            raise ShimError(f"container {cid}: stats: {e}") from None

    def _rt_call(self, cid: str, what: str, fn: Callable[[str], None]) -> None:
        self._container(cid)
        try:
            fn(cid)
        except InclavareError as e:
            raise ShimError(f"container {cid}: {what}: {e}", "failed_precondition") from None

    def resize_pty(self, cid: str, exec_id: str, width: int, height: int) -> None:
        _c, p = self._process(cid, exec_id)
        if p.io is None:
            raise ShimError(f"process {exec_id or cid}: no IO", "failed_precondition")
        p.io.resize(width, height)

    def close_io(self, cid: str, exec_id: str = "") -> None:
        _c, p = self._process(cid, exec_id)
        if p.io is not None:
            p.io.close_stdin()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._containers)

    def shutdown(self) -> None:
        """Stop the fork server and the reaper; close every IO (containers are left as they are)."""
        with self._lock:
            containers = list(self._containers.values())
        for c in containers:
            for p in (c.init, *c.execs.values()):
                if p.io is not None:
                    p.io.close()
                    p.io = None
        self.forkserver.close()
        self._fs_proc.wait(10)
        self.forkserver.release()
        self.supervisor.stop()
