"""The shim's protobuf messages (src/inclavare/shim/proto): generated code current, and every message, field,
enum and service the same as containerd's own.

containerd's Go binaries carry the descriptors of the .proto files they were built from (gogo/golang protobuf
register each file as a gzipped FileDescriptorProto). The contract test reads them out of the installed
``containerd-shim-runc-v2`` and compares names, numbers, types and labels with ours, so a typo in a
transcribed field number cannot pass. It is skipped where containerd is not installed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from inclavare.shim.proto.cgroups import v1_metrics_pb2, v2_metrics_pb2
from inclavare.shim.proto.events import task_pb2 as events_pb2
from inclavare.shim.proto.events import ttrpc_pb2 as events_ttrpc_pb2
from inclavare.shim.proto.rpc import status_pb2
from inclavare.shim.proto.runc import oci_pb2
from inclavare.shim.proto.runtimeoptions import api_pb2 as runtimeoptions_pb2
from inclavare.shim.proto.task import shim_pb2
from inclavare.shim.proto.ttrpc import request_pb2
from inclavare.shim.proto.types import mount_pb2
from inclavare.shim.proto.types import task_pb2 as types_task_pb2

SRC = Path(__file__).resolve().parents[3] / "src"
PROTO_DIR = SRC / "inclavare" / "shim" / "proto"
SHIM_BINARY = os.environ.get("CONTAINERD_SHIM_RUNC", shutil.which("containerd-shim-runc-v2")
                             or "/usr/bin/containerd-shim-runc-v2")

_CTRD = "github.com/containerd/containerd/"
# our module -> the file name containerd 1.6 registers for the same contract
UPSTREAM = {
    status_pb2: "google/rpc/status.proto",
    mount_pb2: _CTRD + "api/types/mount.proto",
    types_task_pb2: _CTRD + "api/types/task/task.proto",
    shim_pb2: _CTRD + "runtime/v2/task/shim.proto",
    events_pb2: _CTRD + "api/events/task.proto",
    events_ttrpc_pb2: _CTRD + "api/services/ttrpc/events/v1/events.proto",
    oci_pb2: _CTRD + "runtime/v2/runc/options/oci.proto",
    v1_metrics_pb2: "github.com/containerd/cgroups/stats/v1/metrics.proto",
    v2_metrics_pb2: "github.com/containerd/cgroups/v2/stats/metrics.proto",
}


# ---------------------------------------------------------------------------------------------- generated code

def test_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed")
    protos = sorted(PROTO_DIR.glob("*/*.proto"))
    assert len(protos) == 11
    copies = []
    for p in protos:
        dest = tmp_path / p.relative_to(SRC)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
        copies.append(str(dest))
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(tmp_path), f"--python_out={tmp_path}",
                        f"--pyi_out={tmp_path}", *copies], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    generated = sorted(tmp_path.rglob("*_pb2.py*"))
    assert len(generated) == 22
    for g in generated:
        ours = SRC / g.relative_to(tmp_path)
        assert ours.exists() and ours.read_text() == g.read_text(), \
            f"{ours.relative_to(SRC)} is stale: regenerate with the command at the top of its .proto"


# -------------------------------------------------------------------------------------- containerd's descriptors

@functools.lru_cache(maxsize=1)
def _descriptors_in(binary: str) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Every gzipped FileDescriptorProto found in a Go binary, by file name."""
    data = Path(binary).read_bytes()
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    at = 0
    while (at := data.find(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", at)) >= 0:
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[at:at + (1 << 21)])
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except Exception:  # not a descriptor: some other gzip stream, or bytes that only look like a header
            fd = None
        if fd is not None and fd.name.endswith(".proto"):
            found[fd.name] = fd
        at += 1
    return found


def _upstream() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    if not os.path.exists(SHIM_BINARY):
        pytest.skip(f"{SHIM_BINARY} is not installed (Debian package containerd)")
    return _descriptors_in(SHIM_BINARY)


def _messages(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs: object) -> None:
        for m in msgs:  # type: ignore[attr-defined]
            out[prefix + m.name] = m
            walk(prefix + m.name + ".", m.nested_type)
    walk("", fd.message_type)
    return out


def _fields(m: descriptor_pb2.DescriptorProto) -> dict[str, tuple[int, int, int, str]]:
    return {f.name: (f.number, f.type, f.label, f.type_name) for f in m.field}


@pytest.mark.parametrize("module", list(UPSTREAM), ids=lambda m: m.__name__.split(".", 3)[-1])
def test_messages_match_the_descriptors_compiled_into_containerd(module: object) -> None:
    theirs_fd = _upstream().get(UPSTREAM[module])  # type: ignore[index]
    assert theirs_fd is not None, f"{UPSTREAM[module]} not found in {SHIM_BINARY}"  # type: ignore[index]
    ours_fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(ours_fd)  # type: ignore[attr-defined]
    assert ours_fd.package == theirs_fd.package
    ours, theirs = _messages(ours_fd), _messages(theirs_fd)
    assert sorted(ours) == sorted(theirs)
    for name, m in theirs.items():
        assert _fields(ours[name]) == _fields(m), f"{theirs_fd.package}.{name}"
        assert ours[name].options.map_entry == m.options.map_entry
    assert {e.name: [(v.name, v.number) for v in e.value] for e in ours_fd.enum_type} == \
        {e.name: [(v.name, v.number) for v in e.value] for e in theirs_fd.enum_type}
    assert {s.name: [(x.name, x.input_type, x.output_type) for x in s.method] for s in ours_fd.service} == \
        {s.name: [(x.name, x.input_type, x.output_type) for x in s.method] for s in theirs_fd.service}


def test_runtimeoptions_match_containerds_with_17s_config_body() -> None:
    """runtimeoptions.v1 is registered by containerd itself (its CRI plugin), not by the runc shim: compared with
    the daemon's descriptor; containerd 1.6 lacks config_body = 3 (bytes), which 1.7 added."""
    daemon = os.environ.get("CONTAINERD", shutil.which("containerd") or "/usr/bin/containerd")
    if not os.path.exists(daemon):
        pytest.skip(f"{daemon} is not installed (Debian package containerd)")
    theirs_fd = _descriptors_in(daemon).get(_CTRD + "pkg/runtimeoptions/v1/api.proto")
    assert theirs_fd is not None
    ours_fd = descriptor_pb2.FileDescriptorProto()
    runtimeoptions_pb2.DESCRIPTOR.CopyToProto(ours_fd)
    assert ours_fd.package == theirs_fd.package == "runtimeoptions.v1"
    ours, theirs = _fields(_messages(ours_fd)["Options"]), _fields(_messages(theirs_fd)["Options"])
    fdp = descriptor_pb2.FieldDescriptorProto
    bytes_field = (3, fdp.TYPE_BYTES, fdp.LABEL_OPTIONAL, "")
    assert ours == {**theirs, "config_body": bytes_field} or ours == theirs


# ---------------------------------------------------------------------------------------------- wire details

def test_ttrpc_request_numbers_are_ttrpcs() -> None:
    # ttrpc 1.1.1 declares these in Go (types.go), so there is no descriptor to compare; bytes by hand:
    # service=1 "s", method=2 "m", payload=3 b"p", timeout_nano=4 varint 5, metadata=5 {key=1 "k", value=2 "v"}
    req = request_pb2.Request(service="s", method="m", payload=b"p", timeout_nano=5,
                              metadata=[request_pb2.KeyValue(key="k", value="v")])
    assert req.SerializeToString() == b"\x0a\x01s\x12\x01m\x1a\x01p\x20\x05\x2a\x06\x0a\x01k\x12\x01v"
    # Response: status=1 {code=1 varint 5, message=2 "x"}, payload=2
    resp = request_pb2.Response(status=status_pb2.Status(code=5, message="x"), payload=b"!")
    assert resp.SerializeToString() == b"\x0a\x05\x08\x05\x12\x01x\x12\x01!"


def test_service_full_names() -> None:
    assert shim_pb2.DESCRIPTOR.services_by_name["Task"].full_name == "containerd.task.v2.Task"
    assert len(shim_pb2.DESCRIPTOR.services_by_name["Task"].methods) == 17
    assert events_ttrpc_pb2.DESCRIPTOR.services_by_name["Events"].full_name == \
        "containerd.services.events.ttrpc.v1.Events"
    assert events_pb2.TaskExit.DESCRIPTOR.full_name == "containerd.events.TaskExit"
    assert v1_metrics_pb2.Metrics.DESCRIPTOR.full_name == "io.containerd.cgroups.v1.Metrics"


def test_newer_containerd_fields_survive_as_unknown_fields() -> None:
    # containerd 2.x adds Options.task_api_address = 12 (string); a 1.6-numbered reader keeps it
    data = oci_pb2.Options(binary_name="rune").SerializeToString() + b"\x62\x03abc"
    opts = oci_pb2.Options.FromString(data)
    assert opts.binary_name == "rune"
    assert opts.SerializeToString() == data
