"""formats/der.py and formats/pem.py: the one DER reader/encoder and the one PEM splitter the parsers share."""

from __future__ import annotations

import base64

import pytest

from inclavare.formats import der, pem
from inclavare.formats.der import (
    TAG_BOOLEAN,
    TAG_ENUMERATED,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    DerReader,
)


class Bad(Exception):
    """The error type a format's fail factory makes (here: one the test can tell from anything else)."""


def fail(field_name: str, offset: int, problem: str) -> Bad:
    return Bad(f"{field_name}@{offset}: {problem}")


# --------------------------------------------------------------------------------------------------
# DER


@pytest.mark.parametrize("oid", ["1.2.840.113741.1.13.1", "2.5.29.19", "1.3.6.1.4.1.3704.1.3.8", "2.999.3",
                                 "0.6.9.42.840.113741.1337.6"])
def test_oid_encoding_reads_back(oid: str) -> None:
    assert DerReader(der.encode_oid(oid), fail).oid("oid") == oid


def test_oid_content_matches_known_encodings() -> None:
    assert der.oid_content("2.5.29.19") == bytes.fromhex("551d13")
    assert der.oid_content("2.999.3") == bytes.fromhex("883703")  # 2.999: first subidentifier 1079, two bytes
    assert der.encode_oid("1.2.840.113741.1.13.1") == bytes.fromhex("06092a864886f84d010d01")


@pytest.mark.parametrize(("value", "content"), [(0, "00"), (0x7F, "7f"), (0x80, "0080"), (0x1234, "1234")])
def test_encode_unsigned_is_minimal_and_reads_back(value: int, content: str) -> None:
    encoded = der.encode_unsigned(TAG_INTEGER, value)
    assert encoded == bytes([TAG_INTEGER, len(content) // 2]) + bytes.fromhex(content)
    assert DerReader(encoded, fail).integer("n") == value


def test_long_lengths_encode_and_read() -> None:
    body = bytes(300)
    encoded = der.encode(TAG_OCTET_STRING, body)
    assert encoded[:4] == b"\x04\x82\x01\x2c"
    r = DerReader(encoded, fail)
    start, end = r.expect(TAG_OCTET_STRING, "blob")
    assert encoded[start:end] == body and r.at_end()


def test_bit_string_must_be_whole_bytes() -> None:
    assert DerReader(b"\x03\x03\x00\xab\xcd", fail).bit_string("key") == b"\xab\xcd"
    with pytest.raises(Bad, match="key@2: BIT STRING with unused bits"):
        DerReader(b"\x03\x02\x04\xf0", fail).bit_string("key")
    with pytest.raises(Bad, match="BIT STRING with unused bits"):
        DerReader(b"\x03\x00", fail).bit_string("key")


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "empty INTEGER"), (b"\x80", "negative INTEGER"), (b"\x00\x01", "non-minimal INTEGER"),
    (b"\x01\x00", "does not fit in 8 bits"),
])
def test_unsigned_at_refuses(content: bytes, problem: str) -> None:
    data = bytes([TAG_INTEGER, len(content)]) + content
    with pytest.raises(Bad, match=problem):
        DerReader(data, fail).unsigned_at(2, len(data), "svn", 8)


def test_unsigned_at_reads() -> None:
    data = b"\x02\x02\x00\xff"
    assert DerReader(data, fail).unsigned_at(2, 4, "svn", 8) == 255


def _entries(*items: tuple[str, bytes]) -> bytes:
    return b"".join(der.encode(TAG_SEQUENCE, der.encode_oid(oid) + value) for oid, value in items)


ITEMS = (("1.2.3.1", der.encode_unsigned(TAG_INTEGER, 7)), ("1.2.3.2", der.encode(TAG_OCTET_STRING, bytes(200))),
         ("1.2.3.3", der.encode(TAG_BOOLEAN, b"\xff")), ("1.2.3.4", der.encode_unsigned(TAG_ENUMERATED, 1)))
KNOWN = {der.oid_content(oid): oid for oid, _ in ITEMS}


def test_oid_entries_fast_and_careful_paths_agree() -> None:
    data = _entries(*ITEMS)
    fast = DerReader(data, fail, known_oids=KNOWN)
    careful = DerReader(data, fail)  # no known OIDs: every entry read the careful way
    got = fast.oid_entries("entries")
    assert got == careful.oid_entries("entries") and fast.at_end() and careful.at_end()
    assert [(oid, tag) for oid, tag, _, _ in got] == [("1.2.3.1", TAG_INTEGER), ("1.2.3.2", TAG_OCTET_STRING),
                                                        ("1.2.3.3", TAG_BOOLEAN), ("1.2.3.4", TAG_ENUMERATED)]
    _, _, start, end = got[1]
    assert data[start:end] == bytes(200)
    # an OID the table does not name sends the whole read down the careful path, which still reads it
    mixed = _entries(*ITEMS, ("1.2.3.99", der.encode(TAG_BOOLEAN, b"\x00")))
    assert DerReader(mixed, fail, known_oids=KNOWN).oid_entries("entries")[-1][0] == "1.2.3.99"


@pytest.mark.parametrize(("data", "problem"), [
    (der.encode(TAG_SEQUENCE, der.encode_oid("1.2.3.1") + b"\x01\x01\xff\x01\x01\x00"), "extra DER elements"),
    (der.encode(TAG_SEQUENCE, der.encode_oid("1.2.3.1")), "truncated DER element"),
    (der.encode(TAG_OCTET_STRING, b"x"), "DER tag 0x04, expected 0x30"),
    (b"\x30\x81\x05" + der.encode_oid("1.2.3.1")[:3], "non-minimal DER length"),
    (b"\x30\x06" + der.encode_oid("1.2.3.1"), "runs past the end"),
])
def test_oid_entries_refuse_malformed_items_with_the_formats_error(data: bytes, problem: str) -> None:
    for known in (KNOWN, None):
        with pytest.raises(Bad, match=problem):
            DerReader(data, fail, known_oids=known).oid_entries("entries")


# --------------------------------------------------------------------------------------------------
# PEM


def _block(label: str, der_bytes: bytes, eol: str = "\n") -> bytes:
    b64 = base64.b64encode(der_bytes).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return eol.join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]).encode() + eol.encode()


def pfail(problem: str) -> Bad:
    return Bad(problem)


def test_blocks_decode_in_order_with_offsets() -> None:
    one, two = _block("CERTIFICATE", b"\x30" * 100), _block("X509 CRL", b"\x31" * 50, "\r\n")
    data = one + two + b"\x00"  # Intel's QE ends its chain with a NUL
    got = pem.blocks(data, pfail)
    assert [(b.label, b.der) for b in got] == [("CERTIFICATE", b"\x30" * 100), ("X509 CRL", b"\x31" * 50)]
    assert data[got[0].start:got[0].end] == one.rstrip(b"\n") and got[1].start == len(one)
    assert pem.has_pem(data) and pem.labels(data) == ["CERTIFICATE", "X509 CRL"]
    assert not pem.has_pem(b"-----BEGIN certificate-----") and pem.blocks(b" \n", pfail) == []


def test_text_between_blocks_is_refused_or_allowed() -> None:
    one, two = _block("CERTIFICATE", b"a" * 10), _block("CERTIFICATE", b"b" * 10)
    data = b"subject=CN = x\n" + one + b"\nissuer: y\n" + two + b"trailer"
    with pytest.raises(Bad, match="unexpected text before PEM block 1, at offset 0$"):
        pem.blocks(data, pfail)
    with pytest.raises(Bad, match=f"unexpected text before PEM block 2, at offset {len(one) + 2}$"):
        pem.blocks(one + b"\n junk" + two, pfail)
    with pytest.raises(Bad, match=f"after the last PEM block, at offset {len(one) + 2}$"):
        pem.blocks(one + b" \tjunk", pfail)
    with pytest.raises(Bad, match="^no PEM block$"):
        pem.blocks(b"just text", pfail)
    assert [b.der for b in pem.blocks(data, pfail, allow_text=True)] == [b"a" * 10, b"b" * 10]


@pytest.mark.parametrize(("data", "problem"), [
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n", r"PEM block 1 \(CERTIFICATE\) has no END line"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     r"PEM block 1 \(CERTIFICATE\) has no END line"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n", "begins as 'CERTIFICATE' but ends as 'X509 CRL'"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END cert-----\n", "malformed END line"),
    (b"-----BEGIN CERTIFICATE-----\nA*AA\n-----END CERTIFICATE-----\n", r"\(CERTIFICATE\) is not valid base64"),
    (b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n", "is not valid base64"),
    (b"-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n", r"\(CERTIFICATE\) is empty"),
])
def test_malformed_blocks_are_refused_even_among_text(data: bytes, problem: str) -> None:
    with pytest.raises(Bad, match=problem):
        pem.blocks(data, pfail, allow_text=True)
