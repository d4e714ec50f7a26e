"""containerd's config.toml: add or remove the CRI runtime ``rune`` without disturbing anything else.

tomlkit keeps comments, order and formatting of what it does not touch, so an administrator's file stays theirs.
The runtime table goes where containerd's CRI plugin reads runtimes for the file's config ``version``:

- version 1 (or none): ``[plugins.cri.containerd.runtimes.rune]``
- version 2 (containerd 1.x): ``[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune]``
- version 3 (containerd 2.x): ``[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rune]``

containerd 1.6's CRI sends a runtime whose type is not runc's only the generic ``runtimeoptions.v1.Options``,
so runc's option names for the rune shim live in the file ``options.ConfigPath`` names (docs/shim.md).
``pod_annotations`` lets the pod's ``enclave.*`` annotations through to the runtime (the CRI plugin drops every
other annotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tomlkit
import tomlkit.exceptions

from inclavare.services.nodeinstall import NodeInstallError

RUNTIME_NAME = "rune"
RUNTIME_TYPE = "io.containerd.rune.v2"
POD_ANNOTATIONS = ["enclave.*"]
MARK = "added by inclavare-node-install; `inclavare-node-install --uninstall` removes it"

_CRI_PLUGIN = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
MAX_CONFIG = 4 << 20  # a containerd config is a few KiB; refuse to parse anything absurd


@dataclass(frozen=True)
class Runtime:
    """What the installer puts in the runtime table."""

    config_path: str  # the shim's options file (runc's option names), as the host sees it
    name: str = RUNTIME_NAME

    def table(self) -> dict[str, Any]:
        return {"runtime_type": RUNTIME_TYPE, "pod_annotations": list(POD_ANNOTATIONS),
                "options": {"ConfigPath": self.config_path}}


def parse(text: bytes, where: str) -> tomlkit.TOMLDocument:
    """The document, or a one-line NodeInstallError naming ``where``."""
    if len(text) > MAX_CONFIG:
        raise NodeInstallError(f"{where}: {len(text)} bytes, more than a containerd config can be ({MAX_CONFIG})")
    try:
        return tomlkit.parse(text.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise NodeInstallError(f"{where}: not UTF-8 text (byte {e.start})") from None
    except tomlkit.exceptions.ParseError as e:
        raise NodeInstallError(f"{where}: not valid TOML: {str(e).splitlines()[0]}") from None


def runtimes_path(doc: tomlkit.TOMLDocument, where: str) -> list[str]:
    """The keys from the top to the CRI plugin's ``runtimes`` table for this file's ``version``."""
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in _CRI_PLUGIN:
        raise NodeInstallError(f"{where}: version = {version!r}: containerd config versions are 1, 2 and 3")
    return ["plugins", _CRI_PLUGIN[version], "containerd", "runtimes"]


def _lookup(doc: tomlkit.TOMLDocument, keys: list[str], where: str) -> Any:
    """The item at ``keys`` or None; a non-table on the way is bad input."""
    cur: Any = doc
    for i, k in enumerate(keys):
        if not isinstance(cur, dict):
            raise NodeInstallError(f"{where}: {'.'.join(keys[:i])} is a {type(cur).__name__}, not a table")
        if k not in cur:
            return None
        cur = cur[k]
    return cur


def _plain(value: Any) -> Any:
    """A tomlkit item as plain Python values (for comparisons)."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def current(text: bytes, where: str, name: str = RUNTIME_NAME) -> dict[str, Any] | None:
    """The runtime table ``name`` as plain values, or None when the config has none."""
    doc = parse(text, where)
    t = _lookup(doc, [*runtimes_path(doc, where), name], where)
    if t is not None and not isinstance(t, dict):
        raise NodeInstallError(f"{where}: runtimes.{name} is not a table")
    return None if t is None else dict(_plain(t))


def add_runtime(text: bytes, rt: Runtime, where: str, *, replace: bool = False) -> bytes:
    """``text`` with the runtime table added. The same table already there: ``text`` unchanged (idempotent).
    Another table of that name: a NodeInstallError (nothing is overwritten) unless ``replace`` (it is the one
    a previous install wrote, an upgrade)."""
    doc = parse(text, where)
    keys = runtimes_path(doc, where)
    have = _lookup(doc, [*keys, rt.name], where)
    if have is not None:
        if _plain(have) == rt.table():
            return text
        if not replace:
            rtype = have.get("runtime_type") if isinstance(have, dict) else None
            raise NodeInstallError(
                f"{where}: a CRI runtime {rt.name!r} is already configured (runtime_type = {rtype!r}) and was not "
                "added by inclavare-node-install; remove it first")
    cur: Any = doc
    for k in keys:
        if k not in cur:
            cur[k] = tomlkit.table(is_super_table=True)
        cur = cur[k]
        if not isinstance(cur, dict):
            raise NodeInstallError(f"{where}: {k} is not a table")
    t = tomlkit.table()
    t.add(tomlkit.comment(MARK))
    want = rt.table()
    t["runtime_type"] = want["runtime_type"]
    t["pod_annotations"] = want["pod_annotations"]
    opts = tomlkit.table()
    opts.add(tomlkit.comment("runc's option names for the rune shim (IoUid, IoGid, ShimCgroup, ...)"))
    opts["ConfigPath"] = want["options"]["ConfigPath"]
    t["options"] = opts
    if have is not None:
        del cur[rt.name]
    cur[rt.name] = t
    out = tomlkit.dumps(doc)
    if not out.endswith("\n"):
        out += "\n"
    check = _lookup(parse(out.encode(), where), [*keys, rt.name], where)
    if check is None or _plain(check) != want:  # tomlkit placed it somewhere containerd would not read it
        raise NodeInstallError(f"{where}: could not add the runtime table (the merged file does not read back)")
    return out.encode()


def remove_runtime(text: bytes, where: str, name: str = RUNTIME_NAME) -> bytes:
    """``text`` without the runtime table ``name`` (unchanged when it has none); for a config edited since
    the install, whose exact previous bytes cannot simply come back."""
    doc = parse(text, where)
    keys = runtimes_path(doc, where)
    parent = _lookup(doc, keys, where)
    if not isinstance(parent, dict) or name not in parent:
        return text
    del parent[name]
    return tomlkit.dumps(doc).encode()
