"""Starting a private containerd with the CRI plugin for a test module: skipped, with the reason, where it
cannot run here (containerd refuses to start, or the pause image cannot be built)."""

from __future__ import annotations

from typing import Any

import pytest


def start_with_test_images(c: Any, base: str) -> None:
    """``c.start()`` and ``c.import_test_images(base)`` (a CriContainerd), or skip the calling test."""
    from inclavare.testing.containerd import ContainerdError
    from inclavare.testing.cri.pause import PauseBuildError

    try:
        c.start()
    except ContainerdError as e:
        pytest.skip(f"private containerd with the CRI plugin does not start here: {e}")
    try:
        c.import_test_images(base)
    except PauseBuildError as e:
        pytest.skip(str(e))
