"""Pseudo-terminals for `terminal: true` and the console socket hand-off (SCM_RIGHTS)."""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from inclavare.errors import SysError
from inclavare.linux import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.linux.syscalls import Syscalls

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def open_pty(ptmx: str = "/dev/ptmx") -> tuple[int, int, str]:
    """(master fd, slave fd, slave path) of a new pty from the devpts instance of ``ptmx``."""
    try:
        master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise SysError(f"terminal: opening {ptmx}: {e.strerror}", e.errno or 0) from None
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    num = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
    slave_path = os.path.join(os.path.dirname(os.path.realpath(ptmx)), str(num))
    try:
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    return master, slave, slave_path


def set_size(fd: int, size: dict[str, Any] | None) -> None:
    if size:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(size.get("height", 0)),
                                                         int(size.get("width", 0)), 0, 0))


def send_fd(sock_fd: int, fd: int, name: str = "/dev/ptmx") -> None:
    import socket

    s = socket.socket(fileno=os.dup(sock_fd))
    try:
        socket.send_fds(s, [name.encode()], [fd])
    except OSError as e:
        raise SysError(f"console socket: sending the pty master: {e.strerror}", e.errno or 0) from None
    finally:
        s.close()


def recv_fd(sock: object) -> int:
    import socket

    assert isinstance(sock, socket.socket)
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise SysError("console socket: no file descriptor received")
    return fds[0]


def connect_console_socket(path: str) -> int:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise SysError(f"--console-socket {path}: {e.strerror}", e.errno or 0) from None
    return s.detach()


def make_controlling(slave: int) -> None:
    """Make ``slave`` the stdio and controlling terminal of this (session-leader) process."""
    for target in (0, 1, 2):
        os.dup2(slave, target)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def attach_console(rootfs_dev_console: str, slave_path: str, kernel: Syscalls = sc.KERNEL) -> None:
    """Bind the pty slave onto /dev/console of the container."""
    if not os.path.lexists(rootfs_dev_console):
        os.close(os.open(rootfs_dev_console, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    kernel.mount(slave_path, rootfs_dev_console, None, sc.MS_BIND)
