"""`inclavare-image`: encrypt, decrypt and inspect through the command line; exit 2 for a bad command line or
key file, 1 for a refusal (nothing written), one ``inclavare-image: ...`` line on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from inclavare.cli.image import main
from tests.unit.services.imagecrypt.helpers import make_layout, manifests


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    d = tmp_path_factory.mktemp("keys")
    out = []
    for name in ("a", "b"):
        key = rsa.generate_private_key(65537, 2048)
        (d / f"{name}.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        (d / f"{name}.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        out.append(str(d / name))
    return out[0] + ".pub", out[0] + ".pem", out[1] + ".pem"


def test_encrypt_inspect_decrypt(tmp_path: Path, key_files: tuple[str, str, str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    pub, priv, _ = key_files
    plain = make_layout(tmp_path / "plain")
    assert main(["encrypt", "--key", f"jwe:{pub}", "--layer", "-1", str(tmp_path / "plain"),
                 str(tmp_path / "enc")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("kept (not chosen)") and "encrypted sha256:" in out[1] and out[1].endswith("(jwe)")
    assert main(["inspect", "--json", str(tmp_path / "enc")]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert [r.get("wrappedFor") for r in rows] == [None, ["jwe"]]
    assert rows[1]["cipher"] == "AES_256_CTR_HMAC_SHA256"
    # skopeo's flag name works as well
    assert main(["decrypt", "--decryption-key", f"jwe:{priv}", "--json", str(tmp_path / "enc"),
                 str(tmp_path / "dec")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [x["action"] for x in doc["layers"]] == ["kept", "decrypted"]
    assert manifests(tmp_path / "dec") == [plain]


def test_refusal_exits_1_and_writes_nothing(tmp_path: Path, key_files: tuple[str, str, str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pub, _, other = key_files
    make_layout(tmp_path / "plain")
    assert main(["encrypt", "--key", f"jwe:{pub}", str(tmp_path / "plain"), str(tmp_path / "enc")]) == 0
    capsys.readouterr()
    assert main(["decrypt", "--key", f"jwe:{other}", str(tmp_path / "enc"), str(tmp_path / "dec")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inclavare-image: ") and "none of the 1 private key" in err and err.count("\n") == 1
    assert not (tmp_path / "dec").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["encrypt", "S", "D"], "give at least one --key"),
    (["encrypt", "--key", "pgp:x", "S", "D"], "pgp, pkcs7 and pkcs11 are not supported"),
    (["encrypt", "--key", "jwe:", "S", "D"], "expected jwe:FILE or provider:NAME"),
    (["encrypt", "--key", "jwe:/nonexistent.pem", "S", "D"], "--key jwe /nonexistent.pem: No such file"),
    (["decrypt", "--key", "provider:nope:x", "S", "D"], "no key provider 'nope'"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCICRYPT_KEYPROVIDER_CONFIG", raising=False)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("inclavare-image: ")


def test_key_file_that_is_not_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "k").write_text("not a key")
    assert main(["encrypt", "--key", f"jwe:{tmp_path / 'k'}", "S", "D"]) == 2
    assert "not a PEM or DER public key" in capsys.readouterr().err


def test_provider_value_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ocicrypt.json"
    config.write_text(json.dumps({"key-providers": {"vd": {"grpc": "unix:" + str(tmp_path / "none.sock")}}}))
    make_layout(tmp_path / "plain")
    (tmp_path / "kid").write_text("layers/k1\n")
    assert main(["encrypt", "--keyprovider-config", str(config), "--timeout", "5", "--key", "provider:vd:@" +
                 str(tmp_path / "kid"), str(tmp_path / "plain"), str(tmp_path / "enc")]) == 1
    assert "key provider 'vd'" in capsys.readouterr().err and not (tmp_path / "enc").exists()
    assert main(["encrypt", "--keyprovider-config", str(config), "--key", "provider:vd:@" + str(tmp_path / "none"),
                 str(tmp_path / "plain"), str(tmp_path / "enc")]) == 2
    assert "No such file" in capsys.readouterr().err
