"""AES_256_CTR_HMAC_SHA256, ocicrypt's layer cipher (blockcipher/blockcipher_aes_ctr.go), streaming.

Encryption: a fresh random 32-byte key and 16-byte nonce per layer; the layer is AES-256-CTR encrypted (the
nonce is the initial 128-bit counter block) and HMAC-SHA256, keyed with the same key, is computed over the
ciphertext (encrypt-then-MAC). The key, the nonce and the digest of the plaintext blob go into the private
options (wrapped for the recipients); the cipher name and the HMAC into the public options (an annotation).

Decryption and when plaintext counts: ocicrypt checks the HMAC only when its reader reaches EOF, so every byte
before the last ``Read`` is handed out unverified (a consumer that streams into a tar extractor has already
acted on it). Here no plaintext is ever final before it is verified:

* :func:`decrypt_file` decrypts into a staging file the caller owns (created private, never published under a
  blob name), checks the HMAC over the whole ciphertext at EOF, then the plaintext's digest against the private
  options; the caller renames the staging file into place only when this returns, and deletes it otherwise
  (inclavare.services.imagecrypt.layout does).
* :func:`decrypt_bytes` (for a layer held in memory, as an enclave runtime would) checks the HMAC over the
  ciphertext *before* decrypting anything, then the digest.

The digest check: the plaintext's digest must equal ``digest`` in the private options. One exception is made,
for images skopeo (containers/image) wrote: when skopeo compresses a layer while encrypting it, it records the
digest of the layer it was given (the uncompressed tar) rather than of the gzip stream it encrypted. For a
``+gzip`` layer whose raw digest does not match, the digest of the gunzipped stream is accepted instead. Both
digests are inside the authenticated, wrapped options and the plaintext is already authenticated by the HMAC,
so this adds no forgery path; it only names which bytes the owner hashed.

Imports only inclavare.formats and pyca/cryptography (see the package docstring).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from inclavare.formats.ocicrypt import CIPHER_AES256CTR, OcicryptError, PrivateOptions, PublicOptions

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext

KEY_SIZE = 32
NONCE_SIZE = 16
HMAC_SIZE = 32
CHUNK = 1 << 20
MAX_LAYER = 64 << 30  # one layer blob; the counter space and the disk run out long after this


def _ctr(key: bytes, nonce: bytes) -> CipherContext:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()  # CTR: the same keystream both ways


def _hasher(digest: str) -> hashlib._Hash:
    return hashlib.new(digest.split(":", 1)[0])


class LayerEncryptor:
    """Encrypt one layer: ``update`` with successive plaintext chunks (each returns its ciphertext), then
    ``finalize`` for the public and private options. ``key``/``nonce`` default to fresh random values; give
    them only for known-answer tests."""

    def __init__(self, key: bytes | None = None, nonce: bytes | None = None) -> None:
        self._key = secrets.token_bytes(KEY_SIZE) if key is None else key
        self._nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
        if len(self._key) != KEY_SIZE or len(self._nonce) != NONCE_SIZE:
            raise OcicryptError(f"{CIPHER_AES256CTR}: key must be {KEY_SIZE} bytes and nonce {NONCE_SIZE}")
        self._ctr = _ctr(self._key, self._nonce)
        self._mac = _hmac.new(self._key, digestmod=hashlib.sha256)
        self._plain = hashlib.sha256()
        self._ct = hashlib.sha256()
        self.size = 0
        self._done = False

    def update(self, data: bytes) -> bytes:
        if self._done:
            raise OcicryptError(f"{CIPHER_AES256CTR}: encryptor already finalized")
        self.size += len(data)
        if self.size > MAX_LAYER:
            raise OcicryptError(f"layer: more than {MAX_LAYER} bytes")
        self._plain.update(data)
        out = self._ctr.update(data)
        self._mac.update(out)
        self._ct.update(out)
        return out

    def finalize(self) -> tuple[PublicOptions, PrivateOptions]:
        """The options: public (cipher, HMAC) and private (key, plaintext sha256 digest, nonce)."""
        self._done = True
        self._ctr.finalize()
        pub = PublicOptions(CIPHER_AES256CTR, self._mac.digest(), {})
        priv = PrivateOptions(self._key, "sha256:" + self._plain.hexdigest(), {"nonce": self._nonce})
        return pub, priv

    @property
    def ciphertext_digest(self) -> str:
        """sha256 digest of the ciphertext written so far (the encrypted blob's name once finalized)."""
        return "sha256:" + self._ct.hexdigest()


def _key_and_nonce(pub: PublicOptions, priv: PrivateOptions) -> tuple[bytes, bytes]:
    if pub.cipher != CIPHER_AES256CTR:
        raise OcicryptError(f"pubopts.cipher: {pub.cipher[:64]!r} is not supported (only {CIPHER_AES256CTR})")
    if len(priv.symkey) != KEY_SIZE:
        raise OcicryptError(f"private options.symkey: {len(priv.symkey)} bytes, {CIPHER_AES256CTR} needs {KEY_SIZE}")
    # ocicrypt looks an option up in the public options first, then the private ones; a nonce is always private,
    # and one given publicly as well would be a second, unauthenticated value: refused
    if "nonce" in pub.cipheroptions:
        raise OcicryptError("pubopts.cipheroptions.nonce: the nonce must be private (in the wrapped options)")
    nonce = priv.cipheroptions.get("nonce")
    if nonce is None or len(nonce) != NONCE_SIZE:
        raise OcicryptError(f"private options.cipheroptions.nonce: {'missing' if nonce is None else len(nonce)}"
                            f"{'' if nonce is None else ' bytes'}; {CIPHER_AES256CTR} needs {NONCE_SIZE} bytes")
    if len(pub.hmac) != HMAC_SIZE:
        raise OcicryptError(f"pubopts.hmac: {len(pub.hmac)} bytes, expected {HMAC_SIZE} (HMAC-SHA256)")
    return priv.symkey, nonce


def _hmac_refused(where: str) -> OcicryptError:
    return OcicryptError(f"{where}: HMAC-SHA256 of the ciphertext does not match pubopts.hmac (the layer was "
                         f"altered, or the key is not this layer's); nothing decrypted is kept")


def _gunzip_digest(source: Iterable[bytes], digest: str) -> str | None:
    """The digest (same algorithm as ``digest``) of a gzip stream's decompressed content, all members; None when
    the stream is not gzip, is truncated, or has trailing bytes."""
    alg = digest.split(":", 1)[0]
    h = hashlib.new(alg)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = False  # the current member has started and not ended
    try:
        for chunk in source:
            while chunk:
                pending = True
                h.update(d.decompress(chunk))
                if not d.eof:
                    break
                pending = False
                chunk = d.unused_data  # the next gzip member
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    except zlib.error:
        return None
    return None if pending else f"{alg}:{h.hexdigest()}"


def _check_digest(actual: str, priv: PrivateOptions, media_compression: str, where: str,
                  replay: Iterable[bytes]) -> str:
    if _hmac.compare_digest(actual, priv.digest):
        return "raw"
    if media_compression == "gzip" and _gunzip_digest(replay, priv.digest) == priv.digest:
        return "uncompressed"
    raise OcicryptError(f"{where}: the decrypted layer's digest {actual} is not the {priv.digest} recorded in its "
                        f"private options; nothing decrypted is kept")


@dataclass(frozen=True)
class Decrypted:
    """A verified decryption: the plaintext's sha256 digest and size, the ciphertext's sha256 digest, and which
    bytes the recorded digest named (``raw``, or ``uncompressed`` for skopeo's compress-on-encrypt)."""

    digest: str
    size: int
    ciphertext_digest: str
    matched: str


def decrypt_file(src: IO[bytes], dst: IO[bytes], pub: PublicOptions, priv: PrivateOptions, *,
                 compression: str = "", where: str = "layer") -> Decrypted:
    """Decrypt ``src`` into ``dst``, a staging file opened for reading and writing that the caller publishes only
    if this returns (and deletes otherwise). Raises OcicryptError when the HMAC or the digest does not check."""
    key, nonce = _key_and_nonce(pub, priv)
    ctr = _ctr(key, nonce)
    mac = _hmac.new(key, digestmod=hashlib.sha256)
    plain = _hasher(priv.digest)
    sha = hashlib.sha256()
    ct_sha = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK):
        size += len(chunk)
        if size > MAX_LAYER:
            raise OcicryptError(f"{where}: more than {MAX_LAYER} bytes")
        mac.update(chunk)
        ct_sha.update(chunk)
        out = ctr.update(chunk)
        plain.update(out)
        if plain.name != "sha256":
            sha.update(out)
        dst.write(out)
    if not _hmac.compare_digest(mac.digest(), pub.hmac):
        raise _hmac_refused(where)
    dst.flush()
    dst.seek(0)
    actual = f"{plain.name}:{plain.hexdigest()}"
    matched = _check_digest(actual, priv, compression, where, iter(lambda: dst.read(CHUNK), b""))
    sha256 = actual if plain.name == "sha256" else "sha256:" + sha.hexdigest()
    return Decrypted(sha256, size, "sha256:" + ct_sha.hexdigest(), matched)


def decrypt_bytes(ciphertext: bytes, pub: PublicOptions, priv: PrivateOptions, *, compression: str = "",
                  where: str = "layer") -> bytes:
    """Decrypt a layer held in memory: the HMAC is checked before any byte is decrypted, then the digest."""
    key, nonce = _key_and_nonce(pub, priv)
    if not _hmac.compare_digest(_hmac.new(key, ciphertext, hashlib.sha256).digest(), pub.hmac):
        raise _hmac_refused(where)
    ctr = _ctr(key, nonce)
    plaintext = ctr.update(ciphertext) + ctr.finalize()
    h = _hasher(priv.digest)
    h.update(plaintext)
    _check_digest(f"{h.name}:{h.hexdigest()}", priv, compression, where, [plaintext])
    return plaintext


def encrypt_bytes(plaintext: bytes) -> tuple[bytes, PublicOptions, PrivateOptions]:
    """Encrypt a layer held in memory with a fresh key and nonce: (ciphertext, public, private options)."""
    enc = LayerEncryptor()
    ct = enc.update(plaintext)
    pub, priv = enc.finalize()
    return ct, pub, priv
