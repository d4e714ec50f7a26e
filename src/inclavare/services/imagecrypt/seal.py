"""``inclavare-image seal``: turn an ocicrypt-encrypted image into one any engine can unpack without a key, the
encrypted layers carried as ciphertext for the enclave (the format: :mod:`inclavare.formats.sealed_layer`).

Each ``+encrypted`` layer becomes an uncompressed tar layer holding ``.inclavare/sealed/NNN/layer.enc`` (the
blob, byte for byte, checked against its descriptor while copied) and ``descriptor.json``; the config's
``rootfs.diff_ids`` entry is replaced by the new layer's digest, plain layers are left as they are. No key is
needed and none is used: sealing moves ciphertext, it never decrypts. The tar is deterministic (mtime 0, root
owner), so sealing the same image twice gives the same digests.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Sequence
from typing import IO, Any

from inclavare.formats import ocicrypt as oc
from inclavare.formats import sealed_layer as sl
from inclavare.formats.ocicrypt import OcicryptError
from inclavare.services.imagecrypt.layout import LayerResult, _Layout, _transform, describe_layout

SEALED_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
_CHUNK = 1 << 20


class _Checked(io.RawIOBase):
    """Reads ``size`` bytes of ``src`` and refuses, at the end, a stream whose sha256 is not ``digest``."""

    def __init__(self, src: IO[bytes], digest: str, size: int, where: str) -> None:
        self.src, self.digest, self.left, self.where = src, digest, size, where
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self.left)
        data = self.src.read(want) if want else b""
        if want and not data:
            raise OcicryptError(f"{self.where}: blob {self.digest} is shorter than its descriptor's size")
        buf[:len(data)] = data
        self.sha.update(data)
        self.left -= len(data)
        if self.left == 0 and ("sha256:" + self.sha.hexdigest() != self.digest or self.src.read(1)):
            raise OcicryptError(f"{self.where}: blob {self.digest} does not match its descriptor's digest and size")
        return len(data)


def _info(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.uid, info.gid = kind, size, 0, 0, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uname = info.gname = ""
    return info


def _seal_step(lay: _Layout, layer: dict[str, Any], where: str, manifest: str,
               i: int) -> tuple[dict[str, Any] | None, LayerResult]:
    media = layer["mediaType"]
    if not oc.is_encrypted_media_type(media):
        return None, LayerResult(manifest, i, "kept", media, layer["digest"], why="not encrypted")
    descriptor = sl.encode_descriptor(layer)
    entry = f"{sl.SEALED_DIR}/{sl.entry_name(i)}"
    path, out = lay.staged_file()
    with out:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            parts = entry.split("/")
            for n in range(1, len(parts) + 1):
                tar.addfile(_info("/".join(parts[:n]) + "/", tarfile.DIRTYPE))
            tar.addfile(_info(f"{entry}/{sl.DESCRIPTOR_FILE}", tarfile.REGTYPE, len(descriptor)),
                        io.BytesIO(descriptor))
            with lay.open_blob(layer, where) as src:
                tar.addfile(_info(f"{entry}/{sl.LAYER_FILE}", tarfile.REGTYPE, layer["size"]),
                            io.BufferedReader(_Checked(src, layer["digest"], layer["size"], where), _CHUNK))
        out.flush()
        out.seek(0)
        sha = hashlib.sha256()
        size = 0
        while chunk := out.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    digest = "sha256:" + sha.hexdigest()
    lay.add_staged(path, digest, 0o644)
    new = {"mediaType": SEALED_MEDIA_TYPE, "digest": digest, "size": size}
    return new, LayerResult(manifest, i, "sealed", SEALED_MEDIA_TYPE, layer["digest"], digest, diff_id=digest)


def seal_layout(src: str, dst: str, *, refs: Sequence[str] | None = None) -> list[LayerResult]:
    """Seal every encrypted layer of the chosen images (``refs``; all by default) of layout ``src`` into
    ``dst`` (or in place when they are the same). An image without encrypted layers is refused: sealing it would
    promise a protection it does not have."""
    if not any("cipher" in row for row in describe_layout(src)):
        raise OcicryptError(f"{os.path.abspath(src)}: no encrypted layer to seal (encrypt it first: inclavare-image "
                            f"encrypt, or skopeo copy --encryption-key)")
    return _transform(src, dst, _seal_step, layers=None, refs=refs)
