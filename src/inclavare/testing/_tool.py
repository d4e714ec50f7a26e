"""The exit convention the test-support programs (``python -m inclavare.testing.X``) share."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_tool(prog: str, errors: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], int]) -> int:
    """Return what ``fn`` returns; one of the expected ``errors`` becomes one line ``prog: message`` on stderr
    and exit status 1 (anything else is a bug and keeps its traceback)."""
    try:
        return fn()
    except errors as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
