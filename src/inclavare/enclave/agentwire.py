"""The agent service's protobuf messages (proto/agent.proto), encoded and decoded without the protobuf
runtime: importing it costs 40-70 ms, and the init-runelet and every `rune exec` into an enclave container
would pay that on their start path. The subset here is what agent.proto uses (proto3 strings, bytes, bool,
int32, repeated strings, sub-messages), with unknown fields skipped as protobuf does. The tests check every
message against the code protoc generates from agent.proto, byte for byte.

The classes mimic the generated ones as far as rune uses them: attribute access, ``HasField``,
``SerializeToString`` and ``ParseFromString``; setting a field of a sub-message marks it present.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class DecodeError(ValueError):
    pass


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values go out sign-extended to 64 bits, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


class _Message:
    # field number -> (name, kind); kind is "string", "bytes", "bool", "int32", "rstring" or a message class
    FIELDS: dict[int, tuple[str, Any]] = {}

    def __init__(self) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_present", set())
        object.__setattr__(self, "_parent", None)

    @classmethod
    def _by_name(cls) -> dict[str, tuple[int, Any]]:
        return {name: (num, kind) for num, (name, kind) in cls.FIELDS.items()}

    def __getattr__(self, name: str) -> Any:
        spec = self._by_name().get(name)
        if spec is None:
            raise AttributeError(name)
        values = self._values
        if name not in values:
            kind = spec[1]
            if isinstance(kind, type):
                child = kind()
                object.__setattr__(child, "_parent", (self, name))
                values[name] = child
            else:
                values[name] = [] if kind == "rstring" else {"string": "", "bytes": b"", "bool": False,
                                                               "int32": 0}[kind]
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        spec = self._by_name().get(name)
        if spec is None or isinstance(spec[1], type) or spec[1] == "rstring":
            raise AttributeError(f"cannot assign {name}")
        self._values[name] = value
        self._mark()

    def _mark(self) -> None:
        parent = self._parent
        while parent is not None:
            msg, name = parent
            msg._present.add(name)
            parent = msg._parent

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's name
        child = self._values.get(name)
        return name in self._present or (isinstance(child, _Message) and bool(child.SerializeToString()))

    def SerializeToString(self) -> bytes:  # noqa: N802
        out = bytearray()
        for num in sorted(self.FIELDS):
            name, kind = self.FIELDS[num]
            if name not in self._values:
                continue
            value = self._values[name]
            if isinstance(kind, type):
                if self.HasField(name):
                    body = value.SerializeToString()
                    out += _varint(num << 3 | 2) + _varint(len(body)) + body
            elif kind == "rstring":
                for item in value:
                    b = item.encode()
                    out += _varint(num << 3 | 2) + _varint(len(b)) + b
            elif kind in ("string", "bytes"):
                b = value.encode() if kind == "string" else bytes(value)
                if b:
                    out += _varint(num << 3 | 2) + _varint(len(b)) + b
            elif value:  # bool, int32: defaults are not written in proto3
                out += _varint(num << 3) + _varint(int(value))
        return bytes(out)

    def ParseFromString(self, data: bytes) -> None:  # noqa: N802
        self._values.clear()
        self._present.clear()
        pos = 0
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            num, wire = key >> 3, key & 7
            spec = self.FIELDS.get(num)
            if wire == 0:
                value, pos = _read_varint(data, pos)
                if spec is not None and spec[1] in ("bool", "int32"):
                    if spec[1] == "bool":
                        self._values[spec[0]] = bool(value)
                    else:
                        value &= 0xFFFFFFFF
                        self._values[spec[0]] = value - (1 << 32) if value & 0x80000000 else value
                continue
            if wire == 2:
                size, pos = _read_varint(data, pos)
                if pos + size > len(data):
                    raise DecodeError(f"field {num}: {size} bytes declared, {len(data) - pos} left")
                chunk, pos = data[pos:pos + size], pos + size
                if spec is None:
                    continue
                name, kind = spec
                try:
                    if isinstance(kind, type):
                        child = kind()
                        child.ParseFromString(chunk)
                        object.__setattr__(child, "_parent", (self, name))
                        self._values[name] = child
                        self._present.add(name)
                    elif kind == "rstring":
                        self.__getattr__(name).append(chunk.decode())
                    elif kind == "string":
                        self._values[name] = chunk.decode()
                    elif kind == "bytes":
                        self._values[name] = bytes(chunk)
                except UnicodeDecodeError:
                    raise DecodeError(f"field {num} ({name}) is not valid UTF-8") from None
                continue
            if wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise DecodeError(f"field {num}: unsupported wire type {wire}")
            if pos > len(data):
                raise DecodeError(f"field {num}: truncated")


class Execute(_Message):
    FIELDS = {1: ("argv", "string"), 2: ("envp", "string"), 10: ("args", "rstring"), 11: ("env", "rstring")}


class Kill(_Message):
    FIELDS = {1: ("sig", "int32")}


class Attest(_Message):
    FIELDS = {1: ("isRA", "bool"), 2: ("quoteType", "string"), 3: ("spid", "string"),
              4: ("subscriptionKey", "string"), 10: ("targetInfo", "bytes")}


class AgentServiceRequest(_Message):
    FIELDS = {1: ("exec", Execute), 2: ("kill", Kill), 3: ("attest", Attest)}


class ExecuteResult(_Message):
    FIELDS = {1: ("exitCode", "int32"), 2: ("error", "string")}


class AttestResult(_Message):
    FIELDS = {1: ("exitCode", "int32"), 2: ("error", "string"), 3: ("localReport", "bytes")}


class AgentServiceResponse(_Message):
    FIELDS = {1: ("exec", ExecuteResult), 2: ("attest", AttestResult)}
