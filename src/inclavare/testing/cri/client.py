"""A typed CRI client over containerd's gRPC socket: one method per RPC, each with a deadline.

Every call has a deadline (the client's default, or ``timeout=`` per call); a hang is reported as a
:class:`CriError` whose ``code`` is ``DEADLINE_EXCEEDED``, so a test fails instead of hanging. Messages are
the generated ``api_pb2`` classes of this package's ``api.proto``.

    cri = CriClient("/tmp/cri/containerd.sock")
    pod = cri.run_pod("web", handler="rune")
    cid = cri.create_container(pod, "c1", "localhost/busybox:latest", ["sleep", "1000"])
    cri.start_container(cid)
    rc, out, err = cri.exec_sync(cid, ["echo", "hi"])
    cri.stop_pod(pod.id, timeout=10)
    cri.remove_pod(pod.id)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from inclavare.testing.cri import api_pb2 as pb
from inclavare.testing.cri import api_pb2_grpc as pb_grpc

CRI_VERSION = "v1"
T = TypeVar("T")


class CriError(RuntimeError):
    """A CRI call failed: ``method``, the gRPC ``code`` and the runtime's ``details``."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method, self.code, self.details = method, code, details


@dataclass(frozen=True)
class Pod:
    """A pod sandbox the client ran: its id and the config it was run with (CreateContainer wants it)."""

    id: str
    config: pb.PodSandboxConfig
    handler: str


class CriClient:
    """``runtime.v1.RuntimeService`` and ``ImageService`` on a unix socket."""

    def __init__(self, socket_path: str, timeout: float = 30.0, cgroup_root: str = "") -> None:
        """``cgroup_root``: pods run without a ``cgroup_parent`` get ``CGROUP_ROOT/pod<uid>`` (kubelet's cgroupfs
        layout); empty: containerd's default (``/k8s.io/<id>``)."""
        self.socket_path = socket_path
        self.timeout = timeout
        self.cgroup_root = cgroup_root
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.images = pb_grpc.ImageServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, stub: Any, method: str, request: Any, response: type[T], timeout: float | None) -> T:
        """``stub.method(request)`` with a deadline; the generated stubs are untyped, so the answer is checked."""
        try:
            r = getattr(stub, method)(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise CriError(method, e.code(), e.details() or "") from None
        if not isinstance(r, response):
            raise CriError(method, grpc.StatusCode.INTERNAL, f"a {type(r).__name__}, not a {response.__name__}")
        return r

    def _rt(self, method: str, request: Any, response: type[T], timeout: float | None) -> T:
        return self._call(self.runtime, method, request, response, timeout)

    # -- runtime ---------------------------------------------------------------------------------

    def version(self, timeout: float | None = None) -> pb.VersionResponse:
        return self._rt("Version", pb.VersionRequest(version=CRI_VERSION), pb.VersionResponse, timeout)

    def status(self, timeout: float | None = None) -> dict[str, bool]:
        """The runtime's conditions: {"RuntimeReady": True, "NetworkReady": ...}."""
        r = self._rt("Status", pb.StatusRequest(), pb.StatusResponse, timeout)
        return {c.type: c.status for c in r.status.conditions}

    # -- pods ------------------------------------------------------------------------------------

    def pod_config(self, name: str, *, uid: str | None = None, namespace: str = "default", cgroup_parent: str = "",
                   log_directory: str = "", hostname: str = "", labels: Mapping[str, str] | None = None,
                   annotations: Mapping[str, str] | None = None, host_network: bool = True) -> pb.PodSandboxConfig:
        """A pod's config. ``host_network`` (a Kubernetes hostNetwork pod) is the default because the harness has
        no pod network: without a CNI network that gives the pod an ``eth0`` address, RunPodSandbox of a pod with
        a network namespace of its own fails ("failed to find network info for sandbox"). The pod still has its
        own PID, IPC and UTS namespaces."""
        uid = uid or uuid.uuid4().hex
        if not cgroup_parent and self.cgroup_root:
            cgroup_parent = f"{self.cgroup_root}/pod{uid}"
        ns = pb.NamespaceOption(network=pb.NODE if host_network else pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
        linux = pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent,
                                         security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns))
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            hostname="" if host_network else (hostname or name), log_directory=log_directory,
            labels=dict(labels or {}), annotations=dict(annotations or {}), linux=linux)

    def run_pod(self, name: str, handler: str = "", *, config: pb.PodSandboxConfig | None = None,
                timeout: float | None = None, **config_kw: Any) -> Pod:
        """RunPodSandbox with ``config`` (or one made by :meth:`pod_config` from the keywords)."""
        cfg = config if config is not None else self.pod_config(name, **config_kw)
        r = self._rt("RunPodSandbox", pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler),
                     pb.RunPodSandboxResponse, timeout)
        return Pod(r.pod_sandbox_id, cfg, handler)

    def stop_pod(self, pod_id: str, timeout: float | None = None) -> None:
        self._rt("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), pb.StopPodSandboxResponse,
                 timeout)

    def remove_pod(self, pod_id: str, timeout: float | None = None) -> None:
        self._rt("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), pb.RemovePodSandboxResponse,
                 timeout)

    def pod_status(self, pod_id: str, verbose: bool = False,
                   timeout: float | None = None) -> pb.PodSandboxStatusResponse:
        return self._rt("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose),
                        pb.PodSandboxStatusResponse, timeout)

    def pod_info(self, pod_id: str, timeout: float | None = None) -> dict[str, Any]:
        """containerd's verbose PodSandboxStatus ``info``: the sandbox's pid, OCI spec, runtime handler, ..."""
        return dict(json.loads(self.pod_status(pod_id, verbose=True, timeout=timeout).info["info"]))

    def list_pods(self, pod_id: str = "", labels: Mapping[str, str] | None = None,
                  timeout: float | None = None) -> list[pb.PodSandbox]:
        f = pb.PodSandboxFilter(id=pod_id, label_selector=dict(labels or {}))
        return list(self._rt("ListPodSandbox", pb.ListPodSandboxRequest(filter=f), pb.ListPodSandboxResponse,
                             timeout).items)

    # -- containers ------------------------------------------------------------------------------

    def create_container(self, pod: Pod, name: str, image: str, command: Iterable[str] = (), args: Iterable[str] = (),
                         *, env: Mapping[str, str] | None = None, log_path: str = "", working_dir: str = "",
                         labels: Mapping[str, str] | None = None, tty: bool = False,
                         timeout: float | None = None, annotations: Mapping[str, str] | None = None) -> str:
        """CreateContainer in ``pod``; ``command``/``args`` empty keep the image's entrypoint/cmd. The container
        gets the pod's namespace options, as a kubelet gives it (else its PID namespace would be the pod's)."""
        sec = pb.LinuxContainerSecurityContext(namespace_options=pod.config.linux.security_context.namespace_options)
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0), image=pb.ImageSpec(image=image),
            command=list(command), args=list(args), working_dir=working_dir,
            envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()], labels=dict(labels or {}),
            log_path=log_path, tty=tty, linux=pb.LinuxContainerConfig(security_context=sec),
            annotations=dict(annotations or {}))
        req = pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)
        return self._rt("CreateContainer", req, pb.CreateContainerResponse, timeout).container_id

    def start_container(self, cid: str, timeout: float | None = None) -> None:
        self._rt("StartContainer", pb.StartContainerRequest(container_id=cid), pb.StartContainerResponse, timeout)

    def stop_container(self, cid: str, grace: int = 0, timeout: float | None = None) -> None:
        """StopContainer: the stop signal, then SIGKILL after ``grace`` seconds (the request's ``timeout``)."""
        self._rt("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=grace), pb.StopContainerResponse,
                 timeout)

    def remove_container(self, cid: str, timeout: float | None = None) -> None:
        self._rt("RemoveContainer", pb.RemoveContainerRequest(container_id=cid), pb.RemoveContainerResponse, timeout)

    def container_status(self, cid: str, verbose: bool = False, timeout: float | None = None) -> pb.ContainerStatus:
        return self._rt("ContainerStatus", pb.ContainerStatusRequest(container_id=cid, verbose=verbose),
                        pb.ContainerStatusResponse, timeout).status

    def container_info(self, cid: str, timeout: float | None = None) -> dict[str, Any]:
        """containerd's verbose ContainerStatus ``info``: pid, OCI spec, runtime options, snapshot key, ..."""
        r = self._rt("ContainerStatus", pb.ContainerStatusRequest(container_id=cid, verbose=True),
                     pb.ContainerStatusResponse, timeout)
        return dict(json.loads(r.info["info"]))

    def list_containers(self, pod_id: str = "", timeout: float | None = None) -> list[pb.Container]:
        f = pb.ContainerFilter(pod_sandbox_id=pod_id)
        return list(self._rt("ListContainers", pb.ListContainersRequest(filter=f), pb.ListContainersResponse,
                             timeout).containers)

    def exec_sync(self, cid: str, cmd: Iterable[str], exec_timeout: int = 0,
                  timeout: float | None = None) -> tuple[int, bytes, bytes]:
        """ExecSync: (exit code, stdout, stderr); ``exec_timeout`` is the runtime-side limit in seconds."""
        r = self._rt("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=exec_timeout),
                     pb.ExecSyncResponse, timeout)
        return r.exit_code, r.stdout, r.stderr

    def container_stats(self, cid: str, timeout: float | None = None) -> pb.ContainerStats:
        return self._rt("ContainerStats", pb.ContainerStatsRequest(container_id=cid), pb.ContainerStatsResponse,
                        timeout).stats

    def list_container_stats(self, pod_id: str = "", timeout: float | None = None) -> list[pb.ContainerStats]:
        f = pb.ContainerStatsFilter(pod_sandbox_id=pod_id)
        return list(self._rt("ListContainerStats", pb.ListContainerStatsRequest(filter=f),
                             pb.ListContainerStatsResponse, timeout).stats)

    # -- images ----------------------------------------------------------------------------------

    def image_status(self, image: str, timeout: float | None = None) -> pb.Image | None:
        """The image as the CRI sees it, or None if it is not present."""
        r = self._call(self.images, "ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=image)),
                       pb.ImageStatusResponse, timeout)
        return r.image if r.HasField("image") else None

    def list_images(self, timeout: float | None = None) -> list[pb.Image]:
        return list(self._call(self.images, "ListImages", pb.ListImagesRequest(), pb.ListImagesResponse,
                               timeout).images)
