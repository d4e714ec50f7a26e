"""SGX operations above the pure formats: SIGSTRUCT signing and verification, the AESM socket client.

May import: formats.
"""
