"""Intel DCAP collateral, as the verifiers consume it, and where it comes from.

:class:`DcapCollateral` holds the documents exactly as served: the TCB info and QE identity JSON *values* as
raw bytes (their signatures cover those exact bytes, so they are never re-serialised), their signatures
(64-byte r||s), issuer chains (DER, leaf first), and the CRLs (DER). Loaders (files in Intel PCS shapes, a
bundle JSON, a PCS/PCCS-compatible HTTP service with an on-disk cache) all produce this one type.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
import re
import stat
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from inclavare.atomicfile import write_atomic
from inclavare.attestation.api import CollateralError
from inclavare.formats import pem

__all__ = [
    "BUNDLE_KEYS",
    "DcapCollateral",
    "PcsClient",
    "SignedDocument",
    "der_chain_to_pem",
    "from_bundle",
    "from_documents",
    "from_files",
    "load_crl",
    "parse_certificate_chain",
    "parse_signed_document",
    "raw_json_value",
    "to_bundle",
]

log = logging.getLogger(__name__)


@dataclass
class DcapCollateral:
    tcb_info_raw: bytes  # the exact bytes of the "tcbInfo" JSON value
    tcb_info_signature: bytes  # r||s, 64 bytes
    tcb_info_issuer_chain: list[bytes]  # DER certificates, TCB signing cert first
    qe_identity_raw: bytes  # the exact bytes of the "enclaveIdentity" JSON value
    qe_identity_signature: bytes
    qe_identity_issuer_chain: list[bytes]
    pck_crl: bytes | None = None  # DER
    root_ca_crl: bytes | None = None  # DER
    pck_crl_issuer_chain: list[bytes] = field(default_factory=list)
    source: str = ""  # where it came from, for messages


# --------------------------------------------------------------------------------------------------
# Exact bytes of JSON members
#
# Intel signs the TCB info and QE identity as the bytes of the member's value inside the served document, so
# the loaders cut those bytes out of the document and never parse-and-reserialise. The stdlib scanner
# (scanstring for keys, raw_decode for values) finds the boundaries; positions are characters of the decoded
# text and are mapped back to byte offsets of the document.

_JSON_WS = " \t\n\r"
_UTF8_BOM = b"\xef\xbb\xbf"
MAX_DOCUMENT = 16 * 1024 * 1024  # far above any collateral document PCS serves (a PCK CRL is a few hundred KiB)


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Duplicate members anywhere make "the" value ambiguous between parsers: fail closed.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_members, parse_constant=_no_constants)


@dataclass(frozen=True)
class _Member:
    value: Any  # parsed
    raw: bytes  # exact bytes of the value in the document


def _json_error(where: str, e: ValueError) -> CollateralError:
    if isinstance(e, json.JSONDecodeError):
        return CollateralError(f"{where}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    return CollateralError(f"{where}: invalid JSON: {e}")


def _members(document: bytes, where: str) -> dict[str, _Member]:
    """The top-level members of a JSON object document, each with its parsed value and its exact bytes."""
    if not isinstance(document, bytes | bytearray | memoryview):
        raise CollateralError(f"{where}: expected bytes, got {type(document).__name__}")
    document = bytes(document)
    base = len(_UTF8_BOM) if document.startswith(_UTF8_BOM) else 0
    try:
        text = document[base:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise CollateralError(f"{where}: not UTF-8 text (bad byte at offset {base + e.start})") from None
    ascii_only = len(text) == len(document) - base

    def byte_at(i: int) -> int:
        return base + (i if ascii_only else len(text[:i].encode("utf-8")))

    def skip(i: int) -> int:
        while i < len(text) and text[i] in _JSON_WS:
            i += 1
        return i

    def expect(i: int, ch: str, what: str) -> int:
        if i >= len(text) or text[i] != ch:
            got = "end of document" if i >= len(text) else repr(text[i])
            raise CollateralError(f"{where}: expected {what} at byte {byte_at(i)}, found {got}")
        return i + 1

    out: dict[str, _Member] = {}
    try:
        i = expect(skip(0), "{", "a JSON object")
        i = skip(i)
        if i < len(text) and text[i] == "}":
            i += 1
        else:
            while True:
                i = expect(i, '"', "a member name")
                key, i = json.decoder.scanstring(text, i, True)  # type: ignore[attr-defined]
                if key in out:
                    raise CollateralError(f"{where}: duplicate top-level member {key!r}")
                i = expect(skip(i), ":", "':'")
                start = skip(i)
                value, end = _DECODER.raw_decode(text, start)
                out[key] = _Member(value, document[byte_at(start):byte_at(end)])
                i = skip(end)
                if i < len(text) and text[i] == ",":
                    i = skip(i + 1)
                    continue
                i = expect(i, "}", "',' or '}'")
                break
    except RecursionError:
        raise CollateralError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, duplicates, NaN/Infinity
        raise _json_error(where, e) from None
    if skip(i) != len(text):
        raise CollateralError(f"{where}: unexpected data at byte {byte_at(skip(i))} after the JSON object")
    return out


def raw_json_value(document: bytes, key: str, *, where: str = "JSON document") -> bytes:
    """The exact bytes of the value of top-level member ``key`` of the JSON object ``document``, as they
    appear in it (whitespace, escapes and member order inside the value untouched)."""
    members = _members(document, where)
    if key not in members:
        raise CollateralError(f"{where}: no top-level member {key!r}")
    return members[key].raw


# --------------------------------------------------------------------------------------------------
# PEM, DER, hex

# URL-encoding with '+' for spaces (Go's QueryEscape, application/x-www-form-urlencoded) turns the markers
# into "-----BEGIN+CERTIFICATE-----"; the base64 body keeps its own '+' (encoded as %2B) either way.
_PLUS_MARKER = re.compile(rb"-----(BEGIN|END)\+([A-Z0-9+]+)-----")
_HEX = re.compile(rb"(?:[0-9a-fA-F]{2})+")


def _pem_blocks(data: bytes, label: str, where: str) -> list[bytes]:
    """DER bytes of every PEM block of ``data``, each of which must be labelled ``label``; only whitespace
    (and a trailing NUL, as Intel's QE leaves) may surround them."""
    data = _PLUS_MARKER.sub(lambda m: b"-----" + m[1] + b" " + m[2].replace(b"+", b" ") + b"-----", data)

    def fail(problem: str) -> CollateralError:
        if problem == "no PEM block":
            problem = f"no complete {label} PEM block"
        return CollateralError(f"{where}: {problem}")

    found = pem.blocks(data, fail)
    for n, block in enumerate(found, 1):
        if block.label != label:
            raise CollateralError(f"{where}: PEM block {n} is {block.label!r}, not {label!r}")
    return [block.der for block in found]


def _pem(label: str, der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def der_chain_to_pem(chain: Sequence[bytes]) -> str:
    """PEM text of DER certificates, in order (64-column base64, LF line ends)."""
    return "".join(_pem("CERTIFICATE", der) for der in chain)


def _check_certificate(der: bytes, where: str) -> None:
    from cryptography import x509

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x509.load_der_x509_certificate(der)
    except ValueError:
        raise CollateralError(f"{where}: not a valid X.509 certificate") from None


def parse_certificate_chain(data: bytes | str, *, where: str = "certificate chain") -> list[bytes]:
    """DER certificates (in order) from PEM text, URL-encoded PEM text (as the PCS ``*-Issuer-Chain``
    response headers carry it) or a single DER certificate. Every certificate must parse."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    stripped = raw.strip()
    if not stripped:
        raise CollateralError(f"{where}: empty")
    if stripped.startswith(b"-----BEGIN") or not stripped.startswith(b"\x30"):
        if b"%" in stripped:  # never in PEM: URL-encoded, as the PCS headers carry it
            stripped = urllib.parse.unquote_to_bytes(stripped)
        chain = _pem_blocks(stripped, "CERTIFICATE", where)
    else:
        chain = [raw]
    for n, der in enumerate(chain, 1):
        _check_certificate(der, f"{where}: certificate {n}" if len(chain) > 1 else where)
    return chain


def load_crl(data: bytes, *, where: str = "CRL") -> bytes:
    """DER bytes of an X.509 CRL given as DER, PEM (``X509 CRL``) or hex-encoded DER (as PCCS serves the root
    CA CRL and as the bundle JSON stores CRLs). The CRL must parse; its signature is the verifier's job."""
    from cryptography import x509

    data = bytes(data)
    stripped = data.strip()
    if b"-----BEGIN" in stripped:
        if b"%" in stripped:  # never in PEM: URL-encoded
            stripped = urllib.parse.unquote_to_bytes(stripped)
        blocks = _pem_blocks(stripped, "X509 CRL", where)
        if len(blocks) != 1:
            raise CollateralError(f"{where}: holds {len(blocks)} CRLs, expected one")
        der = blocks[0]
    elif _HEX.fullmatch(stripped) and not stripped.startswith(b"\x30"):
        der = bytes.fromhex(stripped.decode("ascii"))
    else:
        der = data
    if not der:
        raise CollateralError(f"{where}: empty")
    try:
        x509.load_der_x509_crl(der)
    except ValueError:
        raise CollateralError(f"{where}: not an X.509 CRL (DER, PEM or hex)") from None
    return der


def _hex_bytes(value: Any, where: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value.encode("ascii", "replace")):
        raise CollateralError(f"{where}: expected a hex string")
    out = bytes.fromhex(value)
    if size is not None and len(out) != size:
        raise CollateralError(f"{where}: expected {size} bytes ({2 * size} hex digits), got {len(out)}")
    return out


# --------------------------------------------------------------------------------------------------
# Documents in Intel PCS shapes

TCB_INFO_KEY = "tcbInfo"
QE_IDENTITY_KEY = "enclaveIdentity"
SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class SignedDocument:
    """One PCS document split into what the verifier needs: the exact signed bytes, the parsed value (for
    reading fields such as ``nextUpdate``) and the 64-byte r||s signature."""

    raw: bytes
    value: dict[str, Any]
    signature: bytes


def parse_signed_document(document: bytes, key: str, *, where: str = "JSON document") -> SignedDocument:
    """Split ``{"<key>": {...}, "signature": "<128 hex digits>"}`` (the shape Intel PCS serves TCB info and
    enclave identities in). Exactly these two members, the value an object; anything else raises."""
    members = _members(document, where)
    if key not in members:
        if key == QE_IDENTITY_KEY and "qeIdentity" in members:
            raise CollateralError(f"{where}: QE identity v1 ('qeIdentity') is not supported; "
                                  "fetch enclave identity v2 (PCS API v3 or later)")
        other = TCB_INFO_KEY if key == QE_IDENTITY_KEY else QE_IDENTITY_KEY
        hint = f" (it holds {other!r} instead)" if other in members else ""
        raise CollateralError(f"{where}: no {key!r} member{hint}")
    if "signature" not in members:
        raise CollateralError(f"{where}: no 'signature' member")
    extra = sorted(set(members) - {key, "signature"})
    if extra:
        raise CollateralError(f"{where}: unexpected member(s) {', '.join(map(repr, extra))}")
    value = members[key].value
    if not isinstance(value, dict):
        raise CollateralError(f"{where}: {key!r} is not a JSON object")
    sig = _hex_bytes(members["signature"].value, f"{where}: signature", SIGNATURE_SIZE)
    return SignedDocument(members[key].raw, value, sig)


def _signed_value(raw: bytes, key: str, where: str) -> dict[str, Any]:
    """Check that ``raw`` (a bundle's tcb_info / qe_identity text) is exactly one JSON object."""
    stripped = raw.strip(_JSON_WS.encode())
    if stripped != raw or not raw.startswith(b"{"):
        raise CollateralError(f"{where}: expected the {key!r} JSON object itself, with nothing around it")
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CollateralError(f"{where}: not UTF-8 text") from None
    except RecursionError:
        raise CollateralError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:
        raise _json_error(where, e) from None
    if not isinstance(value, dict):
        raise CollateralError(f"{where}: not a JSON object")
    if key in value and "signature" in value:
        raise CollateralError(f"{where}: holds a whole PCS document; expected only its {key!r} value")
    return value


def next_update(value: dict[str, Any], *, where: str) -> datetime.datetime:
    """``nextUpdate`` of a TCB info / enclave identity value, as an aware UTC datetime."""
    text = value.get("nextUpdate")
    if not isinstance(text, str):
        raise CollateralError(f"{where}: no 'nextUpdate' string")
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CollateralError(f"{where}: nextUpdate {text!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise CollateralError(f"{where}: nextUpdate {text!r} has no time zone")
    return t.astimezone(datetime.UTC)


def crl_next_update(der: bytes) -> datetime.datetime | None:
    from cryptography import x509

    return x509.load_der_x509_crl(der).next_update_utc


# --------------------------------------------------------------------------------------------------
# Issuers from a pool of certificates (``--certs DIR``, see attestation/trust.py)


def _utc(t: datetime.datetime | None) -> datetime.datetime:
    if t is None:
        return datetime.datetime.now(datetime.UTC)
    return t.replace(tzinfo=datetime.UTC) if t.tzinfo is None else t.astimezone(datetime.UTC)


SGX_PCK_EXTENSION_OID = "1.2.840.113741.1.13.1"  # only PCK certificates carry it


class _Pool:
    """Parsed extra certificates, to pick issuers from when the collateral does not carry its chain."""

    def __init__(self, ders: Sequence[bytes], as_of: datetime.datetime | None) -> None:
        from cryptography import x509

        self.as_of = _utc(as_of)
        self.items: list[tuple[bytes, x509.Certificate]] = []
        for n, der in enumerate(ders, 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cert = x509.load_der_x509_certificate(bytes(der))
            except (ValueError, TypeError):
                raise CollateralError(f"extra certificate {n}: not a DER X.509 certificate") from None
            self.items.append((bytes(der), cert))

    def _rank(self, cert: Any) -> tuple[bool, datetime.datetime]:
        valid = cert.not_valid_before_utc <= self.as_of <= cert.not_valid_after_utc
        return valid, cert.not_valid_after_utc

    def _best(self, found: list[tuple[bytes, Any]]) -> tuple[bytes, Any] | None:
        """Of equally fitting certificates (Intel re-issues the TCB signing certificate with the same key),
        the one valid at ``as_of``, else the one that expires last."""
        return max(found, key=lambda item: self._rank(item[1])) if found else None

    @staticmethod
    def _issued_by(child: Any, parent: Any) -> bool:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        return True

    def chain_up(self, der: bytes, cert: Any) -> list[bytes]:
        """``der`` followed by its issuers found in the pool, up to a self-issued certificate."""
        chain, current = [der], cert
        for _ in range(8):
            if current.issuer == current.subject:
                break
            best = self._best([(d, c) for d, c in self.items if d not in chain and self._issued_by(current, c)])
            if best is None:
                break
            chain.append(best[0])
            current = best[1]
        return chain

    def signer_chain(self, raw: bytes, signature: bytes) -> list[bytes]:
        """The chain of the certificate that signed ``raw`` (ECDSA-P256-SHA256, r||s): a leaf (not a CA, no
        SGX PCK extension) whose key verifies the signature; failing that, the only such leaf, so the
        verifier reports the bad signature; else empty."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        leaves = []
        for der, cert in self.items:
            try:
                exts = {ext.oid.dotted_string: ext.value for ext in cert.extensions}
            except ValueError:  # malformed extensions: not a certificate to build on
                continue
            basic = exts.get(x509.oid.ExtensionOID.BASIC_CONSTRAINTS.dotted_string)
            # a CA does not sign collateral, nor does a PCK certificate (it signs QE reports)
            if not (isinstance(basic, x509.BasicConstraints) and basic.ca) and SGX_PCK_EXTENSION_OID not in exts:
                leaves.append((der, cert))
        der_sig = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        signing = []
        for der, cert in leaves:
            try:
                key = cert.public_key()
                if isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(der_sig, raw, ec.ECDSA(hashes.SHA256()))
                    signing.append((der, cert))
            except (InvalidSignature, UnsupportedAlgorithm, ValueError):
                continue
        best = self._best(signing) or (leaves[0] if len(leaves) == 1 else None)
        return self.chain_up(*best) if best else []

    def crl_issuer_chain(self, crl_der: bytes) -> list[bytes]:
        """The chain of the CA that issued the CRL: subject matches its issuer, and the CRL's signature
        verifies if any candidate's does."""
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm

        crl = x509.load_der_x509_crl(crl_der)
        named = [(d, c) for d, c in self.items if c.subject == crl.issuer]
        signing = []
        for d, c in named:
            try:
                key: Any = c.public_key()
                if crl.is_signature_valid(key):
                    signing.append((d, c))
            except (TypeError, ValueError, UnsupportedAlgorithm):
                continue
        best = self._best(signing) or self._best(named)
        return self.chain_up(*best) if best else []


# --------------------------------------------------------------------------------------------------
# Loaders


def _read_file(path: str | os.PathLike[str], what: str) -> bytes:
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise CollateralError(f"{what} {p}: not a regular file")
            data = f.read(MAX_DOCUMENT + 1)
    except OSError as e:
        raise CollateralError(f"{what} {p}: {e.strerror}") from None
    if len(data) > MAX_DOCUMENT:
        raise CollateralError(f"{what} {p}: larger than {MAX_DOCUMENT} bytes")
    return data


def from_documents(tcb_info: bytes, qe_identity: bytes, *, pck_crl: bytes | None = None,
                   root_crl: bytes | None = None, tcb_chain: bytes | str | None = None,
                   qe_chain: bytes | str | None = None, pck_crl_chain: bytes | str | None = None,
                   extra_certs: Sequence[bytes] = (), as_of: datetime.datetime | None = None,
                   source: str = "documents", names: dict[str, str] | None = None) -> DcapCollateral:
    """Collateral from document bytes in Intel PCS shapes (see :func:`from_files`); ``names`` maps
    tcb_info / qe_identity / pck_crl / root_crl / tcb_chain / qe_chain / pck_crl_chain to what error
    messages call them."""
    label = {k: k for k in ("tcb_info", "qe_identity", "pck_crl", "root_crl", "tcb_chain", "qe_chain",
                            "pck_crl_chain")}
    label.update(names or {})
    tcb = parse_signed_document(tcb_info, TCB_INFO_KEY, where=label["tcb_info"])
    qe = parse_signed_document(qe_identity, QE_IDENTITY_KEY, where=label["qe_identity"])
    pck_crl_der = load_crl(pck_crl, where=label["pck_crl"]) if pck_crl is not None else None
    root_crl_der = load_crl(root_crl, where=label["root_crl"]) if root_crl is not None else None
    pool = _Pool(extra_certs, as_of) if extra_certs else None

    def chain(given: bytes | str | None, name: str, signed: SignedDocument | None,
              crl: bytes | None) -> list[bytes]:
        if given is not None:
            return parse_certificate_chain(given, where=label[name])
        if pool is None:
            return []
        if signed is not None:
            return pool.signer_chain(signed.raw, signed.signature)
        return pool.crl_issuer_chain(crl) if crl is not None else []

    return DcapCollateral(
        tcb_info_raw=tcb.raw, tcb_info_signature=tcb.signature,
        tcb_info_issuer_chain=chain(tcb_chain, "tcb_chain", tcb, None),
        qe_identity_raw=qe.raw, qe_identity_signature=qe.signature,
        qe_identity_issuer_chain=chain(qe_chain, "qe_chain", qe, None),
        pck_crl=pck_crl_der, root_ca_crl=root_crl_der,
        pck_crl_issuer_chain=chain(pck_crl_chain, "pck_crl_chain", None, pck_crl_der),
        source=source,
    )


PathArg = str | os.PathLike[str]


def from_files(*, tcb_info: PathArg, qe_identity: PathArg, pck_crl: PathArg | None = None,
               root_crl: PathArg | None = None, tcb_chain: PathArg | None = None, qe_chain: PathArg | None = None,
               pck_crl_chain: PathArg | None = None, extra_certs: Sequence[bytes] = (),
               as_of: datetime.datetime | None = None) -> DcapCollateral:
    """Collateral from files as Intel PCS serves them: ``{"tcbInfo":…,"signature":…}``,
    ``{"enclaveIdentity":…,"signature":…}``, CRLs in DER or PEM, issuer chains as PEM (or URL-encoded PEM,
    as in the PCS response headers). A chain not given is looked up among ``extra_certs`` (DER): the
    certificate whose key verifies the document (or that issued the CRL) and its issuers; where several fit,
    the one valid at ``as_of`` (default now). Without either, the chain is left empty."""
    names: dict[str, str] = {}
    files: dict[str, PathArg | None] = {
        "tcb_info": tcb_info, "qe_identity": qe_identity, "pck_crl": pck_crl, "root_crl": root_crl,
        "tcb_chain": tcb_chain, "qe_chain": qe_chain, "pck_crl_chain": pck_crl_chain,
    }
    what = {"tcb_info": "TCB info file", "qe_identity": "QE identity file", "pck_crl": "PCK CRL file",
            "root_crl": "root CA CRL file", "tcb_chain": "TCB info issuer chain file",
            "qe_chain": "QE identity issuer chain file", "pck_crl_chain": "PCK CRL issuer chain file"}
    data: dict[str, bytes | None] = {}
    for key, path in files.items():
        if path is None:
            data[key] = None
            continue
        names[key] = f"{what[key]} {os.fspath(path)}"
        data[key] = _read_file(path, what[key])
    tcb_doc, qe_doc = data["tcb_info"], data["qe_identity"]
    assert tcb_doc is not None and qe_doc is not None
    return from_documents(tcb_doc, qe_doc, pck_crl=data["pck_crl"], root_crl=data["root_crl"],
                          tcb_chain=data["tcb_chain"], qe_chain=data["qe_chain"],
                          pck_crl_chain=data["pck_crl_chain"], extra_certs=extra_certs, as_of=as_of,
                          source=f"files ({os.fspath(tcb_info)}, {os.fspath(qe_identity)})", names=names)


BUNDLE_KEYS = ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
               "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature")
_BUNDLE_OPTIONAL = frozenset({"pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain",
                              "qe_identity_issuer_chain"})


def from_bundle(source: PathArg | bytes | dict[str, Any]) -> DcapCollateral:
    """Collateral from a bundle JSON (the QuoteCollateralV3 shape dcap-qvl uses): a path, the file's bytes,
    or the parsed dict. Chains are PEM strings, CRLs hex DER, ``tcb_info`` / ``qe_identity`` the exact signed
    JSON text, signatures hex r||s. The CRLs and issuer chains may be absent or empty (the chain then stays
    empty, as from files without ``--certs``); other keys are ignored."""
    if isinstance(source, dict):
        where, doc = "collateral bundle", source
    else:
        if isinstance(source, bytes | bytearray):
            where, raw = "collateral bundle", bytes(source)
        else:
            where = f"collateral bundle {os.fspath(source)}"
            raw = _read_file(source, "collateral bundle")
        doc = {k: m.value for k, m in _members(raw, where).items()}

    def field(key: str) -> str | None:
        value = doc.get(key)
        if value is None or value == "":
            if key in _BUNDLE_OPTIONAL:
                return None
            raise CollateralError(f"{where}: {key}: missing")
        if not isinstance(value, str):
            raise CollateralError(f"{where}: {key}: expected a string, got {type(value).__name__}")
        return value

    def text(key: str) -> str:
        value = field(key)
        assert value is not None
        return value

    def crl(key: str) -> bytes | None:
        value = field(key)
        if value is None:
            return None
        return load_crl(_hex_bytes(value, f"{where}: {key}"), where=f"{where}: {key}")

    def chain(key: str) -> list[bytes]:
        value = field(key)
        return [] if value is None else parse_certificate_chain(value, where=f"{where}: {key}")

    tcb_raw = text("tcb_info").encode("utf-8")
    _signed_value(tcb_raw, TCB_INFO_KEY, f"{where}: tcb_info")
    qe_raw = text("qe_identity").encode("utf-8")
    _signed_value(qe_raw, QE_IDENTITY_KEY, f"{where}: qe_identity")
    return DcapCollateral(
        tcb_info_raw=tcb_raw,
        tcb_info_signature=_hex_bytes(text("tcb_info_signature"), f"{where}: tcb_info_signature", SIGNATURE_SIZE),
        tcb_info_issuer_chain=chain("tcb_info_issuer_chain"),
        qe_identity_raw=qe_raw,
        qe_identity_signature=_hex_bytes(text("qe_identity_signature"), f"{where}: qe_identity_signature",
                                         SIGNATURE_SIZE),
        qe_identity_issuer_chain=chain("qe_identity_issuer_chain"),
        pck_crl=crl("pck_crl"), root_ca_crl=crl("root_ca_crl"),
        pck_crl_issuer_chain=chain("pck_crl_issuer_chain"),
        source=where,
    )


def to_bundle(c: DcapCollateral) -> dict[str, str]:
    """The bundle JSON shape of ``c`` (what :func:`from_bundle` reads back); absent CRLs and empty chains are
    empty strings."""
    try:
        tcb_info, qe_identity = c.tcb_info_raw.decode("utf-8"), c.qe_identity_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CollateralError(f"collateral from {c.source or 'unknown source'}: TCB info or QE identity "
                              "is not UTF-8 text") from None
    return {
        "pck_crl_issuer_chain": der_chain_to_pem(c.pck_crl_issuer_chain),
        "root_ca_crl": c.root_ca_crl.hex() if c.root_ca_crl is not None else "",
        "pck_crl": c.pck_crl.hex() if c.pck_crl is not None else "",
        "tcb_info_issuer_chain": der_chain_to_pem(c.tcb_info_issuer_chain),
        "tcb_info": tcb_info,
        "tcb_info_signature": c.tcb_info_signature.hex(),
        "qe_identity_issuer_chain": der_chain_to_pem(c.qe_identity_issuer_chain),
        "qe_identity": qe_identity,
        "qe_identity_signature": c.qe_identity_signature.hex(),
    }


# --------------------------------------------------------------------------------------------------
# Intel PCS / PCCS over HTTP, with an on-disk cache

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
TEES = ("sgx", "tdx")
PCK_CAS = ("platform", "processor")
API_VERSIONS = ("v3", "v4")
# Response headers carrying the URL-encoded PEM issuer chain (API v4 name first, then the v3 one).
TCB_INFO_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain", "Enclave-Identity-Issuer-Chain")
PCK_CRL_CHAIN_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)
CACHE_ENTRY_VERSION = 1
_FMSPC = re.compile(r"[0-9a-fA-F]{12}")

T = TypeVar("T")


@dataclass(frozen=True)
class _Response:
    body: bytes
    chain: str | None  # the issuer-chain header, URL-decoded


class PcsClient:
    """GET collateral from Intel PCS or a PCCS-compatible service, keeping each response in ``cache_dir``.

    A cached response is served while its ``nextUpdate`` (the TCB info's, the identity's, the CRL's) has not
    passed and fetched again after; ``offline=True`` serves only the cache, stale entries included (the
    verifier reports expired collateral). Only well-formed responses are cached; cache files are written
    atomically, 0600 in a 0700 directory, one per URL. TLS certificates are verified (``ca_file`` pins a CA
    bundle). Every failure is a one-line :class:`CollateralError` naming the URL.
    """

    def __init__(self, base_url: str, cache_dir: PathArg | None = None, api_version: str = "v4",
                 ca_file: PathArg | None = None, timeout: float = 30.0, *, offline: bool = False,
                 root_ca_crl_url: str | None = None,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise CollateralError(f"PCS URL {base_url!r}: expected http(s)://host[:port][/path]")
        if api_version not in API_VERSIONS:
            raise CollateralError(f"PCS API version {api_version!r}: expected one of {', '.join(API_VERSIONS)}")
        if root_ca_crl_url is not None and urllib.parse.urlsplit(root_ca_crl_url).scheme not in ("http", "https"):
            raise CollateralError(f"root CA CRL URL {root_ca_crl_url!r}: expected an http(s) URL")
        if not timeout > 0:
            raise CollateralError(f"PCS timeout {timeout!r}: expected a positive number of seconds")
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        self.timeout = timeout
        self.offline = offline
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        if root_ca_crl_url is None:
            intel = parts.hostname == urllib.parse.urlsplit(INTEL_PCS_URL).hostname
            root_ca_crl_url = (INTEL_ROOT_CA_CRL_URL if intel
                               else f"{self.base_url}/sgx/certification/{api_version}/rootcacrl")
        self.root_ca_crl_url = root_ca_crl_url
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.cache_hits = 0
        self.fetches = 0
        self._opener: Any = None
        if offline and self.cache_dir is None:
            raise CollateralError("PCS client: offline use needs a cache directory")

    def __repr__(self) -> str:
        return f"PcsClient({self.base_url!r}, cache_dir={self.cache_dir!r}, offline={self.offline})"

    # ---- URLs

    def _tee(self, tee: str) -> str:
        if tee not in TEES:
            raise CollateralError(f"collateral TEE {tee!r}: expected one of {', '.join(TEES)}")
        if tee == "tdx" and self.api_version == "v3":
            raise CollateralError("TDX collateral needs PCS API v4")
        return tee

    def tcb_info_url(self, tee: str, fmspc: str) -> str:
        if not isinstance(fmspc, str) or not _FMSPC.fullmatch(fmspc):
            raise CollateralError(f"FMSPC {fmspc!r}: expected 6 bytes as 12 hex digits")
        return f"{self.base_url}/{self._tee(tee)}/certification/{self.api_version}/tcb?fmspc={fmspc.upper()}"

    def qe_identity_url(self, tee: str) -> str:
        return f"{self.base_url}/{self._tee(tee)}/certification/{self.api_version}/qe/identity"

    def pck_crl_url(self, ca: str) -> str:
        if ca not in PCK_CAS:
            raise CollateralError(f"PCK CA {ca!r}: expected one of {', '.join(PCK_CAS)}")
        return f"{self.base_url}/sgx/certification/{self.api_version}/pckcrl?ca={ca}&encoding=der"

    # ---- documents

    def tcb_info(self, tee: str, fmspc: str) -> tuple[SignedDocument, list[bytes]]:
        """The TCB info for ``fmspc`` (``tee`` "sgx" or "tdx") and its issuer chain (DER, signer first)."""
        return self._get(self.tcb_info_url(tee, fmspc), TCB_INFO_CHAIN_HEADERS,
                         lambda r, where: self._signed(r, TCB_INFO_KEY, TCB_INFO_CHAIN_HEADERS, where))

    def qe_identity(self, tee: str) -> tuple[SignedDocument, list[bytes]]:
        """The QE identity (``tee`` "sgx": QE, "tdx": TD_QE) and its issuer chain."""
        return self._get(self.qe_identity_url(tee), QE_IDENTITY_CHAIN_HEADERS,
                         lambda r, where: self._signed(r, QE_IDENTITY_KEY, QE_IDENTITY_CHAIN_HEADERS, where))

    def pck_crl(self, ca: str) -> tuple[bytes, list[bytes]]:
        """The PCK CRL of the Platform or Processor CA (DER) and its issuer chain."""
        def parse(r: _Response, where: str) -> tuple[tuple[bytes, list[bytes]], datetime.datetime | None]:
            der = load_crl(r.body, where=where)
            chain = parse_certificate_chain(self._need_chain(r, PCK_CRL_CHAIN_HEADERS, where),
                                            where=f"{where}: {PCK_CRL_CHAIN_HEADERS[0]}")
            return (der, chain), crl_next_update(der)

        return self._get(self.pck_crl_url(ca), PCK_CRL_CHAIN_HEADERS, parse)

    def root_ca_crl(self) -> bytes:
        """The Intel SGX Root CA CRL (DER)."""
        def parse(r: _Response, where: str) -> tuple[bytes, datetime.datetime | None]:
            der = load_crl(r.body, where=where)
            return der, crl_next_update(der)

        return self._get(self.root_ca_crl_url, (), parse)

    def collateral_for(self, tee: str = "sgx", fmspc: str = "", ca: str = "platform") -> DcapCollateral:
        """Everything a DCAP verifier needs for a quote from a platform with ``fmspc`` whose PCK certificate
        was issued by the ``ca`` ("platform" or "processor") PCK CA."""
        self.tcb_info_url(tee, fmspc), self.pck_crl_url(ca)  # check every argument before fetching anything
        tcb, tcb_chain = self.tcb_info(tee, fmspc)
        qe, qe_chain = self.qe_identity(tee)
        pck_crl, pck_crl_chain = self.pck_crl(ca)
        root_crl = self.root_ca_crl()
        return DcapCollateral(
            tcb_info_raw=tcb.raw, tcb_info_signature=tcb.signature, tcb_info_issuer_chain=tcb_chain,
            qe_identity_raw=qe.raw, qe_identity_signature=qe.signature, qe_identity_issuer_chain=qe_chain,
            pck_crl=pck_crl, root_ca_crl=root_crl, pck_crl_issuer_chain=pck_crl_chain,
            source=f"PCS {self.base_url}" + (" (offline cache)" if self.offline else ""),
        )

    # ---- response parsing

    @staticmethod
    def _need_chain(r: _Response, headers: tuple[str, ...], where: str) -> str:
        if not r.chain:
            raise CollateralError(f"{where}: the response has no {headers[0]} header")
        return r.chain

    def _signed(self, r: _Response, key: str, headers: tuple[str, ...],
                where: str) -> tuple[tuple[SignedDocument, list[bytes]], datetime.datetime | None]:
        doc = parse_signed_document(r.body, key, where=where)
        chain = parse_certificate_chain(self._need_chain(r, headers, where), where=f"{where}: {headers[0]}")
        return (doc, chain), next_update(doc.value, where=f"{where}: {key}")

    # ---- fetching and caching

    def _get(self, url: str, chain_headers: tuple[str, ...],
             parse: Callable[[_Response, str], tuple[T, datetime.datetime | None]]) -> T:
        where = f"PCS {url}"
        cached = self._cache_read(url)
        if cached is not None:
            try:
                result, nxt = parse(cached, f"{where} (cached)")
            except CollateralError:
                if self.offline:
                    raise
                # a damaged entry: fetch again
            else:
                if self.offline or (nxt is not None and self._now() < nxt):
                    self.cache_hits += 1
                    return result
        if self.offline:
            raise CollateralError(f"{where}: not in the collateral cache {self.cache_dir} (offline)")
        response = self._fetch(url, chain_headers, where)
        result, nxt = parse(response, where)
        self.fetches += 1
        self._cache_write(url, response, nxt)
        return result

    def _now(self) -> datetime.datetime:
        return _utc(self._clock())

    def _build_opener(self) -> Any:
        import ssl
        import urllib.request

        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise CollateralError(f"CA file {self.ca_file}: {getattr(e, 'strerror', None) or e}") from None

        class Redirects(urllib.request.HTTPRedirectHandler):
            """Follow redirects only to http(s) and never from https down to http."""

            def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                                 newurl: str) -> Any:
                old = urllib.parse.urlsplit(req.full_url).scheme
                new = urllib.parse.urlsplit(newurl).scheme
                if new not in ("http", "https") or (old == "https" and new != "https"):
                    raise CollateralError(f"PCS {req.full_url}: refusing redirect to {newurl}")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), Redirects())

    def _fetch(self, url: str, chain_headers: tuple[str, ...], where: str) -> _Response:
        import http.client
        import urllib.error
        import urllib.request

        if self._opener is None:
            self._opener = self._build_opener()
        request = urllib.request.Request(url, headers={"User-Agent": "inclavare-containers", "Accept": "*/*"})
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                status = resp.status
                body = resp.read(MAX_DOCUMENT + 1)
                headers = resp.headers
        except urllib.error.HTTPError as e:
            detail = " ".join(x for x in (e.headers.get("Error-Code"), e.headers.get("Error-Message")) if x)
            e.close()
            raise CollateralError(f"{where}: HTTP {e.code} {detail or e.reason}".rstrip()) from None
        except urllib.error.URLError as e:
            raise CollateralError(f"{where}: {e.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise CollateralError(f"{where}: {e or type(e).__name__}") from None
        if status != 200:
            raise CollateralError(f"{where}: HTTP {status}")
        if len(body) > MAX_DOCUMENT:
            raise CollateralError(f"{where}: response larger than {MAX_DOCUMENT} bytes")
        chain = None
        for name in chain_headers:
            value = headers.get(name)
            if value:
                chain = urllib.parse.unquote(value.strip())
                break
        return _Response(body, chain)

    def _cache_path(self, url: str) -> str | None:
        if self.cache_dir is None:
            return None
        return os.path.join(self.cache_dir, hashlib.sha256(url.encode("utf-8")).hexdigest() + ".json")

    def _cache_read(self, url: str) -> _Response | None:
        path = self._cache_path(url)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("collateral cache %s: %s; ignoring it", path, e.strerror)
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return None
                raw = f.read(4 * MAX_DOCUMENT)
            entry = json.loads(raw)
            if (not isinstance(entry, dict) or entry.get("version") != CACHE_ENTRY_VERSION
                    or entry.get("url") != url or not isinstance(entry.get("body"), str)):
                raise ValueError("not an entry for this URL")
            chain = entry.get("issuer_chain")
            if chain is not None and not isinstance(chain, str):
                raise ValueError("bad issuer_chain")
            return _Response(base64.b64decode(entry["body"], validate=True), chain)
        except (OSError, ValueError, binascii.Error) as e:
            log.warning("collateral cache %s: damaged (%s); ignoring it", path, e)
            return None

    def _cache_dir_ready(self) -> str:
        d = self.cache_dir
        assert d is not None
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            st = os.lstat(d)
        except OSError as e:
            raise CollateralError(f"collateral cache {d}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CollateralError(f"collateral cache {d}: not a directory")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise CollateralError(f"collateral cache {d}: must be owned by this user and not group/world-writable")
        return d

    def _cache_write(self, url: str, r: _Response, nxt: datetime.datetime | None) -> None:
        path = self._cache_path(url)
        if path is None:
            return
        self._cache_dir_ready()
        entry = {"version": CACHE_ENTRY_VERSION, "url": url, "fetched": self._now().isoformat(),
                 "next_update": nxt.isoformat() if nxt else None, "issuer_chain": r.chain,
                 "body": base64.b64encode(r.body).decode("ascii")}
        data = json.dumps(entry, indent=1).encode("utf-8") + b"\n"
        try:
            write_atomic(path, data, sync_dir=True)
        except OSError as e:  # a cache that cannot be written only costs a fetch next time
            log.warning("collateral cache %s: cannot write (%s)", path, e.strerror)
