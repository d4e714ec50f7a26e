"""The shim template: a warm, single-threaded process that forks resident shims on request.

A new resident shim (one per container, or per pod) would otherwise pay a CPython start and ~100 ms of imports
(protobuf, the ttrpc server, the Task service, the runtime library) before it can answer containerd's Create;
containerd's Go shims start in a few ms. The template pays that once per containerd: it imports everything a
shim needs, starts no thread, and waits on a SOCK_SEQPACKET socket in containerd's shim socket directory
(``/run/containerd/s/rune-template-<hash>``, mode 0600, peers of our uid only). ``containerd-shim-rune-v2
start`` forwards its whole request to it (flags, bundle, the options from stdin, the environment a shim needs)
and prints the answer, so the start process itself does no more than a CPython start and one round trip: the
template does the start (inclavare.shim.startup: group, socket, options, files) and forks, and the child
(single-threaded, so the fork is safe, and it forks its own fork server before any thread) becomes the
resident shim: its own session, stdio on /dev/null, the bundle as working directory.

The hash covers containerd's address and the shim's code (the launcher and the package's files, by path and
mtime), so an upgraded shim never gets an old template. The first ``start`` that finds no template forks the
resident shim itself and execs a template in the background for the next ones. The template ends when
containerd's socket has been gone for ``GONE_SECONDS`` (a restart keeps it) or after ``IDLE_SECONDS``
without a request; its children (the shims) are reaped
while it lives and re-parented to init after. ``RUNE_SHIM_TEMPLATE=0`` turns it off.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

# The client side (what `start` runs, once per container) imports only C modules: `json`, `socket` and
# `hashlib` would cost ~25 ms of re, enum and OpenSSL; the template side imports what it likes.

IDLE_SECONDS = 600.0
GONE_SECONDS = 30.0  # containerd's socket missing this long: containerd is gone, not restarting
MAX_REQUEST = 65536
COMM_SHIM = "rune-shim"
COMM_TEMPLATE = "rune-shim-tmpl"
COMM_SPARE = "rune-shim-spare"  # a spare shim until it gets a socket (then COMM_SHIM)
SPARE_ACK_SECONDS = 2.0
SPARE_DELAY = 0.15  # seconds without a start before a spare is built (a start's Create has the CPU first)


def enabled() -> bool:
    return os.environ.get("RUNE_SHIM_TEMPLATE", "1") not in ("0", "false", "no")


def set_comm(name: str) -> None:
    """The process name ps and /proc/PID/comm show (the command line stays the launcher's)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name)
    except OSError:
        pass


def code_identity(launcher: str) -> str:
    """What the template's code is: the launcher and the package's shim files, by path, size and mtime."""
    import inclavare

    pkg = os.path.dirname(os.path.abspath(inclavare.__file__))
    parts = [os.path.realpath(launcher), pkg, sys.executable]
    for d in (pkg, os.path.join(pkg, "shim"), os.path.join(pkg, "cli"), os.path.join(pkg, "runtime")):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            if n.endswith(".py"):
                try:
                    st = os.stat(os.path.join(d, n))
                except OSError:
                    continue
                parts.append(f"{d}/{n}:{st.st_size}:{st.st_mtime_ns}")
    try:
        st = os.stat(launcher)
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    except OSError:
        pass
    return "\n".join(parts)


def template_path(socket_dir: str, containerd_address: str, launcher: str) -> str:
    from _sha256 import sha256

    digest = sha256(f"{containerd_address}\n{code_identity(launcher)}".encode()).hexdigest()
    return os.path.join(socket_dir, f"rune-template-{digest[:32]}")


# ---------------------------------------------------------------------------------------------- client side


def request(path: str, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
    """Ask the template at ``path`` to do ``start`` (the message: flags, bundle, options, env, containerd's
    pid); its answer (``address`` and ``pid``, or ``error``), or None when no template answered (the caller then
    does the start itself)."""
    import _socket

    from inclavare.formats import fastjson

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.send(fastjson.dumps(message).encode())
        answer = fastjson.loads(s.recv(MAX_REQUEST) or b"null")
    except (OSError, ValueError):
        return None
    finally:
        s.close()
    return answer if isinstance(answer, dict) and ("address" in answer or "error" in answer) else None


def start_template(launcher: str, namespace: str, containerd_address: str) -> None:
    """Exec a template in the background (double fork, own session, no inherited fds or stdio)."""
    if not os.access(launcher, os.X_OK):
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, 65536)
                os.execv(launcher, [launcher, "-namespace", namespace, "-address", containerd_address, "template"])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# ---------------------------------------------------------------------------------------------- template side


def _same_user(conn: socket.socket) -> bool:
    import socket
    import struct

    ucred = struct.Struct("iII")
    try:
        _, uid, _ = ucred.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, ucred.size))
    except OSError:
        return False
    return bool(uid == os.geteuid())


def _bind(path: str) -> socket.socket | None:
    """The template's socket, or None when a live template already has it."""
    import socket

    from inclavare.shim.startup import bind_unix

    raw = bind_unix(path, socket.SOCK_SEQPACKET, 64)
    return None if raw is None else socket.socket(fileno=raw.detach())


def run(path: str, containerd_address: str, idle: float = IDLE_SECONDS) -> int:
    """Serve spawn requests at ``path`` until idle or containerd's socket is gone."""
    import gc
    import select
    import time

    import inclavare.shim.resident  # noqa: F401 - everything a shim needs, imported once here
    from inclavare.shim.forkserver import _preload

    _preload()
    from inclavare.shim.carrier.nodeconfig import shim_settings

    shim_settings()  # [epm] socket: the spares' (and the template's own warm-up) test for enclaves on this node
    gc.freeze()  # the imported code is never scanned by the shims' collections: fewer copy-on-write faults
    set_comm(COMM_TEMPLATE)
    sock = _bind(path)
    if sock is None:
        return 0
    last = time.monotonic()
    gone_since = 0.0
    spares = _Spares(sock)
    want: tuple[str, str] | None = None
    try:
        while True:
            while True:  # reap shims that exited
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
            now = time.monotonic()
            present = not containerd_address or os.path.exists(containerd_address)
            gone_since = 0.0 if present else (gone_since or now)
            if now - last > idle or (gone_since and now - gone_since > GONE_SECONDS):
                return 0
            if want is not None and now >= last + SPARE_DELAY:
                spares.keep(want)  # the next start of this namespace and root finds a shim ready
                want = None
            wait = 1.0 if want is None else max(0.0, last + SPARE_DELAY - now)
            if not select.select([sock], [], [], wait)[0]:
                continue
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            last = time.monotonic()
            with conn:
                if not _same_user(conn):
                    continue
                key = _serve_one(conn, sock, spares)
            if key is not None and spares.enabled:
                want = key  # built once no start has come for SPARE_DELAY: never beside a shim's first Create
    finally:
        spares.drop()
        sock.close()
        try:
            os.unlink(path)
        except OSError:
            pass


def _serve_one(conn: socket.socket, listener: socket.socket, spares: _Spares) -> tuple[str, str] | None:
    """One ``start``, done here on behalf of the start process that asked (see inclavare.shim.startup); the
    (namespace, state root) it was for, or None for a bad request."""
    import json

    from inclavare.shim import startup

    conn.settimeout(5.0)
    try:
        msg = conn.recv(MAX_REQUEST)
    except OSError:
        return None
    try:
        req = json.loads(msg)
        if not isinstance(req, dict):
            raise ValueError("want a JSON object")
        flags = {k: req["flags"][k] for k in ("namespace", "id", "address")}
        flags["debug"] = bool(req["flags"].get("debug"))
        if not all(isinstance(v, str) for k, v in flags.items() if k != "debug"):
            raise ValueError("flags must be strings")
        bundle, options = str(req["bundle"]), bytes.fromhex(str(req.get("options") or ""))
        env = {str(k): str(v) for k, v in dict(req.get("env") or {}).items()}
        containerd_pid = int(req.get("containerd_pid") or 0)
    except (ValueError, KeyError, TypeError) as e:
        _reply(conn, {"error": f"shim template: bad request: {e}"})
        return None

    def in_child() -> None:
        listener.close()
        conn.close()
        spares.close_in_child()

    try:
        address, pid, root = startup.start(flags, bundle, options, env, containerd_pid, in_child, spares.launch)
    except Exception as e:  # noqa: BLE001 - reported to the start process, which reports it to containerd
        _reply(conn, {"error": startup.describe(e)})
        return None
    _reply(conn, {"address": address, "pid": pid})
    return flags["namespace"], root


def _reply(conn: socket.socket, answer: dict[str, Any]) -> None:
    import json

    try:
        conn.send(json.dumps(answer).encode())
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------- spare shims


class _Spares:
    """At most one spare shim: a child of the template that has already built its Resident (core, fork
    server, pre-forked workers, Task service) for one namespace and state root, and waits on a socketpair for
    a socket to serve. A start for that namespace and root hands it the socket instead of forking a new
    shim, so what a new shim does before it can answer Create is off containerd's path. A spare ends when
    the template does (its end of the socketpair closes). ``RUNE_SHIM_SPARE=0`` turns spares off."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.enabled = os.environ.get("RUNE_SHIM_SPARE", "1") not in ("0", "false", "no")
        self.key: tuple[str, str] | None = None
        self.pid = 0
        self.chan: socket.socket | None = None
        self.warm = False  # the enclave runtimes' modules are imported here (then in every spare)

    def keep(self, key: tuple[str, str]) -> None:
        """Have a spare for ``key`` (a spare for another namespace or root is dropped). Once enclaves run in
        that root (shim.warmup), the template first imports the enclave runtimes' modules, once: every later
        spare, its fork server and its workers are born with them, and no shim pays for them again."""
        if self.chan is not None and self.key == key:
            return
        self.drop()
        import socket

        if not self.warm:
            from inclavare.shim.warmup import enclaves_expected, import_enclave_modules

            if enclaves_expected(key[1]):
                import gc

                import_enclave_modules()
                gc.freeze()
                self.warm = True

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return
        if pid == 0:
            code = 1
            try:
                self.listener.close()
                ours.close()
                code = _spare_main(theirs, *key)
            finally:
                os._exit(code)
        theirs.close()
        self.key, self.pid, self.chan = key, pid, ours

    def drop(self) -> None:
        """End the spare (it sees its socketpair close and exits)."""
        if self.chan is not None:
            self.chan.close()
        self.key, self.pid, self.chan = None, 0, None

    def close_in_child(self) -> None:
        """In a shim forked by the template: the spare's channel is not the shim's."""
        if self.chan is not None:
            self.chan.close()

    def launch(self, sock: Any, path: str, namespace: str, root: str, bundle: str, debug: bool,
               env: dict[str, str]) -> int | None:
        """Hand the listening ``sock`` to the spare if it is for ``namespace`` and ``root``: its pid, or None
        (no such spare, or it did not take it: the caller forks a shim)."""
        import json
        import socket

        if self.chan is None or self.key != (namespace, root):
            return None
        chan, pid = self.chan, self.pid
        self.key, self.pid, self.chan = None, 0, None
        try:
            msg = json.dumps({"path": path, "bundle": bundle, "debug": debug, "env": env}).encode()
            socket.send_fds(chan, [msg], [sock.fileno()])
            chan.settimeout(SPARE_ACK_SECONDS)
            taken = chan.recv(16) == b"ok"
        except OSError:
            taken = False
        finally:
            chan.close()
        return pid if taken else None


def _spare_main(chan: socket.socket, namespace: str, root: str) -> int:
    """The spare: build the shim ahead of need, wait for its socket, then serve it as any resident shim."""
    import json
    import socket

    from inclavare.shim.resident import Resident
    from inclavare.shim.startup import detach

    detach()
    set_comm(COMM_SPARE)
    resident = Resident(namespace, root)
    from inclavare.shim.carrier import preload

    preload()  # while idle: a carried Create then finds its modules loaded (only where a node config exists)
    fds: list[int] = []
    try:
        msg, fds, _, _ = socket.recv_fds(chan, MAX_REQUEST, 1)
        req = json.loads(msg) if msg and len(fds) == 1 else None
        if not isinstance(req, dict):
            raise ValueError("no socket to serve")
        path, bundle = str(req["path"]), str(req["bundle"])
        env = {str(k): str(v) for k, v in dict(req.get("env") or {}).items()}
        os.environ.update(env)
        os.chdir(bundle)
        chan.send(b"ok")
    except (OSError, ValueError, KeyError, TypeError):
        for fd in fds:
            os.close(fd)
        resident.core.shutdown()
        return 0
    finally:
        chan.close()
    return resident.serve(socket.socket(fileno=fds[0]), path, bundle, bool(req.get("debug")))
