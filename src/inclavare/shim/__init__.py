"""containerd shim v2 (``containerd-shim-rune-v2``): the ttrpc wire (messages generated from containerd's
contracts in ``proto/``, the ttrpc server and client, the events publisher), the process core (``core``: fork
server, supervisor, stdio) that drives the runtime library in-process, and the Task service.

May import: every layer below it (formats, linux, runtime, sgx, sim, enclave, attestation, ratls, services).
"""
