"""The carriers: what turns a container's image into an enclave image, in upstream shim-rune's steps:
build the unsigned enclave -> its signing material -> (the signer signs) -> cascade the signature into the
image -> cleanup.

* ``wasm``: the entry point (``process.args[0]`` resolved in the rootfs) is a WASI module; it becomes a sim
  enclave image of kind ``wasm`` that ``builtin:sim`` runs through its wasmtime runtime.
* ``sim``: the entry point is a native executable (ELF); it is measured into a sim enclave image of kind
  ``native``.
* ``occlum``: an extension point. Building an Occlum instance needs Occlum's toolchain and SGX hardware (and,
  upstream, a build image); this machine has neither, so selecting it fails at Create naming what is missing.

The entry point is resolved as the container would see it: absolute, relative to ``process.cwd``, or searched
in the process's ``PATH``; symlinks are followed inside the rootfs (absolute targets from its root), and one
that climbs out of the rootfs is refused.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Any

from inclavare.shim.carrier.signers import CarrierError

MAX_PAYLOAD = 256 << 20  # as enclave/image.py
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENCLAVE_MAGIC = b"INCLENCL"
CLIENT_IMAGE = "/enclave/enclave.img"  # where builtin:sim looks by default: a client-signed image lives here


@dataclass(frozen=True)
class Payload:
    """The entry point's bytes, its path inside the container and on the host."""

    data: bytes
    path: str  # inside the container
    host_path: str


def _resolve(rootfs: str, path: str, where: str) -> str | None:
    """``path`` (absolute, as inside the container) resolved to a host path under ``rootfs`` (None if it does
    not exist); symlinks are followed within the rootfs; climbing above its root is refused."""
    from inclavare.errors import SysError
    from inclavare.linux.rootfs import secure_join

    try:
        host = secure_join(rootfs, path, strict=True)
    except SysError as e:
        if e.errno == errno.EXDEV:
            raise CarrierError(f"{where}: {path} climbs out of the container's root filesystem",
                               "invalid_argument") from None
        raise CarrierError(f"{where}: {path}: {e}", "invalid_argument") from None
    except OSError as e:
        raise CarrierError(f"{where}: {path}: {e.strerror}", "invalid_argument") from None
    return host if os.path.lexists(host) else None


def entry_point(config: dict[str, Any], rootfs: str) -> tuple[str, str]:
    """(path inside the container, host path) of ``process.args[0]``."""
    process = config.get("process") or {}
    args = process.get("args") or []
    if not args or not isinstance(args[0], str) or not args[0]:
        raise CarrierError("process.args is empty: no entry point to carry into an enclave", "invalid_argument")
    arg0 = args[0]
    where = f"entry point {arg0}"
    if arg0.startswith("/"):
        candidates = [arg0]
    elif "/" in arg0:
        candidates = [os.path.join(str(process.get("cwd") or "/"), arg0)]
    else:
        env_path = next((e[5:] for e in process.get("env") or [] if isinstance(e, str) and e.startswith("PATH=")),
                        DEFAULT_PATH)
        candidates = [os.path.join(d or "/", arg0) for d in env_path.split(":") if d.startswith("/")]
    for cand in candidates:
        host = _resolve(rootfs, cand, where)
        if host is not None and os.path.isfile(host):
            return cand, host
    raise CarrierError(f"{where}: not found in the image (looked in {', '.join(candidates)})", "invalid_argument")


def read_payload(config: dict[str, Any], rootfs: str) -> Payload:
    path, host = entry_point(config, rootfs)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise CarrierError(f"entry point {path}: {e.strerror}", "invalid_argument") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise CarrierError(f"entry point {path}: not a regular file", "invalid_argument")
        data = f.read(MAX_PAYLOAD + 1)
    if len(data) > MAX_PAYLOAD:
        raise CarrierError(f"entry point {path}: larger than {MAX_PAYLOAD >> 20} MiB", "invalid_argument")
    if not data:
        raise CarrierError(f"entry point {path}: empty file", "invalid_argument")
    return Payload(data, path, host)


class Carrier:
    """One carrier: ``kind`` is the enclave image's payload kind; ``check`` refuses an unusable payload."""

    name = ""
    kind = ""

    def check(self, payload: Payload) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """What the built image depends on besides the payload (the cache's L1 input)."""
        from dataclasses import asdict

        settings = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in asdict(self.settings()).items()}
        return {"carrier": self.name, "kind": self.kind, "settings": settings, "format": 1}

    def settings(self) -> Any:
        from inclavare.enclave.image import EnclaveSettings

        return EnclaveSettings()

    # upstream's steps
    def build_unsigned(self, payload: Payload) -> Any:
        from inclavare.enclave import image

        self.check(payload)
        try:
            return image.build(payload.data, self.kind, self.settings())
        except image.EnclaveImageError as e:
            raise CarrierError(f"{self.name} carrier: entry point {payload.path}: {e}", "invalid_argument") from None

    @staticmethod
    def signing_material(unsigned: Any) -> bytes:
        return bytes(unsigned.signing_material())

    @staticmethod
    def cascade(unsigned: Any, signer: Any) -> bytes:
        """The signed image: the signer's signature put into the SIGSTRUCT (and checked)."""
        return bytes(signer.sign(unsigned))

    def cleanup(self) -> None:
        """Nothing to clean: builds happen in memory and in the cache's temp directories."""


class WasmCarrier(Carrier):
    name, kind = "wasm", "wasm"

    def check(self, payload: Payload) -> None:
        if payload.data[:4] != b"\0asm":
            raise CarrierError(f"wasm carrier: entry point {payload.path} is not a WebAssembly module (no \\0asm)",
                               "invalid_argument")


class SimCarrier(Carrier):
    name, kind = "sim", "native"

    def check(self, payload: Payload) -> None:
        if payload.data[:4] != b"\x7fELF":
            raise CarrierError(f"sim carrier: entry point {payload.path} is not an ELF executable",
                               "invalid_argument")


class OcclumCarrier(Carrier):
    """Extension point: an Occlum carrier would run ``occlum new/build`` (upstream: inside the configured
    ``build_image``), then sign the instance's enclave with the same signers."""

    name, kind = "occlum", ""

    def __init__(self, occlum_runtime_path: str = "") -> None:
        self.runtime_path = occlum_runtime_path

    def check(self, payload: Payload) -> None:
        raise CarrierError(self.unavailable())

    def unavailable(self) -> str:
        missing = []
        if not (self.runtime_path and os.path.exists(self.runtime_path)):
            missing.append("Occlum's PAL ([enclave_runtime.occlum] enclave_runtime_path"
                           + (f" {self.runtime_path} does not exist" if self.runtime_path else " is not set") + ")")
        if not any(os.path.exists(d) for d in ("/dev/sgx_enclave", "/dev/sgx/enclave", "/dev/isgx")):
            missing.append("an SGX device")
        missing.append("this shim's Occlum build step (not implemented)")
        return f"occlum carrier: not available on this machine: missing {'; '.join(missing)}"


def carrier_for(name: str, occlum_runtime_path: str = "") -> Carrier:
    if name == "wasm":
        return WasmCarrier()
    if name == "sim":
        return SimCarrier()
    if name == "occlum":
        return OcclumCarrier(occlum_runtime_path)
    raise CarrierError(f"unknown carrier {name!r} (known: wasm, sim, occlum)", "invalid_argument")


def load_client_image(config: dict[str, Any], rootfs: str, carrier: Carrier) -> tuple[str, Any]:
    """``client`` signing: the image already carries a signed enclave image -- the entry point itself when it
    is one, else /enclave/enclave.img. Loaded and fully verified; an unsigned or bad one is refused.
    Returns (path inside the container, the loaded image)."""
    from inclavare.enclave import image

    try:
        payload = read_payload(config, rootfs)
    except CarrierError:
        payload = None
    source: str | bytes
    if payload is not None and payload.data.startswith(ENCLAVE_MAGIC):
        path, source = payload.path, payload.data
    else:
        path = CLIENT_IMAGE
        host = _resolve(rootfs, CLIENT_IMAGE, "client-signed enclave image")
        if host is None or not os.path.isfile(host):
            raise CarrierError(f"signature_method client: the image has no signed enclave image (its entry point "
                               f"is not one and {CLIENT_IMAGE} is missing)", "invalid_argument")
        source = host
    try:
        loaded = image.load(source)
    except image.EnclaveImageError as e:
        raise CarrierError(f"signature_method client: {path}: {e}", "invalid_argument") from None
    if carrier.kind and loaded.kind != carrier.kind:
        raise CarrierError(f"signature_method client: {path} holds a {loaded.kind} payload, the {carrier.name} "
                           f"carrier wants {carrier.kind}", "invalid_argument")
    return path, loaded
