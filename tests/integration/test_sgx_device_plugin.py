"""The real `inclavare-sgx-device-plugin` process against a fake kubelet (inclavare.testing.fake_kubelet, the real
v1beta1 Registration API on a temporary kubelet.sock, calling the plugin back as kubelet does): registration
fields, sim capacity, Allocate's answer and refusals, kubelet restarts, SIGTERM and SIGKILL, and hardware mode on
a fake /dev."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from inclavare.services.sgxdeviceplugin.proto import deviceplugin_pb2 as pb
from inclavare.testing.fake_kubelet import FakeKubelet
from tests.conftest import SRC

EPC, ENCLAVE, PROVISION = "alibabacloud.com/sgx_epc_MiB", "sgx.intel.com/enclave", "sgx.intel.com/provision"
ALL = {EPC, ENCLAVE, PROVISION}
SOCKETS = {EPC: "sgx.sock", ENCLAVE: "sgx.intel.com-enclave.sock", PROVISION: "sgx.intel.com-provision.sock"}


class Proc:
    """One plugin process; stderr goes to a file (read after it ends)."""

    def __init__(self, top: str, *args: str) -> None:
        logs = os.path.join(top, "logs")
        self.errpath = os.path.join(logs, f"stderr.{len(os.listdir(logs))}")
        self.err = open(self.errpath, "w")
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.sgx_device_plugin",
                                      "--device-plugin-dir", os.path.join(top, "dp"), "--interval", "0.1", *args],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"the plugin did not start: {self.stderr()}")
        self.ready = json.loads(line)

    def stderr(self) -> str:
        with open(self.errpath) as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(20)
        self.err.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc


@pytest.fixture
def top() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="sgxdp-", dir="/tmp")  # unix socket paths must stay short
    for sub in ("dp", "dev", "logs"):
        os.mkdir(os.path.join(d, sub))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def kubelet(top) -> Iterator[FakeKubelet]:
    k = FakeKubelet(os.path.join(top, "dp")).start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def start(top) -> Iterator:
    procs: list[Proc] = []

    def run(*args: str) -> Proc:
        p = Proc(top, "--dev-dir", os.path.join(top, "dev"), *args)
        procs.append(p)
        return p
    yield run
    for p in procs:
        if p.proc.poll() is None:
            p.stop(signal.SIGKILL)


def alloc(*containers: list[str]) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=c) for c in containers])


def test_sim_plugin_registers_lists_and_allocates(top, kubelet, start):
    nfd = os.path.join(top, "sgx-epc")
    p = start("--sim-epc-mib", "16", "--enclave-limit", "2", "--provision-limit", "1", "--epc-nfd-file", nfd)
    dp = os.path.join(top, "dp")
    assert p.ready == {"ready": True, "mode": "sim", "epc_bytes": 16 << 20, "kubelet_socket": dp + "/kubelet.sock",
                       "resources": {EPC: {"socket": dp + "/sgx.sock", "devices": 16},
                                     ENCLAVE: {"socket": dp + "/sgx.intel.com-enclave.sock", "devices": 2},
                                     PROVISION: {"socket": dp + "/sgx.intel.com-provision.sock", "devices": 1}}}
    eps = kubelet.wait_registered(ALL)
    for name, ep in eps.items():
        assert (ep.request.version, ep.request.endpoint, ep.request.resource_name) == ("v1beta1", SOCKETS[name], name)
        want = pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)
        assert ep.request.options == want and ep.options == want
    assert kubelet.devices(EPC) == [(f"sim-epc-{i}", "Healthy") for i in range(16)]
    assert kubelet.devices(ENCLAVE) == [("sim-sgx-enclave-0", "Healthy"), ("sim-sgx-enclave-1", "Healthy")]
    assert kubelet.devices(PROVISION) == [("sim-sgx-provision-0", "Healthy")]

    resp = kubelet.stub(EPC).Allocate(alloc(["sim-epc-0", "sim-epc-5", "sim-epc-9"], ["sim-epc-15"]))
    assert [(dict(c.envs), list(c.mounts), list(c.devices)) for c in resp.container_responses] == [
        ({"INCLAVARE_ENCLAVE_TYPE": "sim", "INCLAVARE_SGX_EPC_MIB": "3"}, [], []),
        ({"INCLAVARE_ENCLAVE_TYPE": "sim", "INCLAVARE_SGX_EPC_MIB": "1"}, [], [])]
    (c,) = kubelet.stub(PROVISION).Allocate(alloc(["sim-sgx-provision-0"])).container_responses
    assert (dict(c.envs), list(c.devices)) == ({"INCLAVARE_ENCLAVE_TYPE": "sim"}, [])
    assert kubelet.stub(ENCLAVE).PreStartContainer(pb.PreStartContainerRequest(devices_ids=["sim-sgx-enclave-0"])) \
        == pb.PreStartContainerResponse()

    for stub, req, code, detail in [
        (kubelet.stub(EPC), alloc(["0"]), grpc.StatusCode.NOT_FOUND,
         f"Allocate {EPC}: unknown {EPC} device '0'"),
        (kubelet.stub(EPC), alloc([f"sim-epc-{i}" for i in range(16)], ["sim-epc-0"]),
         grpc.StatusCode.RESOURCE_EXHAUSTED, f"Allocate {EPC}: 17 devices requested, the node has 16"),
        (kubelet.stub(ENCLAVE), alloc(["sim-sgx-enclave-1"], ["sim-sgx-enclave-1"]), grpc.StatusCode.INVALID_ARGUMENT,
         f"Allocate {ENCLAVE}: device 'sim-sgx-enclave-1' requested twice"),
        (kubelet.stub(PROVISION), alloc(), grpc.StatusCode.INVALID_ARGUMENT,
         f"Allocate {PROVISION}: no container requests"),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            stub.Allocate(req, timeout=10)
        assert (e.value.code(), e.value.details()) == (code, detail)
    with open(nfd) as f:
        assert f.read() == f"sgx.intel.com/epc={16 << 20}\n"
    assert p.stop() == 0
    err = p.stderr()
    assert f"SIMULATED SGX (no SGX device (sgx_enclave, sgx/enclave, isgx) under {top}/dev): advertising 16 MiB" \
        in err
    assert f"wrote sgx.intel.com/epc={16 << 20} (simulated) to {nfd}" in err
    assert f"Allocate {EPC}: 17 devices requested, the node has 16" in err


def test_kubelet_restart_then_sigterm(top, kubelet, start):
    p = start("--sim", "--sim-epc-mib", "4")
    kubelet.wait_registered(ALL)
    kubelet.restart()  # kubelet wipes the directory and serves a new kubelet.sock
    kubelet.wait_registered(ALL)
    assert sorted(r.resource_name for r in kubelet.requests) == sorted([*ALL, *ALL])
    assert sorted(os.listdir(os.path.join(top, "dp"))) == sorted(["kubelet.sock", *SOCKETS.values()])
    (c,) = kubelet.stub(EPC).Allocate(alloc(["sim-epc-3"])).container_responses
    assert c.envs["INCLAVARE_SGX_EPC_MIB"] == "1"
    assert p.stop() == 0
    assert os.listdir(os.path.join(top, "dp")) == ["kubelet.sock"]  # ours removed, kubelet's left alone
    err = p.stderr()
    assert "kubelet.sock was recreated (kubelet restarted); registering again" in err
    for sock in SOCKETS.values():  # kubelet removed them; the plugin served them again
        assert f"{top}/dp/{sock} is gone (kubelet restart?); serving it again" in err
    assert err.count(f"registered {EPC} with kubelet (endpoint sgx.sock)") == 2
    assert err.rstrip().endswith("inclavare-sgx-device-plugin: stopped")


def test_killed_plugin_restarts_over_its_stale_sockets(top, kubelet, start):
    p = start("--sim", "--resources", f"{ENCLAVE},{EPC}")
    kubelet.wait_registered({ENCLAVE, EPC})
    assert p.stop(signal.SIGKILL) == -signal.SIGKILL
    stale = os.path.join(top, "dp", "sgx.sock")
    assert os.path.exists(stale)  # nothing cleaned up after kill -9
    kubelet.wait(lambda: all(kubelet.endpoints[n].stream_error for n in (ENCLAVE, EPC)),
                 what="kubelet's ListAndWatch streams to end")
    p2 = start("--sim", "--resources", f"{ENCLAVE},{EPC}")
    kubelet.wait(lambda: len(kubelet.requests) == 4, what="the restarted plugin's registrations")
    kubelet.wait_registered({ENCLAVE, EPC})
    assert [r.resource_name for r in kubelet.requests[2:]] == [ENCLAVE, EPC]
    (c,) = kubelet.stub(ENCLAVE).Allocate(alloc(["sim-sgx-enclave-7"])).container_responses
    assert c.envs["INCLAVARE_ENCLAVE_TYPE"] == "sim"
    assert p2.stop() == 0
    assert os.listdir(os.path.join(top, "dp")) == ["kubelet.sock"]


def test_hardware_mode_on_a_fake_dev(top, kubelet, start):
    for node in ("sgx_enclave", "sgx_provision"):
        open(os.path.join(top, "dev", node), "w").close()
    aesmd = os.path.join(top, "aesmd")
    os.mkdir(aesmd)
    sysfs = os.path.join(top, "sys")
    for node, size in ((0, 3 << 20), (1, (2 << 20) + 4096)):  # the kernel's per-NUMA-node EPC bytes
        os.makedirs(os.path.join(sysfs, f"node{node}", "x86"))
        with open(os.path.join(sysfs, f"node{node}", "x86", "sgx_total_bytes"), "w") as f:
            f.write(f"{size}\n")
    p = start("--enclave-limit", "3", "--provision-limit", "2", "--aesmd-dir", aesmd, "--sysfs-nodes", sysfs)
    assert (p.ready["mode"], p.ready["epc_bytes"]) == ("sgx", 5 << 20)  # whole MiB only
    kubelet.wait_registered(ALL)
    assert kubelet.devices(EPC) == [(str(i), "Healthy") for i in range(5)]
    (c,) = kubelet.stub(EPC).Allocate(alloc(["4", "0"])).container_responses
    assert dict(c.envs) == {"INCLAVARE_ENCLAVE_TYPE": "intelSgx", "INCLAVARE_SGX_EPC_MIB": "2"}
    assert [d.host_path for d in c.devices] == [os.path.join(top, "dev", "sgx_enclave")]
    assert [m.host_path for m in c.mounts] == [aesmd]
    assert kubelet.devices(ENCLAVE) == [(f"sgx-enclave-{i}", "Healthy") for i in range(3)]
    (c,) = kubelet.stub(ENCLAVE).Allocate(alloc(["sgx-enclave-0"])).container_responses
    assert dict(c.envs) == {"INCLAVARE_ENCLAVE_TYPE": "intelSgx"}
    assert [(d.container_path, d.host_path, d.permissions) for d in c.devices] == \
        [("/dev/sgx_enclave", os.path.join(top, "dev", "sgx_enclave"), "rw")]
    assert [(m.container_path, m.host_path, m.read_only) for m in c.mounts] == [("/var/run/aesmd", aesmd, False)]
    (c,) = kubelet.stub(PROVISION).Allocate(alloc(["sgx-provision-1"])).container_responses
    assert [d.container_path for d in c.devices] == ["/dev/sgx_provision"] and list(c.mounts) == []
    os.unlink(os.path.join(top, "dev", "sgx_provision"))  # the driver goes away: re-sent as Unhealthy
    kubelet.wait(lambda: kubelet.endpoints[PROVISION].lists[-1][0][1] == "Unhealthy", what="Unhealthy devices")
    assert {h for _, h in kubelet.devices(ENCLAVE)} == {"Healthy"}
    with pytest.raises(grpc.RpcError) as e:
        kubelet.stub(PROVISION).Allocate(alloc(["sgx-provision-0"]), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert p.stop() == 0
    assert "SGX host: 5 MiB of EPC" in p.stderr()
    assert f"{PROVISION}: devices now Unhealthy" in p.stderr()


def test_sgx_host_with_unknown_epc_advertises_none(top, kubelet, start):
    open(os.path.join(top, "dev", "isgx"), "w").close()  # the out-of-tree driver's node
    os.makedirs(os.path.join(top, "sys", "node0", "x86"))
    with open(os.path.join(top, "sys", "node0", "x86", "sgx_total_bytes"), "w") as f:
        f.write("garbage")
    p = start("--resources", EPC, "--sysfs-nodes", os.path.join(top, "sys"))
    assert (p.ready["mode"], p.ready["epc_bytes"]) == ("sgx", 0)
    kubelet.wait(lambda: EPC in kubelet.endpoints and kubelet.endpoints[EPC].lists, what="a device list")
    assert kubelet.devices(EPC) == []
    assert p.stop() == 0
    assert "warning: EPC size unknown (EPC size: " in p.stderr()
    assert f"is not a byte count); {EPC} advertises no devices" in p.stderr()
