"""An abuse campaign against one real `verdictd` process, every listener at once (issue 15's "Abuse"): the KBS
attestation port, the admin port, EAA over RATS-TLS, the gRPC client API (with the key provider beside it) and
the key provider alone on a unix socket.

For each listener: no auth, a wrong token, auth on the wrong port; bodies and headers just over each limit; slow
clients (headers trickled, a body trickled, a TLS handshake never finished, a gRPC call opened and never sent, a
client that never reads its answers), which the daemon must time out while it serves others; malformed JSON,
protobuf, JWK tee-pubkeys, attest bodies and EAA requests; more connections than the cap. After each: a clear
error (Trustee ``{"type", "detail"}``, a gRPC status with a one-line detail, EAA's ``{"error", "status"}``), the
process alive, a normal KBS flow still working and what was committed before (resource, reference value, policy,
key, audit records) still there. Last, a kill -9 in the middle of a campaign and a restart: the state is intact.

The daemon runs with short limits (``--io-timeout``, ``--max-connections``, ``--grpc-connection-age``) so every
case ends in seconds; conditions are polled with a deadline, never slept on."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import signal
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from inclavare.services.verdictd.kbs_evidence import ERROR_TYPE_PREFIX
from inclavare.services.verdictd.kbs_http import MAX_BODY
from tests.integration.test_vd_daemon import ADMIN, Daemon, Env, eaa_config, kbs_attest, setup_owner
from tests.integration.test_vd_daemon import world as world  # the module-scoped sim world fixture
from tests.unit.services.verdictd.kbs_doubles import APP, SimTee, open_response

IO_TIMEOUT = 1.5  # --io-timeout: every handshake / read / write deadline
MAX_CONN = 6  # --max-connections per HTTP or EAA listener
CONN_AGE = 2.0  # --grpc-connection-age
WAIT = 20.0  # the longest any condition is polled for
SECRET = b"the owner's secret"
CANARY_POLICY = b"package policy\n\n# the abuse campaign's canary\ndefault allow := false\n"
UNWRAP = "/keyprovider.KeyProviderService/UnWrapKey"
CREATE_KEY = "/clientapi.KeyManagerService/CreateKey"
TCP_ESTABLISHED = 1


@dataclass
class Committed:
    """What the owner committed before the campaign; it must outlive every case."""

    kid: str
    key: bytes
    audit: int


class Victim:
    """The daemon under attack, with helpers for each listener."""

    def __init__(self, world: Env, state: Path, kp_sock: Path) -> None:
        self.world, self.state, self.kp_sock = world, state, kp_sock
        self.d = Daemon(world, state, "--io-timeout", str(IO_TIMEOUT), "--max-connections", str(MAX_CONN),
                        "--grpc-connection-age", str(CONN_AGE), "--keyprovider-listen", str(kp_sock))
        self.committed: Committed | None = None

    # ---- state

    def commit(self) -> None:
        from inclavare.ratls.attesters import sim_attester_identity

        setup_owner(self.d, [APP.mrenclave.hex(), sim_attester_identity().mrenclave.hex()])
        with self.admin_client() as admin:
            admin.set_opa_policy("canary", CANARY_POLICY)
            kid = admin.create_key()
            key = admin.get_key(kid)
        self.committed = Committed(kid, key, audit_count(self.state))

    def admin_client(self) -> Any:
        from inclavare.services.verdictd.clientapi_client import AdminClient

        return AdminClient(self.d.addresses["client-api"], token=ADMIN.encode(), timeout=WAIT)

    def check(self) -> None:
        """Alive, a normal KBS flow works, and nothing committed was lost."""
        assert self.d.proc.poll() is None, "verdictd died"
        tee = SimTee(self.world.sim_dir)
        status, answer, cookie = kbs_attest(self.d, tee)
        assert status == 200, answer
        status, response, _ = self.d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie=cookie)
        assert status == 200, response
        assert open_response(tee.key, response) == SECRET
        status, values = self.d.admin("GET", "/kbs/v0/reference-value/mrenclave")
        assert status == 200 and APP.mrenclave.hex() in values
        assert self.committed is not None
        with self.admin_client() as admin:
            assert admin.export_opa_policy("canary") == CANARY_POLICY
            assert admin.get_key(self.committed.kid) == self.committed.key
        count = audit_count(self.state)
        assert count >= self.committed.audit
        self.committed.audit = count

    # ---- raw access

    def tcp(self, name: str, *, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(WAIT)
        s.connect(("127.0.0.1", self.d.port(name)))
        return s

    def raw_http(self, name: str, data: bytes) -> tuple[int, Any]:
        """Send ``data`` as is; the status and the JSON body of the answer."""
        with contextlib.closing(self.tcp(name)) as s:
            s.sendall(data)
            resp = http.client.HTTPResponse(s)
            resp.begin()
            body = resp.read()
        return resp.status, json.loads(body) if body else None

    def unary(self, target: str, method: str, payload: bytes, token: str | None = None) -> bytes:
        """One unary call with raw bytes for the request (no protobuf on this side)."""
        with grpc.insecure_channel(target) as ch:
            call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
            meta = [("authorization", f"Bearer {token}")] if token else None
            return bytes(call(payload, timeout=WAIT, metadata=meta))

    def eaa(self) -> Any:
        from inclavare.services.verdictd.eaa_client import EaaClient

        return EaaClient(eaa_config(self.world), self.d.addresses["eaa"], timeout=WAIT).connect()


def audit_count(state: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{state / 'verdictd.db'}?mode=ro", uri=True, timeout=WAIT)) as db:
        return int(db.execute("SELECT count(*) FROM audit").fetchone()[0])


def kbs_error(status: int, body: Any, expected: int, kind: str | None = None) -> None:
    """A Trustee error: the status, ``{"type", "detail"}`` and nothing else, one line of detail."""
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"type", "detail"}, body
    assert body["type"].startswith(ERROR_TYPE_PREFIX), body
    assert body["detail"] and "\n" not in body["detail"], body
    if kind is not None:
        assert body["type"] == ERROR_TYPE_PREFIX + kind, body


def grpc_error(fn: Callable[[], Any], code: grpc.StatusCode, text: str = "") -> str:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    err: Any = e.value
    assert err.code() == code, (err.code(), err.details())
    details = err.details() or ""
    assert details and "\n" not in details and text in details, details
    return str(details)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def closed_by_server(s: socket.socket, timeout: float = WAIT) -> bool:
    """True once the server closed ``s`` (EOF or reset), reading and discarding whatever it sent first."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return False
    return True


def tcp_state(s: socket.socket) -> int:
    return struct.unpack("B", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]


@pytest.fixture(scope="module")
def vd(world: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victim]:
    base = tmp_path_factory.mktemp("vd-abuse")
    v = Victim(world, base / "state", base / "kp.sock")
    try:
        v.commit()
        yield v
    finally:
        assert v.d.stop() == 0


# --------------------------------------------------------------------------------------------------
# authentication


def test_kbs_and_admin_auth(vd: Victim, world: Env) -> None:
    from inclavare.services.verdictd.tokens import TokenIssuer

    d = vd.d
    status, body, _ = d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one")
    kbs_error(status, body, 401)
    status, body, _ = d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one",
                             headers={"Authorization": "Bearer not-a-token"})
    kbs_error(status, body, 401)
    status, body, _ = d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", headers={"Authorization": "Basic eA=="})
    kbs_error(status, body, 401, "TokenNotFound")
    # a well-formed EAR, signed by someone else's key
    forged = TokenIssuer().issue("sample", {"mrenclave": APP.mrenclave.hex(), "tee-pubkey": world.tee.pubkey},
                                 None, "affirming")
    status, body, _ = d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one",
                             headers={"Authorization": f"Bearer {forged}"})
    kbs_error(status, body, 401)
    status, body, _ = d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie="kbs-session-id=forged")
    kbs_error(status, body, 401)
    status, body, _ = d.http("kbs", "POST", "/kbs/v0/attest", world.tee.attestation("bm9uY2U="))
    kbs_error(status, body, 401)
    # the admin port: no token, a wrong one, another scheme, the attestation token
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {ADMIN}"}):
        status, body, _ = d.http("admin", "POST", "/kbs/v0/resource/owner/key/one", b"overwritten", headers)
        kbs_error(status, body, 401)
        status, body, _ = d.http("admin", "GET", "/kbs/v0/reference-value/mrenclave", headers=headers)
        kbs_error(status, body, 401)
    status, answer, _ = kbs_attest(d, world.tee)
    assert status == 200
    status, body, _ = d.http("admin", "POST", "/kbs/v0/resource/owner/key/one", b"overwritten",
                             {"Authorization": f"Bearer {answer['token']}"})
    kbs_error(status, body, 401)
    # auth on the wrong port: admin endpoints are not routed on the KBS port, the RCAR ones not on the admin port
    status, body, _ = d.http("kbs", "POST", "/kbs/v0/resource/owner/key/one", b"overwritten",
                             {"Authorization": f"Bearer {ADMIN}"})
    kbs_error(status, body, 404)
    status, body, _ = d.http("admin", "POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sample"},
                             {"Authorization": f"Bearer {ADMIN}"})
    kbs_error(status, body, 404)
    status, body, _ = d.http("admin", "GET", "/kbs/v0/resource/owner/key/one",
                             headers={"Authorization": f"Bearer {answer['token']}"})
    kbs_error(status, body, 404)
    vd.check()


def test_grpc_and_eaa_auth(vd: Victim) -> None:
    from inclavare.services.verdictd.keyprovider import encode_unwrap_input

    api, kp = vd.d.addresses["client-api"], f"unix:{vd.kp_sock}"
    empty = b""  # CreateKeyRequest{}
    grpc_error(lambda: vd.unary(api, CREATE_KEY, empty), grpc.StatusCode.UNAUTHENTICATED, "authentication")
    grpc_error(lambda: vd.unary(api, CREATE_KEY, empty, "wrong-token-wrong-token"), grpc.StatusCode.UNAUTHENTICATED)
    grpc_error(lambda: vd.unary(api, "/clientapi.GpgService/listGpgKeys", empty), grpc.StatusCode.UNAUTHENTICATED)
    grpc_error(lambda: vd.unary(api, "/no.Such/Method", empty, ADMIN), grpc.StatusCode.UNIMPLEMENTED)
    # the key provider's own listener serves no admin method, whatever the token
    grpc_error(lambda: vd.unary(kp, CREATE_KEY, empty, ADMIN), grpc.StatusCode.UNIMPLEMENTED)
    # the admin token is not an attestation token (the annotation is a real one, wrapped on the private socket)
    from inclavare.services.verdictd.keyprovider import decode_output, encode_wrap_input
    from inclavare.services.verdictd.proto import keyprovider_pb2 as kpb

    assert vd.committed is not None
    wrap = kpb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=encode_wrap_input(
        {"verdictd": [vd.committed.kid.encode()]}, b'{"layer":"options"}')).SerializeToString()
    out = kpb.keyProviderKeyWrapProtocolOutput.FromString(vd.unary(kp, "/keyprovider.KeyProviderService/WrapKey",
                                                                   wrap))
    annotation = decode_output(out.KeyProviderKeyWrapProtocolOutput)["annotation"]
    assert annotation is not None
    unwrap = kpb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=encode_unwrap_input(
        {"verdictd-token": [ADMIN.encode()]}, annotation)).SerializeToString()
    for target in (api, kp):
        grpc_error(lambda t=target: vd.unary(t, UNWRAP, unwrap, ADMIN), grpc.StatusCode.UNAUTHENTICATED)  # type: ignore[misc]
    # EAA: a plain TLS client with no evidence never gets past the handshake
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with contextlib.closing(vd.tcp("eaa")) as raw, pytest.raises((ssl.SSLError, OSError)), \
            ctx.wrap_socket(raw) as tls:
        tls.sendall(b'{"command":"Get KEK","kids":["x"]}')
        assert tls.recv(1024) == b""
        raise ConnectionError("closed")
    vd.check()


# --------------------------------------------------------------------------------------------------
# limits


def test_oversized_http(vd: Victim) -> None:
    # a body just over the limit is refused from its Content-Length, unread, on both ports
    status, body = vd.raw_http("kbs", b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    kbs_error(status, body, 413, "PayloadTooLarge")
    status, body = vd.raw_http("admin", b"POST /kbs/v0/resource/owner/key/big HTTP/1.1\r\nHost: x\r\nAuthorization: "
                               b"Bearer %s\r\nContent-Length: %d\r\n\r\n" % (ADMIN.encode(), MAX_BODY + 1))
    kbs_error(status, body, 413, "PayloadTooLarge")
    status, body = vd.raw_http("kbs", b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"0\r\n\r\n")
    kbs_error(status, body, 411)
    # a body of exactly the limit is taken
    status, body = vd.d.admin("POST", "/kbs/v0/resource/owner/key/big", b"x" * MAX_BODY)
    assert status == 200, body
    # headers: one line over http.server's 64 KiB, more than 100 of them, a request line over 64 KiB, a huge cookie
    status, body = vd.raw_http("kbs", b"GET /kbs/v0/jwks HTTP/1.1\r\nX-Big: " + b"a" * 65537 + b"\r\n\r\n")
    kbs_error(status, body, 431)
    many = b"".join(b"X-%d: y\r\n" % i for i in range(101))
    status, body = vd.raw_http("admin", b"GET /kbs/v0/reference-value/mrenclave HTTP/1.1\r\n" + many + b"\r\n")
    kbs_error(status, body, 431)
    status, body = vd.raw_http("kbs", b"GET /kbs/v0/" + b"a" * 65537 + b" HTTP/1.1\r\n\r\n")
    kbs_error(status, body, 414)
    status, body = vd.raw_http("kbs", b"GET /kbs/v0/jwks HTTP/9.9\r\n\r\n")
    kbs_error(status, body, 505)
    status, body = vd.raw_http("kbs", b"PATCH /kbs/v0/auth HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    kbs_error(status, body, 501)
    status, body = vd.raw_http("kbs", b"garbage\r\n\r\n")
    kbs_error(status, body, 400)
    status, body, _ = vd.d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one",
                                cookie="kbs-session-id=" + "a" * 5000)
    kbs_error(status, body, 401)
    query = "&".join(f"q{i}=1" for i in range(40))
    status, body, _ = vd.d.http("kbs", "GET", f"/kbs/v0/resource/owner/key/one?{query}")
    kbs_error(status, body, 400)
    vd.check()


def test_oversized_grpc_and_eaa(vd: Victim) -> None:
    from inclavare.services.verdictd.proto import clientapi_pb2 as cpb

    api, kp = vd.d.addresses["client-api"], f"unix:{vd.kp_sock}"
    huge = b"\x0a" + b"\x80\x80\xc0\x01" + b"x" * (3 << 20)  # field 1, 3 MiB: over the 2 MiB message cap
    grpc_error(lambda: vd.unary(api, "/clientapi.OpaService/SetOpaPolicy", huge, ADMIN),
               grpc.StatusCode.RESOURCE_EXHAUSTED)
    grpc_error(lambda: vd.unary(kp, UNWRAP, huge), grpc.StatusCode.RESOURCE_EXHAUSTED)
    # under the message cap but over the policy limit: refused in-band, one line, nothing stored
    req = cpb.SetOpaPolicyRequest(name=b"canary", content=b"#" * ((256 << 10) + 1)).SerializeToString()
    answer = cpb.SetOpaPolicyResponse.FromString(vd.unary(api, "/clientapi.OpaService/SetOpaPolicy", req, ADMIN))
    assert answer.status != b"OK" and b"\n" not in answer.status
    # EAA: one request over 64 KiB gets the failure shape, then the connection ends
    with vd.eaa() as c:
        answer = json.loads(c.send_raw(b'{"command":"version","pad":"' + b"x" * (64 << 10) + b'"}'))
        assert answer["status"] == "Fail" and "too large" in answer["error"], answer
        assert c.send_raw(b'{"command":"version"}') == b""
    vd.check()


# --------------------------------------------------------------------------------------------------
# slow clients


def trickle(s: socket.socket, chunks: Iterator[bytes], stop: threading.Event, period: float = 0.3) -> threading.Thread:
    """Send one chunk every ``period`` seconds until the server closes the connection or ``stop``."""

    def run() -> None:
        for chunk in chunks:
            if stop.wait(period):
                return
            try:
                s.sendall(chunk)
            except OSError:
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def endless(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


def test_slow_http_clients(vd: Victim) -> None:
    """Headers or a body dripped faster than the per-read timeout, and a client that never reads its answers:
    each is cut off by the request deadline while other clients are served."""
    stop = threading.Event()
    socks: list[socket.socket] = []
    try:
        slowloris = vd.tcp("kbs")
        slowloris.sendall(b"GET /kbs/v0/jwks HTTP/1.1\r\nHost: x\r\n")
        slow_body = vd.tcp("admin")
        slow_body.sendall(b"POST /kbs/v0/resource/owner/key/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + ADMIN.encode() + b"\r\nContent-Length: 100000\r\n\r\n")
        # many pipelined requests and a tiny receive buffer: the server's answers back up and its writes block
        deaf = vd.tcp("kbs", rcvbuf=4096)
        deaf.sendall(b"GET /kbs/v0/jwks HTTP/1.1\r\nHost: x\r\n\r\n" * 20000)
        socks += [slowloris, slow_body, deaf]
        trickle(slowloris, endless(b"X-a: b\r\n"), stop)
        trickle(slow_body, endless(b"x"), stop)
        vd.check()  # served meanwhile
        assert closed_by_server(slowloris), "a client trickling its headers was never cut off"
        assert closed_by_server(slow_body), "a client trickling its body was never cut off"
        wait_for(lambda: tcp_state(deaf) != TCP_ESTABLISHED, "the server to drop a client that never reads")
    finally:
        stop.set()
        for s in socks:
            s.close()
    # the slow body never reached the store
    status, body, _ = vd.d.http("admin", "GET", "/kbs/v0/resource/owner/key/slow",
                                headers={"Authorization": f"Bearer {ADMIN}"})
    assert status == 404
    vd.check()



def test_slow_https_clients(world: Env, tmp_path: Path) -> None:
    """The KBS over HTTPS: a client that never sends its ClientHello, one that drips it, and one that finishes the
    handshake and then trickles its headers are each cut off by the deadline while a normal client is served."""
    import select
    import ssl
    import subprocess
    import sys

    from tests.integration.test_vd_kbs import self_signed

    cert, key = self_signed(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.verdictd", "--state-dir", str(tmp_path / "state"),
                             "--kbs-listen", "127.0.0.1:0", "--kbs-cert", cert, "--kbs-key", key,
                             "--io-timeout", str(IO_TIMEOUT), "--log-level", "warn"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=world.env)
    stop = threading.Event()
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], WAIT)[0], "verdictd did not start"
        port = int(json.loads(proc.stdout.readline())["kbs"].rstrip("/").rsplit(":", 1)[1])
        ctx = ssl.create_default_context(cafile=cert)

        def connect() -> socket.socket:
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            socks.append(s)
            return s

        silent = connect()
        dripping = connect()
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500
        trickle(dripping, iter([hello[i:i + 1] for i in range(len(hello))]), stop)
        slowloris = ctx.wrap_socket(connect(), server_hostname="127.0.0.1")
        slowloris.sendall(b"GET /kbs/v0/jwks HTTP/1.1\r\nHost: x\r\n")
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=WAIT)
        conn.request("GET", "/kbs/v0/jwks")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["keys"]
        conn.close()
        # one thread drives the TLS socket: a header line every 0.3 s until the server ends the connection
        deadline, ended = time.monotonic() + WAIT, False
        slowloris.settimeout(0.3)
        while not ended and time.monotonic() < deadline:
            try:
                ended = slowloris.recv(4096) == b""  # the server's close_notify or EOF, never an answer
                assert ended, "the server answered a request whose headers never ended"
            except TimeoutError:  # nothing yet (TLS 1.3 session tickets are read and dropped by recv)
                slowloris.sendall(b"X-a: b\r\n")
            except (ssl.SSLError, OSError):
                ended = True
        assert ended, "a TLS client trickling its headers was never cut off"
        for s, what in ((silent, "a silent TLS client"), (dripping, "a client dripping its ClientHello")):
            assert closed_by_server(s), f"{what} was never cut off"
        assert proc.poll() is None
    finally:
        stop.set()
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()

def test_slow_tls_and_grpc_clients(vd: Victim) -> None:
    """A TLS client that never finishes its handshake (EAA), one that drips a ClientHello, a gRPC client that
    connects and says nothing, and unary gRPC calls opened and never sent (grpcio waits for their message in a
    worker): each is cut off, the stalled calls by the connection age, and both gRPC servers answer meanwhile."""
    stop = threading.Event()
    socks: list[socket.socket] = []
    calls: list[Any] = []
    channels: list[grpc.Channel] = []
    try:
        silent_eaa = vd.tcp("eaa")
        dripping_eaa = vd.tcp("eaa")
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500
        trickle(dripping_eaa, iter([hello[i:i + 1] for i in range(len(hello))]), stop)
        silent_grpc = vd.tcp("client-api")
        socks += [silent_eaa, dripping_eaa, silent_grpc]
        # unary calls whose request message never comes: grpcio waits for it in a worker thread
        never = threading.Event()

        def no_request() -> Iterator[bytes]:
            never.wait(WAIT * 2)
            return
            yield b""  # a generator

        for target in (vd.d.addresses["client-api"], f"unix:{vd.kp_sock}"):
            ch = grpc.insecure_channel(target)
            channels.append(ch)
            stall = ch.stream_unary(UNWRAP, request_serializer=None, response_deserializer=None)
            calls += [stall.future(no_request(), timeout=WAIT * 2) for _ in range(12)]
        with vd.admin_client() as admin:
            assert len(admin.create_key()) > 0  # answered at once, not queued behind the stalled calls
        from inclavare.services.verdictd.keyprovider import encode_unwrap_input
        from inclavare.services.verdictd.proto import keyprovider_pb2 as kpb

        unwrap = kpb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=encode_unwrap_input(
            {"verdictd-token": [b"forged"]}, b'{"kid":"x"}')).SerializeToString()
        grpc_error(lambda: vd.unary(f"unix:{vd.kp_sock}", UNWRAP, unwrap), grpc.StatusCode.INVALID_ARGUMENT)
        vd.check()
        for s, what in ((silent_eaa, "a silent EAA client"), (dripping_eaa, "an EAA client dripping a ClientHello"),
                        (silent_grpc, "a silent gRPC client")):
            assert closed_by_server(s), f"{what} was never cut off"
        for call in calls:
            with pytest.raises(grpc.RpcError):
                call.result()
            assert call.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "a stalled call lasted to its own deadline"
    finally:
        never.set()
        stop.set()
        for s in socks:
            s.close()
        for ch in channels:
            ch.close()
    vd.check()



def test_eaa_client_that_never_reads(vd: Victim) -> None:
    """An attested EAA client asks for a large resource many times and never reads an answer: the server's write
    deadline ends the connection (the requests it had not read yet make the close a reset) and others are served
    meanwhile."""
    status, body = vd.d.admin("POST", "/kbs/v0/resource/owner/key/large", b"L" * MAX_BODY)
    assert status == 200, body
    with vd.eaa() as c:
        for _ in range(24):  # about 34 MB of answers: more than both sides' socket buffers hold
            c._tls.transmit(b'{"command":"Get owner/key/large"}')
        vd.check()
        wait_for(lambda: tcp_state(c._sock) != TCP_ESTABLISHED, "the server to drop an EAA client that never reads")
    vd.check()

def test_connections_over_the_cap(vd: Victim) -> None:
    """More connections than the cap on each listener: the excess is told so (503 on plain HTTP) or closed, and
    once they are gone the daemon serves as before."""
    socks: list[socket.socket] = []
    try:
        for _ in range(3):  # the cap's holders may time out before the extra one arrives on a loaded machine
            holders = [vd.tcp("kbs") for _ in range(MAX_CONN)]
            socks += holders
            status, body = vd.raw_http("kbs", b"GET /kbs/v0/jwks HTTP/1.1\r\nHost: x\r\n\r\n")
            if status == 503:
                break
        kbs_error(status, body, 503, "TooManyConnections")
        socks += [vd.tcp(name) for name in ("admin", "eaa", "client-api") for _ in range(MAX_CONN * 3)]
        for s in socks:
            assert closed_by_server(s), "an idle connection was never cut off"
    finally:
        for s in socks:
            s.close()
    vd.check()


# --------------------------------------------------------------------------------------------------
# malformed input


def fresh_session(d: Daemon) -> tuple[str, str | None]:
    status, answer, cookie = d.http("kbs", "POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sample",
                                                                    "extra-params": ""})
    assert status == 200, answer
    return answer["nonce"], cookie


def test_malformed_kbs_json(vd: Victim, world: Env) -> None:
    d = vd.d
    bad_auth = [
        (b'{"version": "0.4.0", "tee": "sample"', 400),  # truncated
        (b'{"version": "0.1.0", "version": "0.4.0", "tee": "sample", "extra-params": ""}', 400),  # duplicate keys
        (b"[" * 100_000 + b"]" * 100_000, 400),  # deep nesting
        (b'{"version": ' + b"9" * 5000 + b', "tee": "sample"}', 400),  # a number over Python's digit limit
        (b'{"version": 1e999999, "tee": "sample"}', 400),  # infinity in disguise
        (b'{"version": NaN, "tee": "sample"}', 400),  # not JSON
        (b'\xff\xfe{"version": "0.4.0"}', 400),  # not UTF-8
        (b'"just a string"', 400),
        (b'{"version": ["0.4.0"], "tee": {"sgx": 1}, "extra-params": 7}', 401),  # wrong types
        (b'{"version": "0.4.0", "tee": "sgx\\u0000", "extra-params": ""}', 401),
    ]
    for raw, expected in bad_auth:
        status, body, _ = d.http("kbs", "POST", "/kbs/v0/auth", raw)
        kbs_error(status, body, expected)
    # attest bodies; each on a session of its own, so the refusal is about the body
    tee = world.tee
    good = tee.attestation("placeholder")
    bad_attest: list[tuple[Callable[[str], Any], int]] = [
        (lambda n: b'{"runtime-data": {"nonce": "' + n.encode() + b'"', 400),
        (lambda n: {"runtime-data": [n], "tee-evidence": good["tee-evidence"]}, 400),
        (lambda n: {"runtime-data": {"nonce": n, "tee-pubkey": "a key"}, "tee-evidence": good["tee-evidence"]}, 400),
        (lambda n: {"runtime-data": {"nonce": 12, "tee-pubkey": tee.pubkey}, "tee-evidence": good["tee-evidence"]},
         401),
        (lambda n: {"runtime-data": {"nonce": n, "tee-pubkey": tee.pubkey}, "tee-evidence": "quote"}, 400),
        (lambda n: {"runtime-data": {"nonce": n, "tee-pubkey": tee.pubkey},
                    "tee-evidence": {"primary_evidence": {"quote": "not base64!"}, "additional_evidence": ""}}, 400),
        (lambda n: {"runtime-data": {"nonce": n, "tee-pubkey": tee.pubkey},
                    "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(b"\0" * 1000).decode()},
                                     "additional_evidence": ""}}, 401),
        (lambda n: {"runtime-data": {"nonce": n, "tee-pubkey": tee.pubkey},
                    "tee-evidence": {"primary_evidence": [1] * 10, "additional_evidence": ""}}, 400),
    ]
    for make, expected in bad_attest:
        nonce, cookie = fresh_session(d)
        status, body, _ = d.http("kbs", "POST", "/kbs/v0/attest", make(nonce), cookie=cookie)
        kbs_error(status, body, expected)
    # replay: the same attestation twice on one session, and a recorded one on a new session
    nonce, cookie = fresh_session(d)
    recorded = tee.attestation(nonce)
    status, answer, _ = d.http("kbs", "POST", "/kbs/v0/attest", recorded, cookie=cookie)
    assert status == 200, answer
    status, body, _ = d.http("kbs", "POST", "/kbs/v0/attest", recorded, cookie=cookie)
    kbs_error(status, body, 401)
    _, cookie = fresh_session(d)
    status, body, _ = d.http("kbs", "POST", "/kbs/v0/attest", recorded, cookie=cookie)
    kbs_error(status, body, 401)
    # admin bodies
    policy = b64url(b"package policy\ndefault allow := true\n")
    bad_admin = [
        ("/kbs/v0/reference-value", b'{"name": "mrenclave", "values": ["00"]', 400),
        ("/kbs/v0/reference-value", b'{"name": "mrenclave", "name": "mrsigner", "values": [], "provenance": "x"}',
         400),
        ("/kbs/v0/reference-value", b'{"name": "mrenclave", "values": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),
        ("/kbs/v0/reference-value", b'{"name": "mrenclave", "values": [' + b"1" * 5000 + b'], "provenance": "x"}',
         400),
        ("/kbs/v0/reference-value", b'{"name": 7, "values": "mrenclave", "provenance": []}', 400),
        ("/kbs/v0/resource-policy", b'{"policy": "%s", "policy": "%s"}' % (policy.encode(), policy.encode()), 400),
        ("/kbs/v0/resource-policy", b'{"policy": "*** not base64 ***"}', 400),
        ("/kbs/v0/resource-policy", b'{"policy": 12}', 400),
        ("/kbs/v0/attestation-policy", b'{"policy_id": ["sim"], "policy": "%s"}' % policy.encode(), 400),
    ]
    for path, raw, expected in bad_admin:
        status, body = d.admin("POST", path, raw)
        kbs_error(status, body, expected)
    vd.check()


def test_malformed_tee_pubkey(vd: Victim, world: Env) -> None:
    """A tee-pubkey the JWE could not use is refused at attest (400), with the evidence correctly bound to it:
    never a token that later fails at the resource (500)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def ec_jwk(curve: ec.EllipticCurve, size: int) -> dict[str, Any]:
        n = ec.generate_private_key(curve).public_key().public_numbers()
        return {"kty": "EC", "crv": {32: "P-256", 48: "P-384", 66: "P-521"}[size], "alg": "ECDH-ES+A256KW",
                "x": b64url(n.x.to_bytes(size, "big")), "y": b64url(n.y.to_bytes(size, "big"))}

    short = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
    p256 = ec_jwk(ec.SECP256R1(), 32)
    bad = {
        "a curve the JWE does not do": ec_jwk(ec.SECP384R1(), 48),
        "a short RSA modulus": {"kty": "RSA", "alg": "RSA-OAEP-256", "n": b64url(short.n.to_bytes(128, "big")),
                                "e": "AQAB"},
        "an RSA key with a weak alg": {**world.tee.pubkey, "kty": "RSA", "alg": "RSA1_5", "n": b64url(b"\1" * 256),
                                       "e": "AQAB"},
        "a symmetric kty": {"kty": "oct", "alg": "A256KW", "k": b64url(b"k" * 32)},
        "a point off the curve": {**p256, "y": p256["x"]},
        "a private key": {**p256, "d": b64url(b"\1" * 32)},
        "a wrong alg for EC": {**p256, "alg": "RSA-OAEP-256"},
    }
    for what, jwk in bad.items():
        tee = SimTee(world.sim_dir)
        tee.pubkey = jwk
        nonce, cookie = fresh_session(vd.d)
        status, body, _ = vd.d.http("kbs", "POST", "/kbs/v0/attest", tee.attestation(nonce), cookie=cookie)
        kbs_error(status, body, 400)
        assert "tee-pubkey" in body["detail"], (what, body)
    # members a JWK may carry besides the key (kid, use, key_ops, ext) are no reason to refuse
    tee = SimTee(world.sim_dir)
    tee.pubkey = {**tee.pubkey, "kid": "tee-1", "use": "enc", "key_ops": ["deriveKey"], "ext": True}
    nonce, cookie = fresh_session(vd.d)
    status, answer, cookie = vd.d.http("kbs", "POST", "/kbs/v0/attest", tee.attestation(nonce), cookie=cookie)
    assert status == 200, answer
    status, response, _ = vd.d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie=cookie)
    assert status == 200 and open_response(tee.key, response) == SECRET
    vd.check()


def test_malformed_protobuf(vd: Victim) -> None:
    from inclavare.services.verdictd.proto import keyprovider_pb2 as kpb

    api, kp = vd.d.addresses["client-api"], f"unix:{vd.kp_sock}"
    garbage = [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x08" + b"\xff" * 11]
    for raw in garbage:
        grpc_error(lambda r=raw: vd.unary(api, "/clientapi.OpaService/SetOpaPolicy", r, ADMIN),  # type: ignore[misc]
                   grpc.StatusCode.INTERNAL)
        for target in (api, kp):
            grpc_error(lambda r=raw, t=target: vd.unary(t, UNWRAP, r), grpc.StatusCode.INTERNAL)  # type: ignore[misc]
    # well-formed protobuf around a malformed key provider document
    for doc in (b"", b"{", b'{"op": "keyunwrap", "op": "keywrap"}', b"[" * 100_000, b'{"op": 1e999999}',
                b'{"op": "keyunwrap", "keyunwrapparams": {"dc": {"Parameters": "x"}, "annotation": 5}}'):
        req = kpb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=doc).SerializeToString()
        for target in (api, kp):
            grpc_error(lambda r=req, t=target: vd.unary(t, UNWRAP, r),  # type: ignore[misc]
                       grpc.StatusCode.INVALID_ARGUMENT)
    # a clientapi request with the wrong types inside (bytes where JSON objects are expected)
    from inclavare.services.verdictd.proto import clientapi_pb2 as cpb

    req = cpb.TestOpaRequest(policyname=b"canary", referencename=b"", input=b'{"a": ' + b"[" * 10_000,
                             policylocal=False, referencelocal=True).SerializeToString()
    answer = cpb.TestOpaResponse.FromString(vd.unary(api, "/clientapi.OpaService/TestOpa", req, ADMIN))
    assert answer.status and b"\n" not in answer.status
    vd.check()


def test_malformed_eaa(vd: Victim) -> None:
    def fail_shape(raw: bytes) -> dict[str, Any]:
        answer = json.loads(raw)
        assert answer["status"] == "Fail" and answer["error"] and "\n" not in answer["error"], answer
        return dict(answer)

    with vd.eaa() as c:  # refusals that keep the connection
        for req in ({"command": "Get KEK", "kids": "not a list"}, {"command": "Get KEK", "kids": [1, 2]},
                    {"command": "Get KEK", "kids": ["../../etc/passwd"]},
                    {"command": "Decrypt", "blobs": [{"kid": vd.committed.kid if vd.committed else "",
                                                      "encrypted_data": "!!", "iv": "AA==", "algorithm": "AES",
                                                      "key_length": 256}]},
                    {"command": "Decrypt", "blobs": [{}] * 65},
                    {"command": "Get Resource Info", "name": {"nested": True}}):
            fail_shape(c.request(req))
        assert c.version() == "v1"
    for raw in (b"not json", b'{"command": "version"', b'{"command": "version", "command": "Get KEK"}',
                b"[" * 50_000, b'{"command": ' + b"1" * 5000 + b"}", b'{"command": NaN}', b"\xff\xfe",
                b'{"command": "Format C:"}', b'["version"]'):
        with vd.eaa() as c:
            fail_shape(c.send_raw(raw))
            assert c.send_raw(b'{"command":"version"}') == b"", raw  # then the connection ends
    vd.check()


# --------------------------------------------------------------------------------------------------
# kill -9 in the middle of a campaign


def test_kill9_during_campaign(world: Env, tmp_path: Path) -> None:
    v = Victim(world, tmp_path / "state", tmp_path / "kp.sock")
    stop = threading.Event()
    try:
        v.commit()
        assert v.committed is not None

        def flood() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                    v.raw_http("kbs", b"POST /kbs/v0/auth HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"version")
                    v.d.admin("POST", "/kbs/v0/resource/owner/key/flood", b"x" * 1000)
                    v.d.http("kbs", "GET", "/kbs/v0/resource/owner/key/one", cookie="kbs-session-id=x")

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        slow = v.tcp("kbs")
        slow.sendall(b"GET /kbs/v0/jwks HTTP/1.1\r\n")
        wait_for(lambda: audit_count(v.state) > v.committed.audit + 3 if v.committed else False,  # mid-flood
                 "the flood to reach the store")
        v.d.proc.send_signal(signal.SIGKILL)
        assert v.d.stop() == -signal.SIGKILL
        stop.set()
        for t in threads:
            t.join(WAIT)
        slow.close()
        before = audit_count(v.state)
        v.d = Daemon(world, v.state, "--io-timeout", str(IO_TIMEOUT), "--max-connections", str(MAX_CONN),
                     "--grpc-connection-age", str(CONN_AGE), "--keyprovider-listen", str(v.kp_sock))
        assert audit_count(v.state) >= before
        v.check()
        status, body = v.d.admin("GET", "/kbs/v0/reference-value/mrenclave")
        assert status == 200
    finally:
        stop.set()
        assert v.d.stop() in (0, -signal.SIGKILL)



@pytest.mark.parametrize("flags", [("--io-timeout", "0"), ("--io-timeout", "nan"), ("--max-connections", "0"),
                                   ("--grpc-connection-age", "-1")])
def test_limit_flags_out_of_range(world: Env, tmp_path: Path, flags: tuple[str, str]) -> None:
    from tests.integration.test_vd_daemon import run_verdictd

    r = run_verdictd(world, "--state-dir", str(tmp_path / "state"), "--kbs-listen", "127.0.0.1:0",
                     "--insecure-http", *flags)
    assert r.returncode == 2 and r.stderr.startswith(f"verdictd: {flags[0]}".encode()), r.stderr
    assert r.stderr.count(b"\n") == 1
