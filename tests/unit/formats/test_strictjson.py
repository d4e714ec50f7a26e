"""strictjson: what it refuses (a member twice, NaN / Infinity, numbers out of a double's range) and what it keeps."""

from __future__ import annotations

import pytest

from inclavare.formats import strictjson


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', '{"a": NaN}', '[Infinity]', '[-Infinity]', '[1e999]',
                                  '[-1e999]', '{"a": 1.5e400}', '[' + '9' * 5000 + ']'])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError):
        strictjson.loads(text)


def test_kept() -> None:
    assert strictjson.loads('{"a": [1.5, -2e10, 1e308, 0.0], "b": 12345678901234567890}') == {
        "a": [1.5, -2e10, 1e308, 0.0], "b": 12345678901234567890}
    assert strictjson.loads(b'{"\\u00e9": 5e-324}') == {"\u00e9": 5e-324}
