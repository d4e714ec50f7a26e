"""Certificates and CRLs as collateral sources write them: PEM (also URL-encoded, as the PCS response headers
carry chains), DER, or hex DER (as PCCS serves the root CA CRL and the bundle JSON stores CRLs)."""

from __future__ import annotations

import base64
import re
import urllib.parse
import warnings
from collections.abc import Sequence
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.attestation.certs import crypto_errors
from inclavare.formats import pem

__all__ = ["der_chain_to_pem", "hex_bytes", "load_crl", "parse_certificate_chain"]

# URL-encoding with '+' for spaces (Go's QueryEscape, application/x-www-form-urlencoded) turns the markers
# into "-----BEGIN+CERTIFICATE-----"; the base64 body keeps its own '+' (encoded as %2B) either way.
_PLUS_MARKER = re.compile(rb"-----(BEGIN|END)\+([A-Z0-9+]+)-----")
_HEX = re.compile(rb"(?:[0-9a-fA-F]{2})+")


def _pem_blocks(data: bytes, label: str, where: str) -> list[bytes]:
    """DER bytes of every PEM block of ``data``, each of which must be labelled ``label``; only whitespace
    (and a trailing NUL, as Intel's QE leaves) may surround them."""
    data = _PLUS_MARKER.sub(lambda m: b"-----" + m[1] + b" " + m[2].replace(b"+", b" ") + b"-----", data)

    def fail(problem: str) -> CollateralError:
        if problem == "no PEM block":
            problem = f"no complete {label} PEM block"
        return CollateralError(f"{where}: {problem}")

    found = pem.blocks(data, fail)
    for n, block in enumerate(found, 1):
        if block.label != label:
            raise CollateralError(f"{where}: PEM block {n} is {block.label!r}, not {label!r}")
    return [block.der for block in found]


def _pem(label: str, der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def der_chain_to_pem(chain: Sequence[bytes]) -> str:
    """PEM text of DER certificates, in order (64-column base64, LF line ends)."""
    return "".join(_pem("CERTIFICATE", der) for der in chain)


def _check_certificate(der: bytes, where: str) -> None:
    from cryptography import x509

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x509.load_der_x509_certificate(der).extensions  # noqa: B018 - the lazy parts too
    except crypto_errors():
        raise CollateralError(f"{where}: not a valid X.509 certificate") from None


def parse_certificate_chain(data: bytes | str, *, where: str = "certificate chain") -> list[bytes]:
    """DER certificates (in order) from PEM text, URL-encoded PEM text (as the PCS ``*-Issuer-Chain``
    response headers carry it) or a single DER certificate. Every certificate must parse."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    stripped = raw.strip()
    if not stripped:
        raise CollateralError(f"{where}: empty")
    if stripped.startswith(b"-----BEGIN") or not stripped.startswith(b"\x30"):
        if b"%" in stripped:  # never in PEM: URL-encoded, as the PCS headers carry it
            stripped = urllib.parse.unquote_to_bytes(stripped)
        chain = _pem_blocks(stripped, "CERTIFICATE", where)
    else:
        chain = [raw]
    for n, der in enumerate(chain, 1):
        _check_certificate(der, f"{where}: certificate {n}" if len(chain) > 1 else where)
    return chain


def load_crl(data: bytes, *, where: str = "CRL") -> bytes:
    """DER bytes of an X.509 CRL given as DER, PEM (``X509 CRL``) or hex-encoded DER (as PCCS serves the root
    CA CRL and as the bundle JSON stores CRLs). The CRL must parse; its signature is the verifier's job."""
    from cryptography import x509

    data = bytes(data)
    stripped = data.strip()
    if b"-----BEGIN" in stripped:
        if b"%" in stripped:  # never in PEM: URL-encoded
            stripped = urllib.parse.unquote_to_bytes(stripped)
        blocks = _pem_blocks(stripped, "X509 CRL", where)
        if len(blocks) != 1:
            raise CollateralError(f"{where}: holds {len(blocks)} CRLs, expected one")
        der = blocks[0]
    elif _HEX.fullmatch(stripped) and not stripped.startswith(b"\x30"):
        der = bytes.fromhex(stripped.decode("ascii"))
    else:
        der = data
    if not der:
        raise CollateralError(f"{where}: empty")
    try:
        x509.load_der_x509_crl(der).issuer  # noqa: B018 - the lazy parts too
    except crypto_errors():
        raise CollateralError(f"{where}: not an X.509 CRL (DER, PEM or hex)") from None
    return der


def hex_bytes(value: Any, where: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value.encode("ascii", "replace")):
        raise CollateralError(f"{where}: expected a hex string")
    out = bytes.fromhex(value)
    if size is not None and len(out) != size:
        raise CollateralError(f"{where}: expected {size} bytes ({2 * size} hex digits), got {len(out)}")
    return out
