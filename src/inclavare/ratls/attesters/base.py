"""The attester interface every TEE implements: :class:`Attester`, its :class:`Evidence`, its error, and
the checks on what a TEE returned that several attesters share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.attestation.collateral import DcapCollateral


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
