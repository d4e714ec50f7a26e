"""rune's side of PAL v3's enclave hand-over (enclave/epm/enclave.py): the layout rules, the descriptor-kind checks,
mapping at the recorded address without replacing anything, the socket setting (the one client's), the socket
trust check, and the descriptor coming back from the forked helper."""

from __future__ import annotations

import ctypes
import fcntl
import os
from collections.abc import Iterator

import pytest

from inclavare.enclave.epm import client
from inclavare.enclave.epm import enclave as ee
from inclavare.enclave.epm.enclave import EpmEnclaveError, Segment

P = ee.PAGE
BASE = 0x3100_0000_0000  # apart from the producer's default base, which other tests map


@pytest.fixture
def memfd() -> Iterator[tuple[int, list[Segment]]]:
    fd, segs = ee.create_memfd_enclave(b"header text", 2, BASE)
    yield fd, segs
    os.close(fd)


def test_create_memfd_enclave_reads_its_layout_back_from_the_maps_and_unmaps(memfd):
    fd, segs = memfd
    assert segs == [Segment(BASE, P, True, False, False, True, False),
                    Segment(BASE + P, 2 * P, True, True, False, True, False)]
    assert ee.check_fd(fd, segs) == "memfd"
    assert ee.fd_target(fd).startswith("/memfd:inclavare-enclave")
    with open("/proc/self/maps") as f:
        assert not any(line.startswith(f"{BASE:x}-") for line in f)  # the producer keeps no mapping
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_map_layout_maps_the_content_at_the_address_and_refuses_an_occupied_range(memfd):
    fd, segs = memfd
    ee.map_layout(fd, "memfd", segs)
    try:
        assert ctypes.string_at(BASE, 11) == b"header text"
        with pytest.raises(EpmEnclaveError, match="range is in use"):
            ee.map_layout(fd, "memfd", segs)
    finally:
        ee.unmap(segs)
    # a failure part-way unmaps what it mapped: the first segment is free again afterwards
    blocker = Segment(BASE + P, P)
    ee.map_layout(fd, "memfd", [Segment(BASE, 2 * P)])  # occupies both pages
    ee.unmap([Segment(BASE, P)])  # leaves only the second page mapped
    try:
        with pytest.raises(EpmEnclaveError, match="in use"):
            ee.map_layout(fd, "memfd", segs)
        ee.map_layout(fd, "memfd", [Segment(BASE, P)])  # would fail had the first attempt left it mapped
        ee.unmap([Segment(BASE, P)])
    finally:
        ee.unmap([blocker])


@pytest.mark.parametrize(("nr", "segs", "why"), [
    (2, [Segment(BASE, P)], "nr is 2"),
    (0, [], "0 segments"),
    (1, [Segment(BASE + 1, P)], "page aligned"),
    (1, [Segment(BASE, P + 7)], "page aligned"),
    (1, [Segment(BASE, 0)], "page aligned"),
    (2, [Segment(BASE, 2 * P), Segment(BASE + P, P)], "overlaps"),
    (2, [Segment(BASE + P, P), Segment(BASE, P)], "overlaps or precedes"),
    (1, [Segment(0x7FFF_FFFF_E000, 2 * P)], "beyond the user address space"),
    (1, [Segment(BASE, P, share=True, private=True)], "shared or private"),
    (1, [Segment(BASE, P, share=False, private=False)], "shared or private"),
    (1, [Segment(BASE, 1 << 37)], "more than"),
])
def test_check_layout_refuses(nr, segs, why):
    with pytest.raises(EpmEnclaveError, match=why):
        ee.check_layout(nr, segs)


def test_check_fd_refuses_other_files_unsealed_memfds_and_layouts_beyond_the_memfd(tmp_path, memfd):
    fd, segs = memfd
    with pytest.raises(EpmEnclaveError, match="spans"):
        ee.check_fd(fd, [Segment(BASE, 4 * P)])
    plain = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    os.ftruncate(plain, 4 * P)
    other = os.memfd_create("something-else", os.MFD_ALLOW_SEALING)
    unsealed = os.memfd_create(ee.MEMFD_NAME, os.MFD_ALLOW_SEALING)
    try:
        with pytest.raises(EpmEnclaveError, match="not an enclave memfd|neither"):
            ee.check_fd(plain, segs)
        os.ftruncate(other, 4 * P)
        fcntl.fcntl(other, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
        with pytest.raises(EpmEnclaveError, match="not an enclave memfd"):
            ee.check_fd(other, segs)
        os.ftruncate(unsealed, 4 * P)
        with pytest.raises(EpmEnclaveError, match="not sealed"):
            ee.check_fd(unsealed, segs)
    finally:
        for x in (plain, other, unsealed):
            os.close(x)
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(EpmEnclaveError, match="neither"):
            ee.check_fd(r, segs)
    finally:
        os.close(r)
    with pytest.raises(EpmEnclaveError, match="Bad file descriptor"):
        ee.check_fd(r, segs)  # closed: a stale number


def test_epm_socket_default_env_and_no_epm(monkeypatch):
    monkeypatch.delenv(client.SOCKET_ENV, raising=False)
    assert ee.epm_socket("debug") == "/var/run/epm/epm.sock"
    monkeypatch.setenv(client.SOCKET_ENV, "/tmp/x.sock")
    assert ee.epm_socket("log=/l") == "/tmp/x.sock"
    assert ee.epm_socket("debug no-epm") == ""
    assert ee.epm_socket("debug,no-epm") == ""
    assert ee.epm_socket("no-epmx") == "/tmp/x.sock"


def test_acquire_without_an_epm_socket_is_unavailable(tmp_path):
    with pytest.raises(EpmEnclaveError) as e:
        ee.acquire(str(tmp_path / "pal.so"), str(tmp_path / "none.sock"))
    assert e.value.unavailable


def test_pal_key_is_the_content_digest(tmp_path):
    a, b, c = tmp_path / "a.so", tmp_path / "b.so", tmp_path / "c.so"
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    c.write_bytes(b"two")
    assert ee.pal_key(str(a)) == ee.pal_key(str(b)) != ee.pal_key(str(c))
    assert len(ee.pal_key(str(a))) == 32
    assert ee.new_cache_id() != ee.new_cache_id()


def test_the_enclave_message_keeps_the_layout(memfd):
    from inclavare.enclave.epm.proto import epm_pb2 as pb

    fd, segs = memfd
    enclave = pb.Enclave.FromString(ee.fill_enclave(pb.Enclave(), 7, segs).SerializeToString())
    assert ee.segments_of(enclave) == tuple(segs) and enclave.fd == 7


def test_acquire_refuses_an_epm_socket_others_could_use(tmp_path, monkeypatch):
    """The same trust rule as the warm pools': a socket not root's (here: not the trusted uid's) is no pool."""
    import socket

    pal = tmp_path / "pal.so"
    pal.write_bytes(b"pal")
    path = str(tmp_path / "epm.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        s.listen(1)
        os.chmod(path, 0o600)
        monkeypatch.setattr(client, "TRUSTED_UID", os.geteuid() + 1)
        with pytest.raises(EpmEnclaveError, match="not root's") as e:
            ee.acquire(str(pal), path)
        assert e.value.unavailable


HELPER_SCRIPT = r"""
import fcntl, os
from inclavare.enclave.epm.helper import Helper, WithFds

def make():
    fd = os.memfd_create("handed-over")
    os.write(fd, b"from the helper")
    return WithFds(("C", b"payload"), [fd])

helper = Helper.start(make)
assert helper is not None
value, fds = helper.result_with_fds(10)
assert value == ("C", b"payload") and len(fds) == 1, value
assert os.pread(fds[0], 100, 0) == b"from the helper"
assert fcntl.fcntl(fds[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
for fd in fds:
    os.close(fd)
helper = Helper.start(make)
assert helper is not None and helper.result(10) == ("C", b"payload")  # result() closes what came with it
print("ok")
"""


def test_the_helper_hands_back_a_descriptor():
    """From a fresh process, as rune starts it: no gRPC has run in the caller (the helper forked from a process
    where it has is covered by test_epm_pools)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", HELPER_SCRIPT], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr[-2000:]
