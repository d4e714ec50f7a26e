"""The one type every collateral source produces and the DCAP verifier consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DcapCollateral"]


@dataclass
class DcapCollateral:
    """Intel DCAP collateral exactly as served: the TCB info and QE identity JSON *values* as raw bytes (their
    signatures cover those exact bytes, so they are never re-serialised), their 64-byte r||s signatures, issuer
    chains (DER, leaf first) and the CRLs (DER)."""

    tcb_info_raw: bytes  # the exact bytes of the "tcbInfo" JSON value
    tcb_info_signature: bytes  # r||s, 64 bytes
    tcb_info_issuer_chain: list[bytes]  # DER certificates, TCB signing cert first
    qe_identity_raw: bytes  # the exact bytes of the "enclaveIdentity" JSON value
    qe_identity_signature: bytes
    qe_identity_issuer_chain: list[bytes]
    pck_crl: bytes | None = None  # DER
    root_ca_crl: bytes | None = None  # DER
    pck_crl_issuer_chain: list[bytes] = field(default_factory=list)
    source: str = ""  # where it came from, for messages
