"""The real `epm` process: every RPC of upstream's EnclavePoolManager over its unix socket, bad input as a gRPC
status with a one-line detail, committed caches surviving kill -9, and the socket's permissions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inclavare.enclave.epm.proto import epm_pb2 as pb
from inclavare.enclave.epm.proto import epm_pb2_grpc as pb_grpc
from tests.conftest import SRC


class Epm:
    """One epm process on a private directory; ``stub`` is a client on its socket."""

    def __init__(self, top: str) -> None:
        self.top = top
        self.root = os.path.join(top, "root")
        self.sock = os.path.join(top, "run", "epm.sock")
        self.config = os.path.join(top, "epm.toml")
        with open(self.config, "w") as f:
            f.write(f'root = "{self.root}"\ndb_path = "{top}/db/epm.db"\nsurprise = 1\n'
                    f'[grpc]\naddress = "{self.sock}"\n[cache_pools.extra]\ntype = "wasm-cache"\n')
        self.proc: subprocess.Popen[str] | None = None
        self.channel: grpc.Channel | None = None
        self.stderr = ""

    def start(self) -> dict[str, object]:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.epm", "--config", self.config],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"epm did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.channel = grpc.insecure_channel("unix:" + self.sock)
        return json.loads(line)

    @property
    def stub(self) -> pb_grpc.EnclavePoolManagerStub:
        assert self.channel is not None
        return pb_grpc.EnclavePoolManagerStub(self.channel)  # type: ignore[no-untyped-call]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(20)
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        self.proc = None
        return rc


@pytest.fixture
def epm() -> Iterator[Epm]:
    top = tempfile.mkdtemp(prefix="epm-", dir="/tmp")  # a unix socket path must stay short
    e = Epm(top)
    try:
        yield e
    finally:
        if e.proc is not None:
            e.stop(signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)


def _status(call, request) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=10)
    return e.value.code(), e.value.details()


def _enclave_options() -> pb.Cache:
    cache = pb.Cache()
    enclave = pb.Enclave(fd=7, nr=1, layout=[pb.Enclavelayout(addr=0x7f0000000000, size=4096,
                                                              prot=pb.EnclavePerms(read=True, execute=True))])
    cache.options.Pack(enclave)
    return cache


def test_every_rpc_against_the_process(epm: Epm):
    ready = epm.start()
    assert ready["ready"] is True and ready["address"] == epm.sock
    assert set(ready["pools"]) == {"enclave-cache", "bundle-cache", "wasm-module", "sim-image", "wasm-cache",  # type: ignore[arg-type]
                                   "enclave-cache-pool"}
    s = epm.stub
    assert s.Healthz(pb.HealthzRequest(), timeout=10).ok
    assert s.Healthz(pb.HealthzRequest(type="enclave-cache"), timeout=10).ok  # upstream's rune names its pool

    opts = _enclave_options().options
    for cid in ("e1", "e2"):
        req = pb.SaveCacheRequest(cache=pb.Cache(type="enclave-cache", subType="sgx", ID=cid, options=opts))
        assert s.SaveCache(req, timeout=10).ok
    got = s.GetCache(pb.GetCacheRequest(type="enclave-cache", ID="e1"), timeout=10).cache
    assert got.ID == "e1" and got.subType == "sgx" and got.created > 0
    enclave = pb.Enclave()
    assert got.options.Unpack(enclave) and enclave.layout[0].addr == 0x7f0000000000 and enclave.layout[0].prot.execute

    final = pb.SaveCacheRequest(cache=pb.Cache(type="enclave-cache", subType="sgx", ID="e2"))
    assert s.SaveFinalCache(final, timeout=10).ok
    assert list(s.PickCache(pb.PickCacheRequest(type="enclave-cache", subType="other"), timeout=10).caches) == []
    picked = s.PickCache(pb.PickCacheRequest(type="enclave-cache", subType="sgx"), timeout=10).caches
    assert [c.ID for c in picked] == ["e2"] and picked[0].options.Unpack(pb.Enclave())
    assert list(s.PickCache(pb.PickCacheRequest(type="enclave-cache"), timeout=10).caches) == []  # e1: not final
    assert s.SaveFinalCache(pb.SaveCacheRequest(cache=pb.Cache(type="enclave-cache", ID="e1")), timeout=10).ok
    picked = s.PickCache(pb.PickCacheRequest(type="enclave-cache", filters={"ID": "e1"}), timeout=10).caches
    assert [c.ID for c in picked] == ["e1"]

    src = Path(epm.root) / "incoming"
    src.mkdir()
    (src / "payload").write_bytes(b"P" * 1000)
    parent = pb.Cache(type="bundle-cache", ID="l0")
    assert s.SaveCache(pb.SaveCacheRequest(cache=parent, sourcePath=str(src)), timeout=10).ok
    child = pb.Cache(type="bundle-cache", ID="l1", parent=parent)
    assert s.SaveCache(pb.SaveCacheRequest(cache=child, sourcePath=str(src)), timeout=10).ok
    listed = s.ListCache(pb.ListCacheRequest(type="bundle-cache", limit=10), timeout=10).caches
    assert [c.ID for c in listed] == ["l0", "l1"] and listed[0].size == 1000
    assert list(s.ListCache(pb.ListCacheRequest(type="bundle-cache", subType="occlum"), timeout=10).caches) == []
    assert listed[1].parent.ID == "l0"
    assert [c.ID for c in s.ListCache(pb.ListCacheRequest(type="bundle-cache", lastCacheID="l0"), timeout=10).caches] \
        == ["l1"]

    work = Path(epm.top) / "work"
    work.mkdir()
    code, _ = _status(s.LoadCache, pb.LoadCacheRequest(type="bundle-cache", subType="occlum", ID="l0",
                                                        targetPath=str(work / "b")))
    assert code == grpc.StatusCode.NOT_FOUND and not (work / "b").exists()
    assert s.LoadCache(pb.LoadCacheRequest(type="bundle-cache", ID="l0", targetPath=str(work / "b")), timeout=10).ok
    assert (work / "b" / "payload").read_bytes() == b"P" * 1000

    assert s.DeleteCache(pb.DeleteCacheRequest(type="bundle-cache", ID="l0"), timeout=10).ok
    assert not os.path.exists(listed[0].savePath)
    code, _ = _status(s.GetCache, pb.GetCacheRequest(type="bundle-cache", ID="l0"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert epm.stop() == 0
    assert "unknown key surprise" in epm.stderr
    assert not os.path.exists(epm.sock)


@pytest.mark.parametrize("rpc, request_, code, needle", [
    ("GetCache", pb.GetCacheRequest(type="nope", ID="x"), grpc.StatusCode.INVALID_ARGUMENT, "no such pool"),
    ("GetCache", pb.GetCacheRequest(type="enclave-cache", ID=""), grpc.StatusCode.INVALID_ARGUMENT, "cache ID"),
    ("GetCache", pb.GetCacheRequest(type="enclave-cache", ID="missing"), grpc.StatusCode.NOT_FOUND, "not found"),
    ("SaveCache", pb.SaveCacheRequest(), grpc.StatusCode.INVALID_ARGUMENT, "no cache in the request"),
    ("SaveCache", pb.SaveCacheRequest(cache=pb.Cache(type="bundle-cache", ID="x"), sourcePath="/etc"),
     grpc.StatusCode.PERMISSION_DENIED, "not inside epm's root"),
    ("SaveCache", pb.SaveCacheRequest(cache=pb.Cache(type="bundle-cache", ID="x", savePath="/etc/passwd")),
     grpc.StatusCode.PERMISSION_DENIED, "savePath /etc/passwd"),
    ("SaveFinalCache", pb.SaveCacheRequest(cache=pb.Cache(type="enclave-cache", ID="zz")),
     grpc.StatusCode.NOT_FOUND, "not found"),
    ("ListCache", pb.ListCacheRequest(type="bundle-cache", limit=-5), grpc.StatusCode.INVALID_ARGUMENT, "limit -5"),
    ("DeleteCache", pb.DeleteCacheRequest(type="bundle-cache", ID="zz"), grpc.StatusCode.NOT_FOUND, "not found"),
    ("LoadCache", pb.LoadCacheRequest(type="bundle-cache", ID="zz", targetPath="/tmp/x"),
     grpc.StatusCode.NOT_FOUND, "not found"),
    ("PickCache", pb.PickCacheRequest(type="bundle-cache", filters={"parent": "x"}), grpc.StatusCode.INVALID_ARGUMENT,
     "filter 'parent': not supported"),
    ("PickCache", pb.PickCacheRequest(type="nope"), grpc.StatusCode.INVALID_ARGUMENT, "no such pool"),
    ("Healthz", pb.HealthzRequest(type="nope"), grpc.StatusCode.INVALID_ARGUMENT, "no such pool"),
])
def test_bad_input_is_a_status_with_a_one_line_detail(epm: Epm, rpc, request_, code, needle):
    epm.start()
    got, detail = _status(getattr(epm.stub, rpc), request_)
    assert got == code and needle in detail and "\n" not in detail


def test_oversized_message_is_refused(epm: Epm):
    epm.start()
    big = pb.SaveCacheRequest(cache=pb.Cache(type="enclave-cache", ID="big", subType="x" * (5 << 20)))
    code, _ = _status(epm.stub.SaveCache, big)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert epm.stub.Healthz(pb.HealthzRequest(), timeout=10).ok


def test_socket_is_owner_only(epm: Epm):
    epm.start()
    st = os.lstat(epm.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(os.path.dirname(epm.sock)).st_mode) == 0o700


def test_kill_9_keeps_committed_caches(epm: Epm):
    epm.start()
    src = Path(epm.root) / "in"
    src.mkdir()
    (src / "f").write_text("data")
    s = epm.stub
    s.SaveCache(pb.SaveCacheRequest(cache=pb.Cache(type="bundle-cache", ID="kept"), sourcePath=str(src)), timeout=10)
    s.SaveCache(pb.SaveCacheRequest(cache=pb.Cache(type="enclave-cache", ID="ready")), timeout=10)
    s.SaveFinalCache(pb.SaveCacheRequest(cache=pb.Cache(type="enclave-cache", ID="ready")), timeout=10)
    os.makedirs(os.path.join(epm.root, "data", ".tmp-interrupted"))  # what a copy cut short leaves
    assert epm.stop(signal.SIGKILL) == -signal.SIGKILL
    assert os.path.exists(epm.sock)  # the dead process's socket: the next start replaces it
    epm.start()
    s = epm.stub
    kept = s.GetCache(pb.GetCacheRequest(type="bundle-cache", ID="kept"), timeout=10).cache
    assert Path(kept.savePath, "f").read_text() == "data"
    assert [c.ID for c in s.PickCache(pb.PickCacheRequest(type="enclave-cache"), timeout=10).caches] == ["ready"]
    assert sorted(os.listdir(os.path.join(epm.root, "data"))) == [os.path.basename(kept.savePath)]


def test_bad_config_is_one_line_and_exit_1(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('root = "relative"\n')
    p = subprocess.run([sys.executable, "-m", "inclavare.cli.epm", "--config", str(cfg)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(SRC)), timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "root 'relative'" in p.stderr
    p = subprocess.run([sys.executable, "-m", "inclavare.cli.epm", "--bogus"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(SRC)), timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("epm: ")


def test_a_second_epm_on_a_live_root_or_socket_is_refused(epm: Epm):
    epm.start()
    env = dict(os.environ, PYTHONPATH=str(SRC))
    p = subprocess.run([sys.executable, "-m", "inclavare.cli.epm", "--config", epm.config], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 1 and "another epm is using it" in p.stderr  # same root: its sweep would eat copies
    other = os.path.join(epm.top, "other.toml")
    with open(other, "w") as f:
        f.write(f'root = "{epm.top}/root2"\n[grpc]\naddress = "{epm.sock}"\n')
    p = subprocess.run([sys.executable, "-m", "inclavare.cli.epm", "--config", other], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 1 and "another epm is serving it" in p.stderr
    assert epm.stub.Healthz(pb.HealthzRequest(), timeout=10).ok  # the first one still has its socket
