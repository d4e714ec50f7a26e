"""The shim's process core without root: the supervisor (in a child interpreter, since it makes its process a
subreaper), the fork server's protocol and its binary:// logger start, and stdio copying (FIFOs, file://,
terminal) with this test playing the container process. Real containers: tests/integration/test_shim_core.py."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.errors import ShimError
from inclavare.shim.forkserver import ForkServer
from inclavare.shim.stdio import ProcessIO, Stdio, parse_binary_uri
from inclavare.shim.supervisor import exit_status

SRC = str(Path(__file__).resolve().parents[3] / "src")


# ------------------------------------------------------------------------------------------ exit status


def _status_of(code: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            exec(code)
        finally:
            os._exit(99)
    return os.waitpid(pid, 0)[1]


def test_exit_status_is_the_code_or_128_plus_the_signal() -> None:
    assert exit_status(_status_of("os._exit(3)")) == 3
    assert exit_status(_status_of("os.kill(os.getpid(), 15)")) == 128 + 15
    assert exit_status(_status_of("os.kill(os.getpid(), 9)")) == 137


# ------------------------------------------------------------------------------------------ supervisor

SUPERVISOR_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys, time
    from inclavare.shim.supervisor import Supervisor

    sup = Supervisor(reap_orphans=False)
    sup.start()

    def orphan(code, delay):
        # a child that forks a grandchild and exits: the grandchild is re-parented to us (the subreaper)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            g = os.fork()
            if g == 0:
                time.sleep(delay)
                os._exit(code)
            os.write(w, str(g).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        g = int(os.read(r, 32))
        return g

    # exits long before anyone adopts it: it stays a zombie of ours until then
    with sup.watch() as w:
        early = orphan(7, 0)
        time.sleep(0.2)
        p1 = sup.adopt(early, w)
    print("early", p1.wait(10))
    late = orphan(0, 30)
    p2 = sup.adopt(late)
    p2.signal(15)
    print("signal", p2.wait(10).status)
    try:
        p2.signal(15)
    except ProcessLookupError:
        print("gone")
    # a child of the embedding program is not the supervisor's to reap
    print("subprocess", subprocess.run([sys.executable, "-c", "raise SystemExit(5)"]).returncode)
    sup.stop()
""")


def test_supervisor_reaps_orphans_handed_to_it_and_nothing_else() -> None:
    p = subprocess.run([sys.executable, "-c", SUPERVISOR_SCRIPT], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=SRC))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("early Exit(status=7, exited_at_ns=")
    assert lines[1:] == ["signal 143", "gone", "subprocess 5"]


SWEEP_SCRIPT = textwrap.dedent("""
    import os, time
    from inclavare.shim.supervisor import Supervisor

    sup = Supervisor(reap_orphans=True)
    sup.SWEEP_INTERVAL = 0.05
    sup.start()

    def zombie():
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        while open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z":
            time.sleep(0.01)
        return pid

    def gone(pid, wait):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not os.path.exists(f"/proc/{pid}"):
                return True
            time.sleep(0.01)
        return False

    with sup.watch() as w:
        held = zombie()
        print("kept while a start is in flight", not gone(held, 0.3))
        p = sup.adopt(held, w)
    print("adopted", p.wait(10).status)
    print("orphan swept", gone(zombie(), 10))
    sup.stop()
""")


def test_supervisor_sweeps_unadopted_zombies_but_not_during_a_start() -> None:
    p = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=SRC))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["kept while a start is in flight True", "adopted 3", "orphan swept True"]


# ------------------------------------------------------------------------------------------ fork server


@pytest.fixture
def forkserver(tmp_path: Path) -> Iterator[ForkServer]:
    fs = ForkServer(str(tmp_path / "root"))
    pid = fs.start(allow_threads=True)
    fs.start_reader()
    yield fs
    fs.close()
    os.waitpid(pid, 0)
    fs.release()


def test_forkserver_answers_every_request_even_a_bad_one(forkserver: ForkServer) -> None:
    with pytest.raises(ShimError, match="unknown operation"):
        forkserver.call("reboot", {})
    with pytest.raises(ShimError, match="unknown fd name"):
        forkserver.call("start", {"id": "x"}, {"tty": 0})
    with pytest.raises(ShimError, match="does not exist") as e:
        forkserver.call("start", {"id": "nope"})
    assert e.value.code == "not_found"
    with pytest.raises(ShimError, match="over"):
        forkserver.call("exec", {"blob": "x" * (2 << 20)})
    # and it goes on serving
    with pytest.raises(ShimError, match="does not exist"):
        forkserver.call("delete", {"id": "nope"})


def test_forkserver_survives_a_worker_killed_while_idle(forkserver: ForkServer) -> None:
    deadline = time.monotonic() + 20
    children: list[str] = []
    while len(children) < 2 and time.monotonic() < deadline:  # the idle pool, forked after the start
        children = Path(f"/proc/{forkserver.pid}/task/{forkserver.pid}/children").read_text().split()
        time.sleep(0.01)
    assert len(children) == 2
    for pid in children:
        os.kill(int(pid), 9)
    while set(children) & set(Path(f"/proc/{forkserver.pid}/task/{forkserver.pid}/children").read_text().split()):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # until the server has reaped them: a request is not raced with the kill
    with pytest.raises(ShimError, match="does not exist"):
        forkserver.call("start", {"id": "nope"})


LOGGER = """#!/bin/sh
out="$1"
shift
{ echo "argv:$*"; env | sort; } > "$out.env"
cat <&3 > "$out.out"
echo ready >&5
"""


def test_forkserver_starts_a_binary_logger_with_fds_3_4_5(forkserver: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "logger.sh"
    script.write_text(LOGGER)
    script.chmod(0o755)
    spec = parse_binary_uri(f"binary://{script}?{tmp_path}/log&--flag&env.EXTRA=1", "c1", "k8s.io")
    assert spec.args == [f"{tmp_path}/log", "--flag"]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    res = forkserver.call("logger", {"path": spec.path, "args": spec.args, "env": spec.env},
                          {"logout": out_r, "logerr": err_r, "logready": ready_w})
    for fd in (out_r, err_r, ready_w):
        os.close(fd)
    assert res["pid"] > 0
    os.write(out_w, b"line\n")
    os.close(out_w)
    assert os.read(ready_r, 16) == b"ready\n"
    os.close(ready_r)
    os.close(err_w)
    env = (tmp_path / "log.env").read_text().splitlines()
    assert env[0] == "argv:--flag"
    assert [e for e in env[1:] if not e.startswith(("PWD=", "SHLVL=", "_="))] == [
        "CONTAINER_ID=c1", "CONTAINER_NAMESPACE=k8s.io", "EXTRA=1"]
    assert (tmp_path / "log.out").read_text() == "line\n"
    with pytest.raises(ShimError, match="binary logger /nonexistent: No such file"):
        forkserver.call("logger", {"path": "/nonexistent"}, {"logout": 0, "logerr": 0, "logready": 0})


def test_parse_binary_uri_refuses_what_containerd_would_not_run() -> None:
    with pytest.raises(ShimError) as e:
        parse_binary_uri("binary://relative/logger", "c", "ns")
    assert e.value.code == "invalid_argument"
    spec = parse_binary_uri("binary:///l?env.CONTAINER_ID=evil&a=b", "c", "ns")
    assert spec.env == {"CONTAINER_ID": "c", "CONTAINER_NAMESPACE": "ns"} and spec.args == ["a", "b"]


# ------------------------------------------------------------------------------------------ stdio


def _no_logger(spec: object, fds: object) -> int:
    raise AssertionError("no logger expected")


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def _read_until_eof(fd: int, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            data = os.read(fd, 65536)
            if not data:
                return out
            out += data
    raise AssertionError(f"no EOF; got {out!r}")


def test_fifo_stdio_copies_both_ways_and_close_io_ends_stdin(tmp_path: Path) -> None:
    paths = {n: _fifo(tmp_path / n) for n in ("in", "out", "err")}
    readers = {}
    for n in ("out", "err"):
        readers[n] = os.open(paths[n], os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(readers[n], True)
    pio = ProcessIO.open(Stdio(paths["in"], paths["out"], paths["err"]), "c", "ns", _no_logger)
    assert sorted(pio.child) == ["stderr", "stdin", "stdout"]
    proc = {n: os.dup(fd) for n, fd in pio.child.items()}  # the "process" keeps its own copies
    pio.handed()
    pio.attach()
    client = os.open(paths["in"], os.O_WRONLY)
    os.write(client, b"typed\n")
    assert select.select([proc["stdin"]], [], [], 10)[0]
    assert os.read(proc["stdin"], 100) == b"typed\n"
    os.close(client)
    os.set_blocking(proc["stdin"], False)
    with pytest.raises(BlockingIOError):  # the shim's own writer keeps the FIFO open: no EOF yet
        os.read(proc["stdin"], 100)
    os.set_blocking(proc["stdin"], True)
    pio.close_stdin()
    assert select.select([proc["stdin"]], [], [], 10)[0]
    assert os.read(proc["stdin"], 100) == b""  # CloseIO + the client's close: EOF
    os.write(proc["stdout"], b"to out\n")
    os.write(proc["stderr"], b"to err\n")
    for n in ("stdin", "stdout", "stderr"):
        os.close(proc[n])
    assert _read_until_eof(readers["out"]) == b"to out\n"
    assert _read_until_eof(readers["err"]) == b"to err\n"
    assert pio.wait_copied(10)
    pio.close()
    for fd in readers.values():
        os.close(fd)


def test_fifo_output_waits_for_the_clients_reader(tmp_path: Path) -> None:
    """ctr opens its end of the stdout FIFO in the background and gives the open up once the task has exited:
    the shim's open waits for that reader (as runc's shim does), so output cannot be written before it."""
    import threading

    out = _fifo(tmp_path / "out")
    opened: list[ProcessIO] = []
    t = threading.Thread(target=lambda: opened.append(ProcessIO.open(Stdio("", out, "", False), "c", "ns",
                                                                       _no_logger)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and not opened  # no reader yet: still waiting
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(reader, True)
    t.join(10)
    (pio,) = opened
    proc = os.dup(pio.child["stdout"])
    pio.handed()
    pio.attach()
    os.write(proc, b"seen\n")
    os.close(proc)
    assert _read_until_eof(reader) == b"seen\n"
    assert pio.wait_copied(10)
    os.close(reader)
    pio.close()


def test_wait_copied_waits_for_attach(tmp_path: Path) -> None:
    """Wait's drain can run before attach() (a process that exits at once): it waits for the copies to exist."""
    import threading

    out = _fifo(tmp_path / "out")
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(reader, True)
    pio = ProcessIO.open(Stdio("", out, "", False), "c", "ns", _no_logger)
    proc = os.dup(pio.child["stdout"])
    pio.handed()
    os.write(proc, b"quick\n")
    os.close(proc)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(pio.wait_copied(10)))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()  # nothing attached yet: not "copied"
    pio.attach()
    assert _read_until_eof(reader) == b"quick\n"
    t.join(10)
    assert result == [True]
    os.close(reader)
    pio.close()


def _finished_output(path: Path, data: bytes) -> tuple[ProcessIO, int]:
    """A ProcessIO copying into the FIFO ``path`` (with a reader, returned) from a process that wrote
    ``data`` and exited."""
    out = _fifo(path)
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    pio = ProcessIO.open(Stdio("", out, "", False), "c", "ns", _no_logger)
    proc = os.dup(pio.child["stdout"])
    pio.handed()
    pio.attach()
    os.write(proc, data)
    os.close(proc)
    return pio, reader


def test_the_copy_ends_once_the_client_has_read_the_fifo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client stops reading once it knows of the exit (CRI closes its FIFO readers, ctr ends its copies):
    what is left in the FIFO then is lost. So the copy (and wait_copied: Wait, TaskExit, delete) ends only
    once the client has read it all, or when close() stops it, or when the client reads nothing for a while."""
    from inclavare.shim import stdio

    monkeypatch.setattr(stdio, "READER_STALL", 60.0)
    pio, reader = _finished_output(tmp_path / "out", b"unread\n")
    assert not pio.wait_copied(0.3)  # nobody read it: not copied out yet
    assert os.read(reader, 100) == b"unread\n"
    assert pio.wait_copied(10)
    os.set_blocking(reader, True)
    assert _read_until_eof(reader) == b""
    os.close(reader)
    pio.close()
    # a client that never reads does not hold up close()
    pio, reader = _finished_output(tmp_path / "out2", b"never read\n")
    pio.close()
    assert not any(t.is_alive() for t in pio._pumps)
    os.close(reader)
    # nor, for long, the copy: a client that reads nothing (a detached ctr run -d has gone) is given up on
    monkeypatch.setattr(stdio, "READER_STALL", 0.1)
    pio, reader = _finished_output(tmp_path / "out3", b"left behind\n")
    assert pio.wait_copied(10)
    assert os.read(reader, 100) == b"left behind\n"  # still there: we gave up waiting, we did not drop it
    os.close(reader)
    pio.close()


def test_file_uri_and_bad_stdio(tmp_path: Path) -> None:
    log = tmp_path / "deep" / "dir" / "c.log"
    pio = ProcessIO.open(Stdio("", f"file://{log}", "", False), "c", "ns", _no_logger)
    assert sorted(pio.child) == ["stderr", "stdout"]
    out, err = os.dup(pio.child["stdout"]), os.dup(pio.child["stderr"])
    pio.handed()
    pio.attach()
    os.write(out, b"a\n")
    os.write(err, b"b\n")
    os.close(out)
    os.close(err)
    assert pio.wait_copied(10)
    pio.close()
    assert sorted(log.read_text().splitlines()) == ["a", "b"]
    with pytest.raises(ShimError, match="unknown stdio scheme 'udp'"):
        ProcessIO.open(Stdio("", "udp://x", "", False), "c", "ns", _no_logger)
    with pytest.raises(ShimError, match="not a FIFO"):
        ProcessIO.open(Stdio("", str(log), "", False), "c", "ns", _no_logger)
    with pytest.raises(ShimError, match="absolute path"):
        ProcessIO.open(Stdio("", "file://rel/x", "", False), "c", "ns", _no_logger)
    pio = ProcessIO.open(Stdio(), "c", "ns", _no_logger)
    assert pio.child == {}
    with pytest.raises(ShimError) as e:
        pio.resize(80, 24)
    assert e.value.code == "failed_precondition"
    pio.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_io_owner_gives_the_fifo_and_file_pipes_to_iouid_iogid(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """runc's IoUid/IoGid: every pipe the process gets for FIFO or file:// stdio is chowned (its own end, as
    go-runc's NewPipeIO); a binary:// logger's pipes and a terminal are not, as with runc's shim."""
    import errno

    real_fchown = os.fchown
    calls: list[tuple[int, int, int]] = []

    def fchown(fd: int, uid: int, gid: int) -> None:
        calls.append((os.fstat(fd).st_ino, uid, gid))
        if os.geteuid() == 0:
            real_fchown(fd, uid, gid)

    monkeypatch.setattr(os, "fchown", fchown)
    paths = {n: _fifo(tmp_path / n) for n in ("in", "out", "err")}
    readers = [os.open(paths[n], os.O_RDONLY | os.O_NONBLOCK) for n in ("out", "err")]
    pio = ProcessIO.open(Stdio(paths["in"], paths["out"], paths["err"]), "c", "ns", _no_logger,
                         io_owner=(1000, 1001))
    assert sorted(calls) == sorted((os.fstat(fd).st_ino, 1000, 1001) for fd in pio.child.values())
    assert len(calls) == 3
    if os.geteuid() == 0:
        assert {(os.fstat(fd).st_uid, os.fstat(fd).st_gid) for fd in pio.child.values()} == {(1000, 1001)}
    pio.handed()
    pio.close()
    calls.clear()
    pio = ProcessIO.open(Stdio("", f"file://{tmp_path}/log", "", False), "c", "ns", _no_logger, io_owner=(7, 0))
    assert sorted(calls) == sorted((os.fstat(fd).st_ino, 7, 0) for fd in pio.child.values())
    assert sorted(pio.child) == ["stderr", "stdout"]
    pio.handed()
    pio.close()
    calls.clear()
    # not chowned: no owner asked for, a terminal, a logger's pipes (which the logger reads)
    for stdio, owner in ((Stdio(paths["in"], paths["out"], paths["err"]), None),
                         (Stdio(paths["in"], paths["out"], "", True), (1000, 1000)),
                         (Stdio("", f"binary://{tmp_path}/logger", "", False), (1000, 1000))):
        pio = ProcessIO.open(stdio, "c", "ns", lambda spec, fds: 4242, io_owner=owner)
        assert pio.child
        pio.handed()
        pio.close()
    assert calls == []
    # a chown that fails: one error naming the stream and the ids, nothing of ours left open
    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    before = _open_fds()
    with pytest.raises(ShimError, match=r"^stdout pipe: chown to IoUid/IoGid 1000:1000: Operation not permitted$"):
        ProcessIO.open(Stdio("", paths["out"], paths["err"]), "c", "ns", _no_logger, io_owner=(1000, 1000))
    assert _open_fds() == before
    for fd in readers:
        os.close(fd)


def test_terminal_master_from_the_console_socket_with_resize(tmp_path: Path) -> None:
    out = _fifo(tmp_path / "out")
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(reader, True)
    pio = ProcessIO.open(Stdio("", out, "", True), "c", "ns", _no_logger)
    assert list(pio.child) == ["console"]
    master, slave = os.openpty()
    sock = socket.socket(fileno=os.dup(pio.child["console"]))
    socket.send_fds(sock, [b"/dev/ptmx"], [master])  # what the container's init does
    sock.close()
    os.close(master)
    pio.handed()
    pio.attach()
    pio.resize(132, 43)
    rows, cols = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    assert (rows, cols) == (43, 132)
    os.write(slave, b"hello")
    os.close(slave)
    assert _read_until_eof(reader) == b"hello"
    pio.close()
    os.close(reader)
