"""epm, the Enclave Pool Manager (issue 17): upstream Inclavare's ``v1alpha1.EnclavePoolManager`` gRPC service.

Done: the API (enclave/epm/proto/epm.proto, in the enclave layer so that rune can be a client: upstream's
package, service, messages and field numbers, plus a Healthz RPC), the config file (:mod:`.config`: upstream's
``root``, ``db_path``, ``[grpc] address``, ...), cache metadata in SQLite (:mod:`.store`, kill -9 safe), the
typed pools with upstream's SaveCache / SaveFinalCache / PickCache / GetCache / ListCache / DeleteCache /
LoadCache semantics and data kept under ``root`` (:mod:`.pool`; saved data is never group/other writable), the
server on an owner-only unix socket with message caps and connection deadlines (:mod:`.server`; one epm per root
and per socket) and the ``epm`` CLI (cli/epm.py, launcher in scripts/setup.sh).

Pools that make starts warm (docs/epm.md): ``wasm-module`` (modules precompiled by wasmtime) and ``sim-image``
(pre-measured, pre-verified sim enclave images), filled and read by rune's builtin:wasm / builtin:sim through
:mod:`inclavare.enclave.epm` (client, trust rule, forked helper); and PAL v3's enclave ``fd``/``addr`` hand-over
(:mod:`.enclave_pool`: the ``enclave-cache-pool`` pool, whose descriptors epm holds and passes over a side
socket; rune's side is inclavare.enclave.epm.enclave).

Left for later: a size bound with eviction, a check against upstream's Go client (only the descriptor is
compared with upstream's field numbers), a ListCache page that would exceed the send cap (1000 caches with large
options) fails with RESOURCE_EXHAUSTED rather than being shortened.
"""
