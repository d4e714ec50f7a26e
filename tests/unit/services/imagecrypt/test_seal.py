"""imagecrypt.seal: encrypted layers become plain layers carrying the ciphertext and its descriptor; the image
stays consistent (config diff_ids, digests) so engines unpack it, and nothing is decrypted."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.formats import ocicrypt_jwe as jwe
from inclavare.formats import sealed_layer as sl
from inclavare.formats.ocicrypt import OcicryptError
from inclavare.services.imagecrypt.layout import EncryptConfig, encrypt_layout
from inclavare.services.imagecrypt.seal import SEALED_MEDIA_TYPE, seal_layout
from tests.unit.services.imagecrypt.helpers import blob, make_layout, manifests, tree


def encrypted(tmp_path: Path) -> tuple[Path, dict]:
    src = tmp_path / "plain"
    make_layout(src)
    key = ec.generate_private_key(ec.SECP256R1())
    pub = jwe.load_public_key(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    enc = tmp_path / "enc"
    encrypt_layout(str(src), str(enc), EncryptConfig(jwe_recipients=[pub]), layers=[-1])
    return enc, manifests(enc)[0]


def test_seal_carries_the_ciphertext_and_fixes_diff_ids(tmp_path: Path) -> None:
    enc, before = encrypted(tmp_path)
    out = tmp_path / "sealed"
    results = seal_layout(str(enc), str(out))
    assert [r.action for r in results] == ["kept", "sealed"]
    (after,) = manifests(out)
    assert after["layers"][0] == before["layers"][0]  # the plain layer is untouched
    sealed = after["layers"][1]
    assert sealed["mediaType"] == SEALED_MEDIA_TYPE and "annotations" not in sealed
    data = blob(out, sealed["digest"])
    assert "sha256:" + hashlib.sha256(data).hexdigest() == sealed["digest"] and len(data) == sealed["size"]
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        names = t.getnames()
        enc_blob = t.extractfile(f"{sl.SEALED_DIR}/001/{sl.LAYER_FILE}").read()  # type: ignore[union-attr]
        desc = sl.decode_descriptor(t.extractfile(f"{sl.SEALED_DIR}/001/{sl.DESCRIPTOR_FILE}").read(),  # type: ignore[union-attr]
                                    "descriptor")
        assert all(m.mtime == 0 and m.uid == 0 for m in t.getmembers())
    assert names == [".inclavare", ".inclavare/sealed", ".inclavare/sealed/001",
                     ".inclavare/sealed/001/descriptor.json", ".inclavare/sealed/001/layer.enc"]
    assert enc_blob == blob(enc, before["layers"][1]["digest"])  # ciphertext, byte for byte
    assert desc == before["layers"][1]
    config = json.loads(blob(out, after["config"]["digest"]))
    old_config = json.loads(blob(enc, before["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [old_config["rootfs"]["diff_ids"][0], sealed["digest"]]
    # deterministic: sealing again gives the same image
    again = tmp_path / "again"
    seal_layout(str(enc), str(again))
    assert manifests(again) == [after]


def test_refusals_write_nothing(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    make_layout(plain)
    with pytest.raises(OcicryptError, match="no encrypted layer to seal"):
        seal_layout(str(plain), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    enc, m = encrypted(tmp_path)
    path = enc / "blobs" / "sha256" / m["layers"][1]["digest"].split(":")[1]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    before = tree(tmp_path)
    with pytest.raises(OcicryptError, match="does not match its descriptor's digest and size"):
        seal_layout(str(enc), str(tmp_path / "out2"))
    assert tree(tmp_path) == before


def test_descriptor_codec_refusals() -> None:
    good = {"mediaType": "application/vnd.oci.image.layer.v1.tar+encrypted", "digest": "sha256:" + "a" * 64,
            "size": 3, "annotations": {"org.opencontainers.image.enc.pubopts": "e30=",
                                       "org.opencontainers.image.enc.keys.jwe": "x"}}
    assert sl.decode_descriptor(sl.encode_descriptor(good), "d") == good
    for change, match in ((("mediaType", "application/vnd.oci.image.layer.v1.tar"), "not an encrypted layer"),
                          (("digest", "sha512:" + "a" * 128), "only sha256"), (("size", -1), "not a size"),
                          (("urls", []), "unknown member"),
                          (("annotations", {}), "no org.opencontainers.image.enc.pubopts"),
                          (("annotations", {"org.opencontainers.image.enc.pubopts": "e30="}), "no wrapped key")):
        with pytest.raises(OcicryptError, match=match):
            sl.decode_descriptor(json.dumps({**good, change[0]: change[1]}).encode(), "d")
    assert sl.entry_name(7) == "007" and sl.entry_index("007") == 7 and sl.entry_index("7") is None
