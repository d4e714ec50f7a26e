"""Small socket helpers shared by the protocol code."""

from __future__ import annotations

import socket
import threading
import time


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only when the peer closed the connection first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class Watchdog:
    """Absolute deadlines for connections: a socket past its deadline is shut down, which ends any read or write
    blocked on it. Only the connection's own thread closes its socket (after :meth:`disarm`), so a descriptor is
    never touched after it was closed. After :meth:`expire_all` (a shutdown) every deadline, even one armed
    later, is already past."""

    def __init__(self, name: str, how: int = socket.SHUT_RDWR) -> None:
        self._how = how  # SHUT_RD: only reads are ended, and the peer sees no close before the owner closes
        self._cond = threading.Condition()
        self._deadlines: dict[socket.socket, float] = {}
        self._fired: set[socket.socket] = set()
        self._expired = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-watchdog", daemon=True)
        self._thread.start()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._cond:
            self._fired.discard(sock)
            self._deadlines[sock] = 0.0 if self._expired else time.monotonic() + seconds
            self._cond.notify()

    def disarm(self, sock: socket.socket) -> bool:
        """Stop watching ``sock``; True if its deadline had already passed (the socket is shut down)."""
        with self._cond:
            self._deadlines.pop(sock, None)
            fired = sock in self._fired
            self._fired.discard(sock)
            return fired

    def fired(self, sock: socket.socket) -> bool:
        """Whether ``sock``'s current deadline has passed (and the socket was shut down)."""
        with self._cond:
            return sock in self._fired

    def expire_all(self) -> None:
        with self._cond:
            self._expired = True
            for sock in self._deadlines:
                self._deadlines[sock] = 0.0
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for sock, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[sock]
                        self._fired.add(sock)
                        try:  # the plain socket's shutdown: ssl.SSLSocket's would drop its TLS state,
                            # and a write after that would go out in the clear
                            socket.socket.shutdown(sock, self._how)
                        except OSError:
                            pass
                wait = min(self._deadlines.values(), default=now + 60.0) - now
                self._cond.wait(max(wait, 0.01))
