"""epm from the enclave side (issue 17): the wire contract and the client rune's enclave runtimes use.

* :mod:`.proto` -- upstream's ``v1alpha1.EnclavePoolManager`` API (the server in services/epm imports it from
  here: the enclave layer may not import services).
* :mod:`.client` -- a small gRPC client, used only when epm's socket exists and is root's; every failure means
  "no pool" (logged once at debug), never a failed container.
* :mod:`.trust` -- the rule an artifact from epm's pool must pass before its bytes are used.
* :mod:`.warm` -- the two pools that make enclave starts warm: wasm modules precompiled by wasmtime and
  pre-measured, pre-verified sim enclave images; and the forked helper that talks to epm on the host while the
  container's init stays single-threaded.

See docs/epm.md (config, pools, keys, trust, CLI).

Left: no size bound or eviction for the warm pools (entries stay until DeleteCache); files the host cannot see
before the container's mounts exist (a module in a bind mount) never use the pools; PAL v3's enclave fd/addr
hand-over (upstream's enclave-cache) is not done; native PALs do not use epm.
"""
