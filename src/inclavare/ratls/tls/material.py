"""Certificate material: loading a certificate and private key (PEM or DER, mbedTLS' tolerated encoding too) into
pyOpenSSL and ``ssl`` module contexts.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

from inclavare.ratls.dice import RatlsError

if TYPE_CHECKING:
    from OpenSSL import SSL


def _load_material(cert: bytes, key: bytes) -> tuple[Any, Any]:
    """(certificate, private key) to present. The certificate is a ``cryptography`` object, or, for one that
    ``cryptography`` refuses but the RA-TLS reader tolerates (mbedTLS' explicit NULL on the ECDSA signature
    algorithm), OpenSSL's own X509 object holding the exact bytes given: presented as it was signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        k = serialization.load_pem_private_key(key, password=None) if b"-----BEGIN" in key[:64] else \
            serialization.load_der_private_key(key, password=None)
    except ValueError as e:
        raise RatlsError(f"certificate/private key: not loadable ({e})") from None
    try:
        c: Any = x509.load_pem_x509_certificate(cert) if b"-----BEGIN" in cert[:64] else \
            x509.load_der_x509_certificate(cert)
    except ValueError as e:
        c = _load_tolerated(cert, e)
    return c, k


def _load_tolerated(cert: bytes, strict_error: ValueError) -> Any:
    from OpenSSL import crypto

    from inclavare.ratls.cert import null_param_der

    der = null_param_der(cert)
    if der is None:
        raise RatlsError(f"certificate/private key: not loadable ({strict_error})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return crypto.load_certificate(crypto.FILETYPE_ASN1, der)


def _certificate_pem(c: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if hasattr(c, "public_bytes"):
        return bytes(c.public_bytes(serialization.Encoding.PEM))
    from OpenSSL import crypto

    return bytes(crypto.dump_certificate(crypto.FILETYPE_PEM, c))


def _use_material(ctx: SSL.Context, cert: bytes, key: bytes) -> None:
    c, k = _load_material(cert, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyOpenSSL's X509 (the tolerated certificates)
        ctx.use_certificate(c)
    ctx.use_privatekey(k)
    try:
        ctx.check_privatekey()
    except Exception:
        raise RatlsError("certificate/private key: the private key does not match the certificate") from None


def _use_ssl_material(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a certificate and key into an ``ssl`` context, which reads them only from a file: an anonymous
    memory file (memfd), else a private temporary file removed right after loading."""
    from cryptography.hazmat.primitives import serialization

    c, k = _load_material(cert, key)
    pem = _certificate_pem(c) + k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.memfd_create("rats-tls-key", os.MFD_CLOEXEC)
        path, tmpdir = f"/proc/self/fd/{fd}", None
    except (AttributeError, OSError):
        tmpdir = tempfile.mkdtemp(prefix="rats-tls-")  # mode 0700
        fd, path = tempfile.mkstemp(dir=tmpdir)
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view):]
        ctx.load_cert_chain(path)
    except ssl.SSLError:
        raise RatlsError("certificate/private key: the private key does not match the certificate") from None
    finally:
        os.close(fd)
        if tmpdir is not None:
            os.unlink(path)
            os.rmdir(tmpdir)
