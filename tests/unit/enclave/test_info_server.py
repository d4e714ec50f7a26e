"""The sim enclave runtime's RATS-TLS server for inclavared (enclave.info_server), driven in-process through the
runtime's own PAL calls (load, init, destroy) on a host path: the evidence is the loaded image's quote, the answer
its identity, the client's evidence is required with ENCLAVE_INFO_MUTUAL=1, and the socket goes with the enclave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inclavare.enclave import image
from inclavare.enclave.api import PalError
from inclavare.enclave.info_server import HELLO, InfoServerError, settings
from inclavare.enclave.runtimes.sim import SimRuntime
from inclavare.formats.enclave_info import decode_identity_answer
from inclavare.services.inclavared.protocol import GREETING, InclavaredError, parse_address
from inclavare.services.inclavared.transport import round_trip
from tests.unit.sgx_helpers import rsa3072_e3_key

WASM = b"\0asm\x01\0\0\0"


def signed(payload: bytes = b"\x7fELF sample") -> bytes:
    return image.sign(image.build(payload, "native", image.EnclaveSettings()), rsa3072_e3_key(0))


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "sim"
    monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", str(d))
    return d


def spec(*env: str) -> dict[str, Any]:
    return {"process": {"env": ["PATH=/bin", *env], "user": {"uid": 0, "gid": 0}}}


def client(attester: str = "sim") -> Any:
    from inclavare.ratls.tls import RatsTlsConfig

    return RatsTlsConfig(attester=attester, verifier="sim", mutual=True, trust_sim=True)


@pytest.fixture
def running(sim: Path, tmp_path: Path) -> Any:
    img = tmp_path / "enclave.img"
    img.write_bytes(signed())
    sock = tmp_path / "info.sock"
    rt = SimRuntime()
    rt.load(spec(f"ENCLAVE_INFO_LISTEN=unix://{sock}", "ENCLAVE_INFO_MUTUAL=1"))
    rt.init(f"image={img}", "info")
    try:
        yield rt, sock, image.load(img)
    finally:
        rt.destroy()


def test_the_answer_and_the_evidence_are_the_loaded_images(running: Any) -> None:
    rt, sock, img = running
    answer, peer = round_trip(client(), parse_address(f"unix://{sock}", "x"), GREETING, 30.0, "container")
    got = decode_identity_answer(answer, "x")
    assert (got.mrenclave, got.mrsigner, got.message) == (img.mrenclave, img.mrsigner, HELLO)
    assert peer is not None and peer.claims["mrenclave"] == img.mrenclave.hex()
    assert peer.claims["mrsigner"] == img.mrsigner.hex()
    rt.destroy()
    assert not sock.exists()  # the socket goes with the enclave
    with pytest.raises(InclavaredError, match="cannot connect"):
        round_trip(client(), parse_address(f"unix://{sock}", "x"), GREETING, 30.0, "container")


def test_mutual_refuses_a_client_without_evidence(running: Any) -> None:
    _, sock, _ = running
    with pytest.raises(InclavaredError, match="container unix://"):
        round_trip(client("nullattester"), parse_address(f"unix://{sock}", "x"), GREETING, 30.0, "container")


def test_a_busy_address_fails_pal_init(sim: Path, tmp_path: Path) -> None:
    img = tmp_path / "enclave.img"
    img.write_bytes(signed())
    (tmp_path / "file").write_text("not a socket")
    rt = SimRuntime()
    rt.load(spec(f"ENCLAVE_INFO_LISTEN=unix://{tmp_path / 'file'}"))
    with pytest.raises(PalError, match="exists and is not a socket"):
        rt.init(f"image={img}", "info")
    assert (tmp_path / "file").read_text() == "not a socket"


@pytest.mark.parametrize(("env", "problem"), [
    ({"ENCLAVE_INFO_LISTEN": "unix://relative"}, "expected unix:///PATH"),
    ({"ENCLAVE_INFO_LISTEN": "127.0.0.1"}, "expected unix:///PATH or tcp://HOST:PORT"),
    ({"ENCLAVE_INFO_LISTEN": "tcp://h:99999"}, "expected unix:///PATH or tcp://HOST:PORT"),
    ({"ENCLAVE_INFO_LISTEN": "/x", "ENCLAVE_INFO_MUTUAL": "yes"}, "ENCLAVE_INFO_MUTUAL='yes'"),
    ({"ENCLAVE_INFO_MUTUAL": "1"}, "ENCLAVE_INFO_LISTEN is not"),
    ({"ENCLAVE_INFO_LISTEN": "unix:///x", "ENCLAVE_INFO_MESSAGE": "a\x1bb"}, "control characters"),
])
def test_bad_settings_are_refused_naming_the_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(InfoServerError, match=problem.replace("(", r"\(").replace("[", r"\[")):
        settings(env)


def test_settings() -> None:
    assert settings({}) is None
    s = settings({"ENCLAVE_INFO_LISTEN": "tcp://[::1]:1234", "ENCLAVE_INFO_MESSAGE": "hi\n"})
    assert s is not None and (s.host, s.port, s.unix, s.mutual, s.message) == ("::1", 1234, "", False, "hi\n")
    s = settings({"ENCLAVE_INFO_LISTEN": "unix:///run/c.sock", "ENCLAVE_INFO_MUTUAL": "1"})
    assert s is not None and (s.unix, s.mutual) == ("/run/c.sock", True)
