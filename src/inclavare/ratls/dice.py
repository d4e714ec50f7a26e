"""TCG DICE / CCC interoperable RA-TLS evidence and endorsements, as rats-tls encodes them.

Evidence extension (OID 2.23.133.5.4.9, non-critical), a tagged definite-length CBOR array::

    <tag>([ evidence: bstr, claims-buffer: bstr ])

    tag 60000     Intel TEE quote (SGX ECDSA v3/v4/v5, TDX ECDSA v4/v5)
        60001     Intel TEE report (TDX report / SGX report type 2)
        60002     SGX legacy REPORT (EREPORT, local attestation)
        0x1a7504  SEV-SNP attestation report
        0x1a7505  SEV(-ES) attestation evidence
        0x1a7506  Hygon CSV attestation evidence

``claims-buffer`` is a definite CBOR map, text keys to bstr values: first ``"pubkey-hash"`` whose value is
the *encoded* CBOR array ``[hash-alg-id, hash]`` (hash-alg-id from the IANA named-information registry:
sha-256 = 1, sha-384 = 7, sha-512 = 8; the hash is over the certificate's SubjectPublicKeyInfo DER), then the
custom claims in the order given. The TEE's report data is SHA-256(claims-buffer) zero-padded to 64 bytes.

Endorsements extension (OID 2.23.133.5.4.2, non-critical), only for Intel quotes, tag 60000 over::

    [ VERSION (uint, always in the 4-byte form 0x1a xx xx xx xx), TCB_INFO, TCB_ISSUER_CHAIN, PCK_CRL,
      ROOT_CA_CRL, PCK_CRL_ISSUER_CHAIN, QE_IDENTITY, QE_IDENTITY_ISSUER_CHAIN (, CREATION_DATETIME) ]

every entry after VERSION a bstr holding the field of DCAP's ``sgx_ql_qve_collateral_t`` as the quote provider
library hands it out: JSON documents and PEM chains as NUL-terminated text; CRLs as PEM (collateral version
1.x), hex text (3.0) or raw DER (3.1 and later). rats-tls writes 8 entries and reads 8 or 9.

Parsing is strict and fails closed with :class:`RatlsError`: size caps before decoding, definite lengths
only, no duplicate map keys, no trailing bytes, and the bytes must be exactly what the encoder above writes
(shortest length prefixes; the VERSION in its 4-byte form), so one extension value has one meaning.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inclavare.attestation.api import AttestationError
from inclavare.attestation.collateral import DcapCollateral

__all__ = [
    "EVIDENCE_TAGS",
    "HASH_ALGORITHMS",
    "MAX_ENDORSEMENTS_EXTENSION",
    "MAX_EVIDENCE_EXTENSION",
    "REPORT_DATA_SIZE",
    "TAG_NAMES",
    "TCG_DICE_ENDORSEMENT_MANIFEST_OID",
    "TCG_DICE_TAGGED_EVIDENCE_OID",
    "Claims",
    "DiceEndorsements",
    "RatlsError",
    "TaggedEvidence",
    "build_claims_buffer",
    "build_endorsements_extension",
    "build_evidence_extension",
    "evidence_type_of",
    "hash_public_key",
    "parse_claims_buffer",
    "parse_endorsements_extension",
    "parse_evidence_extension",
    "report_data_for",
    "tag_for",
]


class RatlsError(AttestationError):
    """An RA-TLS certificate, extension or binding is malformed, unsupported or does not hold; the message says
    what and where."""


TCG_DICE_TAGGED_EVIDENCE_OID = "2.23.133.5.4.9"
TCG_DICE_ENDORSEMENT_MANIFEST_OID = "2.23.133.5.4.2"

TAG_INTEL_TEE_QUOTE = 60000
TAG_INTEL_TEE_REPORT = 60001
TAG_SGX_LEGACY_REPORT = 60002
TAG_SEV_SNP = 0x1A7504
TAG_SEV = 0x1A7505
TAG_CSV = 0x1A7506

TAG_NAMES: dict[int, str] = {
    TAG_INTEL_TEE_QUOTE: "Intel TEE quote",
    TAG_INTEL_TEE_REPORT: "Intel TEE report",
    TAG_SGX_LEGACY_REPORT: "SGX legacy report",
    TAG_SEV_SNP: "SEV-SNP report",
    TAG_SEV: "SEV report",
    TAG_CSV: "CSV report",
}

# Evidence type names (rats-tls attester/verifier names) -> CBOR tag. "sim" makes genuine-format SGX DCAP v3
# quotes; "intel_tee_report" has no rats-tls instance but its tag is defined.
EVIDENCE_TAGS: dict[str, int] = {
    "sgx_ecdsa": TAG_INTEL_TEE_QUOTE,
    "tdx_ecdsa": TAG_INTEL_TEE_QUOTE,
    "sim": TAG_INTEL_TEE_QUOTE,
    "intel_tee_report": TAG_INTEL_TEE_REPORT,
    "sgx_la": TAG_SGX_LEGACY_REPORT,
    "sev_snp": TAG_SEV_SNP,
    "sev": TAG_SEV,
    "csv": TAG_CSV,
}

# Bytes of report data (user data) each TEE carries; the SHA-256 goes first, the rest is zero.
REPORT_DATA_SIZE = 64

# IANA named-information hash algorithm ids rats-tls (and the CCC spec) accept for pubkey-hash.
HASH_ALGORITHMS: dict[int, tuple[str, int]] = {1: ("sha256", 32), 7: ("sha384", 48), 8: ("sha512", 64)}
HASH_ALG_SHA256 = 1

CLAIM_PUBKEY_HASH = "pubkey-hash"

# Caps, checked before any decoding. rats-tls itself refuses raw evidence above 8208 bytes (the size of its
# evidence union) and has no cap on endorsements (OpenSSL's default 100 KiB certificate-list limit bounds them
# on the TLS path). We allow room for TDX v5 quotes with long chains and for full collateral.
MAX_EVIDENCE_EXTENSION = 64 * 1024
MAX_ENDORSEMENTS_EXTENSION = 1024 * 1024

# DCAP collateral version: major in the low 16 bits, minor in the high 16 bits (little-endian struct).
COLLATERAL_VERSION_3_1 = 3 | (1 << 16)

_QUOTE_VERSIONS = (3, 4, 5)


def _cbor() -> Any:
    import cbor2

    return cbor2


def _loads(data: bytes, what: str) -> Any:
    """Decode one CBOR item strictly; every decoder complaint becomes a :class:`RatlsError`."""
    cbor2 = _cbor()
    try:
        return cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False, strict_hashable_types=True,
                           max_depth=8)
    except Exception as e:  # the decoder's errors on hostile input are not a closed set: fail closed on all
        reason = str(e) or type(e).__name__
        raise RatlsError(f"{what}: not valid CBOR ({reason})") from None


def _as_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise RatlsError(f"{what}: expected bytes, got {type(value).__name__}")
    return bytes(value)


def tag_for(evidence_kind: str | int) -> int:
    """The CBOR tag of an evidence type name (``sgx_ecdsa``, ``tdx_ecdsa``, ``sim``, ``sgx_la``, ``sev_snp``,
    ``sev``, ``csv``, ``intel_tee_report``) or a tag number, which must be one of the six defined tags."""
    if isinstance(evidence_kind, bool):
        raise RatlsError(f"evidence kind: expected a name or a CBOR tag, got {evidence_kind!r}")
    if isinstance(evidence_kind, int):
        if evidence_kind not in TAG_NAMES:
            raise RatlsError(f"evidence kind: unknown CBOR tag {evidence_kind:#x}; known: "
                             + ", ".join(f"{t} ({n})" for t, n in TAG_NAMES.items()))
        return evidence_kind
    tag = EVIDENCE_TAGS.get(evidence_kind)
    if tag is None:
        raise RatlsError(f"evidence kind: unknown evidence type {evidence_kind!r}; known: "
                         + ", ".join(sorted(EVIDENCE_TAGS)))
    return tag


def evidence_type_of(tag: int, evidence: bytes, *, where: str = "DICE evidence") -> str:
    """The evidence type of raw ``evidence`` under ``tag``, as rats-tls decides it (for tag 60000 from the
    quote header: v3 with attestation key type 2/3, or v4/v5 with TEE type 0 -> ``sgx_ecdsa``; v4/v5 with TEE
    type 0x81 -> ``tdx_ecdsa``; EPID quotes and anything else are refused)."""
    if tag not in TAG_NAMES:
        raise RatlsError(f"{where}: unknown CBOR tag {tag:#x}")
    if not evidence:
        raise RatlsError(f"{where}: the evidence is empty")
    if tag == TAG_INTEL_TEE_QUOTE:
        if len(evidence) < 8:
            raise RatlsError(f"{where}: {len(evidence)} bytes is too short for an Intel quote header")
        version, key_type, tee_type = struct.unpack_from("<HHI", evidence, 0)
        if version == 2 or (version == 3 and key_type in (0, 1)):
            raise RatlsError(f"{where}: SGX EPID quotes (version {version}, attestation key type {key_type}) "
                             "are not supported")
        if version == 3 and key_type in (2, 3):
            return "sgx_ecdsa"
        if version in (4, 5) and tee_type == 0:
            return "sgx_ecdsa"
        if version in (4, 5) and tee_type == 0x81:
            return "tdx_ecdsa"
        raise RatlsError(f"{where}: unrecognised Intel quote (version {version}, attestation key type "
                         f"{key_type}, TEE type {tee_type:#x})")
    return {TAG_INTEL_TEE_REPORT: "intel_tee_report", TAG_SGX_LEGACY_REPORT: "sgx_la", TAG_SEV_SNP: "sev_snp",
            TAG_SEV: "sev", TAG_CSV: "csv"}[tag]


# --------------------------------------------------------------------------------------------------
# Claims buffer


def hash_public_key(spki_der: bytes, alg: int = HASH_ALG_SHA256) -> bytes:
    """The pubkey-hash of a SubjectPublicKeyInfo DER with IANA hash algorithm ``alg``."""
    if alg not in HASH_ALGORITHMS:
        raise RatlsError(f"pubkey-hash: unsupported hash-alg-id {alg}; expected 1 (sha-256), 7 (sha-384) or "
                         "8 (sha-512)")
    return hashlib.new(HASH_ALGORITHMS[alg][0], bytes(spki_der)).digest()


@dataclass(frozen=True)
class Claims:
    """A decoded claims buffer: the pubkey-hash entry and the custom claims (in buffer order)."""

    pubkey_hash_alg: int
    pubkey_hash: bytes
    custom: dict[str, bytes] = field(default_factory=dict)

    def as_dict(self) -> dict[str, bytes]:
        """Every claim with its raw value, ``pubkey-hash`` (the encoded hash entry) first."""
        return {CLAIM_PUBKEY_HASH: _hash_entry(self.pubkey_hash_alg, self.pubkey_hash), **self.custom}


def _hash_entry(alg: int, digest: bytes) -> bytes:
    return bytes(_cbor().dumps([alg, bytes(digest)]))


def _check_claim_name(name: Any) -> str:
    if not isinstance(name, str):
        raise RatlsError(f"custom claims: claim names must be text, got {type(name).__name__}")
    if not name or "\x00" in name:
        raise RatlsError(f"custom claims: claim name {name!r} must be non-empty and hold no NUL (rats-tls keeps "
                         "names as C strings)")
    if name == CLAIM_PUBKEY_HASH:
        raise RatlsError(f"custom claims: {CLAIM_PUBKEY_HASH!r} is reserved for the key binding")
    return name


def build_claims_buffer(pubkey_hash: bytes, custom_claims: Mapping[str, bytes] | None = None,
                        hash_alg: int = HASH_ALG_SHA256) -> bytes:
    """The claims buffer rats-tls writes: ``{"pubkey-hash": h'<[alg, hash]>', <name>: h'<value>', ...}``."""
    if hash_alg not in HASH_ALGORITHMS:
        raise RatlsError(f"pubkey-hash: unsupported hash-alg-id {hash_alg}")
    size = HASH_ALGORITHMS[hash_alg][1]
    if len(pubkey_hash) != size:
        raise RatlsError(f"pubkey-hash: {len(pubkey_hash)} bytes, {HASH_ALGORITHMS[hash_alg][0]} gives {size}")
    claims: dict[str, bytes] = {CLAIM_PUBKEY_HASH: _hash_entry(hash_alg, pubkey_hash)}
    for name, value in (custom_claims or {}).items():
        claims[_check_claim_name(name)] = _as_bytes(value, f"custom claim {name!r}")
    return bytes(_cbor().dumps(claims))


def parse_claims_buffer(data: bytes, *, where: str = "claims buffer") -> Claims:
    """Decode a claims buffer (see the module docstring); a missing or malformed pubkey-hash is refused."""
    data = _as_bytes(data, where)
    obj = _loads(data, where)
    if not isinstance(obj, dict):
        raise RatlsError(f"{where}: expected a CBOR map, got {type(obj).__name__}")
    entry: bytes | None = None
    custom: dict[str, bytes] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise RatlsError(f"{where}: claim names must be text strings, got {type(key).__name__}")
        if not isinstance(value, bytes):
            raise RatlsError(f"{where}: claim {key!r} must be a byte string, got {type(value).__name__}")
        if key == CLAIM_PUBKEY_HASH:
            entry = value
        else:
            custom[key] = value
    if entry is None:
        raise RatlsError(f"{where}: no {CLAIM_PUBKEY_HASH!r} claim")
    if _cbor().dumps(obj) != data:
        raise RatlsError(f"{where}: not in the definite, shortest-form encoding (or trailing bytes)")
    what = f"{where}: {CLAIM_PUBKEY_HASH}"
    hash_entry = _loads(entry, what)
    if not isinstance(hash_entry, list | tuple) or len(hash_entry) != 2:
        raise RatlsError(f"{what}: expected the array [hash-alg-id, hash-value]")
    alg, digest = hash_entry
    if not isinstance(alg, int) or isinstance(alg, bool) or alg < 0:
        raise RatlsError(f"{what}: hash-alg-id must be an unsigned integer")
    if alg not in HASH_ALGORITHMS:
        raise RatlsError(f"{what}: unsupported hash-alg-id {alg}; expected 1 (sha-256), 7 (sha-384) or "
                         "8 (sha-512)")
    if not isinstance(digest, bytes):
        raise RatlsError(f"{what}: hash-value must be a byte string")
    if len(digest) != HASH_ALGORITHMS[alg][1]:
        raise RatlsError(f"{what}: hash-value is {len(digest)} bytes, {HASH_ALGORITHMS[alg][0]} gives "
                         f"{HASH_ALGORITHMS[alg][1]}")
    if _hash_entry(alg, digest) != entry:
        raise RatlsError(f"{what}: not in the definite, shortest-form encoding (or trailing bytes)")
    return Claims(alg, digest, custom)


def report_data_for(claims_buffer: bytes, size: int = REPORT_DATA_SIZE) -> bytes:
    """The report data the evidence must carry: SHA-256(claims buffer) zero-padded to ``size`` bytes."""
    return hashlib.sha256(bytes(claims_buffer)).digest().ljust(size, b"\x00")


# --------------------------------------------------------------------------------------------------
# Evidence extension


@dataclass(frozen=True)
class TaggedEvidence:
    tag: int
    evidence_type: str
    evidence: bytes
    claims_buffer: bytes
    claims: Claims


def build_evidence_extension(tag: int, evidence: bytes, claims_buffer: bytes) -> bytes:
    """``<tag>([evidence, claims_buffer])`` encoded as rats-tls does; checks what the parser will check."""
    tag = tag_for(tag)
    evidence = _as_bytes(evidence, "evidence")
    evidence_type_of(tag, evidence, where="evidence")
    parse_claims_buffer(claims_buffer)
    cbor2 = _cbor()
    out = bytes(cbor2.dumps(cbor2.CBORTag(tag, [evidence, bytes(claims_buffer)])))
    if len(out) > MAX_EVIDENCE_EXTENSION:
        raise RatlsError(f"DICE evidence extension: {len(out)} bytes exceeds the {MAX_EVIDENCE_EXTENSION}-byte cap")
    return out


def _peek_tag(data: bytes) -> int | None:
    """The tag number of the CBOR item ``data`` starts with, read before decoding (so an unknown tag is
    refused as such, not as whatever a decoder makes of its content); None if it is not a tag."""
    if not data or data[0] >> 5 != 6:
        return None
    info = data[0] & 0x1F
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or len(data) < 1 + width:
        return None
    return int.from_bytes(data[1:1 + width], "big")


def _tagged(data: bytes, what: str, cap: int, check_tag: Callable[[int], None]) -> tuple[Any, int, list[Any]]:
    data = _as_bytes(data, what)
    if not data:
        raise RatlsError(f"{what}: empty")
    if len(data) > cap:
        raise RatlsError(f"{what}: {len(data)} bytes exceeds the {cap}-byte cap")
    tag = _peek_tag(data)
    if tag is None:
        raise RatlsError(f"{what}: expected a tagged CBOR item")
    check_tag(tag)
    obj = _loads(data, what)
    if not isinstance(obj, _cbor().CBORTag) or obj.tag != tag:
        raise RatlsError(f"{what}: expected a tagged CBOR item, got {type(obj).__name__}")
    if not isinstance(obj.value, list | tuple):
        raise RatlsError(f"{what}: the tagged item must be an array, got {type(obj.value).__name__}")
    return obj, tag, list(obj.value)


def parse_evidence_extension(data: bytes, *, where: str = "DICE evidence extension") -> TaggedEvidence:
    """Decode the value of extension 2.23.133.5.4.9 (at most :data:`MAX_EVIDENCE_EXTENSION` bytes)."""
    def known(tag: int) -> None:
        if tag not in TAG_NAMES:
            raise RatlsError(f"{where}: unknown CBOR tag {tag} ({tag:#x}); known: "
                             + ", ".join(f"{t} ({n})" for t, n in TAG_NAMES.items()))

    obj, tag, items = _tagged(data, where, MAX_EVIDENCE_EXTENSION, known)
    if len(items) != 2:
        raise RatlsError(f"{where}: the array has {len(items)} entries, expected 2 (evidence, claims buffer)")
    evidence = items[0]
    claims_buffer = items[1]
    if not isinstance(evidence, bytes):
        raise RatlsError(f"{where}: entry 0 (evidence) must be a byte string")
    if not isinstance(claims_buffer, bytes):
        raise RatlsError(f"{where}: entry 1 (claims buffer) must be a byte string")
    if _cbor().dumps(obj) != bytes(data):
        raise RatlsError(f"{where}: not in the definite, shortest-form encoding (or trailing bytes)")
    evidence_type = evidence_type_of(tag, evidence, where=where)
    claims = parse_claims_buffer(claims_buffer, where=f"{where}: claims buffer")
    return TaggedEvidence(tag, evidence_type, evidence, claims_buffer, claims)


# --------------------------------------------------------------------------------------------------
# Endorsements extension

_ENDORSEMENT_FIELDS = ("tcb_info", "tcb_info_issuer_chain", "pck_crl", "root_ca_crl", "pck_crl_issuer_chain",
                       "qe_identity", "qe_identity_issuer_chain")


@dataclass(frozen=True)
class DiceEndorsements:
    """The endorsements extension: every field as carried (a trailing NUL, if any, kept) and the collateral the
    DCAP verifier takes."""

    version: int
    tcb_info: bytes
    tcb_info_issuer_chain: bytes
    pck_crl: bytes
    root_ca_crl: bytes
    pck_crl_issuer_chain: bytes
    qe_identity: bytes
    qe_identity_issuer_chain: bytes
    creation_datetime: bytes | None
    collateral: DcapCollateral

    @property
    def version_text(self) -> str:
        return f"{self.version & 0xFFFF}.{self.version >> 16}"


def _version_item(version: int) -> bytes:
    return b"\x1a" + struct.pack(">I", version)


def _encode_endorsements(version: int, fields: list[bytes]) -> bytes:
    """Tag 60000 over a definite array; the VERSION always as a 4-byte uint (as libcbor's uint32 writes it)."""
    cbor2 = _cbor()
    head = bytes(cbor2.dumps(cbor2.CBORTag(TAG_INTEL_TEE_QUOTE, [None] * (1 + len(fields)))))
    # head = tag header + array header + N x 0xf6 (null); keep the headers, then write the items
    prefix = head[: len(head) - (1 + len(fields))]
    return prefix + _version_item(version) + b"".join(bytes(cbor2.dumps(f)) for f in fields)


def _text(data: bytes) -> bytes:
    return data + b"\x00"


def _strip_nul(data: bytes) -> bytes:
    """Text fields end with the NUL the quote provider library counts in their size; raw DER (a 3.1 CRL) is
    left alone, as its last byte may be a genuine zero."""
    if data.startswith(b"\x30"):
        return data
    return data[:-1] if data.endswith(b"\x00") else data


def _crl_field(der: bytes | None, version: int) -> bytes:
    if der is None:
        return b""
    major, minor = version & 0xFFFF, version >> 16
    if major < 3:
        import base64

        b64 = base64.b64encode(der).decode("ascii")
        body = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
        return _text(f"-----BEGIN X509 CRL-----\n{body}\n-----END X509 CRL-----\n".encode("ascii"))
    if major == 3 and minor == 0:
        return _text(der.hex().encode("ascii"))
    return bytes(der)


def build_endorsements_extension(collateral: DcapCollateral, *, version: int = COLLATERAL_VERSION_3_1,
                                 creation_datetime: bytes | None = None) -> bytes:
    """The endorsements extension value for ``collateral``, shaped as the DCAP quote provider library hands the
    collateral to rats-tls: ``{"tcbInfo":...,"signature":"<hex>"}`` and ``{"enclaveIdentity":...}``
    documents and PEM chains, NUL-terminated; CRLs by ``version`` (default 3.1: raw DER). 8 entries, or 9
    with ``creation_datetime``."""
    from inclavare.attestation.collateral import der_chain_to_pem

    if not 0 <= version <= 0xFFFFFFFF:
        raise RatlsError(f"endorsements: version {version} does not fit 32 bits")
    c = collateral
    for name, sig in (("tcb_info", c.tcb_info_signature), ("qe_identity", c.qe_identity_signature)):
        if len(sig) != 64:
            raise RatlsError(f"endorsements: {name} signature is {len(sig)} bytes, expected 64 (r||s)")

    def doc(key: str, raw: bytes, sig: bytes) -> bytes:
        return _text(b'{"' + key.encode() + b'":' + bytes(raw) + b',"signature":"' + sig.hex().encode() + b'"}')

    def chain(ders: list[bytes]) -> bytes:
        return _text(der_chain_to_pem(ders).encode("ascii")) if ders else b""

    fields = [
        doc("tcbInfo", c.tcb_info_raw, c.tcb_info_signature),
        chain(c.tcb_info_issuer_chain),
        _crl_field(c.pck_crl, version),
        _crl_field(c.root_ca_crl, version),
        chain(c.pck_crl_issuer_chain),
        doc("enclaveIdentity", c.qe_identity_raw, c.qe_identity_signature),
        chain(c.qe_identity_issuer_chain),
    ]
    if creation_datetime is not None:
        fields.append(_as_bytes(creation_datetime, "endorsements: creation datetime"))
    out = _encode_endorsements(version, fields)
    if len(out) > MAX_ENDORSEMENTS_EXTENSION:
        raise RatlsError(f"endorsements extension: {len(out)} bytes exceeds the {MAX_ENDORSEMENTS_EXTENSION}-byte "
                         "cap")
    return out


def parse_endorsements_extension(data: bytes, *, where: str = "DICE endorsements extension") -> DiceEndorsements:
    """Decode the value of extension 2.23.133.5.4.2 (at most :data:`MAX_ENDORSEMENTS_EXTENSION` bytes) and turn
    it into :class:`DcapCollateral` (signatures and chains are the verifier's job)."""
    def intel_quote(tag: int) -> None:
        if tag != TAG_INTEL_TEE_QUOTE:
            known = f"unknown CBOR tag {tag:#x}" if tag not in TAG_NAMES else f"tag {tag:#x} ({TAG_NAMES[tag]})"
            raise RatlsError(f"{where}: {known}; endorsements are defined only for Intel TEE quotes (tag 60000)")

    _, tag, items = _tagged(data, where, MAX_ENDORSEMENTS_EXTENSION, intel_quote)
    if len(items) not in (8, 9):
        raise RatlsError(f"{where}: the array has {len(items)} entries, expected 8 or 9")
    version = items[0]
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= 0xFFFFFFFF:
        raise RatlsError(f"{where}: entry 0 (VERSION) must be a 32-bit unsigned integer")
    values: list[bytes] = []
    for i, item in enumerate(items[1:], 1):
        name = (_ENDORSEMENT_FIELDS + ("creation_datetime",))[i - 1]
        if not isinstance(item, bytes):
            raise RatlsError(f"{where}: entry {i} ({name}) must be a byte string")
        values.append(item)
    if _encode_endorsements(version, values) != bytes(data):
        raise RatlsError(f"{where}: not in the definite, shortest-form encoding with a 4-byte VERSION "
                         "(or trailing bytes)")
    fields = dict(zip(_ENDORSEMENT_FIELDS, values[:7], strict=True))
    collateral = _to_collateral(fields, where)
    return DiceEndorsements(version=version, creation_datetime=values[7] if len(values) == 8 else None,
                            collateral=collateral, **fields)


def _to_collateral(fields: dict[str, bytes], where: str) -> DcapCollateral:
    from inclavare.attestation.collateral import from_documents

    def opt(name: str) -> bytes | None:
        value = _strip_nul(fields[name])
        return value if value.strip(b" \t\r\n") else None

    for name in ("tcb_info", "qe_identity"):
        if opt(name) is None:
            raise RatlsError(f"{where}: {name} is empty")
    names = {"tcb_info": f"{where}: TCB info", "qe_identity": f"{where}: QE identity",
             "pck_crl": f"{where}: PCK CRL", "root_crl": f"{where}: root CA CRL",
             "tcb_chain": f"{where}: TCB info issuer chain", "qe_chain": f"{where}: QE identity issuer chain",
             "pck_crl_chain": f"{where}: PCK CRL issuer chain"}
    try:
        return from_documents(
            opt("tcb_info") or b"", opt("qe_identity") or b"", pck_crl=opt("pck_crl"), root_crl=opt("root_ca_crl"),
            tcb_chain=opt("tcb_info_issuer_chain"), qe_chain=opt("qe_identity_issuer_chain"),
            pck_crl_chain=opt("pck_crl_issuer_chain"), source="RA-TLS endorsements extension", names=names)
    except RatlsError:
        raise
    except AttestationError as e:
        raise RatlsError(str(e)) from None
    except Exception as e:  # fail closed on anything the loaders did not anticipate
        raise RatlsError(f"{where}: malformed collateral ({e})") from None
