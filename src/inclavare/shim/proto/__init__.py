"""Protobuf messages of the shim's wire: containerd's task API, events and runc options, the cgroups metrics,
ttrpc's envelope and google.rpc.Status, each written from the upstream contract (see the header of each
.proto) and generated with grpcio-tools."""
