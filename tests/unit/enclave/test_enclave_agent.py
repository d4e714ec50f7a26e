"""Agent wire format (upstream's framing and field numbers), fd passing, and long state paths."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from inclavare.enclave import agent


def test_kill_request_bytes_match_upstream_encoding() -> None:
    # AgentServiceRequest.kill (field 2, length-delimited) { sig (field 1, varint) = 15 }
    assert agent.kill_request(15) == b"\x04\x00\x00\x00" + b"\x12\x02\x08\x0f"


def test_exec_request_keeps_upstream_fields_and_exact_args() -> None:
    req = agent.exec_request(["/bin/echo", "a b", "c"], ["A=1", "B=x y"])
    data = req.SerializeToString()
    # field 1 (exec) -> field 1 (argv) is the space-joined string an upstream agent reads
    assert data.startswith(b"\x0a")
    assert b"\x0a\x0f/bin/echo a b c" in data
    back = agent.read_message(_reader(agent.frame(req)), "request")
    assert agent.exec_args(back) == (["/bin/echo", "a b", "c"], ["A=1", "B=x y"])


def test_upstream_client_args_are_split_on_spaces() -> None:
    from inclavare.enclave.proto import agent_pb2

    req = agent_pb2.AgentServiceRequest()
    req.exec.argv = "/bin/ls -l /"
    req.exec.envp = "PATH=/bin HOME=/"
    assert agent.exec_args(req) == (["/bin/ls", "-l", "/"], ["PATH=/bin", "HOME=/"])


def _reader(data: bytes):
    buf = [data]

    def read(n: int) -> bytes:
        out, buf[0] = buf[0][:n], buf[0][n:]
        return out

    return read


def test_truncated_and_oversized_messages_are_errors() -> None:
    frame = agent.frame(agent.exec_request(["x"], []))
    with pytest.raises(agent.AgentError, match="connection closed"):
        agent.read_message(_reader(frame[:-1]), "request")
    with pytest.raises(agent.AgentError, match="larger than"):
        agent.read_message(_reader(b"\xff\xff\xff\x7f"), "request")
    with pytest.raises(agent.AgentError, match="malformed request"):
        agent.read_message(_reader(b"\x02\x00\x00\x00\xff\xff"), "request")


def test_long_state_dir_and_fd_passing(tmp_path) -> None:
    deep = tmp_path
    while len(str(deep)) < 200:
        deep = deep / "a-rather-long-directory-name"
    deep.mkdir(parents=True)
    lfd = agent.listen(str(deep))
    assert (deep / agent.SOCKET_NAME).exists()
    assert oct((deep / agent.SOCKET_NAME).stat().st_mode & 0o777) == "0o600"
    got: dict = {}

    def server() -> None:
        ls = socket.socket(fileno=lfd)
        conn, _ = ls.accept()
        got["req"] = agent.read_message(agent.sock_reader(conn), "request")
        fd = agent.recv_fd(conn)
        got["data"] = os.read(fd, 100)
        os.close(fd)
        conn.close()
        ls.close()

    t = threading.Thread(target=server)
    t.start()
    s = agent.connect(str(deep))
    s.sendall(agent.frame(agent.exec_request(["/x"], [])))
    r, w = os.pipe()
    os.write(w, b"through the fd")
    os.close(w)
    agent.send_fd(s, r, "pipe")
    os.close(r)
    t.join(5)
    s.close()
    assert agent.exec_args(got["req"])[0] == ["/x"]
    assert got["data"] == b"through the fd"


def test_connect_to_missing_agent_names_the_socket(tmp_path) -> None:
    with pytest.raises(agent.AgentError, match="cannot reach the enclave agent"):
        agent.connect(str(tmp_path))
