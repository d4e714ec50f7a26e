"""Shared helpers for the SGX tests: where the known-answer vectors are, and a throwaway SGX signing key."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def vectors_root() -> Path:
    return Path(os.environ.get("INCLAVARE_VECTORS") or REPO.parent / "shared" / "vectors")


def kat_dir() -> Path:
    """The sgx-kat folder, or skip the calling test with the reason."""
    d = vectors_root() / "sgx-kat"
    if not d.is_dir():
        pytest.skip(f"SGX known-answer vectors not found at {d} (set INCLAVARE_VECTORS)")
    return d


@functools.lru_cache(maxsize=2)
def rsa3072_e3_pem(index: int = 0) -> bytes:
    """A freshly generated RSA-3072 e=3 private key (PEM), one per index per test session."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@functools.lru_cache(maxsize=2)
def rsa3072_e3_key(index: int = 0) -> Any:
    """The same key as rsa3072_e3_pem(index), loaded once (loading checks the key, which takes ~0.2 s)."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(rsa3072_e3_pem(index), password=None)


def public_pem(private: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private, password=None) if isinstance(private, bytes) else private
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def flip(data: bytes, offset: int, bit: int = 0x01) -> bytes:
    b = bytearray(data)
    b[offset] ^= bit
    return bytes(b)
