"""Encrypted images end to end with rune: an image layer encrypted for the owner's key (ocicrypt jwe), sealed
(`inclavare-image seal`), unpacked as any engine would (the ciphertext lands in the rootfs), run as a sim
enclave container; the enclave attests to the real `verdictd`, gets the owner's key, decrypts the layer into
its private tree and the payload prints the secret. Every denial fails `create` and leaves no plaintext."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import needs_busybox, needs_root
from tests.integration.encrypted_rig import (
    BUSYBOX,
    CAT,
    KEY_PATH,
    SECRET,
    owner_key,
    refs,
    signed_image,
    start_verdictd,
    url_of,
)
from tests.integration.test_vd_daemon import Daemon, Env, world  # noqa: F401 (world: a fixture)
from tests.unit.services.imagecrypt.helpers import LAYER_GZIP, LAYER_TAR, blob, make_layout, manifests

pytestmark = [needs_root, needs_busybox]


@pytest.fixture(scope="module", params=["ec-tar", "rsa-gzip"])
def owner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The owner's key pair and the sealed layer tar of an image encrypted to it (made off-cloud): an EC key and
    an uncompressed layer, or an RSA key and a gzip layer (the other code paths inside the enclave)."""
    from inclavare.formats import ocicrypt_jwe as jwe
    from inclavare.services.imagecrypt.layout import EncryptConfig, encrypt_layout
    from inclavare.services.imagecrypt.seal import seal_layout

    d = tmp_path_factory.mktemp("owner")
    rsa_gzip = request.param == "rsa-gzip"
    pem, pub = owner_key(rsa_gzip)
    make_layout(d / "plain", [(LAYER_GZIP if rsa_gzip else LAYER_TAR, {"app/secret.txt": SECRET})])
    encrypt_layout(str(d / "plain"), str(d / "enc"), EncryptConfig(jwe_recipients=[jwe.load_public_key(pub)]))
    seal_layout(str(d / "enc"), str(d / "sealed"))
    (layer,) = manifests(d / "sealed")[0]["layers"]
    return {"private_pem": pem, "sealed_tar": blob(d / "sealed", layer["digest"])}


@pytest.fixture
def verdictd(world: Env, tmp_path: Path, owner: dict[str, Any]) -> Iterator[Daemon]:  # noqa: F811
    d = start_verdictd(world, tmp_path / "vd-state", owner["private_pem"])
    try:
        yield d
    finally:
        assert d.stop() == 0


def bundle(make_bundle: Any, owner: dict[str, Any], img: bytes | None, url: str | None,
           key: str | None = KEY_PATH, args: list[str] = CAT, runtime: str = "builtin:sim") -> str:
    def edit(cfg: dict[str, Any]) -> None:
        env = cfg["process"]["env"]
        if img is not None:
            env += ["ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={runtime}"]
        if url:
            env.append(f"ENCLAVE_KBS_URL={url}")
        if key:
            env.append(f"ENCLAVE_KBS_KEY={key}")

    b = make_bundle(args, edit=edit)
    rootfs = Path(b) / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(owner["sealed_tar"])) as t:  # what containerd/podman unpack does
        t.extractall(rootfs)
    if img is not None:
        (rootfs / "enclave").mkdir(exist_ok=True)
        (rootfs / "enclave" / "enclave.img").write_bytes(img)
    return str(b)


def files(b: str) -> dict[str, int]:
    return {str(p): p.lstat().st_size for p in Path(b).rglob("*") if not p.is_dir()}


def no_plaintext_left(b: str, before: dict[str, int]) -> None:
    """Nothing was written into the bundle (the rootfs holds what the engine unpacked, and no more), and the
    secret is nowhere in it."""
    assert files(b) == before
    found = subprocess.run(["grep", "-rl", SECRET.decode().strip(), b], capture_output=True, text=True).stdout
    assert found == "", f"plaintext on disk: {found}"


def private_mounts(lines: set[str]) -> list[str]:
    """Mount lines that could be the enclave's private tree: a tmpfs without a source (fsopen's). Only new lines
    of that kind count: other tests on the host mount and unmount their own things meanwhile."""
    return [line for line in lines if line.partition(" - ")[2].split()[:2] == ["tmpfs", "none"]]


def run(rune: Any, cid: str, b: str, world: Env) -> subprocess.CompletedProcess[str]:  # noqa: F811
    return rune.run("run", "--bundle", b, cid, env={**os.environ, "INCLAVARE_SIM_STATE_DIR": world.sim_dir})


def test_the_measured_enclave_prints_the_secret(rune, cid, make_bundle, owner, verdictd, world):  # noqa: F811
    img, mr = signed_image(BUSYBOX)
    refs(verdictd, mr)
    b = bundle(make_bundle, owner, img, url_of(verdictd))
    mounts = set(open("/proc/self/mountinfo").read().splitlines())
    before = files(b)
    p = run(rune, cid, b, world)
    assert p.returncode == 0, p.stderr
    assert p.stdout.encode() == SECRET
    no_plaintext_left(b, before)
    assert not private_mounts(set(open("/proc/self/mountinfo").read().splitlines()) - mounts)  # mounted nowhere
    assert (Path(b) / "rootfs/.inclavare/sealed/000/layer.enc").exists()  # the host only ever had ciphertext


@pytest.mark.parametrize("case", ["other enclave", "debug enclave", "revoked", "kbs down", "no key named",
                                  "wrong key", "no such key", "no kbs named", "layer altered",
                                  "descriptor altered"])
def test_denials_fail_create_and_leave_nothing(rune, cid, make_bundle, owner, verdictd, world, case):  # noqa: F811
    img, mr = signed_image(BUSYBOX)
    url, key = url_of(verdictd), KEY_PATH
    expect = ""
    if case == "other enclave":
        other, _ = signed_image(BUSYBOX + b"\0changed")
        refs(verdictd, mr)
        img, expect = other, "403 PolicyDeny"
    elif case == "debug enclave":
        img, dmr = signed_image(BUSYBOX, debug=True)
        refs(verdictd, mr, dmr)
        expect = "debug"
    elif case == "revoked":
        refs(verdictd, "00" * 32)  # the owner replaced the reference value
        expect = "is not a reference value"
    elif case == "kbs down":
        url, expect = "http://127.0.0.1:1", "cannot connect"
    elif case == "no key named":
        refs(verdictd, mr)
        key, expect = None, "ENCLAVE_KBS_KEY must name"
    elif case == "wrong key":
        refs(verdictd, mr)
        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        assert verdictd.admin("POST", "/kbs/v0/resource/owner/key/other", other)[0] == 200
        key, expect = "owner/key/other", "does not open it"
    elif case == "no such key":
        refs(verdictd, mr)
        key, expect = "owner/key/nothing", "404 ResourceNotFound"
    elif case == "no kbs named":
        refs(verdictd, mr)
        url, expect = None, "the container names no key broker (ENCLAVE_KBS_URL)"
    elif case == "layer altered":
        refs(verdictd, mr)
        expect = "sealed layer 000: HMAC-SHA256 of the ciphertext does not match"
    elif case == "descriptor altered":
        refs(verdictd, mr)
        expect = "sealed layer 000: layer.enc is not the blob its descriptor names"
    b = bundle(make_bundle, owner, img, url, key)
    sealed = Path(b) / "rootfs/.inclavare/sealed/000"
    if case == "layer altered":  # one bit of the ciphertext, as a host (or a registry) could change it
        data = bytearray((sealed / "layer.enc").read_bytes())
        data[len(data) // 2] ^= 1
        (sealed / "layer.enc").write_bytes(bytes(data))
    elif case == "descriptor altered":  # the size claimed for the blob
        desc = json.loads((sealed / "descriptor.json").read_text())
        desc["size"] += 1
        (sealed / "descriptor.json").write_text(json.dumps(desc))
    before = files(b)
    p = run(rune, cid, b, world)
    assert p.returncode != 0 and p.stdout == "", (p.stdout, p.stderr)
    assert expect in p.stderr, p.stderr
    assert len([x for x in p.stderr.splitlines() if not x.startswith("rune: warning")]) == 1, p.stderr
    no_plaintext_left(b, before)
    assert rune.run("state", cid).returncode != 0  # nothing left behind


def test_a_plain_container_of_a_sealed_image_is_refused(rune, cid, make_bundle, owner, world):  # noqa: F811
    b = bundle(make_bundle, owner, None, None, None)
    p = run(rune, cid, b, world)
    assert p.returncode != 0 and "the image has encrypted layers (.inclavare/sealed)" in p.stderr, p.stderr
    assert "ENCLAVE_TYPE" in p.stderr


def test_seal_cli(tmp_path: Path, owner: dict[str, Any]) -> None:
    """`inclavare-image seal` as a program: refuses a plain image with one line and exit 1."""
    make_layout(tmp_path / "plain")
    p = subprocess.run([sys.executable, "-m", "inclavare.cli.image", "seal", str(tmp_path / "plain"),
                        str(tmp_path / "out")], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith("inclavare-image: ") and "no encrypted layer" in p.stderr
    assert not (tmp_path / "out").exists()


def test_a_decrypted_dir_from_the_config_never_reaches_the_payload(rune, cid, make_bundle, world):  # noqa: F811
    """$ENCLAVE_DECRYPTED_DIR is the runtime's word that the enclave decrypted those files with the owner's key. A
    value in the container's config (the host's) is dropped, also when the image has no sealed layer: a host that
    strips the sealed layers cannot point the payload at files of its own."""
    img, _ = signed_image(BUSYBOX)

    def edit(cfg: dict[str, Any]) -> None:
        cfg["process"]["env"] += ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim", "ENCLAVE_DECRYPTED_DIR=/etc"]

    b = make_bundle(["sh", "-c", 'echo "${ENCLAVE_DECRYPTED_DIR-unset}"'], edit=edit)
    (Path(b) / "rootfs" / "enclave").mkdir()
    (Path(b) / "rootfs" / "enclave" / "enclave.img").write_bytes(img)
    p = run(rune, cid, b, world)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "unset\n"


def test_exec_into_an_enclave_that_opened_secrets_is_refused(rune, cid, make_bundle, owner, verdictd,
                                                             world):  # noqa: F811
    """The host chooses `rune exec`'s command: in an enclave that holds the owner's files it would read them."""
    img, mr = signed_image(BUSYBOX)
    refs(verdictd, mr)
    b = bundle(make_bundle, owner, img, url_of(verdictd), args=["sh", "-c", "sleep 300"])
    env = {**os.environ, "INCLAVARE_SIM_STATE_DIR": world.sim_dir}
    p = rune.run("run", "-d", "--bundle", b, cid, env=env)
    assert p.returncode == 0, p.stderr
    p = rune.run("exec", cid, "sh", "-c", 'cat "$ENCLAVE_DECRYPTED_DIR/app/secret.txt"', env=env)
    assert p.returncode != 0 and SECRET.decode().strip() not in p.stdout, (p.stdout, p.stderr)
    assert "exec is refused" in p.stderr, p.stderr
    assert rune.run("kill", cid, "KILL").returncode == 0


def test_an_enclave_runtime_that_cannot_open_sealed_layers_refuses_them(rune, cid, make_bundle, owner,
                                                                       world):  # noqa: F811
    """builtin:wasm knows nothing of sealed layers: it must not start the payload without its files."""
    b = bundle(make_bundle, owner, b"", None, None, args=["/app/x.wasm"], runtime="builtin:wasm")
    before = files(b)
    p = run(rune, cid, b, world)
    assert p.returncode != 0, p.stderr
    assert "encrypted layers (.inclavare/sealed) and this enclave runtime does not open them" in p.stderr
    assert files(b) == before and rune.run("state", cid).returncode != 0
