"""CCEL ACPI table and TCG crypto-agile event log: parsing, RTMR replay against a real TDX quote
(../shared/vectors/attestation/tdx, skipped with the reason when absent), tampering, malformed inputs, and
property tests that nothing but the verifier's own error type escapes."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.attestation.api import AttestationError, EvidenceFormatError
from inclavare.attestation.ccel import (
    check_against_quote,
    data_bound,
    parse_event_log,
    parse_table,
    replay,
    summarize,
)
from inclavare.formats.ccel import (
    Algorithm,
    CcelFormatError,
    CcelTable,
    Event,
    EventLog,
    describe_event,
)
from tests.unit.sgx_helpers import vectors_root

SHA256, SHA384 = 0x000B, 0x000C
EV_NO_ACTION, EV_SEPARATOR, EV_EFI_ACTION, EV_IPL = 0x3, 0x4, 0x80000007, 0xD


def vector(name: str) -> bytes:
    path: Path = vectors_root() / "attestation" / "tdx" / name
    if not path.is_file():
        pytest.skip(f"TDX vector {path} not found (set INCLAVARE_VECTORS)")
    return path.read_bytes()


def quote_rtmrs(quote: bytes) -> list[bytes]:
    """RTMR0..3 of a TDX quote v4 (VECTORS.md: TD report body at 48, RTMRs at body offsets 328 + 48*i)."""
    assert struct.unpack_from("<HHI", quote, 0) == (4, 2, 0x81)
    return [quote[48 + 328 + 48 * i: 48 + 376 + 48 * i] for i in range(4)]


# ---------------------------------------------------------------------------------------- synthetic logs


def spec_id_record(algs: list[tuple[int, int]], *, signature: bytes = b"Spec ID Event03\x00") -> bytes:
    body = signature + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
    body += b"".join(struct.pack("<HH", a, s) for a, s in algs) + b"\x00"
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def record(mr: int, etype: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    out = struct.pack("<III", mr, etype, len(digests))
    out += b"".join(struct.pack("<H", a) + d for a, d in digests)
    return out + struct.pack("<I", len(data)) + data


def bound(mr: int, etype: int, data: bytes) -> bytes:
    """A record whose digests are the hashes of its data (SHA-256 and SHA-384)."""
    return record(mr, etype, [(SHA256, hashlib.sha256(data).digest()), (SHA384, hashlib.sha384(data).digest())],
                  data)


SYNTH_EVENTS = [
    (1, EV_SEPARATOR, b"\x00\x00\x00\x00"),
    (2, EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
    (3, EV_IPL, b"grub_cmd: linux /vmlinuz console=ttyS0\x00"),
    (4, EV_IPL, b"app measurement"),
    (2, EV_SEPARATOR, b"\x00\x00\x00\x00"),
]


def synthetic_log(padding: bytes = b"\xff" * 300) -> bytes:
    head = spec_id_record([(SHA256, 32), (SHA384, 48)])
    no_action = record(1, EV_NO_ACTION, [(SHA256, bytes(32)), (SHA384, bytes(48))], b"StartupLocality\x00\x03")
    return head + no_action + b"".join(bound(*e) for e in SYNTH_EVENTS) + padding


def expected_synthetic_rtmrs() -> list[bytes]:
    regs = [bytes(48)] * 4
    for mr, _, data in SYNTH_EVENTS:
        regs[mr - 1] = hashlib.sha384(regs[mr - 1] + hashlib.sha384(data).digest()).digest()
    return regs


# ----------------------------------------------------------------------------------------- real sample


def test_real_table_parses_and_reencodes() -> None:
    raw = vector("gotdxguest_cos113_ccel_table.bin")
    table = parse_table(raw)
    assert (table.cc_type, table.cc_type_name, table.cc_subtype) == (2, "TDX", 0)
    assert table.log_area_minimum_length == 0x40000
    assert table.log_area_start_address == 0xBEDBF000
    assert table.encode() == raw


def test_real_log_replays_to_the_quotes_rtmrs() -> None:
    data = vector("gotdxguest_cos113_ccel_data.bin")
    quote = vector("gotdxguest_cos113_tdx_quote.bin")
    log = parse_event_log(data, parse_table(vector("gotdxguest_cos113_ccel_table.bin")))
    assert log.spec_id.algorithms == ((Algorithm.SHA384, 48),)
    assert (len(log.events), log.end, log.area_size) == (43, 18101, len(data))  # VECTORS.md
    assert set(data[log.end:]) <= {0x00, 0xFF}
    assert log.encode() == data[:log.end]
    assert replay(log) == quote_rtmrs(quote)
    assert check_against_quote(log, quote_rtmrs(quote)) == []
    summary = summarize(log)
    assert [len(summary[f"rtmr{i}"]) for i in range(4)] == [16, 7, 20, 0]  # VECTORS.md: extends per RTMR
    secure_boot = next(e for e in log.events if "SecureBoot".encode("utf-16-le") in e.data)
    assert f"EV_EFI_VARIABLE_DRIVER_CONFIG: SecureBoot = {secure_boot.data[-1:].hex()}" in summary["rtmr0"]
    assert any(s.startswith("EV_EFI_BOOT_SERVICES_APPLICATION: \\EFI\\BOOT\\BOOTX64.EFI") and
               s.endswith("[unbound]") for s in summary["rtmr1"])
    assert "EV_EFI_ACTION: Exit Boot Services Returned with Success" in summary["rtmr1"]


def test_real_log_tampered_digest_is_reported() -> None:
    data = bytearray(vector("gotdxguest_cos113_ccel_data.bin"))
    rtmrs = quote_rtmrs(vector("gotdxguest_cos113_tdx_quote.bin"))
    log = EventLog.parse(bytes(data))
    victim = next(e for e in log.events if e.mr_index == 3)  # an RTMR2 event
    digest_at = victim.offset + 12 + 2
    data[digest_at] ^= 0x01
    problems = check_against_quote(parse_event_log(bytes(data)), rtmrs)
    assert len(problems) == 1 and problems[0].startswith("RTMR2:")
    assert rtmrs[2].hex() in problems[0]


def test_real_log_dropped_or_moved_event_is_reported() -> None:
    data = vector("gotdxguest_cos113_ccel_data.bin")
    rtmrs = quote_rtmrs(vector("gotdxguest_cos113_tdx_quote.bin"))
    log = EventLog.parse(data)
    dropped = [e for e in log.events if e.number != 8]  # the RTMR0 separator
    assert [p[:5] for p in check_against_quote(dropped, rtmrs)] == ["RTMR0"]
    victim = log.events[7]
    moved = bytearray(data)
    struct.pack_into("<I", moved, victim.offset, 4)  # now claims RTMR3
    assert [p[:5] for p in check_against_quote(parse_event_log(bytes(moved)), rtmrs)] == ["RTMR0", "RTMR3"]


def test_real_log_tampered_bound_data_loses_its_binding() -> None:
    data = bytearray(vector("gotdxguest_cos113_ccel_data.bin"))
    log = EventLog.parse(bytes(data))
    action = next(e for e in log.events if e.data == b"Exit Boot Services Invocation")
    assert data_bound(action)
    at = action.offset + len(action.encode()) - len(action.data)
    data[at:at + 4] = b"EXIT"
    tampered = parse_event_log(bytes(data))
    assert replay(tampered) == replay(log)  # the data is not what RTMRs are extended with...
    assert "EV_EFI_ACTION: EXIT Boot Services Invocation [unbound]" in summarize(tampered)["rtmr1"]  # ...but flagged


# ------------------------------------------------------------------------------------------ synthetic log


def test_synthetic_log_replay_and_extras() -> None:
    log = parse_event_log(synthetic_log())
    assert [e.type_name for e in log.events][:2] == ["EV_NO_ACTION", "EV_SEPARATOR"]
    assert replay(log) == expected_synthetic_rtmrs()
    assert check_against_quote(log, expected_synthetic_rtmrs()) == []
    summary = summarize(log)
    assert summary["rtmr3"] == ["EV_IPL: app measurement"]
    assert summary["rtmr2"] == ["EV_IPL: grub_cmd: linux /vmlinuz console=ttyS0"]  # bound with the NUL
    assert all(e.digest(SHA256) is not None for e in log.events)
    # zero padding ends the log as well as 0xFF padding, and a full area (no padding) is fine too
    assert replay(parse_event_log(synthetic_log(b"\x00" * 64))) == expected_synthetic_rtmrs()
    assert replay(parse_event_log(synthetic_log(b""))) == expected_synthetic_rtmrs()


def test_event_with_mrtd_or_unknown_index_is_rejected() -> None:
    for mr, word in ((0, "MRTD"), (5, "not an RTMR")):
        raw = spec_id_record([(SHA384, 48)]) + record(mr, EV_SEPARATOR, [(SHA384, bytes(48))], bytes(4))
        log = parse_event_log(raw)
        with pytest.raises(EvidenceFormatError, match=f"event 1 at offset 65: MR index {mr} is {word}"):
            replay(log)


def test_log_without_sha384_cannot_be_replayed() -> None:
    raw = spec_id_record([(SHA256, 32)]) + record(1, EV_SEPARATOR, [(SHA256, bytes(32))], bytes(4))
    with pytest.raises(EvidenceFormatError, match="no SHA-384 digest"):
        replay(parse_event_log(raw))


def test_check_against_quote_rejects_bad_rtmr_input() -> None:
    log = parse_event_log(synthetic_log())
    with pytest.raises(EvidenceFormatError, match="expected 4 RTMR"):
        check_against_quote(log, [bytes(48)] * 3)
    with pytest.raises(EvidenceFormatError, match="RTMR2 from the quote must be 48 bytes"):
        check_against_quote(log, [bytes(48), bytes(48), bytes(32), bytes(48)])


def test_describe_event_efi_types() -> None:
    name = "Boot0001".encode("utf-16-le")
    var = bytes(16) + struct.pack("<QQ", 8, 3) + name + b"\x01\x02\x03"
    assert describe_event(Event(1, 0, 1, 0x80000002, (), var)) == "Boot0001 = 010203"
    path = bytes([4, 4]) + struct.pack("<H", 4 + 10) + "\\a.efi".encode("utf-16-le")[:10] + bytes([0x7F, 0xFF, 4, 0])
    image = struct.pack("<QQQQ", 0x1000, 4096, 0, len(path)) + path
    assert describe_event(Event(2, 0, 2, 0x80000003, (), image)) == "\\a.ef (4096 bytes)"
    assert describe_event(Event(3, 0, 1, 0x8000000A, (), b"\x03Fv!junk")) == "Fv!"
    assert describe_event(Event(4, 0, 1, 0x80000003, (), b"short")) == "image event of 5 bytes"


# ------------------------------------------------------------------------------------------- malformed


def table_bytes(**changes: int) -> bytes:
    base = CcelTable(revision=1, oem_id=b"INTEL ", oem_table_id=b"EDK2    ", oem_revision=2, creator_id=b"    ",
                     creator_revision=0x1000013, cc_type=2, cc_subtype=0, log_area_minimum_length=0x10000,
                     log_area_start_address=0x7F000000)
    return CcelTable(**{**base.__dict__, **changes}).encode()


def test_malformed_tables() -> None:
    good = table_bytes()
    assert parse_table(good).log_area_minimum_length == 0x10000
    bad_sum = bytearray(good)
    bad_sum[45] ^= 0x10
    cases = [
        (bytes(bad_sum), "table.checksum at offset 9"),
        (good[:55], "table at offset 0: is 55 bytes"),
        (b"XCEL" + good[4:], "table.signature at offset 0"),
        (good + b"\x00", "table at offset 56: has 1 bytes after"),
        (good[:4] + struct.pack("<I", 60) + good[8:], "table.length at offset 4"),
        (table_bytes(cc_type=1), "table.cc_type at offset 36: is SEV"),
    ]
    for raw, msg in cases:
        with pytest.raises(EvidenceFormatError, match=msg.replace(".", r"\.")):
            parse_table(raw)
    assert CcelTable.parse(table_bytes(cc_type=1)).cc_type == 1  # the codec itself accepts SEV tables
    assert parse_table(table_bytes(cc_type=1), require_tdx=False).cc_type_name == "SEV"


def test_log_larger_than_the_tables_area_is_rejected() -> None:
    table = parse_table(table_bytes(log_area_minimum_length=100))
    with pytest.raises(EvidenceFormatError, match="log area holds 100"):
        parse_event_log(synthetic_log(), table)


def _first_event_offset() -> int:
    return len(spec_id_record([(SHA256, 32), (SHA384, 48)]))


def test_truncated_log() -> None:
    raw = synthetic_log(b"")
    start = _first_event_offset()
    with pytest.raises(EvidenceFormatError, match=rf"event 1 at offset {start + 12 + 2 + 32 + 2}: "
                                                  "SHA384 digest needs 48 bytes, only 10 remain"):
        parse_event_log(raw[:start + 12 + 2 + 32 + 2 + 10])
    with pytest.raises(EvidenceFormatError, match="Spec ID"):
        parse_event_log(raw[:40])
    with pytest.raises(EvidenceFormatError, match="event 0 .Spec ID. at offset 0: MR index needs 4 bytes"):
        parse_event_log(b"")


def test_bad_digest_count() -> None:
    raw = bytearray(synthetic_log())
    start = _first_event_offset()
    struct.pack_into("<I", raw, start + 8, 3)
    with pytest.raises(EvidenceFormatError, match=rf"event 1 at offset {start + 8}: has 3 digests, the Spec ID "
                                                  "event declares 2"):
        parse_event_log(bytes(raw))


def test_unknown_and_duplicate_algorithms() -> None:
    raw = bytearray(synthetic_log())
    start = _first_event_offset()
    struct.pack_into("<H", raw, start + 12, 0x0004)  # SHA1, which the Spec ID event does not declare
    with pytest.raises(EvidenceFormatError, match=rf"event 1 at offset {start + 12}: digest 0 uses SHA1"):
        parse_event_log(bytes(raw))
    raw = bytearray(synthetic_log())
    struct.pack_into("<H", raw, start + 12 + 34, SHA256)
    with pytest.raises(EvidenceFormatError, match="carries two SHA256 digests"):
        parse_event_log(bytes(raw))
    with pytest.raises(EvidenceFormatError, match="gives SHA384 a 32-byte digest"):
        parse_event_log(spec_id_record([(SHA384, 32)]))
    with pytest.raises(EvidenceFormatError, match="declares SHA256 twice"):
        parse_event_log(spec_id_record([(SHA256, 32), (SHA256, 32)]))
    with pytest.raises(EvidenceFormatError, match="declares 0 digest algorithms"):
        parse_event_log(spec_id_record([]))
    with pytest.raises(EvidenceFormatError, match="digest size 0"):
        parse_event_log(spec_id_record([(0x7777, 0)]))
    # an algorithm this codec does not know is fine when the Spec ID event gives its size
    other = spec_id_record([(0x7777, 20), (SHA384, 48)]) + record(1, 4, [(0x7777, bytes(20)), (SHA384, bytes(48))],
                                                                   b"")
    assert parse_event_log(other).events[0].digest(0x7777) == bytes(20)


def test_bad_header_and_event_size() -> None:
    with pytest.raises(EvidenceFormatError, match="crypto-agile"):
        parse_event_log(spec_id_record([(SHA384, 48)], signature=b"Spec ID Event02\x00"))
    head = bytearray(spec_id_record([(SHA384, 48)]))
    struct.pack_into("<I", head, 4, EV_SEPARATOR)
    with pytest.raises(EvidenceFormatError, match="must be EV_NO_ACTION"):
        parse_event_log(bytes(head))
    head = bytearray(spec_id_record([(SHA384, 48)]))
    head[10] = 1
    with pytest.raises(EvidenceFormatError, match="digest must be zero"):
        parse_event_log(bytes(head))
    raw = bytearray(synthetic_log())
    start = _first_event_offset()
    size_at = start + 12 + 34 + 50
    struct.pack_into("<I", raw, size_at, 0xFFFFFFFF)
    with pytest.raises(EvidenceFormatError, match=rf"event 1 at offset {size_at}: event size 4294967295 runs past"):
        parse_event_log(bytes(raw))


def test_codec_raises_its_own_error_with_offset() -> None:
    with pytest.raises(CcelFormatError) as info:
        EventLog.parse(synthetic_log()[:_first_event_offset() + 5])
    assert info.value.offset == _first_event_offset() + 4 and "event 1" in str(info.value)
    with pytest.raises(CcelFormatError, match="expected bytes"):
        EventLog.parse("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- property


def _exercise(data: bytes) -> None:
    """Everything a verifier does with an untrusted log: only AttestationError may escape."""
    try:
        log = parse_event_log(data)
        check_against_quote(log, [bytes(48)] * 4)
        summarize(log)
        for e in log.events:
            describe_event(e)
    except AttestationError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_logs_raise_only_attestation_errors(data: bytes) -> None:
    _exercise(data)
    _exercise(spec_id_record([(SHA384, 48)]) + data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 999), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 1000))
def test_mutated_logs_raise_only_attestation_errors(flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(synthetic_log())
    for pos, value in flips:
        raw[pos % len(raw)] = value
    _exercise(bytes(raw))
    _exercise(bytes(raw[:cut]))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_random_tables_raise_only_attestation_errors(data: bytes) -> None:
    for raw in (data, b"CCEL" + struct.pack("<I", 56) + data[:48].ljust(48, b"\x00")):
        try:
            parse_table(raw)
        except AttestationError:
            pass
