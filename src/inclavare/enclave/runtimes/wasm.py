"""Built-in enclave runtime ``wasm``: runs WebAssembly modules (WASI preview 1) with wasmtime.

Selected with ``ENCLAVE_RUNTIME_PATH=builtin:wasm``. It plays the part upstream gives to a WAMR-based PAL: the
"enclave" is a WebAssembly sandbox, the container's processes are WASI command modules (``.wasm`` binaries or
``.wat`` text) found in the container's file system. It has no hardware identity, so it cannot produce a report.

Design notes:

* Each process gets its own wasmtime ``Engine`` (same configuration as the compiling engine; the compiled module
  is cached in serialized form and deserialized into it). Epoch interruption is per engine, so ``kill(pid)`` bumps
  just that process's epoch and its code traps at the next function entry or loop back-edge, even in ``(loop br 0)``.
  ``kill`` only sets a field and bumps an atomic counter: no locks, no logging, safe in a signal handler.
* stdio: wasmtime takes stdio as file paths. Pipes, FIFOs and character devices (ttys, /dev/null) are reopened
  through ``/proc/self/fd/N`` (same pipe / device, the caller's fd is neither closed nor truncated). Regular files
  and sockets go through a private pipe and a copying thread, so writes land at the caller's file offset (append
  mode kept) and sockets work. Without ``/proc`` output goes through wasmtime's write callback.
* epm's wasm pool (inclavare.enclave.epm.warm): ``warm`` (called on the host after ``load``) starts a helper that
  asks epm for the container's module precompiled; ``_serialize`` (at start, in the container) takes its answer
  and deserializes it instead of compiling when the bytes the container holds hash to the same SHA-256 and the
  fuel setting matches (a failed deserialize compiles).
* Known limit: a module blocked inside a host call (e.g. ``fd_read`` on an idle stdin) only sees a kill once
  that call returns.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import select
import signal
import stat
import threading
from dataclasses import dataclass, field
from typing import Any

from inclavare.enclave import api
from inclavare.formats.jsonshape import Shape, is_int

log = logging.getLogger(__name__)

NAME = "wasm"
_PROC_FD = "/proc/self/fd"  # a module attribute so tests can pretend /proc is missing
_COPY_CHUNK = 65536
_CALLBACK_DROP_WAIT = 5.0  # seconds; normally a few milliseconds
_SIGMAX = 64
# Signals whose default action does not terminate a process: they do not interrupt a module.
_NOT_TERMINATING = frozenset(
    int(s)
    for s in (
        signal.SIGCHLD,
        signal.SIGWINCH,
        signal.SIGURG,
        signal.SIGCONT,
        signal.SIGSTOP,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    )
)
_LOG_LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
EXIT_TRAP = 134  # what a shell reports for SIGABRT, as a native crash would look


def _one_line(message: str) -> str:
    """wasmtime errors span several lines (cause chain, wasm backtrace); fold them into one."""
    parts: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line == "Caused by:" or line.startswith("error while executing at wasm backtrace"):
            continue
        head, sep, rest = line.partition(":")
        if sep and head.isdigit():  # "0: cause" or a backtrace frame "0:  0x22 - <unknown>!..."
            line = rest.strip()
            if line.startswith("0x"):
                continue
        parts.append(line)
    return ": ".join(parts) or message.strip()


def _trap_reason(message: str) -> str:
    line = _one_line(message).rsplit(": wasm trap: ", 1)[-1]
    return line.removeprefix("wasm trap: ")


def _write_all(fd: int, data: bytes) -> int:
    """Write everything to ``fd`` (waiting out EAGAIN on non-blocking fds); 0 or a negative errno."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll()
        except InterruptedError:
            continue
        except OSError as exc:
            return -(exc.errno or errno.EIO)
    return 0


def _copy_out(src: int, dst: int) -> None:
    """Thread body: module output (our pipe) -> the caller's fd, until the module's end of the pipe closes."""
    try:
        while True:
            try:
                data = os.read(src, _COPY_CHUNK)
            except InterruptedError:
                continue
            except OSError:
                break
            if not data or _write_all(dst, data) < 0:
                break  # on a dead destination, closing src makes the module's writes fail like direct ones
    finally:
        os.close(src)


def _copy_in(src: int, dst: int, stop: int) -> None:
    """Thread body: the caller's fd -> module input (our pipe), until EOF, the module is gone, or ``stop``."""
    poller = select.poll()
    poller.register(src, select.POLLIN)
    poller.register(stop, select.POLLIN)
    try:
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if stop in ready:
                break
            try:
                data = os.read(src, _COPY_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
            if not data or _write_all(dst, data) < 0:
                break
    finally:
        os.close(dst)
        os.close(stop)


@dataclass
class _Process:
    pid: int
    path: str
    engine: Any
    store: Any
    start: Any
    stderr_fd: int
    wiring: _Stdio
    started: bool = False
    killed_by: int = 0


@dataclass
class _Stdio:
    """What one process's stdio wiring left to clean up after its store is closed."""

    threads: list[threading.Thread] = field(default_factory=list)  # copiers
    stops: list[int] = field(default_factory=list)  # write ends that tell input copiers to stop
    released: list[threading.Event] = field(default_factory=list)  # set when wasmtime drops a write callback


def _shutdown(store: Any, wiring: _Stdio, timeout: float | None) -> None:
    """Close a process's store, then let its copy threads finish (output copiers see EOF, input ones stop)."""
    if store is not None:
        store.close()  # closes wasmtime's reopened pipe ends
    # wasmtime drops write callbacks a moment later on one of its own threads; a Python callback still pending
    # there when the interpreter exits aborts the process, so wait for the drop.
    for event in wiring.released:
        event.wait(_CALLBACK_DROP_WAIT)
    stops, threads = wiring.stops, wiring.threads
    for fd in stops:
        try:
            os.write(fd, b"\0")
        except OSError:
            pass  # the copier already ended (EOF on its source) and closed the other end
        finally:
            os.close(fd)
    stops.clear()
    for thread in threads:
        if thread.is_alive():
            thread.join(timeout)


def _set_path(wasi: Any, stream: str, path: str, fd: int) -> None:
    """Point one WASI stdio stream at ``path``; wasmtime opens it right away."""
    try:
        setattr(wasi, f"{stream}_file", path)
    except Exception as exc:  # wasmtime raises WasmtimeError without an errno
        raise api.PalError("pal_create_process", -errno.EIO, f"{stream} fd {fd}: cannot reopen it: {exc}") from None


def _start_thread(wiring: _Stdio, target: Any, args: tuple[int, ...], name: str, owned: tuple[int, ...]) -> None:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    try:
        thread.start()
    except BaseException:
        for fd in owned:  # the thread would have closed them
            os.close(fd)
        raise
    wiring.threads.append(thread)


class WasmRuntime(api.EnclaveRuntime):
    """WebAssembly/WASI enclave runtime (PAL API v3 semantics for processes)."""

    name = NAME
    api_version = 3

    def __init__(self) -> None:
        self._wt: Any = None  # the wasmtime module, imported in load()
        self._engine: Any = None  # compiles modules; per-process engines share its configuration
        self._memory_limit = 0
        self._fuel = 0
        self._preopens: list[tuple[str, str]] = []
        self.extra_preopens: list[tuple[str, str]] = []  # (host, guest) the embedding runtime adds (sim: decrypted)
        self._initialized = False
        self._modules: dict[tuple[Any, ...], bytes] = {}
        self._precompiled: dict[tuple[str, int], bytes] = {}  # (module SHA-256, fuel) -> serialized, from epm
        self._pending: tuple[str, int, Any] | None = None  # (module SHA-256, fuel, epm.warm.Helper) not yet read
        self._procs: dict[int, _Process] = {}
        self._lock = threading.Lock()
        self._pids = itertools.count(1)

    # -- PAL calls ---------------------------------------------------------------------------------------------

    def load(self, spec: dict[str, Any]) -> None:
        self._memory_limit = _memory_limit(spec)
        self._import_wasmtime()
        self._engine = self._new_engine()

    def warm(self, args: str, spec: dict[str, Any]) -> None:
        """On the host, after ``load``: fetch the container's module precompiled from epm's pool (or compile and
        save it there). Does nothing without epm; never fails."""
        from inclavare.enclave.epm import client, warm

        if not client.available():
            return
        argv = (spec.get("process") or {}).get("args") or []
        path = warm.find_in_container(spec, str(argv[0])) if argv else None
        module = warm.host_file(spec, path) if path else None
        if module is None:
            client.no_pool(f"the module {argv[0] if argv else '?'} is not readable on the host before start")
            return
        if len(module) < warm.min_bytes():
            return  # compiling it costs less than asking epm
        fuel = warm.fuel_of(args)
        helper = warm.Helper.start(warm.wasm_prefetch, module, fuel)
        if helper is not None:  # read when the module is compiled: the epm work overlaps the rest of create
            self._pending = (hashlib.sha256(module).hexdigest(), fuel, helper)

    def _collect(self, module_sha256: str) -> None:
        """Take the warm-up helper's answer if it is about this module (waiting for it)."""
        pending = self._pending
        if pending is None or pending[0] != module_sha256:
            return
        self._pending = None
        serialized = pending[2].result()
        if isinstance(serialized, bytes):
            self.prime(pending[0], pending[1], serialized)

    def prime(self, module_sha256: str, fuel: int, serialized: bytes) -> None:
        """Offer a precompiled module: used for a module whose bytes hash to ``module_sha256`` when the
        runtime's fuel setting is ``fuel``."""
        self._precompiled[(module_sha256, fuel)] = serialized

    def init(self, args: str, log_level: str) -> None:
        if self._initialized:
            raise api.PalError("pal_init", -errno.EBUSY, "the wasm enclave is already initialized")
        if log_level not in _LOG_LEVELS:
            raise api.PalError("pal_init", -errno.EINVAL, f"unknown log level {log_level!r}")
        preopens: list[tuple[str, str]] = []
        fuel = 0
        for word in args.split():
            key, sep, value = word.partition("=")
            if sep and key == "preopen":
                if not value.startswith("/"):
                    raise api.PalError("pal_init", -errno.EINVAL, f"{word}: the directory must be an absolute path")
                path = os.path.normpath(value)
                preopens.append((path, path))
            elif sep and key == "fuel":
                if not value.isdigit() or int(value) <= 0:
                    raise api.PalError("pal_init", -errno.EINVAL, f"{word}: fuel must be a positive integer")
                fuel = int(value)
            else:
                raise api.PalError("pal_init", -errno.EINVAL, f"unknown argument {word!r} (known: preopen=DIR, fuel=N)")
        log.setLevel(_LOG_LEVELS[log_level])
        self._import_wasmtime()
        self._preopens = preopens
        if fuel != self._fuel or self._engine is None:
            self._fuel = fuel
            self._engine = self._new_engine()
            self._modules.clear()
        self._initialized = True
        log.debug("wasm: initialized (preopens %s, fuel %s, memory limit %s)", preopens, fuel, self._memory_limit)

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        return self._create(path, None, argv, env, stdio)

    def create_process_from_module(self, module: bytes, label: str, argv: list[str], env: list[str],
                                   stdio: tuple[int, int, int]) -> int:
        """Like create_process, for a module held in memory (the ``sim`` runtime's measured payload);
        ``label`` names it in messages."""
        return self._create(label, module, argv, env, stdio)

    def _create(self, path: str, module_bytes: bytes | None, argv: list[str], env: list[str],
                stdio: tuple[int, int, int]) -> int:
        func = "pal_create_process"
        if not self._initialized:
            raise api.PalError(func, -errno.EINVAL, "the wasm enclave is not initialized (pal_init first)")
        wt = self._wt
        if len(stdio) != 3:
            raise api.PalError(func, -errno.EINVAL, f"stdio must be three fds, got {stdio!r}")
        for fd in stdio:
            try:
                os.fstat(fd)
            except (OSError, TypeError, OverflowError):
                raise api.PalError(func, -errno.EBADF, f"stdio fd {fd!r} is not open") from None
        pairs: list[tuple[str, str]] = []
        for entry in env:
            key, sep, value = entry.partition("=")
            if not sep or not key:
                raise api.PalError(func, -errno.EINVAL, f"{path}: environment entry {entry!r} is not KEY=VALUE")
            pairs.append((key, value))
        preopens = (self._preopens or [("/", "/"), (os.getcwd(), ".")]) + self.extra_preopens
        for host, _guest in preopens:
            if not os.path.isdir(host):
                raise api.PalError(func, -errno.ENOENT, f"preopen={host}: no such directory in the container")

        serialized = self._compile(path) if module_bytes is None else self._compile_bytes(path, module_bytes)
        engine = self._new_engine()
        module = wt.Module.deserialize(engine, serialized)
        store = wt.Store(engine)
        store.set_epoch_deadline(1)  # any increment_epoch() from kill() interrupts this store
        if self._fuel:
            store.set_fuel(self._fuel)
        if self._memory_limit:
            store.set_limits(memory_size=self._memory_limit)
        wasi = wt.WasiConfig()
        wasi.argv = list(argv)
        wasi.env = pairs
        for host, guest in preopens:
            wasi.preopen_dir(host, guest)
        wiring = _Stdio()
        try:
            self._wire_stdio(wasi, stdio, wiring)
            store.set_wasi(wasi)
            linker = wt.Linker(engine)
            linker.define_wasi()
            instance = linker.instantiate(store, module)
            start = instance.exports(store)["_start"]
        except BaseException as exc:
            wasi.close()  # a no-op once the store owns it
            _shutdown(store, wiring, None)
            if not isinstance(exc, wt.WasmtimeError):
                raise
            reason = _one_line(str(exc))
            code = -errno.ENOMEM if self._memory_limit and "exceeds memory limits" in reason else -errno.ENOEXEC
            raise api.PalError(func, code, f"{path}: {reason}") from None
        pid = next(self._pids)
        self._procs[pid] = _Process(pid, path, engine, store, start, stdio[2], wiring)
        log.debug("wasm: process %d created from %s", pid, path)
        return pid

    def exec(self, pid: int) -> int:
        with self._lock:
            proc = self._procs.get(pid)
            if proc is None:
                raise api.PalError("pal_exec", -errno.ESRCH, f"no wasm process {pid}")
            if proc.started:
                raise api.PalError("pal_exec", -errno.EBUSY, f"wasm process {pid} is already running")
            proc.started = True
        wt = self._wt
        try:
            try:
                proc.start(proc.store)
                status = 0
            except wt.ExitTrap as exc:
                status = exc.code
            except (wt.Trap, wt.WasmtimeError) as exc:
                if proc.killed_by and getattr(exc, "trap_code", None) == wt.TrapCode.INTERRUPT:
                    status = 128 + proc.killed_by
                else:
                    _write_all(proc.stderr_fd, f"wasm: trap: {_trap_reason(str(exc))}\n".encode())
                    status = EXIT_TRAP
        finally:
            self._procs.pop(pid, None)
            self._release(proc)
        log.debug("wasm: process %d exited with %d", pid, status)
        return status

    def kill(self, pid: int, sig: int) -> None:
        # Runs in a signal handler: no locks, no logging, nothing that blocks.
        if not 0 <= sig <= _SIGMAX:
            raise api.PalError("pal_kill", -errno.EINVAL, f"invalid signal {sig}")
        if pid == -1:
            targets = list(self._procs.values())
        else:
            proc = self._procs.get(pid)
            if proc is None:
                raise api.PalError("pal_kill", -errno.ESRCH, f"no wasm process {pid}")
            targets = [proc]
        if sig == 0 or sig in _NOT_TERMINATING:
            return
        for proc in targets:
            if not proc.killed_by:
                proc.killed_by = sig
            proc.engine.increment_epoch()

    def destroy(self) -> None:
        self.kill(-1, signal.SIGKILL)
        with self._lock:
            idle = [p for p in self._procs.values() if not p.started]
            for proc in idle:
                proc.started = True  # a late exec() of it now fails instead of touching a closed store
                self._procs.pop(proc.pid, None)
        for proc in idle:
            self._release(proc, join_timeout=5.0)
        if self._pending is not None:
            self._pending[2].close()  # never needed: the helper is abandoned
            self._pending = None
        self._modules.clear()
        self._engine = None
        self._initialized = False

    def get_local_report(self, targetinfo: bytes) -> bytes:
        raise api.PalError("pal_get_local_report", -errno.ENOSYS, "the wasm runtime has no hardware identity")

    # -- helpers -----------------------------------------------------------------------------------------------

    def _import_wasmtime(self) -> None:
        if self._wt is None:
            try:
                import wasmtime
            except ImportError as exc:
                raise api.PalError("pal_init", -errno.ENOENT, f"the wasm runtime needs wasmtime: {exc}") from None
            self._wt = wasmtime

    def _new_engine(self) -> Any:
        config = self._wt.Config()
        config.epoch_interruption = True
        if self._fuel:
            config.consume_fuel = True
        return self._wt.Engine(config)

    def _compile(self, path: str) -> bytes:
        """Compile (or fetch from the cache) the module at ``path``; returns it serialized."""
        func = "pal_create_process"
        try:
            st = os.stat(path)
        except OSError as exc:
            raise api.PalError(func, -(exc.errno or errno.ENOENT), f"{path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise api.PalError(func, -errno.ENOEXEC, f"{path}: not a regular file")
        key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._modules.get(key)
        if cached is not None:
            return cached
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise api.PalError(func, -(exc.errno or errno.EIO), f"{path}: {exc.strerror}") from None
        serialized = self._serialize(path, data)
        with self._lock:
            stale = [k for k in self._modules if k[0] == path]
            for k in stale:
                del self._modules[k]
            self._modules[key] = serialized
        return serialized

    def _compile_bytes(self, label: str, data: bytes) -> bytes:
        key = ("<memory>", hashlib.sha256(data).digest())
        with self._lock:
            cached = self._modules.get(key)
        if cached is None:
            cached = self._serialize(label, data)
            with self._lock:
                self._modules[key] = cached
        return cached

    def _serialize(self, path: str, data: bytes) -> bytes:
        func = "pal_create_process"
        source: bytes | str = data
        if not data.startswith(b"\0asm"):
            try:
                source = data.decode("utf-8")
            except UnicodeDecodeError:
                raise api.PalError(func, -errno.ENOEXEC, f"{path}: neither a wasm binary nor WAT text") from None
        wt = self._wt
        sha = hashlib.sha256(data).hexdigest() if self._precompiled or self._pending else ""
        if self._pending is not None:
            self._collect(sha)
        pre = self._precompiled.get((sha, self._fuel)) if self._precompiled else None
        if pre is not None:
            try:
                module = wt.Module.deserialize(self._engine, pre)
            except wt.WasmtimeError as exc:
                log.debug("wasm: %s: the pool's precompiled module does not load (%s); compiling", path,
                          _one_line(str(exc)))
            else:
                self._check_start(path, module)
                return pre
        try:
            module = wt.Module(self._engine, source)
        except wt.WasmtimeError as exc:
            raise api.PalError(func, -errno.ENOEXEC, f"{path}: {_one_line(str(exc))}") from None
        self._check_start(path, module)
        return bytes(module.serialize())

    def _check_start(self, path: str, module: Any) -> None:
        """A WASI command exports ``_start: [] -> []``."""
        func = "pal_create_process"
        wt = self._wt
        start = [e.type for e in module.exports if e.name == "_start"]
        if not start or not isinstance(start[0], wt.FuncType):
            raise api.PalError(func, -errno.ENOEXEC, f"{path}: no exported function _start (not a WASI command)")
        if start[0].params or start[0].results:
            raise api.PalError(func, -errno.ENOEXEC, f"{path}: _start must take and return nothing")

    def _wire_stdio(self, wasi: Any, stdio: tuple[int, int, int], wiring: _Stdio) -> None:
        have_proc = os.path.isdir(_PROC_FD)
        for index, fd in enumerate(stdio):
            mode = os.fstat(fd).st_mode
            stream = ("stdin", "stdout", "stderr")[index]
            direct = stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or (index == 0 and stat.S_ISREG(mode))
            if have_proc and direct:
                _set_path(wasi, stream, f"{_PROC_FD}/{fd}", fd)
            elif have_proc and index == 0:
                r, w = os.pipe()
                stop_r, stop_w = os.pipe()
                wiring.stops.append(stop_w)
                _start_thread(wiring, _copy_in, (fd, w, stop_r), f"wasm-stdin-{fd}", (w, stop_r))
                try:
                    _set_path(wasi, stream, f"{_PROC_FD}/{r}", fd)
                finally:
                    os.close(r)  # wasmtime holds its own reopened copy
            elif have_proc:
                r, w = os.pipe()
                _start_thread(wiring, _copy_out, (r, fd), f"wasm-{stream}-{fd}", (r,))
                try:
                    _set_path(wasi, stream, f"{_PROC_FD}/{w}", fd)
                finally:
                    os.close(w)
            elif fd == 0 and index == 0:
                wasi.inherit_stdin()
            elif index == 0:
                raise api.PalError(
                    "pal_create_process", -errno.ENOENT, f"stdin fd {fd}: cannot reopen it without /proc mounted"
                )
            else:
                writer = _FdWriter(fd)
                wiring.released.append(writer.released)
                setattr(wasi, f"{stream}_custom", writer)
                del writer  # wasmtime holds the only reference, so __del__ tells when it let go

    @staticmethod
    def _release(proc: _Process, join_timeout: float | None = None) -> None:
        """Free a finished (or never started) process."""
        store, proc.store, proc.start = proc.store, None, None
        _shutdown(store, proc.wiring, join_timeout)


class _FdWriter:
    """wasmtime write callback (used only without /proc): write the bytes to a caller's fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.released = threading.Event()

    def __del__(self) -> None:
        self.released.set()

    def __call__(self, data: bytes) -> int:
        rc = _write_all(self.fd, data)
        return rc if rc < 0 else len(data)


def _memory_limit(spec: dict[str, Any]) -> int:
    """linux.resources.memory.limit of the container's OCI config, in bytes; 0 when unset or unlimited."""
    node: Any = spec
    for key in ("linux", "resources", "memory"):
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return 0
    node = Shape(api.EnclaveConfigError).object(node, "linux.resources.memory")
    limit = node.get("limit")
    if limit is None:
        return 0
    if not is_int(limit):
        raise api.EnclaveConfigError("linux.resources.memory.limit", f"must be an integer, got {limit!r}")
    return limit if limit > 0 else 0
