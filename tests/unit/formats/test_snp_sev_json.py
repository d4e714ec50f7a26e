"""The sev crate's serde JSON of an SNP report (inclavare.formats.snp_sev_json): the real Milan report as sev
serialises it (written here from the byte layout, not with the codec), synthetic Turin and version 5 reports, and
every way a JSON form can fail to be exactly what sev writes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from inclavare.formats.snp_sev_json import SEV_REPORT_KEYS, SevJsonError, report_from_sev_json, report_to_sev_json
from tests.unit.sgx_helpers import vectors_root


def vector() -> bytes:
    path = vectors_root() / "attestation" / "snp" / "gosevguest_attestation.bin"
    if not path.is_file():
        pytest.skip(f"attestation vector {path} not found (set INCLAVARE_VECTORS)")
    return path.read_bytes()


def sev_json(raw: bytes, *, sev62: bool = False) -> dict[str, Any]:
    """What sev's serde writes for ``raw`` (Milan/Genoa byte layout, report version 2-4), field by field from the
    SNP ABI offsets; ``sev62``: sev 6.2, which has no mitigation vector fields. Through json text, as on the wire."""

    def u(off: int, n: int) -> int:
        return int.from_bytes(raw[off:off + n], "little")

    def b(off: int, n: int) -> list[int]:
        return list(raw[off:off + n])

    def tcb(off: int) -> dict[str, Any]:
        t = raw[off:off + 8]
        return {"fmc": None, "bootloader": t[0], "tee": t[1], "snp": t[6], "microcode": t[7]}

    def ver(off: int) -> dict[str, int]:
        return {"major": raw[off + 2], "minor": raw[off + 1], "build": raw[off]}

    v3 = u(0, 4) >= 3
    out: dict[str, Any] = {
        "version": u(0, 4), "guest_svn": u(4, 4), "policy": u(8, 8), "family_id": b(0x10, 16),
        "image_id": b(0x20, 16), "vmpl": u(0x30, 4), "sig_algo": u(0x34, 4), "current_tcb": tcb(0x38),
        "plat_info": u(0x40, 8), "key_info": u(0x48, 4), "report_data": b(0x50, 64), "measurement": b(0x90, 48),
        "host_data": b(0xC0, 32), "id_key_digest": b(0xE0, 48), "author_key_digest": b(0x110, 48),
        "report_id": b(0x140, 32), "report_id_ma": b(0x160, 32), "reported_tcb": tcb(0x180),
        "cpuid_fam_id": raw[0x188] if v3 else None, "cpuid_mod_id": raw[0x189] if v3 else None,
        "cpuid_step": raw[0x18A] if v3 else None, "chip_id": b(0x1A0, 64), "committed_tcb": tcb(0x1E0),
        "current": ver(0x1E8), "committed": ver(0x1EC), "launch_tcb": tcb(0x1F0),
        "launch_mit_vector": None, "current_mit_vector": None,
        "signature": {"r": b(0x2A0, 72), "s": b(0x2E8, 72)},
    }
    if sev62:
        del out["launch_mit_vector"], out["current_mit_vector"]
    return json.loads(json.dumps(out))


def synthetic(version: int, *, turin: bool, mit: tuple[int, int] = (0, 0)) -> bytes:
    """An unsigned report with distinct values everywhere sev carries them and zero in the reserved bytes."""
    raw = bytearray(0x4A0)
    raw[0:4] = version.to_bytes(4, "little")
    raw[4:8] = (7).to_bytes(4, "little")
    raw[8:16] = (0x30000).to_bytes(8, "little")
    raw[0x10:0x30] = bytes(range(1, 33))
    raw[0x34:0x38] = (1).to_bytes(4, "little")
    tcb = bytes([9, 4, 3, 2, 0, 0, 0, 0xDB]) if turin else bytes([3, 0, 0, 0, 0, 0, 0x16, 0xD5])
    for off in (0x38, 0x180, 0x1E0, 0x1F0):
        raw[off:off + 8] = tcb
    raw[0x40:0x48] = (3).to_bytes(8, "little")
    raw[0x50:0x140] = bytes((i * 7 + 3) % 256 for i in range(0xF0))
    raw[0x140:0x180] = bytes(range(0x40, 0x80))
    if version >= 3:
        raw[0x188:0x18B] = bytes([0x1A, 0x02, 0x01]) if turin else bytes([0x19, 0x11, 0x01])
    raw[0x1A0:0x1E0] = bytes(range(0xA0, 0xA8)) + bytes(56) if turin else bytes(range(0xA0, 0xE0))
    raw[0x1E8:0x1EB] = bytes([0x20, 0x37, 0x01])
    raw[0x1EC:0x1EF] = bytes([0x1F, 0x37, 0x01])
    if version >= 5:
        raw[0x1F8:0x200] = mit[0].to_bytes(8, "little")
        raw[0x200:0x208] = mit[1].to_bytes(8, "little")
    raw[0x2A0:0x2A0 + 48] = bytes(range(100, 148))
    raw[0x2E8:0x2E8 + 48] = bytes(range(150, 198))
    return bytes(raw)


def test_real_report_as_sev_writes_it() -> None:
    raw = vector()
    j = sev_json(raw)
    assert list(j) == list(SEV_REPORT_KEYS)
    assert report_to_sev_json(raw) == j
    assert report_from_sev_json(j) == raw
    assert j["current_tcb"] == {"fmc": None, "bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert j["current"] == {"major": 1, "minor": 49, "build": 3} and j["policy"] == 0xB0000
    # sev 6.2 (Trustee v0.14) has no mitigation vector fields: absent reads as null, as serde reads an Option
    assert report_from_sev_json(sev_json(raw, sev62=True)) == raw


@pytest.mark.parametrize("version,turin", [(3, False), (3, True), (2, True), (5, True), (5, False)])
def test_synthetic_reports_round_trip(version: int, turin: bool) -> None:
    raw = synthetic(version, turin=turin, mit=(0x11, 0x2233))
    j = report_to_sev_json(raw)
    assert report_from_sev_json(json.loads(json.dumps(j))) == raw
    assert (j["current_tcb"]["fmc"] is not None) == turin
    if turin:
        assert j["current_tcb"] == {"fmc": 9, "bootloader": 4, "tee": 3, "snp": 2, "microcode": 0xDB}
    assert (j["cpuid_fam_id"] is None) == (version < 3)
    assert (j["launch_mit_vector"], j["current_mit_vector"]) == ((0x11, 0x2233) if version >= 5 else (None, None))


def refused(j: dict[str, Any], match: str) -> None:
    with pytest.raises(SevJsonError, match=match) as info:
        report_from_sev_json(j)
    assert "\n" not in str(info.value) and str(info.value).startswith("sev AttestationReport JSON: ")


def edit(j: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(j)
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return out


def test_not_what_sev_writes_is_refused() -> None:
    milan = report_to_sev_json(synthetic(3, turin=False))
    turin = report_to_sev_json(synthetic(3, turin=True))
    v2 = report_to_sev_json(synthetic(2, turin=False))
    refused(edit(milan, "current_tcb.fmc", 0), r"does not round-trip: current_tcb\.fmc: 0 ")
    refused(edit(turin, "launch_tcb.fmc", None), r"launch_tcb\.fmc: null ")
    refused(edit(v2, "cpuid_fam_id", 0x19), r"cpuid_fam_id: 25 ")
    refused(edit(milan, "launch_mit_vector", 0), r"launch_mit_vector: 0 ")  # only version 5 has them
    refused(edit(milan, "cpuid_step", None), r"cpuid_step: null ")  # version 3 has them
    refused(edit(v2, "chip_id", [0] * 64), "masked chip_id")
    refused(edit(milan, "key_info", 5 << 2), "signing_key 5 is a reserved encoding")
    refused(edit(milan, "version", 1), r"version: 1 is not an SNP report version")


def test_malformed_json_is_refused() -> None:
    j = report_to_sev_json(synthetic(3, turin=False))
    refused({**j, "extra": 1}, "unknown field 'extra'")
    refused(edit(j, "current_tcb.extra", 1), r"current_tcb: unknown field 'extra'")
    refused(edit(j, "signature.t", []), "signature: unknown field 't'")
    refused(edit(j, "measurement", KeyError), "missing field 'measurement'")
    refused(edit(j, "current.build", KeyError), r"current: missing field 'build'")
    refused(edit(j, "measurement", [0] * 47), "measurement: 47 byte values, the field holds exactly 48")
    refused(edit(j, "signature.r", [0] * 73), r"signature\.r: 73 byte values")
    refused(edit(j, "report_data", "00" * 64), "report_data: expected an array of 64 byte values, got str")
    refused(edit(j, "host_data", [256] + [0] * 31), r"host_data\[0\]: 256 is outside 0..2\*\*8-1")
    refused(edit(j, "chip_id", [True] + [1] * 63), r"chip_id\[0\]: expected an integer, got bool")
    refused(edit(j, "guest_svn", 1 << 32), r"guest_svn: 4294967296 is outside")
    refused(edit(j, "policy", -1), "policy: -1 is outside")
    refused(edit(j, "vmpl", 1.0), "vmpl: expected an integer, got float")
    refused(edit(j, "current_tcb.snp", 300), r"current_tcb\.snp: 300 is outside")
    refused(edit(j, "committed", [1, 2, 3]), "committed: expected an object, got list")
    refused([j], "expected an object, got list")  # type: ignore[arg-type]
