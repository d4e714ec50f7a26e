"""inclavare.shim.startup: whether a shim's socket is served (what ``start`` and ``delete`` decide from), without
containerd: the process that listened must be alive and not exiting; a listener whose process is gone is live
until something resets the connection."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest

from inclavare.shim import startup


@pytest.fixture
def sockpath() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="su", dir="/tmp")  # short: unix socket paths are limited
    yield os.path.join(d, "s")
    shutil.rmtree(d, ignore_errors=True)


def test_dying_tells_live_zombie_and_missing_processes() -> None:
    assert startup._dying(os.getpid()) is False
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        # not reaped yet: a zombie once it has exited
        for _ in range(2000):
            if startup._dying(pid):
                break
            os.sched_yield()
        assert startup._dying(pid) is True
    finally:
        os.waitpid(pid, 0)
    assert startup._dying(pid) is None


def test_serves_a_live_listener_not_a_closed_one(sockpath: str) -> None:
    assert not startup.serves(sockpath)  # nothing there
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sockpath)
    assert not startup.serves(sockpath)  # bound, not listening: what a killed shim leaves
    s.listen(4)
    assert startup.serves(sockpath)
    s.close()
    assert not startup.serves(sockpath)


def test_a_listener_whose_process_is_gone_still_serves(sockpath: str) -> None:
    """``start`` binds and listens, hands the socket to the shim and exits: until the shim listens again, the
    peer credentials name a process that is gone, and the socket is still the shim's."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sockpath)
    pid = os.fork()
    if pid == 0:
        s.listen(4)  # the credentials connections see are this child's
        os._exit(0)
    os.waitpid(pid, 0)
    try:
        assert startup.serves(sockpath)
    finally:
        s.close()
    assert not startup.serves(sockpath)


def test_bind_unix_keeps_a_live_server_and_replaces_a_dead_one(sockpath: str) -> None:
    first = startup.bind_unix(sockpath)
    assert first is not None
    try:
        assert startup.bind_unix(sockpath) is None  # alive: not taken over
    finally:
        first.close()
    second = startup.bind_unix(sockpath)  # the file is left, nobody listens: replaced
    assert second is not None
    assert os.stat(sockpath).st_mode & 0o777 == 0o600
    second.close()
    with pytest.raises(OSError, match="too long"):
        startup.bind_unix("/tmp/" + "x" * 200)
