"""One verification interface for every TEE (DESIGN.md: "attestation/").

A verifier takes raw evidence (an SGX or TDX DCAP quote, an SEV-SNP report, a sim quote), checks that it is
genuine (signatures, certificate chain to a pinned root, bindings), optionally evaluates collateral (TCB
info, QE identity, CRLs, or the VCEK's TCB) at a given time, and returns a :class:`Result` whose ``claims``
are a flat dict for the policy engine: hex strings for byte strings, ints for numbers.

Parsing is separate from verifying (formats/ holds the codecs). Every problem a verifier finds raises, or is
reported as, an :class:`AttestationError` subclass; nothing else may escape a verifier for any input.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Protocol

from inclavare.errors import InclavareError

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
    "TcbNotSupported",
)


class AttestationError(InclavareError):
    """Evidence or collateral is malformed, not genuine, or not acceptable; the message says what and where."""


class EvidenceFormatError(AttestationError):
    """The evidence (or collateral) cannot be parsed."""


class VerificationError(AttestationError):
    """A signature, chain, binding or revocation check failed."""


class CollateralError(AttestationError):
    """Collateral is missing, malformed, not genuine, or outside its validity window."""


@dataclass
class Result:
    tee: str  # "sgx", "tdx", "snp", "sim"
    verified: bool = False  # signatures, chain and bindings
    collateral_valid: bool | None = None  # None: no collateral was evaluated
    tcb_status: str | None = None  # one of TCB_STATUSES, None without collateral
    advisory_ids: list[str] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"tee": self.tee, "verified": self.verified, "collateral_valid": self.collateral_valid,
                "tcb_status": self.tcb_status, "advisory_ids": list(self.advisory_ids),
                "claims": dict(self.claims), "errors": list(self.errors)}


@dataclass
class Options:
    """What a verification is asked to do.

    ``as_of``: evaluate validity windows at this time (default: now, UTC). ``report_data``: if given, the
    evidence's report data must equal it (shorter values are compared against the prefix and the rest must
    be zero). ``trust_sim``: accept the simulated platform's root (never by default).
    ``collateral``: a TEE-specific collateral object (see each verifier), or None to check genuineness only.
    """

    as_of: datetime.datetime | None = None
    report_data: bytes | None = None
    trust_sim: bool = False
    sim_root_fingerprints: tuple[str, ...] = ()
    collateral: Any = None
    extra_certs: tuple[bytes, ...] = ()  # DER issuer certificates the collateral does not carry


class Verifier(Protocol):
    tee: str

    def verify(self, evidence: bytes, options: Options) -> Result: ...
