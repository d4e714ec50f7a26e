"""The node's Inclavare Containers config: upstream's ``/etc/inclavare-containers/config.toml``, parsed with
tomllib, plus the keys this rebuild needs (marked *ours* below).

Upstream's keys: ``log_level`` (debug|info|warn|error; checked, not applied yet: the shim logs at
containerd's level), ``sgx_tool_sign`` (path of sgx_sign; kept, unused: we sign in-process), ``[containerd]
socket`` (unused: the cache's L0 key needs no image digest, see :mod:`.prepare`), ``[epm] socket`` (the
epm rune's runtimes in this shim use: :func:`shim_settings`), ``[enclave_runtime] signature_method``
(``server`` or ``client``, upstream's default ``server``; ``local`` is ours: a node-local key),
``[enclave_runtime.occlum] build_image / enclave_runtime_path / enclave_libos_path``, ``[signature]
server_address``.

Ours: ``[signature] ca_cert`` (CA bundle the server's certificate is checked against), ``token_file`` (a
bearer token, first line), ``client_cert`` / ``client_key`` (mTLS), ``public_key`` (PEM file: the server's
key is pinned to it), ``timeout`` (seconds); ``[signature] local_key`` (RSA-3072 e=3 PEM for
``signature_method = "local"``, must be a regular file, mode 0600 or stricter, owned by root or by us);
``[bundle_cache] root`` (default /var/lib/inclavare/bundle-cache) and ``max_bytes`` (default 10 GiB).

An absent file is the defaults. Unknown keys are warned about, one log line each; a bad value is a one-line
:class:`NodeConfigError` naming the key and the file. The path is ``$INCLAVARE_SHIM_CONFIG`` if set (tests,
alternative layouts), else :data:`DEFAULT_PATH`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from inclavare.errors import InclavareError

DEFAULT_PATH = "/etc/inclavare-containers/config.toml"
ENV_PATH = "INCLAVARE_SHIM_CONFIG"
EPM_SOCKET_ENV = "INCLAVARE_EPM_SOCKET"  # what rune's epm client reads (inclavare.enclave.epm.client)
DEFAULT_CACHE_ROOT = "/var/lib/inclavare/bundle-cache"
DEFAULT_CACHE_BYTES = 10 << 30
LOG_LEVELS = ("debug", "info", "warn", "warning", "error")
SIGNATURE_METHODS = ("server", "client", "local")

log = logging.getLogger("inclavare.shim.carrier")


class NodeConfigError(InclavareError):
    """The node config file is unreadable or holds an unusable value."""


@dataclass(frozen=True)
class OcclumConfig:
    build_image: str = ""
    enclave_runtime_path: str = ""
    enclave_libos_path: str = ""


@dataclass(frozen=True)
class SignatureConfig:
    server_address: str = ""
    ca_cert: str = ""
    token_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    public_key: str = ""
    timeout: float = 10.0
    local_key: str = ""


@dataclass(frozen=True)
class NodeConfig:
    path: str = DEFAULT_PATH
    log_level: str = "info"
    sgx_tool_sign: str = ""
    containerd_socket: str = "/run/containerd/containerd.sock"
    epm_socket: str = ""
    signature_method: str = "server"
    occlum: OcclumConfig = field(default_factory=OcclumConfig)
    signature: SignatureConfig = field(default_factory=SignatureConfig)
    cache_root: str = DEFAULT_CACHE_ROOT
    cache_max_bytes: int = DEFAULT_CACHE_BYTES


# section -> key -> (attribute, type); "" is the top level
_SCHEMA: dict[str, dict[str, tuple[str, type]]] = {
    "": {"log_level": ("log_level", str), "sgx_tool_sign": ("sgx_tool_sign", str)},
    "containerd": {"socket": ("containerd_socket", str)},
    "epm": {"socket": ("epm_socket", str)},
    "enclave_runtime": {"signature_method": ("signature_method", str)},
    "enclave_runtime.occlum": {k: (k, str) for k in ("build_image", "enclave_runtime_path", "enclave_libos_path")},
    "signature": {**{k: (k, str) for k in ("server_address", "ca_cert", "token_file", "client_cert", "client_key",
                                           "public_key", "local_key")}, "timeout": ("timeout", float)},
    "bundle_cache": {"root": ("cache_root", str), "max_bytes": ("cache_max_bytes", int)},
}
_KNOWN_EMPTY = ("enclave_runtime.graphene",)  # upstream's sample has it, empty


def config_path() -> str:
    return os.environ.get(ENV_PATH) or DEFAULT_PATH


def shim_settings(environ: dict[str, str] | None = None) -> tuple[str, str]:
    """What a shim process takes from the node config when it starts, before its fork server forks: sets
    ``INCLAVARE_EPM_SOCKET`` from ``[epm] socket`` (unless the environment already names one), so rune's
    runtimes in this shim use that epm; returns (``log_level``, error). No file: ("", "") after one stat; an
    unusable file: ("", its one-line error), for the shim to log (a carrier's Create reports it too)."""
    env = os.environ if environ is None else environ
    path = env.get(ENV_PATH) or DEFAULT_PATH
    if not os.path.exists(path):
        return "", ""
    try:
        cfg = load(path)
    except NodeConfigError as e:
        return "", str(e)
    if cfg.epm_socket:
        env.setdefault(EPM_SOCKET_ENV, cfg.epm_socket)
    return cfg.log_level, ""


def load(path: str | None = None) -> NodeConfig:
    """The node config at ``path`` (default :func:`config_path`); an absent file gives the defaults."""
    import tomllib

    path = path or config_path()
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return NodeConfig(path=path)
    except OSError as e:
        raise NodeConfigError(f"node config {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(text.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise NodeConfigError(f"node config {path}: not TOML: {e}") from None
    top: dict[str, Any] = {}
    sub: dict[str, dict[str, Any]] = {"occlum": {}, "signature": {}}
    _walk(doc, "", path, top, sub)
    return _build(path, top, sub)


def _walk(table: dict[str, Any], prefix: str, path: str, top: dict[str, Any], sub: dict[str, dict[str, Any]]) -> None:
    known = _SCHEMA.get(prefix, {})
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            if name in _SCHEMA or name in _KNOWN_EMPTY:
                if name in _KNOWN_EMPTY and value:
                    log.warning("node config %s: [%s] is not used by this shim; ignored", path, name)
                    continue
                _walk(value, name, path, top, sub)
            else:
                log.warning("node config %s: unknown table [%s]; ignored", path, name)
            continue
        if key not in known:
            log.warning("node config %s: unknown key %s; ignored", path, name)
            continue
        attr, want = known[key]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if want is float else \
            (type(value) is want)
        if not ok:
            kind = {str: "a string", int: "an integer", float: "a number"}[want]
            raise NodeConfigError(f"node config {path}: {name} = {value!r}: want {kind}")
        if prefix == "signature":
            sub["signature"][attr] = float(value) if want is float else value
        elif prefix == "enclave_runtime.occlum":
            sub["occlum"][attr] = value
        else:
            top[attr] = value


def _build(path: str, top: dict[str, Any], sub: dict[str, dict[str, Any]]) -> NodeConfig:
    def bad(name: str, problem: str) -> NodeConfigError:
        return NodeConfigError(f"node config {path}: {name}: {problem}")

    level = top.get("log_level", "info")
    if level not in LOG_LEVELS:
        raise bad("log_level", f"{level!r} is not one of debug, info, warn, error")
    method = top.get("signature_method", "server")
    if method not in SIGNATURE_METHODS:
        raise bad("enclave_runtime.signature_method", f"{method!r} is not one of {', '.join(SIGNATURE_METHODS)}")
    max_bytes = top.get("cache_max_bytes", DEFAULT_CACHE_BYTES)
    if max_bytes <= 0:
        raise bad("bundle_cache.max_bytes", f"{max_bytes} is not a positive integer")
    root = top.get("cache_root", DEFAULT_CACHE_ROOT)
    if not os.path.isabs(root):
        raise bad("bundle_cache.root", f"{root!r} is not an absolute path")
    sig = sub["signature"]
    if "timeout" in sig and not 0 < sig["timeout"] <= 600:
        raise bad("signature.timeout", f"{sig['timeout']} is not in (0, 600] seconds")
    for key in ("ca_cert", "token_file", "client_cert", "client_key", "public_key", "local_key"):
        if sig.get(key) and not os.path.isabs(sig[key]):
            raise bad(f"signature.{key}", f"{sig[key]!r} is not an absolute path")
    addr = sig.get("server_address", "")
    if addr and not addr.startswith(("http://", "https://")):
        raise bad("signature.server_address", f"{addr!r} is not an http:// or https:// URL")
    return NodeConfig(path=path, log_level=level, sgx_tool_sign=top.get("sgx_tool_sign", ""),
                      containerd_socket=top.get("containerd_socket", NodeConfig.containerd_socket),
                      epm_socket=top.get("epm_socket", ""), signature_method=method,
                      occlum=OcclumConfig(**sub["occlum"]), signature=SignatureConfig(**sig),
                      cache_root=root, cache_max_bytes=max_bytes)
