#!/usr/bin/env python3
"""ttrpc unary round trip (the shim's wire), against floors measured in the same run.

Every server runs in its own process, as the shim does beside containerd; each is called by a lean client
(one pre-encoded request frame, blocking send and receive: what the server costs) and by our TtrpcClient.
(a) ours: TtrpcServer, Task/Connect (a real message each way), registered ``inline``.
(b) ours, registered normally (the reading role is handed to another thread before the handler runs).
(c) containerd's own Go ttrpc server (a private containerd; an unknown service, so Go's ttrpc decodes the
    request and answers UNIMPLEMENTED without handler work). Needs root and containerd; else skipped, or
    with --no-containerd.
(d) floor: a 10-byte ping-pong with a Python echo process over a unix socket.
(e) throughput: --threads callers sharing one TtrpcClient connection against (b), calls/s.

usage: bench/ttrpc.py [--calls N] [--threads N] [--no-containerd] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from google.protobuf import empty_pb2  # noqa: E402

from inclavare.formats.ttrpc import TYPE_REQUEST, FrameDecoder, encode_frame  # noqa: E402
from inclavare.shim.proto.task import shim_pb2  # noqa: E402
from inclavare.shim.proto.ttrpc import request_pb2  # noqa: E402
from inclavare.shim.ttrpc import CallContext, TtrpcError, TtrpcServer  # noqa: E402
from inclavare.shim.ttrpc_client import TtrpcClient  # noqa: E402

TASK = "containerd.task.v2.Task"


def connect(ctx: CallContext, req: shim_pb2.ConnectRequest) -> shim_pb2.ConnectResponse:
    return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=1, version=req.id)


def timed(fn, calls: int) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(min(200, calls)):
        fn()
    out = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def summary(us: list[float]) -> tuple[float, float]:
    us = sorted(us)
    return statistics.median(us), us[int(len(us) * 0.99) - 1]


def serve(kind: str, path: str) -> None:
    """The server side, run as ``bench/ttrpc.py --serve KIND PATH`` in its own process."""
    if kind == "echo":
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        lsock.listen(1)
        print("ready", flush=True)
        conn, _ = lsock.accept()
        while data := conn.recv(64):
            conn.sendall(data)
        return
    srv = TtrpcServer()
    srv.register(TASK, "Connect", shim_pb2.ConnectRequest, connect, inline=kind == "inline")
    srv.serve(path)
    print("ready", flush=True)
    sys.stdin.read()
    srv.close()


class Server:
    def __init__(self, kind: str, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()


def lean(path: str, service: str, method: str, payload: bytes, calls: int) -> list[float]:
    """A blocking client: one pre-encoded request frame, read until one response frame."""
    frame = encode_frame(1, TYPE_REQUEST, request_pb2.Request(service=service, method=method,
                                                              payload=payload).SerializeToString())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)

    def one() -> None:
        s.sendall(frame)
        dec = FrameDecoder()
        while not dec.feed(s.recv(65536)):
            pass
    try:
        return timed(one, calls)
    finally:
        s.close()


def ours(path: str, calls: int, threads: int = 0) -> tuple[list[float], list[float], float]:
    req = shim_pb2.ConnectRequest(id="bench")
    lean_us = lean(path, TASK, "Connect", req.SerializeToString(), calls)
    with TtrpcClient(path) as c:
        lat = timed(lambda: c.call(TASK, "Connect", req, shim_pb2.ConnectResponse), calls)
        rate = 0.0
        if threads:
            per = max(1, calls // threads)
            t = time.perf_counter()
            ts = [threading.Thread(target=lambda: [c.call(TASK, "Connect", req, shim_pb2.ConnectResponse)
                                                   for _ in range(per)]) for _ in range(threads)]
            for x in ts:
                x.start()
            for x in ts:
                x.join()
            rate = per * threads / (time.perf_counter() - t)
    return lean_us, lat, rate


def go(calls: int, base: str) -> tuple[list[float], list[float]] | None:
    from inclavare.testing.containerd import ContainerdError, PrivateContainerd

    c = PrivateContainerd(os.path.join(base, "ctrd"), namespace="bench-ttrpc")
    try:
        c.start()
    except ContainerdError as e:
        print(f"(c) skipped: {e}", file=sys.stderr)
        return None
    try:
        path = c.address + ".ttrpc"
        lean_us = lean(path, "bench.v1.Nope", "X", b"", calls)
        with TtrpcClient(path) as cl:
            def one() -> None:
                try:
                    cl.call("bench.v1.Nope", "X", empty_pb2.Empty(), empty_pb2.Empty)
                except TtrpcError:
                    pass
            return lean_us, timed(one, calls)
    finally:
        c.purge()


def bench_floor(path: str, calls: int) -> list[float]:
    """Round trips of 10 bytes through the echo process."""
    cl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cl.connect(path)

    def one() -> None:
        cl.sendall(b"0123456789")
        cl.recv(64)
    try:
        return timed(one, calls)
    finally:
        cl.close()


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--no-containerd", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-ttrpc-")
    rows: list[tuple[str, list[float], list[float] | None]] = []
    rate = 0.0
    try:
        for kind, name in (("inline", "(a) ours, inline handler (Task/Connect)"),
                           ("handover", "(b) ours, handed-over handler (Task/Connect)"),
                           ("echo", "(d) floor: 10-byte ping-pong, Python process")):
            path = os.path.join(base, kind + ".sock")
            srv = Server(kind, path)
            try:
                if kind == "echo":
                    rows.append((name, bench_floor(path, a.calls), None))
                else:
                    lean_us, client_us, r = ours(path, a.calls, a.threads if kind == "handover" else 0)
                    rows.insert(len(rows), (name, lean_us, client_us))
                    rate = r or rate
            finally:
                srv.close()
        if not a.no_containerd and os.geteuid() == 0 and shutil.which("containerd"):
            g = go(a.calls, base)
            if g is not None:
                rows.insert(2, ("(c) containerd's Go ttrpc server (UNIMPLEMENTED)", g[0], g[1]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    f_med = summary(rows[-1][1])[0]
    if a.markdown:
        print("| server | lean client: median / p99 | vs floor | TtrpcClient: median / p99 |\n|---|---|---|---|")
    for name, lean_us, client_us in rows:
        med, p99 = summary(lean_us)
        cl = "-" if client_us is None else "{:.1f} / {:.1f} µs".format(*summary(client_us))
        if a.markdown:
            print(f"| {name} | {med:.1f} / {p99:.1f} µs | {med / f_med:.2f}x | {cl} |")
        else:
            print(f"{name:50s} lean {med:6.1f} µs (p99 {p99:7.1f})  {med / f_med:5.2f}x floor   client {cl}")
    tail = f"(e) {a.threads} threads on one connection: {rate:,.0f} calls/s ({a.calls} calls each measurement)"
    print(("\n" if a.markdown else "") + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
