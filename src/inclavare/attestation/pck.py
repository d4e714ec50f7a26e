"""Intel's SGX PKI as a DCAP quote carries it: the pinned root, the PCK certificate chain, the PCK SGX extension.

The PCK chain (leaf "SGX PCK Certificate" <- PCK Platform or Processor CA <- root) is checked here once per
distinct chain and trust setting (:func:`chain_facts`, memoised); what depends on the time (validity windows)
is returned as checks for the caller to run at its ``as_of``. Certificates and signatures go through
:mod:`.certs`.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass

from inclavare.attestation.certs import Bad, cn_of, describe, fingerprint, issued_by, load_cert, validity
from inclavare.formats.dcap import SGX_EXTENSION_OID, CertDataType, PckExtension, split_pem_chain
from inclavare.formats.sgx import SgxFormatError

__all__ = ["INTEL_SGX_ROOT_CA_FINGERPRINTS", "INTEL_SGX_ROOT_CA_SHA256", "ChainFacts", "chain_facts",
           "pck_extension", "trusted_root_items"]

# SHA-256 of the DER of Intel's SGX Root CA certificate (ECDSA P-256, valid 2018-05-21..2049-12-31).
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
# The first issue of the same root (same key, same serial, valid 2018-05-21..2033-05-21), which PCK chains in
# quotes from platforms provisioned before the re-issue still carry.
INTEL_SGX_ROOT_CA_2033_SHA256 = "fc64f8076d79a4fee9d1d473d74c89eb8d8fd55c5abafeabeba7366d20429404"
INTEL_SGX_ROOT_CA_FINGERPRINTS = (INTEL_SGX_ROOT_CA_SHA256, INTEL_SGX_ROOT_CA_2033_SHA256)

_PCK_LEAF_CN = "SGX PCK Certificate"
_PCK_CA_CNS = ("SGX PCK Platform CA", "SGX PCK Processor CA")
_ROOT_CN = "SGX Root CA"
TCB_SIGNING_CN = "SGX TCB Signing"

_MAX_CHAIN = 3

# The pinned Intel roots (INTEL_SGX_ROOT_CA_FINGERPRINTS) are self-signed CA certificates whose subject is their
# issuer: facts about those exact bytes, so the root's own signature needs no check for them.
_SELF_SIGNED_INTEL_ROOTS = frozenset({INTEL_SGX_ROOT_CA_SHA256, INTEL_SGX_ROOT_CA_2033_SHA256})

def _norm_fp(fp: str) -> str:
    return fp.replace(":", "").replace(" ", "").lower()


@functools.lru_cache(maxsize=64)
def trusted_root_items(override: tuple[str, ...] | None, sim: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """Trusted root fingerprints -> whether each is the simulated platform's, as items: the pinned (or
    overriding) fingerprints, then the sim ones (given only when trust_sim is set)."""
    roots = {_norm_fp(fp): False for fp in (override if override is not None else INTEL_SGX_ROOT_CA_FINGERPRINTS)}
    for fp in sim:
        roots.setdefault(_norm_fp(fp), True)
    return tuple(roots.items())

@functools.lru_cache(maxsize=64)
def pck_extension(leaf_der: bytes) -> PckExtension:
    from cryptography import x509

    cert = load_cert(leaf_der)
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise Bad(f"PCK certificate {describe(cert)} has no SGX extension ({SGX_EXTENSION_OID})") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography has no parser for it
        raise Bad("PCK certificate: the SGX extension is not raw DER")
    try:
        return PckExtension.parse_der(value.value)
    except SgxFormatError as e:
        raise Bad(f"PCK certificate {describe(cert)}: {e}") from None

@dataclass(frozen=True)
class ChainFacts:
    """What a PCK chain's checks found, apart from time: errors before the validity checks, the certificates
    whose validity is checked at ``as_of`` (DER, what it is), errors after them; whether all else passed."""

    before: tuple[str, ...]
    read: bool  # False: the chain could not be read that far, so nothing is checked after ``before``
    validity: tuple[tuple[bytes, str], ...] = ()
    after: tuple[str, ...] = ()
    ok: bool = False
    leaf_der: bytes | None = None
    ca_der: bytes | None = None
    root_der: bytes | None = None
    ext: PckExtension | None = None  # the leaf's SGX extension, when it parses (claims use it either way)
    is_sim: bool = False
    # the times (inclusive) at which every certificate in ``validity`` is valid
    valid_from: datetime.datetime = datetime.datetime.max.replace(tzinfo=datetime.UTC)
    valid_until: datetime.datetime = datetime.datetime.min.replace(tzinfo=datetime.UTC)

@functools.lru_cache(maxsize=64)
def chain_facts(key: tuple[int, bytes, tuple[tuple[str, bool], ...], bool, bool, tuple[bytes, ...]]
                 ) -> ChainFacts:
    """The time-independent checks of a PCK chain. ``key``: certification data type and bytes, trusted root
    fingerprints (-> is the sim root), trust_sim, whether sim root fingerprints were given, extra_certs."""
    cert_type, data, root_items, trust_sim, has_sim_fps, extra_certs = key
    roots = dict(root_items)
    errors: list[str] = []
    if cert_type != CertDataType.PCK_CERT_CHAIN:
        errors.append(f"certification data: type {cert_type} is not a PCK certificate chain (5); "
                      "this verifier needs the chain in the quote")
        return ChainFacts(tuple(errors), False)
    try:
        chain = _pem_chain(data)
    except SgxFormatError as e:
        return ChainFacts((f"PCK chain: {e}",), False)
    if len(chain) > _MAX_CHAIN or len(chain) < 2:
        return ChainFacts((f"PCK chain: has {len(chain)} certificates, expected leaf, PCK CA and (optionally) "
                            "root",), False)
    try:
        for der in chain:
            load_cert(der)
    except Bad as e:
        return ChainFacts((f"PCK chain: {e}",), False)
    if len(chain) == 3:
        root_der = chain[2]
    else:  # the root may come from the caller's extra certificates (pinned, so only a trusted one is taken)
        found = next((d for d in extra_certs if fingerprint(d) in roots), None)
        if found is None:
            return ChainFacts(("PCK chain: the quote carries no root CA certificate and no trusted root was given "
                                "in extra_certs",), False)
        root_der = found
    root = load_cert(root_der)
    fp = fingerprint(root_der)
    ok = True
    if fp not in roots:
        hint = ""
        if trust_sim and not has_sim_fps:
            hint = "; trust_sim is set but no sim_root_fingerprints were given"
        elif not trust_sim:
            hint = " (a simulated platform's quote is accepted only with trust_sim and its root fingerprint)"
        errors.append(f"PCK chain: root CA {describe(root)} (SHA-256 {fp}) is not a trusted root: Intel's SGX "
                      f"Root CA is {INTEL_SGX_ROOT_CA_SHA256}{hint}")
        ok = False
    static = _chain_problems(chain[0], chain[1], root_der)
    errors.extend(static)
    ok = ok and not static
    after: tuple[str, ...] = ()
    ext = None
    try:
        ext = pck_extension(chain[0])
    except Bad as e:
        after = (str(e),)
        ok = False
    windows = [validity(der) for der in (chain[0], chain[1], root_der)]
    return ChainFacts(tuple(errors), True, ((chain[0], "PCK certificate"), (chain[1], "PCK CA"),
                                             (root_der, "root CA")), after, ok, chain[0], chain[1], root_der, ext,
                       roots.get(fp, False), max(w[0] for w in windows), min(w[1] for w in windows))


@functools.lru_cache(maxsize=64)
def _pem_chain(data: bytes) -> tuple[bytes, ...]:
    return tuple(split_pem_chain(data, where="certification data (PCK chain)"))


@functools.lru_cache(maxsize=64)
def _chain_problems(leaf_der: bytes, ca_der: bytes, root_der: bytes) -> tuple[str, ...]:
    """What is wrong with a PCK chain apart from time and trust: signatures, CA constraints, names."""
    out: list[str] = []
    for der, issuer_der, what in ((leaf_der, ca_der, "PCK certificate"), (ca_der, root_der, "PCK CA"),
                                  (root_der, root_der, "root CA")):
        # a pinned Intel root is known to be self-signed: no signature check for it
        pinned = der == issuer_der and fingerprint(der) in _SELF_SIGNED_INTEL_ROOTS
        why = None if pinned else issued_by(der, issuer_der)
        if why is not None:
            out.append(f"PCK chain: {what}: {why}")
    for der, what, needle in ((leaf_der, "PCK certificate", (_PCK_LEAF_CN,)), (ca_der, "PCK CA", _PCK_CA_CNS),
                              (root_der, "root CA", (_ROOT_CN,))):
        cn = cn_of(der)
        if not any(n in cn for n in needle):
            out.append(f"PCK chain: {what} common name {cn!r} does not contain {' or '.join(needle)!r}")
    return tuple(out)
