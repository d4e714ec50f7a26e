"""EPC size from sysfs and from CPUID leaf 0x12 (the register layout of the SDM, checked with a published dump),
device node discovery and the NFD feature file."""

from __future__ import annotations

import os

import pytest

from inclavare.services.sgxdeviceplugin import platform
from inclavare.services.sgxdeviceplugin.errors import DevicePluginError

MIB = 1 << 20
# CPUID 0x12 sub-leaves 2.. of a client machine with two EPC sections (26 MiB and 2 MiB), as published in the
# SGX-hardware project's test-sgx output: (EAX, EBX, ECX, EDX).
DUMP = {2: (0xC0200001, 0x1, 0x1A00001, 0x0), 3: (0xC1E00001, 0x1, 0x200001, 0x0)}


def dump_cpuid(leaf: int, sub: int) -> tuple[int, int, int, int]:
    assert leaf == 0x12
    return DUMP.get(sub, (0, 0, 0, 0))


def test_epc_sections_from_cpuid():
    sections = platform.epc_sections(dump_cpuid)
    assert sections == [platform.EpcSection(0x1_C020_0000, 26 * MIB), platform.EpcSection(0x1_C1E0_0000, 2 * MIB)]
    assert platform.epc_bytes("/nonexistent", dump_cpuid) == 28 * MIB


def test_high_size_bits_and_the_section_bound():
    # EDX[19:0] are bits 51:32 of the size; a sub-leaf type other than 0 keeps the scan going, up to 8 sections
    def big(leaf: int, sub: int) -> tuple[int, int, int, int]:
        return (0x1, 0, 0x1000_0001, 0x2)
    assert platform.epc_bytes("/nonexistent", big) == 8 * ((2 << 32) + 0x1000_0000)
    assert platform.epc_bytes("/nonexistent", lambda leaf, sub: (0, 0, 0, 0)) == 0


def test_cpuid_reader_preads_leaf_and_subleaf_offsets(tmp_path):
    # the cpuid driver's contract: pread(16, offset = subleaf << 32 | leaf); a sparse file stands in for it
    dev = tmp_path / "cpuid"
    fd = os.open(dev, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for sub, regs in DUMP.items():
            os.pwrite(fd, b"".join(r.to_bytes(4, "little") for r in regs), (sub << 32) | 0x12)
        os.ftruncate(fd, (8 << 32) + 0x100)
    finally:
        os.close(fd)
    read = platform.cpuid_reader(str(dev))
    assert read(0x12, 2) == DUMP[2]
    assert platform.epc_bytes("/nonexistent", read) == 28 * MIB
    (tmp_path / "short").touch()
    with pytest.raises(DevicePluginError, match="short returned 0 bytes for leaf 0x12.2$"):
        platform.cpuid_reader(str(tmp_path / "short"))(0x12, 2)
    with pytest.raises(DevicePluginError, match="cannot open"):
        platform.cpuid_reader(str(tmp_path / "absent"))(0x12, 2)


def _node(root, n: int, text: str) -> None:
    d = root / f"node{n}" / "x86"
    d.mkdir(parents=True)
    (d / "sgx_total_bytes").write_text(text)


def test_sysfs_sums_numa_nodes_and_wins_over_cpuid(tmp_path):
    _node(tmp_path, 0, "67108864\n")
    _node(tmp_path, 1, "33554432\n")
    (tmp_path / "node2").mkdir()  # a node without EPC
    assert platform.sysfs_epc_bytes(str(tmp_path)) == 96 * MIB
    assert platform.epc_bytes(str(tmp_path), dump_cpuid) == 96 * MIB


def test_sysfs_absent_or_garbage(tmp_path):
    assert platform.sysfs_epc_bytes(str(tmp_path)) is None
    _node(tmp_path, 0, "lots")
    with pytest.raises(DevicePluginError, match=r"node0/x86/sgx_total_bytes: b'lots' is not a byte count"):
        platform.epc_bytes(str(tmp_path), dump_cpuid)


def test_device_nodes_keep_dev_names_inside_the_container(tmp_path):
    (tmp_path / "sgx").mkdir()
    (tmp_path / "sgx" / "enclave").touch()
    (tmp_path / "isgx").touch()
    got = platform.device_nodes(str(tmp_path), platform.ENCLAVE_NODES)
    assert got == [platform.DeviceNode(str(tmp_path / "sgx/enclave"), "/dev/sgx/enclave"),
                   platform.DeviceNode(str(tmp_path / "isgx"), "/dev/isgx")]
    assert platform.device_nodes(str(tmp_path), platform.PROVISION_NODES) == []


def test_nfd_feature_file(tmp_path):
    path = tmp_path / "sgx-epc"
    platform.write_nfd_feature_file(str(path), 94 * MIB)
    assert path.read_text() == f"sgx.intel.com/epc={94 * MIB}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(DevicePluginError, match=r"^--epc-nfd-file .*/nodir/f: No such file or directory$"):
        platform.write_nfd_feature_file(str(tmp_path / "nodir" / "f"), 1)
