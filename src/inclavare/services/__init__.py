"""Daemons: signature-server (and, as they land, verdictd, inclavared, epm). They never trust their input: size
limits, timeouts, authentication on admin interfaces, TLS by default, state that survives kill -9.

May import: every library layer (formats, linux, runtime, sgx, sim, enclave, attestation, ratls).
"""
