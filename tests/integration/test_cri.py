"""rune on the Kubernetes path: a private containerd with its CRI plugin, driven over the CRI gRPC API
(runtime.v1) by the project's own client, as a kubelet would drive it.

Handlers: ``runc`` (the stock runc v2 shim with runc, the baseline) and ``rune`` (the same shim with
``BinaryName`` = this checkout's rune launcher). Every test runs for both; a pod stop has a client deadline,
so a hang fails the test instead of stalling it. After each test nothing may be left: runtime state, cgroups,
mounts, containerd tasks and containers, shim processes.

To add a handler (the project's own shim, ``io.containerd.rune.v2``): add ``"NAME": RuntimeHandler.rune_shim()``
to :func:`handlers` and NAME to ``HANDLERS``, and call ``ctrd.install_rune_shim()`` before starting containerd
(it puts ``containerd-shim-rune-v2`` first on containerd's PATH and gives ``runtime_root`` the shim's root), as
tests/integration/test_shim_cri.py does.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import is_root, needs_busybox
from tests.integration.cri_rig import start_with_test_images
from tests.integration.test_containerd import processes_mentioning, unmounted_v1_hierarchies

BUSYBOX = "localhost/busybox:latest"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
HANDLERS = ["runc", "rune"]
STOP_POD_DEADLINE = 10.0  # seconds; StopPodSandbox retries until the client gives up if the runtime's kill fails

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


def handlers(rune_bin: str) -> dict[str, Any]:
    from inclavare.testing.cri.containerd import RuntimeHandler

    return {"runc": RuntimeHandler.runc_shim(RUNC), "rune": RuntimeHandler.runc_shim(rune_bin)}


class CriEnv:
    """The CRI containerd, a client, and the pods a test ran (stopped and removed at the end)."""

    def __init__(self, ctrd: Any) -> None:
        self.ctrd = ctrd
        self.cri = ctrd.client(timeout=30)
        self.pods: list[Any] = []

    def run_pod(self, handler: str, name: str = "pod") -> Any:
        uid = uuid.uuid4().hex[:12]
        pod = self.cri.run_pod(f"{name}-{uid}", handler, uid=uid, cgroup_parent=self.ctrd.pod_cgroup(uid),
                               log_directory=os.path.join(self.ctrd.log_root, uid))
        self.pods.append(pod)
        return pod

    def container(self, pod: Any, script: str, name: str = "c", start: bool = True) -> str:
        """A busybox container running ``sh -c script`` in ``pod``, logging to LOGDIR/NAME.log."""
        cid: str = self.cri.create_container(pod, name, BUSYBOX, ["sh", "-c", script], log_path=f"{name}.log")
        if start:
            self.cri.start_container(cid)
        return cid

    def stop_pod(self, pod_id: str) -> None:
        """StopPodSandbox with a deadline: a stop that hangs fails here (DEADLINE_EXCEEDED)."""
        self.cri.stop_pod(pod_id, timeout=STOP_POD_DEADLINE)

    def wait_state(self, cid: str, state: int, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            st = self.cri.container_status(cid)
            if st.state == state:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"container {cid} never reached {pb.ContainerState.Name(state)}: {st}")
            time.sleep(0.05)

    def runtime_state(self, handler: str) -> list[str]:
        root = self.ctrd.runtime_root(handler)
        return sorted(os.listdir(root)) if root and os.path.isdir(root) else []

    def ctr_ids(self, *what: str) -> list[str]:
        return list(self.ctrd.ctr(*what, "ls", "-q", timeout=20).stdout.split())

    def cleanup(self) -> None:
        from inclavare.testing.cri.client import CriError

        for pod in self.pods:
            for call in (self.cri.stop_pod, self.cri.remove_pod):
                try:
                    call(pod.id, timeout=STOP_POD_DEADLINE)
                except CriError:
                    pass
        self.pods.clear()
        for d in self.ctrd.leftover_cgroups():  # kubelet's part: the (empty) per-pod cgroups
            if os.path.basename(d).startswith("pod"):
                try:
                    os.rmdir(d)
                except OSError:
                    pass

    def assert_nothing_left(self, handler: str, ids: list[str]) -> None:
        """No runtime state, cgroup, mount, containerd task or container, or shim left for ``ids``."""
        assert self.cri.list_pods() == []
        assert self.cri.list_containers() == []
        assert self.runtime_state(handler) == [], f"{handler} state dir not empty"
        assert self.ctr_ids("tasks") == []
        assert self.ctr_ids("containers") == []
        assert [m for m in self.ctrd.mounts() if any(i in m for i in ids)] == []
        assert [d for d in self.ctrd.leftover_cgroups() if any(i in d for i in ids)] == []
        deadline = time.monotonic() + 10  # shims exit on their own once their last task is deleted
        while (procs := processes_mentioning(ids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert procs == []


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[Any]:
    from inclavare.testing.cri.containerd import CriContainerd

    base = tmp_path_factory.mktemp("cri")
    c = CriContainerd(str(base / "c"), handlers(rune_bin))
    try:
        start_with_test_images(c, str(base))
        yield c
    finally:
        c.purge()


@pytest.fixture
def env(ctrd: Any) -> Iterator[CriEnv]:
    e = CriEnv(ctrd)
    try:
        yield e
    finally:
        e.cleanup()
        e.cri.close()


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    if request.param == "runc" and not os.path.exists(RUNC):
        pytest.skip("runc is not installed (the baseline handler)")
    return str(request.param)


# ---------------------------------------------------------------------------------------------- the plugin itself

def test_version_status_and_images(env: CriEnv) -> None:
    v = env.cri.version()
    assert (v.runtime_name, v.runtime_api_version) == ("containerd", "v1")
    assert env.cri.status()["RuntimeReady"] is True
    for ref in (BUSYBOX, env.ctrd.sandbox_image):
        img = env.cri.image_status(ref)
        assert img is not None and ref in img.repo_tags
    assert env.cri.image_status("localhost/no-such-image:latest") is None
    tags = {t for i in env.cri.list_images() for t in i.repo_tags}
    assert {BUSYBOX, env.ctrd.sandbox_image} <= tags


def test_config_has_the_handlers(ctrd: Any, rune_bin: str) -> None:
    cfg = Path(ctrd.config).read_text()
    assert "io.containerd.grpc.v1.cri" not in cfg.split("disabled_plugins", 1)[1].split("\n", 1)[0]
    assert f'sandbox_image = "{ctrd.sandbox_image}"' in cfg
    assert f'BinaryName = "{rune_bin}"' in cfg
    assert f'BinaryName = "{RUNC}"' in cfg
    assert f'conf_dir = "{ctrd.cni_conf_dir}"' in cfg


# ---------------------------------------------------------------------------------------------- pod lifecycle

def test_pod_lifecycle(env: CriEnv, handler: str) -> None:
    cri = env.cri
    pod = env.run_pod(handler)
    status = cri.pod_status(pod.id).status
    assert status.state == pb.SANDBOX_READY
    assert status.runtime_handler == handler
    # the handler's runtime holds the sandbox, and the sandbox process is our pause
    assert pod.id in env.runtime_state(handler)
    info = env.cri.pod_info(pod.id)
    assert info["runtimeOptions"]["binary_name"] == env.ctrd.handlers[handler].options["BinaryName"]
    pause_pid = info["pid"]
    # `start` returns once the init is released, maybe before its execve of /pause is done (runc's too)
    deadline = time.monotonic() + 10
    while (cmdline := Path(f"/proc/{pause_pid}/cmdline").read_bytes()) != b"/pause\0" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cmdline == b"/pause\0"

    cid = env.container(pod, "echo started; exec sleep 1000", start=False)
    assert cri.container_status(cid).state == pb.CONTAINER_CREATED
    cri.start_container(cid)
    st = env.wait_state(cid, pb.CONTAINER_RUNNING)
    assert st.started_at >= st.created_at > 0
    assert cid in env.runtime_state(handler)
    assert [c.id for c in cri.list_containers(pod.id)] == [cid]

    # the container has a PID namespace of its own (Kubernetes' default), with `sleep` as its init (once the
    # init's shell has exec'd it: RUNNING does not wait for that)
    deadline = time.monotonic() + 20
    while True:
        rc, out, err = cri.exec_sync(cid, ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; echo oops >&2; exit 3"])
        if out == b"sleep 1000 \n" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (rc, out, err) == (3, b"sleep 1000 \n", b"oops\n")

    stats = cri.container_stats(cid)
    assert stats.attributes.id == cid
    missing = unmounted_v1_hierarchies()
    if not missing:
        assert stats.memory.working_set_bytes.value > 0
        assert stats.cpu.usage_core_nano_seconds.value > 0

    cri.stop_container(cid, grace=10)
    st = cri.container_status(cid)
    assert st.state == pb.CONTAINER_EXITED
    assert st.finished_at >= st.started_at
    env.stop_pod(pod.id)
    assert cri.pod_status(pod.id).status.state == pb.SANDBOX_NOTREADY
    assert not os.path.exists(f"/proc/{pause_pid}") or Path(f"/proc/{pause_pid}/stat").read_text().split()[2] == "Z"
    assert env.runtime_state(handler) == []
    cri.remove_container(cid)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id, cid])


def test_exec_sync(env: CriEnv, handler: str) -> None:
    cri = env.cri
    pod = env.run_pod(handler)
    cid = env.container(pod, "exec sleep 1000")
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    assert cri.exec_sync(cid, ["echo", "hello", "world"]) == (0, b"hello world\n", b"")
    assert cri.exec_sync(cid, ["sh", "-c", "printf '%s' \"$HOME\"; exit 42"]) == (42, b"/root", b"")
    # an exec'd process killed by a signal: 128 + signal, as the kubelet sees it
    assert cri.exec_sync(cid, ["sh", "-c", "kill -9 $$"])[0] == 128 + 9
    # exec timeout: the runtime-side limit ends the process; the call reports it and the container lives on
    from inclavare.testing.cri.client import CriError

    with pytest.raises(CriError) as e:
        cri.exec_sync(cid, ["sleep", "60"], exec_timeout=1, timeout=30)
    assert "timeout" in e.value.details
    # a program that does not exist: the runtime's exec error reaches the client
    with pytest.raises(CriError) as e:
        cri.exec_sync(cid, ["/no/such/program"])
    assert "/no/such/program" in e.value.details
    assert "no such file or directory" in e.value.details.lower()
    assert cri.container_status(cid).state == pb.CONTAINER_RUNNING
    assert cri.exec_sync(cid, ["true"])[0] == 0
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id, cid])


# ---------------------------------------------------------------------------------------------- stopping

def test_stop_container_that_ignores_sigterm(env: CriEnv, handler: str) -> None:
    """StopContainer with a grace period: SIGTERM is ignored, so SIGKILL ends it after the grace period."""
    cri = env.cri
    pod = env.run_pod(handler)
    cid = env.container(pod, "trap '' TERM; echo ready; while :; do sleep 1; done")
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    cri.stop_container(cid, grace=2, timeout=30)
    st = cri.container_status(cid)
    assert st.state == pb.CONTAINER_EXITED
    assert st.exit_code == 128 + 9
    assert st.reason == "Error"
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id, cid])


def test_stop_container_that_handles_sigterm(env: CriEnv, handler: str) -> None:
    cri = env.cri
    pod = env.run_pod(handler)
    cid = env.container(pod, "trap 'echo got-TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done")
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    log = Path(env.ctrd.log_root) / pod.config.metadata.uid / "c.log"
    deadline = time.monotonic() + 20
    while "ready" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    cri.stop_container(cid, grace=30, timeout=60)
    st = cri.container_status(cid)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 7, "Error")
    # the CRI log format: TIMESTAMP STREAM TAG MESSAGE
    assert [line.split(" ", 3)[1:] for line in log.read_text().splitlines()] == [["stdout", "F", "ready"],
                                                                                 ["stdout", "F", "got-TERM"]]
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id, cid])


def test_stop_pod_stops_its_running_containers(env: CriEnv, handler: str) -> None:
    cri = env.cri
    pod = env.run_pod(handler)
    cids = [env.container(pod, "exec sleep 1000", name=f"c{i}") for i in range(2)]
    for cid in cids:
        env.wait_state(cid, pb.CONTAINER_RUNNING)
    env.stop_pod(pod.id)
    for cid in cids:
        st = cri.container_status(cid)
        assert st.state == pb.CONTAINER_EXITED, st
    assert env.runtime_state(handler) == []
    env.stop_pod(pod.id)  # a second stop is a no-op
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id, *cids])


@pytest.mark.parametrize("code, reason", [(0, "Completed"), (5, "Error")])
def test_stop_and_remove_pod_whose_container_exited(env: CriEnv, handler: str, code: int, reason: str) -> None:
    cri = env.cri
    pod = env.run_pod(handler)
    cid = env.container(pod, f"echo bye; exit {code}")
    st = env.wait_state(cid, pb.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (code, reason)
    # both stamped; not ordered: started_at is taken when the start call returns, which a process that exits
    # at once may beat
    assert st.started_at > 0 and st.finished_at > 0
    log = Path(env.ctrd.log_root) / pod.config.metadata.uid / "c.log"
    assert log.read_text().split(" ", 3)[1:] == ["stdout", "F", "bye\n"]
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)  # removes the exited container with the pod
    env.assert_nothing_left(handler, [pod.id, cid])


def test_remove_running_pod_without_stop(env: CriEnv, handler: str) -> None:
    """RemovePodSandbox of a ready pod with a running container: containerd stops it first."""
    cri = env.cri
    pod = env.run_pod(handler)
    cid = env.container(pod, "exec sleep 1000")
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    cri.remove_pod(pod.id, timeout=STOP_POD_DEADLINE)
    env.assert_nothing_left(handler, [pod.id, cid])


def test_stop_pod_whose_sandbox_process_died(env: CriEnv, handler: str) -> None:
    """The pause process is gone (killed from outside) before StopPodSandbox: the runtime's kill finds the
    sandbox stopped, and the stop must still finish."""
    cri = env.cri
    pod = env.run_pod(handler)
    os.kill(cri.pod_info(pod.id)["pid"], 9)
    deadline = time.monotonic() + 20
    while cri.pod_status(pod.id).status.state != pb.SANDBOX_NOTREADY and time.monotonic() < deadline:
        time.sleep(0.05)
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id])


def test_start_failure_is_reported_and_leaves_nothing(env: CriEnv, handler: str) -> None:
    """A container whose program does not exist: StartContainer fails with the runtime's error (what a kubelet
    shows as the container's message), the container is EXITED with code 128, and the pod cleans up."""
    from inclavare.testing.cri.client import CriError

    cri = env.cri
    pod = env.run_pod(handler)
    cid = cri.create_container(pod, "bad", BUSYBOX, ["/no/such/program"], log_path="bad.log")
    with pytest.raises(CriError) as e:
        cri.start_container(cid)
    assert "OCI runtime create failed" in e.value.details
    assert "/no/such/program" in e.value.details
    assert "no such file or directory" in e.value.details.lower()
    st = cri.container_status(cid)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 128, "StartError")
    assert "/no/such/program" in st.message
    assert cid not in env.runtime_state(handler)
    env.stop_pod(pod.id)
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id, cid])


def test_containerd_restart_keeps_pods(env: CriEnv, handler: str) -> None:
    """containerd restarts (an upgrade on a node): the CRI plugin recovers the pod and its container from the
    shims, which kept running; exec, stop and remove work as before."""
    cri = env.cri
    pod = env.run_pod(handler)
    cid = env.container(pod, "exec sleep 1000")
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    pid = cri.container_info(cid)["pid"]
    env.ctrd.restart()
    cri.close()
    env.cri = cri = env.ctrd.client(timeout=30)
    assert cri.pod_status(pod.id).status.state == pb.SANDBOX_READY
    st = cri.container_status(cid)
    assert st.state == pb.CONTAINER_RUNNING
    assert cri.container_info(cid)["pid"] == pid
    assert cri.exec_sync(cid, ["sh", "-c", "echo $((6*7))"]) == (0, b"42\n", b"")
    env.stop_pod(pod.id)
    assert cri.container_status(cid).state == pb.CONTAINER_EXITED
    cri.remove_pod(pod.id)
    env.assert_nothing_left(handler, [pod.id, cid])


# ---------------------------------------------------------------------------------------------- the pause program

@pytest.mark.skipif(not (shutil.which("unshare") and shutil.which("nsenter")), reason="util-linux unshare/nsenter")
def test_pause_reaps_orphans_and_ends_on_sigterm(tmp_path: Path) -> None:
    """pause as PID 1 of a PID namespace: an orphan there becomes its child and must not stay a zombie;
    SIGTERM ends it with status 0."""
    import signal
    import subprocess

    from inclavare.testing.cri.pause import build_pause

    binary = build_pause(str(tmp_path / "pause"))
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", binary])
    try:
        deadline = time.monotonic() + 10
        pause_pid = None
        while pause_pid is None and time.monotonic() < deadline:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            pause_pid = int(kids[0]) if kids else None
            time.sleep(0.02)
        assert pause_pid is not None
        # a shell in the namespace starts `sleep` in the background and exits: sleep is reparented to pause
        subprocess.run(["nsenter", "-t", str(pause_pid), "-p", "--", "sh", "-c", "sleep 0.3 & echo $! "],
                       check=True, capture_output=True, timeout=10)
        orphans: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            orphans = Path(f"/proc/{pause_pid}/task/{pause_pid}/children").read_text().split()
            if not orphans:
                break
            time.sleep(0.05)
        assert orphans == [], "the orphan stayed a child of pause (a zombie nobody reaped)"
        os.kill(pause_pid, signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------------------------- enclave containers

@pytest.fixture(scope="module")
def pal_v2(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.fixtures.pal.build import build_pal

    return str(build_pal("pal_v2", tmp_path_factory.mktemp("pal")))


def test_enclave_container_through_cri(env: CriEnv, pal_v2: str) -> None:
    """A Kubernetes pod whose container sets ENCLAVE_TYPE in its env: rune (the `rune` handler) runs the
    payload through the PAL; ExecSync goes through the same enclave; the pod stops and leaves nothing."""
    cri = env.cri
    pod = env.run_pod("rune")
    env_vars = {"ENCLAVE_TYPE": "sim", "ENCLAVE_RUNTIME_PATH": pal_v2, "ENCLAVE_RUNTIME_ARGS": "log=/tmp/pal.log"}
    cid = cri.create_container(pod, "enclave", BUSYBOX, ["sh", "-c", "echo payload > /tmp/out; exec sleep 1000"],
                               env=env_vars, log_path="enclave.log")
    cri.start_container(cid)
    env.wait_state(cid, pb.CONTAINER_RUNNING)
    # wait until the payload has written its file: by then the init has become the init-runelet
    deadline = time.monotonic() + 20
    execs = 1
    while (r := cri.exec_sync(cid, ["cat", "/tmp/out"]))[0] != 0 and time.monotonic() < deadline:
        execs += 1
        time.sleep(0.05)
    assert r[1] == b"payload\n"
    pid = cri.container_info(cid)["pid"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "init-runelet"
    rc, out, err = cri.exec_sync(cid, ["sh", "-c", "cat /tmp/out; cat /tmp/pal.log"])
    assert rc == 0, err
    lines = out.decode().splitlines()
    assert lines[0] == "payload"
    calls = [x.split(" ")[0] for x in lines[1:]]
    assert calls[:4] == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec"]
    # every exec'd process went through the PAL as well: the `cat`s above and this `sh`
    assert calls.count("pal_create_process") == 1 + execs + 1
    assert cri.exec_sync(cid, ["sh", "-c", "exit 6"])[0] == 6
    env.stop_pod(pod.id)
    assert cri.container_status(cid).state == pb.CONTAINER_EXITED
    cri.remove_pod(pod.id)
    env.assert_nothing_left("rune", [pod.id, cid])
