"""One checker for the shape of parsed JSON: is this value an object, an array, a string, a boolean, an
integer in range, is this member present.

Each module keeps its own error type: it builds a :class:`Shape` around a factory ``error(field, problem)``
(``ConfigError`` fits as it is), and every failure names the JSON path of the value (``field``) and what was
expected (``problem``). bool is never accepted as an integer: JSON has no such overlap.
"""

# No `from __future__ import annotations`: formats/oci.py loads this on the lifecycle path (it imports
# __future__, ~0.15 ms per call); annotations that name TYPE_CHECKING-only types are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

__all__ = ["Shape", "is_int", "is_uint"]


def is_int(value: object) -> bool:
    """An integer, not a bool (Python's bool subclasses int; a JSON true is never a number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_uint(value: object, maximum: int) -> bool:
    """An integer from 0 to ``maximum``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


class Shape:
    """Typed accessors raising ``error(field, problem)``; each returns the value it checked."""

    __slots__ = ("error",)

    def __init__(self, error: "Callable[[str, str], Exception]") -> None:
        self.error = error

    def fail(self, field: str, problem: str) -> "NoReturn":
        raise self.error(field, problem)

    def required(self, obj: "dict[str, Any]", key: str, field: str, problem: str = "required") -> "Any":
        """obj[key]; a JSON null counts as absent (as Go's encoding/json does)."""
        value = obj.get(key)
        if value is None:
            raise self.error(field, problem)
        return value

    def object(self, value: "Any", field: str, problem: str = "must be an object") -> "dict[str, Any]":
        if not isinstance(value, dict):
            raise self.error(field, problem)
        return value

    def array(self, value: "Any", field: str, problem: str = "must be an array") -> "list[Any]":
        if not isinstance(value, list):
            raise self.error(field, problem)
        return value

    def string(self, value: "Any", field: str, *, got: bool = False, allow_nul: bool = True) -> str:
        """A string; ``got`` adds the Python type found to the message, ``allow_nul=False`` refuses NUL bytes
        (they cannot reach a C string)."""
        if not isinstance(value, str):
            raise self.error(field, f"must be a string, got {type(value).__name__}" if got else "must be a string")
        if not allow_nul and "\x00" in value:
            raise self.error(field, "must not contain a NUL byte")
        return value

    def c_string(self, value: "Any", field: str) -> str:
        """A string without NUL bytes (it has to reach a C string); `string(..., allow_nul=False)` without the
        keyword, for hot loops."""
        if not isinstance(value, str):
            raise self.error(field, "must be a string")
        if "\x00" in value:
            raise self.error(field, "must not contain a NUL byte")
        return value

    def boolean(self, value: "Any", field: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(field, "must be a boolean")
        return value

    def integer(self, value: "Any", field: str, lo: int, hi: int, what: str = "") -> int:
        """An integer in [lo, hi]; ``what`` replaces the out-of-range message."""
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(field, "must be an integer")
        if not lo <= value <= hi:
            raise self.error(field, what or f"must be between {lo} and {hi}")
        return value

    def strings(self, value: "Any", field: str, *, allow_nul: bool = True) -> "list[str]":
        """An array of strings; a bad item is named by its index (``field[i]``)."""
        items = self.array(value, field)
        check = self.string if allow_nul else self.c_string
        for i, item in enumerate(items):
            check(item, f"{field}[{i}]")
        return items
