"""Signing an enclave image's SIGSTRUCT for a carrier: the ``server`` and ``local`` methods of the node
config's ``[enclave_runtime] signature_method`` (``client`` means the image arrives signed: see
:mod:`.carriers`, nothing is signed here).

* ``server``: the signing material goes to upstream's signature-server API over HTTPS (token and/or mTLS, as
  :class:`SignatureClient` does; plain http only to loopback); the reply's public key must equal the pinned
  ``[signature] public_key`` when one is configured, and the signature must verify (:func:`image.assemble`
  checks it, Q1/Q2 included).
* ``local``: an RSA-3072 e=3 private key on the node (``[signature] local_key``): a regular file, mode 0600
  or stricter, owned by root or by the shim's user.

Each signer has an ``identity()``: the bundle cache's L2 input (MRSIGNER for a local key; the server URL and
the pinned key's digest for a server), so entries signed by another key are never reused.
Errors are :class:`CarrierError` one-liners, code ``failed_precondition``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from inclavare.errors import InclavareError
from inclavare.shim.carrier.nodeconfig import NodeConfig


class CarrierError(InclavareError):
    """A carrier could not turn the container into an enclave container; ``code`` is the Task error class."""

    def __init__(self, message: str, code: str = "failed_precondition") -> None:
        super().__init__(message)
        self.code = code


def _read_private(path: str, what: str) -> bytes:
    from inclavare.services.statedb import PrivateStateError, read_secret_file

    try:
        return read_secret_file(path, what, 1 << 20, "expected at most 1 MiB", follow=False, owners=(0, os.geteuid()))
    except PrivateStateError as e:
        raise CarrierError(str(e)) from None


def _spki_digest(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


class LocalSigner:
    """Signs with the node-local key of ``[signature] local_key``."""

    method = "local"

    def __init__(self, cfg: NodeConfig) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from inclavare.formats.sgx.common import mrsigner_of

        self.path = cfg.signature.local_key
        if not self.path:
            raise CarrierError(f"signature_method local needs [signature] local_key in {cfg.path}")
        self.pem = _read_private(self.path, "signing key")
        self._key: Any = None
        # the identity (a cache key) needs only the modulus: skip the RSA consistency check here (~0.2 s for
        # RSA-3072); :meth:`sign` loads the key fully checked before it signs anything
        try:
            quick = serialization.load_pem_private_key(self.pem, password=None, unsafe_skip_rsa_key_validation=True)
        except (ValueError, TypeError):
            raise CarrierError(f"signing key {self.path}: not a readable, unencrypted PEM private key") from None
        if not isinstance(quick, rsa.RSAPrivateKey):
            raise CarrierError(f"signing key {self.path}: {type(quick).__name__} is not an RSA key")
        nums = quick.public_key().public_numbers()
        if nums.n.bit_length() != 3072 or nums.e != 3:
            raise CarrierError(f"signing key {self.path}: SGX needs RSA-3072 with e=3 (got {nums.n.bit_length()} "
                               f"bits, e={nums.e})")
        self.mrsigner = mrsigner_of(nums.n.to_bytes(384, "little"))

    @property
    def key(self) -> Any:
        from inclavare.sgx.signing import SigningError, load_private_key

        if self._key is None:
            try:
                self._key = load_private_key(self.pem)
            except SigningError as e:
                raise CarrierError(f"signing key {self.path}: {e}") from None
        return self._key

    def identity(self) -> dict[str, str]:
        return {"method": "local", "mrsigner": self.mrsigner.hex()}

    def sign(self, unsigned: Any) -> bytes:
        from inclavare.enclave import image

        try:
            return image.sign(unsigned, self.key)
        except image.EnclaveImageError as e:
            raise CarrierError(f"local signing: {e}") from None


class ServerSigner:
    """Signs through the signature server of ``[signature] server_address``."""

    method = "server"

    def __init__(self, cfg: NodeConfig) -> None:
        sig = cfg.signature
        if not sig.server_address:
            raise CarrierError(f"signature_method server needs [signature] server_address in {cfg.path}")
        self.cfg = cfg
        self.url = sig.server_address
        self.pinned: Any = None
        self.pinned_digest = ""
        if sig.public_key:
            from inclavare.sgx.signing import SigningError, load_public_key

            try:
                with open(sig.public_key, "rb") as f:
                    self.pinned = load_public_key(f.read(1 << 20))
            except OSError as e:
                raise CarrierError(f"pinned public key {sig.public_key}: {e.strerror}") from None
            except SigningError as e:
                raise CarrierError(f"pinned public key {sig.public_key}: {e}") from None
            self.pinned_digest = _spki_digest(self.pinned)

    def identity(self) -> dict[str, str]:
        return {"method": "server", "server": self.url, "pinned_key": self.pinned_digest}

    def _client(self) -> Any:
        from inclavare.services.signature_server import SignatureClient, SignatureServerError

        sig = self.cfg.signature
        token = None
        if sig.token_file:
            data = _read_private(sig.token_file, "token file")
            token = data.decode("utf-8", "replace").splitlines()[0].strip() if data.strip() else ""
        try:
            return SignatureClient(self.url, ca_cert=sig.ca_cert or None, token=token,
                                   client_cert=sig.client_cert or None, client_key=sig.client_key or None,
                                   timeout=sig.timeout)
        except SignatureServerError as e:
            raise CarrierError(f"signature server: {e}") from None

    def sign(self, unsigned: Any) -> bytes:
        from inclavare.enclave import image
        from inclavare.services.signature_server import SignatureServerError
        from inclavare.sgx.signing import SigningError, load_public_key

        client = self._client()
        try:
            signature, public_pem = client.sign(unsigned.signing_material())
        except SignatureServerError as e:
            raise CarrierError(f"signature server {self.url}: {e}") from None
        except OSError as e:  # refused, unreachable, reset, TLS failures (ssl.SSLError is an OSError)
            raise CarrierError(f"signature server {self.url}: {e.strerror or e}") from None
        finally:
            client.close()
        try:
            public = load_public_key(public_pem)
        except SigningError as e:
            raise CarrierError(f"signature server {self.url}: its {e}") from None
        if self.pinned is not None and _spki_digest(public) != self.pinned_digest:
            raise CarrierError(f"signature server {self.url}: it signed with a key that is not the pinned "
                               f"{self.cfg.signature.public_key}")
        try:
            return image.assemble(unsigned, signature, public)
        except image.EnclaveImageError as e:
            raise CarrierError(f"signature server {self.url}: the returned signature does not verify ({e})") from None


def signer_for(cfg: NodeConfig) -> LocalSigner | ServerSigner:
    if cfg.signature_method == "local":
        return LocalSigner(cfg)
    if cfg.signature_method == "server":
        return ServerSigner(cfg)
    raise CarrierError(f"signature_method {cfg.signature_method!r} signs nothing")
