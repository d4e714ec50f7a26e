"""The caller's side of verdictd's clientapi (clientapi.py): what the ``verdict`` CLI and tests use.

Each method makes one RPC and returns its result; a refused call (transport error, authentication, size) or an
error ``status`` raises :class:`VerdictdError` with one line naming the address and the RPC.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc

from inclavare.services.verdictd.clientapi import AUTH_METADATA, MAX_MESSAGE, OK
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.proto import clientapi_pb2 as pb
from inclavare.services.verdictd.proto import clientapi_pb2_grpc as pbg

DEFAULT_ADDRESS = "[::1]:60000"  # upstream verdict's default -c


def grpc_target(address: str) -> str:
    """gRPC's target for ``address``: a unix socket path (or ``unix:PATH``) or ``HOST:PORT``."""
    if address.startswith("unix:"):
        return address
    if "/" in address:
        return "unix:" + address
    return address


class AdminClient:
    """A connection to the clientapi at ``address``. ``token``: the bearer token; ``cacert``: the CA (PEM) to
    verify the server's TLS certificate (TLS is used when it or a client certificate is given); ``cert``/``key``:
    a client certificate for mutual TLS; ``server_name``: the name to check the server's certificate against,
    when it is not the address's host (e.g. over a unix socket)."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, token: bytes | None = None, cacert: bytes | None = None,
                 cert: bytes | None = None, key: bytes | None = None, server_name: str | None = None,
                 timeout: float = 30.0) -> None:
        if (cert is None) != (key is None):
            raise VerdictdError("clientapi: a client certificate needs its key (and the key its certificate)")
        self.address = address
        self.timeout = timeout
        self._metadata = ((AUTH_METADATA, "Bearer " + token.decode("ascii")),) if token is not None else ()
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", MAX_MESSAGE),
                                          ("grpc.max_send_message_length", MAX_MESSAGE)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        target = grpc_target(address)
        if cacert is not None or cert is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=cacert, private_key=key, certificate_chain=cert)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self.keys = pbg.KeyManagerServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.opa = pbg.OpaServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.image = pbg.ImageServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, name: str, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") and e.code() is not None else "ERROR"
            detail = (e.details() if hasattr(e, "details") else "") or ""
            raise VerdictdError(f"clientapi {self.address} {name}: {code}: {detail.splitlines()[0] if detail else ''}"
                                .rstrip(": ")) from None

    def _ok(self, name: str, response: Any) -> Any:
        status = bytes(response.status).decode("utf-8", "replace")
        if status != OK:
            raise VerdictdError(f"clientapi {self.address} {name}: {status}")
        return response

    # -- KeyManagerService

    def create_key(self) -> str:
        r = self._ok("CreateKey", self._call("CreateKey", self.keys.CreateKey, pb.CreateKeyRequest()))
        return bytes(r.uuid).decode()

    def get_key(self, kid: str) -> bytes:
        r = self._ok("GetKey", self._call("GetKey", self.keys.GetKey, pb.GetKeyRequest(uuid=kid.encode())))
        return base64.b64decode(bytes(r.key), validate=True)

    def delete_key(self, kid: str) -> None:
        self._ok("DeleteKey", self._call("DeleteKey", self.keys.DeleteKey, pb.DeleteKeyRequest(uuid=kid.encode())))

    # -- OpaService

    def set_opa_policy(self, name: str, content: bytes) -> None:
        req = pb.SetOpaPolicyRequest(name=name.encode(), content=content)
        self._ok("SetOpaPolicy", self._call("SetOpaPolicy", self.opa.SetOpaPolicy, req))

    def export_opa_policy(self, name: str) -> bytes:
        req = pb.ExportOpaPolicyRequest(name=name.encode())
        return bytes(self._ok("exportOpaPolicy", self._call("exportOpaPolicy", self.opa.exportOpaPolicy, req)).content)

    def set_opa_reference(self, name: str, content: bytes) -> None:
        req = pb.SetOpaReferenceRequest(name=name.encode(), content=content)
        self._ok("setOpaReference", self._call("setOpaReference", self.opa.setOpaReference, req))

    def export_opa_reference(self, name: str) -> bytes:
        req = pb.ExportOpaReferenceRequest(name=name.encode())
        r = self._call("exportOpaReference", self.opa.exportOpaReference, req)
        return bytes(self._ok("exportOpaReference", r).content)

    def test_opa(self, *, input_json: bytes, policy_name: str = "", policy_content: bytes | None = None,
                 reference_name: str = "", reference_content: bytes | None = None) -> dict[str, Any]:
        """TestOpa: the policy by name (stored) or content (local), the reference likewise; the decision."""
        req = pb.TestOpaRequest(policyname=policy_name.encode(), policycontent=policy_content or b"",
                                policylocal=policy_content is not None, referencename=reference_name.encode(),
                                referencecontent=reference_content or b"",
                                referencelocal=reference_content is not None, input=input_json)
        status = bytes(self._call("TestOpa", self.opa.TestOpa, req).status).decode("utf-8", "replace")
        try:
            decision = json.loads(status)
        except ValueError:
            decision = None
        if not isinstance(decision, dict):
            raise VerdictdError(f"clientapi {self.address} TestOpa: {status}")
        return decision

    # -- ImageService

    def set_image_policy(self, content: bytes) -> None:
        req = pb.SetImagePolicyRequest(content=content)
        self._ok("setImagePolicy", self._call("setImagePolicy", self.image.setImagePolicy, req))

    def export_image_policy(self) -> bytes:
        r = self._call("exportImagePolicy", self.image.exportImagePolicy, pb.ExportImagePolicyRequest())
        return bytes(self._ok("exportImagePolicy", r).content)

    def set_image_sigstore(self, content: bytes) -> None:
        req = pb.SetImageSigstoreRequest(content=content)
        self._ok("setImageSigstore", self._call("setImageSigstore", self.image.setImageSigstore, req))

    def export_image_sigstore(self) -> bytes:
        r = self._call("exportImageSigstore", self.image.exportImageSigstore, pb.ExportImageSigstoreRequest())
        return bytes(self._ok("exportImageSigstore", r).content)
