"""The fork server's pre-warmed enclave imports (shim/warmup.py): imported when epm's socket says enclaves run
here (and only then), while idle, and inherited by the workers forked afterwards. Checked by what the server's
idle workers have mapped (wasmtime's native library), in a fresh interpreter that never imported it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SRC

SCENARIO = r"""
import json, os, sys, time
from inclavare.shim.forkserver import ForkServer

def mapped(pid):
    try:
        return "wasmtime" in open(f"/proc/{pid}/maps").read()
    except OSError:
        return False

def children(pid):
    return open(f"/proc/{pid}/task/{pid}/children").read().split()

fs = ForkServer(sys.argv[1], warm=sys.argv[2] == "1")
pid = fs.start()
fs.start_reader()
deadline = time.monotonic() + float(sys.argv[3])
warm = []
while time.monotonic() < deadline:
    kids = children(pid)
    warm = [k for k in kids if mapped(k)]
    if len(kids) >= 2 and len(warm) == len(kids):
        break
    time.sleep(0.05)
out = {"server": mapped(pid), "workers": len(children(pid)), "warm_workers": len(warm), "self": mapped(os.getpid())}
fs.close()
os.waitpid(pid, 0)
print(json.dumps(out))
"""


def _run(tmp_path: Path, warm: bool, epm_socket: str, wait: float) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(SRC), INCLAVARE_EPM_SOCKET=epm_socket)
    out = subprocess.run([sys.executable, "-c", SCENARIO, str(tmp_path / "root"), "1" if warm else "0", str(wait)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def epm_socket(tmp_path: Path) -> str:
    path = str(tmp_path / "epm.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)  # only its existence and owner matter to the warm-up
    s.close()
    if os.stat(path).st_uid != 0:
        pytest.skip("epm's socket must be root's")
    return path


def test_epm_socket_warms_the_server_and_its_workers(tmp_path: Path, epm_socket: str) -> None:
    got = _run(tmp_path, True, epm_socket, 60)
    assert got == {"server": True, "workers": 2, "warm_workers": 2, "self": False}


def test_no_warm_up_without_enclaves_or_when_turned_off(tmp_path: Path, epm_socket: str) -> None:
    got = _run(tmp_path, True, str(tmp_path / "no-epm.sock"), 2)
    assert got["server"] is False and got["warm_workers"] == 0 and got["workers"] == 2
    got = _run(tmp_path, False, epm_socket, 2)
    assert got["server"] is False and got["warm_workers"] == 0


@pytest.mark.parametrize("warm", [True, False])
def test_an_enclave_create_answer_asks_for_the_warm_up_and_is_forwarded_without_the_flag(tmp_path: Path,
                                                                                        warm: bool) -> None:
    import select

    from inclavare.shim.forkserver import _Server, _Worker

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        srv = _Server(ours, str(tmp_path), warm)
        worker = _Worker(1, -1, r, None)
        worker.rid = 5
        worker.buf = b'{"ok": true, "result": {"pid": 3}, "warnings": [], "enclave": true}\n'
        srv.poller.register(r, select.POLLIN)
        srv.replies[r] = worker
        srv._forward(worker)
        assert json.loads(theirs.recv(65536)) == {"ok": True, "result": {"pid": 3}, "warnings": [], "id": 5}
        assert srv.want_warm is warm
    finally:
        for fd in (r, w):
            os.close(fd)
        ours.close()
        theirs.close()


def test_the_worker_says_when_it_created_an_enclave_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inclavare.shim import forkserver

    def fake_create(root: str, args: dict[str, object], fds: dict[str, int], log: object) -> dict[str, object]:
        return {"pid": 7, "_enclave": args["enclave"]}

    monkeypatch.setitem(forkserver._OPS, "create", fake_create)
    for enclave in (True, False):
        r, w = os.pipe()
        forkserver._work(str(tmp_path), {"op": "create", "args": {"enclave": enclave}}, {}, w)
        os.close(w)
        answer = json.loads(os.read(r, 65536))
        os.close(r)
        assert answer["result"] == {"pid": 7}
        assert answer.get("enclave", False) is enclave
