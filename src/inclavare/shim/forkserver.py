"""The fork server: the one process that forks containers for the shim.

The shim serves ttrpc from threads, and forking a threaded CPython process is unsafe (a lock another thread
held at the fork stays held in the child forever: the import lock, a logging handler's, malloc's). So the
shim forks this server first, before any thread exists, with the runtime library already imported. It
serves requests from a ``SOCK_SEQPACKET`` socketpair: one JSON message each, with the file descriptors the
container needs (stdio, console socket) passed by ``SCM_RIGHTS``. Each request goes to a *worker*, a copy
of the server forked ahead of need, which is exactly a `rune create` / `rune exec` / `rune start` /
`rune delete` process without the interpreter start: it puts the stdio fds on 0-2, calls
:class:`~inclavare.runtime.container.Runtime`, writes its answer on a pipe and exits. The server itself
never calls the runtime, so a create that changes the working directory or stdio, or a runtime that
starts a thread (the cgroup priming), never touches it, and requests run in parallel.

Enclave containers: once the server knows enclaves run on this node (after an enclave create, or at once when
epm's socket exists or another shim saw an enclave create in the same state root) it forks, while idle, an
*enclave server*: a second server (its child) that imports the enclave runtimes' modules and forks its own
workers from there (:mod:`inclavare.shim.warmup`). From then on an enclave container's create (its bundle names
an enclave type) goes to the enclave server, whose answer is relayed; every other request stays here, so plain
containers keep forking from the small server. If the enclave server dies, its requests in flight are answered
with an error and creates go back to this server.
``ForkServer(root, warm=False)`` turns it off (benchmarks compare both).

The server forwards each worker's answer when the worker has exited (a pidfd per worker says when), so
every request gets exactly one answer, also when a worker dies. Workers are the server's children and it
reaps them; the container processes are not (see :mod:`inclavare.shim.supervisor`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import socket
import threading
from typing import Any

from inclavare.errors import InclavareError, ShimError

MAX_MESSAGE = 1 << 20  # a request or answer; a process spec is a few KiB
MAX_FDS = 8
REPLY_CAP = 60000  # below a pipe's 64 KiB buffer: a worker's answer never blocks it
log = logging.getLogger("inclavare.shim")
FD_NAMES = ("stdin", "stdout", "stderr", "console", "logout", "logerr", "logready")


class ForkServer:
    """The shim's side: starts the server and sends it requests (thread-safe, concurrent)."""

    def __init__(self, root: str, warm: bool = True) -> None:
        self.root = root
        self.warm = warm
        self.pid = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._reader: threading.Thread | None = None
        self._closed = False

    def start(self, allow_threads: bool = False) -> int:
        """Fork the server (call before any thread is started); returns its pid. ``allow_threads``: a test
        that embeds the core in a process that already has threads takes the risk knowingly."""
        if threading.active_count() > 1 and not allow_threads:
            raise ShimError("the fork server must be started before any thread: "
                            f"{threading.active_count() - 1} other thread(s) are running")
        _preload()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE * 2)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ours.close()
                _serve(theirs, self.root, self.warm)
            except BaseException:  # noqa: BLE001 - nothing may unwind into the shim's code in this child
                code = 1
            os._exit(code)
        theirs.close()
        self.pid, self._sock = pid, ours
        return pid

    def start_reader(self) -> None:
        """Start the thread that hands answers to the callers (after :meth:`start`)."""
        self._reader = threading.Thread(target=self._read_answers, name="shim-forkserver", daemon=True)
        self._reader.start()

    def call(self, op: str, args: dict[str, Any], fds: dict[str, int] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Run ``op`` in a worker; returns its result or raises ShimError with the worker's message."""
        fds = {k: v for k, v in (fds or {}).items() if v is not None}
        for name in fds:
            if name not in FD_NAMES:
                raise ShimError(f"fork server: unknown fd name {name!r}")
        with self._lock:
            if self._sock is None or self._closed:
                raise ShimError("fork server: not running")
            self._next += 1
            rid = self._next
            done = threading.Event()
            box: list[dict[str, Any]] = []
            self._waiting[rid] = (done, box)
            msg = json.dumps({"id": rid, "op": op, "args": args, "fds": list(fds)}).encode()
            if len(msg) > MAX_MESSAGE:
                del self._waiting[rid]
                raise ShimError(f"fork server: {op} request of {len(msg)} bytes is over {MAX_MESSAGE}")
            try:
                socket.send_fds(self._sock, [msg], list(fds.values()))
            except OSError as e:
                del self._waiting[rid]
                raise ShimError(f"fork server: sending {op}: {e.strerror}") from None
        if not done.wait(timeout):
            raise ShimError(f"fork server: no answer to {op} within {timeout}s")
        answer = box[0]
        for warning in answer.get("warnings") or ():
            log.warning("%s: %s", op, warning)
        if not answer.get("ok"):
            raise ShimError(str(answer.get("error") or f"{op} failed"), str(answer.get("code") or "unknown"))
        return dict(answer.get("result") or {})

    def _read_answers(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            try:
                answer = json.loads(data)
                entry = self._waiting.pop(int(answer["id"]))
            except (ValueError, KeyError, TypeError):
                continue
            entry[1].append(answer)
            entry[0].set()
        with self._lock:
            self._closed = True
            pending, self._waiting = self._waiting, {}
        for done, box in pending.values():
            box.append({"ok": False, "error": "fork server: it exited"})
            done.set()

    def close(self) -> None:
        """Tell the server to stop (it exits once its running workers have answered)."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def release(self) -> None:
        """Close our socket once the server has exited (the answer thread then ends)."""
        if self._reader is not None:
            self._reader.join(5)
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _preload() -> None:
    """Import what every worker uses, once, so that a worker starts with it loaded."""
    import inclavare.enclave.runelet  # noqa: F401
    import inclavare.formats.oci  # noqa: F401
    import inclavare.linux.cgroups  # noqa: F401
    import inclavare.linux.pty  # noqa: F401
    import inclavare.linux.rootfs  # noqa: F401
    import inclavare.runtime.hooks  # noqa: F401
    import inclavare.runtime.init  # noqa: F401
    import inclavare.runtime.launch  # noqa: F401
    import inclavare.runtime.process  # noqa: F401
    from inclavare.linux import syscalls

    syscalls.libc()


# ----------------------------------------------------------------------------------------------- server


class _Sub:
    """The enclave server (a child ``_Server`` with the enclave modules imported) and the requests it holds."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid, self.pidfd, self.sock = pid, pidfd, sock
        self.pending: set[int] = set()


class _Worker:
    """A forked worker: idle (``rid`` None, waiting on ``sock`` for its one request) or busy."""

    def __init__(self, pid: int, pidfd: int, reply_fd: int, sock: socket.socket | None) -> None:
        self.pid, self.pidfd, self.reply_fd, self.sock = pid, pidfd, reply_fd, sock
        self.rid: int | None = None
        self.buf = b""
        self.answered = False


class _Server:
    """The server's loop (in the forked child). Workers are forked ahead of need (``POOL`` idle ones), so
    a request waits for no fork of the server: forking even a small CPython process costs milliseconds
    (page tables), and on some hosts tens of them. A request goes to an idle worker with its fds; a
    replacement is forked while the worker runs."""

    POOL = 2

    def __init__(self, sock: socket.socket, root: str, warm: bool = True) -> None:
        self.sock, self.root = sock, root
        self.warm = warm  # whether an enclave server may be started (shim.warmup)
        self.want_sub = False  # enclaves run here: start the enclave server when idle
        self.sub: _Sub | None = None
        self.sub_failed = False
        self.noted = False  # the state root's marker says enclaves run here (shim.warmup.note_enclaves)
        self.named = False
        self.idle: list[_Worker] = []
        self.workers: dict[int, _Worker] = {}  # every live worker, by pidfd
        self.replies: dict[int, _Worker] = {}  # busy workers' answer pipes, by fd
        self.poller = select.poll()

    def run(self) -> None:
        # fork copied every fd of the shim; they are left open (closing an fd a Python object of the shim
        # still owns would let its finalizer close a later, unrelated fd; and a library that runs fork handlers,
        # as gRPC does, restarts its threads in this child on the fds it had) and never reach a workload: the
        # runtime marks everything above 2 (plus preserved fds) close-on-exec before it execs
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # nothing of the shim's stdio reaches a container
        os.close(null)
        self.poller.register(self.sock.fileno(), select.POLLIN)
        if self.warm:
            from inclavare.shim.warmup import enclaves_expected, modules_imported

            self.warm = not modules_imported()  # born warm (a template's spare): no enclave server needed
            self.want_sub = self.warm and enclaves_expected(self.root)
        self._fill()
        accepting = True
        while accepting or self.sub is not None or any(w.rid is not None for w in self.workers.values()):
            waiting = accepting and self.want_sub and self.sub is None and not self.sub_failed
            events = self.poller.poll(_idle_ms() if waiting else None)
            if not events and waiting and not self.replies:
                self._start_sub()
                continue
            for fd, _events in events:
                if fd == self.sock.fileno():
                    if not self._accept():
                        accepting = False
                        self.poller.unregister(self.sock.fileno())
                        self._retire_idle()
                        if self.sub is not None:
                            self.sub.sock.shutdown(socket.SHUT_WR)  # it finishes its requests and exits
                elif self.sub is not None and fd == self.sub.sock.fileno():
                    self._relay()
                elif self.sub is not None and fd == self.sub.pidfd:
                    self._sub_gone()
                elif fd in self.replies:
                    self._read_answer(self.replies[fd])
                elif fd in self.workers:
                    w = self.workers.pop(fd)
                    if w in self.idle:
                        self.idle.remove(w)
                    self._reap(w)
            if accepting and not self.replies:
                self._fill()  # between requests: a fork now would slow the worker that is answering

    # -- the enclave server

    def _start_sub(self) -> None:
        """Fork the enclave server (idle: no request for a moment): it imports the enclave modules, then serves
        like this one."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE * 2)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            self.sub_failed = True
            return
        if pid == 0:
            code = 0
            try:
                self.sock.close()
                ours.close()
                for w in self.workers.values():
                    os.close(w.pidfd)
                    os.close(w.reply_fd)
                    if w.sock is not None:
                        w.sock.close()
                from inclavare.shim.warmup import import_enclave_modules

                import_enclave_modules()
                _Server(theirs, self.root, warm=False).run()
            except BaseException:  # noqa: BLE001 - nothing may unwind into the server's loop in this child
                code = 1
            os._exit(code)
        theirs.close()
        self.sub = _Sub(pid, os.pidfd_open(pid), ours)
        self.poller.register(ours.fileno(), select.POLLIN)
        self.poller.register(self.sub.pidfd, select.POLLIN)

    def _to_sub(self, rid: int, msg: bytes, fds: list[int]) -> bool:
        """Hand a request to the enclave server; False if it cannot take it (then it is served here)."""
        sub = self.sub
        if sub is None:
            return False
        try:
            socket.send_fds(sub.sock, [msg], fds)
        except OSError:
            return False
        sub.pending.add(rid)
        return True

    def _relay(self) -> None:
        """An answer from the enclave server: pass it on to the shim as it is."""
        assert self.sub is not None
        try:
            data = self.sub.sock.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            self._sub_gone()
            return
        try:
            self.sub.pending.discard(int(json.loads(data)["id"]))
        except (ValueError, KeyError, TypeError):
            pass
        try:
            self.sock.send(data)
        except OSError:
            pass  # the shim is gone: nobody to tell

    def _sub_gone(self) -> None:
        """The enclave server has ended: answer what it had not, reap it; creates are served here again."""
        sub, self.sub = self.sub, None
        assert sub is not None
        self.poller.unregister(sub.sock.fileno())
        self.poller.unregister(sub.pidfd)
        while True:  # answers it sent before it ended
            try:
                data = sub.sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except OSError:
                break
            if not data:
                break
            with contextlib.suppress(ValueError, KeyError, TypeError):
                sub.pending.discard(int(json.loads(data)["id"]))
            with contextlib.suppress(OSError):
                self.sock.send(data)
        for rid in sorted(sub.pending):
            _answer(self.sock, rid, False, error="fork server: the enclave fork server died")
        sub.sock.close()
        os.close(sub.pidfd)
        _, status = os.waitpid(sub.pid, 0)
        if status != 0:
            self.sub_failed = True  # not restarted: creates go to this server's workers
            log.warning("fork server: the enclave fork server ended (status %s)", status)

    def _fill(self) -> None:
        while len(self.idle) < self.POOL:
            try:
                self.idle.append(self._prefork())
            except OSError:
                return  # out of processes: a request forks its worker when it comes

    def _retire_idle(self) -> None:
        for w in self.idle:
            if w.sock is not None:
                w.sock.close()  # EOF: the idle worker exits
                w.sock = None
        for w in self.idle:
            self.workers.pop(w.pidfd, None)
            self._reap(w)
        self.idle = []

    def _read_answer(self, w: _Worker) -> None:
        """Forward a worker's answer as soon as it is complete (a line): its exit, which tears down a
        copy of this process, is not waited for."""
        try:
            chunk = os.read(w.reply_fd, 65536)
        except BlockingIOError:
            return
        w.buf += chunk
        if b"\n" in w.buf or not chunk or len(w.buf) > REPLY_CAP:
            self._forward(w)

    def _forward(self, w: _Worker, status: int | None = None) -> None:
        if w.answered or w.rid is None:
            return
        w.answered = True
        self.poller.unregister(w.reply_fd)
        del self.replies[w.reply_fd]
        try:
            answer = json.loads(w.buf.partition(b"\n")[0])
            if not isinstance(answer, dict):
                raise ValueError("not an object")
        except ValueError:
            from inclavare.shim.supervisor import exit_status

            how = f" (status {exit_status(status)})" if status is not None else ""
            _answer(self.sock, w.rid, False, error=f"fork server: the worker died{how}")
            return
        answer["id"] = w.rid
        try:
            self.sock.send(json.dumps(answer).encode())
        except OSError:
            pass  # the shim is gone: nobody to tell

    def _reap(self, w: _Worker) -> None:
        """A worker has exited: reap it; say how it died if it had not answered."""
        self.poller.unregister(w.pidfd)
        os.close(w.pidfd)
        _, status = os.waitpid(w.pid, 0)
        if w.rid is not None and not w.answered:
            os.set_blocking(w.reply_fd, False)
            try:
                while len(w.buf) <= REPLY_CAP:
                    chunk = os.read(w.reply_fd, 65536)
                    if not chunk:
                        break
                    w.buf += chunk
            except BlockingIOError:
                pass  # a container process holds the write end until it execs
            self._forward(w, status)
        os.close(w.reply_fd)
        if w.sock is not None:
            w.sock.close()

    def _prefork(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE * 2)
        reply_r, reply_w = os.pipe()
        gc.freeze()  # what exists now is never scanned by a collection in the worker: fewer copy-on-write faults
        pid = os.fork()
        if pid == 0:
            # the worker: nothing of the server's may reach the container (all are O_CLOEXEC, but the
            # container's init holds them until it execs)
            code = 0
            try:
                self.sock.close()
                ours.close()
                os.close(reply_r)
                for w in self.workers.values():
                    os.close(w.pidfd)
                    os.close(w.reply_fd)
                    if w.sock is not None:
                        w.sock.close()
                _idle_worker(theirs, self.root, reply_w)
            except BaseException:  # noqa: BLE001 - nothing may unwind into the server's loop in this child
                code = 1
            os._exit(code)
        theirs.close()
        os.close(reply_w)
        pidfd = os.pidfd_open(pid)
        w = _Worker(pid, pidfd, reply_r, ours)
        self.workers[pidfd] = w
        self.poller.register(pidfd, select.POLLIN)
        return w

    def _accept(self) -> bool:
        """One request: hand it to an idle worker. False when the shim has closed its end."""
        try:
            msg, fds, flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
        except OSError:
            return False
        if not msg and not fds:
            return False
        if not self.named:  # a spare shim is renamed when it gets its socket: its server and workers follow
            self.named = _take_parent_name()
        rid = 0
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError("request truncated")
            req = json.loads(msg)
            rid = int(req["id"])
            names = list(req["fds"])
            if len(names) != len(fds) or any(n not in FD_NAMES for n in names):
                raise ValueError(f"fd names {names} do not match the {len(fds)} fds passed")
        except (ValueError, KeyError, TypeError) as e:
            for fd in fds:
                os.close(fd)
            _answer(self.sock, rid, False, error=f"fork server: bad request: {e}")
            return True
        if self.warm and req.get("op") == "create":
            from inclavare.shim.warmup import is_enclave_create, note_enclaves

            if is_enclave_create(req.get("args")):
                self.want_sub = True  # the first one is served here: the enclave server starts when idle
                if not self.noted:
                    self.noted = note_enclaves(self.root)  # later shims of this root start theirs at once
                if not self.sub_failed and self._to_sub(rid, msg, fds):
                    for fd in fds:
                        os.close(fd)
                    return True
        try:
            w = self._hand_over(msg, fds)
        except OSError as e:
            _answer(self.sock, rid, False, error=f"fork server: starting a worker: {e.strerror}")
            return True
        finally:
            for fd in fds:
                os.close(fd)
        w.rid = rid
        if w.sock is not None:
            w.sock.close()
            w.sock = None
        os.set_blocking(w.reply_fd, False)
        self.replies[w.reply_fd] = w
        self.poller.register(w.reply_fd, select.POLLIN)
        return True


    def _hand_over(self, msg: bytes, fds: list[int]) -> _Worker:
        """Give the request to an idle worker; one that died idle (its socket refuses) is skipped."""
        while self.idle:
            w = self.idle.pop(0)
            try:
                assert w.sock is not None
                socket.send_fds(w.sock, [msg], fds)
                return w
            except OSError:
                continue  # its pidfd reports the death; _reap cleans up
        w = self._prefork()
        assert w.sock is not None
        socket.send_fds(w.sock, [msg], fds)
        return w


def _take_parent_name() -> bool:
    """Take the shim's process name (ps, /proc/PID/comm); whether it was read."""
    from inclavare.shim.template import set_comm

    try:
        with open(f"/proc/{os.getppid()}/comm") as f:
            name = f.read().strip()
    except OSError:
        return False
    set_comm(name)
    return True


def _serve(sock: socket.socket, root: str, warm: bool = True) -> None:
    _Server(sock, root, warm).run()


def _idle_ms() -> int:
    from inclavare.shim.warmup import IDLE_SECONDS

    return int(IDLE_SECONDS * 1000)


def _answer(sock: socket.socket, rid: int, ok: bool, **rest: Any) -> None:
    try:
        sock.send(json.dumps({"id": rid, "ok": ok, **rest}).encode())
    except OSError:
        pass  # the shim is gone: nobody to tell


def _idle_worker(sock: socket.socket, root: str, reply_w: int) -> None:
    """A pre-forked worker: wait for one request (EOF: the server is stopping), do it, answer."""
    gc.disable()  # one operation, then exit: collections would only touch (and copy) the server's pages
    msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    sock.close()
    if not msg:
        return
    req = json.loads(msg)
    _work(root, req, dict(zip(req["fds"], fds, strict=True)), reply_w)


# ----------------------------------------------------------------------------------------------- worker


def _work(root: str, req: dict[str, Any], fds: dict[str, int], reply_fd: int) -> None:
    """In the worker: run one operation, write the answer."""
    import signal

    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)  # Python ignores them; the workload must not inherit that
    warnings: list[str] = []

    def log(level: str, msg: str) -> None:
        if level in ("warning", "error"):
            warnings.append(msg)

    answer: dict[str, Any]
    op = _OPS.get(str(req.get("op")))
    try:
        if op is None:
            raise ShimError(f"fork server: unknown operation {req.get('op')!r}", "invalid_argument")
        result = op(root, req.get("args") or {}, fds, log)
        answer = {"ok": True, "result": result, "warnings": warnings}
    except InclavareError as e:
        answer = {"ok": False, "error": str(e), "code": error_code(e), "warnings": warnings}
    except Exception as e:  # noqa: BLE001 - reported, never raised into the server
        answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    data = json.dumps(answer).encode()
    if len(data) > REPLY_CAP:
        data = json.dumps({"ok": False, "error": "fork server: answer too large"}).encode()
    os.write(reply_fd, data + b"\n")  # one line: the server forwards it at once


def error_code(e: InclavareError) -> str:
    """The ShimError code for a runtime error: what the Task service answers containerd with."""
    from inclavare.errors import ConfigError, ContainerError, NotRunningError

    if isinstance(e, ShimError):
        return e.code
    if isinstance(e, NotRunningError) or (isinstance(e, ContainerError) and "does not exist" in str(e)):
        return "not_found"
    if isinstance(e, ContainerError) and "already exists" in str(e):
        return "already_exists"
    if isinstance(e, ConfigError):
        return "invalid_argument"
    if isinstance(e, ContainerError):
        return "failed_precondition"
    return "unknown"


def _stdio(fds: dict[str, int]) -> None:
    """Put the request's stdio fds on 0-2 (/dev/null for those not given) and close the originals, so
    the container's process holds each pipe end once and its readers see EOF when it exits."""
    null = os.open("/dev/null", os.O_RDWR)
    for target, name in enumerate(("stdin", "stdout", "stderr")):
        os.dup2(fds.get(name, null), target)
    for name in ("stdin", "stdout", "stderr"):
        if name in fds and fds[name] > 2:
            os.close(fds.pop(name))
    os.close(null)


def _runtime(root: str, log: Any) -> Any:
    from inclavare.runtime.container import Runtime

    return Runtime(root, log=log)


def _op_create(root: str, args: dict[str, Any], fds: dict[str, int], log: Any) -> dict[str, Any]:
    from inclavare.enclave.runelet import for_config

    _stdio(fds)
    rt = _runtime(root, log)
    state = rt.create(str(args["id"]), str(args["bundle"]), console_fd=fds.get("console"),
                      no_pivot=bool(args.get("no_pivot")), no_new_keyring=bool(args.get("no_new_keyring")),
                      executor=for_config)
    return {"pid": int(state.pid)}


def _op_exec(root: str, args: dict[str, Any], fds: dict[str, int], log: Any) -> dict[str, Any]:
    from inclavare.enclave.runelet import for_state

    _stdio(fds)
    rt = _runtime(root, log)
    cid = str(args["id"])
    state, _status = rt.load(cid)
    pid = rt.exec(cid, dict(args["process"]), console_fd=fds.get("console"), executor=for_state(state))
    return {"pid": int(pid)}


def _op_start(root: str, args: dict[str, Any], fds: dict[str, int], log: Any) -> dict[str, Any]:
    _runtime(root, log).start(str(args["id"]))
    return {}


def _op_delete(root: str, args: dict[str, Any], fds: dict[str, int], log: Any) -> dict[str, Any]:
    _runtime(root, log).delete(str(args["id"]), force=bool(args.get("force")))
    return {}


def _op_logger(root: str, args: dict[str, Any], fds: dict[str, int], log: Any) -> dict[str, Any]:
    """Start a binary:// logger with fds 3, 4, 5 = its stdout pipe, stderr pipe and "ready" pipe, stdio on
    /dev/null, and only CONTAINER_ID and CONTAINER_NAMESPACE (plus the URI's env.* parameters) in its
    environment, as containerd's shims do. It outlives this worker and is re-parented to the shim."""
    import fcntl

    for name in ("logout", "logerr", "logready"):
        if name not in fds:
            raise ShimError(f"logger: the {name} fd is missing")
    path = str(args["path"])
    argv = [path, *[str(a) for a in args.get("args") or []]]
    env = {str(k): str(v) for k, v in dict(args.get("env") or {}).items()}
    sources = [fds["logout"], fds["logerr"], fds["logready"]]
    err_r, err_w = os.pipe()  # O_CLOEXEC: EOF at a successful exec, the errno text otherwise
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (*sources, err_w)]
            err_w = high.pop()
            null = os.open("/dev/null", os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)  # the copy is inheritable
            os.closerange(6, err_w)
            os.closerange(err_w + 1, 1 << 20)
            os.execve(path, argv, env)
        except OSError as e:
            os.write(err_w, (e.strerror or str(e)).encode())
        finally:
            os._exit(127)
    os.close(err_w)
    why = os.read(err_r, 4096).decode(errors="replace")
    os.close(err_r)
    if why:
        os.waitpid(pid, 0)
        raise ShimError(f"binary logger {path}: {why}")
    return {"pid": pid}


_OPS = {"create": _op_create, "exec": _op_exec, "start": _op_start, "delete": _op_delete, "logger": _op_logger}
