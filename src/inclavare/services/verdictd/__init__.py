"""verdictd: the owner's relying party. Evidence from a TEE is verified by inclavare.attestation, appraised by
the owner's Rego policy against reference values, and only then are secrets released: to a Trustee KBS 0.4.0
client (HTTPS, the answer a JWE to the TEE's key, an EAR attestation token) or to an upstream Inclavare EAA
client over RATS-TLS. State (keys, resources, policies, reference values, audit) lives in SQLite under a state
directory, secrets sealed with a key-encryption key kept outside it.

May import: every library layer (formats, linux, runtime, sgx, sim, enclave, attestation, ratls).
"""
