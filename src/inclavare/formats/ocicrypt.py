"""ocicrypt's image-encryption formats (containers/ocicrypt, skopeo, containerd imgcrypt, buildah): pure codecs.

An encrypted layer is an ordinary layer descriptor whose media type has ``+encrypted`` appended and whose
annotations carry how to decrypt it:

* ``org.opencontainers.image.enc.pubopts``: base64 of the *public* options JSON, ``{"cipher": ..., "hmac":
  <base64>, "cipheroptions": {<name>: <base64>}}``: the layer cipher and the HMAC-SHA256 of the ciphertext;
* ``org.opencontainers.image.enc.keys.<scheme>`` (``jwe``, ``pgp``, ``pkcs7``, ``pkcs11``, ``provider.<name>``):
  one or more wrapped copies of the *private* options, each base64, joined by commas. The private options JSON
  is ``{"symkey": <base64>, "digest": "sha256:...", "cipheroptions": {"nonce": <base64>}}``: the layer key, the
  digest of the plaintext blob, and the CTR nonce.

The JSON is what Go's ``encoding/json`` writes for ocicrypt's structs (blockcipher/blockcipher.go): members in
the structs' field order, ``[]byte`` as standard padded base64, maps with sorted keys, a nil slice or map as
``null``, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped. The encoders here write exactly that; the decoders
are stricter than Go (exact member names, no duplicates, no unknown members, a digest that parses): an
option we do not understand may carry a check we would skip, so it is refused rather than ignored.

No I/O: bytes in, typed values out; every refusal is an :class:`OcicryptError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from inclavare.errors import InclavareError

ANNOTATION_PREFIX = "org.opencontainers.image.enc."
ANNOTATION_PUBOPTS = ANNOTATION_PREFIX + "pubopts"
ANNOTATION_KEYS_PREFIX = ANNOTATION_PREFIX + "keys."
ANNOTATION_JWE = ANNOTATION_KEYS_PREFIX + "jwe"
ANNOTATION_PROVIDER_PREFIX = ANNOTATION_KEYS_PREFIX + "provider."
# the schemes ocicrypt registers besides jwe and key providers; recognised, so "encrypted for pgp" can be said
ANNOTATION_OTHER_SCHEMES = {ANNOTATION_KEYS_PREFIX + s: s for s in ("pgp", "pkcs7", "pkcs11")}

CIPHER_AES256CTR = "AES_256_CTR_HMAC_SHA256"
ENCRYPTED_SUFFIX = "+encrypted"

# The layer media types ocicrypt encrypts (spec/spec.go: these with +encrypted) and the WASM layer type.
LAYER_MEDIA_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.wasm.content.layer.v1+wasm",
})
ENCRYPTED_LAYER_MEDIA_TYPES = frozenset(t + ENCRYPTED_SUFFIX for t in LAYER_MEDIA_TYPES)

MAX_OPTIONS = 64 << 10  # an options document is a few hundred bytes; a wrapped annotation a few KiB
MAX_ANNOTATION = 1 << 20
MAX_WRAPPED = 64  # wrapped copies of one layer's key under one scheme
MAX_CIPHEROPTIONS = 16

_DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")
_PROVIDER_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


class OcicryptError(InclavareError):
    """An encrypted image's metadata, options or layer is malformed, unsupported, or fails to verify; the message
    names what and where. The one error type of image encryption (codec, cipher, key wrappers, layouts)."""


# --------------------------------------------------------------------------------------------------
# media types


def is_encrypted_media_type(media_type: str) -> bool:
    """True for a layer media type ending in ``+encrypted``."""
    return media_type.endswith(ENCRYPTED_SUFFIX)


def encrypted_media_type(media_type: str, where: str = "mediaType") -> str:
    """The ``+encrypted`` form of a plain layer media type ocicrypt encrypts; other types are refused."""
    if media_type not in LAYER_MEDIA_TYPES:
        shown = media_type[:120]
        if is_encrypted_media_type(media_type):
            raise OcicryptError(f"{where}: {shown!r} is already encrypted")
        raise OcicryptError(f"{where}: {shown!r} is not a layer media type ocicrypt encrypts (OCI layer tar, "
                            f"tar+gzip, tar+zstd, non-distributable, or wasm)")
    return media_type + ENCRYPTED_SUFFIX


def plain_media_type(media_type: str, where: str = "mediaType") -> str:
    """The plain media type of an encrypted layer's (``+encrypted`` removed); unknown types are refused."""
    if media_type not in ENCRYPTED_LAYER_MEDIA_TYPES:
        raise OcicryptError(f"{where}: {media_type[:120]!r} is not an encrypted layer media type")
    return media_type[: -len(ENCRYPTED_SUFFIX)]


def compression(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``""`` for a (plain or encrypted) layer media type."""
    base = media_type[: -len(ENCRYPTED_SUFFIX)] if is_encrypted_media_type(media_type) else media_type
    return "gzip" if base.endswith("+gzip") else "zstd" if base.endswith("+zstd") else ""


def check_digest(value: object, where: str = "digest") -> str:
    """An OCI digest string ``sha256:<64 hex>`` (or sha384/sha512), lower-case hex."""
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise OcicryptError(f"{where}: {str(value)[:80]!r} is not a sha256/sha384/sha512 digest")
    return value


def provider_annotation(name: str) -> str:
    """The annotation holding a key provider's wrapped keys: ``org.opencontainers.image.enc.keys.provider.NAME``."""
    if not _PROVIDER_RE.fullmatch(name):
        raise OcicryptError(f"key provider name {name[:64]!r}: use 1..128 of A-Z a-z 0-9 . _ -")
    return ANNOTATION_PROVIDER_PREFIX + name


def wrapped_key_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """The ``org.opencontainers.image.enc.keys.*`` annotations of a descriptor: name -> value."""
    return {k: v for k, v in annotations.items() if k.startswith(ANNOTATION_KEYS_PREFIX)}


def without_encryption_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """A descriptor's annotations minus ocicrypt's namespace (``org.opencontainers.image.enc.*``), as ocicrypt's
    FilterOutAnnotations does when a layer is decrypted or re-encrypted."""
    return {k: v for k, v in annotations.items() if not k.startswith(ANNOTATION_PREFIX)}


# --------------------------------------------------------------------------------------------------
# Go's encoding/json


def go_json_string(text: str) -> str:
    """A JSON string as Go's ``json.Marshal`` writes it: UTF-8 kept, HTML-sensitive characters and the JS line
    separators escaped (``<`` ``>`` ``&`` U+2028 U+2029), control characters as ``\\u00XX`` except ``\\n``
    ``\\r`` ``\\t``."""
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or ch in "<>&" or o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_bytes(data: bytes | None) -> str:
    return "null" if data is None else go_json_string(base64.b64encode(data).decode("ascii"))


def _go_bytes_map(mapping: dict[str, bytes] | None) -> str:
    if mapping is None:
        return "null"
    return "{" + ",".join(f"{go_json_string(k)}:{_go_bytes(mapping[k])}" for k in sorted(mapping)) + "}"


def _loads(data: bytes, where: str, limit: int = MAX_OPTIONS) -> dict[str, Any]:
    from inclavare.formats import strictjson

    if len(data) > limit:
        raise OcicryptError(f"{where}: {len(data)} bytes, more than {limit}")
    try:
        doc = strictjson.loads(bytes(data).decode("utf-8"))
    except UnicodeDecodeError:
        raise OcicryptError(f"{where}: not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise OcicryptError(f"{where}: not JSON ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(doc, dict):
        raise OcicryptError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    return doc


def b64decode(value: object, where: str, *, limit: int = MAX_OPTIONS) -> bytes:
    """A Go ``[]byte`` member: standard padded base64 (``null`` reads as empty, as Go reads it)."""
    if value is None:
        return b""
    if not isinstance(value, str):
        raise OcicryptError(f"{where}: expected base64, got {type(value).__name__}")
    if len(value) > (limit + 2) // 3 * 4:
        raise OcicryptError(f"{where}: more than {limit} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise OcicryptError(f"{where}: not standard base64") from None


def _bytes_map(value: object, where: str) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OcicryptError(f"{where}: expected an object of base64 values, got {type(value).__name__}")
    if len(value) > MAX_CIPHEROPTIONS:
        raise OcicryptError(f"{where}: {len(value)} members, more than {MAX_CIPHEROPTIONS}")
    return {k: b64decode(v, f"{where}.{k[:32]}") for k, v in value.items()}


def _no_unknown(doc: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = [k for k in doc if k not in known]
    if extra:
        raise OcicryptError(f"{where}: unknown member {extra[0][:40]!r} (known: {', '.join(known)})")


# --------------------------------------------------------------------------------------------------
# the options


@dataclass(frozen=True)
class PublicOptions:
    """PublicLayerBlockCipherOptions: the cipher, the ciphertext's HMAC and public cipher options."""

    cipher: str
    hmac: bytes
    cipheroptions: dict[str, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The JSON ocicrypt's ``json.Marshal(opts.Public)`` writes."""
        return (f'{{"cipher":{go_json_string(self.cipher)},"hmac":{_go_bytes(self.hmac)},'
                f'"cipheroptions":{_go_bytes_map(self.cipheroptions)}}}').encode()

    def annotation(self) -> str:
        """The value of ``org.opencontainers.image.enc.pubopts``."""
        return base64.b64encode(self.encode()).decode("ascii")


@dataclass(frozen=True)
class PrivateOptions:
    """PrivateLayerBlockCipherOptions: the layer key, the plaintext blob's digest and private cipher options
    (AES-CTR's ``nonce``). This is what the key wrappers wrap (``optsdata``)."""

    symkey: bytes
    digest: str
    cipheroptions: dict[str, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The JSON ocicrypt's ``json.Marshal(opts.Private)`` writes."""
        return (f'{{"symkey":{_go_bytes(self.symkey)},"digest":{go_json_string(self.digest)},'
                f'"cipheroptions":{_go_bytes_map(self.cipheroptions)}}}').encode()

    def __repr__(self) -> str:  # never print the key
        return f"PrivateOptions(symkey=<{len(self.symkey)} bytes>, digest={self.digest!r})"


def decode_public(data: bytes, where: str = "pubopts") -> PublicOptions:
    """Parse public options JSON. ``hmac`` also read from ``cipheroptions["hmac"]`` where ocicrypt before v1.1
    kept it; exactly one place may hold it."""
    doc = _loads(data, where)
    _no_unknown(doc, ("cipher", "hmac", "cipheroptions"), where)
    cipher = doc.get("cipher")
    if not isinstance(cipher, str) or not cipher:
        raise OcicryptError(f"{where}.cipher: missing; ocicrypt writes {CIPHER_AES256CTR!r}")
    hmac = b64decode(doc.get("hmac"), f"{where}.hmac")
    options = _bytes_map(doc.get("cipheroptions"), f"{where}.cipheroptions")
    old = options.pop("hmac", None)
    if old is not None:
        if hmac:
            raise OcicryptError(f"{where}: hmac given twice (hmac and cipheroptions.hmac)")
        hmac = old
    return PublicOptions(cipher, hmac, options)


def decode_pubopts_annotation(value: object, where: str = ANNOTATION_PUBOPTS) -> PublicOptions:
    """Parse the ``pubopts`` annotation's value (base64 of the JSON)."""
    if not isinstance(value, str) or not value:
        raise OcicryptError(f"{where}: missing; an encrypted layer needs its public options")
    return decode_public(b64decode(value, where), where)


def decode_private(data: bytes, where: str = "private options") -> PrivateOptions:
    """Parse private options JSON (what a key wrapper unwrapped). ``previouslayersdigest`` (an unmerged ocicrypt
    proposal) is accepted only empty: a non-empty one asks for a check this reader does not make."""
    doc = _loads(data, where)
    _no_unknown(doc, ("symkey", "digest", "cipheroptions", "previouslayersdigest"), where)
    if doc.get("previouslayersdigest") not in (None, ""):
        raise OcicryptError(f"{where}.previouslayersdigest: set, and not supported; refusing rather than "
                            f"skipping its check")
    symkey = b64decode(doc.get("symkey"), f"{where}.symkey")
    if not symkey:
        raise OcicryptError(f"{where}.symkey: missing")
    digest = check_digest(doc.get("digest"), f"{where}.digest")
    return PrivateOptions(symkey, digest, _bytes_map(doc.get("cipheroptions"), f"{where}.cipheroptions"))


# --------------------------------------------------------------------------------------------------
# wrapped-key annotations


def split_wrapped(value: object, where: str) -> list[bytes]:
    """A ``keys.*`` annotation's value: comma-separated base64 blobs, one per wrapped copy."""
    if not isinstance(value, str) or not value:
        raise OcicryptError(f"{where}: empty")
    if len(value) > MAX_ANNOTATION:
        raise OcicryptError(f"{where}: {len(value)} characters, more than {MAX_ANNOTATION}")
    parts = value.split(",")
    if len(parts) > MAX_WRAPPED:
        raise OcicryptError(f"{where}: {len(parts)} wrapped keys, more than {MAX_WRAPPED}")
    return [b64decode(p, f"{where}[{i}]", limit=MAX_ANNOTATION) for i, p in enumerate(parts)]


def join_wrapped(blobs: list[bytes]) -> str:
    """The annotation value for wrapped copies (ocicrypt's preWrapKeys: base64 each, join with commas)."""
    return ",".join(base64.b64encode(b).decode("ascii") for b in blobs)


# --------------------------------------------------------------------------------------------------
# the key provider protocol (client side: what ocicrypt sends and reads; verdictd is a server)


def _params_json(params: dict[str, list[bytes]] | None) -> str:
    if params is None:
        return "null"
    items = (f"{go_json_string(k)}:[{','.join(_go_bytes(v) for v in params[k])}]" for k in sorted(params))
    return "{" + ",".join(items) + "}"


def keyprovider_wrap_input(parameters: dict[str, list[bytes]], optsdata: bytes,
                           dc_parameters: dict[str, list[bytes]] | None = None) -> bytes:
    """KeyProviderKeyWrapProtocolInput for ``keywrap`` as ocicrypt's ``json.Marshal`` writes it: the encrypt
    config (its Go field names ``Parameters`` and ``DecryptConfig``) and the private options to wrap."""
    ec = f'{{"Parameters":{_params_json(parameters)},"DecryptConfig":{{"Parameters":{_params_json(dc_parameters)}}}}}'
    return (f'{{"op":"keywrap","keywrapparams":{{"ec":{ec},"optsdata":{_go_bytes(optsdata)}}},'
            f'"keyunwrapparams":{{"dc":null,"annotation":null}}}}').encode()


def keyprovider_unwrap_input(parameters: dict[str, list[bytes]], annotation: bytes) -> bytes:
    """KeyProviderKeyWrapProtocolInput for ``keyunwrap``: the decrypt config and one wrapped annotation."""
    return (f'{{"op":"keyunwrap","keywrapparams":{{"ec":null,"optsdata":null}},'
            f'"keyunwrapparams":{{"dc":{{"Parameters":{_params_json(parameters)}}},'
            f'"annotation":{_go_bytes(annotation)}}}}}').encode()


def _go_bytes_in(value: object, where: str) -> bytes:
    """A []byte as Go reads it: base64, null, or an array of 0..255 (what Rust key providers write)."""
    if isinstance(value, list):
        if len(value) > MAX_ANNOTATION or not all(type(b) is int and 0 <= b <= 255 for b in value):
            raise OcicryptError(f"{where}: a byte array must hold at most {MAX_ANNOTATION} integers 0..255")
        return bytes(value)
    return b64decode(value, where, limit=MAX_ANNOTATION)


def keyprovider_output(data: bytes, op: str, where: str = "key provider output") -> bytes:
    """The result of a KeyProviderKeyWrapProtocolOutput: ``keywrapresults.annotation`` for op ``keywrap``,
    ``keyunwrapresults.optsdata`` for ``keyunwrap``; empty or missing is refused."""
    doc = _loads(data, where, limit=4 * MAX_ANNOTATION)
    half, name = ("keywrapresults", "annotation") if op == "keywrap" else ("keyunwrapresults", "optsdata")
    part = doc.get(half)
    if not isinstance(part, dict):
        raise OcicryptError(f"{where}.{half}: missing")
    value = _go_bytes_in(part.get(name), f"{where}.{half}.{name}")
    if not value:
        raise OcicryptError(f"{where}.{half}.{name}: empty")
    return value


def parse_json_object(data: bytes, where: str, limit: int = MAX_ANNOTATION) -> dict[str, Any]:
    """A strict JSON object (no duplicate members), for the wrappers' own documents (a JWE)."""
    return _loads(data, where, limit)


def dumps_compact(obj: object) -> bytes:
    """Compact JSON with members in insertion order (how Go writes structs), UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
