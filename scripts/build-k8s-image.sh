#!/usr/bin/env bash
# build-k8s-image.sh - build the image deploy/kubernetes runs (installer, device plugin, verdictd).
#
# usage: scripts/build-k8s-image.sh [IMAGE]      (default localhost/inclavare-containers:latest)
# With docker or podman, whichever is installed; needs access to a registry with debian:12-slim. Push IMAGE to
# your registry and name it in a kustomize overlay (docs/kubernetes.md, "The image").
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-localhost/inclavare-containers:latest}
engine=$(command -v docker || command -v podman || true)
[ -n "$engine" ] || { echo "build-k8s-image: neither docker nor podman is installed" >&2; exit 1; }
exec "$engine" build -f "$top/deploy/kubernetes/image/Dockerfile" -t "$image" "$top"
