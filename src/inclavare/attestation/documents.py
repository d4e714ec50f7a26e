"""Checks of the DCAP collateral documents against a verified PCK chain, apart from the time and the quote.

TCB info and QE identity: signed over their exact bytes by a TCB signing certificate issued by the PCK chain's
root; PCK CRL (by the PCK CA) and root CA CRL (by the root), which also decide revocation of the quote's own
chain and of the collateral signers. What depends on the time is recorded as a check (a certificate's validity,
a document's or CRL's window) and replayed at each verification's ``as_of`` (:func:`replay`), so
:func:`document_facts` can be memoised by the bytes alone. The findings of one verification accumulate in a
:class:`CollateralFindings`.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.attestation.certs import (
    Bad,
    cert_signed,
    check_validity,
    cn_of,
    crl_issued_by,
    crl_revokes,
    crl_signed,
    describe,
    iso,
    issued_by,
    load_cert,
    load_crl,
    validity,
)
from inclavare.attestation.collateral.model import DcapCollateral
from inclavare.attestation.pck import TCB_SIGNING_CN
from inclavare.attestation.tcbinfo import QeIdentity, TcbInfo, parse_qe_identity, parse_tcb_info

__all__ = ["Anchors", "CollateralFindings", "DocumentFacts", "check_documents", "document_facts", "documents_key",
           "replay"]


@dataclass
class CollateralFindings:
    """What the collateral checks found for one verification: errors, and which kind of trust each broke."""

    errors: list[str] = field(default_factory=list)
    genuine: bool = True  # signatures, chains, format
    consistent: bool = True  # applies to this quote
    timely: bool = True  # every validity window holds at as_of
    complete: bool = True  # every document needed is present
    status: str | None = None
    advisories: list[str] = field(default_factory=list)

    def bad(self, kind: str, message: str) -> None:
        setattr(self, kind, False)
        self.errors.append(message)


class _Log:
    """What the checks of the collateral documents found, in order, without the time: each entry is a finding
    (``(kind, message)``, kind None for an error that changes no flag), or a time check to run at ``as_of``
    (``("validity", der, what)`` for a signing certificate, ``("window", what, start, end, names)`` for a
    document). :func:`replay` turns the entries into the errors and flags of one verification."""

    def __init__(self, anchors: Anchors) -> None:
        self.anchors = anchors
        self.entries: list[tuple[Any, ...]] = []
        self.revoked = False  # the quote's own PCK leaf or PCK CA is on a CRL

    def bad(self, kind: str | None, message: str) -> None:
        self.entries.append((kind, message))

    def validity(self, der: bytes, what: str) -> None:
        self.entries.append(("validity", der, what))

    def window(self, what: str, start: datetime.datetime, end: datetime.datetime | None,
               names: tuple[str, str] = ("issueDate", "nextUpdate")) -> None:
        self.entries.append(("window", what, start, end, names))


def replay(entries: tuple[tuple[Any, ...], ...], col: CollateralFindings, as_of: datetime.datetime) -> None:
    for entry in entries:
        kind = entry[0]
        if kind == "validity":
            der, what = entry[1], entry[2]
            not_before, not_after = validity(der)
            if as_of < not_before or as_of > not_after:
                why = check_validity(load_cert(der), as_of, what)
                assert why is not None
                col.bad("timely", why)
        elif kind == "window":
            _window(col, entry[1], entry[2], entry[3], as_of, entry[4])
        elif kind is None:
            col.errors.append(entry[1])
        else:
            col.bad(kind, entry[1])


@dataclass(frozen=True)
class Anchors:
    """The verified PCK chain the collateral is checked against, and the caller's extra certificates."""

    leaf_der: bytes  # the PCK certificate (on the PCK CRL means revoked)
    ca_der: bytes  # the PCK CA: issues the PCK CRL
    root_der: bytes  # the trusted root: issues the root CA CRL and the TCB signing certificate
    extra_certs: tuple[bytes, ...]  # where the TCB signing certificate is looked for when a chain is empty


@dataclass(frozen=True)
class DocumentFacts:
    """The time-independent outcome of checking the collateral documents (see :class:`_Log`)."""

    entries: tuple[tuple[Any, ...], ...]
    revoked: bool
    tcb: TcbInfo | None
    qe: QeIdentity | None
    # when every entry is a time check: the times (inclusive) at which none of them fails, so replaying the
    # entries would add nothing; None when some entry is a finding whatever the time
    quiet: tuple[datetime.datetime, datetime.datetime] | None = None


def _signer(log: _Log, chain: list[bytes], what: str) -> bytes | None:
    """The DER of the TCB signing certificate for ``what`` (TCB info / QE identity), checked up to the root."""
    anchors = log.anchors
    if not isinstance(chain, (list, tuple)) or not all(isinstance(c, (bytes, bytearray)) for c in chain):
        log.bad("genuine", f"{what} issuer chain: must be a list of DER certificates")
        return None
    candidates: list[bytes]
    if chain:
        candidates = [bytes(chain[0])]
        for der in chain[1:]:
            if bytes(der) != anchors.root_der:
                try:
                    name = describe(load_cert(bytes(der)))
                except Bad:
                    name = "an unreadable certificate"
                log.bad("genuine", f"{what} issuer chain: {name} is not the root the PCK chain ends in")
                return None
    else:
        candidates = list(anchors.extra_certs)
    found: bytes | None = None
    for der in candidates:
        try:
            load_cert(der)
        except Bad as e:
            if chain:
                log.bad("genuine", f"{what} signing certificate: {e}")
                return None
            continue  # an unreadable extra certificate is simply not a candidate
        if TCB_SIGNING_CN in cn_of(der) and issued_by(der, anchors.root_der) is None:
            found = der
            break
    if found is None:
        if chain:
            cn = cn_of(candidates[0])
            why = issued_by(candidates[0], anchors.root_der) if TCB_SIGNING_CN in cn else \
                f"common name {cn!r} does not contain {TCB_SIGNING_CN!r}"
            log.bad("genuine", f"{what} signing certificate: {why}")
        else:
            log.bad("complete", f"{what}: the issuer chain is empty and no TCB signing certificate issued by the "
                                "trusted root was given (extra_certs)")
        return None
    log.validity(found, f"{what} signing certificate")
    return found


def _window(col: CollateralFindings, what: str, start: datetime.datetime, end: datetime.datetime | None,
            as_of: datetime.datetime, names: tuple[str, str] = ("issueDate", "nextUpdate")) -> None:
    if as_of < start:
        col.bad("timely", f"{what}: not yet valid at {iso(as_of)} ({names[0]} {iso(start)})")
    elif end is None:
        col.bad("genuine", f"{what}: has no {names[1]}")
    elif as_of > end:
        col.bad("timely", f"{what}: expired at {iso(end)} ({names[1]}; checked as of {iso(as_of)})")


def _signed_document(log: _Log, raw: bytes, sig: bytes, chain: list[bytes], what: str,
                     parse: Callable[[bytes], Any]) -> tuple[Any, bytes | None]:
    signer = _signer(log, chain, what)
    if not isinstance(raw, (bytes, bytearray)) or not isinstance(sig, (bytes, bytearray)):
        log.bad("genuine", f"{what}: the document and its signature must be bytes")
        return None, signer
    raw, sig = bytes(raw), bytes(sig)
    if signer is None:  # already reported; an unsigned document is never read
        return None, None
    if len(sig) != 64 or not cert_signed(signer, sig, raw):
        log.bad("genuine", f"{what}: the signature does not verify with {describe(load_cert(signer))} over the "
                           "exact document bytes")
        return None, signer
    try:
        doc = parse(raw)
    except CollateralError as e:
        log.bad("genuine", str(e))
        return None, signer
    log.window(what, doc.issue_date, doc.next_update)
    return doc, signer


def _check_crl(log: _Log, der: bytes | None, issuer_der: bytes, what: str,
               subjects: Iterable[tuple[bytes, str]]) -> None:
    if der is None:
        log.bad("complete", f"{what}: missing, so revocation cannot be checked")
        return
    if not isinstance(der, (bytes, bytearray)):
        log.bad("genuine", f"{what}: expected DER bytes, got {type(der).__name__}")
        return
    der = bytes(der)
    try:
        crl = load_crl(der)
    except Bad as e:
        log.bad("genuine", f"{what}: {e}")
        return
    issuer = load_cert(issuer_der)
    if not crl_issued_by(der, issuer_der):
        log.bad("consistent", f"{what}: issued by {crl.issuer.rfc4514_string()!r}, not by {describe(issuer)}")
        return
    if not crl_signed(der, issuer_der):
        log.bad("genuine", f"{what}: the signature does not verify with {describe(issuer)}")
        return
    log.window(what, crl.last_update_utc, crl.next_update_utc, ("thisUpdate", "nextUpdate"))
    for cert_der, name in subjects:
        cert = load_cert(cert_der)
        try:
            revoked = crl_revokes(der, cert.serial_number)
        except Bad as e:
            log.bad("genuine", f"{what}: {e}")
            return
        if not revoked:
            continue
        message = f"{name} {describe(cert)} (serial {cert.serial_number:x}) is revoked: it is on the {what}"
        if cert_der in (log.anchors.leaf_der, log.anchors.ca_der):  # the quote's own chain: not genuine any more
            log.revoked = True
            log.bad(None, message)
        else:  # a collateral signer: the collateral is not genuine
            log.bad("genuine", message)


def check_documents(anchors: Anchors, tcb_raw: Any, tcb_sig: Any, tcb_chain: Any, qe_raw: Any, qe_sig: Any,
                     qe_chain: Any, pck_crl: Any, root_crl: Any) -> DocumentFacts:
    """The collateral checks that do not depend on the quote beyond its PCK chain, nor on the time."""
    log = _Log(anchors)
    tcb, tcb_signer = _signed_document(log, tcb_raw, tcb_sig, tcb_chain, "TCB info", parse_tcb_info)
    qe, qe_signer = _signed_document(log, qe_raw, qe_sig, qe_chain, "QE identity", parse_qe_identity)
    _check_crl(log, pck_crl, anchors.ca_der, "PCK CRL", ((anchors.leaf_der, "PCK certificate"),))
    root_subjects = [(anchors.ca_der, "PCK CA")]
    for signer, what in ((tcb_signer, "TCB info signing certificate"), (qe_signer, "QE identity signing certificate")):
        if signer is not None and all(signer != s for s, _ in root_subjects):
            root_subjects.append((signer, what))
    _check_crl(log, root_crl, anchors.root_der, "root CA CRL", root_subjects)
    return DocumentFacts(tuple(log.entries), log.revoked, tcb, qe, _quiet(log.entries))


def _quiet(entries: list[tuple[Any, ...]]) -> tuple[datetime.datetime, datetime.datetime] | None:
    """See :attr:`DocumentFacts.quiet`: a validity or window check passes when start <= as_of <= end."""
    starts: list[datetime.datetime] = []
    ends: list[datetime.datetime] = []
    for entry in entries:
        if entry[0] == "validity":
            start, end = validity(entry[1])
        elif entry[0] == "window" and entry[3] is not None:
            start, end = entry[2], entry[3]
        else:
            return None
        starts.append(start)
        ends.append(end)
    if not starts:
        return None
    return max(starts), min(ends)


@functools.lru_cache(maxsize=64)
def document_facts(key: tuple[Any, ...]) -> DocumentFacts:
    """:func:`check_documents` memoised by everything it reads: the PCK chain (leaf, CA, root DER), the extra
    certificates, and every collateral field (bytes, chains as tuples of bytes, CRLs or None)."""
    leaf_der, ca_der, root_der, extra_certs, *documents = key
    return check_documents(Anchors(leaf_der, ca_der, root_der, extra_certs), *documents)


def documents_key(c: DcapCollateral) -> tuple[Any, ...] | None:
    """The collateral's fields as hashable values that :func:`check_documents` treats exactly as the originals
    (bytearray as bytes, a chain as a tuple of bytes), or None when a field has some other type (then the checks
    run on the originals, unmemoised, and report it)."""
    tcb_chain, qe_chain = c.tcb_info_issuer_chain, c.qe_identity_issuer_chain
    pck_crl, root_crl = c.pck_crl, c.root_ca_crl
    if type(c.tcb_info_raw) is bytes and type(c.tcb_info_signature) is bytes and type(c.qe_identity_raw) is bytes \
            and type(c.qe_identity_signature) is bytes and (pck_crl is None or type(pck_crl) is bytes) \
            and (root_crl is None or type(root_crl) is bytes) and type(tcb_chain) is list and type(qe_chain) is list \
            and set(map(type, tcb_chain + qe_chain)) <= {bytes}:  # the usual shape, at once
        return (c.tcb_info_raw, c.tcb_info_signature, tuple(tcb_chain), c.qe_identity_raw, c.qe_identity_signature,
                tuple(qe_chain), pck_crl, root_crl)
    out: list[Any] = []
    for value, kind in ((c.tcb_info_raw, "doc"), (c.tcb_info_signature, "doc"), (c.tcb_info_issuer_chain, "chain"),
                        (c.qe_identity_raw, "doc"), (c.qe_identity_signature, "doc"),
                        (c.qe_identity_issuer_chain, "chain"), (c.pck_crl, "crl"), (c.root_ca_crl, "crl")):
        if type(value) is bytes or (kind == "crl" and value is None):
            out.append(value)
        elif isinstance(value, (bytes, bytearray)):
            out.append(bytes(value))
        elif kind == "chain" and isinstance(value, (list, tuple)) and \
                all(isinstance(d, (bytes, bytearray)) for d in value):
            out.append(tuple(bytes(d) for d in value))
        else:
            return None
    return tuple(out)
