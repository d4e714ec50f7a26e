"""shelter's reference values (flags, verdictd's KBS admin endpoint) and their comparison, and mrverify."""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from inclavare.services.inclavared.protocol import EnclaveInfo
from inclavare.services.shelter import references as r
from inclavare.services.shelter.mrverify import MrverifyError, mrverify

MRE, MRS = "aa" * 32, "bb" * 32


def info(**kw: Any) -> EnclaveInfo:
    base: dict[str, Any] = {"mrenclave": MRE, "mrsigner": MRS, "attested": True, "tee": "sim",
                            "claims": {"mrenclave": MRE, "mrsigner": MRS, "isvsvn": 0}}
    base.update(kw)
    return EnclaveInfo(**base)


def test_flags_match_any_listed_value() -> None:
    refs = r.from_flags({"mrenclave": ["0x" + "CC" * 32, MRE.upper()], "mrsigner": [MRS]}, [])
    assert refs.values == {"mrenclave": ["cc" * 32, MRE], "mrsigner": [MRS]}
    assert r.compare(info(), refs) == []


def test_mismatch_names_the_field_both_values_and_the_source() -> None:
    problems = r.compare(info(), r.from_flags({"mrenclave": ["cc" * 32], "mrsigner": [MRS]}, []))
    assert problems == [f"MRENCLAVE mismatch: the enclave's is {MRE}, --mrenclave accepts {'cc' * 32}"]


def test_fails_closed() -> None:
    refs = r.from_flags({"mrenclave": [MRE]}, [])
    assert "not attested" in r.compare(info(attested=False), refs)[0]
    tdx = r.from_flags({}, ["mrtd=" + "ab" * 48])
    assert "has no mrtd claim" in r.compare(info(), tdx)[0]
    tdx_info = info(mrenclave="", mrsigner="", tee="tdx", claims={"mrtd": "ab" * 48, "rtmr0": "00" * 48})
    assert r.compare(tdx_info, tdx) == []
    assert "RTMR0 mismatch" in r.compare(tdx_info, r.from_flags({}, ["rtmr0=" + "11" * 48]))[0]


@pytest.mark.parametrize("named, generic, needle", [
    ({"mrenclave": ["xyz"]}, [], "--mrenclave mrenclave: 'xyz' is not a hex string"),
    ({"mrenclave": ["abc"]}, [], "not a hex string"),
    ({}, ["mrtd"], "expected NAME=HEX"),
    ({}, ["bad name=00"], "not a reference value name"),
])
def test_bad_flags(named: dict[str, list[str]], generic: list[str], needle: str) -> None:
    with pytest.raises(r.ReferenceError, match=needle):
        r.from_flags(named, generic)


class _Verdictd(BaseHTTPRequestHandler):
    values: dict[str, Any] = {}

    def do_GET(self) -> None:  # noqa: N802
        name = self.path.rsplit("/", 1)[1]
        if self.headers.get("Authorization") != "Bearer tok":
            self.send_response(401)
            self.end_headers()
            return
        if name not in self.values:
            body, status = b'{"type":"ReferenceValueNotFound"}', 404
        else:
            value = self.values[name]
            body, status = (value if isinstance(value, bytes) else json.dumps(value).encode()), 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def verdictd() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Verdictd)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_from_verdictd(verdictd: str) -> None:
    _Verdictd.values = {"mrenclave": [MRE.upper(), "cc" * 32]}
    refs = r.fetch_from_verdictd(verdictd, "tok", ("mrenclave",), ("mrsigner",))
    assert refs.values == {"mrenclave": [MRE, "cc" * 32]} and refs.sources["mrenclave"].startswith("verdictd http")
    assert r.compare(info(), refs) == []


@pytest.mark.parametrize("values, token, needle", [
    ({}, "tok", "HTTP 404"), ({"mrenclave": [MRE]}, "wrong", "HTTP 401"), ({"mrenclave": []}, "tok", "non-empty"),
    ({"mrenclave": [3]}, "tok", "not a hex string"), ({"mrenclave": b"<html>"}, "tok", "not JSON"),
])
def test_fetch_fails_closed(verdictd: str, values: dict[str, Any], token: str, needle: str) -> None:
    _Verdictd.values = values
    with pytest.raises(r.ReferenceError, match=needle):
        r.fetch_from_verdictd(verdictd, token, ("mrenclave",))


def test_fetch_unreachable_and_bad_url() -> None:
    with pytest.raises(r.ReferenceError, match="verdictd http://127.0.0.1:9: reference value 'mrenclave'"):
        r.fetch_from_verdictd("http://127.0.0.1:9", "tok", ("mrenclave",), timeout=5)
    with pytest.raises(r.ReferenceError, match="expected http"):
        r.fetch_from_verdictd("ftp://x", "tok", ("mrenclave",))


def _image() -> bytes:
    from inclavare.enclave import image
    from tests.unit.sgx_helpers import rsa3072_e3_key

    payload = b"\0asm\x01\0\0\0" + bytes(range(256)) * 4
    return image.sign(image.build(payload, "wasm", date=datetime.date(2026, 1, 1)), rsa3072_e3_key(0))


def test_mrverify() -> None:
    from inclavare.enclave.image import measure
    from inclavare.formats.sgx import SIGSTRUCT_SIZE

    signed = _image()
    ok = mrverify(signed, "img")
    assert ok.match and ok.computed == measure(signed).hex() == ok.enclavehash and ok.signature_valid
    tampered = bytearray(signed)
    tampered[200] ^= 1  # in the payload: the measurement changes, the SIGSTRUCT does not
    bad = mrverify(bytes(tampered), "img")
    assert not bad.match and bad.signature_valid and bad.computed != bad.enclavehash
    sig = bytearray(signed[-SIGSTRUCT_SIZE:])
    sig[-1] ^= 1  # in Q2: the signature check fails
    forged = mrverify(signed, "img", bytes(sig), "--sigstruct ss")
    assert not forged.match and not forged.signature_valid and forged.signature_error
    with pytest.raises(MrverifyError, match="img: .*bad magic"):
        mrverify(b"not an image" * 10, "img")
    with pytest.raises(MrverifyError, match="--sigstruct ss: 3 bytes"):
        mrverify(signed, "img", b"abc", "--sigstruct ss")
