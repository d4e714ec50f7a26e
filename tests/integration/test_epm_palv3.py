"""PAL v3's enclave hand-over end to end: the real `epm` process, a producer filling its enclave pool, and rune
running a container with the recording test PAL v3, which logs the fd and addr pal_init received and what it
finds behind them (tests/fixtures/pal/pal_common.h, tp_log_pool)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.enclave.epm import client
from inclavare.enclave.epm import enclave as ee
from inclavare.enclave.epm.proto import epm_pb2 as pb
from inclavare.services.epm import enclave_pool as ep
from tests.conftest import needs_busybox, needs_root
from tests.integration.test_enclave_pal import enclave_bundle, errors, read_log
from tests.integration.test_epm import Epm

pytestmark = [needs_root, needs_busybox,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test PALs")]


@pytest.fixture
def pal_v3(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    from tests.fixtures.pal.build import build_pal

    dst = tmp_path / f"pal_v3-{os.urandom(4).hex()}.so"  # a private copy: its own dlopen instance
    shutil.copy(build_pal("pal_v3", tmp_path_factory.mktemp("pals")), dst)
    return str(dst)


@pytest.fixture
def epm() -> Iterator[Epm]:
    top = tempfile.mkdtemp(prefix="epm-", dir="/tmp")  # unix socket paths must stay short
    e = Epm(top)
    try:
        yield e
    finally:
        if e.proc is not None:
            e.stop(signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)


def _run(rune, cid, make_bundle, pal: str, sock: str, pal_args: str = "", userns: bool = False):  # type: ignore[no-untyped-def]
    b = enclave_bundle(make_bundle, ["true"], pal, pal_args=pal_args)
    if userns:  # a user namespace (identity-mapped, so the PAL may still write its log in the rootfs)
        cfg = json.loads(Path(b, "config.json").read_text())
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
        Path(b, "config.json").write_text(json.dumps(cfg))
    p = rune.run("run", "--bundle", b, cid, env=dict(os.environ, **{client.SOCKET_ENV: sock}))
    assert p.returncode == 0, p.stderr
    init = dict(read_log(b))["pal_init"]
    return p, init


def _ids(epm: Epm) -> list[str]:
    return [c.ID for c in epm.stub.ListCache(pb.ListCacheRequest(type=ee.POOL_TYPE), timeout=10).caches]


def test_without_epm_pal_init_gets_no_enclave(rune, cid, make_bundle, pal_v3, tmp_path):
    p, init = _run(rune, cid, make_bundle, pal_v3, str(tmp_path / "no-epm-here.sock"))
    assert (init["fd"], init["addr"]) == ("-1", "0")
    assert "fd_open" not in init and "addr_perms" not in init
    assert errors(p.stderr) == []


def test_a_pooled_enclave_reaches_pal_init_and_is_consumed(rune, cid, make_bundle, pal_v3, epm):
    epm.start()
    (cid_pool,) = ep.fill(epm.sock, pal_v3, 1)
    assert _ids(epm) == [cid_pool]
    p, init = _run(rune, cid, make_bundle, pal_v3, epm.sock)
    assert errors(p.stderr) == []
    assert int(init["fd"]) > 2 and init["addr"] == str(ee.DEFAULT_BASE)
    assert init["fd_open"] == "1"  # a live descriptor in the PAL's process ...
    assert init["fd_target"] == "/memfd:inclavare-enclave (deleted)"  # ... of the pool's kind
    assert init["addr_perms"] == "r--s" and init["addr_fd"] == "1"  # mapped at addr, from that descriptor
    assert init["addr_text"] == f"{ee.HEADER_MAGIC.decode()} {cid_pool}"  # the producer's enclave, this entry
    assert _ids(epm) == []  # consumed


def test_a_user_namespaced_container_gets_its_pooled_enclave_too(rune, cid, make_bundle, pal_v3, epm):
    """The pick happens before rune unshares namespaces (unshare(CLONE_NEWUSER) needs a single-threaded caller;
    gRPC runs in a forked helper so no gRPC thread can be left in rune's process)."""
    epm.start()
    (cid_pool,) = ep.fill(epm.sock, pal_v3, 1)
    p, init = _run(rune, cid, make_bundle, pal_v3, epm.sock, userns=True)
    assert errors(p.stderr) == []
    assert init["fd_open"] == "1" and init["addr_text"].endswith(cid_pool)


def test_each_container_takes_its_own_entry_until_the_pool_is_empty(rune, make_bundle, pal_v3, epm):
    epm.start()
    filled = set(ep.fill(epm.sock, pal_v3, 2))
    got = []
    for n in range(3):
        _p, init = _run(rune, f"t-pool-{os.getpid()}-{n}", make_bundle, pal_v3, epm.sock)
        got.append(init.get("addr_text", "").rpartition(" ")[2] if init["fd"] != "-1" else None)
    assert set(got[:2]) == filled and got[2] is None
    assert _ids(epm) == []


def test_no_epm_in_the_runtime_args_keeps_rune_away(rune, cid, make_bundle, pal_v3, epm):
    epm.start()
    ep.fill(epm.sock, pal_v3, 1)
    _p, init = _run(rune, cid, make_bundle, pal_v3, epm.sock, pal_args="no-epm")
    assert (init["fd"], init["addr"]) == ("-1", "0")
    assert len(_ids(epm)) == 1


def test_an_entry_for_another_pal_is_not_used(rune, cid, make_bundle, pal_v3, epm, tmp_path):
    epm.start()
    other = tmp_path / "other.so"
    other.write_bytes(b"not this PAL")
    ep.fill(epm.sock, str(other), 1)
    _p, init = _run(rune, cid, make_bundle, pal_v3, epm.sock)
    assert (init["fd"], init["addr"]) == ("-1", "0")
    assert len(_ids(epm)) == 1


def test_with_epm_killed_the_container_still_starts(rune, cid, make_bundle, pal_v3, epm):
    epm.start()
    ep.fill(epm.sock, pal_v3, 1)
    epm.stop(signal.SIGKILL)
    assert os.path.exists(epm.sock)  # the socket file stays behind: connecting fails
    p, init = _run(rune, cid, make_bundle, pal_v3, epm.sock)
    assert (init["fd"], init["addr"]) == ("-1", "0")
    assert errors(p.stderr) == []
    epm.start()  # a new epm: the old entries' descriptors died with the old one
    assert _ids(epm) == []
