"""Pre-warmed imports for enclave containers (issue 17): what the fork server imports so that its workers --
each one a `rune create` -- start an enclave container without paying for the enclave runtimes' modules.

An enclave create imports wasmtime's bindings (~60 ms), cryptography and the SGX structure modules (~55 ms), the
agent's protobuf messages, and with epm the gRPC runtime its helper uses. A plain container needs none of it, so
the fork server imports it only when enclaves run on this node: after its first enclave container (a worker's
answer says so), or from the start when epm's socket exists -- and then only while idle
(:data:`IDLE_SECONDS` without a request), so neither the shim's start nor a request waits for it. Afterwards the
idle workers (forked before) are replaced by ones forked from the warmed server.

Only imports: no wasmtime ``Engine``, no gRPC channel (both start threads, and the server forks).
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("inclavare.shim")

IDLE_SECONDS = 0.5
MODULES = (
    "inclavare.enclave.pal",
    "inclavare.enclave.agentwire",
    "inclavare.enclave.config",
    "inclavare.enclave.runtimes.sim",
    "inclavare.enclave.runtimes.wasm",
    "inclavare.enclave.image",
    "inclavare.formats.sgx",
    "inclavare.formats.sgxs",
    "inclavare.sgx.signing",
    "inclavare.sim.report",
    "cryptography.exceptions",
    "cryptography.hazmat.primitives.cmac",
    "cryptography.hazmat.primitives.hashes",
    "cryptography.hazmat.primitives.asymmetric.padding",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.hazmat.primitives.asymmetric.utils",
    "cryptography.hazmat.primitives.ciphers.algorithms",
    "wasmtime",
    "google.protobuf.struct_pb2",
    "grpc",
    "inclavare.enclave.epm.proto.epm_pb2_grpc",
    "inclavare.enclave.epm.warm",
    "inclavare.enclave.epm.trust",
)


def enclaves_expected() -> bool:
    """Whether this node runs enclaves before any has been seen: epm's socket is there."""
    from inclavare.enclave.epm import client

    return client.available()


def import_enclave_modules() -> int:
    """Import :data:`MODULES` (the missing ones are skipped: e.g. no wasmtime installed); how many loaded."""
    done = 0
    for name in MODULES:
        try:
            importlib.import_module(name)
            done += 1
        except ImportError:
            log.debug("fork server: warm-up: %s is not importable", name)
    try:
        from inclavare.enclave import agent

        agent.load_codec()  # the agent's protobuf messages
    except ImportError:
        pass
    return done
