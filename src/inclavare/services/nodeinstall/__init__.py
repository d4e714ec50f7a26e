"""The node installer (``inclavare-node-install``): puts rune and containerd-shim-rune-v2 on a Kubernetes node,
adds the CRI runtime ``rune`` to containerd's config.toml, restarts containerd, labels the node; ``--uninstall``
undoes each step.

Modules: :mod:`.containerdconf` (the config.toml merge, with tomlkit so comments and layout stay),
:mod:`.payload` (the package, its dependencies and the launchers), :mod:`.restart` (systemd unit or pid file),
:mod:`.kube` (the node label through the API server), :mod:`.installer` (the steps, their order, the state file
that makes uninstall exact).

Done: everything above, tested on a temp host root with a private containerd (restarted by pid file, in its
own cgroup) and a fake API server (http and https). Left: the systemd restart path is exercised only through
its command line (no systemd on our machines), and the pid path's setns into the host's namespaces only runs
from a pod; containerd 2.x (config version 3) is merged into its new plugin name but never run here.
"""

from __future__ import annotations

from inclavare.errors import InclavareError


class NodeInstallError(InclavareError):
    """The installer cannot go on: bad input (config, flags, host root) or a step that failed; one line."""
