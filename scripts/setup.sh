#!/usr/bin/env bash
# setup.sh - make a fresh Debian 12 machine ready for Inclavare Containers, install the programs, run the demo.
#
# usage: scripts/setup.sh [--no-demo]
#   - Debian packages the runtime, tests and demo use (busybox-static, runc/crun for side-by-side checks, ...)
#   - uv (from PyPI, in a private bootstrap venv when the system forbids pip) and the project venv (.venv) from uv.lock
#   - launchers in /usr/local/bin (rune, ...) that start the project's venv interpreter directly (no pyenv shim)
#   - the demo: a busybox bundle run with `rune run`
# Needs root. Idempotent.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
demo=true
[ "${1:-}" = --no-demo ] && demo=false
[ "$(id -u)" = 0 ] || { echo "setup: run as root (it installs Debian packages and /usr/local/bin/rune)" >&2; exit 1; }

# --- Debian packages --------------------------------------------------------------------------------
pkgs=(busybox-static runc crun jq hyperfine procps util-linux iproute2 libseccomp2 python3 python3-venv git
      containerd podman skopeo conmon uidmap fuse-overlayfs slirp4netns containernetworking-plugins docker.io
      gcc libc6-dev openssl)
# kubectl renders deploy/kubernetes offline (`kubectl kustomize`); Debian's is kubernetes-client. A kubectl
# already on PATH (from elsewhere) is kept.
command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- uv and the project environment -------------------------------------------------------------------
UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  if [ ! -x /opt/inclavare-uv/bin/uv ]; then
    python3 -m venv /opt/inclavare-uv
    /opt/inclavare-uv/bin/pip install -q uv
  fi
  UV=/opt/inclavare-uv/bin/uv
fi
# Debian's python3.11 (PGO/LTO build) starts ~20% faster than a source build: prefer it.
PY=$( [ -x /usr/bin/python3.11 ] && echo /usr/bin/python3.11 || command -v python3.11 || command -v python3)
UV_PYTHON_DOWNLOADS=never "$UV" sync --frozen --python "$PY" -q
venv_py=$top/.venv/bin/python3
site=$("$venv_py" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# --- launchers ------------------------------------------------------------------------------------------
# -I -S: no user site, no site.py/.pth processing (costly on every call); our sources and the venv's
# site-packages are put on sys.path explicitly. The runtime is exec'd 3-4 times per container lifecycle.
commit=$(git -C "$top" rev-parse HEAD 2>/dev/null || echo unknown)
printf 'COMMIT = "%s"\n' "$commit" >"$top/src/inclavare/_build.py"
install_launcher() { # NAME MODULE [FUNCTION]
  local tmp; tmp=$(mktemp /usr/local/bin/.$1.XXXXXX)
  cat >"$tmp" <<LAUNCHER
#!$venv_py -IS
import sys
sys.path[:0] = ["$top/src"]
sys.path.append("$site")
from $2 import ${3:-main} as entry
sys.exit(entry())
LAUNCHER
  chmod 0755 "$tmp"
  mv -f "$tmp" "/usr/local/bin/$1"
}
install_launcher rune inclavare.cli.rune entry
install_launcher sgx-tools inclavare.cli.sgx_tools main
install_launcher signature-server inclavare.cli.signature_server main
install_launcher shelter inclavare.cli.shelter main
install_launcher inclavared inclavare.cli.inclavared main
install_launcher inclavare-enclave-info inclavare.cli.enclave_info main
install_launcher rats-tls-server inclavare.cli.rats_tls_server main
install_launcher rats-tls-client inclavare.cli.rats_tls_client main
install_launcher containerd-shim-rune-v2 inclavare.cli.shim entry
install_launcher verdict inclavare.cli.verdict main
install_launcher verdictd inclavare.cli.verdictd main
install_launcher inclavare-image inclavare.cli.image main
install_launcher epm inclavare.cli.epm main
install_launcher inclavare-sgx-device-plugin inclavare.cli.sgx_device_plugin main
install_launcher inclavare-node-install inclavare.cli.node_install main
echo "setup: $(/usr/local/bin/rune --version | head -1) installed at /usr/local/bin/rune"

# --- demo -----------------------------------------------------------------------------------------------
if $demo; then
  exec "$top/scripts/demo.sh"
fi
