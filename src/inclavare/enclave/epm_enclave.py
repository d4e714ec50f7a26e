"""PAL v3's enclave hand-over from epm (issue 17): rune takes a pre-created enclave out of epm's pool and passes
its file descriptor and base address to ``pal_init`` (``pal_attr_v3_t.fd`` / ``.addr``).

Upstream facts this follows (inclavare-containers, read for this port; no code copied):

* rune/libenclave/internal/runtime/pal/pal_linux.go ``enclaveRuntimePal.Init``: only for a v3 PAL, and unless the
  runtime args contain ``no-epm``, rune asks epm for an enclave (``epm.GetEnclave``); with one it maps the layout
  (``epm.SgxMmap``) and calls pal_init with ``fd`` = the received descriptor and ``addr`` = ``layout[0].addr``;
  without one, ``fd`` = -1 and ``addr`` = 0 (api_linux_v3.go ``palInitV3`` fills ``pal_attr_v3_t``).
* rune/libenclave/epm/epm.go ``GetCache``: pool type ``"enclave-cache-pool"`` (epm/pkg/epm/enclave-cache-pool/
  types/types.go ``EnclavePoolType``), socket ``/var/run/epm/epm.sock``; the ``Enclave`` arrives as the Cache's
  ``options`` (a ``google.protobuf.Any``) and its ``fd`` field is replaced by the descriptor received in rune's
  own process. rune/libenclave/epm/cmsg.go ``sendFd``/``recvFd``: the descriptor crosses processes as
  SCM_RIGHTS over a unix socket beside epm's (``/var/run/epm/<ID>``); epm closes its copy once sent
  (epm/pkg/epm/enclave-cache-pool/enclavepool/enclave-cache.go ``GetCache``: ``SendFd`` then ``syscall.Close``).
  epm keeps the descriptors in memory only (``EnclavePoolPreStore`` / ``EnclavePoolStore`` maps), so they do not
  survive an epm restart.
* rune/libenclave/epm/mmap.go ``SgxMmap``: each of the ``nr`` ``Enclavelayout`` segments is mapped MAP_FIXED at
  its ``addr`` with its ``prot`` (read/write/execute, share/private) from the enclave fd.
  rune/libenclave/epm/parsemaps.go ``GetParseMaps`` + procmaps.go: the producer derives ``nr`` and the layout
  from its own /proc/PID/maps lines that name the enclave device, sorted by address (so ``layout[0].addr`` is
  the base).
* liberpal-skeleton-v3.c ``pal_init``: ``attr->fd != -1`` means "use this enclave": ``enclave_fd = attr->fd``,
  ``secs.base = attr->addr``, and the enclave is not built again.

How this port differs, and why:

* The descriptor crosses over one side socket epm listens on (:func:`fd_socket_path`, SOCK_SEQPACKET, owner-only)
  instead of a per-request socket rune binds: rune picks the entry with upstream's gRPC ``PickCache`` (which
  consumes it, as issue 17 asks), then claims the descriptor of that ID with ``TAKE``; a producer hands one over
  with ``PUT`` before its ``SaveCache``. No listener races, and epm never connects to a path a client chose.
* The entry is chosen per PAL: IDs are ``<pal key>/<random>`` (:func:`pal_key`: the PAL file's SHA-256), found
  with ``ListCache`` (this project's PickCache request has no subType). Upstream hard-codes one subtype.
* Fail closed. rune uses the descriptor only if it is of the expected kind (a sealed memfd named
  :data:`MEMFD_NAME`, or an SGX enclave device), the layout is sane (``nr`` segments, page aligned, ascending,
  not overlapping, inside the memfd) and every segment maps at its recorded address without replacing anything
  (MAP_FIXED_NOREPLACE; upstream's MAP_FIXED would silently clobber rune's own memory). Otherwise the
  descriptor is closed and pal_init gets -1 / 0, as without epm. Any epm failure (no socket, epm killed, empty
  pool, a timeout) also means -1 / 0: the container starts the slow way.
* A used enclave is not put back into the pool (upstream's ``SavePreCache``/``SaveEnclave`` recycle it after
  pal_destroy): it would hand one tenant's enclave state to the next. Pools are filled by a producer instead.

On this machine there is no /dev/sgx_enclave: the pre-created "enclave" is what :func:`create_memfd_enclave`
gives, a sealed memfd holding a header page (naming the PAL key and the cache ID) and data pages, mapped by the
producer to derive the layout as upstream does. It is measured by nothing and protects nothing; it exercises the
hand-over (the PAL sees a live descriptor of the right kind, mapped at ``addr`` with the producer's content). The
SGX-device branch of :func:`check_fd` is written from upstream's facts and untested here.

The gRPC messages come from a private descriptor pool built here from this project's epm.proto field numbers:
the enclave layer may not import services/epm's generated modules (the integrator may switch this to the shared
client once the proto moves down).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import secrets
import socket
import stat
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any

POOL_TYPE = "enclave-cache-pool"  # upstream's EnclavePoolType
DEFAULT_SOCKET = "/var/run/epm/epm.sock"  # upstream rune's hard-coded address
SOCKET_ENV = "INCLAVARE_EPM_SOCKET"  # rune's own environment: another epm socket ("" disables epm)
NO_EPM_ARG = "no-epm"  # upstream: this word in the runtime args keeps rune away from epm
FD_SOCKET_SUFFIX = ".fd"
ENCLAVE_TYPE_URL = "type.googleapis.com/v1alpha1.Enclave"
MEMFD_NAME = "inclavare-enclave"
SGX_DEVICE_PATHS = ("/dev/sgx_enclave", "/dev/sgx/enclave")  # upstream procmaps.go (plus its in-pool names)
HEADER_MAGIC = b"inclavare-epm-enclave"
PAGE = os.sysconf("SC_PAGE_SIZE")
MAX_SEGMENTS = 64
MAX_ENCLAVE = 1 << 36
USER_TOP = 0x7FFF_FFFF_F000  # x86-64 user address space (4-level paging)
DEFAULT_BASE = 0x3000_0000_0000  # far from the heap (0x55..) and the top-down mmap area (0x7f..)
DEFAULT_TIMEOUT = 2.0
MAX_LINE = 1024
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED_NOREPLACE = 0x01, 0x02, 0x100000


class EpmEnclaveError(Exception):
    """Why a pooled enclave was not used (one line); rune then passes fd -1 / addr 0. ``unavailable``: epm is
    absent, down or has no entry (the ordinary cold start), rather than an entry that was refused."""

    def __init__(self, message: str, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class Segment:
    """One ``Enclavelayout``: ``size`` bytes at ``addr`` with upstream's ``EnclavePerms``."""

    addr: int
    size: int
    read: bool = True
    write: bool = False
    execute: bool = False
    share: bool = True
    private: bool = False

    @property
    def prot(self) -> int:
        return (PROT_READ if self.read else 0) | (PROT_WRITE if self.write else 0) | (PROT_EXEC if self.execute else 0)


@dataclass
class Handover:
    """A pooled enclave in rune's process: ``fd`` (close-on-exec) mapped per ``segments``; ``addr`` is the base."""

    fd: int
    addr: int
    cache_id: str
    kind: str
    segments: tuple[Segment, ...]


def fd_socket_path(address: str) -> str:
    """The side socket where epm hands enclave descriptors over, beside its gRPC socket ``address``."""
    return address + FD_SOCKET_SUFFIX


def epm_socket(args: str = "") -> str:
    """The epm socket rune uses: ``$INCLAVARE_EPM_SOCKET`` or upstream's path; "" when disabled (``no-epm``)."""
    if NO_EPM_ARG in args.replace(",", " ").split():
        return ""
    return os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)


def pal_key(path: str) -> str:
    """What ties a pooled enclave to a PAL: the first 32 hex digits of its file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:32]


def new_cache_id(key: str) -> str:
    return f"{key}/{secrets.token_hex(8)}"


# ---- layout checks (shared with epm, which checks the same at SaveCache) ----


def check_layout(nr: int, segments: Sequence[Segment]) -> None:
    """EpmEnclaveError unless ``segments`` is a usable layout of ``nr`` segments: 1..64, page aligned, ascending,
    not overlapping, inside the user address space, shared xor private, within 64 GiB from the first."""
    if nr != len(segments):
        raise EpmEnclaveError(f"layout: nr is {nr} but {len(segments)} segments are listed")
    if not 1 <= nr <= MAX_SEGMENTS:
        raise EpmEnclaveError(f"layout: {nr} segments (expected 1..{MAX_SEGMENTS})")
    end = 0
    for i, s in enumerate(segments):
        if s.addr <= 0 or s.size <= 0 or s.addr % PAGE or s.size % PAGE:
            raise EpmEnclaveError(f"layout[{i}]: addr {s.addr:#x} size {s.size:#x} not positive and page aligned")
        if s.addr < end:
            raise EpmEnclaveError(f"layout[{i}]: addr {s.addr:#x} overlaps or precedes the segment before it")
        end = s.addr + s.size
        if end > USER_TOP:
            raise EpmEnclaveError(f"layout[{i}]: ends at {end:#x}, beyond the user address space")
        if s.share == s.private:
            raise EpmEnclaveError(f"layout[{i}]: must be either shared or private")
    if end - segments[0].addr > MAX_ENCLAVE:
        raise EpmEnclaveError(f"layout: spans {end - segments[0].addr:#x} bytes, more than {MAX_ENCLAVE:#x}")


def fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        raise EpmEnclaveError(f"enclave fd {fd}: {e.strerror}") from None


def check_fd(fd: int, segments: Sequence[Segment]) -> str:
    """The kind of enclave descriptor ``fd`` is ("memfd" or "sgx"), if it can back ``segments``; else
    EpmEnclaveError. A memfd must be ours (its name), sealed against resizing, and hold the whole layout."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise EpmEnclaveError(f"enclave fd {fd}: {e.strerror}") from None
    target = fd_target(fd)
    if stat.S_ISREG(st.st_mode):
        if not target.startswith(f"/memfd:{MEMFD_NAME}"):
            raise EpmEnclaveError(f"enclave fd {fd}: {target} is not an enclave memfd")
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0
        if seals & _SEALS != _SEALS:
            raise EpmEnclaveError(f"enclave fd {fd}: the memfd is not sealed against resizing")
        span = segments[-1].addr + segments[-1].size - segments[0].addr if segments else 0
        if span > st.st_size:
            raise EpmEnclaveError(f"enclave fd {fd}: the layout spans {span} bytes, the memfd holds {st.st_size}")
        return "memfd"
    if stat.S_ISCHR(st.st_mode) and target in SGX_DEVICE_PATHS:
        return "sgx"
    raise EpmEnclaveError(f"enclave fd {fd}: {target} is neither an enclave memfd nor an SGX enclave device")


# ---- mapping (ctypes: Python's mmap module cannot map at a given address) ----


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _mmap_at(addr: int, size: int, prot: int, shared: bool, fd: int, offset: int) -> None:
    flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_FIXED_NOREPLACE
    got = _libc().mmap(addr, size, prot, flags, fd, offset)
    if got is None or got == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        reason = "the range is in use" if err == errno.EEXIST else os.strerror(err)
        raise EpmEnclaveError(f"cannot map the enclave at {addr:#x} (+{size:#x}): {reason}")
    if got != addr:  # a kernel without MAP_FIXED_NOREPLACE took the address as a hint
        _libc().munmap(got, size)
        raise EpmEnclaveError(f"cannot map the enclave at {addr:#x}: the kernel placed it at {got:#x}")


def unmap(segments: Sequence[Segment]) -> None:
    for s in segments:
        _libc().munmap(s.addr, s.size)


def map_layout(fd: int, kind: str, segments: Sequence[Segment]) -> None:
    """Map every segment at its address (a memfd at its offset from the base; an SGX device at 0, as upstream);
    nothing already mapped is replaced, and on failure what was mapped is unmapped again."""
    base = segments[0].addr
    done: list[Segment] = []
    try:
        for s in segments:
            _mmap_at(s.addr, s.size, s.prot, s.share, fd, s.addr - base if kind == "memfd" else 0)
            done.append(s)
    except BaseException:
        unmap(done)
        raise


# ---- protobuf messages (a private pool with epm.proto's names and numbers) ----


@functools.cache
def messages() -> dict[str, Any]:
    """Message classes for the calls rune makes: Cache, Enclave, Enclavelayout, EnclavePerms, ListCache*,
    PickCache*, Healthz*."""
    from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="inclavare/enclave/epm_enclave.proto", package="v1alpha1",
                                             syntax="proto3", dependency=["google/protobuf/any.proto"])
    f = descriptor_pb2.FieldDescriptorProto
    string, int64, int32, boolean, message = f.TYPE_STRING, f.TYPE_INT64, f.TYPE_INT32, f.TYPE_BOOL, f.TYPE_MESSAGE
    spec: dict[str, list[tuple[str, int, int, str]]] = {
        "Cache": [("type", 1, string, ""), ("subType", 2, string, ""), ("ID", 3, string, ""),
                  ("savePath", 4, string, ""), ("parent", 5, message, ".v1alpha1.Cache"), ("size", 6, int64, ""),
                  ("created", 7, int64, ""), ("options", 8, message, ".google.protobuf.Any")],
        "PickCacheRequest": [("type", 1, string, ""), ("ID", 2, string, "")],
        "PickCacheResponse": [("cache", 1, message, ".v1alpha1.Cache")],
        "ListCacheRequest": [("type", 1, string, ""), ("lastCacheID", 2, string, ""), ("limit", 3, int32, "")],
        "ListCacheResponse": [("caches", 1, message, ".v1alpha1.Cache")],
        "Enclave": [("fd", 1, int64, ""), ("nr", 2, int64, ""), ("layout", 3, message, ".v1alpha1.Enclavelayout")],
        "Enclavelayout": [("addr", 1, int64, ""), ("size", 2, int64, ""),
                          ("prot", 3, message, ".v1alpha1.EnclavePerms")],
        "EnclavePerms": [("read", 1, boolean, ""), ("write", 2, boolean, ""), ("execute", 3, boolean, ""),
                         ("share", 4, boolean, ""), ("private", 5, boolean, "")],
    }
    repeated = {("ListCacheResponse", "caches"), ("Enclave", "layout")}
    for name, fields in spec.items():
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            label = f.LABEL_REPEATED if (name, fname) in repeated else f.LABEL_OPTIONAL
            m.field.add(name=fname, number=number, type=ftype, label=label, type_name=type_name or None)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"v1alpha1.{name}")) for name in spec}


def segments_of(enclave: Any) -> tuple[Segment, ...]:
    """The layout of an ``Enclave`` message (either pool's class), checked with its ``nr``."""
    segs = tuple(Segment(int(lay.addr), int(lay.size), lay.prot.read, lay.prot.write, lay.prot.execute,
                         lay.prot.share, lay.prot.private) for lay in enclave.layout)
    check_layout(int(enclave.nr), segs)
    return segs


def fill_enclave(enclave: Any, fd: int, segments: Sequence[Segment]) -> Any:
    """Set an ``Enclave`` message (either pool's class) to ``fd``, ``nr`` and ``segments``; returns it."""
    enclave.fd = fd
    enclave.nr = len(segments)
    del enclave.layout[:]
    for s in segments:
        lay = enclave.layout.add(addr=s.addr, size=s.size)
        lay.prot.read, lay.prot.write, lay.prot.execute = s.read, s.write, s.execute
        lay.prot.share, lay.prot.private = s.share, s.private
    return enclave


# ---- the side socket's messages: one line, at most one descriptor ----


def fd_request(path: str, line: str, fd: int = -1, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Send ``line`` (and ``fd`` if >= 0) to epm's side socket ``path``; epm's answer: -1 for OK, or the
    descriptor it sent (close-on-exec). EpmEnclaveError with epm's reason otherwise."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            if fd >= 0:
                socket.send_fds(s, [line.encode()], [fd])
            else:
                s.sendall(line.encode())
            data, fds, flags, _ = socket.recv_fds(s, MAX_LINE, 1, socket.MSG_CMSG_CLOEXEC)
        except OSError as e:
            raise EpmEnclaveError(f"epm fd socket {path}: {e.strerror or e}") from None
    text = data.decode(errors="replace").strip()
    if flags & socket.MSG_CTRUNC or text != "OK" or len(fds) > 1:
        for extra in fds:
            os.close(extra)
        raise EpmEnclaveError(f"epm fd socket {path}: {text or 'no answer'}"[:300])
    return fds[0] if fds else -1


# ---- rune's side: take a pooled enclave for a PAL ----


@contextlib.contextmanager
def _channel(address: str) -> Iterator[Any]:
    import grpc

    ch = grpc.insecure_channel("unix:" + address, options=[("grpc.enable_http_proxy", 0)])
    try:
        yield ch
    finally:
        ch.close()


def _pick(address: str, key: str, timeout: float) -> Any:
    """PickCache one final entry whose ID starts with ``key/``; None when the pool has none."""
    import grpc

    m = messages()
    with _channel(address) as ch:
        list_call = ch.unary_unary("/v1alpha1.EnclavePoolManager/ListCache",
                                   request_serializer=m["ListCacheRequest"].SerializeToString,
                                   response_deserializer=m["ListCacheResponse"].FromString)
        pick_call = ch.unary_unary("/v1alpha1.EnclavePoolManager/PickCache",
                                   request_serializer=m["PickCacheRequest"].SerializeToString,
                                   response_deserializer=m["PickCacheResponse"].FromString)
        prefix = key + "/"
        after = prefix
        for _ in range(4):  # pages of candidates: saved-but-not-final ones and lost races are skipped
            page = list_call(m["ListCacheRequest"](type=POOL_TYPE, lastCacheID=after, limit=16), timeout=timeout)
            ids = [c.ID for c in page.caches if c.ID.startswith(prefix)]
            for cid in ids:
                try:
                    return pick_call(m["PickCacheRequest"](type=POOL_TYPE, ID=cid), timeout=timeout).cache
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                        raise
            if len(ids) < len(page.caches) or len(page.caches) < 16:
                return None
            after = ids[-1]
    return None


def _take(address: str, key: str, timeout: float) -> tuple[Any, int]:
    """PickCache + TAKE: (the picked Cache, its descriptor); EpmEnclaveError when there is none."""
    try:
        cache = _pick(address, key, timeout)
    except Exception as e:  # noqa: BLE001 -- grpc.RpcError and friends: epm is down or refused
        detail = e.details() if hasattr(e, "details") else str(e)
        raise EpmEnclaveError(f"epm {address}: {' '.join(str(detail).split())[:200]}", unavailable=True) from None
    if cache is None:
        raise EpmEnclaveError(f"epm {address}: no pooled enclave for this PAL ({key})", unavailable=True)
    fd = fd_request(fd_socket_path(address), f"TAKE {POOL_TYPE} {cache.ID}", timeout=timeout)
    if fd < 0:
        raise EpmEnclaveError(f"epm {address}: sent no descriptor for {cache.ID}")
    return cache, fd


def _take_in_child(address: str, key: str, timeout: float) -> tuple[Any, int]:
    """:func:`_take` in a forked child that sends the result back (SCM_RIGHTS) and exits. gRPC's threads outlive
    its channels, and rune's process must stay single-threaded: it unshares namespaces (a user namespace needs a
    single thread; no thread can be created after unshare(CLONE_NEWPID)) and forks the container's init."""
    try:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    except OSError as e:
        raise EpmEnclaveError(f"epm client: {e.strerror}", unavailable=True) from None
    try:
        pid = os.fork()
    except OSError as e:
        parent.close()
        child.close()
        raise EpmEnclaveError(f"epm client: cannot fork ({e.strerror})", unavailable=True) from None
    if pid == 0:  # pragma: no cover -- runs in the child
        try:
            parent.close()
            try:
                cache, fd = _take(address, key, timeout)
                socket.send_fds(child, [b"C" + cache.SerializeToString()], [fd])
            except EpmEnclaveError as e:
                child.send((b"U" if e.unavailable else b"R") + str(e).encode()[:MAX_LINE])
            except BaseException as e:  # noqa: BLE001
                child.send(b"R" + f"epm client: {type(e).__name__}: {e}".encode()[:MAX_LINE])
        finally:
            os._exit(0)
    child.close()
    try:
        parent.settimeout(4 * timeout)
        try:
            data, fds, flags, _ = socket.recv_fds(parent, 1 << 16, 1, socket.MSG_CMSG_CLOEXEC)
        except OSError as e:
            raise EpmEnclaveError(f"epm client: {e.strerror or e}", unavailable=True) from None
    finally:
        parent.close()
        with contextlib.suppress(OSError):
            os.kill(pid, 9)  # done or stuck: either way it goes
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    if data[:1] == b"C" and len(fds) == 1 and not flags & socket.MSG_CTRUNC:
        try:
            return messages()["Cache"].FromString(data[1:]), fds[0]
        except Exception:  # noqa: BLE001 -- DecodeError
            pass
    for fd in fds:
        os.close(fd)
    if data[:1] in (b"U", b"R"):
        raise EpmEnclaveError(data[1:].decode(errors="replace"), unavailable=data[:1] == b"U")
    raise EpmEnclaveError("epm client: no usable answer from the helper process", unavailable=True)


def _answers(address: str) -> bool:
    """Whether something accepts connections on the unix socket (no gRPC needed to tell a dead epm)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(DEFAULT_TIMEOUT)
        try:
            s.connect(address)
            return True
        except OSError:
            return False


def acquire(pal_path: str, address: str, timeout: float = DEFAULT_TIMEOUT, *, isolate: bool = True) -> Handover:
    """Take one pooled enclave for the PAL at ``pal_path`` from the epm at ``address`` and map it here.
    EpmEnclaveError (one line) when there is none or it is not usable; a picked entry is consumed either way.
    ``isolate``: talk gRPC from a forked child (what rune needs, see :func:`_take_in_child`); False keeps it in
    this process (for a process that already runs gRPC, where forking would not be safe)."""
    if not address or not os.path.exists(address):
        raise EpmEnclaveError(f"no epm socket at {address or '(disabled)'}", unavailable=True)
    try:
        key = pal_key(pal_path)
    except OSError as e:
        raise EpmEnclaveError(f"{pal_path}: {e.strerror}") from None
    if not _answers(address):
        raise EpmEnclaveError(f"epm {address}: not answering", unavailable=True)
    cache, fd = _take_in_child(address, key, timeout) if isolate else _take(address, key, timeout)
    try:
        if cache.options.type_url != ENCLAVE_TYPE_URL:
            raise EpmEnclaveError(f"cache {cache.ID}: options are {cache.options.type_url!r}, not an Enclave")
        enclave = messages()["Enclave"]()
        try:
            enclave.ParseFromString(cache.options.value)
        except Exception:  # noqa: BLE001 -- protobuf's DecodeError
            raise EpmEnclaveError(f"cache {cache.ID}: options do not parse as an Enclave") from None
        segments = segments_of(enclave)
        kind = check_fd(fd, segments)
        map_layout(fd, kind, segments)
    except BaseException:
        os.close(fd)
        raise
    return Handover(fd, segments[0].addr, cache.ID, kind, segments)


# ---- a producer's side: pre-create an "enclave" (no SGX here: a sealed memfd) ----


def _maps_of(ino: int) -> list[Segment]:
    """Our /proc/self/maps lines backed by the file with inode ``ino``, as segments (upstream's GetParseMaps)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 6 or int(parts[4]) != ino or MEMFD_NAME not in parts[5]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            perms = parts[1]
            out.append(Segment(lo, hi - lo, perms[0] == "r", perms[1] == "w", perms[2] == "x",
                               perms[3] == "s", perms[3] == "p"))
    return sorted(out, key=lambda s: s.addr)


def create_memfd_enclave(header: bytes, data_pages: int = 3, base: int = DEFAULT_BASE) -> tuple[int, list[Segment]]:
    """A pre-created "enclave" for hosts without SGX: a memfd (close-on-exec, sealed against resizing) with
    ``header`` in a read-only page and ``data_pages`` writable pages, mapped here at ``base`` to read its layout
    back from /proc/self/maps (as upstream's producer does), then unmapped. Returns (fd, layout)."""
    size = PAGE * (1 + data_pages)
    if len(header) > PAGE or data_pages < 0:
        raise EpmEnclaveError("memfd enclave: header larger than a page, or negative data pages")
    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, header, 0)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | fcntl.F_SEAL_SEAL)
        want = [Segment(base, PAGE, True, False, False)]
        if data_pages:
            want.append(Segment(base + PAGE, PAGE * data_pages, True, True, False))
        map_layout(fd, "memfd", want)
        try:
            got = _maps_of(os.fstat(fd).st_ino)
        finally:
            unmap(want)
        check_layout(len(got), got)
        return fd, got
    except BaseException:
        os.close(fd)
        raise
