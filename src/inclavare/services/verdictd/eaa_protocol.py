"""Upstream Inclavare verdictd's EAA protocol (enclave-attestation-architecture): the requests an attested client
sends over RATS-TLS and the answers, as bytes in and bytes out, with no I/O (the server is in eaa.py).

One JSON object per request, one answer per request, written as upstream writes them (serde_json: compact, keys
sorted, UTF-8 unescaped):

=========================  ======================================  ==============================================
request ``command``        other fields                            answer
=========================  ======================================  ==============================================
``version``                                                        ``{"status":"OK","version":"v1"}``
``echo``                   ``data`` (text)                         the text itself; then the connection ends
``Decrypt``                ``blobs``: ``[{kid, encrypted_data,     ``{"data":{encrypted_data: plaintext},
                           iv, algorithm: "AES",                   "status":"OK"}`` (base64 both); failure
                           key_length: 256}]`` (base64 data/iv)    ``{"data":{},"error":..,"status":"Fail"}``
``Get KEK``                ``kids``: list of key ids               ``{"data":{kid: key base64},"status":"OK"}``;
                                                                   failure as Decrypt's
``Get Resource Info``      ``name``                                ``{"data":{"base64size":"N"},"status":"OK"}``;
                                                                   failure ``{"error":..,"status":"Fail"}``
``Get <name>``             ``optional`` (ignored)                  the resource, base64 text; failure: the base64
                                                                   of ``{"error":..,"status":"Fail"}``
=========================  ======================================  ==============================================

Resource names: upstream's ``Policy``, ``Sigstore Config``, ``GPG Keyring``, ``Cosign Key``, ``Credential``,
and the ``repo/type/tag`` paths today's EAA KBC (confidential-containers guest-components) sends. ``Decrypt``
is AES-256-GCM with a 12-byte IV, the 16-byte tag after the ciphertext (the Rust ``aes-gcm`` layout), under the
key-encryption key named by ``kid``. Key ids are names in the key store: upstream's are file names under
/opt/verdictd/keys, today's EAA KBC sends the layer's KBS resource path (``repo/type/tag``); both are accepted,
nothing else (no ``..``, no absolute paths, at most 256 characters).

Where upstream drops the connection without a word (unparsable JSON, no or an unknown ``command``, a request
over the size limit) this answers ``{"error":..,"status":"Fail"}`` first and then ends the connection, so the
client learns why. Every field is checked (upstream panics on a missing one); errors name the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from inclavare.formats import strictjson

log = logging.getLogger(__name__)

VERSION = "v1"
UPSTREAM_RESOURCES = ("Policy", "Sigstore Config", "GPG Keyring", "Cosign Key", "Credential")
MAX_REQUEST = 64 * 1024  # bytes of one request
MAX_ITEMS = 64  # blobs of one Decrypt, kids of one Get KEK
MAX_NAME = 256  # a key id or resource name
IV_SIZE = 12
KEY_SIZE = 32
TAG_SIZE = 16

_KID = re.compile(r"[A-Za-z0-9._:@+=-]+")  # a plain name: no path separators, no spaces
_PATH = re.compile(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")  # KBS repo/type/tag


class KeyStore(Protocol):
    """Where key-encryption keys come from (the verdictd store, a dict in tests)."""

    def get_kek(self, kid: str) -> bytes | None: ...


class ResourceStore(Protocol):
    """Where ``Get <name>`` resources come from, by the name the client asks for."""

    def get_resource(self, name: str) -> bytes | None: ...


Audit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Reply:
    """One answer: its bytes, and whether the connection ends after it."""

    body: bytes
    close: bool = False


class _Fail(Exception):
    """A request the protocol answers with a failure (the message is the ``error`` text)."""


def dumps(obj: Any) -> bytes:
    """JSON as upstream's serde_json writes it: compact, keys sorted, non-ASCII as UTF-8."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def fail_with_data(error: str) -> bytes:
    """The failure shape of Decrypt and Get KEK."""
    return dumps({"status": "Fail", "data": {}, "error": error})


def fail(error: str) -> bytes:
    """The failure shape of Get Resource Info and of requests that cannot be served at all."""
    return dumps({"status": "Fail", "error": error})


def parse_request(data: bytes) -> dict[str, Any]:
    """The request object; raises ValueError saying what is wrong (strict JSON: no NaN, no duplicate keys)."""
    try:
        obj = strictjson.DECODER.decode(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise _Fail(f"parameters error: {where}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Fail(f"parameters error: {where}: not base64") from None


def is_path(name: str) -> bool:
    """A KBS resource path ``repo/type/tag`` (no empty, ``.`` or ``..`` part)."""
    return (len(name) <= MAX_NAME and _PATH.fullmatch(name) is not None
            and not any(part in (".", "..") for part in name.split("/")))


def is_kid(name: str) -> bool:
    """A key id: a plain name (upstream's key file names) or a KBS resource path (what today's EAA KBC sends as
    the ``kid`` of an encrypted layer)."""
    return (len(name) <= MAX_NAME and _KID.fullmatch(name) is not None and name not in (".", "..")) or is_path(name)


def _kid(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Fail(f"{where}: expected a non-empty string")
    if not is_kid(value):
        shown = value if len(value) <= 64 else value[:64] + "..."
        raise _Fail(f"{where}: {shown!r} is not a valid key id")
    return value


def _items(request: Mapping[str, Any], field: str, error: str) -> list[Any]:
    items = request.get(field)
    if not isinstance(items, list):
        raise _Fail(f"{error}: {field!r}: expected a list")
    if len(items) > MAX_ITEMS:
        raise _Fail(f"{error}: {field!r}: {len(items)} items, at most {MAX_ITEMS}")
    return items


def decrypt_blob(key: bytes, iv: bytes, encrypted: bytes) -> bytes:
    """AES-256-GCM open (ciphertext then 16-byte tag, no associated data); raises _Fail."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(iv, encrypted, None)
    except (InvalidTag, ValueError):
        raise _Fail("decryption failed") from None


def encrypt_blob(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM seal as a Decrypt blob's ``encrypted_data`` wants it (for the client side and tests)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key).encrypt(iv, plaintext, None)


class EaaSession:
    """The requests of one connection. ``attested``: the client's evidence was verified and appraised (only then
    are keys and resources served); ``peer``: what audit records name the client by."""

    def __init__(self, keys: KeyStore, resources: ResourceStore | None = None, *, attested: bool = True,
                 peer: Mapping[str, Any] | None = None, audit: Audit | None = None,
                 max_request: int = MAX_REQUEST, resource_policy: Callable[[str], bool] | None = None) -> None:
        self._keys = keys
        self._resource_policy = resource_policy
        self._max_request = max_request
        self._resources = resources
        self.attested = attested
        self.peer = dict(peer or {})
        self._audit = audit

    def handle(self, data: bytes) -> Reply:
        """Answer one request (never raises for any input)."""
        if len(data) > self._max_request:
            return Reply(fail(f"request too large: {len(data)} bytes, at most {self._max_request}"), close=True)
        try:
            request = parse_request(data)
        except ValueError as e:
            return Reply(fail(f"Parse request failed: {e}"), close=True)
        command = request.get("command")
        if not isinstance(command, str):
            return Reply(fail("Command error: 'command': expected a string"), close=True)
        if command == "version":
            return Reply(dumps({"status": "OK", "version": VERSION}))
        if command == "echo":
            text = request.get("data")
            return Reply((text if isinstance(text, str) else "Echo parameters error").encode(), close=True)
        if command == "Decrypt":
            return Reply(self._guarded(self._decrypt, request, fail_with_data))
        if command == "Get KEK":
            return Reply(self._guarded(self._get_kek, request, fail_with_data))
        if command == "Get Resource Info":
            return Reply(self._guarded(self._resource_info, request, fail))
        if command.startswith("Get "):
            name = command[4:]
            if self._known_resource(name):
                return Reply(self._get_resource(name))
        shown = command if len(command) <= 64 else command[:64] + "..."
        return Reply(fail(f"Command error: unknown command {shown!r}"), close=True)

    # -- commands

    def _guarded(self, fn: Callable[[Mapping[str, Any]], bytes], request: Mapping[str, Any],
                 shape: Callable[[str], bytes]) -> bytes:
        if not self.attested:
            return shape("the client is not attested (mutual attestation is off): no keys or resources")
        try:
            return fn(request)
        except _Fail as e:
            return shape(str(e))
        except Exception as e:  # the key store or the audit failed: release nothing
            log.error("EAA %s: %s: %s", request.get("command"), type(e).__name__, e)
            return shape(f"internal error ({type(e).__name__}); nothing was released")

    def _key(self, kid: str, quoted: bool) -> bytes:
        key = self._keys.get_kek(kid)
        if key is None:
            raise _Fail(f"kid: {json.dumps(kid) if quoted else kid}'s key not found")
        return bytes(key)

    def _decrypt(self, request: Mapping[str, Any]) -> bytes:
        blobs = _items(request, "blobs", "decrypt parameters error")
        out: dict[str, str] = {}
        kids: list[str] = []
        for i, blob in enumerate(blobs):
            where = f"blobs[{i}]"
            if not isinstance(blob, dict):
                raise _Fail(f"parameters error: {where}: expected an object")
            if blob.get("algorithm") != "AES":
                raise _Fail(f"parameters error: {where}.algorithm: expected \"AES\"")
            length = blob.get("key_length")
            if type(length) is not int or length != 256:
                raise _Fail(f"parameters error: {where}.key_length: expected 256")
            kid = _kid(blob.get("kid"), f"parameters error: {where}.kid")
            encrypted_text = blob.get("encrypted_data")
            encrypted = _b64(encrypted_text, f"{where}.encrypted_data")
            iv = _b64(blob.get("iv"), f"{where}.iv")
            if len(iv) != IV_SIZE:
                raise _Fail(f"parameters error: {where}.iv: {len(iv)} bytes, AES-256-GCM takes {IV_SIZE}")
            if len(encrypted) < TAG_SIZE:
                raise _Fail(f"parameters error: {where}.encrypted_data: shorter than the {TAG_SIZE}-byte tag")
            key = self._key(kid, quoted=True)
            if len(key) != KEY_SIZE:
                raise _Fail(f"kid: {json.dumps(kid)}'s key is not an AES-256 key")
            assert isinstance(encrypted_text, str)
            out[encrypted_text] = base64.b64encode(decrypt_blob(key, iv, encrypted)).decode()
            kids.append(kid)
        self._record("eaa.decrypt", {"kids": kids})
        return dumps({"status": "OK", "data": out})

    def _get_kek(self, request: Mapping[str, Any]) -> bytes:
        kids = _items(request, "kids", "get KEK parameters error")
        out: dict[str, str] = {}
        for i, value in enumerate(kids):
            kid = _kid(value, f"get KEK parameters error: kids[{i}]")
            out[kid] = base64.b64encode(self._key(kid, quoted=False)).decode()
        self._record("eaa.kek", {"kids": list(out)})
        return dumps({"status": "OK", "data": out})

    def _known_resource(self, name: str) -> bool:
        return name in UPSTREAM_RESOURCES or is_path(name)

    def _lookup(self, name: str) -> bytes | None:
        return self._resources.get_resource(name) if self._resources is not None else None

    def _resource_info(self, request: Mapping[str, Any]) -> bytes:
        name = request.get("name")
        if not isinstance(name, str) or not self._known_resource(name):
            raise _Fail("file name error")
        if is_path(name) and self._resource_policy is not None and not self._resource_policy(name):
            raise _Fail(f"Can't fetch {name}: the resource policy denies it")
        content = self._lookup(name)
        if content is None:
            raise _Fail(f"Can't fetch {name}: not found")
        size = 4 * ((len(content) + 2) // 3)
        return dumps({"status": "OK", "data": {"base64size": str(size)}})

    def _get_resource(self, name: str) -> bytes:
        try:
            return self._resource(name)
        except Exception as e:  # the store or the audit failed: release nothing
            log.error("EAA Get %s: %s: %s", name, type(e).__name__, e)
            return base64.b64encode(fail(f"internal error ({type(e).__name__}); nothing was released"))

    def _resource(self, name: str) -> bytes:
        if not self.attested:
            return base64.b64encode(fail("the client is not attested (mutual attestation is off): no resources"))
        if is_path(name) and self._resource_policy is not None and not self._resource_policy(name):
            self._record("eaa.resource", {"name": name, "outcome": "denied"})
            return base64.b64encode(fail(f"Can't fetch {name}: the resource policy denies it"))
        content = self._lookup(name)
        if content is None:
            return base64.b64encode(fail(f"Can't fetch {name}: not found"))
        self._record("eaa.resource", {"name": name})
        return base64.b64encode(bytes(content))

    def _record(self, event: str, detail: dict[str, Any]) -> None:
        if self._audit is not None:
            self._audit(event, {**detail, "peer": self.peer})
