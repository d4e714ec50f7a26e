"""Unit tests for inclavare.linux.seccomp: validation, filter building, listener hand-off (no root)."""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
from typing import Any

import pytest

from inclavare.errors import ConfigError, SeccompError
from inclavare.linux import seccomp


def _libseccomp_available() -> bool:
    try:
        seccomp.preload()
    except SeccompError:
        return False
    return True


needs_lib = pytest.mark.skipif(not _libseccomp_available(), reason="libseccomp.so.2 is not installed")

GOOD: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "listenerPath": "/run/agent.sock",
    "listenerMetadata": "opaque",
    "syscalls": [
        {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["ptrace"], "action": "SCMP_ACT_TRACE"},
        {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0xFFFFFFFF, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        },
    ],
}


def _bad(mutate: Any) -> dict[str, Any]:
    profile = copy.deepcopy(GOOD)
    mutate(profile)
    return profile


def _set(path: list[Any], value: Any) -> Any:
    def mutate(profile: dict[str, Any]) -> None:
        target: Any = profile
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Any:
    def mutate(profile: dict[str, Any]) -> None:
        target: Any = profile
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


# --------------------------------------------------------------------------------------------------
# validate()


def test_validate_accepts_a_full_profile() -> None:
    seccomp.validate(copy.deepcopy(GOOD))


def test_validate_accepts_every_known_name() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": sorted(seccomp.ARCHITECTURES),
        "flags": sorted(seccomp.FLAGS),
        "listenerPath": "/run/a.sock",
        "syscalls": [
            {"names": ["getpid"], "action": action, "args": [{"index": 1, "value": 2, "op": op}]}
            for action, op in zip(sorted(seccomp.ACTIONS), sorted(seccomp.OPERATORS) * 2, strict=False)
        ],
    }
    seccomp.validate(profile)


def test_profile_without_default_action_and_syscalls_is_disabled() -> None:
    assert not seccomp.enabled({})
    assert not seccomp.enabled({"architectures": ["SCMP_ARCH_X86"]})
    assert not seccomp.enabled(None)
    assert seccomp.enabled({"defaultAction": "SCMP_ACT_ALLOW"})
    seccomp.validate({})  # runc treats it as "no seccomp"


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (_delete(["defaultAction"]), "linux.seccomp.defaultAction", "missing"),
        (_set(["defaultAction"], 3), "linux.seccomp.defaultAction", "must be a string"),
        (
            _set(["defaultAction"], "SCMP_ACT_FOO"),
            "linux.seccomp.defaultAction",
            'unknown action "SCMP_ACT_FOO"',
        ),
        (_set(["defaultAction"], "SCMP_ACT_NOTIFY"), "linux.seccomp.defaultAction", "cannot be used as default action"),
        (_set(["defaultErrnoRet"], -1), "linux.seccomp.defaultErrnoRet", "non-negative integer"),
        (_set(["defaultErrnoRet"], "1"), "linux.seccomp.defaultErrnoRet", "non-negative integer"),
        (_set(["defaultErrnoRet"], True), "linux.seccomp.defaultErrnoRet", "non-negative integer"),
        (_set(["defaultErrnoRet"], 70000), "linux.seccomp.defaultErrnoRet", "not above 65535"),
        (_set(["defaultAction"], "SCMP_ACT_KILL"), "linux.seccomp.defaultErrnoRet", "not SCMP_ACT_KILL"),
        (_set(["architectures"], "SCMP_ARCH_X86"), "linux.seccomp.architectures", "must be a list"),
        (_set(["architectures", 0], "x"), "linux.seccomp.architectures[0]", 'unknown architecture "x"'),
        (_set(["architectures", 2], 7), "linux.seccomp.architectures[2]", "must be a string"),
        (
            _set(["architectures", 1], "SCMP_ARCH_M68K"),
            "linux.seccomp.architectures[1]",
            "not supported by this runtime",
        ),
        (_set(["flags"], {}), "linux.seccomp.flags", "must be a list"),
        (_set(["flags", 0], "SECCOMP_FILTER_FLAG_BOGUS"), "linux.seccomp.flags[0]", "unknown flag"),
        (_set(["listenerPath"], 5), "linux.seccomp.listenerPath", "must be a string"),
        (_set(["listenerPath"], "/" + "a" * 200), "linux.seccomp.listenerPath", "longer than 107 bytes"),
        (_delete(["listenerPath"]), "linux.seccomp.listenerPath", "listenerPath is not set"),
        (_set(["listenerPath"], ""), "linux.seccomp.listenerPath", "listenerPath is not set"),
        (_set(["listenerMetadata"], ["x"]), "linux.seccomp.listenerMetadata", "must be a string"),
        (_set(["syscalls"], {"names": ["a"]}), "linux.seccomp.syscalls", "must be a list"),
        (_set(["syscalls", 1], "mkdir"), "linux.seccomp.syscalls[1]", "must be an object"),
        (_delete(["syscalls", 0, "names"]), "linux.seccomp.syscalls[0].names", "non-empty list of strings"),
        (_set(["syscalls", 0, "names"], []), "linux.seccomp.syscalls[0].names", "non-empty list of strings"),
        (_set(["syscalls", 0, "names"], "read"), "linux.seccomp.syscalls[0].names", "non-empty list"),
        (_set(["syscalls", 0, "names", 2], ""), "linux.seccomp.syscalls[0].names[2]", "non-empty string"),
        (_set(["syscalls", 0, "names", 1], None), "linux.seccomp.syscalls[0].names[1]", "non-empty string"),
        (_delete(["syscalls", 3, "action"]), "linux.seccomp.syscalls[3].action", "missing"),
        (
            _set(["syscalls", 3, "action"], "SCMP_ACT_FOO"),
            "linux.seccomp.syscalls[3].action",
            'unknown action "SCMP_ACT_FOO"',
        ),
        (_set(["syscalls", 1, "errnoRet"], -5), "linux.seccomp.syscalls[1].errnoRet", "non-negative integer"),
        (
            _set(["syscalls", 1, "errnoRet"], 1.5),
            "linux.seccomp.syscalls[1].errnoRet",
            "non-negative integer",
        ),
        (_set(["syscalls", 0, "errnoRet"], 1), "linux.seccomp.syscalls[0].errnoRet", "not SCMP_ACT_ALLOW"),
        (_set(["syscalls", 3, "names"], ["write"]), "linux.seccomp.syscalls[3].names[0]", "the write syscall"),
        (_set(["syscalls", 4, "args"], {}), "linux.seccomp.syscalls[4].args", "must be a list"),
        (_set(["syscalls", 4, "args", 0], 1), "linux.seccomp.syscalls[4].args[0]", "must be an object"),
        (_delete(["syscalls", 4, "args", 0, "index"]), "linux.seccomp.syscalls[4].args[0].index", "missing"),
        (_set(["syscalls", 4, "args", 0, "index"], 6), "linux.seccomp.syscalls[4].args[0].index", "0 to 5"),
        (_set(["syscalls", 4, "args", 0, "index"], -1), "linux.seccomp.syscalls[4].args[0].index", "0 to 5"),
        (_delete(["syscalls", 4, "args", 0, "value"]), "linux.seccomp.syscalls[4].args[0].value", "missing"),
        (
            _set(["syscalls", 4, "args", 0, "value"], 1 << 64),
            "linux.seccomp.syscalls[4].args[0].value",
            "64-bit",
        ),
        (_set(["syscalls", 4, "args", 0, "value"], -1), "linux.seccomp.syscalls[4].args[0].value", "64-bit"),
        (
            _set(["syscalls", 4, "args", 0, "valueTwo"], "0"),
            "linux.seccomp.syscalls[4].args[0].valueTwo",
            "64-bit",
        ),
        (_delete(["syscalls", 4, "args", 0, "op"]), "linux.seccomp.syscalls[4].args[0].op", "missing"),
        (
            _set(["syscalls", 4, "args", 0, "op"], "SCMP_CMP_FOO"),
            "linux.seccomp.syscalls[4].args[0].op",
            'unknown operator "SCMP_CMP_FOO"',
        ),
    ],
)
def test_validate_names_the_bad_field(mutate: Any, field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        seccomp.validate(_bad(mutate))
    assert info.value.field == field
    assert problem in info.value.problem
    assert str(info.value).startswith(field + ": ")


def test_validate_requires_listener_path_with_notify() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}],
    }
    with pytest.raises(ConfigError) as info:
        seccomp.validate(profile)
    assert info.value.field == "linux.seccomp.listenerPath"
    assert "SCMP_ACT_NOTIFY" in info.value.problem


def test_validate_accepts_metadata_without_listener_when_nothing_notifies() -> None:
    # runc 1.1.5 accepts it (the metadata then has nobody to go to); so does rune
    seccomp.validate({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "stray",
                      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})


def test_validate_refuses_notify_for_write_only() -> None:
    # runc refuses exactly "write": the init reports the notify fd with write(); read and close may notify
    base = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/a.sock"}
    seccomp.validate({**base, "syscalls": [{"names": ["read", "close", "writev"], "action": "SCMP_ACT_NOTIFY"}]})
    with pytest.raises(ConfigError) as info:
        seccomp.validate({**base, "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_NOTIFY"}]})
    assert info.value.field == "linux.seccomp.syscalls[0].names[1]"
    assert "the write syscall" in info.value.problem


def test_validate_requires_default_action_when_syscalls_are_given() -> None:
    with pytest.raises(ConfigError) as info:
        seccomp.validate({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})
    assert info.value.field == "linux.seccomp.defaultAction"


def test_validate_uses_the_given_field_prefix() -> None:
    with pytest.raises(ConfigError) as info:
        seccomp.validate({"defaultAction": "nope"}, field="process.seccomp")
    assert info.value.field == "process.seccomp.defaultAction"


def test_validate_rejects_non_object() -> None:
    with pytest.raises(ConfigError) as info:
        seccomp.validate(["SCMP_ACT_ALLOW"])  # type: ignore[arg-type]
    assert info.value.field == "linux.seccomp"


def test_validate_does_not_load_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise AssertionError("validate() must not touch libseccomp")

    monkeypatch.setattr(seccomp, "_lib", boom)
    seccomp.validate(copy.deepcopy(GOOD))


# --------------------------------------------------------------------------------------------------
# compile() + export_pfc()


def _section(pfc: str, arch: str) -> str:
    """The part of the pseudo filter code that belongs to one architecture."""
    start = pfc.index(f"# filter for arch {arch} (")
    end = pfc.find("# filter for arch", start + 1)
    return pfc[start : end if end != -1 else len(pfc)]


def _rule_block(section: str, name: str) -> str:
    start = section.index(f'# filter for syscall "{name}"')
    end = section.find("# filter for syscall", start + 1)
    if end == -1:
        end = section.index("# default action", start)
    return section[start:end]


@needs_lib
def test_compile_small_profile_actions_args_and_arches() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["chdir"], "action": "SCMP_ACT_KILL"},
            {"names": ["fchdir"], "action": "SCMP_ACT_TRAP"},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE"},
            {"names": ["acct"], "action": "SCMP_ACT_TRACE", "errnoRet": 5},
            {"names": ["sync"], "action": "SCMP_ACT_LOG"},
            {
                "names": ["ioctl"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 25,
                "args": [
                    {"index": 1, "value": 0x5401, "op": "SCMP_CMP_EQ"},
                    {"index": 2, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"},
                ],
            },
        ],
    }
    with seccomp.compile(profile) as flt:
        pfc = flt.export_pfc()
        assert flt.unknown_syscalls == []
        assert not flt.uses_notify
        assert flt.attr(3) == 0  # SCMP_FLTATR_CTL_NNP cleared: rune sets no_new_privs itself
    x86 = _section(pfc, "x86")
    x86_64 = _section(pfc, "x86_64")
    assert "action ALLOW;" in x86_64.rsplit("# default action", 1)[1]
    for section in (x86, x86_64):
        assert "action ERRNO(38);" in _rule_block(section, "mkdir")
        assert "action ERRNO(1);" in _rule_block(section, "rmdir")  # EPERM by default
        assert "action KILL_PROCESS;" in _rule_block(section, "uname")
        assert "action KILL;" in _rule_block(section, "chdir")  # SCMP_ACT_KILL kills the thread
        assert "action TRAP;" in _rule_block(section, "fchdir")
        assert "action TRACE(1);" in _rule_block(section, "ptrace")  # EPERM by default, like runc
        assert "action TRACE(5);" in _rule_block(section, "acct")
        assert "action LOG;" in _rule_block(section, "sync")
    # Two conditions on different arguments form one rule (AND): nested tests, one action.
    ioctl32 = _rule_block(x86, "ioctl")
    assert "if ($a1 == 21505)" in ioctl32
    assert "if ($a2 & 0x000000f0 == 16)" in ioctl32
    assert ioctl32.index("$a1 == 21505") < ioctl32.index("$a2 & 0x000000f0")
    assert ioctl32.count("action ERRNO(25);") == 1
    # The x86 and x86_64 sections use each arch's own syscall numbers.
    assert '"mkdir" (39)' in x86 and '"mkdir" (83)' in x86_64


@needs_lib
def test_conditions_on_the_same_argument_become_separate_rules() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86"],
        "syscalls": [
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 95,
                "args": [
                    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"},
                ],
            }
        ],
    }
    with seccomp.compile(profile) as flt:
        assert flt.rule_count == 2
        block = _rule_block(_section(flt.export_pfc(), "x86"), "personality")
    # OR: each value leads to the action on its own.
    assert block.count("action ERRNO(95);") == 2
    assert "if ($a0 == 8)" in block and "if ($a0 == 4294967295)" in block


@needs_lib
def test_default_errno_ret_and_rules_equal_to_default_are_skipped() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 13,
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},  # same as default: skipped
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},  # EPERM differs from EACCES: kept
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    with seccomp.compile(profile) as flt:
        pfc = flt.export_pfc()
        assert flt.rule_count == 3
    native = pfc.split("# invalid architecture action")[0]
    assert "action ERRNO(13);" in native.rsplit("# default action", 1)[1]
    assert '"getcwd"' not in native
    assert "action ERRNO(1);" in _rule_block(native, "mkdir")
    assert "action ALLOW;" in _rule_block(native, "read")


@needs_lib
def test_unknown_syscall_names_are_skipped_and_collected() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["not_a_syscall", "mkdir", "another_fake_one"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["not_a_syscall"], "action": "SCMP_ACT_KILL"},
        ],
    }
    with seccomp.compile(profile) as flt:
        assert flt.unknown_syscalls == ["not_a_syscall", "another_fake_one"]
        assert flt.rule_count == 1
        pfc = flt.export_pfc()
    assert '"mkdir"' in pfc
    assert "not_a_syscall" not in pfc


@needs_lib
def test_native_architecture_stays_when_others_are_listed() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }
    with seccomp.compile(profile) as flt:
        pfc = flt.export_pfc()
    native = os.uname().machine
    if native == "x86_64":
        assert "# filter for arch x86_64 (" in pfc
    assert "# filter for arch aarch64 (" in pfc
    assert "# filter for arch x32 (" in pfc


_LITTLE_ENDIAN_ARCHES = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_RISCV64": "riscv64",
}
_BIG_ENDIAN_ARCHES = sorted(set(seccomp.ARCHITECTURES) - set(_LITTLE_ENDIAN_ARCHES))
_native_is_little = sys.byteorder == "little"


@needs_lib
@pytest.mark.skipif(not _native_is_little, reason="the table of arches assumes a little-endian host")
@pytest.mark.parametrize(("arch", "libname"), sorted(_LITTLE_ENDIAN_ARCHES.items()))
def test_every_little_endian_architecture_is_added(arch: str, libname: str) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [arch],
        "syscalls": [{"names": ["close"], "action": "SCMP_ACT_ERRNO"}],
    }
    with seccomp.compile(profile) as flt:
        assert f"# filter for arch {libname} (" in flt.export_pfc()


@needs_lib
@pytest.mark.skipif(not _native_is_little, reason="the table of arches assumes a little-endian host")
@pytest.mark.parametrize("arch", _BIG_ENDIAN_ARCHES)
def test_big_endian_architecture_is_refused_clearly(arch: str) -> None:
    with pytest.raises(SeccompError, match=f"{arch} cannot share a filter .*byte order"):
        seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch]})


@needs_lib
def test_flags_set_filter_attributes() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
    }
    with seccomp.compile(profile) as flt:
        assert (flt.attr(4), flt.attr(6), flt.attr(7)) == (1, 1, 1)
    with seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW"}) as flt:
        assert (flt.attr(4), flt.attr(6), flt.attr(7)) == (0, 0, 0)


@needs_lib
def test_wait_killable_recv_needs_libseccomp_2_6() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}
    if seccomp.library_version() >= (2, 6, 0):
        seccomp.compile(profile).release()
        return
    with pytest.raises(SeccompError, match=r"WAIT_KILLABLE_RECV needs libseccomp >= 2\.6\.0, have 2\."):
        seccomp.compile(profile)


@needs_lib
def test_notify_rule_marks_the_filter() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }
    with seccomp.compile(profile) as flt:
        assert flt.uses_notify
        assert "action 0x7fc00000;" in _rule_block(flt.export_pfc(), "mkdir")
    profile["syscalls"] = [{"names": ["no_such_call"], "action": "SCMP_ACT_NOTIFY"}]
    with seccomp.compile(profile) as flt:
        # no rule made it into the filter, yet (as runc) the listener still gets a notify fd
        assert flt.uses_notify and flt.rule_count == 0
    profile["syscalls"] = [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    with seccomp.compile(profile) as flt:
        assert not flt.uses_notify  # nothing notifies, so load() will not ask for a notify fd


@needs_lib
def test_compile_validates_first() -> None:
    with pytest.raises(ConfigError) as info:
        seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "bad"}]})
    assert info.value.field == "linux.seccomp.syscalls[0].action"


@needs_lib
def test_compile_refuses_a_disabled_profile() -> None:
    with pytest.raises(SeccompError, match="disabled"):
        seccomp.compile({})


@needs_lib
def test_released_filter_cannot_be_used() -> None:
    flt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW"})
    flt.release()
    flt.release()  # idempotent
    with pytest.raises(SeccompError, match="released"):
        flt.export_pfc()
    with pytest.raises(SeccompError, match="released"):
        flt.load()


@needs_lib
def test_export_bpf_is_a_sock_filter_program() -> None:
    with seccomp.compile(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    ) as flt:
        bpf = flt.export_bpf()
    assert bpf and len(bpf) % 8 == 0  # struct sock_filter is 8 bytes


def test_libseccomp_error_text() -> None:
    err = seccomp.LibseccompError("seccomp_load", -13)
    assert err.errno == 13
    assert str(err) == "seccomp: seccomp_load failed: Permission denied (-EACCES)"
    assert isinstance(err, SeccompError)
    err = seccomp.LibseccompError("seccomp_rule_add_array", -22, "mkdir, SCMP_ACT_ERRNO(1)")
    assert str(err).startswith("seccomp: seccomp_rule_add_array(mkdir, SCMP_ACT_ERRNO(1)) failed: ")


# --------------------------------------------------------------------------------------------------
# send_to_listener()


def _listener(tmp_path: Any) -> tuple[socket.socket, str]:
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(10)
    return server, path


def _receive(server: socket.socket) -> tuple[dict[str, Any], list[int]]:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(10)
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 4)
        while chunk := conn.recv(1 << 16):  # the sender closes after one message
            data += chunk
    return json.loads(data), fds


def test_send_to_listener_delivers_state_and_fd(tmp_path: Any) -> None:
    server, path = _listener(tmp_path)
    r, w = os.pipe()
    state = {
        "ociVersion": "1.0.2",
        "id": "c1",
        "status": "creating",
        "pid": 4242,
        "bundle": "/b",
        "annotations": {"k": "v"},
    }
    try:
        seccomp.send_to_listener(path, w, state, "meta-data")
        message, fds = _receive(server)
        assert message == {
            "ociVersion": "1.0.2",
            "fds": ["seccompFd"],
            "pid": 4242,
            "metadata": "meta-data",
            "state": state,
        }
        assert len(fds) == 1
        os.write(fds[0], b"through the passed fd")  # it is the same pipe as w
        assert os.read(r, 100) == b"through the passed fd"
        os.close(fds[0])
    finally:
        server.close()
        os.close(r)
        os.close(w)


def test_send_to_listener_omits_empty_metadata_and_takes_explicit_pid(tmp_path: Any) -> None:
    server, path = _listener(tmp_path)
    r, w = os.pipe()
    try:
        seccomp.send_to_listener(path, r, {"id": "c2", "status": "running", "pid": 1, "bundle": "/b"}, pid=77)
        message, fds = _receive(server)
        for fd in fds:
            os.close(fd)
        assert "metadata" not in message
        assert message["pid"] == 77
        assert message["ociVersion"] == seccomp.OCI_VERSION
        assert message["state"]["pid"] == 1
    finally:
        server.close()
        os.close(r)
        os.close(w)


def test_send_to_listener_reports_connect_failure(tmp_path: Any) -> None:
    r, w = os.pipe()
    try:
        expected = (r"^failed to connect with seccomp agent specified in the seccomp profile: "
                    r"linux\.seccomp\.listenerPath .*nobody\.sock: No such file or directory$")
        with pytest.raises(SeccompError, match=expected):
            seccomp.send_to_listener(str(tmp_path / "nobody.sock"), r, {"pid": 1})
    finally:
        os.close(r)
        os.close(w)


def test_send_to_listener_reaches_an_abstract_socket_named_with_at() -> None:
    name = f"inclavare-unit-{os.getpid()}-{id(object())}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)  # what Go (and so runc) dials for "@name"
    server.listen(1)
    server.settimeout(10)
    r, w = os.pipe()
    try:
        seccomp.send_to_listener("@" + name, w, {"id": "c3", "status": "creating", "pid": 5, "bundle": "/b"})
        message, fds = _receive(server)
        for fd in fds:
            os.close(fd)
        assert message["state"]["id"] == "c3" and len(fds) == 1
    finally:
        server.close()
        os.close(r)
        os.close(w)


def test_whole_message_arrives_in_one_recvmsg(tmp_path: Any) -> None:
    # runc's sample agent reads the state with a single recvmsg and never waits for EOF
    server, path = _listener(tmp_path)
    r, w = os.pipe()
    state = {"id": "c4", "status": "creating", "pid": 6, "bundle": "/b", "annotations": {"a": "x" * 1000}}
    try:
        seccomp.send_to_listener(path, w, state, "m" * 500)
        conn, _ = server.accept()
        with conn:
            data, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
        for fd in fds:
            os.close(fd)
        assert json.loads(data)["state"] == state and len(fds) == 1
    finally:
        server.close()
        os.close(r)
        os.close(w)


@needs_lib
def test_notify_receive_on_a_plain_fd_is_a_clear_error() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(seccomp.LibseccompError) as info:
            seccomp.notify_receive(r)
        assert info.value.function == "seccomp_notify_receive"
    finally:
        os.close(r)
        os.close(w)


@needs_lib
def test_syscall_names_and_numbers_round_trip() -> None:
    nr = seccomp.syscall_number("getpid")
    assert nr is not None and seccomp.syscall_name(nr) == "getpid"
    assert seccomp.syscall_number("no_such_syscall") is None
    assert seccomp.syscall_name(100000) is None
