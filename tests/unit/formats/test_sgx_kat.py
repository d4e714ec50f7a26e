"""Known answers (../shared/vectors/sgx-kat, see its KAT.md): MRENCLAVE, SIGSTRUCT parse/verify/regeneration,
RSA/q1/q2 vectors, REPORT bodies from a real quote. Skipped with the reason when the vectors are absent."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

import pytest

from inclavare.formats.sgx import Attributes, ReportBody, SigStruct, mrsigner_of
from inclavare.formats.sgxs import Measurement, read_sgxs, write_sgxs
from inclavare.sgx import signing
from tests.unit.sgx_helpers import flip, kat_dir, public_pem


def kat(rel: str) -> bytes:
    path: Path = kat_dir() / rel
    return path.read_bytes()


# Values listed in KAT.md ("Confirmed").
SIGSTRUCTS: dict[str, dict[str, Any]] = {
    "enarx-sgx/encl.ss": dict(
        enclavehash="b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0",
        mrsigner="2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4",
        vendor=0, date=0, swdefined=0, miscselect=0, miscmask=0, attributes=(0x4, 0x3), attribute_mask=(0, 0),
        isvprodid=0, isvsvn=0, material_sha256="58ef2b4fe0ba7861c3a466fcd016498245640165f7e225381425500e3dfd46f3"),
    "fortanix-rust-sgx/test_enclave.sig": dict(
        enclavehash="784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc",
        mrsigner="fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542",
        vendor=0, date=0x20161214, swdefined=0, miscselect=0, miscmask=0xFFFFFFFF, attributes=(0x4, 0x3),
        attribute_mask=(0xFFFFFFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B), isvprodid=0xFFFF, isvsvn=0,
        material_sha256="4a106038882a9de40d1d1bcbaadc7973ce0fe41185f340a989ce3bf1afb65b6f"),
    "intel-pce/pce-2.25.100.1.sigstruct.bin": dict(
        enclavehash="03e3f07e8c11cc08a1fa2afa93a8f2699cc8d9e17efa890af5df4e3cf7696578",
        mrsigner="c54a62f2be9ef76efb1f3930ad81ea7f60defc1f5f25e09b7c067a815ae0c6cb",
        vendor=0x8086, date=0x20240811, swdefined=0, miscselect=0, miscmask=0xFFFFFFFF, attributes=(0x14, 0x3),
        attribute_mask=(0xFF00FFFFFFFFFFFF, 0xFFFFFFFFFFFFFF1B), isvprodid=1, isvsvn=16),
    "intel-linux-sgx/le_prod_css.2018-01-22.bin": dict(
        enclavehash="8b659cf36fbd3b8a9077fefd64bfddf61ba391101db525bd1159ab5324c3dc9c",
        mrsigner="acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4",
        vendor=0x8086, date=0x20180122, swdefined=0x10, miscmask=0xFFFFFFFF, attributes=(0x24, 0x3),
        attribute_mask=(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFB), isvprodid=32, isvsvn=1),
    "intel-linux-sgx/le_prod_css.2024-08-11.bin": dict(
        enclavehash="7881af9f9def547da9908c008f29cde9bd78064e36ac7e14c83c294ca4806150",
        mrsigner="acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4",
        date=0x20240811, swdefined=0x10, attributes=(0x24, 0x3),
        attribute_mask=(0xFF00FFFFFFFFFFFF, 0xFFFFFFFFFFFFFF1B), isvprodid=32, isvsvn=7),
    "inclavare/hello-world.sig": dict(
        enclavehash="7470ffc919e823e0f6a9592e05fe523b228b491865aadf0cfe7ce5ddd31412b5",
        mrsigner="5bde1ae94215c4ad6c6c4430ba880fd841b2184637ac907a44b832b1b226bbd4",
        date=0x070A07E3, miscselect=0, miscmask=0, attributes=(0x6, 0x3), attribute_mask=(0x6, 0x3),
        isvprodid=0, isvsvn=0),
}


@pytest.mark.parametrize("name", sorted(SIGSTRUCTS))
def test_sigstruct_vectors_parse_verify_and_show_the_listed_values(name: str) -> None:
    raw = kat(name)
    sig = SigStruct.parse(raw)
    assert sig.pack() == raw  # byte-exact round trip
    assert signing.verify(raw) == sig
    want = SIGSTRUCTS[name]
    assert sig.enclavehash.hex() == want["enclavehash"]
    assert sig.mrsigner.hex() == want["mrsigner"]
    assert sig.exponent == 3 and not sig.debug_signed
    for key in ("vendor", "date", "swdefined", "miscselect", "miscmask", "isvprodid", "isvsvn"):
        if key in want:
            assert getattr(sig, key) == want[key], key
    assert sig.attributes == Attributes(*want["attributes"])
    if "attribute_mask" in want:
        assert sig.attribute_mask == Attributes(*want["attribute_mask"])
    if "material_sha256" in want:
        assert hashlib.sha256(sig.signing_material()).hexdigest() == want["material_sha256"]
    assert not any(sig.isvfamilyid) and not any(sig.isvextprodid)


@pytest.mark.parametrize(("offset", "needle"), [(960, "RSA signature"), (1026, "RSA signature"), (20, "RSA signature"),
                                                (600, "RSA signature"), (1100, "Q1"), (1500, "Q2")])
@pytest.mark.parametrize("name", ["enarx-sgx/encl.ss", "intel-pce/pce-2.25.100.1.sigstruct.bin"])
def test_tampered_sigstruct_vectors_do_not_verify(name: str, offset: int, needle: str) -> None:
    with pytest.raises(signing.SigstructVerifyError, match=needle):
        signing.verify(flip(kat(name), offset))


def test_hello_world_non_bcd_date_is_decoded() -> None:
    sig = SigStruct.parse(kat("inclavare/hello-world.sig"))
    assert sig.decoded_date() == (datetime.date(2019, 10, 7), "binary")
    assert SigStruct.parse(kat("fortanix-rust-sgx/test_enclave.sig")).decoded_date() == (
        datetime.date(2016, 12, 14), "bcd")


def test_enarx_mrenclave_from_pages() -> None:
    image = kat("enarx-sgx/encl.bin")
    assert len(image) == 6 * 4096
    m = Measurement()
    m.ecreate(1, 0x8000)
    m.add_page(0, image[:4096], 0x100)
    for off in range(0x1000, 0x6000, 0x1000):
        m.add_page(off, image[off:off + 4096], 0x207)
    assert m.hexdigest() == "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0"
    assert m.digest() == SigStruct.parse(kat("enarx-sgx/encl.ss")).enclavehash


def test_enarx_sigstruct_regenerated_byte_for_byte() -> None:
    pem = kat("enarx-sgx/encl.pem")
    template = signing.build_sigstruct(
        bytes.fromhex("b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0"),
        attributes=Attributes(0x4, 0x3), attribute_mask=Attributes(0, 0), date=0)
    assert signing.sign(template, pem).pack() == kat("enarx-sgx/encl.ss")
    # the server-side path gives the same bytes
    remote_sig = signing.sign_material(template.signing_material(), pem)
    assert signing.assemble(template.signing_material(), remote_sig, public_pem(pem)).pack() == kat("enarx-sgx/encl.ss")


def test_assemble_refuses_a_signature_for_other_material() -> None:
    pem = kat("enarx-sgx/encl.pem")
    template = signing.build_sigstruct(bytes(32), attributes=Attributes(4, 3), attribute_mask=Attributes(), date=0)
    other = signing.build_sigstruct(bytes(32), attributes=Attributes(4, 3), attribute_mask=Attributes(), date=0,
                                    isvsvn=1)
    wrong = signing.sign_material(other.signing_material(), pem)
    with pytest.raises(signing.SigningError, match="does not match"):
        signing.assemble(template.signing_material(), wrong, public_pem(pem))


@pytest.mark.parametrize(("name", "mrenclave", "size", "pages"), [
    ("fortanix-rust-sgx/test_enclave.sgxs", "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc",
     0x40000, [(0x0, 0x201), (0x1000, 0x205), (0x2000, 0x203), (0x4000, 0x201), (0x15000, 0x100), (0x16000, 0x203),
               (0x27000, 0x203), (0x28000, 0x203), (0x39000, 0x203)]),
    ("fortanix-rust-sgx/report.sgxs", "a06a560b26f5e397b2d7872fac66fe4b43bf4f507296ee048f110be6fb1a2290",
     0x4000, [(0x0, 0x205), (0x1000, 0x100), (0x2000, 0x203)]),
])
def test_sgxs_streams(name: str, mrenclave: str, size: int, pages: list[tuple[int, int]]) -> None:
    data = kat(name)
    stream = read_sgxs(data)
    assert hashlib.sha256(data).hexdigest() == mrenclave
    assert stream.mrenclave.hex() == mrenclave
    assert stream.remeasure().hex() == mrenclave  # from the parsed page list alone
    assert (stream.ssaframesize, stream.size) == (1, size)
    assert [(p.offset, p.secinfo_flags) for p in stream.pages] == pages
    assert all(p.fully_measured for p in stream.pages)
    assert write_sgxs(stream.records) == data


def test_fortanix_signature_covers_its_sgxs() -> None:
    sig = signing.verify(kat("fortanix-rust-sgx/test_enclave.sig"))
    assert sig.enclavehash == read_sgxs(kat("fortanix-rust-sgx/test_enclave.sgxs")).mrenclave


def test_fortanix_sig1_rsa_q1_q2_vectors() -> None:
    pem = kat("fortanix-rust-sgx/sig1/sig1.key.pem")
    digest = kat("fortanix-rust-sgx/sig1/sig1.data.bin")
    modulus_le = kat("fortanix-rust-sgx/sig1/sig1.key_n.bin")
    sig_be = signing.sign_digest(digest, pem)
    sig_le = sig_be[::-1]
    assert sig_le == kat("fortanix-rust-sgx/sig1/sig1.sig.bin")
    n = signing.load_private_key(pem).public_key().public_numbers().n
    assert n.to_bytes(384, "little") == modulus_le
    q1, q2 = signing.compute_q1_q2(sig_le, modulus_le)
    assert q1 == kat("fortanix-rust-sgx/sig1/sig1.q1.bin")
    assert q2 == kat("fortanix-rust-sgx/sig1/sig1.q2.bin")
    assert mrsigner_of(modulus_le).hex() == "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"


def test_intel_whitelist_lists_the_mrsigners_we_compute() -> None:
    wl = kat("intel-linux-sgx/white_list_cert_to_be_verify.bin")
    for name in ("fortanix-rust-sgx/test_enclave.sig", "intel-pce/pce-2.25.100.1.sigstruct.bin"):
        assert SigStruct.parse(kat(name)).mrsigner in wl
    assert SigStruct.parse(kat("enarx-sgx/encl.ss")).mrsigner not in wl


def test_dcap_quote_report_bodies() -> None:
    quote = kat("dcap-quote/quote.bin")
    isv = ReportBody.parse(quote[48:48 + 384])
    assert isv.pack() == quote[48:48 + 384]
    assert isv.mrenclave.hex() == "2531fd89facb97c6bab5f343805afe4dc051c2bef0d11309ac553c404326dda2"
    assert isv.mrsigner.hex() == "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a"
    assert isv.attributes.pack().hex() == "07000000000000001f00000000000000"
    assert (isv.isvprodid, isv.isvsvn) == (0, 0)
    qe = ReportBody.parse(quote[564:564 + 384])
    assert qe.mrsigner.hex() == "8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff"
    assert qe.mrenclave.hex() == "cdcadfb7db22ada5fd603455cde1bf9fa258fa5f284dcd6e0c63392f633a1105"
    assert (qe.isvprodid, qe.isvsvn) == (1, 5)
    assert qe.attributes.pack().hex() == "15000000000000000700000000000000"
    assert not any(qe.reportdata[32:])
