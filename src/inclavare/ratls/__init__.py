"""Attested TLS: certificates carrying evidence (TCG DICE, rats-tls legacy, Gramine and other stacks' formats), the
TLS wrapper, attester and verifier registries. Attesters get evidence from the platforms (sgx, sim); verifiers use
attestation/.

May import: attestation, formats, sgx, sim.
"""
