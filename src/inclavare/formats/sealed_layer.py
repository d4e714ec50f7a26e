"""Sealed layers: an ocicrypt-encrypted layer carried, still encrypted, inside an ordinary layer, so that any
engine (containerd, podman, docker) unpacks the image without a key and only the enclave decrypts it.

An encrypted layer cannot be unpacked by an engine without its key, and an engine that has the key decrypts on
the host -- exactly what a confidential container must avoid. ``inclavare-image seal`` therefore replaces each
encrypted layer of an image by a plain tar layer holding the ciphertext and its descriptor:

    .inclavare/sealed/NNN/layer.enc          the encrypted blob, byte for byte (its digest is the descriptor's)
    .inclavare/sealed/NNN/descriptor.json    the encrypted layer's OCI descriptor (mediaType, digest, size,
                                             annotations: pubopts and the wrapped keys)

``NNN`` is the layer's position in the manifest (three digits), so the enclave applies them in image order.
Nothing here is secret; what protects the layer is its encryption, and what protects its integrity is the HMAC
inside the ocicrypt options, which the enclave checks before it uses a byte.
"""

from __future__ import annotations

import json
import re
from typing import Any

from inclavare.formats import ocicrypt as oc
from inclavare.formats.ocicrypt import OcicryptError

SEALED_DIR = ".inclavare/sealed"
LAYER_FILE = "layer.enc"
DESCRIPTOR_FILE = "descriptor.json"
MAX_LAYERS = 1000  # three digits
MAX_DESCRIPTOR = 4 << 20  # annotations carry wrapped keys: a few KiB each
_ENTRY_RE = re.compile(r"[0-9]{3}")
_DESCRIPTOR_KEYS = ("mediaType", "digest", "size", "annotations")


def entry_name(index: int) -> str:
    """The directory name of the layer at ``index`` of its manifest."""
    if not 0 <= index < MAX_LAYERS:
        raise OcicryptError(f"sealed layer index {index}: outside 0..{MAX_LAYERS - 1}")
    return f"{index:03d}"


def entry_index(name: str) -> int | None:
    """The layer index a directory name under ``SEALED_DIR`` stands for, or None for anything else."""
    return int(name) if _ENTRY_RE.fullmatch(name) else None


def encode_descriptor(desc: dict[str, Any]) -> bytes:
    """descriptor.json for an encrypted layer's descriptor (checked as :func:`decode_descriptor` reads it)."""
    data = json.dumps({k: desc[k] for k in _DESCRIPTOR_KEYS if k in desc}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()
    decode_descriptor(data, "descriptor")
    return data


def decode_descriptor(data: bytes, where: str) -> dict[str, Any]:
    """An encrypted layer's descriptor: an encrypted layer media type, a sha256 digest, a size, and string
    annotations that include ocicrypt's public options and at least one wrapped key."""
    if len(data) > MAX_DESCRIPTOR:
        raise OcicryptError(f"{where}: over {MAX_DESCRIPTOR} bytes")
    doc = oc.parse_json_object(data, where, MAX_DESCRIPTOR)
    extra = sorted(set(doc) - set(_DESCRIPTOR_KEYS))
    if extra:
        raise OcicryptError(f"{where}: unknown member {extra[0][:40]!r}")
    media = doc.get("mediaType")
    if not isinstance(media, str):
        raise OcicryptError(f"{where}.mediaType: missing")
    oc.plain_media_type(media, f"{where}.mediaType")
    digest = oc.check_digest(doc.get("digest"), f"{where}.digest")
    if not digest.startswith("sha256:"):
        raise OcicryptError(f"{where}.digest: only sha256 digests are sealed")
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OcicryptError(f"{where}.size: not a size")
    annotations = doc.get("annotations")
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in annotations.items()):
        raise OcicryptError(f"{where}.annotations: must map strings to strings")
    if oc.ANNOTATION_PUBOPTS not in annotations:
        raise OcicryptError(f"{where}.annotations: no {oc.ANNOTATION_PUBOPTS}")
    if not oc.wrapped_key_annotations(annotations):
        raise OcicryptError(f"{where}.annotations: no wrapped key (org.opencontainers.image.enc.keys.*)")
    return doc
