"""Enclave containers with the built-in runtimes: `builtin:wasm` (WASI modules through wasmtime) and
`builtin:sim` (a signed enclave image, measured and checked before it runs; REPORTs MAC'd with the sim
platform's report key)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]
wasmtime = pytest.importorskip("wasmtime", reason="wasmtime (Python) is not installed")

HELLO_WAT = r"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; prints its argv joined by newlines (the strings are NUL-separated; NULs become newlines), exits with 9
  (func (export "_start")
    (local $n i32) (local $size i32) (local $i i32)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 16) (i32.const 1024)))
    (local.set $size (i32.load (i32.const 4)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
      (if (i32.eqz (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (then (i32.store8 (i32.add (i32.const 1024) (local.get $i)) (i32.const 10))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.store (i32.const 8) (i32.const 1024))
    (i32.store (i32.const 12) (local.get $size))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 0)))
    (call $proc_exit (i32.const 9))))
"""

SPIN_WAT = """(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"""

GROW_WAT = r"""
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; grows by 64 MiB: exit 0 when that worked, 3 when memory.grow said no
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1))
      (then (call $proc_exit (i32.const 3))))
    (call $proc_exit (i32.const 0))))
"""


def wasm_bundle(make_bundle, args, files: dict[str, str], *, runtime: str = "builtin:wasm", pal_args: str = "",
                edit=None):  # type: ignore[no-untyped-def]
    def _edit(cfg: dict) -> None:
        cfg["process"]["env"] += ["ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={runtime}"]
        if pal_args:
            cfg["process"]["env"].append(f"ENCLAVE_RUNTIME_ARGS={pal_args}")
        if edit:
            edit(cfg)

    b = make_bundle(args, edit=_edit)
    for rel, content in files.items():
        p = Path(b) / "rootfs" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return b


def errors(stderr: str) -> list[str]:
    return [x for x in stderr.strip().splitlines() if not x.startswith("rune: warning: ")]


def wait_for(pred, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------- wasm


def test_wasm_payload_argv_stdout_exit_code(rune, cid, make_bundle):
    b = wasm_bundle(make_bundle, ["/app/hello.wat", "one", "two words"], {"app/hello.wat": HELLO_WAT})
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 9, p.stderr
    assert p.stdout == "/app/hello.wat\none\ntwo words\n"


def test_wasm_kill_interrupts_the_module(rune, cid, make_bundle):
    b = wasm_bundle(make_bundle, ["/app/spin.wat"], {"app/spin.wat": SPIN_WAT})
    proc = subprocess.Popen(rune.cmd("run", "--bundle", b, cid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: Path(rune.root, cid).exists() and rune.state(cid)["status"] == "running")
    rune.run("kill", cid, "TERM", check=True)
    assert proc.wait(20) == 143


def test_wasm_memory_limit_comes_from_the_container(rune, cid, make_bundle):
    def limit(cfg: dict) -> None:
        cfg["linux"].setdefault("resources", {})["memory"] = {"limit": 32 << 20}

    limited = wasm_bundle(make_bundle, ["/app/grow.wat"], {"app/grow.wat": GROW_WAT}, edit=limit)
    assert rune.run("run", "--bundle", limited, cid).returncode == 3
    free = wasm_bundle(make_bundle, ["/app/grow.wat"], {"app/grow.wat": GROW_WAT})
    assert rune.run("run", "--bundle", free, cid + "b").returncode == 0


def test_wasm_exec_runs_another_module_in_the_same_runtime(rune, cid, make_bundle):
    b = wasm_bundle(make_bundle, ["/app/spin.wat"], {"app/spin.wat": SPIN_WAT, "app/hello.wat": HELLO_WAT})
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    p = rune.run("exec", cid, "/app/hello.wat", "a b")
    assert p.returncode == 9, p.stderr
    assert p.stdout == "/app/hello.wat\na b\n"
    rune.run("kill", cid, "KILL", check=True)


def test_wasm_bad_module_fails_with_one_line(rune, cid, make_bundle):
    b = wasm_bundle(make_bundle, ["/app/bad.wat"], {"app/bad.wat": "(module (func $x (i32.add)))"})
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode != 0
    assert any("pal_create_process" in x and "/app/bad.wat" in x for x in errors(p.stderr)), p.stderr


# ------------------------------------------------------------------------------------------- sim


@pytest.fixture(scope="session")
def signing_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture
def sim_env(tmp_path: Path) -> dict[str, str]:
    """A private simulated platform for this test (its report key lives in the state dir)."""
    return dict(os.environ, INCLAVARE_SIM_STATE_DIR=str(tmp_path / "sim-platform"))


def signed_image(key: bytes, payload: bytes, kind: str, **settings) -> bytes:  # type: ignore[no-untyped-def]
    from inclavare.enclave import image

    return image.sign(image.build(payload, kind, image.EnclaveSettings(**settings)), key)


def test_sim_runs_a_signed_wasm_enclave_and_reports(rune, cid, make_bundle, signing_key, sim_env, tmp_path):
    from inclavare.enclave import image
    from inclavare.formats.sgx import Report
    from inclavare.sim.report import EnclaveIdentity, ReportKey

    img = signed_image(signing_key, wasmtime.wat2wasm(HELLO_WAT), "wasm", isvprodid=7, isvsvn=3)
    loaded = image.load(img)
    b = wasm_bundle(make_bundle, ["hello", "x"], {"enclave/enclave.img": img}, runtime="builtin:sim")
    p = rune.run("run", "--bundle", b, cid, env=sim_env)
    assert p.returncode == 9, p.stderr
    assert p.stdout == "hello\nx\n"

    b2 = wasm_bundle(make_bundle, ["/app/spin"], {"enclave/enclave.img": img}, runtime="builtin:sim")
    b2_spin = signed_image(signing_key, wasmtime.wat2wasm(SPIN_WAT), "wasm", isvprodid=7, isvsvn=3)
    (Path(b2) / "rootfs/enclave/enclave.img").write_bytes(b2_spin)
    rune.run("run", "-d", "--bundle", b2, cid + "s", env=sim_env, check=True)
    # a target enclave of our own: the REPORT's MAC must verify for it, with the platform's key
    target = EnclaveIdentity(mrenclave=bytes(range(32)), mrsigner=bytes(32), attributes=loaded.attributes,
                             miscselect=0, isvprodid=1, isvsvn=1)
    from inclavare.enclave import agent

    raw = agent.attest(str(Path(rune.root) / (cid + "s")), False, "ecdsa", target.targetinfo())
    body = Report.parse(raw).body
    spun = image.load(b2_spin)
    assert body.mrenclave == spun.mrenclave and body.mrsigner == spun.mrsigner
    assert (body.isvprodid, body.isvsvn) == (7, 3)
    key = ReportKey.load(sim_env["INCLAVARE_SIM_STATE_DIR"], create=False)
    assert key.verify_report(raw, target)
    other = EnclaveIdentity(mrenclave=bytes(32), mrsigner=bytes(32), attributes=loaded.attributes,
                            miscselect=0, isvprodid=1, isvsvn=1)
    assert not key.verify_report(raw, other)
    # and through the CLI: the local report, with its identity fields shown
    rf = tmp_path / "report.bin"
    p = rune.run("attest", "--reportFile", str(rf), cid + "s", env=sim_env)
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["mrenclave"] == spun.mrenclave.hex() and shown["isvprodid"] == 7
    assert len(rf.read_bytes()) == 432
    rune.run("kill", cid + "s", "KILL", check=True)


def test_sim_remote_attestation_gives_a_dcap_quote(rune, cid, make_bundle, signing_key, sim_env, tmp_path):
    """`rune attest --isRA`: the REPORT targets the sim QE, which turns it into a DCAP v3 quote whose
    signatures chain to the sim platform's root (and to nothing of Intel's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from inclavare.enclave import image
    from inclavare.formats.dcap import Quote3, qe_report_data_for
    from inclavare.sim.platform import SimPlatform

    img = signed_image(signing_key, wasmtime.wat2wasm(SPIN_WAT), "wasm", isvprodid=5, isvsvn=2)
    b = wasm_bundle(make_bundle, ["spin"], {"enclave/enclave.img": img}, runtime="builtin:sim")
    rune.run("run", "-d", "--bundle", b, cid, env=sim_env, check=True)
    qf, rf = tmp_path / "quote.bin", tmp_path / "report.bin"
    p = rune.run("attest", "--isRA", "--quote-type", "ecdsa", "--quoteFile", str(qf), "--reportFile", str(rf),
                 cid, env=sim_env)
    assert p.returncode == 0, p.stderr
    quote = Quote3.parse(qf.read_bytes())
    want = image.load(img)
    assert quote.report_body.mrenclave == want.mrenclave and quote.report_body.mrsigner == want.mrsigner
    assert (quote.report_body.isvprodid, quote.report_body.isvsvn) == (5, 2)
    assert quote.report_body.pack() == rf.read_bytes()[:384]

    def verify(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> None:
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))

    sd = quote.signature
    att = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + sd.attestation_key)
    verify(att, sd.isv_signature, quote.signed_bytes())
    assert sd.qe_report.reportdata == qe_report_data_for(sd.attestation_key, sd.qe_auth_data)
    chain = [x509.load_der_x509_certificate(d) for d in quote.pck_chain_der()]
    verify(chain[0].public_key(), sd.qe_report_signature, sd.qe_report.pack())
    assert len(chain) == 3  # PCK leaf, PCK platform CA, root
    for child, parent in zip(chain, chain[1:], strict=False):
        child.verify_directly_issued_by(parent)
    platform = SimPlatform.open(sim_env["INCLAVARE_SIM_STATE_DIR"])
    assert chain[-1].fingerprint(hashes.SHA256()).hex() == platform.root_ca_fingerprint()
    rune.run("kill", cid, "KILL", check=True)


def test_sim_runs_a_native_payload_from_the_image(rune, cid, make_bundle, signing_key, sim_env):
    busybox = Path("/bin/busybox").read_bytes()  # a static ELF: runs from a sealed memfd
    img = signed_image(signing_key, busybox, "native")
    b = wasm_bundle(make_bundle, ["sh", "-c", "echo native-in-sim; exit 4"], {"enclave/enclave.img": img},
                    runtime="builtin:sim")
    p = rune.run("run", "--bundle", b, cid, env=sim_env)
    assert p.returncode == 4, p.stderr
    assert p.stdout == "native-in-sim\n"


@pytest.mark.parametrize("damage", ["payload", "settings", "signature", "unsigned", "truncated", "missing"])
def test_sim_refuses_a_bad_image_and_leaves_nothing(rune, cid, make_bundle, signing_key, sim_env, damage):
    from inclavare.enclave import image

    payload = wasmtime.wat2wasm(HELLO_WAT)
    img = bytearray(signed_image(signing_key, payload, "wasm"))
    if damage == "payload":
        img[160 + 20] ^= 1
    elif damage == "settings":
        img[32 + 2] ^= 1  # ISVPRODID
    elif damage == "signature":
        img[-1808 + 128 + 4 + 384 + 10] ^= 1  # inside SIGSTRUCT.SIGNATURE
    elif damage == "unsigned":
        img = bytearray(image.build(payload, "wasm").to_bytes())
    elif damage == "truncated":
        img = img[:-100]
    files = {} if damage == "missing" else {"enclave/enclave.img": bytes(img)}
    b = wasm_bundle(make_bundle, ["hello"], files, runtime="builtin:sim")
    p = rune.run("run", "--bundle", b, cid, env=sim_env)
    assert p.returncode == 1
    lines = errors(p.stderr)
    assert len(lines) == 1 and lines[0].startswith("rune: enclave runtime: pal_init() failed with "), p.stderr
    assert not Path(rune.root, cid).exists()


def test_sim_mrsigner_policy(rune, cid, make_bundle, signing_key, sim_env):
    from inclavare.enclave import image

    img = signed_image(signing_key, wasmtime.wat2wasm(HELLO_WAT), "wasm")
    mrsigner = image.load(img).mrsigner.hex()
    ok = wasm_bundle(make_bundle, ["hello"], {"enclave/enclave.img": img}, runtime="builtin:sim",
                     pal_args=f"mrsigner={mrsigner}")
    assert rune.run("run", "--bundle", ok, cid, env=sim_env).returncode == 9
    bad = wasm_bundle(make_bundle, ["hello"], {"enclave/enclave.img": img}, runtime="builtin:sim",
                      pal_args="mrsigner=" + "00" * 32)
    p = rune.run("run", "--bundle", bad, cid + "b", env=sim_env)
    assert p.returncode == 1 and "expected 0000" in p.stderr


def test_unknown_builtin_is_named(rune, cid, make_bundle):
    b = wasm_bundle(make_bundle, ["x"], {}, runtime="builtin:nope")
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 1 and "nope" in p.stderr and "sim" in p.stderr and "wasm" in p.stderr
