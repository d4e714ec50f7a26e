"""formats/sgx.py and formats/sgxs.py on synthetic data: SDM offsets, round trips, rejections, measurement."""

from __future__ import annotations

import datetime
import hashlib
import struct

import pytest

from inclavare.errors import InclavareError
from inclavare.formats import sgx
from inclavare.formats.sgx import Attributes, SgxFormatError, SigStruct
from inclavare.formats.sgxs import Eadd, Ecreate, Eextend, Measurement, Page, measure_pages, read_sgxs, write_sgxs


def pattern(n: int, seed: int) -> bytes:
    return bytes((seed + 7 * i) & 0xFF or 1 for i in range(n))


MASK = 0xFFFF_FFFF_FFFF_FFFD


def full_sigstruct() -> SigStruct:
    return SigStruct(
        enclavehash=pattern(32, 1), attributes=Attributes(0x6, 0x3), attribute_mask=Attributes(MASK, 0x1B),
        miscselect=0x11223344, miscmask=0x55667788, isvprodid=0xBEEF, isvsvn=0x1234, vendor=0x8086, date=0x20240811,
        header_type=sgx.SIGSTRUCT_TYPE_DEBUG, swdefined=0x10, cet_attributes=0x5A, cet_attributes_mask=0xA5,
        isvfamilyid=pattern(16, 2), isvextprodid=pattern(16, 3), modulus=pattern(384, 4), exponent=3,
        signature=pattern(384, 5), q1=pattern(384, 6), q2=pattern(384, 7),
    )


def u(data: bytes, off: int, size: int) -> int:
    return int.from_bytes(data[off:off + size], "little")


# ---- SIGSTRUCT


def test_sigstruct_fields_sit_at_their_sdm_offsets() -> None:
    s = full_sigstruct()
    raw = s.pack()
    assert len(raw) == 1808
    assert raw[0:16] == bytes.fromhex("06000000e10000000000010000000080")  # HEADER then TYPE with bit 31
    assert u(raw, 16, 4) == 0x8086 and u(raw, 20, 4) == 0x20240811
    assert raw[24:40] == bytes.fromhex("01010000600000006000000001000000")
    assert u(raw, 40, 4) == 0x10 and not any(raw[44:128])
    assert raw[128:512] == s.modulus and u(raw, 512, 4) == 3 and raw[516:900] == s.signature
    assert u(raw, 900, 4) == 0x11223344 and u(raw, 904, 4) == 0x55667788
    assert raw[908] == 0x5A and raw[909] == 0xA5 and raw[912:928] == s.isvfamilyid
    assert raw[928:944] == struct.pack("<QQ", 0x6, 0x3) and raw[944:960] == struct.pack("<QQ", MASK, 0x1B)
    assert raw[960:992] == s.enclavehash and raw[1008:1024] == s.isvextprodid
    assert u(raw, 1024, 2) == 0xBEEF and u(raw, 1026, 2) == 0x1234
    assert raw[1040:1424] == s.q1 and raw[1424:] == s.q2


def test_sigstruct_round_trip_and_signing_material() -> None:
    s = full_sigstruct()
    raw = s.pack()
    assert SigStruct.parse(raw) == s
    assert SigStruct.parse(raw).pack() == raw
    assert s.signing_material() == raw[:128] + raw[900:1028]
    again = SigStruct.from_signing_material(s.signing_material())
    assert again.signing_material() == s.signing_material() and not again.is_signed
    assert s.debug_signed and s.is_signed
    assert s.mrsigner == hashlib.sha256(s.modulus).digest()


@pytest.mark.parametrize(
    ("offset", "value", "needle"),
    [
        (0, 0x07, "HEADER"),
        (30, 0x01, "HEADER2"),
        (15, 0x40, "TYPE"),
        (16, 0x01, "VENDOR"),
        (50, 0x01, "reserved bytes 44..127"),
        (911, 0x01, "reserved bytes 910..911"),
        (1000, 0x01, "reserved bytes 992..1007"),
        (1030, 0x01, "reserved bytes 1028..1039"),
    ],
)
def test_sigstruct_rejects_bad_constants_and_reserved(offset: int, value: int, needle: str) -> None:
    raw = bytearray(full_sigstruct().pack())
    raw[offset] ^= value
    with pytest.raises(SgxFormatError) as e:
        SigStruct.parse(bytes(raw))
    assert str(e.value).startswith("SIGSTRUCT: ") and needle in str(e.value)
    assert isinstance(e.value, InclavareError)


def test_sigstruct_rejects_wrong_size_and_out_of_range_fields() -> None:
    with pytest.raises(SgxFormatError, match=r"SIGSTRUCT: is 1807 bytes, expected 1808"):
        SigStruct.parse(bytes(1807))
    with pytest.raises(SgxFormatError, match="ISVSVN=0x10000 does not fit in 16 bits"):
        SigStruct(isvsvn=0x10000)
    with pytest.raises(SgxFormatError, match="ENCLAVEHASH is 31 bytes"):
        SigStruct(enclavehash=bytes(31))
    with pytest.raises(SgxFormatError, match="VENDOR=0x1234"):
        SigStruct(vendor=0x1234)


def test_dates_bcd_binary_zero_and_invalid() -> None:
    assert sgx.encode_bcd_date(datetime.date(2016, 12, 14)) == 0x20161214
    assert sgx.decode_date(0x20161214) == (datetime.date(2016, 12, 14), "bcd")
    # the old Graphene layout: year u16 low, then month, then day
    assert sgx.decode_date(0x070A07E3) == (datetime.date(2019, 10, 7), "binary")
    assert sgx.decode_date(0) == (None, "none")
    assert sgx.decode_date(0xFFFFFFFF) == (None, "invalid")
    assert SigStruct(date=0x070A07E3).decoded_date()[1] == "binary"


def test_attributes_names_and_bits() -> None:
    a = Attributes(int(sgx.AttributeFlags.DEBUG | sgx.AttributeFlags.MODE64BIT | sgx.AttributeFlags.AEXNOTIFY)
                   | 1 << 40, 3)
    assert a.pack() == struct.pack("<QQ", 0x406 | 1 << 40, 3)
    assert a.names() == ["DEBUG", "MODE64BIT", "AEXNOTIFY", "bit40"]
    assert a.debug and a.mode64bit
    assert Attributes.parse(a.pack()) == a
    assert (a & Attributes(0x2, 0x1)) == Attributes(0x2, 0x1)
    assert int(sgx.AttributeFlags.KSS) == 0x80 and int(sgx.AttributeFlags.EINITTOKENKEY) == 0x20
    assert int(sgx.AttributeFlags.PROVISIONKEY) == 0x10 and int(sgx.AttributeFlags.CET) == 0x40


# ---- REPORT, TARGETINFO, EINITTOKEN, KEYREQUEST, SECS


def test_report_layout_and_round_trip() -> None:
    body = sgx.ReportBody(
        cpusvn=pattern(16, 1), miscselect=0x01020304, cet_attributes=0x3, isvextprodid=pattern(16, 2),
        attributes=Attributes(0x7, 0x1F), mrenclave=pattern(32, 3), mrsigner=pattern(32, 4), configid=pattern(64, 5),
        isvprodid=0x0A0B, isvsvn=0x0C0D, configsvn=0x0E0F, isvfamilyid=pattern(16, 6), reportdata=pattern(64, 7),
    )
    raw = body.pack()
    assert len(raw) == 384
    assert raw[0:16] == body.cpusvn and u(raw, 16, 4) == 0x01020304 and raw[20] == 3
    assert raw[32:48] == body.isvextprodid and raw[48:64] == struct.pack("<QQ", 7, 0x1F)
    assert raw[64:96] == body.mrenclave and raw[128:160] == body.mrsigner and raw[192:256] == body.configid
    assert (u(raw, 256, 2), u(raw, 258, 2), u(raw, 260, 2)) == (0x0A0B, 0x0C0D, 0x0E0F)
    assert raw[304:320] == body.isvfamilyid and raw[320:384] == body.reportdata
    assert sgx.ReportBody.parse(raw) == body
    report = sgx.Report(body, keyid=pattern(32, 8), mac=pattern(16, 9))
    full = report.pack()
    assert len(full) == 432 and full[384:416] == report.keyid and full[416:] == report.mac
    assert sgx.Report.parse(full) == report
    with pytest.raises(SgxFormatError, match=r"REPORTBODY: reserved bytes 96\.\.127"):
        sgx.ReportBody.parse(raw[:100] + b"\x01" + raw[101:])
    with pytest.raises(SgxFormatError, match="REPORT: is 431 bytes"):
        sgx.Report.parse(full[:-1])


def test_targetinfo_einittoken_keyrequest_layouts() -> None:
    ti = sgx.TargetInfo(measurement=pattern(32, 1), attributes=Attributes(5, 3), cet_attributes=1, configsvn=0x0203,
                        miscselect=0x04050607, configid=pattern(64, 2))
    raw = ti.pack()
    assert len(raw) == 512 and raw[:32] == ti.measurement and raw[32:48] == struct.pack("<QQ", 5, 3)
    assert raw[48] == 1 and u(raw, 50, 2) == 0x0203 and u(raw, 52, 4) == 0x04050607 and raw[64:128] == ti.configid
    assert not any(raw[128:]) and sgx.TargetInfo.parse(raw) == ti

    tok = sgx.EInitToken(valid=1, attributes=Attributes(4, 3), mrenclave=pattern(32, 1), mrsigner=pattern(32, 2),
                         cpusvnle=pattern(16, 3), isvprodidle=0x20, isvsvnle=7, maskedmiscselectle=0x9,
                         maskedattributesle=Attributes(0x24, 3), keyid=pattern(32, 4), mac=pattern(16, 5))
    raw = tok.pack()
    assert len(raw) == 304 and u(raw, 0, 4) == 1 and raw[48:64] == struct.pack("<QQ", 4, 3)
    assert raw[64:96] == tok.mrenclave and raw[128:160] == tok.mrsigner and raw[192:208] == tok.cpusvnle
    assert (u(raw, 208, 2), u(raw, 210, 2), u(raw, 236, 4)) == (0x20, 7, 9)
    assert raw[240:256] == struct.pack("<QQ", 0x24, 3) and raw[256:288] == tok.keyid and raw[288:] == tok.mac
    assert sgx.EInitToken.parse(raw) == tok and tok.is_valid and tok.mac_material() == raw[:192]

    kr = sgx.KeyRequest(keyname=int(sgx.KeyName.SEAL_KEY), keypolicy=int(sgx.KeyPolicy.MRSIGNER), isvsvn=3,
                        cpusvn=pattern(16, 1), attribute_mask=Attributes(0xFF0000000000000B, 0),
                        keyid=pattern(32, 2), miscmask=0xFFFFFFFF, configsvn=2)
    raw = kr.pack()
    assert len(raw) == 512 and (u(raw, 0, 2), u(raw, 2, 2), u(raw, 4, 2)) == (4, 2, 3)
    assert raw[8:24] == kr.cpusvn and raw[40:72] == kr.keyid and u(raw, 72, 4) == 0xFFFFFFFF and u(raw, 76, 2) == 2
    assert sgx.KeyRequest.parse(raw) == kr
    with pytest.raises(SgxFormatError, match="KEYREQUEST: KEYNAME=9"):
        sgx.KeyRequest.parse(b"\x09" + raw[1:])
    with pytest.raises(SgxFormatError, match="KEYPOLICY=0x40 sets reserved bits"):
        sgx.KeyRequest(keypolicy=0x40)


def test_secs_layout_and_ecreate_rules() -> None:
    secs = sgx.Secs(size=0x8000, baseaddr=0x10000, ssaframesize=1, miscselect=1, attributes=Attributes(4, 3),
                    isvprodid=2, isvsvn=3, configsvn=4)
    raw = secs.pack()
    assert len(raw) == 4096 and (u(raw, 0, 8), u(raw, 8, 8), u(raw, 16, 4), u(raw, 20, 4)) == (0x8000, 0x10000, 1, 1)
    assert raw[48:64] == struct.pack("<QQ", 4, 3) and (u(raw, 256, 2), u(raw, 258, 2), u(raw, 260, 2)) == (2, 3, 4)
    assert sgx.Secs.parse(raw) == secs
    secs.validate_for_ecreate()
    for bad, needle in ((sgx.Secs(size=0x3000, attributes=Attributes(4, 3)), "power of two"),
                        (sgx.Secs(size=0x8000, baseaddr=0x1000, attributes=Attributes(4, 3)), "not aligned"),
                        (sgx.Secs(size=0x8000, attributes=Attributes(5, 3)), "INIT"),
                        (sgx.Secs(size=0x8000, attributes=Attributes(4 | 8, 3)), "reserved bits"),
                        (sgx.Secs(size=0x8000, attributes=Attributes(4, 1)), "XFRM")):
        with pytest.raises(SgxFormatError, match=needle):
            bad.validate_for_ecreate()


def test_reserved_ranges_are_the_gaps_of_the_field_tables() -> None:
    """The reserved ranges are derived from each table, not written down; these are the SDM's."""
    assert sgx.ReportBody.LAYOUT.reserved == ((21, 11), (96, 32), (160, 32), (262, 42))
    assert sgx.TargetInfo.LAYOUT.reserved == ((49, 1), (56, 8), (128, 384))
    assert sgx.EInitToken.LAYOUT.reserved == ((4, 44), (96, 32), (160, 32), (212, 24))
    assert sgx.KeyRequest.LAYOUT.reserved == ((7, 1), (78, 434))
    assert sgx.Secs.LAYOUT.reserved == ((24, 24), (96, 32), (160, 32), (262, 4096 - 262))
    assert SigStruct.LAYOUT.reserved == ((44, 84), (910, 2), (992, 16), (1028, 12))


@pytest.mark.parametrize("cls", [sgx.ReportBody, sgx.TargetInfo, sgx.EInitToken, sgx.KeyRequest, sgx.Secs])
def test_every_reserved_range_is_refused_when_non_zero(cls: type) -> None:
    raw = cls().pack()
    assert cls.parse(raw) == cls()
    for off, size in cls.LAYOUT.reserved:
        bad = bytearray(raw)
        bad[off + size - 1] = 0x80
        with pytest.raises(SgxFormatError, match=rf"reserved bytes {off}\.\.{off + size - 1} must be zero"):
            cls.parse(bytes(bad))


def test_layout_refuses_overlaps_and_wrong_attribute_types() -> None:
    from inclavare.formats.sgx.layout import Layout, b, u

    with pytest.raises(ValueError, match="X: B at 2 overlaps"):
        Layout("X", 8, u("a", "A", 0, 4), b("b", "B", 2, 2))
    with pytest.raises(ValueError, match="past the 4-byte structure"):
        Layout("X", 4, u("a", "A", 0, 8))
    with pytest.raises(SgxFormatError, match="REPORTBODY: ATTRIBUTES must be Attributes, got int"):
        sgx.ReportBody(attributes=7)  # type: ignore[arg-type]


# ---- measurement and SGXS


def spec_hash(records: list[bytes]) -> str:
    return hashlib.sha256(b"".join(records)).hexdigest()


def test_measurement_matches_the_record_encoding_written_out_by_hand() -> None:
    page = bytes(range(256)) * 16
    m = Measurement(keep_log=True)
    m.ecreate(2, 0x4000)
    m.add_page(0x1000, page, 0x205)
    m.add_page(0x2000, b"", 0x203, measured=False)
    m.add_page(0x3000, page[:300], 0x100, measured=0b101)
    recs = [b"ECREATE\0" + (2).to_bytes(4, "little") + (0x4000).to_bytes(8, "little") + bytes(44)]
    recs.append(b"EADD\0\0\0\0" + (0x1000).to_bytes(8, "little") + (0x205).to_bytes(8, "little") + bytes(40))
    for i in range(16):
        recs.append(b"EEXTEND\0" + (0x1000 + 256 * i).to_bytes(8, "little") + bytes(48) + page[256 * i:256 * i + 256])
    recs.append(b"EADD\0\0\0\0" + (0x2000).to_bytes(8, "little") + (0x203).to_bytes(8, "little") + bytes(40))
    recs.append(b"EADD\0\0\0\0" + (0x3000).to_bytes(8, "little") + (0x100).to_bytes(8, "little") + bytes(40))
    padded = page[:300] + bytes(4096 - 300)
    for i in (0, 2):
        recs.append(b"EEXTEND\0" + (0x3000 + 256 * i).to_bytes(8, "little") + bytes(48) + padded[256 * i:256 * i + 256])
    assert m.hexdigest() == spec_hash(recs)
    assert m.log() == b"".join(recs)

    stream = read_sgxs(m.log())
    assert (stream.ssaframesize, stream.size) == (2, 0x4000)
    assert [(p.offset, p.secinfo_flags, p.measured) for p in stream.pages] == [
        (0x1000, 0x205, 0xFFFF), (0x2000, 0x203, 0), (0x3000, 0x100, 0b101)]
    assert stream.pages[0].data == page and stream.mrenclave.hex() == spec_hash(recs)
    assert stream.remeasure() == m.digest()
    assert write_sgxs(stream.records) == m.log()
    assert measure_pages(2, 0x4000, [Page(0x1000, 0x205, page, 0xFFFF)]) != m.digest()


@pytest.mark.parametrize(
    ("steps", "needle"),
    [
        ([("eadd", 0, 0x201)], "EADD: comes before ECREATE"),
        ([("ecreate", 1, 0x4000), ("ecreate", 1, 0x4000)], "ECREATE was already done"),
        ([("ecreate", 1, 0x3000)], "power of two"),
        ([("ecreate", 0, 0x4000)], "SSAFRAMESIZE"),
        ([("ecreate", 1, 0x4000), ("eadd", 0x800, 0x201)], "not a page inside"),
        ([("ecreate", 1, 0x4000), ("eadd", 0x4000, 0x201)], "not a page inside"),
        ([("ecreate", 1, 0x4000), ("eadd", 0, 0x201), ("eadd", 0, 0x201)], "already added"),
        ([("ecreate", 1, 0x4000), ("eadd", 0, 0x101)], "TCS page at 0x0 must have no R/W/X"),
        ([("ecreate", 1, 0x4000), ("eadd", 0, 0x301)], "not an addable page"),
        ([("ecreate", 1, 0x4000), ("eextend", 0, 256)], "not in an added page"),
        ([("ecreate", 1, 0x4000), ("eadd", 0, 0x201), ("eextend", 0x80, 256)], "not 256-byte aligned"),
        ([("ecreate", 1, 0x4000), ("eadd", 0, 0x201), ("eextend", 0, 255)], "255 bytes"),
        ([("ecreate", 1, 0x4000), ("eadd", 0, 0x201), ("eextend", 0, 256), ("eextend", 0, 256)], "already measured"),
    ],
)
def test_measurement_enforces_sgx_order(steps: list[tuple[str, int, int]], needle: str) -> None:
    m = Measurement()
    with pytest.raises(SgxFormatError, match=needle):
        for op, a, b in steps:
            if op == "ecreate":
                m.ecreate(a, b)
            elif op == "eadd":
                m.eadd(a, b)
            else:
                m.eextend(a, bytes(b))


def small_stream() -> bytes:
    return write_sgxs([Ecreate(1, 0x2000), Eadd(0, 0x201), Eextend(0, bytes(range(256))), Eadd(0x1000, 0x100)])


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d[:-10], "truncated record"),
        (lambda d: d[:64 + 64 + 64 + 100], "missing its 256 data bytes"),
        (lambda d: d[:64] + b"EREMOVE\0" + d[72:], "unknown record tag"),
        (lambda d: d[:30] + b"\x01" + d[31:], "non-zero padding"),
        (lambda d: d + d[:64], "ECREATE at byte"),
        (lambda d: d[64:128] + d[:64], "before ECREATE"),
        (lambda d: b"", "empty stream"),
    ],
)
def test_read_sgxs_rejects_malformed_streams(edit: object, needle: str) -> None:
    data = edit(small_stream())  # type: ignore[operator]
    with pytest.raises(SgxFormatError, match=needle) as e:
        read_sgxs(data)
    assert str(e.value).startswith("SGXS: ")


def test_eadd_pages_is_the_same_as_one_eadd_per_page() -> None:
    """The heap's EADDs in one piece: the same SGXS records (so the same MRENCLAVE) as page by page, and the
    same refusals."""
    flags = int(sgx.SecInfo.PT_REG) | 0x3
    one, many = Measurement(keep_log=True), Measurement(keep_log=True)
    for m in (one, many):
        m.ecreate(1, 1 << 20)
        m.add_page(0, b"x", int(sgx.SecInfo.PT_REG) | 0x1)
    for off in range(0x2000, 0x2000 + 37 * 4096, 4096):
        one.eadd(off, flags)
    many.eadd_pages(0x2000, 37, flags)
    assert one.log() == many.log() and one.digest() == many.digest()
    with pytest.raises(SgxFormatError, match="page 0x2000 was already added"):
        many.eadd_pages(0x1000, 3, flags)
    with pytest.raises(SgxFormatError, match="not inside the enclave"):
        many.eadd_pages((1 << 20) - 4096, 2, flags)
    with pytest.raises(SgxFormatError, match="not an addable page"):
        many.eadd_pages(0x40000, 2, 0x7 << 8)
