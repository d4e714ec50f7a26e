"""The built-in ``wasm`` enclave runtime, driven in-process the way the init-runelet drives it (no container)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.enclave import api

pytest.importorskip("wasmtime")

from inclavare.enclave.runtimes import wasm  # noqa: E402

JOIN = 30.0  # a safety net so a broken kill cannot hang the suite; nothing asserts on time

PRELUDE = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; bytes 0..15: iovec and results; 16..1023: strings; 1024..: buffers
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
  (func $read (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (result i32) (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (i32.const -1)) (else (i32.load (i32.const 8)))))
  (data (i32.const 32) "oops\\n")
  (data (i32.const 48) "ready\\n")
"""


def module(body: str, data: str = "") -> str:
    return f'(module {PRELUDE} {data} (func (export "_start") {body}))'


ARGS_ENV = module("""
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (drop (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 20))))
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $environ_get (i32.const 1024) (i32.const 8192)))
    (drop (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 20))))
    (drop (call $write (i32.const 2) (i32.const 32) (i32.const 5)))""")

CAT = module("""(local $n i32)
    (loop $again
      (local.set $n (call $read (i32.const 0) (i32.const 1024) (i32.const 4096)))
      (if (i32.le_s (local.get $n) (i32.const 0)) (then (return)))
      (drop (call $write (i32.const 1) (i32.const 1024) (local.get $n)))
      (br $again))""")

EXIT_7 = module("""
    (drop (call $write (i32.const 1) (i32.const 48) (i32.const 6)))
    (call $proc_exit (i32.const 7))""")

TRAP = module("""
    (drop (call $write (i32.const 1) (i32.const 48) (i32.const 6)))
    unreachable""")

SPIN = module("""
    (drop (call $write (i32.const 1) (i32.const 48) (i32.const 6)))
    (loop $forever (br $forever))""")

# 2 pages to start; +2 must work under a 10-page limit, +20 more must fail (-1) under it and work without it.
GROW = module("""
    (if (i32.eq (memory.grow (i32.const 2)) (i32.const -1)) (then (call $proc_exit (i32.const 3))))
    (if (i32.ne (memory.grow (i32.const 20)) (i32.const -1)) (then (call $proc_exit (i32.const 4))))""")


def read_file(name: str) -> str:
    """Open NAME relative to the first preopen (fd 3) and copy it to stdout; exit 10+errno if it cannot."""
    return module(
        f"""(local $err i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const {len(name)})
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 10) (local.get $err)))))
    (drop (call $write (i32.const 1) (i32.const 1024)
      (call $read (i32.load (i32.const 12)) (i32.const 1024) (i32.const 4096))))""",
        f'(data (i32.const 64) "{name}")',
    )


class Pipes:
    """stdin/stdout/stderr pipes for one process; the runtime gets (stdin read end, stdout/stderr write ends)."""

    def __init__(self) -> None:
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()

    @property
    def stdio(self) -> tuple[int, int, int]:
        return (self.in_r, self.out_w, self.err_w)

    def collect(self) -> tuple[bytes, bytes]:
        """Close our ends, then read both outputs to EOF (EOF proves the runtime kept no copy open)."""
        for fd in (self.in_r, self.in_w, self.out_w, self.err_w):
            _close(fd)
        out, err = _drain(self.out_r), _drain(self.err_r)
        return out, err

    def close(self) -> None:
        for fd in (self.in_r, self.in_w, self.out_r, self.out_w, self.err_r, self.err_w):
            _close(fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _drain(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


@pytest.fixture
def make_runtime() -> Iterator[Callable[..., wasm.WasmRuntime]]:
    made: list[wasm.WasmRuntime] = []

    def make(args: str = "", spec: dict[str, Any] | None = None, log_level: str = "info") -> wasm.WasmRuntime:
        rt = wasm.WasmRuntime()
        rt.load(spec or {})
        rt.init(args, log_level)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.destroy()


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    p = Pipes()
    yield p
    p.close()


def write_module(tmp_path: Path, text: str, name: str = "prog.wat") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


class Runner(threading.Thread):
    """Runs exec(pid) in its own thread, as the init-runelet does, and keeps the exit value or the error."""

    def __init__(self, rt: wasm.WasmRuntime, pid: int) -> None:
        super().__init__(daemon=True)
        self.rt, self.pid = rt, pid
        self.status: int | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.status = self.rt.exec(self.pid)
        except BaseException as exc:
            self.error = exc

    def result(self) -> int | None:
        self.join(JOIN)
        assert not self.is_alive(), "exec() did not return"
        assert self.error is None, self.error
        return self.status


# -- running modules -------------------------------------------------------------------------------------------


def test_argv_env_stdout_and_stderr(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    assert rt.get_version() == 3
    path = write_module(tmp_path, ARGS_ENV)
    pid = rt.create_process(path, ["prog", "one two", "three"], ["A=1", "B=x=y", "EMPTY="], pipes.stdio)
    assert rt.exec(pid) == 0
    out, err = pipes.collect()
    assert out == b"prog\0one two\0three\0" + b"A=1\0B=x=y\0EMPTY=\0"
    assert err == b"oops\n"


def test_stdin_reaches_the_module(make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path) -> None:
    rt = make_runtime()
    pid = rt.create_process(write_module(tmp_path, CAT), ["cat"], [], pipes.stdio)
    payload = bytes(range(256)) * 40  # more than one read, binary-safe
    os.write(pipes.in_w, payload)
    os.close(pipes.in_w)
    assert rt.exec(pid) == 0
    out, _ = pipes.collect()
    assert out == payload


def test_output_reaches_exactly_the_given_fds_and_they_stay_open(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    # stdout and stderr swapped and moved to high fd numbers: nothing may go to this process's own 1 and 2
    # (free numbers: dup2 onto fixed ones would steal fds that libraries in this process hold, e.g. grpc's)
    high_out, high_err = fcntl.fcntl(pipes.err_w, fcntl.F_DUPFD, 57), fcntl.fcntl(pipes.out_w, fcntl.F_DUPFD, 57)
    try:
        pid = rt.create_process(write_module(tmp_path, ARGS_ENV), ["p"], [], (pipes.in_r, high_out, high_err))
        assert rt.exec(pid) == 0
        for fd in (pipes.in_r, high_out, high_err):
            os.fstat(fd)  # the caller's fds are still open
    finally:
        os.close(high_out)
        os.close(high_err)
    out, err = pipes.collect()
    assert out == b"oops\n"
    assert err == b"p\0"


def test_stdout_to_an_append_mode_file_and_a_socket(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    log_path = tmp_path / "out.log"
    log_path.write_bytes(b"earlier line\n")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    ours, theirs = socket.socketpair()
    try:
        pid = rt.create_process(
            write_module(tmp_path, ARGS_ENV), ["p", "q"], ["K=V"], (pipes.in_r, log_fd, theirs.fileno())
        )
        assert rt.exec(pid) == 0
        os.fstat(log_fd)
        theirs.close()
        err = b"".join(iter(lambda: ours.recv(4096), b""))
    finally:
        os.close(log_fd)
        ours.close()
        theirs.close()
    assert log_path.read_bytes() == b"earlier line\np\0q\0K=V\0"  # appended, not truncated
    assert err == b"oops\n"


def test_stdin_from_a_socket(make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path) -> None:
    rt = make_runtime()
    ours, theirs = socket.socketpair()
    try:
        pid = rt.create_process(write_module(tmp_path, CAT), ["cat"], [], (theirs.fileno(), pipes.out_w, pipes.err_w))
        ours.sendall(b"through a socket\n")
        ours.shutdown(socket.SHUT_WR)
        assert rt.exec(pid) == 0
        os.fstat(theirs.fileno())  # still open
    finally:
        ours.close()
        theirs.close()
    out, _ = pipes.collect()
    assert out == b"through a socket\n"


def test_reads_a_file_from_a_preopened_dir_and_nothing_outside(
    make_runtime: Callable[..., wasm.WasmRuntime], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the preopen\n")
    (tmp_path / "secret.txt").write_text("must not leak\n")
    rt = make_runtime(f"preopen={data}")

    p = Pipes()
    pid = rt.create_process(write_module(tmp_path, read_file("hello.txt"), "r1.wat"), ["r"], [], p.stdio)
    assert rt.exec(pid) == 0
    assert p.collect()[0] == b"hello from the preopen\n"

    p = Pipes()
    pid = rt.create_process(write_module(tmp_path, read_file("../secret.txt"), "r2.wat"), ["r"], [], p.stdio)
    status = rt.exec(pid)
    out, _ = p.collect()
    assert status > 10  # path_open failed with a WASI errno
    assert b"leak" not in out


def test_proc_exit_code_and_output_before_it(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    pid = rt.create_process(write_module(tmp_path, EXIT_7), ["e"], [], pipes.stdio)
    assert rt.exec(pid) == 7
    assert pipes.collect() == (b"ready\n", b"")


def test_trap_exits_134_with_one_line_on_stderr(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    pid = rt.create_process(write_module(tmp_path, TRAP), ["t"], [], pipes.stdio)
    assert rt.exec(pid) == 134
    out, err = pipes.collect()
    assert out == b"ready\n"
    assert err.startswith(b"wasm: trap: ") and err.count(b"\n") == 1
    assert b"unreachable" in err


def test_fuel_runs_out(make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path) -> None:
    rt = make_runtime("fuel=100000")
    pid = rt.create_process(write_module(tmp_path, SPIN), ["spin"], [], pipes.stdio)
    assert rt.exec(pid) == 134
    out, err = pipes.collect()
    assert out == b"ready\n"
    assert b"fuel" in err


def test_memory_limit_makes_growth_fail(make_runtime: Callable[..., wasm.WasmRuntime], tmp_path: Path) -> None:
    path = write_module(tmp_path, GROW)
    limited = make_runtime(spec={"linux": {"resources": {"memory": {"limit": 10 * 65536}}}})
    unlimited = make_runtime(spec={"linux": {"resources": {"memory": {"limit": -1}}}})
    for rt, expected in ((limited, 0), (unlimited, 4)):
        p = Pipes()
        try:
            assert rt.exec(rt.create_process(path, ["g"], [], p.stdio)) == expected
        finally:
            p.close()
    big = write_module(tmp_path, '(module (memory 100) (func (export "_start")))', "big.wat")
    p = Pipes()
    try:
        with pytest.raises(api.PalError) as info:
            limited.create_process(big, ["b"], [], p.stdio)
        assert (info.value.func, info.value.code) == ("pal_create_process", -12)
    finally:
        p.close()


# -- signals and concurrency -----------------------------------------------------------------------------------


def test_kill_interrupts_an_infinite_loop(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    pid = rt.create_process(write_module(tmp_path, SPIN), ["spin"], [], pipes.stdio)
    runner = Runner(rt, pid)
    assert _read_exactly(pipes.out_r, 6) == b"ready\n"  # it is inside the loop now
    rt.kill(pid, signal.SIGWINCH)  # ignored: must not count as the terminating signal
    rt.kill(pid, signal.SIGCHLD)
    rt.kill(pid, 0)
    rt.kill(pid, signal.SIGTERM)
    assert runner.result() == 128 + signal.SIGTERM
    out, err = pipes.collect()
    assert (out, err) == (b"", b"")  # no trap message for a kill
    with pytest.raises(api.PalError) as info:
        rt.kill(pid, signal.SIGTERM)  # it is gone
    assert (info.value.func, info.value.code) == ("pal_kill", -3)


def test_kill_before_exec_still_stops_it(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    pid = rt.create_process(write_module(tmp_path, SPIN), ["spin"], [], pipes.stdio)
    rt.kill(pid, signal.SIGINT)
    assert Runner(rt, pid).result() == 128 + signal.SIGINT


def test_two_processes_run_at_once_and_kill_all(make_runtime: Callable[..., wasm.WasmRuntime], tmp_path: Path) -> None:
    rt = make_runtime()
    spin = write_module(tmp_path, SPIN)
    cat = write_module(tmp_path, CAT, "cat.wat")
    a, b, c = Pipes(), Pipes(), Pipes()
    try:
        spinners = []
        for p in (a, b):
            spinners.append(Runner(rt, rt.create_process(spin, ["spin"], [], p.stdio)))
            assert _read_exactly(p.out_r, 6) == b"ready\n"
        # both spin at the same time; a third process still runs to completion next to them
        cat_pid = rt.create_process(cat, ["cat"], [], c.stdio)
        os.write(c.in_w, b"alongside\n")
        os.close(c.in_w)
        assert Runner(rt, cat_pid).result() == 0
        assert c.collect()[0] == b"alongside\n"
        assert all(r.is_alive() for r in spinners)
        rt.kill(-1, signal.SIGKILL)
        assert [r.result() for r in spinners] == [128 + signal.SIGKILL] * 2
    finally:
        for p in (a, b, c):
            p.close()
    rt.kill(-1, signal.SIGTERM)  # no processes left: not an error


def test_destroy_stops_running_processes(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path
) -> None:
    rt = make_runtime()
    path = write_module(tmp_path, SPIN)
    running = Runner(rt, rt.create_process(path, ["spin"], [], pipes.stdio))
    assert _read_exactly(pipes.out_r, 6) == b"ready\n"
    p = Pipes()
    idle = rt.create_process(path, ["idle"], [], p.stdio)
    rt.destroy()
    assert running.result() == 128 + signal.SIGKILL
    with pytest.raises(api.PalError) as info:
        rt.exec(idle)
    assert info.value.code == -3
    assert p.collect() == (b"", b"")  # the idle process's copies of the fds were released
    p.close()


# -- modules, caching, fallbacks -------------------------------------------------------------------------------


def test_binary_module_and_cache_follows_the_file(
    make_runtime: Callable[..., wasm.WasmRuntime], tmp_path: Path
) -> None:
    import wasmtime

    rt = make_runtime()
    path = tmp_path / "prog.wasm"
    for code, mtime in ((5, 1_000_000_000), (6, 2_000_000_000), (5, 3_000_000_000)):
        path.write_bytes(wasmtime.wat2wasm(module(f"(call $proc_exit (i32.const {code}))")))
        os.utime(path, ns=(mtime, mtime))
        for _ in range(2):  # the second run of the same file comes from the cache
            p = Pipes()
            try:
                assert rt.exec(rt.create_process(str(path), ["p"], [], p.stdio)) == code
            finally:
                p.close()


def test_without_proc_output_goes_through_callbacks(
    make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wasm, "_PROC_FD", str(tmp_path / "no-proc"))
    rt = make_runtime()
    path = write_module(tmp_path, ARGS_ENV)
    with pytest.raises(api.PalError, match="without /proc"):
        rt.create_process(path, ["p"], [], pipes.stdio)  # a stdin other than fd 0 cannot be reopened
    pid = rt.create_process(path, ["p"], ["X=1"], (0, pipes.out_w, pipes.err_w))
    assert rt.exec(pid) == 0
    assert pipes.collect() == (b"p\0X=1\0", b"oops\n")


@pytest.mark.parametrize(
    ("text", "name", "code", "needle"),
    [
        (None, "missing.wasm", -2, "missing.wasm"),
        ('(module (func (export "_start") (i32.add)))', "bad.wat", -8, "type mismatch"),
        ('(module (func (export "main")))', "nostart.wat", -8, "_start"),
        ('(module (import "env" "f" (func)) (func (export "_start")))', "imports.wat", -8, "env::f"),
        ("\udcff", "garbage.wasm", -8, "neither"),
    ],
)
def test_bad_modules(
    make_runtime: Callable[..., wasm.WasmRuntime],
    pipes: Pipes,
    tmp_path: Path,
    text: str | None,
    name: str,
    code: int,
    needle: str,
) -> None:
    rt = make_runtime()
    path = tmp_path / name
    if text is not None:
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(api.PalError) as info:
        rt.create_process(str(path), ["x"], [], pipes.stdio)
    assert (info.value.func, info.value.code) == ("pal_create_process", code)
    assert str(path) in str(info.value) and needle in str(info.value)
    assert "\n" not in str(info.value)


def test_argument_and_call_errors(make_runtime: Callable[..., wasm.WasmRuntime], pipes: Pipes, tmp_path: Path) -> None:
    for args, level, needle in (
        ("verbose", "info", "unknown argument 'verbose'"),
        ("fuel=lots", "info", "fuel=lots"),
        ("preopen=relative/dir", "info", "absolute"),
        ("", "loud", "log level"),
    ):
        rt = wasm.WasmRuntime()
        rt.load({})
        with pytest.raises(api.PalError, match=needle) as info:
            rt.init(args, level)
        assert (info.value.func, info.value.code) == ("pal_init", -22)

    with pytest.raises(api.EnclaveConfigError, match="linux.resources.memory.limit"):
        wasm.WasmRuntime().load({"linux": {"resources": {"memory": {"limit": "1G"}}}})

    rt = make_runtime(f"preopen={tmp_path / 'absent'}")
    path = write_module(tmp_path, EXIT_7)
    with pytest.raises(api.PalError, match="absent") as info:
        rt.create_process(path, ["e"], [], pipes.stdio)
    assert info.value.code == -2

    rt = make_runtime()
    with pytest.raises(api.PalError) as info:
        rt.create_process(path, ["e"], ["NOEQUALS"], pipes.stdio)
    assert info.value.code == -22
    closed_r, closed_w = os.pipe()
    os.close(closed_r)
    os.close(closed_w)
    with pytest.raises(api.PalError) as info:
        rt.create_process(path, ["e"], [], (pipes.in_r, closed_w, pipes.err_w))
    assert info.value.code == -9
    calls: list[Callable[[], object]] = [lambda: rt.exec(999), lambda: rt.kill(999, signal.SIGTERM)]
    for call in calls:
        with pytest.raises(api.PalError) as info:
            call()
        assert info.value.code == -3
    with pytest.raises(api.PalError) as info:
        rt.get_local_report(bytes(api.TARGETINFO_SIZE))
    assert info.value.func == "pal_get_local_report"
