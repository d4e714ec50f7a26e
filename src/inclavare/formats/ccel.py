"""The ACPI CCEL table and the TCG crypto-agile event log it points at (Intel TDX measured boot).

Pure codecs: no I/O and no hashing (replaying the log into RTMRs is the attestation layer's job,
``inclavare.attestation.ccel``).

CCEL table (ACPI "Confidential Computing Event Log" table, 56 bytes, integers little-endian)::

    offset  size  field
         0     4  signature "CCEL"
         4     4  length of the whole table (56)
         8     1  revision
         9     1  checksum: all bytes of the table sum to 0 modulo 256
        10     6  OEM ID
        16     8  OEM table ID
        24     4  OEM revision
        28     4  creator ID
        32     4  creator revision
        36     1  CC type (1 = AMD SEV, 2 = Intel TDX)
        37     1  CC subtype
        38     2  reserved
        40     8  LAML: log area minimum length
        48     8  LASA: log area start address (guest physical)

Event log (TCG PC Client Platform Firmware Profile, crypto-agile format). The first record is a
``TCG_PCR_EVENT`` in the old SHA-1 layout whose event data is the "Spec ID Event03" structure naming the
digest algorithms every later record carries::

    TCG_PCR_EVENT:  u32 index | u32 type (EV_NO_ACTION) | 20-byte digest (zero) | u32 size | data[size]
    Spec ID Event:  "Spec ID Event03\\0" | u32 platform class | u8 minor | u8 major | u8 errata | u8 uintn size
                    | u32 algorithm count n | n * (u16 algorithm id, u16 digest size) | u8 vendor size | vendor
    TCG_PCR_EVENT2: u32 index | u32 type | u32 digest count | count * (u16 algorithm id, digest)
                    | u32 size | data[size]

In a CCEL log the "index" field holds the TDX measurement-register index: 0 = MRTD, 1..4 = RTMR0..3.
The log area is larger than the log; it ends where only padding (0xFF or 0x00 bytes) remains. Parsing is
strict: every length is checked against the bytes present, every record must carry exactly the algorithms
the Spec ID event declares, and any problem raises :class:`CcelFormatError` naming the record and offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from inclavare.errors import InclavareError

__all__ = [
    "CCEL_SIGNATURE",
    "CCEL_TABLE_SIZE",
    "CC_TYPE_SEV",
    "CC_TYPE_TDX",
    "EV_NO_ACTION",
    "SPEC_ID_SIGNATURE",
    "Algorithm",
    "CcelFormatError",
    "CcelTable",
    "Event",
    "EventLog",
    "EventType",
    "SpecIdEvent",
    "describe_event",
    "event_type_name",
]

CCEL_SIGNATURE = b"CCEL"
CCEL_TABLE_SIZE = 56
CC_TYPE_SEV = 1
CC_TYPE_TDX = 2
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
EV_NO_ACTION = 0x00000003
_SHA1_SIZE = 20
_MAX_DIGEST_SIZE = 64  # the largest digest any TPM algorithm produces (SHA-512 / SHA3-512)
_MAX_ALGORITHMS = 16


class CcelFormatError(InclavareError):
    """A CCEL table or event log is malformed; names the field and the byte offset where it went wrong."""

    def __init__(self, what: str, offset: int, problem: str) -> None:
        self.what, self.offset, self.problem = what, offset, problem
        super().__init__(f"CCEL {what} at offset {offset}: {problem}")


class Algorithm(IntEnum):
    """TPM2 algorithm identifiers of the hash algorithms an event log may carry."""

    SHA1 = 0x0004
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    SM3_256 = 0x0012
    SHA3_256 = 0x0027
    SHA3_384 = 0x0028
    SHA3_512 = 0x0029


DIGEST_SIZES: dict[int, int] = {
    Algorithm.SHA1: 20, Algorithm.SHA256: 32, Algorithm.SHA384: 48, Algorithm.SHA512: 64,
    Algorithm.SM3_256: 32, Algorithm.SHA3_256: 32, Algorithm.SHA3_384: 48, Algorithm.SHA3_512: 64,
}


def algorithm_name(alg: int) -> str:
    try:
        return Algorithm(alg).name
    except ValueError:
        return f"algorithm {alg:#06x}"


class EventType(IntEnum):
    """Event types of the TCG PC Client Platform Firmware Profile."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
    EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
    EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4


def event_type_name(event_type: int) -> str:
    """The PFP name of an event type, or ``EV_UNKNOWN_0x...`` for a value the profile does not define."""
    try:
        return EventType(event_type).name
    except ValueError:
        return f"EV_UNKNOWN_{event_type:#010x}"


class _Reader:
    """Bounds-checked little-endian reads; every failure names the record and the offset."""

    def __init__(self, data: bytes, pos: int, what: str) -> None:
        self.data, self.pos, self.what = data, pos, what

    def take(self, size: int, field_name: str) -> bytes:
        remaining = len(self.data) - self.pos
        if size > remaining:
            raise CcelFormatError(self.what, self.pos,
                                  f"{field_name} needs {size} bytes, only {max(remaining, 0)} remain")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        value: int = struct.unpack("<H", self.take(2, field_name))[0]
        return value

    def u32(self, field_name: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field_name))[0]
        return value

    def u64(self, field_name: str) -> int:
        value: int = struct.unpack("<Q", self.take(8, field_name))[0]
        return value


def _as_bytes(data: object, what: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise CcelFormatError(what, 0, f"expected bytes, got {type(data).__name__}")


# --------------------------------------------------------------------------------------------- CCEL table


@dataclass(frozen=True)
class CcelTable:
    """The ACPI CCEL table: which kind of confidential VM wrote the log, and where the log area is."""

    revision: int
    oem_id: bytes
    oem_table_id: bytes
    oem_revision: int
    creator_id: bytes
    creator_revision: int
    cc_type: int
    cc_subtype: int
    log_area_minimum_length: int  # LAML
    log_area_start_address: int  # LASA

    @property
    def cc_type_name(self) -> str:
        return {CC_TYPE_SEV: "SEV", CC_TYPE_TDX: "TDX"}.get(self.cc_type, f"unknown ({self.cc_type})")

    @classmethod
    def parse(cls, data: bytes) -> CcelTable:
        """Parse and check a CCEL table: signature, declared length, checksum and reserved bytes."""
        data = _as_bytes(data, "table")
        if len(data) < CCEL_TABLE_SIZE:
            raise CcelFormatError("table", 0, f"is {len(data)} bytes, a CCEL table is {CCEL_TABLE_SIZE}")
        if data[0:4] != CCEL_SIGNATURE:
            raise CcelFormatError("table.signature", 0, f"is {data[0:4]!r}, expected {CCEL_SIGNATURE!r}")
        length = struct.unpack_from("<I", data, 4)[0]
        if length != CCEL_TABLE_SIZE:
            raise CcelFormatError("table.length", 4, f"is {length}, a CCEL table is {CCEL_TABLE_SIZE} bytes")
        if len(data) != length:
            raise CcelFormatError("table", length, f"has {len(data) - length} bytes after its declared length")
        if sum(data) & 0xFF:
            raise CcelFormatError("table.checksum", 9, f"bytes sum to {sum(data) & 0xFF:#04x} modulo 256, not 0")
        if data[38:40] != b"\x00\x00":
            raise CcelFormatError("table.reserved", 38, f"is {data[38:40].hex()}, must be zero")
        oem_rev, creator_rev = struct.unpack_from("<I", data, 24)[0], struct.unpack_from("<I", data, 32)[0]
        laml, lasa = struct.unpack_from("<QQ", data, 40)
        return cls(revision=data[8], oem_id=data[10:16], oem_table_id=data[16:24], oem_revision=oem_rev,
                   creator_id=data[28:32], creator_revision=creator_rev, cc_type=data[36], cc_subtype=data[37],
                   log_area_minimum_length=laml, log_area_start_address=lasa)

    def encode(self) -> bytes:
        """The 56-byte table with a correct checksum."""
        try:
            body = bytearray(struct.pack(
                "<4sIBB6s8sI4sIBBHQQ", CCEL_SIGNATURE, CCEL_TABLE_SIZE, self.revision, 0, self.oem_id,
                self.oem_table_id, self.oem_revision, self.creator_id, self.creator_revision, self.cc_type,
                self.cc_subtype, 0, self.log_area_minimum_length, self.log_area_start_address))
        except struct.error as e:
            raise CcelFormatError("table", 0, f"cannot encode: {e}") from None
        body[9] = (-sum(body)) & 0xFF
        return bytes(body)


# ---------------------------------------------------------------------------------------------- event log


@dataclass(frozen=True)
class SpecIdEvent:
    """The "Spec ID Event03" data of the log's first record: format version and the digest algorithms."""

    platform_class: int
    spec_version_minor: int
    spec_version_major: int
    spec_errata: int
    uintn_size: int
    algorithms: tuple[tuple[int, int], ...]  # (algorithm id, digest size) in log order
    vendor_info: bytes

    @classmethod
    def parse(cls, data: bytes, base: int) -> SpecIdEvent:
        """Parse the event data of the first record; ``base`` is its offset in the log (for messages)."""
        r = _Reader(data, 0, "Spec ID event")
        try:
            sig = r.take(16, "signature")
            if sig != SPEC_ID_SIGNATURE:
                raise CcelFormatError("Spec ID event", 0, f"signature is {sig!r}, expected {SPEC_ID_SIGNATURE!r} "
                                      "(only the crypto-agile log format is supported)")
            platform_class = r.u32("platformClass")
            minor, major, errata, uintn = r.u8("specVersionMinor"), r.u8("specVersionMajor"), \
                r.u8("specErrata"), r.u8("uintnSize")
            if major != 2:
                raise CcelFormatError("Spec ID event", 21, f"spec version major is {major}, expected 2")
            if uintn not in (1, 2):
                raise CcelFormatError("Spec ID event", 23, f"uintnSize is {uintn}, expected 1 or 2")
            count_at = r.pos
            count = r.u32("numberOfAlgorithms")
            if not 1 <= count <= _MAX_ALGORITHMS:
                raise CcelFormatError("Spec ID event", count_at,
                                      f"declares {count} digest algorithms, expected 1..{_MAX_ALGORITHMS}")
            algorithms: list[tuple[int, int]] = []
            for i in range(count):
                at = r.pos
                alg, size = r.u16(f"algorithm {i} id"), r.u16(f"algorithm {i} digest size")
                if any(alg == a for a, _ in algorithms):
                    raise CcelFormatError("Spec ID event", at, f"declares {algorithm_name(alg)} twice")
                known = DIGEST_SIZES.get(alg)
                if known is not None and size != known:
                    raise CcelFormatError("Spec ID event", at,
                                          f"gives {algorithm_name(alg)} a {size}-byte digest, it has {known}")
                if not 1 <= size <= _MAX_DIGEST_SIZE:
                    raise CcelFormatError("Spec ID event", at,
                                          f"digest size {size} of {algorithm_name(alg)} is not 1..{_MAX_DIGEST_SIZE}")
                algorithms.append((alg, size))
            vendor = r.take(r.u8("vendorInfoSize"), "vendorInfo")
            if r.pos != len(data):
                raise CcelFormatError("Spec ID event", r.pos, f"{len(data) - r.pos} bytes after vendorInfo")
        except CcelFormatError as e:
            raise CcelFormatError(e.what, base + e.offset, e.problem) from None
        return cls(platform_class, minor, major, errata, uintn, tuple(algorithms), vendor)

    def digest_size(self, alg: int) -> int | None:
        return next((size for a, size in self.algorithms if a == alg), None)


@dataclass(frozen=True)
class Event:
    """One log record. ``digests`` keeps the record's (algorithm id, digest) pairs in log order."""

    number: int  # 0 for the Spec ID record, then 1, 2, ...
    offset: int  # where the record starts in the log
    mr_index: int  # the record's PCR index field; in a CCEL log the TDX MR index (1..4 = RTMR0..3)
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    data: bytes
    legacy: bool = False  # True for the first record, which has the TCG_PCR_EVENT (SHA-1) layout

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    @property
    def size(self) -> int:
        return len(self.encode())

    def digest(self, alg: int) -> bytes | None:
        return next((d for a, d in self.digests if a == alg), None)

    def encode(self) -> bytes:
        """The record's bytes as they appear in the log."""
        out = bytearray(struct.pack("<II", self.mr_index, self.event_type))
        if self.legacy:  # TCG_PCR_EVENT: one bare SHA-1 digest
            out += b"".join(d for _, d in self.digests[:1]) or bytes(_SHA1_SIZE)
        else:
            out += struct.pack("<I", len(self.digests))
            for alg, digest in self.digests:
                out += struct.pack("<H", alg) + digest
        out += struct.pack("<I", len(self.data)) + self.data
        return bytes(out)


@dataclass(frozen=True)
class EventLog:
    """A parsed crypto-agile event log: the Spec ID header record, then the TCG_PCR_EVENT2 records."""

    spec_id: SpecIdEvent
    header: Event
    events: tuple[Event, ...]
    end: int  # offset just after the last record; the area after it is padding
    area_size: int  # bytes given to the parser (the log area)

    @classmethod
    def parse(cls, data: bytes, *, max_events: int = 1 << 16) -> EventLog:
        """Parse a log area: the whole log up to the padding that fills the rest of the area."""
        data = _as_bytes(data, "event log")
        r = _Reader(data, 0, "event 0 (Spec ID)")
        mr_index, event_type = r.u32("MR index"), r.u32("event type")
        if event_type != EV_NO_ACTION:
            raise CcelFormatError("event 0 (Spec ID)", 4,
                                  f"type is {event_type_name(event_type)}, the first record must be EV_NO_ACTION")
        sha1 = r.take(_SHA1_SIZE, "SHA-1 digest")
        if sha1 != bytes(_SHA1_SIZE):
            raise CcelFormatError("event 0 (Spec ID)", 8, "the first record's digest must be zero")
        size = r.u32("event size")
        data_at = r.pos
        spec = SpecIdEvent.parse(r.take(size, "event data"), data_at)
        header = Event(0, 0, mr_index, event_type, ((Algorithm.SHA1, sha1),), data[data_at:r.pos], legacy=True)

        # The log ends where only padding remains: no record can consist of 0x00 / 0xFF bytes alone,
        # because its digest count (1..16) is neither.
        padding_start = len(data.rstrip(b"\x00\xff"))
        events: list[Event] = []
        pos = r.pos
        while pos < padding_start:
            if len(events) >= max_events:
                raise CcelFormatError(f"event {len(events) + 1}", pos, f"more than {max_events} records")
            event, pos = _parse_event2(data, pos, len(events) + 1, spec)
            events.append(event)
        return cls(spec, header, tuple(events), pos, len(data))

    def encode(self) -> bytes:
        """The log's records, without the padding after them."""
        return self.header.encode() + b"".join(e.encode() for e in self.events)


def _parse_event2(data: bytes, pos: int, number: int, spec: SpecIdEvent) -> tuple[Event, int]:
    what = f"event {number}"
    r = _Reader(data, pos, what)
    mr_index, event_type = r.u32("MR index"), r.u32("event type")
    count_at = r.pos
    count = r.u32("digest count")
    if count != len(spec.algorithms):
        raise CcelFormatError(what, count_at, f"has {count} digests, the Spec ID event declares "
                                              f"{len(spec.algorithms)} algorithm(s)")
    digests: list[tuple[int, bytes]] = []
    for i in range(count):
        at = r.pos
        alg = r.u16(f"digest {i} algorithm")
        size = spec.digest_size(alg)
        if size is None:
            raise CcelFormatError(what, at, f"digest {i} uses {algorithm_name(alg)}, which the Spec ID event "
                                            "does not declare")
        if any(alg == a for a, _ in digests):
            raise CcelFormatError(what, at, f"carries two {algorithm_name(alg)} digests")
        digests.append((alg, r.take(size, f"{algorithm_name(alg)} digest")))
    size_at = r.pos
    event_size = r.u32("event size")
    if event_size > len(data) - r.pos:
        raise CcelFormatError(what, size_at, f"event size {event_size} runs past the end of the log area "
                                             f"({len(data) - r.pos} bytes remain)")
    event = Event(number, pos, mr_index, event_type, tuple(digests), r.take(event_size, "event data"))
    return event, r.pos


# ------------------------------------------------------------------------------------ event descriptions


def _clean(text: str, limit: int) -> str:
    """Up to the first NUL, whitespace runs folded to one space, other control characters as '?'."""
    text = text.split("\x00", 1)[0]
    text = " ".join("".join(ch if ch.isprintable() or ch.isspace() else "?" for ch in text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _printable(raw: bytes, limit: int = 80) -> str:
    return _clean(raw.decode("utf-8", "replace"), limit)


def _utf16(raw: bytes, limit: int = 80) -> str:
    return _clean(raw[: len(raw) & ~1].decode("utf-16-le", "replace"), limit)


def _device_path_text(path: bytes) -> str:
    """The file-path nodes of a UEFI device path (type 4, subtype 4), joined; else a node count."""
    pos, nodes = 0, 0
    files: list[str] = []
    while pos + 4 <= len(path) and nodes < 64:
        node_type, sub, length = path[pos], path[pos + 1], struct.unpack_from("<H", path, pos + 2)[0]
        if node_type == 0x7F or length < 4 or pos + length > len(path):
            break
        if node_type == 4 and sub == 4:
            files.append(_utf16(path[pos + 4:pos + length]))
        pos, nodes = pos + length, nodes + 1
    return "".join(files) if files else f"{nodes} device path node(s)"


def _describe(event_type: int, data: bytes) -> str:
    e = EventType
    if event_type in (e.EV_EFI_VARIABLE_DRIVER_CONFIG, e.EV_EFI_VARIABLE_BOOT, e.EV_EFI_VARIABLE_BOOT2,
                      e.EV_EFI_VARIABLE_AUTHORITY):
        if len(data) >= 32:
            name_len, value_len = struct.unpack_from("<QQ", data, 16)
            if name_len <= (len(data) - 32) // 2:
                name = _utf16(data[32:32 + 2 * name_len])
                value = data[32 + 2 * name_len:]
                if value_len <= 8 and len(value) == value_len:  # small values (flags) are worth showing
                    return f"{name} = {value.hex() or '(empty)'}"
                return f"{name} ({value_len} bytes)"
        return f"variable data of {len(data)} bytes"
    if event_type in (e.EV_EFI_BOOT_SERVICES_APPLICATION, e.EV_EFI_BOOT_SERVICES_DRIVER,
                      e.EV_EFI_RUNTIME_SERVICES_DRIVER):
        if len(data) >= 32:
            _, image_len, _, path_len = struct.unpack_from("<QQQQ", data, 0)
            path = data[32:32 + path_len] if path_len <= len(data) - 32 else b""
            return f"{_device_path_text(path)} ({image_len} bytes)"
        return f"image event of {len(data)} bytes"
    if event_type == e.EV_EFI_PLATFORM_FIRMWARE_BLOB and len(data) == 16:
        base, length = struct.unpack("<QQ", data)
        return f"blob at {base:#x}, {length} bytes"
    if event_type in (e.EV_EFI_PLATFORM_FIRMWARE_BLOB2, e.EV_EFI_HANDOFF_TABLES2) and data:
        return _printable(data[1:1 + data[0]])
    if event_type == e.EV_EFI_HANDOFF_TABLES and len(data) >= 8:
        return f"{struct.unpack_from('<Q', data)[0]} configuration table(s)"
    if event_type == e.EV_EFI_GPT_EVENT and len(data) >= 100:
        return f"GPT with {struct.unpack_from('<Q', data, 92)[0]} partition(s)"
    if event_type == e.EV_SEPARATOR:
        return "error" if data == b"\x01\x00\x00\x00" else "separator"
    return _printable(data)


def describe_event(event: Event) -> str:
    """A short human-readable description of an event's data (never raises; at most about 100 characters)."""
    try:
        return _describe(event.event_type, event.data)
    except (ValueError, struct.error, UnicodeError):
        return f"{len(event.data)} bytes of event data"
