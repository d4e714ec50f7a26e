"""shelter -> inclavared -> sample confidential container, all real processes on the simulated platform (trusted
explicitly with --trust-sim): a match, a mismatch, references from a real verdictd, the container down,
inclavared restarted mid-flow, bad clients, and confidential containers that answer wrongly (in-process
RATS-TLS servers speaking to the real inclavared)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.formats.enclave_info import encode_identity_answer
from inclavare.ratls.server import RatsTlsServer, ServerConnection, ServerLimits
from inclavare.ratls.tls import RatsTlsConfig
from inclavare.services.inclavared.enclave_info import identity_of, sim_attester

SRC = Path(__file__).resolve().parents[2] / "src"
TIMEOUT = 30.0  # an upper bound only, never a sleep
MRE = hashlib.sha256(b"inclavared test enclave").hexdigest()
MRS = hashlib.sha256(b"inclavared test signer").hexdigest()
SIM = ["--trust-sim"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("inclavared-sim")
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    e["INCLAVARE_SIM_STATE_DIR"] = str(base / "sim")
    return e


class Proc:
    """A program started with ``-m MODULE``; ``ready`` is its first stdout line (JSON)."""

    def __init__(self, env: dict[str, str], module: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise AssertionError(f"{module} did not start: {self.errors}")
        self.ready: dict[str, Any] = json.loads(line)
        self.errors = ""

    @property
    def address(self) -> str:
        return str(self.ready["listen"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        _, self.errors = self.proc.communicate()
        return rc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def start(procs: list[Proc], env: dict[str, str], module: str, *args: str) -> Proc:
    p = Proc(env, module, *args)
    procs.append(p)
    return p


def container(procs: list[Proc], env: dict[str, str], path: Path, *extra: str) -> Proc:
    return start(procs, env, "inclavare.cli.enclave_info", "-l", f"unix://{path}", "-m", *SIM, *extra)


def inclavared(procs: list[Proc], env: dict[str, str], xfer: str, listen: str = "127.0.0.1:0",
               *extra: str) -> Proc:
    return start(procs, env, "inclavare.cli.inclavared", "-l", listen, "-x", xfer, "--attester", "sim", *SIM,
                 *extra)


def shelter(env: dict[str, str], addr: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inclavare.cli.shelter", "remoteattestation", "--addr", addr,
                           *SIM, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT * 2)


@pytest.fixture
def chain(procs: list[Proc], env: dict[str, str], tmp_path: Path) -> tuple[Proc, Proc]:
    c = container(procs, env, tmp_path / "c.sock", "--mrenclave", MRE, "--mrsigner", MRS)
    return c, inclavared(procs, env, c.address)


def test_match_and_mismatch(chain: tuple[Proc, Proc], env: dict[str, str]) -> None:
    _, d = chain
    ok = shelter(env, d.address, "--mrenclave", "00" * 32, "--mrenclave", MRE.upper(), "--mrsigner", MRS)
    assert ok.returncode == 0, ok.stderr
    assert f"App Enclave mrenclave: {MRE}" in ok.stdout and f"App Enclave mrsigner: {MRS}" in ok.stdout
    assert "Attested: yes (TEE sim, verifier sim)" in ok.stdout
    assert ok.stdout.rstrip().endswith("Remote attestation is successful.")
    bad = shelter(env, d.address, "--mrenclave", MRE, "--mrsigner", "cc" * 32)
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"shelter: MRSIGNER mismatch: the enclave's is {MRS}, --mrsigner accepts {'cc' * 32}"
    js = shelter(env, d.address, "--json", "--mrenclave", MRE)
    out = json.loads(js.stdout)
    assert js.returncode == 0 and out["ok"] and out["compared"]
    assert out["enclave_info"]["msgtype"] == "ENCLAVEINFO" and out["enclave_info"]["claims"]["mrenclave"] == MRE
    assert out["inclavared"]["verified"] and out["inclavared"]["tee"] == "sim"


def test_the_identity_of_a_signed_image(procs: list[Proc], env: dict[str, str], tmp_path: Path) -> None:
    from inclavare.enclave import image
    from tests.unit.sgx_helpers import rsa3072_e3_key

    img = image.sign(image.build(b"\0asm\x01\0\0\0" + bytes(300), "wasm", date=datetime.date(2026, 1, 1)),
                     rsa3072_e3_key(1))
    path = tmp_path / "enclave.img"
    path.write_bytes(img)
    loaded = image.load(path)
    c = container(procs, env, tmp_path / "img.sock", "--image", str(path))
    d = inclavared(procs, env, c.address, f"unix://{tmp_path / 'd.sock'}")
    ok = shelter(env, d.address, "--mrenclave", loaded.mrenclave.hex(), "--mrsigner", loaded.mrsigner.hex())
    assert ok.returncode == 0, ok.stderr
    mv = subprocess.run([sys.executable, "-m", "inclavare.cli.shelter", "mrverify", str(path)], env=env,
                        capture_output=True, text=True, timeout=TIMEOUT)
    assert mv.returncode == 0 and f"computed MRENCLAVE:    {loaded.mrenclave.hex()}" in mv.stdout, mv.stderr


def test_references_from_verdictd(chain: tuple[Proc, Proc], env: dict[str, str], tmp_path: Path) -> None:
    import http.client

    token = tmp_path / "admin.token"
    token.write_text("inclavared-test-admin-token\n")
    token.chmod(0o600)
    venv = {**env, "VERDICTD_KEK": hashlib.sha256(b"kek").hexdigest()}
    vd = Proc(venv, "inclavare.cli.verdictd", "--state-dir", str(tmp_path / "vd"), "--log-level", "warn",
              "--kbs-listen", "127.0.0.1:0", "--insecure-http", "--admin-listen", "127.0.0.1:0",
              "--admin-token-file", str(token))
    try:
        admin = str(vd.ready["admin"])
        host, port = admin.split("//")[-1].rstrip("/").rsplit(":", 1)

        def set_refs(values: list[str]) -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
            conn.request("POST", "/kbs/v0/reference-value", json.dumps({"name": "mrenclave", "values": values}),
                         {"Authorization": "Bearer inclavared-test-admin-token"})
            assert conn.getresponse().status == 200
            conn.close()

        flags = ("--verdictd", f"http://{host}:{port}", "--verdictd-token-file", str(token))
        missing = shelter(env, chain[1].address, *flags)
        assert missing.returncode == 1 and "reference value 'mrenclave': HTTP 404" in missing.stderr
        set_refs([MRE])
        ok = shelter(env, chain[1].address, *flags)
        assert ok.returncode == 0, ok.stderr
        assert "Reference mrenclave: 1 accepted value (verdictd http://" in ok.stdout
        set_refs(["dd" * 32])  # the owner revokes this build
        bad = shelter(env, chain[1].address, *flags)
        assert bad.returncode == 1 and "MRENCLAVE mismatch" in bad.stderr and "verdictd http://" in bad.stderr
    finally:
        assert vd.stop() == 0


def test_container_down_and_back(procs: list[Proc], env: dict[str, str], tmp_path: Path) -> None:
    sock = tmp_path / "later.sock"
    d = inclavared(procs, env, f"unix://{sock}")
    down = shelter(env, d.address)
    assert down.returncode == 1
    assert down.stderr.strip() == (f"shelter: inclavared at {d.address} refused: confidential container "
                                   f"unix://{sock}: cannot connect: No such file or directory")
    container(procs, env, sock, "--mrenclave", MRE)
    assert shelter(env, d.address, "--mrenclave", MRE).returncode == 0
    assert d.proc.poll() is None


def test_inclavared_restarted_mid_flow(procs: list[Proc], env: dict[str, str], tmp_path: Path) -> None:
    c = container(procs, env, tmp_path / "c.sock", "--mrenclave", MRE)
    listen = f"unix://{tmp_path / 'inclavared.sock'}"
    first = inclavared(procs, env, c.address, listen)
    assert shelter(env, listen, "--mrenclave", MRE).returncode == 0
    assert first.stop() == 0
    gone = shelter(env, listen, "--mrenclave", MRE)
    assert gone.returncode == 1 and f"shelter: inclavared {listen}: cannot connect" in gone.stderr
    inclavared(procs, env, c.address, listen)
    again = shelter(env, listen, "--mrenclave", MRE)
    assert again.returncode == 0, again.stderr


def test_bad_clients_do_not_stop_it(chain: tuple[Proc, Proc], env: dict[str, str]) -> None:
    _, d = chain
    host, port = d.address.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS
        s.settimeout(TIMEOUT)
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
        assert not got or got[0] == 0x15  # closed, or a TLS alert record: the handshake failed
    untrusting = subprocess.run([sys.executable, "-m", "inclavare.cli.shelter", "remoteattestation", "--addr",
                                 d.address, "--verifier", "sgx_ecdsa"], env=env, capture_output=True, text=True,
                                timeout=TIMEOUT)
    assert untrusting.returncode == 1 and "RATS-TLS handshake failed" in untrusting.stderr
    assert untrusting.stderr.count("\n") == 1
    assert shelter(env, d.address, "--mrenclave", MRE).returncode == 0


Answer = Callable[[ServerConnection], None]


@pytest.fixture
def fake_container(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[Answer], str]]:
    """An in-process confidential container with the sim attester (identity MRE/MRS) whose answer a test picks."""
    servers: list[tuple[RatsTlsServer, threading.Thread, socket.socket]] = []
    ident = identity_of(None, MRE, MRS)

    def make(answer: Answer) -> str:
        cfg = RatsTlsConfig(attester=sim_attester(ident, env["INCLAVARE_SIM_STATE_DIR"]), verifier="sim",
                            mutual=True, trust_sim=True, sim_state_dir=env["INCLAVARE_SIM_STATE_DIR"])
        server = RatsTlsServer(cfg, lambda conn, peer: answer(conn), ServerLimits(read_timeout=10, write_timeout=10))
        path = tmp_path / f"fake{len(servers)}.sock"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.listen(8)
        servers.append((server, server.start(sock), sock))
        return f"unix://{path}"

    try:
        yield make
    finally:
        for server, thread, sock in servers:
            server.shutdown()
            thread.join(TIMEOUT)
            sock.close()


def _reply(data: bytes) -> Answer:
    def answer(conn: ServerConnection) -> None:
        conn.receive_message()
        conn.transmit(data)
    return answer


def _silent(conn: ServerConnection) -> None:
    conn.receive_message()
    time.sleep(3)  # longer than inclavared's --xfer-timeout 1: it gives up first


def _hang_up(conn: ServerConnection) -> None:
    conn.receive_message()


@pytest.mark.parametrize("answer, needle", [
    (_reply(b"short"), "answered 5 bytes, not MRENCLAVE and MRSIGNER"),
    (_reply(bytes.fromhex("ee" * 32 + MRS) + b"hi"), f"says its MRENCLAVE is {'ee' * 32}, but its attested "
                                                     f"evidence says {MRE}"),
    (_reply(bytes.fromhex(MRE + MRS) + b"\xff\xfe"), "its message is not UTF-8 text"),
    (_reply(bytes.fromhex(MRE + MRS) + b"x" * 20000), "more than 4160"),
    (_hang_up, "closed the connection without an answer"),
    (_silent, "no answer within 1 s (reading the answer)"),
])
def test_malformed_relay_answers(fake_container: Callable[[Answer], str], procs: list[Proc], env: dict[str, str],
                                 answer: Answer, needle: str) -> None:
    d = inclavared(procs, env, fake_container(answer), "127.0.0.1:0", "--xfer-timeout", "1")
    result = shelter(env, d.address, "--mrenclave", MRE)
    assert result.returncode == 1
    assert needle in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert d.proc.poll() is None
    assert d.stop() == 0
    assert needle in d.errors  # logged on one line by inclavared too


def test_a_well_formed_fake_answer_passes(fake_container: Callable[[Answer], str], procs: list[Proc],
                                          env: dict[str, str]) -> None:
    """The control for the cases above: the same fake container with a correct answer is accepted."""
    d = inclavared(procs, env, fake_container(_reply(encode_identity_answer(bytes.fromhex(MRE), bytes.fromhex(MRS),
                                                                            "ok"))))
    result = shelter(env, d.address, "--mrenclave", MRE, "--mrsigner", MRS)
    assert result.returncode == 0, result.stderr
    assert "Message: ok" in result.stdout


def test_both_hops_are_verified(procs: list[Proc], env: dict[str, str], tmp_path: Path) -> None:
    c = container(procs, env, tmp_path / "c.sock", "--mrenclave", MRE)
    # inclavared that does not trust the sim platform refuses the container's evidence
    strict = start(procs, env, "inclavare.cli.inclavared", "-l", "127.0.0.1:0", "-x", c.address, "--attester", "sim")
    refused = shelter(env, strict.address, "--mrenclave", MRE)
    assert refused.returncode == 1
    assert f"refused: confidential container {c.address}: RATS-TLS handshake failed" in refused.stderr
    assert refused.stderr.count("\n") == 1
    # -m: inclavared wants shelter's evidence too
    mutual = inclavared(procs, env, c.address, "127.0.0.1:0", "-m")
    anonymous = shelter(env, mutual.address, "--mrenclave", MRE)
    # (TLS 1.3: the client's handshake ends before the server's refusal, which comes as an alert on the read)
    assert anonymous.returncode == 1 and "certificate required" in anonymous.stderr
    attested = shelter(env, mutual.address, "--mrenclave", MRE, "--mutual", "--attester", "sim")
    assert attested.returncode == 0, attested.stderr
