"""epm's pool of pre-created enclaves for PAL v3 runtimes (issue 17): epm holds each enclave's file descriptor
and hands it to the rune that picks the entry. The upstream facts and the hand-over protocol are described in
:mod:`inclavare.enclave.epm.enclave` (rune's side); this is epm's side and a producer.

* Pool type ``enclave-cache-pool`` (upstream's name), added to the pools epm serves (:func:`with_enclave_pool`).
  An entry is a Cache whose ``options`` is an ``Enclave`` (fd, nr, layout); it has no data (no sourcePath).
* The side socket (``<[grpc] address>.fd``, SOCK_SEQPACKET, 0600, owned like the gRPC socket; the peer must be
  root or epm's user) takes one line per connection:
  ``PUT enclave-cache-pool ID`` with one descriptor (SCM_RIGHTS): held as *pending* for ``PENDING_TTL`` seconds,
  until a SaveCache of that ID adopts it; ``TAKE enclave-cache-pool ID``: the descriptor of an entry picked within
  ``CLAIM_TTL`` seconds is sent back and epm closes its copy. Answers: ``OK`` or ``ERR <reason>``.
* SaveCache checks the Enclave (the layout rules of :func:`~inclavare.enclave.epm.enclave.check_layout`, the
  descriptor's kind and size) and records epm's descriptor number in ``Enclave.fd`` (as upstream, the fd "in the
  holding process"). An entry's ``subType`` says which PAL it is for (rune's PickCache asks for its PAL's key).
  PickCache consumes the row and moves the descriptor to *claimed*; a descriptor that is no longer the file it
  was (fstat device/inode) is stale: its row is dropped and the next ready entry of the subtype is picked (a
  pick of a named ID finds nothing). DeleteCache closes it.
* Descriptors live in memory only (as upstream's maps): rows of this pool found at start-up are stale and deleted.

Left: a size bound per PAL, refilling the pool automatically (the producer is :func:`fill`, run by hand or by a
deployment), and SGX pre-creation (no /dev/sgx_enclave here: :func:`fill` makes memfd enclaves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import stat
import struct
import threading
import time

from inclavare.enclave.epm import client
from inclavare.enclave.epm import enclave as ee
from inclavare.enclave.epm.helper import recv_fds
from inclavare.services.epm.config import Config
from inclavare.services.epm.errors import EpmError
from inclavare.services.epm.pool import Pools
from inclavare.services.epm.store import CacheRecord, Store, check_id

PENDING_TTL = 30.0
CLAIM_TTL = 10.0
MAX_HELD = 4096
MAX_CONNECTIONS = 16


def with_enclave_pool(config: Config) -> Config:
    """``config`` serving the enclave pool too."""
    if ee.POOL_TYPE in config.pools:
        return config
    return dataclasses.replace(config, pools=(*config.pools, ee.POOL_TYPE))


@dataclasses.dataclass
class Held:
    """A descriptor epm holds, with the identity it had when received (to spot a stale one)."""

    fd: int
    dev: int
    ino: int
    deadline: float = 0.0

    @classmethod
    def of(cls, fd: int) -> Held:
        st = os.fstat(fd)
        return cls(fd, st.st_dev, st.st_ino)

    def fresh(self) -> bool:
        try:
            st = os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


class Keeper:
    """The descriptors: pending (PUT, not yet saved), held (saved entries), claimed (picked, not yet taken)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, Held] = {}
        self.held: dict[str, Held] = {}
        self.claimed: dict[str, Held] = {}

    def reap(self) -> None:
        now = time.monotonic()
        with self.lock:
            for table in (self.pending, self.claimed):
                for cid in [c for c, h in table.items() if h.deadline <= now]:
                    table.pop(cid).close()

    def count(self) -> int:
        return len(self.pending) + len(self.held) + len(self.claimed)

    def put(self, cid: str, fd: int) -> None:
        """A producer's descriptor for entry ``cid`` (ours now, closed on any refusal)."""
        self.reap()
        try:
            held = Held.of(fd)
        except OSError as e:
            os.close(fd)
            raise EpmError(f"enclave {cid}: descriptor unusable ({e.strerror})") from None
        held.deadline = time.monotonic() + PENDING_TTL
        with self.lock:
            if cid in self.pending or cid in self.held or cid in self.claimed or self.count() >= MAX_HELD:
                held.close()
                raise EpmError(f"enclave {cid}: a descriptor is already held for it, or epm holds {MAX_HELD}",
                               "ALREADY_EXISTS")
            self.pending[cid] = held

    def adopt(self, cid: str) -> Held:
        """The pending descriptor of ``cid``, for a SaveCache of it."""
        self.reap()
        with self.lock:
            held = self.pending.pop(cid, None)
        if held is None:
            raise EpmError(f"cache {ee.POOL_TYPE}/{cid}: no enclave descriptor was handed over for it (PUT it on "
                           "the fd socket first)", "FAILED_PRECONDITION")
        return held

    def keep(self, cid: str, held: Held) -> None:
        with self.lock:
            self.held[cid] = held

    def claim(self, cid: str) -> Held | None:
        """Move a picked entry's descriptor to claimed; None if epm holds none or it is stale (dropped)."""
        self.reap()
        with self.lock:
            held = self.held.pop(cid, None)
            if held is None:
                return None
            if not held.fresh():
                held.fd = -1  # the number no longer names that file: not ours to close (it may be reused)
                return None
            held.deadline = time.monotonic() + CLAIM_TTL
            self.claimed[cid] = held
            return held

    def take(self, cid: str) -> Held | None:
        self.reap()
        with self.lock:
            return self.claimed.pop(cid, None)

    def drop(self, cid: str) -> None:
        with self.lock:
            held = self.held.pop(cid, None) or self.pending.pop(cid, None)
        if held is not None:
            held.close()

    def close(self) -> None:
        with self.lock:
            for table in (self.pending, self.held, self.claimed):
                for held in table.values():
                    held.close()
                table.clear()


class EnclavePools(Pools):
    """:class:`Pools` whose ``enclave-cache-pool`` entries carry an enclave descriptor held by ``keeper``."""

    def __init__(self, config: Config, store: Store, keeper: Keeper | None = None) -> None:
        super().__init__(with_enclave_pool(config), store)
        self.keeper = keeper or Keeper()
        self._enclave_lock = threading.Lock()
        self.purged = self._purge_stale()

    def _purge_stale(self) -> int:
        """Rows of the enclave pool left by an earlier epm: their descriptors died with it."""
        gone = 0
        while rows := self.store.list(ee.POOL_TYPE, "", 1000):
            for rec in rows:
                with contextlib.suppress(EpmError):
                    self.store.delete(ee.POOL_TYPE, rec.id)
                    gone += 1
        return gone

    def close(self) -> None:
        self.keeper.close()
        super().close()

    def save(self, rec: CacheRecord, source_path: str = "") -> CacheRecord:
        if rec.type != ee.POOL_TYPE:
            return super().save(rec, source_path)
        check_id(rec.id)
        if source_path or rec.save_path:
            raise EpmError(f"cache {rec.type}/{rec.id}: an enclave entry has no data (no sourcePath/savePath)")
        from google.protobuf import any_pb2

        from inclavare.enclave.epm.proto import epm_pb2 as pb

        opts = any_pb2.Any()
        enclave = pb.Enclave()
        try:
            opts.ParseFromString(rec.options)
            if opts.type_url != ee.ENCLAVE_TYPE_URL:
                raise ValueError(opts.type_url)
            enclave.ParseFromString(opts.value)
        except Exception:  # noqa: BLE001 -- DecodeError, or not an Enclave
            raise EpmError(f"cache {rec.type}/{rec.id}: options must be a v1alpha1.Enclave") from None
        with self._enclave_lock:
            held = self.keeper.adopt(rec.id)
            try:
                try:
                    segments = ee.segments_of(enclave)
                    ee.check_fd(held.fd, segments)
                except ee.EpmEnclaveError as e:
                    raise EpmError(f"cache {rec.type}/{rec.id}: {e}") from None
                opts.Pack(ee.fill_enclave(enclave, held.fd, segments))
                stored = super().save(dataclasses.replace(rec, options=opts.SerializeToString()))
            except BaseException:
                held.close()
                raise
            self.keeper.keep(rec.id, held)
        return stored

    def pick(self, ctype: str, cid: str = "", subtype: str = "") -> CacheRecord:
        if ctype != ee.POOL_TYPE:
            return super().pick(ctype, cid, subtype)
        with self._enclave_lock:
            while True:  # each stale entry picked is consumed: this ends when the subtype has no ready entry
                rec = super().pick(ctype, cid, subtype)
                if self.keeper.claim(rec.id) is not None:
                    return rec
                if cid:
                    raise EpmError(f"cache {ctype}/{rec.id}: stale (epm no longer holds its enclave descriptor); "
                                   "dropped", "NOT_FOUND")

    def delete(self, ctype: str, cid: str, subtype: str = "") -> None:
        super().delete(ctype, cid, subtype)
        if ctype == ee.POOL_TYPE:
            self.keeper.drop(cid)


class FdServer:
    """The side socket of :class:`Keeper` (see the module docstring), served by one thread."""

    def __init__(self, config: Config, keeper: Keeper) -> None:
        self.keeper = keeper
        self.path = ee.fd_socket_path(config.address)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if not stat.S_ISSOCK(st.st_mode):
                raise EpmError(f"epm fd socket {self.path}: exists and is not a socket", "FAILED_PRECONDITION")
            os.unlink(self.path)  # epm's gRPC socket is bound already: no other epm serves this address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o077)
        try:
            self.sock.bind(self.path)
            os.chmod(self.path, 0o600)
            if (config.uid, config.gid) != (-1, -1):
                os.chown(self.path, config.uid, config.gid)
            self.sock.listen(64)
        except OSError as e:
            self.sock.close()
            raise EpmError(f"epm fd socket {self.path}: {e.strerror}", "FAILED_PRECONDITION") from None
        finally:
            os.umask(old)
        self.allowed_uids = {0, os.geteuid(), config.uid} - {-1}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="epm-fd", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _serve(self) -> None:
        self.sock.settimeout(1.0)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                self.keeper.reap()
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                with conn, contextlib.suppress(OSError):
                    conn.send(b"ERR epm fd socket: too many connections")
                continue
            threading.Thread(target=self._handle, args=(conn,), name="epm-fd-conn", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            with conn:
                conn.settimeout(ee.DEFAULT_TIMEOUT)
                try:
                    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
                    data, fds, flags = recv_fds(conn, ee.MAX_LINE, 1)
                except OSError:
                    return
                owned, fds = fds, []
                try:
                    reply, out = self._answer(uid, data, owned, flags)  # owns the received descriptors
                except EpmError as e:
                    reply, out = f"ERR {str(e).splitlines()[0][:300]}", -1
                with contextlib.suppress(OSError):
                    if out >= 0:
                        socket.send_fds(conn, [reply.encode()], [out])
                    else:
                        conn.send(reply.encode())
                if out >= 0:
                    os.close(out)  # sent (or the client is gone): epm's copy goes either way
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._slots.release()

    def _answer(self, uid: int, data: bytes, fds: list[int], flags: int) -> tuple[str, int]:
        """("OK", descriptor to send or -1); takes ownership of ``fds`` (closing what it does not keep)."""
        try:
            if uid not in self.allowed_uids:
                raise EpmError(f"uid {uid} may not use epm's fd socket", "PERMISSION_DENIED")
            if flags & socket.MSG_CTRUNC:
                raise EpmError("more than one descriptor sent")
            words = data.decode("ascii", errors="replace").split()
            if len(words) != 3 or words[1] != ee.POOL_TYPE:
                raise EpmError(f"expected 'PUT|TAKE {ee.POOL_TYPE} ID', got {data[:80]!r}")
            verb, cid = words[0], check_id(words[2])
            if verb == "PUT":
                if len(fds) != 1:
                    raise EpmError(f"PUT {cid}: expected exactly one descriptor, got {len(fds)}")
                self.keeper.put(cid, fds.pop())  # the keeper owns it now, and closes it if it refuses
                return "OK", -1
            if verb == "TAKE":
                if fds:
                    raise EpmError(f"TAKE {cid}: sent descriptors")
                held = self.keeper.take(cid)
                if held is None:
                    raise EpmError(f"TAKE {cid}: not picked (PickCache it first), or the claim expired", "NOT_FOUND")
                fd, held.fd = held.fd, -1  # the handler sends it and closes epm's copy
                return "OK", fd
            raise EpmError(f"unknown request {verb!r}")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)


# ---- a producer: pre-create enclaves for a PAL and save them ----


def fill(address: str, pal_path: str, count: int = 1, *, data_pages: int = 3, base: int = ee.DEFAULT_BASE,
         timeout: float = 10.0) -> list[str]:
    """Pre-create ``count`` memfd enclaves for the PAL at ``pal_path`` and put them in the epm at ``address``
    (PUT the descriptor, SaveCache, SaveFinalCache), each with the PAL's key as its ``subType``; their IDs. Each
    header page holds ``inclavare-epm-enclave <ID>`` so a PAL can tell which one it received."""
    import grpc
    from google.protobuf import any_pb2

    from inclavare.enclave.epm.proto import epm_pb2 as pb
    from inclavare.enclave.epm.proto import epm_pb2_grpc as pb_grpc

    key = ee.pal_key(pal_path)
    ids = []
    with grpc.insecure_channel("unix:" + address) as ch:
        stub = pb_grpc.EnclavePoolManagerStub(ch)  # type: ignore[no-untyped-call]
        for _ in range(count):
            cid = ee.new_cache_id()
            fd, segments = ee.create_memfd_enclave(ee.HEADER_MAGIC + b" " + cid.encode() + b"\0", data_pages, base)
            try:
                ee.fd_request(ee.fd_socket_path(address), f"PUT {ee.POOL_TYPE} {cid}", fd, timeout)
            finally:
                os.close(fd)
            opts = any_pb2.Any()
            opts.Pack(ee.fill_enclave(pb.Enclave(), -1, segments))
            cache = pb.Cache(type=ee.POOL_TYPE, subType=key, ID=cid,
                             size=sum(s.size for s in segments), created=int(time.time()), options=opts)
            stub.SaveCache(pb.SaveCacheRequest(cache=cache), timeout=timeout)
            stub.SaveFinalCache(pb.SaveCacheRequest(cache=pb.Cache(type=ee.POOL_TYPE, subType=key, ID=cid)),
                                timeout=timeout)
            ids.append(cid)
    return ids


def main(argv: list[str] | None = None) -> int:
    """``python -m inclavare.services.epm.enclave_pool --pal PATH [--count N] [--socket S]``: :func:`fill`, then
    one JSON line ``{"ids": [...]}``; a failure is one line on stderr, exit 1."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="epm-enclave-fill", description="Pre-create PAL v3 enclaves into epm's pool.")
    p.add_argument("--pal", required=True, help="the PAL v3 shared object the enclaves are for")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--socket", default=client.socket_path(),
                   help=f"epm's gRPC socket (default ${client.SOCKET_ENV} or {client.DEFAULT_SOCKET})")
    args = p.parse_args(argv)
    try:
        ids = fill(args.socket, args.pal, args.count)
    except Exception as e:  # noqa: BLE001 -- grpc.RpcError, EpmEnclaveError, OSError: one line
        detail = e.details() if hasattr(e, "details") else str(e)
        sys.stderr.write(f"epm-enclave-fill: {' '.join(str(detail).split())[:300]}\n")
        return 1
    print(json.dumps({"ids": ids}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
