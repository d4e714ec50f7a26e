"""verdictd: the owner's relying party. Evidence from a TEE is verified by inclavare.attestation, appraised by
the owner's Rego policy against reference values, and only then are secrets released: to a Trustee KBS 0.4.0
client (HTTPS, the answer a JWE to the TEE's key, an EAR attestation token) or to an upstream Inclavare EAA
client over RATS-TLS. State (keys, resources, policies, reference values, audit) lives in SQLite under a state
directory, secrets sealed with a key-encryption key kept outside it.

Modules:

* ``errors``: VerdictdError, the one error type of the package;
* ``store``: the SQLite state (WAL, fsync on commit, 0700/0600), secrets sealed under the KEK (AES-256-GCM with
  row-bound associated data), policies, the append-only audit table; ``refvalues``: reference values (hex or int,
  provenance, expiry) as Rego sees them in ``data.reference``;
* ``tokens``: EAR attestation tokens (JWT, ES256, draft-fv-rats-ear-05 claim names), JWKS, verification with
  the algorithm pinned; ``jwe``: KBS resource answers, a JWE to the TEE's RSA-OAEP-256 or ECDH-ES+A256KW key;
* ``kbs`` / ``kbs_evidence`` / ``kbs_http``: the Trustee KBS 0.4.0 protocol (sessions, SHA-384 report-data
  binding over canonical JSON, resources sealed to the TEE key, admin endpoints) over a hardened HTTPS listener;
* ``eaa`` / ``eaa_protocol`` / ``eaa_client``: upstream Inclavare verdictd's EAA key-broker protocol over mutual
  RATS-TLS (on inclavare.ratls.server); every client's evidence is verified and appraised in the TLS verify
  callback before any request;
* ``policy``: PolicyEngine (Rego via regopy): appraise, allow_resource, TestOpa; default policies in
  ``policies/{sgx,tdx,snp,sim,resource,keyprovider}.rego``;
* ``clientapi`` / ``clientapi_client``: upstream verdictd's admin API (gRPC clientapi: KeyManagerService,
  OpaService, ImageService), authenticated by token and/or mutual TLS; the `verdict` CLI's side;
* ``keyprovider`` / ``keyprovider_grpc``: the ocicrypt key provider (gRPC and the cmd protocol): wraps layer keys
  under the store's keys, unwraps only for a verified EAR token allowed by tier and key policy;
* ``daemon``: the assembly of the ``verdictd`` program (inclavare.cli.verdictd): the store, reference values,
  policy engine, token issuer and JWE behind the KBS, EAA, client API and key-provider interfaces.

May import: every library layer (formats, linux, runtime, sgx, sim, enclave, attestation, ratls).
"""
