"""Starting a container process: the fork stages and the parent/child synchronisation.

``rune create`` (the parent) forks *stage 1*, which joins and unshares namespaces (asking the parent
to write the id maps of a new user namespace) and forks *stage 2*: the container's init, pid 1 of a
new pid namespace. Stage 1 reports stage 2's pid and exits. Stage 2 builds the root filesystem, lets
the parent run the prestart/createRuntime hooks, runs createContainer hooks, switches root, applies
the process settings, says "ready", and then blocks on the exec FIFO until ``rune start`` opens it;
then it runs startContainer hooks and hands over to the *executor* (execve for plain containers).

``rune exec`` uses the same stages, joining the namespaces of the running init instead.
Messages are JSON lines over two pipes.
"""

from __future__ import annotations

import sys

from inclavare import _fastos as fos  # the posix builtin: create's parent need not import os (~1.4 ms)
from inclavare.errors import InclavareError, SysError
from inclavare.formats import fastjson as json
from inclavare.runtime.launch import EXECVE, Executor

# imported here, not lazily: the child stages run where the runtime's files may be out of reach
from inclavare.runtime.trace import mark

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class RuntimeGone(SysError):
    """The parent closed the channel: it has failed (and reports why) or was killed; nothing to say."""


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self._buf = b""

    def send(self, **msg: Any) -> None:
        data = json.dumps(msg).encode() + b"\n"
        while data:
            n = fos.write(self.wfd, data)
            data = data[n:]

    def recv(self) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            chunk = fos.read(self.rfd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    def expect(self, kind: str) -> dict[str, Any]:
        msg = self.recv()
        if msg is None:
            raise RuntimeGone(f"sync: the runtime went away while {kind!r} was awaited")
        if msg.get("t") != kind:
            raise SysError(f"sync: expected {kind!r} from the runtime, got {msg!r}")
        return msg

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                fos.close(fd)
            except OSError:
                pass


class SpawnRequest:
    """What the child stages need; built by the lifecycle code in the parent.

    ``namespaces``: for create, the config's entries (join by path, or new); for exec, the init's
    /proc/PID/ns paths. ``executor`` runs the workload (see :class:`inclavare.runtime.launch.Executor`;
    execve by default); the child is forked, not re-exec'd, so the object is used as it is.
    """

    def __init__(self, container_id: str, config: dict[str, Any], process: dict[str, Any], *,
                 rootfs: str = "", bundle: str = "", namespaces: list[dict[str, Any]] | None = None,
                 exec_mode: bool = False, fifo_fd: int | None = None, state_dir_fd: int | None = None,
                 console_fd: int | None = None, preserve_fds: int = 0, no_pivot: bool = False,
                 no_new_keyring: bool = False, cgroup_paths: dict[str, str] | None = None,
                 executor: Executor | None = None, state: dict[str, Any] | None = None,
                 fix_stdio: bool = True) -> None:
        self.container_id = container_id
        self.config = config
        self.process = process
        self.rootfs = rootfs
        self.bundle = bundle
        self.namespaces = namespaces or []
        self.exec_mode = exec_mode
        self.fifo_fd = fifo_fd
        self.state_dir_fd = state_dir_fd
        self.console_fd = console_fd
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.cgroup_paths = cgroup_paths or {}
        self.executor = executor if executor is not None else EXECVE
        self.state = state or {}
        # give fds 0-2 to the container user (runc does, where it hands them over); not when they are
        # the foreground caller's own terminal or files (runc relays those through pipes of its own)
        self.fix_stdio = fix_stdio
        self.finalizer: Any = None  # built by the child in _preload
        # bind sources opened by the parent for a container with its own user namespace
        self.mount_sources: list[int] = []  # indexes into config mounts
        self.mount_sock: Any = None  # (parent end, child end) of a socketpair that carries them
        self.mount_fds: dict[int, int] = {}  # mount index -> fd, in the child stages


# The syscall layer (ctypes) is imported by the child only, while the parent is busy with cgroups.
sc: Any = None


def _report(ch: Channel | None, exc: BaseException) -> None:
    if isinstance(exc, RuntimeGone):
        return  # the parent's own error is the one the user sees; a second line would only confuse
    msg = str(exc) if isinstance(exc, InclavareError | OSError) else f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, InclavareError | OSError) and "traceback" in sys.modules:
        import traceback

        msg += " | " + traceback.format_exc().replace("\n", " | ")
    if ch is not None:
        try:
            ch.send(t="error", msg=msg)
            return
        except OSError:
            pass
    try:
        fos.write(2, f"rune: init: {msg}\n".encode())
    except OSError:
        pass


def _ns_order(namespaces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # the user namespace is joined first so the others are entered with its credentials
    return sorted(namespaces, key=lambda n: 0 if n["type"] == "user" else 1)


def stage1(req: SpawnRequest, ch: Channel) -> None:
    """Runs in the first child; never returns."""
    code = 1
    try:
        _preload(req)  # overlaps with the parent's cgroup setup
        ch.expect("go")
        from inclavare.runtime.process import write_oom_score_adj

        if not req.exec_mode:
            write_oom_score_adj(req.process.get("oomScoreAdj"))
        new_flags = 0
        in_userns = False
        # open every namespace path before joining any: after joining the mount namespace, /proc is
        # the container's and host-pid paths such as /proc/PID/ns/net no longer resolve
        fds: dict[str, int] = {}
        try:
            for ns in req.namespaces:
                path = ns.get("path")
                if path:
                    try:
                        fds[ns["type"]] = fos.open(path, fos.O_RDONLY | fos.O_CLOEXEC)
                    except OSError as e:
                        raise SysError(f"linux.namespaces: {ns['type']} path {path}: {e.strerror}",
                                       e.errno or 0) from None
            for ns in _ns_order(req.namespaces):
                flag = sc.NAMESPACES[ns["type"]][0]
                if ns["type"] in fds:
                    sc.setns(fds[ns["type"]], flag, f"{ns['type']} namespace {ns['path']}")
                    if ns["type"] == "user":
                        in_userns = True
                else:
                    new_flags |= flag
        finally:
            for fd in fds.values():
                fos.close(fd)
        if new_flags & sc.CLONE_NEWUSER:
            sc.unshare(sc.CLONE_NEWUSER)
            ch.send(t="idmap")
            ch.expect("ok")
            in_userns = True
        if in_userns:
            fos.setresgid(0, 0, 0)
            fos.setresuid(0, 0, 0)
        rest = new_flags & ~sc.CLONE_NEWUSER
        if rest:
            sc.unshare(rest)
        if req.mount_sources:
            _receive_mount_sources(req, ch)
        offsets = (req.config.get("linux") or {}).get("timeOffsets")
        if rest & sc.CLONE_NEWTIME and offsets:
            with open("/proc/self/timens_offsets", "w") as f:
                for clock, off in offsets.items():
                    f.write(f"{clock} {int(off.get('secs', 0))} {int(off.get('nanosecs', 0))}\n")
        mark("stage1: namespaces done")
        # stage 2 shares the channel: it must not speak before the parent has its pid
        gate_r, gate_w = fos.pipe()
        pid = fos.fork()
        if pid == 0:
            fos.close(gate_w)
            fos.read(gate_r, 1)
            fos.close(gate_r)
            stage2(req, ch, in_userns)
        fos.close(gate_r)
        ch.send(t="pid", pid=pid)
        fos.write(gate_w, b"1")
        fos.close(gate_w)
        code = 0
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        _report(ch, e)
    fos._exit(code)


def stage2(req: SpawnRequest, ch: Channel, in_userns: bool) -> None:
    """The container process (init for create, the new process for exec); never returns."""
    ready = False
    try:
        if req.exec_mode:
            _finish_exec(req, ch, in_userns)
        else:
            _finish_init(req, ch, in_userns)
    except BaseException as e:  # noqa: BLE001
        _report(None if ready else ch, e)
    fos._exit(127)


def _types(req: SpawnRequest) -> set[str]:
    return {n["type"] for n in req.namespaces}


def _finish_init(req: SpawnRequest, ch: Channel, in_userns: bool) -> None:
    from inclavare.linux import rootfs as rfs
    from inclavare.runtime.hooks import hook_state, run_hooks
    from inclavare.runtime.process import set_rlimits

    cfg, proc = req.config, req.process
    linux = cfg.get("linux") or {}
    ns_types = _types(req)
    fos.setsid()
    if not req.no_new_keyring:
        sc.join_session_keyring(f"_ses.{req.container_id}")
    fin = req.finalizer
    fin.in_userns = in_userns
    rootfs = req.rootfs
    has_mntns = "mount" in ns_types
    if has_mntns:
        ctx = rfs.RootfsContext(rootfs=rootfs, cgroup_paths=req.cgroup_paths,
                                cgroupns="cgroup" in ns_types, source_fds=req.mount_fds)
        rfs.prepare_rootfs(rootfs, cfg, ctx, in_userns)
    mark("stage2: mounts done")
    hooks = cfg.get("hooks") or {}
    if hooks.get("prestart") or hooks.get("createRuntime"):
        ch.send(t="hooks")  # the parent runs them in the runtime namespace, then says ok
        ch.expect("ok")
    mark("stage2: hooks done")
    state = dict(req.state, pid=fos.getpid())
    # as runc: from the rootfs, with the container process's environment for hooks that set none
    run_hooks("createContainer", hooks.get("createContainer"), hook_state(state, "created"),
              env=req.finalizer.env, cwd=rootfs)
    if proc.get("terminal"):
        _setup_console(req, rootfs, has_mntns)
    rfs.enter_rootfs(rootfs, has_mntns, req.no_pivot)
    rfs.finish_rootfs(cfg, ns_types)
    mark("stage2: rootfs done")
    set_rlimits(proc.get("rlimits"))
    if linux.get("personality"):
        from inclavare.formats.oci import personality_value

        sc.personality(personality_value(linux["personality"]))
    _finalize_and_wait(req, ch, fin, hooks, state)


def _preload(req: SpawnRequest) -> None:
    """First thing in the child, while the parent sets up cgroups: import what the later stages use
    (after pivot_root the runtime's own files are out of reach) and compile the seccomp filter."""
    global sc
    import resource  # noqa: F401

    import inclavare.formats.oci  # noqa: F401
    import inclavare.linux.caps  # noqa: F401
    import inclavare.linux.rootfs  # noqa: F401
    import inclavare.runtime.hooks  # noqa: F401
    from inclavare.linux import syscalls
    from inclavare.runtime.process import Finalizer

    sc = syscalls
    sc.libc()
    cfg = req.config
    if (cfg.get("hooks") or {}).get("startContainer"):
        import subprocess  # noqa: F401
    if req.process.get("terminal"):
        import inclavare.linux.pty  # noqa: F401
    req.finalizer = Finalizer(req.process, (cfg.get("linux") or {}).get("seccomp"),
                              fix_stdio=req.fix_stdio or bool(req.process.get("terminal")))
    req.finalizer.prepare_seccomp()
    req.executor.preload()  # e.g. an enclave runtime's PAL, from its host path, before any namespace switch


def _finalize_and_wait(req: SpawnRequest, ch: Channel, fin: Any, hooks: dict[str, Any],
                       state: dict[str, Any]) -> None:
    from inclavare.runtime.hooks import hook_state, run_hooks

    # before any seccomp filter: a profile may well deny close_range
    sc.cloexec_from(3 + req.preserve_fds)
    for fd in range(3, 3 + req.preserve_fds):
        try:
            fos.set_inheritable(fd, True)
        except OSError:
            pass
    if fin.nnp:
        sc.set_no_new_privs()
    if not fin.nnp:
        # without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it before dropping caps
        _send_notify_fd(ch, fin.load_seccomp())
    fin.chdir_early()
    fin.identity_and_caps()
    fin.chdir()
    executor = req.executor
    if executor.strict_resolve:
        fin.resolve()
    else:
        fin.resolve_lenient()  # e.g. an enclave runtime may keep the payload where the container cannot see it
    if fin.nnp:
        # as late as possible, but before "ready" (as runc): the listener gets its fd during create
        _send_notify_fd(ch, fin.load_seccomp())
    executor.before_ready()  # e.g. pal_get_version + pal_init: their failure fails `create`
    mark("stage2: ready")
    ch.send(t="ready")
    ch.close()
    started_fd = None
    if not req.exec_mode:
        started_fd = _wait_for_start(req)
        run_hooks("startContainer", hooks.get("startContainer"), hook_state(state, "created"),
                  env=fin.env)
    if started_fd is not None and not executor.replaces_process:
        fos.close(started_fd)  # no execve: let `rune start` go on before the payload runs
    # with execve, the FIFO's write end is O_CLOEXEC: `rune start` sees EOF exactly at the exec
    executor.run(fin)


def _mount_sources(req: SpawnRequest) -> list[int]:
    """The mounts whose bind source the parent opens for the child (runc's shouldSendMountSources):
    with a user and a mount namespace, the child's credentials may not reach a source that the
    runtime's do (a 0700 host directory), so the runtime opens it, O_PATH, in the child's mount
    namespace and the child mounts /proc/self/fd/N."""
    if req.exec_mode or not req.namespaces or fos.geteuid() != 0:
        return []
    types = _types(req)
    if "user" not in types or "mount" not in types:
        return []
    from inclavare.linux.rootfs import is_bind

    return [i for i, m in enumerate(req.config.get("mounts") or []) if is_bind(m) and m.get("source")]


_FDS_PER_MESSAGE = 200  # the kernel takes at most 253 fds in one SCM_RIGHTS message


def _send_mount_sources(req: SpawnRequest, pid: int) -> None:
    """Parent side: open each bind source inside the mount namespace of stage 1 (through
    /proc/PID/root, after resolving symlinks here, which sees the same tree) and send the fds."""
    import socket

    mounts = req.config.get("mounts") or []
    fds: list[int] = []
    from posixpath import realpath

    try:
        for i in req.mount_sources:
            source = mounts[i].get("source") or ""
            try:
                fds.append(fos.open(f"/proc/{pid}/root" + realpath(source),
                                   fos.O_PATH | fos.O_CLOEXEC))
            except OSError as e:
                raise SysError(f"mounts[{i}] ({mounts[i].get('destination')}): bind source {source}: "
                               f"{e.strerror}", e.errno or 0) from None
        sock = req.mount_sock[0]
        for at in range(0, len(fds), _FDS_PER_MESSAGE):
            socket.send_fds(sock, [b"m"], fds[at:at + _FDS_PER_MESSAGE])
    finally:
        for fd in fds:
            fos.close(fd)


def _receive_mount_sources(req: SpawnRequest, ch: Channel) -> None:
    """Stage 1, in its new user and mount namespaces: get the bind sources from the parent."""
    import socket

    req.mount_sock[0].close()
    ch.send(t="mountsources")
    sock = req.mount_sock[1]
    fds: list[int] = []
    while len(fds) < len(req.mount_sources):
        _msg, got, _flags, _addr = socket.recv_fds(sock, 16, _FDS_PER_MESSAGE)
        if not got:
            raise RuntimeGone("sync: the runtime went away while the mount sources were awaited")
        fds.extend(got)
    sock.close()
    req.mount_fds = dict(zip(req.mount_sources, fds, strict=True))


def _send_notify_fd(ch: Channel, notify_fd: int | None) -> None:
    """Right after the filter is loaded (as runc): the agent must hold the fd before the container makes
    a call the profile traps -- even one of ours, such as the read below or an open after it. The parent
    takes the fd with pidfd_getfd and hands it over: doing that from here could deadlock on a profile
    that traps connect or sendmsg (write cannot be trapped: seccomp.validate refuses that)."""
    if notify_fd is None:
        return
    ch.send(t="seccomp", fd=notify_fd)
    ch.expect("ok")
    fos.close(notify_fd)


def _hand_over_notify_fd(req: SpawnRequest, pid: int, fd: int) -> None:
    """Parent side: copy the container process's seccomp notify fd and send it to linux.seccomp.listenerPath
    with the container process state: status "creating" and the init's pid for create, "running" and the
    init's pid (the exec'd process's in the message's own pid) for exec, as runc does."""
    from inclavare.errors import SeccompError
    from inclavare.linux import seccomp
    from inclavare.linux.syscalls import pidfd_getfd
    from inclavare.runtime.hooks import hook_state

    sec = (req.config.get("linux") or {}).get("seccomp") or {}
    if not sec.get("listenerPath"):  # seccomp.validate() refuses such a profile; never hold the fd silently
        raise SeccompError("linux.seccomp.listenerPath: listenerPath is not set")
    # for exec, req.state["pid"] is the init's
    state = hook_state(req.state, "running") if req.exec_mode else hook_state(dict(req.state, pid=pid), "creating")
    local = pidfd_getfd(pid, fd)
    try:
        seccomp.send_to_listener(sec["listenerPath"], local, state, sec.get("listenerMetadata", ""), pid=pid)
    finally:
        fos.close(local)


def _wait_for_start(req: SpawnRequest) -> int:
    """Block until `rune start` opens the exec FIFO, then tell it we are going.

    Returns the FIFO's write end, left open (O_CLOEXEC): `rune start` reads until EOF, which comes
    when this process execs its workload (or dies), so poststart hooks run after the exec, as the
    runtime-spec asks and runc does.
    """
    assert req.fifo_fd is not None
    try:
        fd = fos.open(f"/proc/self/fd/{req.fifo_fd}", fos.O_WRONLY | fos.O_CLOEXEC)
    except OSError:
        # no /proc in the container: reach the FIFO through the state directory
        assert req.state_dir_fd is not None
        fd = fos.open("exec.fifo", fos.O_WRONLY | fos.O_CLOEXEC, dir_fd=req.state_dir_fd)
    fos.write(fd, b"0")
    for extra in (req.fifo_fd, req.state_dir_fd):
        if extra is not None:
            try:
                fos.close(extra)
            except OSError:
                pass
    return fd


def _setup_console(req: SpawnRequest, rootfs: str, has_mntns: bool) -> None:
    from inclavare.linux import pty

    if req.console_fd is None:
        raise SysError("process.terminal is true but no --console-socket was given")
    ptmx = fos.path.join(rootfs, "dev/pts/ptmx") if has_mntns else "/dev/ptmx"
    master, slave, slave_path = pty.open_pty(ptmx)
    pty.set_size(master, req.process.get("consoleSize"))
    if has_mntns:
        pty.attach_console(fos.path.join(rootfs, "dev/console"), slave_path)
    pty.send_fd(req.console_fd, master)
    fos.close(master)
    fos.close(req.console_fd)
    pty.make_controlling(slave)
    if slave > 2:
        fos.close(slave)


def _finish_exec(req: SpawnRequest, ch: Channel, in_userns: bool) -> None:
    from inclavare.runtime.process import set_rlimits

    proc = req.process
    fin = req.finalizer
    fin.in_userns = in_userns
    if proc.get("terminal"):
        fos.setsid()
        _setup_console(req, "", False)
    set_rlimits(proc.get("rlimits"))
    _finalize_and_wait(req, ch, fin, {}, req.state)


# ---------------------------------------------------------------------------------------------
# parent side


def write_id_maps(pid: int, linux: dict[str, Any]) -> None:
    def fmt(maps: list[dict[str, Any]]) -> str:
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)

    for kind in ("uid", "gid"):
        maps = linux.get(f"{kind}Mappings") or []
        if not maps:
            continue
        try:
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(fmt(maps))
        except OSError as e:
            msg = f"linux.{kind}Mappings: writing /proc/{pid}/{kind}_map: {e.strerror}"
            raise SysError(msg, e.errno or 0) from None


def spawn(req: SpawnRequest, *, on_forked: Callable[[int], None],
          on_pid: Callable[[int], None], on_hooks: Callable[[int], None] | None = None) -> int:
    """Fork the stages; returns the host pid of the container process once it is ready."""
    p2c_r, p2c_w = fos.pipe()
    c2p_r, c2p_w = fos.pipe()
    req.mount_sources = _mount_sources(req)
    if req.mount_sources:
        import socket

        req.mount_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid1 = fos.fork()
    if pid1 == 0:
        try:
            fos.close(p2c_w)
            fos.close(c2p_r)
            stage1(req, Channel(p2c_r, c2p_w))
        finally:
            fos._exit(1)
    fos.close(p2c_r)
    fos.close(c2p_w)
    if req.mount_sock is not None:
        req.mount_sock[1].close()
    ch = Channel(c2p_r, p2c_w)
    stage1_reaped = False
    init_pid = 0
    try:
        mark("parent: forked")
        on_forked(pid1)
        mark("parent: cgroup applied")
        try:
            ch.send(t="go")
        except BrokenPipeError:
            pass  # stage 1 failed early (e.g. loading an enclave runtime): its error is in the pipe
        while True:
            msg = ch.recv()
            if msg is None:
                raise SysError("container process exited during setup" +
                               _exit_detail(pid1 if not stage1_reaped else 0))
            kind = msg.get("t")
            if kind == "idmap":
                write_id_maps(pid1, req.config.get("linux") or {})
                ch.send(t="ok")
            elif kind == "pid":
                init_pid = int(msg["pid"])
                fos.waitpid(pid1, 0)
                stage1_reaped = True
                on_pid(init_pid)
            elif kind == "mountsources":
                _send_mount_sources(req, pid1)
            elif kind == "seccomp":
                _hand_over_notify_fd(req, init_pid, int(msg["fd"]))
                ch.send(t="ok")
            elif kind == "hooks":
                if on_hooks is not None:
                    on_hooks(init_pid)
                ch.send(t="ok")
            elif kind == "ready":
                return init_pid  # the host pid stage 1 reported (the child only knows its in-namespace pid)
            elif kind == "error":
                raise InclavareError(msg.get("msg", "container setup failed"))
            else:
                raise SysError(f"sync: unexpected message {msg!r}")
    finally:
        ch.close()
        if req.mount_sock is not None:
            req.mount_sock[0].close()
        if not stage1_reaped:
            try:
                fos.kill(pid1, 9)
            except OSError:
                pass
            try:
                fos.waitpid(pid1, 0)
            except ChildProcessError:
                pass


def _exit_detail(pid: int) -> str:
    if not pid:
        return ""
    try:
        _, status = fos.waitpid(pid, fos.WNOHANG)
    except ChildProcessError:
        return ""
    if fos.WIFSIGNALED(status):
        return f" (killed by signal {fos.WTERMSIG(status)})"
    if fos.WIFEXITED(status):
        return f" (exit status {fos.WEXITSTATUS(status)})"
    return ""
