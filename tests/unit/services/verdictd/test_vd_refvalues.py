"""Reference values: normalisation (lower-case even-length hex, ints), provenance, expiry honoured by get and
as_policy_data, persistence in the store, and refusal of malformed names, values and stored rows."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.refvalues import MAX_VALUES, ReferenceValues, normalise_value
from inclavare.services.verdictd.store import DB_NAME, Store

KEK = bytes(range(1, 33))
MRENCLAVE = "9F" * 32
MRSIGNER = "0x" + "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e".upper()


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def rv(state: str):
    s = Store(state, KEK)
    yield ReferenceValues(s)
    s.close()


def test_set_get_normalises(rv: ReferenceValues) -> None:
    rv.set("mrenclave", [MRENCLAVE, MRENCLAVE.lower()], "build pipeline #42")
    rv.set("mrsigner", [MRSIGNER], "signing key")
    rv.set("isvsvn", [3], "minimum, compared by the policy")
    rv.set("isvprodid", [0, 1, 1], "products")
    assert rv.get("mrenclave") == ["9f" * 32]  # upper/lower duplicates collapse after normalising
    assert rv.get("mrsigner") == ["83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"]
    assert rv.get("isvsvn") == [3]
    assert rv.get("isvprodid") == [0, 1]
    assert rv.get("mrtd") == []


def test_replace_and_remove(rv: ReferenceValues) -> None:
    rv.set("rtmr0", ["aa" * 48], "v1")
    rv.set("rtmr0", ["bb" * 48, "cc" * 48], "v2")
    assert rv.get("rtmr0") == ["bb" * 48, "cc" * 48]
    assert rv.all()["rtmr0"]["provenance"] == "v2"
    assert rv.remove("rtmr0") is True
    assert rv.remove("rtmr0") is False
    assert rv.get("rtmr0") == []
    assert rv.all() == {}


def test_all_and_policy_data(rv: ReferenceValues) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    rv.set("measurement", ["ab" * 48], "snp launch digest", expires=soon)
    rv.set("host_data", ["00" * 32], "kata")
    rv.set("mrtd", ["11" * 48], "td shim")
    everything = rv.all()
    assert set(everything) == {"measurement", "host_data", "mrtd"}
    m = everything["measurement"]
    assert m["values"] == ["ab" * 48] and m["provenance"] == "snp launch digest" and m["expired"] is False
    assert abs((m["expires"] - soon).total_seconds()) < 1e-3 and m["expires"].tzinfo is not None
    assert everything["host_data"]["expires"] is None
    assert rv.as_policy_data() == {"measurement": ["ab" * 48], "host_data": ["00" * 32], "mrtd": ["11" * 48]}


def test_expiry_is_honoured(rv: ReferenceValues) -> None:
    expires = datetime.now(UTC) + timedelta(days=1)
    rv.set("mrenclave", [MRENCLAVE], "release 1.0", expires=expires)
    rv.set("mrsigner", [MRSIGNER], "never expires")
    before = expires - timedelta(seconds=1)
    after = expires + timedelta(seconds=1)
    assert rv.get("mrenclave", now=before) == ["9f" * 32]
    assert rv.get("mrenclave", now=after) == []
    assert rv.get("mrenclave", now=expires) == []  # valid strictly before the expiry instant
    assert rv.as_policy_data(before) == {"mrenclave": ["9f" * 32], "mrsigner": [MRSIGNER[2:].lower()]}
    assert rv.as_policy_data(after) == {"mrsigner": [MRSIGNER[2:].lower()]}
    shown = rv.all(now=after)["mrenclave"]  # the owner still sees it, marked
    assert shown["expired"] is True and shown["values"] == ["9f" * 32]
    # another time zone means the same instant
    tokyo = timezone(timedelta(hours=9))
    assert rv.get("mrenclave", now=after.astimezone(tokyo)) == []


def test_expiry_must_be_aware_and_future(rv: ReferenceValues) -> None:
    with pytest.raises(VerdictdError, match="has no time zone"):
        rv.set("mrtd", ["11" * 48], "p", expires=datetime(2099, 1, 1))
    with pytest.raises(VerdictdError, match="is already past"):
        rv.set("mrtd", ["11" * 48], "p", expires=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(VerdictdError, match="must be a datetime"):
        rv.set("mrtd", ["11" * 48], "p", expires="2099-01-01")  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="now: .* has no time zone"):
        rv.get("mrtd", now=datetime(2099, 1, 1))
    assert rv.all() == {}


def test_persists_across_reopen(state: str) -> None:
    expires = datetime.now(UTC) + timedelta(days=30)
    with Store(state, KEK) as s:
        ReferenceValues(s).set("mrenclave", [MRENCLAVE], "ci", expires=expires)
    with Store(state, KEK) as s:
        entry = ReferenceValues(s).all()["mrenclave"]
        assert entry["values"] == ["9f" * 32]
        assert abs((entry["expires"] - expires).total_seconds()) < 1e-3


@pytest.mark.parametrize("value, stored", [
    ("AbCd", "abcd"), ("0XAB", "ab"), ("0x00", "00"), (0, 0), ((1 << 64) - 1, (1 << 64) - 1), ("f" * 1024, "f" * 1024),
])
def test_normalise_value(value: object, stored: object) -> None:
    assert normalise_value(value, "v") == stored


@pytest.mark.parametrize("value, message", [
    (True, "is a boolean"),
    (-1, "outside 0..2\\*\\*64-1"),
    (1 << 64, "outside"),
    (1.5, "a float is not a hex string or an int"),
    (None, "a NoneType is not"),
    ("abc", "odd number of hex digits"),
    ("", "not a hex string"),
    ("0x", "not a hex string"),
    ("xyz0", "not a hex string"),
    ("ab cd", "not a hex string"),
    ("f" * 1026, "not a hex string of 1..1024 digits"),
])
def test_bad_values(rv: ReferenceValues, value: object, message: str) -> None:
    with pytest.raises(VerdictdError, match=f"reference value 'mrenclave' value 0: .*{message}"):
        rv.set("mrenclave", [value], "p")
    assert rv.all() == {}


def test_bad_value_lists_names_and_provenance(rv: ReferenceValues) -> None:
    with pytest.raises(VerdictdError, match="values must be a list, not str"):
        rv.set("mrenclave", MRENCLAVE, "p")  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="no values"):
        rv.set("mrenclave", [], "p")
    with pytest.raises(VerdictdError, match=f"more than {MAX_VALUES}"):
        rv.set("isvsvn", list(range(MAX_VALUES + 1)), "p")
    with pytest.raises(VerdictdError, match="mix hex strings and ints"):
        rv.set("isvsvn", [1, "02"], "p")
    with pytest.raises(VerdictdError, match="provenance must be a string"):
        rv.set("isvsvn", [1], None)  # type: ignore[arg-type]
    with pytest.raises(VerdictdError, match="provenance must be a string of at most"):
        rv.set("isvsvn", [1], "x" * 5000)
    with pytest.raises(VerdictdError, match="provenance has a control character"):
        rv.set("isvsvn", [1], "line\nbreak")
    for bad in ("", "-x", ".x", "a b", "x" * 129, "isvsvn>=", "a/b", 7):
        with pytest.raises(VerdictdError, match="reference value name"):
            rv.set(bad, [1], "p")  # type: ignore[arg-type]
    assert rv.all() == {}
    rv.set("tdx.rtmr_3", ["ab"], "dotted and underscored names are fine")
    assert rv.get("tdx.rtmr_3") == ["ab"]


def test_stored_rows_edited_behind_our_back_are_refused(state: str) -> None:
    with Store(state, KEK) as s:
        rv = ReferenceValues(s)
        rv.set("mrenclave", [MRENCLAVE], "p")
        rv.set("isvsvn", [2], "p")
    db = sqlite3.connect(os.path.join(state, DB_NAME), isolation_level=None)
    db.execute("""UPDATE reference_values SET value_json = '["ABCD"]' WHERE name = 'mrenclave'""")
    db.execute("""UPDATE reference_values SET value_json = '[true]' WHERE name = 'isvsvn'""")
    with Store(state, KEK) as s:
        rv = ReferenceValues(s)
        with pytest.raises(VerdictdError, match="reference value 'mrenclave': stored values are not in normal form"):
            rv.get("mrenclave")
        with pytest.raises(VerdictdError, match="stored reference value 'isvsvn' value 0: .* is a boolean"):
            rv.as_policy_data()
    db.execute("""UPDATE reference_values SET value_json = '[' WHERE name = 'isvsvn'""")
    with Store(state, KEK) as s, pytest.raises(VerdictdError, match="'isvsvn': stored values are not valid JSON"):
        ReferenceValues(s).all()
