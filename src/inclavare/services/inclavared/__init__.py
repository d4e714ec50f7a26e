"""inclavared: the RATS-TLS relay between an off-cloud verifier (shelter) and confidential containers
(``relay``), the container side's identity server (``enclave_info``), and their wire formats (``protocol``)."""
