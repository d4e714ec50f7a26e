"""AMD SEV-SNP verifier: attestation report -> VCEK/VLEK -> ASK/ASVK -> pinned ARK.

What :meth:`SnpVerifier.verify` checks, in order (any failure raises an :class:`AttestationError` subclass):

1. The report parses (exactly 1184 bytes), says ECDSA P-384/SHA-384 (signature_algo 1) and is signed
   (signing_key VCEK or VLEK, MASK_CHIP_KEY clear -- with it set the firmware leaves the signature zero).
2. Collateral (:class:`SnpCollateral`): the VCEK or VLEK certificate and its chain. The certificate's role
   (subject CN ``SEV-VCEK`` with a hwID, or ``SEV-VLEK`` with a CSP ID) must match the report's signing_key.
   It may come as an extended report's certificate table, or, with no collateral, be found among
   ``Options.extra_certs`` (a ``--certs`` folder as snpguest writes it) by role, chip ID and signature.
3. Its issuer is the ASK (``SEV-<product>``) for a VCEK or the ASVK (``SEV-VLEK-<product>``) for a VLEK, the
   product (Milan, Genoa, Turin) agrees with the certificate's productName and, for report v3+, with the
   CPUID family/model; the ARK that issued the ASK/ASVK is byte-identical to AMD's ARK for that product
   (pinned by SHA-256 fingerprint below, so no root certificate is shipped). ASK and ARK are CAs; no
   certificate carries a critical extension this verifier does not understand.
4. Signatures: ARK self-signed, ASK/ASVK by ARK, VCEK/VLEK by ASK/ASVK, all RSASSA-PSS with SHA-384, MGF1
   SHA-384, salt 48 -- checked over the exact TBS bytes with the issuer's key; then the report's ECDSA
   P-384/SHA-384 signature over bytes 0x000-0x29F with the VCEK/VLEK key.
5. Bindings: a VCEK's hwID equals the report's chip_id (Turin: an 8-byte hwID equals the first 8 bytes and
   the rest is zero; skipped when the chip ID is masked, which the claims say); ``Options.report_data``.

Then, reported rather than raised: certificate validity at ``Options.as_of`` (``collateral_valid`` and
``errors``) and the TCB status: ``UpToDate`` when every SPL of REPORTED_TCB is at least the certificate's,
``OutOfDate`` otherwise (``claims["tcb_detail"]`` says which).

Certificates are read by :func:`inclavare.formats.snp_certs.parse_certificate`, not by ``cryptography.x509``: AMD
issues VCEKs with serial number 0, which cryptography only loads through a deprecated path (with a warning,
and a future release will refuse). Only keys and raw signature checks come from cryptography.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from inclavare.attestation.api import (
    CollateralError,
    EvidenceFormatError,
    Options,
    Result,
    VerificationError,
)
from inclavare.formats.envelopes import (
    EnvelopeError,
    looks_like_cert_table,
    parse_cert_table,
    unwrap_snp_report_resp,
)
from inclavare.formats.snp import (
    SIG_ALGO_ECDSA_P384_SHA384,
    SIGNING_KEY_NAMES,
    SIGNING_KEY_NONE,
    SIGNING_KEY_VCEK,
    SIGNING_KEY_VLEK,
    SnpFormatError,
    SnpReport,
)
from inclavare.formats.snp_certs import (
    OID_BASIC_CONSTRAINTS,
    OID_KEY_USAGE,
    OID_MGF1,
    OID_RSASSA_PSS,
    OID_SHA384,
    Certificate,
    VcekExtensions,
    decode_vcek_extensions,
    parse_certificate,
    parse_pss_params,
    pem_certificates,
)

__all__ = ["AMD_ARK_SHA256", "SnpCollateral", "SnpVerifier"]

# SHA-256 of the DER of AMD's root keys (ARK), one per product line. Facts: AMD publishes these roots through
# its key distribution service (kdsintf.amd.com/vcek/v1/<product>/cert_chain); the same root signs both the
# ASK (VCEK chain) and the ASVK (VLEK chain) of its product line.
AMD_ARK_SHA256: dict[str, str] = {
    "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "Turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}

_UNDERSTOOD_CRITICAL = {OID_BASIC_CONSTRAINTS, OID_KEY_USAGE}
_P384_ORDER_BYTES = 48


@dataclass
class SnpCollateral:
    """The certificates an SNP report is checked against.

    ``vcek``: DER of the VCEK or VLEK certificate. ``chain``: DER certificates that lead to the ARK -- the
    ASK (or ASVK for a VLEK) and the ARK, in any order; extra certificates are ignored.
    """

    vcek: bytes
    chain: list[bytes] = field(default_factory=list)
    source: str = ""

    @classmethod
    def load(cls, vcek: bytes | str, chain: bytes | str | None = None, source: str = "") -> SnpCollateral:
        """From file contents: ``vcek`` in DER or PEM (in a PEM bundle the first certificate is the VCEK/VLEK
        and the rest join the chain) or an extended report's certificate table (:meth:`from_cert_table`),
        ``chain`` in DER (one certificate) or PEM (any number)."""
        raw = vcek.encode() if isinstance(vcek, str) else bytes(vcek)
        if looks_like_cert_table(raw):
            return cls.from_cert_table(raw, source).with_chain(chain)
        try:
            extra = _certificates(chain, "certificate chain") if chain is not None else []
            leaf, *rest = _certificates(raw, "VCEK/VLEK")
        except SnpFormatError as e:
            raise CollateralError(f"{source or 'SNP collateral'}: {e}") from None
        return cls(vcek=leaf, chain=[*rest, *extra], source=source)

    def with_chain(self, chain: bytes | str | None) -> SnpCollateral:
        """These certificates and those of ``chain`` (file contents: DER, or PEM of any number)."""
        if chain is None:
            return self
        try:
            extra = _certificates(chain, "certificate chain")
        except SnpFormatError as e:
            raise CollateralError(f"{self.source or 'SNP collateral'}: {e}") from None
        return SnpCollateral(vcek=self.vcek, chain=[*self.chain, *extra], source=self.source)

    @classmethod
    def from_cert_table(cls, blob: bytes, source: str = "") -> SnpCollateral:
        """From the certificate table of an extended report (``SNP_GET_EXT_REPORT`` certs, configfs-tsm
        ``auxblob``): the VCEK (else the VLEK) is the leaf; ASK, ARK and the other leaf, if any, form the chain
        (:meth:`SnpVerifier.verify` takes the leaf that fits the report's signing_key). Unknown GUIDs are
        ignored; a malformed table is a CollateralError."""
        try:
            entries = parse_cert_table(blob)
        except EnvelopeError as e:
            raise CollateralError(f"{source + ': ' if source else ''}{e}") from None
        named = {e.name: e.data for e in entries if e.name is not None}
        leaf = named.get("VCEK") or named.get("VLEK")
        if leaf is None:
            raise CollateralError(f"{source or 'SNP certificate table'}: no VCEK or VLEK entry among its "
                                  f"{len(entries)} entries")
        chain = [named[n] for n in ("VLEK", "VCEK", "ASK", "ARK") if n in named and named[n] is not leaf]
        return cls(vcek=leaf, chain=chain, source=source or "SNP certificate table")


def _certificates(data: bytes | str, what: str) -> list[bytes]:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"-----BEGIN" in raw:
        certs = pem_certificates(raw)
        if not certs:
            raise SnpFormatError(what, "PEM", 0, "no CERTIFICATE block")
        return certs
    if not raw:
        raise SnpFormatError(what, "DER", 0, "empty")
    return [raw]


def _role_of(der: bytes) -> tuple[str | None, bytes | None]:
    """("VCEK" or "VLEK", hwID) of a certificate, (None, None) for any other or unreadable certificate."""
    try:
        cert = parse_certificate(der, "certificate")
        role = {"SEV-VCEK": "VCEK", "SEV-VLEK": "VLEK"}.get(cert.subject_cn or "")
        return role, (decode_vcek_extensions(cert).hwid if role else None)
    except SnpFormatError:
        return None, None


def _signs(der: bytes, report: SnpReport) -> bool:
    """Whether the key of certificate ``der`` verifies the report's signature (used only to choose among
    candidate leaves; the verifier checks the chosen one again, with everything else)."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        key = serialization.load_der_public_key(parse_certificate(der, "certificate").spki)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(encode_dss_signature(report.signature_r, report.signature_s), report.signed_bytes(),
                   ec.ECDSA(hashes.SHA384()))
    except (SnpFormatError, InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True


def _pick_leaf(candidates: list[bytes], report: SnpReport) -> bytes | None:
    """The certificate among ``candidates`` that signed ``report``: the role its signing_key names, for a VCEK
    the report's chip ID as hwID (Turin: the first 8 bytes), and when several remain, the one whose key
    verifies the report."""
    role = SIGNING_KEY_NAMES.get(report.signing_key)
    fits = []
    for der in candidates:
        got, hwid = _role_of(der)
        if got != role:
            continue
        if role == "VCEK" and not report.chip_id_masked and hwid not in (report.chip_id, report.chip_id[:8]):
            continue
        fits.append(der)
    if len(fits) > 1:
        fits = [der for der in fits if _signs(der, report)]
    return fits[0] if fits else None


def _coerce_collateral(value: Any, extra: tuple[bytes, ...], report: SnpReport) -> SnpCollateral:
    if value is None:
        leaf = _pick_leaf(list(extra), report) if extra else None
        if leaf is None:
            role = SIGNING_KEY_NAMES.get(report.signing_key, "VCEK/VLEK")
            among = (f", and none of the {len(extra)} extra certificate(s) is the {role} that signed this report "
                     f"(chip_id {report.chip_id.hex()[:16]}...)") if extra else ""
            raise CollateralError("SNP: no VCEK/VLEK certificate given" + among + "; the report can only be checked "
                                  "against the certificate of the key that signed it (and its ASK/ASVK and ARK)")
        return SnpCollateral(vcek=leaf, chain=[d for d in extra if d is not leaf], source="extra certificates")
    if isinstance(value, SnpCollateral):
        coll = value
    elif isinstance(value, bytes | bytearray | memoryview | str):
        coll = SnpCollateral.load(bytes(value) if not isinstance(value, str) else value)
    else:
        raise CollateralError(f"SNP: collateral of type {type(value).__name__} is not understood; give an "
                              "SnpCollateral or the VCEK/VLEK certificate (DER, or a PEM bundle)")
    if extra:
        coll = SnpCollateral(vcek=coll.vcek, chain=[*coll.chain, *extra], source=coll.source)
    want = SIGNING_KEY_NAMES.get(report.signing_key)
    if _role_of(coll.vcek)[0] != want:  # a certificate table with both a VCEK and a VLEK: take the one that signed
        other = next((d for d in coll.chain if _role_of(d)[0] == want), None)
        if other is not None:
            coll = SnpCollateral(vcek=other, chain=[coll.vcek, *(d for d in coll.chain if d is not other)],
                                 source=coll.source)
    return coll


def _utc(when: datetime.datetime | None) -> datetime.datetime:
    if when is None:
        return datetime.datetime.now(datetime.UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def _hex(b: bytes) -> str:
    return b.hex()


class SnpVerifier:
    """Verifies AMD SEV-SNP attestation reports (``tee = "snp"``).

    ``ark_sha256`` replaces the pinned roots (product line -> SHA-256 of the ARK's DER); the default is AMD's.
    """

    tee = "snp"

    def __init__(self, ark_sha256: Mapping[str, str] | None = None) -> None:
        self.ark_sha256 = {k: v.lower() for k, v in (AMD_ARK_SHA256 if ark_sha256 is None else ark_sha256).items()}

    # -- the one entry point
    def verify(self, evidence: bytes, options: Options) -> Result:
        try:
            raw = bytes(evidence)
            report = SnpReport.parse(unwrap_snp_report_resp(raw) or raw)
        except (SnpFormatError, EnvelopeError) as e:
            raise EvidenceFormatError(str(e)) from None
        except TypeError:
            raise EvidenceFormatError(f"SNP evidence must be bytes, not {type(evidence).__name__}") from None
        self._check_report_header(report)
        coll = _coerce_collateral(options.collateral, tuple(options.extra_certs), report)
        leaf, exts, role = self._leaf(coll, report)
        ica, ark, product = self._chain(coll, leaf, exts, role, report)
        self._check_signatures(ark, ica, leaf, report)
        turin = product == "Turin"
        self._check_bindings(report, exts, role, turin, options)

        as_of = _utc(options.as_of)
        errors: list[str] = []
        for cert in (leaf, ica, ark):
            if as_of < cert.not_before:
                errors.append(f"{cert.name} ({cert.subject_cn}) is not valid before {cert.not_before:%Y-%m-%d %H:%M:%S}"
                              f" UTC (checked at {as_of:%Y-%m-%d %H:%M:%S} UTC)")
            elif as_of > cert.not_after:
                errors.append(f"{cert.name} ({cert.subject_cn}) expired {cert.not_after:%Y-%m-%d %H:%M:%S} UTC "
                              f"(checked at {as_of:%Y-%m-%d %H:%M:%S} UTC)")

        status, detail, cert_tcb = self._tcb_status(report, exts, role, turin)
        claims = self._claims(report, exts, role, product, turin)
        claims["tcb_detail"] = detail
        for name, value in cert_tcb.items():
            claims[f"{role.lower()}_tcb_{name}"] = value
        claims["certificate_not_after"] = leaf.not_after.isoformat()
        return Result(tee=self.tee, verified=True, collateral_valid=not errors, tcb_status=status,
                      claims=claims, errors=errors)

    # -- steps
    @staticmethod
    def _check_report_header(report: SnpReport) -> None:
        if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
            raise VerificationError(f"SNP report: signature_algo at offset 0x34 is {report.signature_algo}; "
                                    "only 1 (ECDSA P-384 with SHA-384) is defined")
        if report.signing_key == SIGNING_KEY_NONE:
            raise VerificationError("SNP report: flags.signing_key at offset 0x48 says the report is not signed")
        if report.mask_chip_key:
            raise VerificationError("SNP report: flags.mask_chip_key at offset 0x48 is set, so the firmware did "
                                    "not sign the report")

    @staticmethod
    def _parse(der: bytes, name: str) -> Certificate:
        try:
            return parse_certificate(der, name)
        except SnpFormatError as e:
            raise CollateralError(str(e)) from None

    def _leaf(self, coll: SnpCollateral, report: SnpReport) -> tuple[Certificate, VcekExtensions, str]:
        leaf = self._parse(coll.vcek, "VCEK/VLEK certificate")
        role = {"SEV-VCEK": "VCEK", "SEV-VLEK": "VLEK"}.get(leaf.subject_cn or "")
        if role is None:
            raise VerificationError(f"VCEK/VLEK certificate: subject CN is {leaf.subject_cn!r}, expected "
                                    "'SEV-VCEK' or 'SEV-VLEK'")
        leaf = replace(leaf, name=f"{role} certificate")
        try:
            exts = decode_vcek_extensions(leaf)
        except SnpFormatError as e:
            raise CollateralError(str(e)) from None
        if role == "VCEK" and (exts.hwid is None or exts.csp_id is not None):
            raise VerificationError("VCEK certificate: a VCEK carries a hwID extension (1.3.6.1.4.1.3704.1.4) "
                                    "and no CSP ID")
        if role == "VLEK" and (exts.csp_id is None or exts.hwid is not None):
            raise VerificationError("VLEK certificate: a VLEK carries a CSP ID extension (1.3.6.1.4.1.3704.1.5) "
                                    "and no hwID")
        want = {SIGNING_KEY_VCEK: "VCEK", SIGNING_KEY_VLEK: "VLEK"}.get(report.signing_key)
        if want != role:
            raise VerificationError(f"SNP report: flags.signing_key at offset 0x48 says "
                                    f"{SIGNING_KEY_NAMES.get(report.signing_key, report.signing_key)} signed it, "
                                    f"but the certificate given is a {role}")
        return leaf, exts, role

    def _chain(self, coll: SnpCollateral, leaf: Certificate, exts: VcekExtensions, role: str,
               report: SnpReport) -> tuple[Certificate, Certificate, str]:
        chain = [self._parse(der, f"chain certificate {i}") for i, der in enumerate(coll.chain)]
        ica_name = "ASK" if role == "VCEK" else "ASVK"
        ica = next((c for c in chain if c.subject == leaf.issuer and not c.self_issued), None)
        if ica is None:
            raise CollateralError(f"{role} certificate: its issuer {leaf.issuer_cn!r} ({ica_name}) is not among the "
                                  f"{len(chain)} chain certificate(s) given; supply the {ica_name} and ARK of its "
                                  "product line")
        ica = replace(ica, name=ica_name)
        prefix = "SEV-" if role == "VCEK" else "SEV-VLEK-"
        cn = ica.subject_cn or ""
        product = cn[len(prefix):] if cn.startswith(prefix) else ""
        if not product or (role == "VCEK" and product.startswith("VLEK-")):
            raise VerificationError(f"{ica_name} certificate: subject CN {cn!r} is not '{prefix}<product>'; "
                                    f"a {role} is issued by the {ica_name}")
        if product not in self.ark_sha256:
            raise VerificationError(f"{ica_name} certificate: no pinned ARK for product line {product!r} "
                                    f"(known: {', '.join(sorted(self.ark_sha256))})")
        if exts.product_line != product:
            raise VerificationError(f"{role} certificate: productName {exts.product_name!r} does not belong to "
                                    f"product line {product} of its issuer {cn!r}")
        cpu = report.cpu_generation()
        if cpu is not None and cpu != product:
            raise VerificationError(f"SNP report: CPUID family {report.cpuid_fam_id:#x} model "
                                    f"{report.cpuid_mod_id:#x} (offset 0x188) is {cpu}, but the {role} is for "
                                    f"{product}")
        ark = next((c for c in chain if c.self_issued and c.subject == ica.issuer), None)
        if ark is None:
            raise CollateralError(f"{ica_name} certificate: its issuer {ica.issuer_cn!r} (ARK) is not among the "
                                  "chain certificates given")
        ark = replace(ark, name="ARK")
        if ark.sha256 != self.ark_sha256[product]:
            raise VerificationError(f"ARK certificate {ark.subject_cn!r} (SHA-256 {ark.sha256}) is not the pinned "
                                    f"ARK of {product} ({self.ark_sha256[product]})")
        for cert in (leaf, ica, ark):
            for ext in cert.extensions:
                if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
                    raise VerificationError(f"{cert.name}: critical extension {ext.oid} is not understood")
        for cert in (ica, ark):
            try:
                is_ca = cert.basic_constraints_ca()
            except SnpFormatError as e:
                raise CollateralError(str(e)) from None
            if not is_ca:
                raise VerificationError(f"{cert.name} certificate {cert.subject_cn!r} is not a CA "
                                        "(basicConstraints cA is not TRUE)")
        return ica, ark, product

    @staticmethod
    def _rsa_pss_check(issuer: Certificate, subject: Certificate) -> None:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        what = f"{subject.name} ({subject.subject_cn}) signed by {issuer.name} ({issuer.subject_cn})"
        if subject.signature_oid != OID_RSASSA_PSS:
            raise VerificationError(f"{what}: signature algorithm {subject.signature_oid}, AMD signs with "
                                    f"RSASSA-PSS ({OID_RSASSA_PSS})")
        try:
            params = parse_pss_params(subject.signature_params)
        except SnpFormatError as e:
            raise CollateralError(f"{what}: {e}") from None
        if (params.hash_oid, params.mgf_oid, params.mgf_hash_oid, params.salt_length, params.trailer_field) != (
                OID_SHA384, OID_MGF1, OID_SHA384, 48, 1):
            raise VerificationError(f"{what}: RSASSA-PSS parameters {params} are not SHA-384, MGF1-SHA-384, "
                                    "salt 48")
        try:
            key = serialization.load_der_public_key(issuer.spki)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CollateralError(f"{issuer.name}: unreadable public key: {e}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise VerificationError(f"{issuer.name}: key is {type(key).__name__}, expected RSA")
        try:
            key.verify(subject.signature, subject.tbs,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48), hashes.SHA384())
        except (InvalidSignature, ValueError):
            raise VerificationError(f"{what}: signature does not verify") from None

    def _check_signatures(self, ark: Certificate, ica: Certificate, leaf: Certificate, report: SnpReport) -> None:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        self._rsa_pss_check(ark, ark)
        self._rsa_pss_check(ark, ica)
        self._rsa_pss_check(ica, leaf)
        try:
            key = serialization.load_der_public_key(leaf.spki)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CollateralError(f"{leaf.name}: unreadable public key: {e}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
            raise VerificationError(f"{leaf.name}: key is not ECDSA P-384")
        raw = report.raw
        for name, off in (("signature_r", 0x2A0), ("signature_s", 0x2E8)):
            if any(raw[off + _P384_ORDER_BYTES:off + 72]):
                raise VerificationError(f"SNP report: {name} at offset {off:#x} has non-zero bytes past the 48 a "
                                        "P-384 value uses")
        if report.signature_r == 0 or report.signature_s == 0:
            raise VerificationError("SNP report: signature at offset 0x2a0 is zero (the report is not signed)")
        try:
            key.verify(encode_dss_signature(report.signature_r, report.signature_s), report.signed_bytes(),
                       ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError):
            raise VerificationError(f"SNP report: ECDSA P-384 signature over bytes 0x000-0x29f does not verify "
                                    f"with the {leaf.name.split()[0]} key") from None

    @staticmethod
    def _check_bindings(report: SnpReport, exts: VcekExtensions, role: str, turin: bool, options: Options) -> None:
        if role == "VCEK" and not report.chip_id_masked:
            hwid = exts.hwid or b""
            if len(hwid) == 64:
                ok = hwid == report.chip_id
            elif len(hwid) == 8 and turin:
                ok = hwid == report.chip_id[:8] and not any(report.chip_id[8:])
            else:
                raise VerificationError(f"VCEK certificate: hwID of {len(hwid)} bytes does not fit a "
                                        f"{'Turin' if turin else 'Milan/Genoa'} chip ID")
            if not ok:
                raise VerificationError(f"SNP report: chip_id at offset 0x1a0 ({report.chip_id.hex()[:16]}...) is "
                                        f"not the VCEK's hwID ({hwid.hex()[:16]}...)")
        if options.report_data is not None:
            want = bytes(options.report_data)
            if len(want) > 64:
                raise VerificationError(f"expected report data is {len(want)} bytes; SNP report data holds 64")
            if report.report_data != want.ljust(64, b"\0"):
                raise VerificationError(f"SNP report: report_data at offset 0x50 is {report.report_data.hex()}, "
                                        f"expected {want.hex()} (zero padded)")

    @staticmethod
    def _tcb_status(report: SnpReport, exts: VcekExtensions, role: str,
                    turin: bool) -> tuple[str, str, dict[str, int]]:
        if turin and exts.fmc_spl is None:
            raise VerificationError(f"{role} certificate: a Turin {role} carries fmcSPL (1.3.6.1.4.1.3704.1.3.9)")
        if not turin and exts.fmc_spl is not None:
            raise VerificationError(f"{role} certificate: fmcSPL is only defined for Turin")
        reported = report.tcb("reported_tcb", turin).components()
        cert = exts.tcb(turin).components()
        low = [f"{name}: reported {reported[name]} < {role} {cert[name]}"
               for name in cert if reported[name] < cert[name]]
        return ("OutOfDate" if low else "UpToDate"), "; ".join(low), cert

    @staticmethod
    def _claims(report: SnpReport, exts: VcekExtensions, role: str, product: str, turin: bool) -> dict[str, Any]:
        pol, plat = report.policy, report.platform_info
        claims: dict[str, Any] = {
            "version": report.version,
            "measurement": _hex(report.measurement),
            "host_data": _hex(report.host_data),
            "report_data": _hex(report.report_data),
            "policy": pol.value,
            "chip_id": _hex(report.chip_id),
            "chip_id_masked": report.chip_id_masked,
            "reported_tcb": _hex(report.reported_tcb),
            "current_tcb": _hex(report.current_tcb),
            "committed_tcb": _hex(report.committed_tcb),
            "launch_tcb": _hex(report.launch_tcb),
            "vmpl": report.vmpl,
            "guest_svn": report.guest_svn,
            "family_id": _hex(report.family_id),
            "image_id": _hex(report.image_id),
            "id_key_digest": _hex(report.id_key_digest),
            "author_key_digest": _hex(report.author_key_digest),
            "author_key_en": report.author_key_en,
            "report_id": _hex(report.report_id),
            "report_id_ma": _hex(report.report_id_ma),
            "signing_key": role,
            "debug": pol.debug,
            "smt": pol.smt,
            "migration_agent": pol.migrate_ma,
            "single_socket": pol.single_socket,
            "abi_major": pol.abi_major,
            "abi_minor": pol.abi_minor,
            "policy_cxl_allow": pol.cxl_allow,
            "policy_mem_aes_256_xts": pol.mem_aes_256_xts,
            "policy_rapl_dis": pol.rapl_dis,
            "policy_ciphertext_hiding": pol.ciphertext_hiding,
            "policy_page_swap_disable": pol.page_swap_disable,
            "platform_info": plat.value,
            "platform_smt_enabled": plat.smt_enabled,
            "platform_tsme_enabled": plat.tsme_enabled,
            "platform_ecc_enabled": plat.ecc_enabled,
            "platform_rapl_disabled": plat.rapl_disabled,
            "platform_ciphertext_hiding_enabled": plat.ciphertext_hiding_enabled,
            "platform_alias_check_complete": plat.alias_check_complete,
            "platform_tio_enabled": plat.tio_enabled,
            "current_version": str(report.current_version),
            "committed_version": str(report.committed_version),
            "product": product,
            "product_name": exts.product_name,
        }
        for name, value in report.tcb("reported_tcb", turin).components().items():
            claims[f"reported_tcb_{name}"] = value
        if report.cpuid_fam_id is not None:
            claims.update(cpuid_fam_id=report.cpuid_fam_id, cpuid_mod_id=report.cpuid_mod_id,
                          cpuid_step=report.cpuid_step)
        if report.launch_mit_vector is not None:
            claims.update(launch_mit_vector=report.launch_mit_vector, current_mit_vector=report.current_mit_vector)
        if exts.csp_id is not None:
            claims["csp_id"] = exts.csp_id
        return claims

