"""EAR attestation tokens: verdictd's signed statement that a TEE's evidence passed (or failed) appraisal.

Format pinned: EAT Attestation Results as specified by draft-fv-rats-ear-05 (February 2025), serialised as a
JWT. That revision is the one whose JSON claim names are the dotted strings (``ear.verifier-id``,
``ear.status``, ``ear.trustworthiness-vector``, ``ear.appraisal-policy-id``, ``ear.veraison.annotated-evidence``)
and whose profile is ``tag:github.com,2023:veraison/ear``: exactly what Veraison's ear libraries (Go, Rust
0.3-0.5) emit and accept, and what Trustee's EAR broker emits (with its own profile name, which Veraison's Go
library treats as an alias). The CWT form of the same draft uses integer keys (``ear.status`` is 1000) and is
not produced here. The WG drafts keep the dotted names up to draft-ietf-rats-ear-02 but change the profile to
``tag:ietf.org,2025-07:ear``; -03 (March 2026) renames the claims to ``ear_status`` etc., which neither Veraison
nor released Trustee reads yet. When they move, this module moves with them.

Claims of one token::

    {"eat_profile": "tag:github.com,2023:veraison/ear", "iat": <int>, "exp": <int>,
     "ear.verifier-id": {"developer": ..., "build": ...},
     "submods": {<tee>: {"ear.status": "affirming"|"warning"|"contraindicated"|"none",
                         "ear.trustworthiness-vector": {...}           (optional, AR4SI claims -128..127),
                         "ear.appraisal-policy-id": ...                (optional),
                         "ear.veraison.annotated-evidence": {<flat verifier claims>, "tcb_status": ...},
                         "ear.veraison.policy-claims": {...}           (optional)}},
     "eat_nonce": <the KBS challenge nonce>                            (only when given)}

Signed ES256 (P-256) with ``kid`` = the RFC 7638 thumbprint of the public key; :meth:`TokenIssuer.jwks`
publishes that key. :func:`verify_token` pins ``alg`` to ES256 before any signature work (``none``, HS*, RS*
are refused: a relying party holding only our public key must never be tricked into using it as an HMAC
secret), and checks ``exp``/``iat`` and the EAR shape.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from inclavare import __version__
from inclavare.attestation.api import TCB_STATUSES
from inclavare.formats.kbs import KbsFormatError
from inclavare.formats.kbs_jwe import b64url_decode
from inclavare.services.verdictd.errors import VerdictdError

if TYPE_CHECKING:
    from joserfc.jwk import ECKey

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
ALG = "ES256"
TIERS = {"none": 0, "affirming": 2, "warning": 32, "contraindicated": 96}  # AR4SI tier -> its base value
TRUST_CLAIMS = ("instance-identity", "configuration", "executables", "file-system", "hardware",
                "runtime-opaque", "storage-opaque", "sourced-data")
DEFAULT_DEVELOPER = "https://github.com/inclavare-containers"
DEFAULT_BUILD = f"inclavare-containers verdictd {__version__}"
DEFAULT_TTL = 300  # seconds; Trustee's EAR broker defaults to 5 minutes
MAX_TTL = 24 * 3600
LEEWAY = 60  # seconds of clock skew tolerated on iat/exp
MAX_CLAIMS_JSON = 256 * 1024  # encoded annotated evidence + policy claims
MAX_TOKEN = 512 * 1024  # characters of a compact JWT
NONCE_LEN = (12, 88)  # EAR: 8..64 bytes, base64-encoded in JSON (Veraison checks the string length)


def tier_of(value: int) -> str:
    """The AR4SI tier a trustworthiness claim value falls in (draft-ietf-rats-ar4si, section 3.2)."""
    magnitude = abs(value)
    if magnitude <= 1:
        return "none"
    if value in range(2, 32) or value in range(-32, -1):
        return "affirming"
    if value in range(32, 96) or value in range(-96, -32):
        return "warning"
    return "contraindicated"


def _check_json(value: object, where: str) -> int:
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise VerdictdError(f"{where}: not JSON-serialisable ({exc})") from None
    return len(text)


def _check_trust_vector(vector: object, tier: str) -> dict[str, int]:
    if not isinstance(vector, dict) or not vector:
        raise VerdictdError("ear.trustworthiness-vector: expected a non-empty object of AR4SI claims")
    out: dict[str, int] = {}
    worst = 0
    for name, value in vector.items():
        if name not in TRUST_CLAIMS:
            raise VerdictdError(f"ear.trustworthiness-vector: unknown claim {str(name)[:40]!r}")
        if isinstance(value, bool) or not isinstance(value, int) or not -128 <= value <= 127:
            raise VerdictdError(f"ear.trustworthiness-vector.{name}: {value!r} is not an integer in -128..127")
        out[name] = value
        worst = max(worst, TIERS[tier_of(value)])
    if TIERS[tier] < worst:
        raise VerdictdError(f"ear.status {tier!r} claims more trust than the trustworthiness vector allows")
    return out


def load_signing_key(key_pem: bytes) -> ECKey:
    """Load a PKCS#8 (or SEC1) PEM P-256 private key; any other key type or curve is a clear error."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from joserfc.jwk import ECKey

    if not isinstance(key_pem, (bytes, bytearray)):
        raise VerdictdError(f"token signing key: expected PEM bytes, got {type(key_pem).__name__}")
    try:
        key = load_pem_private_key(bytes(key_pem), password=None)
    except TypeError:
        raise VerdictdError("token signing key: the PEM is password-protected; store it unencrypted "
                            "(verdictd seals it with the KEK)") from None
    except ValueError as exc:
        raise VerdictdError(f"token signing key: not a PEM private key ({str(exc).splitlines()[0][:100]})") \
            from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise VerdictdError(f"token signing key: expected an EC P-256 private key for ES256, got {kind}")
    if not isinstance(key.curve, ec.SECP256R1):
        raise VerdictdError(f"token signing key: expected curve P-256 for ES256, got {key.curve.name}")
    return ECKey.import_key(key)


def public_jwk(key: ECKey) -> dict[str, str]:
    """The public JWK as published in the JWKS: ``kid`` (RFC 7638 thumbprint), ``alg`` ES256, ``use`` sig."""
    jwk = key.as_dict(private=False)
    return {"kty": "EC", "crv": str(jwk["crv"]), "x": str(jwk["x"]), "y": str(jwk["y"]),
            "kid": key.thumbprint(), "alg": ALG, "use": "sig"}


class TokenIssuer:
    """Issues EAR JWTs with one ES256 key (generated when ``key_pem`` is None; :meth:`key_pem` persists it)."""

    def __init__(self, key_pem: bytes | None = None, *, developer: str = DEFAULT_DEVELOPER,
                 build: str = DEFAULT_BUILD) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from joserfc.jwk import ECKey

        if key_pem is None:
            self._key = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
        else:
            self._key = load_signing_key(key_pem)
        for name, value in (("developer", developer), ("build", build)):
            if not isinstance(value, str) or not 0 < len(value) <= 256:
                raise VerdictdError(f"ear.verifier-id.{name}: expected a string of 1..256 characters")
        self._verifier_id = {"developer": developer, "build": build}
        self._jwk = public_jwk(self._key)

    @property
    def kid(self) -> str:
        return self._jwk["kid"]

    def key_pem(self) -> bytes:
        """The signing key as unencrypted PKCS#8 PEM (the caller stores it sealed under the KEK)."""
        from cryptography.hazmat.primitives import serialization

        return bytes(self._key.private_key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """``{"keys": [public JWK]}`` for the JWKS endpoint."""
        return {"keys": [dict(self._jwk)]}

    def issue(self, tee: str, claims: dict[str, Any], tcb_status: str | None, tier: str, nonce: str | None = None,
              ttl: int = DEFAULT_TTL, *, trust_vector: dict[str, int] | None = None, policy_id: str | None = None,
              policy_claims: dict[str, Any] | None = None, now: int | None = None) -> str:
        """Sign an EAR for one appraised TEE (see the module doc for the claims); ``tier`` is the policy's."""
        from joserfc import jwt

        if not isinstance(tee, str) or not 0 < len(tee) <= 32 or not tee.replace("-", "").replace("_", "").isalnum():
            raise VerdictdError(f"ear submod: tee name {str(tee)[:40]!r} is not 1..32 letters, digits, - or _")
        if tier not in TIERS:
            raise VerdictdError(f"ear.status: {str(tier)[:40]!r} is not one of {', '.join(TIERS)}")
        if tcb_status is not None and tcb_status not in TCB_STATUSES:
            raise VerdictdError(f"ear annotated evidence: tcb_status {str(tcb_status)[:40]!r} is not a TCB status")
        if not isinstance(claims, dict) or not all(isinstance(k, str) for k in claims):
            raise VerdictdError("ear annotated evidence: claims must be an object with string names")
        if "tcb_status" in claims and claims["tcb_status"] != tcb_status:
            raise VerdictdError("ear annotated evidence: claims carry a tcb_status different from the one given")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL:
            raise VerdictdError(f"ear exp: ttl {ttl!r} is not 1..{MAX_TTL} seconds")
        appraisal: dict[str, Any] = {"ear.status": tier}
        if trust_vector is not None:
            appraisal["ear.trustworthiness-vector"] = _check_trust_vector(trust_vector, tier)
        if policy_id is not None:
            if not isinstance(policy_id, str) or not 0 < len(policy_id) <= 256:
                raise VerdictdError("ear.appraisal-policy-id: expected a string of 1..256 characters")
            appraisal["ear.appraisal-policy-id"] = policy_id
        appraisal["ear.veraison.annotated-evidence"] = {**claims, "tcb_status": tcb_status}
        size = _check_json(appraisal["ear.veraison.annotated-evidence"], "ear annotated evidence")
        if policy_claims is not None:
            if not isinstance(policy_claims, dict):
                raise VerdictdError("ear.veraison.policy-claims: expected an object")
            size += _check_json(policy_claims, "ear.veraison.policy-claims")
            appraisal["ear.veraison.policy-claims"] = policy_claims
        if size > MAX_CLAIMS_JSON:
            raise VerdictdError(f"ear claims: {size} bytes of JSON, more than the limit {MAX_CLAIMS_JSON}")
        iat = int(time.time()) if now is None else int(now)
        payload: dict[str, Any] = {"eat_profile": EAR_PROFILE, "iat": iat, "exp": iat + ttl,
                                   "ear.verifier-id": dict(self._verifier_id), "submods": {tee: appraisal}}
        if nonce is not None:
            if not isinstance(nonce, str) or not NONCE_LEN[0] <= len(nonce) <= NONCE_LEN[1] or not nonce.isascii():
                raise VerdictdError(f"eat_nonce: expected an ASCII string of {NONCE_LEN[0]}..{NONCE_LEN[1]} "
                                    "characters (8..64 bytes, base64-encoded)")
            payload["eat_nonce"] = nonce
        header = {"alg": ALG, "typ": "JWT", "kid": self.kid}
        return jwt.encode(header, payload, self._key, algorithms=[ALG])

    def verify(self, token: str, *, now: int | None = None) -> dict[str, Any]:
        """Verify a token issued with this issuer's key; see :func:`verify_token`."""
        return verify_token(token, self.jwks(), now=now)


def _token_header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise VerdictdError(f"ear token: {len(parts)} dot-separated parts, a JWS compact token has 3")
    try:
        raw = b64url_decode(parts[0], "ear token header", 2048)
    except KbsFormatError as e:
        raise VerdictdError(str(e)) from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise VerdictdError("ear token header: not a JSON object")
    return header


def verify_token(token: object, jwks: dict[str, Any], *, now: int | None = None) -> dict[str, Any]:
    """Check an EAR JWT against a JWKS and return its claims.

    Refused with one line: a token over :data:`MAX_TOKEN` characters, any ``alg`` but ES256, a ``kid`` not in
    the JWKS, a ``crit`` header, a bad signature, a float or missing ``iat``/``exp``, an ``exp`` in the past or
    ``iat`` in the future (beyond :data:`LEEWAY`), or claims that are not an EAR of our profile.
    """
    from joserfc import jwt
    from joserfc.errors import ExpiredTokenError, JoseError
    from joserfc.jwk import ECKey

    if isinstance(token, bytes):
        token = token.decode("ascii", "replace")
    if not isinstance(token, str):
        raise VerdictdError(f"ear token: expected a string, got {type(token).__name__}")
    if len(token) > MAX_TOKEN:
        raise VerdictdError(f"ear token: {len(token)} characters, more than the limit {MAX_TOKEN}")
    header = _token_header(token)
    alg = header.get("alg")
    if alg != ALG:
        raise VerdictdError(f"ear token header: alg {str(alg)[:20]!r} refused; only {ALG} is accepted")
    if "crit" in header:
        raise VerdictdError("ear token header: crit is not supported")
    if header.get("typ", "JWT") != "JWT":
        raise VerdictdError(f"ear token header: typ {str(header.get('typ'))[:20]!r} is not JWT")
    kid = header.get("kid")
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise VerdictdError("ear jwks: expected {\"keys\": [...]}")
    matches = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid and kid is not None]
    if not matches:
        raise VerdictdError(f"ear token header: kid {str(kid)[:64]!r} is not in the JWKS")
    jwk = matches[0]
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or jwk.get("alg", ALG) != ALG:
        raise VerdictdError(f"ear jwks: key {str(kid)[:64]!r} is not an ES256 (EC P-256) key")
    try:
        key = ECKey.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y")})
        decoded = jwt.decode(token, key, algorithms=[ALG])
    except (JoseError, ValueError, KeyError) as exc:
        raise VerdictdError(f"ear token: signature does not verify with key {str(kid)[:64]!r} "
                            f"({type(exc).__name__})") from None
    claims = decoded.claims
    for name in ("iat", "exp"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise VerdictdError(f"ear token: {name} must be an integer NumericDate, got {value!r}"[:120])
    registry = jwt.JWTClaimsRegistry(now=int(time.time()) if now is None else int(now), leeway=LEEWAY,
                                     exp={"essential": True}, iat={"essential": True})
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise VerdictdError(f"ear token: expired at {claims['exp']}") from None
    except JoseError as exc:
        raise VerdictdError(f"ear token: {exc.description or type(exc).__name__}"[:160]) from None
    _check_ear_shape(claims)
    return dict(claims)


def _check_ear_shape(claims: dict[str, Any]) -> None:
    if claims.get("eat_profile") != EAR_PROFILE:
        raise VerdictdError(f"ear token: eat_profile {str(claims.get('eat_profile'))[:80]!r} is not {EAR_PROFILE}")
    vid = claims.get("ear.verifier-id")
    if not isinstance(vid, dict) or not isinstance(vid.get("developer"), str) or not isinstance(vid.get("build"),
                                                                                                 str):
        raise VerdictdError("ear token: ear.verifier-id must be an object with developer and build")
    submods = claims.get("submods")
    if not isinstance(submods, dict) or not submods:
        raise VerdictdError("ear token: submods must be a non-empty object")
    for name, appraisal in submods.items():
        if not isinstance(appraisal, dict) or appraisal.get("ear.status") not in TIERS:
            raise VerdictdError(f"ear token: submods.{str(name)[:32]} has no valid ear.status")
