"""The init-runelet and the exec runelet: the executors of enclave containers, plugged into
runtime/'s :class:`~inclavare.runtime.launch.Executor` seam by the caller (see :func:`for_config` and
:func:`for_state`).

With an enclave configured, a container's init does not ``execve`` its workload. It becomes the
*init-runelet*: it loads the enclave runtime's PAL on the host (before pivot_root), calls
``pal_get_version`` and ``pal_init`` before ``rune create`` returns, and after ``rune start`` runs the
payload through the PAL (``pal_create_process`` + ``pal_exec``; ``pal_exec`` for v1 PALs), forwards every
signal it receives to ``pal_kill(-1, sig)``, serves the agent socket for ``rune exec`` / ``rune attest``,
calls ``pal_destroy`` when the payload returns and exits with the payload's exit value.

``rune exec`` starts a *runelet* in the container's namespaces and cgroup, as for a plain container; it
hands its argv, env, stdio and a signal pipe to the init-runelet's agent and exits with the exit code the
agent reports, forwarding the signals it receives.

Signals: Python runs signal handlers in the main thread only, so the PAL calls that block run in worker
threads while the main thread waits on the wakeup fd (a handler could otherwise wait behind ``pal_exec``).
v1 PALs have no ``pal_kill``: a signal whose default action ends a process then ends the container.

SIGPIPE: the init-runelet's own threads write to sockets (the agent, an enclave runtime's in-enclave server or key
broker client), and a write to a peer that went away raises SIGPIPE in the writing thread. Forwarded, it would kill
the payload (rune exec's client or inclavared hanging up must not end the container). So every thread but the main
one runs with SIGPIPE blocked: its own writes get EPIPE, while a SIGPIPE sent to the container (``rune kill``) is
process-directed, reaches the main thread and is forwarded. PAL calls that start processes run with it unblocked,
so payloads start with the mask they always had.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` builds IntEnums (~7 ms on the start path)
import errno
import os
import select
import socket
import sys
import threading

from inclavare.enclave import agent
from inclavare.enclave.api import TARGETINFO_SIZE, PalError
from inclavare.enclave.config import pal_args
from inclavare.runtime.launch import Executor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# never forwarded: synchronous faults (they belong to the thread that caused them), and SIGCHLD, which
# the PAL's own waitpid needs to keep its default disposition
_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGSEGV, signal.SIGBUS,
                  signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}
# default action "ignore" or "continue": not a reason to end a container whose PAL cannot take signals
_HARMLESS = {signal.SIGCONT, signal.SIGURG, signal.SIGWINCH, signal.SIGPIPE}


def forwardable_signals() -> list[int]:
    return [s for s in range(1, signal.NSIG) if s not in _NOT_FORWARDED and not 32 <= s < signal.SIGRTMIN]


def _install(handler: Any) -> None:
    for s in forwardable_signals():
        try:
            signal.signal(s, handler)
        except (OSError, ValueError):
            pass


def _block_sigpipe() -> None:
    """Block SIGPIPE in the calling thread (and in the threads it starts from now on)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})


def _unblock_sigpipe() -> None:
    """Unblock SIGPIPE in the calling thread, after discarding a SIGPIPE its own writes left pending: only one sent
    to the container from outside should be forwarded."""
    while signal.sigtimedwait({signal.SIGPIPE}, 0) is not None:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPIPE})


class _SigpipeUnblocked:
    """``with _SigpipeUnblocked():`` around a PAL call that starts processes from a worker thread: they inherit the
    thread's signal mask, and must start with SIGPIPE unblocked as before."""

    def __enter__(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPIPE})

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})


def _set_name(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name)
    except OSError:
        pass


def _say(msg: str, fd: int = 2) -> None:
    try:
        os.write(fd, f"rune: {msg}\n".encode())
    except OSError:
        pass


def for_config(cfg: dict[str, Any]) -> InitRunelet | None:
    """The executor for a container created from ``cfg``: an init-runelet when its process env or its
    annotations name an enclave type, else None (execve). Takes the ``ENCLAVE_*`` variables out of
    the process env (they are rune's settings); raises EnclaveConfigError for unusable values."""
    from inclavare.enclave.config import resolve

    enclave = resolve(cfg["process"], cfg.get("annotations"))
    return InitRunelet(enclave) if enclave is not None else None


def for_state(state: Any) -> ExecRunelet | None:
    """The executor for `exec` in a container with this :class:`~inclavare.runtime.state.State`: a runelet
    when its init-runelet recorded an enclave."""
    return ExecRunelet() if state.extra.get("enclave") else None


def _refuse_unopened_sealed(pal: Any) -> None:
    """An image with sealed (encrypted) layers runs only in an enclave runtime that opened them: another one
    (builtin:wasm, a native PAL) would start the payload without its files -- fail ``create`` instead."""
    from inclavare.runtime.launch import SEALED_DIR

    if os.path.lexists("/" + SEALED_DIR) and not getattr(getattr(pal, "runtime", None), "unsealed", False):
        raise PalError("pal_init", -errno.EACCES, f"the image has encrypted layers ({SEALED_DIR}) and this enclave "
                       "runtime does not open them (builtin:sim does, with ENCLAVE_KBS_URL and ENCLAVE_KBS_KEY)")


def _pool_enclave(pal: Any, enclave: dict[str, str]) -> Any:
    """For a PAL v3 shared object: a pre-created enclave taken from epm's pool (a
    :class:`~inclavare.enclave.epm.enclave.Handover`, its fd then owned by the PAL), as upstream's pal Init does;
    None without epm, with an empty pool, or when the entry is unusable (fd -1 / addr 0 then, as upstream)."""
    from inclavare.enclave.pal import NativePal

    if not isinstance(pal, NativePal) or pal.version < 3:
        return None
    from inclavare.enclave.epm import enclave as epm_enclave

    address = epm_enclave.epm_socket(enclave.get("args") or "")
    if not address or not os.path.exists(address):
        return None  # no epm on this node: nothing heavy imported
    try:
        return epm_enclave.acquire(pal.path, address)
    except epm_enclave.EpmEnclaveError as e:
        if not e.unavailable:
            _say(f"warning: epm: {e}; pal_init builds the enclave itself")
    except Exception as e:  # noqa: BLE001 -- the pool only speeds starts up: never a reason to fail one
        _say(f"warning: epm: {type(e).__name__}: {e}; pal_init builds the enclave itself")
    return None


class InitRunelet(Executor):
    """Executor of an enclave container's init process."""

    replaces_process = False  # the init stays: it runs the payload through the PAL
    strict_resolve = False  # an enclave runtime may keep the payload where the container cannot see it

    def __init__(self, enclave: dict[str, str], spec: dict[str, Any] | None = None,
                 listen_fd: int | None = None) -> None:
        self.enclave = enclave
        self.spec: dict[str, Any] = spec or {}
        self.listen_fd = listen_fd
        self.pal: Any = None
        self.pool: Any = None  # a pre-created enclave from epm (PAL v3), see _pool_enclave
        self.lock = threading.Lock()

    # -- create, in the parent: the spec, the state, the agent socket

    def prepare(self, config: dict[str, Any], process: dict[str, Any], log: Any) -> None:
        from inclavare.enclave.config import prepare_spec

        self.spec = config
        for warning in prepare_spec(config, self.enclave):
            log("warning", warning)

    def state_fields(self) -> dict[str, Any]:
        return {"enclave": self.enclave}  # `exec` and `attest` find the enclave by it

    def open(self, state_dir: str, root_uid: int, root_gid: int) -> list[int]:
        self.listen_fd = agent.listen(state_dir, root_uid, root_gid)
        return [self.listen_fd]

    # -- create: on the host, then in the container before "ready"

    def preload(self) -> None:
        """Load the PAL from its host path, and the agent's messages (the protobuf runtime) for the agent
        service; runs in the child before the container's root is entered, while the parent sets up cgroups."""
        from inclavare.enclave.pal import open_pal

        agent.load_codec()
        self.pal = open_pal(self.enclave["path"], self.spec)
        self.pool = _pool_enclave(self.pal, self.enclave)  # on the host: epm's sockets are out of the container
        warm = getattr(getattr(self.pal, "runtime", None), "warm", None)
        if warm is not None:  # a builtin runtime with epm pools (enclave/epm/warm.py); a no-op without epm
            try:
                warm(pal_args(self.enclave), self.spec)
            except Exception as e:  # noqa: BLE001 - a pool is an optimisation: never a failed container
                from inclavare.enclave.epm.client import no_pool

                no_pool(f"warm-up failed: {type(e).__name__}: {e}")

    def before_ready(self) -> None:
        """pal_get_version and pal_init: a failure here makes `rune create` fail."""
        _set_name("init-runelet")
        _block_sigpipe()  # before pal_init: the threads a runtime starts there inherit it (module docstring)
        self.pal.get_version()
        pool = self.pool
        self.pal.init(pal_args(self.enclave), self.enclave.get("loglevel") or "info",
                      pool_fd=pool.fd if pool else -1, pool_addr=pool.addr if pool else 0)
        _refuse_unopened_sealed(self.pal)
        if self.listen_fd is not None:
            # from now on: `rune exec` and `rune attest` work on a created container too, as runc's exec does
            threading.Thread(target=self._serve, name="agent", daemon=True).start()

    # -- start: the payload

    def run(self, fin: Any) -> NoReturn:
        code = 1
        try:
            code = self._run(fin)
        except PalError as e:
            _say(str(e))
        except BaseException as e:  # noqa: BLE001
            _say(f"init-runelet: {type(e).__name__}: {e}")
        sys.stdout.flush()
        os._exit(code & 0xFF)

    def _run(self, fin: Any) -> int:
        pal = self.pal
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        ended: list[int] = []

        def on_signal(sig: int, _frame: Any) -> None:
            if pal.has_kill:
                try:
                    pal.kill(-1, sig)
                except PalError as e:
                    _say(str(e))
            elif sig not in _HARMLESS:
                ended.append(128 + sig)

        _install(on_signal)
        result: dict[str, Any] = {}

        def payload() -> None:
            try:
                args = list(fin.process.get("args") or [])
                with _SigpipeUnblocked():
                    result["code"] = pal.run(fin.path or args[0], args, list(fin.env), (0, 1, 2))
            except BaseException as e:  # noqa: BLE001
                result["error"] = e
            finally:
                os.write(done_w, b"x")

        threading.Thread(target=payload, name="payload", daemon=True).start()
        _unblock_sigpipe()  # the main thread takes SIGPIPEs sent to the container, and forwards them
        while not ended:
            ready, _, _ = select.select([done_r, wake_r], [], [])
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if done_r in ready:
                break
        if ended:
            return ended[0]
        if "error" in result:
            raise result["error"]
        code = int(result["code"])
        pal.destroy()
        return code

    # -- the agent service

    def _serve(self) -> None:
        lsock = socket.socket(fileno=self.listen_fd)
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        pb = agent.load_codec()
        try:
            req = agent.read_message(agent.sock_reader(conn), "request")
            if req.HasField("attest"):
                resp = pb.AgentServiceResponse()
                try:
                    # rune attest sends the platform QE's TARGETINFO; an upstream client sends none (a report
                    # to no particular target)
                    ti = bytes(req.attest.targetInfo) or bytes(TARGETINFO_SIZE)
                    resp.attest.localReport = self.pal.get_local_report(ti)
                    resp.attest.exitCode = 0
                except (PalError, agent.AgentError) as e:
                    resp.attest.exitCode = 1
                    resp.attest.error = str(e)
                conn.sendall(agent.frame(resp))
            elif req.HasField("exec"):
                self._remote_exec(conn, req)
        except (OSError, agent.AgentError) as e:
            _say(f"init-runelet: agent: {e}")
        finally:
            conn.close()

    def _remote_exec(self, conn: socket.socket, req: Any) -> None:
        pb = agent.load_codec()
        resp = pb.AgentServiceResponse()
        fds: list[int] = []
        try:
            for _ in range(4):  # signal pipe, stdin, stdout, stderr
                fds.append(agent.recv_fd(conn))
            args, env = agent.exec_args(req)
            if not args:
                raise agent.AgentError("exec: empty argv")
            path = _lookup(args[0], env)
            pal = self.pal
            if pal.version >= 2:
                with _SigpipeUnblocked():
                    pid = pal.create_process(path, args, env, (fds[1], fds[2], fds[3]))
                threading.Thread(target=self._relay_kills, args=(fds[0], pid), daemon=True).start()
                fds[0] = -1  # the relay owns it now
                resp.exec.exitCode = pal.exec(pid)
            else:
                with _SigpipeUnblocked():
                    resp.exec.exitCode = pal.run(path, args, env, (fds[1], fds[2], fds[3]))
        except (PalError, agent.AgentError, OSError) as e:
            resp.exec.exitCode = 1
            resp.exec.error = str(e)
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        try:
            conn.sendall(agent.frame(resp))
        except OSError:
            pass

    def _relay_kills(self, fd: int, pid: int) -> None:
        try:
            read = agent.fd_reader(fd)
            while True:
                msg = agent.read_message(read, "request")
                if msg.HasField("kill"):
                    try:
                        self.pal.kill(pid, msg.kill.sig)
                    except PalError:
                        pass
        except (OSError, agent.AgentError):
            pass
        finally:
            os.close(fd)


def _lookup(arg0: str, env: list[str]) -> str:
    """Upstream resolves the payload with the container's PATH when it can; an enclave runtime may
    keep its programs where the container cannot see them, so a miss is not an error."""
    from inclavare.runtime.process import find_executable

    try:
        return find_executable(arg0, env, os.getcwd())
    except Exception:  # noqa: BLE001
        return arg0


class ExecRunelet(Executor):
    """Executor of ``rune exec`` in an enclave container: relays to the init-runelet's agent."""

    replaces_process = False
    strict_resolve = False

    def __init__(self, conn_fd: int = -1) -> None:
        self.conn_fd = conn_fd

    def prepare(self, config: dict[str, Any], process: dict[str, Any], log: Any) -> None:
        from inclavare.enclave.config import strip_env

        strip_env(process)  # ENCLAVE_* settings are rune's, not the payload's

    def open(self, state_dir: str, root_uid: int, root_gid: int) -> list[int]:
        self.conn_fd = agent.connect(state_dir).detach()
        return [self.conn_fd]

    def preload(self) -> None:
        agent.load_codec()  # from the host: the messages are built and read after setns into the container

    def before_ready(self) -> None:
        _set_name("runelet")

    def run(self, fin: Any) -> NoReturn:
        code = 1
        try:
            code = self._run(fin)
        except BaseException as e:  # noqa: BLE001
            _say(f"exec: {e}")
        os._exit(code & 0xFF)

    def _run(self, fin: Any) -> int:
        sock = socket.socket(fileno=self.conn_fd)
        args = list(fin.process.get("args") or [])
        sock.sendall(agent.frame(agent.exec_request(args, list(fin.env))))
        sig_r, sig_w = os.pipe2(os.O_CLOEXEC)
        agent.send_fd(sock, sig_r, "signal-pipe")
        for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
            agent.send_fd(sock, fd, name)
        os.close(sig_r)

        def on_signal(sig: int, _frame: Any) -> None:
            try:
                agent.write_all(sig_w, agent.kill_request(sig))
            except OSError:
                pass

        _install(on_signal)
        resp = agent.read_message(agent.sock_reader(sock), "response")
        if resp.exec.error:
            _say(f"exec: {resp.exec.error}")
        return int(resp.exec.exitCode)
