"""The seccomp notify agent's protocol: the runtime hands the notify fd and the container process state to the
agent at ``listenerPath`` (:func:`send_to_listener`, runtime-spec "The Container Process State"), and the agent
reads and answers trapped syscalls (:func:`notify_receive` / :func:`notify_respond`, libseccomp >= 2.5.0).
"""

from __future__ import annotations

import ctypes

from inclavare.errors import SeccompError
from inclavare.formats import fastjson as json
from inclavare.linux.seccomp import _SONAME, OCI_VERSION, _check, _lib, syscall_name
from inclavare.linux.seccomp_profile import _is_int

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# --------------------------------------------------------------------------------------------------
# Seccomp agent hand-off (runtime-spec "The Container Process State")


def _socket_address(listener_path: str) -> str:
    """The address to connect to: ``@name`` is the abstract socket ``name``, as Go (and so runc) reads it."""
    return "\0" + listener_path[1:] if listener_path.startswith("@") else listener_path


def send_to_listener(
    listener_path: str,
    notify_fd: int,
    state: dict[str, Any],
    metadata: str = "",
    *,
    pid: int | None = None,
) -> None:
    """Send the container process state and the seccomp notify fd to the agent at ``listener_path``.

    ``state`` is the container's runtime state (``ociVersion``, ``id``, ``status``, ``pid``, ``bundle``,
    ``annotations``); ``pid`` is the process the fd belongs to (default: ``state["pid"]``).
    One connection carries exactly one message, written with one sendmsg that also carries the fd
    (agents such as runc's sample read it with a single recvmsg); the connection is then closed.
    ``listener_path`` may name an abstract socket as ``@name``.
    """
    import array
    import socket

    if pid is None:
        pid = state.get("pid")
    if not _is_int(pid):
        raise SeccompError("seccomp listener: no process id for the container process state")
    message: dict[str, Any] = {
        "ociVersion": state.get("ociVersion") or OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
    }
    if metadata:
        message["metadata"] = metadata
    message["state"] = state
    payload = json.dumps(message).encode()

    where = f"linux.seccomp.listenerPath {listener_path}"
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    except OSError as exc:
        raise SeccompError(f"{where}: socket: {exc.strerror}") from None
    with sock:
        try:
            sock.connect(_socket_address(listener_path))
        except OSError as exc:
            raise SeccompError(
                f"failed to connect with seccomp agent specified in the seccomp profile: {where}: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            fds = array.array("i", [notify_fd])
            sent = sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            if sent < len(payload):
                sock.sendall(payload[sent:])  # the fd went with the first part only
        except OSError as exc:
            raise SeccompError(f"cannot send seccomp fd to {listener_path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------------
# The agent's side: reading and answering notifications from a notify fd (libseccomp >= 2.5.0)


class _NotifData(ctypes.Structure):
    """struct seccomp_data."""

    _fields_ = [
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class _Notif(ctypes.Structure):
    """struct seccomp_notif."""

    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", _NotifData)]


class _NotifResp(ctypes.Structure):
    """struct seccomp_notif_resp."""

    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32), ("flags", ctypes.c_uint32)]


#: seccomp_notify_respond(): let the kernel run the syscall as if no filter had trapped it.
NOTIFY_FLAG_CONTINUE = 1


class Notification:
    """One trapped syscall read from a notify fd by :func:`notify_receive`."""

    __slots__ = ("arch", "args", "id", "instruction_pointer", "nr", "pid")

    def __init__(self, raw: _Notif) -> None:
        self.id: int = raw.id
        self.pid: int = raw.pid
        self.nr: int = raw.data.nr
        self.arch: int = raw.data.arch
        self.instruction_pointer: int = raw.data.instruction_pointer
        self.args: tuple[int, ...] = tuple(raw.data.args)

    def syscall_name(self) -> str | None:
        """The syscall's name on the caller's architecture, if libseccomp knows it."""
        return syscall_name(self.nr, self.arch)

    def __repr__(self) -> str:
        return f"Notification(id={self.id}, pid={self.pid}, nr={self.nr}, arch={self.arch:#x})"


_NOTIFY_READY = False


def _notify_lib() -> ctypes.CDLL:
    global _NOTIFY_READY
    lib = _lib()
    if _NOTIFY_READY:
        return lib
    sigs: dict[str, tuple[list[Any], Any]] = {
        "seccomp_notify_alloc": (
            [ctypes.POINTER(ctypes.POINTER(_Notif)), ctypes.POINTER(ctypes.POINTER(_NotifResp))],
            ctypes.c_int,
        ),
        "seccomp_notify_free": ([ctypes.POINTER(_Notif), ctypes.POINTER(_NotifResp)], None),
        "seccomp_notify_receive": ([ctypes.c_int, ctypes.POINTER(_Notif)], ctypes.c_int),
        "seccomp_notify_respond": ([ctypes.c_int, ctypes.POINTER(_NotifResp)], ctypes.c_int),
        "seccomp_notify_id_valid": ([ctypes.c_int, ctypes.c_uint64], ctypes.c_int),
    }
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name, None)
        if fn is None:
            raise SeccompError(f"{_SONAME} lacks {name}(); seccomp notification needs libseccomp >= 2.5.0")
        fn.argtypes = argtypes
        fn.restype = restype
    _NOTIFY_READY = True
    return lib


class _NotifyBuffers:
    """The request/response pair libseccomp sizes for the running kernel."""

    def __init__(self) -> None:
        self.lib = _notify_lib()
        self.req = ctypes.POINTER(_Notif)()
        self.resp = ctypes.POINTER(_NotifResp)()
        _check(self.lib.seccomp_notify_alloc(ctypes.byref(self.req), ctypes.byref(self.resp)), "seccomp_notify_alloc")

    def __enter__(self) -> _NotifyBuffers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.seccomp_notify_free(self.req, self.resp)


def notify_receive(fd: int) -> Notification:
    """Wait for and read the next notification from notify fd ``fd``.

    Raises LibseccompError with errno ENOENT when the trapped call went away before it was read.
    """
    with _NotifyBuffers() as bufs:
        _check(bufs.lib.seccomp_notify_receive(fd, bufs.req), "seccomp_notify_receive")
        return Notification(bufs.req.contents)


def notify_respond(fd: int, notif_id: int, *, val: int = 0, error: int = 0, flags: int = 0) -> None:
    """Answer notification ``notif_id``: the call returns ``val``, or fails with errno ``error`` (> 0);
    ``flags=NOTIFY_FLAG_CONTINUE`` lets the kernel run it instead.

    Raises LibseccompError with errno ENOENT when the caller is gone (killed, or its call interrupted).
    """
    with _NotifyBuffers() as bufs:
        resp = bufs.resp.contents
        resp.id = notif_id
        resp.val = val
        resp.error = -error if error > 0 else error
        resp.flags = flags
        _check(bufs.lib.seccomp_notify_respond(fd, bufs.resp), "seccomp_notify_respond")


def notify_id_valid(fd: int, notif_id: int) -> bool:
    """Whether notification ``notif_id`` is still pending (its caller has not gone away)."""
    return bool(_notify_lib().seccomp_notify_id_valid(fd, notif_id) == 0)
