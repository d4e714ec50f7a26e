"""Pure codecs, no I/O: the OCI spec and state, SGX structures, DCAP quotes, SEV-SNP reports, the CCEL event log,
PEM and DER, signals. Bytes in, typed values (or one-line errors) out.

May import: nothing of ours but the base modules (``inclavare.errors``).
"""
