"""Shared pieces of the encrypted-image tests (test_encrypted_image.py with rune, test_encrypted_engines.py with
containerd, CRI and podman): the owner's key, signed sim enclave images, a real verdictd holding the key and the
reference values, and a whole OCI image encrypted and sealed with ``inclavare-image`` as an owner would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.test_vd_daemon import Daemon, Env

SECRET = b"the owner's secret: 42\n"
KEY_PATH = "owner/key/image"
CAT = ["sh", "-c", 'cat "$ENCLAVE_DECRYPTED_DIR/app/secret.txt"']
BUSYBOX = Path("/bin/busybox").read_bytes() if os.path.exists("/bin/busybox") else b""


def owner_key(rsa_key: bool = False) -> tuple[bytes, bytes]:
    """The owner's key pair (PKCS#8 private PEM, SubjectPublicKeyInfo PEM): EC P-256, or RSA 2048."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key: Any = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, pub


def signed_image(payload: bytes, debug: bool = False, kind: str = "native") -> tuple[bytes, str]:
    """A signed sim enclave image of ``payload`` and its MRENCLAVE (hex)."""
    from inclavare.enclave import image
    from tests.unit.sgx_helpers import rsa3072_e3_key

    img = image.sign(image.build(payload, kind, image.EnclaveSettings(debug=debug)), rsa3072_e3_key(0))
    return img, image.load(img).mrenclave.hex()


def start_verdictd(world: Env, state: Path, private_pem: bytes, *extra: str) -> Daemon:
    """A verdictd on ``state`` holding the owner's private key at KEY_PATH (a KBS resource)."""
    d = Daemon(world, state, *extra)
    status, answer = d.admin("POST", f"/kbs/v0/resource/{KEY_PATH}", private_pem)
    if status != 200:
        d.stop()
        raise AssertionError(f"verdictd refused the owner's key: {status} {answer}")
    return d


def refs(d: Daemon, *mrenclaves: str) -> None:
    """The owner's reference values: the MRENCLAVEs allowed to get the key (replacing the previous ones)."""
    status, answer = d.admin("POST", "/kbs/v0/reference-value",
                             {"name": "mrenclave", "values": list(mrenclaves), "provenance": "test"})
    assert status == 200, answer


def url_of(d: Daemon) -> str:
    return f"http://127.0.0.1:{d.port('kbs')}"


def enclave_env(url: str, key: str = KEY_PATH) -> dict[str, str]:
    """The container env of a sim enclave that gets the owner's key from the KBS at ``url``."""
    return {"ENCLAVE_TYPE": "sim", "ENCLAVE_RUNTIME_PATH": "builtin:sim", "ENCLAVE_KBS_URL": url,
            "ENCLAVE_KBS_KEY": key}


def image_tool(*args: str) -> None:
    p = subprocess.run([sys.executable, "-m", "inclavare.cli.image", *args], capture_output=True, text=True)
    assert p.returncode == 0, f"inclavare-image {' '.join(args)}: {p.stderr}"


def sealed_image(work: Path, name: str, enclave_img: bytes, public_pem: bytes, *, seal: bool = True,
                 cmd: tuple[str, ...] = tuple(CAT)) -> str:
    """An OCI archive (tar) of the image ``name``: a busybox rootfs layer, a layer with the signed enclave image at
    /enclave/enclave.img, and a layer with /app/secret.txt, the last one encrypted for ``public_pem``
    (``inclavare-image encrypt --layer -1``) and, with ``seal``, sealed (``inclavare-image seal``). Returns the
    tar's path; the layout directories stay under ``work``."""
    from inclavare.testing.bundle import make_rootfs
    from inclavare.testing.image import pack_layout, tar_tree, write_layout
    from tests.unit.services.imagecrypt.helpers import tar_of

    work.mkdir(parents=True, exist_ok=True)
    base = tar_tree(make_rootfs(str(work / "rootfs")))
    layers = [(base, True), (tar_of({"enclave/enclave.img": enclave_img}), True),
              (tar_of({"app/secret.txt": SECRET}), False)]
    write_layout(str(work / "plain"), name, layers, cmd=cmd)
    (work / "owner.pub").write_bytes(public_pem)
    image_tool("encrypt", "--key", f"jwe:{work / 'owner.pub'}", "--layer", "-1", str(work / "plain"),
               str(work / "enc"))
    out = work / "enc"
    if seal:
        image_tool("seal", str(work / "enc"), str(work / "sealed"))
        out = work / "sealed"
    return pack_layout(str(out), str(work / f"{out.name}-oci.tar"))
