"""The DCAP collateral documents, TCB info (v2 SGX; v3 SGX and TDX with ``tdxModule`` and
``tdxModuleIdentities``) and QE identity v2 (QE, TD_QE), parsed from the exact signed bytes.

Shapes are checked with :mod:`inclavare.formats.jsonshape`; every error is a :class:`CollateralError` naming the
JSON path. Well-formed repeated parts (TCB levels, component lists) are read on fast paths first; anything they
do not accept is read again on the checked path, so the errors are those of the checked path.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.formats import strictjson
from inclavare.formats.jsonshape import Shape, is_uint
from inclavare.formats.sgx import _unchecked

__all__ = ["TCB_LEVEL_STATUSES", "ModuleTcbLevel", "QeIdentity", "TcbInfo", "TcbLevel", "TdxModuleIdentity",
           "iso_date", "parse_qe_identity", "parse_tcb_info"]

TCB_LEVEL_STATUSES = frozenset({"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                                "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded",
                                "Revoked"})
_IDENTITY_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})


@dataclass(frozen=True)
class _Level:
    """What every ``tcbLevels`` entry says about the TCB it describes."""

    status: str
    date: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TcbLevel(_Level):
    """One ``tcbLevels`` entry of a TCB info: the platform's SGX (and for TDX, TDX) components and PCESVN."""

    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...] | None


@dataclass(frozen=True)
class ModuleTcbLevel(_Level):
    """One ``tcbLevels`` entry of a QE identity or a TDX module identity (judged by ISVSVN)."""

    isvsvn: int


@dataclass(frozen=True)
class TdxModuleIdentity:
    """``tdxModule`` (id "", no levels) or one ``tdxModuleIdentities`` entry of a TDX TCB info."""

    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[ModuleTcbLevel, ...]


@dataclass(frozen=True)
class _Document:
    """What a TCB info and a QE identity both carry: who they are for, their version and validity window."""

    id: str
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    evaluation_data_number: int


@dataclass(frozen=True)
class TcbInfo(_Document):
    """A parsed ``tcbInfo`` (id "SGX" or "TDX"; v2 has no id and is "SGX")."""

    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] | None


@dataclass(frozen=True)
class QeIdentity(_Document):
    """A parsed ``enclaveIdentity`` (id "QE", "TD_QE" or "QVE")."""

    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[ModuleTcbLevel, ...]


def _error(field: str, problem: str) -> CollateralError:
    return CollateralError(f"{field}: {problem}")


_SHAPE = Shape(_error)


class _Obj:
    """Typed access to one JSON object (checked with the project's one JSON-shape checker); every error names
    the path."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):  # the message is made only for a failure
            _SHAPE.fail(where, f"expected a JSON object, got {_json_type(value)}")
        self.d: dict[str, Any] = value
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.d:
            _SHAPE.fail(f"{self.where}.{key}", "missing")
        return self.d[key]

    def has(self, key: str) -> bool:
        return key in self.d

    def get_int(self, key: str, bits: int = 32) -> int:
        v = self._get(key)
        if not is_uint(v, (1 << bits) - 1):
            _SHAPE.fail(f"{self.where}.{key}", f"expected an integer 0..{(1 << bits) - 1}, got {v!r:.40}")
        return int(v)

    def get_str(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            _SHAPE.fail(f"{self.where}.{key}", f"expected a string, got {_json_type(v)}")
        return v

    def get_hex(self, key: str, size: int) -> bytes:
        v = self.get_str(key)
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            _SHAPE.fail(f"{self.where}.{key}", f"{v!r:.60} is not hex")
        if len(raw) != size or len(v) != 2 * size:
            _SHAPE.fail(f"{self.where}.{key}", f"is {len(v)} hex digits, expected {2 * size}")
        return raw

    def get_date(self, key: str) -> datetime.datetime:
        return iso_date(self.get_str(key), f"{self.where}.{key}", "date")

    def get_list(self, key: str) -> list[Any]:
        v = self._get(key)
        if not isinstance(v, list):
            _SHAPE.fail(f"{self.where}.{key}", f"expected a JSON array, got {_json_type(v)}")
        return v

    def get_obj(self, key: str) -> _Obj:
        return _Obj(self._get(key), f"{self.where}.{key}")

    def get_status(self, key: str, allowed: frozenset[str]) -> str:
        v = self.get_str(key)
        if v not in allowed:
            _SHAPE.fail(f"{self.where}.{key}", f"{v!r:.40} is not a recognised TCB status")
        return v

    def advisories(self) -> tuple[str, ...]:
        if "advisoryIDs" not in self.d:
            return ()
        out: list[str] = []
        for i, a in enumerate(self.get_list("advisoryIDs")):
            if not isinstance(a, str):
                _SHAPE.fail(f"{self.where}.advisoryIDs[{i}]", "expected a string")
            out.append(a)
        return tuple(out)


def iso_date(text: str, where: str, what: str) -> datetime.datetime:
    """``text`` (an ISO 8601 time with a zone, as the collateral documents write them) as an aware UTC datetime;
    ``what`` names it in the error ("date", "time")."""
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _error(where, f"{text!r:.40} is not an ISO 8601 {what}") from None
    if t.tzinfo is None:
        raise _error(where, f"{text!r:.40} has no time zone")
    return t.astimezone(datetime.UTC)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")




def _load_json(raw: bytes, what: str) -> _Obj:
    if not isinstance(raw, (bytes, bytearray)):
        raise CollateralError(f"{what}: expected the raw JSON bytes, got {type(raw).__name__}")
    try:
        value = strictjson.loads(bytes(raw))
    except (ValueError, RecursionError) as e:
        raise CollateralError(f"{what}: not valid JSON ({str(e).splitlines()[0] if str(e) else 'malformed'})") \
            from None
    return _Obj(value, what)


# Fast paths for the documents' repeated parts: each reads a well-formed item at once and returns None at the
# first thing that is not (wrong type, range, missing key); the item is then read again by the _Obj path, which
# gives the same value for a well-formed item and otherwise names what is wrong, so errors are unchanged.
_MISSING = object()


def _advisories_fast(d: dict[str, Any]) -> tuple[str, ...] | None:
    ids = d.get("advisoryIDs", _MISSING)
    if ids is _MISSING:
        return ()
    if type(ids) is list and set(map(type, ids)) <= {str}:
        return tuple(ids)
    return None


def _svns_fast(items: Any) -> tuple[int, ...] | None:
    """16 ``{"svn": 0..255}`` objects (:func:`_components`) as their SVNs."""
    if type(items) is not list or len(items) != 16:
        return None
    try:
        svns = [c["svn"] for c in items]  # a str, list or number item raises TypeError, a dict without it KeyError
    except (TypeError, KeyError):
        return None
    if set(map(type, svns)) == {int} and min(svns) >= 0 and max(svns) <= 0xFF:
        return tuple(svns)
    return None


def _level_fast(item: dict[str, Any], statuses: frozenset[str]) -> dict[str, Any] | None:
    """The :class:`_Level` fields of a well-formed level (status one of ``statuses``), by name."""
    status, date = item.get("tcbStatus"), item.get("tcbDate")
    if type(status) is not str or status not in statuses or type(date) is not str:
        return None
    advisories = _advisories_fast(item)
    if advisories is None:
        return None
    return {"status": status, "date": date, "advisory_ids": advisories}


def _module_level_fast(item: Any) -> ModuleTcbLevel | None:
    if type(item) is not dict or type(tcb := item.get("tcb")) is not dict:
        return None
    isvsvn = tcb.get("isvsvn")
    if type(isvsvn) is not int or not 0 <= isvsvn <= 0xFFFF or (common := _level_fast(item, _IDENTITY_STATUSES)) \
            is None:
        return None
    return _unchecked(ModuleTcbLevel, {"isvsvn": isvsvn, **common})


def _tcb_level_fast(item: Any, version: int, tdx: bool) -> TcbLevel | None:
    if type(item) is not dict or type(tcb := item.get("tcb")) is not dict:
        return None
    sgx: tuple[int, ...] | None
    if version == 2:
        values: list[Any] = [tcb.get(name) for name in _V2_COMPONENTS]
        sgx = tuple(values) if set(map(type, values)) == {int} and min(values) >= 0 and max(values) <= 0xFF \
            else None
    else:
        sgx = _svns_fast(tcb.get("sgxtcbcomponents"))
    tdx_svns = _svns_fast(tcb.get("tdxtcbcomponents")) if tdx and version != 2 else None
    if sgx is None or (tdx and version != 2 and tdx_svns is None):
        return None
    pce_svn = tcb.get("pcesvn")
    if type(pce_svn) is not int or not 0 <= pce_svn <= 0xFFFF or (common := _level_fast(item, TCB_LEVEL_STATUSES)) \
            is None:
        return None
    return _unchecked(TcbLevel, {"sgx_components": sgx, "pce_svn": pce_svn, "tdx_components": tdx_svns, **common})


def _module_levels(o: _Obj) -> tuple[ModuleTcbLevel, ...]:
    out = []
    for i, item in enumerate(o.get_list("tcbLevels")):
        level = _module_level_fast(item)
        if level is None:
            lv = _Obj(item, f"{o.where}.tcbLevels[{i}]")
            level = ModuleTcbLevel(isvsvn=lv.get_obj("tcb").get_int("isvsvn", 16),
                                   status=lv.get_status("tcbStatus", _IDENTITY_STATUSES), date=lv.get_str("tcbDate"),
                                   advisory_ids=lv.advisories())
        out.append(level)
    return tuple(out)


def _components(o: _Obj, key: str) -> tuple[int, ...]:
    items = o.get_list(key)
    if len(items) != 16:
        raise CollateralError(f"{o.where}.{key}: has {len(items)} components, expected 16")
    try:  # the usual case at once: 16 objects whose "svn" is an integer 0..255 (JSON objects are dicts)
        svns = [c["svn"] for c in items]
    except (TypeError, KeyError):
        svns = []
    if svns and set(map(type, svns)) == {int} and min(svns) >= 0 and max(svns) <= 0xFF:
        return tuple(svns)
    return tuple(_Obj(c, f"{o.where}.{key}[{i}]").get_int("svn", 8) for i, c in enumerate(items))


def _module_identity(o: _Obj, with_levels: bool) -> TdxModuleIdentity:
    return TdxModuleIdentity(id=o.get_str("id") if with_levels else "", mrsigner=o.get_hex("mrsigner", 48),
                             attributes=o.get_hex("attributes", 8), attributes_mask=o.get_hex("attributesMask", 8),
                             levels=_module_levels(o) if with_levels else ())


_V2_COMPONENTS = tuple(f"sgxtcbcomp{n:02d}svn" for n in range(1, 17))


@functools.lru_cache(maxsize=64)
def parse_tcb_info(raw: bytes) -> TcbInfo:
    """Parse the raw ``tcbInfo`` JSON value (v2 or v3). Raises :class:`CollateralError` naming the field."""
    o = _load_json(raw, "tcbInfo")
    version = o.get_int("version")
    if version not in (2, 3):
        raise CollateralError(f"tcbInfo.version: {version} is not supported (2 or 3)")
    tcb_id = o.get_str("id") if version == 3 else "SGX"
    if tcb_id not in ("SGX", "TDX"):
        raise CollateralError(f"tcbInfo.id: {tcb_id!r:.20} is not SGX or TDX")
    tcb_type = o.get_int("tcbType") if o.has("tcbType") else 0
    if tcb_type != 0:
        raise CollateralError(f"tcbInfo.tcbType: {tcb_type} is not supported (0)")
    levels: list[TcbLevel] = []
    for i, item in enumerate(o.get_list("tcbLevels")):
        fast = _tcb_level_fast(item, version, tcb_id == "TDX")
        if fast is not None:
            levels.append(fast)
            continue
        lv = _Obj(item, f"tcbInfo.tcbLevels[{i}]")
        tcb = lv.get_obj("tcb")
        if version == 2:
            sgx = tuple(tcb.get_int(name, 8) for name in _V2_COMPONENTS)
            tdx = None
        else:
            sgx = _components(tcb, "sgxtcbcomponents")
            tdx = _components(tcb, "tdxtcbcomponents") if tcb_id == "TDX" else None
        levels.append(TcbLevel(sgx_components=sgx, pce_svn=tcb.get_int("pcesvn", 16), tdx_components=tdx,
                               status=lv.get_status("tcbStatus", TCB_LEVEL_STATUSES), date=lv.get_str("tcbDate"),
                               advisory_ids=lv.advisories()))
    module = identities = None
    if tcb_id == "TDX":
        module = _module_identity(o.get_obj("tdxModule"), with_levels=False)
        if o.has("tdxModuleIdentities"):
            identities = tuple(_module_identity(_Obj(m, f"tcbInfo.tdxModuleIdentities[{i}]"), with_levels=True)
                               for i, m in enumerate(o.get_list("tdxModuleIdentities")))
    return TcbInfo(id=tcb_id, version=version, issue_date=o.get_date("issueDate"),
                   next_update=o.get_date("nextUpdate"), fmspc=o.get_hex("fmspc", 6), pce_id=o.get_hex("pceId", 2),
                   tcb_type=tcb_type, evaluation_data_number=o.get_int("tcbEvaluationDataNumber"), levels=tuple(levels),
                   tdx_module=module, tdx_module_identities=identities)


@functools.lru_cache(maxsize=64)
def parse_qe_identity(raw: bytes) -> QeIdentity:
    """Parse the raw ``enclaveIdentity`` JSON value (v2). Raises :class:`CollateralError` naming the field."""
    o = _load_json(raw, "enclaveIdentity")
    version = o.get_int("version")
    if version != 2:
        raise CollateralError(f"enclaveIdentity.version: {version} is not supported (2)")
    ident = o.get_str("id")
    if ident not in ("QE", "TD_QE", "QVE"):
        raise CollateralError(f"enclaveIdentity.id: {ident!r:.20} is not QE, TD_QE or QVE")
    return QeIdentity(
        id=ident, version=version, issue_date=o.get_date("issueDate"), next_update=o.get_date("nextUpdate"),
        evaluation_data_number=o.get_int("tcbEvaluationDataNumber"), miscselect=o.get_hex("miscselect", 4),
        miscselect_mask=o.get_hex("miscselectMask", 4), attributes=o.get_hex("attributes", 16),
        attributes_mask=o.get_hex("attributesMask", 16), mrsigner=o.get_hex("mrsigner", 32),
        isvprodid=o.get_int("isvprodid", 16), levels=_module_levels(o))
