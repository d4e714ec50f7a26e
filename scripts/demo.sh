#!/usr/bin/env bash
# demo.sh - build a busybox bundle and run it with rune, as runc would.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/rune-demo.XXXXXX)
trap 'rune delete --force "demo-$$" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$top/.venv/bin/python" -I -c "import sys; sys.path.insert(0, '$top/src'); from inclavare.testing.bundle import main; sys.exit(main())" \
  "$work/bundle" sh -c 'echo "hello from a rune container: pid $$, hostname $(hostname), $(id)"; grep -E ":(memory|pids):" /proc/self/cgroup' >/dev/null
echo "\$ rune run --bundle $work/bundle demo-$$"
rune run --bundle "$work/bundle" "demo-$$"
