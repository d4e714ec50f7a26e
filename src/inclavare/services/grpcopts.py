"""The C-core options the services' gRPC servers (verdictd's client API and key provider, epm) share: message
caps and the deadlines that keep a stalled client from holding a worker.

grpcio reads a unary call's request message inside a worker thread of the server's fixed pool, so a client that
opens a call and never sends its message holds that worker until the call ends; a handful of such calls would
starve the pool (and, on the client API, before authentication runs). Nothing in grpcio times that read out, so
every connection is given a maximum age: after ``connection_age`` seconds the server sends GOAWAY (well-behaved
clients move to a new connection transparently), and ``io_timeout`` seconds later the connection is closed,
cancelling what is still open on it, which frees the worker. ``io_timeout`` also bounds the TLS/HTTP2 handshake.
"""

from __future__ import annotations

from inclavare.errors import InclavareError

IO_TIMEOUT = 30.0
CONNECTION_AGE = 300.0


class GrpcOptionsError(InclavareError):
    """A gRPC server option is unusable; the message names it."""


def server_options(max_message: int, *, io_timeout: float = IO_TIMEOUT,
                   connection_age: float = CONNECTION_AGE) -> list[tuple[str, int]]:
    """``grpc.server`` options: messages at most ``max_message`` bytes, the handshake deadline, the connection age
    and its grace (see the module docstring); GrpcOptionsError if a time is not positive."""
    for name, value in (("io_timeout", io_timeout), ("connection_age", connection_age)):
        if not value > 0:
            raise GrpcOptionsError(f"gRPC server: {name} {value!r}: expected a positive number of seconds")
    return [("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message),
            ("grpc.server_handshake_timeout_ms", max(1, int(io_timeout * 1000))),
            ("grpc.max_connection_age_ms", max(1, int(connection_age * 1000))),
            ("grpc.max_connection_age_grace_ms", max(1, int(io_timeout * 1000))),
            ("grpc.so_reuseport", 0)]
