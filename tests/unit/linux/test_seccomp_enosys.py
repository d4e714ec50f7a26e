"""Unit tests for inclavare.linux.seccomp_enosys: the -ENOSYS stub in front of a profile (no root).

The stub, alone or in front of the program libseccomp exports, is run by a small classic-BPF
interpreter on made-up ``seccomp_data`` (architecture, syscall number), so every branch -- x86_64, x32,
i386, s390x, architectures the stub does not know -- is checked without loading anything.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest

from inclavare.errors import SeccompError
from inclavare.linux import seccomp
from inclavare.linux import seccomp_enosys as enosys

X86_64 = 0xC000003E
X32 = 0x4000003E  # libseccomp's token; the kernel reports x32 calls as X86_64 with bit 30 set
I386 = 0x40000003
AARCH64 = 0xC00000B7
S390X = 0x80000016
X32_BIT = 0x40000000

RET_ENOSYS = 0x00050000 | errno.ENOSYS
RET_EPERM = 0x00050000 | errno.EPERM
RET_ALLOW = 0x7FFF0000
#: what the stand-in "profile" after a bare stub returns: anything the stub itself never returns
PROFILE = 0x7FFC1234


def _have_lib() -> bool:
    try:
        seccomp.preload()
    except SeccompError:
        return False
    return True


needs_lib = pytest.mark.skipif(not _have_lib(), reason="libseccomp.so.2 is not installed")


def run_bpf(program: bytes, arch: int, nr: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """Run a seccomp classic-BPF program on one seccomp_data; returns the filter's return value."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("=HBBI", program, off) for off in range(0, len(program), 8)]
    acc = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x00:  # ld #k
            acc = k
        elif code == 0x01:  # ldx #k
            x = k
        elif code == 0x60:  # ld M[k]
            acc = mem[k]
        elif code == 0x61:  # ldx M[k]
            x = mem[k]
        elif code == 0x02:  # st M[k]
            mem[k] = acc
        elif code == 0x03:  # stx M[k]
            mem[k] = x
        elif code == 0x54:  # and #k
            acc &= k
        elif code == 0x06:  # ret #k
            return int(k)
        elif code == 0x16:  # ret a
            return acc
        elif code == 0x05:  # ja
            pc += k
        elif cls == 0x05:  # conditional jump, k or x operand
            operand = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x10:
                taken = acc == operand
            elif op == 0x20:
                taken = acc > operand
            elif op == 0x30:
                taken = acc >= operand
            elif op == 0x40:
                taken = bool(acc & operand)
            else:
                raise AssertionError(f"unknown jump {code:#x}")
            pc += jt if taken else jf
        else:
            raise AssertionError(f"instruction {code:#x} not handled by this interpreter")


def with_profile(stub: bytes) -> bytes:
    return stub + struct.pack("=HBBI", 0x06, 0, 0, PROFILE)


# --------------------------------------------------------------------------------------------------
# which profiles get a stub, and the numbers it compares against


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("SCMP_ACT_ERRNO", True),
        ("SCMP_ACT_KILL", True),
        ("SCMP_ACT_KILL_THREAD", True),
        ("SCMP_ACT_KILL_PROCESS", True),
        ("SCMP_ACT_TRAP", True),
        ("SCMP_ACT_ALLOW", False),
        ("SCMP_ACT_LOG", False),
        ("SCMP_ACT_TRACE", False),
    ],
)
def test_needs_stub_except_for_defaults_that_let_calls_run(action: str, expected: bool) -> None:
    assert enosys.needs_stub(action) is expected


def _table(numbers: dict[tuple[int, str], int]) -> Any:
    return lambda token, name: numbers.get((token, name), -10000)


def test_last_syscalls_takes_the_largest_known_number_per_architecture() -> None:
    resolve = _table({(X86_64, "a"): 10, (X86_64, "b"): 300, (I386, "a"): 5, (I386, "c"): 400,
                      (X32, "a"): X32_BIT + 10, (X32, "b"): X32_BIT + 300})
    last = enosys.last_syscalls([X86_64, I386, X32, X86_64], ["a", "b", "c", "a"], resolve)
    assert last == {X86_64: {X86_64: 300, X32: X32_BIT + 300}, I386: {I386: 400}}


def test_last_syscalls_drops_architectures_without_a_positive_number() -> None:
    # runc: a largest number of 0 (only `read` on x86_64, say) or only unknown names means no stub
    resolve = _table({(X86_64, "read"): 0, (AARCH64, "x"): -101})
    assert enosys.last_syscalls([X86_64, AARCH64], ["read", "x"], resolve) == {}
    assert enosys.last_syscalls([], ["read"], resolve) == {}


def test_audit_arch_maps_x32_to_x86_64_only() -> None:
    assert enosys.audit_arch(X32) == X86_64
    assert enosys.audit_arch(X86_64) == X86_64
    assert enosys.audit_arch(I386) == I386


# --------------------------------------------------------------------------------------------------
# what the stub does


def test_empty_stub_when_nothing_to_compare() -> None:
    assert enosys.build_stub({}) == b""


def test_x86_64_above_the_largest_number_is_enosys_the_rest_goes_to_the_profile() -> None:
    prog = with_profile(enosys.build_stub({X86_64: {X86_64: 334}}))
    assert run_bpf(prog, X86_64, 335) == RET_ENOSYS
    assert run_bpf(prog, X86_64, 0xFFFF) == RET_ENOSYS
    assert run_bpf(prog, X86_64, 334) == PROFILE
    assert run_bpf(prog, X86_64, 0) == PROFILE
    # x32 calls are not compared when only x86_64 was listed
    assert run_bpf(prog, X86_64, X32_BIT | 500) == PROFILE
    # an architecture the stub does not know is the profile's business
    assert run_bpf(prog, I386, 1000) == PROFILE


def test_x32_only_compares_x32_calls() -> None:
    prog = with_profile(enosys.build_stub({X86_64: {X32: X32_BIT | 300}}))
    assert run_bpf(prog, X86_64, X32_BIT | 301) == RET_ENOSYS
    assert run_bpf(prog, X86_64, X32_BIT | 300) == PROFILE
    assert run_bpf(prog, X86_64, 5000) == PROFILE  # a plain x86_64 call


def test_x86_64_and_x32_each_against_their_own_largest() -> None:
    prog = with_profile(enosys.build_stub({X86_64: {X86_64: 334, X32: X32_BIT | 547}}))
    assert run_bpf(prog, X86_64, 335) == RET_ENOSYS
    assert run_bpf(prog, X86_64, 334) == PROFILE
    assert run_bpf(prog, X86_64, X32_BIT | 400) == PROFILE  # above 334 but x32's own largest is 547
    assert run_bpf(prog, X86_64, X32_BIT | 548) == RET_ENOSYS


def test_s390x_multiplexer_zero_is_enosys() -> None:
    prog = with_profile(enosys.build_stub({S390X: {S390X: 400}}))
    assert run_bpf(prog, S390X, 0) == RET_ENOSYS
    assert run_bpf(prog, S390X, 1) == PROFILE
    assert run_bpf(prog, S390X, 401) == RET_ENOSYS


def test_several_architectures_each_get_their_own_section() -> None:
    last = {X86_64: {X86_64: 334}, I386: {I386: 386}, AARCH64: {AARCH64: 293}}
    prog = with_profile(enosys.build_stub(last))
    for arch, largest in ((X86_64, 334), (I386, 386), (AARCH64, 293)):
        assert run_bpf(prog, arch, largest) == PROFILE
        assert run_bpf(prog, arch, largest + 1) == RET_ENOSYS


def test_overlapping_architectures_other_than_x86_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        enosys.build_stub({I386: {I386: 1, AARCH64: 2}})


# --------------------------------------------------------------------------------------------------
# compile(): the stub in front of libseccomp's real program


def _profile(**extra: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["read", "write", "getpid", "rseq"], "action": "SCMP_ACT_ALLOW"}],
    }
    profile.update(extra)
    return profile


@needs_lib
def test_compiled_program_is_stub_then_libseccomp() -> None:
    if seccomp.native_arch() != X86_64:
        pytest.skip("the numbers below are x86_64's")
    with seccomp.compile(_profile()) as flt:
        assert flt.enosys_stub
        prog = flt.program()
        assert prog == flt.enosys_stub + flt.export_bpf()
    rseq = seccomp.syscall_number("rseq")
    mkdir = seccomp.syscall_number("mkdir")
    assert rseq is not None and mkdir is not None and mkdir < rseq
    assert run_bpf(prog, X86_64, seccomp.syscall_number("getpid") or 0) == RET_ALLOW
    assert run_bpf(prog, X86_64, mkdir) == RET_EPERM  # older and not listed: the default action
    assert run_bpf(prog, X86_64, rseq + 1) == RET_ENOSYS  # newer than everything listed
    i386_rseq = seccomp.syscall_number("rseq", I386)
    assert i386_rseq is not None
    assert run_bpf(prog, I386, i386_rseq) == RET_ALLOW
    assert run_bpf(prog, I386, i386_rseq + 1) == RET_ENOSYS


@needs_lib
@pytest.mark.parametrize(
    "extra",
    [
        {"architectures": None},  # runc looks only at listed architectures
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]},
        {"defaultAction": "SCMP_ACT_LOG"},
        {"defaultAction": "SCMP_ACT_TRACE"},
    ],
)
def test_no_stub_without_architectures_or_with_a_permissive_default(extra: dict[str, Any]) -> None:
    profile = {k: v for k, v in _profile(**extra).items() if v is not None}
    with seccomp.compile(profile) as flt:
        assert flt.enosys_stub == b""
        assert flt.program() == flt.export_bpf()


@needs_lib
def test_kill_default_gets_the_stub_too() -> None:
    if seccomp.native_arch() != X86_64:
        pytest.skip("the numbers below are x86_64's")
    with seccomp.compile(_profile(defaultAction="SCMP_ACT_KILL_PROCESS")) as flt:
        prog = flt.program()
    rseq = seccomp.syscall_number("rseq") or 0
    assert run_bpf(prog, X86_64, rseq + 1) == RET_ENOSYS
    assert run_bpf(prog, X86_64, seccomp.syscall_number("mkdir") or 0) == 0x80000000  # SECCOMP_RET_KILL_PROCESS


@needs_lib
def test_rules_of_every_action_and_unknown_names_count_as_runc_counts_them() -> None:
    if seccomp.native_arch() != X86_64:
        pytest.skip("the numbers below are x86_64's")
    profile = _profile(
        architectures=["SCMP_ARCH_X86_64"],
        syscalls=[
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            # the same action as the default: no rule in the filter, but it still raises the largest number
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["no_such_syscall", "socketcall"], "action": "SCMP_ACT_ALLOW"},  # unknown here
        ],
    )
    with seccomp.compile(profile) as flt:
        prog = flt.program()
    clone3 = seccomp.syscall_number("clone3") or 0
    assert run_bpf(prog, X86_64, clone3) == RET_EPERM
    assert run_bpf(prog, X86_64, clone3 + 1) == RET_ENOSYS
