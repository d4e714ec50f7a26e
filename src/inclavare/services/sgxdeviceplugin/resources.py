"""The resources the plugin advertises, as plain data: their device lists, health, and what Allocate gives a
container. No gRPC here (server.py turns these into v1beta1 messages).

* ``alibabacloud.com/sgx_epc_MiB`` (AliyunContainerService/sgx-device-plugin's resource, socket ``sgx.sock``):
  one device per MiB of EPC, IDs ``"0"`` .. ``"N-1"`` as upstream numbers them; a container gets the enclave
  device nodes and the aesmd directory. A pod asks for EPC with ``alibabacloud.com/sgx_epc_MiB: 64``.
* ``sgx.intel.com/enclave`` and ``sgx.intel.com/provision`` (Intel's device plugin resources, sockets
  ``sgx.intel.com-enclave.sock`` / ``sgx.intel.com-provision.sock``): a fixed number of shareable slots (IDs
  ``sgx-enclave-<i>`` / ``sgx-provision-<i>``, Intel's default 110, the kubelet's default pod limit), giving
  the enclave node (plus the aesmd directory) or the provision node.
* ``sgx.intel.com/epc`` is not served here: Intel counts it in bytes, and a device plugin can only count
  devices (one per byte would be ~10^8 list entries). Like Intel's, it is a node-level extended resource; this
  plugin only reports the byte count (its ready line, and optionally an NFD feature file, see platform.py).

Sim mode (no SGX device node, or asked for): a simulated capacity, every device ID starting ``sim-``, no device
nodes or mounts, and ``INCLAVARE_ENCLAVE_TYPE=sim`` in the container's environment. The variable is
informational: it is deliberately not rune's ``ENCLAVE_TYPE`` (rune would then demand an enclave runtime path
for every container of the pod).

Health: a hardware resource is Healthy while its device nodes exist; when the nodes vanish (driver unloaded)
every device turns Unhealthy, and back when they return. Sim devices are always Healthy.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from inclavare.services.sgxdeviceplugin import platform
from inclavare.services.sgxdeviceplugin.platform import DeviceNode

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
MAX_ID_LEN = 63                     # the API's limit on a device ID
MAX_DEVICES = 1 << 20               # 1 TiB of EPC in MiB devices: bounds every list we build or accept

EPC_MIB = "alibabacloud.com/sgx_epc_MiB"
ENCLAVE = "sgx.intel.com/enclave"
PROVISION = "sgx.intel.com/provision"
EPC_BYTES = "sgx.intel.com/epc"     # reported, not served (see the module docstring)
SOCKETS = {EPC_MIB: "sgx.sock", ENCLAVE: "sgx.intel.com-enclave.sock", PROVISION: "sgx.intel.com-provision.sock"}
ALL = (EPC_MIB, ENCLAVE, PROVISION)

ENV_TYPE = "INCLAVARE_ENCLAVE_TYPE"
ENV_EPC_MIB = "INCLAVARE_SGX_EPC_MIB"
TYPE_SGX = "intelSgx"
TYPE_SIM = "sim"


class AllocationError(Exception):
    """A request the resource refuses; ``code`` is the gRPC status name, the message one line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerAllocation:
    """What one container gets: environment, mounts and device nodes (permissions ``rw``)."""

    envs: dict[str, str]
    mounts: list[Mount]
    devices: list[DeviceNode]


@dataclass
class Resource:
    """One advertised resource: its name, its socket's base name, its device IDs and how a container uses them.

    ``device_names`` are the names (under ``dev_dir``) a container receives; on hardware their presence is the
    health of every device. ``mount_aesmd`` passes ``aesmd_dir`` through when it exists on the host.
    """

    name: str
    socket: str
    ids: list[str]
    sim: bool
    dev_dir: str = "/dev"
    device_names: tuple[str, ...] = ()
    mount_aesmd: bool = False
    aesmd_dir: str = platform.AESMD_DIR
    epc_units: bool = False         # each device is one MiB of EPC (sets INCLAVARE_SGX_EPC_MIB)
    healthy: bool = True
    _known: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._known = frozenset(self.ids)

    def devices(self) -> list[tuple[str, str]]:
        """The (ID, health) list ListAndWatch sends."""
        health = HEALTHY if self.healthy else UNHEALTHY
        return [(i, health) for i in self.ids]

    def check_health(self) -> bool:
        """Re-read the device nodes; True when the health changed (the caller then re-sends the list)."""
        if self.sim:
            return False
        now = bool(platform.device_nodes(self.dev_dir, self.device_names))
        with self._lock:
            changed, self.healthy = now != self.healthy, now
        return changed

    def _check_ids(self, ids: list[str], what: str) -> None:
        if len(ids) > len(self.ids):
            raise AllocationError("RESOURCE_EXHAUSTED", f"{what}: {len(ids)} devices of {self.name} requested, "
                                  f"the node has {len(self.ids)}")
        for i in ids:
            if len(i) > MAX_ID_LEN:
                raise AllocationError("INVALID_ARGUMENT", f"{what}: device ID {i[:20]!r}... is longer than "
                                      f"{MAX_ID_LEN} characters")
            if i not in self._known:
                raise AllocationError("NOT_FOUND", f"{what}: unknown {self.name} device {i!r}")

    def allocate(self, requests: list[list[str]]) -> list[ContainerAllocation]:
        """What each container of one Allocate call gets. Refuses (AllocationError): an empty request, unknown or
        over-long IDs, an ID asked twice, more devices than the node has (per container and in total), and any
        request while the hardware is unhealthy."""
        what = f"Allocate {self.name}"
        if not requests:
            raise AllocationError("INVALID_ARGUMENT", f"{what}: no container requests")
        total = sum(len(r) for r in requests)
        if total > len(self.ids):
            raise AllocationError("RESOURCE_EXHAUSTED", f"{what}: {total} devices requested, the node has "
                                  f"{len(self.ids)}")
        seen: set[str] = set()
        for n, r in enumerate(requests):
            if not r:
                raise AllocationError("INVALID_ARGUMENT", f"{what}: container request {n} names no device")
            self._check_ids(r, what)
            for i in r:
                if i in seen:
                    raise AllocationError("INVALID_ARGUMENT", f"{what}: device {i!r} requested twice")
                seen.add(i)
        if not self.healthy:
            raise AllocationError("FAILED_PRECONDITION", f"Allocate {self.name}: the SGX device nodes are gone "
                                  f"({', '.join(self.device_names)} under {self.dev_dir})")
        return [self._one(len(r)) for r in requests]

    def _one(self, count: int) -> ContainerAllocation:
        envs = {ENV_TYPE: TYPE_SIM if self.sim else TYPE_SGX}
        if self.epc_units:
            envs[ENV_EPC_MIB] = str(count)
        if self.sim:
            return ContainerAllocation(envs, [], [])
        mounts = []
        if self.mount_aesmd and os.path.isdir(self.aesmd_dir):
            mounts.append(Mount(self.aesmd_dir, platform.AESMD_DIR))
        return ContainerAllocation(envs, mounts, platform.device_nodes(self.dev_dir, self.device_names))

    def preferred(self, available: list[str], must: list[str], size: int) -> list[str]:
        """GetPreferredAllocation for one container: ``must`` first, then the available IDs in list order, up to
        ``size``. Refuses unknown IDs, a size below ``len(must)`` or above what is available."""
        what = f"GetPreferredAllocation {self.name}"
        self._check_ids(available, what)
        self._check_ids(must, what)
        avail = set(available)
        if not set(must) <= avail:
            raise AllocationError("INVALID_ARGUMENT", f"{what}: a must-include device is not available")
        if not len(must) <= size <= len(avail):
            raise AllocationError("INVALID_ARGUMENT", f"{what}: allocation size {size} outside "
                                  f"[{len(must)}, {len(avail)}]")
        out = list(dict.fromkeys(must))
        chosen = set(out)
        order = {i: n for n, i in enumerate(self.ids)}
        for i in sorted(avail - chosen, key=order.__getitem__):
            if len(out) >= size:
                break
            out.append(i)
        return out


def build(*, sim: bool, epc_mib: int, enclave_limit: int, provision_limit: int, dev_dir: str = "/dev",
          aesmd_dir: str = platform.AESMD_DIR, names: tuple[str, ...] = ALL) -> list[Resource]:
    """The resources to serve (``names``, in that order). In sim mode every device ID starts with ``sim-``."""
    prefix = "sim-" if sim else ""
    out: list[Resource] = []
    for name in names:
        if name == EPC_MIB:
            ids = [f"sim-epc-{i}" if sim else str(i) for i in range(epc_mib)]  # upstream numbers MiB devices
            out.append(Resource(name, SOCKETS[name], ids, sim, dev_dir, platform.ENCLAVE_NODES, True, aesmd_dir,
                                epc_units=True))
        elif name == ENCLAVE:
            out.append(Resource(name, SOCKETS[name], [f"{prefix}sgx-enclave-{i}" for i in range(enclave_limit)],
                                sim, dev_dir, platform.ENCLAVE_NODES, True, aesmd_dir))
        elif name == PROVISION:
            out.append(Resource(name, SOCKETS[name], [f"{prefix}sgx-provision-{i}" for i in
                                                      range(provision_limit)],
                                sim, dev_dir, platform.PROVISION_NODES, False, aesmd_dir))
        else:
            raise ValueError(f"unknown resource {name!r}")
    for r in out:
        r.check_health()
    return out
