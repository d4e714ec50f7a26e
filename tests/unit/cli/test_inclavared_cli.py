"""inclavared, inclavare-enclave-info and shelter remoteattestation/mrverify: flag errors are one line with the
program's name and the documented exit status, before anything is started or connected."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from inclavare.cli import enclave_info, inclavared, shelter


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv, needle", [
    ([], "nothing to do"),
    (["-l", "1.2.3.4"], "--listen '1.2.3.4'"),
    (["-l", "127.0.0.1:0", "-x", "nowhere"], "-x/--xfer 'nowhere'"),
    (["-c", "127.0.0.1:1", "-x", "127.0.0.1:2"], "goes with -l/--listen"),
    (["-l", "127.0.0.1:0", "-c", "127.0.0.1:1"], "not allowed with"),
    (["-l", "127.0.0.1:0", "--tls", "wolfssl"], "only TLS wrapper is openssl"),
    (["-l", "127.0.0.1:0", "--xfer-timeout", "0"], "--xfer-timeout"),
    (["-l", "127.0.0.1:0", "--bogus"], "unrecognized arguments"),
])
def test_inclavared_flag_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert inclavared.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("inclavared: ") and needle in err and err.count("\n") == 1, err


def test_inclavared_client_mode_names_the_unreachable_container(capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", str(tmp_path / "sim"))
    port = closed_port()
    assert inclavared.main(["-c", f"127.0.0.1:{port}", "--attester", "sim", "--trust-sim"]) == 1
    err = capsys.readouterr().err
    assert err == f"inclavared: confidential container tcp://127.0.0.1:{port}: cannot connect: Connection refused\n"


@pytest.mark.parametrize("argv, needle", [
    (["-l", "127.0.0.1:0", "--attester", "sgx_ecdsa"], "sim attester only"),
    (["-l", "127.0.0.1:0", "--mrenclave", "abc"], "--mrenclave 'abc': expected 64 hex digits"),
    (["-l", "127.0.0.1:0", "--image", "/nonexistent", "--mrenclave", "00" * 32], "do not go together"),
    (["-l", "127.0.0.1:0", "--image", "/nonexistent"], "/nonexistent"),
    (["-l", "127.0.0.1:0", "-n", "-1"], "-n -1"),
])
def test_enclave_info_flag_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert enclave_info.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("inclavare-enclave-info: ") and needle in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, needle", [
    (["--addr", "ftp://x"], "--addr 'ftp://x'"),
    (["--mrenclave", "xyz"], "is not a hex string"),
    (["--reference", "mrtd"], "expected NAME=HEX"),
    (["--verdictd-token-file", "/x"], "go with --verdictd"),
    (["--verdictd", "http://127.0.0.1:1"], "needs --verdictd-token-file"),
    (["--verdictd", "http://127.0.0.1:1", "--verdictd-token-file", "/nonexistent"], "/nonexistent"),
    (["--timeout", "-1"], "--timeout"),
])
def test_remoteattestation_flag_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert shelter.main(["remoteattestation", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shelter: ") and needle in err and err.count("\n") == 1, err


def test_remoteattestation_unreachable_is_a_failed_attestation(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    assert shelter.main(["remoteattestation", "--addr", f"tcp://127.0.0.1:{port}", "--verifier",
                         "nullverifier"]) == 1
    assert capsys.readouterr().err == (f"shelter: inclavared tcp://127.0.0.1:{port}: cannot connect: "
                                       f"Connection refused\n")


def test_mrverify_input_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert shelter.main(["mrverify", str(tmp_path / "none.img")]) == 2
    assert "No such file" in capsys.readouterr().err
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"x" * 100)
    assert shelter.main(["mrverify", str(junk)]) == 2
    assert "bad magic" in capsys.readouterr().err
