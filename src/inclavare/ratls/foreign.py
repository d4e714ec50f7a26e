"""RA-TLS certificates of other stacks: Open Enclave, Intel's sgx_ttls, Occlum's gRPC RA-TLS, Phala's dstack.

Each stack puts a DCAP quote into a non-critical X.509 extension of its certificate (self-signed, except
dstack's) and binds the certificate's key through the quote's report data. :func:`read_foreign` reads the
extension (called by :func:`inclavare.ratls.cert.parse_certificate`); :func:`check_foreign_binding` compares
the report data of a verified quote (called by :func:`inclavare.ratls.cert.check_binding`). Facts come from
upstream sources, named per format below and in docs/ratls.md ("Certificates of other stacks").

``PEM+NUL`` below is the certificate's SubjectPublicKeyInfo as OpenSSL's ``PEM_write_bio_PUBKEY`` writes it
("-----BEGIN PUBLIC KEY-----", base64 in 64-character lines, "-----END PUBLIC KEY-----", each line ending in
"\\n") followed by one NUL byte; both Open Enclave and sgx_ttls hash exactly these bytes.

* ``openenclave``: OE's evidence extension 1.3.6.1.4.1.311.105.2 (older OE: 1.2.840.113556.10.1.2), from
  ``oe_get_attestation_certificate_with_evidence[_v2]``. Value: ``oe_attestation_header_t`` (u32 version = 3,
  16-byte format UUID, u64 data size, all little-endian) and data of exactly that size. Only the SGX ECDSA
  format (UUID a3a21e87-1b4d-4014-b70a-a125d2fbcd8c) is accepted: data = SGX quote v3 (436 + signature_len
  bytes) followed by the custom claims buffer, which OE fills with the PEM+NUL public key. Binding: the custom
  claims buffer must be the certificate's PEM+NUL (OE compares it byte for byte) and report_data[0:32] =
  SHA-256(custom claims buffer), the rest zero. openenclave: enclave/tls_cert.c, common/attest_plugin.c,
  common/attest_plugin.h, common/sgx/verifier.c, include/openenclave/attestation/sgx/evidence.h.
* ``openenclave_report``: OE's older report extension 1.3.6.1.4.1.311.105.1 (older OE: 1.2.840.113556.10.1.1),
  from ``oe_generate_attestation_certificate``. Value: ``oe_report_header_t`` (u32 version = 1, u32 report type
  = 2 for a remote report, u64 report size) and the SGX quote of exactly that size. Binding:
  report_data[0:32] = SHA-256(PEM+NUL), the rest zero (include/openenclave/internal/report.h, enclave/tls_cert.c).
* ``intel_ttls``: Intel's ``sgx_ttls`` (``tee_get_certificate_with_evidence``), extension
  1.2.840.113741.1.13.1 holding the raw quote. Binding: SGX quotes carry SHA-256(PEM+NUL) in
  report_data[0:32], TDX quotes SHA-384(PEM+NUL) in report_data[0:48], the rest zero. Current sgx_ttls also
  writes the TCG DICE extension around the same quote; then the DICE extension binds the key (its quote was
  made for the claims buffer, not the PEM) and the 1.13.1 extension must hold the very same quote. For TDX
  quotes sgx_ttls fills that DICE evidence differently from rats-tls: report_data[0:48] = SHA-384(claims
  buffer) (and a SHA-384 pubkey-hash); :func:`ttls_tdx_dice_bound` accepts that binding too.
  intel/linux-sgx: sdk/ttls/ttls.cpp, sdk/ttls/cert_verifier.cpp, sdk/ttls/cert_header.h.
* ``occlum``: Occlum's gRPC RA-TLS (``occlum_get_key_cert``), extension 1.2.840.113741.1 holding the raw SGX
  quote. Binding: report_data[0:32] = SHA-256 of the SubjectPublicKeyInfo DER, the rest zero (the same binding
  as Gramine, under another OID; occlum/occlum: demos/ra_tls/grpc/v1.38.1/src/cpp/sgx/sgx_ra_tls_occlum.cc).
* ``dstack``: Phala's dstack RA-TLS, extension 1.3.6.1.4.1.62397.1.1 whose value is a DER OCTET STRING around
  the quote (SGX or TDX). Binding: all 64 bytes of report data = SHA-512("ratls-cert:" || SubjectPublicKeyInfo
  DER). dstack's leaf certificates are signed by an app CA, not self-signed (Phala-Network/dstack:
  ra-tls/src/oids.rs, ra-tls/src/cert.rs, ra-tls/src/attestation.rs, ra-tls/src/traits.rs, ra-rpc/src/client.rs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from inclavare.formats.der import TAG_OCTET_STRING, DerReader
from inclavare.ratls.dice import (
    REPORT_DATA_SIZE,
    TAG_INTEL_TEE_QUOTE,
    TCG_DICE_TAGGED_EVIDENCE_OID,
    RatlsError,
    evidence_type_of,
    parse_evidence_extension,
)

if TYPE_CHECKING:
    from inclavare.ratls.cert import RatlsCertificate

__all__ = [
    "FOREIGN_FORMATS",
    "FOREIGN_OIDS",
    "MAX_FOREIGN_EXTENSION",
    "OE_ATTESTATION_HEADER_VERSION",
    "OE_FORMAT_SGX_ECDSA",
    "OE_FORMAT_TDX_ECDSA",
    "check_foreign_binding",
    "pem_public_key",
    "read_foreign",
    "ttls_tdx_dice_bound",
]

OE_EVIDENCE_OIDS = ("1.3.6.1.4.1.311.105.2", "1.2.840.113556.10.1.2")
OE_REPORT_OIDS = ("1.3.6.1.4.1.311.105.1", "1.2.840.113556.10.1.1")
INTEL_TTLS_QUOTE_OID = "1.2.840.113741.1.13.1"
OCCLUM_QUOTE_OID = "1.2.840.113741.1"
DSTACK_QUOTE_OID = "1.3.6.1.4.1.62397.1.1"
FOREIGN_OIDS: dict[str, str] = {
    **dict.fromkeys(OE_EVIDENCE_OIDS, "openenclave"),
    **dict.fromkeys(OE_REPORT_OIDS, "openenclave_report"),
    INTEL_TTLS_QUOTE_OID: "intel_ttls",
    OCCLUM_QUOTE_OID: "occlum",
    DSTACK_QUOTE_OID: "dstack",
}
DSTACK_REPORT_DATA_TAG = b"ratls-cert:"
FOREIGN_FORMATS = frozenset(FOREIGN_OIDS.values())
# The legacy rats-tls / Gramine OIDs, whose presence next to a foreign one makes the binding ambiguous.
_RATS_TLS_ARC = "1.2.840.113741.1337."
_GRAMINE_OID = "0.6.9.42.840.113741.1337.6"

MAX_FOREIGN_EXTENSION = 64 * 1024

OE_ATTESTATION_HEADER_VERSION = 3
OE_REPORT_HEADER_VERSION = 1
OE_REPORT_TYPE_SGX_REMOTE = 2
_OE_HEADER = struct.Struct("<I16sQ")
_OE_REPORT_HEADER = struct.Struct("<IIQ")
OE_FORMAT_SGX_ECDSA = uuid.UUID("a3a21e87-1b4d-4014-b70a-a125d2fbcd8c").bytes
OE_FORMAT_TDX_ECDSA = uuid.UUID("8ba70286-c1cf-11ed-afa1-0242ac120002").bytes
_OE_OTHER_FORMATS = {
    uuid.UUID("09268c33-6e0b-45e5-8a27-15644d0ef89a").bytes: "SGX local attestation",
    uuid.UUID("f228aa3f-de4d-49d3-884c-b2aa87a50da6").bytes: "SGX EPID linkable",
    uuid.UUID("5c35d290-a2c2-4c55-9e13-5ad732746c88").bytes: "SGX EPID unlinkable",
    uuid.UUID("c8303454-d923-4c2c-a691-df7def460a76").bytes: "legacy OE report",
    uuid.UUID("1923d91e-12d2-4c72-b220-25cd8dace871").bytes: "raw SGX ECDSA quote",
}
# sgx_quote_t of DCAP's sgx_quote_3.h: 48-byte header, 384-byte report body, u32 signature_data_len.
_SGX_QUOTE3_FIXED = 436
# A TDX quote v4: 48-byte header, 584-byte TD report body, u32 signature_data_len (v5 bodies are longer).
_TDX_QUOTE4_FIXED = 636


def pem_public_key(spki: bytes) -> bytes:
    """The SubjectPublicKeyInfo as OpenSSL's PEM_write_bio_PUBKEY writes it, plus the NUL OE and sgx_ttls add."""
    b64 = base64.b64encode(spki).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN PUBLIC KEY-----\n" + "".join(f"{line}\n" for line in lines)
            + "-----END PUBLIC KEY-----\n").encode("ascii") + b"\x00"


def _quote_type(quote: bytes, where: str) -> str:
    """sgx_ecdsa or tdx_ecdsa (or what else the quote header says), for a quote long enough to hold its report
    data and signature length; the verifier checks the rest."""
    etype = evidence_type_of(TAG_INTEL_TEE_QUOTE, quote, where=where)
    least = {"sgx_ecdsa": _SGX_QUOTE3_FIXED, "tdx_ecdsa": _TDX_QUOTE4_FIXED}.get(etype, 0)
    if len(quote) < least:
        raise RatlsError(f"{where}: {len(quote)} bytes, too short for a {etype} quote (at least {least})")
    return etype


def _sgx_quote3_split(data: bytes, where: str) -> tuple[bytes, bytes]:
    """An SGX ECDSA quote v3 at the start of ``data`` (as OE's SGX verifier checks it) and the bytes after it."""
    if len(data) < _SGX_QUOTE3_FIXED:
        raise RatlsError(f"{where}: {len(data)} bytes, too short for an SGX quote ({_SGX_QUOTE3_FIXED} bytes "
                         "before its signature)")
    version, key_type, tee_type = struct.unpack_from("<HHI", data, 0)
    if (version, key_type, tee_type) != (3, 2, 0):
        raise RatlsError(f"{where}: not an SGX ECDSA-P256 quote v3 (version {version}, attestation key type "
                         f"{key_type}, TEE type {tee_type:#x}); OE's SGX ECDSA format holds only those")
    (sig_len,) = struct.unpack_from("<I", data, _SGX_QUOTE3_FIXED - 4)
    end = _SGX_QUOTE3_FIXED + sig_len
    if end > len(data):
        raise RatlsError(f"{where}: the quote's signature_len {sig_len} runs past the {len(data)}-byte evidence")
    return data[:end], data[end:]


def _oe_header(value: bytes, header: struct.Struct, what: str, version: int, where: str) -> tuple[Any, bytes]:
    """Split an OE header (version, one field, size of what follows) off ``value``, checking the version and
    the size; returns (the middle field, the rest). ``what`` names the header in errors."""
    if len(value) < header.size:
        raise RatlsError(f"{where}: {len(value)} bytes, too short for OE's {header.size}-byte {what} header")
    got, middle, size = header.unpack_from(value, 0)
    if got != version:
        raise RatlsError(f"{where}: {what} header version {got}, expected {version}")
    rest = value[header.size:]
    if size != len(rest):
        raise RatlsError(f"{where}: the {what} header says {size} bytes follow it, the extension holds {len(rest)}")
    return middle, rest


def _openenclave(value: bytes, spki: bytes, where: str) -> dict[str, Any]:
    format_id, body = _oe_header(value, _OE_HEADER, "attestation", OE_ATTESTATION_HEADER_VERSION, where)
    if format_id == OE_FORMAT_TDX_ECDSA:
        raise RatlsError(f"{where}: OE TDX evidence (format {uuid.UUID(bytes=format_id)}) has no custom claims; OE "
                         "itself cannot bind it to a certificate key, so it is refused")
    if format_id != OE_FORMAT_SGX_ECDSA:
        name = _OE_OTHER_FORMATS.get(format_id, "unknown")
        raise RatlsError(f"{where}: evidence format {uuid.UUID(bytes=format_id)} ({name}) is not supported; only OE's "
                         f"SGX ECDSA format {uuid.UUID(bytes=OE_FORMAT_SGX_ECDSA)} is")
    quote, custom_claims = _sgx_quote3_split(body, where)
    pem = pem_public_key(spki)
    if not hmac.compare_digest(custom_claims, pem):
        raise RatlsError(f"{where}: the custom claims buffer ({len(custom_claims)} bytes) is not the certificate's "
                         "public key in PEM with its NUL; the evidence was made for another key")
    return {"evidence": quote, "evidence_type": "sgx_ecdsa",
            "expected_report_data": hashlib.sha256(custom_claims).digest().ljust(REPORT_DATA_SIZE, b"\x00"),
            "claims": {"custom_claims_buffer": custom_claims}}


def _openenclave_report(value: bytes, spki: bytes, where: str) -> dict[str, Any]:
    report_type, quote = _oe_header(value, _OE_REPORT_HEADER, "report", OE_REPORT_HEADER_VERSION, where)
    if report_type != OE_REPORT_TYPE_SGX_REMOTE:
        raise RatlsError(f"{where}: report type {report_type}, expected {OE_REPORT_TYPE_SGX_REMOTE} (SGX remote)")
    if _quote_type(quote, where) != "sgx_ecdsa":
        raise RatlsError(f"{where}: an OE remote report holds an SGX quote, not this one")
    return {"evidence": quote, "evidence_type": "sgx_ecdsa",
            "expected_report_data": hashlib.sha256(pem_public_key(spki)).digest().ljust(REPORT_DATA_SIZE, b"\x00")}


def _intel_ttls(value: bytes, spki: bytes, where: str) -> dict[str, Any]:
    etype = _quote_type(value, where)
    if etype not in ("sgx_ecdsa", "tdx_ecdsa"):
        raise RatlsError(f"{where}: sgx_ttls writes SGX or TDX quotes, not {etype}")
    algo = hashlib.sha384 if etype == "tdx_ecdsa" else hashlib.sha256
    return {"evidence": value, "evidence_type": etype,
            "expected_report_data": algo(pem_public_key(spki)).digest().ljust(REPORT_DATA_SIZE, b"\x00")}


def _occlum(value: bytes, spki: bytes, where: str) -> dict[str, Any]:
    etype = _quote_type(value, where)
    if etype != "sgx_ecdsa":
        raise RatlsError(f"{where}: Occlum's RA-TLS holds an SGX quote, not {etype}")
    return {"evidence": value, "evidence_type": etype,
            "expected_report_data": hashlib.sha256(spki).digest().ljust(REPORT_DATA_SIZE, b"\x00")}


def _der_octet_string(value: bytes, where: str) -> bytes:
    """The content of the single DER OCTET STRING that ``value`` must be (definite, minimal length, no tail)."""
    def fail(field_name: str, offset: int, problem: str) -> RatlsError:
        return RatlsError(f"{where}: {field_name} at byte {offset}: {problem}")

    der = DerReader(value, fail)
    start, end = der.expect(TAG_OCTET_STRING, "the DER OCTET STRING around the quote")
    der.done("the DER OCTET STRING around the quote")
    return value[start:end]


def _dstack(value: bytes, spki: bytes, where: str) -> dict[str, Any]:
    quote = _der_octet_string(value, where)
    etype = _quote_type(quote, where)
    if etype not in ("sgx_ecdsa", "tdx_ecdsa"):
        raise RatlsError(f"{where}: dstack writes SGX or TDX quotes, not {etype}")
    return {"evidence": quote, "evidence_type": etype,
            "expected_report_data": hashlib.sha512(DSTACK_REPORT_DATA_TAG + spki).digest()}


_READERS = {"openenclave": _openenclave, "openenclave_report": _openenclave_report, "intel_ttls": _intel_ttls,
            "occlum": _occlum, "dstack": _dstack}


def read_foreign(found: Mapping[str, tuple[bytes, bool]], spki: bytes) -> dict[str, Any] | None:
    """The RatlsCertificate fields of a foreign-format certificate, or None to leave it to cert.py's formats.

    ``found``: extension OID -> (value, critical) for the evidence extensions cert.py collected; ``spki``: the
    certificate's exact SubjectPublicKeyInfo DER. With a DICE extension, None (DICE binds the key) after
    checking that an sgx_ttls 1.13.1 extension beside it holds the same quote; every other foreign extension
    beside DICE, or any two evidence extensions without DICE, are refused as ambiguous."""
    present = [oid for oid in FOREIGN_OIDS if oid in found]
    if not present:
        return None
    for oid in present:
        if len(found[oid][0]) > MAX_FOREIGN_EXTENSION:
            raise RatlsError(f"evidence extension {oid}: {len(found[oid][0])} bytes exceeds the "
                             f"{MAX_FOREIGN_EXTENSION}-byte cap")
    if TCG_DICE_TAGGED_EVIDENCE_OID in found:
        if present != [INTEL_TTLS_QUOTE_OID]:
            raise RatlsError(f"certificate: DICE evidence and other evidence extensions ({', '.join(present)}); "
                             "which one binds the key is ambiguous")
        dice = parse_evidence_extension(found[TCG_DICE_TAGGED_EVIDENCE_OID][0])
        if not hmac.compare_digest(dice.evidence, found[INTEL_TTLS_QUOTE_OID][0]):
            raise RatlsError(f"certificate: the sgx_ttls quote extension {INTEL_TTLS_QUOTE_OID} and the DICE "
                             "evidence hold different quotes")
        return None
    others = [oid for oid in found if oid.startswith(_RATS_TLS_ARC) or oid == _GRAMINE_OID]
    if len(present) + len(others) > 1:
        raise RatlsError(f"certificate: several evidence extensions ({', '.join(present + others)}); which one "
                         "binds the key is ambiguous")
    oid = present[0]
    value, critical = found[oid]
    fmt = FOREIGN_OIDS[oid]
    fields = _READERS[fmt](value, spki, f"{fmt} evidence extension {oid}")
    fields.setdefault("claims", {})
    return {"format": fmt, "oid": oid, "tag": None, "claims_buffer": None, "custom_claims": {},
            "pubkey_hash_alg": None, "pubkey_hash": None, "evidence_critical": critical, **fields}


_BINDING_TEXT = {
    "openenclave": "SHA-256 of the custom claims buffer (the certificate's PEM public key)",
    "openenclave_report": "SHA-256 of the certificate's PEM public key (OE report binding)",
    "intel_ttls": "{alg} of the certificate's PEM public key (sgx_ttls binding)",
    "occlum": "SHA-256 of the certificate's SubjectPublicKeyInfo (Occlum binding)",
    "dstack": 'SHA-512 of "ratls-cert:" and the certificate\'s SubjectPublicKeyInfo (dstack binding)',
}


def check_foreign_binding(parsed: RatlsCertificate, report_data: bytes) -> None:
    """Raise unless the verified quote's report data binds this foreign-format certificate's key (see the
    module docstring): the hash in the leading 32 (SHA-256), 48 (SHA-384, sgx_ttls TDX) or all 64 (SHA-512,
    dstack) bytes, zeros after."""
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise RatlsError(f"binding: report data must be bytes, got {type(report_data).__name__}")
    rd = bytes(report_data)
    size = 48 if (parsed.format == "intel_ttls" and parsed.evidence_type == "tdx_ecdsa") else 32
    if parsed.format == "dstack":
        size = REPORT_DATA_SIZE
    what = _BINDING_TEXT[parsed.format].format(alg="SHA-384" if size == 48 else "SHA-256")
    expected = parsed.expected_report_data[:size]
    if len(rd) < size:
        raise RatlsError(f"binding: the evidence's report data is {len(rd)} bytes, too short for the {size}-byte "
                         "hash")
    if not hmac.compare_digest(rd[:size], expected):
        raise RatlsError(f"binding: wrong report data: the evidence carries {rd[:size].hex()}, expected {what} "
                         f"{expected.hex()} (evidence made for another key)")
    if any(rd[size:]):
        raise RatlsError(f"binding: the evidence's report data is not zero after the {size}-byte hash")


def ttls_tdx_dice_bound(parsed: RatlsCertificate, report_data: bytes) -> bool:
    """Whether DICE evidence holding a TDX quote binds its claims buffer the way Intel's sgx_ttls (built for
    TDX) does: SHA-384(claims buffer) in report_data[0:48], zeros after. The caller has already checked the
    pubkey-hash claim against the certificate's key; False sends it on to the rats-tls SHA-256 rule."""
    if parsed.format != "dice" or parsed.evidence_type != "tdx_ecdsa" or parsed.claims_buffer is None:
        return False
    if not isinstance(report_data, bytes | bytearray | memoryview) or len(report_data) != REPORT_DATA_SIZE:
        return False
    rd = bytes(report_data)
    return hmac.compare_digest(rd[:48], hashlib.sha384(parsed.claims_buffer).digest()) and not any(rd[48:])
