"""AES_256_CTR_HMAC_SHA256: a known answer (NIST SP 800-38A F.5.5 for the CTR part), encrypt -> decrypt in
memory and streamed, and every refusal: a flipped ciphertext bit, a wrong key, a changed HMAC, an unknown
cipher, a digest that does not match, bad option sizes; plus the gzip digest rule for skopeo's images."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io

import pytest

from inclavare.formats import ocicrypt_cipher as cipher
from inclavare.formats.ocicrypt import CIPHER_AES256CTR, OcicryptError, PrivateOptions, PublicOptions

# NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt
KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
CTR0 = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
PT = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                   "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
CT = bytes.fromhex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
                   "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6")


def test_known_answer() -> None:
    enc = cipher.LayerEncryptor(KEY, CTR0)
    out = enc.update(PT[:7]) + enc.update(PT[7:])  # chunk boundaries do not matter
    pub, priv = enc.finalize()
    assert out == CT
    assert pub == PublicOptions(CIPHER_AES256CTR, hmac.new(KEY, CT, hashlib.sha256).digest(), {})
    assert priv == PrivateOptions(KEY, "sha256:" + hashlib.sha256(PT).hexdigest(), {"nonce": CTR0})
    assert enc.ciphertext_digest == "sha256:" + hashlib.sha256(CT).hexdigest()
    assert cipher.decrypt_bytes(CT, pub, priv) == PT


def test_fresh_key_and_nonce_per_layer() -> None:
    a = cipher.encrypt_bytes(b"x" * 100)
    b = cipher.encrypt_bytes(b"x" * 100)
    assert a[0] != b[0] and a[2].symkey != b[2].symkey and a[2].cipheroptions["nonce"] != b[2].cipheroptions["nonce"]


def test_streamed_decrypt_verifies() -> None:
    data = bytes(range(256)) * 9000  # crosses the 1 MiB chunk
    ct, pub, priv = cipher.encrypt_bytes(data)
    out = io.BytesIO()
    got = cipher.decrypt_file(io.BytesIO(ct), out, pub, priv)
    assert out.getvalue() == data
    assert got.digest == priv.digest and got.size == len(data) and got.matched == "raw"
    assert got.ciphertext_digest == "sha256:" + hashlib.sha256(ct).hexdigest()


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


@pytest.mark.parametrize("where", [0, 4000, -1])
def test_flipped_ciphertext_bit_is_refused(where: int) -> None:
    ct, pub, priv = cipher.encrypt_bytes(b"secret layer" * 1000)
    bad = _flip(ct, where % len(ct))
    with pytest.raises(OcicryptError, match="HMAC-SHA256 of the ciphertext does not match"):
        cipher.decrypt_bytes(bad, pub, priv)
    with pytest.raises(OcicryptError, match="HMAC-SHA256 of the ciphertext does not match"):
        cipher.decrypt_file(io.BytesIO(bad), io.BytesIO(), pub, priv)


def test_truncated_or_extended_ciphertext_is_refused() -> None:
    ct, pub, priv = cipher.encrypt_bytes(b"secret layer" * 10)
    for bad in (ct[:-1], ct + b"\x00", b""):
        with pytest.raises(OcicryptError, match="HMAC"):
            cipher.decrypt_bytes(bad, pub, priv)


def test_wrong_key_is_refused() -> None:
    ct, pub, priv = cipher.encrypt_bytes(b"secret layer")
    other = PrivateOptions(bytes(32), priv.digest, priv.cipheroptions)
    with pytest.raises(OcicryptError, match="or the key is not this layer's"):
        cipher.decrypt_bytes(ct, pub, other)


def test_changed_hmac_is_refused() -> None:
    ct, pub, priv = cipher.encrypt_bytes(b"secret layer")
    with pytest.raises(OcicryptError, match="HMAC"):
        cipher.decrypt_bytes(ct, PublicOptions(pub.cipher, _flip(pub.hmac, 3), {}), priv)


def test_unknown_cipher_is_refused() -> None:
    ct, pub, priv = cipher.encrypt_bytes(b"secret layer")
    with pytest.raises(OcicryptError, match="pubopts.cipher: 'AES_256_GCM' is not supported"):
        cipher.decrypt_bytes(ct, PublicOptions("AES_256_GCM", pub.hmac, {}), priv)


@pytest.mark.parametrize(("priv_change", "pub_change", "message"), [
    ({"symkey": bytes(16)}, {}, "symkey: 16 bytes"),
    ({"cipheroptions": {}}, {}, "nonce: missing"),
    ({"cipheroptions": {"nonce": bytes(12)}}, {}, "nonce: 12 bytes"),
    ({}, {"hmac": bytes(20)}, "pubopts.hmac: 20 bytes"),
    ({}, {"cipheroptions": {"nonce": bytes(16)}}, "the nonce must be private"),
])
def test_bad_option_sizes(priv_change: dict[str, object], pub_change: dict[str, object], message: str) -> None:
    ct, pub, priv = cipher.encrypt_bytes(b"secret layer")
    p2 = PrivateOptions(**{"symkey": priv.symkey, "digest": priv.digest, "cipheroptions": priv.cipheroptions,
                           **priv_change})  # type: ignore[arg-type]
    u2 = PublicOptions(**{"cipher": pub.cipher, "hmac": pub.hmac, "cipheroptions": pub.cipheroptions,
                          **pub_change})  # type: ignore[arg-type]
    with pytest.raises(OcicryptError, match=message):
        cipher.decrypt_bytes(ct, u2, p2)


def test_authentic_layer_with_another_digest_is_refused() -> None:
    ct, pub, priv = cipher.encrypt_bytes(b"secret layer")
    other = PrivateOptions(priv.symkey, "sha256:" + "00" * 32, priv.cipheroptions)
    with pytest.raises(OcicryptError, match="digest .* is not the sha256:0000"):
        cipher.decrypt_bytes(ct, pub, other)
    with pytest.raises(OcicryptError, match="nothing decrypted is kept"):
        cipher.decrypt_file(io.BytesIO(ct), io.BytesIO(), pub, other)


def test_gzip_layer_may_name_its_uncompressed_digest() -> None:
    """skopeo gzips a plain tar while encrypting it and records the tar's digest: accepted for +gzip only."""
    tar = b"tar content " * 500
    gz = gzip.compress(tar, mtime=0) + gzip.compress(b"second member", mtime=0)
    enc = cipher.LayerEncryptor(bytes(range(32)), bytes(16))
    ct = enc.update(gz)
    pub, priv = enc.finalize()
    uncompressed = PrivateOptions(priv.symkey, "sha256:" + hashlib.sha256(tar + b"second member").hexdigest(),
                                  priv.cipheroptions)
    out = io.BytesIO()
    got = cipher.decrypt_file(io.BytesIO(ct), out, pub, uncompressed, compression="gzip")
    assert got.matched == "uncompressed" and out.getvalue() == gz
    assert cipher.decrypt_bytes(ct, pub, uncompressed, compression="gzip") == gz
    with pytest.raises(OcicryptError, match="digest"):  # not for a layer whose media type is not gzip
        cipher.decrypt_bytes(ct, pub, uncompressed)
    # a truncated gzip stream's partial content is not accepted either
    enc = cipher.LayerEncryptor(bytes(range(32)), bytes(16))
    ct2 = enc.update(gz[:-30])
    pub2, priv2 = enc.finalize()
    partial = PrivateOptions(priv2.symkey, "sha256:" + hashlib.sha256(tar).hexdigest(), priv2.cipheroptions)
    with pytest.raises(OcicryptError, match="digest"):
        cipher.decrypt_bytes(ct2, pub2, partial, compression="gzip")
