"""inclavare._fastos.path must agree with posixpath on the paths rune handles."""

from __future__ import annotations

import posixpath

import pytest

from inclavare import _fastos

PATHS = ["", ".", "..", "/", "//", "///", "a", "a/", "/a/b", "/a/b/", "a/./b", "a/../b", "../a", "/../a",
         "//a//b", "/a/b/../../..", "x/y/..", "/sys/fs/cgroup/devices/c1", "/sys/fs/cgroup/devices"]


@pytest.mark.parametrize("p", PATHS)
def test_normpath_dirname_basename(p: str) -> None:
    assert _fastos.path.normpath(p) == posixpath.normpath(p)
    assert _fastos.path.dirname(p) == posixpath.dirname(p)
    assert _fastos.path.basename(p) == posixpath.basename(p)


@pytest.mark.parametrize("p", [p for p in PATHS if p])
@pytest.mark.parametrize("start", ["/", ".", "/a", "/a/b/c", "a", "/sys/fs/cgroup/devices", "../x"])
def test_relpath(p: str, start: str) -> None:
    assert _fastos.path.relpath(p, start) == posixpath.relpath(p, start)


def test_relpath_default_start_and_empty() -> None:
    assert _fastos.path.relpath("/tmp") == posixpath.relpath("/tmp")
    with pytest.raises(ValueError):
        _fastos.path.relpath("")


@pytest.mark.parametrize("parts", [("a", "b"), ("a/", "b"), ("/a", "/b"), ("a", ""), ("", "a"), ("/", "x", "y/")])
def test_join(parts: tuple[str, ...]) -> None:
    assert _fastos.path.join(*parts) == posixpath.join(*parts)
