"""ttrpc: the frame codec (round trips, any chunking, oversized frames skipped without buffering) and the
server and client over a real unix socket (dispatch, status codes, namespace metadata, concurrency, deadlines,
hostile peers)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.formats.ttrpc import (
    HEADER_SIZE,
    MAX_MESSAGE,
    TYPE_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    OversizedFrame,
    TtrpcFrameError,
    decode_header,
    encode_frame,
    encode_header,
)
from inclavare.shim.proto.rpc import status_pb2
from inclavare.shim.proto.task import shim_pb2
from inclavare.shim.proto.ttrpc import request_pb2
from inclavare.shim.ttrpc import NAMESPACE_KEY, CallContext, Code, TtrpcError, TtrpcServer
from inclavare.shim.ttrpc_client import TtrpcClient

SVC = "test.v1.Echo"


# ---------------------------------------------------------------------------------------------- codec

def test_header_is_ten_big_endian_bytes() -> None:
    assert encode_header(5, 3, TYPE_REQUEST) == b"\x00\x00\x00\x05\x00\x00\x00\x03\x01\x00"
    assert encode_frame(0x01020304, TYPE_RESPONSE, b"ab", flags=4) == b"\x00\x00\x00\x02\x01\x02\x03\x04\x02\x04ab"
    assert decode_header(b"\x00\x40\x00\x01\xff\xff\xff\xff\x03\x01") == (0x400001, 0xFFFFFFFF, TYPE_DATA, 1)


def test_codec_refuses_what_ttrpc_refuses() -> None:
    assert len(encode_frame(1, TYPE_REQUEST, bytes(MAX_MESSAGE))) == MAX_MESSAGE + HEADER_SIZE
    with pytest.raises(TtrpcFrameError, match="exceed maximum message size of 4194304"):
        encode_frame(1, TYPE_REQUEST, bytes(MAX_MESSAGE + 1))
    with pytest.raises(TtrpcFrameError, match="need 10"):
        decode_header(b"\x00" * 9)
    with pytest.raises(TtrpcFrameError, match="out of range"):
        encode_header(0, 1 << 32, TYPE_REQUEST)


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 255), st.integers(0, 255),
                                 st.binary(max_size=300)), max_size=8),
       cuts=st.lists(st.integers(1, 64), max_size=40))
def test_any_chunking_yields_the_same_frames(frames: list[tuple[int, int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(s, t, p, f) for s, t, f, p in frames)
    dec = FrameDecoder()
    got: list[Frame | OversizedFrame] = []
    at = 0
    for n in [*cuts, len(stream)]:
        got += dec.feed(stream[at:at + n])
        at += n
    assert got == [Frame(s, t, f, p) for s, t, f, p in frames]
    assert dec.buffered == 0


def test_oversized_frame_is_reported_once_and_skipped_unbuffered() -> None:
    dec = FrameDecoder()
    after = encode_frame(3, TYPE_REQUEST, b"next")
    assert dec.feed(encode_header(MAX_MESSAGE + 1, 1, TYPE_REQUEST)) == \
        [OversizedFrame(1, TYPE_REQUEST, 0, MAX_MESSAGE + 1)]
    chunk = bytes(1 << 20)
    for _ in range(4):
        assert dec.feed(chunk) == []
        assert dec.buffered == 0  # the refused bytes are dropped as they arrive
    assert dec.skipping == 1
    assert dec.feed(b"\x00" + after) == [Frame(3, TYPE_REQUEST, 0, b"next")]
    # a refused payload that arrives together with the next frame
    dec2 = FrameDecoder(max_message=4)
    out = dec2.feed(encode_header(5, 1, TYPE_REQUEST) + b"12345" + after)
    assert out == [OversizedFrame(1, TYPE_REQUEST, 0, 5), Frame(3, TYPE_REQUEST, 0, b"next")]
    assert OversizedFrame(1, 1, 0, 5).message() == "message length 5 exceed maximum message size of 4194304"


# ---------------------------------------------------------------------------------------------- server fixtures

class Echo:
    """Handlers for the test service; requests and responses are ttrpc.KeyValue (any message would do)."""

    def __init__(self) -> None:
        self.barrier: threading.Barrier | None = None
        self.seen_cancel = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()

    def echo(self, ctx: CallContext, req: request_pb2.KeyValue) -> request_pb2.KeyValue:
        return request_pb2.KeyValue(key=req.key, value=f"{ctx.namespace}|{ctx.service}/{ctx.method}")

    def big(self, ctx: CallContext, req: request_pb2.KeyValue) -> request_pb2.KeyValue:
        return request_pb2.KeyValue(value="x" * int(req.key))

    def meet(self, ctx: CallContext, req: request_pb2.KeyValue) -> request_pb2.KeyValue:
        assert self.barrier is not None
        self.barrier.wait(timeout=20)  # raises BrokenBarrierError unless all callers are in here at once
        return req

    def block(self, ctx: CallContext, req: request_pb2.KeyValue) -> request_pb2.KeyValue:
        self.entered.set()
        end = time.monotonic() + 20
        while not self.release.wait(0.01) and time.monotonic() < end:
            if ctx.cancelled.is_set():
                self.seen_cancel.set()
        return req

    def fail(self, ctx: CallContext, req: request_pb2.KeyValue) -> request_pb2.KeyValue:
        errors: dict[str, Exception] = {
            "missing": FileNotFoundError("container c1 does not exist"),
            "exists": FileExistsError("container c1 already exists"),
            "precondition": TtrpcError(Code.FAILED_PRECONDITION, "container c1 is not running"),
            "bug": RuntimeError("boom"),
            "value": ValueError("bad signal 99"),
        }
        raise errors[req.key]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[TtrpcServer, Echo, str]]:
    impl = Echo()
    srv = TtrpcServer(send_timeout=1.0, max_inflight=64)
    for name in ("echo", "big", "meet", "block", "fail"):
        srv.register(SVC, name.capitalize(), request_pb2.KeyValue, getattr(impl, name))
    path = str(tmp_path / "t.sock")
    srv.serve(path)
    yield srv, impl, path
    impl.release.set()
    srv.close()


def raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return s


def request_frame(stream_id: int, method: str, payload: bytes = b"", service: str = SVC,
                  timeout_nano: int = 0) -> bytes:
    req = request_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
    return encode_frame(stream_id, TYPE_REQUEST, req.SerializeToString())


def read_response(s: socket.socket) -> tuple[int, request_pb2.Response]:
    dec = FrameDecoder()
    while True:
        data = s.recv(65536)
        assert data, "server closed the connection"
        frames = dec.feed(data)
        if frames:
            f = frames[0]
            assert isinstance(f, Frame) and f.type == TYPE_RESPONSE
            return f.stream_id, request_pb2.Response.FromString(f.payload)


def call(path: str, method: str, key: str = "k", **kw: object) -> request_pb2.KeyValue:
    with TtrpcClient(path, metadata={NAMESPACE_KEY: "k8s.io"}) as c:
        return c.call(SVC, method, request_pb2.KeyValue(key=key), request_pb2.KeyValue, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- dispatch and status

def test_unary_call_with_namespace_metadata(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, _, path = server
    assert call(path, "Echo", "hello") == request_pb2.KeyValue(key="hello", value=f"k8s.io|{SVC}/Echo")


def test_response_bytes_carry_an_ok_status_as_ttrpc_does(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, _, path = server
    with raw(path) as s:
        s.sendall(request_frame(7, "Echo", request_pb2.KeyValue(key="a").SerializeToString()))
        sid, resp = read_response(s)
    assert sid == 7
    assert resp.HasField("status") and resp.status.code == 0
    assert request_pb2.KeyValue.FromString(resp.payload).key == "a"


@pytest.mark.parametrize(("service", "method", "message"), [
    ("nope.v1.Svc", "Echo", "service nope.v1.Svc"),
    (SVC, "Nope", "method Nope"),
])
def test_unknown_service_or_method_is_unimplemented(server: tuple[TtrpcServer, Echo, str], service: str,
                                                    method: str, message: str) -> None:
    _, _, path = server
    with TtrpcClient(path) as c, pytest.raises(TtrpcError) as e:
        c.call(service, method, request_pb2.KeyValue(), request_pb2.KeyValue)
    assert (e.value.code, e.value.status_message) == (Code.UNIMPLEMENTED, message)


@pytest.mark.parametrize(("key", "code", "text"), [
    ("missing", Code.NOT_FOUND, "container c1 does not exist"),
    ("exists", Code.ALREADY_EXISTS, "container c1 already exists"),
    ("precondition", Code.FAILED_PRECONDITION, "container c1 is not running"),
    ("bug", Code.UNKNOWN, "boom"),
    ("value", Code.INVALID_ARGUMENT, "bad signal 99"),
])
def test_handler_errors_become_status_codes(server: tuple[TtrpcServer, Echo, str], key: str, code: Code,
                                            text: str) -> None:
    _, _, path = server
    with pytest.raises(TtrpcError) as e:
        call(path, "Fail", key)
    assert (e.value.code, e.value.status_message) == (code, text)
    assert call(path, "Echo").key == "k"  # and the server keeps serving


def test_undecodable_payload_is_invalid_argument(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, _, path = server
    with raw(path) as s:
        s.sendall(request_frame(1, "Echo", b"\x0a\x05ab"))  # field 1 claims 5 bytes, 2 follow
        sid, resp = read_response(s)
    assert sid == 1 and resp.status.code == Code.INVALID_ARGUMENT
    assert "undecodable ttrpc.KeyValue" in resp.status.message


def test_register_service_serves_the_methods_an_object_has(tmp_path: Path) -> None:
    class Task:
        def Connect(self, ctx: CallContext, req: shim_pb2.ConnectRequest) -> shim_pb2.ConnectResponse:  # noqa: N802
            return shim_pb2.ConnectResponse(shim_pid=42, version=req.id)

    with TtrpcServer() as srv:
        assert srv.register_service(shim_pb2.DESCRIPTOR.services_by_name["Task"], Task()) == ["Connect"]
        srv.serve(str(tmp_path / "s"))
        with TtrpcClient(str(tmp_path / "s")) as c:
            r = c.call("containerd.task.v2.Task", "Connect", shim_pb2.ConnectRequest(id="v"), shim_pb2.ConnectResponse)
            assert (r.shim_pid, r.version) == (42, "v")
            with pytest.raises(TtrpcError, match="UNIMPLEMENTED: method State"):
                c.call("containerd.task.v2.Task", "State", shim_pb2.StateRequest(), shim_pb2.StateResponse)


# ---------------------------------------------------------------------------------------------- concurrency, deadlines

def test_concurrent_calls_on_one_connection_run_at_once(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, impl, path = server
    n = 8
    impl.barrier = threading.Barrier(n)
    results: list[str] = []
    errors: list[BaseException] = []
    with TtrpcClient(path) as c:
        def one(i: int) -> None:
            try:
                results.append(c.call(SVC, "Meet", request_pb2.KeyValue(key=str(i)), request_pb2.KeyValue).key)
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors
    assert sorted(results) == sorted(str(i) for i in range(n))  # each answer reached its own caller


def test_inline_method_is_answered_while_a_blocking_call_is_in_flight(tmp_path: Path) -> None:
    impl = Echo()
    with TtrpcServer() as srv:
        srv.register(SVC, "Block", request_pb2.KeyValue, impl.block)
        srv.register(SVC, "Echo", request_pb2.KeyValue, impl.echo, inline=True)
        srv.serve(str(tmp_path / "s"))
        with raw(str(tmp_path / "s")) as s:
            s.sendall(request_frame(1, "Block"))
            assert impl.entered.wait(20)
            for sid in (3, 5, 7):  # the inline handler keeps the reading thread; each is answered in turn
                s.sendall(request_frame(sid, "Echo", request_pb2.KeyValue(key=str(sid)).SerializeToString()))
                got, resp = read_response(s)
                assert (got, resp.status.code, request_pb2.KeyValue.FromString(resp.payload).key) == (sid, 0, str(sid))
            impl.release.set()
            got, resp = read_response(s)
            assert (got, resp.status.code) == (1, 0)


def test_many_threads_share_one_client(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, _, path = server
    wrong: list[str] = []
    with TtrpcClient(path) as c:
        def worker(t: int) -> None:
            for i in range(50):
                key = f"{t}-{i}"
                if c.call(SVC, "Echo", request_pb2.KeyValue(key=key), request_pb2.KeyValue).key != key:
                    wrong.append(key)
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    assert wrong == []


def test_a_caller_that_times_out_hands_reading_to_the_others(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, impl, path = server
    got: list[str] = []
    with TtrpcClient(path) as c:
        def second() -> None:
            impl.entered.wait(20)  # the first call holds the reading role by now
            got.append(c.call(SVC, "Block", request_pb2.KeyValue(key="second"), request_pb2.KeyValue).key)
        t = threading.Thread(target=second)
        t.start()
        with pytest.raises(TtrpcError) as e:
            c.call(SVC, "Block", request_pb2.KeyValue(key="first"), request_pb2.KeyValue, timeout=0.5)
        assert e.value.code == Code.DEADLINE_EXCEEDED
        impl.release.set()  # only now is the second call answered: someone must be reading
        t.join(20)
    assert got == ["second"]


def test_request_timeout_is_honoured_by_the_server(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, impl, path = server
    with raw(path) as s:  # a caller that would wait for ever: the server's deadline answers it
        s.sendall(request_frame(1, "Block", timeout_nano=50_000_000))
        sid, resp = read_response(s)
        assert sid == 1 and resp.status.code == Code.DEADLINE_EXCEEDED
        assert resp.status.message == "context deadline exceeded"
        assert impl.seen_cancel.wait(20)  # the handler saw its context cancelled
        impl.release.set()
        s.sendall(request_frame(3, "Echo"))  # the late result was dropped: the next answer is stream 3's
        sid, resp = read_response(s)
        assert sid == 3 and resp.status.code == 0


def test_client_timeout(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, impl, path = server
    with pytest.raises(TtrpcError) as e:
        call(path, "Block", timeout=0.05)
    assert e.value.code == Code.DEADLINE_EXCEEDED


def test_inflight_cap_per_connection(tmp_path: Path) -> None:
    impl = Echo()
    with TtrpcServer(max_inflight=2) as srv:
        srv.register(SVC, "Block", request_pb2.KeyValue, impl.block)
        srv.register(SVC, "Echo", request_pb2.KeyValue, impl.echo)
        srv.serve(str(tmp_path / "s"))
        with raw(str(tmp_path / "s")) as s:
            s.sendall(request_frame(1, "Block") + request_frame(3, "Block") + request_frame(5, "Echo"))
            sid, resp = read_response(s)
            assert sid == 5 and resp.status.code == Code.RESOURCE_EXHAUSTED
            impl.release.set()


def test_inflight_cap_across_connections_and_its_release(tmp_path: Path) -> None:
    impl = Echo()
    with TtrpcServer(max_total_inflight=2) as srv:
        srv.register(SVC, "Block", request_pb2.KeyValue, impl.block)
        srv.serve(str(tmp_path / "s"))
        a, b = raw(str(tmp_path / "s")), raw(str(tmp_path / "s"))
        a.sendall(request_frame(1, "Block"))
        assert impl.entered.wait(10)  # a's call holds its place before b asks for two more
        b.sendall(request_frame(1, "Block") + request_frame(3, "Block"))
        sid, resp = read_response(b)
        assert (sid, resp.status.code) == (3, Code.RESOURCE_EXHAUSTED)
        assert resp.status.message == "more than 2 requests in flight"
        impl.release.set()
        assert read_response(a)[0] == 1 and read_response(b)[0] == 1
        for sid in (5, 7):  # both places are free again
            b.sendall(request_frame(sid, "Block"))
            assert read_response(b) == (sid, request_pb2.Response(status=status_pb2.Status(), payload=b""))
        a.close()
        b.close()


# ---------------------------------------------------------------------------------------------- hostile peers

def test_oversized_frame_is_refused_and_the_connection_kept(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, _, path = server
    with raw(path) as s:
        s.sendall(encode_header(MAX_MESSAGE + 1, 1, TYPE_REQUEST) + bytes(MAX_MESSAGE + 1))
        sid, resp = read_response(s)
        assert sid == 1 and resp.status.code == Code.RESOURCE_EXHAUSTED
        assert resp.status.message == f"message length {MAX_MESSAGE + 1} exceed maximum message size of {MAX_MESSAGE}"
        s.sendall(request_frame(3, "Echo"))
        sid, resp = read_response(s)
        assert sid == 3 and resp.status.code == 0


def test_garbage_even_ids_and_data_frames(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, _, path = server
    with raw(path) as s:
        s.sendall(encode_frame(1, TYPE_REQUEST, b"\xff\xff\xff"))
        sid, resp = read_response(s)
        assert sid == 1 and resp.status.code == Code.INVALID_ARGUMENT
        assert resp.status.message.startswith("unmarshal request error")
        s.sendall(request_frame(2, "Echo"))
        sid, resp = read_response(s)
        assert (sid, resp.status.code) == (2, Code.INVALID_ARGUMENT)
        assert resp.status.message == "StreamID must be odd for client initiated streams"
        s.sendall(encode_frame(5, TYPE_DATA, b"zz") + encode_frame(9, 77, b"") + request_frame(7, "Echo"))
        sid, resp = read_response(s)
        assert (sid, resp.status.code) == (7, 0)  # unknown frame types were ignored


def test_stalled_and_hostile_peers_do_not_block_others(server: tuple[TtrpcServer, Echo, str]) -> None:
    srv, _, path = server
    half = raw(path)
    half.sendall(request_frame(1, "Echo")[:7])  # half a header, then silence
    huge = raw(path)
    huge.sendall(encode_header(0xFFFFFFFF, 1, TYPE_REQUEST) + b"\x00" * 100)  # 4 GiB announced
    sid, resp = read_response(huge)
    assert (sid, resp.status.code) == (1, Code.RESOURCE_EXHAUSTED)
    junk = raw(path)
    junk.sendall(bytes(range(256)) * 4)
    # a peer that asks for big answers and never reads them: dropped after send_timeout (1 s here)
    sink = raw(path)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(40):
        sink.sendall(request_frame(2 * i + 1, "Big", request_pb2.KeyValue(key=str(1 << 20)).SerializeToString()))
    assert call(path, "Echo", "alive").key == "alive"
    deadline = time.monotonic() + 20
    while srv.connections() > 3 and time.monotonic() < deadline:  # half, huge, junk stay; sink is dropped
        time.sleep(0.05)
    assert srv.connections() == 3
    assert call(path, "Echo", "still").key == "still"
    for s in (half, huge, junk, sink):
        s.close()


@settings(max_examples=40, deadline=None)
@given(blob=st.binary(min_size=1, max_size=2000))
def test_random_bytes_never_take_the_server_down(blob: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = str(tmp_path_factory.mktemp("fz") / "s")
    impl = Echo()
    with TtrpcServer() as srv:
        srv.register(SVC, "Echo", request_pb2.KeyValue, impl.echo)
        srv.serve(path)
        with raw(path) as s:
            s.sendall(blob)
        assert call(path, "Echo", "ok").key == "ok"


def _answer_bytes_as(path: str, uid: int | None) -> int:
    """In a child process (as ``uid`` if given): connect, send one Echo request, return how many bytes came
    back (0: the server closed the connection)."""
    pid = os.fork()
    if pid == 0:  # the child only makes syscalls, then leaves through os._exit
        code = 255
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(path)
            try:
                s.sendall(request_frame(1, "Echo"))
                code = min(len(s.recv(100)), 200)
            except (BrokenPipeError, ConnectionResetError):  # the server hung up first
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_peers_of_another_user_are_refused() -> None:
    d = tempfile.mkdtemp(prefix="ttrpc-peer-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "s")
        with TtrpcServer() as srv:
            srv.register(SVC, "Echo", request_pb2.KeyValue, Echo().echo)
            srv.serve(path)
            os.chmod(path, 0o777)  # past the file mode: the credential check itself must refuse
            assert _answer_bytes_as(path, 65534) == 0
            assert _answer_bytes_as(path, None) > 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_serve_replaces_a_stale_socket_but_nothing_else(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(path)
    old.close()  # a dead server's socket file stays behind
    with TtrpcServer() as srv:
        srv.register(SVC, "Echo", request_pb2.KeyValue, Echo().echo)
        srv.serve(path)
        assert call(path, "Echo", "fresh").key == "fresh"
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert not os.path.exists(path)  # close removes it
    (tmp_path / "f").write_text("keep")
    with pytest.raises(TtrpcError, match="not a socket"):
        TtrpcServer().serve(str(tmp_path / "f"))
    assert (tmp_path / "f").read_text() == "keep"


# ---------------------------------------------------------------------------------------------- client failures

def test_client_connect_failure_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TtrpcError) as e:
        TtrpcClient(str(tmp_path / "absent"))
    assert e.value.code == Code.UNAVAILABLE and "absent" in str(e.value)


def test_server_going_away_fails_calls_in_flight_and_later(tmp_path: Path) -> None:
    impl = Echo()
    srv = TtrpcServer()
    srv.register(SVC, "Block", request_pb2.KeyValue, impl.block)
    srv.serve(str(tmp_path / "s"))
    c = TtrpcClient(str(tmp_path / "s"))
    failed: list[TtrpcError] = []

    def blocked() -> None:
        try:
            c.call(SVC, "Block", request_pb2.KeyValue(), request_pb2.KeyValue)
        except TtrpcError as err:
            failed.append(err)
    t = threading.Thread(target=blocked)
    t.start()
    assert impl.entered.wait(20)
    srv.close()  # the server goes away with the call in flight
    t.join(20)
    impl.release.set()
    assert [e.code for e in failed] == [Code.UNAVAILABLE]
    with pytest.raises(TtrpcError, match="UNAVAILABLE"):
        c.call(SVC, "Block", request_pb2.KeyValue(), request_pb2.KeyValue)
    c.close()


def test_client_refuses_an_oversized_request(server: tuple[TtrpcServer, Echo, str]) -> None:
    _, _, path = server
    with TtrpcClient(path) as c:
        with pytest.raises(TtrpcError) as e:
            c.call(SVC, "Echo", request_pb2.KeyValue(value="x" * MAX_MESSAGE), request_pb2.KeyValue)
        assert e.value.code == Code.RESOURCE_EXHAUSTED
        assert c.call(SVC, "Echo", request_pb2.KeyValue(key="after"), request_pb2.KeyValue).key == "after"


def test_error_text() -> None:
    e = TtrpcError(status_pb2.Status(code=5).code, "nf")
    assert (e.code, e.status_message, str(e)) == (Code.NOT_FOUND, "nf", "ttrpc: NOT_FOUND: nf")
    assert str(TtrpcError(99, "x")) == "ttrpc: 99: x"
