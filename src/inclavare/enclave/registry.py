"""Built-in (Python) enclave runtimes, selected with ``ENCLAVE_RUNTIME_PATH=builtin:NAME``.

The project's own runtimes are listed in :data:`BUILTINS` as ``"module:attribute"`` targets and imported only
when chosen. Other distributions add runtimes through the entry point group ``inclavare.enclave_runtimes``
(``name = "package.module:RuntimeClass"``); those are consulted only for names that are not built in, so a
third-party package cannot replace ``sim`` or ``wasm``.
"""

from __future__ import annotations

import importlib

from inclavare.enclave.api import EnclaveConfigError, EnclaveRuntime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ENTRY_POINT_GROUP = "inclavare.enclave_runtimes"
CONFIG_KEY = "enclave.runtime.path"

BUILTINS: dict[str, str] = {
    "sim": "inclavare.enclave.runtimes.sim:SimRuntime",
    "wasm": "inclavare.enclave.runtimes.wasm:WasmRuntime",
}


def _entry_points() -> dict[str, Any]:
    """Third-party runtimes by name (first one wins when two distributions claim a name)."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def known_builtins() -> list[str]:
    """Names usable after ``builtin:``: the project's own, then installed third-party ones, sorted."""
    names = set(BUILTINS)
    try:
        names.update(_entry_points())
    except Exception:  # a broken distribution must not hide the built-in names
        pass
    return sorted(names)


def _resolve(name: str) -> tuple[str, Any]:
    """(target description, loaded object) for ``name``, or EnclaveConfigError."""
    where = f"builtin:{name}"
    target = BUILTINS.get(name)
    if target is not None:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise EnclaveConfigError(CONFIG_KEY, f"{where}: cannot import {module_name}: {_one_line(exc)}") from exc
        try:
            return target, getattr(module, attr)
        except AttributeError:
            raise EnclaveConfigError(CONFIG_KEY, f"{where}: {module_name} has no {attr}") from None
    ep = _entry_points().get(name) if name else None
    if ep is None:
        known = ", ".join(known_builtins()) or "none"
        raise EnclaveConfigError(CONFIG_KEY, f"unknown built-in enclave runtime {name!r} (known: {known})")
    try:
        return ep.value, ep.load()
    except Exception as exc:
        raise EnclaveConfigError(
            CONFIG_KEY, f"{where}: cannot load entry point {ep.value} ({ENTRY_POINT_GROUP}): {_one_line(exc)}"
        ) from exc


def load_builtin(name: str) -> EnclaveRuntime:
    """A fresh instance of the runtime registered as ``name``; EnclaveConfigError when unknown or broken."""
    target, obj = _resolve(name)
    if not (isinstance(obj, type) and issubclass(obj, EnclaveRuntime)):
        raise EnclaveConfigError(CONFIG_KEY, f"builtin:{name}: {target} is not an EnclaveRuntime subclass")
    try:
        runtime = obj()
    except Exception as exc:
        raise EnclaveConfigError(CONFIG_KEY, f"builtin:{name}: cannot create {target}: {_one_line(exc)}") from exc
    return runtime


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
