"""verdictd assembled: the real store, reference values, policy engine, token issuer and JWE behind the
interfaces the protocol modules take (:mod:`.kbs`, :mod:`.eaa`, :mod:`.keyprovider`, :mod:`.clientapi`), and the
listeners started and stopped together. The command line is :mod:`inclavare.cli.verdictd`.

The adapters live here and only here:

- :class:`Policies`: attestation appraisal (the store's policy named after the TEE, else the built-in default;
  reference values from :class:`.refvalues.ReferenceValues`), resource and key decisions (the store's
  ``resource`` / ``keyprovider`` policy, else the default). Rego always sees an EAR-shaped input
  (``submods`` -> ``ear.status`` and ``ear.veraison.annotated-evidence``), whichever protocol asks, so one
  policy text serves the session cookie, the bearer token and the key provider alike. Simulated-platform
  evidence is appraised only when the daemon trusts the sim platform.
- :class:`StoreBackend`: KBS resources (secret kind ``resource``), EAA keys (kind ``key``) and EAA resources
  (upstream's ``Policy`` / ``Sigstore Config`` from the clientapi image files; ``repo/type/tag`` paths from the
  KBS resources), and the KBS admin changes (policies compiled before they are stored).

The EAR signing key is ``--token-key`` when given, else a secret (kind ``token-key``) in the store, generated at
first start, so tokens stay verifiable across restarts.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from inclavare.formats import kbs_jwe as jwe
from inclavare.formats.kbs import KbsFormatError
from inclavare.services.verdictd.errors import VerdictdError
from inclavare.services.verdictd.policy import (
    ATTESTATION_POLICIES,
    UNPROTECTED_TEES,
    Decision,
    PolicyEngine,
    default_policy,
)
from inclavare.services.verdictd.refvalues import ReferenceValues, RefValueError
from inclavare.services.verdictd.store import KIND_KEY, KIND_RESOURCE, Store
from inclavare.services.verdictd.tokens import TokenIssuer

log = logging.getLogger("inclavare.verdictd")

__all__ = ["DaemonConfig", "Policies", "StoreBackend", "Verdictd", "load_token_issuer", "open_state"]

KIND_TOKEN_KEY = "token-key"
TOKEN_KEY_NAME = "ear-es256"
RESOURCE_POLICY = "resource"
KEY_POLICY = "keyprovider"
_REQUEST_FIELDS = ("plugin", "resource", "resource-path", "query", "kid", "tee-pubkey")


def default_key_policy() -> str:
    """The built-in key policy of the key provider (``policies/keyprovider.rego``)."""
    return (resources.files("inclavare.services.verdictd") / "policies" / "keyprovider.rego").read_text("utf-8")


def default_policies(trust_sim: bool) -> dict[str, str]:
    """The built-in policy texts by the names the daemon looks up (sim and sample only when the sim platform is
    trusted)."""
    names = [t for t in ATTESTATION_POLICIES if t not in UNPROTECTED_TEES or trust_sim]
    out = {name: default_policy(name) for name in names}
    out[RESOURCE_POLICY] = default_policy(RESOURCE_POLICY)
    out[KEY_POLICY] = default_key_policy()
    return out


def ear_input(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The EAR claims shape the resource and key policies read, from a protocol's flat grant (the verified
    claims plus ``tee`` and ``tier``, as kbs.py and keyprovider.py pass them)."""
    tee, tier = flat.get("tee"), flat.get("tier")
    if not isinstance(tee, str) or not tee or not isinstance(tier, str):
        raise VerdictdError("resource policy input: no tee or tier in the attested claims")
    evidence = {k: v for k, v in flat.items() if k not in _REQUEST_FIELDS}
    return {"submods": {tee: {"ear.status": tier, "ear.veraison.annotated-evidence": evidence}}}


class Policies:
    """The owner's policies, read from the store on every decision (a change through an admin API applies to
    the next request; compiled texts are cached by the engine)."""

    def __init__(self, store: Store, refs: ReferenceValues, engine: PolicyEngine, *, trust_sim: bool) -> None:
        self.store, self.refs, self.engine, self.trust_sim = store, refs, engine, trust_sim
        self.defaults = default_policies(trust_sim)

    def text(self, name: str) -> str:
        stored = self.store.get_policy(name)
        if stored is not None:
            return stored
        text = self.defaults.get(name)
        if text is None:
            raise VerdictdError(f"policy {name!r}: none stored and no built-in default")
        return text

    def appraise(self, tee: str, claims: Mapping[str, Any], tcb_status: str | None) -> Decision:
        """kbs.Appraiser / eaa.Appraiser: the TEE's policy over its verified claims and the reference values."""
        if tee not in ATTESTATION_POLICIES:
            return Decision(False, "none", [f"tee {tee!r}: no attestation policy for it"])
        if tee in UNPROTECTED_TEES and not self.trust_sim:
            return Decision(False, "none", [f"{tee} evidence: this daemon does not trust the simulated platform"])
        return self.engine.appraise(self.text(tee), tee, dict(claims), tcb_status, self.refs.as_policy_data())

    def allow_resource(self, input: dict[str, Any]) -> bool:  # noqa: A002 (the Protocols' word)
        """kbs.Appraiser / keyprovider.KeyPolicy: Trustee's ``data.policy.allow`` over the EAR-shaped claims;
        the key provider's requests (``plugin: keyprovider``) go to the ``keyprovider`` policy."""
        plugin = input.get("plugin", "resource")
        if plugin not in ("resource", "keyprovider"):
            return False
        path = input.get("resource")
        query = input.get("query") if isinstance(input.get("query"), dict) else {}
        name = KEY_POLICY if plugin == "keyprovider" else RESOURCE_POLICY
        return self.engine.allow_resource(self.text(name), ear_input(input), str(path or ""), plugin, query)


class StoreBackend:
    """kbs.ResourceStore, kbs.PolicyAdmin, eaa KeyStore and ResourceStore over the store."""

    def __init__(self, store: Store, refs: ReferenceValues, engine: PolicyEngine) -> None:
        self.store, self.refs, self.engine = store, refs, engine

    # -- KBS resources (repo/type/tag) and EAA "Get <name>"

    def get_resource(self, path: str) -> bytes | None:
        from inclavare.services.verdictd.clientapi import EAA_IMAGE_NAMES, image_resource

        if path in EAA_IMAGE_NAMES:
            return image_resource(self.store, path)
        if path.count("/") != 2:
            return None
        return self.store.get_secret(KIND_RESOURCE, path)

    def put_resource(self, path: str, value: bytes) -> None:
        self.store.put_secret(KIND_RESOURCE, path, value)

    def delete_resource(self, path: str) -> bool:
        return self.store.delete_secret(KIND_RESOURCE, path)

    def list_resources(self) -> list[str]:
        return self.store.list_secrets(KIND_RESOURCE)

    # -- EAA keys

    def get_kek(self, kid: str) -> bytes | None:
        return self.store.get_secret(KIND_KEY, kid)

    # -- KBS admin

    def _compiled(self, name: str, text: str) -> None:
        from inclavare.services.verdictd.kbs import KbsError

        try:
            self.engine.check(text)
        except VerdictdError as e:
            raise KbsError(400, "PolicyError", f"policy {name!r} not stored: {str(e).splitlines()[0]}") from None

    def set_resource_policy(self, text: str) -> None:
        self._compiled(RESOURCE_POLICY, text)
        self.store.put_policy(RESOURCE_POLICY, text)

    def set_attestation_policy(self, policy_id: str, text: str) -> None:
        """Stored under the TEE name the daemon appraises with. Any other id (Trustee's client sends ``default``
        unless told otherwise) is refused: stored, it would never be used, and the owner would believe a policy
        is in force that is not."""
        from inclavare.services.verdictd.kbs import KbsError

        if policy_id not in ATTESTATION_POLICIES:
            known = ", ".join(ATTESTATION_POLICIES)
            raise KbsError(400, "PolicyError", f"attestation policy id {policy_id!r}: verdictd appraises evidence "
                                               f"with the policy named after its TEE ({known})")
        self._compiled(policy_id, text)
        self.store.put_policy(policy_id, text)

    def set_reference_value(self, name: str, values: list[Any], provenance: str,
                            expires: datetime.datetime | None) -> None:
        from inclavare.services.verdictd.kbs import KbsError

        try:
            self.refs.set(name, values, provenance, expires)
        except RefValueError as e:  # the caller's values, not the server's state: a 400
            raise KbsError(400, "InvalidRequest", str(e)) from None

    def get_reference_value(self, name: str) -> list[Any] | None:
        entry = self.refs.all().get(name)
        return None if entry is None else list(entry["values"])

    def list_reference_values(self) -> dict[str, dict[str, Any]]:
        return self.refs.all()

    def delete_reference_value(self, name: str) -> bool:
        try:
            return self.refs.remove(name)
        except RefValueError:  # not a name a reference value can have: there is none by it
            return False


class JweSealer:
    """kbs.Sealer: :func:`inclavare.formats.kbs_jwe.seal`."""

    def seal(self, tee_pubkey: dict[str, Any], plaintext: bytes) -> dict[str, Any]:
        try:
            return dict(jwe.seal(tee_pubkey, plaintext))
        except KbsFormatError as e:
            raise VerdictdError(str(e)) from None


def open_state(state_dir: str, kek: bytes) -> tuple[Store, ReferenceValues]:
    store = Store(state_dir, kek)
    return store, ReferenceValues(store)


def load_token_issuer(store: Store, key_pem: bytes | None, *, create: bool = True) -> TokenIssuer:
    """The EAR signer: ``key_pem`` (``--token-key``) when given, else the one kept in the store, generated and
    stored at first start when ``create``."""
    if key_pem is not None:
        return TokenIssuer(key_pem)
    stored = store.get_secret(KIND_TOKEN_KEY, TOKEN_KEY_NAME)
    if stored is not None:
        return TokenIssuer(stored)
    if not create:
        raise VerdictdError(f"state {store.path}: no EAR signing key yet (start verdictd once, or give --token-key)")
    issuer = TokenIssuer()
    store.put_secret(KIND_TOKEN_KEY, TOKEN_KEY_NAME, issuer.key_pem(), {"alg": "ES256", "kid": issuer.kid})
    store.audit("verdictd.token-key", {"action": "generated", "kid": issuer.kid})
    log.info("generated the EAR signing key %s (kept sealed in the state directory)", issuer.kid)
    return issuer


@dataclass
class DaemonConfig:
    """What the command line decided. Listener addresses are None when that listener is off."""

    state_dir: str
    kek: bytes
    trust_sim: bool = False
    sim_root_fingerprints: tuple[str, ...] = ()
    collateral: Any = None  # a DCAP collateral object (attestation.collateral.from_bundle)
    snp_certs: tuple[bytes, ...] = ()  # DER: AMD ASK/ASVK/ARK (and VCEKs/VLEKs) for SNP evidence
    token_key_pem: bytes | None = None
    token_ttl: int = 300
    # KBS (HTTP)
    kbs_listen: tuple[str, int] | None = None
    kbs_tls: Any = None  # ssl.SSLContext
    insecure_http: bool = False
    admin_listen: tuple[str, int] | None = None
    admin_token: str | None = None
    # EAA (RATS-TLS)
    eaa_listen: str | None = None
    eaa_config: Any = None  # RatsTlsConfig
    # gRPC
    client_api: str | None = None
    client_api_auth: Any = None  # clientapi.AdminAuth
    keyprovider_listen: str | None = None
    keyprovider_tls: dict[str, str | None] = field(default_factory=dict)
    # limits (docs/verdictd.md, "Limits"); None: each listener's own default
    io_timeout: float | None = None  # seconds per handshake / read / write (HTTP, EAA; gRPC handshake and grace)
    max_connections: int | None = None  # per HTTP or EAA listener
    grpc_connection_age: float = 300.0  # a gRPC connection is closed after this, so a stalled call frees its worker


class Verdictd:
    """The running daemon: :meth:`start` opens the state and every configured listener, :meth:`stop` ends them
    (idempotent) and closes the store. Nothing starts half way: a listener that cannot start stops the others."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.store, self.refs = open_state(config.state_dir, config.kek)
        try:
            self.engine = PolicyEngine()
            self.tokens = load_token_issuer(self.store, config.token_key_pem)
            self.policies = Policies(self.store, self.refs, self.engine, trust_sim=config.trust_sim)
            self.backend = StoreBackend(self.store, self.refs, self.engine)
        except BaseException:
            self.store.close()
            raise
        self._stoppers: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.addresses: dict[str, str] = {}

    def audit(self, event: str, detail: dict[str, Any]) -> None:
        self.store.audit(event, detail)

    def evidence_config(self) -> Any:
        from inclavare.services.verdictd.kbs import EvidenceConfig

        collateral: dict[str, Any] = {}
        if self.config.collateral is not None:
            collateral = {"sgx": self.config.collateral, "tdx": self.config.collateral}
            if self.config.trust_sim:
                collateral["sim"] = self.config.collateral
        return EvidenceConfig(trust_sim=self.config.trust_sim,
                              sim_root_fingerprints=self.config.sim_root_fingerprints, collateral=collateral,
                              snp_certs=tuple(self.config.snp_certs))

    def kbs_service(self) -> Any:
        from inclavare.services.verdictd.kbs import KbsService

        return KbsService(appraiser=self.policies, resources=self.backend, tokens=self.tokens, sealer=JweSealer(),
                          evidence=self.evidence_config(), admin=self.backend, token_ttl=self.config.token_ttl,
                          admin_token=self.config.admin_token, audit=self.audit)

    def key_provider(self) -> Any:
        from inclavare.services.verdictd.keyprovider import KeyProvider

        return KeyProvider(self.store, self.tokens, self.policies, audit=self.audit)

    def start(self) -> Verdictd:
        try:
            self._start_kbs()
            self._start_eaa()
            self._start_grpc()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_kbs(self) -> None:
        c = self.config
        if c.kbs_listen is None and c.admin_listen is None:
            return
        from inclavare.services.verdictd.kbs_http import KbsHttpServer

        service = self.kbs_service()
        limits: dict[str, Any] = {}
        if c.io_timeout is not None:
            limits["io_timeout"] = c.io_timeout
        if c.max_connections is not None:
            limits["max_connections"] = c.max_connections
        if c.kbs_listen is not None:
            kbs = KbsHttpServer(c.kbs_listen, service, tls=c.kbs_tls, insecure_http=c.insecure_http,
                                admin=c.admin_listen is None, jwks=self.tokens.jwks, **limits).start()
            self._stoppers.append(("kbs", kbs.stop))
            self.addresses["kbs"] = kbs.url
        if c.admin_listen is not None:
            admin = KbsHttpServer(c.admin_listen, service, tls=c.kbs_tls, insecure_http=c.insecure_http,
                                  attestation=False, admin=True, **limits).start()
            self._stoppers.append(("admin", admin.stop))
            self.addresses["admin"] = admin.url

    def _start_eaa(self) -> None:
        c = self.config
        if c.eaa_listen is None:
            return
        from inclavare.services.verdictd.eaa import EaaServer, Limits, listen

        limits = Limits()
        if c.io_timeout is not None:
            limits = dataclasses.replace(limits, handshake_timeout=c.io_timeout, read_timeout=c.io_timeout,
                                         write_timeout=c.io_timeout, queue_timeout=min(limits.queue_timeout,
                                                                                       c.io_timeout))
        if c.max_connections is not None:
            limits = dataclasses.replace(limits, max_connections=c.max_connections)
        server = EaaServer(c.eaa_config, self.backend, self.policies, self.backend, audit=self.audit,
                           limits=limits)
        sock = listen(c.eaa_listen)
        thread = server.start(sock)

        def stop() -> None:
            server.shutdown()
            thread.join(10.0)
            sock.close()

        self._stoppers.append(("eaa", stop))
        name = sock.getsockname()
        self.addresses["eaa"] = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)

    def _start_grpc(self) -> None:
        c = self.config
        if c.client_api is None and c.keyprovider_listen is None:
            return
        from inclavare.services.grpcopts import IO_TIMEOUT
        from inclavare.services.verdictd import keyprovider_grpc
        from inclavare.services.verdictd.proto import keyprovider_pb2_grpc

        provider = self.key_provider()
        io_timeout = IO_TIMEOUT if c.io_timeout is None else c.io_timeout
        if c.client_api is not None:
            from inclavare.services.verdictd.clientapi import AdminApi, AdminServer

            api = AdminApi(self.store, self.engine, self.policies.defaults)
            # as upstream verdictd: the key provider beside clientapi; WrapKey needs the admin credentials,
            # UnWrapKey is authorised by the caller's attestation token
            servicer = keyprovider_grpc.KeyProviderServicer(provider, allow_wrap=True)
            server = AdminServer(api, c.client_api_auth, c.client_api,
                                 extra=[(keyprovider_pb2_grpc.add_KeyProviderServiceServicer_to_server, servicer)],
                                 public=["/keyprovider.KeyProviderService/UnWrapKey"], io_timeout=io_timeout,
                                 connection_age=c.grpc_connection_age).start()
            self._stoppers.append(("client-api", server.stop))
            self.addresses["client-api"] = (c.client_api if server.unix_path is not None
                                            else f"{c.client_api.rpartition(':')[0]}:{server.port}")
        if c.keyprovider_listen is not None:
            t = c.keyprovider_tls
            unix = "/" in c.keyprovider_listen or c.keyprovider_listen.startswith("unix:")
            listening = keyprovider_grpc.serve(provider, c.keyprovider_listen, cert=t.get("cert"), key=t.get("key"),
                                               client_ca=t.get("ca"), allow_wrap=unix, io_timeout=io_timeout,
                                               connection_age=c.grpc_connection_age)
            self._stoppers.append(("keyprovider", listening.stop))
            self.addresses["keyprovider"] = (listening.address if listening.port == 0
                                             else f"{c.keyprovider_listen.rpartition(':')[0]}:{listening.port}")

    def stop(self) -> None:
        with self._lock:
            stoppers, self._stoppers = self._stoppers, []
        for name, stop in reversed(stoppers):
            try:
                stop()
            except Exception as e:  # noqa: BLE001 (stop the others whatever one listener does)
                log.warning("stopping %s: %s", name, e)
        self.store.close()
