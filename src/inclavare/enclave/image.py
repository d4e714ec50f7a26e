"""The enclave image format of the simulated SGX enclave runtime (``builtin:sim``); see docs/enclave-image.md.

One file holds the enclave settings, the payload (a WebAssembly module or a native blob) and the SIGSTRUCT
that signs it. The payload and the settings are laid out as enclave pages in a fixed, documented way and
measured with the SGX ECREATE/EADD/EEXTEND algorithm, so MRENCLAVE means the same thing it means on hardware:
any change to the payload or the settings changes it, and the SIGSTRUCT's ENCLAVEHASH binds the signer to it.

    build(payload, kind, settings) -> UnsignedImage      (.mrenclave, .signing_material())
    sign(unsigned, key_pem) -> bytes                     client-side signing
    assemble(unsigned, signature, public_key_pem) -> bytes   server-side signing (signature from a remote signer)
    load(path_or_bytes) -> EnclaveImage                  re-measures and verifies everything, or refuses

Every refusal is an :class:`EnclaveImageError` with a one-line message saying what did not match.
"""

from __future__ import annotations

import datetime
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError
from inclavare.formats.sgx import (
    PAGE_SIZE,
    SECINFO_REG_R,
    SECINFO_REG_RW,
    SECINFO_REG_RX,
    SECINFO_TCS,
    SIGSTRUCT_SIZE,
    VENDOR_OTHER,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    SgxFormatError,
    SigStruct,
)
from inclavare.formats.sgxs import Measurement, enclave_size_for

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "KINDS",
    "EnclaveImage",
    "EnclaveImageError",
    "EnclaveLayout",
    "EnclaveSettings",
    "Region",
    "UnsignedImage",
    "assemble",
    "build",
    "layout_for",
    "load",
    "load_unsigned",
    "measure",
    "payload_of",
    "sign",
]

MAGIC = b"INCLENCL"
FORMAT_VERSION = 1
HEADER_SIZE = 32
SETTINGS_SIZE = 128
KINDS = {"wasm": 1, "native": 2}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
FLAG_DEBUG = 0x1

SSAFRAMESIZE = 1  # pages per SSA frame
NSSA = 2  # SSA frames per thread
MAX_PAYLOAD = 256 << 20
MAX_HEAP = 1 << 30
MAX_STACK = 64 << 20
MAX_TCS = 256
DEFAULT_HEAP = 16 << 20
DEFAULT_STACK = 256 << 10

# What our SIGSTRUCTs ask EINIT to enforce: every ATTRIBUTES flag exactly as signed; x87/SSE/MPX as signed
# (AVX and AVX-512 may be enabled by the platform); MISCSELECT exactly as signed.
ATTRIBUTE_MASK = Attributes(0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFF1B)
MISC_MASK = 0xFFFFFFFF
# ATTRIBUTES bits a loader could use to weaken the enclave if the signer did not pin them.
_PINNED_FLAGS = int(AttributeFlags.DEBUG | AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY
                    | AttributeFlags.EINITTOKENKEY | AttributeFlags.KSS)


class EnclaveImageError(InclavareError):
    """An enclave image or its settings are unusable: malformed, unsigned, tampered with, or inconsistent."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}" if where else problem)


# --------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class EnclaveSettings:
    """What the enclave is built with. Sizes are bytes and must be multiples of 4096."""

    isvprodid: int = 0
    isvsvn: int = 0
    debug: bool = False
    heap_size: int = DEFAULT_HEAP
    stack_size: int = DEFAULT_STACK
    tcs_count: int = 1
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> EnclaveImageError:
            return EnclaveImageError(f"settings.{name}", problem)

        for name, value, hi in (("isvprodid", self.isvprodid, 0xFFFF), ("isvsvn", self.isvsvn, 0xFFFF),
                                ("tcs_count", self.tcs_count, MAX_TCS), ("heap_size", self.heap_size, MAX_HEAP),
                                ("stack_size", self.stack_size, MAX_STACK)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
                raise bad(name, f"{value!r} is not an integer in 0..{hi}")
        if not isinstance(self.debug, bool):
            raise bad("debug", f"{self.debug!r} is not a boolean")
        if self.tcs_count < 1:
            raise bad("tcs_count", "an enclave needs at least one TCS")
        for name, size in (("heap_size", self.heap_size), ("stack_size", self.stack_size)):
            if size % PAGE_SIZE:
                raise bad(name, f"{size} is not a multiple of {PAGE_SIZE}")
        if self.stack_size < PAGE_SIZE:
            raise bad("stack_size", f"must be at least {PAGE_SIZE}")
        for name, ident in (("isvfamilyid", self.isvfamilyid), ("isvextprodid", self.isvextprodid)):
            if not isinstance(ident, bytes) or len(ident) != 16:
                raise bad(name, "must be 16 bytes")

    def encode(self, kind: str, payload_size: int) -> bytes:
        return struct.pack("<BBHHHIIQQQ16s16s56x", KINDS[kind], FLAG_DEBUG if self.debug else 0, self.isvprodid,
                           self.isvsvn, self.tcs_count, SSAFRAMESIZE, 0, self.heap_size, self.stack_size,
                           payload_size, self.isvfamilyid, self.isvextprodid)

    @classmethod
    def decode(cls, data: bytes) -> tuple[str, EnclaveSettings, int]:
        """(kind, settings, payload size) from the 128-byte settings block."""
        (kind_code, flags, isvprodid, isvsvn, tcs, ssa, reserved, heap, stack, psize, fam, ext) = struct.unpack(
            "<BBHHHIIQQQ16s16s56x", data)
        if kind_code not in _KIND_NAMES:
            raise EnclaveImageError("settings", f"unknown payload kind {kind_code}")
        if flags & ~FLAG_DEBUG:
            raise EnclaveImageError("settings", f"unknown flags {flags:#x}")
        if ssa != SSAFRAMESIZE:
            raise EnclaveImageError("settings", f"SSA frame size {ssa} is not {SSAFRAMESIZE}")
        if reserved or any(data[72:]):
            raise EnclaveImageError("settings", "reserved bytes are not zero")
        settings = cls(isvprodid=isvprodid, isvsvn=isvsvn, debug=bool(flags & FLAG_DEBUG), heap_size=heap,
                       stack_size=stack, tcs_count=tcs, isvfamilyid=fam, isvextprodid=ext)
        return _KIND_NAMES[kind_code], settings, psize


def _header(payload_size: int) -> bytes:
    return struct.pack("<8sHHIQ8x", MAGIC, FORMAT_VERSION, SETTINGS_SIZE, 0, payload_size)


def _settings_page(kind: str, settings: EnclaveSettings, payload_size: int) -> bytes:
    return _header(payload_size)[:16] + settings.encode(kind, payload_size)


# --------------------------------------------------------------------------------------------------
# Layout and measurement


@dataclass(frozen=True)
class Region:
    """A run of enclave pages: where, how many, SECINFO flags, and whether their content is measured."""

    name: str
    offset: int
    pages: int
    flags: int
    measured: bool

    @property
    def end(self) -> int:
        return self.offset + self.pages * PAGE_SIZE


@dataclass(frozen=True)
class EnclaveLayout:
    """The page layout an image is loaded (and measured) with; ``regions`` are in EADD order."""

    size: int
    regions: tuple[Region, ...]
    entry: int
    ssa_offsets: tuple[int, ...]
    stack_tops: tuple[int, ...]

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)


def layout_for(kind: str, settings: EnclaveSettings, payload_size: int) -> EnclaveLayout:
    """Settings page, TCS pages, SSA frames, [guard], payload, [guard], heap, then per thread [guard] + stack."""
    if kind not in KINDS:
        raise EnclaveImageError("kind", f"{kind!r} is not one of {', '.join(sorted(KINDS))}")
    pages = (payload_size + PAGE_SIZE - 1) // PAGE_SIZE
    regions: list[Region] = []
    pos = 0

    def add(name: str, count: int, flags: int, measured: bool, gap: int = 0) -> Region:
        nonlocal pos
        r = Region(name, pos + gap * PAGE_SIZE, count, flags, measured)
        regions.append(r)
        pos = r.end
        return r

    add("settings", 1, SECINFO_REG_R, True)
    add("tcs", settings.tcs_count, SECINFO_TCS, True)
    ssa = add("ssa", settings.tcs_count * NSSA * SSAFRAMESIZE, SECINFO_REG_RW, True)
    payload = add("payload", pages, SECINFO_REG_RX if kind == "native" else SECINFO_REG_R, True, gap=1)
    if settings.heap_size:
        add("heap", settings.heap_size // PAGE_SIZE, SECINFO_REG_RW, False, gap=1)
    tops = []
    for t in range(settings.tcs_count):
        tops.append(add(f"stack{t}", settings.stack_size // PAGE_SIZE, SECINFO_REG_RW, True, gap=1).end)
    frame = NSSA * SSAFRAMESIZE * PAGE_SIZE
    return EnclaveLayout(
        size=enclave_size_for(pos), regions=tuple(regions), entry=payload.offset,
        ssa_offsets=tuple(ssa.offset + t * frame for t in range(settings.tcs_count)), stack_tops=tuple(tops),
    )


def _tcs_page(lay: EnclaveLayout, thread: int) -> bytes:
    # STATE, FLAGS, OSSA, CSSA, NSSA, OENTRY, AEP, OFSBASGX, OGSBASGX, FSLIMIT, GSLIMIT (SDM TCS layout)
    top = lay.stack_tops[thread]
    return struct.pack("<QQQIIQQQQII", 0, 0, lay.ssa_offsets[thread], 0, NSSA, lay.entry, 0, top, top,
                       0xFFFFFFFF, 0xFFFFFFFF)


def _region_pages(lay: EnclaveLayout, r: Region, kind: str, settings: EnclaveSettings,
                  payload: bytes) -> Iterator[bytes]:
    if r.name == "settings":
        yield _settings_page(kind, settings, len(payload))
    elif r.name == "tcs":
        for t in range(r.pages):
            yield _tcs_page(lay, t)
    elif r.name == "payload":
        for i in range(r.pages):
            yield payload[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
    else:
        for _ in range(r.pages):
            yield b""


def _measure(kind: str, settings: EnclaveSettings, payload: bytes, keep_log: bool = False) -> Measurement:
    lay = layout_for(kind, settings, len(payload))
    m = Measurement(keep_log=keep_log)
    m.ecreate(SSAFRAMESIZE, lay.size)
    for r in lay.regions:
        if r.measured is False and r.pages > 1:
            m.eadd_pages(r.offset, r.pages, r.flags)  # zero pages, EADD only (the heap): in one piece
            continue
        for i, page in enumerate(_region_pages(lay, r, kind, settings, payload)):
            m.add_page(r.offset + i * PAGE_SIZE, page, r.flags, r.measured)
    return m


def _attributes_for(settings: EnclaveSettings) -> Attributes:
    flags = int(AttributeFlags.MODE64BIT) | (int(AttributeFlags.DEBUG) if settings.debug else 0)
    return Attributes(flags, XFRM_LEGACY)


# --------------------------------------------------------------------------------------------------
# Build, sign, assemble


def _check_payload(payload: bytes, kind: str) -> None:
    if kind not in KINDS:
        raise EnclaveImageError("kind", f"{kind!r} is not one of {', '.join(sorted(KINDS))}")
    if not isinstance(payload, (bytes, bytearray)):
        raise EnclaveImageError("payload", f"must be bytes, not {type(payload).__name__}")
    if not payload:
        raise EnclaveImageError("payload", "is empty")
    if len(payload) > MAX_PAYLOAD:
        raise EnclaveImageError("payload", f"is {len(payload)} bytes, more than {MAX_PAYLOAD}")
    if kind == "wasm" and bytes(payload[:4]) != b"\0asm":
        raise EnclaveImageError("payload", "kind is wasm but the payload is not a WebAssembly binary (no \\0asm)")


@dataclass(frozen=True)
class UnsignedImage:
    """A measured, not yet signed image. ``sigstruct`` is the template that will be signed."""

    payload: bytes
    kind: str
    settings: EnclaveSettings
    mrenclave: bytes
    sigstruct: SigStruct

    def signing_material(self) -> bytes:
        """The 256 bytes to send to a signer (SIGSTRUCT HEADER || BODY)."""
        return self.sigstruct.signing_material()

    def to_bytes(self, sigstruct: SigStruct | None = None) -> bytes:
        sig = self.sigstruct if sigstruct is None else sigstruct
        return (_header(len(self.payload)) + self.settings.encode(self.kind, len(self.payload)) + self.payload
                + sig.pack())


def build(payload: bytes, kind: str, settings: EnclaveSettings | None = None, *,
          date: datetime.date | None = None, vendor: int = VENDOR_OTHER) -> UnsignedImage:
    """Lay out and measure ``payload``; returns the image with its SIGSTRUCT template (date defaults to today)."""
    from inclavare.sgx.signing import SigningError, build_sigstruct

    settings = EnclaveSettings() if settings is None else settings
    _check_payload(payload, kind)
    payload = bytes(payload)
    mrenclave = _measure(kind, settings, payload).digest()
    try:
        sig = build_sigstruct(
            mrenclave, attributes=_attributes_for(settings), attribute_mask=ATTRIBUTE_MASK, miscselect=0,
            miscmask=MISC_MASK, isvprodid=settings.isvprodid, isvsvn=settings.isvsvn, date=date, vendor=vendor,
            debug=settings.debug, isvfamilyid=settings.isvfamilyid, isvextprodid=settings.isvextprodid,
        )
    except SigningError as e:
        raise EnclaveImageError("SIGSTRUCT", str(e)) from None
    return UnsignedImage(payload, kind, settings, mrenclave, sig)


def sign(unsigned: UnsignedImage, key_pem: bytes | str | RSAPrivateKey, password: bytes | None = None) -> bytes:
    """Client-side signing with an RSA-3072 e=3 private key; returns the complete image file."""
    from inclavare.sgx.signing import SigningError
    from inclavare.sgx.signing import sign as sign_sigstruct

    try:
        sig = sign_sigstruct(unsigned.sigstruct, key_pem, password)
    except SigningError as e:
        raise EnclaveImageError("signing", str(e)) from None
    return unsigned.to_bytes(sig)


def assemble(unsigned: UnsignedImage, signature: bytes, public_key_pem: bytes | str | RSAPublicKey) -> bytes:
    """Server-side signing: a big-endian PKCS#1 v1.5 signature of ``unsigned.signing_material()`` and the
    signer's public key make the complete image file (checked before it is returned)."""
    from inclavare.sgx.signing import SigningError
    from inclavare.sgx.signing import assemble as assemble_sigstruct

    try:
        sig = assemble_sigstruct(unsigned.signing_material(), signature, public_key_pem)
    except SigningError as e:
        raise EnclaveImageError("signing", str(e)) from None
    return unsigned.to_bytes(sig)


# --------------------------------------------------------------------------------------------------
# Load


@dataclass(frozen=True)
class EnclaveImage:
    """A loaded image whose signature, measurement and settings were all checked."""

    payload: bytes
    kind: str
    settings: EnclaveSettings
    sigstruct: SigStruct
    mrenclave: bytes
    layout: EnclaveLayout = field(repr=False)

    @property
    def mrsigner(self) -> bytes:
        return self.sigstruct.mrsigner

    @property
    def attributes(self) -> Attributes:
        """ATTRIBUTES the enclave runs with (as signed; INIT is set once the enclave is initialised)."""
        return self.sigstruct.attributes

    @property
    def miscselect(self) -> int:
        return self.sigstruct.miscselect

    @property
    def isvprodid(self) -> int:
        return self.sigstruct.isvprodid

    @property
    def isvsvn(self) -> int:
        return self.sigstruct.isvsvn


@dataclass(frozen=True)
class _Parts:
    kind: str
    settings: EnclaveSettings
    payload: bytes
    sigstruct: bytes


MAX_IMAGE = 1 << 30  # bytes: an enclave image (its payload with the enclave's settings and signature)


def _read(source: str | os.PathLike[str] | bytes | bytearray) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "enclave image"
    where = f"enclave image {os.fspath(source)}"
    import stat

    try:
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise EnclaveImageError(where, "not a regular file")
            data = f.read(MAX_IMAGE + 1)
    except OSError as e:
        raise EnclaveImageError(where, e.strerror or str(e)) from None
    if len(data) > MAX_IMAGE:
        raise EnclaveImageError(where, f"larger than {MAX_IMAGE >> 20} MiB")
    return data, where


def _split(data: bytes, where: str) -> _Parts:
    fixed = HEADER_SIZE + SETTINGS_SIZE
    if len(data) < 8 or data[:8] != MAGIC:
        raise EnclaveImageError(where, "not an enclave image (bad magic)")
    if len(data) < fixed:
        raise EnclaveImageError(where, f"truncated: {len(data)} bytes, the header alone needs {fixed}")
    magic, version, settings_size, reserved, payload_size = struct.unpack("<8sHHIQ8x", data[:HEADER_SIZE])
    if version != FORMAT_VERSION:
        raise EnclaveImageError(where, f"format version {version} is not supported (this reader knows "
                                       f"{FORMAT_VERSION})")
    if settings_size != SETTINGS_SIZE or reserved or any(data[24:HEADER_SIZE]):
        raise EnclaveImageError(where, "malformed header")
    if payload_size == 0 or payload_size > MAX_PAYLOAD:
        raise EnclaveImageError(where, f"payload size {payload_size} is out of range")
    total = fixed + payload_size + SIGSTRUCT_SIZE
    if len(data) < total:
        raise EnclaveImageError(where, f"truncated: {len(data)} bytes, the header says {total}")
    if len(data) > total:
        raise EnclaveImageError(where, f"{len(data) - total} bytes of trailing data after the SIGSTRUCT")
    try:
        kind, settings, psize = EnclaveSettings.decode(data[HEADER_SIZE:fixed])
    except EnclaveImageError as e:
        raise EnclaveImageError(where, str(e)) from None
    if psize != payload_size:
        raise EnclaveImageError(where, f"settings say the payload is {psize} bytes, the header {payload_size}")
    payload = data[fixed:fixed + payload_size]
    try:
        _check_payload(payload, kind)
    except EnclaveImageError as e:
        raise EnclaveImageError(where, str(e)) from None
    return _Parts(kind, settings, payload, data[fixed + payload_size:])


def load_unsigned(source: str | os.PathLike[str] | bytes | bytearray) -> UnsignedImage:
    """An image written by :meth:`UnsignedImage.to_bytes` (its SIGSTRUCT a template), read back to be signed.
    MRENCLAVE is taken from the template's ENCLAVEHASH, not re-measured: for a caller that kept the file
    somewhere verified (the bundle cache); whatever gets signed is re-measured by :func:`load` anyway."""
    data, where = _read(source)
    p = _split(data, where)
    try:
        sig = SigStruct.parse(p.sigstruct)
    except SgxFormatError as e:
        raise EnclaveImageError(where, str(e)) from None
    return UnsignedImage(p.payload, p.kind, p.settings, sig.enclavehash, sig)


def measure(source: str | os.PathLike[str] | bytes | bytearray) -> bytes:
    """MRENCLAVE of an image file (signed or not), without checking its SIGSTRUCT."""
    data, where = _read(source)
    p = _split(data, where)
    return _measure(p.kind, p.settings, p.payload).digest()


def measurement_log(source: str | os.PathLike[str] | bytes | bytearray) -> bytes:
    """The SGXS measurement log of an image (its SHA-256 is the MRENCLAVE)."""
    data, where = _read(source)
    p = _split(data, where)
    return _measure(p.kind, p.settings, p.payload, keep_log=True).log()


def payload_of(data: bytes) -> tuple[str, bytes] | None:
    """(kind, payload) of an image file's bytes, unchecked (its SIGSTRUCT is not looked at); None if malformed."""
    try:
        p = _split(bytes(data), "enclave image")
    except EnclaveImageError:
        return None
    return p.kind, p.payload


def load(source: str | os.PathLike[str] | bytes | bytearray, *, expected_mrsigner: bytes | None = None,
         allow_debug: bool = True, premeasured: Mapping[str, bytes] | None = None) -> EnclaveImage:
    """Read and fully check an image: structure, signature (RSA, Q1, Q2), MRENCLAVE == ENCLAVEHASH, attributes
    against the attribute mask, the debug flag, and the identity fields against the settings.

    ``expected_mrsigner``: refuse images signed by anyone else. ``allow_debug=False``: refuse debug images.
    ``premeasured``: SHA-256 (hex) of an image file -> the MRENCLAVE a trusted party (epm's sim pool) recorded
    after fully checking that file. When the file read hashes to a key, the RSA check and the re-measuring are
    skipped, but ENCLAVEHASH must equal the recorded MRENCLAVE (else the full check runs) and every other check
    and policy below still applies.
    """
    data, where = _read(source)
    p = _split(data, where)
    trusted = None
    if premeasured:
        import hashlib

        trusted = premeasured.get(hashlib.sha256(data).hexdigest())

    def refuse(problem: str) -> EnclaveImageError:
        return EnclaveImageError(where, problem)

    try:
        sig = SigStruct.parse(p.sigstruct)
    except SgxFormatError as e:
        raise refuse(str(e)) from None
    if not any(sig.modulus) and not any(sig.signature):
        raise refuse("the image is not signed (empty SIGSTRUCT signature)")
    if trusted is not None and trusted == sig.enclavehash:
        mrenclave = trusted  # measured and RSA-checked when the pool recorded it
    else:
        from inclavare.sgx.signing import SigstructVerifyError, verify

        try:
            verify(sig)
        except SigstructVerifyError as e:
            raise refuse(str(e)) from None
        mrenclave = _measure(p.kind, p.settings, p.payload).digest()
    if mrenclave != sig.enclavehash:
        raise refuse(f"MRENCLAVE mismatch: the image measures {mrenclave.hex()} but SIGSTRUCT.ENCLAVEHASH is "
                     f"{sig.enclavehash.hex()} (payload or settings changed after signing)")

    attrs, mask, want = sig.attributes, sig.attribute_mask, _attributes_for(p.settings)
    if attrs.flags & int(AttributeFlags.INIT):
        raise refuse("SIGSTRUCT.ATTRIBUTES sets INIT, which only EINIT may set")
    if not attrs.mode64bit:
        raise refuse("SIGSTRUCT.ATTRIBUTES lacks MODE64BIT; the sim runtime runs 64-bit enclaves only")
    if mask.flags & _PINNED_FLAGS != _PINNED_FLAGS:
        raise refuse(f"SIGSTRUCT.ATTRIBUTEMASK {mask.flags:#x} does not pin DEBUG, MODE64BIT, PROVISIONKEY, "
                     f"EINITTOKENKEY and KSS")
    if (want & mask) != (attrs & mask):
        raise refuse(f"SIGSTRUCT.ATTRIBUTES ({attrs}) under ATTRIBUTEMASK ({mask}) do not match the enclave's "
                     f"({want})")
    if attrs.debug != p.settings.debug or sig.debug_signed != p.settings.debug:
        raise refuse(f"debug flag mismatch: settings say debug={p.settings.debug}, SIGSTRUCT ATTRIBUTES.DEBUG="
                     f"{attrs.debug} and TYPE debug={sig.debug_signed}")
    if sig.miscselect & sig.miscmask:
        raise refuse(f"SIGSTRUCT.MISCSELECT {sig.miscselect:#x} under MISCMASK {sig.miscmask:#x} asks for SSA "
                     "features the sim runtime does not provide")
    for name, signed, setting in (("ISVPRODID", sig.isvprodid, p.settings.isvprodid),
                                  ("ISVSVN", sig.isvsvn, p.settings.isvsvn),
                                  ("ISVFAMILYID", sig.isvfamilyid.hex(), p.settings.isvfamilyid.hex()),
                                  ("ISVEXTPRODID", sig.isvextprodid.hex(), p.settings.isvextprodid.hex())):
        if signed != setting:
            raise refuse(f"SIGSTRUCT.{name} {signed} differs from the settings' {setting}")
    if expected_mrsigner is not None and sig.mrsigner != expected_mrsigner:
        raise refuse(f"signed by MRSIGNER {sig.mrsigner.hex()}, expected {expected_mrsigner.hex()}")
    if p.settings.debug and not allow_debug:
        raise refuse("debug enclave images are not allowed here")
    return EnclaveImage(p.payload, p.kind, p.settings, sig, mrenclave, layout_for(p.kind, p.settings,
                                                                                  len(p.payload)))
