"""verdictd tokens: EAR JWTs issued, checked independently, and refused when forged, expired or malformed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from inclavare.services.verdictd import tokens
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.tokens import TokenIssuer, verify_token

NOW = 1_796_600_000
CLAIMS = {"mr_enclave": "ab" * 32, "mr_signer": "cd" * 32, "isv_prod_id": 0, "isv_svn": 3, "debug": False}
NONCE = base64.b64encode(bytes(range(32))).decode()  # a KBS challenge nonce: 32 bytes, base64


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


def _issue(issuer: TokenIssuer, **kw: object) -> str:
    args: dict[str, object] = {"tee": "sgx", "claims": CLAIMS, "tcb_status": "UpToDate", "tier": "affirming",
                               "nonce": NONCE, "ttl": 300, "now": NOW}
    args.update(kw)
    return issuer.issue(**args)  # type: ignore[arg-type]


def _forge(header: dict[str, object], payload: dict[str, object], sign: object = None) -> str:
    """A compact JWS built by hand; ``sign`` maps the signing input to signature bytes (None: empty)."""
    head = _b64e(json.dumps(header).encode()) + "." + _b64e(json.dumps(payload).encode())
    signature = sign(head.encode()) if callable(sign) else b""
    return head + "." + _b64e(signature)


def test_round_trip_claims(issuer: TokenIssuer) -> None:
    claims = issuer.verify(_issue(issuer, policy_id="sgx-default"), now=NOW + 10)
    assert claims["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert claims["iat"] == NOW and claims["exp"] == NOW + 300 and claims["eat_nonce"] == NONCE
    assert claims["ear.verifier-id"] == {"developer": tokens.DEFAULT_DEVELOPER, "build": tokens.DEFAULT_BUILD}
    assert list(claims["submods"]) == ["sgx"]
    appraisal = claims["submods"]["sgx"]
    assert appraisal["ear.status"] == "affirming" and appraisal["ear.appraisal-policy-id"] == "sgx-default"
    assert appraisal["ear.veraison.annotated-evidence"] == {**CLAIMS, "tcb_status": "UpToDate"}
    assert "ear.trustworthiness-vector" not in appraisal


def test_no_nonce_and_null_tcb(issuer: TokenIssuer) -> None:
    claims = issuer.verify(_issue(issuer, nonce=None, tcb_status=None, tier="warning"), now=NOW)
    assert "eat_nonce" not in claims
    assert claims["submods"]["sgx"]["ear.veraison.annotated-evidence"]["tcb_status"] is None
    assert claims["submods"]["sgx"]["ear.status"] == "warning"


def test_signature_and_kid_check_out_independently(issuer: TokenIssuer) -> None:
    """Verify the ES256 signature and the RFC 7638 kid with pyca/hashlib only, from the published JWKS."""
    token = _issue(issuer)
    (jwk,) = issuer.jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert jwk["alg"] == "ES256" and jwk["use"] == "sig" and jwk["crv"] == "P-256"
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    assert jwk["kid"] == _b64e(hashlib.sha256(canonical.encode()).digest()) == issuer.kid
    head, payload, sig = token.split(".")
    header = json.loads(_b64d(head))
    assert header["alg"] == "ES256" and header["kid"] == jwk["kid"]
    raw = _b64d(sig)
    assert len(raw) == 64
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(_b64d(jwk["x"]), "big"), int.from_bytes(_b64d(jwk["y"]), "big"),
                                        ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    pub.verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if it does not verify
    assert json.loads(_b64d(payload))["submods"]["sgx"]["ear.status"] == "affirming"


def test_verify_token_with_jwks_only(issuer: TokenIssuer) -> None:
    jwks = json.loads(json.dumps(issuer.jwks()))  # as a relying party fetched it
    assert verify_token(_issue(issuer), jwks, now=NOW)["submods"]["sgx"]["ear.status"] == "affirming"


def test_expiry_and_iat_window(issuer: TokenIssuer) -> None:
    token = _issue(issuer, ttl=60)
    assert issuer.verify(token, now=NOW + 60 + tokens.LEEWAY - 1)
    with pytest.raises(VerdictdError, match=f"expired at {NOW + 60}"):
        issuer.verify(token, now=NOW + 60 + tokens.LEEWAY)
    with pytest.raises(VerdictdError, match="future"):
        issuer.verify(token, now=NOW - tokens.LEEWAY - 1)


def test_wrong_key_refused(issuer: TokenIssuer) -> None:
    other = TokenIssuer()
    token = _issue(other)
    with pytest.raises(VerdictdError, match="is not in the JWKS"):
        issuer.verify(token, now=NOW)
    # Same kid, another key: the signature decides.
    jwks = {"keys": [dict(issuer.jwks()["keys"][0], kid=other.kid)]}
    with pytest.raises(VerdictdError, match="signature does not verify"):
        verify_token(token, jwks, now=NOW)


def test_tampered_payload_refused(issuer: TokenIssuer) -> None:
    head, payload, sig = _issue(issuer, tier="contraindicated").split(".")
    claims = json.loads(_b64d(payload))
    claims["submods"]["sgx"]["ear.status"] = "affirming"
    with pytest.raises(VerdictdError, match="signature does not verify"):
        issuer.verify(f"{head}.{_b64e(json.dumps(claims).encode())}.{sig}", now=NOW)


def test_alg_none_and_hmac_refused(issuer: TokenIssuer) -> None:
    payload = json.loads(_b64d(_issue(issuer).split(".")[1]))
    jwk = issuer.jwks()["keys"][0]
    none = _forge({"alg": "none", "kid": issuer.kid}, payload)
    with pytest.raises(VerdictdError, match="alg 'none' refused"):
        issuer.verify(none, now=NOW)
    # The classic confusion: the public key (as published) used as an HMAC secret.
    secret = json.dumps(jwk).encode()
    hs = _forge({"alg": "HS256", "kid": issuer.kid}, payload, lambda m: hmac.new(secret, m, hashlib.sha256).digest())
    with pytest.raises(VerdictdError, match="alg 'HS256' refused"):
        issuer.verify(hs, now=NOW)
    for alg in ("RS256", "ES384", "EdDSA", None):
        with pytest.raises(VerdictdError, match="refused; only ES256"):
            issuer.verify(_forge({"alg": alg, "kid": issuer.kid}, payload, lambda m: b"x" * 64), now=NOW)


def test_structural_refusals(issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    key = serialization.load_pem_private_key(issuer.key_pem(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    good = json.loads(_b64d(_issue(issuer).split(".")[1]))

    def es256(message: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def signed(payload: dict[str, object], **header: object) -> str:
        return _forge({"alg": "ES256", "kid": issuer.kid, **header}, payload, es256)

    assert issuer.verify(signed(good), now=NOW) == good  # the hand-made signer is a valid one

    cases: list[tuple[object, str]] = [
        (signed({**good, "exp": float(NOW + 300)}), "exp must be an integer"),
        (signed({k: v for k, v in good.items() if k != "exp"}), "exp must be an integer"),
        (signed({**good, "eat_profile": "tag:example.com,2024:other"}), "eat_profile"),
        (signed({**good, "submods": {}}), "submods must be a non-empty object"),
        (signed({**good, "submods": {"sgx": {"ear.status": "great"}}}), "no valid ear.status"),
        (signed({**good, "ear.verifier-id": "me"}), "ear.verifier-id"),
        (signed(good, crit=["exp"]), "crit"),
        (signed(good, typ="at+jwt"), "typ"),
        ("a.b", "2 dot-separated parts"),
        ("!!.e30.", "not base64url"),
        (_b64e(b"[]") + ".e30.", "not a JSON object"),
        (42, "expected a string"),
    ]
    for token, message in cases:
        with pytest.raises(VerdictdError, match=message) as info:
            issuer.verify(token, now=NOW)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    monkeypatch.setattr(tokens, "MAX_TOKEN", 100)
    with pytest.raises(VerdictdError, match="more than the limit 100"):
        issuer.verify(_issue(issuer), now=NOW)


def test_trust_vector(issuer: TokenIssuer) -> None:
    vector = {"instance-identity": 2, "configuration": 2, "executables": 3, "hardware": 2}
    claims = issuer.verify(_issue(issuer, trust_vector=vector), now=NOW)
    assert claims["submods"]["sgx"]["ear.trustworthiness-vector"] == vector
    # A warning claim caps the status at warning; an affirming status over it is refused.
    assert issuer.verify(_issue(issuer, tier="warning", trust_vector={"hardware": 32}), now=NOW)
    with pytest.raises(VerdictdError, match="more trust than the trustworthiness vector"):
        _issue(issuer, tier="affirming", trust_vector={"hardware": 97})
    assert [tokens.tier_of(v) for v in (0, -1, 2, -2, 31, 32, 95, 96, 127, -128)] == [
        "none", "none", "affirming", "affirming", "affirming", "warning", "warning", "contraindicated",
        "contraindicated", "contraindicated"]


def test_issue_input_refused(issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"tier": "trusted"}, "ear.status"),
        ({"tee": "s g x"}, "tee name"),
        ({"tee": ""}, "tee name"),
        ({"tcb_status": "Fine"}, "not a TCB status"),
        ({"claims": {**CLAIMS, "tcb_status": "OutOfDate"}}, "different from the one given"),
        ({"claims": {"quote": b"\x00"}}, "not JSON-serialisable"),
        ({"claims": {"x": float("nan")}}, "not JSON-serialisable"),
        ({"claims": {1: "x"}}, "string names"),
        ({"nonce": "short"}, "eat_nonce"),
        ({"nonce": "n" * 89}, "eat_nonce"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": tokens.MAX_TTL + 1}, "ttl"),
        ({"trust_vector": {"mood": 2}}, "unknown claim 'mood'"),
        ({"trust_vector": {"hardware": 300}}, "not an integer in -128..127"),
        ({"policy_claims": ["allow"]}, "policy-claims"),
    ]
    for kw, message in cases:
        with pytest.raises(VerdictdError, match=message):
            _issue(issuer, **kw)
    monkeypatch.setattr(tokens, "MAX_CLAIMS_JSON", 100)
    with pytest.raises(VerdictdError, match="more than the limit 100"):
        _issue(issuer)


def test_policy_claims_carried(issuer: TokenIssuer) -> None:
    claims = issuer.verify(_issue(issuer, policy_claims={"reasons": ["mrenclave matches"]}), now=NOW)
    assert claims["submods"]["sgx"]["ear.veraison.policy-claims"] == {"reasons": ["mrenclave matches"]}


def test_key_persistence(issuer: TokenIssuer) -> None:
    pem = issuer.key_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    again = TokenIssuer(pem)
    assert again.kid == issuer.kid and again.jwks() == issuer.jwks()
    assert again.verify(_issue(issuer), now=NOW)
    assert issuer.verify(_issue(again), now=NOW)
    sec1 = serialization.load_pem_private_key(pem, None).private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    assert TokenIssuer(sec1).kid == issuer.kid


def test_wrong_key_types_refused() -> None:
    def pem(key: object, password: bytes | None = None) -> bytes:
        enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        return key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined,no-any-return]
                                 serialization.PrivateFormat.PKCS8, enc)

    with pytest.raises(VerdictdError, match="expected an EC P-256 private key for ES256, got RSA"):
        TokenIssuer(pem(rsa.generate_private_key(65537, 2048)))
    with pytest.raises(VerdictdError, match="expected curve P-256 for ES256, got secp384r1"):
        TokenIssuer(pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(VerdictdError, match="password-protected"):
        TokenIssuer(pem(ec.generate_private_key(ec.SECP256R1()), b"pw"))
    with pytest.raises(VerdictdError, match="not a PEM private key"):
        TokenIssuer(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(VerdictdError, match="expected PEM bytes"):
        TokenIssuer("pem")  # type: ignore[arg-type]


def test_private_parts_never_published(issuer: TokenIssuer) -> None:
    text = json.dumps(issuer.jwks())
    assert '"d"' not in text
    assert issuer.key_pem().decode() not in text
