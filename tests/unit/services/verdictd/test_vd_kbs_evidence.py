"""KBS evidence in the forms stock Trustee/CoCo clients send (inclavare.services.verdictd.kbs_evidence): SNP as
Trustee's SnpEvidence (the sev crate's report JSON and CertTableEntry list) with the real Milan report, and
Trustee's unsigned sample evidence, accepted only when the sim platform is trusted and appraised by the default
sample policy (never above warning); Trustee's init-data bound to the TEE's launch-time field."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
from typing import Any

import pytest

from inclavare.formats.kbs import expected_report_data, runtime_data_hash
from inclavare.services.verdictd.kbs import (
    EvidenceConfig,
    KbsError,
    KbsService,
    verify_evidence,
)
from inclavare.services.verdictd.kbs_initdata import bind_init_data, parse_init_data
from inclavare.services.verdictd.policy import Decision, PolicyEngine, default_policy
from tests.unit.formats.test_snp_sev_json import sev_json
from tests.unit.services.verdictd.kbs_doubles import (
    APP,
    AllowList,
    DictStore,
    JoseSealer,
    RememberingIssuer,
    SimTee,
    open_response,
    utc,
)
from tests.unit.sgx_helpers import vectors_root

VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd"
OWN = bytes([1, 2, 3, 4, 5])  # the vector report's report_data
IN_WINDOW = utc("2025-01-01T00:00:00+00:00")  # the VCEK is valid 2022-09-24..2029-09-24


def vec(rel: str) -> bytes:
    path = vectors_root() / "attestation" / rel
    if not path.is_file():
        pytest.skip(f"attestation vector {path} not found (set INCLAVARE_VECTORS)")
    return path.read_bytes()


def milan_ask_ark() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ask, ark = (c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(
        vec("roots/amd_ask_ark_milan.pem")))
    return ask, ark


def entry(cert_type: Any, der: bytes) -> dict[str, Any]:
    return {"cert_type": cert_type, "data": list(der)}


@pytest.fixture(scope="module")
def snp() -> dict[str, Any]:
    """Trustee's SnpEvidence for the real report, with the VCEK, ASK and ARK in the cert_chain."""
    ask, ark = milan_ask_ark()
    chain = [entry("VCEK", vec("snp/gosevguest_vcek.der")), entry("ASK", ask), entry("ARK", ark)]
    return json.loads(json.dumps({"attestation_report": sev_json(vec("snp/gosevguest_attestation.bin")),
                                  "cert_chain": chain}))


def status(evidence: Any, config: EvidenceConfig, report_data: bytes = OWN, tee: str = "snp") -> tuple[int, str]:
    with pytest.raises(KbsError) as info:
        verify_evidence(tee, evidence, report_data, config)
    assert "\n" not in info.value.detail
    return info.value.status, info.value.detail


# --------------------------------------------------------------------------------------------------
# SNP


def test_snp_as_trustee_sends_it(snp: dict[str, Any]) -> None:
    got = verify_evidence("snp", snp, OWN, EvidenceConfig(as_of=IN_WINDOW))
    assert got.tee == "snp" and got.tcb_status == "UpToDate"
    assert got.claims["measurement"].startswith("b07af9620f3b839b") and got.claims["debug"] is True
    # the report data binding: any other runtime-data hash is refused
    code, detail = status(snp, EvidenceConfig(as_of=IN_WINDOW), report_data=bytes(48))
    assert code == 401 and "report_data" in detail
    # the certificates' validity is checked (SNP's collateral is its certificates): the VCEK expires in 2029
    code, detail = status(snp, EvidenceConfig(as_of=utc("2030-01-01T00:00:00+00:00")))
    assert code == 401 and "collateral is not valid" in detail and "expired" in detail


def test_snp_cert_types_by_name_and_guid(snp: dict[str, Any]) -> None:
    vcek, (ask, ark) = vec("snp/gosevguest_vcek.der"), milan_ask_ark()
    config = EvidenceConfig(as_of=IN_WINDOW)
    by_guid = {**snp, "cert_chain": [entry({"OTHER": VCEK_GUID}, vcek), entry("ASK", ask), entry("ARK", ark),
                                     entry("CRL", b"not a certificate"), entry("Empty", b"")]}
    assert verify_evidence("snp", by_guid, OWN, config).tee == "snp"
    # an unknown GUID is skipped (as Trustee skips it): no VCEK left
    unknown = {**snp, "cert_chain": [entry({"OTHER": "11111111-2222-3333-4444-555555555555"}, vcek),
                                     entry("ASK", ask), entry("ARK", ark)]}
    code, detail = status(unknown, config)
    assert code == 401 and "no VCEK/VLEK certificate given" in detail
    for bad, why in ((entry("vcek", vcek), "not one of sev's CertType names"),
                     (entry({"OTHER": "not-a-guid"}, vcek), "OTHER is not a GUID"),
                     (entry(7, vcek), "must be a CertType name"),
                     ({**entry("VCEK", vcek), "extra": 1}, "exactly cert_type and data"),
                     ({"cert_type": "VCEK", "data": [256]}, "byte values"),
                     ({"cert_type": "VCEK", "data": {"x": 1}}, "byte array")):
        code, detail = status({**snp, "cert_chain": [bad]}, config)
        assert code == 400 and why in detail, detail
    code, detail = status({**snp, "cert_chain": [entry("VCEK", vcek)] * 9}, config)
    assert code == 400 and "at most 8" in detail


def test_snp_certificates_held_by_the_server(snp: dict[str, Any]) -> None:
    vcek, (ask, ark) = vec("snp/gosevguest_vcek.der"), milan_ask_ark()
    no_chain = {**snp, "cert_chain": None}
    assert verify_evidence("snp", no_chain, OWN, EvidenceConfig(as_of=IN_WINDOW, snp_certs=(vcek, ask, ark))).tee
    only_vcek = {**snp, "cert_chain": [entry("VCEK", vcek)]}
    assert verify_evidence("snp", only_vcek, OWN, EvidenceConfig(as_of=IN_WINDOW, snp_certs=(ask, ark))).tee
    code, detail = status(only_vcek, EvidenceConfig(as_of=IN_WINDOW))
    assert code == 401 and "ASK" in detail  # no AMD chain anywhere: refused, never fetched
    code, detail = status({"attestation_report": snp["attestation_report"]}, EvidenceConfig(as_of=IN_WINDOW))
    assert code == 401 and "no VCEK/VLEK certificate given" in detail


def test_snp_tampered_or_malformed(snp: dict[str, Any]) -> None:
    config = EvidenceConfig(as_of=IN_WINDOW)
    tampered = copy.deepcopy(snp)
    tampered["attestation_report"]["measurement"][0] ^= 1
    code, detail = status(tampered, config)
    assert code == 401 and "signature" in detail
    guest = copy.deepcopy(snp)
    guest["attestation_report"]["guest_svn"] = 1
    assert status(guest, config)[0] == 401
    for change, why in (({"extra": 1}, "snp evidence has an unknown field 'extra'"),
                        ({"attestation_report": {**snp["attestation_report"], "policy": "0xb0000"}},
                         "attestation_report: sev AttestationReport JSON: policy: expected an integer"),
                        ({"attestation_report": {**snp["attestation_report"], "cpuid_fam_id": 25}},
                         "does not round-trip: cpuid_fam_id"),
                        ({"attestation_report": {**snp["attestation_report"], "chip_id": [1] * 63}},
                         "chip_id: 63 byte values"),
                        ({"attestation_report": 12}, "attestation_report must be a non-empty base64 string"),
                        ({"cert_chain": "VCEK"}, "cert_chain must be null or a list")):
        code, detail = status({**snp, **change}, config)
        assert code == 400 and why in detail, detail


# --------------------------------------------------------------------------------------------------
# Trustee's sample evidence

KEY = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "xx", "y": "yy"}
TRUST = EvidenceConfig(trust_sim=True)


def sample(nonce: str, pubkey: dict[str, Any] = KEY, *, svn: str = "1") -> dict[str, Any]:
    """What Trustee's sample attester sends: the runtime-data hash (48 bytes, not padded) in base64."""
    return {"svn": svn, "report_data": base64.b64encode(runtime_data_hash(nonce, pubkey, "")).decode()}


def test_sample_evidence() -> None:
    rd = expected_report_data("n", KEY, "")
    got = verify_evidence("sample", sample("n"), rd, TRUST)
    assert got.tee == "sample" and got.tcb_status is None
    assert got.claims == {"svn": "1", "report_data": sample("n")["report_data"], "launch_digest": "abcde",
                          "platform_version": {"major": 1, "minor": 4}, "debug": False}
    padded = {"svn": "1", "report_data": base64.b64encode(rd).decode()}  # the 64-byte form binds the same hash
    assert verify_evidence("sample", padded, rd, TRUST).tee == "sample"
    code, detail = status(sample("other nonce"), TRUST, rd, "sample")
    assert code == 401 and "is not the runtime-data hash" in detail
    code, detail = status(sample("n"), EvidenceConfig(), rd, "sample")
    assert code == 401 and "does not trust the simulated platform" in detail
    for bad, why in (({**sample("n"), "tcb": 1}, "unknown field 'tcb'"),
                     ({"report_data": sample("n")["report_data"]}, "needs svn"),
                     ({**sample("n"), "svn": 1}, "needs svn"),
                     ({"svn": "1"}, "sample report_data must be a non-empty base64 string"),
                     ({"svn": "1", "report_data": "!!"}, "is not base64"),
                     ({"svn": "1", "report_data": base64.b64encode(bytes(65)).decode()}, "65 bytes, over 64")):
        code, detail = status(bad, TRUST, rd, "sample")
        assert code == 400 and why in detail, detail


class SamplePolicy:
    """The default sample policy through the real engine, with the given reference values."""

    def __init__(self, reference: dict[str, Any]) -> None:
        self.engine, self.reference = PolicyEngine(), reference

    def appraise(self, tee: str, claims: dict[str, Any], tcb_status: str | None) -> Decision:
        return self.engine.appraise(default_policy("sample"), tee, claims, tcb_status, self.reference)

    def allow_resource(self, input: dict[str, Any]) -> bool:  # noqa: A002
        return True


def service(reference: dict[str, Any], tokens: RememberingIssuer) -> KbsService:
    return KbsService(appraiser=SamplePolicy(reference), resources=DictStore({"owner/key/one": b"secret"}),
                      tokens=tokens, sealer=JoseSealer(), evidence=TRUST)


def test_sample_flow_with_the_default_policy() -> None:
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256")
    pubkey = {**key.as_dict(private=False), "alg": "ECDH-ES+A256KW"}
    tokens = RememberingIssuer()

    def attest(svc: KbsService, svn: str = "1") -> tuple[dict[str, Any], str]:
        answer, session = svc.auth(b'{"version": "0.4.0", "tee": "sample", "extra-params": ""}')
        body = {"runtime-data": {"nonce": answer["nonce"], "tee-pubkey": pubkey},
                "tee-evidence": {"primary_evidence": sample(answer["nonce"], pubkey, svn=svn),
                                 "additional_evidence": ""}}
        return svc.attest(json.dumps(body).encode(), session.id)[0], session.id

    svc = service({"svn": [1]}, tokens)
    answer, sid = attest(svc)
    grant = tokens.verify(answer["token"])["submods"]["sample"]["claims"]
    assert grant["tier"] == "warning" and grant["svn"] == "1"  # never affirming
    assert open_response(key, svc.resource(["owner", "key", "one"], {}, sid, None)) == b"secret"
    with pytest.raises(KbsError) as info:
        attest(svc, svn="2")
    assert info.value.status == 403 and "svn 2 is not a reference value" in info.value.detail
    with pytest.raises(KbsError) as info:  # no reference values: the default policy fails closed
        attest(service({}, tokens))
    assert info.value.status == 403 and "no reference value for svn" in info.value.detail


# --------------------------------------------------------------------------------------------------
# init-data (Trustee's initdata TOML, bound to CONFIGID / MRCONFIGID / HOST_DATA)

INITDATA = 'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n"aa.toml" = "url = \'https://kbs\'"\n'


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimTee:
    return SimTee(str(tmp_path_factory.mktemp("kbs-initdata") / "state"))


def sim_attest(svc: KbsService, tee: SimTee, configid: bytes, init_data: Any) -> tuple[dict[str, Any], str]:
    answer, session = svc.auth(b'{"version": "0.4.0", "tee": "sim", "extra-params": ""}')
    nonce = answer["nonce"]
    quote = tee.quote(expected_report_data(nonce, tee.pubkey, ""), dataclasses.replace(APP, configid=configid))
    body = {"init-data": init_data, "runtime-data": {"nonce": nonce, "tee-pubkey": tee.pubkey},
            "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(quote).decode()},
                             "additional_evidence": ""}}
    return svc.attest(json.dumps(body).encode(), session.id)[0], session.id


def test_init_data_bound_to_configid(sim: SimTee) -> None:
    tokens = RememberingIssuer()
    svc = KbsService(appraiser=AllowList(mrenclaves={APP.mrenclave.hex()}), resources=DictStore({}), tokens=tokens,
                     sealer=JoseSealer(), evidence=EvidenceConfig(trust_sim=True, sim_root_fingerprints=(sim.root,)))
    digest = hashlib.sha384(INITDATA.encode()).digest()
    answer, _ = sim_attest(svc, sim, digest.ljust(64, b"\0"), {"format": "toml", "body": INITDATA})
    grant = tokens.verify(answer["token"])["submods"]["sim"]["claims"]
    assert grant["init_data"] == digest.hex() and grant["init_data_claims"] == {"aa.toml": "url = 'https://kbs'"}
    # another init-data than the one the enclave was launched with
    other = INITDATA.replace("https://kbs", "https://evil")
    with pytest.raises(KbsError) as info:
        sim_attest(svc, sim, digest.ljust(64, b"\0"), {"format": "toml", "body": other})
    assert info.value.status == 401 and "configid" in info.value.detail and "sha384 digest" in info.value.detail
    # no init-data: nothing to bind (the configid is the policy's business)
    assert "token" in sim_attest(svc, sim, digest.ljust(64, b"\0"), None)[0]


def test_init_data_other_tees(snp: dict[str, Any]) -> None:
    init = parse_init_data({"format": "toml", "body": INITDATA.replace("sha384", "sha256")})
    assert init is not None and init.digest == hashlib.sha256(INITDATA.replace("sha384", "sha256").encode()).digest()
    verified = verify_evidence("snp", snp, OWN, EvidenceConfig(as_of=IN_WINDOW))
    with pytest.raises(KbsError) as info:  # the real report's HOST_DATA is zero
        bind_init_data(verified, init)
    assert info.value.status == 401 and "snp host_data 0000" in info.value.detail
    zero = dataclasses.replace(init, digest=bytes(32))
    assert bind_init_data(verified, zero).claims["init_data"] == "00" * 32
    # sample evidence has no launch-time field: the digest is only recorded, as Trustee's sample verifier does
    rd = expected_report_data("n", KEY, "")
    got = bind_init_data(verify_evidence("sample", sample("n"), rd, TRUST), init)
    assert got.claims["init_data"] == init.digest.hex() and got.claims["init_data_claims"] == init.data


@pytest.mark.parametrize("value,why", [
    ({"format": "json", "body": INITDATA}, "format 'json' is not supported"),
    ({"format": "toml"}, "exactly format and body"),
    ({"format": "toml", "body": INITDATA, "x": 1}, "exactly format and body"),
    ("toml", "exactly format and body"),
    ({"format": "toml", "body": ""}, "non-empty TOML string"),
    ({"format": "toml", "body": "x" * (49 << 10)}, "non-empty TOML string"),
    ({"format": "toml", "body": "version = "}, "body is not TOML"),
    ({"format": "toml", "body": INITDATA.replace("sha384", "md5")}, "algorithm 'md5' is not one of"),
    ({"format": "toml", "body": 'version = 1\nalgorithm = "sha384"\n'}, "version must be a string"),
    ({"format": "toml", "body": 'version = "0.1.0"\nalgorithm = "sha384"\n'}, "data must be a table"),
    ({"format": "toml", "body": INITDATA + "extra = 1\n"}, "data must be a table"),
    ({"format": "toml", "body": 'version = "0.1.0"\nalgorithm = "sha384"\nother = 1\n'}, "unknown key 'other'"),
])
def test_init_data_malformed(value: Any, why: str) -> None:
    with pytest.raises(KbsError) as info:
        parse_init_data(value)
    assert info.value.status == 400 and why in info.value.detail, info.value.detail
