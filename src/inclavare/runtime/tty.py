"""Relay between rune's own terminal and a container's pty master (foreground `run`/`exec` with a tty)."""

from __future__ import annotations

import _signal as signal  # the C module: no IntEnum construction
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def relay(master: int, pid: int) -> int:
    """Copy stdin -> master and master -> stdout until ``pid`` (our child) exits; returns its status."""
    import fcntl
    import select
    import termios
    import tty

    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)

        def resize(*_: Any) -> None:
            try:
                size = fcntl.ioctl(stdin, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            except OSError:
                pass

        resize()
        signal.signal(signal.SIGWINCH, resize)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, lambda signum, _f: _forward(pid, signum))
    status: int | None = None
    stdin_open = True
    try:
        while True:
            fds = [master] + ([stdin] if stdin_open else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0.1)
            except InterruptedError:
                ready = []
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if data:
                    _write_all(stdout, data)
                elif status is not None:
                    break
            if stdin_open and stdin in ready:
                data = os.read(stdin, 65536)
                if data:
                    _write_all(master, data)
                else:
                    stdin_open = False
                    try:
                        _write_all(master, b"\x04")  # EOF for the canonical-mode reader
                    except OSError:
                        pass
            if status is None:
                wpid, wstatus = os.waitpid(pid, os.WNOHANG)
                if wpid == pid:
                    status = 128 + os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else os.WEXITSTATUS(wstatus)
                    # drain what is left, then stop
                    if not select.select([master], [], [], 0.05)[0]:
                        break
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        os.close(master)
    return status if status is not None else 255


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]
