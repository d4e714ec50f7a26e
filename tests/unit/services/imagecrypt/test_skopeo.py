"""Interop with the real skopeo (Debian 12's 1.9.3, ocicrypt inside): images we encrypt, skopeo decrypts
(flattened and general JWE, RSA and EC recipients), and images skopeo encrypts now, we decrypt. Skipped when
skopeo is not installed; the known answers in data/ (test_jwe, test_layout) keep the format checked anyway."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inclavare.formats import ocicrypt as oc
from inclavare.formats import ocicrypt_jwe as jwe
from inclavare.services.imagecrypt.layout import DecryptConfig, EncryptConfig, decrypt_layout, encrypt_layout
from tests.unit.services.imagecrypt.helpers import blob, files_of, make_layout, manifests, put

SKOPEO = shutil.which("skopeo")
pytestmark = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (Debian: apt install skopeo)")


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    assert SKOPEO is not None
    return subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, Path, Path]]:
    d = tmp_path_factory.mktemp("keys")
    out: dict[str, tuple[object, Path, Path]] = {}
    for name, key in (("rsa", rsa.generate_private_key(65537, 3072)), ("ec", ec.generate_private_key(ec.SECP384R1()))):
        priv, pub = d / f"{name}.pem", d / f"{name}.pub"
        priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        out[name] = (key, priv, pub)
    return out


@pytest.mark.parametrize("recipients", [["rsa"], ["ec"], ["rsa", "ec"]])
def test_skopeo_decrypts_ours(tmp_path: Path, keys: dict[str, tuple[object, Path, Path]],
                              recipients: list[str]) -> None:
    plain = make_layout(tmp_path / "plain")
    encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"),
                   EncryptConfig(jwe_recipients=[keys[r][0].public_key() for r in recipients]))  # type: ignore[attr-defined]
    for r in recipients:
        out = tmp_path / f"dec-{r}"
        done = skopeo("copy", "-q", "--decryption-key", str(keys[r][1]), "oci:" + str(tmp_path / "enc") + ":latest",
                      "oci:" + str(out) + ":latest")
        assert done.returncode == 0, done.stderr
        (m,) = manifests(out)
        assert [(lay["mediaType"], lay["digest"]) for lay in m["layers"]] == \
            [(lay["mediaType"], lay["digest"]) for lay in plain["layers"]]
        assert files_of(blob(out, m["layers"][1]["digest"])) == {"app/secret.txt": b"the secret\n" * 50}


def test_skopeo_refuses_ours_with_a_flipped_bit(tmp_path: Path, keys: dict[str, tuple[object, Path, Path]]) -> None:
    """A sanity check of the test itself: the real ocicrypt also refuses what our encryptor wrote once altered."""
    make_layout(tmp_path / "plain")
    encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"),
                   EncryptConfig(jwe_recipients=[keys["rsa"][0].public_key()]))  # type: ignore[attr-defined]
    enc = tmp_path / "enc"
    (m,) = manifests(enc)
    data = bytearray(blob(enc, m["layers"][1]["digest"]))
    data[100] ^= 1
    # a consistent layout around the altered blob, so that only the HMAC can catch it
    m["layers"][1]["digest"], _ = put(enc, bytes(data))
    index = json.loads((enc / "index.json").read_text())
    index["manifests"][0]["digest"], index["manifests"][0]["size"] = put(enc, json.dumps(m).encode())
    (enc / "index.json").write_text(json.dumps(index))
    done = skopeo("copy", "-q", "--decryption-key", str(keys["rsa"][1]), "oci:" + str(enc) + ":latest",
                  "oci:" + str(tmp_path / "dec") + ":latest")
    assert done.returncode != 0 and "hmac" in done.stderr, done.stderr


@pytest.mark.parametrize("recipients", [["rsa"], ["rsa", "ec"]])
def test_we_decrypt_skopeos(tmp_path: Path, keys: dict[str, tuple[object, Path, Path]],
                            recipients: list[str]) -> None:
    plain = make_layout(tmp_path / "plain", layer_annotations={0: {"org.example.a": "b"}})
    args = []
    for r in recipients:
        args += ["--encryption-key", "jwe:" + str(keys[r][2])]
    done = skopeo("copy", "-q", *args, "oci:" + str(tmp_path / "plain") + ":latest",
                  "oci:" + str(tmp_path / "enc") + ":latest")
    assert done.returncode == 0, done.stderr
    (enc,) = manifests(tmp_path / "enc")
    assert all(oc.is_encrypted_media_type(lay["mediaType"]) for lay in enc["layers"])
    for r in recipients:
        key = jwe.load_private_key(keys[r][1].read_bytes())
        results = decrypt_layout(str(tmp_path / "enc"), str(tmp_path / f"dec-{r}"), DecryptConfig(jwe_keys=[key]))
        assert [x.action for x in results] == ["decrypted", "decrypted"]
        (m,) = manifests(tmp_path / f"dec-{r}")
        assert m["layers"][0]["digest"] == plain["layers"][0]["digest"]
        assert files_of(blob(tmp_path / f"dec-{r}", m["layers"][1]["digest"])) == \
            {"app/secret.txt": b"the secret\n" * 50}
