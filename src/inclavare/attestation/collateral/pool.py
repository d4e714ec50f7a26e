"""Issuers picked from a pool of extra certificates (``--certs DIR``, see attestation/trust.py) when a
collateral source does not carry the issuer chains."""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Sequence
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.attestation.certs import crypto_errors

__all__ = ["CertPool", "utc"]

def utc(t: datetime.datetime | None) -> datetime.datetime:
    if t is None:
        return datetime.datetime.now(datetime.UTC)
    return t.replace(tzinfo=datetime.UTC) if t.tzinfo is None else t.astimezone(datetime.UTC)


SGX_PCK_EXTENSION_OID = "1.2.840.113741.1.13.1"  # only PCK certificates carry it


class CertPool:
    """Parsed extra certificates, to pick issuers from when the collateral does not carry its chain."""

    def __init__(self, ders: Sequence[bytes], as_of: datetime.datetime | None) -> None:
        from cryptography import x509

        self.as_of = utc(as_of)
        self.items: list[tuple[bytes, x509.Certificate]] = []
        for n, der in enumerate(ders, 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cert = x509.load_der_x509_certificate(bytes(der))
                    cert.subject, cert.issuer  # noqa: B018 - parse the lazy fields now
            except crypto_errors():
                raise CollateralError(f"extra certificate {n}: not a DER X.509 certificate") from None
            self.items.append((bytes(der), cert))

    def _rank(self, cert: Any) -> tuple[bool, datetime.datetime]:
        valid = cert.not_valid_before_utc <= self.as_of <= cert.not_valid_after_utc
        return valid, cert.not_valid_after_utc

    def _best(self, found: list[tuple[bytes, Any]]) -> tuple[bytes, Any] | None:
        """Of equally fitting certificates (Intel re-issues the TCB signing certificate with the same key),
        the one valid at ``as_of``, else the one that expires last."""
        return max(found, key=lambda item: self._rank(item[1])) if found else None

    @staticmethod
    def _issued_by(child: Any, parent: Any) -> bool:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        return True

    def chain_up(self, der: bytes, cert: Any) -> list[bytes]:
        """``der`` followed by its issuers found in the pool, up to a self-issued certificate."""
        chain, current = [der], cert
        for _ in range(8):
            if current.issuer == current.subject:
                break
            best = self._best([(d, c) for d, c in self.items if d not in chain and self._issued_by(current, c)])
            if best is None:
                break
            chain.append(best[0])
            current = best[1]
        return chain

    def signer_chain(self, raw: bytes, signature: bytes) -> list[bytes]:
        """The chain of the certificate that signed ``raw`` (ECDSA-P256-SHA256, r||s): a leaf (not a CA, no
        SGX PCK extension) whose key verifies the signature; failing that, the only such leaf, so the
        verifier reports the bad signature; else empty."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        leaves = []
        for der, cert in self.items:
            try:
                exts = {ext.oid.dotted_string: ext.value for ext in cert.extensions}
            except crypto_errors():  # malformed extensions: not a certificate to build on
                continue
            basic = exts.get(x509.oid.ExtensionOID.BASIC_CONSTRAINTS.dotted_string)
            # a CA does not sign collateral, nor does a PCK certificate (it signs QE reports)
            if not (isinstance(basic, x509.BasicConstraints) and basic.ca) and SGX_PCK_EXTENSION_OID not in exts:
                leaves.append((der, cert))
        der_sig = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        signing = []
        for der, cert in leaves:
            try:
                key = cert.public_key()
                if isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(der_sig, raw, ec.ECDSA(hashes.SHA256()))
                    signing.append((der, cert))
            except crypto_errors():
                continue
        best = self._best(signing) or (leaves[0] if len(leaves) == 1 else None)
        return self.chain_up(*best) if best else []

    def crl_issuer_chain(self, crl_der: bytes) -> list[bytes]:
        """The chain of the CA that issued the CRL: subject matches its issuer, and the CRL's signature
        verifies if any candidate's does."""
        from cryptography import x509

        crl = x509.load_der_x509_crl(crl_der)
        named = [(d, c) for d, c in self.items if c.subject == crl.issuer]
        signing = []
        for d, c in named:
            try:
                key: Any = c.public_key()
                if crl.is_signature_valid(key):
                    signing.append((d, c))
            except crypto_errors():
                continue
        best = self._best(signing) or self._best(named)
        return self.chain_up(*best) if best else []
