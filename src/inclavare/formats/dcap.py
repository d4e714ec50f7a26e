"""Intel DCAP ECDSA quotes (SGX v3; TDX v4 and v5, see :class:`DcapQuote`) and the SGX extension of PCK
certificates.

Pure codecs: no I/O and no cryptography (verifying the signatures is the attestation layer's job).

Quote v3 layout (all integers little-endian)::

    offset  size  field
         0     2  version (3)
         2     2  attestation key type (2 = ECDSA-256 with P-256)
         4     4  TEE type (0 = SGX; reserved in v3 and must be 0)
         8     2  QE SVN
        10     2  PCE SVN
        12    16  QE vendor ID (Intel: 939A7233F79C4CA9940A0DB3957F0607)
        28    20  user data (Intel's QE: a 16-byte QE ID, then 4 zero bytes)
        48   384  ISV enclave REPORTBODY
       432     4  signature data length N
       436     N  signature data:
                    64   ECDSA signature (r || s) over bytes 0..431
                    64   attestation public key (x || y)
                   384   QE REPORTBODY
                    64   ECDSA signature (r || s) of the QE REPORTBODY by the PCK key
                     2   QE authentication data size A, then A bytes
                     2   certification data type, 4: size C, then C bytes

The QE report's REPORTDATA binds the attestation key: its first 32 bytes are SHA-256(attestation key ||
QE authentication data) and the last 32 are zero (:func:`qe_report_data_for`).

Parsing is strict: every declared length is checked against the bytes present, the signature data must be
exactly its declared length, and bytes after it are returned as ``Quote3.trailing`` (some platforms pad
quotes into a fixed buffer) -- nothing in them is signed, so nothing may rely on them. A malformed quote
raises :class:`DcapFormatError` naming the field and its offset.

PCK certificates carry Intel's SGX extension (OID 1.2.840.113741.1.13.1): a DER SEQUENCE of
``SEQUENCE { OID, value }`` entries (PPID, TCB, PCE-ID, FMSPC, SGX type and, for platform-CA certificates,
platform instance ID and configuration). :class:`PckExtension` encodes and decodes it with a small strict
DER reader/writer.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from inclavare.formats.der import DerReader
from inclavare.formats.sgx import REPORT_BODY_SIZE, ReportBody, SgxFormatError, _unchecked

__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "BODY_TYPE_SGX",
    "BODY_TYPE_TD10",
    "BODY_TYPE_TD15",
    "ECDSA_SIG_SIZE",
    "HEADER_SIZE",
    "INTEL_QE_VENDOR_ID",
    "QUOTE_VERSION_3",
    "QUOTE_VERSION_4",
    "QUOTE_VERSION_5",
    "SGX_EXTENSION_OID",
    "TD_REPORT10_SIZE",
    "TD_REPORT15_SIZE",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "CertDataType",
    "CertificationData",
    "DcapFormatError",
    "DcapQuote",
    "PckConfiguration",
    "PckExtension",
    "Quote3",
    "QuoteHeader",
    "QuoteSignatureData",
    "SgxType",
    "TdReportBody",
    "qe_report_data_for",
    "report_body_lenient",
    "split_pem_chain",
]

QUOTE_VERSION_3 = 3
ATT_KEY_TYPE_ECDSA_P256 = 2
ATT_KEY_TYPE_ECDSA_P384 = 3
TEE_TYPE_SGX = 0x00000000
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
HEADER_SIZE = 48
USER_DATA_SIZE = 20
ECDSA_SIG_SIZE = 64
ECDSA_KEY_SIZE = 64
QUOTE_VERSION_4 = 4
QUOTE_VERSION_5 = 5
TEE_TYPE_TDX = 0x00000081
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
BODY_TYPE_SGX = 1  # v5 body types
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
_BODY_SIZES = {BODY_TYPE_SGX: REPORT_BODY_SIZE, BODY_TYPE_TD10: TD_REPORT10_SIZE, BODY_TYPE_TD15: TD_REPORT15_SIZE}
SIG_DATA_OFFSET = HEADER_SIZE + REPORT_BODY_SIZE + 4  # 436
SIGNED_SIZE = HEADER_SIZE + REPORT_BODY_SIZE  # 432

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


class DcapFormatError(SgxFormatError):
    """A DCAP quote or PCK extension is malformed; names the field and the byte offset where it went wrong."""

    def __init__(self, field_name: str, offset: int, problem: str, struct_name: str = "SGX quote v3") -> None:
        self.field, self.offset = field_name, offset
        super().__init__(struct_name, f"{field_name} at offset {offset}: {problem}")


class CertDataType(IntEnum):
    """Certification data types of the ECDSA quote signature data."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048_OAEP = 2
    PPID_RSA3072_OAEP = 3
    PCK_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERT_DATA = 6
    PLATFORM_MANIFEST = 7


def qe_report_data_for(attestation_key: bytes, qe_auth_data: bytes) -> bytes:
    """The 64-byte REPORTDATA a QE report must carry: SHA-256(attestation key || QE auth data) || 32 zeros."""
    return hashlib.sha256(bytes(attestation_key) + bytes(qe_auth_data)).digest() + bytes(32)


# --------------------------------------------------------------------------------------------------
# Small checks


def _need_int(struct_name: str, name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SgxFormatError(struct_name, f"{name} must be an integer, got {type(value).__name__}")
    if value < 0 or value >> bits:
        raise SgxFormatError(struct_name, f"{name}={value:#x} does not fit in {bits} bits")


def _need_bytes(struct_name: str, name: str, value: bytes, size: int | None = None, max_size: int = _U32) -> None:
    if not isinstance(value, (bytes, bytearray)):
        raise SgxFormatError(struct_name, f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise SgxFormatError(struct_name, f"{name} is {len(value)} bytes, expected {size}")
    if len(value) > max_size:
        raise SgxFormatError(struct_name, f"{name} is {len(value)} bytes, more than its length field holds")


class _Reader:
    """Reads fields from ``data[start:end]`` with bounds checks; offsets in errors are absolute."""

    def __init__(self, data: bytes, start: int, end: int, struct_name: str = "SGX quote v3") -> None:
        self.data, self.pos, self.end = data, start, end
        self.struct_name = struct_name

    def take(self, name: str, size: int) -> bytes:
        if size > self.end - self.pos:
            raise DcapFormatError(name, self.pos, f"needs {size} bytes, only {max(self.end - self.pos, 0)} remain",
                                  self.struct_name)
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def u16(self, name: str) -> int:
        return int.from_bytes(self.take(name, 2), "little")

    def u32(self, name: str) -> int:
        return int.from_bytes(self.take(name, 4), "little")


def _report_body(name: str, raw: bytes, offset: int) -> ReportBody:
    try:
        return ReportBody.parse(raw)
    except SgxFormatError as e:
        raise DcapFormatError(name, offset, e.problem) from None


# --------------------------------------------------------------------------------------------------
# Quote v3


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header."""

    version: int = QUOTE_VERSION_3
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256
    tee_type: int = TEE_TYPE_SGX
    qe_svn: int = 0
    pce_svn: int = 0
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID
    user_data: bytes = bytes(USER_DATA_SIZE)

    def __post_init__(self) -> None:
        s = "SGX quote v3 header"
        for name, value, bits in (("version", self.version, 16), ("attestation key type", self.att_key_type, 16),
                                  ("TEE type", self.tee_type, 32), ("QE SVN", self.qe_svn, 16),
                                  ("PCE SVN", self.pce_svn, 16)):
            _need_int(s, name, value, bits)
        _need_bytes(s, "QE vendor ID", self.qe_vendor_id, 16)
        _need_bytes(s, "user data", self.user_data, USER_DATA_SIZE)

    @classmethod
    def parse(cls, data: bytes) -> QuoteHeader:
        if len(data) < HEADER_SIZE:
            raise DcapFormatError("header", 0, f"needs {HEADER_SIZE} bytes, the quote has {len(data)}")
        version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", data, 0)
        if version != QUOTE_VERSION_3:
            raise DcapFormatError("header.version", 0, f"is {version}, this parser reads version 3 only")
        if key_type != ATT_KEY_TYPE_ECDSA_P256:
            what = "ECDSA-384 with P-384 is not supported" if key_type == ATT_KEY_TYPE_ECDSA_P384 else "unknown type"
            raise DcapFormatError("header.att_key_type", 2, f"is {key_type} ({what}); expected 2 (ECDSA-256 P-256)")
        if tee_type != TEE_TYPE_SGX:
            raise DcapFormatError("header.tee_type", 4, f"is {tee_type:#x}; a v3 quote is SGX (0)")
        return cls(version, key_type, tee_type, qe_svn, pce_svn, bytes(data[12:28]), bytes(data[28:48]))

    def pack(self) -> bytes:
        return (struct.pack("<HHIHH", self.version, self.att_key_type, self.tee_type, self.qe_svn, self.pce_svn)
                + bytes(self.qe_vendor_id) + bytes(self.user_data))

    @property
    def is_intel_qe(self) -> bool:
        return bytes(self.qe_vendor_id) == INTEL_QE_VENDOR_ID


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----\r?\n?", re.S)
_PEM_BEGIN = b"-----BEGIN "
_PEM_LABEL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.split() splits on


def _pem_blocks(data: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(start, end, label, body) of each match of :data:`_PEM_BLOCK` in ``data``, as ``finditer`` finds them,
    found with ``bytes.find`` (the regular expression's backreference makes it slow on a certificate chain).

    The match is unique at each start: the label is the longest run of label characters (none of them is
    "-", so no shorter run can be followed by "-----"), the body ends at the first "-----END <label>-----",
    and the optional CR / LF after it are taken when present. A start that does not match is passed over.
    """
    n = len(data)
    pos = 0
    while (start := data.find(_PEM_BEGIN, pos)) >= 0:
        pos = start + 1
        i = j = start + len(_PEM_BEGIN)
        while j < n and data[j] in _PEM_LABEL:
            j += 1
        if j == i or not data.startswith(b"-----", j):
            continue
        k = j + 5
        if data.startswith(b"\n", k):
            k += 1
        elif data.startswith(b"\r\n", k):
            k += 2
        else:
            continue
        label = data[i:j]
        marker = b"-----END " + label + b"-----"
        e = data.find(marker, k)
        if e < 0:
            continue
        stop = e + len(marker)
        if data.startswith(b"\r", stop):
            stop += 1
        if data.startswith(b"\n", stop):
            stop += 1
        yield start, stop, label, data[k:e]
        pos = stop


def split_pem_chain(data: bytes, *, where: str = "PEM chain") -> list[bytes]:
    """The DER bytes of each CERTIFICATE block of a PEM chain, in order.

    Between and after the blocks only whitespace and NUL bytes are allowed (Intel's QE may end the chain with
    a NUL); anything else, a non-certificate block, bad base64 or an empty chain raises :class:`SgxFormatError`.
    """
    data = bytes(data)
    out: list[bytes] = []
    pos = 0
    for start, end, label, body in _pem_blocks(data):
        gap = data[pos:start]
        if gap.strip(b" \t\r\n\x00"):
            raise SgxFormatError(where, f"unexpected bytes at offset {pos} before PEM block {len(out)}")
        if label != b"CERTIFICATE":
            raise SgxFormatError(where, f"block {len(out)} at offset {start} is {label.decode()!r}, "
                                        "not CERTIFICATE")
        try:  # b64decode(validate=True) is a2b_base64(strict_mode=True); translate drops what split() splits on
            der = binascii.a2b_base64(body.translate(None, _ASCII_SPACE), strict_mode=True)
        except (binascii.Error, ValueError):
            raise SgxFormatError(where, f"block {len(out)} at offset {start} is not valid base64") from None
        if not der:
            raise SgxFormatError(where, f"block {len(out)} at offset {start} is empty")
        out.append(der)
        pos = end
    if data[pos:].strip(b" \t\r\n\x00"):
        raise SgxFormatError(where, f"unexpected bytes at offset {pos} after the last PEM block")
    if not out:
        raise SgxFormatError(where, "holds no certificate")
    return out


@dataclass(frozen=True)
class CertificationData:
    """QE certification data: type and its bytes (type 5 = PEM chain PCK leaf, PCK CA, root)."""

    cert_type: int
    data: bytes

    def __post_init__(self) -> None:
        _need_int("certification data", "type", self.cert_type, 16)
        _need_bytes("certification data", "data", self.data)

    def pem_chain(self) -> list[bytes]:
        """DER certificates of a type-5 chain, leaf first (see :func:`split_pem_chain`)."""
        if self.cert_type != CertDataType.PCK_CERT_CHAIN:
            raise SgxFormatError("certification data", f"type {self.cert_type} is not a PCK certificate chain (5)")
        return split_pem_chain(self.data, where="certification data (PCK chain)")

    def pack(self) -> bytes:
        return struct.pack("<HI", self.cert_type, len(self.data)) + bytes(self.data)


@dataclass(frozen=True)
class QuoteSignatureData:
    """The ECDSA-256 quote signature data that follows the signature data length."""

    isv_signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification: CertificationData

    def __post_init__(self) -> None:
        s = "SGX quote v3 signature data"
        _need_bytes(s, "ISV signature", self.isv_signature, ECDSA_SIG_SIZE)
        _need_bytes(s, "attestation key", self.attestation_key, ECDSA_KEY_SIZE)
        _need_bytes(s, "QE report signature", self.qe_report_signature, ECDSA_SIG_SIZE)
        _need_bytes(s, "QE auth data", self.qe_auth_data, max_size=_U16)
        if not isinstance(self.qe_report, ReportBody) or not isinstance(self.certification, CertificationData):
            raise SgxFormatError(s, "qe_report must be a ReportBody and certification a CertificationData")

    @classmethod
    def parse_at(cls, data: bytes, start: int, end: int) -> QuoteSignatureData:
        """Parse ``data[start:end]``, which must be exactly the signature data."""
        r = _Reader(data, start, end)
        isv_sig = r.take("signature_data.isv_signature", ECDSA_SIG_SIZE)
        att_key = r.take("signature_data.attestation_key", ECDSA_KEY_SIZE)
        qe_off = r.pos
        qe_report = _report_body("signature_data.qe_report", r.take("signature_data.qe_report", REPORT_BODY_SIZE),
                                 qe_off)
        qe_sig = r.take("signature_data.qe_report_signature", ECDSA_SIG_SIZE)
        auth_size = r.u16("signature_data.qe_auth_data_size")
        auth = r.take("signature_data.qe_auth_data", auth_size)
        cert_type = r.u16("signature_data.cert_data_type")
        cert_size = r.u32("signature_data.cert_data_size")
        cert = r.take("signature_data.cert_data", cert_size)
        if r.pos != end:
            raise DcapFormatError("signature_data", r.pos, f"{end - r.pos} bytes inside the declared signature data "
                                                           "follow the certification data")
        return cls(isv_sig, att_key, qe_report, qe_sig, auth, CertificationData(cert_type, cert))

    def pack(self) -> bytes:
        return (bytes(self.isv_signature) + bytes(self.attestation_key) + self.qe_report.pack()
                + bytes(self.qe_report_signature) + struct.pack("<H", len(self.qe_auth_data))
                + bytes(self.qe_auth_data) + self.certification.pack())

    def qe_report_signed_bytes(self) -> bytes:
        """What the PCK key signs: the 384-byte QE REPORTBODY."""
        return self.qe_report.pack()

    def expected_qe_report_data(self) -> bytes:
        """The REPORTDATA the QE report must hold for this attestation key and auth data."""
        return qe_report_data_for(self.attestation_key, self.qe_auth_data)


@dataclass(frozen=True)
class Quote3:
    """An SGX ECDSA quote, version 3. ``trailing`` holds unsigned bytes found after the signature data."""

    header: QuoteHeader
    report_body: ReportBody
    signature: QuoteSignatureData
    trailing: bytes = field(default=b"")

    @classmethod
    def parse(cls, data: bytes) -> Quote3:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DcapFormatError("quote", 0, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        header = QuoteHeader.parse(data)
        r = _Reader(data, HEADER_SIZE, len(data))
        body = _report_body("report_body", r.take("report_body", REPORT_BODY_SIZE), HEADER_SIZE)
        sig_len = r.u32("signature_data_len")
        if sig_len > len(data) - SIG_DATA_OFFSET:
            raise DcapFormatError("signature_data_len", SIGNED_SIZE,
                                  f"declares {sig_len} bytes, only {len(data) - SIG_DATA_OFFSET} follow")
        end = SIG_DATA_OFFSET + sig_len
        sig = QuoteSignatureData.parse_at(data, SIG_DATA_OFFSET, end)
        return cls(header, body, sig, data[end:])

    def signed_bytes(self) -> bytes:
        """What the attestation key signs: header || ISV REPORTBODY (432 bytes)."""
        return self.header.pack() + self.report_body.pack()

    def pack(self) -> bytes:
        """The quote's bytes; ``trailing`` is appended so parse -> pack is byte-exact."""
        sig = self.signature.pack()
        return self.signed_bytes() + struct.pack("<I", len(sig)) + sig + bytes(self.trailing)

    @property
    def certification(self) -> CertificationData:
        return self.signature.certification

    def pck_chain_der(self) -> list[bytes]:
        """DER certificates of the type-5 PCK chain (leaf, intermediate CA, root)."""
        return self.signature.certification.pem_chain()


# --------------------------------------------------------------------------------------------------
# Quote v4 / v5 (TDX, and SGX in the v4/v5 layout) and one version-independent view for verifiers


def report_body_lenient(raw: bytes) -> ReportBody:
    """The fields of a 384-byte REPORTBODY, read at their offsets without looking at the reserved bytes.

    :meth:`ReportBody.parse` refuses non-zero reserved bytes, which is right for structures we build. A quote
    from a newer CPU may carry values there; a verifier checks signatures over the raw bytes (so reserved bytes
    cannot change what was signed) and must not refuse a genuine quote over them. The reserved bytes are not
    kept: re-pack from the raw bytes, not from the returned object.
    """
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != REPORT_BODY_SIZE:
        size = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
        raise SgxFormatError("REPORTBODY", f"is {size} bytes, expected {REPORT_BODY_SIZE}")
    return ReportBody._from_layout(bytes(raw))


_TD10_FIELDS = (("tee_tcb_svn", 16), ("mrseam", 48), ("mrsignerseam", 48), ("seam_attributes", 8),
                ("td_attributes", 8), ("xfam", 8), ("mrtd", 48), ("mrconfigid", 48), ("mrowner", 48),
                ("mrownerconfig", 48), ("rtmr0", 48), ("rtmr1", 48), ("rtmr2", 48), ("rtmr3", 48),
                ("report_data", 64))
_TD15_FIELDS = (("tee_tcb_svn2", 16), ("mrservicetd", 48))


def _slices(fields: tuple[tuple[str, int], ...], pos: int) -> tuple[slice, ...]:
    out = []
    for _, size in fields:
        out.append(slice(pos, pos + size))
        pos += size
    return tuple(out)


_TD10_NAMES, _TD15_NAMES = tuple(name for name, _ in _TD10_FIELDS), tuple(name for name, _ in _TD15_FIELDS)
_TD10_SLICES = _slices(_TD10_FIELDS, 0)
_TD15_SLICES = _slices(_TD15_FIELDS, TD_REPORT10_SIZE)


@dataclass(frozen=True)
class TdReportBody:
    """A TD report body as a TDX quote carries it: TD 1.0 (584 bytes) or TD 1.5 (648 bytes, adds
    ``tee_tcb_svn2`` and ``mrservicetd``). Every field is raw bytes in the order the TDX module writes them;
    there are no reserved bytes."""

    tee_tcb_svn: bytes = bytes(16)
    mrseam: bytes = bytes(48)
    mrsignerseam: bytes = bytes(48)
    seam_attributes: bytes = bytes(8)
    td_attributes: bytes = bytes(8)
    xfam: bytes = bytes(8)
    mrtd: bytes = bytes(48)
    mrconfigid: bytes = bytes(48)
    mrowner: bytes = bytes(48)
    mrownerconfig: bytes = bytes(48)
    rtmr0: bytes = bytes(48)
    rtmr1: bytes = bytes(48)
    rtmr2: bytes = bytes(48)
    rtmr3: bytes = bytes(48)
    report_data: bytes = bytes(64)
    tee_tcb_svn2: bytes | None = None  # TD 1.5 only
    mrservicetd: bytes | None = None  # TD 1.5 only

    def __post_init__(self) -> None:
        s = "TD report body"
        for name, size in _TD10_FIELDS:
            _need_bytes(s, name, getattr(self, name), size)
        if (self.tee_tcb_svn2 is None) != (self.mrservicetd is None):
            raise SgxFormatError(s, "tee_tcb_svn2 and mrservicetd are both present (TD 1.5) or both absent (TD 1.0)")
        if self.tee_tcb_svn2 is not None:
            for name, size in _TD15_FIELDS:
                _need_bytes(s, name, getattr(self, name), size)

    @property
    def is_td15(self) -> bool:
        return self.tee_tcb_svn2 is not None

    @property
    def size(self) -> int:
        return TD_REPORT15_SIZE if self.is_td15 else TD_REPORT10_SIZE

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def debug(self) -> bool:
        """TD_ATTRIBUTES.DEBUG (bit 0): the TD's memory and state are open to the host."""
        return bool(self.td_attributes[0] & 1)

    @classmethod
    def parse(cls, data: bytes) -> TdReportBody:
        data = bytes(data)
        if len(data) not in (TD_REPORT10_SIZE, TD_REPORT15_SIZE):
            raise SgxFormatError("TD report body", f"is {len(data)} bytes, expected {TD_REPORT10_SIZE} (TD 1.0) "
                                                   f"or {TD_REPORT15_SIZE} (TD 1.5)")
        body = object.__new__(cls)  # as _unchecked does: every field is a slice of its fixed size
        fields = body.__dict__
        fields.update(zip(_TD10_NAMES, map(data.__getitem__, _TD10_SLICES), strict=True))
        if len(data) == TD_REPORT15_SIZE:
            fields.update(zip(_TD15_NAMES, map(data.__getitem__, _TD15_SLICES), strict=True))
        else:
            fields.update(tee_tcb_svn2=None, mrservicetd=None)
        return body

    def pack(self) -> bytes:
        fields = _TD10_FIELDS + (_TD15_FIELDS if self.is_td15 else ())
        return b"".join(bytes(getattr(self, name)) for name, _ in fields)


def _qe_block(r: _Reader, prefix: str) -> tuple[bytes, bytes, bytes, CertificationData]:
    """QE report, its signature, the QE auth data and the certification data, read from ``r``."""
    qe_raw = r.take(f"{prefix}.qe_report", REPORT_BODY_SIZE)
    qe_sig = r.take(f"{prefix}.qe_report_signature", ECDSA_SIG_SIZE)
    auth = r.take(f"{prefix}.qe_auth_data", r.u16(f"{prefix}.qe_auth_data_size"))
    cert_type = r.u16(f"{prefix}.cert_data_type")
    cert = r.take(f"{prefix}.cert_data", r.u32(f"{prefix}.cert_data_size"))
    return qe_raw, qe_sig, auth, _unchecked(CertificationData, {"cert_type": cert_type, "data": cert})


_HEADER_INTS = struct.Struct("<HHIHH")
_LE_U16 = struct.Struct("<H")
_LE_U32 = struct.Struct("<I")
_U16_U32 = struct.Struct("<HI")


def _parse_well_formed(data: bytes, header: QuoteHeader) -> DcapQuote | None:
    """:meth:`DcapQuote.parse` after the header, for a quote in which every length and type is right: the same
    quote, read with plain offset arithmetic; None at the first thing :meth:`DcapQuote.parse` would refuse (it
    then reads the quote again and says what is wrong). Each test below is one of its checks."""
    n = len(data)
    version, tee_type = header.version, header.tee_type
    pos = HEADER_SIZE
    if version == QUOTE_VERSION_5:
        if n - pos < 6:
            return None
        body_type, body_size = _U16_U32.unpack_from(data, pos)
        if _BODY_SIZES.get(body_type) != body_size or (body_type == BODY_TYPE_SGX) != (tee_type == TEE_TYPE_SGX):
            return None
        pos += 6
    else:
        body_type = BODY_TYPE_SGX if tee_type == TEE_TYPE_SGX else BODY_TYPE_TD10
        body_size = _BODY_SIZES[body_type]
    start = pos + body_size + 4  # the signature data, after the body and its length
    if start > n:
        return None
    body_raw = data[pos:start - 4]
    end = start + _LE_U32.unpack_from(data, start - 4)[0]
    if end > n or end - start < 2 * ECDSA_SIG_SIZE:
        return None
    pos = start + 2 * ECDSA_SIG_SIZE
    if version != QUOTE_VERSION_3:  # the type-6 block must be exactly the rest of the signature data
        if end - pos < 6:
            return None
        outer_type, outer_size = _U16_U32.unpack_from(data, pos)
        pos += 6
        if outer_type != CertDataType.QE_REPORT_CERT_DATA or outer_size != end - pos:
            return None
    if end - pos < REPORT_BODY_SIZE + ECDSA_SIG_SIZE + 2:
        return None
    qe_raw = data[pos:pos + REPORT_BODY_SIZE]
    pos += REPORT_BODY_SIZE + ECDSA_SIG_SIZE
    auth_end = pos + 2 + _LE_U16.unpack_from(data, pos)[0]
    if end - auth_end < 6:
        return None
    cert_type, cert_size = _U16_U32.unpack_from(data, auth_end)
    if cert_size != end - auth_end - 6:  # the certification data ends the signature data
        return None
    certification = object.__new__(CertificationData)  # as _unchecked does (inline: this runs for every quote)
    certification.__dict__.update(cert_type=cert_type, data=data[auth_end + 6:end])
    quote = object.__new__(DcapQuote)
    quote.__dict__.update(
        header=header, body_type=body_type,
        body=ReportBody._from_layout(body_raw) if body_type == BODY_TYPE_SGX else TdReportBody.parse(body_raw),
        body_raw=body_raw, isv_signature=data[start:start + ECDSA_SIG_SIZE],
        attestation_key=data[start + ECDSA_SIG_SIZE:start + 2 * ECDSA_SIG_SIZE],
        qe_report=ReportBody._from_layout(qe_raw), qe_report_raw=qe_raw,
        qe_report_signature=data[pos - ECDSA_SIG_SIZE:pos], qe_auth_data=data[pos + 2:auth_end],
        certification=certification, trailing=data[end:])
    return quote


@dataclass(frozen=True)
class DcapQuote:
    """An Intel DCAP ECDSA-P256 quote of version 3 (SGX), 4 or 5 (TDX, or SGX in the newer layout), as a
    verifier reads it.

    Layouts after the 48-byte header (see the module docstring for v3)::

        v4:  body (SGX REPORTBODY 384 or TD 1.0 report 584, by TEE type) | sig data len u32 | sig data
        v5:  body type u16 (1 SGX 384, 2 TD 1.0 584, 3 TD 1.5 648) | body size u32 | body | sig len | sig data
        v4/v5 signature data: ECDSA sig (64) | attestation key (64) | cert data type u16 = 6 | size u32 |
             QE report (384) | QE report sig (64) | QE auth size u16 + data | cert type u16 | size u32 | data

    The attestation key signs everything before the signature data length (:meth:`signed_bytes`). Reserved
    bytes of the SGX REPORTBODYs are not judged here (:func:`report_body_lenient`); ``body_raw`` and
    ``qe_report_raw`` keep the exact bytes, so :meth:`pack` is byte-exact. Every declared length is checked;
    the signature data (and the type-6 block inside it) must be consumed exactly; bytes after the signature
    data are kept in ``trailing`` and are not signed, so nothing may rely on them.
    """

    header: QuoteHeader
    body_type: int
    body: ReportBody | TdReportBody
    body_raw: bytes
    isv_signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification: CertificationData
    trailing: bytes = b""

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def tee_type(self) -> int:
        return self.header.tee_type

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TYPE_TDX

    @classmethod
    def parse(cls, data: bytes) -> DcapQuote:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DcapFormatError("quote", 0, f"expected bytes, got {type(data).__name__}", "DCAP quote")
        data = bytes(data)
        if len(data) < HEADER_SIZE:
            raise DcapFormatError("header", 0, f"needs {HEADER_SIZE} bytes, the quote has {len(data)}", "DCAP quote")
        version, key_type, tee_type, qe_svn, pce_svn = _HEADER_INTS.unpack_from(data)
        if version not in (QUOTE_VERSION_3, QUOTE_VERSION_4, QUOTE_VERSION_5):
            raise DcapFormatError("header.version", 0, f"is {version}; versions 3, 4 and 5 are supported",
                                  "DCAP quote")
        if key_type != ATT_KEY_TYPE_ECDSA_P256:
            what = "ECDSA-384 with P-384 is not supported" if key_type == ATT_KEY_TYPE_ECDSA_P384 else "unknown type"
            raise DcapFormatError("header.att_key_type", 2, f"is {key_type} ({what}); expected 2 (ECDSA-256 P-256)",
                                  f"DCAP quote v{version}")
        if version == QUOTE_VERSION_3 and tee_type != TEE_TYPE_SGX:
            raise DcapFormatError("header.tee_type", 4, f"is {tee_type:#x}; a v3 quote is SGX (0)",
                                  f"DCAP quote v{version}")
        if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
            raise DcapFormatError("header.tee_type", 4, f"is {tee_type:#x}; expected 0 (SGX) or 0x81 (TDX)",
                                  f"DCAP quote v{version}")
        header = object.__new__(QuoteHeader)  # as _unchecked does: the fields are read from their fixed widths
        header.__dict__.update(version=version, att_key_type=key_type, tee_type=tee_type, qe_svn=qe_svn,
                               pce_svn=pce_svn, qe_vendor_id=data[12:28], user_data=data[28:48])
        quote = _parse_well_formed(data, header)
        if quote is not None:
            return quote
        # something is off: read it again field by field, which names the field and offset that are wrong
        name = f"DCAP quote v{version}"
        r = _Reader(data, HEADER_SIZE, len(data), name)
        if version == QUOTE_VERSION_5:
            body_type = r.u16("body_type")
            body_size = r.u32("body_size")
            expected = _BODY_SIZES.get(body_type)
            if expected is None:
                raise DcapFormatError("body_type", HEADER_SIZE, f"is {body_type}; expected 1 (SGX), 2 (TD 1.0) or "
                                                                "3 (TD 1.5)", name)
            if (body_type == BODY_TYPE_SGX) != (tee_type == TEE_TYPE_SGX):
                raise DcapFormatError("body_type", HEADER_SIZE, f"{body_type} does not fit TEE type {tee_type:#x}",
                                      name)
            if body_size != expected:
                raise DcapFormatError("body_size", HEADER_SIZE + 2, f"is {body_size}; body type {body_type} is "
                                                                    f"{expected} bytes", name)
        else:
            body_type = BODY_TYPE_SGX if tee_type == TEE_TYPE_SGX else BODY_TYPE_TD10
            body_size = _BODY_SIZES[body_type]
        body_off = r.pos
        body_raw = r.take("body" if version != QUOTE_VERSION_3 else "report_body", body_size)
        body: ReportBody | TdReportBody
        try:
            body = report_body_lenient(body_raw) if body_type == BODY_TYPE_SGX else TdReportBody.parse(body_raw)
        except SgxFormatError as e:  # pragma: no cover - sizes are checked above
            raise DcapFormatError("body", body_off, e.problem, name) from None
        len_off = r.pos
        sig_len = r.u32("signature_data_len")
        start = r.pos
        if sig_len > len(data) - start:
            raise DcapFormatError("signature_data_len", len_off,
                                  f"declares {sig_len} bytes, only {len(data) - start} follow", name)
        end = start + sig_len
        s = _Reader(data, start, end, name)
        isv_sig = s.take("signature_data.isv_signature", ECDSA_SIG_SIZE)
        att_key = s.take("signature_data.attestation_key", ECDSA_KEY_SIZE)
        if version == QUOTE_VERSION_3:
            qe_raw, qe_sig, auth, cert = _qe_block(s, "signature_data")
        else:
            type_off = s.pos
            outer_type = s.u16("signature_data.cert_data_type")
            if outer_type != CertDataType.QE_REPORT_CERT_DATA:
                raise DcapFormatError("signature_data.cert_data_type", type_off,
                                      f"is {outer_type}; a v{version} quote carries type 6 (QE report "
                                      "certification data)", name)
            outer_size = s.u32("signature_data.cert_data_size")
            inner_start = s.pos
            s.take("signature_data.cert_data", outer_size)
            inner = _Reader(data, inner_start, inner_start + outer_size, name)
            qe_raw, qe_sig, auth, cert = _qe_block(inner, "qe_report_cert_data")
            if inner.pos != inner.end:
                raise DcapFormatError("qe_report_cert_data", inner.pos,
                                      f"{inner.end - inner.pos} bytes inside the type-6 certification data follow "
                                      "the PCK certification data", name)
        if s.pos != end:
            raise DcapFormatError("signature_data", s.pos, f"{end - s.pos} bytes inside the declared signature "
                                                           "data follow the certification data", name)
        try:
            qe_report = report_body_lenient(qe_raw)
        except SgxFormatError as e:  # pragma: no cover - the size is fixed above
            raise DcapFormatError("qe_report", start, e.problem, name) from None
        return _unchecked(cls, {
            "header": header, "body_type": body_type, "body": body, "body_raw": body_raw, "isv_signature": isv_sig,
            "attestation_key": att_key, "qe_report": qe_report, "qe_report_raw": qe_raw, "qe_report_signature": qe_sig,
            "qe_auth_data": auth, "certification": cert, "trailing": data[end:]})

    def signed_bytes(self) -> bytes:
        """What the attestation key signs: the header, (v5) body type and size, and the body."""
        mid = struct.pack("<HI", self.body_type, len(self.body_raw)) if self.version == QUOTE_VERSION_5 else b""
        return self.header.pack() + mid + bytes(self.body_raw)

    def signature_data(self) -> bytes:
        qe = (bytes(self.qe_report_raw) + bytes(self.qe_report_signature) + struct.pack("<H", len(self.qe_auth_data))
              + bytes(self.qe_auth_data) + self.certification.pack())
        if self.version != QUOTE_VERSION_3:
            qe = struct.pack("<HI", CertDataType.QE_REPORT_CERT_DATA, len(qe)) + qe
        return bytes(self.isv_signature) + bytes(self.attestation_key) + qe

    def pack(self) -> bytes:
        """The quote's bytes (``trailing`` included, so parse -> pack is byte-exact)."""
        sig = self.signature_data()
        return self.signed_bytes() + struct.pack("<I", len(sig)) + sig + bytes(self.trailing)

    def pck_chain_der(self) -> list[bytes]:
        """DER certificates of the type-5 PCK chain (leaf, intermediate CA, root)."""
        return self.certification.pem_chain()

    def expected_qe_report_data(self) -> bytes:
        """The REPORTDATA the QE report must hold for this attestation key and auth data."""
        return qe_report_data_for(self.attestation_key, self.qe_auth_data)


# --------------------------------------------------------------------------------------------------
# Minimal strict DER (what the SGX PCK extension uses)

_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_ENUMERATED = 0x0A
_TAG_SEQUENCE = 0x30

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PCK = "SGX PCK extension"


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _der(_TAG_OID, bytes(out))


def _der_uint(tag: int, value: int) -> bytes:
    return _der(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _der_entry(oid: str, value: bytes) -> bytes:
    return _der(_TAG_SEQUENCE, _der_oid(oid) + value)


def _pck_fail(what: str, offset: int, problem: str) -> DcapFormatError:
    return DcapFormatError(what, offset, problem, _PCK)


def _der_reader(data: bytes, pos: int = 0, end: int | None = None) -> DerReader:
    """A strict DER reader over the PCK extension; errors are DcapFormatErrors."""
    return DerReader(data, _pck_fail, pos, end, _KNOWN_OIDS)


def _uint(data: bytes, start: int, end: int, what: str, bits: int) -> int:
    raw = data[start:end]
    if not raw:
        raise DcapFormatError(what, start, "empty INTEGER", _PCK)
    if raw[0] & 0x80:
        raise DcapFormatError(what, start, "negative INTEGER", _PCK)
    if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
        raise DcapFormatError(what, start, "non-minimal INTEGER", _PCK)
    value = int.from_bytes(raw, "big")
    if value >> bits:
        raise DcapFormatError(what, start, f"value {value} does not fit in {bits} bits", _PCK)
    return value


class SgxType(IntEnum):
    """The PCK extension's SGX Type."""

    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True)
class PckConfiguration:
    """Platform configuration flags of a platform-CA PCK certificate (each may be absent)."""

    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


_OID_PPID = SGX_EXTENSION_OID + ".1"
_OID_TCB = SGX_EXTENSION_OID + ".2"
_OID_PCEID = SGX_EXTENSION_OID + ".3"
_OID_FMSPC = SGX_EXTENSION_OID + ".4"
_OID_SGX_TYPE = SGX_EXTENSION_OID + ".5"
_OID_PLATFORM_INSTANCE_ID = SGX_EXTENSION_OID + ".6"
_OID_CONFIGURATION = SGX_EXTENSION_OID + ".7"
_OID_PCESVN = _OID_TCB + ".17"
_OID_CPUSVN = _OID_TCB + ".18"
_CONFIG_NAMES = {_OID_CONFIGURATION + ".1": "dynamic_platform", _OID_CONFIGURATION + ".2": "cached_keys",
                 _OID_CONFIGURATION + ".3": "smt_enabled"}
_KNOWN_OIDS = {_der_oid(oid)[2:]: oid for oid in (
    SGX_EXTENSION_OID, _OID_PPID, _OID_TCB, _OID_PCEID, _OID_FMSPC, _OID_SGX_TYPE, _OID_PLATFORM_INSTANCE_ID,
    _OID_CONFIGURATION, *(f"{_OID_TCB}.{i}" for i in range(1, 19)), *_CONFIG_NAMES)}


@dataclass(frozen=True)
class PckExtension:
    """The values of the SGX extension (OID 1.2.840.113741.1.13.1) of a PCK certificate."""

    ppid: bytes
    comp_svns: tuple[int, ...]
    pce_svn: int
    cpusvn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int = SgxType.STANDARD
    platform_instance_id: bytes | None = None
    configuration: PckConfiguration | None = None

    def __post_init__(self) -> None:
        _need_bytes(_PCK, "PPID", self.ppid, 16)
        _need_bytes(_PCK, "CPUSVN", self.cpusvn, 16)
        _need_bytes(_PCK, "PCE-ID", self.pce_id, 2)
        _need_bytes(_PCK, "FMSPC", self.fmspc, 6)
        if len(self.comp_svns) != 16:
            raise SgxFormatError(_PCK, f"TCB has {len(self.comp_svns)} component SVNs, expected 16")
        for i, svn in enumerate(self.comp_svns):
            _need_int(_PCK, f"SGX TCB COMP{i + 1:02d} SVN", svn, 8)
        _need_int(_PCK, "PCESVN", self.pce_svn, 16)
        _need_int(_PCK, "SGX Type", self.sgx_type, 8)
        if self.platform_instance_id is not None:
            _need_bytes(_PCK, "PlatformInstanceID", self.platform_instance_id, 16)

    def to_der(self) -> bytes:
        """The extension value (the bytes inside the certificate extension's OCTET STRING)."""
        tcb = b"".join(_der_entry(f"{_OID_TCB}.{i + 1}", _der_uint(_TAG_INTEGER, svn))
                       for i, svn in enumerate(self.comp_svns))
        tcb += _der_entry(_OID_PCESVN, _der_uint(_TAG_INTEGER, self.pce_svn))
        tcb += _der_entry(_OID_CPUSVN, _der(_TAG_OCTET_STRING, bytes(self.cpusvn)))
        parts = [
            _der_entry(_OID_PPID, _der(_TAG_OCTET_STRING, bytes(self.ppid))),
            _der_entry(_OID_TCB, _der(_TAG_SEQUENCE, tcb)),
            _der_entry(_OID_PCEID, _der(_TAG_OCTET_STRING, bytes(self.pce_id))),
            _der_entry(_OID_FMSPC, _der(_TAG_OCTET_STRING, bytes(self.fmspc))),
            _der_entry(_OID_SGX_TYPE, _der_uint(_TAG_ENUMERATED, int(self.sgx_type))),
        ]
        if self.platform_instance_id is not None:
            parts.append(_der_entry(_OID_PLATFORM_INSTANCE_ID, _der(_TAG_OCTET_STRING,
                                                                    bytes(self.platform_instance_id))))
        if self.configuration is not None:
            flags = b""
            for oid, name in _CONFIG_NAMES.items():
                value = getattr(self.configuration, name)
                if value is not None:
                    flags += _der_entry(oid, _der(_TAG_BOOLEAN, b"\xff" if value else b"\x00"))
            parts.append(_der_entry(_OID_CONFIGURATION, _der(_TAG_SEQUENCE, flags)))
        return _der(_TAG_SEQUENCE, b"".join(parts))

    @classmethod
    def parse_der(cls, data: bytes) -> PckExtension:
        """Decode the extension value. Unknown entries are skipped; missing or repeated known ones are errors."""
        data = bytes(data)
        outer = _der_reader(data)
        start, end = outer.expect(_TAG_SEQUENCE, "SGX extensions")
        if not outer.at_end():
            raise DcapFormatError("SGX extensions", outer.pos, "bytes after the outer SEQUENCE", _PCK)
        values: dict[str, tuple[int, int, int]] = {}
        for oid, tag, cstart, cend in _entries(data, start, end, "SGX extensions"):
            if oid in values:
                raise DcapFormatError(oid, cstart, "appears twice", _PCK)
            values[oid] = (tag, cstart, cend)

        def get(oid: str, tag: int, name: str) -> tuple[int, int]:
            if oid not in values:
                raise DcapFormatError(name, start, f"{oid} is missing", _PCK)
            got, cstart, cend = values[oid]
            if got != tag:
                raise DcapFormatError(name, cstart, f"DER tag {got:#04x}, expected {tag:#04x}", _PCK)
            return cstart, cend

        def octets(oid: str, name: str, size: int) -> bytes:
            cstart, cend = get(oid, _TAG_OCTET_STRING, name)
            if cend - cstart != size:
                raise DcapFormatError(name, cstart, f"is {cend - cstart} bytes, expected {size}", _PCK)
            return data[cstart:cend]

        tstart, tend = get(_OID_TCB, _TAG_SEQUENCE, "TCB")
        tcb: dict[str, tuple[int, int, int]] = {}
        for oid, tag, cstart, cend in _entries(data, tstart, tend, "TCB"):
            if oid in tcb:
                raise DcapFormatError(oid, cstart, "appears twice", _PCK)
            tcb[oid] = (tag, cstart, cend)

        def tcb_int(oid: str, name: str, bits: int) -> int:
            if oid not in tcb:
                raise DcapFormatError(name, tstart, f"{oid} is missing", _PCK)
            tag, cstart, cend = tcb[oid]
            if tag == _TAG_INTEGER and cend - cstart == 1 and data[cstart] < 0x80:  # one byte: minimal, non-negative
                return data[cstart]
            if tag != _TAG_INTEGER:
                raise DcapFormatError(name, cstart, f"DER tag {tag:#04x}, expected INTEGER", _PCK)
            return _uint(data, cstart, cend, name, bits)

        comps = tuple(tcb_int(f"{_OID_TCB}.{i + 1}", f"COMP{i + 1:02d}_SVN", 8) for i in range(16))
        pce_svn = tcb_int(_OID_PCESVN, "PCESVN", 16)
        if _OID_CPUSVN not in tcb or tcb[_OID_CPUSVN][0] != _TAG_OCTET_STRING:
            raise DcapFormatError("CPUSVN", tstart, f"{_OID_CPUSVN} is missing or not an OCTET STRING", _PCK)
        _, cstart, cend = tcb[_OID_CPUSVN]
        if cend - cstart != 16:
            raise DcapFormatError("CPUSVN", cstart, f"is {cend - cstart} bytes, expected 16", _PCK)
        cpusvn = data[cstart:cend]

        sstart, send = get(_OID_SGX_TYPE, _TAG_ENUMERATED, "SGX Type")
        sgx_type = _uint(data, sstart, send, "SGX Type", 8)
        instance = (octets(_OID_PLATFORM_INSTANCE_ID, "PlatformInstanceID", 16)
                    if _OID_PLATFORM_INSTANCE_ID in values else None)
        config: PckConfiguration | None = None
        if _OID_CONFIGURATION in values:
            cfg_start, cfg_end = get(_OID_CONFIGURATION, _TAG_SEQUENCE, "Configuration")
            flags: dict[str, bool] = {}
            for oid, tag, cstart, cend in _entries(data, cfg_start, cfg_end, "Configuration"):
                name = _CONFIG_NAMES.get(oid)
                if name is None:
                    continue
                if tag != _TAG_BOOLEAN or cend - cstart != 1 or data[cstart] not in (0, 0xFF):
                    raise DcapFormatError(name, cstart, "must be a DER BOOLEAN", _PCK)
                if name in flags:
                    raise DcapFormatError(name, cstart, "appears twice", _PCK)
                flags[name] = data[cstart] == 0xFF
            config = PckConfiguration(**flags)
        ppid = octets(_OID_PPID, "PPID", 16)
        pce_id = octets(_OID_PCEID, "PCE-ID", 2)
        fmspc = octets(_OID_FMSPC, "FMSPC", 6)
        # every size and range __post_init__ checks was checked above, field by field
        return _unchecked(cls, {
            "ppid": ppid, "comp_svns": comps, "pce_svn": pce_svn, "cpusvn": cpusvn, "pce_id": pce_id, "fmspc": fmspc,
            "sgx_type": sgx_type, "platform_instance_id": instance, "configuration": config})


def _der_header(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(content start, content length) of the element at ``pos`` when its length is definite, minimal and at most
    two bytes long and the element has at least its two header bytes before ``end``; None otherwise."""
    if end - pos < 2:
        return None
    length = data[pos + 1]
    pos += 2
    if length < 0x80:
        return pos, length
    if length == 0x81 and end - pos >= 1 and data[pos] >= 0x80:
        return pos + 1, data[pos]
    if length == 0x82 and end - pos >= 2 and data[pos] != 0:
        return pos + 2, (data[pos] << 8) | data[pos + 1]
    return None


def _entries_fast(data: bytes, start: int, end: int) -> list[tuple[str, int, int, int]] | None:
    """:func:`_entries` for the well-formed case with OIDs from :data:`_KNOWN_OIDS` only; None when anything
    else is met, and then :func:`_entries` reads the bytes again the careful way (and names what is wrong)."""
    out: list[tuple[str, int, int, int]] = []
    known = _KNOWN_OIDS
    pos = start
    while pos < end:
        if end - pos < 2 or data[pos] != _TAG_SEQUENCE:
            return None
        iend = data[pos + 1]
        if iend < 0x80:
            istart = pos + 2
        elif (h := _der_header(data, pos, end)) is not None:
            istart, iend = h
        else:
            return None
        iend += istart
        # the OID: short form only (every OID we name is), and one we name
        if iend > end or iend - istart < 2 or data[istart] != _TAG_OID or (vpos := data[istart + 1]) >= 0x80:
            return None
        vpos += istart + 2
        if vpos > iend or (oid := known.get(data[istart + 2:vpos])) is None or iend - vpos < 2:
            return None
        vend = data[vpos + 1]
        if vend < 0x80:
            vstart = vpos + 2
        elif (h := _der_header(data, vpos, iend)) is not None:
            vstart, vend = h
        else:
            return None
        if vstart + vend != iend:  # runs past the entry, or more elements follow in it
            return None
        out.append((oid, data[vpos], vstart, iend))
        pos = iend
    return out


def _entries(data: bytes, start: int, end: int, what: str) -> list[tuple[str, int, int, int]]:
    """The ``SEQUENCE { OID, value }`` items of ``data[start:end]``: (oid, value tag, value start, value end)."""
    fast = _entries_fast(data, start, end)
    if fast is not None:
        return fast
    out: list[tuple[str, int, int, int]] = []
    seq = _der_reader(data, start, end)
    while not seq.at_end():
        istart, iend = seq.expect(_TAG_SEQUENCE, what)
        item = _der_reader(data, istart, iend)
        oid = item.oid(what)
        tag, cstart, cend = item.read(oid)
        if not item.at_end():
            raise DcapFormatError(oid, item.pos, "extra DER elements in the entry", _PCK)
        out.append((oid, tag, cstart, cend))
    return out
