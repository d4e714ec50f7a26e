"""The pools that make enclave starts warm, and the helper process that talks to epm for a container's init.

**Where it runs.** An enclave runtime's ``load`` runs in the container's first init stage, on the host, before the
namespaces are joined: that process must stay single-threaded (``unshare(CLONE_NEWUSER)`` and the next fork need
it) and grpc starts threads. So the runtime's ``warm`` hook reads the file the container will run from the host's
view of its root file system and hands the epm work to :func:`in_helper`, a forked child that does it and sends the
result back (:mod:`.helper`, shared with PAL v3's enclave hand-over). Only when epm's socket exists
(:func:`~.client.available`, one stat): without epm nothing is forked and nothing changes. Later, inside the
container, the runtime re-reads the file and uses the result only if the bytes hash to the same SHA-256 (what the
host read and what the container runs are the same bytes). A file the host cannot see (e.g. one in a bind mount,
which is not mounted yet) has no pool.

**wasm pool** (type ``wasm-module``): a module compiled by wasmtime and serialized (``Module.serialize``), keyed by
:func:`wasm_key` = the module's SHA-256, the wasmtime version, the machine and a digest of the CPU's feature flags
(``/proc/cpuinfo``), and the engine configuration (epoch interruption, plus fuel when ``fuel=`` is given). On a
hit the artifact must pass :func:`~.trust.read_trusted` (it is native code); on a miss the helper compiles it,
saves it to epm and returns it (compilation moves from ``start`` to ``create``, done once per node).

**sim pool** (type ``sim-image``): keyed by the SHA-256 of the enclave image file; the record holds the image's
MRENCLAVE and MRSIGNER, written only after a full check (:func:`inclavare.enclave.image.load`: RSA signature,
measurement, attributes). On a hit the sim runtime skips re-measuring and the RSA check but still parses the
SIGSTRUCT and checks ENCLAVEHASH equals the recorded measurement and every policy (attributes, debug, MRSIGNER,
production). For a WebAssembly payload the helper also fills / reads the wasm pool for the payload.

**Small files skip the pools.** The helper costs a fork, gRPC's start and two calls: ~30-100 ms when gRPC is
already imported (the shim's enclave fork server imports it), and a few hundred more when the helper has to import
it (a `rune` started from the command line). Compiling a ~40 KB module takes ~0.4 s, a ~400 KB one seconds; a tiny
module or a small image costs less than asking. So files under :func:`min_bytes` skip the pools: 16 KiB with gRPC
imported, 256 KiB without; ``INCLAVARE_EPM_MIN_BYTES`` sets it.

The helper never fails the container: any trouble (epm down, a refusal, a timeout, a bad artifact, a module that
does not compile -- the runtime reports that itself) is "no pool".
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from inclavare.enclave.epm import client, trust
from inclavare.enclave.epm.helper import HELPER_TIMEOUT as HELPER_TIMEOUT
from inclavare.enclave.epm.helper import Helper as Helper
from inclavare.enclave.epm.helper import in_helper as in_helper

log = logging.getLogger(__name__)

POOL_WASM = "wasm-module"
POOL_SIM = "sim-image"
MAX_MODULE = 256 << 20  # bytes: a module (or image) read on the host
MAX_ARTIFACT = 1 << 30  # bytes: a serialized module taken from the pool
_CPUINFO = "/proc/cpuinfo"
MIN_BYTES_ENV = "INCLAVARE_EPM_MIN_BYTES"
MIN_BYTES = 16 << 10  # gRPC already imported
MIN_BYTES_COLD = 256 << 10  # the helper imports gRPC first


def min_bytes() -> int:
    """Files smaller than this do not use the pools (module docstring)."""
    import sys

    value = os.environ.get(MIN_BYTES_ENV, "")
    if value.isdigit():
        return int(value)
    return MIN_BYTES if "grpc" in sys.modules else MIN_BYTES_COLD


# ---------------------------------------------------------------------------------------------------- keys


def cpu_features() -> str:
    """12 hex digits naming this CPU's feature flags (the first ``flags`` / ``Features`` line of cpuinfo)."""
    flags = ""
    try:
        with open(_CPUINFO) as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() in ("flags", "Features"):
                    flags = " ".join(sorted(value.split()))
                    break
    except OSError:
        pass
    return hashlib.sha256(flags.encode()).hexdigest()[:12]


def wasmtime_version() -> str:
    """The installed wasmtime's version, from its ``dist-info`` directory beside the package (importlib.metadata
    scans every path entry: ~45 ms)."""
    from importlib.util import find_spec

    spec = find_spec("wasmtime")
    if spec is not None and spec.origin:
        site = os.path.dirname(os.path.dirname(spec.origin))
        try:
            for name in sorted(os.listdir(site)):
                if name.startswith("wasmtime-") and name.endswith(".dist-info"):
                    return name[len("wasmtime-"):-len(".dist-info")]
        except OSError:
            pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:
        return "unknown"


def wasm_key(module_sha256: str, fuel: int, wt_version: str | None = None) -> str:
    """The wasm pool's cache ID for a module (see the module docstring)."""
    config = "epoch+fuel" if fuel else "epoch"
    return (f"{module_sha256}.wasmtime-{wt_version or wasmtime_version()}.{os.uname().machine}-{cpu_features()}"
            f".{config}")


# ---------------------------------------------------------------------------------------------------- pools


def _struct(**fields: str) -> Any:
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.update(fields)
    return s


def _fields(cache: Any) -> dict[str, str] | None:
    """The string fields of a cache's options (a ``google.protobuf.Struct``), or None if it holds something else."""
    from google.protobuf import struct_pb2

    if not cache.HasField("options") or not cache.options.Is(struct_pb2.Struct.DESCRIPTOR):
        return None
    s = struct_pb2.Struct()
    cache.options.Unpack(s)
    return {k: v for k, v in s.items() if isinstance(v, str)}


def wasm_from_pool(epm: client.EpmClient, module: bytes, fuel: int) -> bytes | None:
    """The serialized module from the pool if there is a trusted one (module docstring), else None."""
    sha = hashlib.sha256(module).hexdigest()
    cache = epm.get(POOL_WASM, wasm_key(sha, fuel))
    if cache is None:
        return None
    fields = _fields(cache) or {}
    digest = fields.get("artifact_sha256", "")
    if fields.get("module_sha256") != sha or len(digest) != 64:
        log.debug("epm: ignoring wasm cache %s: its record does not describe this module", cache.ID)
        return None
    return trust.read_trusted(cache.savePath, digest, MAX_ARTIFACT)


def wasm_compile_and_save(epm: client.EpmClient | None, module: bytes, fuel: int) -> bytes | None:
    """Compile ``module`` as the wasm runtime would (same engine configuration), save it to the pool; the
    serialized module, or None if it does not compile (the runtime reports why, at start)."""
    from inclavare.enclave.api import PalError
    from inclavare.enclave.runtimes.wasm import WasmRuntime

    rt = WasmRuntime()
    rt._import_wasmtime()
    rt._fuel = fuel
    rt._engine = rt._new_engine()
    try:
        serialized = rt._serialize("<pool>", module)
    except PalError:
        return None
    if epm is not None:
        sha = hashlib.sha256(module).hexdigest()
        epm.save(POOL_WASM, wasm_key(sha, fuel), "wasmtime",
                 _struct(module_sha256=sha, artifact_sha256=hashlib.sha256(serialized).hexdigest()), serialized)
    return serialized


def wasm_prefetch(module: bytes, fuel: int) -> bytes | None:
    """In the helper: the module's serialized form, from the pool or compiled (and saved)."""
    epm = client.EpmClient.open()  # not closed: the helper exits (closing a grpc channel takes ~0.2 s)
    if epm is None:
        return None
    found = wasm_from_pool(epm, module, fuel)
    if found is None and epm.down:
        return None  # epm does not answer: the container compiles at start, as without epm
    return found or wasm_compile_and_save(epm, module, fuel)


def sim_from_pool(epm: client.EpmClient, image: bytes) -> bytes | None:
    """The MRENCLAVE the pool recorded for this exact image file, or None."""
    sha = hashlib.sha256(image).hexdigest()
    cache = epm.get(POOL_SIM, sha)
    if cache is None:
        return None
    fields = _fields(cache) or {}
    try:
        mrenclave = bytes.fromhex(fields.get("mrenclave", ""))
    except ValueError:
        mrenclave = b""
    if len(mrenclave) != 32:
        log.debug("epm: ignoring sim cache %s: no usable measurement in its record", cache.ID)
        return None
    return mrenclave


def sim_verify_and_save(epm: client.EpmClient | None, image: bytes) -> bytes | None:
    """Fully check the image (no per-container policy); save its measurement; the MRENCLAVE, or None if the
    image does not pass (the runtime's own full check reports why)."""
    from inclavare.enclave import image as img

    try:
        loaded = img.load(image)
    except img.EnclaveImageError:
        return None
    if epm is not None:
        epm.save(POOL_SIM, hashlib.sha256(image).hexdigest(), loaded.kind,
                 _struct(mrenclave=loaded.mrenclave.hex(), mrsigner=loaded.mrsigner.hex()))
    return loaded.mrenclave


def sim_prefetch(image: bytes, fuel: int) -> tuple[bytes | None, bytes | None]:
    """In the helper: (MRENCLAVE, serialized wasm payload or None), from the pools or computed (and saved)."""
    epm = client.EpmClient.open()  # not closed: the helper exits (see wasm_prefetch)
    if epm is None:
        return None, None
    mrenclave = sim_from_pool(epm, image)
    if mrenclave is None and epm.down:
        return None, None  # epm does not answer: the runtime checks the image itself, as without epm
    mrenclave = mrenclave or sim_verify_and_save(epm, image)
    if mrenclave is None:
        return None, None
    from inclavare.enclave import image as img

    payload = img.payload_of(image)
    if payload is None or payload[0] != "wasm":
        return mrenclave, None
    module = payload[1]
    try:
        serialized = wasm_from_pool(epm, module, fuel) or wasm_compile_and_save(epm, module, fuel)
    except ImportError:  # wasmtime missing: the runtime runs native payloads only
        serialized = None
    return mrenclave, serialized


# ---------------------------------------------------------------------------------------------------- helper


# Helper, in_helper: the forked helper, shared with PAL v3's enclave hand-over (enclave/epm/helper.py)


# ---------------------------------------------------------------------------------------------------- host side


def host_file(spec: dict[str, Any], path: str) -> bytes | None:
    """The container's file ``path`` as the host sees it in the container's root (symlinks resolved inside
    it), before the container's mounts exist; None if it is not there or not a regular file."""
    import stat

    root = (spec.get("root") or {}).get("path")
    if not isinstance(root, str) or not root or not path.startswith("/"):
        return None
    try:
        from inclavare.linux.rootfs import secure_join

        host = secure_join(root, path)
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except Exception:  # noqa: BLE001 - no file, no pool
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MODULE:
            return None
        data = os.read(fd, MAX_MODULE + 1)
        while len(data) < st.st_size:
            more = os.read(fd, MAX_MODULE + 1 - len(data))
            if not more:
                break
            data += more
        return data if len(data) <= MAX_MODULE else None
    except OSError:
        return None
    finally:
        os.close(fd)


def find_in_container(spec: dict[str, Any], arg0: str) -> str | None:
    """The container path of the program ``arg0`` (absolute, or looked up in the process's PATH)."""
    if arg0.startswith("/"):
        return arg0
    if "/" in arg0 or not arg0:
        return None
    from inclavare.linux.rootfs import secure_join

    root = os.path.abspath(str((spec.get("root") or {}).get("path") or "/"))
    env = (spec.get("process") or {}).get("env") or []
    path = next((e[5:] for e in env if isinstance(e, str) and e.startswith("PATH=")), "/usr/bin:/bin")
    for d in path.split(":"):
        if d.startswith("/"):
            cand = os.path.join(d, arg0)
            try:
                if os.path.isfile(secure_join(root, cand)):
                    return cand
            except Exception:  # noqa: BLE001
                continue
    return None


def arg_value(args: str, key: str) -> str | None:
    """The value of ``key=VALUE`` in pal_init's space-separated arguments (the last one), or None."""
    found = None
    for word in args.split():
        k, sep, v = word.partition("=")
        if sep and k == key:
            found = v
    return found


def fuel_of(args: str) -> int:
    value = arg_value(args, "fuel")
    return int(value) if value and value.isdigit() else 0
