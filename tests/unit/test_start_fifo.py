"""`start` waits on the exec FIFO: an init that reaches the FIFO late (a loaded machine) must still be
started, not crash the waiter (regression: 50 concurrent `podman run --rm` hit an UnboundLocalError)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from inclavare.runtime.container import Runtime


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
        Runtime._await_fifo(fd, {"id": "late", "pid": os.getpid(), "pid_start": None})
    finally:
        t.join()
        os.close(fd)
