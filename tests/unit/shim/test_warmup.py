"""The fork server's enclave server (shim/warmup.py): started when epm's socket says enclaves run here (and only
then), while idle; it and its workers have the enclave modules (seen in their memory maps: wasmtime's native
library), the plain server and its workers do not; an enclave create is served by it, and if it dies creates
are served by the plain server again. Run in fresh interpreters that never imported wasmtime themselves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.shim.warmup import MARKER, is_enclave_create
from tests.conftest import SRC

SCENARIO = r"""
import json, os, signal, sys, time
from inclavare.shim.forkserver import ForkServer

def mapped(pid):
    try:
        return "wasmtime" in open(f"/proc/{pid}/maps").read()
    except OSError:
        return False

def children(pid):
    try:
        return set(open(f"/proc/{pid}/task/{pid}/children").read().split())
    except OSError:
        return set()

root, warm, wait, bundle = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3]), sys.argv[4]
fs = ForkServer(root, warm=warm)
pid = fs.start()
fs.start_reader()
deadline = time.monotonic() + wait
sub = None
while time.monotonic() < deadline:
    subs = [k for k in children(pid) if mapped(k)]
    if subs and len(children(subs[0])) >= 2 and all(mapped(w) for w in children(subs[0])):
        sub = subs[0]
        break
    time.sleep(0.05)
plain_workers = sorted(k for k in children(pid) if k != sub)
out = {"server": mapped(pid), "plain_workers": len(plain_workers),
       "plain_mapped": any(mapped(k) for k in plain_workers), "sub": sub is not None,
       "sub_workers": len(children(sub)) if sub else 0, "self": mapped(os.getpid())}
if bundle and sub:
    before = children(sub)
    res = fs.call("create", {"id": "e1", "bundle": bundle})
    out["created"] = bool(res.get("pid"))
    until = time.monotonic() + 10
    while children(sub) == before and time.monotonic() < until:  # the used worker exits, a new one is forked
        time.sleep(0.02)
    out["served_by_sub"] = children(sub) != before
    time.sleep(0.5)  # had the plain server served it, its worker would be gone by now
    out["plain_untouched"] = sorted(k for k in children(pid) if k != sub) == plain_workers
    fs.call("delete", {"id": "e1", "force": True})
    os.kill(int(sub), signal.SIGKILL)
    time.sleep(0.5)
    res = fs.call("create", {"id": "e2", "bundle": bundle})
    fs.call("delete", {"id": "e2", "force": True})
    out["created_after_death"] = bool(res.get("pid"))
    out["sub_after_death"] = any(mapped(k) for k in children(pid))
fs.close()
os.waitpid(pid, 0)
print(json.dumps(out))
"""


def _run(tmp_path: Path, warm: bool, epm_socket: str, wait: float, bundle: str = "") -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(SRC), INCLAVARE_EPM_SOCKET=epm_socket,
               INCLAVARE_SIM_STATE_DIR=str(tmp_path / "sim"))
    out = subprocess.run([sys.executable, "-c", SCENARIO, str(tmp_path / "root"), "1" if warm else "0", str(wait),
                          bundle], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def epm_socket(tmp_path: Path) -> str:
    path = str(tmp_path / "epm.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)  # only its existence and owner matter here
    s.close()
    if os.stat(path).st_uid != 0:
        pytest.skip("epm's socket must be root's")
    return path


def wasm_bundle(tmp_path: Path) -> str:
    from inclavare.testing.bundle import make_bundle

    b = make_bundle(str(tmp_path / "bundle"), ["/exit.wat"])
    cfg = json.loads(Path(b, "config.json").read_text())
    cfg["process"]["env"] += ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:wasm"]
    Path(b, "config.json").write_text(json.dumps(cfg))
    Path(b, "rootfs", "exit.wat").write_text('(module (memory (export "memory") 1) (func (export "_start")))')
    return b


def test_enclave_server_has_the_modules_and_serves_enclave_creates(tmp_path: Path, epm_socket: str) -> None:
    got = _run(tmp_path, True, epm_socket, 60, wasm_bundle(tmp_path))
    assert got["sub"] and got["sub_workers"] == 2
    assert not got["server"] and not got["plain_mapped"] and got["plain_workers"] == 2 and not got["self"]
    assert got["created"] and got["served_by_sub"] and got["plain_untouched"]
    # the enclave server killed: its successor is not started, the plain server creates enclave containers again
    assert got["created_after_death"] and not got["sub_after_death"]
    assert (tmp_path / MARKER).is_file()  # the next shims under this shim root start theirs at once
    assert not (tmp_path / "root" / MARKER).exists()  # the namespace's state directory holds only containers


def test_another_shims_enclave_create_starts_the_enclave_server(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / MARKER).touch()
    got = _run(tmp_path, True, str(tmp_path / "no-epm.sock"), 60)
    assert got["sub"] and got["sub_workers"] == 2 and not got["server"]


def test_no_enclave_server_without_enclaves_or_when_turned_off(tmp_path: Path, epm_socket: str) -> None:
    got = _run(tmp_path, True, str(tmp_path / "no-epm.sock"), 2)
    assert not got["sub"] and not got["server"] and not got["plain_mapped"] and got["plain_workers"] == 2
    got = _run(tmp_path, False, epm_socket, 2)
    assert not got["sub"] and not got["server"] and not got["plain_mapped"]


def test_is_enclave_create_reads_the_bundles_enclave_type(tmp_path: Path) -> None:
    def bundle(cfg: object) -> dict[str, str]:
        d = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        return {"bundle": str(d)}

    assert is_enclave_create(bundle({"process": {"env": ["PATH=/bin", "ENCLAVE_TYPE=sim"]}}))
    assert is_enclave_create(bundle({"process": {"env": []}, "annotations": {"enclave.type": "intelSgx"}}))
    assert not is_enclave_create(bundle({"process": {"env": ["ENCLAVE_TYPE="]}}))
    assert not is_enclave_create(bundle({"process": {"env": ["PATH=/bin"]}, "annotations": {"x": "y"}}))
    assert not is_enclave_create(bundle(["not", "an", "object"]))
    assert not is_enclave_create({"bundle": str(tmp_path / "missing")})
    assert not is_enclave_create({"id": "x"}) and not is_enclave_create(None)

