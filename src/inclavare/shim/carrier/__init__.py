"""Carriers (issue 17): at Create the shim turns an ordinary image into a signed enclave image.

Selection, as upstream shim-rune: ``RUNE_CARRIER`` in the container's process env (taken out of the workload's
env), else the annotation ``enclave.carrier``, else the runtime handler's ``EnclaveCarrier`` (a key of the
handler's options TOML, ours: see :func:`inclavare.shim.service.handler_carrier`). This module is all a plain
container pays for (one env and annotation scan); the carriers themselves (:mod:`.carriers`), the signers
(:mod:`.signers`), the node config (:mod:`.nodeconfig`) and the bundle cache are imported only once a carrier
is selected (:mod:`.prepare`).

What is done: ``wasm`` and ``sim`` carriers, ``client``/``server``/``local`` signing, bundle cache L0/L1/L2.
What is left: ``occlum`` is an extension point (refused with what is missing); epm pools are not consulted.
"""

from __future__ import annotations

from typing import Any

from inclavare.enclave.config import is_pod_sandbox

ENV = "RUNE_CARRIER"
ANNOTATION = "enclave.carrier"
HANDLER_KEY = "EnclaveCarrier"
CARRIERS = ("wasm", "sim", "occlum")


def select(config: dict[str, Any], handler: str = "") -> tuple[str, str]:
    """(carrier name, where it came from) for an OCI config, or ("", "") when none is selected. Env wins over
    annotation over handler; a CRI pod sandbox (the pause container) is never carried, as upstream. Does not
    change ``config`` (see :func:`strip_env`)."""
    annotations = config.get("annotations") or {}
    if is_pod_sandbox(annotations):
        return "", ""
    for item in (config.get("process") or {}).get("env") or []:
        if isinstance(item, str) and item.startswith(ENV + "="):
            return item[len(ENV) + 1:].strip(), f"process env {ENV}"
    ann = annotations.get(ANNOTATION)
    if isinstance(ann, str) and ann:
        return ann.strip(), f"annotation {ANNOTATION}"
    if handler:
        return handler.strip(), f"runtime handler option {HANDLER_KEY}"
    return "", ""


def strip_env(config: dict[str, Any]) -> None:
    """Take ``RUNE_CARRIER`` out of the workload's environment (it is configuration for the shim)."""
    process = config.get("process") or {}
    env = process.get("env") or []
    kept = [e for e in env if not (isinstance(e, str) and e.startswith(ENV + "="))]
    if len(kept) != len(env):
        process["env"] = kept


def preload() -> bool:
    """Import what a carrier's Create needs (TOML, SQLite, cryptography, the enclave image code), for a spare
    shim while it waits for work -- off the Create's critical path. Only on a node that has a node config file
    (see :mod:`.nodeconfig`): elsewhere no container is expected to be carried and shims stay small. Returns
    whether it preloaded."""
    import os

    from inclavare.shim.carrier.nodeconfig import config_path

    if not os.path.exists(config_path()):
        return False
    import sqlite3  # noqa: F401
    import tomllib  # noqa: F401

    from cryptography.hazmat.primitives import serialization  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: F401

    import inclavare.enclave.image  # noqa: F401
    import inclavare.services.bundlecache  # noqa: F401
    import inclavare.sgx.signing  # noqa: F401
    import inclavare.shim.carrier.prepare  # noqa: F401

    return True
