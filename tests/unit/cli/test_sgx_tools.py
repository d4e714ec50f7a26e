"""cli/sgx_tools.py: sigstruct show/verify, measure, sign; errors are one `sgx-tools: ...` line and exit 1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from inclavare.cli.sgx_tools import main
from inclavare.enclave import image
from inclavare.formats.sgx import Attributes
from inclavare.formats.sgxs import Measurement
from inclavare.sgx import signing
from tests.unit.sgx_helpers import flip, rsa3072_e3_key, rsa3072_e3_pem

WASM = b"\0asm\x01\0\0\0" + b"\x01" * 5000


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sgxtools")
    pem = d / "key.pem"
    pem.write_bytes(rsa3072_e3_pem(0))
    payload = d / "app.wasm"
    payload.write_bytes(WASM)
    template = signing.build_sigstruct(b"\x11" * 32, attributes=Attributes(0x6, 0x3),
                                       attribute_mask=Attributes(0xFFFFFFFFFFFFFFFF, 0xFF), isvprodid=12, isvsvn=34,
                                       miscmask=0xFFFFFFFF, debug=True, vendor=0x8086)
    ss = d / "enclave.ss"
    ss.write_bytes(signing.sign(template, rsa3072_e3_key(0)).pack())
    m = Measurement(keep_log=True)
    m.ecreate(1, 0x2000)
    m.add_page(0, b"hello", 0x201)
    sgxs = d / "tiny.sgxs"
    sgxs.write_bytes(m.log())
    return {"pem": pem, "payload": payload, "ss": ss, "sgxs": sgxs, "dir": d}


def test_show_json(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    code, out, _ = run(capsys, "sigstruct", "show", str(files["ss"]), "--json")
    assert code == 0
    info = json.loads(out)
    n = rsa3072_e3_key(0).public_key().public_numbers().n
    assert info["mrenclave"] == "11" * 32
    assert info["mrsigner"] == hashlib.sha256(n.to_bytes(384, "little")).hexdigest()
    assert (info["isvprodid"], info["isvsvn"], info["debug_signed"], info["vendor"]) == (12, 34, True, "0x8086")
    assert info["attributes"]["names"] == ["DEBUG", "MODE64BIT"] and info["miscselect"] == "0x00000000"
    assert info["date_encoding"] == "bcd" and len(info["date"]) == 10


def test_show_text(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    code, out, _ = run(capsys, "sigstruct", "show", str(files["ss"]))
    assert code == 0 and "isvsvn: 34" in out and "debug_signed: True" in out and f"mrenclave: {'11' * 32}" in out


def test_verify(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "sigstruct", "verify", str(files["ss"]))
    assert code == 0 and "OK" in out
    bad = tmp_path / "bad.ss"
    bad.write_bytes(flip(files["ss"].read_bytes(), 1026))
    code, out, err = run(capsys, "sigstruct", "verify", str(bad))
    assert code == 1 and out == ""
    assert err == "sgx-tools: SIGSTRUCT: RSA signature does not verify over HEADER and BODY\n"


def test_measure_sgxs(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    code, out, _ = run(capsys, "measure", str(files["sgxs"]))
    assert code == 0 and out.strip() == hashlib.sha256(files["sgxs"].read_bytes()).hexdigest()


def test_sign_then_measure_verify_show(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    out_img = files["dir"] / "app.img"
    code, out, err = run(capsys, "sign", "--key", str(files["pem"]), "--payload", str(files["payload"]), "--kind",
                         "wasm", "--isvprodid", "3", "--isvsvn", "0x10", "--debug", "--heap-size", "65536",
                         "--out", str(out_img))
    assert code == 0, err
    img = image.load(out_img)
    assert (img.settings.isvprodid, img.settings.isvsvn, img.settings.debug, img.settings.heap_size) == (3, 16, True,
                                                                                                         65536)
    assert img.payload == WASM and img.mrenclave.hex() in out
    code, out, _ = run(capsys, "measure", str(out_img))
    assert code == 0 and out.strip() == img.mrenclave.hex()
    code, out, _ = run(capsys, "sigstruct", "verify", str(out_img))
    assert code == 0 and img.mrsigner.hex() in out
    code, out, _ = run(capsys, "sigstruct", "show", "--json", str(out_img))
    assert json.loads(out)["mrenclave"] == img.mrenclave.hex()
    tampered = files["dir"] / "tampered.img"
    tampered.write_bytes(flip(out_img.read_bytes(), 2000))
    code, _, err = run(capsys, "sigstruct", "verify", str(tampered))
    assert code == 1 and err.startswith(f"sgx-tools: enclave image {tampered}: MRENCLAVE mismatch")


@pytest.mark.parametrize(("argv", "needle"), [
    (["measure", "/nonexistent"], "sgx-tools: /nonexistent: No such file or directory"),
    (["sigstruct", "show", "PAYLOAD"], "neither a SIGSTRUCT (1808) nor an enclave image"),
    (["measure", "PAYLOAD"], "neither an SGXS measurement stream nor an enclave image"),
    (["sign", "--key", "PAYLOAD", "--payload", "PAYLOAD", "--kind", "wasm", "--out", "OUT"],
     "not a readable PEM private key"),
    (["sign", "--key", "PEM", "--payload", "PAYLOAD", "--kind", "wasm", "--heap-size", "100", "--out", "OUT"],
     "settings.heap_size: 100 is not a multiple of 4096"),
    (["sign", "--key", "PEM", "--payload", "PEM", "--kind", "wasm", "--out", "OUT"], "not a WebAssembly binary"),
    (["sign", "--key", "PEM", "--payload", "PAYLOAD", "--kind", "elf", "--out", "OUT"], "invalid choice: 'elf'"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], files: dict[str, Path], argv: list[str],
                             needle: str) -> None:
    subst = {"PAYLOAD": str(files["payload"]), "PEM": str(files["pem"]), "OUT": str(files["dir"] / "never.img")}
    code, out, err = run(capsys, *[subst.get(a, a) for a in argv])
    assert code == 1 and out == ""
    assert err.startswith("sgx-tools: ") and err.count("\n") == 1 and needle in err
    assert not (files["dir"] / "never.img").exists()
