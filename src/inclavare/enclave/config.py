"""The effective enclave configuration of a container, from its process env and its annotations.

Keys as upstream rune reads them; the process environment wins over the annotation. The ``ENCLAVE_*``
variables are configuration for rune, so they are taken out of the workload's environment. The result is
kept in the container's state (``state["enclave"]``) so that ``exec`` and ``attest`` find it.
"""

from __future__ import annotations

import os

from inclavare.enclave.api import DEFAULT_LOG_LEVEL, LOG_LEVELS, EnclaveConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# field -> (process env variable, annotation)
KEYS: dict[str, tuple[str, str]] = {
    "type": ("ENCLAVE_TYPE", "enclave.type"),
    "path": ("ENCLAVE_RUNTIME_PATH", "enclave.runtime.path"),
    "args": ("ENCLAVE_RUNTIME_ARGS", "enclave.runtime.args"),
    "loglevel": ("ENCLAVE_RUNTIME_LOGLEVEL", "enclave.runtime.loglevel"),
    "ra_type": ("ENCLAVE_RA_TYPE", "enclave.attestation.ra_type"),
}
ENV_NAMES = frozenset(env for env, _ in KEYS.values())
# the annotation (and value "sandbox") that marks a pod's sandbox: containerd's CRI, CRI-O
SANDBOX_MARKS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
TYPE_SGX = "intelSgx"
TYPE_SIM = "sim"
TYPES = (TYPE_SGX, TYPE_SIM)
RA_TYPES = ("ecdsa", "epid-unlinkable", "epid-linkable", "none")

# Upstream injects these when they exist (in-kernel driver first, then the out-of-tree/legacy nodes).
SGX_ENCLAVE_DEVICES = ("/dev/sgx_enclave", "/dev/sgx/enclave", "/dev/isgx")
SGX_EXTRA_DEVICES = ("/dev/sgx_provision", "/dev/sgx/provision", "/dev/gsgx")
SGX_HOST_DIRS = ("/var/run/aesmd", "/var/run/epm")


def _name(field: str) -> str:
    env, ann = KEYS[field]
    return f"{env} / {ann}"


def is_pod_sandbox(annotations: dict[str, str] | None) -> bool:
    """A Kubernetes pod's sandbox (pause) container, as containerd's CRI and CRI-O mark it."""
    ann = annotations or {}
    return any(ann.get(key) == "sandbox" for key in SANDBOX_MARKS)


def resolve(process: dict[str, Any], annotations: dict[str, str] | None) -> dict[str, str] | None:
    """The effective config, or None when no enclave type is set. Removes ``ENCLAVE_*`` from
    ``process["env"]`` (in place). Raises EnclaveConfigError for unusable values.

    A pod's sandbox container ignores the ``enclave.*`` annotations: CRI runtimes hand it the pod's annotations,
    and the pause process is not the workload."""
    env_values: dict[str, str] = {}
    kept: list[str] = []
    for item in process.get("env") or []:
        name, sep, value = item.partition("=")
        if sep and name in ENV_NAMES:
            env_values[name] = value
        else:
            kept.append(item)
    ann = {} if is_pod_sandbox(annotations) else (annotations or {})
    out: dict[str, str] = {}
    for field, (env, key) in KEYS.items():
        if env in env_values:
            out[field] = env_values[env]
        elif key in ann:
            out[field] = str(ann[key])
    if env_values:
        process["env"] = kept
    if not out.get("type"):
        if out.get("path"):
            raise EnclaveConfigError(_name("type"), "not set, but an enclave runtime path is "
                                     f"({out['path']}); set it to one of {', '.join(TYPES)}")
        return None
    return validate(out)


def strip_env(process: dict[str, Any]) -> None:
    env = process.get("env") or []
    kept = [e for e in env if e.partition("=")[0] not in ENV_NAMES]
    if len(kept) != len(env):
        process["env"] = kept


def validate(cfg: dict[str, str]) -> dict[str, str]:
    etype = cfg["type"]
    if etype not in TYPES:
        raise EnclaveConfigError(_name("type"), f"unknown enclave type {etype!r} (known: {', '.join(TYPES)})")
    path = cfg.get("path", "")
    if not path:
        raise EnclaveConfigError(_name("path"), "not set: name the enclave runtime (a PAL .so, or builtin:NAME)")
    if not path.startswith("builtin:") and not os.path.isabs(path):
        raise EnclaveConfigError(_name("path"), f"{path!r} is not an absolute host path (or builtin:NAME)")
    level = cfg.get("loglevel") or DEFAULT_LOG_LEVEL
    if level not in LOG_LEVELS:
        raise EnclaveConfigError(_name("loglevel"), f"invalid log level {level!r} (one of {', '.join(LOG_LEVELS)})")
    ra = cfg.get("ra_type", "")
    if ra and ra.lower() not in RA_TYPES:
        raise EnclaveConfigError(_name("ra_type"), f"unknown attestation type {ra!r} (one of {', '.join(RA_TYPES)})")
    out = {"type": etype, "path": path, "args": cfg.get("args", ""), "loglevel": level}
    if ra:
        out["ra_type"] = ra.lower()
    return out


def pal_args(cfg: dict[str, str]) -> str:
    """What pal_init receives: upstream turns the commas of ENCLAVE_RUNTIME_ARGS into spaces."""
    return cfg.get("args", "").replace(",", " ")


def sgx_device() -> str | None:
    for dev in SGX_ENCLAVE_DEVICES:
        if os.path.exists(dev):
            return dev
    return None


def prepare_spec(cfg: dict[str, Any], enclave: dict[str, str]) -> list[str]:
    """Make the container fit its enclave type; returns warnings to log once for this container."""
    if enclave["type"] == TYPE_SIM:
        return ["enclave type sim: no hardware TEE is used; the enclave runtime runs as ordinary code and "
                "nothing in this container is protected"]
    if sgx_device() is None:
        raise EnclaveConfigError(_name("type"), "intelSgx needs an SGX device, and this machine has none "
                                 f"({', '.join(SGX_ENCLAVE_DEVICES)} not found); use type sim without hardware")
    _inject_sgx(cfg)
    return []


def _inject_sgx(cfg: dict[str, Any]) -> None:
    import stat

    linux = cfg.setdefault("linux", {})
    devices = linux.setdefault("devices", [])
    have = {d.get("path") for d in devices}
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    for path in SGX_ENCLAVE_DEVICES + SGX_EXTRA_DEVICES:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISCHR(st.st_mode):
            continue
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if path not in have:
            devices.append({"path": path, "type": "c", "major": major, "minor": minor,
                            "fileMode": stat.S_IMODE(st.st_mode), "uid": 0, "gid": 0})
        rules.append({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"})
    mounts = cfg.setdefault("mounts", [])
    targets = {m.get("destination") for m in mounts}
    for d in SGX_HOST_DIRS:
        if os.path.isdir(d) and d not in targets:
            mounts.append({"destination": d, "type": "bind", "source": d, "options": ["rbind", "rprivate"]})
