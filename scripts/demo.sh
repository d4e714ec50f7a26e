#!/usr/bin/env bash
# demo.sh - build a busybox bundle and run it with rune, as runc would; then an enclave container on the
# simulated SGX platform, attested, and its quote verified; then an encrypted image whose key the owner's
# verdictd releases only to the enclave it measured, and shelter checking that enclave through inclavared.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/rune-demo.XXXXXX)
pids=()  # daemons this demo started
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for c in demo enclave secret changed; do rune delete --force "$c-$$" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
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
echo "\$ rune attest --isRA --quoteFile quote.bin enclave-$$"
rune attest --isRA --quoteFile "$work/quote.bin" "enclave-$$" | "$py" -c \
  'import json,sys; d=json.load(sys.stdin); print("  MRENCLAVE", d["mrenclave"]); print("  MRSIGNER ", d["mrsigner"]); print("  quote", len(d["quote"])//2, "bytes")'
echo "\$ shelter verify quote.bin --trust-sim"
shelter verify "$work/quote.bin" --trust-sim | grep -E "^(tee|verified|claim mrenclave|result)"
rune kill "enclave-$$" KILL

# An encrypted image: the owner encrypts a layer with skopeo and keeps the key in verdictd, which releases it
# only to an enclave whose measurement the owner registered. The host unpacks and starts the image but only
# ever holds ciphertext; the enclave runtime attests, gets the key and decrypts into its private tree.
echo
echo "--- an encrypted image: the key goes only to the measured enclave (type sim again: nothing is protected) ---"
cd "$work"
mkdir -p bin  # the programs setup.sh installs; a checkout that has not run it uses its own
for p in inclavare-image:image inclavared:inclavared inclavare-enclave-info:enclave_info verdict:verdict \
         verdictd:verdictd; do
  command -v "${p%%:*}" >/dev/null && continue
  printf '#!%s -I\nimport sys\nsys.path.insert(0, "%s")\nfrom inclavare.cli.%s import main\nsys.exit(main())\n' \
    "$py" "$top/src" "${p#*:}" >"bin/${p%%:*}"
  chmod 0755 "bin/${p%%:*}"
done
PATH=$work/bin:$PATH
fail() { echo "demo: $*" >&2; exit 1; }
start_daemon() { # NAME CMD...: CMD in the background; its ready line (JSON) lands in NAME.ready, within 30 s
  local name=$1; shift
  "$@" >"$name.ready" 2>"$name.log" &
  local pid=$!
  pids+=("$pid")
  local deadline=$((SECONDS + 30))
  until [ -s "$name.ready" ]; do
    kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] || fail "$name did not start: $(tail -1 "$name.log")"
    sleep 0.05
  done
}
secret="the owner's secret: 42"

echo "# the owner, off-cloud: an enclave, an image carrying it and a secret, the secret's layer encrypted"
echo "\$ sgx-tools sign --key signing-key.pem --payload /bin/busybox --kind native --isvprodid 1 --isvsvn 1 --out app-enclave.img"
sgx-tools sign --key signing-key.pem --payload /bin/busybox --kind native --isvprodid 1 --isvsvn 1 \
  --out app-enclave.img >/dev/null
"$py" -I - "$top/src" "$secret" <<'PY'
import gzip, hashlib, io, json, os, platform, sys, tarfile
sys.path.insert(0, sys.argv[1])
from inclavare.testing.bundle import make_rootfs
# an OCI image layout of three gzip layers: a busybox rootfs, /enclave/enclave.img, /app/secret.txt
def layer(*paths):  # (name in the layer, file or directory on disk) -> tar, owned by root
    def root(info):
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, path in paths:
            t.add(path, arcname=name, filter=root)
    return buf.getvalue()
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    open(f"oci-plain/blobs/sha256/{digest}", "wb").write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}
rootfs = make_rootfs("base-rootfs")
os.makedirs("app-files/app")
open("app-files/app/secret.txt", "w").write(sys.argv[2] + "\n")
os.makedirs("app-files/enclave")
os.link("app-enclave.img", "app-files/enclave/enclave.img")
os.makedirs("oci-plain/blobs/sha256")
layers = [layer(*((n, f"{rootfs}/{n}") for n in sorted(os.listdir(rootfs)))),
          layer(("enclave", "app-files/enclave")),
          layer(("app", "app-files/app"))]
app = 'read -r s < "${ENCLAVE_DECRYPTED_DIR:?not decrypted}/app/secret.txt"; echo "app: my secret is \\"$s\\""'
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
config = {"architecture": arch, "os": "linux", "config": {
    "Cmd": ["sh", "-c", app], "WorkingDir": "/",
    "Env": ["PATH=/bin:/sbin", "ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim", "ENCLAVE_KBS_KEY=owner/key/image"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config).encode())},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(gzip.compress(x, 1, mtime=0))}
                       for x in layers]}
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": manifest["mediaType"],
                                              **blob(json.dumps(manifest).encode())}]}, open("oci-plain/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open("oci-plain/oci-layout", "w"))
print("  oci-plain: layers busybox rootfs, /enclave/enclave.img, /app/secret.txt; the app prints its secret")
PY
openssl genrsa -out owner-key.pem 2048 2>/dev/null
openssl rsa -in owner-key.pem -pubout -out owner-pub.pem 2>/dev/null
echo "\$ skopeo copy --encryption-key jwe:owner-pub.pem --encrypt-layer -1 oci:oci-plain oci:oci-enc"
skopeo copy -q --encryption-key jwe:owner-pub.pem --encrypt-layer -1 oci:oci-plain oci:oci-enc
echo "\$ inclavare-image seal oci-enc oci-sealed     # ciphertext in a plain layer: engines unpack it, keyless"
inclavare-image seal oci-enc oci-sealed | sed 's/^/  /'

echo "# the owner's verdictd (a private one here): the key as a KBS resource, the enclave's MRENCLAVE as reference"
openssl rand -hex 32 >kek
openssl rand -hex 16 >admin.token
chmod 0600 kek admin.token
# the sim platform's DCAP collateral (TCB info, QE identity, CRLs); on SGX it comes from Intel's PCS or a PCCS
"$py" -I -c 'import json, sys; sys.path.insert(0, sys.argv[1]); from inclavare.sim.platform import SimPlatform
json.dump(SimPlatform.open().collateral_bundle(), open("collateral.json", "w"))' "$top/src"
echo "\$ verdictd --state-dir vd-state --kek-file kek --kbs-listen 127.0.0.1:0 --insecure-http --admin-listen 127.0.0.1:0 --admin-token-file admin.token --trust-sim --collateral collateral.json &"
start_daemon verdictd verdictd --state-dir vd-state --kek-file kek --kbs-listen 127.0.0.1:0 --insecure-http \
  --admin-listen 127.0.0.1:0 --admin-token-file admin.token --trust-sim --collateral collateral.json
kbs=$(jq -r .kbs verdictd.ready)
admin=$(jq -r .admin verdictd.ready)
echo "\$ verdict --kbs $admin --token-file admin.token --set-resource owner/key/image owner-key.pem"
verdict --kbs "$admin" --token-file admin.token --set-resource owner/key/image owner-key.pem | sed 's/^/  /'
mr=$(sgx-tools measure app-enclave.img)
echo "\$ verdict --kbs $admin --token-file admin.token --set-reference-value mrenclave \$(sgx-tools measure app-enclave.img)"
verdict --kbs "$admin" --token-file admin.token --set-reference-value mrenclave "$mr" \
  --provenance "sgx-tools measure app-enclave.img" | sed 's/^/  /'

echo "# the node: unpack the sealed image as an engine does, run it with the KBS's address added"
"$py" -I - "$top/src" "$kbs" <<'PY'
import json, os, sys, tarfile
sys.path.insert(0, sys.argv[1])
from inclavare.testing.bundle import bundle_config
def blob(desc):
    return "oci-sealed/blobs/sha256/" + desc["digest"].split(":", 1)[1]
index = json.load(open("oci-sealed/index.json"))
manifest = json.load(open(blob(index["manifests"][0])))
image = json.load(open(blob(manifest["config"]))).get("config", {})
os.makedirs("secret-bundle/rootfs")
for layer in manifest["layers"]:  # in order, keyless: the sealed layer is a plain tar
    with tarfile.open(blob(layer)) as t:
        t.extractall("secret-bundle/rootfs")  # the demo's own image (Python 3.11.2 has no extraction filter)
spec = bundle_config(image["Cmd"])
spec["process"]["env"] = image["Env"] + ["ENCLAVE_KBS_URL=" + sys.argv[2]]
json.dump(spec, open("secret-bundle/config.json", "w"), indent="\t")
PY
echo "\$ ls secret-bundle/rootfs/.inclavare/sealed/002"
ls secret-bundle/rootfs/.inclavare/sealed/002 | sed 's/^/  /'
grep -rqF "$secret" secret-bundle && fail "the plaintext is on the host"
echo "  (grep: the secret is nowhere in the bundle)"
echo "\$ rune run --bundle secret-bundle secret-$$"
rune run --bundle secret-bundle "secret-$$"

echo "# the host swaps in an enclave of its own (busybox and one byte more; signed with the owner's key, even)"
cp -a secret-bundle changed-bundle
{ cat /bin/busybox; printf x; } >busybox-changed
sgx-tools sign --key signing-key.pem --payload busybox-changed --kind native --isvprodid 1 --isvsvn 1 \
  --out changed-bundle/rootfs/enclave/enclave.img >/dev/null
echo "\$ rune run --bundle changed-bundle changed-$$"
rune run --bundle changed-bundle "changed-$$" >changed.out 2>changed.err && fail "the changed enclave ran"
[ ! -s changed.out ] || fail "the changed enclave printed: $(cat changed.out)"
grep -v "^rune: warning" changed.err | sed 's/^/  refused: /'

# inclavared relays shelter's question to a confidential container over mutual RATS-TLS; shelter checks the
# answer against the MRENCLAVE the owner registered in verdictd.
echo "# the owner checks which enclave serves it: shelter -> inclavared -> the sample confidential container"
echo "\$ inclavare-enclave-info -l unix://app.sock -m --trust-sim --image app-enclave.img &"
start_daemon enclave-info inclavare-enclave-info -l "unix://$work/app.sock" -m --trust-sim --image app-enclave.img
echo "\$ inclavared -l 127.0.0.1:0 -x unix://app.sock --attester sim --trust-sim &"
start_daemon inclavared inclavared -l 127.0.0.1:0 -x "unix://$work/app.sock" --attester sim --trust-sim
ra=$(jq -r .listen inclavared.ready)
echo "\$ shelter remoteattestation --addr $ra --trust-sim --verdictd $admin --verdictd-token-file admin.token"
shelter remoteattestation --addr "$ra" --trust-sim --verdictd "$admin" --verdictd-token-file admin.token \
  | sed 's/^/  /'
echo "\$ shelter remoteattestation --addr $ra --trust-sim --mrenclave \$(sgx-tools measure changed-bundle/rootfs/enclave/enclave.img)"
shelter remoteattestation --addr "$ra" --trust-sim \
  --mrenclave "$(sgx-tools measure changed-bundle/rootfs/enclave/enclave.img)" >ra.out 2>ra.err \
  && fail "shelter accepted another enclave's measurement"
sed 's/^/  /' ra.err
