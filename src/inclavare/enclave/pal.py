"""Drivers for Enclave Runtime PALs: a C shared object through ctypes, or a built-in Python runtime.

``open_pal(path, spec)`` is the one entry point. ``path`` is either ``builtin:NAME`` (a runtime from
:mod:`inclavare.enclave.registry`) or the absolute host path of a shared object exporting the PAL API:

  all versions  int pal_get_version(void)            optional; absent means v1
                int pal_init(attr *)                 v1/v2: {args, log_level}; v3: {{args, log_level}, fd, addr}
                int pal_destroy(void)
  v1            int pal_exec(path, argv[], stdio *, int *exit_code)
  v2, v3        int pal_create_process({path, argv, env, stdio *, int *pid} *)
                int pal_exec({int pid; int *exit_value} *)
                int pal_kill(int pid, int sig)
  v3            int pal_get_local_report(targetinfo, int len, report, int *report_len)

A negative return is a failure and raises :class:`~inclavare.enclave.api.PalError` naming the function.
Both drivers share the :class:`Pal` interface; calls may come from several threads (ctypes releases the GIL
for the duration of each C call, so one thread waiting in ``exec`` does not hold up the others).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from inclavare.enclave import api, registry
from inclavare.enclave.api import EnclaveConfigError, PalError
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


CONFIG_KEY = "enclave.runtime.path"
BUILTIN_PREFIX = "builtin:"
MIN_VERSION = 1


# ---- C layouts (natural alignment, as the PAL's compiler lays them out) ----


class _AttrV1(ctypes.Structure):
    _fields_ = [("args", ctypes.c_char_p), ("log_level", ctypes.c_char_p)]


class _AttrV3(ctypes.Structure):
    _fields_ = [("attr_v1", _AttrV1), ("fd", ctypes.c_int), ("addr", ctypes.c_uint64)]


class _StdioFds(ctypes.Structure):
    _fields_ = [("stdin", ctypes.c_int), ("stdout", ctypes.c_int), ("stderr", ctypes.c_int)]


class _CreateProcessArgs(ctypes.Structure):
    _fields_ = [
        ("path", ctypes.c_char_p),
        ("argv", ctypes.POINTER(ctypes.c_char_p)),
        ("env", ctypes.POINTER(ctypes.c_char_p)),
        ("stdio", ctypes.POINTER(_StdioFds)),
        ("pid", ctypes.POINTER(ctypes.c_int)),
    ]


class _ExecArgs(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_int), ("exit_value", ctypes.POINTER(ctypes.c_int))]


_c_int = ctypes.c_int
_GET_VERSION = ctypes.CFUNCTYPE(_c_int)
_INIT_V1 = ctypes.CFUNCTYPE(_c_int, ctypes.POINTER(_AttrV1))
_INIT_V3 = ctypes.CFUNCTYPE(_c_int, ctypes.POINTER(_AttrV3))
_EXEC_V1 = ctypes.CFUNCTYPE(
    _c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(_StdioFds), ctypes.POINTER(_c_int)
)
_CREATE_PROCESS = ctypes.CFUNCTYPE(_c_int, ctypes.POINTER(_CreateProcessArgs))
_EXEC_V2 = ctypes.CFUNCTYPE(_c_int, ctypes.POINTER(_ExecArgs))
_KILL = ctypes.CFUNCTYPE(_c_int, _c_int, _c_int)
_DESTROY = ctypes.CFUNCTYPE(_c_int)
_GET_LOCAL_REPORT = ctypes.CFUNCTYPE(
    _c_int, ctypes.c_void_p, _c_int, ctypes.c_void_p, ctypes.POINTER(_c_int)
)

_REQUIRED_ALWAYS = ("pal_init", "pal_exec", "pal_destroy")
_REQUIRED_FROM = {2: ("pal_create_process", "pal_kill"), 3: ("pal_get_local_report",)}


# ---- argument conversion ----


def _cstr(func: str, what: str, value: str) -> bytes:
    raw = os.fsencode(value)
    if b"\0" in raw:
        raise PalError(func, -errno.EINVAL, f"{what} contains a NUL byte")
    return raw


def _cstr_array(func: str, what: str, items: Sequence[str]) -> ctypes.Array[ctypes.c_char_p]:
    """A NULL-terminated char *[] (the array keeps the bytes objects alive)."""
    raw = [_cstr(func, f"{what}[{i}]", item) for i, item in enumerate(items)]
    return (ctypes.c_char_p * (len(raw) + 1))(*raw, None)


def _stdio(func: str, stdio: Sequence[int]) -> _StdioFds:
    fds = tuple(stdio)
    if len(fds) != 3 or not all(isinstance(fd, int) and fd >= 0 for fd in fds):
        raise PalError(func, -errno.EBADF, f"stdio must be three open file descriptors, got {fds!r}")
    return _StdioFds(*fds)


def _check_pid(func: str, pid: int) -> None:
    if pid != -1 and pid <= 0:
        raise PalError(func, -errno.EINVAL, f"pid {pid} is neither a process of the enclave nor -1 (all)")


# ---- the common interface ----


class Pal:
    """One loaded PAL. ``version`` is 0 until :meth:`get_version` has asked the PAL (``open_pal`` does)."""

    path: str
    version: int

    def __init__(self, path: str) -> None:
        self.path = path
        self.version = 0
        self._lock = threading.Lock()
        self._destroyed = False

    # -- version --

    def _query_version(self) -> int:
        raise NotImplementedError

    def _check_version_symbols(self, version: int) -> None:
        """Hook for drivers that must verify the calls a version needs."""

    def get_version(self) -> int:
        """The PAL API version (1..3), asked once and remembered; a newer or nonsensical one is refused."""
        with self._lock:
            if self.version:
                return self.version
            version = self._query_version()
            if version < MIN_VERSION or version > api.PAL_API_VERSION:
                raise EnclaveConfigError(
                    CONFIG_KEY,
                    f"{self.path} speaks PAL API version {version}; "
                    f"this rune supports versions {MIN_VERSION} to {api.PAL_API_VERSION}",
                )
            self._check_version_symbols(version)
            self.version = version
            return version

    def _usable(self, func: str) -> int:
        if self._destroyed:
            raise PalError(func, -errno.EBADF, f"{self.path} was already destroyed")
        return self.version or self.get_version()

    # -- capabilities --

    @property
    def has_kill(self) -> bool:
        return False

    @property
    def has_report(self) -> bool:
        return False

    # -- calls --

    def init(self, args: str, log_level: str, *, pool_fd: int = -1, pool_addr: int = 0) -> None:
        """pal_init. ``pool_fd``/``pool_addr`` hand a pre-built enclave from the enclave pool to a v3 PAL."""
        raise NotImplementedError

    def run(self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Sequence[int]) -> int:
        """Run one payload to its end and return its exit value (v2+: create_process, then exec)."""
        pid = self.create_process(path, argv, env, stdio)
        return self.exec(pid)

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Sequence[int]) -> int:
        """pal_create_process: start ``path`` in the enclave with stdio fds (in, out, err); returns its pid."""
        raise NotImplementedError

    def exec(self, pid: int) -> int:
        """pal_exec: wait for process ``pid`` and return its exit value."""
        raise NotImplementedError

    def kill(self, pid: int, sig: int) -> bool:
        """pal_kill (``pid`` -1: every process); False when the PAL cannot take signals (v1)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """pal_destroy, once; later calls do nothing, and other calls then fail."""
        raise NotImplementedError

    def get_local_report(self, targetinfo: bytes) -> bytes:
        """pal_get_local_report (v3): the 432-byte REPORT targeted at ``targetinfo``."""
        raise NotImplementedError

    def _begin_destroy(self) -> bool:
        with self._lock:
            if self._destroyed:
                return False
            self._destroyed = True
            return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} v{self.version or '?'}>"


# ---- C shared objects ----


class NativePal(Pal):
    """A PAL shared object loaded with dlopen(RTLD_NOW); the handle lives as long as this object."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        if not path:
            raise EnclaveConfigError(CONFIG_KEY, "no PAL given (expected an absolute path or builtin:NAME)")
        if not os.path.isabs(path):
            raise EnclaveConfigError(CONFIG_KEY, f"{path!r} is not an absolute path (nor builtin:NAME)")
        if not os.path.exists(path):
            raise EnclaveConfigError(CONFIG_KEY, f"{path}: no such file")
        try:
            self._lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        except OSError as exc:
            detail = " ".join(str(exc).split())
            raise EnclaveConfigError(CONFIG_KEY, f"cannot load {path}: {detail}") from None
        for name in _REQUIRED_ALWAYS:
            self._require(name, "every PAL API version")
        self._get_version_fn = _GET_VERSION(("pal_get_version", self._lib)) if self._has("pal_get_version") else None
        self._destroy_fn = _DESTROY(("pal_destroy", self._lib))

    def _has(self, name: str) -> bool:
        try:
            getattr(self._lib, name)
        except AttributeError:
            return False
        return True

    def _require(self, name: str, needed_by: str) -> None:
        if not self._has(name):
            raise EnclaveConfigError(CONFIG_KEY, f"{self.path} does not export {name} (required by {needed_by})")

    def _query_version(self) -> int:
        if self._get_version_fn is None:
            return 1
        version = int(self._get_version_fn())
        if version < 0:
            raise PalError("pal_get_version", version)
        return version

    def _check_version_symbols(self, version: int) -> None:
        for since, names in _REQUIRED_FROM.items():
            if version >= since:
                for name in names:
                    self._require(name, f"PAL API v{since}+, and the PAL says it speaks v{version}")
        lib = self._lib
        if version >= 3:
            self._init_v3 = _INIT_V3(("pal_init", lib))
            self._report_fn = _GET_LOCAL_REPORT(("pal_get_local_report", lib))
        else:
            self._init_v1 = _INIT_V1(("pal_init", lib))
        if version >= 2:
            self._create_fn = _CREATE_PROCESS(("pal_create_process", lib))
            self._exec_v2 = _EXEC_V2(("pal_exec", lib))
            self._kill_fn = _KILL(("pal_kill", lib))
        else:
            self._exec_v1 = _EXEC_V1(("pal_exec", lib))

    @property
    def has_kill(self) -> bool:
        return self.get_version() >= 2

    @property
    def has_report(self) -> bool:
        return self.get_version() >= 3

    def init(self, args: str, log_level: str, *, pool_fd: int = -1, pool_addr: int = 0) -> None:
        version = self._usable("pal_init")
        c_args = _cstr("pal_init", "args", args)
        c_level = _cstr("pal_init", "log_level", log_level)
        if version >= 3:
            if not (pool_fd == -1 or 0 <= pool_fd < 1 << 31) or not 0 <= pool_addr < 1 << 64 or \
                    (pool_fd == -1) != (pool_addr == 0):
                raise PalError("pal_init", -errno.EINVAL,
                               f"enclave pool fd {pool_fd} / addr {pool_addr:#x}: expected both or neither")
            attr3 = _AttrV3(_AttrV1(c_args, c_level), pool_fd, pool_addr)
            ret = self._init_v3(ctypes.byref(attr3))
        else:
            attr1 = _AttrV1(c_args, c_level)
            ret = self._init_v1(ctypes.byref(attr1))
        if ret < 0:
            raise PalError("pal_init", ret)

    def run(self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Sequence[int]) -> int:
        version = self._usable("pal_exec")
        if version >= 2:
            return super().run(path, argv, env, stdio)
        # v1 has one call that runs the payload to its end; it takes no environment
        c_path = _cstr("pal_exec", "path", path)
        c_argv = _cstr_array("pal_exec", "argv", argv)
        fds = _stdio("pal_exec", stdio)
        exit_code = ctypes.c_int(0)
        ret = self._exec_v1(c_path, c_argv, ctypes.byref(fds), ctypes.byref(exit_code))
        if ret < 0:
            raise PalError("pal_exec", ret)
        return exit_code.value

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Sequence[int]) -> int:
        version = self._usable("pal_create_process")
        if version < 2:
            raise PalError("pal_create_process", -errno.ENOSYS, f"PAL API v{version} has no pal_create_process")
        c_path = _cstr("pal_create_process", "path", path)
        c_argv = _cstr_array("pal_create_process", "argv", argv)
        c_env = _cstr_array("pal_create_process", "env", env)
        fds = _stdio("pal_create_process", stdio)
        pid = ctypes.c_int(-1)
        args = _CreateProcessArgs(c_path, c_argv, c_env, ctypes.pointer(fds), ctypes.pointer(pid))
        ret = self._create_fn(ctypes.byref(args))
        if ret < 0:
            raise PalError("pal_create_process", ret)
        if pid.value <= 0:
            raise PalError("pal_create_process", -errno.ESRCH, f"returned no process id (pid {pid.value})")
        return pid.value

    def exec(self, pid: int) -> int:
        version = self._usable("pal_exec")
        if version < 2:
            raise PalError("pal_exec", -errno.ENOSYS, f"PAL API v{version} runs processes with run() only")
        exit_value = ctypes.c_int(0)
        args = _ExecArgs(pid, ctypes.pointer(exit_value))
        ret = self._exec_v2(ctypes.byref(args))
        if ret < 0:
            raise PalError("pal_exec", ret)
        return exit_value.value

    def kill(self, pid: int, sig: int) -> bool:
        version = self._usable("pal_kill")
        if version < 2:
            return False
        _check_pid("pal_kill", pid)
        ret = self._kill_fn(pid, sig)
        if ret < 0:
            raise PalError("pal_kill", ret)
        return True

    def destroy(self) -> None:
        if not self._begin_destroy():
            return
        ret = self._destroy_fn()
        if ret < 0:
            raise PalError("pal_destroy", ret)

    def get_local_report(self, targetinfo: bytes) -> bytes:
        version = self._usable("pal_get_local_report")
        if version < 3:
            raise PalError("pal_get_local_report", -errno.ENOSYS, f"PAL API v{version} has no local report")
        data = bytes(targetinfo)
        ti = (ctypes.c_char * len(data)).from_buffer_copy(data) if data else None
        report = ctypes.create_string_buffer(api.REPORT_SIZE)
        report_len = ctypes.c_int(api.REPORT_SIZE)
        ret = self._report_fn(ti, len(data), report, ctypes.byref(report_len))
        if ret < 0:
            raise PalError("pal_get_local_report", ret)
        if report_len.value != api.REPORT_SIZE:
            raise PalError("pal_get_local_report", -errno.EPROTO,
                           f"returned {report_len.value} bytes; a REPORT has {api.REPORT_SIZE}")
        return report.raw


# ---- Python runtimes ----


class PythonPal(Pal):
    """Adapts an :class:`~inclavare.enclave.api.EnclaveRuntime` to :class:`Pal`.

    The runtime's own PalError and other InclavareError pass through; any other exception becomes a
    PalError naming the PAL function (code -1, or -ENOSYS for NotImplementedError).
    """

    def __init__(self, path: str, runtime: api.EnclaveRuntime) -> None:
        super().__init__(path)
        self.runtime = runtime

    def _call(self, func: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except InclavareError:
            raise
        except NotImplementedError as exc:
            raise PalError(func, -errno.ENOSYS, f"{self.runtime.name} does not implement {func}") from exc
        except Exception as exc:
            text = " ".join(str(exc).split())
            detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            raise PalError(func, -1, detail) from exc

    def _overrides(self, method: str) -> bool:
        return getattr(type(self.runtime), method) is not getattr(api.EnclaveRuntime, method)

    def _query_version(self) -> int:
        version = self._call("pal_get_version", self.runtime.get_version)
        if not isinstance(version, int) or isinstance(version, bool):
            raise PalError("pal_get_version", -errno.EPROTO, f"returned {version!r}, not an int")
        if version < 0:
            raise PalError("pal_get_version", version)
        return version

    @property
    def has_kill(self) -> bool:
        return self.get_version() >= 2 and self._overrides("kill")

    @property
    def has_report(self) -> bool:
        return self.get_version() >= 3 and self._overrides("get_local_report")

    def init(self, args: str, log_level: str, *, pool_fd: int = -1, pool_addr: int = 0) -> None:
        self._usable("pal_init")
        self._call("pal_init", self.runtime.init, args, log_level)

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Sequence[int]) -> int:
        self._usable("pal_create_process")
        fds = _stdio("pal_create_process", stdio)
        pid = self._call("pal_create_process", self.runtime.create_process, path, list(argv), list(env),
                         (fds.stdin, fds.stdout, fds.stderr))
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise PalError("pal_create_process", -errno.ESRCH, f"returned {pid!r}, not a process id")
        return pid

    def exec(self, pid: int) -> int:
        self._usable("pal_exec")
        value = self._call("pal_exec", self.runtime.exec, pid)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PalError("pal_exec", -errno.EPROTO, f"returned {value!r}, not an exit value")
        return value

    def kill(self, pid: int, sig: int) -> bool:
        self._usable("pal_kill")
        if not self.has_kill:
            return False
        _check_pid("pal_kill", pid)
        self._call("pal_kill", self.runtime.kill, pid, sig)
        return True

    def destroy(self) -> None:
        if self._begin_destroy():
            self._call("pal_destroy", self.runtime.destroy)

    def get_local_report(self, targetinfo: bytes) -> bytes:
        version = self._usable("pal_get_local_report")
        if version < 3:
            raise PalError("pal_get_local_report", -errno.ENOSYS, f"PAL API v{version} has no local report")
        report = self._call("pal_get_local_report", self.runtime.get_local_report, bytes(targetinfo))
        if not isinstance(report, bytes | bytearray) or len(report) != api.REPORT_SIZE:
            size = len(report) if isinstance(report, bytes | bytearray) else type(report).__name__
            raise PalError("pal_get_local_report", -errno.EPROTO,
                           f"returned {size} bytes; a REPORT has {api.REPORT_SIZE}")
        return bytes(report)


# ---- entry point ----


def open_pal(path: str, spec: dict[str, Any]) -> Pal:
    """Load the PAL named by ``path`` and ask its API version.

    ``builtin:NAME`` creates that registered Python runtime and calls its ``load(spec)`` (``spec`` is the
    container's OCI config; call this on the host, before pivot_root). Anything else must be the absolute
    path of a PAL shared object; ``spec`` is not used for those. Every problem is one EnclaveConfigError
    line under the key ``enclave.runtime.path`` (PalError if the PAL's own pal_get_version fails).
    """
    pal: Pal
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        runtime = registry.load_builtin(name)
        try:
            runtime.load(spec)
        except InclavareError:
            raise
        except Exception as exc:
            text = " ".join(str(exc).split())
            raise EnclaveConfigError(CONFIG_KEY, f"{path}: load failed: {type(exc).__name__}: {text}") from exc
        pal = PythonPal(path, runtime)
    else:
        pal = NativePal(path)
    pal.get_version()
    return pal
