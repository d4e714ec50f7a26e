"""Replay a TDX guest's CCEL event log into RTMR0..3 and compare it with the RTMRs a quote reports.

A TD's firmware, boot loader and kernel extend runtime measurement registers and log each extension in
the CCEL event log (``inclavare.formats.ccel``). The quote signs the final RTMR values, so a log is only
trustworthy once replaying it gives exactly those values: each RTMR starts as 48 zero bytes and every
logged event with MR index 1..4 extends RTMR(index - 1) as ``rtmr = SHA-384(rtmr || event's SHA-384
digest)``. EV_NO_ACTION events are informational and never extended; MR index 0 is MRTD, which is fixed
when the TD is built, so an event claiming to extend it is rejected.

Even when the replay matches, an event's *data* is only covered by the quote where its digest is the
hash of that data (true for separators, EFI actions and most variable events, not for images or firmware
volumes). :func:`summarize` marks every other description ``[unbound]`` so a policy never mistakes
free-form log text for measured content.

Every problem raises an :class:`~inclavare.attestation.api.AttestationError` subclass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from inclavare.attestation.api import EvidenceFormatError
from inclavare.formats.ccel import (
    CC_TYPE_TDX,
    EV_NO_ACTION,
    Algorithm,
    CcelFormatError,
    CcelTable,
    Event,
    EventLog,
    describe_event,
)

__all__ = [
    "RTMR_COUNT",
    "RTMR_SIZE",
    "check_against_quote",
    "data_bound",
    "parse_event_log",
    "parse_table",
    "replay",
    "summarize",
]

RTMR_COUNT = 4
RTMR_SIZE = 48  # SHA-384


def parse_table(data: bytes, *, require_tdx: bool = True) -> CcelTable:
    """Parse an ACPI CCEL table; with ``require_tdx`` (the default) its CC type must be 2 (Intel TDX)."""
    try:
        table = CcelTable.parse(data)
    except CcelFormatError as e:
        raise EvidenceFormatError(str(e)) from None
    if require_tdx and table.cc_type != CC_TYPE_TDX:
        raise EvidenceFormatError(f"CCEL table.cc_type at offset 36: is {table.cc_type_name}, expected TDX "
                                  f"({CC_TYPE_TDX})")
    return table


def parse_event_log(data: bytes, table: CcelTable | None = None) -> EventLog:
    """Parse a CCEL log area. Given the CCEL table, the area must fit in the table's log area (LAML)."""
    if table is not None and isinstance(data, (bytes, bytearray)) and len(data) > table.log_area_minimum_length:
        raise EvidenceFormatError(f"CCEL event log: is {len(data)} bytes, the CCEL table's log area holds "
                                  f"{table.log_area_minimum_length}")
    try:
        return EventLog.parse(data)
    except CcelFormatError as e:
        raise EvidenceFormatError(str(e)) from None


def _events(events: EventLog | Iterable[Event]) -> Iterable[Event]:
    return events.events if isinstance(events, EventLog) else events


def _rtmr_of(event: Event) -> int | None:
    """The RTMR an event extends (0..3), or None for EV_NO_ACTION; raises for an index that is no RTMR."""
    if event.event_type == EV_NO_ACTION:
        return None
    if 1 <= event.mr_index <= RTMR_COUNT:
        return event.mr_index - 1
    what = "MRTD, which cannot be extended at runtime" if event.mr_index == 0 else "not an RTMR (1..4)"
    raise EvidenceFormatError(f"CCEL event {event.number} at offset {event.offset}: MR index "
                              f"{event.mr_index} is {what}")


def replay(events: EventLog | Iterable[Event]) -> list[bytes]:
    """Replay the log's extensions: the four 48-byte values RTMR0..3 must hold if the log is complete."""
    rtmrs = [bytes(RTMR_SIZE)] * RTMR_COUNT
    for event in _events(events):
        if not isinstance(event, Event):
            raise EvidenceFormatError(f"CCEL replay: expected Event records, got {type(event).__name__}")
        index = _rtmr_of(event)
        if index is None:
            continue
        digest = event.digest(Algorithm.SHA384)
        if digest is None or len(digest) != RTMR_SIZE:
            raise EvidenceFormatError(f"CCEL event {event.number} at offset {event.offset}: has no SHA-384 "
                                      "digest to extend an RTMR with")
        rtmrs[index] = hashlib.sha384(rtmrs[index] + digest).digest()
    return rtmrs


def check_against_quote(events: EventLog | Iterable[Event], rtmrs_from_quote: Sequence[bytes]) -> list[str]:
    """Replay the log and compare with the quote's RTMR0..3: one message per mismatch, empty if all match."""
    if isinstance(rtmrs_from_quote, (bytes, bytearray, str)) or len(rtmrs_from_quote) != RTMR_COUNT:
        raise EvidenceFormatError(f"CCEL check: expected {RTMR_COUNT} RTMR values from the quote")
    for i, value in enumerate(rtmrs_from_quote):
        if not isinstance(value, (bytes, bytearray)) or len(value) != RTMR_SIZE:
            raise EvidenceFormatError(f"CCEL check: RTMR{i} from the quote must be {RTMR_SIZE} bytes")
    event_list = list(_events(events))
    replayed = replay(event_list)
    counts = [0] * RTMR_COUNT
    for event in event_list:
        index = _rtmr_of(event)
        if index is not None:
            counts[index] += 1
    return [f"RTMR{i}: the CCEL event log ({counts[i]} extension(s)) replays to {replayed[i].hex()}, "
            f"the quote has {bytes(rtmrs_from_quote[i]).hex()}"
            for i in range(RTMR_COUNT) if replayed[i] != bytes(rtmrs_from_quote[i])]


def data_bound(event: Event) -> bool:
    """True when the event's SHA-384 digest is the hash of its data (with or without a trailing NUL), so
    the quote covers what the data says; False when the data is only a label for something hashed elsewhere."""
    digest = event.digest(Algorithm.SHA384)
    if digest is None:
        return False
    data = event.data
    candidates = [data] + ([data[:-1]] if data.endswith(b"\x00") else [])
    return any(hashlib.sha384(c).digest() == digest for c in candidates)


def summarize(events: EventLog | Iterable[Event]) -> dict[str, list[str]]:
    """Per RTMR (keys ``rtmr0``..``rtmr3``), the extending events in order as ``"TYPE: description"``;
    a description the digest does not cover ends in `` [unbound]``. EV_NO_ACTION events are left out."""
    out: dict[str, list[str]] = {f"rtmr{i}": [] for i in range(RTMR_COUNT)}
    for event in _events(events):
        index = _rtmr_of(event)
        if index is None:
            continue
        text = describe_event(event)
        line = f"{event.type_name}: {text}" if text else event.type_name
        out[f"rtmr{index}"].append(line if data_bound(event) or not text else f"{line} [unbound]")
    return out
