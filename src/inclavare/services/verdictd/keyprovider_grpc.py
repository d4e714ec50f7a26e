"""verdictd's ocicrypt key provider over gRPC (``keyprovider.KeyProviderService``: ``WrapKey``, ``UnWrapKey``).

The JSON inside the messages and the wrapping are :mod:`.keyprovider`'s; this module maps its refusals to
gRPC status codes (``INVALID_ARGUMENT``, ``UNAUTHENTICATED``, ``PERMISSION_DENIED``, ``NOT_FOUND``,
``UNAVAILABLE``) with the one-line reason as the details, and runs the server: on a unix socket (made 0600
once bound; keep it in a private directory) or TCP, TLS optional (a client CA makes it mutual), messages
capped at :data:`MAX_MESSAGE`, a fixed worker pool and at most :data:`MAX_CONCURRENT` calls in flight (more
get ``RESOURCE_EXHAUSTED``).

``WrapKey`` is an owner's operation (it encrypts under the store's keys); serve it on a private unix socket,
or pass ``allow_wrap=False`` for a listener that attested workloads reach.
"""

from __future__ import annotations

import os
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from inclavare.services import grpcopts
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.keyprovider import (
    OP_UNWRAP,
    OP_WRAP,
    KeyProvider,
    KeyProviderError,
    UnwrapRequest,
    WrapRequest,
    decode_input,
    encode_unwrap_output,
    encode_wrap_output,
)
from inclavare.services.verdictd.proto import keyprovider_pb2 as pb
from inclavare.services.verdictd.proto import keyprovider_pb2_grpc as pb_grpc

MAX_MESSAGE = 2 << 20  # a protocol JSON document is at most 1 MiB; protobuf framing on top
MAX_CONCURRENT = 64
DEFAULT_WORKERS = MAX_CONCURRENT  # one per admitted call: a stalled client's call holds its worker (grpcopts.py)

_CODES = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
          "denied": grpc.StatusCode.PERMISSION_DENIED, "not_found": grpc.StatusCode.NOT_FOUND,
          "unavailable": grpc.StatusCode.UNAVAILABLE}


class KeyProviderServicer(pb_grpc.KeyProviderServiceServicer):
    """The two RPCs over one :class:`~.keyprovider.KeyProvider`."""

    def __init__(self, provider: KeyProvider, *, allow_wrap: bool = True) -> None:
        self.provider = provider
        self.allow_wrap = allow_wrap

    def _call(self, request: Any, context: grpc.ServicerContext, op: str) -> pb.keyProviderKeyWrapProtocolOutput:
        try:
            req = decode_input(request.KeyProviderKeyWrapProtocolInput)
            if op == OP_WRAP:
                if not isinstance(req, WrapRequest):
                    raise KeyProviderError("invalid", "WrapKey: the input's op is not 'keywrap'")
                if not self.allow_wrap:
                    raise KeyProviderError("denied", "WrapKey: not served on this listener")
                out = encode_wrap_output(self.provider.wrap(req), self.provider.byte_arrays)
            else:
                if not isinstance(req, UnwrapRequest):
                    raise KeyProviderError("invalid", "UnWrapKey: the input's op is not 'keyunwrap'")
                out = encode_unwrap_output(self.provider.unwrap(req), self.provider.byte_arrays)
        except KeyProviderError as e:
            context.abort(_CODES.get(e.code, grpc.StatusCode.INTERNAL), str(e).splitlines()[0][:300])
        except VerdictdError as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e).splitlines()[0][:300])
        return pb.keyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=out)

    def WrapKey(self, request: Any, context: grpc.ServicerContext) -> pb.keyProviderKeyWrapProtocolOutput:  # noqa: N802
        return self._call(request, context, OP_WRAP)

    def UnWrapKey(self, request: Any, context: grpc.ServicerContext) -> pb.keyProviderKeyWrapProtocolOutput:  # noqa: N802
        return self._call(request, context, OP_UNWRAP)


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read((1 << 20) + 1)
    except OSError as e:
        raise VerdictdError(f"key provider TLS {what} {path}: {e.strerror}") from None
    if len(data) > 1 << 20:
        raise VerdictdError(f"key provider TLS {what} {path}: more than 1 MiB")
    return data


@dataclass
class Listening:
    """A running key provider: the gRPC server, the address it was bound to and the TCP port (0 on a unix
    socket)."""

    server: grpc.Server
    address: str
    port: int

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait()


def serve(provider: KeyProvider, address: str, *, cert: str | None = None, key: str | None = None,
          client_ca: str | None = None, allow_wrap: bool = True, workers: int = DEFAULT_WORKERS,
          max_concurrent: int = MAX_CONCURRENT, io_timeout: float = grpcopts.IO_TIMEOUT,
          connection_age: float = grpcopts.CONNECTION_AGE) -> Listening:
    """Start the key provider on ``address`` (``unix:/path``, a path with ``/``, or ``host:port``; port 0
    picks one). TLS when ``cert`` and ``key`` are given; ``client_ca`` requires client certificates signed
    by it."""
    if not 1 <= workers <= 256 or not workers <= max_concurrent <= 4096:
        raise VerdictdError(f"key provider: workers {workers} / max concurrent {max_concurrent} out of range")
    if (cert is None) != (key is None):
        raise VerdictdError("key provider TLS: give both a certificate and its key, or neither")
    if client_ca is not None and cert is None:
        raise VerdictdError("key provider TLS: a client CA needs the server's certificate and key")
    creds = None
    if cert is not None and key is not None:
        creds = grpc.ssl_server_credentials(
            [(_read_pem(key, "key"), _read_pem(cert, "certificate"))],
            root_certificates=None if client_ca is None else _read_pem(client_ca, "client CA"),
            require_client_auth=client_ca is not None)
    if "/" in address and not address.startswith(("unix:", "unix-abstract:")):
        address = "unix:" + address
    options = grpcopts.server_options(MAX_MESSAGE, io_timeout=io_timeout, connection_age=connection_age)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keyprovider"),
                         options=options, maximum_concurrent_rpcs=max_concurrent)
    servicer = KeyProviderServicer(provider, allow_wrap=allow_wrap)
    pb_grpc.add_KeyProviderServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    sock_path = address[len("unix:"):] if address.startswith("unix:") else None
    try:
        port = server.add_insecure_port(address) if creds is None else server.add_secure_port(address, creds)
    except RuntimeError as e:
        raise VerdictdError(f"key provider: cannot listen on {address}: {e}") from None
    if port == 0 and sock_path is None:
        raise VerdictdError(f"key provider: cannot listen on {address}")
    server.start()
    if sock_path is not None:
        try:
            os.chmod(sock_path, 0o600)
        except OSError as e:
            server.stop(None)
            raise VerdictdError(f"key provider socket {sock_path}: {e.strerror}") from None
    return Listening(server, address, 0 if sock_path is not None else port)
