"""The cgroup v2 device filter: runc's devicefilter program (BPF_PROG_TYPE_CGROUP_DEVICE) assembled from
the emulated rule state, and bpf(2) through ctypes to load it and make it a cgroup's only filter.

Imported only when device rules are set on cgroup v2: ctypes and struct stay off the v1 and hybrid paths.
"""

from __future__ import annotations

import errno

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms
from inclavare.linux.cgroups.devices import RWM, DeviceEmulator, Rule, rule_string

TYPE_CHECKING = False  # spares importing typing at run time; type checkers see True
if TYPE_CHECKING:
    from typing import Any

# eBPF instruction encoding (linux/bpf_common.h, linux/bpf.h)
_BPF_LDX_MEM_W = 0x61
_BPF_ALU32_AND_K = 0x54
_BPF_ALU32_RSH_K = 0x74
_BPF_ALU32_MOV_X = 0xBC
_BPF_ALU32_MOV_K = 0xB4
_BPF_JNE_K = 0x55
_BPF_JNE_X = 0x5D
_BPF_EXIT = 0x95
_BPF_DEVCG_DEV_BLOCK = 1
_BPF_DEVCG_DEV_CHAR = 2


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> tuple[int, int, int, int, int]:
    return (code, dst, src, off, imm)


def device_filter_program(rules: list[Rule]) -> bytes:
    """Assemble the BPF_PROG_TYPE_CGROUP_DEVICE program for ``rules`` (runc's devicefilter).

    The rules are first normalised through :class:`DeviceEmulator`, so v2 enforces exactly what
    v1 would.  Returns the raw instructions (8 bytes each, little endian).
    """
    import struct

    emu = DeviceEmulator.from_rules(rules)
    default_allow = emu.default_allow
    # Prologue: R2 = device type, R3 = access, R4 = major, R5 = minor (struct bpf_cgroup_dev_ctx).
    insns = [
        _insn(_BPF_LDX_MEM_W, 2, 1, 0),
        _insn(_BPF_ALU32_AND_K, 2, imm=0xFFFF),
        _insn(_BPF_LDX_MEM_W, 3, 1, 0),
        _insn(_BPF_ALU32_RSH_K, 3, imm=16),
        _insn(_BPF_LDX_MEM_W, 4, 1, 4),
        _insn(_BPF_LDX_MEM_W, 5, 1, 8),
    ]
    for idx, (typ, major, minor, bits, allow) in enumerate(emu.clean_rules()):
        if typ == "a":
            if idx != 0 or allow != default_allow:
                raise ValueError("internal error: misplaced wildcard rule in device filter")
            continue
        if allow == default_allow:
            raise ValueError("internal error: no-op rule in device filter")
        if major > 0xFFFFFFFF or minor > 0xFFFFFFFF:
            raise ValueError(f"device number out of range in {rule_string(typ, major, minor, bits)}")
        block: list[tuple[int, int, int, int | None, int]] = []  # off None = "to next block"
        block.append((_BPF_JNE_K, 2, 0, None, _BPF_DEVCG_DEV_CHAR if typ == "c" else _BPF_DEVCG_DEV_BLOCK))
        if bits != RWM:
            access = (2 if bits & 1 else 0) | (4 if bits & 2 else 0) | (1 if bits & 4 else 0)
            block.append((_BPF_ALU32_MOV_X, 1, 3, 0, 0))
            block.append((_BPF_ALU32_AND_K, 1, 0, 0, access))
            block.append((_BPF_JNE_X, 1, 3, None, 0))
        if major >= 0:
            block.append((_BPF_JNE_K, 4, 0, None, _s32(major)))
        if minor >= 0:
            block.append((_BPF_JNE_K, 5, 0, None, _s32(minor)))
        block.append((_BPF_ALU32_MOV_K, 0, 0, 0, 1 if allow else 0))
        block.append((_BPF_EXIT, 0, 0, 0, 0))
        n = len(block)
        for i, (code, dst, src, off, imm) in enumerate(block):
            insns.append(_insn(code, dst, src, (n - i - 1) if off is None else off, imm))
    insns.append(_insn(_BPF_ALU32_MOV_K, 0, imm=1 if default_allow else 0))
    insns.append(_insn(_BPF_EXIT))
    return b"".join(struct.pack("<BBhi", c, (s << 4) | d, o, i) for c, d, s, o, i in insns)


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= (1 << 31) else v


# --------------------------------------------------------------------------------------------
# bpf(2) through ctypes


_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_PROG_QUERY = 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2
_BPF_F_REPLACE = 4
_NR_BPF = {
    "x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280, "ppc64le": 361,
    "ppc64": 361, "s390x": 351, "armv7l": 386, "armv8l": 386, "i686": 357, "i386": 357,
}  # fmt: skip
_libc_handle: Any = None


def _bpf(cmd: int, attr: bytearray) -> int:
    import ctypes

    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(None, use_errno=True)
        _libc_handle.syscall.restype = ctypes.c_long
    nr = _NR_BPF.get(fos.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown on {fos.uname().machine}")
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    res = _libc_handle.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.byref(buf), ctypes.c_ulong(len(attr)))
    if res < 0:
        e = ctypes.get_errno()
        raise OSError(e, fos.strerror(e))
    return int(res)


def _bpf_load_device_prog(program: bytes) -> int:
    import ctypes
    import struct

    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"Apache\0")
    for log_size in (0, 1 << 16):
        logbuf = ctypes.create_string_buffer(log_size) if log_size else None
        attr = bytearray(72)
        struct.pack_into(
            "<IIQQIIQ",
            attr,
            0,
            _BPF_PROG_TYPE_CGROUP_DEVICE,
            len(program) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(license_),
            1 if log_size else 0,
            log_size,
            ctypes.addressof(logbuf) if logbuf is not None else 0,
        )
        try:
            return _bpf(_BPF_PROG_LOAD, attr)
        except OSError as e:
            if log_size:
                text = logbuf.value.decode(errors="replace").strip() if logbuf is not None else ""
                raise OSError(e.errno, f"{e.strerror}{': ' + text.splitlines()[-1] if text else ''}") from None
            if e.errno not in (errno.EACCES, errno.EINVAL):
                raise
    raise AssertionError("unreachable")


def _bpf_query_device_progs(dirfd: int) -> list[int]:
    import ctypes
    import struct

    size = 64
    for _ in range(10):
        ids = (ctypes.c_uint32 * size)()
        attr = bytearray(40)
        struct.pack_into("<IIIIQI", attr, 0, dirfd, _BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), size)
        try:
            _bpf(_BPF_PROG_QUERY, attr)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                size = struct.unpack_from("<I", attr, 24)[0] or size * 2
                continue
            raise
        count = struct.unpack_from("<I", attr, 24)[0]
        return [ids[i] for i in range(count)]
    raise OSError(errno.EAGAIN, "could not list the attached device programs")


def _bpf_prog_fd_by_id(prog_id: int) -> int | None:
    import struct

    attr = bytearray(12)
    struct.pack_into("<I", attr, 0, prog_id)
    try:
        return _bpf(_BPF_PROG_GET_FD_BY_ID, attr)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES, errno.ENOENT):
            return None  # hidden by an LSM or gone meanwhile; extra filters only restrict further
        raise


def _bpf_attach(dirfd: int, prog_fd: int, flags: int, replace_fd: int = 0) -> None:
    import struct

    attr = bytearray(20)
    struct.pack_into("<IIIII", attr, 0, dirfd, prog_fd, _BPF_CGROUP_DEVICE, flags, replace_fd)
    _bpf(_BPF_PROG_ATTACH, attr)


def _bpf_detach(dirfd: int, prog_fd: int) -> None:
    import struct

    attr = bytearray(20)
    struct.pack_into("<III", attr, 0, dirfd, prog_fd, _BPF_CGROUP_DEVICE)
    _bpf(_BPF_PROG_DETACH, attr)


def attach_device_filter(dirpath: str, program: bytes) -> None:
    """Load ``program`` and make it the only device filter on cgroup ``dirpath`` (runc's way)."""
    try:  # raise the soft memlock limit to the hard one; kernels >= 5.11 do not need it
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    dirfd = fos.open(dirpath, fos.O_RDONLY | fos.O_DIRECTORY | fos.O_CLOEXEC)
    old_fds: list[int] = []
    prog_fd = -1
    try:
        for prog_id in _bpf_query_device_progs(dirfd):
            fd = _bpf_prog_fd_by_id(prog_id)
            if fd is not None:
                old_fds.append(fd)
        prog_fd = _bpf_load_device_prog(program)
        if len(old_fds) == 1:
            try:
                _bpf_attach(dirfd, prog_fd, _BPF_F_ALLOW_MULTI | _BPF_F_REPLACE, old_fds[0])
                return
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: kernel without BPF_F_REPLACE
                    raise
        _bpf_attach(dirfd, prog_fd, _BPF_F_ALLOW_MULTI)
        for fd in old_fds:
            _bpf_detach(dirfd, fd)
    finally:
        for fd in [*old_fds, prog_fd, dirfd]:
            if fd >= 0:
                fos.close(fd)
