"""Seccomp filters for containers, built with libseccomp through ctypes.

The OCI ``linux.seccomp`` object is checked by :func:`validate` (pure Python, no library needed, so
``rune create`` can reject a bad profile before it forks), turned into a libseccomp filter context by
:func:`compile`, and installed by :meth:`Filter.load`.  The translation follows runc 1.1.5
(``libcontainer/specconv`` and ``libcontainer/seccomp``):

* ``SCMP_ACT_KILL`` means kill-thread; ``SCMP_ACT_ERRNO`` and ``SCMP_ACT_TRACE`` return ``errnoRet``
  (``EPERM`` when absent); ``defaultErrnoRet`` does the same for the default action.
* Each name of a ``syscalls[]`` entry becomes its own rule.  Names libseccomp does not know are skipped
  (collected in :attr:`Filter.unknown_syscalls`); rules whose action equals the default action are
  skipped because libseccomp refuses them.
* Argument conditions go into one rule (AND) unless two conditions test the same argument index; then
  every condition becomes a rule of its own (OR), as runc does.
* The native architecture is always in the filter; listed architectures are added.
* ``SCMP_FLTATR_CTL_NNP`` is cleared: the runtime sets no_new_privs itself when the process asks.
* A syscall newer than every syscall the profile names returns ``-ENOSYS`` rather than the default
  action's result, through a stub put in front of libseccomp's program (runc's ``patchbpf``; the rules
  and the reasons for the design are in :mod:`inclavare.linux.seccomp_enosys`).  :meth:`Filter.load`
  therefore installs the exported program with ``seccomp(2)`` itself instead of ``seccomp_load()``.
* With a ``SCMP_ACT_NOTIFY`` rule the filter is installed with ``SECCOMP_FILTER_FLAG_NEW_LISTENER``;
  :func:`send_to_listener` gives the resulting fd and the container process state to the agent at
  ``listenerPath`` (runtime-spec config-linux.md "seccomp" and "The Container Process State"), and
  :func:`notify_receive` / :func:`notify_respond` are the agent's side.  ``SCMP_ACT_NOTIFY`` is refused
  for ``write`` (the init reports the fd with write()) and as the default action, as runc does.

Where runc 1.1.5 and the runtime-spec differ, this module follows the spec and is stricter: it accepts
``flags`` (runc 1.1.5 refuses every flag), and it refuses ``errnoRet`` on actions that carry no errno
(runc ignores it; the spec says the runtime MUST fail).  ``SCMP_ARCH_RISCV64``, ``PARISC`` and
``PARISC64`` work (runc 1.1.5 refuses them).

:func:`compile` and :meth:`Filter.load` run in the container's init process right before ``execve``:
they start no threads and fork nothing.  libseccomp is opened on first use by its soname; the caller
should call :func:`compile` (or :func:`preload`) before ``pivot_root`` because the library is usually
not inside the container's root filesystem.
"""


from __future__ import annotations

import ctypes
import errno as _errno
import os

from inclavare.errors import SeccompError
from inclavare.linux.seccomp_profile import (
    _ERRNO_ACTIONS,
    _FLTATR_CTL_NNP,
    _FLTATR_CTL_OPTIMIZE,
    ACTIONS,
    ARCHITECTURES,
    FLAGS,
    OPERATORS,
    enabled,
    validate,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import Any

__all__ = [
    "ACTIONS",
    "ARCHITECTURES",
    "FLAGS",
    "OPERATORS",
    "Filter",
    "LibseccompError",
    "compile",
    "enabled",
    "library_version",
    "native_arch",
    "preload",
    "syscall_name",
    "syscall_number",
    "validate",
]

_NOTIFY_NAMES = frozenset({"NOTIFY_FLAG_CONTINUE", "Notification", "notify_id_valid", "notify_receive",
                           "notify_respond", "send_to_listener"})


def __getattr__(name: str) -> Any:
    """The agent-protocol names live in seccomp_notify (imported on first use: create never needs them)."""
    if name in _NOTIFY_NAMES:
        from inclavare.linux import seccomp_notify

        return getattr(seccomp_notify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------
# libseccomp constants (values from libseccomp 2.5.4 <seccomp.h> and <linux/seccomp.h>)

_NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name() for an unknown name
_BINARY_TREE_MIN_RULES = 32  # runc's threshold for SCMP_FLTATR_CTL_OPTIMIZE = 2
_NOTIFY_MIN_API = 6  # libseccomp API level with notify + TSYNC (runc requires it)
_INSN_SIZE = 8  # sizeof(struct sock_filter)
_BPF_MAXINSNS = 4096
_SET_MODE_FILTER = 1  # SECCOMP_SET_MODE_FILTER
_FILTER_FLAG_TSYNC = 1 << 0
_FILTER_FLAG_NEW_LISTENER = 1 << 3
_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
#: OCI flag name -> SECCOMP_FILTER_FLAG_* bit given to seccomp(2).
_KERNEL_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": 1 << 1,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 1 << 2,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 1 << 5,
}

#: ociVersion written into the container process state when the state has none.
OCI_VERSION = "1.0.2"


# --------------------------------------------------------------------------------------------------
# libseccomp binding (loaded lazily)


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    """struct scmp_version."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


_LIB: ctypes.CDLL | None = None
_SONAME = "libseccomp.so.2"


def _open_library() -> ctypes.CDLL:
    try:
        # dlopen by soname first: ctypes.util.find_library forks ldconfig, which is slow.
        return ctypes.CDLL(_SONAME, use_errno=True)
    except OSError as first:
        from ctypes import util as ctypes_util

        found = ctypes_util.find_library("seccomp")
        if found is None:
            raise SeccompError(f"cannot load {_SONAME}: {first}; install libseccomp2") from None
        try:
            return ctypes.CDLL(found, use_errno=True)
        except OSError as exc:
            raise SeccompError(f"cannot load {found}: {exc}") from None


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is not None:
        return _LIB
    lib = _open_library()
    ctx = ctypes.c_void_p
    u32 = ctypes.c_uint32
    sigs: dict[str, tuple[list[Any], Any]] = {
        "seccomp_init": ([u32], ctx),
        "seccomp_release": ([ctx], None),
        "seccomp_arch_add": ([ctx, u32], ctypes.c_int),
        "seccomp_arch_native": ([], u32),
        "seccomp_arch_resolve_name": ([ctypes.c_char_p], u32),
        "seccomp_attr_set": ([ctx, ctypes.c_int, u32], ctypes.c_int),
        "seccomp_attr_get": ([ctx, ctypes.c_int, ctypes.POINTER(u32)], ctypes.c_int),
        "seccomp_syscall_resolve_name": ([ctypes.c_char_p], ctypes.c_int),
        "seccomp_syscall_resolve_name_arch": ([u32, ctypes.c_char_p], ctypes.c_int),
        "seccomp_syscall_resolve_num_arch": ([u32, ctypes.c_int], ctypes.c_void_p),  # a malloc()ed string
        "free": ([ctypes.c_void_p], None),  # libc's, reached through libseccomp's dependencies
        "seccomp_rule_add_array": (
            [ctx, u32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)],
            ctypes.c_int,
        ),
        "seccomp_export_pfc": ([ctx, ctypes.c_int], ctypes.c_int),
        "seccomp_export_bpf": ([ctx, ctypes.c_int], ctypes.c_int),
        "seccomp_api_get": ([], ctypes.c_uint),
        "seccomp_version": ([], ctypes.POINTER(_Version)),
    }
    for name, (argtypes, restype) in sigs.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise SeccompError(f"{_SONAME} lacks {name}(); libseccomp >= 2.5.0 is required") from None
        fn.argtypes = argtypes
        fn.restype = restype
    _LIB = lib
    return lib


def preload() -> None:
    """Open libseccomp now (call before pivot_root if compile() runs after it)."""
    _lib()


def library_version() -> tuple[int, int, int]:
    """The (major, minor, micro) version of the loaded libseccomp."""
    v = _lib().seccomp_version().contents
    return (v.major, v.minor, v.micro)


class LibseccompError(SeccompError):
    """A libseccomp call returned a negative errno."""

    def __init__(self, function: str, rc: int, detail: str = "") -> None:
        self.function = function
        self.errno = -rc
        what = f"{function}({detail})" if detail else function
        try:
            text = os.strerror(-rc)
        except ValueError:
            text = "unknown error"
        super().__init__(f"seccomp: {what} failed: {text} (-{_errno.errorcode.get(-rc, -rc)})")


def _check(rc: int, function: str, detail: str = "") -> int:
    if rc < 0:
        raise LibseccompError(function, rc, detail)
    return rc


def _action_value(name: str, errno_ret: int | None) -> int:
    base = ACTIONS[name]
    if name in _ERRNO_ACTIONS:
        return base | ((_errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    return base


def _action_text(value: int) -> str:
    for name, base in ACTIONS.items():
        if name == "SCMP_ACT_KILL":
            continue
        if name in _ERRNO_ACTIONS and value & 0xFFFF0000 == base:
            return f"{name}({value & 0xFFFF})"
        if value == base:
            return name
    return hex(value)


# --------------------------------------------------------------------------------------------------
# Filter


class _SockFprog(ctypes.Structure):
    """struct sock_fprog."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Filter:
    """A libseccomp filter context built by :func:`compile`."""

    def __init__(self, ctx: int, default_action: int) -> None:
        self._ctx: int | None = ctx
        self.default_action = default_action
        #: Syscall names libseccomp does not know for the native architecture (skipped, as runc does).
        self.unknown_syscalls: list[str] = []
        #: Whether the profile has a SCMP_ACT_NOTIFY rule: load() then asks the kernel for a notify fd
        #: (also when every such rule names only unknown syscalls, as runc does).
        self.uses_notify = False
        #: How many rules were given to libseccomp.
        self.rule_count = 0
        #: The -ENOSYS stub put in front of libseccomp's program (see seccomp_enosys), maybe empty.
        self.enosys_stub = b""
        #: SECCOMP_FILTER_FLAG_* bits for seccomp(2), from the profile's flags.
        self.kernel_flags = 0
        self._program: bytes | None = None

    def _handle(self) -> ctypes.c_void_p:
        if self._ctx is None:
            raise SeccompError("seccomp: the filter was already released")
        return ctypes.c_void_p(self._ctx)

    def program(self) -> bytes:
        """The classic-BPF program load() installs: the -ENOSYS stub, then libseccomp's filter."""
        if self._program is None:
            self._program = self.enosys_stub + self.export_bpf()
        return self._program

    def load(self) -> int | None:
        """Install the filter in the calling thread; return the notify fd if SCMP_ACT_NOTIFY is used.

        libseccomp's seccomp_load() cannot install a program with the stub in front, so the exported
        program goes to seccomp(2) here.  The program was built by compile(); everything else is done
        before the call, so almost nothing of this function runs under the new filter.  No thread is
        started (SECCOMP_FILTER_FLAG_TSYNC has only the calling thread to synchronise).
        """
        from inclavare.linux.syscalls import libc

        self._handle()  # a released filter is not loaded, even though its program is kept
        code = self.program()
        count = len(code) // _INSN_SIZE
        if count > _BPF_MAXINSNS:
            raise SeccompError(
                f"seccomp: the filter has {count} BPF instructions, more than the kernel's {_BPF_MAXINSNS}"
            )
        flags = self.kernel_flags
        if self.uses_notify:
            flags |= _FILTER_FLAG_NEW_LISTENER
            if flags & _FILTER_FLAG_TSYNC:
                flags |= _FILTER_FLAG_TSYNC_ESRCH  # TSYNC alone cannot be combined with a listener
        nr = _check(_lib().seccomp_syscall_resolve_name(b"seccomp"), "seccomp_syscall_resolve_name", "seccomp")
        buf = ctypes.create_string_buffer(code, len(code))
        fprog = _SockFprog(count, ctypes.cast(buf, ctypes.c_void_p))
        ctypes.set_errno(0)
        rc = libc().syscall(
            ctypes.c_long(nr), ctypes.c_long(_SET_MODE_FILTER), ctypes.c_ulong(flags), ctypes.byref(fprog)
        )
        if rc < 0:
            raise LibseccompError("seccomp", -ctypes.get_errno(), "SECCOMP_SET_MODE_FILTER")
        return int(rc) if self.uses_notify else None

    def release(self) -> None:
        """Free the filter context (the loaded kernel filter stays in force)."""
        if self._ctx is not None:
            _lib().seccomp_release(ctypes.c_void_p(self._ctx))
            self._ctx = None

    def _export(self, function: str) -> bytes:
        fd = os.memfd_create(f"seccomp-{function}", os.MFD_CLOEXEC)
        try:
            _check(getattr(_lib(), function)(self._handle(), fd), function)
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def export_pfc(self) -> str:
        """The filter as libseccomp's human-readable pseudo filter code."""
        return self._export("seccomp_export_pfc").decode()

    def export_bpf(self) -> bytes:
        """The filter as raw classic BPF (struct sock_filter array, native byte order)."""
        return self._export("seccomp_export_bpf")

    def attr(self, attr_id: int) -> int:
        """Read a filter attribute (enum scmp_filter_attr); for tests and debugging."""
        value = ctypes.c_uint32()
        _check(_lib().seccomp_attr_get(self._handle(), attr_id, ctypes.byref(value)), "seccomp_attr_get")
        return value.value

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _conditions(args: Sequence[Mapping[str, Any]]) -> Iterator[list[_ArgCmp]]:
    """Group argument conditions into rules the way runc does."""
    conds = [_ArgCmp(a["index"], OPERATORS[a["op"]], a["value"], a.get("valueTwo") or 0) for a in args]
    indexes = [a["index"] for a in args]
    if len(set(indexes)) != len(indexes):
        # Two conditions on one argument cannot share a rule: each becomes its own rule (logical OR).
        for cond in conds:
            yield [cond]
    else:
        yield conds


def compile(seccomp: dict[str, Any]) -> Filter:
    """Build the libseccomp filter for a ``linux.seccomp`` object in this process (not loaded yet)."""
    validate(seccomp)
    if not enabled(seccomp):
        raise SeccompError("seccomp: the profile has no defaultAction and no syscalls (seccomp disabled)")
    lib = _lib()
    default_action = _action_value(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"))
    syscalls: list[Mapping[str, Any]] = seccomp.get("syscalls") or []

    if any(call["action"] == "SCMP_ACT_NOTIFY" for call in syscalls):
        api = lib.seccomp_api_get()
        if api < _NOTIFY_MIN_API:
            raise SeccompError(
                f"seccomp: SCMP_ACT_NOTIFY needs libseccomp API level {_NOTIFY_MIN_API} "
                f"(libseccomp >= 2.5.0 and Linux >= 5.7), have {api}"
            )

    ctx = lib.seccomp_init(default_action)
    if not ctx:
        raise SeccompError(f"seccomp: seccomp_init({_action_text(default_action)}) failed")
    flt = Filter(ctx, default_action)
    try:
        _configure(lib, flt, seccomp, syscalls)
        _add_rules(lib, flt, syscalls)
        flt.uses_notify = any(call["action"] == "SCMP_ACT_NOTIFY" for call in syscalls)
        flt.enosys_stub = _enosys_stub(lib, seccomp, syscalls)
        flt._program = flt.enosys_stub + flt.export_bpf()  # now, while the library's files are reachable
    except BaseException:
        flt.release()
        raise
    return flt


def _enosys_stub(lib: ctypes.CDLL, seccomp: Mapping[str, Any], syscalls: list[Mapping[str, Any]]) -> bytes:
    from inclavare.linux import seccomp_enosys

    if not seccomp_enosys.needs_stub(seccomp["defaultAction"]):
        return b""
    tokens = [lib.seccomp_arch_resolve_name(ARCHITECTURES[a].encode()) for a in seccomp.get("architectures") or []]

    def resolve(token: int, name: str) -> int:
        return int(lib.seccomp_syscall_resolve_name_arch(token, name.encode()))

    names = (name for call in syscalls for name in call["names"])
    return seccomp_enosys.build_stub(seccomp_enosys.last_syscalls(tokens, names, resolve))


def _configure(lib: ctypes.CDLL, flt: Filter, seccomp: Mapping[str, Any], syscalls: list[Any]) -> None:
    h = flt._handle()
    for arch in seccomp.get("architectures") or []:
        token = lib.seccomp_arch_resolve_name(ARCHITECTURES[arch].encode())
        if token == 0:
            raise SeccompError(f'seccomp: libseccomp does not know architecture "{arch}"')
        rc = lib.seccomp_arch_add(h, token)
        if rc == -_errno.EDOM:
            raise SeccompError(
                f"seccomp: architecture {arch} cannot share a filter with the native architecture "
                "(different byte order)"
            )
        if rc != -_errno.EEXIST:  # the native architecture is already there
            _check(rc, "seccomp_arch_add", arch)

    for flag in seccomp.get("flags") or []:
        attr_id, since = FLAGS[flag]
        flt.kernel_flags |= _KERNEL_FLAGS[flag]
        rc = lib.seccomp_attr_set(h, attr_id, 1)
        if rc < 0:
            have = library_version()
            if have < since:
                raise SeccompError(
                    f"seccomp: flag {flag} needs libseccomp >= {'.'.join(map(str, since))}, "
                    f"have {'.'.join(map(str, have))}"
                )
            _check(rc, "seccomp_attr_set", flag)

    # rune sets no_new_privs itself (Filter.load() does not go through seccomp_load(), which would
    # otherwise set it); cleared so that the context says what is true.
    _check(lib.seccomp_attr_set(h, _FLTATR_CTL_NNP, 0), "seccomp_attr_set", "SCMP_FLTATR_CTL_NNP")
    if len(syscalls) > _BINARY_TREE_MIN_RULES:
        # Binary-tree dispatch for long profiles; libseccomp <= 2.5.4 misbehaves with it on tiny ones.
        lib.seccomp_attr_set(h, _FLTATR_CTL_OPTIMIZE, 2)


def _add_rules(lib: ctypes.CDLL, flt: Filter, syscalls: list[Mapping[str, Any]]) -> None:
    h = flt._handle()
    resolved: dict[str, int] = {}
    for call in syscalls:
        action = _action_value(call["action"], call.get("errnoRet"))
        if action == flt.default_action:
            continue  # redundant, and libseccomp rejects it with EACCES
        rules = list(_conditions(call.get("args") or []))
        for name in call["names"]:
            nr = resolved.get(name)
            if nr is None:
                nr = resolved[name] = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == _NR_SCMP_ERROR:
                if name not in flt.unknown_syscalls:
                    flt.unknown_syscalls.append(name)
                continue
            for conds in rules:
                arr = (_ArgCmp * len(conds))(*conds) if conds else None
                rc = lib.seccomp_rule_add_array(h, action, nr, len(conds), arr)
                _check(rc, "seccomp_rule_add_array", f"{name}, {_action_text(action)}")
                flt.rule_count += 1


def native_arch() -> int:
    """libseccomp's token for the architecture this process runs on (an AUDIT_ARCH_* value)."""
    return int(_lib().seccomp_arch_native())


def syscall_number(name: str, arch: int | None = None) -> int | None:
    """The number of syscall ``name`` on ``arch`` (a libseccomp token; default native), if it has one."""
    lib = _lib()
    nr = int(lib.seccomp_syscall_resolve_name_arch(native_arch() if arch is None else arch, name.encode()))
    return nr if nr >= 0 else None


def syscall_name(nr: int, arch: int | None = None) -> str | None:
    """The name of syscall number ``nr`` on ``arch`` (default native), if libseccomp knows it."""
    lib = _lib()
    ptr = lib.seccomp_syscall_resolve_num_arch(native_arch() if arch is None else arch, nr)
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode()
    finally:
        lib.free(ptr)
