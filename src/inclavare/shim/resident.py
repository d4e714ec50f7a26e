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


def _open_log(bundle: str, debug: bool) -> None:
    """Log to BUNDLE/log (a FIFO containerd reads) if a reader is there; else nowhere."""
    root = logging.getLogger("inclavare")
    root.setLevel(logging.DEBUG if debug else logging.INFO)
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


def serve(sock: socket.socket, path: str, namespace: str, root: str, bundle: str, debug: bool = False) -> int:
    """Serve the Task service on the listening ``sock`` (its file ``path`` is removed at exit)."""
    from inclavare.shim.core import ShimCore
    from inclavare.shim.service import INLINE_METHODS, TASK_SERVICE, error_status
    from inclavare.shim.template import COMM_SHIM, set_comm
    from inclavare.shim.ttrpc import TtrpcServer

    set_comm(COMM_SHIM)
    _open_log(bundle, debug)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    done = threading.Event()
    address = os.environ.get("TTRPC_ADDRESS", "")
    publisher: Any
    if address:
        from inclavare.shim.events import EventPublisher

        publisher = EventPublisher(address)
    else:
        publisher = _NoEvents()
    service = TaskService(namespace, publisher.publish, root, on_shutdown=done.set)
    os.makedirs(root, 0o711, exist_ok=True)
    global _listener_fd
    _listener_fd = sock.fileno()
    try:
        core = ShimCore(root, namespace=namespace, on_exit=service.on_exit)  # forks: before any thread
    finally:
        _listener_fd = -1
    service.core = core
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server = TtrpcServer(error_status=error_status)
    server.register_service(TASK_SERVICE, service, inline=INLINE_METHODS)
    server.serve(sock)
    log.info("serving %s for namespace %s, state root %s", path or "inherited socket", namespace, root)
    while not done.wait(1.0):
        pass
    log.info("shutting down")
    left = publisher.close(EVENTS_CLOSE_TIMEOUT)
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
    core.shutdown()
    return 0
