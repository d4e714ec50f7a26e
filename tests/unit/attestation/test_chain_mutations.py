"""Every bit of the PCK certificate chain a real quote carries, flipped one at a time: the verifier answers with
its own verdict (not verified) or its own error type, never another library's exception (cryptography's x509
errors are not ValueErrors), and a certificate that is not canonical DER (a signature BIT STRING claiming
unused bits) does not verify. The chain is PEM inside the quote, so each mutation is made in the DER and
written back as PEM of the same length."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from inclavare.attestation.api import AttestationError, Options
from inclavare.attestation.evidence import verify_raw
from tests.unit.sgx_helpers import vectors_root

V = vectors_root() / "attestation"
BEGIN, END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


def _quote(rel: str) -> bytes:
    path = V / rel
    if not path.exists():
        pytest.skip(f"vector {path} not found (set INCLAVARE_VECTORS)")
    return path.read_bytes()


def _pem_blocks(quote: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, DER) of each PEM certificate in the quote's certification data."""
    out, pos = [], 0
    while (start := quote.find(BEGIN, pos)) >= 0:
        end = quote.index(END, start) + len(END)
        body = quote[start + len(BEGIN):end - len(END)]
        out.append((start, end, base64.b64decode(b"".join(body.split()))))
        pos = end
    return out


def _with_der(quote: bytes, start: int, end: int, der: bytes) -> bytes:
    """The quote with the PEM block at start:end carrying ``der`` instead (same length, same line breaks)."""
    old = quote[start:end]
    b64 = base64.b64encode(der)
    lines, out, k = old.split(b"\n"), [], 0
    for line in lines:
        if line.startswith(b"-----") or not line:
            out.append(line)
        else:
            out.append(b64[k:k + len(line)])
            k += len(line)
    new = b"\n".join(out)
    assert len(new) == len(old) and k == len(b64)
    return quote[:start] + new + quote[end:]


def _outcome(quote: bytes) -> bool:
    """True if it verified; False for the verifier's own refusal. Anything else escapes and fails the test."""
    try:
        return verify_raw(quote, "auto", Options()).verified
    except AttestationError:
        return False


@pytest.mark.parametrize("rel", ["sgx/dcapqvl_sgx_quote.bin", "tdx/dcapqvl_tdx_quote.bin"])
def test_every_bit_of_the_pck_chain(rel: str) -> None:
    """Every bit of every certificate of the chain, SGX and TDX."""
    quote = _quote(rel)
    assert _outcome(quote)
    blocks = _pem_blocks(quote)
    assert len(blocks) == 3
    accepted = []
    for n, (start, end, der) in enumerate(blocks):
        for bit in range(len(der) * 8):
            mutated = bytearray(der)
            mutated[bit // 8] ^= 1 << (bit % 8)
            if _outcome(_with_der(quote, start, end, bytes(mutated))):
                accepted.append((n, bit // 8, bit % 8))
    # a flip that still verifies can only be one no signature covers and DER does not forbid: none exists in
    # a certificate (the TBS is signed, the signature is checked, the rest is structure)
    assert accepted == []


def test_a_signature_bit_string_with_unused_bits_is_refused() -> None:
    quote = _quote("sgx/dcapqvl_sgx_quote.bin")
    start, end, der = _pem_blocks(quote)[0]  # the PCK leaf
    # the last element is the signature BIT STRING: tag 03, length, then the unused-bits octet
    sig = der.rindex(b"\x03", len(der) - 80)
    assert der[sig + 2] == 0
    mutated = der[:sig + 2] + b"\x01" + der[sig + 3:]
    result = verify_raw(_with_der(quote, start, end, mutated), "auto", Options())
    assert not result.verified
    assert any("BIT STRING with unused bits" in e for e in result.errors), result.errors


def test_the_mutation_helper_round_trips(tmp_path: Path) -> None:
    quote = _quote("sgx/dcapqvl_sgx_quote.bin")
    for start, end, der in _pem_blocks(quote):
        assert _with_der(quote, start, end, der) == quote
