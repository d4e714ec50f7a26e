"""enclave.kbs_client against a scripted HTTP server: what it sends (the 0.4.0 auth body, the binding it asks the
TEE to sign, the session cookie) and how it refuses answers of the wrong shape or size."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from inclavare.enclave.kbs_client import MAX_ANSWER, KbsClient, KbsClientError
from inclavare.formats.kbs import expected_report_data


class Script:
    """Answers per path: (status, headers, body). Requests are recorded."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []


@pytest.fixture
def kbs() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.seen.append((self.command, self.path, dict(self.headers), body))
            status, headers, data = script.answers.get(self.path, (404, {}, b'{"type":"x/NotFound","detail":"no"}'))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # noqa: N815

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


COOKIE = {"Set-Cookie": "kbs-session-id=abc123; Max-Age=300; Path=/kbs/v0; HttpOnly"}


def test_auth_and_attest_bodies(kbs: tuple[str, Script]) -> None:
    url, script = kbs
    script.answers["/kbs/v0/auth"] = (200, COOKIE, b'{"nonce":"bm9uY2U=","extra-params":""}')
    script.answers["/kbs/v0/attest"] = (200, {}, b'{"token":"a.b.c"}')
    signed: list[bytes] = []
    c = KbsClient(url, tee="sgx", evidence=lambda rd: signed.append(rd) or {"quote": "AAAA"})
    assert c.attest() == "a.b.c"
    (_, _, _, auth), (_, _, headers, attest) = [(m, p, h, b) for m, p, h, b in script.seen]
    assert json.loads(auth) == {"version": "0.4.0", "tee": "sgx", "extra-params": ""}
    body = json.loads(attest)
    assert headers["Cookie"] == "kbs-session-id=abc123"
    assert body["runtime-data"] == {"nonce": "bm9uY2U=", "tee-pubkey": c.tee_pubkey}
    assert body["tee-evidence"] == {"primary_evidence": {"quote": "AAAA"}, "additional_evidence": ""}
    assert signed == [expected_report_data("bm9uY2U=", c.tee_pubkey, "")]
    assert c.tee_pubkey["kty"] == "EC" and "d" not in c.tee_pubkey  # only the public half leaves


@pytest.mark.parametrize("answer, match", [
    ((200, {}, b'{"nonce":"bm9uY2U="}'), "set no kbs-session-id cookie"),
    ((200, COOKIE, b'{"nonce":7}'), "no usable nonce"),
    ((200, COOKIE, b"[1,2]"), "not a JSON object"),
    ((200, COOKIE, b"not json"), "not a JSON object"),
    ((401, {}, b'{"type":"https://github.com/confidential-containers/kbs/errors/RcarAuthFailed","detail":"bad tee"}'),
     r"401 RcarAuthFailed: bad tee"),
    ((502, {}, b"<html>proxy error</html>"), r"502 <html>proxy error</html>"),
    ((200, {"Content-Length": str(MAX_ANSWER + 1)}, b""), "over the 1048576-byte limit"),
])
def test_bad_auth_answers(kbs: tuple[str, Script], answer: tuple[int, dict[str, str], bytes], match: str) -> None:
    url, script = kbs
    script.answers["/kbs/v0/auth"] = answer
    c = KbsClient(url, tee="sgx", evidence=lambda rd: pytest.fail("no evidence before a good auth answer"))
    with pytest.raises(KbsClientError, match=match):
        c.attest()
    assert c.token is None


def test_resource_answer_must_open_with_the_tee_key(kbs: tuple[str, Script]) -> None:
    url, script = kbs
    script.answers["/kbs/v0/auth"] = (200, COOKIE, b'{"nonce":"bm9uY2U="}')
    script.answers["/kbs/v0/attest"] = (200, {}, b'{"token":"a.b.c"}')
    script.answers["/kbs/v0/resource/r/t/x"] = (200, {}, b'{"protected":"e30","encrypted_key":"","iv":"",'
                                                          b'"ciphertext":"","tag":""}')
    c = KbsClient(url, tee="sgx", evidence=lambda rd: {"quote": "AAAA"})
    with pytest.raises(KbsClientError, match=r"resource r/t/x: jwe response"):
        c.resource("r/t/x")
    assert [p for _, p, _, _ in script.seen] == ["/kbs/v0/auth", "/kbs/v0/attest", "/kbs/v0/resource/r/t/x"]


@pytest.mark.parametrize("how, match", [
    ("reset", r"^kbs http://127\.0\.0\.1:\d+/kbs/v0/auth \(auth\): the connection to the key broker was lost: "
              r"Connection reset by peer$"),
    ("close", r"^kbs http://127\.0\.0\.1:\d+/kbs/v0/auth \(auth\): the key broker closed the connection without "
              r"answering$"),
    ("silent", r"^kbs http://127\.0\.0\.1:\d+/kbs/v0/auth \(auth\): the key broker did not answer in time$"),
])
def test_a_key_broker_that_goes_away_mid_exchange(how: str, match: str) -> None:
    """A broker killed while the enclave waits (its kernel resets the connection) or one that hangs up without an
    answer: one plain sentence naming the step, not a Python exception's class name."""
    import socket
    import struct

    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        if how == "silent":
            done.wait(10)
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        c = KbsClient(f"http://127.0.0.1:{srv.getsockname()[1]}", tee="sgx",
                      evidence=lambda rd: pytest.fail("no evidence without an auth answer"),
                      timeout=0.3 if how == "silent" else 30.0)  # under load, a hang-up must not look like a timeout
        with pytest.raises(KbsClientError, match=match):
            c.attest()
    finally:
        done.set()
        t.join(10)
        srv.close()


def test_the_connection_opened_beforehand_disables_nagle(kbs: tuple[str, Script]) -> None:
    """http.client's connect() sets TCP_NODELAY; a socket handed over bypasses it, and then a request written
    in two parts (headers, attestation body) waits ~40 ms on the server's delayed ACK."""
    import socket

    from inclavare.enclave.kbs_client import PreConnected

    url, _ = kbs
    pre = PreConnected.open(url)
    sock = pre()
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()
