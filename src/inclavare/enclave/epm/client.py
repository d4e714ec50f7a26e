"""rune's one epm client (the warm pools and PAL v3's enclave hand-over): GetCache, SaveCache and PickCache over
epm's unix socket.

Used only when the socket exists, is root's and only root may connect (``INCLAVARE_EPM_SOCKET`` overrides
upstream's default ``/var/run/epm/epm.sock``, for tests). Calls have short deadlines. Any failure -- no socket,
a socket others could use, epm down, a refusal, a timeout -- is "no pool": the call returns ``None`` /
``False``, the first such failure of the process is logged at debug, and the caller runs correctly without it.

grpc is imported by :meth:`EpmClient.open`, never at module import (rune's plain path stays light); it starts
threads, so a process that must stay single-threaded (a container's init before its namespaces are set up) talks
to epm from a forked helper (:func:`inclavare.enclave.epm.warm.in_helper`).
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

log = logging.getLogger(__name__)

SOCKET_ENV = "INCLAVARE_EPM_SOCKET"
ROOT_ENV = "INCLAVARE_EPM_ROOT"
DEFAULT_SOCKET = "/var/run/epm/epm.sock"  # upstream's [grpc] address
DEFAULT_ROOT = "/var/local/epm"  # upstream's root
TRUSTED_UID = 0  # epm runs as root; tests that run as another user may change it
CALL_TIMEOUT = 1.0  # seconds per RPC
INCOMING = "incoming"  # under epm's root: where a client puts data for SaveCache to copy in

_said = False


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def root_path() -> str:
    return os.environ.get(ROOT_ENV) or DEFAULT_ROOT


def no_pool(why: str) -> None:
    """Note that the pools are not used (once per process, at debug): epm is optional."""
    global _said
    if not _said:
        _said = True
        log.debug("epm: no pool: %s", why)


def available(path: str | None = None) -> bool:
    """Whether epm's socket (``path``, default :func:`socket_path`) exists, belongs to the trusted user and only
    that user may connect to it (a cheap stat: what the path without epm costs)."""
    path = path or socket_path()
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        no_pool(f"{path} is not a socket")
        return False
    if st.st_uid != TRUSTED_UID or st.st_mode & 0o022:
        # whoever can connect can save records and artifacts that rune would trust: only root may
        no_pool(f"{path} is uid {st.st_uid}'s with mode {stat.S_IMODE(st.st_mode):04o} (must be uid "
                f"{TRUSTED_UID}'s and not writable by group or others)")
        return False
    return True


class EpmClient:
    """One connection to epm. Methods never raise: a failure returns None / False (see the module docstring)."""

    def __init__(self) -> None:
        self.down = False  # a call failed for another reason than "not found": epm is not usable
        self.error = ""  # the last failure, one line (for callers that report it)
        self._channel: Any = None
        self._stub: Any = None
        self._pb: Any = None

    @classmethod
    def open(cls, address: str | None = None) -> EpmClient | None:
        """A client of the epm at ``address`` (default :func:`socket_path`), or None when epm is not there or its
        socket is not trusted (:func:`available`)."""
        address = address or socket_path()
        if not available(address):
            return None
        try:
            import grpc

            from inclavare.enclave.epm.proto import epm_pb2, epm_pb2_grpc
        except ImportError as e:
            no_pool(f"grpc is not installed ({e})")
            return None
        client = cls()
        client._pb = epm_pb2
        try:
            # no wait for "ready": the first call connects (a dead epm fails it at once: UNAVAILABLE)
            client._channel = grpc.insecure_channel("unix:" + address, options=[("grpc.enable_http_proxy", 0)])
        except Exception as e:  # noqa: BLE001 - any failure is "no pool"
            no_pool(f"cannot open a channel to {address} ({type(e).__name__})")
            return None
        client._stub = epm_pb2_grpc.EnclavePoolManagerStub(client._channel)  # type: ignore[no-untyped-call]
        return client

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> EpmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pb(self) -> Any:
        """The generated message module (``epm_pb2``)."""
        return self._pb

    def _call(self, what: str, method: str, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - grpc.RpcError, or anything else: no pool
            code = getattr(e, "code", None)
            name = code().name if callable(code) else type(e).__name__
            details = getattr(e, "details", None)
            detail = " ".join(str(details() if callable(details) else e).split())[:200]
            self.error = f"{what}: {name}: {detail}" if detail else f"{what}: {name}"
            if name != "NOT_FOUND":
                self.down = True
                no_pool(f"{what}: {name}")
            return None

    def get(self, ctype: str, cid: str, subtype: str = "") -> Any:
        """GetCache: the ``v1alpha1.Cache`` (type, ID), or None (absent, or any failure)."""
        reply = self._call(f"GetCache {ctype}/{cid}", "GetCache",
                           self._pb.GetCacheRequest(type=ctype, subType=subtype, ID=cid))
        return reply.cache if reply is not None else None

    def pick(self, ctype: str, subtype: str = "", filters: dict[str, str] | None = None,
             timeout: float = CALL_TIMEOUT) -> Any:
        """PickCache: the picked (consumed) ``v1alpha1.Cache`` of ``subtype``, or None (none ready, or any failure:
        then ``down`` is set)."""
        reply = self._call(f"PickCache {ctype}/{subtype or '*'}", "PickCache",
                           self._pb.PickCacheRequest(type=ctype, subType=subtype, filters=filters or {}), timeout)
        return reply.caches[0] if reply is not None and reply.caches else None

    def save(self, ctype: str, cid: str, subtype: str, options: Any, data: bytes | None = None) -> bool:
        """SaveCache + SaveFinalCache of (type, ID) with ``options`` (a protobuf message, packed in an Any) and,
        when ``data`` is given, that data copied into epm's pool (written first under ``ROOT/incoming``, where
        epm's SaveCache copies it from). Whether the cache is now there (already there counts)."""
        pb = self._pb
        cache = pb.Cache(type=ctype, ID=cid, subType=subtype)
        cache.options.Pack(options)
        source = ""
        try:
            if data is not None:
                source = _stage(data)
                cache.size = len(data)
            req = pb.SaveCacheRequest(cache=cache, sourcePath=source)
            try:
                self._stub.SaveCache(req, timeout=CALL_TIMEOUT * 5)
            except Exception as e:  # noqa: BLE001
                code = getattr(e, "code", None)
                name = code().name if callable(code) else type(e).__name__
                if name == "ALREADY_EXISTS":
                    return True  # another container saved it first
                no_pool(f"SaveCache {ctype}/{cid}: {name}")
                return False
        except OSError as e:
            no_pool(f"SaveCache {ctype}/{cid}: staging the data: {e.strerror}")
            return False
        finally:
            if source:
                try:
                    os.unlink(source)
                except OSError:
                    pass
        return self._call(f"SaveFinalCache {ctype}/{cid}", "SaveFinalCache", pb.SaveCacheRequest(cache=cache)) \
            is not None


def _stage(data: bytes) -> str:
    """Write ``data`` to a new private file under ``ROOT/incoming`` (created 0700); its path."""
    import secrets

    incoming = os.path.join(root_path(), INCOMING)
    try:
        os.mkdir(incoming, 0o700)
    except FileExistsError:
        pass
    path = os.path.join(incoming, f"{os.getpid()}-{secrets.token_hex(8)}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path
