"""``sev_snp``: SEV-SNP attestation reports and the certificate table through configfs-tsm or /dev/sev-guest.

* ``/dev/sev-guest`` (``$INCLAVARE_SEV_GUEST_DEVICE``): ``SNP_GET_EXT_REPORT`` (or ``SNP_GET_REPORT``) with
  struct snp_guest_request_ioctl {u8 msg_version=1, u64 req_data, u64 resp_data, u64 exitinfo2 (fw_error low
  32 bits, vmm_error high 32)}; the request is snp_ext_report_req {snp_report_req {user_data[64], u32 vmpl,
  rsvd[28]}, u64 certs_address, u32 certs_len (page multiple)}; the response (4000 bytes) is MSG_REPORT_RSP
  {u32 status, u32 report_size, 24 reserved, the 1184-byte report}. A certificate buffer that is too small
  fails with vmm_error 1 and the needed length written back into certs_len; it is retried once.

The certificate table (GHCB spec, MSG_REPORT_REQ) is a list of 24-byte entries {GUID (16 bytes, RFC 4122
byte order), u32 offset, u32 length} ended by an all-zero entry; offsets count from the table's start.
:func:`parse_cert_table` names the entries: VCEK 63da758d-e664-4564-adc5-f4b93be8accd, VLEK
a8074bc2-a25a-483e-aae6-39c045a0b8a1, ASK 4ab7b379-bbac-4fe4-a02f-05aef327c782, ARK
c0b406a4-a803-4952-9743-3fb6014cd0ae (others are kept under their GUID text).
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from inclavare.formats import envelopes
from inclavare.ratls.attesters.base import (
    AttesterError,
    Evidence,
    IoctlFn,
    _mismatch,
    _report_data,
)
from inclavare.ratls.attesters.guest import GuestAttester
from inclavare.ratls.attesters.ioctls import _IOC_READ, _IOC_WRITE, _ioc, _open_device
from inclavare.ratls.attesters.tsm import ConfigfsTsm

if TYPE_CHECKING:
    from inclavare.attestation.snp import SnpCollateral


SEV_GUEST_DEVICE = "/dev/sev-guest"
SEV_GUEST_DEVICE_ENV = "INCLAVARE_SEV_GUEST_DEVICE"
SNP_METHODS = ("auto", "configfs", "ioctl")
# the GHCB certificate table's codec is formats/envelopes.py; by lower-case name here, as the evidence carries it
CERT_TABLE_GUIDS: dict[str, str] = {str(guid): name.lower() for guid, name in envelopes.CERT_TABLE_GUIDS.items()}
CERT_TABLE_ENTRY = envelopes.CERT_TABLE_ENTRY
MAX_CERT_TABLE_ENTRIES = envelopes.MAX_CERT_TABLE_ENTRIES

SNP_GUEST_REQUEST_SIZE = 32
SNP_GET_REPORT = _ioc(_IOC_READ | _IOC_WRITE, "S", 0, SNP_GUEST_REQUEST_SIZE)
SNP_GET_EXT_REPORT = _ioc(_IOC_READ | _IOC_WRITE, "S", 2, SNP_GUEST_REQUEST_SIZE)
SNP_REPORT_REQ_SIZE = 96
SNP_EXT_REPORT_REQ_SIZE = 112
SNP_REPORT_RESP_SIZE = 4000
SNP_REPORT_SIZE = 1184
SNP_MSG_REPORT_RSP_HEADER = 0x20
SNP_GUEST_VMM_ERR_INVALID_LEN = 1
PAGE = 4096
SNP_CERTS_INITIAL = 4 * PAGE  # SEV_FW_BLOB_MAX_SIZE on current kernels
SNP_CERTS_MAX = 1 << 20


def parse_cert_table(blob: bytes, *, where: str = "") -> dict[str, bytes]:
    """The certificates of a GHCB certificate table by name (``vcek``, ``vlek``, ``ask``, ``ark``, or the GUID
    text for others), read by :func:`inclavare.formats.envelopes.parse_cert_table` (bounds, terminator,
    duplicates, overlaps). An empty blob, or one whose first entry is the terminator (the host gave no
    certificates), is an empty table."""
    blob = bytes(blob)
    if not any(blob[:CERT_TABLE_ENTRY.size]):
        return {}
    try:
        entries = envelopes.parse_cert_table(blob)
    except envelopes.EnvelopeError as e:
        raise AttesterError(f"{where}: {e}" if where else str(e)) from None
    return {entry.name.lower() if entry.name else str(entry.guid): entry.data for entry in entries}


def snp_collateral_of(evidence: Evidence) -> SnpCollateral | None:
    """The VCEK/VLEK and its chain from an ``sev_snp`` evidence's certificate table, as the SNP verifier takes
    them; None when the host supplied no VCEK/VLEK."""
    certs: Mapping[str, bytes] = evidence.extra.get("certificates") or {}
    leaf = certs.get("vcek") or certs.get("vlek")
    if leaf is None:
        return None
    from inclavare.attestation.snp import SnpCollateral

    return SnpCollateral(vcek=leaf, chain=[certs[n] for n in ("ask", "ark") if n in certs],
                         source="SNP certificate table")


class SevSnpAttester(GuestAttester):
    """SEV-SNP attestation reports with the host's certificate table. ``method``: ``auto`` (configfs-tsm when
    its provider is sev_guest, else /dev/sev-guest), ``configfs`` or ``ioctl``. ``vmpl``: the VMPL the report
    is asked for (configfs: written to ``privlevel``; default the provider's floor; ioctl: default 0 --
    rats-tls asks for 1). ``extended``: ask for the certificate table (SNP_GET_EXT_REPORT / auxblob)."""

    name = "sev_snp"
    priority = 42
    evidence_kind = "sev_snp"

    methods = SNP_METHODS
    tsm_provider = "sev_guest"
    device_path = SEV_GUEST_DEVICE
    device_env = SEV_GUEST_DEVICE_ENV
    guest = "an SEV-SNP guest"

    def __init__(self, *, method: str = "auto", tsm: ConfigfsTsm | None = None, device: str | None = None,
                 ioctl: IoctlFn | None = None, vmpl: int | None = None, extended: bool = True) -> None:
        super().__init__(method=method, tsm=tsm, device=device, ioctl=ioctl)
        if vmpl is not None and (isinstance(vmpl, bool) or not 0 <= vmpl <= 3):
            raise AttesterError(f"sev_snp: vmpl {vmpl!r} is not 0..3")
        self.vmpl = vmpl
        self.extended = extended

    def collect(self, report_data: bytes) -> Evidence:
        rd = _report_data(self.name, report_data)
        if self._use_configfs():
            r = self.tsm.report(rd, provider="sev_guest", who=self.name, privlevel=self.vmpl, auxblob=self.extended)
            report, table, source = r.outblob, r.auxblob, f"configfs-tsm {r.path}"
            extra: dict[str, Any] = {"source": "configfs-tsm", "generation": r.generation}
        else:
            report, table = self._ioctl_report(rd)
            source, extra = self.device, {"source": self.device}
        if len(report) != SNP_REPORT_SIZE:
            raise AttesterError(f"{self.name}: {source} returned {len(report)} bytes, an SNP report is "
                                f"{SNP_REPORT_SIZE}")
        from inclavare.formats.snp import SnpFormatError, SnpReport

        try:
            parsed = SnpReport.parse(report)
        except SnpFormatError as e:
            raise AttesterError(f"{self.name}: {source} returned a malformed report ({e})") from None
        if parsed.report_data != rd:
            raise _mismatch(self.name, source, parsed.report_data, rd)
        if self.vmpl is not None and parsed.vmpl != self.vmpl:
            raise AttesterError(f"{self.name}: {source} returned a report for VMPL {parsed.vmpl}, not the "
                                f"requested {self.vmpl}")
        certs = parse_cert_table(table, where=f"{self.name}: {source}") if table else {}
        extra.update(certificates=certs, cert_table=table or b"")
        return Evidence(self.evidence_kind, report, None, extra)

    def _ioctl_report(self, rd: bytes) -> tuple[bytes, bytes | None]:
        vmpl = self.vmpl or 0
        request_code, what = ((SNP_GET_EXT_REPORT, "SNP_GET_EXT_REPORT") if self.extended
                              else (SNP_GET_REPORT, "SNP_GET_REPORT"))
        certs_len = SNP_CERTS_INITIAL
        for attempt in range(2):
            req = ctypes.create_string_buffer(SNP_EXT_REPORT_REQ_SIZE if self.extended else SNP_REPORT_REQ_SIZE)
            resp = ctypes.create_string_buffer(SNP_REPORT_RESP_SIZE)
            certs = ctypes.create_string_buffer(certs_len if self.extended else 1)
            struct.pack_into("<64sI", req, 0, rd, vmpl)
            if self.extended:
                struct.pack_into("<QI", req, SNP_REPORT_REQ_SIZE, ctypes.addressof(certs), certs_len)
            guest = bytearray(struct.pack("<B7xQQQ", 1, ctypes.addressof(req), ctypes.addressof(resp), 0))
            fd = _open_device(self.name, self.device)
            try:
                self.ioctl(fd, request_code, guest)
                failure: OSError | None = None
            except OSError as e:
                failure = e
            finally:
                os.close(fd)
            (exitinfo2,) = struct.unpack_from("<Q", guest, 24)
            fw_error, vmm_error = exitinfo2 & 0xFFFFFFFF, exitinfo2 >> 32
            if failure is not None or exitinfo2:
                if self.extended and vmm_error == SNP_GUEST_VMM_ERR_INVALID_LEN and attempt == 0:
                    (needed,) = struct.unpack_from("<I", req, SNP_REPORT_REQ_SIZE + 8)
                    needed = -(-needed // PAGE) * PAGE
                    if certs_len < needed <= SNP_CERTS_MAX:
                        certs_len = needed
                        continue
                    raise AttesterError(f"{self.name}: {self.device}: {what}: the host's certificates need "
                                        f"{needed} bytes (limit {SNP_CERTS_MAX})")
                reason = (failure.strerror or str(failure)) if failure is not None else "error reported"
                raise AttesterError(f"{self.name}: {self.device}: {what} failed: {reason} (firmware error "
                                    f"{fw_error:#x}, VMM error {vmm_error:#x})")
            raw = resp.raw
            status, size = struct.unpack_from("<II", raw, 0)
            if status != 0:
                raise AttesterError(f"{self.name}: {self.device}: {what}: the firmware answered status {status:#x}")
            if size != SNP_REPORT_SIZE:
                raise AttesterError(f"{self.name}: {self.device}: {what}: report size {size}, expected "
                                    f"{SNP_REPORT_SIZE}")
            report = raw[SNP_MSG_REPORT_RSP_HEADER:SNP_MSG_REPORT_RSP_HEADER + SNP_REPORT_SIZE]
            return report, (certs.raw[:certs_len] if self.extended else None)
        raise AssertionError("unreachable")  # pragma: no cover
