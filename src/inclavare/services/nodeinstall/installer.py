"""The installer's steps and their order: check everything first (config parses, no foreign ``rune`` runtime,
a Python on the host, a way to restart containerd, the node's name in a cluster), then act; the state file
``INSTALL_DIR/node-install.json`` records what was written and what it replaced, so ``--uninstall`` puts back
the exact previous bytes.

Paths come in three views: a *host path* (``/etc/containerd/config.toml``, what the flags take), the
installer's view of it (under ``host_root``, e.g. /host in the DaemonSet) and the view of the programs that will
run on the host (under ``host_view``, ``/`` on a real node; a test that installs into a temp root on this
machine passes the temp root, so the launchers and containerd's ConfigPath name real files).

Install, in order: back up config.toml (first install only), copy the package (an upgrade replaces it), write
the shim's options file (kept if present), the launchers (a file of someone else's that was there is kept in
the backup), the merged config.toml (only if it changed), restart containerd (only then), label the node.
Uninstall: unlabel, config.toml back (its exact previous bytes when nobody edited it since; otherwise only our
table is taken out), restart containerd, launchers removed or put back, INSTALL_DIR removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inclavare.atomicfile import write_atomic
from inclavare.services.nodeinstall import NodeInstallError, containerdconf, kube, payload, restart

STATE = "node-install.json"
STATE_VERSION = 1
NEW_CONFIG = b"# containerd config written by inclavare-node-install (there was none)\nversion = 2\n"


@dataclass
class Options:
    """The installer's flags (host paths are absolute paths on the host)."""

    host_root: str = "/"
    host_view: str = "/"
    install_dir: str = "/opt/inclavare"
    bin_dir: str = "/usr/local/bin"
    config: str = "/etc/containerd/config.toml"
    python: str = "/usr/bin/python3.11"
    restart: str = "auto"  # auto, systemd, pid, none
    unit: str = "containerd"
    containerd_pid: int | None = None
    containerd_pid_file: str | None = None  # host path
    node: str | None = None
    kube_api: str | None = None
    kube_token_file: str | None = None
    kube_ca: str | None = None
    say: Callable[[str], None] = field(default=print)

    def here(self, host_path: str) -> str:
        """A host path in the installer's view."""
        return os.path.join(self.host_root, host_path.lstrip("/"))

    def seen(self, host_path: str) -> str:
        """A host path as the installed programs will see it."""
        return os.path.join(self.host_view, host_path.lstrip("/"))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(containerdconf.MAX_CONFIG + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NodeInstallError(f"{path}: {e.strerror}") from None


def _load_state(o: Options) -> dict[str, Any] | None:
    path = o.here(os.path.join(o.install_dir, STATE))
    raw = _read(path)
    if raw is None:
        return None
    try:
        st = json.loads(raw)
        if not isinstance(st, dict) or st.get("version") != STATE_VERSION:
            raise ValueError("unknown version")
        return st
    except ValueError as e:
        raise NodeInstallError(f"{path}: not the installer's state file ({e})") from None


def _save_state(o: Options, st: dict[str, Any]) -> None:
    write_atomic(o.here(os.path.join(o.install_dir, STATE)), json.dumps(st, indent=1).encode() + b"\n",
                 mode=0o644)


def _write_like(path: str, data: bytes, like: os.stat_result | None, mode: int = 0o644) -> None:
    """Replace ``path`` atomically, keeping the mode and owner of the file it replaces."""
    write_atomic(path, data, mode=like.st_mode & 0o7777 if like else mode)
    if like is not None:
        os.chown(path, like.st_uid, like.st_gid)


def _grpc_address(config: bytes | None) -> str:
    if config is None:
        return restart.DEFAULT_GRPC
    doc = containerdconf.parse(config, "config.toml")
    addr = doc.get("grpc", {}).get("address") if isinstance(doc.get("grpc"), dict) else None
    return str(addr) if addr else restart.DEFAULT_GRPC


def _api(o: Options) -> tuple[kube.Api | None, str | None]:
    """The API server and this node's name (checked with a GET), or (None, None) outside a cluster."""
    api = kube.in_cluster(o.kube_api, o.kube_token_file, o.kube_ca)
    if api is None:
        return None, None
    node = kube.node_name(o.node)
    kube.get_node(api, node)
    return api, node


def _restart_plan(o: Options) -> restart.Plan | None:
    pid_file = o.here(o.containerd_pid_file) if o.containerd_pid_file else None
    return restart.plan(o.host_root, method=o.restart, unit=o.unit, pid=o.containerd_pid, pid_file=pid_file)


def _restart(o: Options, plan: restart.Plan | None, config: bytes | None) -> None:
    if plan is None:
        o.say("containerd not restarted (--restart none): restart it to load the new config")
        return
    pid = restart.restart(plan, o.host_root, _grpc_address(config))
    o.say(f"restarted containerd ({plan.describe()})" + (f": new pid {pid}" if pid else ""))


def install(o: Options) -> int:
    st = _load_state(o)
    cfg_here = o.here(o.config)
    # -- checks: nothing is changed until all pass
    if st is not None and st["config"]["path"] != o.config:
        raise NodeInstallError(f"already installed with config {st['config']['path']}; uninstall first")
    if os.path.islink(cfg_here):  # replacing it would turn the link into a file; uninstall could not undo that
        raise NodeInstallError(f"{o.config} is a symbolic link: pass --containerd-config with the file it names")
    old = _read(cfg_here)
    shim_opts = os.path.join(o.install_dir, "etc", "rune-shim.toml")
    rt = containerdconf.Runtime(config_path=o.seen(shim_opts))
    new = containerdconf.add_runtime(NEW_CONFIG if old is None else old, rt, cfg_here, replace=st is not None)
    if not os.path.exists(o.here(o.python)):
        raise NodeInstallError(f"the host has no {o.python} (the programs need CPython 3.11, Debian 12's "
                               "python3.11; --python names another)")
    changed = new != old
    plan = _restart_plan(o) if changed else None
    api, node = _api(o)
    # -- act
    inst = o.here(o.install_dir)
    made = _missing_dirs(o, [o.install_dir, o.bin_dir, os.path.dirname(o.config)]) if st is None else []
    os.makedirs(os.path.join(inst, "backup", "bin"), exist_ok=True)
    if st is None:
        st = {"version": STATE_VERSION, "config": {"path": o.config, "existed": old is not None,
                                                   "backup": None, "mode": None, "installed_sha256": None},
              "files": {}, "label": None, "made_dirs": made}
        if old is not None:
            shutil.copy2(cfg_here, os.path.join(inst, "backup", "config.toml"))
            st["config"]["backup"] = "backup/config.toml"
            st["config"]["mode"] = os.stat(cfg_here).st_mode & 0o7777
        _save_state(o, st)
    n = payload.copy_lib(os.path.join(inst, "lib"))
    o.say(f"copied the inclavare package and its dependencies ({n} files) to {o.install_dir}/lib")
    opts_here = o.here(shim_opts)
    if not os.path.exists(opts_here):
        os.makedirs(os.path.dirname(opts_here), exist_ok=True)
        write_atomic(opts_here, payload.SHIM_OPTIONS.encode(), mode=0o644)
    os.makedirs(o.here(o.bin_dir), exist_ok=True)
    for name, (module, function) in payload.PROGRAMS.items():
        host_path = os.path.join(o.bin_dir, name)
        here = o.here(host_path)
        data = payload.launcher(o.seen(o.python), o.seen(os.path.join(o.install_dir, "lib")), module, function)
        rec = st["files"].get(host_path)
        if rec is None:
            backup = None
            if os.path.lexists(here):  # someone else's: kept, and put back on uninstall
                backup = os.path.join("backup", "bin", name)
                _move(here, os.path.join(inst, backup))
            rec = st["files"][host_path] = {"sha256": "", "backup": backup}
            _save_state(o, st)
        write_atomic(here, data, mode=0o755)
        rec["sha256"] = payload.sha256_bytes(data)
    _save_state(o, st)
    o.say(f"installed {', '.join(payload.PROGRAMS)} in {o.bin_dir}")
    if changed:
        like = os.stat(cfg_here) if old is not None else None
        os.makedirs(os.path.dirname(cfg_here), exist_ok=True)
        _write_like(cfg_here, new, like)
        st["config"]["installed_sha256"] = payload.sha256_bytes(new)
        _save_state(o, st)
        o.say(f"added the CRI runtime {rt.name!r} to {o.config}")
        _restart(o, plan, new)
    else:
        o.say(f"{o.config} already has the CRI runtime {rt.name!r}: unchanged, containerd not restarted")
    if api is not None and node is not None:
        kube.set_labels(api, node, {kube.LABEL: kube.LABEL_VALUE})
        st["label"] = {"node": node, "key": kube.LABEL}
        _save_state(o, st)
        o.say(f"labelled node {node} {kube.LABEL}={kube.LABEL_VALUE}")
    else:
        o.say("not in a Kubernetes cluster: node not labelled")
    return 0


def uninstall(o: Options) -> int:
    st = _load_state(o)
    if st is None:
        o.say(f"nothing installed by inclavare-node-install under {o.install_dir}")
        return 0
    inst = o.here(o.install_dir)
    cfg = st["config"]
    cfg_here = o.here(cfg["path"])
    # -- checks
    cur = _read(cfg_here)
    target: bytes | None  # the config to leave; None: no file
    from_backup = False
    if cfg["installed_sha256"] is None or cur is None:
        target = cur  # we never wrote it, or someone removed it
    elif payload.sha256_bytes(cur) == cfg["installed_sha256"]:
        target = _read(os.path.join(inst, cfg["backup"])) if cfg["backup"] else None
        if cfg["existed"] and target is None:
            raise NodeInstallError(f"the backup of {cfg['path']} ({o.install_dir}/{cfg['backup']}) is missing")
        from_backup = True
    else:
        target = containerdconf.remove_runtime(cur, cfg_here)
        o.say(f"{cfg['path']} was edited since the install: only the runtime table is removed")
    changed = target != cur
    plan = _restart_plan(o) if changed else None
    api, node = _api(o) if st.get("label") else (None, None)
    # -- act
    if st.get("label"):
        if api is not None and node is not None:
            kube.set_labels(api, node, {st["label"]["key"]: None})
            o.say(f"removed the label {st['label']['key']} from node {node}")
        else:
            o.say(f"not in a Kubernetes cluster: the label on node {st['label']['node']} stays")
    if changed:
        if target is None:
            os.unlink(cfg_here)
            o.say(f"removed {cfg['path']} (there was none before the install)")
        else:
            _write_like(cfg_here, target, os.stat(cfg_here))
            if from_backup and cfg["mode"] is not None:
                os.chmod(cfg_here, cfg["mode"])
            o.say(f"restored {cfg['path']}")
        _restart(o, plan, target)
    for host_path, rec in st["files"].items():
        here = o.here(host_path)
        if payload.sha256_file(here) == rec["sha256"]:
            os.unlink(here)
        elif os.path.lexists(here):
            o.say(f"{host_path} was changed since the install: left as it is")
            continue
        if rec["backup"]:
            _move(os.path.join(inst, rec["backup"]), here)
            o.say(f"put back the previous {host_path}")
    _remove_tree(inst)
    o.say(f"removed {o.install_dir}")
    for d in sorted(st.get("made_dirs", []), key=len, reverse=True):  # the parents the install made, if empty
        try:
            os.rmdir(o.here(d))
        except OSError:
            pass
    return 0


def _missing_dirs(o: Options, host_dirs: list[str]) -> list[str]:
    """The directories (host paths) among ``host_dirs`` and their parents that do not exist yet, but for
    ``install_dir`` itself (removed anyway)."""
    out: set[str] = set()
    for d in host_dirs:
        d = os.path.normpath(d)
        while d != "/" and not os.path.isdir(o.here(d)):
            out.add(d)
            d = os.path.dirname(d)
    out.discard(os.path.normpath(o.install_dir))
    return sorted(out)


def _move(src: str, dst: str) -> None:
    """Rename, or copy (a link as a link, mode and times kept) and unlink: in the DaemonSet the host's bin
    directory and INSTALL_DIR are separate mounts, and rename(2) does not cross mounts (EXDEV)."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.copy2(src, dst, follow_symlinks=False)
        os.unlink(src)


def _remove_tree(path: str) -> None:
    """Remove ``path`` and what it holds; a mount point (the DaemonSet's hostPath) stays, empty."""
    for entry in os.listdir(path):
        p = os.path.join(path, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    try:
        os.rmdir(path)
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EROFS):
            raise
