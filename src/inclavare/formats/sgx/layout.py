"""One table per SGX structure: the field checks, parse and pack of each structure are read off its layout.

A structure is a frozen dataclass deriving from :class:`Structure`, with its table as ``LAYOUT``. A
:class:`Layout` lists the structure's fields by SDM offset. Everything between the fields is reserved and must be
zero, so the reserved ranges are not written down separately: they are the gaps of the table. The table compiles
to one :class:`struct.Struct` (fields in offset order, reserved bytes as padding), which does the byte work.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, NamedTuple, TypeVar

from inclavare.formats.sgx.common import (
    Attributes,
    SgxFormatError,
    _check_bytes,
    _check_int,
    _check_reserved,
    _check_size,
    _unchecked,
)

_T = TypeVar("_T")

UINT, BYTES, ATTRIBUTES, CONSTANT = "u", "b", "a", "c"
_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Field(NamedTuple):
    """One field: the dataclass attribute, its SDM name (for messages), offset and size in bytes, and kind.

    Kinds: UINT (little-endian unsigned integer of 1, 2, 4 or 8 bytes), BYTES (a fixed-size byte string),
    ATTRIBUTES (the 16-byte FLAGS/XFRM pair), CONSTANT (bytes that must equal ``const``; no attribute).
    """

    attr: str
    name: str
    offset: int
    size: int
    kind: str = BYTES
    const: bytes = b""


def u(attr: str, name: str, offset: int, size: int) -> Field:
    """A little-endian unsigned integer field."""
    return Field(attr, name, offset, size, UINT)


def b(attr: str, name: str, offset: int, size: int) -> Field:
    """A fixed-size byte-string field."""
    return Field(attr, name, offset, size, BYTES)


def attrs(attr: str, name: str, offset: int) -> Field:
    """A 16-byte ATTRIBUTES field (FLAGS, XFRM)."""
    return Field(attr, name, offset, Attributes.SIZE, ATTRIBUTES)


def constant(name: str, offset: int, value: bytes) -> Field:
    """Bytes that must read ``value`` (a header); no dataclass attribute holds them."""
    return Field("", name, offset, len(value), CONSTANT, value)


class Layout:
    """The byte layout of one structure ``name`` of ``size`` bytes, built from its fields."""

    __slots__ = ("_attributes", "_codec", "_constants", "_keys", "fields", "name", "reserved", "size")

    def __init__(self, name: str, size: int, *fields: Field) -> None:
        self.name, self.size = name, size
        self.fields = tuple(sorted(fields, key=lambda f: f.offset))
        fmt, keys, reserved, pos = ["<"], [], [], 0
        for f in self.fields:
            if f.offset < pos:
                raise ValueError(f"{name}: {f.name} at {f.offset} overlaps the field before it")
            if f.offset > pos:
                fmt.append(f"{f.offset - pos}x")
                reserved.append((pos, f.offset - pos))
            if f.kind == UINT:
                fmt.append(_UINT_CODES[f.size])
                keys.append(f.attr)
            elif f.kind == ATTRIBUTES:
                fmt.append("QQ")
                keys += [f.attr, f.attr + ".xfrm"]
            else:
                fmt.append(f"{f.size}s")
                keys.append(f.attr or f.name)
            pos = f.offset + f.size
        if pos > size:
            raise ValueError(f"{name}: the fields end at {pos}, past the {size}-byte structure")
        if pos < size:
            fmt.append(f"{size - pos}x")
            reserved.append((pos, size - pos))
        self._codec = struct.Struct("".join(fmt))
        self._keys = tuple(keys)
        self.reserved = tuple(reserved)
        self._attributes = tuple(f.attr for f in self.fields if f.kind == ATTRIBUTES)
        self._constants = tuple(f for f in self.fields if f.kind == CONSTANT)

    def check(self, obj: object) -> None:
        """Each field of ``obj`` has its type and fits its size (what a dataclass ``__post_init__`` runs)."""
        for f in self.fields:
            if f.kind == CONSTANT:
                continue
            value = getattr(obj, f.attr)
            if f.kind == UINT:
                _check_int(self.name, f.name, value, 8 * f.size)
            elif f.kind == BYTES:
                _check_bytes(self.name, f.name, value, f.size)
            elif not isinstance(value, Attributes):
                raise SgxFormatError(self.name, f"{f.name} must be Attributes, got {type(value).__name__}")

    def values(self, raw: bytes) -> dict[str, Any]:
        """The fields of ``raw`` (exactly ``size`` bytes) by attribute; nothing is checked, constants dropped."""
        out = dict(zip(self._keys, self._codec.unpack(raw), strict=True))
        for attr in self._attributes:
            out[attr] = _unchecked(Attributes, {"flags": out[attr], "xfrm": out.pop(attr + ".xfrm")})
        for f in self._constants:
            del out[f.name]
        return out

    def parse(self, cls: type[_T], data: bytes) -> _T:
        """``cls(**fields)`` of ``data``: exact size, constants as listed, every reserved byte zero."""
        _check_size(self.name, data, self.size)
        data = bytes(data)
        for f in self._constants:
            got = data[f.offset:f.offset + f.size]
            if got != f.const:
                raise SgxFormatError(self.name, f"{f.name} (bytes {f.offset}..{f.offset + f.size - 1}) is {got.hex()}, "
                                                f"expected {f.const.hex()}")
        _check_reserved(self.name, data, self.reserved)
        return cls(**self.values(data))

    def unchecked(self, cls: type[_T], raw: bytes) -> _T:
        """An instance of the frozen dataclass ``cls`` from ``raw`` (exactly ``size`` bytes), its reserved bytes
        not looked at and its checks not run: every value is in range by construction."""
        return _unchecked(cls, self.values(raw))

    def pack(self, obj: object) -> bytes:
        """The ``size`` bytes of ``obj``, reserved bytes zero."""
        args: list[Any] = []
        for f in self.fields:
            if f.kind == ATTRIBUTES:
                a = getattr(obj, f.attr)
                args += (a.flags, a.xfrm)
            else:
                args.append(f.const if f.kind == CONSTANT else getattr(obj, f.attr))
        return self._codec.pack(*args)


_S = TypeVar("_S", bound="Structure")


class Structure:
    """Base of the structure dataclasses: their ``LAYOUT`` checks each instance, parses and packs it.

    A structure with rules beyond its fields' sizes extends ``__post_init__`` (calling this one first)."""

    LAYOUT: ClassVar[Layout]

    def __post_init__(self) -> None:
        self.LAYOUT.check(self)

    @classmethod
    def parse(cls: type[_S], data: bytes) -> _S:
        """The structure in ``data``: exact size, constants as listed, reserved bytes zero, fields in range."""
        return cls.LAYOUT.parse(cls, data)

    def pack(self) -> bytes:
        """The structure's bytes, reserved bytes zero (the inverse of :meth:`parse`)."""
        return self.LAYOUT.pack(self)
