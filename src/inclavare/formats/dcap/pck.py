"""Intel's SGX extension of PCK certificates (OID 1.2.840.113741.1.13.1): a DER SEQUENCE of
``SEQUENCE { OID, value }`` entries (PPID, TCB, PCE-ID, FMSPC, SGX type and, for platform-CA certificates,
platform instance ID and configuration). :class:`PckExtension` decodes it through :mod:`inclavare.formats.der`
and encodes it (the simulated platform issues PCK certificates)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from inclavare.formats import der
from inclavare.formats.dcap.header import DcapFormatError, _need_bytes
from inclavare.formats.der import (
    TAG_BOOLEAN,
    TAG_ENUMERATED,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    DerReader,
)
from inclavare.formats.sgx import SgxFormatError, _unchecked
from inclavare.formats.sgx.common import _check_int

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PCK = "SGX PCK extension"


def _entry(oid: str, value: bytes) -> bytes:
    return der.encode(TAG_SEQUENCE, der.encode_oid(oid) + value)


def _pck_fail(what: str, offset: int, problem: str) -> DcapFormatError:
    return DcapFormatError(what, offset, problem, _PCK)


def _der_reader(data: bytes, pos: int = 0, end: int | None = None) -> DerReader:
    """A strict DER reader over the PCK extension; errors are DcapFormatErrors."""
    return DerReader(data, _pck_fail, pos, end, _KNOWN_OIDS)


def _by_oid(reader: DerReader, what: str) -> dict[str, tuple[int, int, int]]:
    """The ``SEQUENCE { OID, value }`` entries of ``reader`` by OID: (value tag, content start, content end);
    an OID may appear once."""
    out: dict[str, tuple[int, int, int]] = {}
    for oid, tag, cstart, cend in reader.oid_entries(what):
        if oid in out:
            raise DcapFormatError(oid, cstart, "appears twice", _PCK)
        out[oid] = (tag, cstart, cend)
    return out


class SgxType(IntEnum):
    """The PCK extension's SGX Type."""

    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True)
class PckConfiguration:
    """Platform configuration flags of a platform-CA PCK certificate (each may be absent)."""

    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


_OID_PPID = SGX_EXTENSION_OID + ".1"
_OID_TCB = SGX_EXTENSION_OID + ".2"
_OID_PCEID = SGX_EXTENSION_OID + ".3"
_OID_FMSPC = SGX_EXTENSION_OID + ".4"
_OID_SGX_TYPE = SGX_EXTENSION_OID + ".5"
_OID_PLATFORM_INSTANCE_ID = SGX_EXTENSION_OID + ".6"
_OID_CONFIGURATION = SGX_EXTENSION_OID + ".7"
_OID_PCESVN = _OID_TCB + ".17"
_OID_CPUSVN = _OID_TCB + ".18"
_CONFIG_NAMES = {_OID_CONFIGURATION + ".1": "dynamic_platform", _OID_CONFIGURATION + ".2": "cached_keys",
                 _OID_CONFIGURATION + ".3": "smt_enabled"}
_KNOWN_OIDS = {der.oid_content(oid): oid for oid in (
    SGX_EXTENSION_OID, _OID_PPID, _OID_TCB, _OID_PCEID, _OID_FMSPC, _OID_SGX_TYPE, _OID_PLATFORM_INSTANCE_ID,
    _OID_CONFIGURATION, *(f"{_OID_TCB}.{i}" for i in range(1, 19)), *_CONFIG_NAMES)}


@dataclass(frozen=True)
class PckExtension:
    """The values of the SGX extension (OID 1.2.840.113741.1.13.1) of a PCK certificate."""

    ppid: bytes
    comp_svns: tuple[int, ...]
    pce_svn: int
    cpusvn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int = SgxType.STANDARD
    platform_instance_id: bytes | None = None
    configuration: PckConfiguration | None = None

    def __post_init__(self) -> None:
        _need_bytes(_PCK, "PPID", self.ppid, 16)
        _need_bytes(_PCK, "CPUSVN", self.cpusvn, 16)
        _need_bytes(_PCK, "PCE-ID", self.pce_id, 2)
        _need_bytes(_PCK, "FMSPC", self.fmspc, 6)
        if len(self.comp_svns) != 16:
            raise SgxFormatError(_PCK, f"TCB has {len(self.comp_svns)} component SVNs, expected 16")
        for i, svn in enumerate(self.comp_svns):
            _check_int(_PCK, f"SGX TCB COMP{i + 1:02d} SVN", svn, 8)
        _check_int(_PCK, "PCESVN", self.pce_svn, 16)
        _check_int(_PCK, "SGX Type", self.sgx_type, 8)
        if self.platform_instance_id is not None:
            _need_bytes(_PCK, "PlatformInstanceID", self.platform_instance_id, 16)

    def to_der(self) -> bytes:
        """The extension value (the bytes inside the certificate extension's OCTET STRING)."""
        tcb = b"".join(_entry(f"{_OID_TCB}.{i + 1}", der.encode_unsigned(TAG_INTEGER, svn))
                       for i, svn in enumerate(self.comp_svns))
        tcb += _entry(_OID_PCESVN, der.encode_unsigned(TAG_INTEGER, self.pce_svn))
        tcb += _entry(_OID_CPUSVN, der.encode(TAG_OCTET_STRING, bytes(self.cpusvn)))
        parts = [
            _entry(_OID_PPID, der.encode(TAG_OCTET_STRING, bytes(self.ppid))),
            _entry(_OID_TCB, der.encode(TAG_SEQUENCE, tcb)),
            _entry(_OID_PCEID, der.encode(TAG_OCTET_STRING, bytes(self.pce_id))),
            _entry(_OID_FMSPC, der.encode(TAG_OCTET_STRING, bytes(self.fmspc))),
            _entry(_OID_SGX_TYPE, der.encode_unsigned(TAG_ENUMERATED, int(self.sgx_type))),
        ]
        if self.platform_instance_id is not None:
            parts.append(_entry(_OID_PLATFORM_INSTANCE_ID, der.encode(TAG_OCTET_STRING,
                                                                    bytes(self.platform_instance_id))))
        if self.configuration is not None:
            flags = b""
            for oid, name in _CONFIG_NAMES.items():
                value = getattr(self.configuration, name)
                if value is not None:
                    flags += _entry(oid, der.encode(TAG_BOOLEAN, b"\xff" if value else b"\x00"))
            parts.append(_entry(_OID_CONFIGURATION, der.encode(TAG_SEQUENCE, flags)))
        return der.encode(TAG_SEQUENCE, b"".join(parts))

    @classmethod
    def parse_der(cls, data: bytes) -> PckExtension:
        """Decode the extension value. Unknown entries are skipped; missing or repeated known ones are errors."""
        data = bytes(data)
        outer = _der_reader(data)
        top = outer.sub(TAG_SEQUENCE, "SGX extensions")
        start = top.pos
        if not outer.at_end():
            raise DcapFormatError("SGX extensions", outer.pos, "bytes after the outer SEQUENCE", _PCK)
        values = _by_oid(top, "SGX extensions")

        def get(oid: str, tag: int, name: str) -> tuple[int, int]:
            if oid not in values:
                raise DcapFormatError(name, start, f"{oid} is missing", _PCK)
            got, cstart, cend = values[oid]
            if got != tag:
                raise DcapFormatError(name, cstart, f"DER tag {got:#04x}, expected {tag:#04x}", _PCK)
            return cstart, cend

        def octets(oid: str, name: str, size: int) -> bytes:
            cstart, cend = get(oid, TAG_OCTET_STRING, name)
            if cend - cstart != size:
                raise DcapFormatError(name, cstart, f"is {cend - cstart} bytes, expected {size}", _PCK)
            return data[cstart:cend]

        tstart, tend = get(_OID_TCB, TAG_SEQUENCE, "TCB")
        tcb = _by_oid(_der_reader(data, tstart, tend), "TCB")

        def tcb_int(oid: str, name: str, bits: int) -> int:
            if oid not in tcb:
                raise DcapFormatError(name, tstart, f"{oid} is missing", _PCK)
            tag, cstart, cend = tcb[oid]
            if tag == TAG_INTEGER and cend - cstart == 1 and data[cstart] < 0x80:  # one byte: minimal, non-negative
                return data[cstart]
            if tag != TAG_INTEGER:
                raise DcapFormatError(name, cstart, f"DER tag {tag:#04x}, expected INTEGER", _PCK)
            return outer.unsigned_at(cstart, cend, name, bits)

        comps = tuple(tcb_int(f"{_OID_TCB}.{i + 1}", f"COMP{i + 1:02d}_SVN", 8) for i in range(16))
        pce_svn = tcb_int(_OID_PCESVN, "PCESVN", 16)
        if _OID_CPUSVN not in tcb or tcb[_OID_CPUSVN][0] != TAG_OCTET_STRING:
            raise DcapFormatError("CPUSVN", tstart, f"{_OID_CPUSVN} is missing or not an OCTET STRING", _PCK)
        _, cstart, cend = tcb[_OID_CPUSVN]
        if cend - cstart != 16:
            raise DcapFormatError("CPUSVN", cstart, f"is {cend - cstart} bytes, expected 16", _PCK)
        cpusvn = data[cstart:cend]

        sstart, send = get(_OID_SGX_TYPE, TAG_ENUMERATED, "SGX Type")
        sgx_type = outer.unsigned_at(sstart, send, "SGX Type", 8)
        instance = (octets(_OID_PLATFORM_INSTANCE_ID, "PlatformInstanceID", 16)
                    if _OID_PLATFORM_INSTANCE_ID in values else None)
        config: PckConfiguration | None = None
        if _OID_CONFIGURATION in values:
            cfg_start, cfg_end = get(_OID_CONFIGURATION, TAG_SEQUENCE, "Configuration")
            flags: dict[str, bool] = {}
            for oid, tag, cstart, cend in _der_reader(data, cfg_start, cfg_end).oid_entries("Configuration"):
                name = _CONFIG_NAMES.get(oid)
                if name is None:
                    continue
                if tag != TAG_BOOLEAN or cend - cstart != 1 or data[cstart] not in (0, 0xFF):
                    raise DcapFormatError(name, cstart, "must be a DER BOOLEAN", _PCK)
                if name in flags:
                    raise DcapFormatError(name, cstart, "appears twice", _PCK)
                flags[name] = data[cstart] == 0xFF
            config = PckConfiguration(**flags)
        ppid = octets(_OID_PPID, "PPID", 16)
        pce_id = octets(_OID_PCEID, "PCE-ID", 2)
        fmspc = octets(_OID_FMSPC, "FMSPC", 6)
        # every size and range __post_init__ checks was checked above, field by field
        return _unchecked(cls, {
            "ppid": ppid, "comp_svns": comps, "pce_svn": pce_svn, "cpusvn": cpusvn, "pce_id": pce_id, "fmspc": fmspc,
            "sgx_type": sgx_type, "platform_instance_id": instance, "configuration": config})

