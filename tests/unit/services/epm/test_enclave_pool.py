"""epm's PAL v3 enclave pool (services/epm/enclave_pool.py) with rune's client (enclave/epm/enclave.py), in one
process over real sockets: a producer's enclave reaches the client as a live descriptor mapped at its address,
the entry is consumed, and stale descriptors, missing hand-overs, bad layouts and epm restarts fail closed."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from inclavare.enclave.epm import enclave as ee
from inclavare.enclave.epm.enclave import EpmEnclaveError
from inclavare.enclave.epm.proto import epm_pb2 as pb
from inclavare.enclave.epm.proto import epm_pb2_grpc as pb_grpc
from inclavare.services.epm import enclave_pool as ep
from inclavare.services.epm.config import Config
from inclavare.services.epm.errors import EpmError
from inclavare.services.epm.server import serve
from inclavare.services.epm.store import CacheRecord, Store

BASE = 0x3200_0000_0000  # apart from the producer's default and the other tests' bases


@dataclass
class Epm:
    cfg: Config
    store: Store
    pools: ep.EnclavePools
    server: Any
    fds: ep.FdServer
    pal: str

    @property
    def address(self) -> str:
        return self.cfg.address

    def stub(self) -> Any:
        return pb_grpc.EnclavePoolManagerStub(grpc.insecure_channel("unix:" + self.address))  # type: ignore[no-untyped-call]

    def ids(self) -> list[str]:
        return [c.ID for c in self.stub().ListCache(pb.ListCacheRequest(type=ee.POOL_TYPE), timeout=5).caches]

    stopped: bool = False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.fds.close()
        self.server.stop(None).wait()
        self.pools.close()
        self.store.close()


def _start(top: str) -> Epm:
    cfg = ep.with_enclave_pool(Config(root=f"{top}/root", db_path=f"{top}/db/epm.db", address=f"{top}/run/epm.sock"))
    store = Store(cfg.db_path)
    pools = ep.EnclavePools(cfg, store)
    server = serve(cfg, pools)
    pal = f"{top}/pal.so"
    if not os.path.exists(pal):
        with open(pal, "wb") as f:
            f.write(b"a PAL v3 stand-in: only its digest matters here")
    return Epm(cfg, store, pools, server, ep.FdServer(cfg, pools.keeper), pal)


@pytest.fixture
def epm() -> Iterator[Epm]:
    top = tempfile.mkdtemp(prefix="epm-", dir="/tmp")  # unix socket paths must stay short
    e = _start(top)
    try:
        yield e
    finally:
        e.stop()
        shutil.rmtree(top, ignore_errors=True)


def _open_fds_of(ino: int) -> list[int]:
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:inclavare-enclave") and \
                    os.stat(f"/proc/self/fd/{name}").st_ino == ino:
                out.append(int(name))
        except OSError:
            pass
    return out


def _release(h: ee.Handover) -> None:
    ee.unmap(h.segments)
    os.close(h.fd)


def test_a_filled_enclave_reaches_rune_mapped_at_its_address_and_is_consumed(epm):
    (cid,) = ep.fill(epm.address, epm.pal, 1, base=BASE)
    key = ee.pal_key(epm.pal)
    cache = epm.stub().GetCache(pb.GetCacheRequest(type=ee.POOL_TYPE, ID=cid), timeout=5).cache
    assert cache.subType == key  # the entry's PAL: its subType (upstream's way), not a prefix of its ID
    with pytest.raises(grpc.RpcError) as err:
        epm.stub().GetCache(pb.GetCacheRequest(type=ee.POOL_TYPE, subType="another PAL", ID=cid), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    enclave = pb.Enclave()
    cache.options.Unpack(enclave)
    held = epm.pools.keeper.held[cid]
    assert enclave.fd == held.fd and enclave.nr == 2 and enclave.layout[0].addr == BASE  # the fd in epm
    h = ee.acquire(epm.pal, epm.address, isolate=False)
    try:
        assert (h.cache_id, h.addr, h.kind) == (cid, BASE, "memfd")
        assert ee.fd_target(h.fd).startswith("/memfd:inclavare-enclave")
        assert os.fstat(h.fd).st_ino == held.ino  # the very file the producer made
        assert fcntl.fcntl(h.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # not leaked into what rune execs
        assert ctypes.string_at(BASE, len(ee.HEADER_MAGIC) + 1 + len(cid)) == ee.HEADER_MAGIC + b" " + cid.encode()
        # epm (the same process here) closes its copy right after sending it: then one owner is left
        deadline = time.monotonic() + 10
        while _open_fds_of(held.ino) != [h.fd] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _open_fds_of(held.ino) == [h.fd]
    finally:
        _release(h)
    assert epm.ids() == []  # consumed
    assert epm.pools.keeper.count() == 0
    with pytest.raises(EpmEnclaveError) as e:
        ee.acquire(epm.pal, epm.address, isolate=False)
    assert e.value.unavailable and "no pooled enclave" in str(e.value)


def test_entries_are_per_pal(epm, tmp_path):
    other = tmp_path / "other.so"
    other.write_bytes(b"another PAL")
    ep.fill(epm.address, str(other), 1, base=BASE)
    with pytest.raises(EpmEnclaveError, match="no pooled enclave"):
        ee.acquire(epm.pal, epm.address, isolate=False)
    assert len(epm.ids()) == 1  # the other PAL's entry is untouched
    h = ee.acquire(str(other), epm.address, isolate=False)
    _release(h)


def test_a_stale_descriptor_is_never_handed_out(epm):
    (cid,) = ep.fill(epm.address, epm.pal, 1, base=BASE)
    held = epm.pools.keeper.held[cid]
    os.close(held.fd)  # epm's descriptor goes away behind its back (the number may be reused)
    stand_in = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(EpmEnclaveError, match="no pooled enclave"):
            ee.acquire(epm.pal, epm.address, isolate=False)  # the pick is refused as stale; nothing else to pick
        assert os.fstat(stand_in)  # epm did not close a number that is no longer its own
    finally:
        os.close(stand_in)
    assert epm.ids() == [] and cid not in epm.pools.keeper.held


def test_a_stale_entry_is_skipped_for_the_next_one_of_the_same_pal(epm):
    first, second = ep.fill(epm.address, epm.pal, 2, base=BASE)
    os.close(epm.pools.keeper.held[first].fd)  # the older entry's descriptor is gone
    h = ee.acquire(epm.pal, epm.address, isolate=False)
    try:
        assert h.cache_id == second
    finally:
        _release(h)
    assert epm.ids() == []  # the stale one was consumed on the way


def test_a_layout_that_cannot_be_mapped_is_not_used_and_the_entry_is_gone(epm):
    ep.fill(epm.address, epm.pal, 1, base=BASE)
    blocker = os.memfd_create("blocker")
    os.ftruncate(blocker, ee.PAGE)
    ee.map_layout(blocker, "sgx", [ee.Segment(BASE, ee.PAGE)])  # occupy the base in this process
    os.close(blocker)
    try:
        with pytest.raises(EpmEnclaveError, match="in use") as e:
            ee.acquire(epm.pal, epm.address, isolate=False)
        assert not e.value.unavailable
    finally:
        ee.unmap([ee.Segment(BASE, ee.PAGE)])
    assert epm.ids() == []


def _save(epm: Epm, cid: str, segments: list[ee.Segment], nr: int | None = None) -> None:
    enclave = ee.fill_enclave(pb.Enclave(), -1, segments)
    if nr is not None:
        enclave.nr = nr
    cache = pb.Cache(type=ee.POOL_TYPE, ID=cid)
    cache.options.Pack(enclave)
    epm.stub().SaveCache(pb.SaveCacheRequest(cache=cache), timeout=5)


def test_save_needs_the_descriptor_first_and_a_layout_that_fits_it(epm):
    fd, segs = ee.create_memfd_enclave(b"x", 1, BASE)
    try:
        with pytest.raises(grpc.RpcError) as e:
            _save(epm, "k/1", segs)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "PUT" in e.value.details()
        for cid, layout, nr, why in [
            ("k/2", [ee.Segment(BASE, 4 * ee.PAGE)], None, "spans"),
            ("k/3", segs, 5, "nr is 5"),
        ]:
            ee.fd_request(ee.fd_socket_path(epm.address), f"PUT {ee.POOL_TYPE} {cid}", fd)
            with pytest.raises(grpc.RpcError) as e:
                _save(epm, cid, layout, nr)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in e.value.details()
        assert epm.pools.keeper.count() == 0  # refused hand-overs are closed
        ee.fd_request(ee.fd_socket_path(epm.address), f"PUT {ee.POOL_TYPE} k/4", fd)
        with pytest.raises(EpmEnclaveError, match="already held"):
            ee.fd_request(ee.fd_socket_path(epm.address), f"PUT {ee.POOL_TYPE} k/4", fd)
        _save(epm, "k/4", segs)
        epm.stub().DeleteCache(pb.DeleteCacheRequest(type=ee.POOL_TYPE, ID="k/4"), timeout=5)
        assert epm.pools.keeper.count() == 0
    finally:
        os.close(fd)


def test_the_fd_socket_refuses_bad_requests(epm):
    path = ee.fd_socket_path(epm.address)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    for line, why in [("TAKE enclave-cache-pool nope", "not picked"), ("PUT enclave-cache-pool x", "exactly one"),
                      ("GRAB enclave-cache-pool x", "unknown request"), ("TAKE other-pool x", "expected")]:
        with pytest.raises(EpmEnclaveError, match=why):
            ee.fd_request(path, line)
    r, w = os.pipe()
    try:
        with pytest.raises(EpmEnclaveError, match="sent descriptors"):
            ee.fd_request(path, "TAKE enclave-cache-pool x", r)
    finally:
        os.close(r)
        os.close(w)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:  # two descriptors: truncated, refused
        s.connect(path)
        socket.send_fds(s, [b"PUT enclave-cache-pool y"], [0, 1])
        assert s.recv(1024).startswith(b"ERR")
    assert epm.pools.keeper.count() == 0


def test_a_picked_but_unclaimed_descriptor_expires(epm, monkeypatch):
    (cid,) = ep.fill(epm.address, epm.pal, 1, base=BASE)
    picked = epm.stub().PickCache(pb.PickCacheRequest(type=ee.POOL_TYPE, filters={"ID": cid}), timeout=5).caches
    assert [c.ID for c in picked] == [cid]
    held = epm.pools.keeper.claimed[cid]
    held.deadline = 0  # as if CLAIM_TTL had passed
    with pytest.raises(EpmEnclaveError, match="not picked"):
        ee.fd_request(ee.fd_socket_path(epm.address), f"TAKE {ee.POOL_TYPE} {cid}")
    assert held.fd == -1 and epm.pools.keeper.count() == 0


def test_entries_do_not_survive_an_epm_restart(epm):
    ep.fill(epm.address, epm.pal, 2, base=BASE)
    top = os.path.dirname(os.path.dirname(epm.address))
    epm.stop()
    again = _start(top)
    try:
        assert again.pools.purged == 2 and again.ids() == []
        with pytest.raises(EpmError, match="no final cache"):
            again.pools.pick(ee.POOL_TYPE)
    finally:
        again.stop()


def test_other_pools_are_untouched(epm):
    epm.pools.save(CacheRecord(type="enclave-cache", id="plain"))
    epm.pools.finalize("enclave-cache", "plain")
    assert epm.pools.pick("enclave-cache").id == "plain"


def test_the_fill_cli_prints_the_ids_or_one_line(epm, capsys):
    assert ep.main(["--pal", epm.pal, "--count", "2", "--socket", epm.address]) == 0
    ids = json.loads(capsys.readouterr().out)["ids"]
    assert sorted(ids) == sorted(epm.ids()) and len(ids) == 2
    assert ep.main(["--pal", epm.pal, "--socket", epm.address + ".nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("epm-enclave-fill: ") and err.count("\n") == 1
