"""The `verdictd` program as a process: every listener wired to the real store, policies, tokens and JWE.

A KBS flow (auth -> attest with a sim quote bound to the KBS runtime data -> resource opened with the TEE key),
refusals by the default sim policy (a wrong mrenclave, a debug enclave), the admin API's authentication, the
EAA protocol over RATS-TLS with a sim-attested client fetching a key made through the gRPC client API, the
`cmd` key provider, and the state surviving SIGKILL. Evidence is verified for real; the sim platform is trusted
explicitly (--trust-sim --sim-root)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inclavare.formats.sgx import Attributes
from inclavare.sim.platform import SimPlatform
from inclavare.sim.report import EnclaveIdentity
from tests.unit.services.verdictd.kbs_doubles import APP, DEBUG_APP, SimTee, open_response

KEK_HEX = hashlib.sha256(b"verdictd daemon test KEK").hexdigest()
ADMIN = "daemon-admin-token-0123456789"
TIMEOUT = 30.0
OTHER_APP = EnclaveIdentity(mrenclave=hashlib.sha256(b"someone else").digest(), mrsigner=APP.mrsigner,
                            attributes=Attributes(0x4, 0x3), isvprodid=1, isvsvn=1)


@dataclass
class Env:
    sim_dir: str
    tee: SimTee
    sim_root_pem: str
    collateral: str
    token_file: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Env:
    base = tmp_path_factory.mktemp("vd-daemon")
    sim_dir = str(base / "sim")
    tee = SimTee(sim_dir)
    platform = SimPlatform.open(sim_dir)
    root = base / "sim-root.pem"
    root.write_bytes(platform.root_ca_pem())
    bundle = base / "collateral.json"
    bundle.write_text(json.dumps(platform.collateral_bundle()))
    token = base / "admin.token"
    token.write_text(ADMIN + "\n")
    token.chmod(0o600)
    env = {**os.environ, "VERDICTD_KEK": KEK_HEX, "INCLAVARE_SIM_STATE_DIR": sim_dir}
    return Env(sim_dir, tee, str(root), str(bundle), str(token), env)


class Daemon:
    """A verdictd process; ``addresses`` from its ready line."""

    def __init__(self, world: Env, state: Path, *extra: str) -> None:
        args = [sys.executable, "-m", "inclavare.cli.verdictd", "--state-dir", str(state), "--log-level", "warn",
                "--kbs-listen", "127.0.0.1:0", "--insecure-http", "--admin-listen", "127.0.0.1:0",
                "--admin-token-file", world.token_file, "--client-api", "127.0.0.1:0",
                "--trust-sim", "--sim-root", world.sim_root_pem, "--collateral", world.collateral,
                "-l", "127.0.0.1:0", "-m", "-a", "sim", "-e", *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=world.env)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=TIMEOUT)
            raise AssertionError(f"verdictd did not start: {err.decode(errors='replace')}")
        self.addresses: dict[str, Any] = json.loads(line)
        assert self.addresses["ready"] is True

    def port(self, name: str) -> int:
        return int(str(self.addresses[name]).rsplit(":", 1)[1].rstrip("/"))

    def http(self, name: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             cookie: str | None = None) -> tuple[int, Any, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port(name), timeout=TIMEOUT)
        hdrs = dict(headers or {})
        if cookie:
            hdrs["Cookie"] = cookie
        raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=raw, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        set_cookie = resp.getheader("Set-Cookie")
        try:
            parsed = json.loads(data) if data else None
        except json.JSONDecodeError:
            parsed = data
        return resp.status, parsed, set_cookie.split(";", 1)[0] if set_cookie else cookie

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, answer, _ = self.http("admin", method, path, body, {"Authorization": f"Bearer {ADMIN}"})
        return status, answer

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self.proc.stdout.close()
            self.proc.stderr.close()


def setup_owner(d: Daemon, mrenclaves: list[str]) -> None:
    status, answer = d.admin("POST", "/kbs/v0/reference-value",
                             {"name": "mrenclave", "values": mrenclaves, "provenance": "test"})
    assert status == 200, answer
    status, answer = d.admin("POST", "/kbs/v0/resource/owner/key/one", b"the owner's secret")
    assert status == 200, answer


def kbs_attest(d: Daemon, tee: SimTee, identity: EnclaveIdentity = APP) -> tuple[int, Any, str | None]:
    status, answer, cookie = d.http("kbs", "POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sample",
                                                                    "extra-params": ""})
    assert status == 200, answer
    return d.http("kbs", "POST", "/kbs/v0/attest", tee.attestation(answer["nonce"], identity=identity),
                  cookie=cookie)


@pytest.fixture
def daemon(world: Env, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(world, tmp_path / "state")
    try:
        yield d
    finally:
        assert d.stop() == 0


def test_kbs_flow_token_and_jwks(daemon: Daemon, world: Env) -> None:
    from inclavare.services.verdictd.tokens import verify_token

    setup_owner(daemon, [APP.mrenclave.hex()])
    status, answer, cookie = kbs_attest(daemon, world.tee)
    assert status == 200, answer
    status, response, _ = daemon.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie=cookie)
    assert status == 200, response
    assert open_response(world.tee.key, response) == b"the owner's secret"
    status, jwks, _ = daemon.http("kbs", "GET", "/kbs/v0/jwks")
    assert status == 200 and jwks["keys"][0]["crv"] == "P-256"
    claims = verify_token(answer["token"], jwks)
    (appraisal,) = claims["submods"].values()
    assert appraisal["ear.status"] == "warning"  # the sim platform is never affirmed
    assert appraisal["ear.veraison.annotated-evidence"]["mrenclave"] == APP.mrenclave.hex()
    # the bearer token alone works too (a fresh client without the cookie)
    status, response, _ = daemon.http("kbs", "GET", "/kbs/v0/resource/owner/key/one",
                                      headers={"Authorization": f"Bearer {answer['token']}"})
    assert status == 200 and open_response(world.tee.key, response) == b"the owner's secret"
    status, missing, _ = daemon.http("kbs", "GET", "/kbs/v0/resource/owner/key/none", cookie=cookie)
    assert status == 404, missing


def test_policy_refusals(daemon: Daemon, world: Env) -> None:
    # no reference values yet: the default policy fails closed
    status, answer, _ = kbs_attest(daemon, world.tee)
    assert status == 403 and "no reference value for mrenclave" in answer["detail"]
    setup_owner(daemon, [APP.mrenclave.hex()])
    status, answer, _ = kbs_attest(daemon, world.tee, OTHER_APP)
    assert status == 403 and "is not a reference value" in answer["detail"], answer
    status, answer, _ = kbs_attest(daemon, world.tee, DEBUG_APP)
    assert status == 403 and "debug enclave" in answer["detail"], answer


def test_admin_needs_the_token(daemon: Daemon, world: Env) -> None:
    status, answer, _ = daemon.http("admin", "POST", "/kbs/v0/resource/owner/key/one", b"x")
    assert status == 401 and answer["type"].endswith("AdminAuthAccess")
    status, answer, _ = daemon.http("admin", "POST", "/kbs/v0/resource/owner/key/one", b"x",
                                    {"Authorization": "Bearer wrong-token-wrong-token"})
    assert status == 401
    # the admin endpoints are not on the attestation listener at all
    status, answer, _ = daemon.http("kbs", "POST", "/kbs/v0/resource/owner/key/one", b"x",
                                    {"Authorization": f"Bearer {ADMIN}"})
    assert status == 404
    # a policy that does not compile is refused before it is stored
    bad = base64.urlsafe_b64encode(b"package policy\nallow if {").decode().rstrip("=")
    status, answer, _ = daemon.http("admin", "POST", "/kbs/v0/resource-policy", {"policy": bad},
                                    {"Authorization": f"Bearer {ADMIN}"})
    assert status == 400 and answer["detail"].startswith("policy 'resource' not stored: "), answer
    good = base64.urlsafe_b64encode(b"package policy\ndefault allow := false\n").decode().rstrip("=")
    status, answer, _ = daemon.http("admin", "POST", "/kbs/v0/resource-policy", {"policy": good},
                                    {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200, answer
    # the stored policy replaces the default at once: an attested client now gets nothing
    setup_owner(daemon, [APP.mrenclave.hex()])
    status, answer, cookie = kbs_attest(daemon, world.tee)
    assert status == 200, answer
    status, answer, _ = daemon.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie=cookie)
    assert status == 403 and answer["type"].endswith("PolicyDeny")


def eaa_config(world: Env) -> Any:
    from inclavare.ratls.attesters import SimAttester
    from inclavare.ratls.tls import RatsTlsConfig

    root = SimPlatform.open(world.sim_dir).root_ca_fingerprint()
    return RatsTlsConfig(attester=SimAttester(world.sim_dir), trust_sim=True, sim_root_fingerprints=(root,),
                         mutual=True, provide_endorsements=True)


def test_eaa_get_kek_of_a_client_api_key(daemon: Daemon, world: Env) -> None:
    from inclavare.ratls.attesters import sim_attester_identity
    from inclavare.services.verdictd.clientapi_client import AdminClient
    from inclavare.services.verdictd.eaa_client import EaaClient
    from inclavare.services.verdictd.errors import VerdictdError

    with AdminClient(daemon.addresses["client-api"], token=ADMIN.encode(), timeout=TIMEOUT) as admin:
        kid = admin.create_key()
        key = admin.get_key(kid)
    assert len(key) == 32
    # the client's identity is not a reference value yet: refused in the handshake
    refused = EaaClient(eaa_config(world), daemon.addresses["eaa"], timeout=TIMEOUT)
    try:
        with pytest.raises(VerdictdError):  # a TLS alert in the handshake, or the connection closed unanswered
            refused.connect().get_kek([kid])
    finally:
        refused.close()
    setup_owner(daemon, [sim_attester_identity().mrenclave.hex()])
    with EaaClient(eaa_config(world), daemon.addresses["eaa"], timeout=TIMEOUT).connect() as c:
        assert c.get_kek([kid]) == {kid: key}


def test_keyprovider_cmd(daemon: Daemon, world: Env, tmp_path: Path) -> None:
    from inclavare.services.verdictd.clientapi_client import AdminClient
    from inclavare.services.verdictd.keyprovider import decode_output, encode_unwrap_input, encode_wrap_input

    state = str(daemon.proc.args[4])  # type: ignore[index]
    with AdminClient(daemon.addresses["client-api"], token=ADMIN.encode(), timeout=TIMEOUT) as admin:
        kid = admin.create_key()

    def cmd(data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "inclavare.cli.verdictd", "keyprovider", "--state-dir", state],
                              input=data, capture_output=True, env=world.env, timeout=TIMEOUT, check=False)

    wrapped = cmd(encode_wrap_input({"verdictd": [kid.encode()]}, b'{"layer":"options"}'))
    assert wrapped.returncode == 0, wrapped.stderr
    annotation = decode_output(wrapped.stdout)["annotation"]
    assert annotation is not None and kid.encode() in annotation
    setup_owner(daemon, [APP.mrenclave.hex()])
    status, answer, _ = kbs_attest(daemon, world.tee)
    assert status == 200
    # a sim token is "warning": the key provider releases only to "affirming" tokens
    refused = cmd(encode_unwrap_input({"verdictd-token": [answer["token"].encode()]}, annotation))
    assert refused.returncode == 1 and b"ear.status 'warning'" in refused.stderr
    assert refused.stderr.count(b"\n") == 1 and refused.stdout == b""
    unauth = cmd(encode_unwrap_input({"verdictd-token": [b"not.a.token"]}, annotation))
    assert unauth.returncode == 1 and b"attestation token" in unauth.stderr


def test_state_survives_sigkill(world: Env, tmp_path: Path) -> None:
    from inclavare.services.verdictd.clientapi_client import AdminClient
    from inclavare.services.verdictd.tokens import verify_token

    state = tmp_path / "state"
    d = Daemon(world, state)
    try:
        setup_owner(d, [APP.mrenclave.hex()])
        with AdminClient(d.addresses["client-api"], token=ADMIN.encode(), timeout=TIMEOUT) as admin:
            kid = admin.create_key()
            key = admin.get_key(kid)
        status, answer, _ = kbs_attest(d, world.tee)
        assert status == 200
        token = answer["token"]
    finally:
        d.proc.send_signal(signal.SIGKILL)
        assert d.stop() == -signal.SIGKILL
    d = Daemon(world, state)
    try:
        status, values = d.admin("GET", "/kbs/v0/reference-value/mrenclave")
        assert status == 200 and values == [APP.mrenclave.hex()]
        with AdminClient(d.addresses["client-api"], token=ADMIN.encode(), timeout=TIMEOUT) as admin:
            assert admin.get_key(kid) == key
        # the EAR signing key persisted: the token from before the kill still verifies and still opens resources
        status, jwks, _ = d.http("kbs", "GET", "/kbs/v0/jwks")
        verify_token(token, jwks)
        status, response, _ = d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one",
                                     headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and open_response(world.tee.key, response) == b"the owner's secret"
        status, answer = d.admin("POST", "/kbs/v0/resource/owner/key/two", b"second")
        assert status == 200
        d.proc.send_signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
    finally:
        assert d.stop() == 0


def run_verdictd(world: Env, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "inclavare.cli.verdictd", *args], capture_output=True,
                          env=world.env, timeout=TIMEOUT, check=False)


def test_usage_and_config_errors(world: Env, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    r = run_verdictd(world, "--state-dir", state)
    assert r.returncode == 2 and r.stderr.startswith(b"verdictd: nothing to serve")
    r = run_verdictd(world, "--state-dir", state, "--kbs-listen", "127.0.0.1:0")
    assert r.returncode == 2 and b"--insecure-http" in r.stderr
    r = run_verdictd(world, "--state-dir", state, "-l", "127.0.0.1:0")
    assert r.returncode == 2 and b"-m" in r.stderr
    r = run_verdictd(world, "--state-dir", state, "--no-such-flag")
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1
    r = run_verdictd(world, "--state-dir", state, "--kbs-listen", "127.0.0.1:99999", "--insecure-http")
    assert r.returncode == 2 and b"HOST:PORT" in r.stderr
    env = {k: v for k, v in world.env.items() if k != "VERDICTD_KEK"}
    r = subprocess.run([sys.executable, "-m", "inclavare.cli.verdictd", "--state-dir", state, "--kbs-listen",
                        "127.0.0.1:0", "--insecure-http"], capture_output=True, env=env, timeout=TIMEOUT, check=False)
    assert r.returncode == 1 and b"key-encryption key" in r.stderr and r.stderr.count(b"\n") == 1


def test_https_kbs(world: Env, tmp_path: Path) -> None:
    import ssl

    from tests.integration.test_vd_kbs import self_signed

    cert, key = self_signed(tmp_path)
    state = tmp_path / "state"
    args = [sys.executable, "-m", "inclavare.cli.verdictd", "--state-dir", str(state), "--kbs-listen",
            "127.0.0.1:0", "--kbs-cert", cert, "--kbs-key", key, "--trust-sim", "--sim-root", world.sim_root_pem,
            "--collateral", world.collateral, "--admin-token-file", world.token_file]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=world.env)
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], TIMEOUT)[0]
        ready = json.loads(proc.stdout.readline())
        assert ready["kbs"].startswith("https://127.0.0.1:") and "admin" not in ready
        port = int(ready["kbs"].rstrip("/").rsplit(":", 1)[1])
        ctx = ssl.create_default_context(cafile=cert)

        def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=TIMEOUT)
            try:
                raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
                conn.request(method, path, body=raw, headers=headers or {})
                resp = conn.getresponse()
                return resp.status, resp.getheader("Set-Cookie"), resp.read()
            finally:
                conn.close()

        auth = {"Authorization": f"Bearer {ADMIN}"}
        # without --admin-listen the admin endpoints are on the KBS listener, behind the token
        assert call("POST", "/kbs/v0/resource/owner/key/one", b"over TLS")[0] == 401
        assert call("POST", "/kbs/v0/resource/owner/key/one", b"over TLS", auth)[0] == 200
        ref = {"name": "mrenclave", "values": [APP.mrenclave.hex()], "provenance": "t"}
        assert call("POST", "/kbs/v0/reference-value", ref, auth)[0] == 200
        status, cookie, body = call("POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sample",
                                                              "extra-params": ""})
        assert status == 200 and cookie is not None and "; Secure" in cookie
        session = {"Cookie": cookie.split(";", 1)[0]}
        nonce = json.loads(body)["nonce"]
        status, _, body = call("POST", "/kbs/v0/attest", world.tee.attestation(nonce), session)
        assert status == 200, body
        status, _, body = call("GET", "/kbs/v0/resource/owner/key/one", None, session)
        assert status == 200 and open_response(world.tee.key, json.loads(body)) == b"over TLS"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_grpc_key_provider(world: Env, tmp_path: Path) -> None:
    import grpc

    from inclavare.services.verdictd.clientapi_client import AdminClient
    from inclavare.services.verdictd.keyprovider import decode_output, encode_unwrap_input, encode_wrap_input
    from inclavare.services.verdictd.proto import keyprovider_pb2 as pb
    from inclavare.services.verdictd.proto import keyprovider_pb2_grpc as pb_grpc

    sock = tmp_path / "kp.sock"
    d = Daemon(world, tmp_path / "state", "--keyprovider-listen", str(sock))
    try:
        assert d.addresses["keyprovider"] in (str(sock), f"unix:{sock}")
        with AdminClient(d.addresses["client-api"], token=ADMIN.encode(), timeout=TIMEOUT) as admin:
            kid = admin.create_key()

        def call(target: str, method: str, payload: bytes, token: str | None = None) -> bytes:
            with grpc.insecure_channel(target) as ch:
                stub = pb_grpc.KeyProviderServiceStub(ch)  # type: ignore[no-untyped-call]
                req = pb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=payload)
                meta = [("authorization", f"Bearer {token}")] if token else None
                return bytes(getattr(stub, method)(req, timeout=TIMEOUT, metadata=meta)
                             .KeyProviderKeyWrapProtocolOutput)

        wrap = encode_wrap_input({"verdictd": [kid.encode()]}, b'{"layer":"options"}')
        annotation = decode_output(call(f"unix:{sock}", "WrapKey", wrap))["annotation"]
        assert annotation is not None
        unwrap = encode_unwrap_input({"verdictd-token": [b"forged"]}, annotation)
        with pytest.raises(grpc.RpcError) as e:
            call(f"unix:{sock}", "UnWrapKey", unwrap)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert "attestation token" in e.value.details()  # type: ignore[attr-defined]
        # beside the client API: WrapKey needs the admin token, UnWrapKey only the attestation token
        api = d.addresses["client-api"]
        with pytest.raises(grpc.RpcError) as e:
            call(api, "WrapKey", wrap)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert "admin API" in e.value.details()  # type: ignore[attr-defined]
        assert decode_output(call(api, "WrapKey", wrap, ADMIN))["annotation"] is not None
        with pytest.raises(grpc.RpcError) as e:
            call(api, "UnWrapKey", unwrap)
        assert "attestation token" in e.value.details()  # type: ignore[attr-defined]
    finally:
        assert d.stop() == 0


def test_eaa_resources_obey_the_resource_policy(daemon: Daemon, world: Env) -> None:
    """A KBS resource fetched over EAA gets the KBS's resource decision: the owner's per-path policy is not
    bypassed by the other protocol."""
    from inclavare.ratls.attesters import sim_attester_identity
    from inclavare.services.verdictd.eaa_client import EaaClient
    from inclavare.services.verdictd.errors import VerdictdError

    setup_owner(daemon, [sim_attester_identity().mrenclave.hex()])
    with EaaClient(eaa_config(world), daemon.addresses["eaa"], timeout=TIMEOUT).connect() as c:
        assert c.get_resource("owner/key/one") == b"the owner's secret"
    only_affirming = ("package policy\nimport rego.v1\ndefault allow := false\n"
                      "allow if {\n  some s in input.submods\n  s[\"ear.status\"] == \"affirming\"\n}\n")
    status, answer = daemon.admin("POST", "/kbs/v0/resource-policy",
                                  {"policy": base64.urlsafe_b64encode(only_affirming.encode()).decode().rstrip("=")})
    assert status == 200, answer
    with (EaaClient(eaa_config(world), daemon.addresses["eaa"], timeout=TIMEOUT).connect() as c,
          pytest.raises(VerdictdError, match="the resource policy denies it")):
        c.get_resource("owner/key/one")  # sim evidence is "warning" at best
