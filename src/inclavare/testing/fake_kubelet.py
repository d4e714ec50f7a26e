"""A fake kubelet for device plugin tests: the real ``v1beta1.Registration`` service on a ``kubelet.sock``, and a
client side that treats registered plugins as kubelet's device manager does.

On each RegisterRequest it checks the version (``v1beta1``, else INVALID_ARGUMENT, as kubelet refuses an
unsupported one; :attr:`FakeKubelet.refuse` refuses the next N) and records the request; then, as kubelet does
after a successful registration, it dials the plugin at ``<directory>/<endpoint>``, calls
GetDevicePluginOptions and keeps a ListAndWatch stream open, recording every device list the plugin sends
(:meth:`FakeKubelet.devices`). Tests call Allocate, GetPreferredAllocation and PreStartContainer through
:meth:`FakeKubelet.stub`.

:meth:`FakeKubelet.restart` imitates a kubelet restart: the server stops, every file in the directory is
removed (kubelet's device manager empties it at start) and a new ``kubelet.sock`` is served.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from inclavare.services.sgxdeviceplugin.proto import deviceplugin_pb2 as pb
from inclavare.services.sgxdeviceplugin.proto import deviceplugin_pb2_grpc as pb_grpc


@dataclass
class Endpoint:
    """kubelet's view of one registered plugin."""

    request: Any
    channel: grpc.Channel
    options: Any = None
    lists: list[list[tuple[str, str]]] = field(default_factory=list)
    stream_error: str = ""


class FakeKubelet:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.socket = os.path.join(directory, "kubelet.sock")
        self.requests: list[Any] = []
        self.refuse = 0  # refuse this many coming registrations (FAILED_PRECONDITION), as a busy kubelet might
        self.endpoints: dict[str, Endpoint] = {}
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None

    # --- the Registration service --------------------------------------------------------------------------
    def start(self) -> FakeKubelet:
        os.makedirs(self.directory, exist_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(4))
        pb_grpc.add_RegistrationServicer_to_server(_Registration(self), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port("unix:" + self.socket)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None
        with self._cond:
            for ep in self.endpoints.values():
                ep.channel.close()
            self.endpoints.clear()

    def restart(self) -> None:
        """Stop, empty the directory (every file, as kubelet's device manager does), serve a new kubelet.sock."""
        self.stop()
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if not os.path.isdir(path):
                os.unlink(path)
        self.start()

    def _register(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.version != "v1beta1":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version!r}")
        with self._cond:
            refuse, self.refuse = self.refuse > 0, max(0, self.refuse - 1)
        if refuse:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "registration refused by the test")
        channel = grpc.insecure_channel("unix:" + os.path.join(self.directory, request.endpoint))
        ep = Endpoint(request, channel)
        with self._cond:
            self.requests.append(request)
            old = self.endpoints.pop(request.resource_name, None)
            self.endpoints[request.resource_name] = ep
            self._cond.notify_all()
        if old is not None:
            old.channel.close()
        threading.Thread(target=self._watch, args=(ep,), daemon=True).start()
        return pb.Empty()

    def _watch(self, ep: Endpoint) -> None:
        stub = pb_grpc.DevicePluginStub(ep.channel)  # type: ignore[no-untyped-call]
        try:
            ep.options = stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
            for resp in stub.ListAndWatch(pb.Empty()):
                with self._cond:
                    ep.lists.append([(d.ID, d.health) for d in resp.devices])
                    self._cond.notify_all()
        except (grpc.RpcError, ValueError) as e:  # ValueError: the channel was closed under us
            with self._cond:
                ep.stream_error = str(e.code() if isinstance(e, grpc.RpcError) else e)
                self._cond.notify_all()

    # --- test helpers --------------------------------------------------------------------------------------
    def wait(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
        """Wait until ``predicate()`` (called under the lock) is true; AssertionError after ``timeout``."""
        end = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake kubelet: timed out waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def wait_registered(self, names: set[str], timeout: float = 30.0) -> dict[str, Endpoint]:
        """Wait until each resource in ``names`` is registered and has sent a device list."""
        self.wait(lambda: all(n in self.endpoints and self.endpoints[n].lists for n in names), timeout,
                  f"registration and a device list of {sorted(names)}")
        with self._cond:
            return {n: self.endpoints[n] for n in names}

    def devices(self, resource: str) -> list[tuple[str, str]]:
        """The last device list the plugin sent for ``resource``."""
        with self._cond:
            return list(self.endpoints[resource].lists[-1])

    def stub(self, resource: str) -> Any:
        """A DevicePlugin client on ``resource``'s registered endpoint."""
        with self._cond:
            return pb_grpc.DevicePluginStub(self.endpoints[resource].channel)  # type: ignore[no-untyped-call]


class _Registration:
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self.kubelet._register(request, context)
