"""Image encryption as containers/ocicrypt does it (skopeo, containerd imgcrypt, buildah, podman): the layer
cipher, the key wrappers, and encrypt/decrypt over an OCI image layout.

Modules:

* ``provider``: the ``provider`` key wrapper's client side (ocicrypt's key provider protocol over gRPC or a
  command), for verdictd's key provider (inclavare.services.verdictd.keyprovider*) or any other;
* ``layout``: encrypt/decrypt the layers of the images in an OCI image layout (new blobs, digests, sizes,
  annotations, media types), staged so that a refused layer leaves nothing behind.

The formats (annotation names, media types, options JSON: inclavare.formats.ocicrypt), the layer cipher
(AES_256_CTR_HMAC_SHA256: inclavare.formats.ocicrypt_cipher) and the ``jwe`` key wrapper (what ``skopeo copy
--encryption-key jwe:PUBKEY`` writes: inclavare.formats.ocicrypt_jwe) live below, because the enclave runtimes
decrypt layers inside the enclave boundary with the same code; OcicryptError is the one error type throughout.

Why these two are here (services level): the provider wrapper is a client of verdictd's key-provider service
(it uses verdictd's protobuf stubs), and the layout code does file I/O.

May import: every library layer (formats, linux, runtime, sgx, sim, enclave, attestation, ratls) and services.
"""
