"""formats/jsonshape.py: the one JSON-shape checker, raising each caller's own error type."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from inclavare.enclave.api import EnclaveConfigError
from inclavare.errors import ConfigError
from inclavare.formats.jsonshape import Shape, is_int, is_uint

S = Shape(ConfigError)


def test_each_check_returns_the_value_it_accepts() -> None:
    doc = {"a": {"b": [1, "x"]}}
    assert S.object(doc["a"], "a") is doc["a"]
    assert S.array(doc["a"]["b"], "a.b") == [1, "x"]
    assert S.string("x", "s") == "x"
    assert S.boolean(False, "f") is False
    assert S.integer(7, "n", 0, 10) == 7
    assert S.required(doc, "a", "a") is doc["a"]
    assert S.strings(["p", "q"], "l") == ["p", "q"]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: S.object([], "linux.resources"), "linux.resources: must be an object"),
    (lambda: S.array({}, "mounts"), "mounts: must be an array"),
    (lambda: S.array({}, "x.args", "must be a list"), "x.args: must be a list"),
    (lambda: S.string(3, "process.cwd"), "process.cwd: must be a string"),
    (lambda: S.string(3, "p.op", got=True), "p.op: must be a string, got int"),
    (lambda: S.string("a\0b", "hostname", allow_nul=False), "hostname: must not contain a NUL byte"),
    (lambda: S.boolean(1, "root.readonly"), "root.readonly: must be a boolean"),
    (lambda: S.integer(True, "process.user.uid", 0, 9), "process.user.uid: must be an integer"),
    (lambda: S.integer("1", "n", 0, 9), "n: must be an integer"),
    (lambda: S.integer(10, "n", 0, 9), "n: must be between 0 and 9"),
    (lambda: S.integer(-1, "n", 0, 9, "must not be negative"), "n: must not be negative"),
    (lambda: S.required({"k": None}, "k", "root"), "root: required"),
    (lambda: S.strings(["a", 5], "process.args"), "process.args[1]: must be a string"),
])
def test_failures_name_the_field_and_what_was_expected(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        call()
    assert str(ei.value) == message


def test_the_callers_error_type_is_raised() -> None:
    with pytest.raises(EnclaveConfigError, match=r"^linux.resources.memory: must be an object$") as ei:
        Shape(EnclaveConfigError).object(5, "linux.resources.memory")
    assert ei.value.key == "linux.resources.memory"


def test_bool_is_never_an_integer() -> None:
    assert is_int(0) and not is_int(True) and not is_int(1.0)
    assert is_uint(5, 5) and not is_uint(6, 5) and not is_uint(-1, 5) and not is_uint(False, 5)


def test_c_string_refuses_nul_bytes() -> None:
    assert S.c_string("ok", "f") == "ok"
    with pytest.raises(ConfigError, match=r"^process.env\[0\]: must not contain a NUL byte$"):
        S.c_string("A=\0", "process.env[0]")
    with pytest.raises(ConfigError, match=r"^f: must be a string$"):
        S.c_string(None, "f")
