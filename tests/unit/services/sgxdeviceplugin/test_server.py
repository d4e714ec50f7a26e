"""The plugin's gRPC servers and registration loop in-process, against the fake kubelet: RPC answers and
statuses, health changes re-sent on ListAndWatch, registration retried until kubelet takes it, sockets replaced
when stale and removed on stop, the stream cap."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from inclavare.services.sgxdeviceplugin import resources as R
from inclavare.services.sgxdeviceplugin.errors import DevicePluginError
from inclavare.services.sgxdeviceplugin.proto import deviceplugin_pb2 as pb
from inclavare.services.sgxdeviceplugin.proto import deviceplugin_pb2_grpc as pb_grpc
from inclavare.services.sgxdeviceplugin.server import MAX_STREAMS, Manager
from inclavare.testing.fake_kubelet import FakeKubelet


@pytest.fixture
def top() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="sgxdp-", dir="/tmp")  # unix socket paths must stay short
    os.mkdir(os.path.join(d, "dp"))
    os.mkdir(os.path.join(d, "dev"))
    open(os.path.join(d, "dev", "sgx_enclave"), "w").close()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Plugin:
    def __init__(self, top: str, sim: bool = False, names: tuple[str, ...] = (R.EPC_MIB, R.ENCLAVE)) -> None:
        self.logs: list[str] = []
        self.dir = os.path.join(top, "dp")
        res = R.build(sim=sim, epc_mib=4, enclave_limit=2, provision_limit=1, dev_dir=os.path.join(top, "dev"),
                      aesmd_dir=os.path.join(top, "aesmd"), names=names)
        self.mgr = Manager(res, self.dir, os.path.join(self.dir, "kubelet.sock"), self.logs.append)


@pytest.fixture
def kubelet(top) -> Iterator[FakeKubelet]:
    k = FakeKubelet(os.path.join(top, "dp")).start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def plugin(top) -> Iterator[Plugin]:
    p = Plugin(top)
    try:
        yield p
    finally:
        p.mgr.stop()


def test_rpcs_through_kubelet(kubelet, plugin):
    plugin.mgr.start()
    eps = kubelet.wait_registered({R.EPC_MIB, R.ENCLAVE})
    assert eps[R.EPC_MIB].options == pb.DevicePluginOptions(pre_start_required=False,
                                                            get_preferred_allocation_available=True)
    stub = kubelet.stub(R.EPC_MIB)
    resp = stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["1"])]))
    (c,) = resp.container_responses
    assert dict(c.envs) == {"INCLAVARE_ENCLAVE_TYPE": "intelSgx", "INCLAVARE_SGX_EPC_MIB": "1"}
    assert [(d.container_path, d.host_path, d.permissions) for d in c.devices] == \
        [("/dev/sgx_enclave", os.path.join(plugin.mgr.servers[0].resource.dev_dir, "sgx_enclave"), "rw")]
    assert list(c.mounts) == []  # no aesmd directory on this fake host
    pref = stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[
        pb.ContainerPreferredAllocationRequest(available_deviceIDs=["3", "2", "0"], must_include_deviceIDs=["3"],
                                               allocation_size=2)]))
    assert [list(r.deviceIDs) for r in pref.container_responses] == [["3", "0"]]
    assert stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["1"])) == pb.PreStartContainerResponse()
    with pytest.raises(grpc.RpcError) as e:
        stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["7"])]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "Allocate alibabacloud.com/sgx_epc_MiB: unknown alibabacloud.com/sgx_epc_MiB " \
        "device '7'"
    with pytest.raises(grpc.RpcError) as e:
        stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[
            pb.ContainerPreferredAllocationRequest(available_deviceIDs=["0"], allocation_size=2)]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_change_is_resent_on_list_and_watch(top, kubelet, plugin):
    plugin.mgr.start()
    kubelet.wait_registered({R.EPC_MIB, R.ENCLAVE})
    assert {h for _, h in kubelet.devices(R.EPC_MIB)} == {"Healthy"}
    os.unlink(os.path.join(top, "dev", "sgx_enclave"))
    plugin.mgr.tick()
    kubelet.wait(lambda: len(kubelet.endpoints[R.EPC_MIB].lists) == 2, what="a second device list")
    assert kubelet.devices(R.EPC_MIB) == [(str(i), "Unhealthy") for i in range(4)]
    assert "alibabacloud.com/sgx_epc_MiB: devices now Unhealthy" in plugin.logs
    open(os.path.join(top, "dev", "sgx_enclave"), "w").close()
    plugin.mgr.tick()
    kubelet.wait(lambda: len(kubelet.endpoints[R.ENCLAVE].lists) == 3, what="a third device list")
    assert {h for _, h in kubelet.devices(R.ENCLAVE)} == {"Healthy"}


def test_registration_waits_for_kubelet_and_retries_refusals(top, plugin):
    plugin.mgr.start()  # no kubelet yet: serving, nothing registered, nothing logged as failed
    assert plugin.mgr.registrations == 0 and not any("register" in m for m in plugin.logs)
    k = FakeKubelet(os.path.join(top, "dp"))
    k.refuse = 3
    k.start()
    try:
        plugin.mgr.tick()  # both refused
        plugin.mgr.tick()  # one refused, one taken
        refusals = [m for m in plugin.logs if "registration refused by the test" in m]
        assert len(refusals) == 2  # one line per resource, not one per attempt
        assert refusals[0].startswith("register alibabacloud.com/sgx_epc_MiB with ") and \
            refusals[0].endswith(": FAILED_PRECONDITION registration refused by the test; will retry")
        plugin.mgr.tick()
        assert [r.resource_name for r in k.requests] == [R.ENCLAVE, R.EPC_MIB]
        plugin.mgr.tick()  # nothing pending: no new registration
        assert len(k.requests) == 2
        k.wait_registered({R.EPC_MIB, R.ENCLAVE})
    finally:
        k.stop()


def test_kubelet_restart_recreates_sockets_and_registers_again(kubelet, plugin):
    plugin.mgr.start()
    kubelet.wait_registered({R.EPC_MIB, R.ENCLAVE})
    kubelet.restart()
    assert sorted(os.listdir(plugin.dir)) == ["kubelet.sock"]
    plugin.mgr.tick()
    assert sorted(os.listdir(plugin.dir)) == ["kubelet.sock", "sgx.intel.com-enclave.sock", "sgx.sock"]
    assert [r.resource_name for r in kubelet.requests] == [R.EPC_MIB, R.ENCLAVE] * 2
    kubelet.wait_registered({R.EPC_MIB, R.ENCLAVE})
    assert kubelet.devices(R.ENCLAVE) == [("sgx-enclave-0", "Healthy"), ("sgx-enclave-1", "Healthy")]


def test_stale_socket_replaced_foreign_file_refused_stop_removes_ours(top, plugin):
    path = os.path.join(plugin.dir, "sgx.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # what a killed plugin leaves behind
    stale.close()
    plugin.mgr.start()
    assert plugin.mgr.servers[0].socket_present()
    assert os.stat(path).st_mode & 0o077 == 0  # bound under umask 077: only its owner (root, as kubelet) connects
    with grpc.insecure_channel("unix:" + path) as ch:
        assert pb_grpc.DevicePluginStub(ch).GetDevicePluginOptions(pb.Empty(), timeout=10).\
            get_preferred_allocation_available
    plugin.mgr.stop()
    assert os.listdir(plugin.dir) == []
    with open(path, "w") as f:
        f.write("not ours")
    with pytest.raises(DevicePluginError, match=r"sgx.sock: exists and is not a socket; refusing to replace it$"):
        Plugin(top).mgr.start()
    assert open(path).read() == "not ours"


def test_list_and_watch_stream_cap(kubelet, top):
    p = Plugin(top, sim=True, names=(R.ENCLAVE,))
    p.mgr.start()
    try:
        kubelet.wait_registered({R.ENCLAVE})  # kubelet's own stream is the first
        with grpc.insecure_channel("unix:" + p.mgr.servers[0].path) as ch:
            stub = pb_grpc.DevicePluginStub(ch)
            streams = [stub.ListAndWatch(pb.Empty()) for _ in range(MAX_STREAMS - 1)]
            for s in streams:
                assert [d.ID for d in next(s).devices] == ["sim-sgx-enclave-0", "sim-sgx-enclave-1"]
            extra = stub.ListAndWatch(pb.Empty())
            with pytest.raises(grpc.RpcError) as e:
                next(extra)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for s in streams:
                s.cancel()
    finally:
        p.mgr.stop()
