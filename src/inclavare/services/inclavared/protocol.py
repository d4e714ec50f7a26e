"""inclavared's wire formats and addresses, as pure codecs (no I/O).

Two hops, each one request and one answer per RATS-TLS connection, as upstream inclavared speaks them:

- shelter -> inclavared: the request ``{"type":"GETENCLAVEINFO"}`` (JSON); the answer is the ``ENCLAVEINFO`` JSON
  object ``{"id", "msgtype": "ENCLAVEINFO", "version": 1, "mrenclave", "mrsigner", "message"}`` (upstream's
  names and casing; hex measurements). Ours adds ``attested`` (the measurement comes from evidence our
  verifier checked on the second hop), ``tee``, ``verifier``, ``tcb_status`` and ``claims`` (the verifier's flat
  claims, so TDX/SNP measurements can be compared too); upstream's shelter ignores unknown fields. A refusal is
  the same object with ``msgtype`` ``ERROR`` and the reason in ``message``.
- inclavared -> confidential container: inclavared sends a greeting (upstream: ``hello from inclavared``); an
  SGX server answers the binary ``MRENCLAVE (32) || MRSIGNER (32) || message`` that rats-tls' (enclave-tls')
  sample server writes from its own REPORT.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from inclavare.errors import InclavareError
from inclavare.formats.enclave_info import MAX_TEXT, MEASUREMENT_SIZE, IdentityAnswer

__all__ = [
    "Address", "EnclaveInfo", "IdentityAnswer", "InclavaredError", "GETENCLAVEINFO", "ENCLAVEINFO", "ERROR",
    "GREETING", "MAX_MESSAGE", "MAX_TEXT", "MEASUREMENT_SIZE", "decode_enclave_info", "decode_request",
    "encode_request", "parse_address",
]

GETENCLAVEINFO = "GETENCLAVEINFO"
ENCLAVEINFO = "ENCLAVEINFO"
ERROR = "ERROR"
VERSION = 1
GREETING = b"hello from inclavared"
MAX_MESSAGE = 64 * 1024  # any one message on either hop (upstream's buffers: 512 and 2048 bytes)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNIX_PATH_MAX = 107


class InclavaredError(InclavareError):
    """inclavared or its peers: a malformed message, an unreachable or misbehaving peer; the message says what and
    where."""


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE:
        raise InclavaredError(f"{what}: {len(data)} bytes, more than {MAX_MESSAGE}")
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InclavaredError(f"{what}: not JSON ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(obj, dict):
        raise InclavaredError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


# -- shelter -> inclavared


def encode_request(kind: str = GETENCLAVEINFO) -> bytes:
    """The request shelter sends (compact JSON, as Go's json.Marshal writes it)."""
    return json.dumps({"type": kind}, separators=(",", ":")).encode()


def decode_request(data: bytes) -> str:
    """The ``type`` of a client request; InclavaredError when it is not a JSON object with a string ``type``."""
    obj = _json_object(data, "request")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise InclavaredError("request: no \"type\" string")
    return kind


@dataclass
class EnclaveInfo:
    """The ``ENCLAVEINFO`` answer (or, with ``msgtype`` ERROR, a refusal). ``mrenclave``/``mrsigner``: lower-case
    hex ("" when the enclave's TEE has none); ``attested``: they come from verified evidence."""

    mrenclave: str = ""
    mrsigner: str = ""
    message: str = ""
    id: str = ""
    msgtype: str = ENCLAVEINFO
    version: int = VERSION
    attested: bool = False
    tee: str | None = None
    verifier: str | None = None
    tcb_status: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.msgtype == ERROR

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "msgtype": self.msgtype, "version": self.version,
                               "mrenclave": self.mrenclave, "mrsigner": self.mrsigner, "message": self.message}
        if not self.is_error:
            out.update(attested=self.attested, tee=self.tee, verifier=self.verifier, tcb_status=self.tcb_status,
                       claims=self.claims)
        return out

    def encode(self) -> bytes:
        """Compact JSON; a claim value JSON has no form for (bytes from a future verifier) is written as hex or
        text rather than failing the answer."""
        return json.dumps(self.to_dict(), separators=(",", ":"), default=_json_default).encode()


def _json_default(value: object) -> str:
    return value.hex() if isinstance(value, bytes | bytearray) else str(value)


def _opt_str(obj: dict[str, Any], name: str, what: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise InclavaredError(f"{what}: \"{name}\" must be a string")
    return value


def _hex_field(obj: dict[str, Any], name: str, what: str) -> str:
    value = obj.get(name, "")
    if not isinstance(value, str):
        raise InclavaredError(f"{what}: \"{name}\" must be a hex string")
    value = value.lower()
    if value and not _HEX64.fullmatch(value):
        raise InclavaredError(f"{what}: \"{name}\" {value[:80]!r} is not 32 bytes of hex")
    return value


def decode_enclave_info(data: bytes) -> EnclaveInfo:
    """An inclavared answer, checked field by field (upstream's names; ours optional)."""
    what = "inclavared's answer"
    obj = _json_object(data, what)
    msgtype = obj.get("msgtype")
    if msgtype not in (ENCLAVEINFO, ERROR):
        raise InclavaredError(f"{what}: \"msgtype\" {str(msgtype)[:40]!r} is neither {ENCLAVEINFO} nor {ERROR}")
    version = obj.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise InclavaredError(f"{what}: \"version\" {version!r}: this shelter speaks version {VERSION}")
    message = _opt_str(obj, "message", what) or ""
    ident = obj.get("id", "")
    if isinstance(ident, int) and not isinstance(ident, bool):
        ident = str(ident)
    if not isinstance(ident, str):
        raise InclavaredError(f"{what}: \"id\" must be a string")
    if msgtype == ERROR:
        return EnclaveInfo(msgtype=ERROR, message=message[:MAX_TEXT], id=ident)
    attested = obj.get("attested", False)
    if not isinstance(attested, bool):
        raise InclavaredError(f"{what}: \"attested\" must be true or false")
    claims = obj.get("claims", {})
    if claims is None:
        claims = {}
    if not isinstance(claims, dict):
        raise InclavaredError(f"{what}: \"claims\" must be an object")
    info = EnclaveInfo(mrenclave=_hex_field(obj, "mrenclave", what), mrsigner=_hex_field(obj, "mrsigner", what),
                       message=message, id=ident, attested=attested, tee=_opt_str(obj, "tee", what),
                       verifier=_opt_str(obj, "verifier", what), tcb_status=_opt_str(obj, "tcb_status", what),
                       claims=claims)
    if not info.mrenclave and not info.claims:
        raise InclavaredError(f"{what}: neither \"mrenclave\" nor \"claims\": no measurement to report")
    return info


# -- inclavared -> confidential container


# -- addresses


@dataclass(frozen=True)
class Address:
    """A TCP (``host``, ``port``) or unix (``path``) socket address."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        if self.path:
            return f"unix://{self.path}"
        return f"tcp://[{self.host}]:{self.port}" if ":" in self.host else f"tcp://{self.host}:{self.port}"


def parse_address(text: str, what: str) -> Address:
    """``tcp://HOST:PORT``, ``unix:///PATH`` (shelter's form), or upstream inclavared's ``HOST:PORT`` and
    ``/PATH``; ``[IPv6]:PORT`` too. InclavaredError naming ``what`` otherwise."""
    raw = text.strip()
    scheme, sep, _ = raw.partition("://")
    if sep and scheme not in ("tcp", "unix"):
        raise InclavaredError(f"{what} {text!r}: {scheme!r} is neither tcp nor unix")
    if raw.startswith("unix://"):
        path = raw[len("unix://"):]
    elif raw.startswith("unix:"):
        path = raw[len("unix:"):]
    elif raw.startswith("tcp://") or "/" not in raw:
        path = ""
    else:
        path = raw
    if path or raw.startswith("unix:"):
        if not path or len(path.encode()) > _UNIX_PATH_MAX or "\0" in path:
            raise InclavaredError(f"{what} {text!r}: a unix socket path of 1..{_UNIX_PATH_MAX} bytes")
        return Address(path=path)
    rest = raw[len("tcp://"):] if raw.startswith("tcp://") else raw
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise InclavaredError(f"{what} {text!r}: expected tcp://HOST:PORT, unix:///PATH, HOST:PORT or /PATH")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise InclavaredError(f"{what} {text!r}: {port_text!r} is not a TCP port (0..65535)")
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise InclavaredError(f"{what} {text!r}: {host!r} is not a host")
    return Address(host=host, port=int(port_text))
