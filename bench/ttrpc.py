#!/usr/bin/env python3
"""ttrpc unary round trip (the shim's wire), against floors measured in the same run.

(a) ours: TtrpcClient -> TtrpcServer over a unix socket, Task/Connect (a real message each way), sequential.
(b) Go server: the same client -> containerd's own ttrpc server (a private containerd; an unknown service, so
    Go's ttrpc decodes the request and answers UNIMPLEMENTED without any handler work). Needs root and
    containerd; skipped otherwise or with --no-containerd.
(c) floor: a 10-byte ping-pong between two Python threads over a unix socket (what any threaded Python server
    pays for a wake-up each way).
(d) throughput: --threads callers sharing one client connection, calls/s.

usage: bench/ttrpc.py [--calls N] [--threads N] [--no-containerd] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from google.protobuf import empty_pb2  # noqa: E402

from inclavare.shim.proto.task import shim_pb2  # noqa: E402
from inclavare.shim.ttrpc import CallContext, TtrpcClient, TtrpcError, TtrpcServer  # noqa: E402

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


def bench_ours(path: str, calls: int, threads: int) -> tuple[list[float], float]:
    with TtrpcServer() as srv:
        srv.register(TASK, "Connect", shim_pb2.ConnectRequest, connect)
        srv.serve(path)
        with TtrpcClient(path) as c:
            req = shim_pb2.ConnectRequest(id="bench")
            lat = timed(lambda: c.call(TASK, "Connect", req, shim_pb2.ConnectResponse), calls)
            per = max(1, calls // threads)
            t = time.perf_counter()
            ts = [threading.Thread(target=lambda: [c.call(TASK, "Connect", req, shim_pb2.ConnectResponse)
                                                   for _ in range(per)]) for _ in range(threads)]
            for x in ts:
                x.start()
            for x in ts:
                x.join()
            rate = per * threads / (time.perf_counter() - t)
    return lat, rate


def bench_go(calls: int, base: str) -> list[float] | None:
    from inclavare.testing.containerd import ContainerdError, PrivateContainerd

    c = PrivateContainerd(os.path.join(base, "ctrd"), namespace="bench-ttrpc")
    try:
        c.start()
    except ContainerdError as e:
        print(f"(b) skipped: {e}", file=sys.stderr)
        return None
    try:
        with TtrpcClient(c.address + ".ttrpc") as cl:
            def one() -> None:
                try:
                    cl.call("bench.v1.Nope", "X", empty_pb2.Empty(), empty_pb2.Empty)
                except TtrpcError:
                    pass
            return timed(one, calls)
    finally:
        c.purge()


def bench_floor(path: str, calls: int) -> list[float]:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def echo() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)
    threading.Thread(target=echo, daemon=True).start()
    cl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cl.connect(path)

    def one() -> None:
        cl.sendall(b"0123456789")
        cl.recv(64)
    try:
        return timed(one, calls)
    finally:
        cl.close()
        srv.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--no-containerd", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-ttrpc-")
    try:
        ours, rate = bench_ours(os.path.join(base, "ours.sock"), a.calls, a.threads)
        floor = bench_floor(os.path.join(base, "floor.sock"), a.calls)
        go = None
        if not a.no_containerd and os.geteuid() == 0 and shutil.which("containerd"):
            go = bench_go(a.calls, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = [("(a) ours: client -> TtrpcServer, Task/Connect", ours)]
    if go is not None:
        rows.append(("(b) client -> containerd's Go ttrpc server (UNIMPLEMENTED)", go))
    rows.append(("(c) floor: 10-byte ping-pong between Python threads", floor))
    f_med = summary(floor)[0]
    if a.markdown:
        print("| round trip | median | p99 | vs floor |\n|---|---|---|---|")
    for name, us in rows:
        med, p99 = summary(us)
        if a.markdown:
            print(f"| {name} | {med:.1f} µs | {p99:.1f} µs | {med / f_med:.2f}x |")
        else:
            print(f"{name:62s} median {med:7.1f} µs  p99 {p99:7.1f} µs  {med / f_med:5.2f}x floor")
    tail = f"(d) {a.threads} threads on one connection: {rate:,.0f} calls/s ({a.calls} calls each measurement)"
    print(("\n" if a.markdown else "") + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
