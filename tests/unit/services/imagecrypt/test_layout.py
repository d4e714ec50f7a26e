"""Encrypt/decrypt over OCI image layouts: descriptors rewritten as ocicrypt writes them, layers and images
chosen, in place or to a new directory, skopeo's layouts decrypted (known answers), and the refusals, each
leaving nothing behind: a flipped ciphertext bit, a wrong key, an unknown cipher, a blob that does not match its
descriptor, a Docker manifest."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inclavare.formats import ocicrypt as oc
from inclavare.formats import ocicrypt_jwe as jwe
from inclavare.formats.ocicrypt import OcicryptError
from inclavare.services.imagecrypt.layout import (
    DecryptConfig,
    EncryptConfig,
    decrypt_layout,
    describe_layout,
    encrypt_layout,
)
from tests.unit.services.imagecrypt.helpers import (
    INDEX,
    LAYER_GZIP,
    LAYER_TAR,
    MANIFEST,
    blob,
    files_of,
    make_layout,
    manifests,
    put,
    tree,
)

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def test_encrypt_then_decrypt(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    plain = make_layout(tmp_path / "plain", layer_annotations={1: {"org.example.note": "kept"}})
    results = encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"),
                             EncryptConfig(jwe_recipients=[rsa_key.public_key(), ec_key.public_key()]))
    assert [r.action for r in results] == ["encrypted", "encrypted"]
    (enc,) = manifests(tmp_path / "enc")
    assert enc["config"] == plain["config"]
    for before, after in zip(plain["layers"], enc["layers"], strict=True):
        assert after["mediaType"] == before["mediaType"] + "+encrypted"
        assert after["size"] == before["size"]  # CTR: as long as the plaintext
        ct = blob(tmp_path / "enc", after["digest"])
        assert "sha256:" + hashlib.sha256(ct).hexdigest() == after["digest"] != before["digest"]
        assert set(after["annotations"]) - {"org.example.note"} == {oc.ANNOTATION_JWE, oc.ANNOTATION_PUBOPTS}
        assert blob(tmp_path / "plain", before["digest"]) not in ct
    assert enc["layers"][1]["annotations"]["org.example.note"] == "kept"
    assert oc.decode_pubopts_annotation(enc["layers"][0]["annotations"][oc.ANNOTATION_PUBOPTS]).cipher == \
        oc.CIPHER_AES256CTR
    # either recipient decrypts; the result is the plain image again, byte for byte
    for key in (rsa_key, ec_key):
        out = tmp_path / f"dec-{type(key).__name__}"
        results = decrypt_layout(str(tmp_path / "enc"), str(out), DecryptConfig(jwe_keys=[key]))
        assert [r.action for r in results] == ["decrypted", "decrypted"] and results[0].wrappers == ["jwe"]
        assert manifests(out) == [plain]
        assert files_of(blob(out, plain["layers"][1]["digest"])) == {"app/secret.txt": b"the secret\n" * 50}
    assert [r["wrappedFor"] for r in describe_layout(str(tmp_path / "enc"))] == [["jwe"], ["jwe"]]


def test_chosen_layers_only_and_already_encrypted_left(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    plain = make_layout(tmp_path / "plain")
    ec_ = EncryptConfig(jwe_recipients=[rsa_key.public_key()])
    results = encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"), ec_, layers=[-1])
    assert [(r.action, r.why) for r in results] == [("kept", "not chosen"), ("encrypted", "")]
    (enc,) = manifests(tmp_path / "enc")
    assert enc["layers"][0] == plain["layers"][0]
    assert enc["layers"][1]["mediaType"] == LAYER_TAR + "+encrypted"
    again = encrypt_layout(str(tmp_path / "enc"), str(tmp_path / "enc2"), ec_)
    assert [(r.action, r.why) for r in again] == [("encrypted", ""), ("kept", "already encrypted")]
    with pytest.raises(OcicryptError, match="layer 2 does not exist"):
        encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "x"), ec_, layers=[2])
    assert not (tmp_path / "x").exists()


def test_in_place_and_by_ref(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    root = tmp_path / "lay"
    make_layout(root, ref="one")
    # a second image in the same layout
    other = make_layout(tmp_path / "other", [(LAYER_GZIP, {"b": b"other"})], ref="two")
    shutil.copytree(tmp_path / "other" / "blobs", root / "blobs", dirs_exist_ok=True)
    index = json.loads((root / "index.json").read_text())
    index["manifests"] += json.loads((tmp_path / "other" / "index.json").read_text())["manifests"]
    (root / "index.json").write_text(json.dumps(index))
    results = encrypt_layout(str(root), str(root), EncryptConfig(jwe_recipients=[rsa_key.public_key()]),
                             refs=["two"])
    assert len(results) == 1 and results[0].action == "encrypted"
    one, two = manifests(root)
    assert all(not oc.is_encrypted_media_type(lay["mediaType"]) for lay in one["layers"])
    assert two["layers"][0]["mediaType"] == LAYER_GZIP + "+encrypted" and two["config"] == other["config"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging left
    with pytest.raises(OcicryptError, match="no image named three"):
        encrypt_layout(str(root), str(root), EncryptConfig(jwe_recipients=[rsa_key.public_key()]), refs=["three"])
    decrypt_layout(str(root), str(root), DecryptConfig(jwe_keys=[rsa_key]))
    assert manifests(root)[1] == other


def test_nested_index(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    root = tmp_path / "lay"
    make_layout(root)
    outer = json.loads((root / "index.json").read_text())
    digest, size = put(root, json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                                         "manifests": outer["manifests"]}).encode())
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": INDEX, "digest": digest, "size": size}]}))
    encrypt_layout(str(root), str(tmp_path / "enc"), EncryptConfig(jwe_recipients=[rsa_key.public_key()]))
    top = json.loads((tmp_path / "enc" / "index.json").read_text())["manifests"][0]
    inner = json.loads(blob(tmp_path / "enc", top["digest"]))
    manifest = json.loads(blob(tmp_path / "enc", inner["manifests"][0]["digest"]))
    assert all(oc.is_encrypted_media_type(lay["mediaType"]) for lay in manifest["layers"])


def _encrypted(tmp_path: Path, key: rsa.RSAPrivateKey) -> tuple[Path, dict[str, object]]:
    make_layout(tmp_path / "plain")
    encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"), EncryptConfig(jwe_recipients=[key.public_key()]))
    return tmp_path / "enc", manifests(tmp_path / "enc")[0]


def test_flipped_ciphertext_bit_is_refused_and_nothing_written(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    enc, manifest = _encrypted(tmp_path, rsa_key)
    layer = manifest["layers"][1]  # type: ignore[index]
    path = enc / "blobs" / "sha256" / layer["digest"][7:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    before = tree(enc)
    with pytest.raises(OcicryptError, match=r"layers\[1\]: HMAC-SHA256 of the ciphertext does not match"):
        decrypt_layout(str(enc), str(tmp_path / "dec"), DecryptConfig(jwe_keys=[rsa_key]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "plain"]  # no dec, no temporary build
    with pytest.raises(OcicryptError, match="HMAC"):
        decrypt_layout(str(enc), str(enc), DecryptConfig(jwe_keys=[rsa_key]))
    assert tree(enc) == before  # in place: not one file added or changed


def test_wrong_key_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    enc, _ = _encrypted(tmp_path, rsa_key)
    before = tree(enc)
    with pytest.raises(OcicryptError, match="none of the 1 private key"):
        decrypt_layout(str(enc), str(enc), DecryptConfig(jwe_keys=[rsa.generate_private_key(65537, 2048)]))
    assert tree(enc) == before


def _rewrite_layer(enc: Path, change: dict[str, object]) -> None:
    index = json.loads((enc / "index.json").read_text())
    manifest = json.loads(blob(enc, index["manifests"][0]["digest"]))
    manifest["layers"][0].update(change)
    digest, size = put(enc, json.dumps(manifest).encode())
    index["manifests"][0].update(digest=digest, size=size)
    (enc / "index.json").write_text(json.dumps(index))


def test_unknown_cipher_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    enc, manifest = _encrypted(tmp_path, rsa_key)
    ann = dict(manifest["layers"][0]["annotations"])  # type: ignore[index]
    pub = json.loads(base64.b64decode(ann[oc.ANNOTATION_PUBOPTS]))
    pub["cipher"] = "AES_256_GCM"
    ann[oc.ANNOTATION_PUBOPTS] = base64.b64encode(json.dumps(pub).encode()).decode()
    _rewrite_layer(enc, {"annotations": ann})
    with pytest.raises(OcicryptError, match="'AES_256_GCM' is not supported"):
        decrypt_layout(str(enc), str(tmp_path / "dec"), DecryptConfig(jwe_keys=[rsa_key]))
    assert not (tmp_path / "dec").exists()


def test_missing_or_foreign_wrapped_keys(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    enc, manifest = _encrypted(tmp_path, rsa_key)
    ann = dict(manifest["layers"][0]["annotations"])  # type: ignore[index]
    ann["org.opencontainers.image.enc.keys.pgp"] = ann.pop(oc.ANNOTATION_JWE)
    _rewrite_layer(enc, {"annotations": ann})
    with pytest.raises(OcicryptError, match="wrapped for pgp; no matching decryption key"):
        decrypt_layout(str(enc), str(tmp_path / "dec"), DecryptConfig(jwe_keys=[rsa_key]))
    del ann["org.opencontainers.image.enc.keys.pgp"]
    _rewrite_layer(enc, {"annotations": ann})
    with pytest.raises(OcicryptError, match="no wrapped key to open"):
        decrypt_layout(str(enc), str(tmp_path / "dec"), DecryptConfig(jwe_keys=[rsa_key]))


def test_blob_not_matching_its_descriptor(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    root = tmp_path / "plain"
    manifest = make_layout(root)
    path = root / "blobs" / "sha256" / manifest["layers"][1]["digest"][7:]
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(OcicryptError, match=r"layers\[1\]: blob sha256:\w+ does not match its descriptor"):
        encrypt_layout(str(root), str(tmp_path / "enc"), EncryptConfig(jwe_recipients=[rsa_key.public_key()]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
    # and the ciphertext is checked against its descriptor when decrypting (an authentic blob put elsewhere)
    enc, m = _encrypted(tmp_path / "b", rsa_key)
    layers = m["layers"]  # type: ignore[index]
    _rewrite_layer(enc, {"size": layers[0]["size"] + 1})
    with pytest.raises(OcicryptError, match="does not match its descriptor"):
        decrypt_layout(str(enc), str(tmp_path / "dec"), DecryptConfig(jwe_keys=[rsa_key]))


def test_refused_inputs(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    ec_ = EncryptConfig(jwe_recipients=[rsa_key.public_key()])
    root = tmp_path / "plain"
    make_layout(root)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OcicryptError, match="exists and is not an empty directory"):
        encrypt_layout(str(root), str(tmp_path / "full"), ec_)
    with pytest.raises(OcicryptError, match="no recipients"):
        encrypt_layout(str(root), str(tmp_path / "e"), EncryptConfig())
    with pytest.raises(OcicryptError, match="oci-layout: No such file"):
        encrypt_layout(str(tmp_path / "full"), str(tmp_path / "e"), ec_)
    docker = tmp_path / "docker"
    make_layout(docker)
    index = json.loads((docker / "index.json").read_text())
    index["manifests"][0]["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    (docker / "index.json").write_text(json.dumps(index))
    with pytest.raises(OcicryptError, match="a Docker v2s2 manifest"):
        encrypt_layout(str(docker), str(tmp_path / "e"), ec_)
    traversal = tmp_path / "trav"
    make_layout(traversal)
    index = json.loads((traversal / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../../etc/passwd"
    (traversal / "index.json").write_text(json.dumps(index))
    with pytest.raises(OcicryptError, match="is not a sha256/sha384/sha512 digest"):
        encrypt_layout(str(traversal), str(tmp_path / "e"), ec_)
    assert not (tmp_path / "e").exists()
    wasm = tmp_path / "odd"
    make_layout(wasm, [("application/vnd.docker.image.rootfs.diff.tar.gzip", {"a": b"b"})])
    with pytest.raises(OcicryptError, match="not a layer media type ocicrypt encrypts"):
        encrypt_layout(str(wasm), str(tmp_path / "e"), ec_)


@pytest.mark.parametrize("layout", ["skopeo-jwe-rsa", "skopeo-jwe-rsa-ec"])
def test_skopeo_layouts_decrypt(tmp_path: Path, layout: str) -> None:
    """Known answers: images skopeo 1.9.3 encrypted (data/README.md) decrypt to the plain layers."""
    key = jwe.load_private_key((DATA / "rsa-key.pem").read_bytes())
    results = decrypt_layout(str(DATA / layout), str(tmp_path / "dec"), DecryptConfig(jwe_keys=[key]))
    assert [r.action for r in results] == ["decrypted", "decrypted"]
    (m,) = manifests(tmp_path / "dec")
    assert m["layers"][0] == {"mediaType": LAYER_GZIP, "size": 111,
                              "digest": "sha256:82c5c127cd8a77c3ec53309decfc4aa19424c15a7cffb94334b1523db09a236a"}
    # skopeo gzipped the plain tar while encrypting (recording the tar's digest): we get its gzip stream back
    assert m["layers"][1]["mediaType"] == LAYER_GZIP and "annotations" not in m["layers"][1]
    gz = blob(tmp_path / "dec", m["layers"][1]["digest"])
    assert files_of(gz) == {"app/secret.txt": b"the secret\n" * 50}
    import gzip as _gzip

    assert "sha256:" + hashlib.sha256(_gzip.decompress(gz)).hexdigest() == \
        "sha256:9ebf23e2cffd5224487f6a02cd00aa735a68300aa03e1a713c39d82fe8a3566d"
    assert m["config"]["digest"] == "sha256:7a1d26fa8e8a42c9b3898ef996dd93efc44acdd268da1fd70db0899fae111a96"
    assert m["mediaType"] == MANIFEST
    # the EC recipient too, where there is one
    if layout.endswith("-ec"):
        eck = jwe.load_private_key((DATA / "ec-key.pem").read_bytes())
        decrypt_layout(str(DATA / layout), str(tmp_path / "dec-ec"), DecryptConfig(jwe_keys=[eck]))
        assert manifests(tmp_path / "dec-ec") == [m]
