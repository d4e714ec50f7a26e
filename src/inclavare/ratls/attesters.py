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

Kernel interfaces, as the Linux ABI defines them (paths overridable per instance, or by environment):

* configfs-tsm (``/sys/kernel/config/tsm/report``, ``$INCLAVARE_TSM_REPORT_DIR``): mkdir a private entry, read
  ``provider`` (``tdx_guest`` / ``sev_guest``) and ``generation``, write ``privlevel`` (SNP, optional) and the
  64-byte ``inblob``, read ``outblob`` (TDX: the quote; SNP: the report) and, for SNP, ``auxblob`` (the GHCB
  certificate table). ``generation`` counts the writes to the entry; after reading it must have advanced by
  exactly our writes, else another writer raced us and the blobs are refused. The entry is removed after.
* ``/dev/tdx_guest`` (``$INCLAVARE_TDX_GUEST_DEVICE``): ``TDX_CMD_GET_REPORT0`` (struct tdx_report_req:
  reportdata[64], tdreport[1024]) gives the TDREPORT; Intel's Quote Generation Service turns it into a quote,
  reached over vsock (host CID 2, port 4050) or, on kernels that have it, the ``TDX_CMD_GET_QUOTE`` ioctl
  (struct tdx_quote_req {u64 buf, u64 len}; the buffer is tdx_quote_hdr {u64 version=1, u64 status, u32 in_len,
  u32 out_len} then data). Both carry the same QGS message: a 4-byte big-endian length, then
  qgs_msg_header {u16 major=1, u16 minor=0, u32 type (0 GET_QUOTE_REQ, 1 GET_QUOTE_RESP), u32 size,
  u32 error_code}, then for a request u32 report_size, u32 id_list_size, the TDREPORT; for a response
  u32 selected_id_size, u32 quote_size, the id, the quote.
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

ioctls go through an injectable function (``ioctl(fd, request, arg: bytearray) -> int``, default
``fcntl.ioctl`` with the buffer mutated in place), so the request structs can be checked without the guest
drivers; configfs-tsm goes through :class:`ConfigfsTsm`, whose four file operations a test can replace.

Every attester checks what it got back before handing it out: the evidence must carry the requested report
data, or collection fails. Failures raise :class:`AttesterError` with one line naming the attester, the
interface and what went wrong.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import os
import secrets
import socket
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from inclavare.errors import InclavareError
from inclavare.sockio import recv_exact

if TYPE_CHECKING:
    from inclavare.attestation.collateral import DcapCollateral
    from inclavare.attestation.snp import SnpCollateral
    from inclavare.sim.platform import SimPlatform
    from inclavare.sim.quoting import SimQuotingService
    from inclavare.sim.report import IdentityLike, ReportKey

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

REPORT_DATA_SIZE = 64

IoctlFn = Callable[[int, int, bytearray], int]
ReportFn = Callable[[bytes, bytes], bytes]  # (TARGETINFO, report data) -> REPORT
CollateralFn = Callable[[bytes], "DcapCollateral | None"]  # quote -> collateral


class AttesterError(InclavareError):
    """Evidence could not be collected; the message names the attester, the interface and the problem."""


@dataclass(frozen=True)
class Evidence:
    """What an attester collected. ``kind`` is the evidence type :func:`inclavare.ratls.dice.tag_for` and
    ``make_certificate`` take (``nullattester`` for none); ``data`` the raw evidence; ``endorsements`` DCAP
    collateral for Intel quotes when the attester has it (the certificate's endorsements extension);
    ``extra`` attester-specific facts (the sim platform's root fingerprint, SNP certificates, the source)."""

    kind: str
    data: bytes
    endorsements: DcapCollateral | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _report_data(who: str, report_data: bytes) -> bytes:
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise AttesterError(f"{who}: report data must be bytes, got {type(report_data).__name__}")
    rd = bytes(report_data)
    if len(rd) > REPORT_DATA_SIZE:
        raise AttesterError(f"{who}: report data is {len(rd)} bytes, at most {REPORT_DATA_SIZE} fit")
    return rd.ljust(REPORT_DATA_SIZE, b"\x00")


def _mismatch(who: str, source: str, got: bytes, want: bytes) -> AttesterError:
    return AttesterError(f"{who}: the evidence from {source} carries report data {got.hex()}, not the requested "
                         f"{want.hex()}")


class Attester:
    """One evidence source. Subclasses set ``name``, ``priority`` and ``evidence_kind`` and implement
    :meth:`unavailable_reason` (a cheap probe: is the device / socket / configfs entry there?) and
    :meth:`collect`."""

    name: ClassVar[str] = ""
    priority: ClassVar[int] = 0
    evidence_kind: ClassVar[str] = ""

    def unavailable_reason(self) -> str | None:
        """None when this attester can work here, else why not (one line)."""
        raise NotImplementedError

    def available(self) -> bool:
        return self.unavailable_reason() is None

    def collect(self, report_data: bytes) -> Evidence:
        """Evidence carrying ``report_data`` (at most 64 bytes, zero-padded to 64)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, priority={self.priority})"


# --------------------------------------------------------------------------------------------------
# nullattester


class NullAttester(Attester):
    """No evidence: the certificate carries none (one-way attestation, the client side of rats-tls' default)."""

    name = "nullattester"
    priority = 0
    evidence_kind = "nullattester"

    def unavailable_reason(self) -> str | None:
        return None

    def collect(self, report_data: bytes) -> Evidence:
        _report_data(self.name, report_data)
        return Evidence(self.evidence_kind, b"")


# --------------------------------------------------------------------------------------------------
# sim


SIM_STATE_DIR_ENV = "INCLAVARE_SIM_STATE_DIR"
_SIM_ENDORSEMENTS_TTL = datetime.timedelta(hours=1)


def sim_attester_identity() -> IdentityLike:
    """The identity the sim attester reports when no enclave makes the REPORT: fixed, clearly labelled values
    naming the RATS-TLS process on the simulated platform (it is not an enclave)."""
    import hashlib

    from inclavare.formats.sgx import AttributeFlags, Attributes, Xfrm
    from inclavare.sim.report import EnclaveIdentity

    return EnclaveIdentity(
        mrenclave=hashlib.sha256(b"INCLAVARE-RATS-TLS-SIM-ATTESTER-MRENCLAVE-V1").digest(),
        mrsigner=hashlib.sha256(b"INCLAVARE-RATS-TLS-SIM-ATTESTER-MRSIGNER-V1").digest(),
        attributes=Attributes(int(AttributeFlags.INIT | AttributeFlags.MODE64BIT), int(Xfrm.X87 | Xfrm.SSE)))


class SimAttester(Attester):
    """SGX DCAP quotes v3 from the simulated platform. NO CONFIDENTIALITY: the platform's keys are host files.

    The REPORT is made for the sim QE's TARGETINFO, by ``report_fn(targetinfo, report_data)`` when given (a sim
    enclave runtime's local report), else by the platform's EREPORT for ``identity`` (default
    :func:`sim_attester_identity`). The state directory is ``state_dir``, else ``$INCLAVARE_SIM_STATE_DIR``,
    else /var/lib/inclavare/sim; the attester is usable when the directory was named (argument or
    environment) or the default one already holds a platform, so a host never drifts into simulated
    evidence by accident. Endorsements: the platform's collateral (re-issued hourly)."""

    name = "sim"
    priority = 10
    evidence_kind = "sim"

    def __init__(self, state_dir: str | None = None, *, identity: IdentityLike | None = None,
                 report_fn: ReportFn | None = None, endorsements: bool = True) -> None:
        self.state_dir = state_dir
        self.identity = identity
        self.report_fn = report_fn
        self.with_endorsements = endorsements
        self._qs: SimQuotingService | None = None
        self._rkey: ReportKey | None = None
        self._endorsements: tuple[datetime.datetime, DcapCollateral] | None = None

    def _state_dir(self) -> tuple[str, bool]:
        """(directory, named explicitly)."""
        if self.state_dir:
            return self.state_dir, True
        env = os.environ.get(SIM_STATE_DIR_ENV)
        if env:
            return env, True
        from inclavare.sim.report import DEFAULT_STATE_DIR

        return DEFAULT_STATE_DIR, False

    def unavailable_reason(self) -> str | None:
        d, named = self._state_dir()
        if named or os.path.exists(os.path.join(d, "dcap", "platform.json")):
            return None
        return (f"no simulated platform: set ${SIM_STATE_DIR_ENV} to its state directory (created on first use) "
                f"or provision {d}")

    def _open(self) -> tuple[SimQuotingService, ReportKey]:
        if self._qs is None or self._rkey is None:
            from inclavare.sim.quoting import SimQuotingService
            from inclavare.sim.report import ReportKey

            d, _ = self._state_dir()
            try:
                self._qs = SimQuotingService.open(d)
                self._rkey = ReportKey.load(self._qs.platform.state_dir)
            except InclavareError as e:
                raise AttesterError(f"sim: {e}") from None
        return self._qs, self._rkey

    @property
    def platform(self) -> SimPlatform:
        """The simulated platform (opened, and created on first use)."""
        return self._open()[0].platform

    def _collateral(self) -> DcapCollateral:
        now = datetime.datetime.now(datetime.UTC)
        if self._endorsements is None or now - self._endorsements[0] > _SIM_ENDORSEMENTS_TTL:
            from inclavare.attestation.collateral import from_bundle

            self._endorsements = (now, from_bundle(self.platform.collateral_bundle(now)))
        return self._endorsements[1]

    def collect(self, report_data: bytes) -> Evidence:
        rd = _report_data(self.name, report_data)
        from inclavare.formats.sgx import Report, SgxFormatError

        qs, rkey = self._open()
        ti = qs.qe_target_info()
        try:
            if self.report_fn is not None:
                report = bytes(self.report_fn(ti, rd))
            else:
                report = rkey.make_report(self.identity or sim_attester_identity(), rd, ti)
            got = Report.parse(report).body.reportdata
        except (InclavareError, SgxFormatError) as e:
            raise AttesterError(f"sim: the enclave REPORT: {e}") from None
        if got != rd:
            raise _mismatch(self.name, "the enclave REPORT", got, rd)
        try:
            quote = qs.get_quote(report)
        except InclavareError as e:
            raise AttesterError(f"sim: {e}") from None
        _check_quote(self.name, "the sim QE", quote, rd, tdx=False)
        p = qs.platform
        return Evidence(self.evidence_kind, quote, self._collateral() if self.with_endorsements else None,
                        {"source": "sim QE", "report": report, "state_dir": p.state_dir,
                         "platform_root_fingerprint": p.root_ca_fingerprint()})


def _check_quote(who: str, source: str, quote: bytes, rd: bytes, *, tdx: bool) -> None:
    """The quote parses as a DCAP quote of the right TEE and carries ``rd``."""
    from inclavare.formats.dcap import DcapQuote, TdReportBody
    from inclavare.formats.sgx import SgxFormatError

    try:
        q = DcapQuote.parse(quote)
    except SgxFormatError as e:
        raise AttesterError(f"{who}: {source} returned a malformed quote ({e})") from None
    if q.is_tdx != tdx:
        raise AttesterError(f"{who}: {source} returned a{' TDX' if q.is_tdx else 'n SGX'} quote, expected "
                            f"{'TDX' if tdx else 'SGX'}")
    got = q.body.report_data if isinstance(q.body, TdReportBody) else q.body.reportdata
    if got != rd:
        raise _mismatch(who, source, got, rd)


# --------------------------------------------------------------------------------------------------
# sgx_ecdsa


class SgxEcdsaAttester(Attester):
    """SGX DCAP ECDSA quotes through AESM, for the enclave that makes the REPORT.

    In our model the RATS-TLS code runs outside the enclave, so the REPORT must come from the running
    enclave: ``report_fn(targetinfo, report_data) -> REPORT`` (432 bytes, made by EREPORT for the QE's
    TARGETINFO), e.g. the enclave runtime's ``pal_get_local_report`` through the init-runelet's agent. Without
    one the attester is not usable. ``quoting`` defaults to :class:`~inclavare.sgx.aesm.AesmQuotingService` on
    ``socket_path`` (default ``$INCLAVARE_AESM_SOCKET`` or /var/run/aesmd/aesm.socket); ``collateral_fn(quote)``
    may supply endorsements (e.g. from a PCCS)."""

    name = "sgx_ecdsa"
    priority = 52
    evidence_kind = "sgx_ecdsa"

    def __init__(self, report_fn: ReportFn | None = None, *, socket_path: str | None = None,
                 quoting: Any = None, collateral_fn: CollateralFn | None = None) -> None:
        self.report_fn = report_fn
        self.socket_path = socket_path
        self._quoting = quoting
        self.collateral_fn = collateral_fn

    def _socket(self) -> str:
        from inclavare.sgx.aesm import default_socket_path

        return self.socket_path or default_socket_path()

    def unavailable_reason(self) -> str | None:
        if self.report_fn is None:
            return "no enclave to make the REPORT (give report_fn, the enclave runtime's local report)"
        if self._quoting is None and not os.path.exists(self._socket()):
            return f"no AESM socket at {self._socket()} (is aesmd running?)"
        return None

    def _qs(self) -> Any:
        if self._quoting is None:
            from inclavare.sgx.aesm import AesmQuotingService

            self._quoting = AesmQuotingService(self._socket())
        return self._quoting

    def collect(self, report_data: bytes) -> Evidence:
        rd = _report_data(self.name, report_data)
        if self.report_fn is None:
            raise AttesterError(f"{self.name}: no enclave to make the REPORT (give report_fn)")
        from inclavare.formats.sgx import Report, SgxFormatError

        qs = self._qs()
        try:
            ti = qs.qe_target_info()
            report = bytes(self.report_fn(ti, rd))
            got = Report.parse(report).body.reportdata
        except SgxFormatError as e:
            raise AttesterError(f"{self.name}: the enclave REPORT: {e}") from None
        except InclavareError as e:
            raise AttesterError(f"{self.name}: {e}") from None
        if got != rd:
            raise _mismatch(self.name, "the enclave REPORT", got, rd)
        try:
            quote = bytes(qs.get_quote(report))
        except InclavareError as e:
            raise AttesterError(f"{self.name}: {e}") from None
        _check_quote(self.name, "AESM", quote, rd, tdx=False)
        endorsements = self.collateral_fn(quote) if self.collateral_fn is not None else None
        return Evidence(self.evidence_kind, quote, endorsements, {"source": "aesm", "report": report})


# --------------------------------------------------------------------------------------------------
# configfs-tsm


TSM_REPORT_DIR = "/sys/kernel/config/tsm/report"
TSM_REPORT_DIR_ENV = "INCLAVARE_TSM_REPORT_DIR"
TSM_INBLOB_MAX = 64
MAX_BLOB = 16 << 20  # far above any quote, report or certificate table


@dataclass(frozen=True)
class TsmReport:
    """One configfs-tsm report: the blobs read back and the entry they came from."""

    provider: str
    outblob: bytes
    auxblob: bytes | None
    generation: int
    path: str


class ConfigfsTsm:
    """The configfs-tsm report interface under ``root`` (default ``$INCLAVARE_TSM_REPORT_DIR`` or
    /sys/kernel/config/tsm/report). The file operations :meth:`mkdir`, :meth:`rmdir`, :meth:`read` and
    :meth:`write` are plain system calls; a test double overrides them to behave like the kernel."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or os.environ.get(TSM_REPORT_DIR_ENV) or TSM_REPORT_DIR
        self._probed: tuple[str | None, str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r})"

    # ---- file operations

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def read(self, path: str, limit: int = MAX_BLOB) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise OSError(errno.EFBIG, f"more than {limit} bytes")
                chunks.append(chunk)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)  # configfs commits a binary attribute when the file is released

    # ---- the protocol

    def present(self) -> bool:
        return os.path.isdir(self.root)

    def _entry(self) -> str:
        return os.path.join(self.root, f"inclavare-{os.getpid()}-{secrets.token_hex(6)}")

    def provider(self) -> str | None:
        """The report provider's name (``tdx_guest``, ``sev_guest``), probed once with a scratch entry; None
        when configfs-tsm is absent or unusable (:meth:`probe_error` says why)."""
        if self._probed is None:
            if not self.present():
                self._probed = (None, f"{self.root} does not exist (configfs not mounted, or no TSM provider)")
            else:
                path = self._entry()
                try:
                    self.mkdir(path)
                except OSError as e:
                    self._probed = (None, f"cannot create an entry in {self.root}: {e.strerror or e}")
                else:
                    try:
                        name = self.read(os.path.join(path, "provider"), 4096).decode("ascii", "replace").strip()
                        self._probed = (name or None, f"{path}/provider is empty")
                    except OSError as e:
                        self._probed = (None, f"{path}/provider: {e.strerror or e}")
                    finally:
                        try:
                            self.rmdir(path)
                        except OSError:
                            pass
        return self._probed[0]

    def probe_error(self) -> str:
        self.provider()
        assert self._probed is not None
        return self._probed[1]

    def report(self, inblob: bytes, *, provider: str, who: str, privlevel: int | None = None,
               auxblob: bool = False) -> TsmReport:
        """Make one report with ``inblob`` (written as given; at most 64 bytes) in a fresh private entry.

        ``provider`` is what the entry's provider must say; ``privlevel`` is written first when given, or
        raised to ``privlevel_floor`` when that is above 0; ``auxblob`` asks for the auxiliary blob too."""
        if len(inblob) > TSM_INBLOB_MAX:
            raise AttesterError(f"{who}: configfs-tsm inblob is {len(inblob)} bytes, at most {TSM_INBLOB_MAX}")
        path = self._entry()
        try:
            self.mkdir(path)
        except FileNotFoundError:
            raise AttesterError(f"{who}: configfs-tsm {self.root}: does not exist (is configfs mounted and the "
                                "guest driver loaded?)") from None
        except OSError as e:
            raise AttesterError(f"{who}: configfs-tsm: cannot create {path}: {e.strerror or e}") from None

        def attr(name: str) -> str:
            return os.path.join(path, name)

        def fail(name: str, e: OSError) -> AttesterError:
            return AttesterError(f"{who}: configfs-tsm {attr(name)}: {e.strerror or e}")

        def read_text(name: str) -> str:
            try:
                return self.read(attr(name), 4096).decode("ascii", "replace").strip()
            except OSError as e:
                raise fail(name, e) from None

        def read_int(name: str) -> int:
            text = read_text(name)
            try:
                return int(text, 10)
            except ValueError:
                raise AttesterError(f"{who}: configfs-tsm {attr(name)}: {text[:40]!r} is not a number") from None

        def write(name: str, data: bytes) -> None:
            try:
                self.write(attr(name), data)
            except OSError as e:
                raise fail(name, e) from None

        try:
            got = read_text("provider")
            if got != provider:
                raise AttesterError(f"{who}: configfs-tsm {attr('provider')}: the provider is {got!r}, not "
                                    f"{provider!r} (this guest is another TEE)")
            start = read_int("generation")
            writes = 0
            if privlevel is None and os.path.exists(attr("privlevel_floor")):
                floor = read_int("privlevel_floor")
                if floor > 0:
                    privlevel = floor
            if privlevel is not None:
                write("privlevel", f"{privlevel}\n".encode())
                writes += 1
            write("inblob", bytes(inblob))
            writes += 1
            try:
                out = self.read(attr("outblob"))
            except OSError as e:
                raise fail("outblob", e) from None
            aux: bytes | None = None
            if auxblob and os.path.exists(attr("auxblob")):
                try:
                    aux = self.read(attr("auxblob"))
                except OSError as e:
                    raise fail("auxblob", e) from None
            end = read_int("generation")
            if end != start + writes:
                raise AttesterError(f"{who}: configfs-tsm {path}: generation went from {start} to {end}, expected "
                                    f"{start + writes} after our {writes} write(s): another writer changed the "
                                    "entry, so the report may not be ours")
            if not out:
                raise AttesterError(f"{who}: configfs-tsm {attr('outblob')}: empty")
            return TsmReport(got, out, aux, end, path)
        finally:
            try:
                self.rmdir(path)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------------
# ioctls


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


_IOC_READ, _IOC_WRITE = 2, 1
TDX_REPORT_REQ_SIZE = 64 + 1024
TDX_REPORT_SIZE = 1024
TDX_REPORTDATA_OFFSET = 128  # REPORTMACSTRUCT.REPORTDATA inside the TDREPORT
TDX_CMD_GET_REPORT0 = _ioc(_IOC_READ | _IOC_WRITE, "T", 1, TDX_REPORT_REQ_SIZE)
TDX_CMD_GET_QUOTE = _ioc(_IOC_READ, "T", 4, 16)
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

TDX_QUOTE_HDR = struct.Struct("<QQII")
TDX_QUOTE_BUFFER = 64 * 1024
GET_QUOTE_STATUS = {0xFFFFFFFFFFFFFFFF: "still in flight", 0x8000000000000000: "error",
                    0x8000000000000001: "quote service unavailable"}
QGS_HEADER = struct.Struct("<HHIII")
QGS_GET_QUOTE_REQ, QGS_GET_QUOTE_RESP = 0, 1
QGS_VSOCK_PORT = 4050
QGS_HOST_CID = 2
QGS_TIMEOUT = 30.0
MAX_QGS_MESSAGE = 1 << 20


def default_ioctl(fd: int, request: int, arg: bytearray) -> int:
    """The real ioctl: ``arg`` is passed by address and updated in place."""
    import fcntl

    return int(fcntl.ioctl(fd, request, arg, True))


def _open_device(who: str, path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise AttesterError(f"{who}: {path}: {e.strerror or e}") from None


# --------------------------------------------------------------------------------------------------
# tdx_ecdsa


TDX_GUEST_DEVICE = "/dev/tdx_guest"
TDX_GUEST_DEVICE_ENV = "INCLAVARE_TDX_GUEST_DEVICE"
TDX_METHODS = ("auto", "configfs", "vsock", "ioctl")


def qgs_quote_request(tdreport: bytes) -> bytes:
    """A framed GET_QUOTE_REQ QGS message (4-byte big-endian length first) for ``tdreport``."""
    body = struct.pack("<II", len(tdreport), 0) + bytes(tdreport)
    msg = QGS_HEADER.pack(1, 0, QGS_GET_QUOTE_REQ, QGS_HEADER.size + len(body), 0) + body
    return struct.pack(">I", len(msg)) + msg


def qgs_quote_response(who: str, framed: bytes) -> bytes:
    """The quote of a framed GET_QUOTE_RESP QGS message; anything malformed or an error code raises."""
    if len(framed) < 4:
        raise AttesterError(f"{who}: QGS reply of {len(framed)} bytes has no length header")
    (size,) = struct.unpack_from(">I", framed, 0)
    msg = framed[4:]
    if size != len(msg):
        raise AttesterError(f"{who}: QGS reply says {size} bytes, {len(msg)} came")
    if len(msg) < QGS_HEADER.size + 8:
        raise AttesterError(f"{who}: QGS reply of {len(msg)} bytes is too short for a GET_QUOTE_RESP")
    major, _minor, kind, msg_size, error = QGS_HEADER.unpack_from(msg, 0)
    if major != 1:
        raise AttesterError(f"{who}: QGS reply has major version {major}, expected 1")
    if kind != QGS_GET_QUOTE_RESP:
        raise AttesterError(f"{who}: QGS reply is message type {kind}, expected {QGS_GET_QUOTE_RESP} (GET_QUOTE_RESP)")
    if msg_size != len(msg):
        raise AttesterError(f"{who}: QGS reply header says {msg_size} bytes, the message is {len(msg)}")
    if error:
        raise AttesterError(f"{who}: the quote generation service failed with error {error:#x}")
    id_size, quote_size = struct.unpack_from("<II", msg, QGS_HEADER.size)
    start = QGS_HEADER.size + 8 + id_size
    if start + quote_size != len(msg) or quote_size == 0:
        raise AttesterError(f"{who}: QGS reply sizes (id {id_size}, quote {quote_size}) do not fit its "
                            f"{len(msg)} bytes")
    return bytes(msg[start:])


def _vsock_connect() -> socket.socket:
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        s.settimeout(QGS_TIMEOUT)
        s.connect((QGS_HOST_CID, QGS_VSOCK_PORT))
    except BaseException:
        s.close()
        raise
    return s


class TdxEcdsaAttester(Attester):
    """TDX DCAP quotes. ``method``: ``auto`` (configfs-tsm when its provider is tdx_guest, else the device
    with QGS over vsock, then the TDX_CMD_GET_QUOTE ioctl), or exactly one of ``configfs``, ``vsock``,
    ``ioctl``. ``collateral_fn(quote)`` may supply endorsements."""

    name = "tdx_ecdsa"
    priority = 42
    evidence_kind = "tdx_ecdsa"

    def __init__(self, *, method: str = "auto", tsm: ConfigfsTsm | None = None, device: str | None = None,
                 ioctl: IoctlFn | None = None, qgs_connect: Callable[[], socket.socket] | None = None,
                 collateral_fn: CollateralFn | None = None) -> None:
        if method not in TDX_METHODS:
            raise AttesterError(f"tdx_ecdsa: method {method!r} is not one of {', '.join(TDX_METHODS)}")
        self.method = method
        self.tsm = tsm or ConfigfsTsm()
        self.device = device or os.environ.get(TDX_GUEST_DEVICE_ENV) or TDX_GUEST_DEVICE
        self.ioctl = ioctl or default_ioctl
        self.qgs_connect = qgs_connect or _vsock_connect
        self.collateral_fn = collateral_fn

    def _use_configfs(self) -> bool:
        return self.method == "configfs" or (self.method == "auto" and self.tsm.provider() == "tdx_guest")

    def unavailable_reason(self) -> str | None:
        if self.method in ("auto", "configfs") and self.tsm.provider() == "tdx_guest":
            return None
        if self.method != "configfs" and os.path.exists(self.device):
            return None
        parts = [] if self.method in ("vsock", "ioctl") else [f"configfs-tsm: {self._tsm_state()}"]
        if self.method != "configfs":
            parts.append(f"{self.device} does not exist")
        return "not a TDX guest: " + "; ".join(parts)

    def _tsm_state(self) -> str:
        name = self.tsm.provider()
        return f"the provider is {name!r}" if name else self.tsm.probe_error()

    def collect(self, report_data: bytes) -> Evidence:
        rd = _report_data(self.name, report_data)
        if self._use_configfs():
            r = self.tsm.report(rd, provider="tdx_guest", who=self.name)
            _check_quote(self.name, f"configfs-tsm {r.path}", r.outblob, rd, tdx=True)
            quote, extra = r.outblob, {"source": "configfs-tsm", "generation": r.generation}
        else:
            tdreport = self.tdreport(rd)
            quote, source = self._quote(tdreport)
            _check_quote(self.name, source, quote, rd, tdx=True)
            extra = {"source": source, "tdreport": tdreport}
        endorsements = self.collateral_fn(quote) if self.collateral_fn is not None else None
        return Evidence(self.evidence_kind, quote, endorsements, extra)

    def tdreport(self, report_data: bytes) -> bytes:
        """TDX_CMD_GET_REPORT0: the 1024-byte TDREPORT carrying ``report_data``."""
        rd = _report_data(self.name, report_data)
        req = bytearray(rd + bytes(TDX_REPORT_SIZE))
        fd = _open_device(self.name, self.device)
        try:
            self.ioctl(fd, TDX_CMD_GET_REPORT0, req)
        except OSError as e:
            raise AttesterError(f"{self.name}: {self.device}: TDX_CMD_GET_REPORT0 failed: {e.strerror or e}") from None
        finally:
            os.close(fd)
        tdreport = bytes(req[REPORT_DATA_SIZE:])
        got = tdreport[TDX_REPORTDATA_OFFSET:TDX_REPORTDATA_OFFSET + REPORT_DATA_SIZE]
        if got != rd:
            raise _mismatch(self.name, f"{self.device} (TDREPORT)", got, rd)
        return tdreport

    def _quote(self, tdreport: bytes) -> tuple[bytes, str]:
        request = qgs_quote_request(tdreport)
        if self.method == "ioctl":
            return self._quote_ioctl(request), f"{self.device} TDX_CMD_GET_QUOTE"
        try:
            sock = self.qgs_connect()
        except OSError as e:
            if self.method == "vsock":
                raise AttesterError(f"{self.name}: cannot reach the quote generation service over vsock "
                                    f"(port {QGS_VSOCK_PORT}): {e.strerror or e}") from None
            try:
                return self._quote_ioctl(request), f"{self.device} TDX_CMD_GET_QUOTE"
            except AttesterError as e2:
                raise AttesterError(f"{e2} (and QGS over vsock: {e.strerror or e})") from None
        with sock:
            try:
                sock.sendall(request)
                header = recv_exact(sock, 4)
                if len(header) != 4:
                    raise AttesterError(f"{self.name}: the quote generation service closed the connection")
                (size,) = struct.unpack(">I", header)
                if size > MAX_QGS_MESSAGE:
                    raise AttesterError(f"{self.name}: QGS reply of {size} bytes is over the "
                                        f"{MAX_QGS_MESSAGE}-byte limit")
                body = recv_exact(sock, size)
            except OSError as e:
                raise AttesterError(f"{self.name}: QGS over vsock: {e.strerror or e}") from None
        return qgs_quote_response(self.name, header + body), "QGS over vsock"

    def _quote_ioctl(self, request: bytes) -> bytes:
        buf = ctypes.create_string_buffer(TDX_QUOTE_BUFFER)
        hdr = TDX_QUOTE_HDR.pack(1, 0, len(request), 0)
        ctypes.memmove(buf, hdr + request, len(hdr) + len(request))
        arg = bytearray(struct.pack("<QQ", ctypes.addressof(buf), TDX_QUOTE_BUFFER))
        fd = _open_device(self.name, self.device)
        try:
            self.ioctl(fd, TDX_CMD_GET_QUOTE, arg)
        except OSError as e:
            hint = " (this kernel has no TDX_CMD_GET_QUOTE; use configfs-tsm)" if e.errno == errno.ENOTTY else ""
            raise AttesterError(f"{self.name}: {self.device}: TDX_CMD_GET_QUOTE failed: {e.strerror or e}"
                                f"{hint}") from None
        finally:
            os.close(fd)
        raw = buf.raw
        _version, status, _in_len, out_len = TDX_QUOTE_HDR.unpack_from(raw, 0)
        if status != 0:
            what = GET_QUOTE_STATUS.get(status, "unknown status")
            raise AttesterError(f"{self.name}: TDX_CMD_GET_QUOTE: status {status:#x} ({what})")
        if out_len > TDX_QUOTE_BUFFER - TDX_QUOTE_HDR.size:
            raise AttesterError(f"{self.name}: TDX_CMD_GET_QUOTE: out_len {out_len} exceeds the buffer")
        return qgs_quote_response(self.name, raw[TDX_QUOTE_HDR.size:TDX_QUOTE_HDR.size + out_len])


# --------------------------------------------------------------------------------------------------
# sev_snp


SEV_GUEST_DEVICE = "/dev/sev-guest"
SEV_GUEST_DEVICE_ENV = "INCLAVARE_SEV_GUEST_DEVICE"
SNP_METHODS = ("auto", "configfs", "ioctl")
CERT_TABLE_GUIDS: dict[str, str] = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark",
}
CERT_TABLE_ENTRY = struct.Struct("<16sII")
MAX_CERT_TABLE_ENTRIES = 64


def parse_cert_table(blob: bytes, *, where: str = "certificate table") -> dict[str, bytes]:
    """The certificates of a GHCB certificate table by name (``vcek``, ``vlek``, ``ask``, ``ark``, or the GUID
    text for others). Entries must lie after the table inside ``blob``; a missing terminator, a duplicate GUID
    or an empty entry is refused. An empty blob is an empty table."""
    blob = bytes(blob)
    if not blob:
        return {}
    entries: list[tuple[str, str, int, int]] = []
    pos = 0
    while True:
        if pos + CERT_TABLE_ENTRY.size > len(blob):
            raise AttesterError(f"{where}: no terminating all-zero entry in its {len(blob)} bytes")
        guid, offset, length = CERT_TABLE_ENTRY.unpack_from(blob, pos)
        pos += CERT_TABLE_ENTRY.size
        if guid == bytes(16):
            if offset or length:
                raise AttesterError(f"{where}: the terminating entry at byte {pos - CERT_TABLE_ENTRY.size} is "
                                    "not all zero")
            break
        if len(entries) >= MAX_CERT_TABLE_ENTRIES:
            raise AttesterError(f"{where}: more than {MAX_CERT_TABLE_ENTRIES} entries")
        text = str(uuid.UUID(bytes=guid))
        entries.append((CERT_TABLE_GUIDS.get(text, text), text, offset, length))
    certs: dict[str, bytes] = {}
    for name, text, offset, length in entries:
        if name in certs:
            raise AttesterError(f"{where}: {name} ({text}) appears twice")
        if length == 0:
            raise AttesterError(f"{where}: {name} ({text}) has length 0")
        if offset < pos or offset + length > len(blob):
            raise AttesterError(f"{where}: {name} at offset {offset}, length {length} lies outside the "
                                f"{len(blob)}-byte blob after the {pos}-byte table")
        certs[name] = blob[offset:offset + length]
    return certs


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


class SevSnpAttester(Attester):
    """SEV-SNP attestation reports with the host's certificate table. ``method``: ``auto`` (configfs-tsm when
    its provider is sev_guest, else /dev/sev-guest), ``configfs`` or ``ioctl``. ``vmpl``: the VMPL the report
    is asked for (configfs: written to ``privlevel``; default the provider's floor; ioctl: default 0 --
    rats-tls asks for 1). ``extended``: ask for the certificate table (SNP_GET_EXT_REPORT / auxblob)."""

    name = "sev_snp"
    priority = 42
    evidence_kind = "sev_snp"

    def __init__(self, *, method: str = "auto", tsm: ConfigfsTsm | None = None, device: str | None = None,
                 ioctl: IoctlFn | None = None, vmpl: int | None = None, extended: bool = True) -> None:
        if method not in SNP_METHODS:
            raise AttesterError(f"sev_snp: method {method!r} is not one of {', '.join(SNP_METHODS)}")
        if vmpl is not None and (isinstance(vmpl, bool) or not 0 <= vmpl <= 3):
            raise AttesterError(f"sev_snp: vmpl {vmpl!r} is not 0..3")
        self.method = method
        self.tsm = tsm or ConfigfsTsm()
        self.device = device or os.environ.get(SEV_GUEST_DEVICE_ENV) or SEV_GUEST_DEVICE
        self.ioctl = ioctl or default_ioctl
        self.vmpl = vmpl
        self.extended = extended

    def _use_configfs(self) -> bool:
        return self.method == "configfs" or (self.method == "auto" and self.tsm.provider() == "sev_guest")

    def unavailable_reason(self) -> str | None:
        if self.method in ("auto", "configfs") and self.tsm.provider() == "sev_guest":
            return None
        if self.method != "configfs" and os.path.exists(self.device):
            return None
        parts = []
        if self.method != "ioctl":
            name = self.tsm.provider()
            parts.append(f"configfs-tsm: {f'the provider is {name!r}' if name else self.tsm.probe_error()}")
        if self.method != "configfs":
            parts.append(f"{self.device} does not exist")
        return "not an SEV-SNP guest: " + "; ".join(parts)

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
        certs = parse_cert_table(table, where=f"{self.name}: {source} certificate table") if table else {}
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


# --------------------------------------------------------------------------------------------------
# Registry and selection


ATTESTERS: dict[str, type[Attester]] = {
    cls.name: cls for cls in (NullAttester, SimAttester, SgxEcdsaAttester, TdxEcdsaAttester, SevSnpAttester)}


def attester_names() -> list[str]:
    """Every attester name, highest priority first (ties in registration order)."""
    return [cls.name for cls in sorted(ATTESTERS.values(), key=lambda c: -c.priority)]


def select_attester(name: str | None = None, *, candidates: Iterable[Attester] | None = None) -> Attester:
    """The attester to use, as rats-tls selects it: ``name`` exactly (it must be usable here, else
    :class:`AttesterError` says why), or with no name the usable one of highest priority. ``candidates``
    replaces the default instances (one per :data:`ATTESTERS` entry, configured from the environment)."""
    pool = list(candidates) if candidates is not None else [cls() for cls in ATTESTERS.values()]
    if name is not None:
        for a in pool:
            if a.name == name:
                reason = a.unavailable_reason()
                if reason is not None:
                    raise AttesterError(f"attester {name!r}: not usable here: {reason}")
                return a
        known = sorted({a.name for a in pool})
        raise AttesterError(f"attester {name!r}: unknown; known: {', '.join(known)}")
    for a in sorted(pool, key=lambda a: -a.priority):
        if a.unavailable_reason() is None:
            return a
    raise AttesterError("no attester is usable here (not even nullattester among the candidates)")


def make_attested_certificate(attester: Attester, *, key: Any = None, custom_claims: Mapping[str, bytes] | None = None,
                              legacy: bool = False, endorsements: bool = True,
                              now: datetime.datetime | None = None) -> tuple[bytes, bytes, Evidence | None]:
    """A self-signed RA-TLS certificate with ``attester``'s evidence: ``(cert_pem, key_pem, evidence)``
    (evidence None for the null attester). With ``endorsements`` (DICE format only) the evidence's collateral
    goes into the endorsements extension; as that is only known once the evidence is collected, the
    certificate is then signed a second time with the same key and evidence."""
    from inclavare.ratls.cert import make_certificate

    if attester.evidence_kind == "nullattester":
        cert, key_pem = make_certificate("nullattester", None, key, custom_claims, legacy, now=now)
        return cert, key_pem, None
    got: list[tuple[bytes, Evidence]] = []

    def evidence_fn(report_data: bytes) -> bytes:
        ev = attester.collect(report_data)
        got.append((bytes(report_data), ev))
        return ev.data

    cert, key_pem = make_certificate(attester.evidence_kind, evidence_fn, key, custom_claims, legacy, now=now)
    first_rd, evidence = got[-1]
    if legacy or not endorsements or evidence.endorsements is None:
        return cert, key_pem, evidence

    def same_evidence(report_data: bytes) -> bytes:
        if bytes(report_data) != first_rd:
            raise AttesterError(f"{attester.name}: the report data changed between the two signings")
        return evidence.data

    cert, key_pem = make_certificate(attester.evidence_kind, same_evidence, key_pem, custom_claims, legacy,
                                     evidence.endorsements, now=now)
    return cert, key_pem, evidence
