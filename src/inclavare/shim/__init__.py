"""containerd-shim-rune-v2: the resident shim. Its process core (fork server, supervisor, stdio) drives the
runtime library in-process; the ttrpc server and the Task service sit on top of it.

May import: every layer below cli (formats, linux, runtime, sgx, sim, enclave, attestation, ratls, services).
"""
