"""Pre-warmed imports for enclave containers (issue 17): the fork server's *enclave server*, whose workers -- each
one a `rune create` -- start an enclave container without paying for the enclave runtimes' modules.

An enclave create imports wasmtime's bindings (~60 ms), cryptography and the SGX structure modules (~55 ms), the
agent's protobuf messages, and with epm the gRPC runtime its helper uses. A plain container needs none of it. So
the fork server (shim/forkserver.py) forks a second server for enclave creates once enclaves run on this node
(after an enclave create, or from the start when epm's socket exists or another shim of the same shim root has
seen an enclave create: :data:`MARKER`) -- while idle (:data:`IDLE_SECONDS`
without a request), so neither the shim's start nor a request waits for it. The enclave server imports
:data:`MODULES` and forks its workers from there; the plain server stays as small as before, so plain
containers do not pay for the bigger process (forking and tearing down ~45 MB more costs a plain create ~20 ms).
A create goes to the enclave server when its bundle's config names an enclave type (:func:`is_enclave_create`).

Cost: ~27 MB more private memory, in the enclave server only (shared copy-on-write with its workers), and
0.2-0.5 s of one CPU, once per shim that runs enclaves.

Only imports: no wasmtime ``Engine``, no gRPC channel (both start threads, and the server forks).
"""

from __future__ import annotations

import importlib
import json
import logging
import os

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


MARKER = ".enclaves-here"  # beside rune's state roots: a fork server saw an enclave create under them


def marker_path(root: str) -> str:
    """Where :data:`MARKER` is for the state root ``root`` (``/run/containerd/rune/<namespace>``): in its parent,
    the shim's root for every namespace, so that no namespace's state directory holds anything but containers."""
    return os.path.join(os.path.dirname(os.path.normpath(root)) or "/", MARKER)


def enclaves_expected(root: str) -> bool:
    """Whether enclaves run on this node before this shim has seen one: epm's socket is there, or another shim's
    fork server saw an enclave create under the same shim root (:func:`note_enclaves`)."""
    from inclavare.enclave.epm import client

    return client.available() or os.path.exists(marker_path(root))


def note_enclaves(root: str) -> bool:
    """Leave :data:`MARKER` beside the state root (an empty root-only file), so that later shims start warm;
    whether it is there."""
    path = marker_path(root)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False  # no state root yet (the first create makes it): the next enclave create tries again
    os.close(fd)
    return True


def modules_imported() -> bool:
    """Whether this process already has the enclave runtimes' modules (inherited from a warm shim template)."""
    import sys

    return "wasmtime" in sys.modules and "inclavare.enclave.runtimes.sim" in sys.modules


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


MAX_CONFIG = 4 << 20


def is_enclave_create(args: object) -> bool:
    """Whether a create request's bundle is an enclave container's: its config.json names an enclave type in the
    process env (``ENCLAVE_TYPE``) or the annotations (``enclave.type``), as rune reads it. Any doubt: False
    (the plain server serves it, correctly, just without the pre-warmed modules)."""
    from inclavare.enclave.config import KEYS

    if not isinstance(args, dict) or not isinstance(args.get("bundle"), str):
        return False
    env_key, ann_key = KEYS["type"]
    try:
        with open(os.path.join(args["bundle"], "config.json"), "rb") as f:
            cfg = json.loads(f.read(MAX_CONFIG + 1))
        env = (cfg.get("process") or {}).get("env") or []
        if any(isinstance(e, str) and e.startswith(env_key + "=") and len(e) > len(env_key) + 1 for e in env):
            return True
        return bool((cfg.get("annotations") or {}).get(ann_key))
    except (OSError, ValueError, AttributeError, TypeError):
        return False
