"""The plugin's gRPC side: one ``v1beta1.DevicePlugin`` server per resource, each on its own unix socket in the
device-plugin directory, registered with kubelet through ``v1beta1.Registration/Register`` on ``kubelet.sock``,
and the loop that keeps them registered.

kubelet restarts wipe the directory (every socket but its own) and create a new ``kubelet.sock``; registrations
are then forgotten. :meth:`Manager.tick` (run every ``interval`` seconds) therefore: recreates a server whose
socket is gone or replaced, re-registers every resource when ``kubelet.sock`` is a new file (its inode changed),
retries registrations that failed, and re-checks device health, re-sending the device list on a change.
Polling ``stat`` keeps this free of inotify and copes with a directory that is itself removed and recreated.

Limits: messages at most :data:`MAX_RECEIVE` bytes in (kubelet's requests are small) and :data:`MAX_SEND` out;
at most :data:`MAX_STREAMS` ListAndWatch streams per resource (kubelet keeps one) and :data:`MAX_CONCURRENT`
calls at once. No maximum connection age (unlike services/grpcopts.py): kubelet treats the end of its
ListAndWatch stream as the plugin going away. Sockets are bound under umask 077 (only root, which kubelet is,
may connect).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from inclavare.services.sgxdeviceplugin.errors import DevicePluginError
from inclavare.services.sgxdeviceplugin.resources import AllocationError, Resource

VERSION = "v1beta1"
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = DEVICE_PLUGIN_DIR + "/kubelet.sock"
WORKERS = 8
MAX_CONCURRENT = 8
MAX_STREAMS = 4
MAX_RECEIVE = 16 << 20
MAX_SEND = 64 << 20
REGISTER_TIMEOUT = 5.0
PRE_START_REQUIRED = False
PREFERRED_ALLOCATION = True

Log = Callable[[str], None]


def _pb() -> tuple[Any, Any]:
    from inclavare.services.sgxdeviceplugin.proto import deviceplugin_pb2, deviceplugin_pb2_grpc

    return deviceplugin_pb2, deviceplugin_pb2_grpc


def options() -> Any:
    """The DevicePluginOptions this plugin registers with and answers GetDevicePluginOptions with."""
    pb, _ = _pb()
    return pb.DevicePluginOptions(pre_start_required=PRE_START_REQUIRED,
                                  get_preferred_allocation_available=PREFERRED_ALLOCATION)


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    """A file's identity: device, inode and change time (a recreated file differs even if its inode is reused)."""
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _abort(context: grpc.ServicerContext, e: AllocationError) -> None:
    context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.INVALID_ARGUMENT), str(e).splitlines()[0][:300])


class ResourceServer:
    """One resource's DevicePlugin service on ``directory/resource.socket``."""

    def __init__(self, resource: Resource, directory: str, log: Log) -> None:
        self.resource = resource
        self.path = os.path.join(directory, resource.socket)
        self.log = log
        self._server: grpc.Server | None = None
        self._ident: tuple[int, int, int] | None = None
        self._cond = threading.Condition()
        self._generation = 0
        self._streams = 0
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind (replacing a stale socket left by a killed plugin) and serve; DevicePluginError if impossible."""
        _, pb_grpc = _pb()
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise DevicePluginError(f"{self.path}: {e.strerror or e}") from None
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise DevicePluginError(f"{self.path}: exists and is not a socket; refusing to replace it")
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise DevicePluginError(f"{self.path}: cannot remove the stale socket: {e.strerror or e}") from None
        server = grpc.server(futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="sgxdp"),
                             options=[("grpc.max_receive_message_length", MAX_RECEIVE),
                                      ("grpc.max_send_message_length", MAX_SEND),
                                      ("grpc.server_handshake_timeout_ms", 10_000),
                                      ("grpc.so_reuseport", 0)],
                             maximum_concurrent_rpcs=MAX_CONCURRENT)
        pb_grpc.add_DevicePluginServicer_to_server(_Servicer(self), server)
        old = os.umask(0o077)
        try:
            port = server.add_insecure_port("unix:" + self.path)
        except RuntimeError as e:
            raise DevicePluginError(f"{self.path}: cannot bind: {e}") from None
        finally:
            os.umask(old)
        if port == 0:
            raise DevicePluginError(f"{self.path}: cannot bind the socket")
        server.start()
        with self._cond:
            self._stopping = False
        self._server = server
        try:
            self._ident = _ident(os.stat(self.path))
        except OSError:
            self._ident = None  # removed already: the next tick serves it again

    def stop(self, grace: float = 1.0) -> None:
        """End streams, stop serving and remove our socket (only if it is still ours)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if self.socket_present():
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self._ident = None

    def socket_present(self) -> bool:
        """True while our socket file is in place (not removed, not replaced by another file)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return self._ident == _ident(st)

    def notify(self) -> None:
        """Wake ListAndWatch streams to re-send the device list."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- ListAndWatch ---------------------------------------------------------------------------------------
    def watch(self, context: grpc.ServicerContext) -> Iterator[Any]:
        pb, _ = _pb()
        with self._cond:
            if self._streams >= MAX_STREAMS:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"ListAndWatch {self.resource.name}: {MAX_STREAMS} streams already open")
            self._streams += 1
        context.add_callback(self._wake)  # a cancelled stream wakes its own wait
        try:
            sent = -1
            while True:
                with self._cond:
                    while (self._generation == sent and not self._stopping and context.is_active()):
                        self._cond.wait(5.0)
                    if self._stopping or not context.is_active():
                        return
                    sent = self._generation
                yield pb.ListAndWatchResponse(devices=[pb.Device(ID=i, health=h)
                                                       for i, h in self.resource.devices()])
        finally:
            with self._cond:
                self._streams -= 1


class _Servicer:
    """The five DevicePlugin RPCs over one :class:`ResourceServer`."""

    def __init__(self, rs: ResourceServer) -> None:
        self.rs = rs
        self.res = rs.resource

    def GetDevicePluginOptions(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return options()

    def ListAndWatch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        return self.rs.watch(context)

    def GetPreferredAllocation(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        pb, _ = _pb()
        out = pb.PreferredAllocationResponse()
        for creq in request.container_requests:
            try:
                ids = self.res.preferred(list(creq.available_deviceIDs), list(creq.must_include_deviceIDs),
                                         creq.allocation_size)
            except AllocationError as e:
                _abort(context, e)
            out.container_responses.add(deviceIDs=ids)
        return out

    def Allocate(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        pb, _ = _pb()
        try:
            allocs = self.res.allocate([list(c.devices_ids) for c in request.container_requests])
        except AllocationError as e:
            self.rs.log(str(e))
            _abort(context, e)
        out = pb.AllocateResponse()
        for a in allocs:
            c = out.container_responses.add()
            c.envs.update(a.envs)
            for m in a.mounts:
                c.mounts.add(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for d in a.devices:
                c.devices.add(container_path=d.container_path, host_path=d.host_path, permissions="rw")
        return out

    def PreStartContainer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        pb, _ = _pb()
        return pb.PreStartContainerResponse()


def register(kubelet_socket: str, rs: ResourceServer, timeout: float = REGISTER_TIMEOUT) -> None:
    """Register ``rs``'s resource with kubelet; DevicePluginError (one line) when kubelet refuses or is away."""
    pb, pb_grpc = _pb()
    req = pb.RegisterRequest(version=VERSION, endpoint=os.path.basename(rs.path), resource_name=rs.resource.name,
                             options=options())
    with grpc.insecure_channel("unix:" + kubelet_socket) as ch:
        try:
            pb_grpc.RegistrationStub(ch).Register(req, timeout=timeout)
        except grpc.RpcError as e:
            detail = (e.details() or "").splitlines()[0][:200] if hasattr(e, "details") else ""
            code = e.code().name if hasattr(e, "code") else "ERROR"
            raise DevicePluginError(f"register {rs.resource.name} with {kubelet_socket}: {code} {detail}".rstrip()) \
                from None


class Manager:
    """Every resource's server plus the registration state; :meth:`tick` is one pass of the watch loop."""

    def __init__(self, resources: list[Resource], directory: str, kubelet_socket: str, log: Log) -> None:
        self.servers = [ResourceServer(r, directory, log) for r in resources]
        self.kubelet_socket = kubelet_socket
        self.log = log
        self._kubelet: tuple[int, int, int] | None = None
        self._pending = {id(s) for s in self.servers}
        self._failing: set[int] = set()
        self.registrations = 0

    def start(self) -> None:
        for s in self.servers:
            s.start()
            r = s.resource
            self.log(f"serving {r.name} on {s.path}: {len(r.ids)} devices" + (" (sim)" if r.sim else ""))
        self.tick()

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def _kubelet_ident(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.kubelet_socket)
        except OSError:
            return None
        return _ident(st) if stat.S_ISSOCK(st.st_mode) else None

    def tick(self) -> None:
        """Recreate lost sockets, re-register after a kubelet restart, retry failed registrations, re-check
        health."""
        for s in self.servers:
            if not s.socket_present():
                self.log(f"{s.path} is gone (kubelet restart?); serving it again")
                s.stop(0)
                s.start()
                self._pending.add(id(s))
        ident = self._kubelet_ident()
        if ident is not None and ident != self._kubelet:
            if self._kubelet is not None:
                self.log(f"{self.kubelet_socket} was recreated (kubelet restarted); registering again")
            self._pending = {id(s) for s in self.servers}
        self._kubelet = ident
        if ident is not None:
            for s in self.servers:
                if id(s) not in self._pending:
                    continue
                try:
                    register(self.kubelet_socket, s)
                except DevicePluginError as e:
                    if id(s) not in self._failing:
                        self.log(f"{e}; will retry")
                        self._failing.add(id(s))
                    continue
                self._pending.discard(id(s))
                self._failing.discard(id(s))
                self.registrations += 1
                self.log(f"registered {s.resource.name} with kubelet (endpoint {os.path.basename(s.path)})")
        for s in self.servers:
            if s.resource.check_health():
                self.log(f"{s.resource.name}: devices now {'Healthy' if s.resource.healthy else 'Unhealthy'}")
                s.notify()
