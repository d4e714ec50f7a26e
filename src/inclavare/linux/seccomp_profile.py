"""The OCI ``linux.seccomp`` profile: its names (actions, operators, architectures, flags) and :func:`validate`.

Pure Python, no library needed, so ``rune create`` can reject a bad profile before it forks; the filter itself is
built by :mod:`inclavare.linux.seccomp` (which re-exports these names). See that module's docstring for how runc
and the runtime-spec differ and which one rune follows.
"""

from __future__ import annotations

import os

from inclavare.errors import ConfigError
from inclavare.formats.jsonshape import Shape, is_int, is_uint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from typing import Any

# --------------------------------------------------------------------------------------------------
# Constants (values from libseccomp 2.5.4 <seccomp.h> and <linux/seccomp.h>)

_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_NOTIFY = 0x7FC00000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000

#: OCI action name -> libseccomp action value (the errno part is added by compile()).
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": _ACT_TRAP,
    "SCMP_ACT_ERRNO": _ACT_ERRNO,
    "SCMP_ACT_TRACE": _ACT_TRACE,
    "SCMP_ACT_ALLOW": _ACT_ALLOW,
    "SCMP_ACT_LOG": _ACT_LOG,
    "SCMP_ACT_NOTIFY": _ACT_NOTIFY,
}
_ERRNO_ACTIONS = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"})

#: OCI operator name -> enum scmp_compare.
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

#: OCI architecture name -> libseccomp architecture name (seccomp_arch_resolve_name).
ARCHITECTURES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
}
# Named by the runtime-spec but unknown to libseccomp 2.5 (and to runc 1.1.5).
_SPEC_ONLY_ARCHITECTURES = frozenset(
    {"SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB"}
)

# Filter attributes (enum scmp_filter_attr).
_FLTATR_ACT_DEFAULT = 1
_FLTATR_CTL_NNP = 3
_FLTATR_CTL_TSYNC = 4
_FLTATR_CTL_LOG = 6
_FLTATR_CTL_SSB = 7
_FLTATR_CTL_OPTIMIZE = 8
_FLTATR_CTL_WAITKILL = 10  # libseccomp >= 2.6.0

#: OCI flag name -> (filter attribute, first libseccomp version that has it).
FLAGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "SECCOMP_FILTER_FLAG_TSYNC": (_FLTATR_CTL_TSYNC, (2, 2, 0)),
    "SECCOMP_FILTER_FLAG_LOG": (_FLTATR_CTL_LOG, (2, 4, 0)),
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": (_FLTATR_CTL_SSB, (2, 5, 0)),
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": (_FLTATR_CTL_WAITKILL, (2, 6, 0)),
}
_MAX_ARG_INDEX = 5
_U64_MAX = (1 << 64) - 1
_ERRNO_MAX = 0xFFFF  # the data part of a seccomp return value is 16 bits
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 for the terminating NUL


# --------------------------------------------------------------------------------------------------
# Validation (pure Python)


_is_int = is_int
_is_uint = is_uint
_shape = Shape(ConfigError)


def enabled(seccomp: Mapping[str, Any] | None) -> bool:
    """Whether a ``linux.seccomp`` object asks for a filter at all.

    runc treats a profile with neither ``defaultAction`` nor ``syscalls`` as "no seccomp"; so does rune.
    """
    if seccomp is None:
        return False
    if not isinstance(seccomp, dict):
        return True  # let validate() report the type error
    return bool(seccomp.get("defaultAction")) or bool(seccomp.get("syscalls"))


def _check_errno_ret(value: object, path: str, action: object) -> None:
    if not _is_uint(value, _ERRNO_MAX):
        raise ConfigError(path, f"must be a non-negative integer not above {_ERRNO_MAX}, got {value!r}")
    if action not in _ERRNO_ACTIONS:
        raise ConfigError(path, f"only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}")


def _check_action(value: object, path: str) -> str:
    if value is None or value == "":
        raise ConfigError(path, "missing (required)")
    return _check_known(value, path, ACTIONS, "action")


def _check_known(value: object, path: str, known: Collection[str], what: str,
                 unsupported: Collection[str] = ()) -> str:
    """``value`` is a string naming one of ``known`` (``what`` says what kind of name, for the error)."""
    name = _shape.string(value, path, got=True)
    if name in unsupported:
        raise ConfigError(path, f'{what} "{name}" is not supported by this runtime')
    if name not in known:
        raise ConfigError(path, f'unknown {what} "{name}"')
    return name


def _check_known_list(values: object, path: str, known: Collection[str], what: str,
                      unsupported: Collection[str] = ()) -> None:
    """``values``, when given, is a list of such names."""
    if values is not None:
        for i, value in enumerate(_shape.array(values, path, "must be a list of strings")):
            _check_known(value, f"{path}[{i}]", known, what, unsupported)


def _check_u64(value: object, path: str) -> None:
    if not _is_uint(value, _U64_MAX):
        raise ConfigError(path, f"must be an unsigned 64-bit integer, got {value!r}")


def _check_arg(arg: object, path: str) -> None:
    arg = _shape.object(arg, path)
    if "index" not in arg:
        raise ConfigError(f"{path}.index", "missing (required)")
    index = arg["index"]
    if not _is_uint(index, _MAX_ARG_INDEX):
        raise ConfigError(f"{path}.index", f"must be an integer from 0 to {_MAX_ARG_INDEX}, got {index!r}")
    if "value" not in arg:
        raise ConfigError(f"{path}.value", "missing (required)")
    _check_u64(arg["value"], f"{path}.value")
    if arg.get("valueTwo") is not None:
        _check_u64(arg["valueTwo"], f"{path}.valueTwo")
    op = arg.get("op")
    if op is None or op == "":
        raise ConfigError(f"{path}.op", "missing (required)")
    _check_known(op, f"{path}.op", OPERATORS, "operator")


def _check_syscall(call: object, path: str) -> bool:
    """Check one ``syscalls[]`` entry; return whether it uses SCMP_ACT_NOTIFY."""
    call = _shape.object(call, path)
    names = call.get("names")
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{path}.names", "must be a non-empty list of strings")
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}.names[{j}]", f"must be a non-empty string, got {name!r}")
    action = _check_action(call.get("action"), f"{path}.action")
    if call.get("errnoRet") is not None:
        _check_errno_ret(call["errnoRet"], f"{path}.errnoRet", action)
    if action == "SCMP_ACT_NOTIFY":
        # The init process reports the notify fd to its parent with write(); trapping write would hang it.
        for j, name in enumerate(names):
            if name == "write":
                raise ConfigError(f"{path}.names[{j}]", 'SCMP_ACT_NOTIFY cannot be used for the write syscall')
    args = call.get("args")
    if args is not None:
        _shape.array(args, f"{path}.args", "must be a list")
        for k, arg in enumerate(args):
            _check_arg(arg, f"{path}.args[{k}]")
    return action == "SCMP_ACT_NOTIFY"


def validate(seccomp: dict[str, Any], field: str = "linux.seccomp") -> None:
    """Check a ``linux.seccomp`` object; raise ConfigError naming the first bad field.

    Needs no library.  A profile with neither ``defaultAction`` nor ``syscalls`` is accepted as
    "seccomp disabled" (see :func:`enabled`), as runc does.
    """
    seccomp = _shape.object(seccomp, field)
    if not enabled(seccomp):
        return
    default_action = _check_action(seccomp.get("defaultAction"), f"{field}.defaultAction")
    if default_action == "SCMP_ACT_NOTIFY":
        raise ConfigError(f"{field}.defaultAction", "SCMP_ACT_NOTIFY cannot be used as default action")
    if seccomp.get("defaultErrnoRet") is not None:
        _check_errno_ret(seccomp["defaultErrnoRet"], f"{field}.defaultErrnoRet", default_action)

    _check_known_list(seccomp.get("architectures"), f"{field}.architectures", ARCHITECTURES, "architecture",
                      _SPEC_ONLY_ARCHITECTURES)
    _check_known_list(seccomp.get("flags"), f"{field}.flags", FLAGS, "flag")

    listener_path = seccomp.get("listenerPath")
    if listener_path is not None:
        _shape.string(listener_path, f"{field}.listenerPath")
        if len(os.fsencode(listener_path)) > _SUN_PATH_MAX:
            raise ConfigError(
                f"{field}.listenerPath", f"a unix socket path must not be longer than {_SUN_PATH_MAX} bytes"
            )
    metadata = seccomp.get("listenerMetadata")
    if metadata is not None:
        _shape.string(metadata, f"{field}.listenerMetadata")
    # (metadata without listenerPath is a config the spec says must not be written; runc accepts it and
    # so does rune: without a listener there is nobody to give it to)

    syscalls = seccomp.get("syscalls")
    uses_notify = False
    if syscalls is not None:
        _shape.array(syscalls, f"{field}.syscalls", "must be a list")
        for i, call in enumerate(syscalls):
            uses_notify |= _check_syscall(call, f"{field}.syscalls[{i}]")
    if uses_notify and not listener_path:
        raise ConfigError(f"{field}.listenerPath", "listenerPath is not set (a rule uses SCMP_ACT_NOTIFY)")
