"""Trust folders (``--certs DIR``): the certificates and CRLs an operator keeps beside the verifiers.

Operators keep Intel's root CA, the TCB signing certificates, the PCK CAs, AMD's ASK/ARK and the root CA CRL in
one folder, as downloaded (PEM, PEM bundles, DER), often with README files beside them. :func:`read_trust_dir`
reads such a folder:

* every certificate in every file (PEM, PEM bundles, DER) goes into the pool the verifiers pick issuers from;
* CRLs (PEM ``X509 CRL`` or DER) are kept; :meth:`TrustMaterial.root_ca_crl` offers the newest CRL issued and
  signed by one of the given roots found in the folder, for DCAP collateral that carries none;
* a file that says it is trust material (a ``.pem .crt .cer .der .crl`` name, a PEM certificate or CRL marker,
  or a DER SEQUENCE) but does not parse is an error naming the file; any other file (README, notes, keys,
  JSON) is ignored, with one debug-level log line for the folder.

:meth:`TrustMaterial.to_json` says what was found and what each CRL was used for (``shelter --json`` prints it
as ``trust_material``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import os
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.attestation.certs import crypto_errors
from inclavare.formats import pem

__all__ = ["MAX_TRUST_FILE", "TrustFile", "TrustMaterial", "read_trust_dir"]

log = logging.getLogger(__name__)

MAX_TRUST_FILE = 1 << 20  # a CRL of every revoked PCK certificate is well under this
MAX_TRUST_FILES = 4096
_TRUST_SUFFIXES = (".pem", ".crt", ".cer", ".der", ".crl")
_CERT_LABELS = frozenset({"CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE"})
_CRL_LABEL = "X509 CRL"


@dataclass
class TrustFile:
    """One file of the folder: what it held and, for CRLs, what they were used for."""

    path: str
    kind: str  # "certificates", "crl" or "ignored"
    subjects: list[str] = field(default_factory=list)  # certificates: RFC 4514 subjects, in file order
    issuer: str | None = None  # crl
    this_update: str | None = None  # crl, ISO 8601
    next_update: str | None = None  # crl
    used_as: str | None = None  # crl: "root_ca_crl" once a verifier took it
    note: str | None = None  # why ignored, or why a CRL was not used

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.path, "kind": self.kind}
        if self.kind == "certificates":
            out["subjects"] = list(self.subjects)
        if self.kind == "crl":
            out.update(issuer=self.issuer, this_update=self.this_update, next_update=self.next_update,
                       used_as=self.used_as)
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class _Crl:
    der: bytes
    file: TrustFile
    crl: Any  # cryptography.x509.CertificateRevocationList


@dataclass
class TrustMaterial:
    """What a trust folder held. ``certificates``: DER, in file-name then file order."""

    directory: str
    certificates: tuple[bytes, ...] = ()
    files: list[TrustFile] = field(default_factory=list)
    _crls: list[_Crl] = field(default_factory=list, repr=False)

    def root_ca_crl(self, root_fingerprints: Iterable[str]) -> tuple[bytes, TrustFile] | None:
        """The newest CRL (by thisUpdate) whose issuer is one of this folder's certificates with a SHA-256
        fingerprint in ``root_fingerprints``, self-issued, whose key verifies the CRL's signature."""
        from cryptography import x509

        wanted = {fp.lower() for fp in root_fingerprints}
        roots = []
        for der in self.certificates:
            if hashlib.sha256(der).hexdigest() not in wanted:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cert = x509.load_der_x509_certificate(der)
            if cert.issuer == cert.subject:
                roots.append(cert)
        found = []
        for item in self._crls:
            for root in roots:
                if root.subject != item.crl.issuer:
                    continue
                try:
                    if item.crl.is_signature_valid(root.public_key()):
                        found.append(item)
                        break
                except (TypeError, ValueError):
                    continue
        if not found:
            return None
        best = max(found, key=lambda item: item.crl.last_update_utc)
        for item in found:
            if item is not best:
                item.file.note = f"superseded by {os.path.basename(best.file.path)}"
        return best.der, best.file

    def apply_root_ca_crl(self, collateral: Any, sim_roots: Iterable[str] = ()) -> Any:
        """``collateral`` (a DcapCollateral) with this folder's root CA CRL when it carries none: a CRL of one of
        Intel's SGX root CAs (or of a trusted sim root, by fingerprint). The CRL's file is marked ``used_as =
        "root_ca_crl"``. A CRL the collateral carries wins: the folder's is then noted as unused."""
        from inclavare.attestation.pck import INTEL_SGX_ROOT_CA_FINGERPRINTS

        found = self.root_ca_crl((*INTEL_SGX_ROOT_CA_FINGERPRINTS, *sim_roots))
        if found is None:
            return collateral
        der, tf = found
        if collateral.root_ca_crl is not None:
            tf.note = tf.note or "not used: the collateral carries its own root CA CRL"
            return collateral
        tf.used_as = "root_ca_crl"
        log.debug("--certs %s: using %s as the root CA CRL", self.directory, tf.path)
        return dataclasses.replace(collateral, root_ca_crl=der)

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.files]


def _says_trust_material(name: str, data: bytes) -> bool:
    if name.lower().endswith(_TRUST_SUFFIXES):
        return True
    if pem.has_pem(data):
        return any(label in _CERT_LABELS or label == _CRL_LABEL for label in pem.labels(data))
    return data[:1] == b"\x30" and data[1:2] in (b"\x81", b"\x82", b"\x83")


def _failing(where: str) -> pem.Fail:
    return lambda problem: CollateralError(f"{where}: {problem}")


def _iso(t: datetime.datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def _load_der(der: bytes, where: str) -> tuple[str, Any]:
    """("certificate", cert) or ("crl", crl) for one DER object; raises naming ``where``."""
    from cryptography import x509

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AMD's certificates have serial number 0
        try:
            cert = x509.load_der_x509_certificate(der)
            cert.subject, cert.issuer, cert.extensions  # noqa: B018 - parse the lazy fields now
            return "certificate", cert
        except crypto_errors():
            pass
        try:
            crl = x509.load_der_x509_crl(der)
            crl.issuer  # noqa: B018 - parse the fields now, not at first use
            return "crl", crl
        except crypto_errors():
            pass
    raise CollateralError(f"{where}: not a valid X.509 certificate or CRL")


def _subject(cert: Any) -> str:
    try:
        return str(cert.subject.rfc4514_string())
    except crypto_errors():
        return "(unreadable subject)"


def _read(path: str) -> bytes | None:
    """The bytes of a regular file (None for anything else), at most MAX_TRUST_FILE."""
    try:  # O_NONBLOCK: a FIFO in the folder must not hang the reader; fstat then skips it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CollateralError(f"certificate file {path}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size <= MAX_TRUST_FILE and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise CollateralError(f"certificate file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_TRUST_FILE:
        raise CollateralError(f"certificate file {path}: larger than {MAX_TRUST_FILE} bytes")
    return b"".join(chunks)


def read_trust_dir(path: str | os.PathLike[str]) -> TrustMaterial:
    """Every certificate and CRL of the folder ``path`` (regular files, not hidden, not recursive), in
    file-name order. See the module docstring for what is read, ignored, or an error."""
    directory = os.fspath(path)
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise CollateralError(f"certificate directory {directory}: {e.strerror}") from None
    if len(names) > MAX_TRUST_FILES:
        raise CollateralError(f"certificate directory {directory}: more than {MAX_TRUST_FILES} entries")
    material = TrustMaterial(directory)
    certs: list[bytes] = []
    ignored: list[str] = []
    for name in names:
        full = os.path.join(directory, name)
        if name.startswith("."):
            continue
        data = _read(full)
        if data is None:
            continue
        where = f"certificate file {full}"
        if not _says_trust_material(name, data):
            material.files.append(TrustFile(full, "ignored", note="holds no certificate or CRL"))
            ignored.append(name)
            continue
        if pem.has_pem(data):
            blocks = pem.blocks(data, _failing(where), allow_text=True)
            ders = [(b.label, b.der) for b in blocks if b.label in _CERT_LABELS or b.label == _CRL_LABEL]
            if not ders:
                labels = ", ".join(sorted({b.label for b in blocks}))
                material.files.append(TrustFile(full, "ignored", note=f"holds {labels}, no certificate or CRL"))
                ignored.append(name)
                continue
        else:
            ders = [("", data)]
        file_certs: list[Any] = []
        for n, (label, der) in enumerate(ders, 1):
            what = f"{where}: PEM block {n}" if len(ders) > 1 else where
            kind, obj = _load_der(der, what)
            if label and (kind == "crl") != (label == _CRL_LABEL):
                raise CollateralError(f"{what}: labelled {label!r} but holds a {kind}")
            if kind == "crl":
                if len(ders) > 1:
                    raise CollateralError(f"{what}: a CRL in a file with other PEM blocks; keep each CRL in "
                                          "a file of its own")
                tf = TrustFile(full, "crl", issuer=obj.issuer.rfc4514_string(), this_update=_iso(obj.last_update_utc),
                               next_update=_iso(obj.next_update_utc))
                material.files.append(tf)
                material._crls.append(_Crl(der, tf, obj))
            else:
                certs.append(der)
                file_certs.append(obj)
        if file_certs:
            material.files.append(TrustFile(full, "certificates", subjects=[_subject(c) for c in file_certs]))
    if ignored:
        log.debug("--certs %s: ignored %d file(s) that hold no certificate or CRL: %s", directory, len(ignored),
                  ", ".join(ignored))
    material.certificates = tuple(certs)
    return material
