"""Intel SGX architectural structures, byte for byte: SIGSTRUCT, REPORT(BODY), TARGETINFO, EINITTOKEN,
KEYREQUEST, SECS, plus the ATTRIBUTES / XFRM / MISCSELECT / SECINFO bit names.

Pure codecs: no I/O, no cryptography. Every class has ``parse(data)`` (exact size, reserved bytes must be
zero, fixed constants must match) and ``pack()`` (the inverse, byte-exact). All integers are little-endian,
as the Intel SDM lays them out. A malformed structure raises :class:`SgxFormatError` naming the structure,
the field or offset, and what is wrong.

Offsets follow the SDM tables (also found in intel/linux-sgx ``arch.h`` and the Linux ``sgx/arch.h``).

The structures live in one module each (common: constants, bit names, ATTRIBUTES, dates; sigstruct; report:
REPORT, REPORT BODY, TARGETINFO; keys: EINITTOKEN, KEYREQUEST; secs); this package re-exports them.
"""

from __future__ import annotations

from inclavare.formats.sgx.common import (
    ATTRIBUTE_FLAGS_RESERVED,
    CONFIGID_SIZE,
    CPUSVN_SIZE,
    EINITTOKEN_SIZE,
    KEYID_SIZE,
    KEYREQUEST_SIZE,
    MAC_SIZE,
    MODULUS_SIZE,
    PAGE_SIZE,
    REPORT_BODY_SIZE,
    REPORT_DATA_SIZE,
    REPORT_SIZE,
    SECINFO_REG_R,
    SECINFO_REG_RW,
    SECINFO_REG_RWX,
    SECINFO_REG_RX,
    SECINFO_TCS,
    SECS_SIZE,
    SIGNING_MATERIAL_SIZE,
    SIGSTRUCT_BODY_RANGE,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER1,
    SIGSTRUCT_HEADER2,
    SIGSTRUCT_HEADER_RANGE,
    SIGSTRUCT_SIZE,
    SIGSTRUCT_TYPE_DEBUG,
    TARGETINFO_SIZE,
    VENDOR_INTEL,
    VENDOR_OTHER,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    KeyName,
    KeyPolicy,
    MiscSelect,
    SecInfo,
    SgxFormatError,
    Xfrm,
    _unchecked,
    decode_date,
    encode_bcd_date,
    mrsigner_of,
)
from inclavare.formats.sgx.keys import (
    EInitToken,
    KeyRequest,
)
from inclavare.formats.sgx.report import (
    Report,
    ReportBody,
    TargetInfo,
)
from inclavare.formats.sgx.secs import (
    Secs,
)
from inclavare.formats.sgx.sigstruct import (
    SigStruct,
)

__all__ = [
    "ATTRIBUTE_FLAGS_RESERVED",
    "CONFIGID_SIZE",
    "CPUSVN_SIZE",
    "KEYID_SIZE",
    "MAC_SIZE",
    "SECINFO_REG_R",
    "SECINFO_REG_RW",
    "SECINFO_REG_RWX",
    "SECINFO_REG_RX",
    "SECINFO_TCS",
    "SIGNING_MATERIAL_SIZE",
    "SIGSTRUCT_BODY_RANGE",
    "SIGSTRUCT_EXPONENT",
    "SIGSTRUCT_HEADER1",
    "SIGSTRUCT_HEADER2",
    "SIGSTRUCT_HEADER_RANGE",
    "SIGSTRUCT_TYPE_DEBUG",
    "VENDOR_INTEL",
    "VENDOR_OTHER",
    "XFRM_LEGACY",
    "_unchecked",
    "EINITTOKEN_SIZE",
    "KEYREQUEST_SIZE",
    "MODULUS_SIZE",
    "PAGE_SIZE",
    "REPORT_BODY_SIZE",
    "REPORT_DATA_SIZE",
    "REPORT_SIZE",
    "SECS_SIZE",
    "SIGSTRUCT_SIZE",
    "TARGETINFO_SIZE",
    "AttributeFlags",
    "Attributes",
    "EInitToken",
    "KeyName",
    "KeyPolicy",
    "KeyRequest",
    "MiscSelect",
    "Report",
    "ReportBody",
    "SecInfo",
    "Secs",
    "SgxFormatError",
    "SigStruct",
    "TargetInfo",
    "Xfrm",
    "decode_date",
    "encode_bcd_date",
    "mrsigner_of",
]

