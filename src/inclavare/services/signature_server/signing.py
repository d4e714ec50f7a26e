"""What is signed and with which key: SIGSTRUCT signing-material checks, the RSA-3072 e=3 key file, and the
signer the request handlers share."""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
from typing import TYPE_CHECKING, Any

from inclavare.formats.sgx import (
    ATTRIBUTE_FLAGS_RESERVED,
    SIGNING_MATERIAL_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    SgxFormatError,
    SigStruct,
)
from inclavare.services.signature_server.audit import AuditLog
from inclavare.services.signature_server.common import (
    MaterialError,
    SignatureServerError,
    log,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

# --------------------------------------------------------------------------------------------------
# Signing material


def check_material(material: bytes) -> SigStruct:
    """Parse and check 256 bytes of signing material; returns the unsigned SIGSTRUCT they describe.

    Refused: a wrong size, wrong HEADER constants, non-zero reserved bytes, bad TYPE or VENDOR, an all-zero
    ENCLAVEHASH, ATTRIBUTES with INIT or reserved bits set, or XFRM without x87 and SSE."""
    if len(material) != SIGNING_MATERIAL_SIZE:
        raise MaterialError(f"signing material is {len(material)} bytes, expected {SIGNING_MATERIAL_SIZE} "
                            "(SIGSTRUCT HEADER || BODY)")
    try:
        sig = SigStruct.from_signing_material(bytes(material))
    except SgxFormatError as e:
        raise MaterialError(f"signing material: {e}") from None
    if not any(sig.enclavehash):
        raise MaterialError("signing material: ENCLAVEHASH is all zero (no enclave was measured)")
    flags = sig.attributes.flags
    if flags & int(AttributeFlags.INIT):
        raise MaterialError("signing material: ATTRIBUTES sets INIT, which only EINIT may set")
    if flags & ATTRIBUTE_FLAGS_RESERVED:
        raise MaterialError(f"signing material: ATTRIBUTES.FLAGS {flags:#x} sets reserved bits "
                            f"{flags & ATTRIBUTE_FLAGS_RESERVED:#x}")
    if sig.attributes.xfrm & XFRM_LEGACY != XFRM_LEGACY:
        raise MaterialError(f"signing material: ATTRIBUTES.XFRM {sig.attributes.xfrm:#x} lacks x87 and SSE "
                            "(bits 0 and 1), which SGX requires")
    return sig


# --------------------------------------------------------------------------------------------------
# Keys, tokens and the allow-list


def load_signing_key(path: str, generate: bool = False) -> RSAPrivateKey:
    """The RSA-3072 e=3 signing key at ``path``. With ``generate`` a missing file is created (mode 0600, PKCS#1
    PEM as upstream reads it). A key file that group or others may access is refused."""
    from inclavare.sgx.signing import SigningError, load_private_key

    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not generate:
            raise SignatureServerError(f"signing key {path}: no such file (--generate-key creates one)") from None
        return _generate_key(path)
    except OSError as e:
        raise SignatureServerError(f"signing key {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SignatureServerError(f"signing key {path}: not a regular file")
    if st.st_mode & 0o077:
        raise SignatureServerError(f"signing key {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users "
                                   f"read the key; chmod 600 {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SignatureServerError(f"signing key {path}: {e.strerror}") from None
    try:
        return load_private_key(data)
    except SigningError as e:
        raise SignatureServerError(f"{path}: {e}") from None


def _generate_key(path: str) -> RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise SignatureServerError(f"signing key {path}: cannot create: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise SignatureServerError(f"signing key {path}: cannot write: {e.strerror}") from None
    os.close(fd)
    log.info("generated a new RSA-3072 e=3 signing key at %s", path)
    return key


class _Signer:
    """The key, its public PEM and the audit log: what the request handlers share."""

    def __init__(self, key: RSAPrivateKey, audit: AuditLog | None) -> None:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        self._key = key
        self._padding = padding.PKCS1v15()
        self._hash = hashes.SHA256()
        self.audit = audit
        pub = key.public_key()
        self.public_pem = pub.public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        self.mrsigner = hashlib.sha256(pub.public_numbers().n.to_bytes(384, "little")).hexdigest()

    def sign(self, material: bytes) -> bytes:
        return self._key.sign(material, self._padding, self._hash)

    def record(self, **fields: Any) -> None:
        if self.audit is None:
            return
        fields["time"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
        self.audit.write(fields)


def _material_fields(sig: SigStruct) -> dict[str, Any]:
    return {
        "mrenclave": sig.enclavehash.hex(),
        "isvprodid": sig.isvprodid,
        "isvsvn": sig.isvsvn,
        "attributes": {"flags": f"{sig.attributes.flags:#018x}", "xfrm": f"{sig.attributes.xfrm:#018x}"},
        "miscselect": f"{sig.miscselect:#010x}",
        "debug": sig.attributes.debug,
        "debug_signed": sig.debug_signed,
        "isvfamilyid": sig.isvfamilyid.hex(),
        "isvextprodid": sig.isvextprodid.hex(),
    }
