"""The -ENOSYS stub that runs in front of a container's seccomp profile (runc 1.1's semantics).

A profile names the syscalls it knows about.  A syscall added to the kernel after the profile was
written is unknown to it and gets the default action -- typically ``SCMP_ACT_ERRNO`` (EPERM).  glibc
(and Go, and others) probe new syscalls and fall back to an older one only on ENOSYS (``clone3`` ->
``clone``, ``faccessat2`` -> ``faccessat``, ``close_range`` -> a loop); EPERM makes them fail.  runc
1.1 therefore puts a few classic-BPF instructions in front of the filter libseccomp builds:

* per architecture listed in ``linux.seccomp.architectures`` (and only those: a profile without
  ``architectures`` gets no stub), the largest syscall number that any ``syscalls[]`` name resolves to
  on that architecture, counting every rule whatever its action, ignoring names the architecture does
  not know (libseccomp's negative pseudo numbers) and architectures whose largest number is 0;
* a syscall of that architecture whose number is above the largest returns ``-ENOSYS``; everything
  else runs the profile unchanged;
* x86_64 and x32 share one audit architecture; an x32 call is told apart by bit 30 of the number,
  so each of the two is only compared against its own largest number (an x86_64-only stub lets x32
  calls through to the filter and vice versa);
* on s390/s390x syscall 0 is the multiplexer of unknown large syscalls and returns ``-ENOSYS`` too;
* no stub when the default action lets calls run: ``SCMP_ACT_ALLOW``, ``SCMP_ACT_LOG`` and
  ``SCMP_ACT_TRACE`` (a tracer handles new syscalls itself).  KILL, KILL_PROCESS, TRAP and ERRNO
  defaults all get it, so a newer syscall returns ENOSYS instead of killing the process.

How it is done here, and why.  The stub is *prepended* to the program libseccomp exports
(``seccomp_export_bpf``) and the combined program is installed with one ``seccomp(2)`` call
(:func:`inclavare.linux.seccomp.Filter.load`).  The alternatives do not give these semantics:

* a second filter stacked on the profile: the kernel runs every filter and keeps the action of
  highest precedence (KILL > TRAP > ERRNO > NOTIFY > TRACE > LOG > ALLOW; on a tie, the data of the most
  recently installed filter).  An ERRNO(ENOSYS) from a stub loses against a KILL or TRAP default, so
  those profiles would kill where runc returns ENOSYS; and installing the stub after the profile needs
  ``seccomp(2)`` itself to pass the profile (which may deny it), while installing it before makes the
  profile's EPERM the newer one and thus the winner.  (Both facts are checked by
  tests/integration/test_seccomp_root.py.)
* libseccomp rules for the numbers above the maximum: libseccomp has no range rules, so this would be
  one rule per number up to an arbitrary bound, which neither covers every number nor the x32 and
  s390 cases.

The program is built from labelled instructions and every jump is resolved once, so there are no
hand-counted offsets; the stub stays far below the 255-instruction reach of a conditional jump (at
most a handful of instructions per architecture).  Pure Python, no I/O: the caller supplies the
syscall-number lookup (libseccomp's ``seccomp_syscall_resolve_name_arch``).
"""

from __future__ import annotations

import errno as _errno
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["AUDIT_ARCH_X86_64", "SCMP_ARCH_X32", "audit_arch", "build_stub", "last_syscalls", "needs_stub"]

# libseccomp architecture tokens are the kernel's AUDIT_ARCH_* values, except x32's made-up one.
AUDIT_ARCH_X86_64 = 0xC000003E
SCMP_ARCH_X32 = 0x4000003E
_SCMP_ARCH_S390 = 0x16
_SCMP_ARCH_S390X = 0x80000016
_X32_SYSCALL_BIT = 0x40000000

_RET_ERRNO_ENOSYS = 0x00050000 | _errno.ENOSYS  # SECCOMP_RET_ERRNO | ENOSYS

# classic BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20
_JMP_JA = 0x05
_JMP_JEQ_K = 0x15
_JMP_JGT_K = 0x25
_JMP_JSET_K = 0x45
_RET_K = 0x06
# offsets in struct seccomp_data
_OFF_NR = 0
_OFF_ARCH = 4

_INSN = struct.Struct("=HBBI")  # struct sock_filter, native byte order
_MAX_COND_JUMP = 255

#: default actions (OCI names) that let an unlisted call run, so the stub would change nothing useful
_PERMISSIVE_DEFAULTS = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"})


def needs_stub(default_action: str) -> bool:
    """Whether a profile with this ``defaultAction`` gets the -ENOSYS stub (runc: not for allow-like)."""
    return default_action not in _PERMISSIVE_DEFAULTS


def audit_arch(token: int) -> int:
    """The AUDIT_ARCH_* value the kernel puts in ``seccomp_data.arch`` for a libseccomp arch token."""
    return AUDIT_ARCH_X86_64 if token == SCMP_ARCH_X32 else token


def last_syscalls(
    arch_tokens: Iterable[int], names: Iterable[str], resolve: Callable[[int, str], int]
) -> dict[int, dict[int, int]]:
    """``{audit arch: {libseccomp arch token: largest syscall number}}`` over the profile's names.

    ``resolve(token, name)`` returns the number of ``name`` on that architecture, negative when the
    architecture does not have it.  Architectures whose largest number is 0 are left out.
    """
    wanted = list(dict.fromkeys(names))
    out: dict[int, dict[int, int]] = {}
    for token in dict.fromkeys(arch_tokens):
        largest = max((resolve(token, name) for name in wanted), default=0)
        if largest > 0:
            out.setdefault(audit_arch(token), {})[token] = largest
    return out


class _Asm:
    """A few classic-BPF instructions with symbolic jump targets."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | None, str | None, int | str]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def ld(self, offset: int) -> None:
        self.code.append((_LD_W_ABS, None, None, offset))

    def jump(self, target: str) -> None:
        self.code.append((_JMP_JA, None, None, target))

    def cond(self, op: int, k: int, jt: str | None, jf: str | None = None) -> None:
        """Conditional jump; ``None`` as a target means the next instruction."""
        self.code.append((op, jt, jf, k))

    def ret(self, value: int) -> None:
        self.code.append((_RET_K, None, None, value))

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (op, jt, jf, k) in enumerate(self.code):
            if op == _JMP_JA:
                assert isinstance(k, str)
                k = self._offset(pc, k)
            assert isinstance(k, int)
            jt_off = 0 if jt is None else self._offset(pc, jt)
            jf_off = 0 if jf is None else self._offset(pc, jf)
            if max(jt_off, jf_off) > _MAX_COND_JUMP:  # cannot happen: the stub is short
                raise ValueError(f"seccomp -ENOSYS stub: jump of {max(jt_off, jf_off)} at {pc}")
            out += _INSN.pack(op, jt_off, jf_off, k)
        return bytes(out)

    def _offset(self, pc: int, label: str) -> int:
        offset = self.labels[label] - (pc + 1)
        if offset < 0:
            raise ValueError(f"seccomp -ENOSYS stub: backward jump to {label} at {pc}")
        return offset


def build_stub(last: Mapping[int, Mapping[int, int]]) -> bytes:
    """The stub for ``last`` (see :func:`last_syscalls`) as ``struct sock_filter`` bytes.

    Its last jump lands right after it, on the first instruction of the program it is prepended to.
    Empty when there is nothing to compare.
    """
    if not last:
        return b""
    asm = _Asm()
    arches = sorted(last)
    asm.ld(_OFF_ARCH)
    for arch in arches:
        asm.cond(_JMP_JEQ_K, arch, f"arch{arch:x}")
    asm.jump("filter")  # an architecture the stub does not know: the profile decides
    for arch in arches:
        per_token = last[arch]
        asm.label(f"arch{arch:x}")
        asm.ld(_OFF_NR)
        if arch == AUDIT_ARCH_X86_64 and len(per_token) == 2:
            # both x86_64 and x32: bit 30 says which of the two largest numbers applies
            asm.cond(_JMP_JSET_K, _X32_SYSCALL_BIT, "x32")
            asm.cond(_JMP_JGT_K, per_token[AUDIT_ARCH_X86_64], "enosys", "filter")
            asm.label("x32")
            asm.cond(_JMP_JGT_K, per_token[SCMP_ARCH_X32], "enosys", "filter")
            continue
        if len(per_token) != 1:
            raise ValueError(f"seccomp -ENOSYS stub: architectures {sorted(per_token)} overlap")
        ((token, largest),) = per_token.items()
        if token in (_SCMP_ARCH_S390, _SCMP_ARCH_S390X):
            asm.cond(_JMP_JEQ_K, 0, "enosys")  # the multiplexer unknown large syscalls end up in
        if token == AUDIT_ARCH_X86_64:
            asm.cond(_JMP_JSET_K, _X32_SYSCALL_BIT, "filter")  # an x32 call: not ours to judge
        elif token == SCMP_ARCH_X32:
            asm.cond(_JMP_JSET_K, _X32_SYSCALL_BIT, None, "filter")  # an x86_64 call: likewise
        asm.cond(_JMP_JGT_K, largest, "enosys", "filter")
    asm.label("enosys")
    asm.ret(_RET_ERRNO_ENOSYS)
    asm.label("filter")
    return asm.assemble()
