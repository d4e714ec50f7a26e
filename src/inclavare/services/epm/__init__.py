"""epm, the Enclave Pool Manager (issue 17): upstream Inclavare's ``v1alpha1.EnclavePoolManager`` gRPC service.

Done: the API (proto/epm.proto: upstream's package, service, messages and field numbers, plus a Healthz RPC),
PAL v3's enclave ``fd``/``addr`` hand-over (:mod:`.enclave_pool`: the ``enclave-cache-pool`` pool, whose
descriptors epm holds and passes over a side socket; rune's side is inclavare.enclave.epm_enclave), the config
file (:mod:`.config`: upstream's ``root``, ``db_path``, ``[grpc] address``, ...), cache metadata in
SQLite (:mod:`.store`, kill -9 safe), the typed pools with upstream's SaveCache / SaveFinalCache / PickCache /
GetCache / ListCache / DeleteCache / LoadCache semantics and data kept under ``root`` (:mod:`.pool`), the server
on an owner-only unix socket with message caps and connection deadlines (:mod:`.server`; one epm per root
and per socket) and the ``epm`` CLI (cli/epm.py, launcher in scripts/setup.sh).

Left for later (issue 17): the shim as a client (rune is one for the PAL v3 pool), the pools that make starts warm
(wasmtime-precompiled modules, pre-measured sim enclave images), a size bound
with eviction, a check against upstream's Go client (only the descriptor is compared with upstream's field
numbers), a ListCache page that would exceed the send cap (1000 caches with large options) fails with
RESOURCE_EXHAUSTED rather than being shortened.
"""
