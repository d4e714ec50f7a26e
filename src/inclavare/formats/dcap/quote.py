"""Intel DCAP ECDSA-P256 quotes of every version a verifier meets -- 3 (SGX), 4 and 5 (TDX, or SGX in the
newer layout) -- read into one version-independent :class:`DcapQuote`, and the TD report bodies TDX quotes
carry."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inclavare.formats.dcap.certification import CertDataType, CertificationData, qe_report_data_for
from inclavare.formats.dcap.header import (
    _BODY_SIZES,
    ATT_KEY_TYPE_ECDSA_P256,
    ATT_KEY_TYPE_ECDSA_P384,
    BODY_TYPE_SGX,
    BODY_TYPE_TD10,
    ECDSA_KEY_SIZE,
    ECDSA_SIG_SIZE,
    HEADER_SIZE,
    QUOTE_VERSION_3,
    QUOTE_VERSION_4,
    QUOTE_VERSION_5,
    TD_REPORT10_SIZE,
    TD_REPORT15_SIZE,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    DcapFormatError,
    QuoteHeader,
    _need_bytes,
    _Reader,
)
from inclavare.formats.sgx import REPORT_BODY_SIZE, ReportBody, SgxFormatError, _unchecked


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

