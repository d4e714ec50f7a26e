"""The CRI harness without root: the wire contract of our api.proto, the generated code being current, the
CRI containerd's config, and the client's deadlines and errors against an in-process gRPC server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

pb = pytest.importorskip("inclavare.testing.cri.api_pb2", reason="protobuf is not installed")
grpc = pytest.importorskip("grpc", reason="grpcio is not installed")
pb_grpc = pytest.importorskip("inclavare.testing.cri.api_pb2_grpc", reason="grpcio is not installed")

SRC = Path(__file__).resolve().parents[3] / "src"
CRI_DIR = SRC / "inclavare" / "testing" / "cri"


# ---------------------------------------------------------------------------------------------- wire contract

def test_service_and_method_names_are_the_contracts() -> None:
    svc = pb.DESCRIPTOR.services_by_name
    assert pb.DESCRIPTOR.package == "runtime.v1"
    assert svc["RuntimeService"].full_name == "runtime.v1.RuntimeService"
    assert svc["ImageService"].full_name == "runtime.v1.ImageService"
    methods = {m.name for m in svc["RuntimeService"].methods}
    assert {"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer", "StartContainer",
            "ExecSync", "ContainerStatus", "ContainerStats", "StopContainer"} <= methods


def test_encodings_match_hand_computed_bytes() -> None:
    # field 2 (runtime_handler), length-delimited: tag (2 << 3 | 2) = 0x12
    assert pb.RunPodSandboxRequest(runtime_handler="rune").SerializeToString() == b"\x12\x04rune"
    # StopContainerRequest: container_id = 1 (string), timeout = 2 (varint)
    assert pb.StopContainerRequest(container_id="c", timeout=30).SerializeToString() == b"\x0a\x01c\x10\x1e"
    # ExecSyncResponse: stdout = 1, stderr = 2 (bytes), exit_code = 3 (int32)
    r = pb.ExecSyncResponse.FromString(b"\x0a\x02hi\x12\x01e\x18\x03")
    assert (r.stdout, r.stderr, r.exit_code) == (b"hi", b"e", 3)
    # ContainerStatus.state = 3, exit_code = 7; CONTAINER_EXITED = 2
    st = pb.ContainerStatus.FromString(b"\x18\x02\x38\x89\x01")
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 137)
    # NamespaceOption.network = 1: NODE = 2
    assert pb.NamespaceOption(network=pb.NODE).SerializeToString() == b"\x08\x02"


def test_unknown_fields_from_a_newer_peer_survive() -> None:
    # a field we left out of our subset (PodSandboxStatus.linux = 6) is kept, not lost or rejected
    data = pb.PodSandboxStatus(id="p").SerializeToString() + b"\x32\x00"
    st = pb.PodSandboxStatus.FromString(data)
    assert st.id == "p"
    assert st.SerializeToString() == data


def test_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed")
    pkg = tmp_path / "inclavare" / "testing" / "cri"
    pkg.mkdir(parents=True)
    shutil.copy(CRI_DIR / "api.proto", pkg / "api.proto")
    p = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(tmp_path), f"--python_out={tmp_path}",
                        f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(pkg / "api.proto")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        assert (pkg / name).read_text() == (CRI_DIR / name).read_text(), \
            f"{name} is stale: regenerate with the command at the top of api.proto"


# ---------------------------------------------------------------------------------------------- containerd config

def test_cri_config(tmp_path: Path) -> None:
    from inclavare.testing.cri.containerd import CriContainerd, RuntimeHandler

    c = CriContainerd(str(tmp_path / "c"), {"runc": RuntimeHandler.runc_shim("/usr/sbin/runc"),
                                           "rune": RuntimeHandler.runc_shim("/x/rune", root="/x/root"),
                                           "shim": RuntimeHandler("io.containerd.rune.v2")},
                      default_handler="rune")
    cfg = tomllib.loads(Path(c.write_config()).read_text())
    assert cfg["disabled_plugins"] == []
    assert cfg["root"] == c.root and cfg["state"] == c.state
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == c.sandbox_image
    assert (cri["disable_apparmor"], cri["restrict_oom_score_adj"], cri["netns_mounts_under_state_dir"]) == \
        (True, True, True)
    assert cri["cni"]["conf_dir"] == c.cni_conf_dir and os.listdir(c.cni_conf_dir) == []
    rt = cri["containerd"]["runtimes"]
    assert cri["containerd"]["default_runtime_name"] == "rune"
    assert rt["runc"] == {"runtime_type": "io.containerd.runc.v2",
                          "options": {"BinaryName": "/usr/sbin/runc", "Root": os.path.join(c.base, "runc-root")}}
    assert rt["rune"]["options"] == {"BinaryName": "/x/rune", "Root": "/x/root"}
    assert rt["shim"] == {"runtime_type": "io.containerd.rune.v2"}
    assert c.runtime_root("rune") == "/x/root/k8s.io"
    assert c.runtime_root("shim") is None  # the rune shim's root is known once install_rune_shim wrote its launcher
    assert c.install_rune_shim() == os.path.join(c.base, "rune-shim-root")
    assert c.runtime_root("shim") == os.path.join(c.base, "rune-shim-root", "k8s.io")
    launcher = Path(c.bin_dir) / "containerd-shim-rune-v2"
    assert os.access(launcher, os.X_OK) and f"RUNE_SHIM_ROOT'] = {c.rune_shim_root!r}" in launcher.read_text()
    assert c.pod_cgroup("u1").startswith(c.cgroup_parent + "/") and c.cgroup_parent.startswith("/inclavare-cri-")
    with c.client() as cri:  # its pods go below the instance's cgroup unless told otherwise
        assert cri.pod_config("p", uid="u1").linux.cgroup_parent == c.pod_cgroup("u1")
        assert cri.pod_config("p", uid="u1", cgroup_parent="/x").linux.cgroup_parent == "/x"
        assert cri.pod_config("p").linux.security_context.namespace_options.network == pb.NODE


def test_plain_private_containerd_keeps_cri_off(tmp_path: Path) -> None:
    from inclavare.testing.containerd import PrivateContainerd

    c = PrivateContainerd(str(tmp_path / "c"))
    cfg = tomllib.loads(Path(c.write_config()).read_text())
    assert cfg["disabled_plugins"] == ["io.containerd.grpc.v1.cri"]
    assert "plugins" not in cfg


# ---------------------------------------------------------------------------------------------- the client

class _Runtime(pb_grpc.RuntimeServiceServicer):
    """A RuntimeService servicer for the client tests: Version answers, StopPodSandbox hangs, ExecSync fails;
    the rest is the generated base class's UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def Version(self, request: Any, context: Any) -> Any:
        return pb.VersionResponse(version=request.version, runtime_name="fake", runtime_api_version="v1")

    def StopPodSandbox(self, request: Any, context: Any) -> Any:
        self.release.wait(30)
        return pb.StopPodSandboxResponse()

    def ExecSync(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNKNOWN, f"failed to exec in container: {request.cmd[0]}: no such file")


@pytest.fixture
def fake_cri(tmp_path: Path) -> Iterator[tuple[str, _Runtime]]:
    sock = str(tmp_path / "cri.sock")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rt = _Runtime()
    pb_grpc.add_RuntimeServiceServicer_to_server(rt, server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    try:
        yield sock, rt
    finally:
        rt.release.set()
        server.stop(None)


def test_client_calls_and_deadline(fake_cri: tuple[str, _Runtime]) -> None:
    from inclavare.testing.cri.client import CriClient, CriError

    sock, rt = fake_cri
    with CriClient(sock, timeout=10) as cri:
        v = cri.version()
        assert (v.version, v.runtime_name) == ("v1", "fake")
        # a stop that hangs ends at the client's deadline, as DEADLINE_EXCEEDED, not as a hang
        with pytest.raises(CriError) as e:
            cri.stop_pod("p1", timeout=0.5)
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert e.value.method == "StopPodSandbox"
        with pytest.raises(CriError) as e:
            cri.exec_sync("c1", ["/nope"])
        assert str(e.value) == "ExecSync: UNKNOWN: failed to exec in container: /nope: no such file"
        # a method the server does not offer
        with pytest.raises(CriError) as e:
            cri.list_pods()
        assert e.value.code == grpc.StatusCode.UNIMPLEMENTED
