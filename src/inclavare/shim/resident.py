"""The resident shim process: the Task service on a ttrpc socket, over one ShimCore, until Shutdown.

Order matters: the process must still be single-threaded when :class:`ShimCore` forks its fork server, so the
core is built first, then the events publisher and the ttrpc server start their threads. The process is the
child subreaper of its containers (ShimCore makes it so before forking anything). It logs to the ``log`` FIFO
in the bundle when containerd has opened one (containerd copies it into its own log), and exits once a
Shutdown finds no container left, or at SIGTERM / SIGINT (containers are left running, as runc's shim does).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from inclavare.shim.service import TaskService

log = logging.getLogger("inclavare.shim")

HANGUP_WAIT = 1.0  # seconds to wait at exit for containerd to close its connections
EVENTS_CLOSE_TIMEOUT = 5.0  # seconds to deliver queued events at exit (containerd's shims wait as long)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR}


def _open_log(bundle: str, debug: bool, level: str = "") -> None:
    """Log to BUNDLE/log (a FIFO containerd reads) if a reader is there; else nowhere. containerd's ``-debug``
    wins over the node config's ``log_level``."""
    root = logging.getLogger("inclavare")
    root.setLevel(logging.DEBUG if debug else _LEVELS.get(level, logging.INFO))
    try:
        fd = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        root.addHandler(logging.NullHandler())
        return
    os.set_blocking(fd, True)
    handler = logging.StreamHandler(os.fdopen(fd, "w", buffering=1, errors="replace"))
    handler.setFormatter(logging.Formatter(
        'time="%(asctime)s" level=%(levelname)s msg="%(message)s" runtime=io.containerd.rune.v2 pid=%(process)d'))
    root.addHandler(handler)


_listener_fd = -1  # the ttrpc listening socket while the fork server is being forked


def _drop_listener_in_child() -> None:
    """In the fork server (forked by ShimCore): close the shim's listening socket, once. A copy held there would
    keep accepting connections into its backlog after the shim died, so ``delete`` would take the dead shim for a
    live one and keep its socket (and a later ``start`` of the group would hand containerd a dead address)."""
    global _listener_fd
    if _listener_fd >= 0:
        try:
            os.close(_listener_fd)
        except OSError:
            pass
        _listener_fd = -1


os.register_at_fork(after_in_child=_drop_listener_in_child)


class _NoEvents:
    """Events when containerd gave no TTRPC_ADDRESS: logged, not sent."""

    def publish(self, namespace: str, event: Any) -> None:
        log.debug("event %s not sent (no TTRPC_ADDRESS)", event.DESCRIPTOR.name)

    def close(self, timeout: float = 0) -> int:
        return 0


class _Relay:
    """The service's events: nowhere until the shim knows containerd's address (a spare shim is built before
    it does), then to the publisher."""

    def __init__(self) -> None:
        self.target: Any = _NoEvents()

    def publish(self, namespace: str, event: Any) -> None:
        self.target.publish(namespace, event)


class Resident:
    """A shim process up to the point where it serves: the core built (its fork server forked, so construct
    this while the process is single-threaded) and the Task service over it. A shim template builds one ahead
    of need (a spare) and hands it its socket later; a plain start builds it and serves at once."""

    def __init__(self, namespace: str, root: str, listener_fd: int = -1) -> None:
        """``listener_fd``: a listening socket this process already holds, which the fork server must not keep."""
        from inclavare.shim.carrier.nodeconfig import shim_settings
        from inclavare.shim.core import ShimCore

        global _listener_fd
        self.log_level, self.config_error = shim_settings()  # before the fork server inherits the environment
        self.namespace, self.root = namespace, root
        self.done = threading.Event()
        self.events = _Relay()
        self.service = TaskService(namespace, self.events.publish, root, on_shutdown=self.done.set)
        os.makedirs(root, 0o711, exist_ok=True)
        _listener_fd = listener_fd
        try:
            self.core = ShimCore(root, namespace=namespace, on_exit=self.service.on_exit)  # forks: before any thread
        finally:
            _listener_fd = -1
        self.service.core = self.core

    def serve(self, sock: socket.socket, path: str, bundle: str, debug: bool = False) -> int:
        """Serve the Task service on the listening ``sock`` (its file ``path`` is removed at exit) until Shutdown
        or SIGTERM / SIGINT; the environment has containerd's TTRPC_ADDRESS, the working directory is
        ``bundle``."""
        from inclavare.shim.service import INLINE_METHODS, TASK_SERVICE, error_status
        from inclavare.shim.template import COMM_SHIM, set_comm
        from inclavare.shim.ttrpc import TtrpcServer

        set_comm(COMM_SHIM)
        _open_log(bundle, debug, self.log_level)
        if self.config_error:
            log.warning("node config: %s", self.config_error)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        address = os.environ.get("TTRPC_ADDRESS", "")
        if address:
            from inclavare.shim.events import EventPublisher

            self.events.target = EventPublisher(address)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.done.set())
        server = TtrpcServer(error_status=error_status)
        server.register_service(TASK_SERVICE, self.service, inline=INLINE_METHODS)
        server.serve(sock)  # listens again: connections now see this process as the socket's peer (SO_PEERCRED)
        log.info("serving %s for namespace %s, state root %s", path or "inherited socket", self.namespace, self.root)
        while not self.done.wait(1.0):
            pass
        log.info("shutting down")
        left = self.events.target.close(EVENTS_CLOSE_TIMEOUT)
        if left:
            log.warning("%d events were not delivered", left)
        # let Shutdown's answer go out: containerd hangs up once it has it
        deadline = time.monotonic() + HANGUP_WAIT
        while server.connections() and time.monotonic() < deadline:
            time.sleep(0.005)
        server.close()
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.core.shutdown()
        return 0


def serve(sock: socket.socket, path: str, namespace: str, root: str, bundle: str, debug: bool = False) -> int:
    """Serve the Task service on the listening ``sock`` (its file ``path`` is removed at exit)."""
    return Resident(namespace, root, sock.fileno()).serve(sock, path, bundle, debug)
