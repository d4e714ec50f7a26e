"""What is SGX-specific in appraising a DCAP quote: the flat claims of an enclave's report body. The shared DCAP
core (PCK chain, quote and QE report signatures, collateral, TCB status) is :mod:`.dcap`.
"""

from __future__ import annotations

from typing import Any

from inclavare.formats.sgx import ReportBody

__all__ = ["claims"]


def claims(b: ReportBody) -> dict[str, Any]:
    """The enclave's identity, attributes and report data, for policy (bytes hex-encoded)."""
    return {
        "mrenclave": b.mrenclave.hex(), "mrsigner": b.mrsigner.hex(), "isvprodid": b.isvprodid,
        "isvsvn": b.isvsvn, "attributes": b.attributes.pack().hex(), "debug": b.attributes.debug,
        "report_data": b.reportdata.hex(), "cpusvn": b.cpusvn.hex(), "miscselect": b.miscselect,
        "configid": b.configid.hex(), "configsvn": b.configsvn, "isvextprodid": b.isvextprodid.hex(),
        "isvfamilyid": b.isvfamilyid.hex(),
    }
