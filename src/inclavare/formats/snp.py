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

Certificates: AMD's VCEK/VLEK, ASK/ASVK and ARK certificates are read by a small strict DER reader
(:func:`parse_certificate`) that keeps the exact TBS bytes for signature checks and reads the serial number
itself -- genuine VCEKs have serial number 0, which general-purpose X.509 libraries deprecate.
:func:`decode_vcek_extensions` reads AMD's extensions under 1.3.6.1.4.1.3704.1 (struct version, product
name, the SPLs, hwID, CSP ID). Malformed input raises :class:`SnpFormatError` naming the structure, the
field and the byte offset.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
from dataclasses import dataclass

from inclavare.errors import InclavareError
from inclavare.formats.der import DerReader

__all__ = [
    "AMD_OID",
    "GENERATIONS",
    "REPORT_FIELDS",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "SIG_ALGO_ECDSA_P384_SHA384",
    "SIGNING_KEY_NAMES",
    "SIGNING_KEY_NONE",
    "SIGNING_KEY_VCEK",
    "SIGNING_KEY_VLEK",
    "Certificate",
    "Extension",
    "FirmwareVersion",
    "GuestPolicy",
    "PlatformInfo",
    "PssParams",
    "SnpFormatError",
    "SnpReport",
    "TcbVersion",
    "VcekExtensions",
    "decode_vcek_extensions",
    "generation_from_cpuid",
    "parse_certificate",
    "parse_pss_params",
    "pem_certificates",
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


@dataclass(frozen=True)
class GuestPolicy:
    """The 64-bit guest policy the guest owner set at launch."""

    value: int

    def _bit(self, n: int) -> bool:
        return bool(self.value >> n & 1)

    @property
    def abi_minor(self) -> int:
        return self.value & 0xFF

    @property
    def abi_major(self) -> int:
        return self.value >> 8 & 0xFF

    @property
    def smt(self) -> bool:
        """Host SMT allowed."""
        return self._bit(16)

    @property
    def reserved_one(self) -> bool:
        """Bit 17, which the firmware requires to be 1."""
        return self._bit(17)

    @property
    def migrate_ma(self) -> bool:
        """Association with a migration agent allowed."""
        return self._bit(18)

    @property
    def debug(self) -> bool:
        """Debugging allowed."""
        return self._bit(19)

    @property
    def single_socket(self) -> bool:
        """Guest may only run on one socket."""
        return self._bit(20)

    @property
    def cxl_allow(self) -> bool:
        """CXL may be populated."""
        return self._bit(21)

    @property
    def mem_aes_256_xts(self) -> bool:
        """AES-256-XTS memory encryption required."""
        return self._bit(22)

    @property
    def rapl_dis(self) -> bool:
        """RAPL must be disabled."""
        return self._bit(23)

    @property
    def ciphertext_hiding(self) -> bool:
        """Ciphertext hiding must be enabled."""
        return self._bit(24)

    @property
    def page_swap_disable(self) -> bool:
        """Page move/swap commands disabled."""
        return self._bit(25)


@dataclass(frozen=True)
class PlatformInfo:
    """The 64-bit PLATFORM_INFO word: the platform's state when the report was made."""

    value: int

    def _bit(self, n: int) -> bool:
        return bool(self.value >> n & 1)

    @property
    def smt_enabled(self) -> bool:
        return self._bit(0)

    @property
    def tsme_enabled(self) -> bool:
        return self._bit(1)

    @property
    def ecc_enabled(self) -> bool:
        return self._bit(2)

    @property
    def rapl_disabled(self) -> bool:
        return self._bit(3)

    @property
    def ciphertext_hiding_enabled(self) -> bool:
        return self._bit(4)

    @property
    def alias_check_complete(self) -> bool:
        return self._bit(5)

    @property
    def tio_enabled(self) -> bool:
        return self._bit(7)


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


# ---------------------------------------------------------------------------------------------------------
# DER and X.509


_SEQ, _SET, _INT, _BITS, _OCTETS, _NULL, _OID, _BOOL = 0x30, 0x31, 0x02, 0x03, 0x04, 0x05, 0x06, 0x01
_UTCTIME, _GENTIME = 0x17, 0x18
_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}

AMD_OID = "1.3.6.1.4.1.3704.1"
OID_COMMON_NAME = "2.5.4.3"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA1 = "1.3.14.3.2.26"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"


def _der_reader(data: bytes, what: str, pos: int = 0, end: int | None = None) -> DerReader:
    """A strict DER reader whose errors are SnpFormatErrors about ``what``."""

    def fail(field_name: str, offset: int, problem: str) -> SnpFormatError:
        return SnpFormatError(what, field_name, offset, problem)

    return DerReader(data, fail, pos, end)


def _decode_time(der: DerReader, field_name: str) -> datetime.datetime:
    start = der.pos
    tag, cstart, cend = der.read(field_name)
    text = der.data[cstart:cend]
    if tag == _UTCTIME and re.fullmatch(rb"\d{12}Z", text):
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:12]
    elif tag == _GENTIME and re.fullmatch(rb"\d{14}Z", text):
        year = int(text[:4])
        rest = text[4:14]
    else:
        raise der.fail(field_name, start, "not a DER UTCTime or GeneralizedTime (YYMMDDhhmmssZ)")
    try:
        return datetime.datetime(year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]),
                                 int(rest[8:10]), tzinfo=datetime.UTC)
    except ValueError as e:
        raise der.fail(field_name, start, f"impossible date: {e}") from None


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes  # the content of the extnValue OCTET STRING


@dataclass(frozen=True)
class Certificate:
    """An X.509 v3 certificate, read field by field; ``tbs`` is the exact signed bytes."""

    der: bytes
    tbs: bytes
    version: int  # 1, 2 or 3
    serial: int
    tbs_signature_algorithm: bytes  # the AlgorithmIdentifier inside the TBS (DER)
    signature_algorithm: bytes  # the outer AlgorithmIdentifier (DER); must equal the inner one
    signature_oid: str
    signature_params: bytes | None  # DER of the algorithm parameters, if present
    issuer: bytes  # the Name (DER), compared byte for byte
    subject: bytes
    issuer_cn: str | None
    subject_cn: str | None
    not_before: datetime.datetime
    not_after: datetime.datetime
    spki: bytes  # SubjectPublicKeyInfo (DER)
    extensions: tuple[Extension, ...]
    signature: bytes
    name: str = "certificate"

    def extension(self, oid: str) -> Extension | None:
        for ext in self.extensions:
            if ext.oid == oid:
                return ext
        return None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def self_issued(self) -> bool:
        return self.issuer == self.subject

    def basic_constraints_ca(self) -> bool:
        """True iff a basicConstraints extension says cA = TRUE."""
        ext = self.extension(OID_BASIC_CONSTRAINTS)
        if ext is None:
            return False
        der = _der_reader(ext.value, self.name)
        seq = der.sub(_SEQ, "basicConstraints")
        der.done("basicConstraints")
        ca = seq.boolean("basicConstraints.cA") if seq.peek_tag() == _BOOL else False
        if seq.peek_tag() == _INT:
            seq.integer("basicConstraints.pathLenConstraint")
        seq.done("basicConstraints")
        return ca


def _name(der: DerReader, field_name: str) -> tuple[bytes, str | None]:
    start = der.pos
    seq = der.sub(_SEQ, field_name)
    cn: str | None = None
    while not seq.at_end():
        rdn = seq.sub(_SET, field_name)
        while not rdn.at_end():
            atv = rdn.sub(_SEQ, field_name)
            oid = atv.oid(field_name)
            vstart = atv.pos
            tag, cstart, cend = atv.read(field_name)
            atv.done(field_name)
            if oid == OID_COMMON_NAME:
                codec = _STRING_TAGS.get(tag)
                if codec is None:
                    raise der.fail(field_name, vstart, f"commonName has string tag {tag:#04x}")
                try:
                    cn = der.data[cstart:cend].decode(codec)
                except UnicodeDecodeError:
                    raise der.fail(field_name, vstart, "commonName is not valid text") from None
    return der.data[start:der.pos], cn


def parse_certificate(data: bytes, name: str = "certificate") -> Certificate:
    """Read a DER X.509 certificate strictly (no trailing bytes, TBS and outer algorithms equal)."""
    data = bytes(data)
    top = _der_reader(data, name)
    cert = top.sub(_SEQ, "Certificate")
    top.done("Certificate")
    tbs_start = cert.pos
    tbs = cert.sub(_SEQ, "tbsCertificate")
    tbs_bytes = data[tbs_start:cert.pos]
    outer_alg = cert.element("signatureAlgorithm")
    sig_pos = cert.pos
    sstart, send = cert.expect(_BITS, "signatureValue")
    if send == sstart or data[sstart] != 0:
        raise top.fail("signatureValue", sig_pos, "BIT STRING with unused bits")
    signature = data[sstart + 1:send]
    cert.done("Certificate")

    version = 1
    if tbs.peek_tag() == 0xA0:
        vwrap = tbs.sub(0xA0, "version")
        version = vwrap.integer("version") + 1
        vwrap.done("version")
        if version not in (2, 3):
            raise top.fail("version", tbs_start, f"X.509 version {version} is not 1, 2 or 3")
    serial = tbs.integer("serialNumber")
    alg_pos = tbs.pos
    inner_alg = tbs.element("signature")
    if inner_alg != outer_alg:
        raise top.fail("signature", alg_pos, "TBS signature algorithm differs from the outer one")
    alg = _der_reader(data, name, alg_pos, alg_pos + len(inner_alg)).sub(_SEQ, "signature")
    sig_oid = alg.oid("signature.algorithm")
    params = None if alg.at_end() else alg.element("signature.parameters")
    alg.done("signature")
    issuer, issuer_cn = _name(tbs, "issuer")
    validity = tbs.sub(_SEQ, "validity")
    not_before = _decode_time(validity, "validity.notBefore")
    not_after = _decode_time(validity, "validity.notAfter")
    validity.done("validity")
    subject, subject_cn = _name(tbs, "subject")
    spki = tbs.element("subjectPublicKeyInfo")
    if spki[0] != _SEQ:
        raise top.fail("subjectPublicKeyInfo", tbs.pos - len(spki), "not a SEQUENCE")
    for tag, what in ((0x81, "issuerUniqueID"), (0x82, "subjectUniqueID")):
        if tbs.peek_tag() == tag:
            tbs.read(what)
    extensions: list[Extension] = []
    if tbs.peek_tag() == 0xA3:
        if version != 3:
            raise top.fail("extensions", tbs.pos, "extensions in a certificate that is not version 3")
        wrap = tbs.sub(0xA3, "extensions")
        seq = wrap.sub(_SEQ, "extensions")
        wrap.done("extensions")
        seen: set[str] = set()
        while not seq.at_end():
            epos = seq.pos
            ext = seq.sub(_SEQ, "extension")
            oid = ext.oid("extension.extnID")
            critical = ext.boolean("extension.critical") if ext.peek_tag() == _BOOL else False
            vstart, vend = ext.expect(_OCTETS, "extension.extnValue")
            ext.done("extension")
            if oid in seen:
                raise top.fail("extensions", epos, f"extension {oid} appears twice")
            seen.add(oid)
            extensions.append(Extension(oid, critical, data[vstart:vend]))
    tbs.done("tbsCertificate")
    return Certificate(der=data, tbs=tbs_bytes, version=version, serial=serial, tbs_signature_algorithm=inner_alg,
                       signature_algorithm=outer_alg, signature_oid=sig_oid, signature_params=params,
                       issuer=issuer, subject=subject, issuer_cn=issuer_cn, subject_cn=subject_cn,
                       not_before=not_before, not_after=not_after, spki=spki, extensions=tuple(extensions),
                       signature=signature, name=name)


@dataclass(frozen=True)
class PssParams:
    hash_oid: str
    mgf_oid: str
    mgf_hash_oid: str
    salt_length: int
    trailer_field: int


def parse_pss_params(params: bytes | None, what: str = "RSASSA-PSS parameters") -> PssParams:
    """RSASSA-PSS-params (RFC 4055), with the RFC's defaults for absent fields (SHA-1, MGF1-SHA-1, 20, 1)."""
    if params is None:
        return PssParams(OID_SHA1, OID_MGF1, OID_SHA1, 20, 1)
    top = _der_reader(params, what)
    seq = top.sub(_SEQ, "RSASSA-PSS-params")
    top.done("RSASSA-PSS-params")
    hash_oid, mgf_oid, mgf_hash, salt, trailer = OID_SHA1, OID_MGF1, OID_SHA1, 20, 1

    def hash_alg(der: DerReader, field_name: str) -> str:
        alg = der.sub(_SEQ, field_name)
        oid = alg.oid(field_name)
        if alg.peek_tag() == _NULL:
            alg.expect(_NULL, field_name)
        alg.done(field_name)
        return oid

    if seq.peek_tag() == 0xA0:
        w = seq.sub(0xA0, "hashAlgorithm")
        hash_oid = hash_alg(w, "hashAlgorithm")
        w.done("hashAlgorithm")
    if seq.peek_tag() == 0xA1:
        w = seq.sub(0xA1, "maskGenAlgorithm")
        m = w.sub(_SEQ, "maskGenAlgorithm")
        w.done("maskGenAlgorithm")
        mgf_oid = m.oid("maskGenAlgorithm")
        mgf_hash = hash_alg(m, "maskGenAlgorithm.parameters")
        m.done("maskGenAlgorithm")
    if seq.peek_tag() == 0xA2:
        w = seq.sub(0xA2, "saltLength")
        salt = w.integer("saltLength")
        w.done("saltLength")
    if seq.peek_tag() == 0xA3:
        w = seq.sub(0xA3, "trailerField")
        trailer = w.integer("trailerField")
        w.done("trailerField")
    seq.done("RSASSA-PSS-params")
    return PssParams(hash_oid, mgf_oid, mgf_hash, salt, trailer)


# ---------------------------------------------------------------------------------------------------------
# AMD's VCEK / VLEK extensions


@dataclass(frozen=True)
class VcekExtensions:
    """AMD's extensions of a VCEK or VLEK certificate (OIDs under 1.3.6.1.4.1.3704.1)."""

    struct_version: int
    product_name: str  # e.g. "Milan-B0", "Genoa", "Turin-B0"
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    fmc_spl: int | None  # Turin only
    hwid: bytes | None  # VCEK: the chip ID it was issued for (64 bytes; 8 for Turin)
    csp_id: str | None  # VLEK: the cloud provider it was issued to
    hwid_der_wrapped: bool = False

    @property
    def product_line(self) -> str:
        """The generation part of the product name ("Milan-B0" -> "Milan")."""
        return self.product_name.split("-", 1)[0]

    def tcb(self, turin: bool) -> TcbVersion:
        return TcbVersion.compose(bootloader=self.bl_spl, tee=self.tee_spl, snp=self.snp_spl,
                                  microcode=self.ucode_spl, fmc=self.fmc_spl if turin else None, turin=turin)


def _ext_der(cert: Certificate, oid: str, label: str, tag: int) -> bytes | None:
    ext = cert.extension(oid)
    if ext is None:
        return None
    der = _der_reader(ext.value, cert.name)
    start, end = der.expect(tag, label)
    der.done(label)
    return ext.value[start:end]


def _ext_spl(cert: Certificate, oid: str, label: str, required: bool = True) -> int | None:
    if cert.extension(oid) is None:
        if required:
            raise SnpFormatError(cert.name, label, 0, f"extension {oid} ({label}) is missing")
        return None
    ext = cert.extension(oid)
    assert ext is not None
    der = _der_reader(ext.value, cert.name)
    value = der.integer(label)
    der.done(label)
    if not 0 <= value <= 0xFF:
        raise SnpFormatError(cert.name, label, 0, f"SPL {value} is outside 0..255")
    return value


def _ext_string(cert: Certificate, oid: str, label: str) -> str | None:
    raw = _ext_der(cert, oid, label, 0x16)  # IA5String
    if raw is None:
        return None
    if any(b > 0x7F for b in raw):
        raise SnpFormatError(cert.name, label, 0, "IA5String holds non-ASCII bytes")
    return raw.decode("ascii")


def decode_vcek_extensions(cert: Certificate) -> VcekExtensions:
    """Read AMD's VCEK/VLEK extensions. hwID is taken as raw bytes (as AMD's KDS issues it); a DER OCTET
    STRING wrapper is also understood and flagged in ``hwid_der_wrapped``."""
    struct_version = _ext_spl(cert, AMD_OID + ".1", "structVersion")
    product = _ext_string(cert, AMD_OID + ".2", "productName")
    if product is None:
        raise SnpFormatError(cert.name, "productName", 0, f"extension {AMD_OID}.2 (productName) is missing")
    hwid: bytes | None = None
    wrapped = False
    ext = cert.extension(AMD_OID + ".4")
    if ext is not None:
        value = ext.value
        if len(value) in (8, 64):
            hwid = value
        elif len(value) in (10, 66) and value[0] == _OCTETS and value[1] == len(value) - 2:
            hwid, wrapped = value[2:], True
        else:
            raise SnpFormatError(cert.name, "hwID", 0, f"{len(value)} bytes, expected a 64-byte (or Turin "
                                 "8-byte) chip ID")
    csp_id = _ext_string(cert, AMD_OID + ".5", "cspId")
    if hwid is not None and csp_id is not None:
        raise SnpFormatError(cert.name, "hwID", 0, "certificate carries both a hwID and a CSP ID")
    spl = {label: _ext_spl(cert, f"{AMD_OID}.3.{n}", label)
           for n, label in ((1, "blSPL"), (2, "teeSPL"), (3, "snpSPL"), (8, "ucodeSPL"))}
    fmc = _ext_spl(cert, AMD_OID + ".3.9", "fmcSPL", required=False)
    assert struct_version is not None
    return VcekExtensions(struct_version=struct_version, product_name=product, bl_spl=spl["blSPL"] or 0,
                          tee_spl=spl["teeSPL"] or 0, snp_spl=spl["snpSPL"] or 0, ucode_spl=spl["ucodeSPL"] or 0,
                          fmc_spl=fmc, hwid=hwid, csp_id=csp_id, hwid_der_wrapped=wrapped)


# ---------------------------------------------------------------------------------------------------------
# PEM

_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----([^-]*)-----END CERTIFICATE-----")


def pem_certificates(data: bytes | str) -> list[bytes]:
    """The DER certificates of a PEM bundle, in order (other PEM blocks and text between them are ignored)."""
    raw = data.encode("latin-1", "replace") if isinstance(data, str) else bytes(data)
    out: list[bytes] = []
    for i, m in enumerate(_PEM_RE.finditer(raw)):
        body = re.sub(rb"\s+", b"", m.group(1))
        try:
            out.append(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            raise SnpFormatError("PEM bundle", f"certificate {i}", m.start(), "invalid base64") from None
    return out

