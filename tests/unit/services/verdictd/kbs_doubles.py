"""Test doubles for the parts kbs.py takes by interface (store, policy, tokens, JWE), and a sim-platform attester
that produces evidence exactly as a KBS 0.4.0 client would (report data = the runtime-data hash).

These are NOT the real store/policy/token modules: a dict, an allow-list, a remembered-token issuer and a
joserfc sealer, so the KBS protocol can be tested on its own. Evidence verification is never faked.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from inclavare.formats.kbs import expected_report_data
from inclavare.formats.sgx import Attributes
from inclavare.sim.platform import SimPlatform
from inclavare.sim.quoting import SimQuotingService
from inclavare.sim.report import EnclaveIdentity, ReportKey

APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"kbs app").digest(), mrsigner=hashlib.sha256(b"kbs owner").digest(),
                      attributes=Attributes(0x4, 0x3), isvprodid=1, isvsvn=1)
DEBUG_APP = EnclaveIdentity(mrenclave=APP.mrenclave, mrsigner=APP.mrsigner, attributes=Attributes(0x6, 0x3),
                            isvprodid=1, isvsvn=1)


@dataclass
class DictStore:
    items: dict[str, bytes] = field(default_factory=dict)

    def get_resource(self, path: str) -> bytes | None:
        return self.items.get(path)

    def put_resource(self, path: str, value: bytes) -> None:
        self.items[path] = value

    def delete_resource(self, path: str) -> bool:
        return self.items.pop(path, None) is not None

    def list_resources(self) -> list[str]:
        return list(self.items)


@dataclass
class Verdict:
    allow: bool
    tier: str
    reasons: list[str]


@dataclass
class AllowList:
    """Attestation: the mrenclave must be listed and the enclave not in debug mode. Resources: listed paths."""

    mrenclaves: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def appraise(self, tee: str, claims: dict[str, Any], tcb_status: str | None) -> Verdict:
        if claims.get("debug"):
            return Verdict(False, "contraindicated", ["debug enclave"])
        if claims.get("mrenclave") not in self.mrenclaves:
            return Verdict(False, "contraindicated", [f"mrenclave {claims.get('mrenclave')} is not allowed"])
        return Verdict(True, "affirming", [])

    def allow_resource(self, input: dict[str, Any]) -> bool:  # noqa: A002
        self.seen.append(input)
        return input["resource"] in self.paths


class RememberingIssuer:
    """Issues opaque random tokens and remembers their claims; ``verify`` refuses unknown or expired ones."""

    def __init__(self) -> None:
        self.issued: dict[str, tuple[float, dict[str, Any]]] = {}

    def issue(self, tee: str, claims: dict[str, Any], tcb_status: str | None, tier: str, nonce: str | None,
              ttl: int) -> str:
        token = secrets.token_urlsafe(24)
        self.issued[token] = (time.time() + ttl, {"submods": {tee: {"claims": dict(claims), "nonce": nonce}}})
        return token

    def verify(self, token: str) -> dict[str, Any]:
        entry = self.issued.get(token)
        if entry is None:
            raise ValueError("unknown token")
        if entry[0] <= time.time():
            raise ValueError("token expired")
        return entry[1]


class JoseSealer:
    """A real JWE (joserfc), compact form split into Trustee's flattened Response fields."""

    def seal(self, tee_pubkey: dict[str, Any], plaintext: bytes) -> dict[str, Any]:
        from joserfc import jwe
        from joserfc.jwk import ECKey, RSAKey

        jwk = {k: v for k, v in tee_pubkey.items() if k != "alg"}
        key: Any = RSAKey.import_key(jwk) if tee_pubkey["kty"] == "RSA" else ECKey.import_key(jwk)
        alg = "RSA-OAEP-256" if tee_pubkey["kty"] == "RSA" else "ECDH-ES+A256KW"
        compact = jwe.encrypt_compact({"alg": alg, "enc": "A256GCM"}, plaintext, key, algorithms=[alg, "A256GCM"])
        protected, encrypted_key, iv, ciphertext, tag = compact.split(".")
        return {"protected": protected, "encrypted_key": encrypted_key, "iv": iv, "ciphertext": ciphertext,
                "tag": tag}


def open_response(private_key: Any, response: dict[str, Any]) -> bytes:
    """The client side: reassemble the compact JWE and decrypt it with the TEE private key."""
    from joserfc import jwe

    compact = ".".join(response[k] for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag"))
    algs = ["RSA-OAEP-256", "ECDH-ES+A256KW", "A256GCM"]
    return bytes(jwe.decrypt_compact(compact, private_key, algorithms=algs).plaintext)


@dataclass
class SimTee:
    """A TEE on the simulated platform: its key pair and quotes over chosen report data."""

    state_dir: str
    kty: str = "EC"

    def __post_init__(self) -> None:
        from joserfc.jwk import ECKey, RSAKey

        self.qs = SimQuotingService.open(self.state_dir)
        self.rk = ReportKey.load(self.state_dir)
        self.root = SimPlatform.open(self.state_dir).root_ca_fingerprint()
        self.key: Any = ECKey.generate_key("P-256") if self.kty == "EC" else RSAKey.generate_key(2048)
        pub = dict(self.key.as_dict(private=False))
        pub["alg"] = "ECDH-ES+A256KW" if self.kty == "EC" else "RSA-OAEP-256"
        self.pubkey = pub

    def quote(self, report_data: bytes, identity: EnclaveIdentity = APP) -> bytes:
        return self.qs.get_quote(self.rk.make_report(identity, report_data.ljust(64, b"\0"), self.qs.qe_target_info()))

    def attestation(self, nonce: str, *, identity: EnclaveIdentity = APP, bind_nonce: str | None = None,
                    bind_key: dict[str, Any] | None = None) -> dict[str, Any]:
        """The 0.4.0 Attestation body; ``bind_*`` put other values in the report data than the ones sent."""
        rd = expected_report_data(bind_nonce or nonce, bind_key or self.pubkey, "")
        quote = self.quote(rd, identity)
        return {"runtime-data": {"nonce": nonce, "tee-pubkey": self.pubkey},
                "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(quote).decode()},
                                 "additional_evidence": ""}}


def utc(iso: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC)
