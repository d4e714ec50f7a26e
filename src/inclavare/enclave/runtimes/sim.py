"""Built-in enclave runtime ``sim``: a simulated SGX enclave, for machines without SGX.

Selected with ``ENCLAVE_RUNTIME_PATH=builtin:sim`` (enclave type ``sim``). ``pal_init`` loads a signed
enclave image (docs/enclave-image.md) from the container, measures it with the SGX ECREATE/EADD/EEXTEND
algorithm, checks its SIGSTRUCT (RSA signature, Q1/Q2, ENCLAVEHASH, attributes, debug flag) and refuses to
start on any mismatch. Processes then run the image's payload: a WebAssembly module (through the ``wasm``
runtime) or a native executable (from a sealed memfd, never from a path the container could swap).
``pal_get_local_report`` returns a genuine-format REPORT for the given TARGETINFO, MAC'd with the
simulated platform's per-host report key.

Nothing here is protected: the host can read and change the "enclave" at will. What is real is the identity
model (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, attributes), so attestation policies carry over to hardware.

Encrypted images (docs/encrypted-images.md): when the container names a key broker (``ENCLAVE_KBS_URL``, with
``ENCLAVE_KBS_KEY`` the owner's key resource and optionally ``ENCLAVE_KBS_CA`` a CA file in the container),
``load`` opens the connection to it and a private tmpfs on the host side, and ``pal_init`` -- after the image is
measured -- attests with this enclave's quote, fetches the key and unseals the image's sealed layers into the
private tree (:mod:`inclavare.enclave.unseal`). Payloads find the files at ``$ENCLAVE_DECRYPTED_DIR``
(``/decrypted`` for WebAssembly, a ``/proc/self/fd`` path for native payloads).

Answering inclavared (docs/inclavared.md): with ``ENCLAVE_INFO_LISTEN`` in the container's env, ``load`` prepares
and ``pal_init`` starts a RATS-TLS server in this process whose evidence is :meth:`SimRuntime.quote` of the loaded
image and whose answer is its identity (:mod:`inclavare.enclave.info_server`); ``pal_destroy`` stops it.

epm's sim pool (inclavare.enclave.epm.warm, docs/epm.md): ``warm`` (on the host, after ``load``) starts a helper
that asks epm for the measurement it recorded for this exact image file (SHA-256), and for a WebAssembly payload
its precompiled module; ``pal_init`` takes the answer and skips re-measuring and the RSA check when the file it
reads hashes the same, and still checks ENCLAVEHASH against the recorded measurement and every policy.

pal_init arguments (space separated; rune turns commas into spaces):
  image=PATH        the enclave image in the container (default /enclave/enclave.img)
  mrsigner=HEX      only run images signed by this MRSIGNER
  production        refuse debug-signed images
  preopen=DIR, fuel=N   passed on to the wasm runtime for WebAssembly payloads
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from inclavare.enclave import api
from inclavare.errors import InclavareError

DEFAULT_IMAGE = "/enclave/enclave.img"
KBS_ENV = "ENCLAVE_KBS_URL"  # the owner's key broker, for enclaves that fetch secrets after attesting
KBS_CA_ENV = "ENCLAVE_KBS_CA"
DECRYPTED_ENV = "ENCLAVE_DECRYPTED_DIR"
WASM_DECRYPTED = "/decrypted"
_EXIT_SIGNALLED = 128


def _env(spec: dict[str, Any]) -> dict[str, str]:
    out = {}
    for entry in (spec.get("process") or {}).get("env") or ():
        name, sep, value = str(entry).partition("=")
        if sep:
            out[name] = value
    return out


def kbs_url(spec: dict[str, Any]) -> str | None:
    """The container's ``ENCLAVE_KBS_URL`` (its OCI process env), if it asks for one."""
    return _env(spec).get(KBS_ENV) or None


def _host_id(container_id: int, mappings: list[dict[str, Any]] | None) -> int:
    """The host id of a container uid/gid under the spec's user-namespace mappings (itself without any)."""
    for m in mappings or ():
        start, host, size = int(m.get("containerID", 0)), int(m.get("hostID", 0)), int(m.get("size", 0))
        if start <= container_id < start + size:
            return host + container_id - start
    return container_id


class SimRuntime(api.EnclaveRuntime):
    name = "sim"
    api_version = 3

    def __init__(self) -> None:
        self.key: Any = None
        self.image: Any = None
        self.quoting: Any = None
        self.kbs: Any = None  # the connection to the key broker, opened on the host (enclave.kbs_client.PreConnected)
        self.private: Any = None  # the private tree decrypted layers go to (enclave.privatefs.PrivateFs)
        self.info: Any = None  # the RATS-TLS server answering inclavared (enclave.info_server.InfoServer)
        self.wasm: Any = None
        self._spec: dict[str, Any] = {}
        self._premeasured: dict[str, bytes] = {}  # image SHA-256 -> MRENCLAVE, from epm's sim pool
        self._pending: tuple[str, int, str | None, Any] | None = None  # the warm-up helper, not yet read
        self._decrypted = False
        self._payload_started = False  # the first pal_create_process is the container's process; later ones exec
        self._native: dict[int, int] = {}  # our pid -> host pid (they are the same number)
        self._wasm_pids: set[int] = set()
        self._lock = threading.Lock()

    # -- on the host, before pivot_root

    def load(self, spec: dict[str, Any]) -> None:
        # everything init and the reports need, while the runtime's files are reachable
        from cryptography.exceptions import InvalidSignature  # noqa: F401
        from cryptography.hazmat.primitives import cmac, hashes  # noqa: F401
        from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils  # noqa: F401
        from cryptography.hazmat.primitives.ciphers import algorithms  # noqa: F401

        import inclavare.enclave.image  # noqa: F401
        import inclavare.sgx.signing  # noqa: F401
        from inclavare.sim.report import ReportKey

        self._spec = spec
        self.key = ReportKey.load()  # the per-host platform key lives on the host
        url = kbs_url(spec)
        if url:
            self._prepare_kbs(spec, url)
        self._prepare_info(spec)
        try:
            from inclavare.enclave.runtimes.wasm import WasmRuntime
        except ImportError:  # wasmtime missing: native payloads still work
            return
        self.wasm = WasmRuntime()
        self.wasm.load(spec)

    def warm(self, args: str, spec: dict[str, Any]) -> None:
        """On the host, after ``load``: the sim pool's measurement of the container's image (and the wasm pool's
        precompiled payload). Does nothing without epm; never fails."""
        import hashlib

        from inclavare.enclave.epm import client, warm

        if not client.available():
            return
        path = warm.arg_value(args, "image") or DEFAULT_IMAGE
        data = warm.host_file(spec, path)
        if data is None:
            client.no_pool(f"the enclave image {path} is not readable on the host before start")
            return
        if len(data) < warm.min_bytes():
            return  # checking it costs less than asking epm
        from inclavare.enclave import image as img

        fuel = warm.fuel_of(args)
        payload = img.payload_of(data)
        helper = warm.Helper.start(warm.sim_prefetch, data, fuel)
        if helper is not None:  # read by pal_init: the epm work overlaps the rest of create
            self._pending = (hashlib.sha256(data).hexdigest(), fuel,
                             hashlib.sha256(payload[1]).hexdigest() if payload else None, helper)

    def _collect(self) -> None:
        """Take the warm-up helper's answer (waiting for it): the recorded measurement, the precompiled payload."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        image_sha, fuel, payload_sha, helper = pending
        got = helper.result()
        if not isinstance(got, tuple) or len(got) != 2 or not isinstance(got[0], bytes):
            return
        mrenclave, serialized = got
        self._premeasured[image_sha] = mrenclave
        if isinstance(serialized, bytes) and self.wasm is not None and payload_sha:
            self.wasm.prime(payload_sha, fuel, serialized)

    # -- PAL calls

    def init(self, args: str, log_level: str) -> None:
        from inclavare.enclave import image as img

        path = DEFAULT_IMAGE
        mrsigner: bytes | None = None
        allow_debug = True
        rest: list[str] = []
        for word in args.split():
            key, sep, value = word.partition("=")
            if sep and key == "image":
                path = value
            elif sep and key == "mrsigner":
                try:
                    mrsigner = bytes.fromhex(value)
                except ValueError:
                    mrsigner = b""
                if len(mrsigner) != 32:
                    raise api.PalError("pal_init", -errno.EINVAL, f"{word}: MRSIGNER must be 64 hex digits")
            elif word == "production":
                allow_debug = False
            elif sep and key in ("preopen", "fuel"):
                rest.append(word)
            else:
                raise api.PalError("pal_init", -errno.EINVAL, f"unknown argument {word!r} "
                                   "(known: image=PATH, mrsigner=HEX, production, preopen=DIR, fuel=N)")
        self._collect()
        try:
            self.image = img.load(path, expected_mrsigner=mrsigner, allow_debug=allow_debug,
                                  premeasured=self._premeasured)
        except img.EnclaveImageError as e:
            raise api.PalError("pal_init", -errno.EACCES, str(e)) from None
        except OSError as e:
            raise api.PalError("pal_init", -(e.errno or errno.EIO), f"{path}: {e.strerror}") from None
        if self.image.kind == "wasm":
            if self.wasm is None:
                raise api.PalError("pal_init", -errno.ENOSYS, "the image holds a WebAssembly payload, "
                                   "but wasmtime is not installed")
            self.wasm.init(" ".join(rest), log_level)
        elif rest:
            raise api.PalError("pal_init", -errno.EINVAL, f"{rest[0]}: only for WebAssembly payloads")
        self._unseal()
        if self.info is not None:
            from inclavare.enclave.info_server import InfoServerError

            try:
                self.info.start(self.quote, self.image.mrenclave, self.image.mrsigner)
            except InfoServerError as e:
                raise api.PalError("pal_init", -errno.EADDRNOTAVAIL, str(e)) from None

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        if self.image is None:
            raise api.PalError("pal_create_process", -errno.EINVAL, "the enclave is not initialized")
        # The variable is the runtime's word that the files came from the owner's key: a value from the container's
        # config (the host's) never reaches the payload, also when nothing was decrypted.
        env = [e for e in env if not e.startswith(DECRYPTED_ENV + "=")]
        if self._decrypted and self._payload_started:
            # `rune exec`: a command the host chose, running next to the owner's files -- refused
            raise api.PalError("pal_create_process", -errno.EPERM, "this enclave opened encrypted layers: exec is "
                               "refused (a command chosen on the host would run next to the owner's files)")
        self._payload_started = True
        if self._decrypted:
            where = WASM_DECRYPTED if self.image.kind == "wasm" else self.private.path
            env.append(f"{DECRYPTED_ENV}={where}")
        if self.image.kind == "wasm":
            pid = self.wasm.create_process_from_module(self.image.payload, f"enclave:{path}", argv, env, stdio)
            with self._lock:
                self._wasm_pids.add(pid)
            return int(pid)
        pid = _spawn_native(self.image.payload, argv, env, stdio,
                            keep_fd=self.private.fd if self._decrypted else None)
        with self._lock:
            self._native[pid] = pid
        return pid

    def exec(self, pid: int) -> int:
        if pid in self._wasm_pids:
            return int(self.wasm.exec(pid))
        if pid not in self._native:
            raise api.PalError("pal_exec", -errno.ESRCH, f"no enclave process {pid}")
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                raise api.PalError("pal_exec", -errno.ECHILD, f"enclave process {pid} is gone") from None
        with self._lock:
            self._native.pop(pid, None)
        if os.WIFSIGNALED(status):
            return _EXIT_SIGNALLED + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    def kill(self, pid: int, sig: int) -> None:
        with self._lock:
            native = list(self._native) if pid == -1 else [pid] if pid in self._native else []
            wasm = pid == -1 or pid in self._wasm_pids
        if not native and not wasm:
            raise api.PalError("pal_kill", -errno.ESRCH, f"no enclave process {pid}")
        for p in native:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if wasm and self.wasm is not None and self._wasm_pids:
            self.wasm.kill(pid, sig)

    def destroy(self) -> None:
        if self._pending is not None:
            self._pending[3].close()  # never read: the helper is abandoned
            self._pending = None
        if self.info is not None:
            self.info.stop()
        if self.wasm is not None:
            self.wasm.destroy()
        self.image = None
        if self.private is not None:
            self.private.close()
            self.private = None
            self._decrypted = False

    def get_local_report(self, targetinfo: bytes) -> bytes:
        if self.image is None:
            raise api.PalError("pal_get_local_report", -errno.EINVAL, "the enclave is not initialized")
        if len(targetinfo) != api.TARGETINFO_SIZE:
            raise api.PalError("pal_get_local_report", -errno.EINVAL,
                               f"TARGETINFO is {len(targetinfo)} bytes, expected {api.TARGETINFO_SIZE}")
        try:
            return bytes(self.key.make_report(self.image, bytes(64), targetinfo))
        except InclavareError as e:
            raise api.PalError("pal_get_local_report", -errno.EINVAL, str(e)) from None

    # -- remote attestation from inside (the enclave's own KBS client uses it)

    def _prepare_kbs(self, spec: dict[str, Any], url: str) -> None:
        """Host side of an enclave that fetches secrets: the quoting enclave, the connection to the KBS (the
        container's network namespace may have no route to it) and the private tree (mounting needs
        CAP_SYS_ADMIN, which the container will not have)."""
        from inclavare.enclave import unseal
        from inclavare.enclave.kbs_client import PreConnected
        from inclavare.enclave.privatefs import PrivateFs

        unseal.preload()
        self.open_quoting()
        user = (spec.get("process") or {}).get("user") or {}
        linux = spec.get("linux") or {}
        uid = _host_id(int(user.get("uid", 0)), linux.get("uidMappings"))
        gid = _host_id(int(user.get("gid", 0)), linux.get("gidMappings"))
        self.kbs = PreConnected.open(url)
        try:
            self.private = PrivateFs.create(uid=uid, gid=gid)
        except BaseException:
            self.kbs.close()
            raise

    def _prepare_info(self, spec: dict[str, Any]) -> None:
        """Host side of an enclave that answers inclavared (``ENCLAVE_INFO_LISTEN``, enclave.info_server): the
        quoting enclave, the pinned sim root, and one warm-up exchange on a throwaway identity (the server's
        code must all be imported before pivot_root)."""
        from inclavare.enclave import info_server

        conf = info_server.settings(_env(spec))
        if conf is None:
            return
        from inclavare.ratls.attesters.sim import sim_attester_identity

        if self.quoting is None:
            self.open_quoting()
        warm = sim_attester_identity()
        quoting, key = self.quoting, self.key

        def warm_quote(report_data: bytes) -> bytes:
            return bytes(quoting.get_quote(key.make_report(warm, report_data, quoting.qe_target_info())))

        server = info_server.InfoServer(conf)
        server.prepare(warm_quote, key.state_dir)
        self.info = server

    def _unseal(self) -> None:
        """pal_init, after the image is measured: open the image's sealed layers (none: nothing to do)."""
        from inclavare.runtime.launch import SEALED_DIR

        if self.kbs is None:  # nothing was prepared on the host, and nothing more can be imported now
            if os.path.lexists("/" + SEALED_DIR):
                raise api.PalError("pal_init", -errno.EACCES, f"the image has encrypted layers ({SEALED_DIR}) but "
                                   f"the container names no key broker ({KBS_ENV})")
            return
        from inclavare.enclave import unseal
        from inclavare.enclave.kbs_client import KbsClient, KbsClientError, quote_evidence

        try:
            sealed = unseal.find_sealed("/")
            if not sealed:
                return
            env = _env(self._spec)
            url, key = env.get(KBS_ENV), env.get(unseal.KBS_KEY_ENV)
            if not url:
                raise unseal.UnsealError(f"the container names no key broker ({KBS_ENV})")
            if not key:
                raise unseal.UnsealError(f"the image has encrypted layers: {unseal.KBS_KEY_ENV} must name the key's "
                                         "KBS resource (REPO/TYPE/TAG)")
            client = KbsClient(url, tee="sim", evidence=lambda rd: quote_evidence(self.quote(rd)),
                               cafile=env.get(KBS_CA_ENV) or None, connect=self.kbs)
            try:
                secret = client.resource(key)
            finally:
                client.close()
            user = (self._spec.get("process") or {}).get("user") or {}
            unseal.unseal(self.private, sealed, secret, uid=int(user.get("uid", 0)), gid=int(user.get("gid", 0)))
        except (unseal.UnsealError, KbsClientError) as e:
            raise api.PalError("pal_init", -errno.EACCES, str(e)) from None
        finally:
            if self.kbs is not None:
                self.kbs.close()  # unused, or already closed by the client: one exchange per container
        if self.wasm is not None:
            self.wasm.extra_preopens = [(self.private.path, WASM_DECRYPTED)]
        self._decrypted = True

    @property
    def unsealed(self) -> bool:
        """Whether pal_init opened the image's sealed layers (the init-runelet refuses a sealed image otherwise)."""
        return self._decrypted

    def open_quoting(self) -> None:
        """Load the simulated quoting enclave (host files: call before pivot_root). Only containers that attest
        from inside pay for it (~0.1 s of key loading)."""
        from inclavare.sim.quoting import SimQuotingService

        self.quoting = SimQuotingService.open()

    def quote(self, report_data: bytes) -> bytes:
        """A quote of this enclave over ``report_data`` (64 bytes) from the simulated quoting enclave: what an
        SGX enclave gets by EREPORT to the QE's TARGETINFO and the QE's signature."""
        if self.image is None or self.quoting is None:
            raise api.PalError("quote", -errno.EINVAL, "the enclave is not initialized")
        try:
            report = self.key.make_report(self.image, bytes(report_data), self.quoting.qe_target_info())
            return bytes(self.quoting.get_quote(report))
        except InclavareError as e:
            raise api.PalError("quote", -errno.EINVAL, str(e)) from None


def _spawn_native(payload: bytes, argv: list[str], env: list[str], stdio: tuple[int, int, int],
                  keep_fd: int | None = None) -> int:
    """Run the payload from a sealed memfd: the container cannot swap the measured bytes."""
    import fcntl

    fd = os.memfd_create("enclave-payload", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        envd = {k: v for k, _, v in (e.partition("=") for e in env)}
        pid = os.fork()
        if pid == 0:
            try:
                for target, src in enumerate(stdio):
                    if src != target:
                        os.dup2(src, target)
                if keep_fd is not None:  # the private tree: the payload reaches it at /proc/self/fd/N
                    os.set_inheritable(keep_fd, True)
                os.execve(fd, argv or ["enclave"], envd)  # fexecve: no /proc needed
            except BaseException as e:  # noqa: BLE001
                os.write(2, f"sim: exec of the enclave payload failed: {e}\n".encode())
            os._exit(127)
        return pid
    finally:
        os.close(fd)
