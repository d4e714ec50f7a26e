"""containerd-shim-rune-v2 on the Kubernetes path: containerd's CRI plugin with a runtime handler ``rune-shim``
(``runtime_type = "io.containerd.rune.v2"``), driven over the CRI gRPC API as a kubelet would. The pod's
sandbox (pause) and its containers share one shim (grouped by ``io.kubernetes.cri.sandbox-id``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.testing.shimprocs import shim_pids
from tests.conftest import is_root, needs_busybox
from tests.integration.cri_rig import start_with_test_images
from tests.integration.test_containerd import unmounted_v1_hierarchies

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (containerd, namespaces, mounts, cgroups)"),
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                       reason="containerd/ctr are not installed (Debian package containerd)"),
    pytest.mark.skipif(shutil.which("gcc") is None and not os.environ.get("CC"),
                       reason="gcc is needed to build the pod sandbox (pause) image (scripts/setup.sh installs it)"),
    needs_busybox,
]

pb = pytest.importorskip("inclavare.testing.cri.api_pb2", reason="grpcio/protobuf are not installed")

HANDLER = "rune-shim"
OPTS_HANDLER = "rune-shim-opts"  # its options: ConfigPath = BASE/rune-shim-opts.toml (runc's option names)


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from inclavare.testing.cri.containerd import CriContainerd, RuntimeHandler

    base = tmp_path_factory.mktemp("shimcri")
    # containerd 1.6's CRI sends a non-runc runtime_type runtimeoptions.v1.Options: runc's keys reach the shim
    # through the TOML file ConfigPath names (read by every start of a shim, so a test rewrites it)
    opts_toml = str(base / "rune-shim-opts.toml")
    c = CriContainerd(str(base / "c"), {
        HANDLER: RuntimeHandler.rune_shim(),
        OPTS_HANDLER: RuntimeHandler(RuntimeHandler.rune_shim().runtime_type, {"ConfigPath": opts_toml})})
    c.install_rune_shim(str(base / "rune-shim-root"))
    try:
        start_with_test_images(c, str(base))
        yield c
    finally:
        c.purge()


@pytest.fixture
def env(ctrd: Any) -> Iterator[Any]:
    from tests.integration.test_cri import CriEnv

    e = CriEnv(ctrd)  # its runtime_state reads the shim's root (ctrd.runtime_root)
    try:
        yield e
    finally:
        e.cleanup()
        e.cri.close()


def test_pod_and_containers_in_one_shim(env: Any) -> None:
    cri = env.cri
    pod = env.run_pod(HANDLER)
    assert cri.pod_status(pod.id).status.state == pb.SANDBOX_READY
    pause_pid = env.cri.pod_info(pod.id)["pid"]
    deadline = time.monotonic() + 10
    while (cmdline := Path(f"/proc/{pause_pid}/cmdline").read_bytes()) != b"/pause\0" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cmdline == b"/pause\0"
    assert pod.id in env.runtime_state(HANDLER)  # the shim's state root, readable by rune
    cids = [env.container(pod, "echo started; exec sleep 1000", name=f"c{i}") for i in range(2)]
    for cid in cids:
        env.wait_state(cid, pb.CONTAINER_RUNNING)
    # one shim for the pod: every bundle names the same address
    bundles = Path(env.ctrd.state) / "io.containerd.runtime.v2.task" / "k8s.io"
    addresses = {(bundles / i / "address").read_text() for i in (pod.id, *cids)}
    assert len(addresses) == 1
    assert len(shim_pids(env.ctrd.address)) == 1
    # ExecSync through the shim, exit codes and output
    cid = cids[0]
    assert cri.exec_sync(cid, ["echo", "hello", "world"]) == (0, b"hello world\n", b"")
    assert cri.exec_sync(cid, ["sh", "-c", "echo oops >&2; exit 3"]) == (3, b"", b"oops\n")
    assert cri.exec_sync(cid, ["sh", "-c", "kill -9 $$"])[0] == 128 + 9
    if not unmounted_v1_hierarchies():
        stats = cri.container_stats(cid)
        assert stats.memory.working_set_bytes.value > 0
    # the container's log, written by containerd from the shim's FIFOs
    log = Path(env.ctrd.log_root) / pod.config.metadata.uid / "c0.log"
    deadline = time.monotonic() + 10
    while "started" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [line.split(" ", 3)[1:] for line in log.read_text().splitlines()] == [["stdout", "F", "started"]]
    # stop one container: the shim stays for the others
    cri.stop_container(cids[0], grace=1, timeout=30)
    assert cri.container_status(cids[0]).state == pb.CONTAINER_EXITED
    cri.remove_container(cids[0])
    assert cri.exec_sync(cids[1], ["true"])[0] == 0
    assert len(shim_pids(env.ctrd.address)) == 1
    env.stop_pod(pod.id)
    assert cri.container_status(cids[1]).state == pb.CONTAINER_EXITED
    cri.remove_pod(pod.id)
    env.assert_nothing_left(HANDLER, [pod.id, *cids])
    deadline = time.monotonic() + 10
    while shim_pids(env.ctrd.address) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shim_pids(env.ctrd.address) == []


def test_stop_container_that_ignores_sigterm(env: Any) -> None:
    cri = env.cri
    pod = env.run_pod(HANDLER)
    cid = env.container(pod, "trap '' TERM; echo ready; while :; do sleep 1; done")
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    cri.stop_container(cid, grace=2, timeout=30)
    st = cri.container_status(cid)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 128 + 9, "Error")
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(HANDLER, [pod.id, cid])


def test_the_log_is_complete_when_the_container_is_exited(env: Any) -> None:
    """containerd 1.6's CRI learns of an exit from Wait or TaskExit, whichever comes first, and then closes its
    readers of the container's FIFOs: what it has not read by then never reaches the log (containerd's runc
    shim lost the tail of this container's 108 KiB here in each of 6 runs). The rune shim answers Wait and
    publishes TaskExit once the output is copied out and read from the FIFO, so a container that prints
    20,000 lines and exits has all of them in its log when ContainerStatus says EXITED. Four in a row."""
    cri = env.cri
    pod = env.run_pod(HANDLER)
    want = [str(i) for i in range(1, 20001)]
    cids = []
    for i in range(4):
        cid = env.container(pod, "seq 1 20000", name=f"seq{i}")
        cids.append(cid)
        st = env.wait_state(cid, pb.CONTAINER_EXITED, timeout=60)
        assert (st.exit_code, st.reason) == (0, "Completed")
        log = Path(env.ctrd.log_root) / pod.config.metadata.uid / f"seq{i}.log"
        lines = [line.split(" ", 3) for line in log.read_text().splitlines()]
        assert {(stream, tag) for _, stream, tag, _ in lines} == {("stdout", "F")}
        got = [text for *_, text in lines]
        assert got[-1] == "20000" and got == want, f"run {i}: {len(got)} lines, last {got[-1:]}"
        cri.remove_container(cid)
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(HANDLER, [pod.id, *cids])


@pytest.fixture(scope="module")
def pal_v2(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test PAL")
    from tests.fixtures.pal.build import build_pal

    return str(build_pal("pal_v2", tmp_path_factory.mktemp("pal")))


def test_pod_with_a_sim_enclave_container(env: Any, pal_v2: str) -> None:
    """An enclave (sim) container in a pod served by the rune shim: the init-runelet runs the payload through
    the PAL, and ExecSync goes through the same enclave."""
    cri = env.cri
    pod = env.run_pod(HANDLER)
    cid = cri.create_container(pod, "enc", "localhost/busybox:latest",
                               ["sh", "-c", "echo payload > /tmp/out; sleep 1000"],
                               env={"ENCLAVE_TYPE": "sim", "ENCLAVE_RUNTIME_PATH": pal_v2,
                                    "ENCLAVE_RUNTIME_ARGS": "log=/tmp/pal.log"}, log_path="enc.log")
    cri.start_container(cid)
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    pid = cri.container_info(cid)["pid"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "init-runelet"
    deadline = time.monotonic() + 10
    while True:
        rc, out, _ = cri.exec_sync(cid, ["sh", "-c", "cat /tmp/out; cat /tmp/pal.log"])
        if out.startswith(b"payload") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    lines = out.decode().splitlines()
    assert rc == 0 and lines[0] == "payload", out
    calls = [x.split(" ")[0] for x in lines[1:]]
    assert calls[:4] == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec"]
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(HANDLER, [pod.id, cid])


def _make_cgroup(path: str) -> list[str]:
    """An empty cgroup ``path`` in every hierarchy (v1: each mounted hierarchy, cpuset seeded from its parent so
    that tasks can join; v2: under the unified mount), as an administrator would make ShimCgroup's."""
    from inclavare.linux.cgroups import detect_layout

    layout = detect_layout()
    mounts = sorted({h.mountpoint for h in layout.v1.values()}) if layout.mode != "v2" else \
        [layout.unified.mountpoint]  # type: ignore[union-attr]
    made = []
    for m in mounts:
        d = os.path.join(m, path.lstrip("/"))
        os.makedirs(d, exist_ok=True)
        made.append(d)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if os.path.exists(os.path.join(d, name)) and not Path(d, name).read_text().strip():
                Path(d, name).write_text(Path(m, name).read_text())
    return made


def _cgroups_of(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup: hierarchy id -> path."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line.split(":", 2)[0]: line.split(":", 2)[2] for line in lines}


def test_handler_options_iouid_iogid_and_shim_cgroup(env: Any) -> None:
    """runc's IoUid/IoGid and ShimCgroup for the rune shim, from the handler's options: the container's stdio pipes
    (init and ExecSync) are made for IoUid:IoGid and its output still reaches the log; the pod's shim and the
    processes it forked run in ShimCgroup; a ShimCgroup that does not exist fails RunPodSandbox, leaving nothing.

    The pipes' owner as the container sees it: IoGid, and the uid of the process's user, because the runtime's
    init then gives fds 0-2 to that user keeping their group (runc's fixStdioPermissions; with runc's shim the
    same handler shows the same). IoUid is what lets a user-namespaced init do that chown at all."""
    from inclavare.testing.cri.client import CriError

    cgroup = "/rune-shim-test-" + hashlib.sha256(env.ctrd.base.encode()).hexdigest()[:8]
    toml = Path(env.ctrd.base) / ".." / "rune-shim-opts.toml"
    dirs = _make_cgroup(cgroup)
    try:
        toml.write_text(f'IoUid = 1000\nIoGid = 1001\nShimCgroup = "{cgroup}"\n')
        pod = env.run_pod(OPTS_HANDLER)
        cid = env.container(pod, "echo started; exec sleep 1000")
        env.wait_state(cid, pb.CONTAINER_RUNNING)
        pid = env.cri.container_info(cid)["pid"]
        for fd in (1, 2):
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            assert (stat.S_ISFIFO(st.st_mode), st.st_uid, st.st_gid) == (True, 0, 1001)  # root's process
        assert env.cri.exec_sync(cid, ["stat", "-L", "-c", "%u:%g", "/proc/self/fd/1"]) == (0, b"0:1001\n", b"")
        log = Path(env.ctrd.log_root) / pod.config.metadata.uid / "c.log"
        deadline = time.monotonic() + 10
        while "started" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [line.split(" ", 3)[1:] for line in log.read_text().splitlines()] == [["stdout", "F", "started"]]
        # the shim is the container's parent (its subreaper); it and its fork server are in ShimCgroup
        shim = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert Path(f"/proc/{shim}/comm").read_text().strip() == "rune-shim"
        forked = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == shim
                  and Path(f"/proc/{p}/comm").read_text().strip() == "rune-shim"]
        assert forked  # the fork server
        for p in (shim, *forked):
            paths = _cgroups_of(p)
            joined = [path for hid, path in paths.items() if hid != "0"] if len(paths) > 1 else [paths["0"]]
            assert joined and set(joined) == {cgroup}, (p, paths)
        env.stop_pod(pod.id)
        env.cri.remove_pod(pod.id)
        env.pods.clear()
        env.assert_nothing_left(OPTS_HANDLER, [pod.id, cid])
        # ShimCgroup missing: start fails as runc's shim's does, and no shim, socket or state is left
        toml.write_text(f'ShimCgroup = "{cgroup}-missing"\n')
        with pytest.raises(CriError, match=f"cgroup {cgroup}-missing"):
            env.run_pod(OPTS_HANDLER)
        env.assert_nothing_left(OPTS_HANDLER, [])
        assert shim_pids(env.ctrd.address) == []
    finally:
        toml.write_text("")
        env.cleanup()  # the pods first: their shims must be gone before the cgroups can be removed
        deadline = time.monotonic() + 10
        for d in dirs:  # an rmdir fails while any process is left in the cgroup
            while True:
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


def _parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
