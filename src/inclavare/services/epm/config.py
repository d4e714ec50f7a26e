"""epm's configuration file, as upstream's (TOML): ``root`` (where cache data lives), ``db_path`` (the
metadata database; SQLite here, boltdb upstream), ``db_timeout`` (seconds a writer waits for the lock),
``[grpc] address`` (the unix socket), ``[grpc] uid`` / ``gid`` (the socket's owner; -1 or absent: epm's own),
``[grpc] max_recv_message_size`` / ``max_send_message_size`` and
``[cache_pools.NAME] type = "..."`` (the pool types served, besides the built-in ``enclave-cache`` and
``bundle-cache`` (upstream's) and ``wasm-module`` and ``sim-image`` (the warm pools, inclavare.enclave.epm.warm)).

Upstream keys this port does not implement (``[grpc] tcp_address``, ``tcp_tls_cert``, ``tcp_tls_key``: epm serves
only its owner-only unix socket) and unknown keys are warned about, not fatal; a known key
with the wrong type or a bad value is an :class:`~.errors.EpmError` naming the key and the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field

from inclavare.services.epm.errors import EpmError

DEFAULT_ROOT = "/var/local/epm"
DEFAULT_DB_PATH = "/var/local/epm/epm.db"
DEFAULT_ADDRESS = "/var/run/epm/epm.sock"
DEFAULT_POOLS = ("enclave-cache", "bundle-cache", "wasm-module", "sim-image")
DEFAULT_DB_TIMEOUT = 10
MAX_MESSAGE = 4 << 20
MAX_CONFIG = 64 << 10
DATA_DIR = "data"  # under root: the caches' data, managed by epm
POOL_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

_UNSUPPORTED_GRPC = ("tcp_address", "tcp_tls_cert", "tcp_tls_key")


@dataclass(frozen=True)
class Config:
    """The settings epm runs with (defaults as upstream's where it has them)."""

    root: str = DEFAULT_ROOT
    db_path: str = DEFAULT_DB_PATH
    db_timeout: int = DEFAULT_DB_TIMEOUT
    address: str = DEFAULT_ADDRESS
    max_recv_message_size: int = MAX_MESSAGE
    max_send_message_size: int = MAX_MESSAGE
    pools: tuple[str, ...] = field(default=DEFAULT_POOLS)
    uid: int = -1
    gid: int = -1


def _abs_path(value: object, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise EpmError(f"{where}: {key} {value!r}: expected an absolute path")
    return os.path.normpath(value)


def _int(value: object, key: str, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EpmError(f"{where}: {key} {value!r}: expected an integer in {low}..{high}")
    return value


def parse(text: str, where: str = "epm config", warn: Callable[[str], None] | None = None) -> Config:
    """The :class:`Config` in TOML ``text``; ``warn`` receives one line per ignored key."""
    say = warn or (lambda _msg: None)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EpmError(f"{where}: not valid TOML ({e})") from None
    root = _abs_path(doc.pop("root", DEFAULT_ROOT), "root", where)
    db_path = _abs_path(doc.pop("db_path", os.path.join(root, "epm.db")), "db_path", where)
    db_timeout = _int(doc.pop("db_timeout", DEFAULT_DB_TIMEOUT), "db_timeout", where, 1, 3600)
    grpc = doc.pop("grpc", {})
    if not isinstance(grpc, dict):
        raise EpmError(f"{where}: [grpc] must be a table")
    address = grpc.pop("address", DEFAULT_ADDRESS)
    if isinstance(address, str) and address.startswith("unix://"):
        address = address[len("unix://"):]
    address = _abs_path(address, "[grpc] address", where)
    recv = _int(grpc.pop("max_recv_message_size", MAX_MESSAGE), "[grpc] max_recv_message_size", where,
                1024, 64 << 20)
    send = _int(grpc.pop("max_send_message_size", MAX_MESSAGE), "[grpc] max_send_message_size", where,
                1024, 64 << 20)
    uid = _int(grpc.pop("uid", -1), "[grpc] uid", where, -1, (1 << 32) - 2)
    gid = _int(grpc.pop("gid", -1), "[grpc] gid", where, -1, (1 << 32) - 2)
    for key in _UNSUPPORTED_GRPC:
        if key in grpc:
            grpc.pop(key)
            say(f"{where}: [grpc] {key} is not supported (epm serves only its owner-only unix socket); ignored")
    for key in grpc:
        say(f"{where}: unknown key [grpc] {key}; ignored")
    pools = list(DEFAULT_POOLS)
    cache_pools = doc.pop("cache_pools", {})
    if not isinstance(cache_pools, dict):
        raise EpmError(f"{where}: [cache_pools] must be a table")
    for name, pool in cache_pools.items():
        if not isinstance(pool, dict):
            raise EpmError(f"{where}: [cache_pools.{name}] must be a table")
        ptype = pool.pop("type", None)
        if not isinstance(ptype, str) or not POOL_TYPE_RE.fullmatch(ptype):
            raise EpmError(f"{where}: [cache_pools.{name}] type {ptype!r}: expected [a-z0-9][a-z0-9._-]{{0,63}}")
        for key in pool:
            say(f"{where}: unknown key [cache_pools.{name}] {key}; ignored")
        if ptype not in pools:
            pools.append(ptype)
    for key in doc:
        say(f"{where}: unknown key {key}; ignored")
    data = os.path.join(root, DATA_DIR)
    for key, value in (("[grpc] address", address), ("db_path", db_path)):
        if _inside(value, data):
            raise EpmError(f"{where}: {key} {value}: inside the cache data directory {data}")
    return Config(root, db_path, db_timeout, address, recv, send, tuple(pools), uid, gid)


def _inside(path: str, top: str) -> bool:
    return os.path.commonpath([path, top]) == top


def load(path: str, warn: Callable[[str], None] | None = None) -> Config:
    """The :class:`Config` in the TOML file ``path`` (at most 64 KiB)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG + 1)
    except OSError as e:
        raise EpmError(f"epm config {path}: {e.strerror}") from None
    if len(data) > MAX_CONFIG:
        raise EpmError(f"epm config {path}: more than {MAX_CONFIG} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise EpmError(f"epm config {path}: not UTF-8") from None
    return parse(text, f"epm config {path}", warn)
