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
* The entry is chosen per PAL with upstream's own means: its ``subType`` is the PAL's key (:func:`pal_key`: the
  PAL file's SHA-256), and rune's ``PickCache`` asks for that subType (upstream's rune passes a subtype to its
  GetCache the same way). epm picks the oldest ready entry of it, skipping entries whose descriptor went stale.
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

rune talks to epm through the one client (:mod:`.client`: the socket from ``INCLAVARE_EPM_SOCKET`` or upstream's
default, used only if it is root's and only root may connect; the fd side socket must pass the same check) with
the messages generated from epm.proto, from the forked helper the warm pools use too (:mod:`.helper`: rune's
process must stay single-threaded); the picked descriptor comes back from the helper with SCM_RIGHTS.
"""

from __future__ import annotations

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

from inclavare.enclave.epm import client
from inclavare.enclave.epm.helper import Helper, WithFds, recv_fds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

POOL_TYPE = "enclave-cache-pool"  # upstream's EnclavePoolType
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
    """The epm socket rune uses (:func:`.client.socket_path`); "" when the runtime args say ``no-epm``."""
    if NO_EPM_ARG in args.replace(",", " ").split():
        return ""
    return client.socket_path()


def pal_key(path: str) -> str:
    """What ties a pooled enclave to a PAL: the first 32 hex digits of its file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:32]


def new_cache_id() -> str:
    """A fresh entry ID (the PAL's key is the entry's subType, not part of its ID)."""
    return secrets.token_hex(16)


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


# ---- the Enclave message (epm.proto's v1alpha1.Enclave)


def segments_of(enclave: Any) -> tuple[Segment, ...]:
    """The layout of an ``Enclave`` message, checked with its ``nr``."""
    segs = tuple(Segment(int(lay.addr), int(lay.size), lay.prot.read, lay.prot.write, lay.prot.execute,
                         lay.prot.share, lay.prot.private) for lay in enclave.layout)
    check_layout(int(enclave.nr), segs)
    return segs


def fill_enclave(enclave: Any, fd: int, segments: Sequence[Segment]) -> Any:
    """Set an ``Enclave`` message to ``fd``, ``nr`` and ``segments``; returns it."""
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
            data, fds, flags = recv_fds(s, MAX_LINE, 1)
        except OSError as e:
            raise EpmEnclaveError(f"epm fd socket {path}: {e.strerror or e}") from None
    text = data.decode(errors="replace").strip()
    if flags & socket.MSG_CTRUNC or text != "OK" or len(fds) > 1:
        for extra in fds:
            os.close(extra)
        raise EpmEnclaveError(f"epm fd socket {path}: {text or 'no answer'}"[:300])
    return fds[0] if fds else -1


# ---- rune's side: take a pooled enclave for a PAL ----


def _take(address: str, key: str, timeout: float) -> tuple[Any, int]:
    """PickCache (subType ``key``) + TAKE: (the picked Cache, its descriptor); EpmEnclaveError when there is none."""
    fd_path = fd_socket_path(address)
    if not client.available(fd_path):
        raise EpmEnclaveError(f"epm fd socket {fd_path}: missing, or not root's and owner-only", unavailable=True)
    epm = client.EpmClient.open(address)
    if epm is None:
        raise EpmEnclaveError(f"epm {address}: missing, not root's and owner-only, or no gRPC", unavailable=True)
    with epm:
        cache = epm.pick(POOL_TYPE, key, timeout=timeout)
        if cache is None:
            why = epm.error if epm.down else f"no pooled enclave for this PAL ({key})"
            raise EpmEnclaveError(f"epm {address}: {why}", unavailable=True)
    fd = fd_request(fd_path, f"TAKE {POOL_TYPE} {cache.ID}", timeout=timeout)
    if fd < 0:
        raise EpmEnclaveError(f"epm {address}: sent no descriptor for {cache.ID}")
    return cache, fd


def _take_for_helper(address: str, key: str, timeout: float) -> Any:
    """:func:`_take` in the helper: ``WithFds(("C", serialized Cache), [fd])``, or ("U"|"R", reason) for an
    unavailable / refused entry."""
    try:
        cache, fd = _take(address, key, timeout)
    except EpmEnclaveError as e:
        return ("U" if e.unavailable else "R", str(e))
    except BaseException as e:  # noqa: BLE001 -- reported as a refusal, one line
        return ("R", f"epm client: {type(e).__name__}: {e}")
    return WithFds(("C", cache.SerializeToString()), [fd])


def _take_in_child(address: str, key: str, timeout: float) -> tuple[Any, int]:
    """:func:`_take` in the forked helper (:mod:`.helper`): gRPC's threads must not start in rune's process."""
    from inclavare.enclave.epm.proto import epm_pb2 as pb

    helper = Helper.start(_take_for_helper, address, key, timeout)
    if helper is None:
        raise EpmEnclaveError("epm client: cannot start the helper process", unavailable=True)
    value, fds = helper.result_with_fds(4 * timeout)
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "C" and len(fds) == 1:
        try:
            return pb.Cache.FromString(value[1]), fds[0]
        except Exception:  # noqa: BLE001 -- DecodeError
            pass
    for fd in fds:
        os.close(fd)
    if isinstance(value, tuple) and len(value) == 2 and value[0] in ("U", "R"):
        raise EpmEnclaveError(str(value[1])[:MAX_LINE], unavailable=value[0] == "U")
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
    if not client.available(address):
        raise EpmEnclaveError(f"epm socket {address}: not root's and owner-only", unavailable=True)
    try:
        key = pal_key(pal_path)
    except OSError as e:
        raise EpmEnclaveError(f"{pal_path}: {e.strerror}") from None
    if not _answers(address):
        raise EpmEnclaveError(f"epm {address}: not answering", unavailable=True)
    cache, fd = _take_in_child(address, key, timeout) if isolate else _take(address, key, timeout)
    from inclavare.enclave.epm.proto import epm_pb2 as pb

    try:
        if cache.options.type_url != ENCLAVE_TYPE_URL:
            raise EpmEnclaveError(f"cache {cache.ID}: options are {cache.options.type_url!r}, not an Enclave")
        enclave = pb.Enclave()
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
