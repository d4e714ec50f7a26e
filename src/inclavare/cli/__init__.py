"""One module per program (or per rune command), thin: parse flags, call the library, map errors to exit codes
and one-line messages.

May import: anything below (formats, linux, runtime, sgx, sim, enclave, attestation, ratls, services, shim).
"""
