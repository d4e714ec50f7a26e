"""Carriers in the shim (issue 17): selection, the node config, the wasm/sim/occlum carriers, client/server/
local signing (a real signature-server process), the bundle cache levels, and the errors that leave the bundle
and the cache as they were."""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.enclave import image
from inclavare.services.bundlecache import BundleCache
from inclavare.shim import carrier as sel
from inclavare.shim.carrier import nodeconfig
from inclavare.shim.carrier.carriers import entry_point
from inclavare.shim.carrier.prepare import MOUNT_POINT, prepare
from inclavare.shim.carrier.signers import CarrierError
from tests.unit.services.test_signature_server import TOKEN, pki, running, tokens_file  # noqa: F401 (fixtures)
from tests.unit.sgx_helpers import public_pem, rsa3072_e3_pem

REPO = Path(__file__).resolve().parents[3]
# a WASI module: (module (memory (export "memory") 1) (func (export "_start")))
WASM = bytes.fromhex("0061736d0100000001040160000003020100050301000107130206" "6d656d6f727902000"
                     "65f737461727400000a040102000b")


# --------------------------------------------------------------------------------------------------
# selection


def test_selection_precedence_env_over_annotation_over_handler() -> None:
    cfg: dict[str, Any] = {"process": {"env": ["A=1", "RUNE_CARRIER=wasm"]}, "annotations": {"enclave.carrier": "sim"}}
    assert sel.select(cfg, "occlum") == ("wasm", "process env RUNE_CARRIER")
    cfg["process"]["env"] = ["A=1"]
    assert sel.select(cfg, "occlum") == ("sim", "annotation enclave.carrier")
    del cfg["annotations"]
    assert sel.select(cfg, "occlum") == ("occlum", "runtime handler option EnclaveCarrier")
    assert sel.select(cfg) == ("", "")
    assert sel.select({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}}, "wasm") == ("", "")
    cfg["process"]["env"] = ["RUNE_CARRIER=wasm", "B=2"]
    sel.strip_env(cfg)
    assert cfg["process"]["env"] == ["B=2"]


def test_handler_carrier_from_runtimeoptions(tmp_path: Path) -> None:
    from google.protobuf import any_pb2

    from inclavare.shim.proto.runtimeoptions import api_pb2
    from inclavare.shim.service import handler_carrier, parse_options

    toml = tmp_path / "rune.toml"
    toml.write_text('EnclaveCarrier = "wasm"\nIoUid = 7\n')
    value = any_pb2.Any(type_url="runtimeoptions.v1.Options",
                        value=api_pb2.Options(config_path=str(toml)).SerializeToString())
    assert parse_options(value).io_uid == 7  # the carrier key is not refused as an unknown runc option
    assert handler_carrier(value) == "wasm"
    body = any_pb2.Any(type_url="runtimeoptions.v1.Options",
                       value=api_pb2.Options(config_body=b'EnclaveCarrier = 3').SerializeToString())
    with pytest.raises(Exception, match="EnclaveCarrier = 3: want a string"):
        parse_options(body)
    assert handler_carrier(None) == ""


# --------------------------------------------------------------------------------------------------
# node config


def test_node_config_absent_is_defaults(tmp_path: Path) -> None:
    cfg = nodeconfig.load(str(tmp_path / "none.toml"))
    assert (cfg.signature_method, cfg.cache_root, cfg.log_level) == ("server", nodeconfig.DEFAULT_CACHE_ROOT, "info")


def test_node_config_upstream_and_our_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "config.toml"
    p.write_text('''log_level = "debug"
sgx_tool_sign = "/opt/intel/sgxsdk/bin/x64/sgx_sign"
colour = "blue"
[containerd]
    socket = "/run/containerd/containerd.sock"
[epm]
    socket = "/var/run/epm/epm.sock"
[enclave_runtime]
    signature_method = "local"
    [enclave_runtime.occlum]
        enclave_runtime_path = "/opt/occlum/build/lib/libocclum-pal.so"
        enclave_libos_path = "/opt/occlum/build/lib/libocclum-libos.so"
    [enclave_runtime.graphene]
[signature]
    server_address = "https://signer.example:9080"
    local_key = "/etc/inclavare-containers/signing.pem"
    timeout = 3
    shade = 1
[bundle_cache]
    root = "/srv/cache"
    max_bytes = 1048576
[weird]
x = 1
''')
    with caplog.at_level(logging.WARNING, logger="inclavare.shim.carrier"):
        cfg = nodeconfig.load(str(p))
    assert cfg.epm_socket == "/var/run/epm/epm.sock" and cfg.signature_method == "local"
    assert cfg.occlum.enclave_libos_path.endswith("libos.so") and cfg.signature.timeout == 3.0
    assert (cfg.cache_root, cfg.cache_max_bytes) == ("/srv/cache", 1 << 20)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3
    assert any("unknown key colour" in w for w in warned) and any("signature.shade" in w for w in warned)
    assert any("[weird]" in w for w in warned)


@pytest.mark.parametrize("text,expected", [
    ('[enclave_runtime]\nsignature_method = "remote"', "enclave_runtime.signature_method: 'remote' is not one of"),
    ('log_level = 3', "log_level = 3: want a string"),
    ('[bundle_cache]\nmax_bytes = -1', "bundle_cache.max_bytes: -1"),
    ('[bundle_cache]\nroot = "rel"', "bundle_cache.root: 'rel' is not an absolute path"),
    ('[signature]\nserver_address = "ftp://x"', "signature.server_address"),
    ('[signature]\nlocal_key = "key.pem"', "signature.local_key"),
    ('a = ', "not TOML"),
])
def test_node_config_bad_values_name_key_and_file(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(nodeconfig.NodeConfigError) as e:
        nodeconfig.load(str(p))
    assert str(p) in str(e.value) and expected in str(e.value) and "\n" not in str(e.value)


def test_shim_settings_from_the_node_config(tmp_path: Path) -> None:
    """A shim takes [epm] socket into the environment its fork server and rune's runtimes inherit (unless one is
    set already), and log_level for its own log; no file costs nothing; a bad file is an error to log."""
    p = tmp_path / "config.toml"
    env = {nodeconfig.ENV_PATH: str(p)}
    assert nodeconfig.shim_settings(env) == ("", "") and nodeconfig.EPM_SOCKET_ENV not in env
    p.write_text('log_level = "warn"\n[epm]\nsocket = "/run/epm/x.sock"\n')
    assert nodeconfig.shim_settings(env) == ("warn", "")
    assert env[nodeconfig.EPM_SOCKET_ENV] == "/run/epm/x.sock"
    env[nodeconfig.EPM_SOCKET_ENV] = "/elsewhere.sock"
    nodeconfig.shim_settings(env)
    assert env[nodeconfig.EPM_SOCKET_ENV] == "/elsewhere.sock"
    p.write_text("log_level = 3\n")
    level, error = nodeconfig.shim_settings(env)
    assert level == "" and str(p) in error and "log_level" in error
    from inclavare.enclave.epm.client import SOCKET_ENV

    assert nodeconfig.EPM_SOCKET_ENV == SOCKET_ENV  # the name rune's client reads


# --------------------------------------------------------------------------------------------------
# bundles


def make_bundle(base: Path, entry: bytes | None = WASM, args: tuple[str, ...] = ("app.wasm",),
                env: tuple[str, ...] = ("PATH=/bin", "RUNE_CARRIER=wasm", "HOME=/")) -> Path:
    b = base / "bundle"
    (b / "rootfs" / "bin").mkdir(parents=True)
    if entry is not None:
        (b / "rootfs" / "bin" / args[0].rsplit("/", 1)[-1]).write_bytes(entry)
    cfg = {"ociVersion": "1.0.2", "process": {"args": list(args), "env": list(env), "cwd": "/"},
           "root": {"path": "rootfs"}, "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}]}
    (b / "config.json").write_text(json.dumps(cfg, indent=1))
    return b


def run_prepare(bundle: Path, cfg: nodeconfig.NodeConfig, name: str = "wasm") -> Any:
    raw = (bundle / "config.json").read_bytes()
    return prepare(str(bundle), json.loads(raw), raw, name, "test", node_config=cfg)


@pytest.fixture(scope="module")
def local_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("key") / "signing.pem"
    p.write_bytes(rsa3072_e3_pem(0))
    p.chmod(0o600)
    return str(p)


def local_cfg(tmp_path: Path, key: str, **kw: Any) -> nodeconfig.NodeConfig:
    return nodeconfig.NodeConfig(signature_method="local", signature=nodeconfig.SignatureConfig(local_key=key),
                                 cache_root=str(tmp_path / "cache"), **kw)


def stats(cfg: nodeconfig.NodeConfig) -> Any:
    with BundleCache(cfg.cache_root, cfg.cache_max_bytes) as c:
        return c.stats()


def test_wasm_carrier_local_key_rewrites_bundle_and_caches(tmp_path: Path, local_key: str) -> None:
    cfg = local_cfg(tmp_path, local_key)
    bundle = make_bundle(tmp_path)
    prep = run_prepare(bundle, cfg)
    try:
        out = json.loads((bundle / "config.json").read_text())
        env = out["process"]["env"]
        assert "RUNE_CARRIER=wasm" not in env and "PATH=/bin" in env and "ENCLAVE_TYPE=sim" in env
        assert "ENCLAVE_RUNTIME_PATH=builtin:sim" in env
        assert f"ENCLAVE_RUNTIME_ARGS=image={MOUNT_POINT} mrsigner={prep.mrsigner}" in env
        mount = out["mounts"][-1]
        assert mount["destination"] == MOUNT_POINT and "ro" in mount["options"]
        signed = image.load(mount["source"])
        assert signed.payload == WASM and signed.kind == "wasm"
        ann = out["annotations"]
        assert (ann["enclave.mrenclave"], ann["enclave.mrsigner"], ann["enclave.carrier"]) == (
            signed.mrenclave.hex(), signed.mrsigner.hex(), "wasm")
        assert prep.hits == []
    finally:
        prep.release()
    s = stats(cfg)
    assert (s.entries, s.builds, s.hits) == (3, 3, 0)  # L0, L1, L2 built once
    # a second pod of the same image: an L2 hit, nothing built
    shutil.rmtree(bundle)
    bundle = make_bundle(tmp_path)
    prep2 = run_prepare(bundle, cfg)
    prep2.release()
    assert prep2.hits == ["L2"] and prep2.mrenclave == prep.mrenclave
    s = stats(cfg)
    assert (s.entries, s.builds, s.hits) == (3, 3, 1)


def test_changed_signing_key_reuses_l1_only(tmp_path: Path, local_key: str) -> None:
    cfg = local_cfg(tmp_path, local_key)
    run_prepare(make_bundle(tmp_path), cfg).release()
    other = tmp_path / "other.pem"
    other.write_bytes(rsa3072_e3_pem(1))
    other.chmod(0o600)
    shutil.rmtree(tmp_path / "bundle")
    prep = run_prepare(make_bundle(tmp_path), local_cfg(tmp_path, str(other)))
    prep.release()
    assert prep.hits == ["L1"]
    assert stats(cfg).entries == 4


def test_corrupted_entry_is_rebuilt(tmp_path: Path, local_key: str) -> None:
    cfg = local_cfg(tmp_path, local_key)
    bundle = make_bundle(tmp_path)
    prep = run_prepare(bundle, cfg)
    prep.release()
    src = json.loads((bundle / "config.json").read_text())["mounts"][-1]["source"]
    os.chmod(src, 0o644)
    with open(src, "r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    shutil.rmtree(bundle)
    bundle = make_bundle(tmp_path)
    prep2 = run_prepare(bundle, cfg)
    prep2.release()
    assert prep2.hits == ["L1"]  # the L2 entry was corrupt: rebuilt from L1
    assert stats(cfg).corrupt == 1
    assert image.load(src).payload == WASM


def test_sim_carrier_native_payload(tmp_path: Path, local_key: str) -> None:
    elf = Path("/bin/true").read_bytes()
    bundle = make_bundle(tmp_path, entry=elf, args=("/bin/true",), env=("PATH=/bin",))
    prep = run_prepare(bundle, local_cfg(tmp_path, local_key), "sim")
    prep.release()
    out = json.loads((bundle / "config.json").read_text())
    assert image.load(out["mounts"][-1]["source"]).kind == "native"


@pytest.mark.parametrize("name,entry,args,expected,code", [
    ("nope", WASM, ("app.wasm",), "unknown carrier 'nope'", "invalid_argument"),
    ("wasm", b"#!/bin/sh\n", ("app.wasm",), "not a WebAssembly module", "invalid_argument"),
    ("sim", WASM, ("app.wasm",), "not an ELF executable", "invalid_argument"),
    ("wasm", None, ("app.wasm",), "not found in the image", "invalid_argument"),
    ("wasm", WASM, ("/bin/../../../etc/passwd",), "climbs out of the container's root", "invalid_argument"),
    ("occlum", WASM, ("app.wasm",), "occlum carrier: not available on this machine: missing", "failed_precondition"),
])
def test_bad_input_leaves_bundle_and_cache_untouched(tmp_path: Path, local_key: str, name: str,
                                                     entry: bytes | None, args: tuple[str, ...], expected: str,
                                                     code: str) -> None:
    cfg = local_cfg(tmp_path, local_key)
    bundle = make_bundle(tmp_path, entry=entry, args=args)
    before = (bundle / "config.json").read_bytes()
    with pytest.raises(CarrierError) as e:
        run_prepare(bundle, cfg, name)
    assert expected in str(e.value) and "\n" not in str(e.value) and e.value.code == code
    assert (bundle / "config.json").read_bytes() == before
    assert sorted(os.listdir(bundle)) == ["config.json", "rootfs"]
    if os.path.isdir(cfg.cache_root):
        assert stats(cfg).entries == 0


def test_symlinked_entry_point_resolves_inside_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "opt").mkdir(parents=True)
    (root / "opt" / "app.wasm").write_bytes(WASM)
    (root / "bin").mkdir()
    os.symlink("/opt/app.wasm", root / "bin" / "app")  # absolute: from the container's root, not the host's
    cfg = {"process": {"args": ["app"], "env": ["PATH=/usr/bin:/bin"]}}
    assert entry_point(cfg, str(root)) == ("/bin/app", str(root / "opt" / "app.wasm"))
    os.symlink("../../../../../../etc/passwd", root / "bin" / "evil")
    with pytest.raises(CarrierError, match="climbs out"):
        entry_point({"process": {"args": ["/bin/evil"]}}, str(root))


def test_local_key_must_be_private(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(rsa3072_e3_pem(0))
    key.chmod(0o644)
    with pytest.raises(CarrierError, match="mode 0644 lets other users at it"):
        run_prepare(make_bundle(tmp_path), local_cfg(tmp_path, str(key)))


def test_restore_puts_the_original_config_back(tmp_path: Path, local_key: str) -> None:
    bundle = make_bundle(tmp_path)
    before = (bundle / "config.json").read_bytes()
    prep = run_prepare(bundle, local_cfg(tmp_path, local_key))
    assert (bundle / "config.json").read_bytes() != before
    prep.restore()
    prep.release()
    assert (bundle / "config.json").read_bytes() == before


# --------------------------------------------------------------------------------------------------
# client signing


def test_client_signing_verifies_the_images_own_enclave(tmp_path: Path, local_key: str) -> None:
    signed = image.sign(image.build(WASM, "wasm"), rsa3072_e3_pem(0))
    bundle = make_bundle(tmp_path)
    (bundle / "rootfs" / "enclave").mkdir()
    (bundle / "rootfs" / "enclave" / "enclave.img").write_bytes(signed)
    cfg = nodeconfig.NodeConfig(signature_method="client", cache_root=str(tmp_path / "cache"))
    prep = run_prepare(bundle, cfg)
    out = json.loads((bundle / "config.json").read_text())
    assert f"ENCLAVE_RUNTIME_ARGS=image=/enclave/enclave.img mrsigner={prep.mrsigner}" in out["process"]["env"]
    assert prep.mrenclave == image.load(signed).mrenclave.hex()
    assert not os.path.exists(cfg.cache_root)  # nothing to cache
    prep.restore()
    # unsigned, or tampered with: refused
    (bundle / "rootfs" / "enclave" / "enclave.img").write_bytes(image.build(WASM, "wasm").to_bytes())
    with pytest.raises(CarrierError, match="not signed"):
        run_prepare(bundle, cfg)
    bad = bytearray(signed)
    bad[200] ^= 1
    (bundle / "rootfs" / "enclave" / "enclave.img").write_bytes(bytes(bad))
    with pytest.raises(CarrierError, match="signature_method client"):
        run_prepare(bundle, cfg)
    (bundle / "rootfs" / "enclave" / "enclave.img").unlink()
    with pytest.raises(CarrierError, match="has no signed enclave image"):
        run_prepare(bundle, cfg)


# --------------------------------------------------------------------------------------------------
# server signing: a real signature-server process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, local_key: str) -> Iterator[str]:
    d = tmp_path_factory.mktemp("sigsrv")
    pub = d / "pub.pem"
    pub.write_bytes(public_pem(rsa3072_e3_pem(0)))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.signature_server", "--private-key", local_key,
                             "--public-key", str(pub), "--listen", "127.0.0.1:0", "--allow-anyone"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while True:
            line = proc.stderr.readline()
            assert line, f"server exited: {''.join(lines)}"
            lines.append(line)
            if "listening on" in line:
                break
        yield line.split("listening on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(10)


def server_cfg(tmp_path: Path, url: str, pinned: bytes | None = None) -> nodeconfig.NodeConfig:
    pin = ""
    if pinned is not None:
        (tmp_path / "pinned.pem").write_bytes(pinned)
        pin = str(tmp_path / "pinned.pem")
    return nodeconfig.NodeConfig(signature_method="server", cache_root=str(tmp_path / "cache"),
                                 signature=nodeconfig.SignatureConfig(server_address=url, public_key=pin))


def test_server_signing_with_pinned_key(tmp_path: Path, server: str) -> None:
    cfg = server_cfg(tmp_path, server, public_pem(rsa3072_e3_pem(0)))
    bundle = make_bundle(tmp_path)
    prep = run_prepare(bundle, cfg)
    prep.release()
    out = json.loads((bundle / "config.json").read_text())
    signed = image.load(out["mounts"][-1]["source"])
    assert signed.mrsigner.hex() == prep.mrsigner == out["annotations"]["enclave.mrsigner"]


def test_server_with_another_key_than_the_pinned_one(tmp_path: Path, server: str) -> None:
    cfg = server_cfg(tmp_path, server, public_pem(rsa3072_e3_pem(1)))
    bundle = make_bundle(tmp_path)
    before = (bundle / "config.json").read_bytes()
    with pytest.raises(CarrierError, match="signed with a key that is not the pinned"):
        run_prepare(bundle, cfg)
    assert (bundle / "config.json").read_bytes() == before and stats(cfg).entries == 0


def test_server_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once closed
    cfg = server_cfg(tmp_path, f"http://127.0.0.1:{port}")
    bundle = make_bundle(tmp_path)
    before = (bundle / "config.json").read_bytes()
    with pytest.raises(CarrierError, match=f"signature server http://127.0.0.1:{port}"):
        run_prepare(bundle, cfg)
    assert (bundle / "config.json").read_bytes() == before and stats(cfg).entries == 0


def test_server_returning_a_wrong_signature(tmp_path: Path) -> None:
    import base64

    reply = json.dumps({"signature": base64.b64encode(bytes(383) + b"\x01").decode(),
                        "publicKey": public_pem(rsa3072_e3_pem(0)).decode()}).encode()

    class Liar(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        cfg = server_cfg(tmp_path, f"http://127.0.0.1:{srv.server_address[1]}")
        with pytest.raises(CarrierError, match="the returned signature does not verify"):
            run_prepare(make_bundle(tmp_path), cfg)
        assert stats(cfg).entries == 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_rune_attest_checks_the_recorded_identity() -> None:
    from inclavare.cli.runecmds import _check_recorded
    from inclavare.errors import ContainerError

    shown = {"mrenclave": "aa" * 32, "mrsigner": "bb" * 32}
    _check_recorded("c", {}, shown)
    assert "recorded" not in shown
    _check_recorded("c", {"enclave.mrenclave": "AA" * 32, "enclave.mrsigner": "bb" * 32}, shown)
    assert shown["recorded"] == {"mrenclave": "aa" * 32, "mrsigner": "bb" * 32}
    with pytest.raises(ContainerError, match="reports MRENCLAVE a{64}, but c{64} was recorded"):
        _check_recorded("c", {"enclave.mrenclave": "cc" * 32}, dict(shown))


def test_preload_only_where_a_node_config_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nodeconfig.ENV_PATH, str(tmp_path / "absent.toml"))
    assert sel.preload() is False
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv(nodeconfig.ENV_PATH, str(tmp_path / "config.toml"))
    assert sel.preload() is True
    assert "inclavare.shim.carrier.prepare" in sys.modules


def test_server_signing_over_https_with_a_token_and_with_mtls(  # noqa: F811 (pytest fixtures by name)
        tmp_path: Path, local_key: str, pki: dict[str, Any], tokens_file: str) -> None:  # noqa: F811
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    pinned = tmp_path / "pinned.pem"
    pinned.write_bytes(public_pem(rsa3072_e3_pem(0)))
    with running(local_key, cert=pki["server"], tls_key=pki["server_key"], tokens_file=tokens_file) as srv:
        url = f"https://127.0.0.1:{srv.server_address[1]}"
        sig = nodeconfig.SignatureConfig(server_address=url, ca_cert=pki["ca"], token_file=str(token),
                                         public_key=str(pinned))
        cfg = nodeconfig.NodeConfig(signature_method="server", cache_root=str(tmp_path / "cache"), signature=sig)
        run_prepare(make_bundle(tmp_path), cfg).release()
        assert stats(cfg).builds == 3
        token.write_text("not-the-token\n")
        shutil.rmtree(tmp_path / "bundle")
        cfg2 = nodeconfig.NodeConfig(signature_method="server", cache_root=str(tmp_path / "cache2"), signature=sig)
        with pytest.raises(CarrierError, match="HTTP 401") as e:
            run_prepare(make_bundle(tmp_path), cfg2)
        assert "\n" not in str(e.value) and stats(cfg2).entries == 0
    with running(local_key, cert=pki["server"], tls_key=pki["server_key"], client_ca=pki["ca"],
                 allow_cns=("alice",)) as srv:
        url = f"https://127.0.0.1:{srv.server_address[1]}"
        sig = nodeconfig.SignatureConfig(server_address=url, ca_cert=pki["ca"], client_cert=pki["alice"],
                                         client_key=pki["alice_key"])
        cfg3 = nodeconfig.NodeConfig(signature_method="server", cache_root=str(tmp_path / "cache3"), signature=sig)
        shutil.rmtree(tmp_path / "bundle")
        run_prepare(make_bundle(tmp_path), cfg3).release()
        assert stats(cfg3).builds == 3


def test_two_pods_of_one_image_build_once(tmp_path: Path, local_key: str) -> None:
    cfg = local_cfg(tmp_path, local_key)
    bundles = []
    for i in range(4):
        d = tmp_path / f"pod{i}"
        d.mkdir()
        bundles.append(make_bundle(d))
    preps: list[Any] = []
    errors: list[BaseException] = []

    def one(b: Path) -> None:
        try:
            preps.append(run_prepare(b, cfg))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(b,)) for b in bundles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p in preps:
        p.release()
    assert not errors and len(preps) == 4
    s = stats(cfg)
    assert (s.builds, s.entries) == (3, 3)
    assert len({p.mrenclave for p in preps}) == 1 and sum(p.hits == ["L2"] for p in preps) == 3
