"""inclavare.ratls.server on loopback (issue 19, item 3): a stalled client holds only its own connection and is
cut off at the handshake deadline; 100 clients are served at once; the connection cap queues the excess for
``queue_timeout`` and then closes it; shutdown and ``connections`` end serving; a failing handler ends only its
connection. Every test runs through both TLS libraries (tests/conftest.py's tls_library)."""

from __future__ import annotations

import contextlib
import logging
import math
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inclavare.ratls.dice import RatlsError
from inclavare.ratls.server import MessageTooLarge, RatsTlsServer, ServerConnection, ServerLimits, peer_name
from inclavare.ratls.tls import RatsTls, RatsTlsConfig

TIMEOUT = 30.0  # a generous upper bound, used only as a timeout: nothing here should take near it
STALL = b"\x16\x03\x01\x02\x00"  # a TLS record header announcing a 512-byte ClientHello, and then nothing


@pytest.fixture(autouse=True)
def _both_tls_libraries(tls_library: str) -> str:
    return tls_library


def null_config(**kw: Any) -> RatsTlsConfig:
    return RatsTlsConfig(attester="nullattester", verifier="nullverifier", **kw)


def echo(conn: ServerConnection, peer: Any) -> None:
    conn.transmit(conn.receive(256))


@contextlib.contextmanager
def serving(handle: Callable[[ServerConnection, Any], None] = echo, connections: int = 0,
            **limits: Any) -> Iterator[tuple[RatsTlsServer, int]]:
    server = RatsTlsServer(null_config(), handle, ServerLimits(**limits), name="test")
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    thread = server.start(sock, connections)
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "serve() did not return after shutdown()"


def exchange(port: int, message: bytes = b"hello") -> bytes:
    """A full client exchange: connect, handshake, send, read the echo."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        h = RatsTls(null_config(), server_side=False)
        h.negotiate(sock)
        h.transmit(message)
        answer = h.receive(256)
        h.close()
        return answer


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to the socket's timeout) for the server to end the connection: EOF or a reset."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock: socket.socket) -> bool:
    """Nothing to read yet: the server has neither answered nor closed the connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def test_a_stalled_client_does_not_delay_others_and_is_cut_off_at_the_handshake_deadline(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inclavare.ratls.server")
    with (serving(handshake_timeout=4.0, read_timeout=60.0, write_timeout=60.0) as (server, port),
          socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as slow):
        where = peer_name(slow.getsockname())
        slow.sendall(STALL)
        for _ in range(3):  # others are served, whole exchanges, while it hangs
            assert exchange(port) == b"hello"
        assert still_open(slow), "the stalled client was cut off before the others were served"
        # the read and write deadlines are 60 s and the client's timeout 30 s: only the handshake deadline can
        # end it here
        assert closed_by_server(slow)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith(f"test client {where} refused: "), refused


def test_a_client_silent_after_the_handshake_is_cut_off_at_the_read_deadline() -> None:
    with (serving(handshake_timeout=TIMEOUT * 2, read_timeout=1.0) as (server, port),
          socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock):
        h = RatsTls(null_config(), server_side=False)
        h.negotiate(sock)
        assert h.receive(256) == b""  # the server ended it: not the 60 s handshake deadline, not our 30 s timeout
        h.close()


def test_a_hundred_clients_are_served_at_once() -> None:
    """Each handler waits at a barrier for all 100: a server serving fewer at once would never pass it."""
    n = 100
    barrier = threading.Barrier(n, timeout=TIMEOUT)

    def together(conn: ServerConnection, peer: Any) -> None:
        data = conn.receive(256)
        barrier.wait()
        conn.transmit(data)

    answers: list[bytes | Exception] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            got: bytes | Exception = exchange(port, b"client %d" % i)
        except Exception as e:
            got = e
        with lock:
            answers.append(got)

    with serving(together, max_connections=n) as (server, port):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 2)
    assert sorted(answers, key=str) == sorted((b"client %d" % i for i in range(n)), key=str)
    assert not barrier.broken


def test_the_cap_queues_the_excess_for_the_queue_wait_then_closes_it() -> None:
    with serving(max_connections=2, queue_timeout=0.3, handshake_timeout=TIMEOUT * 2) as (server, port):
        held = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(2)]
        try:
            for s in held:
                s.sendall(STALL)
            extra = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            with extra:
                # closed after its queue wait, long before the 60 s handshake deadline of the held ones
                assert closed_by_server(extra)
            assert server.active == 2 and all(still_open(s) for s in held)
        finally:
            for s in held:
                s.close()
        assert exchange(port) == b"hello"  # the slots freed as the held clients left


def test_a_queued_connection_is_served_when_a_slot_frees() -> None:
    release = threading.Event()
    inside = threading.Event()

    def blocking(conn: ServerConnection, peer: Any) -> None:
        data = conn.receive(256)
        inside.set()
        release.wait(TIMEOUT)
        conn.transmit(data)

    with serving(blocking, max_connections=1, queue_timeout=TIMEOUT) as (server, port):
        first: dict[str, Any] = {}
        t = threading.Thread(target=lambda: first.update(answer=exchange(port, b"first")))
        t.start()
        assert inside.wait(TIMEOUT)
        second: dict[str, Any] = {}
        t2 = threading.Thread(target=lambda: second.update(answer=exchange(port, b"second")))
        t2.start()
        t2.join(0.5)
        assert server.active == 1 and "answer" not in second  # queued: not served while the slot is taken
        release.set()
        t.join(TIMEOUT)
        t2.join(TIMEOUT)
    assert first["answer"] == b"first" and second["answer"] == b"second"


def test_shutdown_ends_open_connections() -> None:
    with serving(handshake_timeout=TIMEOUT * 4) as (server, port):
        slow = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        slow.sendall(STALL)
        with slow:
            assert exchange(port) == b"hello"  # the stalled connection is being served
            server.shutdown()  # serving()'s exit asserts that serve() returns, well before the 120 s deadline
            assert closed_by_server(slow)


def test_serving_a_number_of_connections_then_returning() -> None:
    server = RatsTlsServer(null_config(), echo, name="test")
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        thread = server.start(sock, connections=2)
        assert exchange(port, b"one") == b"one"
        assert exchange(port, b"two") == b"two"
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_a_failing_handler_ends_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky(conn: ServerConnection, peer: Any) -> None:
        calls.append(conn.address)
        if len(calls) == 1:
            raise ValueError("a bug")
        echo(conn, peer)

    with serving(flaky) as (_, port):
        try:
            answer = exchange(port)
        except OSError:  # closed without an answer: EOF or a reset, as the TLS library reports it
            answer = b""
        assert answer == b""
        assert exchange(port) == b"hello"
    assert any("internal error" in r.getMessage() and r.exc_info for r in caplog.records)


def test_receive_message_spans_records_and_is_bounded() -> None:
    got: list[Any] = []

    def messages(conn: ServerConnection, peer: Any) -> None:
        try:
            got.append(conn.receive_message())
        except MessageTooLarge as e:
            got.append(e)
        conn.transmit(b"done")

    # 30,000 bytes: two records, one message; 3 full records: past the limit at the third, with nothing left
    # unread (unread data at close would make the server's kernel answer with a reset instead of the data)
    with serving(messages, max_request=40_000) as (_, port):
        for size in (30_000, 3 * 16_384):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                h = RatsTls(null_config(), server_side=False)
                h.negotiate(sock)
                h.transmit(b"m" * size)
                assert h.receive(256) == b"done"
                h.close()
    assert got[0] == b"m" * 30_000
    assert isinstance(got[1], MessageTooLarge) and "more than 40000 bytes" in str(got[1])


@pytest.mark.parametrize(("field", "value"), [
    ("max_connections", 0), ("max_connections", True), ("max_request", 1.5), ("queue_timeout", -1),
    ("queue_timeout", math.nan), ("handshake_timeout", 0), ("read_timeout", math.inf * 0), ("write_timeout", "5"),
])
def test_limits_out_of_range_are_named(field: str, value: Any) -> None:
    with pytest.raises(RatlsError, match=f"RATS-TLS server limits: {field}: expected"):
        RatsTlsServer(null_config(), echo, ServerLimits(**{field: value}))


def test_bad_configuration_and_handler() -> None:
    with pytest.raises(RatlsError, match="config: expected a RatsTlsConfig"):
        RatsTlsServer(object(), echo)  # type: ignore[arg-type]
    with pytest.raises(RatlsError, match="handle: expected a callable"):
        RatsTlsServer(null_config(), None)  # type: ignore[arg-type]
    with pytest.raises(RatlsError, match="crypto"):  # the configuration is checked now, not at the first client
        RatsTlsServer(null_config(crypto="dsa"), echo)


def test_peer_names() -> None:
    assert peer_name(("127.0.0.1", 80)) == "127.0.0.1:80"
    assert peer_name(("::1", 443, 0, 0)) == "[::1]:443"
    assert peer_name("") == "unix socket"
    assert peer_name("/run/x.sock") == "/run/x.sock"
