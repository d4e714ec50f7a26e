#!/usr/bin/env bash
# test.sh - the whole test suite: lint, unit tests, and (as root) integration tests with real containers.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
UV=$(command -v uv || echo /opt/inclavare-uv/bin/uv)
UV_PYTHON_DOWNLOADS=never "$UV" sync --frozen -q
.venv/bin/ruff check src tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
