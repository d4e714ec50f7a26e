"""Registry-free OCI images for tests and benchmarks: one-layer OCI image layout tars (busybox, and any tree).

The layer is a deterministic tar.gz of the busybox rootfs that :mod:`inclavare.testing.bundle` builds
(uid/gid 0, mtime 0, sorted entries, gzip mtime 0), so digests are stable for a given busybox build.
`ctr image import` and `podman load` both take the resulting tar; the reference name is written as
both `io.containerd.image.name` (containerd) and `org.opencontainers.image.ref.name` (podman, skopeo).

CLI: python -m inclavare.testing.image [-n NAME] [-c CMD_JSON] OUT_DIR   -> OUT_DIR/busybox-oci.tar
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import sys
import tarfile
import tempfile

DEFAULT_NAME = "localhost/busybox:latest"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def tar_tree(root: str) -> bytes:
    """An uncompressed, reproducible tar of ``root`` (paths relative, no ./ prefix)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            # symlinked directories are entries, not places to descend into
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = sorted(d for d in dirnames if d not in links)
            if rel != ".":
                entries.append(rel)
            entries += [os.path.normpath(os.path.join(rel, n)) for n in sorted(filenames + links)]
        for rel in entries:
            full = os.path.join(root, rel)
            info = tar.gettarinfo(full, arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.pax_headers = {}
            if info.isfile():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_image_tar(out_tar: str, name: str = DEFAULT_NAME, cmd: tuple[str, ...] = ("sh",)) -> str:
    """Write an OCI image layout tar holding a busybox image called ``name``; returns its path."""
    from inclavare.testing.bundle import make_rootfs

    with tempfile.TemporaryDirectory(prefix="rune-image-") as tmp:
        rootfs = make_rootfs(os.path.join(tmp, "rootfs"))
        return build_layout_tar(out_tar, rootfs, name, cmd=cmd, created_by="inclavare.testing.image (busybox-static)")


def build_layout_tar(out_tar: str, rootfs: str, name: str, *, cmd: tuple[str, ...] = (),
                     entrypoint: tuple[str, ...] = (), created_by: str = "inclavare.testing.image") -> str:
    """Write an OCI image layout tar of a one-layer image called ``name`` whose layer is the tree ``rootfs``;
    returns its path. The layer and every JSON document are reproducible (see the module's docstring)."""
    blobs, index = _image(name, [(tar_tree(rootfs), True)], cmd=cmd, entrypoint=entrypoint, created_by=created_by)
    return _write_tar(out_tar, index, blobs)


def write_layout(out_dir: str, name: str, layers: list[tuple[bytes, bool]], *, cmd: tuple[str, ...] = (),
                 entrypoint: tuple[str, ...] = (), created_by: str = "inclavare.testing.image") -> str:
    """Write an OCI image layout *directory* (``oci:DIR``, what ``inclavare-image`` and skopeo take) holding one
    image called ``name``; ``layers`` are (uncompressed layer tar, gzip it?) bottom first. Returns ``out_dir``."""
    blobs, index = _image(name, layers, cmd=cmd, entrypoint=entrypoint, created_by=created_by)
    os.makedirs(os.path.join(out_dir, "blobs", "sha256"), exist_ok=True)
    for path, data in _files(index, blobs):
        with open(os.path.join(out_dir, path), "wb") as f:
            f.write(data)
    return out_dir


def pack_layout(layout_dir: str, out_tar: str) -> str:
    """Write the OCI image layout directory ``layout_dir`` as a tar (an OCI archive: what `ctr image import` and
    `podman load` take); returns ``out_tar``."""
    with open(os.path.join(layout_dir, "index.json"), "rb") as f:
        index = json.loads(f.read())
    blobs = {}
    blob_dir = os.path.join(layout_dir, "blobs", "sha256")
    for hexd in sorted(os.listdir(blob_dir)):
        with open(os.path.join(blob_dir, hexd), "rb") as f:
            blobs["sha256:" + hexd] = f.read()
    return _write_tar(out_tar, index, blobs)


def _image(name: str, layers: list[tuple[bytes, bool]], *, cmd: tuple[str, ...], entrypoint: tuple[str, ...],
           created_by: str) -> tuple[dict[str, bytes], dict[str, object]]:
    """The blobs and the index of an image called ``name`` made of ``layers`` ((tar, gzip it?), bottom first)."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    blobs: dict[str, bytes] = {}
    diff_ids, descriptors = [], []
    for layer_tar, compress in layers:
        diff_ids.append("sha256:" + hashlib.sha256(layer_tar).hexdigest())
        data, media = layer_tar, "application/vnd.oci.image.layer.v1.tar"
        if compress:
            gz = io.BytesIO()
            with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
                g.write(layer_tar)
            data, media = gz.getvalue(), media + "+gzip"
        digest, size = _blob(blobs, data)
        descriptors.append({"mediaType": media, "digest": digest, "size": size})
    image_config: dict[str, object] = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "WorkingDir": "/",
    }
    if entrypoint:
        image_config["Entrypoint"] = list(entrypoint)
    if cmd:
        image_config["Cmd"] = list(cmd)
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": created_by}],
    }
    cfg_digest, cfg_size = _blob(blobs, _canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest,
                   "size": cfg_size},
        "layers": descriptors,
    }
    man_digest, man_size = _blob(blobs, _canonical(manifest))
    index: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": man_digest,
            "size": man_size,
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
        }],
    }
    return blobs, index


def _files(index: dict[str, object], blobs: dict[str, bytes]) -> list[tuple[str, bytes]]:
    files: list[tuple[str, bytes]] = [("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"})),
                                      ("index.json", _canonical(index))]
    return files + [(f"blobs/sha256/{d.split(':', 1)[1]}", data) for d, data in sorted(blobs.items())]


def _write_tar(out_tar: str, index: dict[str, object], blobs: dict[str, bytes]) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(out_tar)), exist_ok=True)
    tmp_out = out_tar + ".tmp"
    with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, data in _files(index, blobs):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp_out, out_tar)
    return out_tar


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m inclavare.testing.image", description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--name", default=DEFAULT_NAME)
    ap.add_argument("-c", "--cmd", default='["sh"]', help="default command, JSON array")
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    out = build_image_tar(os.path.join(args.out_dir, "busybox-oci.tar"), args.name, tuple(json.loads(args.cmd)))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
