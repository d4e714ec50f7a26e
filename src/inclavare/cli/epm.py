"""`epm`: the Enclave Pool Manager daemon (upstream Inclavare's ``epm``), serving ``v1alpha1.EnclavePoolManager``
on its unix socket.

    epm [--config FILE]

The configuration is upstream's TOML (default ``/var/epm/config.toml``, as upstream; a missing default file means the
defaults; see :mod:`inclavare.services.epm.config`). Ignored keys are warned about on stderr. Once serving,
one JSON line goes to stdout: ``{"ready": true, "address": "<socket>", "fd_address": "<socket>.fd", "pools":
[...]}`` (``fd_address``: where PAL v3 enclave descriptors are handed over). SIGTERM / SIGINT stop
it (exit 0). Bad flags: ``epm: <message>``, exit 2; a configuration or start-up failure: one line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from inclavare.cli._common import Parser, run_program

PROG = "epm"
DEFAULT_CONFIG = "/var/epm/config.toml"  # upstream's default


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Enclave Pool Manager: caches of enclaves and bundles over gRPC.")
    p.add_argument("--config", metavar="FILE", help=f"configuration file (TOML; default {DEFAULT_CONFIG})")
    return p


def serve(args: argparse.Namespace) -> int:
    from inclavare.services.epm import config as cfgmod
    from inclavare.services.epm.enclave_pool import EnclavePools, FdServer, with_enclave_pool
    from inclavare.services.epm.server import serve as grpc_serve
    from inclavare.services.epm.store import Store

    def warn(msg: str) -> None:
        sys.stderr.write(f"{PROG}: warning: {msg}\n")

    if args.config is None and not os.path.exists(DEFAULT_CONFIG):
        cfg = cfgmod.Config()
    else:
        cfg = cfgmod.load(args.config or DEFAULT_CONFIG, warn)
    cfg = with_enclave_pool(cfg)  # PAL v3 enclaves, their descriptors handed over on the fd socket
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    store = Store(cfg.db_path, float(cfg.db_timeout))
    pools = None
    try:
        pools = EnclavePools(cfg, store)
        server = grpc_serve(cfg, pools)
        fd_server = None
        try:
            fd_server = FdServer(cfg, pools.keeper)
            print(json.dumps({"ready": True, "address": cfg.address, "fd_address": fd_server.path,
                              "pools": sorted(cfg.pools)}), flush=True)
            stop.wait()
        finally:
            if fd_server is not None:
                fd_server.close()
            server.stop(2).wait()
            try:
                os.unlink(cfg.address)
            except OSError:
                pass
    finally:
        if pools is not None:
            pools.close()
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(PROG, build_parser(), serve, argv, usage_status=2)


if __name__ == "__main__":
    sys.exit(main())
