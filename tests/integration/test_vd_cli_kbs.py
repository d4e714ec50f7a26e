"""`verdict`'s KBS admin actions against a real `verdictd` process: a resource set with verdict is exactly what a KBS
client gets after attesting with sim evidence; reference values set, read, listed and deleted with verdict change
the default policy's decision; policies set with verdict take effect; a wrong token, a server that is down and
bad local input are one line each with the documented exit status. The CLI runs in-process (``verdict.main``) and,
for stdin and the exit status, as a subprocess."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.cli import verdict
from tests.integration import test_vd_daemon as vd
from tests.unit.services.verdictd.kbs_doubles import APP, open_response

world = vd.world  # the module fixture: sim platform, trusted root, collateral, admin token file
SRC = str(Path(__file__).resolve().parents[2] / "src")
DENY_ALL = "package policy\nimport rego.v1\ndefault allow := false\n"


@pytest.fixture
def daemon(world: vd.Env, tmp_path: Path) -> Iterator[vd.Daemon]:
    d = vd.Daemon(world, tmp_path / "state")
    try:
        yield d
    finally:
        assert d.stop() == 0


def cli(capsys: pytest.CaptureFixture[str], d: vd.Daemon, *argv: str) -> tuple[int, str, str]:
    code = verdict.main(["--kbs", d.addresses["admin"], "--token", vd.ADMIN, "--timeout", "20", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], d: vd.Daemon, *argv: str) -> dict[str, object]:
    code, out, err = cli(capsys, d, "--json", *argv)
    assert code == 0 and err == "", err
    answer = json.loads(out)
    assert isinstance(answer, dict) and answer["ok"] is True and out.count("\n") == 1
    return answer


def subprocess_cli(*argv: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
    environ.update(PYTHONPATH=SRC, **env)
    return subprocess.run([sys.executable, "-m", "inclavare.cli.verdict", *argv], input=stdin, env=environ,
                          capture_output=True, timeout=vd.TIMEOUT, check=False)


def attest(d: vd.Daemon, world: vd.Env) -> tuple[int, dict[str, str], str | None]:
    status, answer, cookie = vd.kbs_attest(d, world.tee)
    return status, answer, cookie


def test_resource_set_with_verdict_is_what_the_kbs_client_gets(daemon: vd.Daemon, world: vd.Env,
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    secret = bytes(range(256)) * 3
    (tmp_path / "secret.bin").write_bytes(secret)
    answer = cli_json(capsys, daemon, "--set-reference-value", "mrenclave", APP.mrenclave.hex())
    assert answer == {"ok": True, "action": "set-reference-value", "name": "mrenclave",
                      "values": [APP.mrenclave.hex()], "provenance": "", "expires": None}
    assert cli(capsys, daemon, "--set-resource", "owner/key/one", str(tmp_path / "secret.bin")) == (
        0, "set-resource: OK\n", "")
    # stdin, through the real program with the URL and token from the environment
    r = subprocess_cli("--set-resource", "owner/key/two", "-", "--json", stdin=b"from stdin",
                       VERDICT_KBS=daemon.addresses["admin"], VERDICT_TOKEN=vd.ADMIN)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert json.loads(r.stdout) == {"ok": True, "action": "set-resource", "resource": "owner/key/two", "size": 10}
    status, answer, cookie = attest(daemon, world)
    assert status == 200, answer
    for path, want in (("owner/key/one", secret), ("owner/key/two", b"from stdin")):
        status, response, _ = daemon.http("kbs", "GET", f"/kbs/v0/resource/{path}", cookie=cookie)
        assert status == 200 and open_response(world.tee.key, response) == want
    # listing shows paths only; a deleted resource is gone for the client too
    assert cli(capsys, daemon, "--list-resources") == (0, "owner/key/one\nowner/key/two\n", "")
    assert cli_json(capsys, daemon, "--delete-resource", "owner/key/one")["resource"] == "owner/key/one"
    assert cli_json(capsys, daemon, "--list-resources")["resources"] == ["owner/key/two"]
    status, response, _ = daemon.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie=cookie)
    assert status == 404 and response["type"].endswith("ResourceNotFound")
    code, _, err = cli(capsys, daemon, "--delete-resource", "owner/key/one")
    assert code == 1 and err.count("\n") == 1 and "404 ResourceNotFound" in err


def test_reference_values_change_the_decision(daemon: vd.Daemon, world: vd.Env,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status, answer, _ = attest(daemon, world)
    assert status == 403 and "no reference value for mrenclave" in answer["detail"]
    mr = APP.mrenclave.hex()
    assert cli(capsys, daemon, "--set-reference-value", "mrenclave", f"0x{mr.upper()},{'00' * 32}", "--provenance",
               "build 7", "--expires", "2999-01-01T00:00:00Z")[0] == 0
    assert attest(daemon, world)[0] == 200
    assert cli(capsys, daemon, "--get-reference-value", "mrenclave") == (0, f"{mr}\n{'00' * 32}\n", "")
    # a minimum SVN above the enclave's (1): the same evidence is now denied
    assert cli_json(capsys, daemon, "--set-reference-value", "isvsvn", "2")["values"] == [2]
    status, answer, _ = attest(daemon, world)
    assert status == 403 and "isvsvn 1 is below the reference minimum" in answer["detail"], answer
    listed = cli_json(capsys, daemon, "--list-reference-values")["reference_values"]
    assert listed == {
        "isvsvn": {"values": [2], "provenance": "", "expires": None, "expired": False},
        "mrenclave": {"values": [mr, "00" * 32], "provenance": "build 7", "expires": "2999-01-01T00:00:00+00:00",
                      "expired": False}}
    code, out, _ = cli(capsys, daemon, "--list-reference-values")
    assert code == 0 and out.splitlines() == [
        "isvsvn 2", f"mrenclave {mr},{'00' * 32} (provenance: build 7; expires 2999-01-01T00:00:00+00:00)"]
    assert cli_json(capsys, daemon, "--delete-reference-value", "isvsvn") == {
        "ok": True, "action": "delete-reference-value", "name": "isvsvn"}
    assert attest(daemon, world)[0] == 200
    assert cli(capsys, daemon, "--delete-reference-value", "mrenclave")[0] == 0
    status, answer, _ = attest(daemon, world)
    assert status == 403 and "no reference value for mrenclave" in answer["detail"]
    code, out, err = cli(capsys, daemon, "--json", "--get-reference-value", "mrenclave")
    assert code == 1 and json.loads(out) == {"ok": False, "error": err.strip()[len("verdict: "):]}
    assert "404 ReferenceValueNotFound" in err and err.count("\n") == 1


def test_policies_set_with_verdict_take_effect(daemon: vd.Daemon, world: vd.Env, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    deny = tmp_path / "deny.rego"
    deny.write_text(DENY_ALL)
    assert cli(capsys, daemon, "--set-reference-value", "mrenclave", APP.mrenclave.hex())[0] == 0
    assert cli(capsys, daemon, "--set-resource", "owner/key/one", str(deny))[0] == 0
    status, answer, cookie = attest(daemon, world)
    assert status == 200
    assert cli(capsys, daemon, "--set-resource-policy", str(deny)) == (0, "set-resource-policy: OK\n", "")
    status, answer, _ = daemon.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie=cookie)
    assert status == 403 and answer["type"].endswith("PolicyDeny")
    assert cli_json(capsys, daemon, "--set-attestation-policy", "sim", str(deny))["policy_id"] == "sim"
    assert attest(daemon, world)[0] == 403
    # the KBS and the clientapi share one policy store: the clientapi exports what verdict set over the KBS
    code, out, _ = cli(capsys, daemon, "-c", daemon.addresses["client-api"], "--export-opa-policy", "sim", "-p", "-")
    assert (code, out) == (0, DENY_ALL)
    bad = tmp_path / "bad.rego"
    bad.write_text("package policy\nallow if {")
    code, _, err = cli(capsys, daemon, "--set-attestation-policy", "sim", str(bad))
    assert code == 1 and "400 PolicyError: policy 'sim' not stored" in err and err.count("\n") == 1


def test_wrong_token_and_server_down(daemon: vd.Daemon) -> None:
    r = subprocess_cli("--kbs", daemon.addresses["admin"], "--token", "wrong-token-0123456789", "--list-resources")
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.startswith(b"verdict: KBS admin http://127.0.0.1:") and r.stderr.count(b"\n") == 1
    assert b"401 AdminAuthAccess: admin API: wrong admin token" in r.stderr
    r = subprocess_cli("--kbs", daemon.addresses["admin"], "--token", "wrong-token-0123456789", "--json",
                       "--set-resource", "owner/key/one", "-", stdin=b"x")
    assert r.returncode == 1 and "AdminAuthAccess" in json.loads(r.stdout)["error"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess_cli("--kbs", f"http://127.0.0.1:{port}", "--token", vd.ADMIN, "--list-reference-values")
    assert r.returncode == 1 and r.stdout == b"" and r.stderr.count(b"\n") == 1
    assert b"cannot reach the server (Connection refused)" in r.stderr


def test_https_admin_with_cacert(world: vd.Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.test_vd_kbs import self_signed

    cert, key = self_signed(tmp_path)
    args = [sys.executable, "-m", "inclavare.cli.verdictd", "--state-dir", str(tmp_path / "state"), "--log-level",
            "warn", "--admin-listen", "127.0.0.1:0", "--kbs-cert", cert, "--kbs-key", key, "--admin-token-file",
            world.token_file]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=world.env)
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], vd.TIMEOUT)[0], "verdictd did not start"
        ready = json.loads(proc.stdout.readline())
        url = ready["admin"]
        assert url.startswith("https://")
        base = ("--kbs", url, "--token", vd.ADMIN, "--timeout", "20")
        assert verdict.main([*base, "--cacert", cert, "--set-reference-value", "mrsigner", "ab" * 32]) == 0
        assert verdict.main([*base, "--cacert", cert, "--get-reference-value", "mrsigner"]) == 0
        assert capsys.readouterr().out.endswith("ab" * 32 + "\n")
        assert verdict.main([*base, "--list-resources"]) == 1  # without the CA, the certificate does not verify
        assert "TLS: certificate verify failed" in capsys.readouterr().err
    finally:
        proc.terminate()
        assert proc.wait(timeout=vd.TIMEOUT) == 0
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize(("argv", "why"), [
    (("--list-resources",), "give --kbs URL"),
    (("--kbs", "http://127.0.0.1:1", "--list-resources"), "need the admin token"),
    (("--kbs", "http://10.1.2.3:1", "--token", vd.ADMIN, "--list-resources"), "only to a loopback host"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--set-resource", "owner/key", "/dev/null"),
     "--set-resource owner/key: resource path"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--set-resource", "a/b/c", "/nonexistent"),
     "No such file"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--set-reference-value", "mrenclave", "xyz"),
     "'xyz' is not a hex string"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--set-reference-value", "isvsvn", "1,aa"),
     "mix hex strings and ints"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--set-reference-value", "a/b", "aa"),
     "reference value name"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--set-reference-value", "m", "aa", "--expires",
      "2030-01-01T00:00:00"), "give a time zone"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--list-resources", "--provenance", "x"),
     "go with --set-reference-value"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--set-attestation-policy", "default", "/dev/null"),
     "named after the TEE"),
    (("--kbs", "http://127.0.0.1:1", "--token", vd.ADMIN, "--list-resources", "--delete-resource", "a/b/c"),
     "not 2"),
])
def test_usage_errors_send_nothing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                   argv: tuple[str, ...], why: str) -> None:
    for name in ("VERDICT_KBS", "VERDICT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    code = verdict.main(list(argv))  # port 1 on loopback: had anything been sent, the error would be exit 1
    _, err = capsys.readouterr()
    assert code == 2 and why in err and err.startswith("verdict: ") and err.count("\n") == 1, err


def test_json_values_list(daemon: vd.Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    answer = cli_json(capsys, daemon, "--set-reference-value", "isvprodid", "[1, 2, 2]")
    assert answer["values"] == [1, 2]
    assert cli_json(capsys, daemon, "--get-reference-value", "isvprodid")["values"] == [1, 2]
