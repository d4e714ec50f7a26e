"""`create` and `exec`: building a container's process (the commands that fork), from reading the bundle's
config.json to handing the set-up process to its :class:`Executor`. :class:`Runtime` calls in here, so that
`start`, `state`, `kill` and `delete`, which load :mod:`inclavare.runtime.container` on every call, do not
load this code too. The executor seam and the config reader live here, not in modules of their own, because
every `create` needs both and each module costs its own import (~0.15 ms).
"""

from __future__ import annotations

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms per call
from inclavare.errors import ConfigError, ContainerError
from inclavare.runtime import state as st
from inclavare.runtime.container import Runtime, _manager, check_exec_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Log = Any  # a callable(level, message)
    # the caller's choice of executor, made once the config is loaded: None for execve
    PickExecutor = Callable[[dict[str, Any]], "Executor | None"]


# ------------------------------------------------------------------------------ the executor seam


class Executor:
    """What runs a container's process once the runtime has set it up; this default execve's the workload.

    The runtime builds the process (namespaces, rootfs, identity, seccomp) and then hands it to an
    executor, as youki's builder hands its process to a ``workload::Executor``. Other executors (enclave/'s
    init-runelet and exec runelet) subclass this one; the caller (the CLI, later the shim) picks one and
    passes it to :meth:`Runtime.create` / :meth:`Runtime.exec`. The runtime knows nothing of what they do.

    Hooks, in the order the runtime calls them (the child is forked, never re-exec'd, so the executor
    object crosses into the child as it is):

    parent, before anything is created
        :meth:`prepare` -- adjust the config (create) or the process (exec) in place.
    parent, with the state directory made
        :meth:`open` -- open what the child needs (fds, inherited by the fork); returns the fds the
        parent closes once the child is ready. :meth:`state_fields` -- keys added to state.json.
    child, before any namespace is entered
        :meth:`preload` -- load what must come from the host (an enclave runtime's PAL).
    child, set up, before "ready"
        :meth:`before_ready` -- a failure here fails `create` / `exec`.
    child, after `start`
        :meth:`run` -- run the workload; never returns.
    """

    # run() ends in execve: the start FIFO's O_CLOEXEC write end closes at the exec, so `rune start`
    # (and its poststart hooks) goes on exactly then. An executor that does not exec says False and
    # the runtime closes the FIFO before calling run().
    replaces_process = True
    # the workload's path must resolve in the container (an enclave runtime may keep it elsewhere)
    strict_resolve = True

    def prepare(self, config: dict[str, Any], process: dict[str, Any], log: Log) -> None:
        """Parent, first: change the config (create) or the process to exec in place."""

    def open(self, state_dir: str, root_uid: int, root_gid: int) -> list[int]:
        """Parent, with the container's state directory made: open what the child inherits; the
        returned fds are closed by the parent once the child is ready (or has failed)."""
        return []

    def state_fields(self) -> dict[str, Any]:
        """Keys this executor records in the container's state.json (create only)."""
        return {}

    def preload(self) -> None:
        """Child, before any namespace switch: load what must come from the host."""

    def before_ready(self) -> None:
        """Child, fully set up, before it reports ready: a failure here fails `create` / `exec`."""

    def run(self, fin: Any) -> None:
        """Child, after `start` (create) or at once (exec): run the workload given the
        :class:`~inclavare.runtime.process.Finalizer`; never returns."""
        fin.execute()


EXECVE = Executor()


# ------------------------------------------------------------------------------ the bundle


def load_config(bundle: str, need_process: bool = True) -> dict[str, Any]:
    """Read, parse and validate `<bundle>/config.json` (root.path must be a directory); return the parsed
    document unchanged. The file I/O that :mod:`inclavare.formats.oci` leaves to its caller (it stays pure:
    bytes in, validated document out)."""
    from inclavare.formats import oci

    path = fos.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError("config.json", f"not found in bundle {bundle}") from None
    except OSError as e:
        raise ConfigError("config.json", f"cannot read {path}: {e.strerror}") from None
    doc = oci.parse_config(raw)
    oci.validate_config(doc, bundle, need_process=need_process, stat=fos.stat)
    _refuse_symlinked_root(bundle, doc["root"]["path"])
    return doc


SEALED_DIR = ".inclavare/sealed"  # inclavare.formats.sealed_layer.SEALED_DIR (not imported: the plain path)


def _refuse_sealed(rootfs: str) -> None:
    """A plain container of an image whose layers are sealed (encrypted for an enclave) would run without its
    encrypted files: refuse it, saying how to run it (one lstat on the plain path)."""
    try:
        fos.lstat(f"{rootfs}/{SEALED_DIR}")
    except OSError:
        return
    raise ConfigError("root.path", f"{rootfs}: the image has encrypted layers ({SEALED_DIR}); only an enclave "
                      "opens them: run it as an enclave container (ENCLAVE_TYPE, ENCLAVE_KBS_URL, ENCLAVE_KBS_KEY)")


def _refuse_symlinked_root(bundle: str, root_path: str) -> None:
    """As runc: the root filesystem must not be reached through a symlink (a relative root.path below the
    bundle, an absolute one from /), or the container would run what the link points at, anywhere on the host.
    Checked with lstat per component (no realpath: it would import os on every create)."""
    from _stat import S_ISLNK

    absolute = root_path.startswith("/")
    cur = "" if absolute else bundle.rstrip("/")
    for part in fos.path.normpath(root_path).split("/"):
        if part in ("", "."):
            continue
        cur = cur[:cur.rfind("/")] if part == ".." and cur else f"{cur}/{part}"
        if part == "..":
            continue
        try:
            if S_ISLNK(fos.lstat(cur).st_mode):
                raise ConfigError("root.path", f"{root_path}: {cur} is a symlink (to {fos.readlink(cur)}); "
                                  "the root filesystem must be given by its real path")
        except OSError:
            return  # validate_config has checked that it exists; a race is the create's to report


# ------------------------------------------------------------------------------ create and exec


_primed = False


def prime() -> None:
    """Start the kernel's cgroup-migration wait in the background (see linux.cgprime), once per process:
    as early as the caller can, so that it overlaps with config parsing and forking."""
    global _primed
    if not _primed:
        _primed = True
        from inclavare.linux.cgprime import prime_migration

        prime_migration()


def create(rt: Runtime, cid: str, bundle: str | None, *, pid_file: str | None = None,
           console_socket: str | None = None, console_fd: int | None = None, no_pivot: bool = False,
           no_new_keyring: bool = False, preserve_fds: int = 0,
           config: dict[str, Any] | None = None, foreground: bool = False,
           executor: Executor | PickExecutor | None = None) -> st.State:
    """``config``: the bundle's config.json when the caller has already loaded and validated it.
    ``foreground``: fds 0-2 are the caller's own (`run` without --detach), not handed over.
    ``executor``: runs the workload (execve when None), or a function that picks it from the
    loaded config (so that a caller need not load the config itself to choose)."""
    from inclavare.formats import oci
    from inclavare.runtime.trace import mark

    prime()
    mark("create: begin")
    oci.validate_container_id(cid)
    bundle = fos.path.abspath(bundle or ".")
    pid_file = _abs(pid_file)
    console_socket = _abs(console_socket)
    try:
        fos.chdir(bundle)
    except OSError as e:
        raise ConfigError("--bundle", f"{bundle}: {e.strerror}") from None
    cfg = config if config is not None else load_config(bundle)
    linux = cfg.get("linux") or {}
    if linux.get("seccomp"):
        from inclavare.linux import seccomp

        seccomp.validate(linux["seccomp"])
    if linux.get("resources"):
        from inclavare.linux import cgroups

        cgroups.validate(linux["resources"])
    process = cfg["process"]
    if executor is not None and not isinstance(executor, Executor):
        executor = executor(cfg)
    if executor is not None:
        executor.prepare(cfg, process, rt.log)
    if process.get("terminal") and console_socket is None and console_fd is None:
        raise ConfigError("process.terminal", "a terminal needs --console-socket (or `rune run` without --detach)")
    rootfs = fos.path.join(bundle, cfg["root"]["path"])
    if executor is None:
        _refuse_sealed(rootfs)
    mark("create: config loaded")
    rt.store.make(cid)
    state = st.State(cid)
    state.bundle, state.rootfs, state.created, state.owner = bundle, rootfs, st.now_rfc3339(), ""
    state.annotations, state.config, state.creating = cfg.get("annotations") or {}, cfg, True
    opened: list[int] = []
    mgr = None
    try:
        from inclavare.linux.cgroups import Manager

        found = Manager.for_container(linux.get("cgroupsPath") or "", cid)
        found.check_resources(linux.get("resources"))
        _check_existing_cgroup(rt, found)
        mgr = found  # from here on a failed create removes the cgroup: it is ours
        state.cgroup = mgr.to_dict()
        state.freezer_file = _freezer_file(mgr.paths)
        rt.store.save(cid, state)
        mark("create: cgroup manager")
        fifo = rt.store.path(cid, st.FIFO)
        old_umask = fos.umask(0)
        try:
            fos.mkfifo(fifo, 0o622)  # writable by the container's (possibly non-root) user
        finally:
            fos.umask(old_umask)
        root_uid = _host_id(linux.get("uidMappings"), 0)
        root_gid = _host_id(linux.get("gidMappings"), 0)
        if root_uid or root_gid:
            fos.chown(fifo, root_uid, root_gid)
        fifo_fd = fos.open(fifo, fos.O_PATH | fos.O_CLOEXEC)
        opened.append(fifo_fd)
        dir_fd = fos.open(rt.store.path(cid), fos.O_PATH | fos.O_DIRECTORY | fos.O_CLOEXEC)
        opened.append(dir_fd)
        if executor is not None:
            state.extra.update(executor.state_fields())
            opened.extend(executor.open(rt.store.path(cid), root_uid, root_gid))
        if process.get("terminal") and console_fd is None and console_socket:
            from inclavare.linux.pty import connect_console_socket

            console_fd = connect_console_socket(console_socket)
            opened.append(console_fd)
        from inclavare.runtime.init import SpawnRequest, spawn

        req = SpawnRequest(
            container_id=cid, config=cfg, process=process, rootfs=rootfs, bundle=bundle,
            namespaces=list(linux.get("namespaces") or []), fifo_fd=fifo_fd, state_dir_fd=dir_fd,
            console_fd=console_fd if process.get("terminal") else None, preserve_fds=preserve_fds,
            no_pivot=no_pivot, no_new_keyring=no_new_keyring, cgroup_paths=dict(mgr.paths),
            state={"id": cid, "bundle": bundle, "annotations": state.annotations},
            executor=executor, fix_stdio=not foreground,
        )
        hooks = cfg.get("hooks") or {}

        def on_pid(pid: int) -> None:
            state.pid = pid
            info = st.proc_start_time(pid)
            state.pid_start = info[1] if info else None
            rt.store.save(cid, state)

        def on_hooks(pid: int) -> None:
            from inclavare.runtime.hooks import hook_state, run_hooks

            # status "created" as crun passes it (runc says "creating"; the validation suite wants this)
            hs = hook_state(state.hook_seed(), "created")
            run_hooks("prestart", hooks.get("prestart"), hs)
            run_hooks("createRuntime", hooks.get("createRuntime"), hs)

        mark("create: spawn")
        def setup_cgroup(pid: int) -> None:
            # runs while the forked child imports its modules and compiles seccomp
            mgr.create(linux.get("resources"))
            state.cgroup = mgr.to_dict()  # now records the directories create() made
            mark("cgroup: created")
            # always: without resources runc still applies deny-all plus the default devices
            mgr.set(linux.get("resources") or {}, linux_devices=linux.get("devices"))
            mark("cgroup: set")
            mgr.apply(pid)

        spawn(req, on_forked=setup_cgroup, on_pid=on_pid, on_hooks=on_hooks)
        mark("create: spawned")
        state.creating = False
        rt.store.save(cid, state)
        if pid_file:
            write_pid_file(pid_file, state.pid)
    except BaseException as e:
        oom = _oom_during_setup(e, mgr, linux)
        rt._teardown(state, mgr)
        if oom is not None:
            raise oom from None
        raise
    finally:
        for fd in opened:
            try:
                fos.close(fd)
            except OSError:
                pass
    return state


def _oom_during_setup(e: BaseException, mgr: Any, linux: dict[str, Any]) -> Exception | None:
    """A setup that died because the OOM killer took it, said in terms of the config's memory limit (the plain
    "killed by signal 9" does not tell the user which field to change)."""
    from inclavare.errors import SysError

    if not isinstance(e, SysError) or "exited during setup" not in str(e) or mgr is None or not mgr.oom_kills():
        return None
    limit = ((linux.get("resources") or {}).get("memory") or {}).get("limit")
    what = f"linux.resources.memory.limit ({limit} bytes)" if limit else "the memory cgroup's limit"
    return SysError(f"container process killed by the OOM killer during setup: {what} is too small to start it")


def _check_existing_cgroup(rt: Runtime, mgr: Any) -> None:
    """runc 1.1.5's checks of a cgroup that exists before create: processes in it are worth a
    warning, a frozen one is refused (the init would hang in it)."""
    from inclavare.errors import CgroupError

    if mgr.exists():
        try:
            n = len(mgr.pids())
        except CgroupError:
            n = 0  # raced with its removal
        if n:
            rt._warn(f"container's cgroup is not empty: {n} process(es) found")
    if mgr.freezer_state() == "frozen":
        where = mgr.paths.get("freezer") or mgr.paths.get("", "")
        raise ContainerError(f"container's cgroup unexpectedly frozen: {where} (thaw it or remove it first)")


def exec_in(rt: Runtime, cid: str, process: dict[str, Any], *, pid_file: str | None = None,
         console_socket: str | None = None, console_fd: int | None = None,
         preserve_fds: int = 0, foreground: bool = False, cgroup: list[str] | None = None,
         ignore_paused: bool = False, executor: Executor | None = None) -> int:
    """Start ``process`` in the container; returns its host pid.

    ``foreground``: fds 0-2 are the caller's own (see :meth:`create`). ``cgroup``: `exec --cgroup`
    values, ``[controller[,controller]:]path`` below the container's cgroup. ``ignore_paused``:
    `exec --ignore-paused` (the process waits in the frozen cgroup until `resume`). ``executor``: runs
    the process (execve when None); the caller picks it from :meth:`Runtime.load`'s state."""
    from inclavare.formats import oci

    prime()
    state, status = rt.load(cid)
    check_exec_state(cid, status, ignore_paused)
    oci.validate_process(process, "process")
    pid_file = _abs(pid_file)
    mgr = _manager(state)
    join: Any = mgr.apply if mgr else (lambda pid: None)
    if cgroup:
        if mgr is None:
            raise ContainerError(f'container "{cid}" has no cgroup for --cgroup {cgroup[0]}')
        sub = mgr.sub_paths(cgroup)

        def join(pid: int) -> None:
            mgr.join(pid, sub)

    cfg = state.config_dict()
    init_pid = int(state.pid)
    from inclavare.linux.syscalls import NAMESPACES

    namespaces = []
    for ns in (cfg.get("linux") or {}).get("namespaces") or []:  # stage 1 joins the user ns first
        name = NAMESPACES[ns["type"]][1]
        path = f"/proc/{init_pid}/ns/{name}"
        if ns["type"] == "time":
            path = f"/proc/{init_pid}/ns/time_for_children"
            if not fos.path.exists(path):
                continue
        namespaces.append({"type": ns["type"], "path": path})
    opened = []
    if process.get("terminal") and console_fd is None:
        if not console_socket:
            raise ConfigError("process.terminal", "a terminal needs --console-socket")
        from inclavare.linux.pty import connect_console_socket

        console_fd = connect_console_socket(fos.path.abspath(console_socket))
        opened.append(console_fd)
    if executor is not None:
        executor.prepare(cfg, process, rt.log)
        opened.extend(executor.open(rt.store.path(cid), 0, 0))
    from inclavare.runtime.init import SpawnRequest, spawn

    req = SpawnRequest(container_id=cid, config=cfg, process=process, namespaces=namespaces,
                       executor=executor,
                       exec_mode=True, console_fd=console_fd if process.get("terminal") else None,
                       preserve_fds=preserve_fds, cgroup_paths=dict(mgr.paths) if mgr else {},
                       fix_stdio=not foreground,
                       state={"id": cid, "bundle": state.bundle, "annotations": state.annotations_dict(),
                              "pid": init_pid})
    try:
        pid = spawn(req, on_forked=join, on_pid=lambda pid: None)
    finally:
        for fd in opened:
            fos.close(fd)
    if pid_file:
        write_pid_file(pid_file, pid)
    return pid


def _abs(path: str | None) -> str | None:
    return fos.path.abspath(path) if path else None


def write_pid_file(path: str, pid: int) -> None:
    tmp = fos.path.join(fos.path.dirname(path) or ".", f".{fos.path.basename(path)}.tmp{fos.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    fos.rename(tmp, path)


def _freezer_file(paths: dict[str, str]) -> str:
    if "freezer" in paths:
        return fos.path.join(paths["freezer"], "freezer.state")
    if "" in paths:
        return fos.path.join(paths[""], "cgroup.freeze")
    return ""


def _host_id(maps: list[dict[str, Any]] | None, cid: int) -> int:
    for m in maps or []:
        if m["containerID"] <= cid < m["containerID"] + m["size"]:
            return int(m["hostID"]) + cid - int(m["containerID"])
    return 0
