"""epm's gRPC server: upstream's ``v1alpha1.EnclavePoolManager`` over :class:`~.pool.Pools`, on a unix socket
only its owner can use.

Every refusal ends the call with a gRPC status (the :class:`~.errors.EpmError`'s code: INVALID_ARGUMENT,
NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, PERMISSION_DENIED, RESOURCE_EXHAUSTED, INTERNAL) and the one-line
reason as details. Messages are capped (the config's sizes); connections get verdictd's handshake deadline and
maximum age (services/grpcopts.py) so a stalled client cannot hold a worker; at most
:data:`MAX_CONCURRENT` calls run at once (more get RESOURCE_EXHAUSTED). The socket is bound under umask 077
(never reachable by others, even for an instant) in a directory created 0700, chmod'ed 0600 and, when the
config's ``[grpc] uid``/``gid`` name another owner, chown'ed to it.
"""

from __future__ import annotations

import os
import socket
import stat
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import any_pb2

from inclavare.enclave.epm.proto import epm_pb2 as pb
from inclavare.enclave.epm.proto import epm_pb2_grpc as pb_grpc
from inclavare.services import grpcopts
from inclavare.services.epm.config import Config
from inclavare.services.epm.errors import EpmError
from inclavare.services.epm.pool import Pools
from inclavare.services.epm.store import CacheRecord

WORKERS = 8
MAX_CONCURRENT = 64


def record_from_pb(cache: Any) -> CacheRecord:
    """A :class:`CacheRecord` from a ``v1alpha1.Cache`` (parent and options kept as serialized bytes)."""
    return CacheRecord(type=cache.type, id=cache.ID, subtype=cache.subType, save_path=cache.savePath,
                       parent=cache.parent.SerializeToString() if cache.HasField("parent") else b"",
                       size=cache.size, created=cache.created,
                       options=cache.options.SerializeToString() if cache.HasField("options") else b"")


def record_to_pb(rec: CacheRecord) -> pb.Cache:
    """The ``v1alpha1.Cache`` for a stored record."""
    cache = pb.Cache(type=rec.type, subType=rec.subtype, ID=rec.id, savePath=rec.save_path, size=rec.size,
                     created=rec.created)
    if rec.parent:
        cache.parent.ParseFromString(rec.parent)
    if rec.options:
        opts = any_pb2.Any()
        opts.ParseFromString(rec.options)
        cache.options.CopyFrom(opts)
    return cache


class EnclavePoolManagerServicer(pb_grpc.EnclavePoolManagerServicer):
    """The eight RPCs; each maps an :class:`EpmError` to its status code."""

    def __init__(self, pools: Pools) -> None:
        self.pools = pools

    def _run(self, context: grpc.ServicerContext, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except EpmError as e:
            code = getattr(grpc.StatusCode, e.code, grpc.StatusCode.INTERNAL)
            context.abort(code, str(e).splitlines()[0][:300])
        except OSError as e:
            context.abort(grpc.StatusCode.INTERNAL, f"epm: {e.strerror or e}"[:300])

    def GetCache(self, request: Any, context: grpc.ServicerContext) -> pb.GetCacheResponse:  # noqa: N802
        rec = self._run(context, self.pools.get, request.type, request.ID, request.subType)
        return pb.GetCacheResponse(cache=record_to_pb(rec))

    def PickCache(self, request: Any, context: grpc.ServicerContext) -> pb.PickCacheResponse:  # noqa: N802
        recs = self._run(context, self.pools.pick_matching, request.type, request.subType, dict(request.filters))
        return pb.PickCacheResponse(caches=[record_to_pb(r) for r in recs])

    def SaveCache(self, request: Any, context: grpc.ServicerContext) -> pb.SaveCacheResponse:  # noqa: N802
        if not request.HasField("cache"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "SaveCache: no cache in the request")
        self._run(context, self.pools.save, record_from_pb(request.cache), request.sourcePath)
        return pb.SaveCacheResponse(ok=True)

    def SaveFinalCache(self, request: Any, context: grpc.ServicerContext) -> pb.SaveCacheResponse:  # noqa: N802
        if not request.HasField("cache"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "SaveFinalCache: no cache in the request")
        self._run(context, self.pools.finalize, request.cache.type, request.cache.ID, request.cache.subType)
        return pb.SaveCacheResponse(ok=True)

    def ListCache(self, request: Any, context: grpc.ServicerContext) -> pb.ListCacheResponse:  # noqa: N802
        recs = self._run(context, self.pools.list, request.type, request.lastCacheID, request.limit,
                         request.subType)
        return pb.ListCacheResponse(caches=[record_to_pb(r) for r in recs])

    def DeleteCache(self, request: Any, context: grpc.ServicerContext) -> pb.DeleteCacheResponse:  # noqa: N802
        self._run(context, self.pools.delete, request.type, request.ID, request.subType)
        return pb.DeleteCacheResponse(ok=True)

    def LoadCache(self, request: Any, context: grpc.ServicerContext) -> pb.LoadCacheResponse:  # noqa: N802
        self._run(context, self.pools.load, request.type, request.ID, request.targetPath, request.subType)
        return pb.LoadCacheResponse(ok=True)

    def Healthz(self, request: Any, context: grpc.ServicerContext) -> pb.HealthzResponse:  # noqa: N802
        return pb.HealthzResponse(ok=self._run(context, self.pools.healthy, request.type))


def _answers(path: str) -> bool:
    """Whether something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def serve(config: Config, pools: Pools) -> grpc.Server:
    """Start the server on ``config.address`` (a unix socket path); the started ``grpc.Server``."""
    sock = config.address
    sock_dir = os.path.dirname(sock)
    try:
        os.makedirs(sock_dir, 0o700, exist_ok=True)
        if os.path.lexists(sock):
            if not os.path.islink(sock) and stat.S_ISSOCK(os.stat(sock).st_mode):
                if _answers(sock):
                    raise EpmError(f"epm socket {sock}: another epm is serving it", "FAILED_PRECONDITION")
                os.unlink(sock)  # a socket left by a previous epm
            else:
                raise EpmError(f"epm socket {sock}: exists and is not a socket", "FAILED_PRECONDITION")
    except OSError as e:
        raise EpmError(f"epm socket {sock}: {e.strerror}", "FAILED_PRECONDITION") from None
    options = grpcopts.server_options(config.max_recv_message_size)
    options = [o for o in options if o[0] != "grpc.max_send_message_length"]
    options.append(("grpc.max_send_message_length", config.max_send_message_size))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="epm"),
                         options=options, maximum_concurrent_rpcs=MAX_CONCURRENT)
    pb_grpc.add_EnclavePoolManagerServicer_to_server(  # type: ignore[no-untyped-call]
        EnclavePoolManagerServicer(pools), server)
    old = os.umask(0o077)
    try:
        try:
            server.add_insecure_port("unix:" + sock)
        except RuntimeError as e:
            raise EpmError(f"epm socket {sock}: cannot listen ({e})", "FAILED_PRECONDITION") from None
        server.start()
    finally:
        os.umask(old)
    try:
        os.chmod(sock, 0o600)
        if (config.uid, config.gid) != (-1, -1) and (config.uid, config.gid) != (os.geteuid(), os.getegid()):
            os.chown(sock, config.uid, config.gid)  # upstream's [grpc] uid/gid: who may use the socket
    except OSError as e:
        server.stop(None)
        raise EpmError(f"epm socket {sock}: {e.strerror}", "FAILED_PRECONDITION") from None
    return server
