"""verdictd as an ocicrypt key provider: the JSON protocol, key wrapping and the ``cmd`` entry point.

ocicrypt (containerd imgcrypt, skopeo >= 1.14, buildah, podman) asks a key provider to wrap a layer's key
options when it encrypts an image and to unwrap them when it decrypts one, either by running a command (JSON
on stdin, JSON on stdout: :func:`run_cmd`) or over gRPC (``keyprovider.KeyProviderService``,
:mod:`.keyprovider_grpc`). Both carry the same JSON, marshalled by Go's ``encoding/json`` from ocicrypt's
structs (keywrap/keyprovider/keyprovider.go, config/config.go)::

    {"op": "keywrap",
     "keywrapparams": {"ec": {"Parameters": {<name>: [<base64>, ...]}, "DecryptConfig": {"Parameters": ...}},
                       "optsdata": <base64>},
     "keyunwrapparams": {"dc": null, "annotation": null}}
    {"op": "keyunwrap",
     "keywrapparams": {"ec": null, "optsdata": null},
     "keyunwrapparams": {"dc": {"Parameters": {<name>: [<base64>, ...]}}, "annotation": <base64>}}

Go writes ``[]byte`` as standard base64 with padding and a nil slice or map as ``null``; the config structs
have no JSON tags, so their keys are the Go field names ``Parameters`` and ``DecryptConfig``. The answers are
``{"keywrapresults": {"annotation": <base64>}}`` and ``{"keyunwrapresults": {"optsdata": <base64>}}``: only
the half that applies (Go's reader leaves the other half zero; Rust readers such as ocicrypt-rs treat it as
optional, and would refuse the ``null`` Go itself would write there). Go's reader also takes ``[]byte`` as a
JSON array of numbers, which is how Rust clients write and read them: accepted on input, and written on
output with ``KeyProvider(byte_arrays=True)``.

How verdictd answers (the provider is named ``verdictd`` in the ocicrypt config by default):

* **keywrap**: the key id is ``ec.Parameters["verdictd"]`` (``skopeo copy --encryption-key
  provider:verdictd:<key id>``); the key is the AES-256 key stored as secret kind ``key`` under that name
  (the same keys the EAA protocol hands out). The annotation is our JSON, as UTF-8 bytes (ocicrypt base64s it
  into the layer's ``org.opencontainers.image.enc.keys.provider.verdictd`` annotation)::

      {"kid": <key id>, "alg": "A256GCM", "iv": base64(12 random bytes), "wrapped": base64(ciphertext||tag)}

  AES-256-GCM with additional data ``b"verdictd-keyprovider-v1\\0" + kid``, so a wrapped value moved under
  another kid, or any changed byte, fails to open. (Upstream Inclavare's verdictd wrote AES-256-CBC without
  integrity and byte arrays as JSON numbers; those annotations are not read.)
* **keyunwrap**: only for an attested caller. The caller presents an EAR attestation token from verdictd
  (:mod:`.tokens`, e.g. the KBS ``/attest`` answer) in ``dc.Parameters["verdictd-token"]``, or as the
  provider's own parameter (``--decryption-key provider:verdictd:<token>``, the one parameter skopeo and
  ctr can pass). The token must verify, carry exactly one appraisal whose ``ear.status`` is an allowed tier
  (``affirming`` by default), and the key policy (Trustee's ``data.policy.allow`` shape, input = the
  token's annotated evidence plus ``tee``, ``tier``, ``plugin: "keyprovider"``, ``kid``, ``resource``) must
  allow the key. Otherwise nothing is decrypted: :class:`KeyProviderError` with ``code`` ``unauthenticated``
  (no or bad token) or ``denied`` (tier or policy).

Every input is bounded (:data:`MAX_INPUT` for the JSON, :data:`MAX_OPTSDATA`, :data:`MAX_PARAMS` ...); every
refusal is one line naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from inclavare.services.verdictd.errors import VerdictdError

OP_WRAP = "keywrap"
OP_UNWRAP = "keyunwrap"
DEFAULT_PROVIDER = "verdictd"
TOKEN_PARAM = "verdictd-token"
KIND_KEY = "key"
ALG = "A256GCM"
KEY_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16
AAD_PREFIX = b"verdictd-keyprovider-v1\x00"
DEFAULT_TIERS = ("affirming",)

MAX_INPUT = 1 << 20  # one protocol JSON document (stdin or a gRPC message)
MAX_OPTSDATA = 64 << 10  # ocicrypt's layer key options are a few hundred bytes of JSON
MAX_ANNOTATION = 128 << 10
MAX_PARAMS = 64  # names in one Parameters map
MAX_PARAM_VALUES = 64  # values under one name
MAX_PARAM_BYTES = 512 << 10  # one value (a token may be large: its claims carry the evidence's)
MAX_KID = 256
MAX_DEPTH = 8

_KID_RE = re.compile(r"[A-Za-z0-9._/-]{1,256}")


class KeyProviderError(VerdictdError):
    """A key provider request refused; ``code`` says which kind: ``invalid`` (malformed input),
    ``unauthenticated`` (no or bad attestation token), ``denied`` (tier or policy), ``not_found`` (no such
    key), ``unavailable`` (the store or audit failed)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _invalid(message: str) -> KeyProviderError:
    return KeyProviderError("invalid", message)


# --------------------------------------------------------------------------------------------------
# The JSON codec (Go encoding/json of ocicrypt's structs)


def b64encode(data: bytes) -> str:
    """Go's ``[]byte`` in JSON: standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64decode(value: object, where: str, limit: int) -> bytes:
    """A Go ``[]byte`` from JSON, read as Go's ``json.Unmarshal`` reads one: ``null`` is empty; a string is
    standard base64 with padding (CR and LF skipped); an array of integers 0..255 is the bytes themselves
    (what Rust's serde writes for ``Vec<u8>``: ocicrypt-rs, upstream Inclavare's verdictd). Over ``limit``
    decoded bytes is refused."""
    if value is None:
        return b""
    if isinstance(value, list):
        if len(value) > limit:
            raise _invalid(f"{where}: more than {limit} bytes")
        if not all(type(b) is int and 0 <= b <= 255 for b in value):
            raise _invalid(f"{where}: a byte array must hold integers 0..255")
        return bytes(value)
    if not isinstance(value, str):
        raise _invalid(f"{where}: expected base64, a byte array or null, got {type(value).__name__}")
    text = value.replace("\r", "").replace("\n", "")
    if len(text) > (limit + 2) // 3 * 4:
        raise _invalid(f"{where}: more than {limit} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where}: not standard base64") from None


def _params(value: object, where: str) -> dict[str, list[bytes]]:
    """A Go ``map[string][][]byte``: ``null`` or an object of ``null`` / arrays of base64 (or null)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{where}: expected an object or null, got {type(value).__name__}")
    if len(value) > MAX_PARAMS:
        raise _invalid(f"{where}: {len(value)} names, more than {MAX_PARAMS}")
    out: dict[str, list[bytes]] = {}
    for name, values in value.items():
        shown = name[:64]
        if values is None:
            out[name] = []
            continue
        if not isinstance(values, list):
            raise _invalid(f"{where}[{shown!r}]: expected an array or null, got {type(values).__name__}")
        if len(values) > MAX_PARAM_VALUES:
            raise _invalid(f"{where}[{shown!r}]: {len(values)} values, more than {MAX_PARAM_VALUES}")
        out[name] = [b64decode(v, f"{where}[{shown!r}][{i}]", MAX_PARAM_BYTES) for i, v in enumerate(values)]
    return out


def _object(value: object, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"{where}: expected an object or null, got {type(value).__name__}")
    return value


@dataclass
class WrapRequest:
    """``keywrapparams``: the encrypt config's parameters (and its decrypt config's) and the key options."""

    parameters: dict[str, list[bytes]] = field(default_factory=dict)
    dc_parameters: dict[str, list[bytes]] = field(default_factory=dict)
    optsdata: bytes = b""


@dataclass
class UnwrapRequest:
    """``keyunwrapparams``: the decrypt config's parameters and the annotation this provider wrote."""

    parameters: dict[str, list[bytes]] = field(default_factory=dict)
    annotation: bytes = b""


def _check_depth(text: bytes) -> None:
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == 0x5C:
                escaped = True
            elif ch == 0x22:
                in_string = False
        elif ch == 0x22:
            in_string = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                raise _invalid(f"key provider input: JSON nested deeper than {MAX_DEPTH} levels")
        elif ch in (0x5D, 0x7D):
            depth -= 1


def decode_input(data: bytes) -> WrapRequest | UnwrapRequest:
    """Parse one ``KeyProviderKeyWrapProtocolInput`` JSON document (unknown keys are ignored, as Go does)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _invalid(f"key provider input: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_INPUT:
        raise _invalid(f"key provider input: {len(data)} bytes, more than {MAX_INPUT}")
    _check_depth(data)
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise _invalid("key provider input: not UTF-8") from None
    except ValueError as e:
        raise _invalid(f"key provider input: not JSON ({str(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise _invalid("key provider input: expected a JSON object")
    op = doc.get("op")
    if op == OP_WRAP:
        params = _object(doc.get("keywrapparams"), "keywrapparams") or {}
        ec = _object(params.get("ec"), "keywrapparams.ec")
        if ec is None:
            raise _invalid("keywrapparams.ec: missing; keywrap needs the encrypt config's Parameters")
        dc = _object(ec.get("DecryptConfig"), "keywrapparams.ec.DecryptConfig") or {}
        return WrapRequest(parameters=_params(ec.get("Parameters"), "keywrapparams.ec.Parameters"),
                           dc_parameters=_params(dc.get("Parameters"), "keywrapparams.ec.DecryptConfig.Parameters"),
                           optsdata=b64decode(params.get("optsdata"), "keywrapparams.optsdata", MAX_OPTSDATA))
    if op == OP_UNWRAP:
        params = _object(doc.get("keyunwrapparams"), "keyunwrapparams") or {}
        dc = _object(params.get("dc"), "keyunwrapparams.dc") or {}
        return UnwrapRequest(parameters=_params(dc.get("Parameters"), "keyunwrapparams.dc.Parameters"),
                             annotation=b64decode(params.get("annotation"), "keyunwrapparams.annotation",
                                                  MAX_ANNOTATION))
    raise _invalid(f"key provider input: op {str(op)[:40]!r} is neither {OP_WRAP!r} nor {OP_UNWRAP!r}")


def encode_wrap_input(parameters: dict[str, list[bytes]], optsdata: bytes,
                      dc_parameters: dict[str, list[bytes]] | None = None) -> bytes:
    """The keywrap input exactly as ocicrypt's ``json.Marshal`` writes it (for tests and clients)."""
    ec = {"Parameters": _encode_params(parameters), "DecryptConfig": {"Parameters": _encode_params(dc_parameters)}}
    doc = {"op": OP_WRAP, "keywrapparams": {"ec": ec, "optsdata": b64encode(optsdata)},
           "keyunwrapparams": {"dc": None, "annotation": None}}
    return json.dumps(doc, separators=(",", ":")).encode()


def encode_unwrap_input(parameters: dict[str, list[bytes]] | None, annotation: bytes) -> bytes:
    """The keyunwrap input exactly as ocicrypt's ``json.Marshal`` writes it (for tests and clients)."""
    dc = None if parameters is None else {"Parameters": _encode_params(parameters)}
    doc = {"op": OP_UNWRAP, "keywrapparams": {"ec": None, "optsdata": None},
           "keyunwrapparams": {"dc": dc, "annotation": b64encode(annotation)}}
    return json.dumps(doc, separators=(",", ":")).encode()


def _encode_params(params: dict[str, list[bytes]] | None) -> dict[str, list[str]] | None:
    if params is None:
        return None
    return {name: [b64encode(v) for v in values] for name, values in params.items()}


def _bytes_json(data: bytes, arrays: bool) -> str | list[int]:
    return list(data) if arrays else b64encode(data)


def encode_wrap_output(annotation: bytes, arrays: bool = False) -> bytes:
    """The keywrap answer; ``arrays`` writes the bytes as a JSON array of numbers (see :class:`KeyProvider`)."""
    doc = {"keywrapresults": {"annotation": _bytes_json(annotation, arrays)}}
    return json.dumps(doc, separators=(",", ":")).encode()


def encode_unwrap_output(optsdata: bytes, arrays: bool = False) -> bytes:
    """The keyunwrap answer; ``arrays`` as for :func:`encode_wrap_output`."""
    doc = {"keyunwrapresults": {"optsdata": _bytes_json(optsdata, arrays)}}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_output(data: bytes) -> dict[str, bytes | None]:
    """What ocicrypt reads back: ``{"annotation": ..., "optsdata": ...}`` (None where absent)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise _invalid("key provider output: not JSON") from None
    if not isinstance(doc, dict):
        raise _invalid("key provider output: expected a JSON object")
    out: dict[str, bytes | None] = {"annotation": None, "optsdata": None}
    for half, name in (("keywrapresults", "annotation"), ("keyunwrapresults", "optsdata")):
        part = _object(doc.get(half), half)
        if part is not None and part.get(name) is not None:
            out[name] = b64decode(part[name], f"{half}.{name}", MAX_INPUT)
    return out


# --------------------------------------------------------------------------------------------------
# The annotation


def check_kid(kid: object, where: str = "kid") -> str:
    """A key id: 1..256 of ``[A-Za-z0-9._/-]``, no empty, ``.`` or ``..`` path part."""
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid) or any(p in ("", ".", "..") for p in kid.split("/")):
        raise _invalid(f"{where}: {str(kid)[:64]!r} is not a key id (1..{MAX_KID} of A-Z a-z 0-9 . _ / -)")
    return kid


def _aad(kid: str) -> bytes:
    return AAD_PREFIX + kid.encode()


def seal_annotation(key: bytes, kid: str, optsdata: bytes) -> bytes:
    """Our annotation (see the module doc) for ``optsdata`` wrapped under ``key``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    iv = secrets.token_bytes(IV_SIZE)
    wrapped = AESGCM(key).encrypt(iv, optsdata, _aad(kid))
    doc = {"kid": kid, "alg": ALG, "iv": b64encode(iv), "wrapped": b64encode(wrapped)}
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Annotation:
    kid: str
    iv: bytes
    wrapped: bytes


def parse_annotation(data: bytes) -> Annotation:
    """Parse (not open) our annotation; anything else is refused with the field named."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise _invalid("annotation: not verdictd's JSON annotation") from None
    if not isinstance(doc, dict):
        raise _invalid("annotation: expected a JSON object")
    if doc.get("alg") != ALG:
        raise _invalid(f"annotation.alg: {str(doc.get('alg'))[:32]!r} is not {ALG}")
    kid = check_kid(doc.get("kid"), "annotation.kid")
    iv = b64decode(doc.get("iv"), "annotation.iv", IV_SIZE)
    if len(iv) != IV_SIZE:
        raise _invalid(f"annotation.iv: {len(iv)} bytes, expected {IV_SIZE}")
    wrapped = b64decode(doc.get("wrapped"), "annotation.wrapped", MAX_OPTSDATA + TAG_SIZE)
    if len(wrapped) < TAG_SIZE:
        raise _invalid(f"annotation.wrapped: {len(wrapped)} bytes, shorter than the {TAG_SIZE}-byte GCM tag")
    return Annotation(kid, iv, wrapped)


def open_annotation(key: bytes, ann: Annotation) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(ann.iv, ann.wrapped, _aad(ann.kid))
    except InvalidTag:
        raise _invalid(f"annotation: does not open under key {ann.kid!r} (altered, or wrapped with another "
                       f"key)") from None


# --------------------------------------------------------------------------------------------------
# The provider


class KeyStore(Protocol):
    """Where the wrapping keys live (store.Store: secret kind ``key``)."""

    def get_secret(self, kind: str, name: str) -> bytes | None: ...


class TokenVerifier(Protocol):
    """tokens.TokenIssuer (or anything checking an EAR JWT): the claims, or an exception."""

    def verify(self, token: str) -> dict[str, Any]: ...


class KeyPolicy(Protocol):
    """Whether an attested caller may have a key: Trustee's ``data.policy.allow`` over the input (the daemon
    feeds policy.allow_resource with the owner's resource policy; the KBS Appraiser fits as it is)."""

    def allow_resource(self, input: dict[str, Any]) -> bool: ...  # noqa: A002 (Rego's word)


def _first_value(params: dict[str, list[bytes]], names: Iterable[str]) -> bytes | None:
    for name in names:
        for value in params.get(name, []):
            if value and value != b"Enabled":
                return value
    return None


class KeyProvider:
    """Wraps and unwraps layer key options with the store's keys; unwrapping needs an attestation token.

    ``tiers``: the ``ear.status`` values a token may have; ``audit``: called with an event and a detail dict
    for every release and refusal (store.Store.audit); if it raises, nothing is released. ``byte_arrays``:
    answer bytes as JSON arrays of numbers instead of Go's base64 strings. Go's ocicrypt reads either; the
    Rust ocicrypt-rs (CoCo's image-rs) declares the answers' fields as serde ``Vec<u8>`` and reads only
    arrays, as upstream Inclavare's verdictd wrote them. Inputs are read in both forms regardless."""

    def __init__(self, keys: KeyStore, tokens: TokenVerifier, policy: KeyPolicy, *, name: str = DEFAULT_PROVIDER,
                 tiers: Iterable[str] = DEFAULT_TIERS,
                 audit: Callable[[str, dict[str, Any]], object] | None = None, byte_arrays: bool = False) -> None:
        self.keys, self.tokens, self.policy, self.name = keys, tokens, policy, name
        self.byte_arrays = byte_arrays
        self.tiers = frozenset(tiers)
        self._audit = audit

    def _record(self, event: str, **detail: Any) -> None:
        if self._audit is not None:
            try:
                self._audit(event, detail)
            except Exception as e:  # noqa: BLE001 (no audit record, no release)
                raise KeyProviderError("unavailable", f"audit record failed: {type(e).__name__}") from None

    def _key(self, kid: str) -> bytes:
        try:
            key = self.keys.get_secret(KIND_KEY, kid)
        except VerdictdError as e:
            raise KeyProviderError("unavailable", f"key {kid!r}: {str(e).splitlines()[0][:160]}") from None
        if key is None:
            raise KeyProviderError("not_found", f"key {kid!r}: no such key in verdictd's store")
        if len(key) != KEY_SIZE:
            raise KeyProviderError("invalid", f"key {kid!r}: {len(key)} bytes, not an AES-256 key")
        return key

    def handle(self, data: bytes) -> bytes:
        """One protocol exchange: input JSON in, output JSON out (raises KeyProviderError)."""
        req = decode_input(data)
        if isinstance(req, WrapRequest):
            return encode_wrap_output(self.wrap(req), self.byte_arrays)
        return encode_unwrap_output(self.unwrap(req), self.byte_arrays)

    def wrap(self, req: WrapRequest) -> bytes:
        values = {v for v in req.parameters.get(self.name, []) if v and v != b"Enabled"}
        if not values:
            raise _invalid(f"keywrapparams.ec.Parameters[{self.name!r}]: no key id "
                           f"(use --encryption-key provider:{self.name}:<key id>)")
        if len(values) > 1:
            raise _invalid(f"keywrapparams.ec.Parameters[{self.name!r}]: {len(values)} different key ids; "
                           f"one layer is wrapped under one key")
        raw = values.pop()
        try:
            kid = check_kid(raw.decode("ascii"), f"keywrapparams.ec.Parameters[{self.name!r}]")
        except UnicodeDecodeError:
            raise _invalid(f"keywrapparams.ec.Parameters[{self.name!r}]: the key id is not ASCII") from None
        if not req.optsdata:
            raise _invalid("keywrapparams.optsdata: empty; nothing to wrap")
        annotation = seal_annotation(self._key(kid), kid, req.optsdata)
        self._record("keyprovider.wrap", kid=kid, outcome="wrapped")
        return annotation

    def _claims(self, params: dict[str, list[bytes]]) -> tuple[str, str, dict[str, Any]]:
        raw = _first_value(params, (TOKEN_PARAM, self.name))
        if raw is None:
            raise KeyProviderError("unauthenticated", f"keyunwrapparams.dc.Parameters: no attestation token "
                                   f"(give {TOKEN_PARAM!r}, or provider:{self.name}:<token>)")
        try:
            claims = self.tokens.verify(raw.decode("ascii"))
        except UnicodeDecodeError:
            raise KeyProviderError("unauthenticated", "attestation token: not ASCII") from None
        except Exception as e:  # noqa: BLE001 (whatever the token library raises, the token is refused)
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise KeyProviderError("unauthenticated", f"attestation token: {why}") from None
        submods = claims.get("submods") if isinstance(claims, dict) else None
        if not isinstance(submods, dict) or len(submods) != 1:
            raise KeyProviderError("unauthenticated", "attestation token: expected exactly one appraisal in submods")
        ((tee, appraisal),) = submods.items()
        tier = appraisal.get("ear.status") if isinstance(appraisal, dict) else None
        evidence = appraisal.get("ear.veraison.annotated-evidence") if isinstance(appraisal, dict) else None
        if not isinstance(tier, str) or not isinstance(evidence, dict):
            raise KeyProviderError("unauthenticated", f"attestation token: submods.{str(tee)[:32]} has no status "
                                   f"or annotated evidence")
        return str(tee), tier, evidence

    def unwrap(self, req: UnwrapRequest) -> bytes:
        if not req.annotation:
            raise _invalid("keyunwrapparams.annotation: empty")
        ann = parse_annotation(req.annotation)
        try:
            tee, tier, evidence = self._claims(req.parameters)
        except KeyProviderError as e:
            self._record("keyprovider.unwrap", kid=ann.kid, outcome="unauthenticated", reason=str(e)[:200])
            raise
        if tier not in self.tiers:
            self._record("keyprovider.unwrap", kid=ann.kid, tee=tee, tier=tier, outcome="denied")
            raise KeyProviderError("denied", f"attestation token: ear.status {tier!r} is not one of "
                                   f"{', '.join(sorted(self.tiers))}; key {ann.kid!r} not released")
        policy_input = {**evidence, "tee": tee, "tier": tier, "plugin": "keyprovider", "kid": ann.kid,
                        "resource": ann.kid, "resource-path": ann.kid.split("/")}
        try:
            allowed = self.policy.allow_resource(policy_input) is True
        except Exception as e:  # noqa: BLE001 (a policy that fails allows nothing)
            why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise KeyProviderError("denied", f"key policy failed: {why}") from None
        if not allowed:
            self._record("keyprovider.unwrap", kid=ann.kid, tee=tee, tier=tier, outcome="denied")
            raise KeyProviderError("denied", f"key policy denied key {ann.kid!r} to this {tee} TEE")
        optsdata = open_annotation(self._key(ann.kid), ann)
        self._record("keyprovider.unwrap", kid=ann.kid, tee=tee, tier=tier, outcome="released")
        return optsdata


def run_cmd(stdin_bytes: bytes, provider: KeyProvider) -> bytes:
    """The ``cmd`` protocol (``verdictd keyprovider``): the input JSON read from stdin in, the output JSON to
    write to stdout out. Refusals raise KeyProviderError; the CLI prints its one line to stderr and exits
    non-zero, which ocicrypt reports as the provider's failure."""
    return provider.handle(stdin_bytes)
