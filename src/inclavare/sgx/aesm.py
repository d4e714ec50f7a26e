"""A client for Intel's AESM (the SGX architectural enclave service manager): ECDSA quotes and launch tokens.

Wire protocol (aesmd's unix socket, default ``/var/run/aesmd/aesm.socket``): each message is a 4-byte
little-endian length followed by a protobuf ``aesm.message.Request`` (client to aesmd) or
``aesm.message.Response`` (back), proto2, with exactly one sub-message set. One request per connection, as
Intel's own client library does it.

The protobuf messages are encoded here by hand, without the protobuf runtime (importing it costs 40-70 ms on
``rune attest``'s path). The codec covers what the AESM messages use: varint fields (uint32, uint64, bool),
bytes and embedded messages; unknown fields are skipped, a repeated scalar keeps its last value and a repeated
sub-message is merged, as protobuf parsers do. The tests check it byte for byte against the code protoc
generates from tests/fixtures/aesm/aesm_messages.proto.

ECDSA quoting, in the order rune and Intel's quote-ex library do it:

1. SelectAttKeyID with no list: aesmd picks its default attestation key; if that is not an ECDSA key,
   GetSupportedAttKeyIDNum + GetSupportedAttKeyIDs list them and the first ECDSA (P-256 or P-384) one is used;
2. InitQuoteEx without, then with the public key ID buffer: the QE's TARGETINFO (512 bytes);
3. the enclave makes its REPORT for that TARGETINFO;
4. GetQuoteSizeEx, then GetQuoteEx(REPORT): the quote (DCAP v3).

Launch tokens (only on platforms without flexible launch control): GetLaunchToken with the SIGSTRUCT's
ENCLAVEHASH, MODULUS and ATTRIBUTES gives a 304-byte EINITTOKEN.

Every failure raises :class:`AesmError` with one line naming the call, the socket and, for an error code from
aesmd, the code's name.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "AESM_ERRORS",
    "AESM_SOCKET",
    "AESM_SOCKET_ENV",
    "ALG_ECDSA_P256",
    "ALG_ECDSA_P384",
    "ALG_EPID",
    "ATT_KEY_ID_SIZE",
    "AesmClient",
    "AesmError",
    "AesmProtocolError",
    "AesmQuotingService",
    "DecodeError",
    "REQUESTS",
    "RESPONSES",
    "algorithm_of",
    "decode_request",
    "decode_response",
    "default_socket_path",
    "encode_request",
    "encode_response",
    "error_name",
    "make_att_key_id",
]

AESM_SOCKET = "/var/run/aesmd/aesm.socket"
AESM_SOCKET_ENV = "INCLAVARE_AESM_SOCKET"
DEFAULT_TIMEOUT = 30.0  # seconds; the first InitQuoteEx on a platform may fetch PCK certificates over the network
MAX_MESSAGE = 4 << 20  # a quote with its PCK chain is a few KiB; refuse replies that claim more than this

TARGETINFO_SIZE = 512
REPORT_SIZE = 432
EINITTOKEN_SIZE = 304
SIGSTRUCT_SIZE = 1808

# sgx_att_key_id_ext_t (256 bytes): sgx_ql_att_key_id_t (id u16, version u16, mrsigner_length u16, mrsigner[48],
# prod_id u32, extended_prod_id[16], config_id[64], family_id[16], algorithm_id u32), spid[16], att_key_type u16,
# reserved[80]
ATT_KEY_ID_SIZE = 256
_ALGORITHM_OFFSET = 154
ALG_EPID = 0
ALG_ECDSA_P256 = 2
ALG_ECDSA_P384 = 3
_ECDSA = (ALG_ECDSA_P256, ALG_ECDSA_P384)

# aesm_error_t (Intel's aesm_error.h and the quote-ex additions): code -> (name, what it means)
AESM_ERRORS: dict[int, tuple[str, str]] = {
    1: ("AESM_UNEXPECTED_ERROR", "unexpected failure inside aesmd"),
    2: ("AESM_NO_DEVICE_ERROR", "aesmd finds no SGX device (is the SGX driver loaded?)"),
    3: ("AESM_PARAMETER_ERROR", "aesmd rejected a parameter of the request"),
    4: ("AESM_EPIDBLOB_ERROR", "the EPID blob is invalid"),
    5: ("AESM_EPID_REVOKED_ERROR", "the platform's EPID key is revoked"),
    6: ("AESM_GET_LICENSETOKEN_ERROR", "the launch enclave refused a token (attributes or signer not allowed)"),
    7: ("AESM_SESSION_INVALID", "invalid session"),
    8: ("AESM_MAX_NUM_SESSION_REACHED", "too many sessions"),
    9: ("AESM_PSDA_UNAVAILABLE", "platform services are unavailable"),
    10: ("AESM_EPH_SESSION_FAILED", "ephemeral session failed"),
    11: ("AESM_LONG_TERM_PAIRING_FAILED", "long-term pairing failed"),
    12: ("AESM_NETWORK_ERROR", "aesmd could not reach a network service (provisioning or PCCS)"),
    13: ("AESM_NETWORK_BUSY_ERROR", "the network service is busy"),
    14: ("AESM_PROXY_SETTING_ASSIST", "aesmd needs a proxy setting (see aesmd.conf)"),
    15: ("AESM_FILE_ACCESS_ERROR", "aesmd could not read or write one of its files"),
    16: ("AESM_SGX_PROVISION_FAILED", "SGX provisioning failed"),
    17: ("AESM_SERVICE_STOPPED", "the AESM service is stopping"),
    18: ("AESM_BUSY", "aesmd is busy; try again"),
    19: ("AESM_BACKEND_SERVER_BUSY", "the backend server is busy; try again later"),
    20: ("AESM_UPDATE_AVAILABLE", "a platform software or microcode update is required"),
    21: ("AESM_OUT_OF_MEMORY_ERROR", "aesmd ran out of memory"),
    22: ("AESM_MSG_ERROR", "malformed message"),
    23: ("AESM_THREAD_ERROR", "aesmd thread error"),
    24: ("AESM_SGX_DEVICE_NOT_AVAILABLE", "the SGX device is not available"),
    25: ("AESM_ENABLE_SGX_DEVICE_FAILED", "SGX could not be enabled"),
    26: ("AESM_PLATFORM_INFO_BLOB_INVALID_SIG", "the platform info blob's signature is invalid"),
    27: ("AESM_SERVICE_NOT_AVAILABLE", "the requested service is not available"),
    28: ("AESM_KDF_MISMATCH", "key derivation function mismatch"),
    29: ("AESM_OUT_OF_EPC", "no free enclave page cache for the architectural enclave"),
    30: ("AESM_SERVICE_UNAVAILABLE", "the service is unavailable (is the plugin for it installed?)"),
    31: ("AESM_UNRECOGNIZED_PLATFORM", "the platform is not recognized by the provisioning service"),
    32: ("AESM_ECDSA_ID_MISMATCH", "the ECDSA key ID does not match"),
    33: ("AESM_PATHNAME_BUFFER_OVERFLOW_ERROR", "a path name is too long"),
    34: ("AESM_ERROR_STORED_KEY", "the stored attestation key is invalid"),
    35: ("AESM_PUB_KEY_ID_MISMATCH", "the attestation public key ID does not match"),
    36: ("AESM_INVALID_PCE_SIG_SCHEME", "unsupported PCE signature scheme"),
    37: ("AESM_ATT_KEY_BLOB_ERROR", "the attestation key blob is corrupt"),
    38: ("AESM_UNSUPPORTED_ATT_KEY_ID", "aesmd does not support this attestation key ID"),
    39: ("AESM_UNSUPPORTED_LOADING_POLICY", "unsupported enclave loading policy"),
    40: ("AESM_INTERFACE_UNAVAILABLE", "the ECDSA quoting interface is not installed (libsgx-aesm-ecdsa-plugin)"),
    41: ("AESM_PLATFORM_LIB_UNAVAILABLE", "the DCAP quote provider library is missing (libsgx-dcap-default-qpl)"),
    42: ("AESM_ATT_KEY_NOT_INITIALIZED", "the attestation key is not initialized (InitQuoteEx first)"),
    43: ("AESM_ATT_KEY_CERT_DATA_INVALID", "the attestation key's certification data is invalid"),
    44: ("AESM_NO_PLATFORM_CERT_DATA", "no PCK certificate data for this platform (check the PCCS configuration)"),
    45: ("AESM_ERROR_REPORT", "the QE could not verify the REPORT (made for another target, or altered)"),
    46: ("AESM_ENCLAVE_LOST", "an architectural enclave was lost (power transition); try again"),
    47: ("AESM_INVALID_REPORT", "the REPORT is invalid"),
    48: ("AESM_ENCLAVE_LOAD_ERROR", "an architectural enclave failed to load"),
    49: ("AESM_UNABLE_TO_GENERATE_QE_REPORT", "the QE could not make its own REPORT"),
    50: ("AESM_KEY_CERTIFICATION_ERROR", "the attestation key could not be certified"),
    51: ("AESM_CONFIG_UNSUPPORTED", "unsupported configuration"),
}
AESM_UNEXPECTED_ERROR = 1
AESM_PARAMETER_ERROR = 3
AESM_ATT_KEY_NOT_INITIALIZED = 42


def error_name(code: int) -> str:
    entry = AESM_ERRORS.get(code)
    return entry[0] if entry else f"unknown AESM error {code}"


class AesmError(InclavareError):
    """aesmd is unreachable, failed a request (``code`` is its aesm_error_t), or sent something unusable."""

    def __init__(self, message: str, *, call: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.call = call
        self.code = code


class AesmProtocolError(AesmError):
    """aesmd's reply is truncated, oversized, not protobuf, or lacks what was asked for."""


class DecodeError(ValueError):
    pass


# --------------------------------------------------------------------------------------------------
# The messages (Intel's aesm.message.Request / Response): name -> (field number in the outer message,
# {field name: (number, type)}). Types: "u32", "u64", "bool", "bytes".

_Schema = dict[str, tuple[int, str]]

REQUESTS: dict[str, tuple[int, _Schema]] = {
    "GetLaunchToken": (3, {"mr_enclave": (1, "bytes"), "mr_signer": (2, "bytes"), "se_attributes": (3, "bytes"),
                           "timeout": (9, "u32")}),
    "InitQuoteEx": (15, {"att_key_id": (1, "bytes"), "b_pub_key_id": (3, "bool"), "buf_size": (4, "u64"),
                         "timeout": (9, "u32")}),
    "GetQuoteSizeEx": (16, {"att_key_id": (1, "bytes"), "timeout": (9, "u32")}),
    "GetQuoteEx": (17, {"report": (1, "bytes"), "att_key_id": (2, "bytes"), "qe_report_info": (3, "bytes"),
                        "buf_size": (4, "u32"), "timeout": (9, "u32")}),
    "SelectAttKeyID": (19, {"att_key_id_list": (1, "bytes"), "timeout": (2, "u32")}),
    "GetSupportedAttKeyIDNum": (21, {"timeout": (9, "u32")}),
    "GetSupportedAttKeyIDs": (22, {"buf_size": (1, "u32"), "timeout": (9, "u32")}),
}

RESPONSES: dict[str, tuple[int, _Schema]] = {
    "GetLaunchToken": (3, {"errorCode": (1, "u32"), "token": (2, "bytes")}),
    "InitQuoteEx": (15, {"errorCode": (1, "u32"), "target_info": (2, "bytes"), "pub_key_id_size": (3, "u64"),
                         "pub_key_id": (4, "bytes")}),
    "GetQuoteSizeEx": (16, {"errorCode": (1, "u32"), "quote_size": (2, "u32")}),
    "GetQuoteEx": (17, {"errorCode": (1, "u32"), "quote": (2, "bytes"), "qe_report_info": (3, "bytes")}),
    "SelectAttKeyID": (19, {"errorCode": (1, "u32"), "selected_att_key_id": (2, "bytes")}),
    "UnsupportedRequest": (20, {"errorCode": (1, "u32")}),
    "GetSupportedAttKeyIDNum": (21, {"errorCode": (1, "u32"), "att_key_id_num": (2, "u32")}),
    "GetSupportedAttKeyIDs": (22, {"errorCode": (1, "u32"), "att_key_ids": (2, "bytes")}),
}

# Every Response sub-message declares `required uint32 errorCode = 1 [default = 1]`: absent means failure.
ERROR_CODE_DEFAULT = AESM_UNEXPECTED_ERROR

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5
_BITS = {"u32": 32, "u64": 64, "bool": 1}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & ((1 << 64) - 1), pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


def _encode_fields(kind: str, schema: _Schema, fields: Mapping[str, Any]) -> bytes:
    out = bytearray()
    items = []
    for name, value in fields.items():
        if value is None:
            continue
        spec = schema.get(name)
        if spec is None:
            raise ValueError(f"{kind}: no field {name!r} (fields: {', '.join(schema)})")
        items.append((spec[0], spec[1], name, value))
    for number, ftype, name, value in sorted(items):  # protoc writes fields in field-number order
        if ftype == "bytes":
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"{kind}.{name}: bytes expected, got {type(value).__name__}")
            out += _varint(number << 3 | _WIRE_LEN) + _varint(len(value)) + bytes(value)
        else:
            if isinstance(value, bool) != (ftype == "bool") or not isinstance(value, int):
                raise ValueError(f"{kind}.{name}: {ftype} expected, got {value!r}")
            if not 0 <= value < 1 << _BITS[ftype]:
                raise ValueError(f"{kind}.{name}: {value} does not fit a {ftype}")
            out += _varint(number << 3 | _WIRE_VARINT) + _varint(int(value))
    return bytes(out)


def _encode(table: dict[str, tuple[int, _Schema]], kind: str, fields: Mapping[str, Any]) -> bytes:
    entry = table.get(kind)
    if entry is None:
        raise ValueError(f"unknown AESM message {kind!r}")
    number, schema = entry
    inner = _encode_fields(kind, schema, fields)
    return _varint(number << 3 | _WIRE_LEN) + _varint(len(inner)) + inner


def _fields(data: bytes) -> Any:
    """Yield (field number, wire type, value) for each field of one message; values of length-delimited fields
    are bytes, varints int; fixed-width fields are skipped over and yielded raw."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
        elif wire == _WIRE_LEN:
            size, pos = _read_varint(data, pos)
            if size > end - pos:
                raise DecodeError(f"field {number}: {size} bytes announced, {end - pos} left")
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire in (_WIRE_I64, _WIRE_I32):
            size = 8 if wire == _WIRE_I64 else 4
            if size > end - pos:
                raise DecodeError(f"field {number}: truncated fixed-width value")
            yield number, wire, data[pos:pos + size]
            pos += size
        else:
            raise DecodeError(f"field {number}: unsupported wire type {wire}")


def _decode_fields(kind: str, schema: _Schema, data: bytes, into: dict[str, Any]) -> None:
    by_number = {number: (name, ftype) for name, (number, ftype) in schema.items()}
    for number, wire, value in _fields(data):
        spec = by_number.get(number)
        if spec is None:
            continue  # unknown field: skipped, as protobuf does
        name, ftype = spec
        if (wire == _WIRE_LEN) != (ftype == "bytes") or wire not in (_WIRE_LEN, _WIRE_VARINT):
            raise DecodeError(f"{kind}.{name}: wire type {wire} does not fit a {ftype} field")
        if ftype == "bytes":
            into[name] = bytes(value)
        elif ftype == "bool":
            into[name] = value != 0
        else:
            into[name] = value & ((1 << _BITS[ftype]) - 1)  # protobuf truncates an over-long uint32


def _decode(table: dict[str, tuple[int, _Schema]], data: bytes) -> dict[str, dict[str, Any]]:
    by_number = {number: (kind, schema) for kind, (number, schema) in table.items()}
    out: dict[str, dict[str, Any]] = {}
    for number, wire, value in _fields(bytes(data)):
        entry = by_number.get(number)
        if entry is None:
            continue
        kind, schema = entry
        if wire != _WIRE_LEN:
            raise DecodeError(f"{kind}: wire type {wire} for a message field")
        _decode_fields(kind, schema, value, out.setdefault(kind, {}))  # a repeated sub-message merges
    return out


def encode_request(kind: str, **fields: Any) -> bytes:
    """An ``aesm.message.Request`` with the sub-message ``kind`` (a key of :data:`REQUESTS`) set to ``fields``
    (None values are left out)."""
    return _encode(REQUESTS, kind, fields)


def encode_response(kind: str, **fields: Any) -> bytes:
    """An ``aesm.message.Response`` with the sub-message ``kind`` (a key of :data:`RESPONSES`)."""
    return _encode(RESPONSES, kind, fields)


def decode_request(data: bytes) -> dict[str, dict[str, Any]]:
    """The sub-messages set in an ``aesm.message.Request``: {kind: {field: value}} (fields present only)."""
    return _decode(REQUESTS, data)


def decode_response(data: bytes) -> dict[str, dict[str, Any]]:
    """The sub-messages set in an ``aesm.message.Response``: {kind: {field: value}} (fields present only)."""
    return _decode(RESPONSES, data)


# --------------------------------------------------------------------------------------------------
# Attestation key IDs


def algorithm_of(att_key_id: bytes) -> int:
    """The algorithm_id of an attestation key ID (sgx_att_key_id_ext_t), or -1 if it is too short."""
    if len(att_key_id) < _ALGORITHM_OFFSET + 4:
        return -1
    return int(struct.unpack_from("<I", att_key_id, _ALGORITHM_OFFSET)[0])


def make_att_key_id(algorithm: int, qe_mrsigner: bytes, qe_prodid: int = 1, att_key_type: int = 2) -> bytes:
    """A 256-byte sgx_att_key_id_ext_t naming a QE (by MRSIGNER and product ID) and an attestation algorithm."""
    if len(qe_mrsigner) not in (32, 48):
        raise ValueError(f"QE MRSIGNER is {len(qe_mrsigner)} bytes, expected 32 or 48")
    head = struct.pack("<HHH", 0, 0, len(qe_mrsigner)) + qe_mrsigner.ljust(48, b"\0")
    body = head + struct.pack("<I", qe_prodid) + bytes(16 + 64 + 16) + struct.pack("<I", algorithm)
    body += bytes(16) + struct.pack("<H", att_key_type)
    return body.ljust(ATT_KEY_ID_SIZE, b"\0")


# --------------------------------------------------------------------------------------------------
# The client


def default_socket_path() -> str:
    """``$INCLAVARE_AESM_SOCKET`` or /var/run/aesmd/aesm.socket."""
    return os.environ.get(AESM_SOCKET_ENV) or AESM_SOCKET


class AesmClient:
    """One AESM request per connection. ``timeout`` (seconds) bounds each call and is passed on to aesmd."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not timeout > 0:
            raise ValueError(f"AESM timeout must be positive, got {timeout!r}")
        self.socket_path = socket_path or default_socket_path()
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"AesmClient(socket_path={self.socket_path!r}, timeout={self.timeout})"

    # ---- transport

    def _fail(self, call: str, what: str, cls: type[AesmError] = AesmProtocolError) -> AesmError:
        return cls(f"AESM {call}: {what} ({self.socket_path})", call=call)

    def _connect(self, call: str, deadline: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(self.socket_path)
        except TimeoutError:
            sock.close()
            raise AesmError(f"AESM {call}: no connection within {self.timeout:g} s ({self.socket_path})",
                            call=call) from None
        except OSError as e:
            sock.close()
            reason = e.strerror or str(e)
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
                raise AesmError(f"AESM is not running ({self.socket_path}: {reason})", call=call) from None
            raise AesmError(f"cannot connect to AESM ({self.socket_path}: {reason})", call=call) from None
        return sock

    def _recv_exact(self, sock: socket.socket, size: int, call: str, what: str, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(min(size - len(buf), 1 << 16))
            if not chunk:
                raise self._fail(call, f"connection closed after {len(buf)} of {size} bytes of the {what}")
            buf += chunk
        return bytes(buf)

    def transact(self, call: str, request: bytes) -> bytes:
        """Send one framed request, return the reply's protobuf bytes."""
        deadline = time.monotonic() + self.timeout
        sock = self._connect(call, deadline)
        try:
            sock.sendall(struct.pack("<I", len(request)) + request)
            (size,) = struct.unpack("<I", self._recv_exact(sock, 4, call, "reply length", deadline))
            if size > MAX_MESSAGE:
                raise self._fail(call, f"reply claims {size} bytes (more than {MAX_MESSAGE})")
            return self._recv_exact(sock, size, call, "reply", deadline)
        except TimeoutError:
            raise AesmError(f"AESM {call}: no reply within {self.timeout:g} s ({self.socket_path})",
                            call=call) from None
        except OSError as e:
            raise self._fail(call, f"connection failed: {e.strerror or e}", AesmError) from None
        finally:
            sock.close()

    def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        """One request ``kind`` (see :data:`REQUESTS`) with ``fields``; the reply's fields once errorCode is 0.
        The request's ``timeout`` field (milliseconds) is filled in from the client's timeout."""
        fields.setdefault("timeout", min(int(self.timeout * 1000), 0xFFFFFFFF))
        raw = self.transact(kind, encode_request(kind, **fields))
        try:
            reply = decode_response(raw)
        except DecodeError as e:
            raise self._fail(kind, f"malformed reply ({e})") from None
        body = reply.get(kind)
        if body is None:
            if "UnsupportedRequest" in reply:
                code = reply["UnsupportedRequest"].get("errorCode", ERROR_CODE_DEFAULT)
                raise AesmError(f"AESM {kind}: this aesmd does not support the request ({error_name(code)}; is the "
                                f"plugin for it installed?) ({self.socket_path})", call=kind, code=code)
            got = ", ".join(reply) or "nothing AESM knows"
            raise self._fail(kind, f"the reply carries {got}, not a {kind} response")
        code = body.get("errorCode", ERROR_CODE_DEFAULT)
        if code != 0:
            name, meaning = AESM_ERRORS.get(code, (error_name(code), "see Intel's aesm_error.h"))
            raise AesmError(f"AESM {kind} failed: {name} ({code}): {meaning}", call=kind, code=code)
        return body

    # ---- attestation keys

    def select_att_key_id(self) -> bytes:
        """aesmd's default attestation key ID (SelectAttKeyID with no list)."""
        akid: bytes = self.call("SelectAttKeyID").get("selected_att_key_id", b"")
        if len(akid) != ATT_KEY_ID_SIZE:
            raise self._fail("SelectAttKeyID", f"the key ID is {len(akid)} bytes, expected {ATT_KEY_ID_SIZE}")
        return akid

    def supported_att_key_ids(self) -> list[bytes]:
        """Every attestation key ID aesmd supports (GetSupportedAttKeyIDNum, then GetSupportedAttKeyIDs)."""
        num = self.call("GetSupportedAttKeyIDNum").get("att_key_id_num", 0)
        if num == 0:
            raise self._fail("GetSupportedAttKeyIDNum", "aesmd supports no attestation key", AesmError)
        if num * ATT_KEY_ID_SIZE > MAX_MESSAGE:
            raise self._fail("GetSupportedAttKeyIDNum", f"{num} attestation keys is not plausible")
        blob: bytes = self.call("GetSupportedAttKeyIDs", buf_size=num * ATT_KEY_ID_SIZE).get("att_key_ids", b"")
        if len(blob) != num * ATT_KEY_ID_SIZE:
            raise self._fail("GetSupportedAttKeyIDs", f"{len(blob)} bytes for {num} key IDs of {ATT_KEY_ID_SIZE}")
        return [blob[i:i + ATT_KEY_ID_SIZE] for i in range(0, len(blob), ATT_KEY_ID_SIZE)]

    def ecdsa_att_key_id(self) -> bytes:
        """The ECDSA attestation key ID: aesmd's default if it is ECDSA, else the first ECDSA one it supports."""
        akid = self.select_att_key_id()
        if algorithm_of(akid) in _ECDSA:
            return akid
        for candidate in self.supported_att_key_ids():
            if algorithm_of(candidate) in _ECDSA:
                return candidate
        raise AesmError(f"AESM: no ECDSA attestation key among those aesmd supports (is the ECDSA quoting plugin "
                        f"installed?) ({self.socket_path})", call="GetSupportedAttKeyIDs")

    # ---- quoting

    def init_quote_ex(self, att_key_id: bytes) -> bytes:
        """InitQuoteEx twice (size of the public key ID, then with the buffer): the QE's 512-byte TARGETINFO."""
        size = self.call("InitQuoteEx", att_key_id=att_key_id, b_pub_key_id=False, buf_size=0).get(
            "pub_key_id_size", 0)
        if not 0 < size <= MAX_MESSAGE:
            raise self._fail("InitQuoteEx", f"public key ID size {size} is not plausible")
        ti: bytes = self.call("InitQuoteEx", att_key_id=att_key_id, b_pub_key_id=True, buf_size=size).get(
            "target_info", b"")
        if len(ti) != TARGETINFO_SIZE:
            raise self._fail("InitQuoteEx", f"the TARGETINFO is {len(ti)} bytes, expected {TARGETINFO_SIZE}")
        from inclavare.formats.sgx import SgxFormatError, TargetInfo

        try:
            TargetInfo.parse(ti)
        except SgxFormatError as e:
            raise self._fail("InitQuoteEx", f"malformed TARGETINFO ({e})") from None
        return ti

    def quote_size(self, att_key_id: bytes) -> int:
        size: int = self.call("GetQuoteSizeEx", att_key_id=att_key_id).get("quote_size", 0)
        if not 0 < size <= MAX_MESSAGE:
            raise self._fail("GetQuoteSizeEx", f"quote size {size} is not plausible")
        return size

    def get_quote_ex(self, att_key_id: bytes, report: bytes) -> bytes:
        """GetQuoteSizeEx, then GetQuoteEx: the quote over a 432-byte REPORT made for the QE's TARGETINFO."""
        if len(report) != REPORT_SIZE:
            raise AesmError(f"AESM GetQuoteEx: the REPORT is {len(report)} bytes, expected {REPORT_SIZE}",
                            call="GetQuoteEx")
        size = self.quote_size(att_key_id)
        quote: bytes = self.call("GetQuoteEx", report=bytes(report), att_key_id=att_key_id, buf_size=size).get(
            "quote", b"")
        if len(quote) != size:
            raise self._fail("GetQuoteEx", f"the quote is {len(quote)} bytes, GetQuoteSizeEx said {size}")
        return quote

    # ---- launch tokens

    def launch_token(self, mrenclave: bytes, modulus: bytes, attributes: bytes) -> bytes:
        """GetLaunchToken: a 304-byte EINITTOKEN for an enclave (ENCLAVEHASH, signer's MODULUS, ATTRIBUTES)."""
        for name, value, size in (("MRENCLAVE", mrenclave, 32), ("MODULUS", modulus, 384),
                                  ("ATTRIBUTES", attributes, 16)):
            if len(value) != size:
                raise AesmError(f"AESM GetLaunchToken: {name} is {len(value)} bytes, expected {size}",
                                call="GetLaunchToken")
        token: bytes = self.call("GetLaunchToken", mr_enclave=bytes(mrenclave), mr_signer=bytes(modulus),
                                 se_attributes=bytes(attributes)).get("token", b"")
        if len(token) != EINITTOKEN_SIZE:
            raise self._fail("GetLaunchToken", f"the token is {len(token)} bytes, expected {EINITTOKEN_SIZE}")
        from inclavare.formats.sgx import EInitToken, SgxFormatError

        try:
            EInitToken.parse(token)
        except SgxFormatError as e:
            raise self._fail("GetLaunchToken", f"malformed EINITTOKEN ({e})") from None
        return token

    def launch_token_for(self, sigstruct: bytes) -> bytes:
        """The EINITTOKEN for the enclave a 1808-byte SIGSTRUCT signs."""
        from inclavare.formats.sgx import SigStruct

        sig = SigStruct.parse(sigstruct)
        return self.launch_token(sig.enclavehash, sig.modulus, sig.attributes.pack())


class AesmQuotingService:
    """The platform quoting service on SGX hardware (what ``rune attest --isRA`` uses): the ECDSA QE via aesmd.

    Nothing is sent until the first call; the attestation key ID is looked up once per instance."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.client = AesmClient(socket_path, timeout=timeout)
        self._akid: bytes | None = None

    def __repr__(self) -> str:
        return f"AesmQuotingService(socket_path={self.client.socket_path!r})"

    @property
    def socket_path(self) -> str:
        return self.client.socket_path

    def att_key_id(self) -> bytes:
        if self._akid is None:
            self._akid = self.client.ecdsa_att_key_id()
        return self._akid

    def qe_target_info(self) -> bytes:
        """The ECDSA QE's 512-byte TARGETINFO (initializes the attestation key if aesmd has not yet)."""
        return self.client.init_quote_ex(self.att_key_id())

    def get_quote(self, report: bytes) -> bytes:
        """A DCAP ECDSA quote over ``report`` (432 bytes, made for :meth:`qe_target_info`). If aesmd says the
        attestation key is not initialized, it is initialized and the quote asked once more."""
        akid = self.att_key_id()
        try:
            return self.client.get_quote_ex(akid, report)
        except AesmError as e:
            if e.code != AESM_ATT_KEY_NOT_INITIALIZED:
                raise
        self.client.init_quote_ex(akid)
        return self.client.get_quote_ex(akid, report)
