"""The served resources: device lists (upstream's ID shapes, 'sim-' in sim mode), Allocate's answer on an SGX
host (a fake /dev) and in sim mode, every refusal, health following the device nodes, preferred allocation."""

from __future__ import annotations

import pytest

from inclavare.services.sgxdeviceplugin import resources as R
from inclavare.services.sgxdeviceplugin.platform import DeviceNode
from inclavare.services.sgxdeviceplugin.resources import AllocationError, Mount


@pytest.fixture
def host(tmp_path):
    """A fake SGX host: /dev with the in-kernel nodes, and aesmd's directory."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "sgx_enclave").touch()
    (dev / "sgx_provision").touch()
    (tmp_path / "aesmd").mkdir()
    return tmp_path


def hw(host, **kw):
    args = dict(sim=False, epc_mib=4, enclave_limit=3, provision_limit=2, dev_dir=str(host / "dev"),
                aesmd_dir=str(host / "aesmd"))
    args.update(kw)
    return {r.name: r for r in R.build(**args)}


def test_device_lists_and_sockets(host):
    res = hw(host)
    assert list(res) == [R.EPC_MIB, R.ENCLAVE, R.PROVISION]
    assert [r.socket for r in res.values()] == ["sgx.sock", "sgx.intel.com-enclave.sock",
                                                "sgx.intel.com-provision.sock"]
    assert res[R.EPC_MIB].devices() == [(str(i), "Healthy") for i in range(4)]  # upstream numbers MiB devices
    assert res[R.ENCLAVE].devices() == [(f"sgx-enclave-{i}", "Healthy") for i in range(3)]
    assert res[R.PROVISION].devices() == [("sgx-provision-0", "Healthy"), ("sgx-provision-1", "Healthy")]
    sim = {r.name: r for r in R.build(sim=True, epc_mib=2, enclave_limit=1, provision_limit=1,
                                      names=(R.PROVISION, R.EPC_MIB))}
    assert list(sim) == [R.PROVISION, R.EPC_MIB]
    assert [i for i, _ in sim[R.EPC_MIB].devices()] == ["sim-epc-0", "sim-epc-1"]
    assert [i for i, _ in sim[R.PROVISION].devices()] == ["sim-sgx-provision-0"]


def test_allocate_on_an_sgx_host(host):
    res = hw(host)
    dev = str(host / "dev")
    got = res[R.EPC_MIB].allocate([["0", "1", "2"], ["3"]])
    enclave = [DeviceNode(dev + "/sgx_enclave", "/dev/sgx_enclave")]
    aesmd = [Mount(str(host / "aesmd"), "/var/run/aesmd")]
    assert [(a.envs, a.mounts, a.devices) for a in got] == [
        ({"INCLAVARE_ENCLAVE_TYPE": "intelSgx", "INCLAVARE_SGX_EPC_MIB": "3"}, aesmd, enclave),
        ({"INCLAVARE_ENCLAVE_TYPE": "intelSgx", "INCLAVARE_SGX_EPC_MIB": "1"}, aesmd, enclave)]
    (a,) = res[R.ENCLAVE].allocate([["sgx-enclave-2"]])
    assert (a.envs, a.mounts, a.devices) == ({"INCLAVARE_ENCLAVE_TYPE": "intelSgx"}, aesmd, enclave)
    (a,) = res[R.PROVISION].allocate([["sgx-provision-0"]])
    assert (a.mounts, a.devices) == ([], [DeviceNode(dev + "/sgx_provision", "/dev/sgx_provision")])


def test_no_aesmd_mount_when_the_host_has_no_aesmd(host):
    (host / "aesmd").rmdir()
    (a,) = hw(host)[R.EPC_MIB].allocate([["0"]])
    assert a.mounts == [] and a.devices


def test_allocate_in_sim_mode_gives_no_devices():
    res = {r.name: r for r in R.build(sim=True, epc_mib=4, enclave_limit=2, provision_limit=2)}
    (a,) = res[R.EPC_MIB].allocate([["sim-epc-0", "sim-epc-3"]])
    assert (a.envs, a.mounts, a.devices) == ({"INCLAVARE_ENCLAVE_TYPE": "sim", "INCLAVARE_SGX_EPC_MIB": "2"}, [], [])
    (a,) = res[R.PROVISION].allocate([["sim-sgx-provision-1"]])
    assert (a.envs, a.mounts, a.devices) == ({"INCLAVARE_ENCLAVE_TYPE": "sim"}, [], [])


@pytest.mark.parametrize(("requests", "code", "message"), [
    ([], "INVALID_ARGUMENT", "no container requests"),
    ([[]], "INVALID_ARGUMENT", "container request 0 names no device"),
    ([["9"]], "NOT_FOUND", "unknown alibabacloud.com/sgx_epc_MiB device '9'"),
    ([["sim-epc-0"]], "NOT_FOUND", "device 'sim-epc-0'"),
    ([["0", "0"]], "INVALID_ARGUMENT", "device '0' requested twice"),
    ([["0"], ["1", "0"]], "INVALID_ARGUMENT", "device '0' requested twice"),
    ([["0", "1", "2", "3", "4"]], "RESOURCE_EXHAUSTED", "5 devices requested, the node has 4"),
    ([["0", "1", "2"], ["3", "1"]], "RESOURCE_EXHAUSTED", "5 devices requested, the node has 4"),
    ([["x" * 64]], "INVALID_ARGUMENT", "is longer than 63 characters"),
    ([["bad\nid"]], "NOT_FOUND", r"device 'bad\\nid'"),
])
def test_allocate_refusals(host, requests, code, message):
    with pytest.raises(AllocationError, match=message) as e:
        hw(host)[R.EPC_MIB].allocate(requests)
    assert e.value.code == code
    assert "\n" not in str(e.value) and str(e.value).startswith("Allocate alibabacloud.com/sgx_epc_MiB: ")


def test_health_follows_the_device_nodes(host):
    res = hw(host)
    epc, prov = res[R.EPC_MIB], res[R.PROVISION]
    assert not epc.check_health()
    (host / "dev" / "sgx_enclave").unlink()
    assert epc.check_health() and not epc.check_health()  # changed once, then stable
    assert {h for _, h in epc.devices()} == {"Unhealthy"}
    assert {h for _, h in prov.devices()} == {"Healthy"}  # the provision node is still there
    with pytest.raises(AllocationError, match="the SGX device nodes are gone") as e:
        epc.allocate([["0"]])
    assert e.value.code == "FAILED_PRECONDITION"
    (host / "dev" / "isgx").touch()  # any enclave node will do
    assert epc.check_health() and epc.healthy
    assert epc.allocate([["0"]])[0].devices == [DeviceNode(str(host / "dev" / "isgx"), "/dev/isgx")]


def test_sim_devices_stay_healthy():
    (r,) = R.build(sim=True, epc_mib=1, enclave_limit=1, provision_limit=1, dev_dir="/nonexistent",
                   names=(R.ENCLAVE,))
    assert not r.check_health() and r.healthy


def test_a_host_that_lost_its_nodes_starts_unhealthy(host):
    (host / "dev" / "sgx_provision").unlink()
    assert not hw(host)[R.PROVISION].healthy


def test_preferred_allocation(host):
    epc = hw(host)[R.EPC_MIB]
    assert epc.preferred(["3", "1", "0", "2"], ["2"], 3) == ["2", "0", "1"]
    assert epc.preferred(["1"], [], 1) == ["1"]
    for args, message in [((["0", "9"], [], 1), "unknown"), ((["0"], ["1"], 1), "not available"),
                          ((["0", "1"], ["0"], 3), r"allocation size 3 outside \[1, 2\]"),
                          ((["0", "1"], ["0", "1"], 1), r"size 1 outside \[2, 2\]")]:
        with pytest.raises(AllocationError, match=message):
            epc.preferred(*args)


def test_unknown_resource_name():
    with pytest.raises(ValueError, match="sgx.intel.com/epc"):
        R.build(sim=True, epc_mib=1, enclave_limit=1, provision_limit=1, names=(R.EPC_BYTES,))
