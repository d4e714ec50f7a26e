"""The PAL drivers: C test PALs (v1-v3) through ctypes, and Python runtimes through the registry.

The C PALs in tests/fixtures/pal record every call in a log and really run the payload, so these tests check
what crossed the C ABI (call order, strings, fd numbers, pids) and what the payload saw.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.enclave import api, registry
from inclavare.enclave.api import EnclaveConfigError, EnclaveRuntime, PalError
from inclavare.enclave.pal import NativePal, Pal, PythonPal, open_pal
from tests.fixtures.pal.build import build_pal, read_log

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or not os.path.exists("/bin/sh"),
                                reason="needs gcc and /bin/sh")

SH = "/bin/sh"


@pytest.fixture(scope="session")
def pal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pals")


@pytest.fixture
def pal_file(pal_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """pal_file(variant) -> a private copy (own inode, so its own dlopen instance and state)."""

    def make(variant: str) -> str:
        dst = tmp_path / f"{variant}.so"
        if not dst.exists():
            shutil.copyfile(build_pal(variant, pal_dir), dst)
        return str(dst)

    return make


@pytest.fixture
def logfile(tmp_path: Path) -> Path:
    return tmp_path / "calls.log"


class Pipes:
    """Three pipes for a payload's stdin/stdout/stderr; we keep the ends the payload does not use."""

    def __init__(self) -> None:
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()

    @property
    def stdio(self) -> tuple[int, int, int]:
        return (self.in_r, self.out_w, self.err_w)

    def feed(self, data: bytes) -> None:
        os.write(self.in_w, data)
        os.close(self.in_w)
        self.in_w = -1

    def collect(self) -> tuple[bytes, bytes]:
        """After the payload ended: close our copies of its ends and read everything it wrote."""
        for fd in (self.in_r, self.out_w, self.err_w):
            os.close(fd)
        self.in_r = self.out_w = self.err_w = -1
        return _read_all(self.out_r), _read_all(self.err_r)

    def close(self) -> None:
        for fd in (self.in_r, self.in_w, self.out_r, self.out_w, self.err_r, self.err_w):
            if fd >= 0:
                os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    p = Pipes()
    yield p
    p.close()


def calls(path: Path) -> list[str]:
    return [func for func, _ in read_log(path)]


# ---------------------------------------------------------------- call order and arguments per version


def test_v1_call_order_arguments_and_stdio(pal_file: Any, logfile: Path, pipes: Pipes) -> None:
    pal = open_pal(pal_file("pal_v1"), {})
    assert isinstance(pal, NativePal) and pal.version == 1
    assert not pal.has_kill and not pal.has_report
    pal.init(f"log={logfile} mode=a%b", "debug")
    argv = ["sh", "-c", 'read line; echo "out:$line"; echo "err:$1" >&2', "arg0", "x, y%z"]
    pipes.feed(b"hello\n")
    assert pal.run(SH, argv, ["IGNORED=by-v1"], pipes.stdio) == 0
    assert pipes.collect() == (b"out:hello\n", b"err:x, y%z\n")
    assert pal.kill(-1, signal.SIGTERM) is False  # v1 has no pal_kill; nothing is called
    pal.destroy()

    log = read_log(logfile)
    # v1 exports no pal_get_version: the driver must not have called anything before pal_init
    assert [f for f, _ in log] == ["pal_init", "pal_exec", "pal_destroy"]
    assert log[0][1] == {"args": f"log={logfile} mode=a%b", "log_level": "debug"}
    fields = log[1][1]
    assert fields["path"] == SH and fields["argv"] == argv
    assert "env" not in fields  # v1's pal_exec has no environment parameter


def test_v1_logs_the_fd_numbers_it_was_given(pal_file: Any, logfile: Path, pipes: Pipes) -> None:
    pal = open_pal(pal_file("pal_v1"), {})
    pal.init(f"log={logfile}", "info")
    stdio = pipes.stdio
    pal.run(SH, ["sh", "-c", "true"], [], stdio)
    exec_fields = read_log(logfile)[1][1]
    assert (exec_fields["stdin"], exec_fields["stdout"], exec_fields["stderr"]) == tuple(str(fd) for fd in stdio)


def test_v1_has_no_process_calls(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v1"), {})
    pal.init(f"log={logfile}", "info")
    with pytest.raises(PalError) as e:
        pal.create_process(SH, ["sh"], [], (0, 1, 2))
    assert e.value.func == "pal_create_process" and e.value.code == -errno.ENOSYS
    with pytest.raises(PalError) as e:
        pal.exec(1)
    assert e.value.func == "pal_exec"
    with pytest.raises(PalError) as e:
        pal.get_local_report(bytes(api.TARGETINFO_SIZE))
    assert e.value.func == "pal_get_local_report"
    assert calls(logfile) == ["pal_init"]


@pytest.mark.parametrize("variant", ["pal_v2", "pal_v3"])
def test_v2_v3_call_order_arguments_env_and_stdio(variant: str, pal_file: Any, logfile: Path, pipes: Pipes) -> None:
    pal = open_pal(pal_file(variant), {})
    want_version = int(variant[-1])
    assert pal.version == want_version and pal.has_kill and pal.has_report == (want_version == 3)
    pal.init(f"log={logfile} fail=nothing", "warning")
    argv = ["sh", "-c", 'read line; printf "%s|%s|%s" "$line" "$GREETING" "$ODD" ; echo oops >&2']
    env = ["GREETING=hello world", "ODD=a,b%c=d", "PATH=/usr/bin:/bin"]
    stdio = pipes.stdio
    pid = pal.create_process(SH, argv, env, stdio)
    pipes.feed(b"ping\n")
    assert pal.exec(pid) == 0
    assert pipes.collect() == (b"ping|hello world|a,b%c=d", b"oops\n")
    pal.destroy()

    log = read_log(logfile)
    assert [f for f, _ in log] == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec", "pal_destroy"]
    assert log[0][1] == {"ret": str(want_version)}
    init = log[1][1]
    assert init["args"] == f"log={logfile} fail=nothing" and init["log_level"] == "warning"
    if want_version == 3:  # no enclave pool: rune passes fd -1 and address 0
        assert (init["fd"], init["addr"]) == ("-1", "0")
    else:
        assert "fd" not in init
    created = log[2][1]
    assert created["path"] == SH and created["argv"] == argv and created["env"] == env
    assert (created["stdin"], created["stdout"], created["stderr"]) == tuple(str(fd) for fd in stdio)
    assert created["pid"] == str(pid)
    assert log[3][1] == {"pid": str(pid)}


def test_v3_passes_the_enclave_pool(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v3"), {})
    pal.init(f"log={logfile}", "info", pool_fd=9, pool_addr=0x7F12_3456_7000)
    init = read_log(logfile)[-1][1]
    assert (init["fd"], init["addr"]) == ("9", str(0x7F12_3456_7000))


def test_empty_argv_and_env_reach_the_pal_as_empty_arrays(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v2"), {})
    pal.init(f"log={logfile}", "info")
    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        stdio = (null_in.fileno(), null_out.fileno(), null_out.fileno())
        # execve with an empty argv: /bin/true still runs and exits 0
        assert pal.run("/bin/true", [], [], stdio) == 0
    created = read_log(logfile)[2][1]
    assert created["argv"] == [] and created["env"] == []


# ---------------------------------------------------------------- exit values and signals


@pytest.mark.parametrize("variant", ["pal_v1", "pal_v2", "pal_v3"])
@pytest.mark.parametrize(("script", "want"), [("exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 128 + 9)])
def test_exit_values(variant: str, script: str, want: int, pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file(variant), {})
    pal.init(f"log={logfile}", "info")
    with open(os.devnull, "r+b") as null:
        assert pal.run(SH, ["sh", "-c", script], [], (null.fileno(),) * 3) == want


@pytest.mark.parametrize("variant", ["pal_v2", "pal_v3"])
def test_kill_is_forwarded_to_the_process(variant: str, pal_file: Any, logfile: Path, pipes: Pipes) -> None:
    pal = open_pal(pal_file(variant), {})
    pal.init(f"log={logfile}", "info")
    # the payload blocks reading its stdin until the signal ends it
    pid = pal.create_process(SH, ["sh", "-c", "read never"], [], pipes.stdio)
    assert pal.kill(pid, signal.SIGTERM) is True
    assert pal.exec(pid) == 128 + signal.SIGTERM
    killed = [fields for func, fields in read_log(logfile) if func == "pal_kill"]
    assert killed == [{"pid": str(pid), "sig": str(int(signal.SIGTERM))}]


def test_kill_all_reaches_every_process(pal_file: Any, logfile: Path, pipes: Pipes) -> None:
    pal = open_pal(pal_file("pal_v2"), {})
    pal.init(f"log={logfile}", "info")
    pids = [pal.create_process(SH, ["sh", "-c", "read never"], [], pipes.stdio) for _ in range(2)]
    assert pal.kill(-1, signal.SIGKILL) is True
    assert [pal.exec(pid) for pid in pids] == [128 + 9, 128 + 9]
    assert ("pal_kill", {"pid": "-1", "sig": "9"}) in read_log(logfile)


def test_kill_refuses_process_groups_without_calling_the_pal(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v2"), {})
    pal.init(f"log={logfile}", "info")
    for pid in (0, -2):
        with pytest.raises(PalError) as e:
            pal.kill(pid, signal.SIGTERM)
        assert e.value.func == "pal_kill" and e.value.code == -errno.EINVAL
    assert "pal_kill" not in calls(logfile)


def test_exec_waits_in_several_threads_at_once(pal_file: Any, logfile: Path) -> None:
    """One thread waits in pal_exec for a payload that only ends when the main thread lets it."""
    pal = open_pal(pal_file("pal_v2"), {})
    pal.init(f"log={logfile}", "info")
    gate_r, gate_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        slow = pal.create_process(SH, ["sh", "-c", "read go; exit 7"], [], (gate_r, out_w, out_w))
        result: dict[str, Any] = {}

        def wait_slow() -> None:
            try:
                result["slow"] = pal.exec(slow)
            except BaseException as exc:  # pragma: no cover - reported below
                result["error"] = exc

        waiter = threading.Thread(target=wait_slow)
        waiter.start()
        # while that thread sits in pal_exec, this one runs a whole second process
        assert pal.run(SH, ["sh", "-c", "exit 5"], [], (gate_r, out_w, out_w)) == 5
        assert "slow" not in result  # the slow payload cannot have ended: nobody wrote to its stdin yet
        os.write(gate_w, b"go\n")
        waiter.join(timeout=30)
        assert not waiter.is_alive()
        assert result == {"slow": 7}
    finally:
        for fd in (gate_r, gate_w, out_r, out_w):
            os.close(fd)


# ---------------------------------------------------------------- v3 local report


def _expected_report(targetinfo: bytes) -> bytes:
    """What pal_v3.c documents it derives from the target info (computed here independently)."""
    h = 0xCBF29CE484222325
    for b in targetinfo:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    report = bytearray(api.REPORT_SIZE)
    marker = b"inclavare test PAL report"
    report[64:64 + len(marker)] = marker
    head = targetinfo[:64]
    report[320:320 + len(head)] = head
    report[416:432] = struct.pack("<QQ", h, len(targetinfo))
    return bytes(report)


def test_v3_local_report_round_trip(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v3"), {})
    pal.init(f"log={logfile}", "info")
    targetinfo = bytes((i * 7 + 3) % 256 for i in range(api.TARGETINFO_SIZE))
    report = pal.get_local_report(targetinfo)
    assert len(report) == api.REPORT_SIZE
    assert report == _expected_report(targetinfo)
    other = pal.get_local_report(targetinfo[:-1] + b"\xff")
    assert other != report and other == _expected_report(targetinfo[:-1] + b"\xff")
    logged = [fields for func, fields in read_log(logfile) if func == "pal_get_local_report"]
    assert logged[0] == {"targetinfo_len": "512", "report_len": "432"}


def test_v3_local_report_with_empty_targetinfo(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v3"), {})
    pal.init(f"log={logfile}", "info")
    assert pal.get_local_report(b"") == _expected_report(b"")
    assert read_log(logfile)[-1] == ("pal_get_local_report", {"targetinfo_len": "0", "report_len": "432"})


# ---------------------------------------------------------------- failures reported by the PAL


def _trigger(pal: Pal, what: str, args: str, stdio: tuple[int, int, int]) -> None:
    """Drive ``pal`` up to and including the call that ``fail=what`` makes fail."""
    pal.init(args, "info")
    if what == "create":
        pal.create_process(SH, ["sh", "-c", "true"], [], stdio)
    elif what == "exec":
        pal.run(SH, ["sh", "-c", "true"], [], stdio)
    elif what == "kill":
        pal.kill(-1, signal.SIGTERM)
    elif what == "report":
        pal.get_local_report(bytes(api.TARGETINFO_SIZE))
    elif what == "destroy":
        pal.destroy()


@pytest.mark.parametrize(
    ("variant", "what", "func"),
    [
        ("pal_v1", "init", "pal_init"),
        ("pal_v1", "exec", "pal_exec"),
        ("pal_v1", "destroy", "pal_destroy"),
        ("pal_v2", "create", "pal_create_process"),
        ("pal_v2", "exec", "pal_exec"),
        ("pal_v2", "kill", "pal_kill"),
        ("pal_v3", "init", "pal_init"),
        ("pal_v3", "report", "pal_get_local_report"),
        ("pal_v3", "destroy", "pal_destroy"),
    ],
)
def test_pal_failures_raise_pal_error(variant: str, what: str, func: str, pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file(variant), {})
    with open(os.devnull, "r+b") as null, pytest.raises(PalError) as e:
        _trigger(pal, what, f"log={logfile} fail={what}", (null.fileno(),) * 3)
    assert (e.value.func, e.value.code) == (func, -5)
    assert str(e.value) == f"enclave runtime: {func}() failed with -5"
    assert calls(logfile)[-1] == func  # the PAL was really called
    # a v2 exec failure leaves the created child to us; reap it
    for f, fields in read_log(logfile):
        if f == "pal_create_process" and fields.get("pid", "-1") != "-1":
            os.waitpid(int(str(fields["pid"])), 0)


def test_destroy_runs_once_and_ends_the_pal(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v2"), {})
    pal.init(f"log={logfile}", "info")
    pal.destroy()
    pal.destroy()
    with pytest.raises(PalError) as e:
        pal.create_process(SH, ["sh"], [], (0, 1, 2))
    assert e.value.func == "pal_create_process" and "destroyed" in str(e.value)
    assert calls(logfile) == ["pal_get_version", "pal_init", "pal_destroy"]


def test_strings_with_nul_and_bad_stdio_are_refused_before_the_call(pal_file: Any, logfile: Path) -> None:
    pal = open_pal(pal_file("pal_v2"), {})
    pal.init(f"log={logfile}", "info")
    with pytest.raises(PalError) as e:
        pal.create_process(SH, ["sh", "a\0b"], [], (0, 1, 2))
    assert e.value.func == "pal_create_process" and "argv[1] contains a NUL byte" in str(e.value)
    with pytest.raises(PalError) as e:
        pal.create_process(SH, ["sh"], [], (0, 1))
    assert "three open file descriptors" in str(e.value)
    assert calls(logfile) == ["pal_get_version", "pal_init"]


# ---------------------------------------------------------------- versions


def test_version_4_is_refused(pal_file: Any) -> None:
    path = pal_file("pal_v4")
    with pytest.raises(EnclaveConfigError) as e:
        open_pal(path, {})
    assert e.value.key == "enclave.runtime.path"
    assert str(e.value) == (f"enclave.runtime.path: {path} speaks PAL API version 4; "
                            "this rune supports versions 1 to 3")


@pytest.mark.parametrize(("override", "want"), [("2", 2), ("1", 1)])
def test_version_switch_changes_what_a_new_open_sees(override: str, want: int, pal_file: Any, logfile: Path) -> None:
    """version=N in the init args changes pal_get_version; a second open of the same file shares that state."""
    path = pal_file("pal_v3")
    first = open_pal(path, {})
    first.init(f"log={logfile} version={override}", "info")
    assert first.version == 3  # asked once, remembered
    again = open_pal(path, {})
    assert again.version == want
    assert read_log(logfile)[-1] == ("pal_get_version", {"ret": override})


def test_version_switch_to_4_is_refused(pal_file: Any, logfile: Path) -> None:
    path = pal_file("pal_v2")
    open_pal(path, {}).init(f"log={logfile} version=4", "info")
    with pytest.raises(EnclaveConfigError, match="version 4"):
        open_pal(path, {})


# ---------------------------------------------------------------- bad PAL paths and files


def test_relative_path(pal_file: Any) -> None:
    with pytest.raises(EnclaveConfigError) as e:
        open_pal("liberpal-skeleton.so", {})
    assert str(e.value) == ("enclave.runtime.path: 'liberpal-skeleton.so' is not an absolute path "
                            "(nor builtin:NAME)")


def test_empty_path() -> None:
    with pytest.raises(EnclaveConfigError, match="no PAL given"):
        open_pal("", {})


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.so")
    with pytest.raises(EnclaveConfigError) as e:
        open_pal(path, {})
    assert str(e.value) == f"enclave.runtime.path: {path}: no such file"


def test_not_a_shared_object(pal_file: Any) -> None:
    path = pal_file("not_shared")
    with pytest.raises(EnclaveConfigError) as e:
        open_pal(path, {})
    msg = str(e.value)
    assert msg.startswith(f"enclave.runtime.path: cannot load {path}: ") and "\n" not in msg
    assert "executable" in msg  # the dynamic loader's own reason


def test_text_file_is_not_loadable(tmp_path: Path) -> None:
    path = tmp_path / "pal.so"
    path.write_text("not an ELF file\n")
    with pytest.raises(EnclaveConfigError, match=r"cannot load .*pal\.so: .*(invalid ELF header|too short)"):
        open_pal(str(path), {})


@pytest.mark.parametrize(
    ("variant", "symbol", "needed_by"),
    [
        ("pal_no_exec", "pal_exec", "every PAL API version"),
        ("pal_v2_no_create", "pal_create_process", "PAL API v2+, and the PAL says it speaks v2"),
        ("pal_v2_no_kill", "pal_kill", "PAL API v2+, and the PAL says it speaks v2"),
        ("pal_v3_no_report", "pal_get_local_report", "PAL API v3+, and the PAL says it speaks v3"),
    ],
)
def test_missing_required_symbol(variant: str, symbol: str, needed_by: str, pal_file: Any) -> None:
    path = pal_file(variant)
    with pytest.raises(EnclaveConfigError) as e:
        open_pal(path, {})
    assert str(e.value) == f"enclave.runtime.path: {path} does not export {symbol} (required by {needed_by})"


# ---------------------------------------------------------------- Python runtimes through the registry


class DummyRuntime(EnclaveRuntime):
    """A test-only runtime that records calls and fakes processes (pids from 100 up)."""

    name = "dummy"
    instances: list[DummyRuntime] = []

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.exit_values: dict[int, int] = {}
        self.next_pid = 100
        DummyRuntime.instances.append(self)

    def load(self, spec: dict[str, Any]) -> None:
        self.calls.append(("load", spec))

    def init(self, args: str, log_level: str) -> None:
        self.calls.append(("init", args, log_level))
        if "explode" in args:
            raise ValueError("bad\nargs")

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        self.calls.append(("create_process", path, argv, env, stdio))
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        self.exit_values[pid] = len(argv)
        return pid

    def exec(self, pid: int) -> int:
        self.calls.append(("exec", pid))
        if pid not in self.exit_values:
            raise PalError("pal_exec", -errno.ESRCH, f"no process {pid}")
        return self.exit_values.pop(pid)

    def kill(self, pid: int, sig: int) -> None:
        self.calls.append(("kill", pid, sig))

    def destroy(self) -> None:
        self.calls.append(("destroy",))

    def get_local_report(self, targetinfo: bytes) -> bytes:
        self.calls.append(("report", len(targetinfo)))
        return targetinfo[:api.REPORT_SIZE].ljust(api.REPORT_SIZE, b"\0")


class MinimalRuntime(EnclaveRuntime):
    """Only init: everything else is the base class's refusal."""

    name = "minimal"
    api_version = 2

    def init(self, args: str, log_level: str) -> None:
        pass


class FutureRuntime(MinimalRuntime):
    api_version = 4


class ShortReportRuntime(MinimalRuntime):
    api_version = 3

    def get_local_report(self, targetinfo: bytes) -> bytes:
        return b"short"


class NotARuntime:
    pass


@pytest.fixture
def dummy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    here = __name__
    for name, cls in [("dummy", "DummyRuntime"), ("minimal", "MinimalRuntime"), ("future", "FutureRuntime"),
                      ("short-report", "ShortReportRuntime"), ("not-a-runtime", "NotARuntime"),
                      ("no-such-attr", "Nope"), ("broken-import", "")]:
        target = f"{here}:{cls}" if cls else "tests.unit.no_such_module_for_pal_tests:X"
        monkeypatch.setitem(registry.BUILTINS, name, target)
    DummyRuntime.instances.clear()


def test_builtin_runtime_full_cycle(dummy_registered: None) -> None:
    spec = {"linux": {"resources": {"memory": {"limit": 1 << 30}}}}
    pal = open_pal("builtin:dummy", spec)
    assert isinstance(pal, PythonPal) and pal.path == "builtin:dummy" and pal.version == api.PAL_API_VERSION
    assert pal.has_kill and pal.has_report
    rt = DummyRuntime.instances[-1]
    pal.init("some args", "info")
    assert pal.run("/bin/app", ["app", "-v"], ["A=1"], (0, 1, 2)) == 2
    pid = pal.create_process("/bin/app", ["app"], [], (3, 4, 5))
    assert pal.kill(pid, signal.SIGTERM) is True
    assert pal.exec(pid) == 1
    report = pal.get_local_report(b"\x01" * api.TARGETINFO_SIZE)
    assert report == b"\x01" * api.REPORT_SIZE
    pal.destroy()
    pal.destroy()
    assert rt.calls == [
        ("load", spec),
        ("init", "some args", "info"),
        ("create_process", "/bin/app", ["app", "-v"], ["A=1"], (0, 1, 2)),
        ("exec", 100),
        ("create_process", "/bin/app", ["app"], [], (3, 4, 5)),
        ("kill", 101, signal.SIGTERM),
        ("exec", 101),
        ("report", api.TARGETINFO_SIZE),
        ("destroy",),
    ]


def test_builtin_runtime_errors_become_pal_errors_with_the_func_name(dummy_registered: None) -> None:
    pal = open_pal("builtin:dummy", {})
    with pytest.raises(PalError) as e:
        pal.init("explode", "info")
    assert (e.value.func, e.value.code) == ("pal_init", -1)
    assert str(e.value) == "enclave runtime: pal_init() failed with -1: ValueError: bad args"
    with pytest.raises(PalError) as e:
        pal.exec(4242)  # the runtime's own PalError passes through unchanged
    assert (e.value.func, e.value.code, e.value.detail) == ("pal_exec", -errno.ESRCH, "no process 4242")


def test_builtin_runtime_without_optional_calls(dummy_registered: None) -> None:
    pal = open_pal("builtin:minimal", {})
    assert pal.version == 2 and not pal.has_kill and not pal.has_report
    pal.init("", "info")
    assert pal.kill(-1, signal.SIGTERM) is False
    with pytest.raises(PalError) as e:
        pal.run("/bin/app", ["app"], [], (0, 1, 2))
    assert (e.value.func, e.value.code) == ("pal_create_process", -38)
    with pytest.raises(PalError) as e:
        pal.get_local_report(bytes(api.TARGETINFO_SIZE))
    assert e.value.func == "pal_get_local_report" and "v2 has no local report" in str(e.value)


def test_builtin_runtime_bad_answers_are_refused(dummy_registered: None) -> None:
    with pytest.raises(EnclaveConfigError, match="builtin:future speaks PAL API version 4"):
        open_pal("builtin:future", {})
    pal = open_pal("builtin:short-report", {})
    with pytest.raises(PalError) as e:
        pal.get_local_report(bytes(api.TARGETINFO_SIZE))
    assert e.value.func == "pal_get_local_report" and "returned 5 bytes; a REPORT has 432" in str(e.value)


def test_unknown_builtin_lists_the_known_ones(dummy_registered: None) -> None:
    with pytest.raises(EnclaveConfigError) as e:
        open_pal("builtin:nope", {})
    msg = str(e.value)
    assert msg.startswith("enclave.runtime.path: unknown built-in enclave runtime 'nope' (known: ")
    for name in ("dummy", "sim", "wasm"):
        assert name in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("not-a-runtime", "is not an EnclaveRuntime subclass"),
        ("no-such-attr", "has no Nope"),
        ("broken-import", "cannot import tests.unit.no_such_module_for_pal_tests: ModuleNotFoundError"),
    ],
)
def test_broken_builtin_registrations(name: str, problem: str, dummy_registered: None) -> None:
    with pytest.raises(EnclaveConfigError) as e:
        registry.load_builtin(name)
    assert e.value.key == "enclave.runtime.path"
    assert str(e.value).startswith(f"enclave.runtime.path: builtin:{name}: ") and problem in str(e.value)


def test_known_builtins_include_the_projects_own() -> None:
    assert {"sim", "wasm"} <= set(registry.known_builtins())


def _install_entry_points(root: Path, monkeypatch: pytest.MonkeyPatch, entries: dict[str, str]) -> None:
    dist = root / "fake_enclave_runtimes-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-enclave-runtimes\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(root))


def test_third_party_runtimes_from_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                dummy_registered: None) -> None:
    _install_entry_points(tmp_path, monkeypatch, {
        "thirdparty": f"{__name__}:DummyRuntime",
        "minimal": f"{__name__}:DummyRuntime",  # a built-in name: the entry point must be ignored
    })
    assert "thirdparty" in registry.known_builtins()
    pal = open_pal("builtin:thirdparty", {"x": 1})
    assert isinstance(pal, PythonPal) and isinstance(pal.runtime, DummyRuntime)
    assert DummyRuntime.instances[-1].calls == [("load", {"x": 1})]
    assert isinstance(registry.load_builtin("minimal"), MinimalRuntime)

