"""Helpers for tests, demos and benchmarks (stdlib only): OCI bundles with a busybox rootfs.

`make_bundle` and `make_rootfs` are re-exported lazily, so `python -m inclavare.testing.bundle`
does not import the module twice.

May import: anything (it is test support, never imported by the library).
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_bundle", "make_rootfs"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from inclavare.testing import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
