"""The ioctl request-number encoding and guest device access shared by the TDX and SEV-SNP attesters.

ioctls go through an injectable function (``ioctl(fd, request, arg: bytearray) -> int``, default
``fcntl.ioctl`` with the buffer mutated in place), so the request structs can be checked without the guest
drivers; configfs-tsm goes through :class:`ConfigfsTsm`, whose four file operations a test can replace.
"""

from __future__ import annotations

import os

from inclavare.ratls.attesters.base import AttesterError


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


_IOC_READ, _IOC_WRITE = 2, 1


def default_ioctl(fd: int, request: int, arg: bytearray) -> int:
    """The real ioctl: ``arg`` is passed by address and updated in place."""
    import fcntl

    return int(fcntl.ioctl(fd, request, arg, True))


def _open_device(who: str, path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise AttesterError(f"{who}: {path}: {e.strerror or e}") from None
