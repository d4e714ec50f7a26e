"""Reading the files the command-line programs are given, with one-line errors that name the flag."""

from __future__ import annotations

import os

from inclavare.errors import InclavareError


class InputError(InclavareError):
    """A file named on the command line cannot be read or is not what the flag wants."""


DEFAULT_LIMIT = 64 << 20  # bytes; callers whose format is smaller say so
EVIDENCE_LIMIT = 1 << 20  # a quote, an SNP report with its certificates, an RA-TLS certificate: a few KiB
KEY_LIMIT = 1 << 20  # keys, certificates, tokens
IMAGE_LIMIT = 1 << 30  # enclave images and payloads


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def read_file(path: str, what: str = "", limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; ``what`` (a flag name) starts the error
    message. A device, FIFO or directory is refused (``/dev/zero`` would never end), as is a larger file."""
    import stat

    name = f"{what} {path}" if what else path
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{name}: not a regular file")
            if st.st_size > limit:
                raise InputError(f"{name}: {st.st_size} bytes, more than the {_size(limit)} this input may have")
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{name}: {e.strerror}") from None
    if len(data) > limit:  # it grew while we read
        raise InputError(f"{name}: more than the {_size(limit)} this input may have")
    return data


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
