"""The simulated SGX platform (enclave type ``sim``): genuine SGX formats, host-held keys, no confidentiality.

``report``: the per-host report key, EREPORT and the target's MAC check.

May import: formats.
"""
