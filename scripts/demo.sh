#!/usr/bin/env bash
# demo.sh - build a busybox bundle and run it with rune, as runc would; then an enclave container on the
# simulated SGX platform, attested, and its quote verified.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/rune-demo.XXXXXX)
trap 'rune delete --force "demo-$$" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$top/.venv/bin/python" -I -c "import sys; sys.path.insert(0, '$top/src'); from inclavare.testing.bundle import main; sys.exit(main())" \
  "$work/bundle" sh -c 'echo "hello from a rune container: pid $$, hostname $(hostname), $(id)"; grep -E ":(memory|pids):" /proc/self/cgroup' >/dev/null
echo "\$ rune run --bundle $work/bundle demo-$$"
rune run --bundle "$work/bundle" "demo-$$"

# An enclave container on the simulated SGX platform: a WebAssembly payload built into a signed enclave image,
# measured and checked by the sim enclave runtime, then attested with a DCAP quote that shelter verifies.
echo
echo "--- an enclave container (type sim: no hardware TEE, nothing is protected) ---"
export INCLAVARE_SIM_STATE_DIR="$work/sim-platform"
py="$top/.venv/bin/python"
"$py" -I - "$work" "$top/src" <<'PY'
import json, subprocess, sys
work, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, src)
import wasmtime
from inclavare.testing.bundle import make_bundle
# a WASI module that prints a line and then spins until it is signalled
wat = r'''(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from inside a (simulated) SGX enclave\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 45))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (loop $l (br $l))))'''
open(f"{work}/app.wasm", "wb").write(wasmtime.wat2wasm(wat))
b = make_bundle(f"{work}/enclave-bundle", ("app",))
cfg = json.load(open(f"{b}/config.json"))
cfg["process"]["env"] += ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim"]
json.dump(cfg, open(f"{b}/config.json", "w"))
PY
openssl genrsa -3 -out "$work/signing-key.pem" 3072 2>/dev/null
mkdir -p "$work/enclave-bundle/rootfs/enclave"
echo "\$ sgx-tools sign --key signing-key.pem --payload app.wasm --kind wasm --isvprodid 1 --isvsvn 1 --out enclave.img"
sgx-tools sign --key "$work/signing-key.pem" --payload "$work/app.wasm" --kind wasm --isvprodid 1 --isvsvn 1 \
  --out "$work/enclave-bundle/rootfs/enclave/enclave.img"
echo "\$ rune run -d --bundle enclave-bundle enclave-$$"
rune run -d --bundle "$work/enclave-bundle" "enclave-$$" 2>/dev/null
sleep 0.5  # let the payload's line come out before the next command's
trap 'rune delete --force "demo-$$" >/dev/null 2>&1 || true; rune delete --force "enclave-$$" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
echo "\$ rune attest --isRA --quoteFile quote.bin enclave-$$"
rune attest --isRA --quoteFile "$work/quote.bin" "enclave-$$" | "$py" -c \
  'import json,sys; d=json.load(sys.stdin); print("  MRENCLAVE", d["mrenclave"]); print("  MRSIGNER ", d["mrsigner"]); print("  quote", len(d["quote"])//2, "bytes")'
echo "\$ shelter verify quote.bin --trust-sim"
shelter verify "$work/quote.bin" --trust-sim | grep -E "^(tee|verified|claim mrenclave|result)"
rune kill "enclave-$$" KILL
