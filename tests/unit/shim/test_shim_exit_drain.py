"""TaskExit waits for the process's output: the Task service over the recording core, with a real ProcessIO copying
into a FIFO whose reader the test controls. The FIFO is shrunk to one page, so the copy stays blocked until the
test reads: "the output is still on its way" is a state the test holds, not a race it hopes to win."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.shim import service as service_mod
from inclavare.shim.proto.events import task_pb2 as ev
from inclavare.shim.proto.task import shim_pb2
from inclavare.shim.stdio import LoggerSpec, ProcessIO, Stdio
from tests.unit.shim.test_shim_service import CTX, FakeCore, Rig

OUTPUT = b"".join(b"line %05d\n" % i for i in range(5000)) + b"last\n"  # ~55 KiB: fits the process's pipe


def _no_logger(spec: LoggerSpec, fds: dict[str, int]) -> int:
    raise AssertionError("no logger here")


class DrainingCore(FakeCore):
    """The recording core, with the real output copies of the processes the test gave it."""

    def __init__(self) -> None:
        super().__init__()
        self.ios: dict[tuple[str, str], ProcessIO] = {}

    def drain(self, cid: str, exec_id: str = "", timeout: float = 0) -> bool:
        self.calls.append(("drain", cid, exec_id))
        io = self.ios.get((cid, exec_id))
        return io.wait_copied(timeout) if io is not None else True

    def delete(self, cid: str, exec_id: str = "") -> tuple[int, int, int]:
        for key in [k for k in self.ios if k[0] == cid and (k[1] == exec_id or not exec_id)]:
            self.ios.pop(key).close()  # as ShimCore.delete: the output copies end with the process
        return super().delete(cid, exec_id)


class Output:
    """A process's stdout: the shim's copy into a one-page FIFO, and the client's (containerd's) reader."""

    def __init__(self, path: Path, held: bool = False) -> None:
        """``held``: a child of the process keeps its stdout open (no EOF until the IO is closed)."""
        os.mkfifo(path)
        self.reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(self.reader, fcntl.F_SETPIPE_SZ, 4096)
        self.io = ProcessIO.open(Stdio("", str(path), "", False), "c", "ns", _no_logger)
        proc = os.dup(self.io.child["stdout"])
        self.io.handed()
        self.io.attach()
        os.write(proc, OUTPUT)  # the process writes everything, then exits
        self.held = proc if held else -1
        if not held:
            os.close(proc)
        self.got = b""

    def read_all(self) -> bytes:
        deadline = time.monotonic() + 20
        while not self.got.endswith(b"last\n") and time.monotonic() < deadline:
            try:
                self.got += os.read(self.reader, 65536)
            except BlockingIOError:
                time.sleep(0.005)
        return self.got

    def close(self) -> None:
        self.io.close()
        os.close(self.reader)
        if self.held >= 0:
            os.close(self.held)


class DrainRig(Rig):
    def __init__(self) -> None:
        super().__init__()
        self.core = DrainingCore()
        self.svc.core = self.core
        self.copied_at_exit: dict[str, bool] = {}

    def _publish(self, namespace: str, event: Any) -> None:
        if isinstance(event, ev.TaskExit):  # was the output out when containerd heard of the exit?
            io = self.core.ios.get((event.container_id, "" if event.id == event.container_id else event.id))
            self.copied_at_exit[event.id] = io.wait_copied(0) if io is not None else True
        super()._publish(namespace, event)

    @contextlib.contextmanager
    def output(self, path: Path, key: tuple[str, str] = ("c1", ""), held: bool = False) -> Iterator[Output]:
        """A process's output (see Output) registered with the core as ``key``'s IO, closed at the end."""
        out = Output(path, held=held)
        self.core.ios[key] = out.io
        try:
            yield out
        finally:
            out.close()

    def exits(self) -> list[str]:
        return [e.id for e in self.events if isinstance(e, ev.TaskExit)]

    def wait_exits(self, n: int) -> list[str]:
        deadline = time.monotonic() + 20
        while len(self.exits()) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.exits()


@pytest.fixture
def drig(monkeypatch: pytest.MonkeyPatch) -> Iterator[DrainRig]:
    monkeypatch.setattr(service_mod, "EXIT_DRAIN_SECONDS", 60.0)  # the bound never decides these tests
    r = DrainRig()
    yield r
    for io in r.core.ios.values():
        io.close()
    for t in threading.enumerate():
        if t.name.startswith("exit-"):
            t.join(10)


def test_task_exit_is_published_after_the_output_is_copied(drig: DrainRig, tmp_path: Path) -> None:
    with drig.output(tmp_path / "out") as out:
        drig.svc.on_exit("c1", "", 100, 0, 5)  # reaped: the copy is still blocked on the full FIFO
        assert not out.io.wait_copied(0)
        assert drig.exits() == []
        assert out.read_all().endswith(b"last\n")
        assert drig.wait_exits(1) == ["c1"]
        assert drig.copied_at_exit == {"c1": True}
        assert out.got == OUTPUT


def test_an_exit_waiting_for_output_holds_back_neither_the_reaper_nor_other_containers(drig: DrainRig,
                                                                                      tmp_path: Path) -> None:
    with drig.output(tmp_path / "out") as out:
        done = threading.Event()
        t = threading.Thread(target=lambda: (drig.svc.on_exit("c1", "", 100, 0, 5), done.set()))
        t.start()
        assert done.wait(10)  # on_exit returned at once (it runs on the reaper's thread)
        drig.svc.on_exit("c2", "", 200, 3, 6)  # no output pending: published now
        assert drig.exits() == ["c2"]
        out.read_all()
        assert drig.wait_exits(2) == ["c2", "c1"]
        t.join(10)


def test_a_containers_exits_keep_their_order_while_one_waits_for_output(drig: DrainRig, tmp_path: Path) -> None:
    """The core reports an exec's exit before its init's; the init's (nothing to drain) waits for the exec's."""
    with drig.output(tmp_path / "out", ("c1", "e1")) as out:
        drig.svc.on_exit("c1", "e1", 101, 0, 5)
        drig.svc.on_exit("c1", "", 100, 0, 6)
        assert drig.exits() == []
        out.read_all()
        assert drig.wait_exits(2) == ["e1", "c1"]
        assert drig.copied_at_exit["e1"] is True


def test_delete_sends_a_pending_exit_before_task_delete_with_the_right_status(drig: DrainRig,
                                                                                tmp_path: Path) -> None:
    """A child of the process holds its stdout: no EOF, the exit waits; containerd deletes meanwhile."""
    with drig.output(tmp_path / "out", held=True) as out:
        drig.svc.on_exit("c1", "", 100, 7, 5)
        assert out.read_all().endswith(b"last\n")
        assert drig.exits() == []
        resp = drig.svc.Delete(CTX, shim_pb2.DeleteRequest(id="c1"))
        assert resp.exit_status == 7
        assert drig.topics() == ["TaskExit", "TaskDelete"]
        exit_event, delete_event = drig.events
        assert (exit_event.exit_status, delete_event.exit_status) == (7, 7)
        for t in threading.enumerate():
            if t.name == "exit-c1":
                t.join(10)
                assert not t.is_alive()  # the close ended its wait
        assert drig.topics() == ["TaskExit", "TaskDelete"]  # and it sent nothing more


def test_an_exit_during_start_still_waits_for_the_start_event_and_the_output(drig: DrainRig,
                                                                              tmp_path: Path) -> None:
    with drig.output(tmp_path / "out") as out:
        drig.svc.Create(CTX, shim_pb2.CreateTaskRequest(id="c1", bundle="/b"))
        drig.core.on_start = lambda: drig.svc.on_exit("c1", "", 100, 0, 9)
        drig.svc.Start(CTX, shim_pb2.StartRequest(id="c1"))
        assert drig.topics() == ["TaskCreate", "TaskStart"]
        out.read_all()
        assert drig.wait_exits(1) == ["c1"]
        assert drig.topics() == ["TaskCreate", "TaskStart", "TaskExit"]
