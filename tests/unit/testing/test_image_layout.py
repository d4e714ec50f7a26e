"""inclavare.testing.image's multi-layer layouts: written as a directory (what inclavare-image and skopeo take),
packed into the OCI archive `ctr image import` and `podman load` take, with digests that check out."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from inclavare.testing.image import pack_layout, write_layout
from tests.unit.services.imagecrypt.helpers import tar_of


def test_layers_config_and_archive(tmp_path: Path) -> None:
    bottom, top = tar_of({"etc/base": b"base\n"}), tar_of({"app/secret.txt": b"s\n"})
    write_layout(str(tmp_path / "lay"), "localhost/x:1", [(bottom, True), (top, False)], cmd=("sh",))
    archive = pack_layout(str(tmp_path / "lay"), str(tmp_path / "x.tar"))
    with tarfile.open(archive) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for name, data in files.items():  # every blob is named by its digest
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"] == {"io.containerd.image.name": "localhost/x:1",
                                    "org.opencontainers.image.ref.name": "localhost/x:1"}
    manifest = json.loads(files["blobs/sha256/" + entry["digest"].split(":")[1]])
    media = [x["mediaType"] for x in manifest["layers"]]
    assert media == ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar"]
    blobs = [files["blobs/sha256/" + x["digest"].split(":")[1]] for x in manifest["layers"]]
    assert gzip.decompress(blobs[0]) == bottom and blobs[1] == top
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(x).hexdigest() for x in (bottom, top)]
    assert config["config"]["Cmd"] == ["sh"]
    assert tarfile.open(fileobj=io.BytesIO(blobs[1])).getnames() == ["app/secret.txt"]
