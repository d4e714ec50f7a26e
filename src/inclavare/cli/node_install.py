"""`inclavare-node-install`: put Inclavare Containers on a Kubernetes node (or take it off with --uninstall).

    inclavare-node-install [--host-root /host] [--node NAME] [--containerd-pid-file /run/containerd.pid] ...
    inclavare-node-install --uninstall [same flags]

Run by the installer DaemonSet (deploy/kubernetes/base/installer-daemonset.yaml) with the host's directories
under ``--host-root``; every other path flag is a path on the host. What it does and undoes:
:mod:`inclavare.services.nodeinstall.installer`. Progress lines go to stdout; an error is one line
``inclavare-node-install: ...`` on stderr and exit status 1 (bad input changes nothing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from inclavare.cli._common import Parser, run_program

PROG = "inclavare-node-install"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Install rune and the containerd CRI runtime `rune` on this node.")
    p.add_argument("--uninstall", action="store_true", help="undo a previous install")
    p.add_argument("--host-root", default="/", metavar="PATH", help="where the host's / is mounted (default /)")
    p.add_argument("--host-view", default="/", metavar="PATH",
                   help="where the host's programs see --host-root (default /; tests on one machine: the temp root)")
    p.add_argument("--install-dir", default="/opt/inclavare", metavar="PATH",
                   help="host directory for the package (default /opt/inclavare)")
    p.add_argument("--bin-dir", default="/usr/local/bin", metavar="PATH",
                   help="host directory for the launchers (default /usr/local/bin)")
    p.add_argument("--containerd-config", default="/etc/containerd/config.toml", metavar="FILE",
                   help="containerd's config on the host (default /etc/containerd/config.toml)")
    p.add_argument("--python", default="/usr/bin/python3.11", metavar="FILE",
                   help="the host's CPython 3.11 for the launchers (default /usr/bin/python3.11)")
    p.add_argument("--restart", choices=["auto", "systemd", "pid", "none"], default="auto",
                   help="how to restart containerd (auto: systemd if the host booted with it, else by pid)")
    p.add_argument("--systemd-unit", default="containerd", metavar="UNIT",
                   help="containerd's unit (default containerd)")
    p.add_argument("--containerd-pid", type=int, metavar="PID", help="containerd's pid (host pid namespace)")
    p.add_argument("--containerd-pid-file", metavar="FILE", help="a pid file naming containerd (host path)")
    p.add_argument("--node", metavar="NAME", help="this node's name (default $NODE_NAME)")
    p.add_argument("--kube-api", metavar="URL", help="the API server (default: in-cluster, $KUBERNETES_SERVICE_HOST)")
    p.add_argument("--kube-token-file", metavar="FILE", help="bearer token (default: the pod's service account)")
    p.add_argument("--kube-ca", metavar="FILE", help="CA of the API server (default: the service account's)")
    return p


def run(a: argparse.Namespace) -> int:
    from inclavare.services.nodeinstall import installer

    def say(msg: str) -> None:
        print(f"{PROG}: {msg}", flush=True)

    o = installer.Options(
        host_root=a.host_root, host_view=a.host_view, install_dir=a.install_dir, bin_dir=a.bin_dir,
        config=a.containerd_config, python=a.python, restart=a.restart, unit=a.systemd_unit,
        containerd_pid=a.containerd_pid, containerd_pid_file=a.containerd_pid_file, node=a.node,
        kube_api=a.kube_api, kube_token_file=a.kube_token_file, kube_ca=a.kube_ca, say=say)
    for flag, value in (("--install-dir", o.install_dir), ("--bin-dir", o.bin_dir),
                        ("--containerd-config", o.config), ("--python", o.python)):
        if not value.startswith("/"):
            from inclavare.errors import UsageError

            raise UsageError(f"{flag} {value!r}: a host path must be absolute")
    return installer.uninstall(o) if a.uninstall else installer.install(o)


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
