"""Intel DCAP ECDSA quotes (SGX v3; TDX and SGX v4 and v5) and the SGX extension of PCK certificates.

Pure codecs: no I/O and no cryptography (verifying the signatures is the attestation layer's job). A malformed
quote or extension raises :class:`DcapFormatError` (an :class:`~inclavare.formats.sgx.SgxFormatError`) naming
the field and its byte offset.

Modules, by responsibility: header (sizes, version and TEE constants, the error type, the 48-byte header),
certification (QE certification data, the PEM chain of type 5, the QE report binding), quote3 (SGX v3 quotes
as the quoting enclave writes them), quote (every version, read for verifiers; TD report bodies), pck (the PCK
certificate's SGX extension). This package re-exports every public name, as :mod:`inclavare.formats.sgx` does:
``from inclavare.formats.dcap import DcapQuote`` is how the rest of the code names them.
"""

from __future__ import annotations

from inclavare.formats.dcap.certification import (
    CertDataType,
    CertificationData,
    qe_report_data_for,
    split_pem_chain,
)
from inclavare.formats.dcap.header import (
    ATT_KEY_TYPE_ECDSA_P256,
    ATT_KEY_TYPE_ECDSA_P384,
    BODY_TYPE_SGX,
    BODY_TYPE_TD10,
    BODY_TYPE_TD15,
    ECDSA_KEY_SIZE,
    ECDSA_SIG_SIZE,
    HEADER_SIZE,
    INTEL_QE_VENDOR_ID,
    QUOTE_VERSION_3,
    QUOTE_VERSION_4,
    QUOTE_VERSION_5,
    SIG_DATA_OFFSET,
    SIGNED_SIZE,
    TD_REPORT10_SIZE,
    TD_REPORT15_SIZE,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    USER_DATA_SIZE,
    DcapFormatError,
    QuoteHeader,
)
from inclavare.formats.dcap.pck import SGX_EXTENSION_OID, PckConfiguration, PckExtension, SgxType
from inclavare.formats.dcap.quote import DcapQuote, TdReportBody, report_body_lenient
from inclavare.formats.dcap.quote3 import Quote3, QuoteSignatureData

__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "ATT_KEY_TYPE_ECDSA_P384",
    "BODY_TYPE_SGX",
    "BODY_TYPE_TD10",
    "BODY_TYPE_TD15",
    "ECDSA_KEY_SIZE",
    "ECDSA_SIG_SIZE",
    "HEADER_SIZE",
    "INTEL_QE_VENDOR_ID",
    "QUOTE_VERSION_3",
    "QUOTE_VERSION_4",
    "QUOTE_VERSION_5",
    "SGX_EXTENSION_OID",
    "SIGNED_SIZE",
    "SIG_DATA_OFFSET",
    "TD_REPORT10_SIZE",
    "TD_REPORT15_SIZE",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "USER_DATA_SIZE",
    "CertDataType",
    "CertificationData",
    "DcapFormatError",
    "DcapQuote",
    "PckConfiguration",
    "PckExtension",
    "Quote3",
    "QuoteHeader",
    "QuoteSignatureData",
    "SgxType",
    "TdReportBody",
    "qe_report_data_for",
    "report_body_lenient",
    "split_pem_chain",
]
