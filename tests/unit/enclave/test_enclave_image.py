"""enclave/image.py: build, client/server signing, load, the documented layout, and refusal of bad images."""

from __future__ import annotations

import datetime
import hashlib
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from inclavare.enclave import image
from inclavare.enclave.image import EnclaveImageError, EnclaveSettings
from inclavare.formats.sgx import AttributeFlags, Attributes, SigStruct
from inclavare.formats.sgxs import read_sgxs
from inclavare.sgx import signing
from tests.unit.sgx_helpers import flip, public_pem, rsa3072_e3_key, rsa3072_e3_pem

WASM = b"\0asm\x01\0\0\0" + bytes(range(256)) * 20  # 5128 bytes: two pages, the second partial
DAY = datetime.date(2026, 11, 22)
SETTINGS = EnclaveSettings(isvprodid=7, isvsvn=3, heap_size=8 * 4096, stack_size=4 * 4096, tcs_count=2)
HDR = image.HEADER_SIZE + image.SETTINGS_SIZE  # payload starts here


@pytest.fixture(scope="module")
def key() -> Any:
    return rsa3072_e3_key(0)  # a key object: image.sign and signing.* accept PEM or a loaded key


@pytest.fixture(scope="module")
def signed(key: Any) -> bytes:
    return image.sign(image.build(WASM, "wasm", SETTINGS, date=DAY), key)


def test_round_trip(key: Any, signed: bytes, tmp_path: Path) -> None:
    unsigned = image.build(WASM, "wasm", SETTINGS, date=DAY)
    assert image.sign(unsigned, rsa3072_e3_pem(0)) == signed  # PEM and key object sign alike
    path = tmp_path / "enclave.img"
    path.write_bytes(signed)
    img = image.load(path)
    assert img.payload == WASM and img.kind == "wasm" and img.settings == SETTINGS
    assert img.mrenclave == unsigned.mrenclave == img.sigstruct.enclavehash
    n = key.public_key().public_numbers().n
    assert img.mrsigner == hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert img.attributes == Attributes(int(AttributeFlags.MODE64BIT), 0x3)
    assert (img.sigstruct.isvprodid, img.sigstruct.isvsvn, img.sigstruct.date) == (7, 3, 0x20261122)
    assert not img.sigstruct.debug_signed
    assert image.load(signed) == img  # bytes or path
    assert len(signed) == HDR + len(WASM) + 1808 and signed[:8] == b"INCLENCL"


def test_measurement_is_deterministic_and_covers_every_setting() -> None:
    base = image.build(WASM, "wasm", SETTINGS, date=DAY).mrenclave
    assert image.build(WASM, "wasm", SETTINGS, date=datetime.date(2020, 1, 1)).mrenclave == base
    variants = [
        image.build(WASM + b"\0", "wasm", SETTINGS),
        image.build(WASM, "native", SETTINGS),
        *(image.build(WASM, "wasm", replace(SETTINGS, **{k: v})) for k, v in (
            ("isvsvn", 4), ("isvprodid", 8), ("debug", True), ("heap_size", 9 * 4096), ("heap_size", 0),
            ("stack_size", 8 * 4096), ("tcs_count", 1), ("isvfamilyid", b"f" * 16), ("isvextprodid", b"e" * 16))),
    ]
    digests = {v.mrenclave for v in variants}
    assert base not in digests and len(digests) == len(variants)


def test_layout_matches_the_documentation(signed: bytes) -> None:
    log = image.measurement_log(signed)
    assert hashlib.sha256(log).digest() == image.measure(signed) == image.load(signed).mrenclave
    stream = read_sgxs(log)
    pages = {p.offset: p for p in stream.pages}
    # settings page: file bytes 0..15, then the 128-byte settings block; read-only, measured
    settings_page = pages[0]
    assert settings_page.secinfo_flags == 0x201 and settings_page.fully_measured
    assert settings_page.data[:16 + 128] == signed[:16] + signed[32:160] and not any(settings_page.data[144:])
    # two TCS pages, four SSA pages, a guard, the payload (two read-only pages), a guard, heap, guard+stack x2
    assert [pages[o].secinfo_flags for o in (0x1000, 0x2000)] == [0x100, 0x100]
    assert all(pages[o].secinfo_flags == 0x203 for o in range(0x3000, 0x7000, 0x1000))
    assert 0x7000 not in pages
    assert pages[0x8000].data + pages[0x9000].data[:5128 - 4096] == WASM
    assert pages[0x8000].secinfo_flags == pages[0x9000].secinfo_flags == 0x201
    assert not any(pages[0x9000].data[5128 - 4096:])
    assert 0xA000 not in pages
    heap = [pages[o] for o in range(0xB000, 0x13000, 0x1000)]
    assert all(p.secinfo_flags == 0x203 and p.measured == 0 for p in heap)  # EADD only
    stack0 = range(0x14000, 0x18000, 0x1000)
    stack1 = range(0x19000, 0x1D000, 0x1000)
    assert 0x13000 not in pages and 0x18000 not in pages
    assert all(pages[o].fully_measured and not any(pages[o].data) for o in [*stack0, *stack1])
    assert len(pages) == 1 + 2 + 4 + 2 + 8 + 8
    assert (stream.ssaframesize, stream.size) == (1, 0x20000)
    # TCS t: OSSA at its two SSA frames, NSSA 2, OENTRY the payload, FS/GS base the top of its stack
    for t, tcs_off in enumerate((0x1000, 0x2000)):
        fields = struct.unpack_from("<QQQIIQQQQII", pages[tcs_off].data)
        top = (0x18000, 0x1D000)[t]
        assert fields == (0, 0, 0x3000 + t * 0x2000, 0, 2, 0x8000, 0, top, top, 0xFFFFFFFF, 0xFFFFFFFF)
    assert image.load(signed).layout.region("payload").offset == 0x8000


def test_native_payload_pages_are_executable(key: Any) -> None:
    blob = b"\x7fELF" + bytes(100)
    img = image.load(image.sign(image.build(blob, "native", EnclaveSettings(heap_size=0)), key))
    stream = read_sgxs(image.measurement_log(image.sign(image.build(blob, "native", EnclaveSettings(heap_size=0)),
                                                        key)))
    payload = [p for p in stream.pages if p.offset == img.layout.region("payload").offset]
    assert payload[0].secinfo_flags == 0x205 and img.kind == "native"


def test_a_signature_above_the_other_keys_modulus_is_refused_cleanly(key: Any) -> None:
    """A remote signature made by another key may be numerically above this key's modulus (Q1 would not fit in
    384 bytes): refused as a mismatch, never an arithmetic error. All-ones is above every 3072-bit modulus."""
    unsigned = image.build(WASM, "wasm", SETTINGS, date=DAY)
    with pytest.raises(EnclaveImageError, match="signing: remote signature does not match.*not below the modulus"):
        image.assemble(unsigned, b"\xff" * 384, public_pem(key))
    with pytest.raises(signing.SigningError, match="not below the modulus"):
        signing.compute_q1_q2(b"\xff" * 384, b"\x01" + b"\x00" * 382 + b"\x80")


def test_server_side_signing_gives_the_same_image(key: Any, signed: bytes) -> None:
    unsigned = image.build(WASM, "wasm", SETTINGS, date=DAY)
    material = unsigned.signing_material()
    assert len(material) == 256
    remote = signing.sign_material(material, key)  # what the signature server returns
    assert image.assemble(unsigned, remote, public_pem(key)) == signed
    with pytest.raises(EnclaveImageError, match="signing: remote signature does not match"):
        image.assemble(unsigned, remote, public_pem(rsa3072_e3_key(1)))
    with pytest.raises(EnclaveImageError, match="signature is 383 bytes"):
        image.assemble(unsigned, remote[1:], public_pem(key))


def test_debug_image(key: Any) -> None:
    img = image.load(image.sign(image.build(WASM, "wasm", replace(SETTINGS, debug=True)), key))
    assert img.attributes.debug and img.sigstruct.debug_signed and img.settings.debug
    with pytest.raises(EnclaveImageError, match="debug enclave images are not allowed"):
        image.load(image.sign(image.build(WASM, "wasm", replace(SETTINGS, debug=True)), key), allow_debug=False)


def test_expected_mrsigner(key: Any, signed: bytes) -> None:
    img = image.load(signed, expected_mrsigner=image.load(signed).mrsigner)
    assert img.payload == WASM
    with pytest.raises(EnclaveImageError, match="signed by MRSIGNER [0-9a-f]{64}, expected 0{64}"):
        image.load(signed, expected_mrsigner=bytes(32))


SIG = HDR + len(WASM)  # SIGSTRUCT offset in the signed image


@pytest.mark.parametrize(("offset", "needle"), [
    (HDR + 3000, "MRENCLAVE mismatch: the image measures"),  # payload
    (HDR + len(WASM) - 1, "MRENCLAVE mismatch"),  # last payload byte
    (32 + 4, "MRENCLAVE mismatch"),  # settings: ISVSVN
    (32 + 18, "MRENCLAVE mismatch"),  # settings: heap size (+64 KiB)
    (32 + 1, "settings: unknown flags 0x2"),  # settings: flags byte, bit 1
    (32 + 100, "settings: reserved bytes are not zero"),
    (SIG + 1026, "RSA signature does not verify"),  # SIGSTRUCT.ISVSVN
    (SIG + 960, "RSA signature does not verify"),  # SIGSTRUCT.ENCLAVEHASH
    (SIG + 930, "RSA signature does not verify"),  # SIGSTRUCT.ATTRIBUTES
    (SIG + 700, "RSA signature does not verify"),  # the signature
    (SIG + 300, "RSA signature does not verify"),  # the modulus
    (SIG + 1200, "Q1 does not match"),
    (SIG + 1600, "Q2 does not match"),
    (SIG + 1000, "SIGSTRUCT: reserved bytes 992..1007"),
    (SIG + 2, "SIGSTRUCT: HEADER"),
    (0, "not an enclave image"),
    (8, "format version 0"),
    (16, "truncated"),  # payload size in the header
])
def test_tampered_images_are_refused(signed: bytes, offset: int, needle: str) -> None:
    bit = 0x02 if offset == 32 + 1 else 0x01
    with pytest.raises(EnclaveImageError) as e:
        image.load(flip(signed, offset, bit))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith("enclave image: ")


def test_truncated_unsigned_and_trailing(signed: bytes) -> None:
    for data, needle in ((signed[:-1], "truncated: "), (signed[:100], "truncated: 100 bytes"),
                         (signed + b"\0", "1 bytes of trailing data"), (b"", "bad magic")):
        with pytest.raises(EnclaveImageError, match=needle):
            image.load(data)
    unsigned = image.build(WASM, "wasm", SETTINGS).to_bytes()
    with pytest.raises(EnclaveImageError, match="the image is not signed"):
        image.load(unsigned)
    assert image.measure(unsigned) == image.build(WASM, "wasm", SETTINGS).mrenclave
    with pytest.raises(EnclaveImageError, match=r"enclave image /nonexistent/x\.img: No such file"):
        image.load("/nonexistent/x.img")


def resigned(key: Any, change: dict[str, object], settings: EnclaveSettings = SETTINGS) -> bytes:
    """A correctly signed image whose SIGSTRUCT disagrees with its settings in ``change``."""
    unsigned = image.build(WASM, "wasm", settings)
    sig = signing.sign(replace(unsigned.sigstruct, **change), key)  # type: ignore[arg-type]
    return unsigned.to_bytes(sig)


@pytest.mark.parametrize(("change", "needle"), [
    ({"isvsvn": 4}, "SIGSTRUCT.ISVSVN 4 differs from the settings' 3"),
    ({"isvprodid": 1}, "SIGSTRUCT.ISVPRODID 1 differs"),
    ({"isvfamilyid": b"x" * 16}, "SIGSTRUCT.ISVFAMILYID"),
    ({"attributes": Attributes(0x6, 3)}, "do not match the enclave's"),
    ({"attributes": Attributes(0x5, 3)}, "sets INIT"),
    ({"attributes": Attributes(0x0, 3)}, "lacks MODE64BIT"),
    ({"attributes": Attributes(0x4, 0xB)}, "do not match"),  # MPX is pinned by the XFRM mask
    ({"attribute_mask": Attributes(0xFFFFFFFFFFFFFFFD, 0xFF)}, "does not pin DEBUG"),
    ({"header_type": 0x80000000}, "debug flag mismatch: settings say debug=False"),
    ({"miscselect": 1}, "MISCSELECT 0x1 under MISCMASK"),
    ({"enclavehash": bytes(32)}, "MRENCLAVE mismatch"),
])
def test_signed_but_inconsistent_images_are_refused(key: Any, change: dict[str, object], needle: str) -> None:
    with pytest.raises(EnclaveImageError, match=needle):
        image.load(resigned(key, change))


def test_avx_is_allowed_by_the_xfrm_mask(key: Any) -> None:
    # XFRM bit 2 (AVX) is outside our XFRM mask: a platform may enable it without breaking the signature
    img = image.load(resigned(key, {"attributes": Attributes(0x4, 0x7)} | {"attribute_mask": Attributes(
        0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFF1B)}))
    assert img.attributes.xfrm == 0x7


def test_debug_settings_need_debug_signature(key: Any) -> None:
    dbg = replace(SETTINGS, debug=True)
    with pytest.raises(EnclaveImageError, match="debug flag mismatch: settings say debug=True"):
        image.load(resigned(key, {"header_type": 0}, dbg))


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"heap_size": 4097}, "settings.heap_size: 4097 is not a multiple of 4096"),
    ({"stack_size": 0}, "settings.stack_size: must be at least 4096"),
    ({"tcs_count": 0}, "settings.tcs_count: an enclave needs at least one TCS"),
    ({"tcs_count": 257}, "settings.tcs_count: 257 is not an integer in 0..256"),
    ({"isvsvn": -1}, "settings.isvsvn"),
    ({"isvfamilyid": b"x"}, "settings.isvfamilyid: must be 16 bytes"),
    ({"debug": 1}, "settings.debug"),
])
def test_bad_settings(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(EnclaveImageError, match=needle):
        EnclaveSettings(**kwargs)  # type: ignore[arg-type]


def test_bad_payloads() -> None:
    with pytest.raises(EnclaveImageError, match="kind: 'elf' is not one of native, wasm"):
        image.build(WASM, "elf")
    with pytest.raises(EnclaveImageError, match="payload: is empty"):
        image.build(b"", "native")
    with pytest.raises(EnclaveImageError, match="not a WebAssembly binary"):
        image.build(b"\x7fELF", "wasm")


def test_signing_key_must_be_sgx_shaped() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(EnclaveImageError, match="signing: signing key: RSA key is 2048 bits, SGX needs 3072"):
        image.sign(image.build(WASM, "wasm"), pem)
    with pytest.raises(EnclaveImageError, match="not a readable PEM private key"):
        image.sign(image.build(WASM, "wasm"), b"garbage")


def test_sigstruct_survives_parse(signed: bytes) -> None:
    raw = signed[-1808:]
    assert SigStruct.parse(raw).pack() == raw
    assert signing.verify(raw).enclavehash == image.measure(signed)
