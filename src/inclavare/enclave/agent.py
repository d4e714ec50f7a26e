"""The init-runelet's agent socket: how ``rune exec`` and ``rune attest`` reach a running enclave.

Wire format as upstream rune: ``<state dir>/agent.sock`` (unix stream), each message a 4-byte
little-endian length then an ``AgentServiceRequest`` / ``AgentServiceResponse`` protobuf
(generated from proto/agent.proto, see agentwire.py; loaded by :func:`load_codec`). An exec request
is followed by four file descriptors, one SCM_RIGHTS message each, in this order: the signal pipe (read
end; the client writes ``Kill`` requests into it, framed the same way), stdin, stdout, stderr. The reply
carries the payload's exit code.

State directories can be deeper than ``sun_path`` (108 bytes) allows; the socket is bound and reached
through ``/proc/self/fd/<dir fd>/agent.sock``, falling back to a relative path after ``fchdir``.
"""

from __future__ import annotations

import os
import socket
import struct

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SOCKET_NAME = "agent.sock"
MAX_MESSAGE = 16 << 20


class AgentError(InclavareError):
    """Talking to a container's enclave agent failed."""


def load_codec() -> Any:
    """The agent's generated messages (:mod:`inclavare.enclave.agentwire`, which loads the protobuf runtime).

    Not imported with this module: `rune create` of an enclave container loads this module in its own
    process (for :func:`listen`) and never needs the messages there. The code that does (the runelets,
    inside the container) calls this in its executor's ``preload``, on the host and before the container's
    root is entered -- in the forked child, where the import overlaps with the parent's cgroup setup. Once
    loaded, the messages need no further import (tests/unit/enclave/test_agentwire.py checks it), so the calls here
    work after pivot_root."""
    from inclavare.enclave import agentwire

    return agentwire


# ------------------------------------------------------------------------------------ framing

def _read_exact(read: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = read(n - len(buf))
        if not chunk:
            raise AgentError(f"agent: connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_message(read: Any, kind: str) -> Any:
    """Read one framed message with ``read(n) -> bytes``; ``kind`` is "request" or "response"."""
    (size,) = struct.unpack("<I", _read_exact(read, 4))
    if size > MAX_MESSAGE:
        raise AgentError(f"agent: {kind} of {size} bytes is larger than the {MAX_MESSAGE}-byte limit")
    data = _read_exact(read, size) if size else b""
    pb = load_codec()
    msg = pb.AgentServiceRequest() if kind == "request" else pb.AgentServiceResponse()
    try:
        msg.ParseFromString(data)
    except (ValueError, pb.DecodeError) as e:
        raise AgentError(f"agent: malformed {kind}: {' '.join(str(e).split())}") from None
    return msg


def frame(msg: Any) -> bytes:
    data: bytes = msg.SerializeToString()
    return struct.pack("<I", len(data)) + data


def write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def sock_reader(sock: socket.socket) -> Any:
    return sock.recv


def fd_reader(fd: int) -> Any:
    return lambda n: os.read(fd, n)


# ------------------------------------------------------------------------------------ sockets

def _via_dir(dir_fd: int, op: Any) -> None:
    try:
        op(f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}")
        return
    except OSError as e:
        if e.errno not in (2, 20, 36):  # no /proc: go through the working directory
            raise
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        os.fchdir(dir_fd)
        op(SOCKET_NAME)
    finally:
        os.fchdir(cwd)
        os.close(cwd)


def listen(state_dir: str, uid: int = 0, gid: int = 0) -> int:
    """Create the agent socket in ``state_dir``; returns the listening fd (for the init-runelet)."""
    dir_fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _via_dir(dir_fd, s.bind)
        path = os.path.join(state_dir, SOCKET_NAME)
        os.chmod(path, 0o600)
        if uid or gid:
            os.chown(path, uid, gid)
        s.listen(64)
        return s.detach()
    except OSError as e:
        s.close()
        raise AgentError(f"agent socket in {state_dir}: {e.strerror}") from None
    finally:
        os.close(dir_fd)


def connect(state_dir: str) -> socket.socket:
    """Connect to a container's agent (from the host)."""
    try:
        dir_fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise AgentError(f"agent socket in {state_dir}: {e.strerror}") from None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _via_dir(dir_fd, s.connect)
    except OSError as e:
        s.close()
        raise AgentError(f"{os.path.join(state_dir, SOCKET_NAME)}: cannot reach the enclave agent: "
                         f"{e.strerror}") from None
    finally:
        os.close(dir_fd)
    return s


def send_fd(sock: socket.socket, fd: int, name: str) -> None:
    socket.send_fds(sock, [name.encode() or b"?"], [fd])


def recv_fd(sock: socket.socket) -> int:
    _data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise AgentError("agent: expected a file descriptor from the client, got none")
    for extra in fds[1:]:
        os.close(extra)
    return fds[0]


# ------------------------------------------------------------------------------------ clients

def exec_request(args: list[str], env: list[str]) -> Any:
    pb = load_codec()
    req = pb.AgentServiceRequest()
    req.exec.argv = " ".join(args)  # for an upstream peer
    req.exec.envp = " ".join(env)
    req.exec.args.extend(args)
    req.exec.env.extend(env)
    return req


def kill_request(sig: int) -> bytes:
    pb = load_codec()
    req = pb.AgentServiceRequest()
    req.kill.sig = sig
    return frame(req)


def attest(state_dir: str, is_ra: bool, quote_type: str, targetinfo: bytes | None) -> bytes:
    """Ask the init-runelet for a local REPORT (to ``targetinfo``); returns the 432 bytes."""
    pb = load_codec()
    req = pb.AgentServiceRequest()
    req.attest.isRA = is_ra
    req.attest.quoteType = quote_type
    if targetinfo is not None:
        req.attest.targetInfo = targetinfo
    s = connect(state_dir)
    try:
        s.sendall(frame(req))
        resp = read_message(sock_reader(s), "response")
    finally:
        s.close()
    if not resp.HasField("attest"):
        raise AgentError("agent: the reply carries no attestation result")
    if resp.attest.error or resp.attest.exitCode:
        raise AgentError(f"attest: {resp.attest.error or f'exit code {resp.attest.exitCode}'}")
    return bytes(resp.attest.localReport)


def exec_args(req: Any) -> tuple[list[str], list[str]]:
    """The argv and env of an exec request: ours exactly, an upstream client's split on spaces."""
    ex = req.exec
    args = list(ex.args) if len(ex.args) else [a for a in ex.argv.split(" ") if a]
    env = list(ex.env) if len(ex.env) else [e for e in ex.envp.split(" ") if e]
    return args, env
