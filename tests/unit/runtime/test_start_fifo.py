"""`start` waits on the exec FIFO: an init that reaches the FIFO late (a loaded machine) must still be
started, not crash the waiter (regression: 50 concurrent `podman run --rm` hit an UnboundLocalError)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from inclavare.runtime.container import Runtime
from inclavare.runtime.state import State


def test_await_fifo_when_the_writer_comes_after_the_first_poll_timeout(tmp_path: Path) -> None:
    fifo = tmp_path / "exec.fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def late_writer() -> None:
        time.sleep(0.2)  # several of the waiter's 50 ms poll rounds pass without a writer
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, b"0")
        os.close(w)

    t = threading.Thread(target=late_writer)
    t.start()
    try:
        init = State.from_dict({"id": "late", "pid": os.getpid(), "pid_start": None})
        Runtime(str(tmp_path / "root"))._await_fifo(fd, init)
    finally:
        t.join()
        os.close(fd)


def test_await_fifo_returns_only_when_the_write_end_closes(tmp_path: Path) -> None:
    """The init writes its byte, then keeps the (O_CLOEXEC) write end open until it execs: `start`
    must wait for that EOF, so that poststart hooks follow the workload's exec."""
    fifo = tmp_path / "exec.fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    events: list[str] = []

    def init() -> None:
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, b"0")
        time.sleep(0.3)  # startContainer hooks, then execve
        events.append("exec")
        os.close(w)

    t = threading.Thread(target=init)
    t.start()
    try:
        Runtime(str(tmp_path / "root"))._await_fifo(fd, State.from_dict({"id": "c", "pid": os.getpid()}))
        events.append("start returned")
    finally:
        t.join()
        os.close(fd)
    assert events == ["exec", "start returned"]
