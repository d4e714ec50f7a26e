"""AMD SEV-SNP attestation reports, TCB versions, and the X.509 certificates of AMD's key distribution service.

Pure codecs: no I/O and no cryptography (verifying signatures is the attestation layer's job).

Attestation report (SEV-SNP firmware ABI, 1184 bytes, integers little-endian)::

    offset  size  field
     0x000     4  version (2, 3 or 5; 3 and later carry the CPUID fields, 5 and later the mitigation vectors)
     0x004     4  guest_svn
     0x008     8  policy (guest policy, :class:`GuestPolicy`)
     0x010    16  family_id
     0x020    16  image_id
     0x030     4  vmpl
     0x034     4  signature_algo (1 = ECDSA P-384 with SHA-384)
     0x038     8  current_tcb (:class:`TcbVersion`)
     0x040     8  platform_info (:class:`PlatformInfo`)
     0x048     4  flags: bit 0 author_key_en, bit 1 mask_chip_key, bits 2-4 signing_key (0 VCEK, 1 VLEK, 7 none)
     0x04C     4  reserved
     0x050    64  report_data
     0x090    48  measurement
     0x0C0    32  host_data
     0x0E0    48  id_key_digest
     0x110    48  author_key_digest
     0x140    32  report_id
     0x160    32  report_id_ma
     0x180     8  reported_tcb (the TCB the signing key was derived from)
     0x188     1  cpuid_fam_id (v3+; reserved before)
     0x189     1  cpuid_mod_id (v3+)
     0x18A     1  cpuid_step (v3+)
     0x18B    21  reserved
     0x1A0    64  chip_id (Turin: the first 8 bytes identify the chip, the rest is zero; all zero if masked)
     0x1E0     8  committed_tcb
     0x1E8     3  current build, minor, major (firmware version), then 1 reserved
     0x1EC     3  committed build, minor, major, then 1 reserved
     0x1F0     8  launch_tcb
     0x1F8     8  launch_mit_vector (v5+; reserved before)
     0x200     8  current_mit_vector (v5+)
     0x208   152  reserved
     0x2A0   512  signature: r (72 bytes, little-endian), s (72 bytes, little-endian), 368 reserved

The signature covers bytes 0x000-0x29F.

A TCB version is 8 bytes whose layout depends on the CPU generation: Milan and Genoa put the boot loader
SPL in byte 0, the TEE (PSP OS) SPL in byte 1, the SNP firmware SPL in byte 6 and the microcode SPL in byte
7 (bytes 2-5 reserved); Turin puts the FMC SPL in byte 0, boot loader 1, TEE 2, SNP 3, microcode 7 (bytes
4-6 reserved).

AMD's certificates (VCEK/VLEK, ASK/ASVK, ARK) and the VCEK extensions are read by
:mod:`inclavare.formats.snp_certs`. Malformed input raises :class:`SnpFormatError` naming the structure, the
field and the byte offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

from inclavare.errors import InclavareError

__all__ = [
    "GENERATIONS",
    "REPORT_FIELDS",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "SIG_ALGO_ECDSA_P384_SHA384",
    "SIGNING_KEY_NAMES",
    "SIGNING_KEY_NONE",
    "SIGNING_KEY_VCEK",
    "SIGNING_KEY_VLEK",
    "FirmwareVersion",
    "GuestPolicy",
    "PlatformInfo",
    "SnpFormatError",
    "SnpReport",
    "TcbVersion",
    "generation_from_cpuid",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIG_ALGO_ECDSA_P384_SHA384 = 1
SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1
SIGNING_KEY_NONE = 7
SIGNING_KEY_NAMES = {SIGNING_KEY_VCEK: "VCEK", SIGNING_KEY_VLEK: "VLEK", SIGNING_KEY_NONE: "none"}
SIG_COMPONENT_SIZE = 72
GENERATIONS = ("Milan", "Genoa", "Turin")

_REPORT = "SNP attestation report"

# (name, offset, size): every field of the report, in order, for parsing and for error messages.
REPORT_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("version", 0x000, 4),
    ("guest_svn", 0x004, 4),
    ("policy", 0x008, 8),
    ("family_id", 0x010, 16),
    ("image_id", 0x020, 16),
    ("vmpl", 0x030, 4),
    ("signature_algo", 0x034, 4),
    ("current_tcb", 0x038, 8),
    ("platform_info", 0x040, 8),
    ("flags", 0x048, 4),
    ("reserved0", 0x04C, 4),
    ("report_data", 0x050, 64),
    ("measurement", 0x090, 48),
    ("host_data", 0x0C0, 32),
    ("id_key_digest", 0x0E0, 48),
    ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32),
    ("reported_tcb", 0x180, 8),
    ("cpuid_fam_id", 0x188, 1),
    ("cpuid_mod_id", 0x189, 1),
    ("cpuid_step", 0x18A, 1),
    ("reserved1", 0x18B, 21),
    ("chip_id", 0x1A0, 64),
    ("committed_tcb", 0x1E0, 8),
    ("current_version", 0x1E8, 4),
    ("committed_version", 0x1EC, 4),
    ("launch_tcb", 0x1F0, 8),
    ("launch_mit_vector", 0x1F8, 8),
    ("current_mit_vector", 0x200, 8),
    ("reserved2", 0x208, 152),
    ("signature_r", 0x2A0, 72),
    ("signature_s", 0x2E8, 72),
    ("signature_reserved", 0x330, 368),
)
_OFF = {name: (off, size) for name, off, size in REPORT_FIELDS}


class SnpFormatError(InclavareError):
    """An SNP report or AMD certificate is malformed; names the structure, field and byte offset."""

    def __init__(self, struct_name: str, field_name: str, offset: int, problem: str) -> None:
        self.struct, self.field, self.offset, self.problem = struct_name, field_name, offset, problem
        super().__init__(f"{struct_name}: {field_name} at offset {offset:#x}: {problem}")


def _field_at(offset: int) -> str:
    for name, off, size in REPORT_FIELDS:
        if off <= offset < off + size:
            return name
    return "end of report"


# ---------------------------------------------------------------------------------------------------------
# TCB version, guest policy, platform info


@dataclass(frozen=True)
class TcbVersion:
    """One 8-byte TCB_VERSION, decoded with the layout of its CPU generation (``turin``)."""

    raw: bytes
    turin: bool = False

    def __post_init__(self) -> None:
        if len(self.raw) != 8:
            raise SnpFormatError("TCB version", "raw", 0, f"{len(self.raw)} bytes, expected 8")

    @property
    def bootloader(self) -> int:
        return self.raw[1] if self.turin else self.raw[0]

    @property
    def tee(self) -> int:
        return self.raw[2] if self.turin else self.raw[1]

    @property
    def snp(self) -> int:
        return self.raw[3] if self.turin else self.raw[6]

    @property
    def microcode(self) -> int:
        return self.raw[7]

    @property
    def fmc(self) -> int | None:
        return self.raw[0] if self.turin else None

    def components(self) -> dict[str, int]:
        """The named SPLs, in the order AMD lists them (``fmc`` only for Turin)."""
        out = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        if self.turin:
            out = {"fmc": self.raw[0], **out}
        return out

    @classmethod
    def compose(cls, *, bootloader: int, tee: int, snp: int, microcode: int, fmc: int | None = None,
                turin: bool = False) -> TcbVersion:
        values = {"bootloader": bootloader, "tee": tee, "snp": snp, "microcode": microcode, "fmc": fmc or 0}
        for name, value in values.items():
            if not 0 <= value <= 0xFF:
                raise SnpFormatError("TCB version", name, 0, f"SPL {value} does not fit in a byte")
        if turin:
            raw = bytes([fmc or 0, bootloader, tee, snp, 0, 0, 0, microcode])
        else:
            if fmc is not None:
                raise SnpFormatError("TCB version", "fmc", 0, "only Turin TCB versions have an FMC SPL")
            raw = bytes([bootloader, tee, 0, 0, 0, 0, snp, microcode])
        return cls(raw, turin)

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.components().items())


class _Bit:
    """A read-only flag: bit ``n`` of the owner's 64-bit ``value`` word."""

    def __init__(self, n: int, doc: str = "") -> None:
        self.n, self.__doc__ = n, doc

    @overload
    def __get__(self, obj: None, owner: type) -> _Bit: ...
    @overload
    def __get__(self, obj: _Word, owner: type) -> bool: ...

    def __get__(self, obj: _Word | None, owner: type) -> bool | _Bit:
        return self if obj is None else bool(obj.value >> self.n & 1)


@dataclass(frozen=True)
class _Word:
    value: int


@dataclass(frozen=True)
class GuestPolicy(_Word):
    """The 64-bit guest policy the guest owner set at launch."""

    smt = _Bit(16, "Host SMT allowed.")
    reserved_one = _Bit(17, "Bit 17, which the firmware requires to be 1.")
    migrate_ma = _Bit(18, "Association with a migration agent allowed.")
    debug = _Bit(19, "Debugging allowed.")
    single_socket = _Bit(20, "Guest may only run on one socket.")
    cxl_allow = _Bit(21, "CXL may be populated.")
    mem_aes_256_xts = _Bit(22, "AES-256-XTS memory encryption required.")
    rapl_dis = _Bit(23, "RAPL must be disabled.")
    ciphertext_hiding = _Bit(24, "Ciphertext hiding must be enabled.")
    page_swap_disable = _Bit(25, "Page move/swap commands disabled.")

    @property
    def abi_minor(self) -> int:
        return self.value & 0xFF

    @property
    def abi_major(self) -> int:
        return self.value >> 8 & 0xFF


@dataclass(frozen=True)
class PlatformInfo(_Word):
    """The 64-bit PLATFORM_INFO word: the platform's state when the report was made."""

    smt_enabled = _Bit(0)
    tsme_enabled = _Bit(1)
    ecc_enabled = _Bit(2)
    rapl_disabled = _Bit(3)
    ciphertext_hiding_enabled = _Bit(4)
    alias_check_complete = _Bit(5)
    tio_enabled = _Bit(7)


@dataclass(frozen=True)
class FirmwareVersion:
    major: int
    minor: int
    build: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}"


def generation_from_cpuid(family: int, model: int) -> str | None:
    """The EPYC generation of a CPUID family/model pair (as a v3+ report carries them), or None if unknown."""
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


# ---------------------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class SnpReport:
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes  # raw 8 bytes; decode with tcb()
    platform_info: PlatformInfo
    flags: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: bytes
    cpuid_fam_id: int | None  # None before version 3
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: bytes
    current_version: FirmwareVersion
    committed_version: FirmwareVersion
    launch_tcb: bytes
    launch_mit_vector: int | None  # None before version 5
    current_mit_vector: int | None
    signature_r: int
    signature_s: int
    raw: bytes = b""  # the bytes parsed (empty for a report built in code)

    # -- flags
    @property
    def author_key_en(self) -> bool:
        return bool(self.flags & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.flags >> 1 & 1)

    @property
    def signing_key(self) -> int:
        return self.flags >> 2 & 7

    @property
    def signing_key_name(self) -> str:
        return SIGNING_KEY_NAMES.get(self.signing_key, f"reserved({self.signing_key})")

    @property
    def chip_id_masked(self) -> bool:
        return not any(self.chip_id)

    def cpu_generation(self) -> str | None:
        """Milan/Genoa/Turin from the CPUID fields (v3+), else None."""
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return generation_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def tcb(self, name: str, turin: bool) -> TcbVersion:
        """One of ``current_tcb reported_tcb committed_tcb launch_tcb``, decoded for the CPU generation."""
        if name not in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
            raise KeyError(name)
        raw: bytes = getattr(self, name)
        return TcbVersion(raw, turin)

    def signed_bytes(self) -> bytes:
        return (self.raw or self.to_bytes())[:SIGNED_SIZE]

    # -- codec
    @classmethod
    def parse(cls, data: bytes) -> SnpReport:
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            if len(data) < REPORT_SIZE:
                where = _field_at(len(data))
                raise SnpFormatError(_REPORT, where, len(data),
                                     f"truncated: {len(data)} bytes, a report is exactly {REPORT_SIZE}")
            raise SnpFormatError(_REPORT, "end of report", REPORT_SIZE,
                                 f"{len(data) - REPORT_SIZE} bytes after the {REPORT_SIZE}-byte report")

        def raw(name: str) -> bytes:
            off, size = _OFF[name]
            return data[off:off + size]

        def u(name: str) -> int:
            return int.from_bytes(raw(name), "little")

        version = u("version")
        if version < 2:
            raise SnpFormatError(_REPORT, "version", 0, f"version {version} is not an SNP attestation report "
                                 "version this codec reads (2 and later)")
        flags = u("flags")
        key = flags >> 2 & 7
        if key not in SIGNING_KEY_NAMES:
            raise SnpFormatError(_REPORT, "flags", 0x48, f"signing_key {key} is a reserved encoding")
        v3 = version >= 3
        v5 = version >= 5

        def fw(name: str) -> FirmwareVersion:
            b = raw(name)
            return FirmwareVersion(major=b[2], minor=b[1], build=b[0])

        return cls(
            version=version,
            guest_svn=u("guest_svn"),
            policy=GuestPolicy(u("policy")),
            family_id=raw("family_id"),
            image_id=raw("image_id"),
            vmpl=u("vmpl"),
            signature_algo=u("signature_algo"),
            current_tcb=raw("current_tcb"),
            platform_info=PlatformInfo(u("platform_info")),
            flags=flags,
            report_data=raw("report_data"),
            measurement=raw("measurement"),
            host_data=raw("host_data"),
            id_key_digest=raw("id_key_digest"),
            author_key_digest=raw("author_key_digest"),
            report_id=raw("report_id"),
            report_id_ma=raw("report_id_ma"),
            reported_tcb=raw("reported_tcb"),
            cpuid_fam_id=u("cpuid_fam_id") if v3 else None,
            cpuid_mod_id=u("cpuid_mod_id") if v3 else None,
            cpuid_step=u("cpuid_step") if v3 else None,
            chip_id=raw("chip_id"),
            committed_tcb=raw("committed_tcb"),
            current_version=fw("current_version"),
            committed_version=fw("committed_version"),
            launch_tcb=raw("launch_tcb"),
            launch_mit_vector=u("launch_mit_vector") if v5 else None,
            current_mit_vector=u("current_mit_vector") if v5 else None,
            signature_r=u("signature_r"),
            signature_s=u("signature_s"),
            raw=data,
        )

    def to_bytes(self) -> bytes:
        """The 1184-byte encoding (reserved fields zero). Fields a version does not have must be None."""
        out = bytearray(REPORT_SIZE)

        def put(name: str, value: bytes) -> None:
            off, size = _OFF[name]
            if len(value) != size:
                raise SnpFormatError(_REPORT, name, off, f"{len(value)} bytes, the field holds {size}")
            out[off:off + size] = value

        def put_int(name: str, value: int) -> None:
            size = _OFF[name][1]
            if not 0 <= value < 1 << (8 * size):
                raise SnpFormatError(_REPORT, name, _OFF[name][0], f"{value} does not fit in {size} bytes")
            put(name, value.to_bytes(size, "little"))

        put_int("version", self.version)
        put_int("guest_svn", self.guest_svn)
        put_int("policy", self.policy.value)
        put("family_id", self.family_id)
        put("image_id", self.image_id)
        put_int("vmpl", self.vmpl)
        put_int("signature_algo", self.signature_algo)
        put("current_tcb", self.current_tcb)
        put_int("platform_info", self.platform_info.value)
        put_int("flags", self.flags)
        for name in ("report_data", "measurement", "host_data", "id_key_digest", "author_key_digest",
                     "report_id", "report_id_ma", "reported_tcb", "chip_id", "committed_tcb", "launch_tcb"):
            put(name, getattr(self, name))
        for name in ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step"):
            value = getattr(self, name)
            if value is not None:
                put_int(name, value)
        for name in ("launch_mit_vector", "current_mit_vector"):
            value = getattr(self, name)
            if value is not None:
                put_int(name, value)
        for name, v in (("current_version", self.current_version), ("committed_version", self.committed_version)):
            put(name, bytes([v.build, v.minor, v.major, 0]))
        put_int("signature_r", self.signature_r)
        put_int("signature_s", self.signature_s)
        return bytes(out)
