"""verdictd's EAA server over real RATS-TLS on loopback: a client attested by the simulated platform (mutual)
asks for the version, an echo, a KEK and a decryption; malformed, unknown and oversized requests get one Fail
answer and the end of the connection; a client the appraisal refuses gets no answer at all; slow and surplus
connections do not hold the server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import select
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inclavare.ratls.attesters import SimAttester, sim_attester_identity
from inclavare.ratls.tls import RatsTlsConfig
from inclavare.services.verdictd.eaa import EaaServer, Limits, listen
from inclavare.services.verdictd.eaa_client import EaaClient
from inclavare.services.verdictd.eaa_protocol import encrypt_blob
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.sim.platform import SimPlatform

KEK = hashlib.sha256(b"test key-encryption key").digest()
TIMEOUT = 20.0


@dataclass
class Appraiser:
    """The policy double: accepts sim peers whose MRENCLAVE is the expected one."""

    mrenclave: str
    calls: int = 0

    def appraise(self, tee: str, claims: Mapping[str, Any], tcb_status: str | None) -> bool:
        self.calls += 1
        return tee == "sim" and claims.get("mrenclave") == self.mrenclave and tcb_status == "UpToDate"


class Store:
    def __init__(self) -> None:
        self.keys = {"kek-1": KEK}
        self.resources = {"Policy": b'{"default":[{"type":"insecureAcceptAnything"}]}'}

    def get_kek(self, kid: str) -> bytes | None:
        return self.keys.get(kid)

    def get_resource(self, name: str) -> bytes | None:
        return self.resources.get(name)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimAttester, str]:
    d = str(tmp_path_factory.mktemp("eaa-sim") / "state")
    root = SimPlatform.open(d).root_ca_fingerprint()
    return SimAttester(d), root


def config(sim: tuple[SimAttester, str], **kw: Any) -> RatsTlsConfig:
    attester, root = sim
    return RatsTlsConfig(attester=attester, trust_sim=True, sim_root_fingerprints=(root,), mutual=True,
                          provide_endorsements=True, **kw)


class Running:
    def __init__(self, server: EaaServer, sock: socket.socket, address: str, audit: list[tuple[str, Any]]) -> None:
        self.server, self.sock, self.address, self.audit = server, sock, address, audit


@contextlib.contextmanager
def start(sim: tuple[SimAttester, str], appraiser: Any, address: str = "127.0.0.1:0",
          limits: Limits | None = None) -> Iterator[Running]:
    limits = limits or Limits()
    audit: list[tuple[str, Any]] = []
    server = EaaServer(config(sim), Store(), appraiser, Store(), limits=limits,
                       audit=lambda e, d: audit.append((e, d)))
    sock = listen(address)
    name = sock.getsockname()
    where = f"127.0.0.1:{name[1]}" if isinstance(name, tuple) else name
    thread = server.start(sock)
    try:
        yield Running(server, sock, where, audit)
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        sock.close()
        assert not thread.is_alive()


@pytest.fixture
def running(sim: tuple[SimAttester, str]) -> Iterator[Running]:
    with start(sim, Appraiser(sim_attester_identity().mrenclave.hex()),
               limits=Limits(max_connections=4, handshake_timeout=2.0, read_timeout=2.0)) as r:
        yield r


def client(sim: tuple[SimAttester, str], running: Running) -> EaaClient:
    return EaaClient(config(sim), running.address, timeout=TIMEOUT).connect()


def test_version_echo_kek_and_decrypt(sim: tuple[SimAttester, str], running: Running) -> None:
    with client(sim, running) as c:
        assert c.request({"command": "version"}) == b'{"status":"OK","version":"v1"}'
        assert c.get_kek(["kek-1"]) == {"kek-1": KEK}
        iv = os.urandom(12)
        layer_key = os.urandom(32)
        assert c.decrypt("kek-1", encrypt_blob(KEK, iv, layer_key), iv) == layer_key
        assert c.get_resource("Policy") == b'{"default":[{"type":"insecureAcceptAnything"}]}'
        missing = c.call({"command": "Get KEK", "kids": ["kek-2"]})
        assert missing == {"status": "Fail", "data": {}, "error": "kid: kek-2's key not found"}
        assert c.request({"command": "echo", "data": "bye"}) == b"bye"
        assert c.request({"command": "version"}) == b""  # echo ended the connection
    assert [e for e, _ in running.audit] == ["eaa.kek", "eaa.decrypt", "eaa.resource"]
    assert running.audit[0][1]["peer"]["mrenclave"] == sim_attester_identity().mrenclave.hex()


@pytest.mark.parametrize(("data", "error"), [
    (b'{"command": "Launch Missiles"}', "Command error: unknown command 'Launch Missiles'"),
    (b'{"command": "version",', "Parse request failed: Expecting property name enclosed in double quotes"),
    (b'{"command": "version"} trailing', "Parse request failed: Extra data"),
])
def test_unknown_and_malformed_requests_end_the_connection_with_a_reason(
        sim: tuple[SimAttester, str], running: Running, data: bytes, error: str) -> None:
    with client(sim, running) as c:
        answer = json.loads(c.send_raw(data))
        assert answer["status"] == "Fail" and answer["error"].startswith(error)
        assert c.send_raw(b'{"command": "version"}') == b""
    with client(sim, running) as c:  # and the server goes on serving
        assert c.version() == "v1"


def test_an_oversized_request_is_refused(sim: tuple[SimAttester, str], running: Running) -> None:
    big = json.dumps({"command": "echo", "data": "x" * 200_000}).encode()
    with client(sim, running) as c:
        answer = json.loads(c.send_raw(big))
        assert answer == {"status": "Fail", "error": "request too large: more than 65536 bytes"}
    with client(sim, running) as c:  # a request over several TLS records but under the limit is whole
        text = "y" * 40_000
        assert c.request({"command": "echo", "data": text}) == text.encode()


def attempt(cfg: RatsTlsConfig, address: str) -> bytes | None:
    """The answer to a Get KEK: None when the connection failed, b"" when it was closed without an answer (with
    TLS 1.3 the client's handshake ends before the server has judged the client's certificate)."""
    try:
        with EaaClient(cfg, address, timeout=TIMEOUT) as c:
            return c.request({"command": "Get KEK", "kids": ["kek-1"]})
    except VerdictdError:
        return None


def test_a_client_the_appraisal_refuses_gets_no_answer(sim: tuple[SimAttester, str]) -> None:
    appraiser = Appraiser("00" * 32)  # not the sim attester's MRENCLAVE
    with start(sim, appraiser) as running:
        assert attempt(config(sim), running.address) in (None, b"")
        assert appraiser.calls == 1
        assert [e for e, _ in running.audit] == ["eaa.refused"]
        assert running.audit[0][1]["reason"] == "the policy does not allow it"
        assert running.audit[0][1]["tee"] == "sim"


def test_an_unattested_client_is_refused(sim: tuple[SimAttester, str], running: Running) -> None:
    null = RatsTlsConfig(attester="nullattester", trust_sim=True, sim_root_fingerprints=(sim[1],), mutual=True)
    assert attempt(null, running.address) in (None, b"")
    assert running.audit == []


def test_an_explicitly_unattested_server_answers_only_version_and_echo(sim: tuple[SimAttester, str]) -> None:
    """Without mutual attestation (allowed only explicitly) clients are not attested, so get no keys."""
    attester, root = sim
    server_cfg = RatsTlsConfig(attester=attester, trust_sim=True, sim_root_fingerprints=(root,))
    server = EaaServer(server_cfg, Store(), None, Store(), allow_unattested=True)
    sock = listen("127.0.0.1:0")
    thread = server.start(sock)
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        one_way = RatsTlsConfig(attester="nullattester", trust_sim=True, sim_root_fingerprints=(root,))
        with EaaClient(one_way, address, timeout=TIMEOUT) as c:
            assert c.version() == "v1"
            answer = c.call({"command": "Get KEK", "kids": ["kek-1"]})
            assert answer["status"] == "Fail" and "not attested" in answer["error"]
            assert base64.b64encode(KEK).decode() not in json.dumps(answer)
            with pytest.raises(VerdictdError, match="not attested"):
                c.get_resource("Policy")
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        sock.close()


def test_slow_and_surplus_connections_do_not_hold_the_server(sim: tuple[SimAttester, str],
                                                             running: Running) -> None:
    host, port = running.address.rsplit(":", 1)
    # a client that sends 5 bytes of a ClientHello and waits: the others are served meanwhile
    slow = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    slow.sendall(b"\x16\x03\x01\x02\x00")
    idle = [socket.create_connection((host, int(port)), timeout=TIMEOUT) for _ in range(2)]
    try:
        with client(sim, running) as c:
            assert c.version() == "v1"
        # the handshake deadline ends the silent ones (EOF, or a reset); a TimeoutError here would mean the server
        # held them for the test's whole timeout
        for s in [slow, *idle]:
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b""
    finally:
        for s in [slow, *idle]:
            s.close()


def test_a_client_dripping_its_handshake_is_cut_off(running: Running) -> None:
    """One byte every 0.1 s never trips a per-read timeout; the 2 s handshake deadline ends it all the same (the
    ssl module keeps one deadline per handshake call; the server's watchdog bounds every phase on any TLS path)."""
    host, port = running.address.rsplit(":", 1)
    # a record of 512 bytes holding a ClientHello of 508: nothing can be judged before the last byte
    hello = b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc" + b"\x03\x03" + bytes(100)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        for byte in hello:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            readable, _, _ = select.select([s], [], [], 0.1)
            if readable:
                try:
                    assert s.recv(100) == b""
                except ConnectionResetError:
                    pass
                break
        else:
            pytest.fail(f"the server let a client drip {len(hello)} bytes of a handshake")


def test_connections_beyond_the_cap_are_closed_after_the_queue_wait(sim: tuple[SimAttester, str]) -> None:
    with start(sim, Appraiser(sim_attester_identity().mrenclave.hex()),
               limits=Limits(max_connections=2, queue_timeout=0.2, handshake_timeout=30.0)) as running:
        host, port = running.address.rsplit(":", 1)
        held = [socket.create_connection((host, int(port)), timeout=TIMEOUT) for _ in range(2)]
        try:
            held[0].sendall(b"\x16")
            held[1].sendall(b"\x16")
            extra = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            with extra:
                assert extra.recv(100) == b""  # closed by the server long before its 30 s handshake deadline
        finally:
            for s in held:
                s.close()


def test_a_unix_socket(sim: tuple[SimAttester, str], tmp_path: Path) -> None:
    path = str(tmp_path / "eaa.sock")
    with start(sim, Appraiser(sim_attester_identity().mrenclave.hex()), address=path):
        assert os.stat(path).st_mode & 0o777 == 0o600
        with EaaClient(config(sim), path, timeout=TIMEOUT) as c:
            assert c.version() == "v1"
            assert c.get_kek(["kek-1"])["kek-1"] == KEK
            iv = b"\x01" * 12
            assert c.decrypt("kek-1", encrypt_blob(KEK, iv, b"z"), iv) == b"z"
            assert base64.b64encode(KEK).decode() in c.request({"command": "Get KEK", "kids": ["kek-1"]}).decode()
