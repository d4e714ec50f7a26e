"""Reading a bundle's config.json from disk: the file I/O that :mod:`inclavare.formats.oci` leaves to its
caller, so the format module stays pure (bytes in, validated document out)."""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.
from inclavare import _fastos
from inclavare.errors import ConfigError
from inclavare.formats import oci

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def load_config(bundle: str, need_process: bool = True) -> "dict[str, Any]":
    """Read, parse and validate `<bundle>/config.json` (root.path must be a directory); return the parsed
    document unchanged."""
    path = _fastos.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError("config.json", f"not found in bundle {bundle}") from None
    except OSError as e:
        raise ConfigError("config.json", f"cannot read {path}: {e.strerror}") from None
    doc = oci.parse_config(raw)
    oci.validate_config(doc, bundle, need_process=need_process, stat=_fastos.stat)
    return doc
