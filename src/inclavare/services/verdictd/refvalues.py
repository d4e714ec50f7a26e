"""Reference values (RVPS-like): the measurements a policy accepts, by name, with provenance and expiry.

A reference value is a name the policies know (``mrenclave``, ``mrsigner``, ``isvprodid``, ``isvsvn``,
``mrtd``, ``rtmr0``..``rtmr3``, ``measurement``, ``host_data``, ...) and a list of accepted values, in the
form our verifiers' flat claims use: measurements as lower-case hex strings (input may be upper-case or
``0x``-prefixed; it is normalised), numbers (SVNs, product ids) as non-negative ints. A minimum such as
"``isvsvn`` at least 3" is stored as the int 3; reading it as a minimum is the policy's business.

Each entry records where its values came from (``provenance``: a free string, e.g. a build pipeline's URL)
and may expire: an expired entry is invisible to :meth:`ReferenceValues.get` and
:meth:`ReferenceValues.as_policy_data`, so a policy checking against it denies (fail closed) until someone
renews it. :meth:`ReferenceValues.all` still shows it, for the owner.

Rows live in the :class:`~inclavare.services.verdictd.store.Store` database (table ``reference_values``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.store import Store

MAX_VALUES = 1024  # values under one name
MAX_HEX_DIGITS = 1024  # one hex value (512 bytes)
MAX_INT = (1 << 64) - 1
MAX_PROVENANCE = 4096

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HEX_RE = re.compile(r"[0-9a-f]+")

Value = str | int


class RefValueError(VerdictdError):
    """A reference value given by a caller is not acceptable (name, values, provenance, expiry); stored rows
    that fail their checks raise plain VerdictdError, since that is the state's fault, not the caller's."""


def check_refname(name: object) -> str:
    """``name`` if it is a reference value name: 1..128 of ``[A-Za-z0-9_.-]``, not starting with ``.``/``-``
    (it becomes a key of Rego's ``data.reference``)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise RefValueError(f"reference value name {name!r}: must be 1..128 characters of [A-Za-z0-9_.-], "
                            f"starting with a letter, digit or '_'")
    return name


def normalise_value(value: object, where: str) -> Value:
    """One reference value in stored form: a hex string lower-cased (``0x`` dropped; even length, at most
    1024 digits) or an int in 0..2**64-1. Anything else (bools, floats, odd-length hex...) is refused."""
    if isinstance(value, bool):
        raise RefValueError(f"{where}: {value!r} is a boolean, not a hex string or an int")
    if isinstance(value, int):
        if not 0 <= value <= MAX_INT:
            raise RefValueError(f"{where}: {value} is outside 0..2**64-1")
        return value
    if isinstance(value, str):
        text = value.lower()
        if text.startswith("0x"):
            text = text[2:]
        if not text or len(text) > MAX_HEX_DIGITS or not _HEX_RE.fullmatch(text):
            raise RefValueError(f"{where}: {value[:80]!r} is not a hex string of 1..{MAX_HEX_DIGITS} digits")
        if len(text) % 2:
            raise RefValueError(f"{where}: {value[:80]!r} has an odd number of hex digits")
        return text
    raise RefValueError(f"{where}: a {type(value).__name__} is not a hex string or an int")


def normalise_values(name: str, values: object) -> list[Value]:
    """``values`` (a non-empty list, all hex strings or all ints) normalised, duplicates dropped, order kept."""
    where = f"reference value {name!r}"
    if not isinstance(values, list | tuple):
        raise RefValueError(f"{where}: values must be a list, not {type(values).__name__}")
    if not values:
        raise RefValueError(f"{where}: no values (remove the entry instead)")
    if len(values) > MAX_VALUES:
        raise RefValueError(f"{where}: {len(values)} values, more than {MAX_VALUES}")
    out: list[Value] = []
    for i, v in enumerate(values):
        n = normalise_value(v, f"{where} value {i}")
        if n not in out:
            out.append(n)
    if len({type(v) for v in out}) > 1:
        raise RefValueError(f"{where}: values mix hex strings and ints")
    return out


def _epoch(when: datetime, what: str) -> float:
    if not isinstance(when, datetime):
        raise RefValueError(f"{what}: must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise RefValueError(f"{what}: {when.isoformat()} has no time zone (use an aware datetime, e.g. UTC)")
    return when.timestamp()


class ReferenceValues:
    """The reference values kept in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def set(self, name: str, values: list[Any], provenance: str, expires: datetime | None = None) -> None:
        """Set (replace) the values accepted under ``name``, saying where they came from; with ``expires``
        (an aware datetime in the future) they stop counting from then on."""
        name = check_refname(name)
        normalised = normalise_values(name, values)
        if not isinstance(provenance, str) or len(provenance) > MAX_PROVENANCE:
            raise RefValueError(f"reference value {name!r}: provenance must be a string of at most "
                                f"{MAX_PROVENANCE} characters")
        if any(not c.isprintable() for c in provenance):
            raise RefValueError(f"reference value {name!r}: provenance has a control character")
        expiry = None
        if expires is not None:
            expiry = _epoch(expires, f"reference value {name!r} expiry")
            if expiry <= datetime.now(UTC).timestamp():
                raise RefValueError(f"reference value {name!r}: expiry {expires.isoformat()} is already past")
        self.store.put_reference_row(name, json.dumps(normalised, separators=(",", ":")), provenance, expiry)

    def get(self, name: str, now: datetime | None = None) -> list[Value]:
        """The values accepted under ``name`` now (or at ``now``); [] if there are none or they expired."""
        name = check_refname(name)
        at = self._now(now)
        for row_name, value_json, _, expires in self.store.reference_rows(name):
            if expires is None or at < expires:
                return self._values(row_name, value_json)
        return []

    def remove(self, name: str) -> bool:
        """Drop ``name``'s entry; True if there was one."""
        return self.store.delete_reference_row(check_refname(name))

    def all(self, now: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Every entry, expired ones included: ``{name: {values, provenance, expires (aware datetime or
        None), expired (bool, at now)}}``."""
        at = self._now(now)
        out: dict[str, dict[str, Any]] = {}
        for name, value_json, provenance, expires in self.store.reference_rows():
            out[name] = {
                "values": self._values(name, value_json),
                "provenance": provenance,
                "expires": None if expires is None else datetime.fromtimestamp(expires, UTC),
                "expired": expires is not None and at >= expires,
            }
        return out

    def as_policy_data(self, now: datetime | None = None) -> dict[str, list[Value]]:
        """What Rego sees as ``data.reference``: ``{name: values}`` for every entry not expired at ``now``
        (default: the current time)."""
        at = self._now(now)
        return {name: self._values(name, value_json)
                for name, value_json, _, expires in self.store.reference_rows()
                if expires is None or at < expires}

    @staticmethod
    def _now(now: datetime | None) -> float:
        return datetime.now(UTC).timestamp() if now is None else _epoch(now, "reference values: now")

    def _values(self, name: str, value_json: str) -> list[Value]:
        """A stored row's values, checked again: a row edited behind verdictd's back must not reach a policy
        in a shape the policy does not expect."""
        where = f"state db {self.store.db_path}: reference value {name!r}"
        try:
            values = json.loads(value_json)
        except ValueError:
            raise VerdictdError(f"{where}: stored values are not valid JSON") from None
        try:
            normalised = normalise_values(name, values)
        except VerdictdError as e:
            raise VerdictdError(f"state db {self.store.db_path}: stored {e}") from None
        if normalised != values:
            raise VerdictdError(f"{where}: stored values are not in normal form")
        return normalised
