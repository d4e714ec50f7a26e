"""Small OCI image layouts for the image-encryption tests, built in-process (no registry, no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def files_of(tar_bytes: bytes) -> dict[str, bytes]:
    if tar_bytes[:2] == b"\x1f\x8b":
        tar_bytes = gzip.decompress(tar_bytes)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        for m in t.getmembers():
            f = t.extractfile(m)
            out[m.name] = f.read() if f else b""
    return out


def put(root: Path, data: bytes) -> tuple[str, int]:
    hexd = hashlib.sha256(data).hexdigest()
    d = root / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    (d / hexd).write_bytes(data)
    return "sha256:" + hexd, len(data)


def blob(root: Path, digest: str) -> bytes:
    alg, hexd = digest.split(":", 1)
    return (root / "blobs" / alg / hexd).read_bytes()


def make_layout(root: Path, layers: list[tuple[str, dict[str, bytes]]] | None = None, *, ref: str = "latest",
                layer_annotations: dict[int, dict[str, str]] | None = None) -> dict[str, Any]:
    """A one-image layout; ``layers`` are (media type, files). Returns the manifest."""
    if layers is None:
        layers = [(LAYER_GZIP, {"etc/base": b"base layer\n"}), (LAYER_TAR, {"app/secret.txt": b"the secret\n" * 50})]
    root.mkdir(parents=True, exist_ok=True)
    descs, diffs = [], []
    for i, (media, files) in enumerate(layers):
        raw = tar_of(files)
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        data = gzip.compress(raw, mtime=0) if media.endswith("+gzip") else raw
        digest, size = put(root, data)
        desc: dict[str, Any] = {"mediaType": media, "digest": digest, "size": size}
        if layer_annotations and i in layer_annotations:
            desc["annotations"] = layer_annotations[i]
        descs.append(desc)
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diffs}}
    cd, cs = put(root, json.dumps(config, separators=(",", ":")).encode())
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                "layers": descs}
    md, ms = put(root, json.dumps(manifest, separators=(",", ":")).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST, "digest": md, "size": ms,
                                                 "annotations": {"org.opencontainers.image.ref.name": ref}}]}
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return manifest


def manifests(root: Path) -> list[dict[str, Any]]:
    index = json.loads((root / "index.json").read_text())
    return [json.loads(blob(root, m["digest"])) for m in index["manifests"]]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> content): to show nothing was written."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.read_bytes()
    return out
