"""formats/fastjson.py compared with the stdlib json module."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inclavare.formats import fastjson as fj

SRC = str(Path(__file__).resolve().parents[3] / "src")

VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, -(2**63), 2**64 + 1, 10**40, -(10**40),
    0.0, -0.0, 1.0, -1.5, 0.1, 1e-7, 1e22, 1.7976931348623157e308, 5e-324, 123456.789,
    "", "a", "ascii text", "quote \" backslash \\ slash /", "ctl \x00\x01\x1f\x7f", "\b\f\n\r\t",
    "caf\u00e9", "\u65e5\u672c\u8a9e", "emoji \U0001f600", "\u2028\u2029", "\ufeffbom", "\uffff",
    [], {}, [[]], [{}], {"": ""}, {"a": []}, {"a": {}},
    [1, "two", 3.0, None, True, False, [], {}],
    {"ociVersion": "1.1.0", "id": "c1", "pid": 4242, "status": "running", "bundle": "/b",
     "annotations": {"io.k8s/name": "x\u00e9", "empty": ""}},
    {"nested": {"deeper": {"deepest": [1, [2, [3, [4, {"k": "v"}]]]]}}},
    {"z": 1, "a": 2, "m": 3},  # insertion order is kept, never sorted
    {"process": {"args": ["sh", "-c", "echo \"$HOME\" && exit 3"], "env": ["PATH=/bin", "A=b=c"],
                 "user": {"uid": 0, "gid": 0, "additionalGids": [1, 2]}, "terminal": False}},
    [[[[[[[[[[["deep"]]]]]]]]]]],
]


def _ids(values: list[Any]) -> list[str]:
    return [repr(v)[:40] for v in values]


# ------------------------------------------------------------------------------ dumps / loads


@pytest.mark.parametrize("value", VALUES, ids=_ids(VALUES))
def test_dumps_matches_stdlib_compact(value: Any) -> None:
    assert fj.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("value", VALUES, ids=_ids(VALUES))
def test_round_trip(value: Any) -> None:
    text = fj.dumps(value)
    back = fj.loads(text)
    assert back == value
    assert back == json.loads(text)
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)  # -0.0 keeps its sign


@pytest.mark.parametrize("value", VALUES, ids=_ids(VALUES))
def test_loads_matches_stdlib_on_stdlib_output(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=4), json.dumps(value, ensure_ascii=False)):
        assert fj.loads(text) == json.loads(text)
        assert fj.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", [
    "0", "-0", "-0.0", "1E3", "1e-3", "2.5E+10", "123456789012345678901234567890",
    '"\\u00e9"', '"\\ud83d\\ude00"', '"\\ud800"', '"\\udc00x"', '"\\/"', '"\\b\\f\\n\\r\\t"', '"\u00e9"',
    ' \t\r\n{"a" : [ 1 , 2 ] }\n\n', '{"a": 1, "a": 2}', "[]", "{}", "  [ ]  ", "null", "true", "false",
    '{"k": {"k": {"k": null}}}', '[1, [2], {"3": [4]}]',
])
def test_loads_matches_stdlib(text: str) -> None:
    got, want = fj.loads(text), json.loads(text)
    assert got == want or (got != got and want != want)
    assert type(got) is type(want)


def test_loads_bytes_and_bytearray() -> None:
    assert fj.loads(b'{"a": "\xc3\xa9"}') == {"a": "\u00e9"}
    assert fj.loads(bytearray(b"[1, 2]")) == [1, 2]  # type: ignore[arg-type]


def test_loads_int_and_float_types() -> None:
    assert type(fj.loads("1")) is int
    assert type(fj.loads("1.0")) is float
    assert type(fj.loads("1e2")) is float
    assert fj.loads(str(10**100)) == 10**100


def test_loads_fresh_objects_each_call() -> None:
    a = fj.loads('{"k": [1]}')
    a["k"].append(2)
    assert fj.loads('{"k": [1]}') == {"k": [1]}


# ------------------------------------------------------------------------------ errors


BAD = [
    "", " ", "\n\n", "{", "}", "[1,]", "[1 2]", '{"a" 1}', '{"a": 1,}', "{'a': 1}", '{"a": 1} x', "1 2",
    "nul", "tru", "01", "1.", "-", ".5", "+1", '"abc', '"\\x"', '"\\u12"', '"tab\there"', '"nl\nhere"',
    "[\n  1,\n  2,\n  oops\n]", '{\n  "a": {\n    "b": [1, 2,, 3]\n  }\n}', "\u00a0{}", "\f{}", "[1]\x00",
    '{"a": "\\ud83d\\ude00" "b"}', "[" * 10 + "]" * 9,
]


@pytest.mark.parametrize("text", BAD, ids=[repr(t)[:30] for t in BAD])
def test_errors_are_stdlib_decode_errors(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        fj.loads(text)
    assert (got.value.msg, got.value.pos, got.value.lineno, got.value.colno) == (
        want.value.msg, want.value.pos, want.value.lineno, want.value.colno)
    assert isinstance(got.value, ValueError)


def test_error_position_on_later_line() -> None:
    with pytest.raises(json.JSONDecodeError) as ei:
        fj.loads('{\n  "id": "c1",\n  "pid": 12,\n  "status": running\n}')
    assert (ei.value.lineno, ei.value.colno) == (4, 13)
    assert str(ei.value) == "Expecting value: line 4 column 13 (char 41)"


def test_invalid_utf8_bytes_raise_value_error_like_stdlib() -> None:
    with pytest.raises(ValueError) as want:
        json.loads(b'"\xff"')
    with pytest.raises(ValueError) as got:
        fj.loads(b'"\xff"')
    assert type(got.value) is type(want.value)


_FRESH = r"""
import sys
sys.path[:0] = [{src!r}]
from inclavare.formats import fastjson as fj
assert fj.loads('{{"a": [1, 2.5, "x"]}}') == {{"a": [1, 2.5, "x"]}}
assert fj.dumps({{"a": None}}) == '{{"a":null}}'
print("json-imported-on-success", "json" in sys.modules, "json.decoder" in sys.modules)
for text in {bad!r}:
    try:
        fj.loads(text)
    except Exception as e:
        print(type(e).__module__, type(e).__name__, e.lineno, e.colno, e.msg)
    else:
        print("no error for", repr(text))
"""

FRESH_BAD = ["{", '"unterminated', '"bad \\q escape"', "[1,\n 2,\n x]", "", '{"a": 1} trailing', '"ctl \x01"']


def test_errors_after_a_fresh_import_without_json() -> None:
    """`rune` runs with -I -S and never imports json.decoder: errors must still be JSONDecodeError."""
    code = _FRESH.format(src=SRC, bad=FRESH_BAD)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "json-imported-on-success False False"
    expected = []
    for text in FRESH_BAD:
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            expected.append(f"json.decoder JSONDecodeError {e.lineno} {e.colno} {e.msg}")
    assert lines[1:] == expected


# ------------------------------------------------------------------------------ NaN / Infinity


@pytest.mark.parametrize(("text", "path", "spelled"), [
    ("NaN", "", "NaN"), ("Infinity", "", "Infinity"), ("[NaN, 1]", "[0]", "NaN"),
    ('{"x": -Infinity}', "x", "-Infinity"), ('{"a": {"b": [1, 2e400]}}', "a.b[1]", "2e400")])
def test_numbers_json_cannot_carry_are_refused_saying_where(text: str, path: str, spelled: str) -> None:
    """RFC 8259 has no NaN or Infinity (the stdlib accepts them); a number beyond a double is one as well."""
    with pytest.raises(fj.NonStandardNumber) as info:
        fj.loads(text)
    assert (info.value.path, info.value.constant) == (path, spelled)
    assert str(info.value) == f"{path or 'the document'}: {spelled} is not a JSON number"
    assert fj.loads('{"k": "NaN", "f": 1.5e3}') == {"k": "NaN", "f": 1500.0}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan], {"k": math.inf}])
def test_dumps_rejects_nan_like_stdlib_strict_mode(value: Any) -> None:
    # the runtime only writes standard JSON (Go's encoding/json rejects these too)
    with pytest.raises(ValueError) as want:
        json.dumps(value, allow_nan=False)
    with pytest.raises(ValueError) as got:
        fj.dumps(value)
    assert str(got.value) == str(want.value)


# ------------------------------------------------------------------------------ dumps details


def test_dumps_keeps_non_ascii_and_tuples() -> None:
    assert fj.dumps({"k": ("\u00e9", 1)}) == '{"k":["\u00e9",1]}'


def test_dumps_non_string_keys_like_stdlib() -> None:
    value = {0: "a", 2.5: "b", True: "c", None: "d"}
    assert fj.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_dumps_unserializable_is_type_error() -> None:
    for bad in ({1, 2}, object(), b"bytes", {(1, 2): 3}):
        with pytest.raises(TypeError):
            json.dumps(bad)
        with pytest.raises(TypeError):
            fj.dumps(bad)


# ------------------------------------------------------------------------------ dumps_pretty


@pytest.mark.parametrize("value", VALUES, ids=_ids(VALUES))
def test_dumps_pretty_matches_stdlib_indent(value: Any) -> None:
    assert fj.dumps_pretty(value) == json.dumps(value, indent=2, ensure_ascii=False)
    assert fj.dumps_pretty(value, "\t") == json.dumps(value, indent="\t", ensure_ascii=False)
    assert fj.loads(fj.dumps_pretty(value)) == value


def test_dumps_pretty_go_marshal_indent_shape() -> None:
    state = {"ociVersion": "1.1.0", "id": "c1", "pid": 0, "annotations": {}, "list": [1, []]}
    assert fj.dumps_pretty(state) == (
        '{\n  "ociVersion": "1.1.0",\n  "id": "c1",\n  "pid": 0,\n  "annotations": {},\n'
        '  "list": [\n    1,\n    []\n  ]\n}')


def test_dumps_pretty_non_string_keys_like_dumps() -> None:
    # dumps() writes True/None keys as "true"/"null" (as json does); dumps_pretty must agree
    value = {True: 1, None: 2, 3: 4}
    assert fj.dumps_pretty(value) == json.dumps(value, indent=2, ensure_ascii=False)


def test_dumps_pretty_rejects_nan() -> None:
    with pytest.raises(ValueError):
        fj.dumps_pretty({"x": [math.nan]})


# ------------------------------------------------------------------------------ quote


@pytest.mark.parametrize("s", ["", "plain", 'q"b\\', "caf\u00e9", "\U0001f600", "\x00\n\t", "</script>"])
def test_quote_strings_like_json_dumps(s: str) -> None:
    assert fj.quote(s) == json.dumps(s)
    assert fj.quote(s).isascii()


@pytest.mark.parametrize("value", [None, 5, 1.5, True, [1, "a"], {"k": "v"}])
def test_quote_other_values(value: Any) -> None:
    assert json.loads(fj.quote(value)) == value


def test_quote_non_string_values_are_ascii() -> None:
    # the docstring promises ASCII-only output "like json.dumps" for error messages
    assert fj.quote(["caf\u00e9"]) == json.dumps(["caf\u00e9"], separators=(",", ":"))
