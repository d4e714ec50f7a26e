"""The Task service (``containerd.task.v2.Task``): containerd's 17 RPCs mapped onto :class:`ShimCore`.

Each handler decodes what containerd sends (stdio strings, rootfs mounts, the runc ``Options`` Any, an OCI
process or LinuxResources as JSON in an Any), calls the core, and answers with containerd's messages. Errors
leave as ttrpc statuses with the codes containerd's errdefs reads (NotFound, AlreadyExists,
FailedPrecondition, InvalidArgument, Unimplemented), so ``ctr`` and CRI see the same classes as with runc's
shim.

Events go out through :class:`EventPublisher` in containerd's order. A process's exit can be reaped before
its Start has been answered (``true`` exits at once); its TaskExit is then held until TaskStart /
TaskExecStarted has been queued, as the runc shim does with its exit subscriptions. A TaskExit also waits
(bounded) until the process's output has been copied out: CRI reads the container's log once it has the exit.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from inclavare.errors import ShimError
from inclavare.shim.events import pack_any
from inclavare.shim.proto.events import task_pb2 as ev
from inclavare.shim.proto.runc import oci_pb2
from inclavare.shim.proto.task import shim_pb2
from inclavare.shim.proto.types import task_pb2 as types_pb2
from inclavare.shim.stdio import Stdio
from inclavare.shim.ttrpc import CallContext, Code, TtrpcError, status_of

log = logging.getLogger("inclavare.shim")

TASK_SERVICE = shim_pb2.DESCRIPTOR.services_by_name["Task"]
# quick handlers that never block: answered on the thread that read them (see TtrpcServer.register)
INLINE_METHODS = ("State", "Pids", "Connect", "ResizePty", "CloseIO")

WAIT_DRAIN_SECONDS = 1.0  # Wait answers after the process's output is out, or after this long (a child holds it)
EXIT_DRAIN_SECONDS = 1.0  # and TaskExit is published as late at most
OOM_POLL_SECONDS = 2.0  # an OOM watcher re-checks that its container still exists this often
OPTIONS_TYPE = oci_pb2.Options.DESCRIPTOR.full_name  # containerd.runc.v1.Options
_STATUS = {"created": types_pb2.CREATED, "running": types_pb2.RUNNING, "stopped": types_pb2.STOPPED,
           "paused": types_pb2.PAUSED, "pausing": types_pb2.PAUSING}
_CODES = {"not_found": Code.NOT_FOUND, "already_exists": Code.ALREADY_EXISTS,
          "failed_precondition": Code.FAILED_PRECONDITION, "invalid_argument": Code.INVALID_ARGUMENT,
          "unimplemented": Code.UNIMPLEMENTED, "unknown": Code.UNKNOWN}


def error_status(exc: BaseException) -> tuple[int, str]:
    """The ttrpc status of a handler's exception: a ShimError by its code, anything else as ttrpc maps it."""
    if isinstance(exc, ShimError):
        return int(_CODES.get(exc.code, Code.UNKNOWN)), str(exc)
    return status_of(exc)


def timestamp(ns: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def _json_any(value: any_pb2.Any, what: str) -> Any:
    """The JSON document an Any carries (containerd puts OCI specs in Anys as JSON, whatever the type URL)."""
    try:
        return json.loads(value.value)
    except (ValueError, UnicodeDecodeError) as e:
        raise ShimError(f"{what}: not JSON ({value.type_url}): {e}", "invalid_argument") from None


RUNTIMEOPTIONS_TYPE = "runtimeoptions.v1.Options"


def parse_options(value: any_pb2.Any | None) -> oci_pb2.Options:
    """containerd.runc.v1.Options from the Any containerd sends (Create's options, start's stdin); an absent
    or empty Any is the defaults. CRI's generic ``runtimeoptions.v1.Options`` (what containerd sends a shim
    that is not runc's) carries the same options as TOML: see :func:`options_from_runtimeoptions`. Anything
    we cannot honour is refused with the option's name."""
    opts = oci_pb2.Options()
    if value is None or (not value.type_url and not value.value):
        return opts
    name = value.type_url.rsplit("/", 1)[-1]
    if name == RUNTIMEOPTIONS_TYPE:
        if not value.value:
            return opts  # CRI's generic options with nothing in them
        opts = options_from_runtimeoptions(value.value)
    elif name != OPTIONS_TYPE:
        raise ShimError(f"runtime options: type {value.type_url!r} is not supported by the rune shim "
                        f"(it reads {OPTIONS_TYPE})", "invalid_argument")
    else:
        try:
            opts.ParseFromString(value.value)
        except DecodeError as e:
            raise ShimError(f"runtime options: undecodable {OPTIONS_TYPE}: {e}", "invalid_argument") from None
    check_options(opts)
    return opts


def options_from_runtimeoptions(data: bytes) -> oci_pb2.Options:
    """runc's Options out of CRI's generic options. containerd's CRI plugin sends ``runtimeoptions.v1.Options``
    to every runtime_type but runc's, dropping the handler's runc keys: 1.6 passes ``ConfigPath`` (a TOML
    file, also ``ctr run --runtime-config-path``), 1.7 and later the handler's whole options table as TOML in
    ``ConfigBody`` when there is no path. The TOML's keys are runc's option names as in a runc handler's table
    (``IoUid = 1000``, ``ShimCgroup = "/rune-shim"``); ``TypeUrl`` may name containerd.runc.v1.Options."""
    from inclavare.shim.proto.runtimeoptions import api_pb2

    ro = api_pb2.Options()
    try:
        ro.ParseFromString(data)
    except DecodeError as e:
        raise ShimError(f"runtime options: undecodable {RUNTIMEOPTIONS_TYPE}: {e}", "invalid_argument") from None
    if ro.type_url and ro.type_url.rsplit("/", 1)[-1] != OPTIONS_TYPE:
        raise ShimError(f"runtime options: TypeUrl {ro.type_url!r}: the rune shim reads {OPTIONS_TYPE} "
                        "(runc's option names)", "invalid_argument")
    if ro.config_path:
        where = f"ConfigPath {ro.config_path}"
        try:
            with open(ro.config_path, "rb") as f:
                text = f.read()
        except OSError as e:
            raise ShimError(f"runtime options: {where}: {e.strerror}", "invalid_argument") from None
    elif ro.config_body:
        where, text = "ConfigBody", ro.config_body
    else:
        return oci_pb2.Options()
    return options_from_toml(text, where)


def options_from_toml(text: bytes, where: str) -> oci_pb2.Options:
    """containerd.runc.v1.Options from a TOML document of runc's option names (their Go names, any case, as
    containerd's TOML decoding matches them). Unknown names and wrong types are refused, naming the key."""
    import tomllib

    try:
        doc = tomllib.loads(text.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ShimError(f"runtime options: {where}: not TOML: {e}", "invalid_argument") from None
    fields = {f.name.replace("_", ""): f for f in oci_pb2.Options.DESCRIPTOR.fields}  # ioUid -> io_uid
    opts = oci_pb2.Options()
    for key, value in doc.items():
        if key in ("TypeUrl", "ConfigPath"):  # containerd 1.7 puts the handler's whole table in ConfigBody
            continue
        if key == HANDLER_CARRIER_KEY:  # ours: the handler's default carrier (see handler_carrier)
            if not isinstance(value, str):
                raise ShimError(f"runtime options: {where}: {key} = {value!r}: want a string", "invalid_argument")
            continue
        f = fields.get(key.lower())
        if f is None:
            raise ShimError(f"runtime options: {where}: unknown option {key!r} (runc's option names are "
                            f"{', '.join(_go_name(x) for x in oci_pb2.Options.DESCRIPTOR.fields)})",
                            "invalid_argument")
        want = {f.TYPE_BOOL: bool, f.TYPE_STRING: str, f.TYPE_UINT32: int}[f.type]
        if type(value) is not want or (isinstance(value, int) and not 0 <= value <= 0xFFFFFFFF):
            kind = {bool: "true or false", str: "a string", int: "an integer 0..4294967295"}[want]
            raise ShimError(f"runtime options: {where}: {key} = {value!r}: want {kind}", "invalid_argument")
        setattr(opts, f.name, value)
    return opts


HANDLER_CARRIER_KEY = "EnclaveCarrier"


def handler_carrier(value: any_pb2.Any | None) -> str:
    """The runtime handler's default carrier: ``EnclaveCarrier = "wasm"`` in the TOML of CRI's generic
    options (the handler's ConfigPath file, or its options table in ConfigBody); "" when there is none.
    The TOML was already checked by :func:`parse_options`."""
    if value is None or value.type_url.rsplit("/", 1)[-1] != RUNTIMEOPTIONS_TYPE or not value.value:
        return ""
    import tomllib

    from inclavare.shim.proto.runtimeoptions import api_pb2

    ro = api_pb2.Options()
    try:
        ro.ParseFromString(value.value)
        if ro.config_path:
            with open(ro.config_path, "rb") as f:
                text = f.read()
        else:
            text = ro.config_body
        found = tomllib.loads(text.decode()).get(HANDLER_CARRIER_KEY, "") if text else ""
    except (DecodeError, OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    return found if isinstance(found, str) else ""


def _go_name(field: Any) -> str:
    return "".join(part.capitalize() for part in field.name.split("_"))


NO_ID = 0xFFFFFFFF  # (uid_t)-1: chown's "leave unchanged", never a real owner


def check_options(opts: oci_pb2.Options) -> None:
    """Refuse the runc options the rune shim cannot honour, naming them. Honoured: Root, NoPivotRoot,
    NoNewKeyring, IoUid/IoGid (the owner of the processes' stdio pipes), ShimCgroup (joined at ``start``);
    BinaryName only when it names rune; CriuPath is irrelevant (checkpoints are refused at Checkpoint)."""
    if opts.binary_name and os.path.basename(opts.binary_name) != "rune":
        raise ShimError(f"runtime options: BinaryName {opts.binary_name!r}: the rune shim runs containers with "
                        "the rune runtime library in-process and execs no runtime binary", "invalid_argument")
    if opts.systemd_cgroup:
        raise ShimError("runtime options: SystemdCgroup: the systemd cgroup driver is not supported by rune "
                        "(set SystemdCgroup = false and use the cgroupfs driver)", "invalid_argument")
    for name, value in (("IoUid", opts.io_uid), ("IoGid", opts.io_gid)):
        if value == NO_ID:
            raise ShimError(f"runtime options: {name} {value}: not a valid id ((uid_t)-1)", "invalid_argument")
    if opts.criu_image_path or opts.criu_work_path:
        raise ShimError("runtime options: CriuImagePath/CriuWorkPath: checkpoint and restore are not supported",
                        "invalid_argument")


def state_root(opts: oci_pb2.Options, namespace: str, default: str) -> str:
    """The rune state root of a namespace: Options.Root (or ``default``) / namespace, as runc's shim does."""
    return os.path.join(opts.root or default, namespace)


DELETED_FILE = "rune-deleted"  # in the bundle: the DeleteResponse of a container this shim deleted


def write_deleted(bundle: str, resp: shim_pb2.DeleteResponse) -> None:
    """Leave the container's DeleteResponse in its bundle: containerd runs ``shim delete`` after every
    disconnect, and that process then answers with the real exit without loading protobuf or the runtime."""
    path = os.path.join(bundle, DELETED_FILE)
    try:
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, resp.SerializeToString())
        finally:
            os.close(fd)
        os.rename(path + ".tmp", path)
    except OSError as e:
        log.warning("writing %s: %s", path, e)


class _Exit:
    """A TaskExit waiting for its process's output (``drained``) and for its Start to have been answered."""

    __slots__ = ("key", "event", "drained")

    def __init__(self, key: tuple[str, str], event: Message) -> None:
        self.key, self.event, self.drained = key, event, False


class Events:
    """Where the service's events go: ``publish(namespace, message)`` (an EventPublisher, or a test's list)."""

    def publish(self, namespace: str, event: Message) -> None:  # pragma: no cover - protocol
        raise NotImplementedError


class TaskService:
    """``containerd.task.v2.Task`` over a :class:`ShimCore`. Build the core with ``on_exit=service.on_exit``
    (the core must exist before any thread, so the service is made first and given the core after)."""

    def __init__(self, namespace: str, publish: Callable[[str, Message], None], root: str,
                 on_shutdown: Callable[[], None] | None = None) -> None:
        self.namespace = namespace
        self.root = root
        self._publish = publish
        self._on_shutdown = on_shutdown
        self.core: Any = None
        self._lock = threading.Lock()  # orders start/exit events
        self._starting: set[tuple[str, str]] = set()
        self._exits: dict[str, deque[_Exit]] = {}  # per container, in the order the core reported them
        self.shutting_down = threading.Event()

    # ------------------------------------------------------------------ events

    def _send(self, event: Message) -> None:
        try:
            self._publish(self.namespace, event)
        except Exception:  # noqa: BLE001 - an event must never fail the request
            log.exception("publishing %s", event.DESCRIPTOR.name)

    def on_exit(self, cid: str, exec_id: str, pid: int, status: int, exited_at_ns: int) -> None:
        """The core's exit listener (called on its reaper thread, so it must not block). The TaskExit goes
        out once the process's output has been copied out (at most :data:`EXIT_DRAIN_SECONDS`), after the
        process's Start has been answered, and after the container's earlier exits: a waiter thread does
        the waiting when the output is still flowing, so other containers' events never wait for it."""
        event = ev.TaskExit(container_id=cid, id=exec_id or cid, pid=pid, exit_status=status,
                            exited_at=timestamp(exited_at_ns))
        pending = _Exit((cid, exec_id), event)
        with self._lock:
            self._exits.setdefault(cid, deque()).append(pending)
        if self._drain(cid, exec_id, 0.0):
            self._drained(pending)
            return
        threading.Thread(target=self._wait_drain, args=(pending,), name=f"exit-{cid}", daemon=True).start()

    def _drain(self, cid: str, exec_id: str, timeout: float) -> bool:
        try:
            return bool(self.core.drain(cid, exec_id, timeout))
        except ShimError:
            return True  # deleted meanwhile: its IO is closed, nothing more will come
        except Exception:  # noqa: BLE001 - a failed drain must not lose the exit
            log.exception("container %s: draining the output of %s", cid, exec_id or "the init")
            return True

    def _wait_drain(self, pending: _Exit) -> None:
        self._drain(pending.key[0], pending.key[1], EXIT_DRAIN_SECONDS)
        self._drained(pending)

    def _drained(self, pending: _Exit) -> None:
        with self._lock:
            pending.drained = True
            self._flush(pending.key[0])

    def _flush(self, cid: str, upto: tuple[str, str] | None = None) -> None:
        """Send the container's exits that are ready, in order (call with ``self._lock`` held). ``upto``
        (Delete): send up to and including that process's exit whether drained or not: Delete closed its IO,
        and containerd must have the exit before TaskDelete."""
        q = self._exits.get(cid)
        while q:
            head = q[0]
            forced = upto is not None and any(e.key == upto for e in q)
            if head.key in self._starting or not (head.drained or forced):
                break
            q.popleft()
            self._send(head.event)
        if q is not None and not q:
            del self._exits[cid]

    # ------------------------------------------------------------------ lifecycle

    def Create(self, ctx: CallContext, req: shim_pb2.CreateTaskRequest) -> shim_pb2.CreateTaskResponse:  # noqa: N802
        if req.checkpoint:
            raise TtrpcError(Code.UNIMPLEMENTED, "create from a checkpoint is not supported by the rune shim")
        opts = parse_options(req.options if req.HasField("options") else None)
        if opts.root and state_root(opts, self.namespace, "") != self.root:
            raise ShimError(f"runtime options: Root {opts.root!r} differs from this shim's state root {self.root!r} "
                            "(one shim serves one root)", "invalid_argument")
        rootfs = [{"type": m.type, "source": m.source, "options": list(m.options)} for m in req.rootfs]
        stdio = Stdio(req.stdin, req.stdout, req.stderr, req.terminal)
        carrier = handler_carrier(req.options if req.HasField("options") else None)
        pid = self.core.create(req.id, req.bundle, stdio,
                               options={"no_pivot": opts.no_pivot_root, "no_new_keyring": opts.no_new_keyring,
                                        "io_uid": opts.io_uid, "io_gid": opts.io_gid},
                               rootfs=rootfs, **({"carrier": carrier} if carrier else {}))
        self._send(ev.TaskCreate(container_id=req.id, bundle=req.bundle, rootfs=req.rootfs,
                                 io=ev.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr,
                                              terminal=req.terminal), pid=pid))
        self._watch_oom(req.id)
        return shim_pb2.CreateTaskResponse(pid=pid)

    def _watch_oom(self, cid: str) -> None:
        """TaskOOM for each OOM kill in the container's memory cgroup, from a thread that ends with the cgroup
        (or the container); a container without a memory cgroup has no watcher."""
        try:
            watcher = self.core.rt.oom_watcher(cid)
        except Exception as e:  # noqa: BLE001 - no memory cgroup, or none visible: nothing to watch
            log.debug("container %s: no OOM watcher: %s", cid, e)
            return

        def watch() -> None:
            try:
                while cid in self.core.ids():
                    n = watcher.wait(OOM_POLL_SECONDS)
                    if n is None:
                        return
                    if n:
                        self._send(ev.TaskOOM(container_id=cid))
            except Exception:  # noqa: BLE001
                log.exception("container %s: OOM watcher", cid)
            finally:
                watcher.close()

        threading.Thread(target=watch, name=f"oom-{cid}", daemon=True).start()

    def Start(self, ctx: CallContext, req: shim_pb2.StartRequest) -> shim_pb2.StartResponse:  # noqa: N802
        key = (req.id, req.exec_id)
        with self._lock:
            self._starting.add(key)
        event: Message | None = None
        try:
            pid = self.core.start(req.id, req.exec_id)
            if req.exec_id:
                event = ev.TaskExecStarted(container_id=req.id, exec_id=req.exec_id, pid=pid)
            else:
                event = ev.TaskStart(container_id=req.id, pid=pid)
        finally:
            with self._lock:
                self._starting.discard(key)
                if event is not None:
                    self._send(event)
                self._flush(req.id)
        return shim_pb2.StartResponse(pid=pid)

    def Delete(self, ctx: CallContext, req: shim_pb2.DeleteRequest) -> shim_pb2.DeleteResponse:  # noqa: N802
        bundle = ""
        if not req.exec_id:
            try:
                bundle = self.core.state(req.id)["bundle"]
            except ShimError:
                pass
        pid, status, exited_ns = self.core.delete(req.id, req.exec_id)
        with self._lock:  # an exit still waiting for its output goes now, before TaskDelete and the answer
            self._flush(req.id, upto=(req.id, req.exec_id))
        exited = timestamp(exited_ns)
        resp = shim_pb2.DeleteResponse(pid=pid, exit_status=status, exited_at=exited)
        if not req.exec_id:
            self._send(ev.TaskDelete(container_id=req.id, pid=pid, exit_status=status, exited_at=exited))
            if bundle:
                write_deleted(bundle, resp)
        return resp

    def Exec(self, ctx: CallContext, req: shim_pb2.ExecProcessRequest) -> empty_pb2.Empty:  # noqa: N802
        process = _json_any(req.spec, f"exec {req.exec_id}: spec")
        if not isinstance(process, dict):
            raise ShimError(f"exec {req.exec_id}: spec is not an OCI process object", "invalid_argument")
        self.core.exec(req.id, req.exec_id, process, Stdio(req.stdin, req.stdout, req.stderr, req.terminal))
        self._send(ev.TaskExecAdded(container_id=req.id, exec_id=req.exec_id))
        return empty_pb2.Empty()

    def Kill(self, ctx: CallContext, req: shim_pb2.KillRequest) -> empty_pb2.Empty:  # noqa: N802
        self.core.kill(req.id, req.exec_id, req.signal, all_procs=req.all)
        return empty_pb2.Empty()

    def Wait(self, ctx: CallContext, req: shim_pb2.WaitRequest) -> shim_pb2.WaitResponse:  # noqa: N802
        status, exited_ns = self.core.wait(req.id, req.exec_id)
        try:  # the output first: ctr ends its copies at the exit, whatever is still on its way is lost
            self.core.drain(req.id, req.exec_id, WAIT_DRAIN_SECONDS)
        except ShimError:
            pass
        return shim_pb2.WaitResponse(exit_status=status, exited_at=timestamp(exited_ns))

    def Pause(self, ctx: CallContext, req: shim_pb2.PauseRequest) -> empty_pb2.Empty:  # noqa: N802
        self.core.pause(req.id)
        self._send(ev.TaskPaused(container_id=req.id))
        return empty_pb2.Empty()

    def Resume(self, ctx: CallContext, req: shim_pb2.ResumeRequest) -> empty_pb2.Empty:  # noqa: N802
        self.core.resume(req.id)
        self._send(ev.TaskResumed(container_id=req.id))
        return empty_pb2.Empty()

    def Checkpoint(self, ctx: CallContext, req: shim_pb2.CheckpointTaskRequest) -> empty_pb2.Empty:  # noqa: N802
        raise TtrpcError(Code.UNIMPLEMENTED, f"checkpoint of {req.id}: not supported by the rune shim")

    # ------------------------------------------------------------------ queries and settings

    def State(self, ctx: CallContext, req: shim_pb2.StateRequest) -> shim_pb2.StateResponse:  # noqa: N802
        st = self.core.state(req.id, req.exec_id)
        resp = shim_pb2.StateResponse(
            id=st["id"], exec_id=st["exec_id"], bundle=st["bundle"], pid=st["pid"],
            status=_STATUS.get(st["status"], types_pb2.UNKNOWN), stdin=st["stdin"], stdout=st["stdout"],
            stderr=st["stderr"], terminal=st["terminal"], exit_status=st["exit_status"])
        if st["exited_at_ns"]:
            resp.exited_at.CopyFrom(timestamp(st["exited_at_ns"]))
        return resp

    def Pids(self, ctx: CallContext, req: shim_pb2.PidsRequest) -> shim_pb2.PidsResponse:  # noqa: N802
        out = shim_pb2.PidsResponse()
        for p in self.core.pids(req.id):
            info = out.processes.add(pid=p["pid"])
            if p["exec_id"]:
                info.info.CopyFrom(pack_any(oci_pb2.ProcessDetails(exec_id=p["exec_id"])))
        return out

    def ResizePty(self, ctx: CallContext, req: shim_pb2.ResizePtyRequest) -> empty_pb2.Empty:  # noqa: N802
        self.core.resize_pty(req.id, req.exec_id, req.width, req.height)
        return empty_pb2.Empty()

    def CloseIO(self, ctx: CallContext, req: shim_pb2.CloseIORequest) -> empty_pb2.Empty:  # noqa: N802
        if req.stdin:
            self.core.close_io(req.id, req.exec_id)
        return empty_pb2.Empty()

    def Update(self, ctx: CallContext, req: shim_pb2.UpdateTaskRequest) -> empty_pb2.Empty:  # noqa: N802
        resources = _json_any(req.resources, f"update {req.id}: resources")
        if not isinstance(resources, dict):
            raise ShimError(f"update {req.id}: resources are not an OCI LinuxResources object", "invalid_argument")
        self.core.update(req.id, resources)
        return empty_pb2.Empty()

    def Stats(self, ctx: CallContext, req: shim_pb2.StatsRequest) -> shim_pb2.StatsResponse:  # noqa: N802
        from inclavare.shim.metrics import metrics_any

        return shim_pb2.StatsResponse(stats=metrics_any(self.core.stats(req.id)))

    def Connect(self, ctx: CallContext, req: shim_pb2.ConnectRequest) -> shim_pb2.ConnectResponse:  # noqa: N802
        task_pid = 0
        try:
            task_pid = int(self.core.state(req.id)["pid"])
        except ShimError:
            pass
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid)

    def Shutdown(self, ctx: CallContext, req: shim_pb2.ShutdownRequest) -> empty_pb2.Empty:  # noqa: N802
        """As runc's shim: a shim that still serves containers stays; the last one out turns the lights off."""
        if self.core.ids() and not req.now:
            return empty_pb2.Empty()
        self.shutting_down.set()
        if self._on_shutdown is not None:
            self._on_shutdown()
        return empty_pb2.Empty()
