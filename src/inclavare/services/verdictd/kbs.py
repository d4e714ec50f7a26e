"""The Trustee KBS protocol, version 0.4.0 (RCAR: Request, Challenge, Attestation, Response), without HTTP.

:class:`KbsService` holds the sessions and answers the four steps; :mod:`.kbs_http` carries them over HTTP(S).

- ``auth``: ``{"version": "0.4.0", "tee": ..., "extra-params": ...}`` -> ``{"nonce": base64(32 random bytes),
  "extra-params": ""}`` and a new session (cookie ``kbs-session-id``, Trustee's 5 minutes by default).
- ``attest``: ``{"init-data"?, "runtime-data": {"nonce", "tee-pubkey"}, "tee-evidence": {"primary_evidence",
  "additional_evidence"}}``. ``init-data`` (Trustee's initdata TOML) is bound to the TEE's launch-time field
  (:mod:`.kbs_initdata`). As Trustee 0.4.0 (kbs/src/attestation/backend.rs with the CoCo AS's
  ``parse_runtime_data``) the evidence's report data must be SHA-384 over the RFC 8785 canonical JSON of
  ``{"tee-pubkey", "nonce", "additional-evidence"}`` (the last the client's string, as sent), zero-padded to the
  TEE's 64 bytes. The evidence is verified by our verifiers, appraised by the owner's policy, and an EAR token
  answered (``{"token": ...}``). One attestation per nonce: a second attest on a session is refused.
- ``resource``: ``GET /kbs/v0/resource/<repo>/<type>/<tag>`` with the session or ``Authorization: Bearer <token>``:
  the resource policy (Trustee's ``data.policy.allow``) decides, the answer is a JWE to the TEE key.

The parts built elsewhere (store, policy, tokens, JWE) come in through the small Protocols below; the binding
and the evidence checks live in :mod:`.kbs_evidence` (re-exported here).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from inclavare.formats import strictjson
from inclavare.formats.kbs import PROTOCOL_VERSION, SESSION_COOKIE, KbsFormatError, expected_report_data
from inclavare.services.verdictd.kbs_evidence import (
    ERROR_TYPE_PREFIX,
    REAL_TEES,
    SIM_TEES,
    EvidenceConfig,
    KbsError,
    Verified,
    _bad,
    _unauth,
    verify_evidence,
)
from inclavare.services.verdictd.kbs_initdata import bind_init_data, parse_init_data

__all__ = ["ERROR_TYPE_PREFIX", "PROTOCOL_VERSION", "SESSION_COOKIE", "Appraiser", "Decision", "EvidenceConfig",
           "KbsError", "KbsService", "PolicyAdmin", "ResourceStore", "Sealer", "Session", "SessionTable",
           "TokenIssuer", "Verified", "check_resource_path", "verify_evidence"]

NONCE_SIZE = 32
DEFAULT_SESSION_TTL = 300  # Trustee's DEFAULT_TIMEOUT: 5 minutes
MAX_SESSIONS = 10_000
MAX_ADDITIONAL_EVIDENCE = 256 << 10
MAX_PATH_PART = 128


# --------------------------------------------------------------------------------------------------
# The interfaces this module needs (implemented by store.py, policy.py, tokens.py, formats.kbs_jwe)


class Decision(Protocol):
    """Read-only, so policy.Decision (a frozen dataclass) fits."""

    @property
    def allow(self) -> bool: ...

    @property
    def tier(self) -> str: ...

    @property
    def reasons(self) -> list[str]: ...


class Appraiser(Protocol):
    """The owner's policies with their reference values bound in (the daemon wraps PolicyEngine)."""

    def appraise(self, tee: str, claims: dict[str, Any], tcb_status: str | None) -> Decision: ...

    def allow_resource(self, input: dict[str, Any]) -> bool: ...  # noqa: A002 (Rego's word)


class ResourceStore(Protocol):
    """Resources by path ``repo/type/tag`` (store.py: ``get_secret("resource", path)``)."""

    def get_resource(self, path: str) -> bytes | None: ...

    def put_resource(self, path: str, value: bytes) -> None: ...

    def delete_resource(self, path: str) -> bool: ...

    def list_resources(self) -> list[str]: ...


class TokenIssuer(Protocol):
    """tokens.TokenIssuer: EAR tokens signed by the service key; ``verify`` raises on a bad or expired token."""

    def issue(self, tee: str, claims: dict[str, Any], tcb_status: str | None, tier: str, nonce: str | None,
              ttl: int) -> str: ...

    def verify(self, token: str) -> dict[str, Any]: ...


class Sealer(Protocol):
    """kbs_jwe.seal: Trustee's resource Response (a flattened JWE) to the TEE public key (a JWK dict)."""

    def seal(self, tee_pubkey: dict[str, Any], plaintext: bytes) -> dict[str, Any]: ...


class PolicyAdmin(Protocol):
    """What the admin endpoints change besides resources (store.py / refvalues.py behind it)."""

    def set_resource_policy(self, text: str) -> None: ...

    def set_attestation_policy(self, policy_id: str, text: str) -> None: ...

    def set_reference_value(self, name: str, values: list[Any], provenance: str,
                            expires: datetime.datetime | None) -> None: ...

    def get_reference_value(self, name: str) -> list[Any] | None: ...

    def list_reference_values(self) -> dict[str, dict[str, Any]]: ...

    def delete_reference_value(self, name: str) -> bool: ...


# --------------------------------------------------------------------------------------------------
# Sessions


@dataclass
class Session:
    id: str
    tee: str
    nonce: str
    expires: float  # time.time()
    attested: bool = False
    used: bool = False  # an attest was tried: one per nonce
    token: str | None = None
    grant: dict[str, Any] | None = None  # what the resource policy sees, incl. "tee-pubkey"


class SessionTable:
    """Sessions by random id, expiring, at most ``limit`` (the oldest expired ones go first; when every slot holds
    a live session, new auths are refused with 503 rather than evicting a live client)."""

    def __init__(self, ttl: int = DEFAULT_SESSION_TTL, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl, self.limit, self.clock = ttl, limit, clock
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def _purge(self, now: float) -> None:
        for sid in [sid for sid, s in self._items.items() if s.expires <= now]:
            del self._items[sid]

    def new(self, tee: str, nonce: str) -> Session:
        now = self.clock()
        with self._lock:
            if len(self._items) >= self.limit:
                self._purge(now)
            if len(self._items) >= self.limit:
                raise KbsError(503, "TooManySessions", f"{self.limit} sessions are open; retry later")
            s = Session(id=secrets.token_hex(16), tee=tee, nonce=nonce, expires=now + self.ttl)
            self._items[s.id] = s
            return s

    def get(self, sid: str | None) -> Session:
        """The live session ``sid``; KbsError 401 if missing, unknown or expired (an expired one is dropped)."""
        if not sid:
            raise _unauth("TokenNotFound", f"no {SESSION_COOKIE} cookie: start with POST /kbs/v0/auth")
        with self._lock:
            s = self._items.get(sid)
            if s is None:
                raise _unauth("SessionNotFound", "session not found: start again with POST /kbs/v0/auth")
            if s.expires <= self.clock():
                del self._items[sid]
                raise _unauth("SessionExpired", "session expired: start again with POST /kbs/v0/auth")
            return s

    def claim_attest(self, sid: str | None) -> Session:
        """The session, marked as used: a second attest on the same nonce is refused (401)."""
        s = self.get(sid)
        with self._lock:
            if s.used:
                raise _unauth("RcarAttestFailed", "this session's nonce was already used for an attestation; "
                                                  "start again with POST /kbs/v0/auth")
            s.used = True
            return s


# --------------------------------------------------------------------------------------------------
# The service


def _json_body(body: bytes, what: str) -> dict[str, Any]:
    """The request's JSON object, read strictly (UTF-8; a member twice, NaN, an out-of-range number or absurd
    nesting is refused, as Trustee's serde_json refuses them), else 400."""
    try:
        value = strictjson.DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0][:120]
        raise _bad(f"{what}: body is not JSON ({reason})") from None
    if not isinstance(value, dict):
        raise _bad(f"{what}: body must be a JSON object")
    return value


def _check_pubkey(jwk: Any) -> dict[str, Any]:
    """The tee-pubkey: a public JWK the answer can be encrypted to (``kbs_jwe.parse_tee_pubkey``: RSA 2048..8192
    bits with RSA-OAEP-256, or EC P-256/P-521 with ECDH-ES+A256KW, no private members), refused here (400) rather
    than after a token was issued for it."""
    from inclavare.formats.kbs_jwe import parse_tee_pubkey

    if not isinstance(jwk, dict):
        raise _bad("runtime-data: tee-pubkey must be a JWK object")
    if len(jwk) > 16 or any(not isinstance(k, str) or len(k) > 64 for k in jwk):
        raise _bad("runtime-data: tee-pubkey has too many or too long members for a JWK")
    try:
        parse_tee_pubkey(jwk, "runtime-data: tee-pubkey")
    except KbsFormatError as e:
        raise _bad(str(e).splitlines()[0]) from None
    return jwk


def _find_grant(claims: Any, depth: int = 0) -> dict[str, Any] | None:
    """The claims object holding ``tee-pubkey`` inside a verified token's claims (EAR nests it)."""
    if not isinstance(claims, dict) or depth > 6:
        return None
    if isinstance(claims.get("tee-pubkey"), dict):
        return claims
    for v in claims.values():
        found = _find_grant(v, depth + 1)
        if found is not None:
            return found
    return None


class KbsService:
    """The KBS protocol over the injected parts; thread-safe. Every method raises KbsError on refusal."""

    def __init__(self, *, appraiser: Appraiser, resources: ResourceStore, tokens: TokenIssuer, sealer: Sealer,
                 evidence: EvidenceConfig | None = None, admin: PolicyAdmin | None = None,
                 sessions: SessionTable | None = None, token_ttl: int = DEFAULT_SESSION_TTL,
                 admin_token: str | None = None, audit: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.appraiser, self.resources, self.tokens, self.sealer = appraiser, resources, tokens, sealer
        self.evidence = evidence or EvidenceConfig()
        self.admin = admin
        self.sessions = sessions or SessionTable()
        self.token_ttl = token_ttl
        self._admin_digest = hashlib.sha256(admin_token.encode()).digest() if admin_token else None
        self._audit = audit

    def _record(self, event: str, **detail: Any) -> None:
        if self._audit is not None:
            self._audit(event, detail)

    # ---- RCAR

    def auth(self, body: bytes) -> tuple[dict[str, Any], Session]:
        req = _json_body(body, "auth")
        version = req.get("version")
        if version != PROTOCOL_VERSION:
            raise _unauth("RcarAuthFailed", f"KBS protocol version mismatch: expected {PROTOCOL_VERSION}, the "
                                            f"request says {version!r}")
        tee = req.get("tee")
        if not isinstance(tee, str) or tee not in REAL_TEES and tee not in SIM_TEES:
            raise _unauth("RcarAuthFailed", f"tee {tee!r}: not supported here (sgx, tdx, snp)")
        if tee in SIM_TEES and not self.evidence.trust_sim:
            raise _unauth("RcarAuthFailed", f"tee {tee!r}: this server does not trust the simulated platform")
        nonce = base64.b64encode(secrets.token_bytes(NONCE_SIZE)).decode()
        session = self.sessions.new(tee, nonce)
        return {"nonce": nonce, "extra-params": ""}, session

    def attest(self, body: bytes, session_id: str | None) -> tuple[dict[str, Any], Session]:
        session = self.sessions.claim_attest(session_id)
        att = _json_body(body, "attest")
        rd = att.get("runtime-data")
        if not isinstance(rd, dict):
            raise _bad("attest: runtime-data must be an object with nonce and tee-pubkey")
        nonce, pubkey = rd.get("nonce"), _check_pubkey(rd.get("tee-pubkey"))
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), session.nonce.encode()):
            raise _unauth("RcarAttestFailed", "runtime-data nonce is not this session's nonce")
        ev = att.get("tee-evidence")
        if not isinstance(ev, dict) or "primary_evidence" not in ev:
            raise _bad("attest: tee-evidence must be an object with primary_evidence and additional_evidence")
        additional = ev.get("additional_evidence", "")
        if not isinstance(additional, str) or len(additional) > MAX_ADDITIONAL_EVIDENCE:
            raise _bad("attest: tee-evidence.additional_evidence must be a string (JSON of Tee -> evidence)")
        if additional:
            raise _unauth("RcarAttestFailed", "additional (device) evidence is not verified here; send none")
        try:
            report_data = expected_report_data(session.nonce, pubkey, additional)
        except KbsFormatError as e:
            raise _bad(str(e)) from None
        try:
            init_data = parse_init_data(att.get("init-data"))
            verified = verify_evidence(session.tee, ev["primary_evidence"], report_data, self.evidence)
            if init_data is not None:
                verified = bind_init_data(verified, init_data)
        except KbsError as e:
            self._record("kbs.attest", tee=session.tee, outcome="refused", reason=e.detail)
            raise
        decision = self.appraiser.appraise(verified.tee, verified.claims, verified.tcb_status)
        if not decision.allow:
            reasons = "; ".join(decision.reasons) or "no reason given"
            self._record("kbs.attest", tee=session.tee, outcome="denied", reason=reasons)
            raise KbsError(403, "PolicyDeny", f"attestation policy denied the evidence: {reasons}")
        grant = {**verified.claims, "tee": verified.tee, "tcb_status": verified.tcb_status, "tier": decision.tier,
                 "tee-pubkey": pubkey}
        token = self.tokens.issue(verified.tee, grant, verified.tcb_status, decision.tier, session.nonce,
                                  self.token_ttl)
        session.attested, session.token, session.grant = True, token, grant
        self._record("kbs.attest", tee=session.tee, outcome="attested", tier=decision.tier)
        return {"token": token}, session

    # ---- resources

    def _grant(self, session_id: str | None, bearer: str | None) -> dict[str, Any]:
        if session_id:
            try:
                s = self.sessions.get(session_id)
            except KbsError:
                if bearer is None:
                    raise
            else:
                if s.attested and s.grant is not None:
                    return s.grant
                if bearer is None:
                    raise _unauth("TokenNotFound", "the session has not attested: POST /kbs/v0/attest first")
        if bearer is None:
            raise _unauth("TokenNotFound", "attestation token not found: attest (cookie) or send "
                                           "Authorization: Bearer <token>")
        try:
            claims = self.tokens.verify(bearer)
        except Exception as e:  # noqa: BLE001 (whatever the token library raises, the token is refused)
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise _unauth("TokenVerifierError", f"attestation token: {why}") from None
        grant = _find_grant(claims)
        if grant is None:
            raise _unauth("TokenVerifierError", "attestation token carries no tee-pubkey")
        _check_pubkey(grant["tee-pubkey"])
        return grant

    def resource(self, parts: list[str], query: dict[str, str], session_id: str | None,
                 bearer: str | None) -> dict[str, Any]:
        """The JWE Response for resource ``parts`` = [repo, type, tag]."""
        path = check_resource_path(parts)
        grant = self._grant(session_id, bearer)
        policy_input = {**grant, "plugin": "resource", "resource-path": list(parts), "resource": path,
                        "query": dict(query)}
        if not self.appraiser.allow_resource(policy_input):
            self._record("kbs.resource", path=path, outcome="denied")
            raise KbsError(403, "PolicyDeny", f"resource policy denied access to {path}")
        value = self.resources.get_resource(path)
        if value is None:
            self._record("kbs.resource", path=path, outcome="missing")
            raise KbsError(404, "ResourceNotFound", f"resource {path} not found")
        try:
            response = self.sealer.seal(grant["tee-pubkey"], value)
        except Exception as e:  # noqa: BLE001 (a key the JOSE library cannot use: refused, as Trustee's JweError)
            raise _unauth("JweError", f"cannot encrypt to the attested tee-pubkey: {type(e).__name__}") from None
        self._record("kbs.resource", path=path, outcome="released", tee=grant.get("tee"))
        return response

    # ---- admin

    def check_admin(self, authorization: str | None) -> None:
        """Bearer admin token, compared in constant time; 401 without one, or when none is configured."""
        if self._admin_digest is None:
            raise _unauth("AdminAuthAccess", "admin API disabled: no admin token is configured")
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauth("AdminAuthAccess", "admin API: send Authorization: Bearer <admin token>")
        if not hmac.compare_digest(hashlib.sha256(token.strip().encode()).digest(), self._admin_digest):
            raise _unauth("AdminAuthAccess", "admin API: wrong admin token")

    def _need_admin(self) -> PolicyAdmin:
        if self.admin is None:
            raise KbsError(404, "InvalidRequestPath", "policy administration is not configured on this server")
        return self.admin

    def set_resource(self, parts: list[str], body: bytes) -> None:
        path = check_resource_path(parts)
        self.resources.put_resource(path, body)
        self._record("kbs.admin", action="set-resource", path=path, size=len(body))

    def set_resource_policy(self, body: bytes) -> None:
        """Trustee's body: ``{"policy": base64url(no padding) of the Rego text}``."""
        req = _json_body(body, "resource-policy")
        text = _b64url_text(req.get("policy"), "resource-policy: policy")
        self._need_admin().set_resource_policy(text)
        self._record("kbs.admin", action="set-resource-policy", size=len(text))

    def set_attestation_policy(self, body: bytes) -> None:
        """Trustee's body: ``{"policy_id": ..., "policy": base64url of the Rego text}`` (Trustee's AS takes the
        same base64url form); a policy_id is a name up to 64 characters."""
        req = _json_body(body, "attestation-policy")
        pid = req.get("policy_id", "default")
        if not isinstance(pid, str) or not pid or len(pid) > 64 or not _is_name(pid):
            raise _bad("attestation-policy: policy_id must be a name (letters, digits, - _ .), at most 64")
        text = _b64url_text(req.get("policy"), "attestation-policy: policy")
        self._need_admin().set_attestation_policy(pid, text)
        self._record("kbs.admin", action="set-attestation-policy", policy_id=pid, size=len(text))

    def set_reference_value(self, body: bytes) -> None:
        """Ours: ``{"name": ..., "values": [...], "provenance": "...", "expires": RFC 3339 | null}``."""
        req = _json_body(body, "reference-value")
        name, values = req.get("name"), req.get("values")
        if not isinstance(name, str) or not name or len(name) > 128:
            raise _bad("reference-value: name must be a string of 1..128 characters")
        if not isinstance(values, list) or len(values) > 1024:
            raise _bad("reference-value: values must be a list of at most 1024 entries")
        provenance = req.get("provenance", "")
        if not isinstance(provenance, str) or len(provenance) > 1024:
            raise _bad("reference-value: provenance must be a string")
        expires = None
        if req.get("expires") is not None:
            try:
                expires = datetime.datetime.fromisoformat(str(req["expires"]).replace("Z", "+00:00"))
            except ValueError:
                raise _bad("reference-value: expires must be an RFC 3339 time") from None
            if expires.tzinfo is None:
                raise _bad("reference-value: expires needs a time zone")
        self._need_admin().set_reference_value(name, values, provenance, expires)
        self._record("kbs.admin", action="set-reference-value", name=name, count=len(values))

    def get_reference_value(self, parts: list[str]) -> list[Any]:
        name = "/".join(parts)
        values = self._need_admin().get_reference_value(name)
        if values is None:
            raise KbsError(404, "ReferenceValueNotFound", f"no reference value named {name!r}")
        return values

    # ---- ours, not Trustee's: listing and removal (the admin endpoints GET reference-value, DELETE ...)

    def list_reference_values(self) -> dict[str, dict[str, Any]]:
        """Every entry, expired ones too: ``{name: {"values", "provenance", "expires": RFC 3339 | null,
        "expired"}}``."""
        out: dict[str, dict[str, Any]] = {}
        for name, entry in self._need_admin().list_reference_values().items():
            expires = entry.get("expires")
            out[name] = {"values": list(entry["values"]), "provenance": entry.get("provenance", ""),
                         "expires": expires.isoformat() if isinstance(expires, datetime.datetime) else expires,
                         "expired": bool(entry.get("expired"))}
        return out

    def delete_reference_value(self, parts: list[str]) -> None:
        name = "/".join(parts)
        if not self._need_admin().delete_reference_value(name):
            raise KbsError(404, "ReferenceValueNotFound", f"no reference value named {name!r}")
        self._record("kbs.admin", action="delete-reference-value", name=name)

    def delete_resource(self, parts: list[str]) -> None:
        path = check_resource_path(parts)
        if not self.resources.delete_resource(path):
            raise KbsError(404, "ResourceNotFound", f"resource {path} not found")
        self._record("kbs.admin", action="delete-resource", path=path)

    def list_resources(self) -> list[str]:
        """The stored resources' paths (``repo/type/tag``), sorted; never their values."""
        return sorted(self.resources.list_resources())


def _b64url_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{what} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not base64url-encoded UTF-8") from None


def _is_name(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "-_.") for c in text)


def check_resource_path(parts: list[str]) -> str:
    """``repo/type/tag``: exactly three non-empty parts of letters, digits and ``-_.`` (no ``..``); 404 otherwise,
    as Trustee answers a path it cannot serve."""
    if len(parts) != 3:
        raise KbsError(404, "InvalidRequestPath", f"resource path {'/'.join(parts)!r}: expected "
                                                  "<repository>/<type>/<tag>")
    for p in parts:
        if not p or len(p) > MAX_PATH_PART or p in (".", "..") or not _is_name(p):
            raise KbsError(404, "InvalidRequestPath", f"resource path part {p[:MAX_PATH_PART]!r}: letters, digits, "
                                                      f"'-', '_' or '.' only, at most {MAX_PATH_PART}")
    return "/".join(parts)
