"""The rats-tls-server program under hostile and busy clients, on loopback (issue 19, item 3): a client that sends
5 bytes of a ClientHello and waits does not hold back the rats-tls-client program's full exchange; 100 clients
at once are all answered. (The deadlines and the cap themselves are tested on the library,
tests/unit/ratls/test_ratls_server.py: the program's are 30 s and more.)"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.ratls.tls import RatsTls, RatsTlsConfig

SRC = Path(__file__).resolve().parents[2] / "src"
TIMEOUT = 30.0  # a generous upper bound, used only as a timeout; the program's own handshake deadline is 30 s
STALL = b"\x16\x03\x01\x02\x00"  # a TLS record header announcing a 512-byte ClientHello, and then nothing
NULL = ["-a", "nullattester", "-v", "nullverifier"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    e["INCLAVARE_SIM_STATE_DIR"] = str(tmp_path / "sim")
    return e


class Program:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: list[str]) -> None:
        self.proc, self.port, self.log = proc, port, log


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[Program]:
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.rats_tls_server", *NULL, "-p", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    port: list[int] = []
    started = threading.Event()

    def drain() -> None:  # read its log all along, so a full pipe never blocks the server
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                port.append(int(line.rsplit(":", 1)[1]))
                started.set()
        started.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert started.wait(TIMEOUT) and port, f"the server did not start: {lines}"
        yield Program(proc, port[0], lines)
    finally:
        proc.kill()
        proc.wait()


def test_a_stalled_client_does_not_hold_back_the_client_program(server: Program, env: dict[str, str]) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as slow:
        slow.sendall(STALL)
        time.sleep(0.2)  # let the server take it first, as a one-at-a-time server would
        client = subprocess.run([sys.executable, "-m", "inclavare.cli.rats_tls_client", *NULL, "-p",
                                 str(server.port)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert client.returncode == 0, client.stderr
        assert "Server: Hello and welcome to RATS-TLS!" in client.stdout.splitlines()
        readable, _, _ = select.select([slow], [], [], 0)
        assert not readable, "the stalled client was answered or closed: it was not still waiting"
    assert server.proc.poll() is None


def test_a_hundred_clients_at_once_are_all_answered(server: Program) -> None:
    cfg = RatsTlsConfig(attester="nullattester", verifier="nullverifier")
    answers: list[bytes | str] = []
    lock = threading.Lock()
    go = threading.Event()

    def client(i: int) -> None:
        go.wait()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
                h = RatsTls(cfg, server_side=False)
                h.negotiate(sock)
                h.transmit(b"client %d" % i)
                got: bytes | str = h.receive(256)
                h.close()
        except Exception as e:
            got = f"{type(e).__name__}: {e}"
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert sorted(answers, key=str) == sorted((b"client %d" % i for i in range(100)), key=str)
    deadline = time.monotonic() + TIMEOUT  # the log is read by another thread: wait for its last lines
    while sum("Client: client " in line for line in server.log) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum("Client: client " in line for line in server.log) == 100
