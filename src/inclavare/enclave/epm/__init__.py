"""epm from the enclave side (issue 17): the wire contract and rune's one epm client.

* :mod:`.proto` -- upstream's ``v1alpha1.EnclavePoolManager`` API at upstream HEAD (the server in services/epm
  imports it from here: the enclave layer may not import services).
* :mod:`.client` -- the gRPC client (socket setting, socket trust check), used only when epm's socket exists and
  is root's; every failure means "no pool" (logged once at debug), never a failed container.
* :mod:`.helper` -- the forked helper every epm call of rune runs in (rune's process must stay single-threaded);
  it can hand descriptors back.
* :mod:`.trust` -- the rule an artifact from epm's pool must pass before its bytes are used.
* :mod:`.warm` -- the two pools that make enclave starts warm: wasm modules precompiled by wasmtime and
  pre-measured, pre-verified sim enclave images.
* :mod:`.enclave` -- PAL v3's enclave fd/addr hand-over (upstream's enclave-cache-pool).

See docs/epm.md (config, pools, keys, trust, API) and docs/enclave.md (PAL v3).

Left: no size bound or eviction for the warm pools (entries stay until DeleteCache); files the host cannot see
before the container's mounts exist (a module in a bind mount) never use the pools; native PALs before v3 do not
use epm.
"""
