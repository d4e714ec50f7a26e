"""RATS-TLS attesters: where the evidence in an RA-TLS certificate comes from.

An attester turns 64 bytes of report data (what :func:`inclavare.ratls.cert.make_certificate` derives from the
certificate's key and claims) into TEE evidence that carries those bytes. The instances, with rats-tls' names
and priorities (``sim`` is ours; it sits below every hardware TEE and above the null attester):

    name          priority  evidence (``evidence_kind``)                 where it comes from
    sgx_ecdsa     52        SGX DCAP ECDSA quote v3                       the enclave's REPORT, quoted by AESM
    tdx_ecdsa     42        TDX DCAP quote v4/v5                          configfs-tsm, or /dev/tdx_guest + QGS
    sev_snp       42        SEV-SNP attestation report + cert table       configfs-tsm, or /dev/sev-guest
    sim           10        SGX DCAP quote v3 of the simulated platform   the sim QE (NO confidentiality)
    nullattester   0        none                                          -

Selection (:func:`select_attester`), as rats-tls does it: a named attester is that one exactly and must be
usable here, or selection fails; with no name, the usable attester of highest priority wins (the null
attester is always usable, so selection without a name always succeeds).

Modules: ``base`` (the interface, :class:`Evidence`, :class:`AttesterError`), one per attester (``null``,
``sim``, ``sgx_ecdsa``, ``tdx_ecdsa``, ``sev_snp``), the kernel interfaces the guest attesters share (``tsm``:
configfs-tsm, ``ioctls``: the guest devices' ioctl numbers), and ``registry`` (:data:`ATTESTERS`,
:func:`select_attester`, :func:`make_attested_certificate`). Each module's docstring gives its kernel ABI.

Every attester checks what it got back before handing it out: the evidence must carry the requested report
data, or collection fails. Failures raise :class:`AttesterError` with one line naming the attester, the
interface and what went wrong.
"""

from __future__ import annotations

from inclavare.ratls.attesters.base import REPORT_DATA_SIZE, Attester, AttesterError, Evidence
from inclavare.ratls.attesters.ioctls import default_ioctl
from inclavare.ratls.attesters.null import NullAttester
from inclavare.ratls.attesters.registry import ATTESTERS, attester_names, make_attested_certificate, select_attester
from inclavare.ratls.attesters.sev_snp import (
    CERT_TABLE_GUIDS,
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    SevSnpAttester,
    parse_cert_table,
    snp_collateral_of,
)
from inclavare.ratls.attesters.sgx_ecdsa import SgxEcdsaAttester
from inclavare.ratls.attesters.sim import SimAttester, sim_attester_identity
from inclavare.ratls.attesters.tdx_ecdsa import TDX_CMD_GET_QUOTE, TDX_CMD_GET_REPORT0, TdxEcdsaAttester
from inclavare.ratls.attesters.tsm import ConfigfsTsm, TsmReport

__all__ = [
    "ATTESTERS",
    "CERT_TABLE_GUIDS",
    "REPORT_DATA_SIZE",
    "SNP_GET_EXT_REPORT",
    "SNP_GET_REPORT",
    "TDX_CMD_GET_QUOTE",
    "TDX_CMD_GET_REPORT0",
    "Attester",
    "AttesterError",
    "ConfigfsTsm",
    "Evidence",
    "NullAttester",
    "SevSnpAttester",
    "SgxEcdsaAttester",
    "SimAttester",
    "TdxEcdsaAttester",
    "TsmReport",
    "attester_names",
    "default_ioctl",
    "make_attested_certificate",
    "parse_cert_table",
    "select_attester",
    "sim_attester_identity",
    "snp_collateral_of",
]
