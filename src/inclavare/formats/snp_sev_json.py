"""The SEV-SNP attestation report as the ``sev`` crate's serde JSON (what Trustee's SNP attester sends), to and
from the raw 1184-byte report of :mod:`inclavare.formats.snp`. Pure codec: no I/O, no cryptography.

Trustee (KBS protocol 0.4.0: Trustee v0.14 and later; guest-components' SNP attester alike) puts
``{"attestation_report": <sev::firmware::guest::AttestationReport>, "cert_chain": [<CertTableEntry>] | null}`` in
the evidence. The report's serde form is the same in the sev versions those releases use (6.2, 6.3, and the
pinned 7.x revision with the ``serde`` feature), facts taken from virtee/sev
``src/firmware/guest/types/snp.rs``:

- an object whose keys are the struct's fields: ``version guest_svn policy family_id image_id vmpl sig_algo
  current_tcb plat_info key_info report_data measurement host_data id_key_digest author_key_digest report_id
  report_id_ma reported_tcb cpuid_fam_id cpuid_mod_id cpuid_step chip_id committed_tcb current committed
  launch_tcb launch_mit_vector current_mit_vector signature`` (sev 6.2 has no ``*_mit_vector``: absent is null);
- byte fields as JSON arrays of numbers (0..255) of the field's exact length; ``policy``/``plat_info``/``key_info``
  as the plain integer of their bit-field word (guest policy, platform info, flags at 0x48);
- a TCB version as ``{"fmc": int|null, "bootloader", "tee", "snp", "microcode"}``: ``fmc`` is null for the
  Milan/Genoa byte layout and a number for Turin's; the layout is the CPU's: for a version 2 report, Turin when
  the chip_id is Turin-like (only its first 8 bytes set; sev refuses a masked chip_id), for version 3 and later
  Turin when ``cpuid_fam_id`` >= 0x1A;
- ``current``/``committed`` as ``{"major", "minor", "build"}``; ``cpuid_*`` null before version 3, the mitigation
  vectors null before version 5;
- ``signature`` as ``{"r": [72 bytes], "s": [72 bytes]}``, little-endian as in the report.

Reserved bytes have no JSON form (sev writes them as zero), so a report whose reserved bytes are not zero cannot
travel this way: its signature would then fail, as it does for Trustee. :func:`report_from_sev_json` accepts only
JSON that is exactly what sev would serialise for the report it describes: it builds the raw report, encodes it
again with :func:`report_to_sev_json` and refuses any difference (an fmc on a Milan layout, cpuid fields on a
version 2 report, a mitigation vector before version 5...), as well as unknown keys, wrong lengths and values out
of range. Errors are :class:`SevJsonError`, naming the field path.
"""

from __future__ import annotations

import json
from typing import Any

from inclavare.errors import InclavareError
from inclavare.formats.snp import (
    FirmwareVersion,
    GuestPolicy,
    PlatformInfo,
    SnpFormatError,
    SnpReport,
)

__all__ = ["SEV_REPORT_KEYS", "SevJsonError", "report_from_sev_json", "report_to_sev_json"]

_WHAT = "sev AttestationReport JSON"
TURIN_FAMILY = 0x1A
SIG_LEN = 72

# key -> (kind, size): "u<bits>" an integer, "b" a byte array of that length, "tcb", "ver", "opt8"/"opt64"
# (an optional integer), "sig".
_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("version", "u", 32),
    ("guest_svn", "u", 32),
    ("policy", "u", 64),
    ("family_id", "b", 16),
    ("image_id", "b", 16),
    ("vmpl", "u", 32),
    ("sig_algo", "u", 32),
    ("current_tcb", "tcb", 0),
    ("plat_info", "u", 64),
    ("key_info", "u", 32),
    ("report_data", "b", 64),
    ("measurement", "b", 48),
    ("host_data", "b", 32),
    ("id_key_digest", "b", 48),
    ("author_key_digest", "b", 48),
    ("report_id", "b", 32),
    ("report_id_ma", "b", 32),
    ("reported_tcb", "tcb", 0),
    ("cpuid_fam_id", "opt", 8),
    ("cpuid_mod_id", "opt", 8),
    ("cpuid_step", "opt", 8),
    ("chip_id", "b", 64),
    ("committed_tcb", "tcb", 0),
    ("current", "ver", 0),
    ("committed", "ver", 0),
    ("launch_tcb", "tcb", 0),
    ("launch_mit_vector", "opt", 64),
    ("current_mit_vector", "opt", 64),
    ("signature", "sig", 0),
)
SEV_REPORT_KEYS = tuple(name for name, _, _ in _FIELDS)
_TCB_KEYS = ("fmc", "bootloader", "tee", "snp", "microcode")
_VERSION_KEYS = ("major", "minor", "build")


class SevJsonError(InclavareError):
    """The sev crate's JSON of an SNP report is malformed or not what sev would write; names the field path."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{_WHAT}: {path}: {problem}" if path else f"{_WHAT}: {problem}")


# --------------------------------------------------------------------------------------------------
# raw -> JSON


def _turin_layout(version: int, chip_id: bytes, cpuid_fam_id: int | None) -> bool:
    """Whether sev reads/writes this report's TCB versions in Turin's byte layout (see the module doc)."""
    if version == 2:
        if not any(chip_id):
            raise SevJsonError("chip_id", "a version 2 report with a masked chip_id has no sev JSON form "
                               "(sev cannot tell its TCB layout)")
        return not any(chip_id[8:])
    return (cpuid_fam_id or 0) >= TURIN_FAMILY


def _tcb_json(raw: bytes, turin: bool) -> dict[str, Any]:
    if turin:
        return {"fmc": raw[0], "bootloader": raw[1], "tee": raw[2], "snp": raw[3], "microcode": raw[7]}
    return {"fmc": None, "bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}


def _tcb_raw(tcb: dict[str, Any], turin: bool) -> bytes:
    if turin:
        return bytes([tcb["fmc"] or 0, tcb["bootloader"], tcb["tee"], tcb["snp"], 0, 0, 0, tcb["microcode"]])
    return bytes([tcb["bootloader"], tcb["tee"], 0, 0, 0, 0, tcb["snp"], tcb["microcode"]])


def report_to_sev_json(raw: bytes) -> dict[str, Any]:
    """The JSON object sev serialises for the 1184-byte report ``raw`` (keys in sev's field order)."""
    try:
        r = SnpReport.parse(raw)
    except SnpFormatError as e:
        raise SevJsonError("", str(e)) from None
    turin = _turin_layout(r.version, r.chip_id, r.cpuid_fam_id)
    v5 = r.version >= 5

    def ver(v: FirmwareVersion) -> dict[str, int]:
        return {"major": v.major, "minor": v.minor, "build": v.build}

    return {
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": r.policy.value,
        "family_id": list(r.family_id),
        "image_id": list(r.image_id),
        "vmpl": r.vmpl,
        "sig_algo": r.signature_algo,
        "current_tcb": _tcb_json(r.current_tcb, turin),
        "plat_info": r.platform_info.value,
        "key_info": r.flags,
        "report_data": list(r.report_data),
        "measurement": list(r.measurement),
        "host_data": list(r.host_data),
        "id_key_digest": list(r.id_key_digest),
        "author_key_digest": list(r.author_key_digest),
        "report_id": list(r.report_id),
        "report_id_ma": list(r.report_id_ma),
        "reported_tcb": _tcb_json(r.reported_tcb, turin),
        "cpuid_fam_id": r.cpuid_fam_id,
        "cpuid_mod_id": r.cpuid_mod_id,
        "cpuid_step": r.cpuid_step,
        "chip_id": list(r.chip_id),
        "committed_tcb": _tcb_json(r.committed_tcb, turin),
        "current": ver(r.current_version),
        "committed": ver(r.committed_version),
        "launch_tcb": _tcb_json(r.launch_tcb, turin),
        "launch_mit_vector": r.launch_mit_vector if v5 else None,
        "current_mit_vector": r.current_mit_vector if v5 else None,
        "signature": {"r": list(r.signature_r.to_bytes(SIG_LEN, "little")),
                      "s": list(r.signature_s.to_bytes(SIG_LEN, "little"))},
    }


# --------------------------------------------------------------------------------------------------
# JSON -> raw


def _uint(value: Any, path: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SevJsonError(path, f"expected an integer, got {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise SevJsonError(path, f"{value} is outside 0..2**{bits}-1")
    return value


def _bytes(value: Any, path: str, size: int) -> bytes:
    if not isinstance(value, list):
        raise SevJsonError(path, f"expected an array of {size} byte values, got {type(value).__name__}")
    if len(value) != size:
        raise SevJsonError(path, f"{len(value)} byte values, the field holds exactly {size}")
    return bytes(_uint(b, f"{path}[{i}]", 8) for i, b in enumerate(value))


def _object(value: Any, path: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SevJsonError(path, f"expected an object, got {type(value).__name__}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise SevJsonError(path, f"unknown field {str(unknown[0])[:40]!r}")
    missing = [k for k in keys if k not in value and k not in optional]
    if missing:
        raise SevJsonError(path, f"missing field {missing[0]!r}")
    return {k: value.get(k) for k in keys}  # an absent Option is null, as serde reads it


def _normalise(obj: Any) -> dict[str, Any]:
    """``obj`` checked field by field (types, ranges, lengths) and with absent optional fields as null."""
    optional = ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step", "launch_mit_vector", "current_mit_vector")
    top = _object(obj, "", SEV_REPORT_KEYS, optional)
    out: dict[str, Any] = {}
    for name, kind, size in _FIELDS:
        v = top[name]
        if kind == "u":
            out[name] = _uint(v, name, size)
        elif kind == "b":
            out[name] = list(_bytes(v, name, size))
        elif kind == "opt":
            out[name] = None if v is None else _uint(v, name, size)
        elif kind == "tcb":
            t = _object(v, name, _TCB_KEYS, ("fmc",))
            out[name] = {k: (None if k == "fmc" and t[k] is None else _uint(t[k], f"{name}.{k}", 8))
                         for k in _TCB_KEYS}
        elif kind == "ver":
            f = _object(v, name, _VERSION_KEYS)
            out[name] = {k: _uint(f[k], f"{name}.{k}", 8) for k in _VERSION_KEYS}
        else:  # signature
            s = _object(v, name, ("r", "s"))
            out[name] = {k: list(_bytes(s[k], f"{name}.{k}", SIG_LEN)) for k in ("r", "s")}
    return out


def _first_difference(a: Any, b: Any, path: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if a[k] != b.get(k):
                return _first_difference(a[k], b.get(k), f"{path}.{k}" if path else k)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {json.dumps(a)[:80]} is not what sev writes for this report ({json.dumps(b)[:80]})"


def report_from_sev_json(obj: Any) -> bytes:
    """The raw 1184-byte report the sev JSON ``obj`` describes; :class:`SevJsonError` unless ``obj`` is exactly
    the JSON sev serialises for that report (so nothing in it was lost or added on the way)."""
    j = _normalise(obj)
    if j["version"] < 2:
        raise SevJsonError("version", f"{j['version']} is not an SNP report version sev reads (2 and later)")
    chip_id = bytes(j["chip_id"])
    turin = _turin_layout(j["version"], chip_id, j["cpuid_fam_id"])

    def fw(v: dict[str, int]) -> FirmwareVersion:
        return FirmwareVersion(major=v["major"], minor=v["minor"], build=v["build"])

    try:
        report = SnpReport(
            version=j["version"], guest_svn=j["guest_svn"], policy=GuestPolicy(j["policy"]),
            family_id=bytes(j["family_id"]), image_id=bytes(j["image_id"]), vmpl=j["vmpl"],
            signature_algo=j["sig_algo"], current_tcb=_tcb_raw(j["current_tcb"], turin),
            platform_info=PlatformInfo(j["plat_info"]), flags=j["key_info"], report_data=bytes(j["report_data"]),
            measurement=bytes(j["measurement"]), host_data=bytes(j["host_data"]),
            id_key_digest=bytes(j["id_key_digest"]), author_key_digest=bytes(j["author_key_digest"]),
            report_id=bytes(j["report_id"]), report_id_ma=bytes(j["report_id_ma"]),
            reported_tcb=_tcb_raw(j["reported_tcb"], turin), cpuid_fam_id=j["cpuid_fam_id"],
            cpuid_mod_id=j["cpuid_mod_id"], cpuid_step=j["cpuid_step"], chip_id=chip_id,
            committed_tcb=_tcb_raw(j["committed_tcb"], turin), current_version=fw(j["current"]),
            committed_version=fw(j["committed"]), launch_tcb=_tcb_raw(j["launch_tcb"], turin),
            launch_mit_vector=j["launch_mit_vector"], current_mit_vector=j["current_mit_vector"],
            signature_r=int.from_bytes(bytes(j["signature"]["r"]), "little"),
            signature_s=int.from_bytes(bytes(j["signature"]["s"]), "little"),
        )
        raw = report.to_bytes()
    except SnpFormatError as e:
        raise SevJsonError("", str(e)) from None
    again = report_to_sev_json(raw)
    if again != j:
        raise SevJsonError("", "does not round-trip: " + _first_difference(j, again, ""))
    return raw
