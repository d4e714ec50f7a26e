"""Integration tests for inclavare.linux.seccomp: filters loaded into the kernel in forked children.

Each test forks; the child compiles and loads a filter (which then binds only the child), makes the
syscalls under test and reports through its exit status or a pipe.  Needs root (rune clears
SCMP_FLTATR_CTL_NNP, so loading takes CAP_SYS_ADMIN) and a kernel with seccomp filters.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from inclavare.errors import SeccompError
from inclavare.linux import seccomp

PR_SET_DUMPABLE = 4


def _kernel_has_seccomp_filter() -> bool:
    try:
        with open("/proc/self/status") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False


def _libseccomp_available() -> bool:
    try:
        seccomp.preload()
    except SeccompError:
        return False
    return True


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading a filter without no_new_privs needs root"),
    pytest.mark.skipif(not _kernel_has_seccomp_filter(), reason="kernel without seccomp support"),
    pytest.mark.skipif(not _libseccomp_available(), reason="libseccomp.so.2 is not installed"),
]

_CHILD_CRASHED = 250
_TIMEOUT = 10


def _run_child(body: Callable[[], Any]) -> tuple[int, Any]:
    """Fork; the child runs body() and sends its JSON result back.  Returns (wait status, result)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # a SIGSYS death must not write a core file
            result = body()
            os.write(w, json.dumps(result).encode())
        except BaseException:
            traceback.print_exc()
            code = _CHILD_CRASHED
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as pipe:
        while chunk := pipe.read():
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    return status, json.loads(data) if data else None


def _child_lines(body: Callable[[Callable[[str], None]], None]) -> tuple[int, list[str]]:
    """Fork; the child runs body(say), each say(line) reaching the parent at once (so lines written
    before a SIGSYS death survive it).  Returns (wait status, the lines)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # a SIGSYS death must not write a core file
            body(lambda line: os.write(w, f"{line}\n".encode()) and None)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as pipe:
        lines = pipe.read().splitlines()
    _, status = os.waitpid(pid, 0)
    return status, lines


def _errno_of(fn: Callable[[], Any]) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_errno_action_with_errno_ret(tmp_path: Any) -> None:
    target = tmp_path / "made-by-child"
    other = tmp_path / "file-by-child"
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
            {"names": ["chdir"], "action": "SCMP_ACT_ERRNO"},
        ],
    }

    def body() -> dict[str, int]:
        flt = seccomp.compile(profile)
        assert flt.load() is None
        return {
            "mkdir": _errno_of(lambda: os.mkdir(target)),
            "chdir": _errno_of(lambda: os.chdir("/")),
            "open": _errno_of(lambda: os.close(os.open(other, os.O_CREAT | os.O_WRONLY, 0o600))),
        }

    status, result = _run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == {"mkdir": errno.ENOSYS, "chdir": errno.EPERM, "open": 0}
    assert not target.exists()
    assert other.exists()


def test_default_errno_with_allow_list(tmp_path: Any) -> None:
    allowed = [
        "write",
        "exit",
        "exit_group",
        "brk",
        "mmap",
        "munmap",
        "mremap",
        "madvise",
        "futex",
        "rt_sigreturn",
        "rt_sigprocmask",
        "rt_sigaction",
        "getpid",
        "close",
    ]
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EACCES,
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
    }

    def body() -> dict[str, int]:
        pid = os.getpid()  # compared with getpid() under the filter
        seccomp.compile(profile).load()
        return {
            "getpid_ok": int(os.getpid() == pid),
            "getcwd": _errno_of(os.getcwd),
            "mkdir": _errno_of(lambda: os.mkdir(tmp_path / "denied")),
        }

    status, result = _run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == {"getpid_ok": 1, "getcwd": errno.EACCES, "mkdir": errno.EACCES}
    assert not (tmp_path / "denied").exists()


def test_argument_filter_blocks_only_matching_values() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EOPNOTSUPP,
                # Two conditions on argument 0: separate rules, so either value is blocked.
                "args": [
                    {"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 0x0008, "op": "SCMP_CMP_EQ"},
                ],
            }
        ],
    }

    def body() -> dict[str, Any]:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.personality.argtypes = [ctypes.c_ulong]
        libc.personality.restype = ctypes.c_int
        seccomp.compile(profile).load()

        def call(value: int) -> tuple[int, int]:
            ctypes.set_errno(0)
            rc = libc.personality(value)
            return rc, ctypes.get_errno() if rc == -1 else 0

        return {"query": call(0xFFFFFFFF), "eight": call(0x0008), "linux": call(0)}

    status, result = _run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result["query"] == [-1, errno.EOPNOTSUPP]
    assert result["eight"] == [-1, errno.EOPNOTSUPP]
    assert result["linux"][0] >= 0 and result["linux"][1] == 0  # PER_LINUX is not matched: allowed


@pytest.mark.parametrize(
    "action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"]
)
def test_kill_and_trap_end_the_process_with_sigsys(action: str) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["uname"], "action": action}]}

    def body() -> str:
        seccomp.compile(profile).load()
        os.uname()
        return "survived"

    status, result = _run_child(body)
    assert result is None
    assert os.WIFSIGNALED(status), f"child exited with {os.waitstatus_to_exitcode(status)}"
    assert os.WTERMSIG(status) == signal.SIGSYS


def test_load_without_privilege_and_nnp_fails_with_eacces() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }

    def body() -> dict[str, Any]:
        flt = seccomp.compile(profile)
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)  # drops CAP_SYS_ADMIN; no_new_privs is not set
        try:
            flt.load()
        except seccomp.LibseccompError as exc:
            return {"function": exc.function, "errno": exc.errno}
        return {}

    status, result = _run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == {"function": "seccomp", "errno": errno.EACCES}  # seccomp(2), called by Filter.load()


# --------------------------------------------------------------------------------------------------
# SCMP_ACT_NOTIFY: the child hands its notify fd to a listener (the test) which answers the syscall.


def test_notify_fd_reaches_the_listener_and_answers_the_syscall(tmp_path: Any) -> None:
    lib = seccomp._lib()
    if lib.seccomp_api_get() < 6:
        pytest.skip("libseccomp API level < 6: no SCMP_ACT_NOTIFY with this library/kernel")
    sock_path = str(tmp_path / "agent.sock")
    target = tmp_path / "notified"
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock_path,
        "listenerMetadata": "hello-agent",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    server.settimeout(_TIMEOUT)

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = _CHILD_CRASHED
        try:
            server.close()
            os.close(r)
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            flt = seccomp.compile(profile)
            fd = flt.load()
            assert isinstance(fd, int) and fd >= 0
            state = {
                "ociVersion": "1.0.2",
                "id": "ctr",
                "status": "creating",
                "pid": os.getpid(),
                "bundle": str(tmp_path),
            }
            seccomp.send_to_listener(sock_path, fd, state, "hello-agent")
            os.close(fd)
            code = _errno_of(lambda: os.mkdir(target))  # blocks until the listener answers
            os.write(w, b"done")
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)

    fds: list[int] = []
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(_TIMEOUT)
            data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 4)
            while chunk := conn.recv(1 << 16):
                data += chunk
        message = json.loads(data)
        assert message["ociVersion"] == "1.0.2"
        assert message["fds"] == ["seccompFd"]
        assert message["pid"] == pid
        assert message["metadata"] == "hello-agent"
        assert message["state"]["id"] == "ctr" and message["state"]["pid"] == pid
        assert len(fds) == 1
        notify_fd = fds[0]

        poller = select.poll()
        poller.register(notify_fd, select.POLLIN)
        assert poller.poll(_TIMEOUT * 1000), "no seccomp notification arrived"
        call = seccomp.notify_receive(notify_fd)
        assert call.pid == pid
        assert call.syscall_name() in ("mkdir", "mkdirat")
        assert seccomp.notify_id_valid(notify_fd, call.id)
        seccomp.notify_respond(notify_fd, call.id, error=errno.EXDEV)
        assert not seccomp.notify_id_valid(notify_fd, call.id)  # answered: no longer pending

        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.read(r, 16) == b"done"
        assert os.waitstatus_to_exitcode(status) == errno.EXDEV
        assert not target.exists()
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in fds:
            os.close(fd)
        os.close(r)
        server.close()


def test_long_profile_with_binary_tree_keeps_its_meaning(tmp_path: Any) -> None:
    # More than 32 entries switch on libseccomp's binary-tree optimisation, as runc does.
    allowed = [
        "read",
        "write",
        "openat",
        "close",
        "fstat",
        "newfstatat",
        "lseek",
        "mmap",
        "mprotect",
        "munmap",
        "brk",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "ioctl",
        "pread64",
        "pwrite64",
        "readv",
        "writev",
        "access",
        "pipe",
        "pipe2",
        "select",
        "sched_yield",
        "mremap",
        "msync",
        "mincore",
        "madvise",
        "dup",
        "dup2",
        "dup3",
        "nanosleep",
        "getpid",
        "getcwd",
        "exit",
        "exit_group",
        "futex",
        "uname",
        "fcntl",
        "getdents64",
        "stat",
        "lstat",
        "clock_gettime",
        "getrandom",
        "statx",
    ]
    names = [{"names": [n], "action": "SCMP_ACT_ALLOW"} for n in allowed]
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": names}
    assert len(names) > 32

    def body() -> dict[str, Any]:
        flt = seccomp.compile(profile)
        assert flt.attr(8) == 2  # SCMP_FLTATR_CTL_OPTIMIZE
        flt.load()
        return {
            "cwd": os.getcwd(),
            "uname": os.uname().sysname,
            "mkdir": _errno_of(lambda: os.mkdir(tmp_path / "no")),
            "chdir": _errno_of(lambda: os.chdir("/")),
        }

    status, result = _run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == {"cwd": os.getcwd(), "uname": "Linux", "mkdir": errno.EPERM, "chdir": errno.EPERM}


# --------------------------------------------------------------------------------------------------
# The -ENOSYS stub (inclavare.linux.seccomp_enosys) in the kernel, and the kernel facts behind its design


_UNASSIGNED = 1000  # no architecture rune runs on has a syscall 1000: without a filter, ENOSYS


def _raw_syscall(nr: int) -> int:
    """errno of syscall(nr) with invalid arguments (0 if it succeeded)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_long(-1), ctypes.c_long(-1), ctypes.c_long(-1))
    return ctypes.get_errno() if rc < 0 else 0


def _native_oci_arch() -> str:
    native = seccomp.native_arch()
    lib = seccomp._lib()
    for oci, name in seccomp.ARCHITECTURES.items():
        if lib.seccomp_arch_resolve_name(name.encode()) == native:
            return oci
    pytest.skip("the native architecture has no OCI name")


def _allow_up_to(last: str, *, leave_out: str) -> list[str]:
    """Every native syscall name numbered up to ``last``'s number, except ``leave_out``."""
    top = seccomp.syscall_number(last)
    assert top is not None
    names = (seccomp.syscall_name(nr) for nr in range(top + 1))
    return [n for n in names if n is not None and n != leave_out]


@pytest.mark.parametrize("default", ["SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"])
def test_enosys_stub_newer_syscall_gets_enosys_older_unlisted_gets_the_default(default: str) -> None:
    newest, older = seccomp.syscall_number("rseq"), seccomp.syscall_number("mkdirat")
    clone3 = seccomp.syscall_number("clone3")
    if newest is None or older is None or clone3 is None or not older < newest < clone3:
        pytest.skip("needs rseq, mkdirat and clone3 numbered in that order")
    profile = {
        "defaultAction": default,
        "architectures": [_native_oci_arch()],
        "syscalls": [{"names": _allow_up_to("rseq", leave_out="mkdirat"), "action": "SCMP_ACT_ALLOW"}],
    }

    def body(say: Callable[[str], None]) -> None:
        seccomp.compile(profile).load()
        # (not newest + 1: on x86_64 that is uretprobe, which Linux >= 6.13 lets through every filter)
        say(f"{_raw_syscall(clone3)} {_raw_syscall(_UNASSIGNED)}")
        say(f"{_raw_syscall(older)}")  # under KILL_PROCESS, the end

    status, lines = _child_lines(body)
    assert lines[0] == f"{errno.ENOSYS} {errno.ENOSYS}"  # newer than every listed call: ENOSYS, never killed
    if default == "SCMP_ACT_ERRNO":
        assert lines[1:] == [str(errno.EPERM)]
        assert os.waitstatus_to_exitcode(status) == 0
    else:
        assert lines[1:] == []
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_stacked_filters_newest_errno_wins_and_kill_beats_errno() -> None:
    """Why the stub is prepended rather than installed as a second filter (seccomp_enosys docstring)."""
    older = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"},
        ],
    }
    newer = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat", "uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}],
    }

    def body(say: Callable[[str], None]) -> None:
        seccomp.compile(older).load()
        seccomp.compile(newer).load()
        say(str(_errno_of(lambda: os.mkdir("/nonexistent-dir/x"))))
        os.uname()
        say("survived")

    status, lines = _child_lines(body)
    assert lines == [str(errno.ENOSYS)]  # both ERRNO: the most recently installed filter's errno
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS  # KILL outranks ERRNO


def test_tsync_flag_with_a_notify_rule_still_loads() -> None:
    # the kernel refuses TSYNC together with NEW_LISTENER unless TSYNC_ESRCH is set too; load() adds it
    if seccomp._lib().seccomp_api_get() < 6:
        pytest.skip("libseccomp API level < 6: no SCMP_ACT_NOTIFY with this library/kernel")
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/unused.sock",
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }

    def body() -> dict[str, Any]:
        fd = seccomp.compile(profile).load()
        assert fd is not None
        return {"fd": os.readlink(f"/proc/self/fd/{fd}")}

    status, result = _run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == {"fd": "anon_inode:seccomp notify"}
