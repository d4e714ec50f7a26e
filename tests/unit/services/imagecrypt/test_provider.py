"""The provider key wrapper against verdictd's real key provider: over gRPC (verdictd's server on a unix
socket) and over the cmd protocol (the real ``verdictd keyprovider`` process). An image encrypted for
``provider:verdictd:<key id>`` decrypts only with an affirming EAR token the key policy accepts; every refusal
leaves nothing written. Also the ocicrypt configuration file's parsing."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.formats import ocicrypt as oc
from inclavare.formats.ocicrypt import OcicryptError
from inclavare.services.imagecrypt.layout import DecryptConfig, EncryptConfig, decrypt_layout, encrypt_layout
from inclavare.services.imagecrypt.provider import KeyProviderClient, ProviderAttrs, load_config, parse_config
from inclavare.services.verdictd.keyprovider import KeyProvider
from inclavare.services.verdictd.keyprovider_grpc import Listening, serve
from inclavare.services.verdictd.store import Store
from inclavare.services.verdictd.tokens import TokenIssuer
from tests.unit.services.imagecrypt.helpers import blob, files_of, make_layout, manifests, tree

KID = "layers/k1"
MRENCLAVE = "c5" * 32


class Policy:
    def allow_resource(self, input: dict[str, Any]) -> bool:  # noqa: A002
        return input["tee"] == "sgx" and input.get("mrenclave") == MRENCLAVE and input["kid"] == KID


@pytest.fixture
def kek(tmp_path: Path) -> tuple[bytes, str]:
    key = secrets.token_bytes(32)
    path = tmp_path / "kek"
    path.write_text(key.hex())
    path.chmod(0o600)
    return key, str(path)


@pytest.fixture
def store(tmp_path: Path, kek: tuple[bytes, str]) -> Iterator[Store]:
    s = Store(str(tmp_path / "state"), kek[0])
    s.put_secret("key", KID, secrets.token_bytes(32))
    yield s
    s.close()


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
def listening(tmp_path: Path, store: Store, issuer: TokenIssuer) -> Iterator[Listening]:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    srv = serve(KeyProvider(store, issuer, Policy(), audit=store.audit), "unix:" + str(run / "kp.sock"), workers=2,
                max_concurrent=4)
    yield srv
    srv.stop(None)


def token(issuer: TokenIssuer, mrenclave: str = MRENCLAVE, tier: str = "affirming") -> bytes:
    return issuer.issue("sgx", {"mrenclave": mrenclave}, "UpToDate", tier).encode()


def test_encrypt_and_decrypt_through_verdictd_grpc(tmp_path: Path, listening: Listening, issuer: TokenIssuer,
                                                   store: Store) -> None:
    client = KeyProviderClient(ProviderAttrs("verdictd", grpc=listening.address), timeout=20)
    plain = make_layout(tmp_path / "plain")
    results = encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"),
                             EncryptConfig(providers=[(client, [KID.encode()])]))
    assert [r.wrappers for r in results] == [["provider.verdictd"]] * 2
    (enc,) = manifests(tmp_path / "enc")
    ann = enc["layers"][0]["annotations"]
    assert set(ann) == {"org.opencontainers.image.enc.keys.provider.verdictd", oc.ANNOTATION_PUBOPTS}
    (wrapped,) = oc.split_wrapped(ann["org.opencontainers.image.enc.keys.provider.verdictd"], "a")
    assert json.loads(wrapped)["kid"] == KID and json.loads(wrapped)["alg"] == "A256GCM"  # verdictd's annotation

    # no token, a token for another enclave, a contraindicated one: refused, nothing written
    before = tree(tmp_path / "enc")
    for values, message in (([], "UNAUTHENTICATED"), ([token(issuer, "00" * 32)], "PERMISSION_DENIED"),
                            ([token(issuer, tier="contraindicated")], "PERMISSION_DENIED")):
        with pytest.raises(OcicryptError, match=f"key provider 'verdictd' .*UnWrapKey {message}"):
            decrypt_layout(str(tmp_path / "enc"), str(tmp_path / "dec"), DecryptConfig(providers=[(client, values)]))
        assert not (tmp_path / "dec").exists() and tree(tmp_path / "enc") == before

    results = decrypt_layout(str(tmp_path / "enc"), str(tmp_path / "dec"),
                             DecryptConfig(providers=[(client, [token(issuer)])]))
    assert [r.action for r in results] == ["decrypted", "decrypted"]
    assert manifests(tmp_path / "dec") == [plain]
    assert files_of(blob(tmp_path / "dec", plain["layers"][1]["digest"]))["app/secret.txt"].startswith(b"the secret")
    outcomes = [r["detail"]["outcome"] for r in store.audit_records(10)]
    assert outcomes.count("released") == 2 and outcomes.count("wrapped") == 2


def test_unknown_key_id_refused_at_encryption(tmp_path: Path, listening: Listening) -> None:
    client = KeyProviderClient(ProviderAttrs("verdictd", grpc=listening.address), timeout=20)
    make_layout(tmp_path / "plain")
    with pytest.raises(OcicryptError, match="WrapKey NOT_FOUND: key 'layers/nope': no such key"):
        encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"),
                       EncryptConfig(providers=[(client, [b"layers/nope"])]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek", "plain", "run", "state"]


def test_unreachable_provider(tmp_path: Path) -> None:
    client = KeyProviderClient(ProviderAttrs("verdictd", grpc="unix:" + str(tmp_path / "none.sock")), timeout=5)
    make_layout(tmp_path / "plain")
    with pytest.raises(OcicryptError, match="WrapKey UNAVAILABLE"):
        encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"), EncryptConfig(providers=[(client, [b"k"])]))


def test_through_the_verdictd_keyprovider_command(tmp_path: Path, store: Store, issuer: TokenIssuer,
                                                  kek: tuple[bytes, str]) -> None:
    """ocicrypt's cmd protocol with the real ``verdictd keyprovider`` process (its default key policy: any
    affirming token)."""
    key_pem = tmp_path / "token-key.pem"
    key_pem.write_bytes(issuer.key_pem())
    key_pem.chmod(0o600)
    store.close()  # the command opens the state itself
    config = tmp_path / "ocicrypt.json"
    config.write_text(json.dumps({"key-providers": {"verdictd": {"cmd": {
        "path": sys.executable, "args": ["-m", "inclavare.cli.verdictd", "keyprovider", "--state-dir",
                                         str(tmp_path / "state"), "--kek-file", kek[1], "--token-key",
                                         str(key_pem)]}}}}))
    attrs = load_config(str(config))["verdictd"]
    client = KeyProviderClient(attrs, timeout=60)
    plain = make_layout(tmp_path / "plain")
    encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"), EncryptConfig(providers=[(client, [KID.encode()])]))
    with pytest.raises(OcicryptError, match="key provider 'verdictd': refused: .*no attestation token"):
        decrypt_layout(str(tmp_path / "enc"), str(tmp_path / "dec"), DecryptConfig(providers=[(client, [])]))
    assert not (tmp_path / "dec").exists()
    decrypt_layout(str(tmp_path / "enc"), str(tmp_path / "dec"), DecryptConfig(providers=[(client, [token(issuer)])]))
    assert manifests(tmp_path / "dec") == [plain]


def test_remote_plaintext_addresses_are_refused(tmp_path: Path) -> None:
    make_layout(tmp_path / "plain")
    for address in ("10.0.0.1:50000", "dns:///kbs.example:443", "verdictd:1"):
        client = KeyProviderClient(ProviderAttrs("verdictd", grpc=address), timeout=5)
        with pytest.raises(OcicryptError, match="neither a unix socket nor a loopback address"):
            encrypt_layout(str(tmp_path / "plain"), str(tmp_path / "enc"), EncryptConfig(providers=[(client, [b"k"])]))
    from inclavare.services.imagecrypt.provider import check_grpc_address

    assert check_grpc_address("/run/x.sock", "w") == "unix:/run/x.sock"
    assert check_grpc_address("127.0.0.1:5", "w") == "127.0.0.1:5"
    assert check_grpc_address("[::1]:5", "w") == "[::1]:5"


def test_config_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = parse_config(b'{"key-providers": {"a": {"grpc": "127.0.0.1:5"}, '
                       b'"b": {"cmd": {"path": "/x", "args": ["y"]}}}}')
    assert got == {"a": ProviderAttrs("a", grpc="127.0.0.1:5"), "b": ProviderAttrs("b", cmd=("/x", "y"))}
    for bad, message in ((b"[]", "expected"), (b'{"key-providers": {"a": {}}}', 'give "grpc"'),
                         (b'{"key-providers": {"a": {"cmd": {"args": []}}}}', "cmd: expected"),
                         (b'{"key-providers": {"a b": {"grpc": "x"}}}', "key provider name")):
        with pytest.raises(OcicryptError, match=message):
            parse_config(bad)
    monkeypatch.delenv("OCICRYPT_KEYPROVIDER_CONFIG", raising=False)
    assert load_config() == {}
    path = tmp_path / "c.json"
    path.write_text('{"key-providers": {"v": {"grpc": "unix:///x"}}}')
    monkeypatch.setenv("OCICRYPT_KEYPROVIDER_CONFIG", str(path))
    assert load_config()["v"].annotation == "org.opencontainers.image.enc.keys.provider.v"
    os.unlink(path)
    with pytest.raises(OcicryptError, match="No such file"):
        load_config()
