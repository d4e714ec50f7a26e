"""The enclave-side KBS client (inclavare.enclave.kbs_client) against the real `verdictd` process, with evidence
from a sim enclave loaded by the sim runtime (its own measurement, quoted by the simulated QE over the KBS
binding): the owner's secret reaches the enclave the reference values name, and nothing else does."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.enclave import image
from inclavare.enclave.image import EnclaveSettings
from inclavare.enclave.kbs_client import KbsClient, KbsClientError, quote_evidence
from inclavare.enclave.runtimes.sim import SimRuntime
from tests.integration.test_vd_daemon import Daemon, Env, world  # noqa: F401 (world: a fixture)
from tests.unit.sgx_helpers import rsa3072_e3_key

SECRET = b"the owner's image key"
PAYLOAD = b"\x7fELF" + bytes(5000)  # never run here: only measured


def enclave(tmp: Path, payload: bytes = PAYLOAD, debug: bool = False) -> tuple[SimRuntime, str]:
    """A sim runtime with a signed enclave image loaded (as pal_init does), ready to quote."""
    path = tmp / f"enclave-{hashlib.sha256(payload).hexdigest()[:8]}{'-debug' if debug else ''}.img"
    settings = EnclaveSettings(heap_size=4096, debug=debug)
    path.write_bytes(image.sign(image.build(payload, "native", settings), rsa3072_e3_key(0)))
    rt = SimRuntime()
    rt.load({})
    rt.open_quoting()  # what load() does for a container that names a key broker
    rt.init(f"image={path}", "error")
    assert rt.quoting is not None
    return rt, rt.image.mrenclave.hex()


@pytest.fixture
def daemon(world: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:  # noqa: F811
    monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", world.sim_dir)  # the enclave and verdictd share a platform
    d = Daemon(world, tmp_path / "state")
    try:
        yield d
    finally:
        assert d.stop() == 0


def owner(d: Daemon, mrenclaves: list[str], path: str = "owner/key/image") -> None:
    status, answer = d.admin("POST", "/kbs/v0/reference-value",
                             {"name": "mrenclave", "values": mrenclaves, "provenance": "test"})
    assert status == 200, answer
    status, answer = d.admin("POST", f"/kbs/v0/resource/{path}", SECRET)
    assert status == 200, answer


def client(d: Daemon, rt: SimRuntime, **kw: Any) -> KbsClient:
    return KbsClient(f"http://127.0.0.1:{d.port('kbs')}", tee="sim",
                     evidence=lambda rd: quote_evidence(rt.quote(rd)), **kw)


@pytest.mark.parametrize("key_type", ["EC", "RSA"])
def test_the_measured_enclave_gets_the_secret(daemon: Daemon, tmp_path: Path, key_type: str) -> None:
    rt, mrenclave = enclave(tmp_path)
    owner(daemon, [mrenclave])
    c = client(daemon, rt, key_type=key_type)
    assert c.resource("owner/key/image") == SECRET
    assert c.token is not None and c.token.count(".") == 2  # the EAR token, kept for the session
    assert c.resource("/owner/key/image/") == SECRET  # same session: no second attestation
    with pytest.raises(KbsClientError, match=r"resource owner/key/other\): 404 "):
        c.resource("owner/key/other")


def test_another_enclave_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    rt, mrenclave = enclave(tmp_path)
    other, _ = enclave(tmp_path, PAYLOAD + b"changed")
    owner(daemon, [mrenclave])
    with pytest.raises(KbsClientError, match=r"\(attest\): 403 PolicyDeny: .*is not a reference value"):
        client(daemon, other).resource("owner/key/image")
    debug, debug_mr = enclave(tmp_path, debug=True)
    owner(daemon, [mrenclave, debug_mr])
    with pytest.raises(KbsClientError, match=r"403 PolicyDeny: .*debug"):
        client(daemon, debug).resource("owner/key/image")


def test_evidence_not_bound_to_the_session_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    rt, mrenclave = enclave(tmp_path)
    owner(daemon, [mrenclave])
    stale = rt.quote(bytes(64))  # a genuine quote, but over other report data
    c = KbsClient(f"http://127.0.0.1:{daemon.port('kbs')}", tee="sim",
                  evidence=lambda rd: {"quote": base64.b64encode(stale).decode()})
    with pytest.raises(KbsClientError, match=r"\(attest\): 401 RcarAttestFailed: .*report data"):
        c.resource("owner/key/image")
    assert c.token is None


def test_unreachable_and_wrong_urls(tmp_path: Path, daemon: Daemon) -> None:
    rt, _ = enclave(tmp_path)
    with pytest.raises(KbsClientError, match=r"127.0.0.1:1/kbs/v0/auth \(auth\): cannot connect: Connection refused"):
        KbsClient("http://127.0.0.1:1", tee="sim", evidence=lambda rd: {}).attest()
    for url in ("ftp://kbs", "https://user:pw@kbs", "http://kbs/?q=1", "kbs:8080"):
        with pytest.raises(KbsClientError, match="kbs url"):
            KbsClient(url, tee="sim", evidence=lambda rd: {})
    with pytest.raises(KbsClientError, match="not https"):
        KbsClient(f"http://127.0.0.1:{daemon.port('kbs')}", tee="sim", evidence=lambda rd: {}, cafile="/dev/null")
    with pytest.raises(KbsClientError, match=r"expected REPO/TYPE/TAG"):
        client(daemon, rt).resource("owner/key")
    # a tee the server does not trust: refused at auth
    with pytest.raises(KbsClientError, match=r"\(auth\): 401 "):
        KbsClient(f"http://127.0.0.1:{daemon.port('kbs')}", tee="csv", evidence=lambda rd: {}).attest()



def test_one_connection_opened_beforehand(daemon: Daemon, tmp_path: Path) -> None:
    """As the sim runtime does: the TCP connection is opened first (on the host), the whole exchange then runs
    over it (keep-alive); a second connection cannot be had."""
    from inclavare.enclave.kbs_client import PreConnected

    rt, mrenclave = enclave(tmp_path)
    owner(daemon, [mrenclave])
    url = f"http://127.0.0.1:{daemon.port('kbs')}"
    pre = PreConnected.open(url)
    c = KbsClient(url, tee="sim", evidence=lambda rd: quote_evidence(rt.quote(rd)), connect=pre)
    assert c.resource("owner/key/image") == SECRET
    c.close()
    with pytest.raises(KbsClientError, match="closed the connection opened before the container started"):
        c.resource("owner/key/image")
    with pytest.raises(KbsClientError, match=r"kbs http://127.0.0.1:1: cannot connect: Connection refused"):
        PreConnected.open("http://127.0.0.1:1")
