"""Does a container config name an enclave? The cheap test a caller makes before it imports anything else
of enclave/ (this module imports nothing): plain containers never load the enclave executors."""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def mentions_enclave(cfg: "dict[str, Any]") -> bool:
    """Any ENCLAVE_* variable in process.env or enclave.* annotation (enclave.config.resolve decides)."""
    for e in (cfg.get("process") or {}).get("env") or ():
        if e.startswith("ENCLAVE_"):
            return True
    return any(k.startswith("enclave.") for k in cfg.get("annotations") or ())
