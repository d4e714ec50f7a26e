"""Reading the files the command-line programs are given, with one-line errors that name the flag."""

from __future__ import annotations

from inclavare.errors import InclavareError


class InputError(InclavareError):
    """A file named on the command line cannot be read or is not what the flag wants."""


def read_file(path: str, what: str = "") -> bytes:
    """The bytes of ``path``; ``what`` (a flag name) starts the error message."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"{what} {path}: {e.strerror}" if what else f"{path}: {e.strerror}") from None


def sim_root_fingerprint(path: str | None) -> str:
    """SHA-256 (hex) of the simulated platform's root CA certificate: the one in ``path`` (PEM or DER, from
    --sim-root), or this host's sim platform's when no path is given."""
    if not path:
        from inclavare.sim.platform import SimPlatform

        return str(SimPlatform.open().root_ca_fingerprint())
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = read_file(path, "--sim-root")
    try:
        pem = b"-----BEGIN" in data
        cert = x509.load_pem_x509_certificate(data) if pem else x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise InputError(f"--sim-root {path}: not a certificate ({e})") from None
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
