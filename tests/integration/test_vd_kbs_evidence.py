"""The `verdictd` process with evidence as stock Trustee/CoCo clients send it: Trustee's SnpEvidence (the sev
crate's report JSON and cert_chain) with the real Milan report, AMD's ASK/ARK from --snp-certs; and Trustee's
unsigned sample evidence through auth -> attest -> resource with the default sample policy; Trustee's init-data
bound to a sim enclave's CONFIGID (the sim platform trusted explicitly, as tests/integration/test_vd_daemon.py
starts the process)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.formats.kbs import runtime_data_hash
from tests.integration.test_vd_daemon import Daemon, Env, setup_owner, world  # noqa: F401 (world: a fixture)
from tests.unit.formats.test_snp_sev_json import sev_json
from tests.unit.services.verdictd.kbs_doubles import APP, open_response
from tests.unit.sgx_helpers import vectors_root


def vec_path(rel: str) -> Path:
    path = vectors_root() / "attestation" / rel
    if not path.is_file():
        pytest.skip(f"attestation vector {path} not found (set INCLAVARE_VECTORS)")
    return path


@pytest.fixture
def daemon(world: Env, tmp_path: Path) -> Iterator[Daemon]:  # noqa: F811 (the fixture above, used here)
    d = Daemon(world, tmp_path / "state", "--snp-certs", str(vec_path("roots/amd_ask_ark_milan.pem")))
    try:
        yield d
    finally:
        assert d.stop() == 0


def attest(d: Daemon, tee: str, evidence: Any | None = None, pubkey: dict[str, Any] | None = None,
           svn: str = "1") -> tuple[int, Any, str | None]:
    status, answer, cookie = d.http("kbs", "POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": tee,
                                                                    "extra-params": ""})
    assert status == 200, answer
    nonce = answer["nonce"]
    assert pubkey is not None
    if evidence is None:  # Trustee's sample attester: the runtime-data hash, base64
        evidence = {"svn": svn, "report_data": base64.b64encode(runtime_data_hash(nonce, pubkey, "")).decode()}
    body = {"runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}}
    return d.http("kbs", "POST", "/kbs/v0/attest", body, cookie=cookie)


def test_snp_evidence_as_trustee_sends_it(daemon: Daemon, world: Env) -> None:  # noqa: F811
    report = vec_path("snp/gosevguest_attestation.bin").read_bytes()
    vcek = vec_path("snp/gosevguest_vcek.der").read_bytes()
    evidence = {"attestation_report": sev_json(report), "cert_chain": [{"cert_type": "VCEK", "data": list(vcek)}]}
    # decoded, the VCEK -> ASK -> pinned ARK chain and the report signature verified: only the binding fails (the
    # real report carries its own report data, not this session's runtime-data hash)
    status, answer, _ = attest(daemon, "snp", evidence, world.tee.pubkey)
    assert status == 401 and answer["type"].endswith("RcarAttestFailed"), answer
    assert "report_data" in answer["detail"] and "0102030405" in answer["detail"], answer
    tampered = copy.deepcopy(evidence)
    tampered["attestation_report"]["measurement"][5] ^= 0x80
    status, answer, _ = attest(daemon, "snp", tampered, world.tee.pubkey)
    assert status == 401 and "signature" in answer["detail"], answer
    not_sev = copy.deepcopy(evidence)
    not_sev["attestation_report"]["current_tcb"]["fmc"] = 1  # a Milan layout has no FMC: not what sev writes
    status, answer, _ = attest(daemon, "snp", not_sev, world.tee.pubkey)
    assert status == 400 and "does not round-trip: current_tcb.fmc" in answer["detail"], answer
    # the service keeps serving
    status, answer, _ = attest(daemon, "snp", evidence, world.tee.pubkey)
    assert status == 401 and "report_data" in answer["detail"]


def test_sample_evidence_flow(daemon: Daemon, world: Env) -> None:  # noqa: F811
    from inclavare.services.verdictd.tokens import verify_token

    status, answer = daemon.admin("POST", "/kbs/v0/resource/owner/key/one", b"the owner's secret")
    assert status == 200, answer
    status, answer, _ = attest(daemon, "sample", pubkey=world.tee.pubkey)
    assert status == 403 and "no reference value for svn" in answer["detail"], answer  # fails closed
    status, answer = daemon.admin("POST", "/kbs/v0/reference-value", {"name": "svn", "values": [1],
                                                                      "provenance": "test"})
    assert status == 200, answer
    status, answer, _ = attest(daemon, "sample", pubkey=world.tee.pubkey, svn="2")
    assert status == 403 and "svn 2 is not a reference value" in answer["detail"], answer
    status, answer, cookie = attest(daemon, "sample", pubkey=world.tee.pubkey)
    assert status == 200, answer
    status, jwks, _ = daemon.http("kbs", "GET", "/kbs/v0/jwks")
    assert status == 200
    (appraisal,) = verify_token(answer["token"], jwks)["submods"].values()
    assert appraisal["ear.status"] == "warning"  # unsigned sample evidence is never affirmed
    assert appraisal["ear.veraison.annotated-evidence"]["launch_digest"] == "abcde"
    status, response, _ = daemon.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie=cookie)
    assert status == 200, response
    assert open_response(world.tee.key, response) == b"the owner's secret"
    # another session's runtime data in the evidence: refused
    other = {"svn": "1", "report_data": base64.b64encode(runtime_data_hash("x", world.tee.pubkey, "")).decode()}
    status, answer, _ = attest(daemon, "sample", other, world.tee.pubkey)
    assert status == 401 and "not the runtime-data hash" in answer["detail"], answer


def test_init_data_flow(daemon: Daemon, world: Env) -> None:  # noqa: F811
    """Trustee's init-data bound to the enclave's CONFIGID (a sim quote), then visible to the token's reader."""
    from inclavare.formats.kbs import expected_report_data
    from inclavare.services.verdictd.tokens import verify_token

    setup_owner(daemon, [APP.mrenclave.hex()])
    body = 'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"cdh.toml" = "socket = \'unix:///run/cdh.sock\'"\n'
    configid = hashlib.sha256(body.encode()).digest().ljust(64, b"\0")

    def attest_with(init_data: Any, configid: bytes) -> tuple[int, Any]:
        status, answer, cookie = daemon.http("kbs", "POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sim",
                                                                             "extra-params": ""})
        assert status == 200, answer
        nonce = answer["nonce"]
        quote = world.tee.quote(expected_report_data(nonce, world.tee.pubkey, ""),
                                dataclasses.replace(APP, configid=configid))
        att = {"init-data": init_data, "runtime-data": {"nonce": nonce, "tee-pubkey": world.tee.pubkey},
               "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(quote).decode()},
                                "additional_evidence": ""}}
        status, answer, _ = daemon.http("kbs", "POST", "/kbs/v0/attest", att, cookie=cookie)
        return status, answer

    status, answer = attest_with({"format": "toml", "body": body}, bytes(64))
    assert status == 401 and "configid" in answer["detail"] and "sha256 digest" in answer["detail"], answer
    status, answer = attest_with({"format": "yaml", "body": body}, configid)
    assert status == 400 and "format 'yaml'" in answer["detail"], answer
    status, answer = attest_with({"format": "toml", "body": body}, configid)
    assert status == 200, answer
    _, jwks, _ = daemon.http("kbs", "GET", "/kbs/v0/jwks")
    (appraisal,) = verify_token(answer["token"], jwks)["submods"].values()
    evidence = appraisal["ear.veraison.annotated-evidence"]
    assert evidence["init_data"] == configid[:32].hex()
    assert evidence["init_data_claims"] == {"cdh.toml": "socket = 'unix:///run/cdh.sock'"}
