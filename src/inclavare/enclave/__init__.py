"""Enclave containers: the PAL API (ctypes and the Python PAL protocol), enclave configuration, the init-runelet
and exec runelets (executors for runtime/'s seam), the enclave agent, enclave runtimes (sim, wasm).

May import: runtime (its executor seam), formats, sgx, sim, ratls (an enclave that serves RATS-TLS from inside,
enclave.info_server).
"""
