"""rune with a real epm (issue 17): builtin:wasm and builtin:sim containers fill epm's pools on their first start
and take from them afterwards; a corrupted artifact is ignored (the module is compiled, the container runs); epm
down means a normal start."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.enclave.epm.proto import epm_pb2 as pb
from tests.conftest import needs_busybox, needs_root
from tests.integration.test_enclave_builtin import HELLO_WAT, wasm_bundle
from tests.integration.test_epm import Epm

pytestmark = [needs_root, needs_busybox]
wasmtime = pytest.importorskip("wasmtime", reason="wasmtime (Python) is not installed")


@pytest.fixture
def epm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Epm]:
    top = tempfile.mkdtemp(prefix="epm-", dir="/tmp")  # a unix socket path must stay short
    e = Epm(top)
    e.start()
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", e.sock)
    monkeypatch.setenv("INCLAVARE_EPM_ROOT", e.root)
    monkeypatch.setenv("INCLAVARE_EPM_MIN_BYTES", "0")  # the test modules are small
    try:
        yield e
    finally:
        if e.proc is not None:
            e.stop(signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)


def caches(e: Epm, ctype: str) -> list[pb.Cache]:
    return list(e.stub.ListCache(pb.ListCacheRequest(type=ctype), timeout=10).caches)


def test_wasm_container_fills_then_uses_the_pool(rune, cid, make_bundle, epm: Epm):  # type: ignore[no-untyped-def]
    b = wasm_bundle(make_bundle, ["/app/hello.wat", "x"], {"app/hello.wat": HELLO_WAT})
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 9 and p.stdout == "/app/hello.wat\nx\n", p.stderr
    (cache,) = caches(epm, "wasm-module")
    assert cache.ID.startswith(hashlib.sha256(HELLO_WAT.encode()).hexdigest() + ".wasmtime-")
    artifact = Path(cache.savePath)
    assert artifact.is_file() and not artifact.stat().st_mode & 0o022
    p = rune.run("run", "--bundle", b, cid + "2")  # a hit
    assert p.returncode == 9 and p.stdout == "/app/hello.wat\nx\n", p.stderr
    # corrupted in place: the digest epm recorded no longer matches, so it is ignored and the module compiled
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    p = rune.run("run", "--bundle", b, cid + "3")
    assert p.returncode == 9 and p.stdout == "/app/hello.wat\nx\n", p.stderr
    # epm gone (its socket left behind): a normal start
    epm.stop(signal.SIGKILL)
    p = rune.run("run", "--bundle", b, cid + "4")
    assert p.returncode == 9 and p.stdout == "/app/hello.wat\nx\n", p.stderr


def test_sim_container_fills_then_uses_the_pool(rune, cid, make_bundle, epm: Epm, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch):
    from inclavare.enclave import image
    from tests.unit.sgx_helpers import rsa3072_e3_pem

    if "INCLAVARE_SIM_STATE_DIR" not in os.environ:
        monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", str(tmp_path / "sim"))
    img = image.sign(image.build(bytes(wasmtime.wat2wasm(HELLO_WAT)), "wasm"), rsa3072_e3_pem(0))
    b = wasm_bundle(make_bundle, ["hello", "y"], {"enclave/enclave.img": img}, runtime="builtin:sim")
    for run in ("a", "b"):  # a miss (full check, saved), then a hit
        p = rune.run("run", "--bundle", b, cid + run)
        assert p.returncode == 9 and p.stdout == "hello\ny\n", p.stderr
    (rec,) = caches(epm, "sim-image")
    assert (rec.ID, rec.savePath) == (hashlib.sha256(img).hexdigest(), "")
    assert len(caches(epm, "wasm-module")) == 1  # the payload, precompiled
