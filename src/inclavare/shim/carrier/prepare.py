"""Create-time carrier work: from a selected carrier to a rewritten bundle (imported only when a carrier is
selected, see :mod:`inclavare.shim.carrier`).

Steps: node config -> carrier -> payload (the entry point, read from the mounted rootfs) -> the bundle
cache's L2 entry (a hit skips everything below) -> on a miss, L1 (the unsigned image; a hit skips the build
and measurement) -> sign (server or local) -> commit L0 (the payload), L1 and L2, only once signing worked, so
a failed Create caches nothing -> ``config.json`` rewritten atomically.

The cache's L0 key is the SHA-256 of the payload bytes, not the OCI image digest: containerd tells the shim
no image digest (``ctr run`` sets no annotation; CRI's ``io.kubernetes.cri.image-name`` is a mutable
reference), asking containerd over its socket costs a round trip per Create, and the payload is what the
carrier consumes -- two images with the same entry point share entries, and a re-tagged image with a new
entry point cannot hit a stale one. The read is needed anyway on a miss; on a hit it is one read of a file.

The rewritten container runs under ``builtin:sim`` (``ENCLAVE_TYPE=sim``) with ``image=`` pointing at the
signed image, bind-mounted read-only from the cache entry as a *file* (the container keeps the inode, so an
eviction after Create does not break it; the entry is held with a shared lock until the container exists),
``mrsigner=`` pinned, and the annotations ``enclave.mrenclave``/``enclave.mrsigner``/``enclave.carrier``.
``client`` signing needs no cache: the image's own signed enclave image is verified and used in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from inclavare.shim.carrier import ANNOTATION, strip_env
from inclavare.shim.carrier.carriers import Carrier, Payload, carrier_for, load_client_image, read_payload
from inclavare.shim.carrier.nodeconfig import NodeConfig, NodeConfigError
from inclavare.shim.carrier.nodeconfig import load as load_config
from inclavare.shim.carrier.signers import CarrierError, signer_for

log = logging.getLogger("inclavare.shim.carrier")

MOUNT_POINT = "/.inclavare/enclave.img"
IMAGE_FILE = "enclave.img"
IDENTITY_FILE = "identity.json"
ENCLAVE_ENV = ("ENCLAVE_TYPE", "ENCLAVE_RUNTIME_PATH", "ENCLAVE_RUNTIME_ARGS")
MRENCLAVE_ANNOTATION = "enclave.mrenclave"
MRSIGNER_ANNOTATION = "enclave.mrsigner"


@dataclass
class Prepared:
    """A bundle rewritten for a carrier; :meth:`restore` puts the original config.json back (a failed Create),
    :meth:`release` lets the cache entry go (the container holds its own mount of it)."""

    config_path: str
    original: bytes
    carrier: str
    mrenclave: str
    mrsigner: str
    hits: list[str] = field(default_factory=list)  # cache levels that hit
    hold: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def restore(self) -> None:
        _write_atomic(self.config_path, self.original)

    def release(self) -> None:
        self.hold.close()


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.carrier.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CarrierError(f"{path}: cannot rewrite ({e.strerror})", "unknown") from None


def _rewrite(config: dict[str, Any], name: str, image_path: str, mrenclave: str, mrsigner: str,
             mount_source: str | None) -> bytes:
    strip_env(config)
    process = config.setdefault("process", {})
    env = [e for e in process.get("env") or [] if e.partition("=")[0] not in ENCLAVE_ENV]
    env += ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim",
            f"ENCLAVE_RUNTIME_ARGS=image={image_path} mrsigner={mrsigner}"]
    process["env"] = env
    ann = config.get("annotations")
    if not isinstance(ann, dict):
        ann = config["annotations"] = {}
    ann.update({ANNOTATION: name, MRENCLAVE_ANNOTATION: mrenclave, MRSIGNER_ANNOTATION: mrsigner})
    if mount_source is not None:
        mounts = config.get("mounts")
        if not isinstance(mounts, list):
            mounts = config["mounts"] = []
        mounts.append({"destination": image_path, "type": "bind", "source": mount_source,
                       "options": ["bind", "ro", "nosuid", "nodev", "noexec"]})
    return json.dumps(config, separators=(",", ":")).encode()


def prepare(bundle: str, config: dict[str, Any], original: bytes, name: str, where: str,
            node_config: NodeConfig | None = None) -> Prepared:
    """Rewrite ``bundle``'s config.json for carrier ``name`` (selected by ``where``); ``config`` is its parsed
    content (changed in place), ``original`` its bytes. Raises :class:`CarrierError` (config.json untouched)."""
    import time

    t0 = time.perf_counter()
    try:
        cfg = node_config or load_config()
    except NodeConfigError as e:
        raise CarrierError(str(e)) from None
    try:
        carrier = carrier_for(name, cfg.occlum.enclave_runtime_path)
    except CarrierError as e:
        raise CarrierError(f"{where}: {e}", e.code) from None
    root_path = str((config.get("root") or {}).get("path") or "rootfs")
    rootfs = root_path if os.path.isabs(root_path) else os.path.join(bundle, root_path)
    path = os.path.join(bundle, "config.json")
    if carrier.name == "occlum":
        raise CarrierError(carrier.unavailable())  # type: ignore[attr-defined]
    if cfg.signature_method == "client":
        image_path, loaded = load_client_image(config, rootfs, carrier)
        prep = Prepared(path, original, name, loaded.mrenclave.hex(), loaded.mrsigner.hex())
        _write_atomic(path, _rewrite(config, name, image_path, prep.mrenclave, prep.mrsigner, None))
        return prep
    payload = read_payload(config, rootfs)
    carrier.check(payload)
    signer = signer_for(cfg)
    from inclavare.services.bundlecache import BundleCache, BundleCacheError

    prep = Prepared(path, original, name, "", "")
    try:
        cache = prep.hold.enter_context(BundleCache(cfg.cache_root, cfg.cache_max_bytes))
        entry = prep.hold.enter_context(_signed_entry(cache, carrier, payload, signer, prep))
        with open(os.path.join(entry, IDENTITY_FILE), "rb") as f:
            ident = json.load(f)
        prep.mrenclave, prep.mrsigner = str(ident["mrenclave"]), str(ident["mrsigner"])
        _write_atomic(path, _rewrite(config, name, MOUNT_POINT, prep.mrenclave, prep.mrsigner,
                                     os.path.join(entry, IMAGE_FILE)))
    except BundleCacheError as e:
        prep.release()
        raise CarrierError(f"{name} carrier: {e}") from None
    except (OSError, ValueError, KeyError) as e:
        prep.release()
        raise CarrierError(f"{name} carrier: bundle cache entry unreadable ({e})") from None
    except BaseException:
        prep.release()
        raise
    log.info("carrier %s: MRENCLAVE %s MRSIGNER %s (cache hits: %s; %.1f ms)", name, prep.mrenclave, prep.mrsigner,
             ",".join(prep.hits) or "none", (time.perf_counter() - t0) * 1000)
    return prep


def cache_inputs(carrier: Carrier, payload: Payload, signer: Any) -> tuple[dict[str, Any], dict[str, Any],
                                                                          dict[str, Any]]:
    """The L0, L1 and L2 key inputs (see :mod:`inclavare.services.bundlecache.keys`)."""
    from inclavare.services.bundlecache import L0, L1, derive_key

    l0 = {"image_digest": "sha256:" + hashlib.sha256(payload.data).hexdigest()}
    l1 = {"l0": derive_key(L0, l0), "carrier": carrier.config()}
    l2 = {"l1": derive_key(L1, l1), "signing_key": signer.identity()}
    return l0, l1, l2


@contextlib.contextmanager
def _signed_entry(cache: Any, carrier: Carrier, payload: Payload, signer: Any, prep: Prepared) -> Any:
    """The L2 entry (held with the cache's shared lock while the caller's ``with`` runs)."""
    from inclavare.enclave import image
    from inclavare.services.bundlecache import L0, L1, L2

    l0, l1, l2 = cache_inputs(carrier, payload, signer)
    built = []

    def build_l2(tmp: str) -> None:
        built.append(True)
        found = cache.lookup(L1, l1)
        unsigned = None
        if found is not None:
            try:
                unsigned = image.load_unsigned(os.path.join(found, "unsigned.img"))
                prep.hits.append(L1)
            except image.EnclaveImageError:
                unsigned = None
        if unsigned is None:
            unsigned = carrier.build_unsigned(payload)
        carrier.signing_material(unsigned)
        signed = carrier.cascade(unsigned, signer)
        try:
            loaded = image.load(signed)
        except image.EnclaveImageError as e:
            raise CarrierError(f"{carrier.name} carrier: the signed image does not load: {e}") from None
        # signing worked: now the levels below are worth keeping
        if found is None:
            cache.store(L0, l0, lambda d: _write(os.path.join(d, "payload"), payload.data))
            cache.store(L1, l1, lambda d: _write(os.path.join(d, "unsigned.img"), unsigned.to_bytes()))
        _write(os.path.join(tmp, IMAGE_FILE), signed)
        _write(os.path.join(tmp, IDENTITY_FILE), json.dumps({
            "carrier": carrier.name, "mrenclave": loaded.mrenclave.hex(), "mrsigner": loaded.mrsigner.hex(),
            "signer": signer.identity()}, sort_keys=True).encode())
        carrier.cleanup()

    with cache.use(L2, l2, build_l2) as entry:
        if not built:
            prep.hits.append(L2)
        yield entry


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o444)  # whatever the umask said: read-only, readable in the container
