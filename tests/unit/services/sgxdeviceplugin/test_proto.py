"""deviceplugin.proto keeps kubelet's device plugin API v1beta1 (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/
api.proto): package, both services, every RPC (and which one streams), every field's number, type and
cardinality, so kubelet and the plugin understand each other on the wire."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from inclavare.services.sgxdeviceplugin import server
from inclavare.services.sgxdeviceplugin.proto import deviceplugin_pb2 as pb

S, I64, I32, B, M = F.TYPE_STRING, F.TYPE_INT64, F.TYPE_INT32, F.TYPE_BOOL, F.TYPE_MESSAGE
R = "repeated"
# Facts from upstream's api.proto: field -> (number, type[, "repeated"]).
UPSTREAM: dict[str, dict[str, tuple]] = {
    "DevicePluginOptions": {"pre_start_required": (1, B), "get_preferred_allocation_available": (2, B)},
    "RegisterRequest": {"version": (1, S), "endpoint": (2, S), "resource_name": (3, S), "options": (4, M)},
    "Empty": {},
    "ListAndWatchResponse": {"devices": (1, M, R)},
    "TopologyInfo": {"nodes": (1, M, R)},
    "NUMANode": {"ID": (1, I64)},
    "Device": {"ID": (1, S), "health": (2, S), "topology": (3, M)},
    "PreStartContainerRequest": {"devices_ids": (1, S, R)},
    "PreStartContainerResponse": {},
    "PreferredAllocationRequest": {"container_requests": (1, M, R)},
    "ContainerPreferredAllocationRequest": {"available_deviceIDs": (1, S, R), "must_include_deviceIDs": (2, S, R),
                                            "allocation_size": (3, I32)},
    "PreferredAllocationResponse": {"container_responses": (1, M, R)},
    "ContainerPreferredAllocationResponse": {"deviceIDs": (1, S, R)},
    "AllocateRequest": {"container_requests": (1, M, R)},
    "ContainerAllocateRequest": {"devices_ids": (1, S, R)},
    "CDIDevice": {"name": (1, S)},
    "AllocateResponse": {"container_responses": (1, M, R)},
    "ContainerAllocateResponse": {"envs": (1, M, R), "mounts": (2, M, R), "devices": (3, M, R),
                                  "annotations": (4, M, R), "cdi_devices": (5, M, R)},
    "Mount": {"container_path": (1, S), "host_path": (2, S), "read_only": (3, B)},
    "DeviceSpec": {"container_path": (1, S), "host_path": (2, S), "permissions": (3, S)},
}
MESSAGE_TYPES = {
    ("RegisterRequest", "options"): "DevicePluginOptions", ("ListAndWatchResponse", "devices"): "Device",
    ("TopologyInfo", "nodes"): "NUMANode", ("Device", "topology"): "TopologyInfo",
    ("PreferredAllocationRequest", "container_requests"): "ContainerPreferredAllocationRequest",
    ("PreferredAllocationResponse", "container_responses"): "ContainerPreferredAllocationResponse",
    ("AllocateRequest", "container_requests"): "ContainerAllocateRequest",
    ("AllocateResponse", "container_responses"): "ContainerAllocateResponse",
    ("ContainerAllocateResponse", "mounts"): "Mount", ("ContainerAllocateResponse", "devices"): "DeviceSpec",
    ("ContainerAllocateResponse", "cdi_devices"): "CDIDevice",
}


def _shape(f: F) -> tuple:
    return (f.number, f.type, R) if f.is_repeated else (f.number, f.type)


def test_messages_have_upstreams_fields():
    assert pb.DESCRIPTOR.package == "v1beta1"
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(UPSTREAM)
    for name, fields in UPSTREAM.items():
        desc = pb.DESCRIPTOR.message_types_by_name[name]
        assert desc.full_name == f"v1beta1.{name}"
        assert {f.name: _shape(f) for f in desc.fields} == fields, name
    for (msg, fld), target in MESSAGE_TYPES.items():
        assert pb.DESCRIPTOR.message_types_by_name[msg].fields_by_name[fld].message_type.full_name == \
            f"v1beta1.{target}"


def test_envs_and_annotations_are_string_maps():
    for fld in ("envs", "annotations"):
        entry = pb.ContainerAllocateResponse.DESCRIPTOR.fields_by_name[fld].message_type
        assert entry.GetOptions().map_entry
        assert [(f.name, f.type) for f in entry.fields] == [("key", S), ("value", S)]


def test_services_have_upstreams_methods():
    reg = pb.DESCRIPTOR.services_by_name["Registration"]
    assert reg.full_name == "v1beta1.Registration"
    assert [(m.name, m.input_type.name, m.output_type.name) for m in reg.methods] == \
        [("Register", "RegisterRequest", "Empty")]
    dp = pb.DESCRIPTOR.services_by_name["DevicePlugin"]
    assert dp.full_name == "v1beta1.DevicePlugin"
    got = {m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
           for m in dp.methods}
    assert got == {
        "GetDevicePluginOptions": ("Empty", "DevicePluginOptions", False, False),
        "ListAndWatch": ("Empty", "ListAndWatchResponse", False, True),
        "GetPreferredAllocation": ("PreferredAllocationRequest", "PreferredAllocationResponse", False, False),
        "Allocate": ("AllocateRequest", "AllocateResponse", False, False),
        "PreStartContainer": ("PreStartContainerRequest", "PreStartContainerResponse", False, False),
    }


def test_register_request_wire_bytes():
    """The bytes kubelet decodes: tags 1-4 as length-delimited fields, the options' bools as varints 1 and 2."""
    req = pb.RegisterRequest(version="v1beta1", endpoint="sgx.sock", resource_name="a.b/c",
                             options=pb.DevicePluginOptions(pre_start_required=True,
                                                            get_preferred_allocation_available=True))
    assert req.SerializeToString() == (b"\x0a\x07v1beta1" b"\x12\x08sgx.sock" b"\x1a\x05a.b/c"
                                       b"\x22\x04\x08\x01\x10\x01")


def test_constants_are_kubelets():
    assert server.VERSION == "v1beta1"
    assert server.KUBELET_SOCKET == "/var/lib/kubelet/device-plugins/kubelet.sock"
    assert server.DEVICE_PLUGIN_DIR == "/var/lib/kubelet/device-plugins"
