"""A private containerd with its CRI plugin on: the Kubernetes path for tests and benchmarks.

:class:`CriContainerd` is :class:`inclavare.testing.containerd.PrivateContainerd` (own config, root, state,
sockets, log) with the CRI plugin enabled and configured for a machine with no registry, no kubelet and no
pod network (docs RIG.md, "containerd's CRI plugin"):

- ``sandbox_image`` is the pause image built by :mod:`inclavare.testing.cri.pause`; :meth:`CriContainerd.start`
  imports it and the busybox test image into namespace ``k8s.io`` (PullImage would contact a registry);
- ``disable_apparmor``, ``restrict_oom_score_adj`` (no CAP_SYS_RESOURCE here) and
  ``netns_mounts_under_state_dir`` (pod network namespaces live under BASE/state);
- CNI off: an empty conf dir of its own (the host's /etc/cni/net.d, which may hold podman's bridge, is not
  read), so pods are host-network pods (:meth:`inclavare.testing.cri.client.CriClient.pod_config`). A
  loopback-only CNI network is not enough: containerd 1.6 wants an address on the pod's ``eth0`` and fails
  RunPodSandbox with "failed to find network info for sandbox";
- runtime handlers, one per :class:`RuntimeHandler`, selected per pod by ``RunPodSandboxRequest.runtime_handler``.
  A runc-shim handler names its runtime binary (``BinaryName``) and its own ``--root`` (``Root``); a handler for
  another shim (``containerd-shim-rune-v2``, put in BASE/bin) only needs its ``runtime_type``.
- every pod's ``cgroup_parent`` goes under :attr:`CriContainerd.cgroup_parent`, one cgroup per instance, so
  leftovers can be found and removed.

    handlers = {"runc": RuntimeHandler.runc_shim("/usr/sbin/runc"), "rune": RuntimeHandler.runc_shim(rune)}
    with CriContainerd("/tmp/cri", handlers) as c:
        cri = c.client()
        pod = cri.run_pod("p1", handler="rune")      # cgroup_parent: c.pod_cgroup(uid)

CLI: python -m inclavare.testing.cri.containerd [--base DIR] [--rune PATH] [--runc PATH] start|stop|purge|status
``start`` also builds and imports the pause and busybox images; ``--rune`` defaults to this checkout's rune.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inclavare.testing._tool import run_tool
from inclavare.testing.containerd import CGROUP_ROOT, ContainerdError, PrivateContainerd, _toml_str

if TYPE_CHECKING:
    import argparse

    from inclavare.testing.cri.client import CriClient

CRI_NAMESPACE = "k8s.io"
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
BUSYBOX_IMAGE = "localhost/busybox:latest"
RUNC_SHIM = "io.containerd.runc.v2"
RUNE_SHIM = "io.containerd.rune.v2"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


@dataclass(frozen=True)
class RuntimeHandler:
    """One ``[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.NAME]`` table."""

    runtime_type: str
    options: dict[str, str | bool | int] = field(default_factory=dict)
    container_annotations: tuple[str, ...] = ()  # CRI annotations passed into the OCI spec (e.g. "enclave.*")

    @classmethod
    def runc_shim(cls, binary: str, root: str | None = None) -> RuntimeHandler:
        """The stock runc v2 shim running ``binary`` as its runtime, with state under ``root`` (the shim adds
        ``/k8s.io``); ``root`` None: BASE/NAME-root, filled in by :class:`CriContainerd`."""
        opts: dict[str, str | bool | int] = {"BinaryName": binary}
        if root is not None:
            opts["Root"] = root
        return cls(RUNC_SHIM, opts)

    @classmethod
    def rune_shim(cls) -> RuntimeHandler:
        """This project's containerd-shim-rune-v2 (:meth:`CriContainerd.install_rune_shim` puts it on PATH)."""
        return cls(RUNE_SHIM)


def _toml_value(v: str | bool | int) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return _toml_str(v)


class CriContainerd(PrivateContainerd):
    """A private containerd serving the CRI on its gRPC socket, with the given runtime handlers."""

    def __init__(self, base: str, handlers: dict[str, RuntimeHandler], *, default_handler: str | None = None,
                 sandbox_image: str | None = None, containerd: str | None = None, ctr_bin: str | None = None) -> None:
        from inclavare.testing.cri.pause import PAUSE_IMAGE

        super().__init__(base, CRI_NAMESPACE, containerd=containerd, ctr_bin=ctr_bin)
        if not handlers:
            raise ValueError("CriContainerd needs at least one runtime handler")
        self.handlers: dict[str, RuntimeHandler] = {}
        for name, h in handlers.items():
            if h.runtime_type == RUNC_SHIM and "Root" not in h.options:
                h = RuntimeHandler(h.runtime_type, {**h.options, "Root": os.path.join(self.base, f"{name}-root")},
                                   h.container_annotations)
            self.handlers[name] = h
        self.default_handler = default_handler or next(iter(self.handlers))
        self.sandbox_image = sandbox_image or PAUSE_IMAGE
        self.cni_conf_dir = os.path.join(self.base, "cni", "net.d")
        self.log_root = os.path.join(self.base, "pod-logs")
        self.rune_shim_root: str | None = None  # set by install_rune_shim
        # one cgroup per instance (a short hash of its base): pods' cgroups go below it
        self.cgroup_parent = "/inclavare-cri-" + hashlib.sha256(self.base.encode()).hexdigest()[:10]

    # -- config --------------------------------------------------------------------------------

    def disabled_plugins(self) -> list[str]:
        return []

    def extra_config(self) -> list[str]:
        cri = f'[plugins.{_toml_str(CRI_PLUGIN)}]'
        lines = [
            cri,
            f"  sandbox_image = {_toml_str(self.sandbox_image)}",
            "  disable_apparmor = true",
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            "  disable_tcp_service = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            f"{cri[:-1]}.containerd]",
            f"  default_runtime_name = {_toml_str(self.default_handler)}",
            '  snapshotter = "overlayfs"',
        ]
        for name, h in self.handlers.items():
            table = f"{cri[:-1]}.containerd.runtimes.{_toml_str(name)}]"
            lines += [table, f"  runtime_type = {_toml_str(h.runtime_type)}"]
            if h.container_annotations:
                lines.append(f"  container_annotations = [{', '.join(_toml_str(a) for a in h.container_annotations)}]")
            if h.options:
                lines.append(f"{table[:-1]}.options]")
                lines += [f"  {k} = {_toml_value(v)}" for k, v in h.options.items()]
        cni_bins = [d for d in CNI_BIN_DIRS if os.path.isdir(d)] or list(CNI_BIN_DIRS[:1])
        lines += [
            f"{cri[:-1]}.cni]",
            f"  bin_dir = {_toml_str(cni_bins[0])}",
            f"  conf_dir = {_toml_str(self.cni_conf_dir)}",
            "  max_conf_num = 1",
            "",
        ]
        return lines

    def write_config(self) -> str:
        os.makedirs(self.cni_conf_dir, exist_ok=True)
        os.makedirs(self.log_root, exist_ok=True)
        return super().write_config()

    # -- images and clients --------------------------------------------------------------------

    def import_test_images(self, work: str | None = None) -> list[str]:
        """Build (once, into ``work`` or BASE) and import the pause and busybox images; returns the image names."""
        from inclavare.testing.cri.pause import build_pause_image_tar
        from inclavare.testing.image import build_image_tar

        work = work or self.base
        have = self.images()
        if self.sandbox_image not in have:
            tar = os.path.join(work, "pause-oci.tar")
            if not os.path.exists(tar):
                build_pause_image_tar(tar, self.sandbox_image)
            self.import_image(tar)
        if BUSYBOX_IMAGE not in have:
            tar = os.path.join(work, "busybox-oci.tar")
            if not os.path.exists(tar):
                build_image_tar(tar, BUSYBOX_IMAGE)
            self.import_image(tar)
        return self.images()

    def install_rune_shim(self, root: str | None = None, env: dict[str, str] | None = None) -> str:
        """Write a ``containerd-shim-rune-v2`` launcher for this checkout into BASE/bin (first on containerd's
        PATH), its state under ``root`` (default BASE/rune-shim-root; the shim adds ``/k8s.io``); returns the
        root, also kept as :attr:`rune_shim_root`. ``env``: more variables for the shim (e.g.
        ``INCLAVARE_SIM_STATE_DIR``, the simulated platform its sim enclaves quote with). Call before
        :meth:`start`."""
        from inclavare.testing.launcher import write_shim_launcher

        self.rune_shim_root = root or os.path.join(self.base, "rune-shim-root")
        os.makedirs(self.bin_dir, exist_ok=True)
        write_shim_launcher(os.path.join(self.bin_dir, "containerd-shim-rune-v2"),
                            env={**(env or {}), "RUNE_SHIM_ROOT": self.rune_shim_root})
        return self.rune_shim_root

    def client(self, timeout: float = 30.0) -> CriClient:
        from inclavare.testing.cri.client import CriClient

        return CriClient(self.address, timeout=timeout, cgroup_root=self.cgroup_parent)

    def pod_cgroup(self, pod_uid: str) -> str:
        """A cgroup_parent for a pod (kubelet's cgroupfs layout: PARENT/pod<uid>); :meth:`client` gives pods
        without one this parent."""
        return f"{self.cgroup_parent}/pod{pod_uid}"

    def runtime_root(self, handler: str) -> str | None:
        """The runtime's --root directory for ``handler``'s containers (a runc-shim or rune-shim handler), if
        known."""
        h = self.handlers[handler]
        root = self.rune_shim_root if h.runtime_type == RUNE_SHIM else h.options.get("Root")
        return os.path.join(str(root), CRI_NAMESPACE) if root else None

    # -- cleanup -------------------------------------------------------------------------------

    def namespace_cgroups(self) -> list[str]:
        """This instance's pod cgroup parent in every hierarchy where it exists."""
        hiers = sorted(os.listdir(CGROUP_ROOT)) if os.path.isdir(CGROUP_ROOT) else []
        rel = self.cgroup_parent.lstrip("/")
        candidates = [os.path.join(CGROUP_ROOT, h, rel) for h in hiers] + [os.path.join(CGROUP_ROOT, rel)]
        return [d for d in candidates if os.path.isdir(d) and not os.path.islink(d)]

    def leftover_cgroups(self) -> list[str]:
        """Cgroup directories below this instance's parent (pods' and containers')."""
        found = []
        for top in self.namespace_cgroups():
            for dirpath, dirnames, _ in os.walk(top):
                found += [os.path.join(dirpath, d) for d in dirnames]
        return sorted(found)

    def remove_namespace_cgroups(self) -> None:
        """rmdir this instance's cgroups, deepest first; busy ones stay."""
        for d in sorted(self.leftover_cgroups(), key=len, reverse=True) + self.namespace_cgroups():
            try:
                os.rmdir(d)
            except OSError:
                pass

    def remove_all_pods(self, timeout: float = 20.0) -> list[str]:
        """Stop and remove every pod through the CRI (what a kubelet does when it drains); returns the problems."""
        from inclavare.testing.cri.client import CriError

        problems: list[str] = []
        with self.client(timeout=timeout) as cri:
            try:
                for pod in cri.list_pods():
                    for call in (cri.stop_pod, cri.remove_pod):
                        try:
                            call(pod.id)
                        except CriError as e:
                            problems.append(f"pod {pod.id}: {e}")
            except CriError as e:
                problems.append(str(e))
        return problems

    def stop(self) -> None:
        """Remove every pod (CRI, then ctr for anything left), stop containerd, unmount and rmdir leftovers."""
        if self.running():
            self.remove_all_pods()
        super().stop()
        deadline = time.monotonic() + 5
        while self.leftover_cgroups() and time.monotonic() < deadline:
            self.remove_namespace_cgroups()
            time.sleep(0.1)
        self.remove_namespace_cgroups()


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m inclavare.testing.cri.containerd [--base DIR] [--rune PATH] start|stop|purge|status"""
    import argparse
    import shutil

    ap = argparse.ArgumentParser(prog="python -m inclavare.testing.cri.containerd",
                                 description="a private containerd with the CRI plugin and runc/rune handlers")
    ap.add_argument("--base", default=os.environ.get("CRI_BASE", "/tmp/inclavare-cri"))
    ap.add_argument("--rune", help="rune binary for the `rune` handler (default: a launcher for this checkout)")
    ap.add_argument("--runc", default=shutil.which("runc") or "/usr/sbin/runc")
    ap.add_argument("cmd", choices=["start", "stop", "purge", "status"])
    a = ap.parse_args(argv)
    base = os.path.abspath(a.base)
    rune = a.rune
    if rune is None:
        from inclavare.testing.launcher import write_rune_launcher

        os.makedirs(base, exist_ok=True)
        rune = write_rune_launcher(os.path.join(base, "rune"))
    c = CriContainerd(base, {"runc": RuntimeHandler.runc_shim(a.runc), "rune": RuntimeHandler.runc_shim(rune)})
    return run_tool("containerd", ContainerdError, lambda: _command(a, c))


def _command(a: argparse.Namespace, c: CriContainerd) -> int:
    """One command of main() on ``c``."""
    if a.cmd == "start":
        c.start()
        c.import_test_images()
        print(f"containerd pid {c.pid()}, CRI on unix://{c.address}, log {c.log}")
        print(f"handlers: {', '.join(c.handlers)}; sandbox image {c.sandbox_image}; pods' cgroups under "
              f"{c.cgroup_parent}")
    elif a.cmd == "stop":
        c.stop()
    elif a.cmd == "purge":
        c.purge()
    else:
        if not c.running():
            print("containerd: not running")
            return 1
        from inclavare.testing.cri import api_pb2 as pb

        with c.client(timeout=10) as cri:
            v = cri.version()
            print(f"{v.runtime_name} {v.runtime_version} (CRI {v.runtime_api_version}), pid {c.pid()}")
            for pod in cri.list_pods():
                print(f"pod {pod.id[:13]} {pod.metadata.name} {pod.runtime_handler} "
                      f"{pb.PodSandboxState.Name(pod.state)}")
            for ct in cri.list_containers():
                print(f"  container {ct.id[:13]} {ct.metadata.name} in {ct.pod_sandbox_id[:13]} "
                      f"{pb.ContainerState.Name(ct.state)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
