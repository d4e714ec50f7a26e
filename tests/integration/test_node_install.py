"""inclavare-node-install on a private containerd with its CRI plugin, as the DaemonSet runs it on a node: a
temp host root holds containerd's config.toml and pid file; the installer adds the CRI runtime ``rune`` and
restarts containerd by its pid file; a pod with ``runtime_handler: rune`` runs to completion through the
installed containerd-shim-rune-v2 launcher (from the copied package alone); ``--uninstall`` puts the config's
exact bytes back, restarts containerd again, and leaves nothing of ours in the host root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import is_root, needs_busybox
from tests.integration.cri_rig import start_with_test_images

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (containerd, namespaces, mounts, cgroups)"),
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                       reason="containerd/ctr are not installed (Debian package containerd)"),
    pytest.mark.skipif(not shutil.which("containerd-shim-runc-v2"),
                       reason="containerd-shim-runc-v2 is not installed (Debian package containerd)"),
    pytest.mark.skipif(shutil.which("gcc") is None and not os.environ.get("CC"),
                       reason="gcc is needed to build the pod sandbox (pause) image (scripts/setup.sh installs it)"),
    needs_busybox,
]

pb = pytest.importorskip("inclavare.testing.cri.api_pb2", reason="grpcio/protobuf are not installed")

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = "localhost/busybox:latest"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


def _install(host: Path, *more: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "inclavare.cli.node_install", "--host-root", str(host), "--host-view", str(host),
           "--restart", "pid", "--containerd-pid-file", "/run/containerd.pid", *more]
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def _cgroups_of(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup: controllers -> path."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}


def _reap(c: Any) -> None:
    """The installer restarted containerd: our Popen's process is gone (reap it); the pid file names the new one."""
    if c._proc is not None:
        c._proc.wait(timeout=30)
        c._proc = None
    assert c.running()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    from inclavare.testing.cri.containerd import CriContainerd, RuntimeHandler

    base = tmp_path_factory.mktemp("nodeinstall")
    host = base / "host"
    for d in ("etc/containerd", "usr/bin", "usr/local/bin", "run"):
        (host / d).mkdir(parents=True)
    python = "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else os.path.realpath(sys.executable)
    (host / "usr/bin/python3.11").symlink_to(python)
    c = CriContainerd(str(base / "c"), {"runc": RuntimeHandler.runc_shim(RUNC)})
    c.config = str(host / "etc/containerd/config.toml")  # containerd's config and pid file live in the host root
    c.pid_file = str(host / "run/containerd.pid")
    c.bin_dir = str(host / "usr/local/bin")  # containerd's PATH starts with the host's /usr/local/bin
    c.rune_shim_root = str(base / "rune-shim-root")
    old_env = {k: os.environ.get(k) for k in ("RUNE_SHIM_ROOT", "INCLAVARE_SIM_STATE_DIR")}
    os.environ["RUNE_SHIM_ROOT"] = c.rune_shim_root  # containerd's environment goes to its shims
    os.environ["INCLAVARE_SIM_STATE_DIR"] = str(base / "sim")
    # containerd runs in a cgroup of its own, as a service does (not the installer's): the restart must keep it
    from tests.integration.test_shim_cri import _make_cgroup

    cgroup = "/inclavare-nodeinstall-" + uuid.uuid4().hex[:8]
    dirs = _make_cgroup(cgroup)
    try:
        start_with_test_images(c, str(base))
        pid = c.pid()
        for d in dirs:
            Path(d, "cgroup.procs").write_text(str(pid))
        c.cgroup_for_test = cgroup
        yield c, host
    finally:
        c.purge()
        deadline = time.monotonic() + 10
        for d in dirs:
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_to_completion(cri: Any, c: Any, handler: str, script: str, **container_kw: Any) -> tuple[Any, str, Any]:
    uid = uuid.uuid4().hex[:12]
    pod = cri.run_pod(f"p-{uid}", handler, uid=uid, cgroup_parent=c.pod_cgroup(uid),
                      log_directory=os.path.join(c.log_root, uid), annotations={"enclave.runtime.loglevel": "debug",
                                                                              "other.example/x": "y"})
    cid = cri.create_container(pod, "c", BUSYBOX, ["sh", "-c", script], log_path="c.log", **container_kw)
    cri.start_container(cid)
    deadline = time.monotonic() + 60
    while (st := cri.container_status(cid)).state != pb.CONTAINER_EXITED:
        assert time.monotonic() < deadline, f"container never exited: {st}"
        time.sleep(0.05)
    return pod, cid, st


def test_install_run_a_rune_pod_uninstall(rig: tuple[Any, Path]) -> None:
    c, host = rig
    original = Path(c.config).read_bytes()
    before = _tree(host)
    old_pid = c.pid()
    old_cgroups = _cgroups_of(old_pid)
    assert c.cgroup_for_test in old_cgroups.values()
    r = _install(host)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    _reap(c)
    assert c.pid() != old_pid
    assert _cgroups_of(c.pid()) == old_cgroups  # the restarted containerd is where the old one was
    assert "restarted containerd (pid" in r.stdout
    cfg = Path(c.config).read_bytes()
    kept = cfg.decode().splitlines()
    assert all(line in kept for line in original.decode().splitlines())  # what was there stays, comments too
    assert b'runtime_type = "io.containerd.rune.v2"' in cfg
    with c.client(timeout=30) as cri:
        pod, cid, st = _run_to_completion(cri, c, "rune", "echo hello from rune; cat /proc/self/comm")
        assert (st.exit_code, st.reason) == (0, "Completed")
        log = Path(c.log_root) / pod.config.metadata.uid / "c.log"
        assert [line.split(" ", 3)[3] for line in log.read_text().splitlines()] == ["hello from rune", "cat"]
        # the shim that served it is the installed launcher, running the copied package
        info = cri.pod_info(pod.id)
        assert info["runtimeType"] == "io.containerd.rune.v2" and info["runtimeHandler"] == "rune"
        spec_annotations = cri.container_info(cid)["runtimeSpec"]["annotations"]
        assert spec_annotations["enclave.runtime.loglevel"] == "debug"  # pod_annotations = ["enclave.*"]
        assert "other.example/x" not in spec_annotations
        # the restarted containerd kept its environment: the shim's state root is the one it was given
        assert pod.id in os.listdir(os.path.join(c.rune_shim_root, "k8s.io"))
        cri.stop_pod(pod.id, timeout=20)
        cri.remove_pod(pod.id, timeout=20)
    # a second install changes nothing and does not restart containerd
    pid = c.pid()
    r = _install(host)
    assert r.returncode == 0 and "unchanged, containerd not restarted" in r.stdout, r.stdout + r.stderr
    assert c.pid() == pid and Path(c.config).read_bytes() == cfg
    # uninstall: exact bytes back, containerd restarted on them, nothing of ours left in the host root
    r = _install(host, "--uninstall")
    assert r.returncode == 0, r.stderr
    assert c.pid() != pid and c.running()
    assert _cgroups_of(c.pid()) == old_cgroups
    assert Path(c.config).read_bytes() == original
    after = _tree(host)
    after.pop("run/containerd.pid")
    before.pop("run/containerd.pid")
    assert after == before
    with c.client(timeout=30) as cri:  # the handler is gone with the config
        from inclavare.testing.cri.client import CriError

        with pytest.raises(CriError, match="rune"):
            cri.run_pod("p-after", "rune")


def test_bad_pid_file_changes_nothing(rig: tuple[Any, Path]) -> None:
    c, host = rig
    before = _tree(host)
    pid = c.pid()
    (host / "run/other.pid").write_text(f"{os.getpid()}\n")
    try:
        r = _install(host, "--containerd-pid-file", "/run/other.pid")
    finally:
        (host / "run/other.pid").unlink()
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("inclavare-node-install: pid ") and r.stderr.endswith(", not containerd\n")
    assert _tree(host) == before and c.pid() == pid
