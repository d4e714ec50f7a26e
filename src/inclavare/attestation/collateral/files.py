"""Collateral from files in Intel PCS shapes, from raw documents, and from (and to) a bundle JSON."""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import Sequence
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.attestation.collateral.encoding import der_chain_to_pem, hex_bytes, load_crl, parse_certificate_chain
from inclavare.attestation.collateral.jsonbytes import MAX_DOCUMENT, members
from inclavare.attestation.collateral.model import DcapCollateral
from inclavare.attestation.collateral.pool import CertPool
from inclavare.attestation.collateral.signed import (
    QE_IDENTITY_KEY,
    SIGNATURE_SIZE,
    TCB_INFO_KEY,
    SignedDocument,
    parse_signed_document,
    signed_value,
)
from inclavare.formats.jsonshape import Shape

__all__ = ["BUNDLE_KEYS", "PathArg", "from_bundle", "from_documents", "from_files", "to_bundle"]

_SHAPE = Shape(lambda where, problem: CollateralError(f"{where}: {problem}"))

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
    pool = CertPool(extra_certs, as_of) if extra_certs else None

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
        doc = {k: m.value for k, m in members(raw, where).items()}

    def field(key: str) -> str | None:
        value = doc.get(key)
        if value is None or value == "":
            if key in _BUNDLE_OPTIONAL:
                return None
            _SHAPE.fail(f"{where}: {key}", "missing")
        if not isinstance(value, str):
            _SHAPE.fail(f"{where}: {key}", f"expected a string, got {type(value).__name__}")
        return value

    def text(key: str) -> str:
        value = field(key)
        assert value is not None
        return value

    def crl(key: str) -> bytes | None:
        value = field(key)
        if value is None:
            return None
        return load_crl(hex_bytes(value, f"{where}: {key}"), where=f"{where}: {key}")

    def chain(key: str) -> list[bytes]:
        value = field(key)
        return [] if value is None else parse_certificate_chain(value, where=f"{where}: {key}")

    tcb_raw = text("tcb_info").encode("utf-8")
    signed_value(tcb_raw, TCB_INFO_KEY, f"{where}: tcb_info")
    qe_raw = text("qe_identity").encode("utf-8")
    signed_value(qe_raw, QE_IDENTITY_KEY, f"{where}: qe_identity")
    return DcapCollateral(
        tcb_info_raw=tcb_raw,
        tcb_info_signature=hex_bytes(text("tcb_info_signature"), f"{where}: tcb_info_signature", SIGNATURE_SIZE),
        tcb_info_issuer_chain=chain("tcb_info_issuer_chain"),
        qe_identity_raw=qe_raw,
        qe_identity_signature=hex_bytes(text("qe_identity_signature"), f"{where}: qe_identity_signature",
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
