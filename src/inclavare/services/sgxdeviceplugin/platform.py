"""What the node offers: its SGX device nodes, its EPC size, and the aesmd socket directory.

EPC size, in bytes, is read the way the kernel and upstream plugins do, first source that answers wins:

1. sysfs: ``/sys/devices/system/node/node*/x86/sgx_total_bytes`` (the in-kernel driver's per-NUMA-node EPC,
   Linux 5.17 and later), summed over nodes;
2. CPUID leaf 0x12, sub-leaves 2.. (one per EPC section; a sub-leaf whose EAX[3:0] is 0 ends the list; the
   section size is ECX[31:12] | EDX[19:0] << 32), read through the kernel's ``/dev/cpu/0/cpuid`` (the
   ``cpuid`` driver: a 16-byte pread at offset ``subleaf << 32 | leaf`` returns EAX, EBX, ECX, EDX). This is
   what AliyunContainerService/sgx-device-plugin and Intel's NFD hook read.

Device nodes: the in-kernel driver's ``/dev/sgx_enclave`` and ``/dev/sgx_provision``, the ``/dev/sgx/*``
compatibility links, and the out-of-tree driver's ``/dev/isgx``. A node is "an SGX host" when one of the enclave
nodes exists; otherwise the plugin runs in sim mode.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from inclavare.services.sgxdeviceplugin.errors import DevicePluginError

# Names under the device directory (default /dev): enclave nodes, in the kernel's order of preference.
ENCLAVE_NODES = ("sgx_enclave", "sgx/enclave", "isgx")
PROVISION_NODES = ("sgx_provision", "sgx/provision")
AESMD_DIR = "/var/run/aesmd"
SYSFS_NODES = "/sys/devices/system/node"
CPUID_DEVICE = "/dev/cpu/0/cpuid"
CPUID_SGX_LEAF = 0x12
CPUID_FIRST_EPC_SUBLEAF = 2
MAX_EPC_SECTIONS = 8  # upstream's bound on the sub-leaves scanned
MIB = 1 << 20

Cpuid = Callable[[int, int], tuple[int, int, int, int]]


@dataclass(frozen=True)
class EpcSection:
    """One EPC section as CPUID reports it (physical base and size, bytes)."""

    base: int
    size: int


def epc_sections(cpuid: Cpuid) -> list[EpcSection]:
    """The EPC sections CPUID leaf 0x12 lists (sub-leaves 2 onwards, up to the first invalid one)."""
    out: list[EpcSection] = []
    for i in range(MAX_EPC_SECTIONS):
        eax, ebx, ecx, edx = cpuid(CPUID_SGX_LEAF, CPUID_FIRST_EPC_SUBLEAF + i)
        if eax & 0xF == 0:
            break
        base = (eax & 0xFFFFF000) | ((ebx & 0xFFFFF) << 32)
        size = (ecx & 0xFFFFF000) | ((edx & 0xFFFFF) << 32)
        out.append(EpcSection(base, size))
    return out


def cpuid_reader(path: str = CPUID_DEVICE) -> Cpuid:
    """A CPUID function over the kernel's cpuid device (see the module docstring); DevicePluginError if the device
    cannot be opened or a read comes back short."""
    def read(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise DevicePluginError(f"cpuid: cannot open {path}: {e.strerror or e}") from None
        try:
            data = os.pread(fd, 16, (subleaf << 32) | leaf)
        except OSError as e:
            raise DevicePluginError(f"cpuid: reading leaf {leaf:#x}.{subleaf} from {path}: {e.strerror or e}") \
                from None
        finally:
            os.close(fd)
        if len(data) != 16:
            raise DevicePluginError(f"cpuid: {path} returned {len(data)} bytes for leaf {leaf:#x}.{subleaf}")
        eax, ebx, ecx, edx = struct.unpack("<4I", data)
        return eax, ebx, ecx, edx
    return read


def sysfs_epc_bytes(nodes_dir: str = SYSFS_NODES) -> int | None:
    """The sum of every NUMA node's ``x86/sgx_total_bytes``, or None when no node has the file (older kernel or
    no SGX); DevicePluginError for a file that is not a decimal byte count."""
    total = 0
    found = False
    for path in sorted(glob.glob(os.path.join(glob.escape(nodes_dir), "node*", "x86", "sgx_total_bytes"))):
        try:
            with open(path, "rb") as f:
                text = f.read(64).strip()
        except OSError as e:
            raise DevicePluginError(f"EPC size: cannot read {path}: {e.strerror or e}") from None
        if not text.isdigit():
            raise DevicePluginError(f"EPC size: {path}: {text[:20]!r} is not a byte count")
        total += int(text)
        found = True
    return total if found else None


def epc_bytes(nodes_dir: str = SYSFS_NODES, cpuid: Cpuid | None = None) -> int:
    """The node's EPC size in bytes (sysfs first, then CPUID; see the module docstring); 0 when neither source
    reports any EPC. DevicePluginError only for a source that answers with nonsense."""
    size = sysfs_epc_bytes(nodes_dir)
    if size:
        return size
    if cpuid is None:
        if not os.path.exists(CPUID_DEVICE):
            return 0
        cpuid = cpuid_reader()
    return sum(s.size for s in epc_sections(cpuid))


@dataclass(frozen=True)
class DeviceNode:
    """A device node to pass into containers: where it is on the host and where it goes in the container."""

    host_path: str
    container_path: str


def device_nodes(dev_dir: str, names: tuple[str, ...]) -> list[DeviceNode]:
    """The nodes among ``names`` that exist under ``dev_dir`` (host path under ``dev_dir``, container path under
    ``/dev``: the workload sees the usual names whatever directory the plugin was told to scan)."""
    return [DeviceNode(os.path.join(dev_dir, n), "/dev/" + n) for n in names
            if os.path.exists(os.path.join(dev_dir, n))]


def nfd_feature_line(epc: int) -> str:
    """The NFD local-source feature line advertising the EPC size (Intel's ``sgx.intel.com/epc`` label, bytes)."""
    return f"sgx.intel.com/epc={epc}\n"


def write_nfd_feature_file(path: str, epc: int) -> None:
    """Write the EPC feature line to ``path`` atomically (NFD's ``features.d`` directory reads such files; with
    NFD's master configured to turn the label into an extended resource, as Intel's sgx_nfd deployment does,
    the node gets ``sgx.intel.com/epc`` capacity in bytes)."""
    from inclavare import atomicfile

    try:
        atomicfile.write_atomic(path, nfd_feature_line(epc).encode(), mode=0o644)
    except OSError as e:
        raise DevicePluginError(f"--epc-nfd-file {path}: {e.strerror or e}") from None
