"""verdictd's admin API: upstream verdictd's gRPC ``clientapi`` (KeyManagerService, OpaService, ImageService) over
the verdictd :class:`~inclavare.services.verdictd.store.Store`, never open to an unauthenticated caller.

What each RPC does (the contract of ``proto/clientapi.proto``; every response's ``status`` is ``"OK"`` or a
one-line error text, upstream's in-band convention):

- ``CreateKey``: a fresh random AES-256 key under a new UUID (secret kind ``key``: what the EAA protocol's
  ``Get KEK``/``Decrypt`` and the key provider use); ``GetKey``: its base64; ``DeleteKey``: removes it
  (upstream answered "Not implemented").
- ``SetOpaPolicy``/``exportOpaPolicy``: Rego policies by name in the store's policy table (the names the daemon
  appraises with: ``sgx``, ``tdx``, ``snp``, ``sim``, ``resource``); a policy is compiled (``check``) before it
  is stored, as upstream ran ``opa check``. Exporting a name the owner never set gives the built-in default the
  daemon uses for it, if there is one.
- ``setOpaReference``/``exportOpaReference``: upstream's named reference documents (a JSON object, e.g.
  ``{"mrEnclave": [...], "svn": 1}``), kept byte for byte (secret kind ``opa-reference``) for ``TestOpa``.
  The reference values the daemon appraises with are :class:`~.refvalues.ReferenceValues` (KBS admin API).
- ``TestOpa``: a stored or given policy evaluated on a stored or given reference document and an input
  document; ``status`` is the decision JSON (``allow``, ``tier``, ``reasons``, ``parseInfo``) or an error.
- ``setImagePolicy``/``exportImagePolicy``, ``setImageSigstore``/``exportImageSigstore``: the containers
  ``policy.json`` and sigstore (lookaside) YAML an enclave's image client fetches through EAA (``Policy`` and
  ``Sigstore Config``; :func:`image_resource` maps those names for the daemon). No insecure default: an unset
  image policy exports as an error.

Authentication (:class:`AdminAuth`): a bearer token in the ``authorization`` metadata (compared in constant
time) and/or mutual TLS (client certificates from a CA bundle, optionally pinned by SHA-256 fingerprint). Every
configured factor is required; a server with neither refuses to start, and plain text (no TLS) is allowed only on
a unix socket or a loopback address. A refused call ends with gRPC ``UNAUTHENTICATED`` (unknown methods too, so
an outsider learns nothing). Bounds: messages at most :data:`MAX_MESSAGE` bytes (``RESOURCE_EXHAUSTED``), a
fixed worker pool and a cap on concurrent calls. Every change and every key read is audited (names and sizes,
never values).
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import json
import logging
import os
import stat
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from inclavare.formats import strictjson
from inclavare.services import grpcopts, netaddr
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.proto import clientapi_pb2 as pb
from inclavare.services.verdictd.proto import clientapi_pb2_grpc as pbg
from inclavare.services.verdictd.store import KIND_KEY, MAX_POLICY, MAX_SECRET, Store, read_secret_file

log = logging.getLogger(__name__)

__all__ = [
    "KIND_IMAGE",
    "KIND_OPA_REFERENCE",
    "MAX_MESSAGE",
    "AdminApi",
    "AdminAuth",
    "AdminServer",
    "PolicyTester",
    "image_resource",
    "load_token",
]

OK = "OK"
KIND_OPA_REFERENCE = "opa-reference"  # upstream's named OPA reference documents (JSON text, byte for byte)
KIND_IMAGE = "image"  # the image verification files, by upstream's file names below
IMAGE_POLICY = "policy.json"
IMAGE_SIGSTORE = "sigstore.yaml"
EAA_IMAGE_NAMES = {"Policy": IMAGE_POLICY, "Sigstore Config": IMAGE_SIGSTORE}  # EAA "Get <name>" -> file

KEY_SIZE = 32  # AES-256, as upstream's CreateKey
MAX_MESSAGE = 2 << 20  # one request or response: a 1 MiB reference document plus a policy and an input fit
MAX_NAME_BYTES = 256
MAX_INPUT = 64 << 10  # TestOpa input document
MAX_REFERENCE = MAX_SECRET  # a reference document
MAX_IMAGE_POLICY = 256 << 10
MAX_SIGSTORE = 64 << 10
MAX_CONCURRENT_RPCS = 64  # beyond this, calls end at once with RESOURCE_EXHAUSTED
# a worker per admitted call: grpcio waits for a unary call's request inside a worker, so with fewer workers a few
# calls whose client never sends the request would queue every other call behind them (grpcopts.py)
MAX_WORKERS = MAX_CONCURRENT_RPCS
MIN_TOKEN = 16  # characters of a bearer token
MAX_TOKEN = 4096

AUTH_METADATA = "authorization"
_principal: contextvars.ContextVar[str] = contextvars.ContextVar("verdictd_admin_principal", default="?")


# --------------------------------------------------------------------------------------------------
# What this module needs from the policy engine (policy.PolicyEngine has both)


class PolicyTester(Protocol):
    """The Rego side: compile-check a policy before it is stored, and upstream's TestOpa."""

    def check(self, policy_text: str) -> None: ...

    def test(self, policy_text: str, reference_json: str | bytes, input_json: str | bytes) -> dict[str, Any]: ...


def image_resource(store: Store, name: str) -> bytes | None:
    """The image file an EAA client asks for by upstream's resource name (``Policy``, ``Sigstore Config``), as
    set through ImageService; None for other names or when unset."""
    file = EAA_IMAGE_NAMES.get(name)
    return None if file is None else store.get_secret(KIND_IMAGE, file)


# --------------------------------------------------------------------------------------------------
# The operations, without gRPC (errors are VerdictdError; the servicers turn them into status text)


def _text(raw: bytes, what: str, limit: int) -> str:
    if len(raw) > limit:
        raise VerdictdError(f"{what}: {len(raw)} bytes, more than {limit}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VerdictdError(f"{what}: not UTF-8 (byte {e.start})") from None
    if "\x00" in text:
        raise VerdictdError(f"{what}: has a NUL character")
    return text


def _name(raw: bytes, what: str) -> str:
    name = _text(raw, what, MAX_NAME_BYTES)
    if not name:
        raise VerdictdError(f"{what}: empty")
    return name


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = strictjson.loads(text)
    except RecursionError:
        raise VerdictdError(f"{what}: nested too deeply") from None
    except ValueError as e:
        raise VerdictdError(f"{what}: not JSON ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(value, dict):
        raise VerdictdError(f"{what}: not a JSON object")
    return value


class AdminApi:
    """The clientapi operations on ``store``. ``policy`` compiles and tests Rego; ``default_policies`` are the
    built-in policy texts by name (what exportOpaPolicy and TestOpa use for a name the owner never set)."""

    def __init__(self, store: Store, policy: PolicyTester, default_policies: Mapping[str, str] | None = None,
                 new_key: Callable[[], bytes] = lambda: os.urandom(KEY_SIZE)) -> None:
        self.store = store
        self.policy = policy
        self.default_policies = dict(default_policies or {})
        self._new_key = new_key

    def _audit(self, event: str, **detail: Any) -> None:
        self.store.audit(f"clientapi.{event}", {"by": _principal.get(), **detail})

    # -- keys

    def create_key(self) -> str:
        kid = str(uuid.uuid4())
        key = self._new_key()
        if len(key) != KEY_SIZE:
            raise VerdictdError(f"create key: the key source gave {len(key)} bytes, not {KEY_SIZE}")
        self.store.put_secret(KIND_KEY, kid, key, {"alg": "A256GCM", "source": "clientapi"})
        self._audit("create-key", kid=kid)
        return kid

    def get_key(self, raw_kid: bytes) -> bytes:
        kid = _name(raw_kid, "key id")
        key = self.store.get_secret(KIND_KEY, kid)
        if key is None:
            raise VerdictdError(f"key {kid!r} does not exist")
        self._audit("get-key", kid=kid)  # recorded before the key leaves: no record, no key
        return key

    def delete_key(self, raw_kid: bytes) -> None:
        kid = _name(raw_kid, "key id")
        if not self.store.delete_secret(KIND_KEY, kid):
            raise VerdictdError(f"key {kid!r} does not exist")
        self._audit("delete-key", kid=kid)

    # -- OPA policies and reference documents

    def set_policy(self, raw_name: bytes, raw_content: bytes) -> None:
        name = _name(raw_name, "policy name")
        text = _text(raw_content, f"policy {name!r}", MAX_POLICY)
        self.policy.check(text)
        self.store.put_policy(name, text)
        self._audit("set-opa-policy", name=name, size=len(raw_content))

    def export_policy(self, raw_name: bytes) -> str:
        name = _name(raw_name, "policy name")
        text = self.store.get_policy(name)
        if text is None:
            text = self.default_policies.get(name)
        if text is None:
            raise VerdictdError(f"policy {name!r} is not set")
        return text

    def set_reference(self, raw_name: bytes, raw_content: bytes) -> None:
        name = _name(raw_name, "reference name")
        text = _text(raw_content, f"reference {name!r}", MAX_REFERENCE)
        _json_object(text, f"reference {name!r}")
        self.store.put_secret(KIND_OPA_REFERENCE, name, raw_content, {"type": "application/json"})
        self._audit("set-opa-reference", name=name, size=len(raw_content))

    def export_reference(self, raw_name: bytes) -> str:
        name = _name(raw_name, "reference name")
        raw = self.store.get_secret(KIND_OPA_REFERENCE, name)
        if raw is None:
            raise VerdictdError(f"reference {name!r} is not set")
        return raw.decode("utf-8")

    def test(self, req: Any) -> dict[str, Any]:
        """TestOpa: ``req`` is a TestOpaRequest (policy/reference by name or, when ``*local``, by content)."""
        if req.policylocal:
            policy = _text(req.policycontent, "policy content", MAX_POLICY)
            if not policy:
                raise VerdictdError("parse policycontent failed: empty")
        else:
            policy = self.export_policy(req.policyname)
        if req.referencelocal:
            reference = _text(req.referencecontent, "reference content", MAX_REFERENCE)
            if not reference:
                raise VerdictdError("parse referencecontent failed: empty")
        else:
            reference = self.export_reference(req.referencename)
        doc = _text(req.input, "input", MAX_INPUT)
        if not doc:
            raise VerdictdError("parse input failed: empty")
        return self.policy.test(policy, reference, doc)

    # -- image verification files

    def set_image_policy(self, raw: bytes) -> None:
        doc = _json_object(_text(raw, "image policy", MAX_IMAGE_POLICY), "image policy")
        if not isinstance(doc.get("default"), list) or not doc["default"]:
            raise VerdictdError("image policy: needs a non-empty \"default\" list (containers-policy.json)")
        self.store.put_secret(KIND_IMAGE, IMAGE_POLICY, raw, {"type": "application/json"})
        self._audit("set-image-policy", size=len(raw))

    def set_image_sigstore(self, raw: bytes) -> None:
        text = _text(raw, "image sigstore", MAX_SIGSTORE)
        if not text.strip():
            raise VerdictdError("image sigstore: empty")
        self.store.put_secret(KIND_IMAGE, IMAGE_SIGSTORE, raw, {"type": "application/yaml"})
        self._audit("set-image-sigstore", size=len(raw))

    def export_image(self, file: str) -> str:
        raw = self.store.get_secret(KIND_IMAGE, file)
        if raw is None:
            raise VerdictdError(f"image {file} is not set")
        return raw.decode("utf-8")


# --------------------------------------------------------------------------------------------------
# gRPC servicers: thin, each failure becomes the status text


def _status(e: Exception) -> bytes:
    return str(e).replace("\n", " ")[:1024].encode()


class _KeyManager(pbg.KeyManagerServiceServicer):
    def __init__(self, api: AdminApi) -> None:
        self.api = api

    def CreateKey(self, request: Any, context: Any) -> Any:  # noqa: N802 (the RPC's name)
        try:
            return pb.CreateKeyResponse(status=OK.encode(), uuid=self.api.create_key().encode())
        except VerdictdError as e:
            return pb.CreateKeyResponse(status=_status(e))

    def GetKey(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            return pb.GetKeyResponse(status=OK.encode(), key=base64.b64encode(self.api.get_key(request.uuid)))
        except VerdictdError as e:
            return pb.GetKeyResponse(status=_status(e))

    def DeleteKey(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self.api.delete_key(request.uuid)
            return pb.DeleteKeyResponse(status=OK.encode())
        except VerdictdError as e:
            return pb.DeleteKeyResponse(status=_status(e))


class _Opa(pbg.OpaServiceServicer):
    def __init__(self, api: AdminApi) -> None:
        self.api = api

    def SetOpaPolicy(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self.api.set_policy(request.name, request.content)
            return pb.SetOpaPolicyResponse(status=OK.encode())
        except VerdictdError as e:
            return pb.SetOpaPolicyResponse(status=_status(e))

    def exportOpaPolicy(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            return pb.ExportOpaPolicyResponse(status=OK.encode(), content=self.api.export_policy(request.name).encode())
        except VerdictdError as e:
            return pb.ExportOpaPolicyResponse(status=_status(e))

    def setOpaReference(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self.api.set_reference(request.name, request.content)
            return pb.SetOpaReferenceResponse(status=OK.encode())
        except VerdictdError as e:
            return pb.SetOpaReferenceResponse(status=_status(e))

    def exportOpaReference(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            content = self.api.export_reference(request.name).encode()
            return pb.ExportOpaReferenceResponse(status=OK.encode(), content=content)
        except VerdictdError as e:
            return pb.ExportOpaReferenceResponse(status=_status(e))

    def TestOpa(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            decision = self.api.test(request)
            return pb.TestOpaResponse(status=json.dumps(decision, separators=(",", ":"), sort_keys=True).encode())
        except VerdictdError as e:
            return pb.TestOpaResponse(status=b"make_decision error: " + _status(e))


class _Image(pbg.ImageServiceServicer):
    def __init__(self, api: AdminApi) -> None:
        self.api = api

    def exportImageSigstore(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            return pb.ExportImageSigstoreResponse(status=OK.encode(),
                                                  content=self.api.export_image(IMAGE_SIGSTORE).encode())
        except VerdictdError as e:
            return pb.ExportImageSigstoreResponse(status=_status(e))

    def setImageSigstore(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self.api.set_image_sigstore(request.content)
            return pb.SetImageSigstoreResponse(status=OK.encode())
        except VerdictdError as e:
            return pb.SetImageSigstoreResponse(status=_status(e))

    def exportImagePolicy(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            content = self.api.export_image(IMAGE_POLICY).encode()
            return pb.ExportImagePolicyResponse(status=OK.encode(), content=content)
        except VerdictdError as e:
            return pb.ExportImagePolicyResponse(status=_status(e))

    def setImagePolicy(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self.api.set_image_policy(request.content)
            return pb.SetImagePolicyResponse(status=OK.encode())
        except VerdictdError as e:
            return pb.SetImagePolicyResponse(status=_status(e))


# --------------------------------------------------------------------------------------------------
# Authentication


def load_token(path: str) -> bytes:
    """An admin bearer token from ``path`` (a regular file, mode 0600 or tighter; surrounding whitespace
    dropped; 16..4096 printable ASCII characters)."""
    data = read_secret_file(path, "admin token file", MAX_TOKEN + 64,
                            f"a token is {MIN_TOKEN}..{MAX_TOKEN} printable characters", follow=False)
    return check_token(data.strip(), f"admin token file {path}")


def check_token(token: bytes, where: str) -> bytes:
    """``token`` if it is a usable bearer token: 16..4096 printable ASCII characters without spaces."""
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN or not all(0x21 <= b <= 0x7E for b in token):
        raise VerdictdError(f"{where}: a token must be {MIN_TOKEN}..{MAX_TOKEN} printable ASCII characters "
                            f"without spaces")
    return token


def cert_fingerprint(pem_or_der: bytes) -> str:
    """SHA-256 (lower-case hex) of a certificate's DER encoding."""
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            der = x509.load_pem_x509_certificate(pem_or_der).public_bytes(Encoding.DER)
        except ValueError as e:
            raise VerdictdError(f"certificate: not a PEM certificate ({e})") from None
    else:
        der = pem_or_der
    return hashlib.sha256(der).hexdigest()


def _pin(text: str) -> str:
    pin = text.replace(":", "").strip().lower()
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise VerdictdError(f"client certificate pin {text[:80]!r}: not a SHA-256 fingerprint (64 hex digits)")
    return pin


@dataclass(frozen=True)
class AdminAuth:
    """Who may call the admin API. ``token``: the bearer token callers send as ``authorization: Bearer
    <token>``. ``cert_pem``/``key_pem``: the server's TLS certificate and key (TLS is off without them).
    ``client_ca_pem``: the CA bundle client certificates must chain to (turns on mutual TLS; a self-signed client
    certificate may be its own CA). ``client_pins``: SHA-256 fingerprints the client certificate must be one of
    (needs ``client_ca_pem``). Every factor given is required."""

    token: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    client_ca_pem: bytes | None = None
    client_pins: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token, "admin token")
        if (self.cert_pem is None) != (self.key_pem is None):
            raise VerdictdError("admin API TLS: give both the certificate and its key")
        if self.client_ca_pem is not None and self.cert_pem is None:
            raise VerdictdError("admin API: client certificates (mutual TLS) need the server's TLS certificate")
        if self.client_pins and self.client_ca_pem is None:
            raise VerdictdError("admin API: client certificate pins need the client CA (or the pinned certificates "
                                "themselves) to verify against")
        object.__setattr__(self, "client_pins", frozenset(_pin(p) for p in self.client_pins))
        if self.token is None and self.client_ca_pem is None:
            raise VerdictdError("admin API: no authentication configured (a token, client certificates or both); "
                                "it is never open")

    @property
    def tls(self) -> bool:
        return self.cert_pem is not None

    def credentials(self) -> grpc.ServerCredentials | None:
        if self.cert_pem is None or self.key_pem is None:
            return None
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)], root_certificates=self.client_ca_pem,
                                           require_client_auth=self.client_ca_pem is not None)

    def check(self, metadata: Iterable[tuple[str, Any]] | None, context: Any) -> str | None:
        """The caller's description for the audit trail, or None if it may not call."""
        who: list[str] = []
        if self.client_ca_pem is not None:
            # the TLS layer already refused a certificate that does not chain to the CA; pins narrow it further
            certs = context.auth_context().get("x509_pem_cert") or []
            if not certs:
                return None
            fp = cert_fingerprint(certs[0])
            if self.client_pins and fp not in self.client_pins:
                return None
            who.append(f"cert:{fp[:16]}")
        if self.token is not None:
            presented = b""
            for key, value in metadata or ():
                if key == AUTH_METADATA:
                    raw = value.encode() if isinstance(value, str) else bytes(value)
                    if raw[:7].lower() == b"bearer ":
                        presented = raw[7:].strip()
                    break
            # compare digests: constant time whatever the presented length
            if not hmac.compare_digest(hashlib.sha256(presented).digest(), hashlib.sha256(self.token).digest()):
                return None
            who.append("token")
        return "+".join(who)


class _AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Every call (known method or not) is checked before it runs; ``public`` methods (full paths) are exempt
    (for services with their own authorisation, e.g. the key provider's attestation tokens)."""

    def __init__(self, auth: AdminAuth, public: frozenset[str]) -> None:
        self.auth = auth
        self.public = public

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method in self.public:
            return continuation(details)
        handler = continuation(details)
        auth = self.auth
        metadata = details.invocation_metadata

        def admit(context: Any) -> None:
            who = auth.check(metadata, context)
            if who is None:
                log.warning("clientapi: refused an unauthenticated call to %s from %s", details.method,
                            context.peer())
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "verdictd admin API: authentication required "
                              "(a valid bearer token and/or client certificate)")
            _principal.set(who or "?")

        if handler is None or handler.unary_unary is None:
            def refuse(request: Any, context: Any) -> Any:
                admit(context)
                context.abort(grpc.StatusCode.UNIMPLEMENTED, f"method {details.method} is not served here")

            return grpc.unary_unary_rpc_method_handler(refuse)
        inner = handler.unary_unary

        def guarded(request: Any, context: Any) -> Any:
            admit(context)
            try:
                return inner(request, context)
            except VerdictdError as e:  # a store failure outside the servicers' own handling
                context.abort(grpc.StatusCode.INTERNAL, str(e).replace("\n", " ")[:1024])
            except Exception as e:  # a bug: logged here, one line to the caller, the server goes on
                if type(e) is Exception:
                    raise  # context.abort's own (a bare Exception): the servicer chose the status
                log.exception("clientapi: %s failed", details.method)
                context.abort(grpc.StatusCode.INTERNAL, f"{details.method}: internal error ({type(e).__name__})")

        return grpc.unary_unary_rpc_method_handler(guarded, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


# --------------------------------------------------------------------------------------------------
# The server


def _is_unix(address: str) -> bool:
    return netaddr.is_unix(address)


def _unix_path(address: str) -> str:
    try:
        return netaddr.unix_path(address)
    except ValueError as e:
        raise VerdictdError(f"admin address {address!r}: {e}") from None


def _host(address: str) -> str:
    try:
        return netaddr.host_port(address)[0]
    except ValueError:
        raise VerdictdError(f"admin address {address!r}: expected HOST:PORT, [IPv6]:PORT or a unix socket path") \
            from None


class AdminServer:
    """The clientapi gRPC server on ``address`` (``HOST:PORT``, ``[IPv6]:PORT``, or a unix socket path /
    ``unix:PATH``). ``extra`` are further ``(add_XServicer_to_server, servicer)`` pairs on the same server
    (upstream served the key provider beside clientapi); ``public`` lists full method paths exempt from admin
    authentication. :meth:`start` binds and serves in gRPC's threads; :meth:`stop` ends it."""

    def __init__(self, api: AdminApi, auth: AdminAuth, address: str, *,
                 extra: Iterable[tuple[Callable[[Any, Any], None], Any]] = (),
                 public: Iterable[str] = (), max_workers: int = MAX_WORKERS,
                 max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS, max_message: int = MAX_MESSAGE,
                 io_timeout: float = grpcopts.IO_TIMEOUT, connection_age: float = grpcopts.CONNECTION_AGE) -> None:
        self.address = address
        self.unix_path = _unix_path(address) if _is_unix(address) else None
        if self.unix_path is None and not auth.tls and not netaddr.is_loopback(_host(address)):
            raise VerdictdError(f"admin address {address}: plain text is allowed only on a unix socket or a "
                                f"loopback address; give the admin API a TLS certificate")
        self.auth = auth
        self.port = 0
        options = [*grpcopts.server_options(max_message, io_timeout=io_timeout, connection_age=connection_age),
                   ("grpc.max_concurrent_streams", 16), ("grpc.max_connection_idle_ms", 300_000)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                              thread_name_prefix="verdictd-admin"),
                                   interceptors=[_AuthInterceptor(auth, frozenset(public))], options=options,
                                   maximum_concurrent_rpcs=max_concurrent_rpcs)
        pbg.add_KeyManagerServiceServicer_to_server(_KeyManager(api), self._server)  # type: ignore[no-untyped-call]
        pbg.add_OpaServiceServicer_to_server(_Opa(api), self._server)  # type: ignore[no-untyped-call]
        pbg.add_ImageServiceServicer_to_server(_Image(api), self._server)  # type: ignore[no-untyped-call]
        for add, servicer in extra:
            add(servicer, self._server)

    def start(self) -> AdminServer:
        target = self.address
        if self.unix_path is not None:
            target = "unix:" + self.unix_path
            try:
                st = os.lstat(self.unix_path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise VerdictdError(f"admin socket {self.unix_path}: {e.strerror}") from None
            else:
                if not stat.S_ISSOCK(st.st_mode):
                    raise VerdictdError(f"admin socket {self.unix_path}: exists and is not a socket")
                os.unlink(self.unix_path)  # a stale socket of an earlier run
        creds = self.auth.credentials()
        try:
            port = (self._server.add_secure_port(target, creds) if creds is not None
                    else self._server.add_insecure_port(target))
        except RuntimeError as e:
            raise VerdictdError(f"admin address {self.address}: cannot listen ({e})") from None
        if self.unix_path is None and port == 0:
            raise VerdictdError(f"admin address {self.address}: cannot listen")
        self.port = port
        self._server.start()
        if self.unix_path is not None:
            os.chmod(self.unix_path, 0o600)
        log.info("clientapi: serving on %s (%s)", self.address, "TLS" if self.auth.tls else "plain text")
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        self._server.stop(grace).wait()
        if self.unix_path is not None:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass

    def wait(self) -> None:
        self._server.wait_for_termination()
