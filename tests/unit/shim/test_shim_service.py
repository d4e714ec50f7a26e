"""The Task service over a recording core (no containers, no root): what each RPC asks of the core, what it
answers, the ttrpc status of each error class, events in containerd's order (an exit reaped during Start
waits for TaskStart), runc Options understood or refused, and the metrics messages."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from inclavare.errors import ShimError
from inclavare.shim.metrics import metrics_any, metrics_v1, metrics_v2
from inclavare.shim.proto.cgroups import v1_metrics_pb2, v2_metrics_pb2
from inclavare.shim.proto.events import task_pb2 as ev
from inclavare.shim.proto.runc import oci_pb2
from inclavare.shim.proto.runtimeoptions import api_pb2 as runtimeoptions_pb2
from inclavare.shim.proto.task import shim_pb2
from inclavare.shim.proto.types import mount_pb2
from inclavare.shim.proto.types import task_pb2 as types_pb2
from inclavare.shim.service import TaskService, error_status, parse_options, state_root
from inclavare.shim.stdio import Stdio
from inclavare.shim.ttrpc import CallContext, Code, TtrpcError, TtrpcServer
from inclavare.shim.ttrpc_client import TtrpcClient

CTX = CallContext("containerd.task.v2.Task", "X", {}, None)


class FakeCore:
    """Records calls; ``start`` can run a hook (to reap an exit mid-Start)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.containers: set[str] = set()
        self.on_start: Any = None
        self.fail: ShimError | None = None

    def _call(self, *what: Any) -> None:
        self.calls.append(what)
        if self.fail is not None:
            raise self.fail

    def create(self, cid: str, bundle: str, stdio: Stdio, options: dict[str, Any], rootfs: list[Any]) -> int:
        self._call("create", cid, bundle, stdio, options, rootfs)
        self.containers.add(cid)
        return 100

    def start(self, cid: str, exec_id: str = "") -> int:
        self._call("start", cid, exec_id)
        if self.on_start is not None:
            self.on_start()
        return 101 if exec_id else 100

    def exec(self, cid: str, exec_id: str, process: dict[str, Any], stdio: Stdio) -> None:
        self._call("exec", cid, exec_id, process, stdio)

    def delete(self, cid: str, exec_id: str = "") -> tuple[int, int, int]:
        self._call("delete", cid, exec_id)
        if not exec_id:
            self.containers.discard(cid)
        return 100, 7, 1_700_000_000_123_456_789

    def kill(self, cid: str, exec_id: str, sig: int, all_procs: bool = False) -> None:
        self._call("kill", cid, exec_id, sig, all_procs)

    def wait(self, cid: str, exec_id: str = "") -> tuple[int, int]:
        self._call("wait", cid, exec_id)
        return 3, 2_000_000_000

    def drain(self, cid: str, exec_id: str = "", timeout: float = 0) -> bool:
        self._call("drain", cid, exec_id)
        return True

    def state(self, cid: str, exec_id: str = "") -> dict[str, Any]:
        self._call("state", cid, exec_id)
        return {"id": cid, "exec_id": exec_id, "bundle": "/b", "pid": 100, "status": "paused", "stdin": "i",
                "stdout": "o", "stderr": "e", "terminal": True, "exit_status": 0, "exited_at_ns": 0}

    def pids(self, cid: str) -> list[dict[str, Any]]:
        self._call("pids", cid)
        return [{"pid": 100, "exec_id": ""}, {"pid": 101, "exec_id": "e1"}]

    def pause(self, cid: str) -> None:
        self._call("pause", cid)

    def resume(self, cid: str) -> None:
        self._call("resume", cid)

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        self._call("update", cid, resources)

    def stats(self, cid: str) -> dict[str, Any]:
        self._call("stats", cid)
        return {"pids": {"current": 3, "limit": 10}, "memory": {"usage": {"usage": 4096, "limit": 8192}}}

    def resize_pty(self, cid: str, exec_id: str, w: int, h: int) -> None:
        self._call("resize", cid, exec_id, w, h)

    def close_io(self, cid: str, exec_id: str = "") -> None:
        self._call("close_io", cid, exec_id)

    def ids(self) -> list[str]:
        return sorted(self.containers)


class Rig:
    def __init__(self) -> None:
        self.events: list[Message] = []
        self.shutdowns = 0
        self.core = FakeCore()
        self.svc = TaskService("ns1", self._publish, "/run/x/ns1", on_shutdown=self._shutdown)
        self.svc.core = self.core

    def _publish(self, namespace: str, event: Message) -> None:
        assert namespace == "ns1"
        self.events.append(event)

    def _shutdown(self) -> None:
        self.shutdowns += 1

    def topics(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


@pytest.fixture
def rig() -> Rig:
    return Rig()


def _any(type_url: str, value: bytes) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=value)


# ------------------------------------------------------------------------------------------ lifecycle


def test_create_passes_stdio_rootfs_and_options_and_publishes(rig: Rig) -> None:
    opts = oci_pb2.Options(no_pivot_root=True, no_new_keyring=True, io_uid=1000, io_gid=1001)
    req = shim_pb2.CreateTaskRequest(
        id="c1", bundle="/b", stdin="/f/in", stdout="/f/out", stderr="/f/err", terminal=True,
        rootfs=[mount_pb2.Mount(type="overlay", source="overlay", options=["lowerdir=/l", "upperdir=/u"])],
        options=_any("containerd.runc.v1.Options", opts.SerializeToString()))
    assert rig.svc.Create(CTX, req).pid == 100
    _, cid, bundle, stdio, options, rootfs = rig.core.calls[0]
    assert (cid, bundle) == ("c1", "/b")
    assert stdio == Stdio("/f/in", "/f/out", "/f/err", True)
    assert options == {"no_pivot": True, "no_new_keyring": True, "io_uid": 1000, "io_gid": 1001}
    assert rootfs == [{"type": "overlay", "source": "overlay", "options": ["lowerdir=/l", "upperdir=/u"]}]
    (e,) = rig.events
    assert isinstance(e, ev.TaskCreate)
    assert (e.container_id, e.bundle, e.pid, e.io.stdout, e.io.terminal) == ("c1", "/b", 100, "/f/out", True)
    assert e.rootfs[0].type == "overlay"


def test_create_from_a_checkpoint_is_unimplemented(rig: Rig) -> None:
    with pytest.raises(TtrpcError) as e:
        rig.svc.Create(CTX, shim_pb2.CreateTaskRequest(id="c1", bundle="/b", checkpoint="/cp"))
    assert e.value.code == Code.UNIMPLEMENTED
    assert not rig.core.calls and not rig.events


def test_create_with_another_root_is_refused(rig: Rig) -> None:
    opts = oci_pb2.Options(root="/elsewhere")
    with pytest.raises(ShimError, match="Root '/elsewhere' differs"):
        rig.svc.Create(CTX, shim_pb2.CreateTaskRequest(
            id="c1", bundle="/b", options=_any("containerd.runc.v1.Options", opts.SerializeToString())))
    same = oci_pb2.Options(root="/run/x")
    rig.svc.Create(CTX, shim_pb2.CreateTaskRequest(
        id="c1", bundle="/b", options=_any("containerd.runc.v1.Options", same.SerializeToString())))


def test_start_exec_and_delete_events_in_order(rig: Rig) -> None:
    rig.svc.Create(CTX, shim_pb2.CreateTaskRequest(id="c1", bundle="/b"))
    assert rig.svc.Start(CTX, shim_pb2.StartRequest(id="c1")).pid == 100
    spec = {"args": ["sh"], "cwd": "/"}
    rig.svc.Exec(CTX, shim_pb2.ExecProcessRequest(id="c1", exec_id="e1", stdout="/o", terminal=False,
                                                  spec=_any("types.containerd.io/opencontainers/runtime-spec/1/Process",
                                                            json.dumps(spec).encode())))
    assert rig.core.calls[-1] == ("exec", "c1", "e1", spec, Stdio("", "/o", "", False))
    assert rig.svc.Start(CTX, shim_pb2.StartRequest(id="c1", exec_id="e1")).pid == 101
    rig.svc.on_exit("c1", "e1", 101, 0, 5)
    rig.svc.on_exit("c1", "", 100, 7, 6)
    resp = rig.svc.Delete(CTX, shim_pb2.DeleteRequest(id="c1"))
    assert (resp.pid, resp.exit_status, resp.exited_at.seconds, resp.exited_at.nanos) == (100, 7, 1_700_000_000,
                                                                                         123_456_789)
    assert rig.topics() == ["TaskCreate", "TaskStart", "TaskExecAdded", "TaskExecStarted", "TaskExit", "TaskExit",
                            "TaskDelete"]
    exec_exit, init_exit = rig.events[4], rig.events[5]
    assert (exec_exit.container_id, exec_exit.id, exec_exit.pid) == ("c1", "e1", 101)
    assert (init_exit.container_id, init_exit.id, init_exit.exit_status) == ("c1", "c1", 7)
    assert rig.events[3].exec_id == "e1" and rig.events[3].pid == 101


def test_an_exit_reaped_during_start_waits_for_the_start_event(rig: Rig) -> None:
    rig.svc.Create(CTX, shim_pb2.CreateTaskRequest(id="c1", bundle="/b"))

    def exits_at_once() -> None:  # the supervisor thread reaps `true` before Start has answered
        t = threading.Thread(target=rig.svc.on_exit, args=("c1", "", 100, 0, 9))
        t.start()
        t.join()

    rig.core.on_start = exits_at_once
    rig.svc.Start(CTX, shim_pb2.StartRequest(id="c1"))
    assert rig.topics() == ["TaskCreate", "TaskStart", "TaskExit"]


def test_a_failed_start_still_releases_a_held_exit(rig: Rig) -> None:
    def fail() -> None:
        rig.svc.on_exit("c1", "e9", 1, 255, 1)
        raise ShimError("boom", "failed_precondition")

    rig.core.on_start = fail
    with pytest.raises(ShimError):
        rig.svc.Start(CTX, shim_pb2.StartRequest(id="c1", exec_id="e9"))
    assert rig.topics() == ["TaskExit"]


def test_delete_of_an_exec_publishes_no_task_delete(rig: Rig) -> None:
    rig.svc.Delete(CTX, shim_pb2.DeleteRequest(id="c1", exec_id="e1"))
    assert rig.events == []


def test_exec_spec_must_be_a_json_object(rig: Rig) -> None:
    with pytest.raises(ShimError, match="not JSON") as e:
        rig.svc.Exec(CTX, shim_pb2.ExecProcessRequest(id="c1", exec_id="e1", spec=_any("x", b"{no")))
    assert error_status(e.value)[0] == Code.INVALID_ARGUMENT
    with pytest.raises(ShimError, match="not an OCI process object"):
        rig.svc.Exec(CTX, shim_pb2.ExecProcessRequest(id="c1", exec_id="e1", spec=_any("x", b"[1]")))


def test_kill_wait_pause_resume_update_resize_closeio(rig: Rig) -> None:
    rig.svc.Kill(CTX, shim_pb2.KillRequest(id="c1", exec_id="", signal=9, all=True))
    w = rig.svc.Wait(CTX, shim_pb2.WaitRequest(id="c1", exec_id="e1"))
    assert (w.exit_status, w.exited_at.seconds) == (3, 2)
    rig.svc.Pause(CTX, shim_pb2.PauseRequest(id="c1"))
    rig.svc.Resume(CTX, shim_pb2.ResumeRequest(id="c1"))
    rig.svc.Update(CTX, shim_pb2.UpdateTaskRequest(id="c1", resources=_any("x", b'{"pids": {"limit": 5}}')))
    rig.svc.ResizePty(CTX, shim_pb2.ResizePtyRequest(id="c1", exec_id="e1", width=80, height=24))
    rig.svc.CloseIO(CTX, shim_pb2.CloseIORequest(id="c1", exec_id="e1", stdin=False))  # nothing to close
    rig.svc.CloseIO(CTX, shim_pb2.CloseIORequest(id="c1", exec_id="e1", stdin=True))
    assert rig.core.calls == [("kill", "c1", "", 9, True), ("wait", "c1", "e1"), ("drain", "c1", "e1"),
                              ("pause", "c1"), ("resume", "c1"),
                              ("update", "c1", {"pids": {"limit": 5}}), ("resize", "c1", "e1", 80, 24),
                              ("close_io", "c1", "e1")]
    assert rig.topics() == ["TaskPaused", "TaskResumed"]


def test_state_pids_connect(rig: Rig) -> None:
    st = rig.svc.State(CTX, shim_pb2.StateRequest(id="c1"))
    assert (st.id, st.pid, st.status, st.stdout, st.terminal) == ("c1", 100, types_pb2.PAUSED, "o", True)
    assert not st.HasField("exited_at")
    pids = rig.svc.Pids(CTX, shim_pb2.PidsRequest(id="c1")).processes
    assert [p.pid for p in pids] == [100, 101]
    assert not pids[0].HasField("info")
    assert pids[1].info.type_url == "containerd.runc.v1.ProcessDetails"
    assert oci_pb2.ProcessDetails.FromString(pids[1].info.value).exec_id == "e1"
    c = rig.svc.Connect(CTX, shim_pb2.ConnectRequest(id="c1"))
    assert c.task_pid == 100 and c.shim_pid > 0


def test_checkpoint_is_unimplemented(rig: Rig) -> None:
    with pytest.raises(TtrpcError) as e:
        rig.svc.Checkpoint(CTX, shim_pb2.CheckpointTaskRequest(id="c1", path="/p"))
    assert e.value.code == Code.UNIMPLEMENTED


def test_shutdown_waits_for_the_last_container(rig: Rig) -> None:
    rig.svc.Create(CTX, shim_pb2.CreateTaskRequest(id="c1", bundle="/b"))
    rig.svc.Shutdown(CTX, shim_pb2.ShutdownRequest(id="c1"))
    assert rig.shutdowns == 0 and not rig.svc.shutting_down.is_set()
    rig.svc.Delete(CTX, shim_pb2.DeleteRequest(id="c1"))
    rig.svc.Shutdown(CTX, shim_pb2.ShutdownRequest(id="c1"))
    assert rig.shutdowns == 1 and rig.svc.shutting_down.is_set()


def test_shutdown_now_does_not_wait(rig: Rig) -> None:
    rig.core.containers.add("c1")
    rig.svc.Shutdown(CTX, shim_pb2.ShutdownRequest(id="c1", now=True))
    assert rig.shutdowns == 1


@pytest.mark.parametrize(("code", "status"), [
    ("not_found", Code.NOT_FOUND), ("already_exists", Code.ALREADY_EXISTS),
    ("failed_precondition", Code.FAILED_PRECONDITION), ("invalid_argument", Code.INVALID_ARGUMENT),
    ("unknown", Code.UNKNOWN), ("something new", Code.UNKNOWN)])
def test_error_classes_become_containerd_codes(code: str, status: Code) -> None:
    assert error_status(ShimError("container x: not found", code)) == (status, "container x: not found")


def test_statuses_reach_a_ttrpc_client(rig: Rig, tmp_path: Any) -> None:
    """Over a real socket: the codes and messages containerd's errdefs reads."""
    from inclavare.shim.service import INLINE_METHODS, TASK_SERVICE

    srv = TtrpcServer(error_status=error_status)
    srv.register_service(TASK_SERVICE, rig.svc, inline=INLINE_METHODS)
    srv.serve(str(tmp_path / "s.sock"))
    try:
        with TtrpcClient(str(tmp_path / "s.sock")) as c:
            rig.core.fail = ShimError("container c9: not found", "not_found")
            with pytest.raises(TtrpcError) as e:
                c.call("containerd.task.v2.Task", "Kill", shim_pb2.KillRequest(id="c9", signal=9),
                       shim_pb2.ConnectResponse)
            assert (e.value.code, e.value.status_message) == (Code.NOT_FOUND, "container c9: not found")
            rig.core.fail = None
            st = c.call("containerd.task.v2.Task", "State", shim_pb2.StateRequest(id="c1"), shim_pb2.StateResponse)
            assert st.status == types_pb2.PAUSED
    finally:
        srv.close()


# ------------------------------------------------------------------------------------------ options


def test_options_absent_or_empty_are_defaults() -> None:
    assert parse_options(None) == oci_pb2.Options()
    assert parse_options(any_pb2.Any()) == oci_pb2.Options()
    assert parse_options(_any("runtimeoptions.v1.Options", b"")) == oci_pb2.Options()


def test_options_understood() -> None:
    o = oci_pb2.Options(root="/r", binary_name="/usr/local/bin/rune", no_pivot_root=True, shim_cgroup="/x",
                        io_uid=1000, io_gid=1000)
    got = parse_options(_any("containerd.runc.v1.Options", o.SerializeToString()))
    assert (got.root, got.no_pivot_root, got.shim_cgroup, got.io_uid, got.io_gid) == ("/r", True, "/x", 1000, 1000)
    assert state_root(got, "k8s.io", "/run/containerd/rune") == "/r/k8s.io"
    assert state_root(oci_pb2.Options(), "k8s.io", "/run/containerd/rune") == "/run/containerd/rune/k8s.io"


@pytest.mark.parametrize(("opts", "words"), [
    (oci_pb2.Options(binary_name="/usr/bin/runc"), "BinaryName '/usr/bin/runc'"),
    (oci_pb2.Options(systemd_cgroup=True), "SystemdCgroup"),
    (oci_pb2.Options(io_uid=0xFFFFFFFF), "IoUid 4294967295: not a valid id"),
    (oci_pb2.Options(io_gid=0xFFFFFFFF), "IoGid 4294967295: not a valid id"),
    (oci_pb2.Options(criu_image_path="/x"), "CriuImagePath"),
])
def test_options_refused_by_name(opts: oci_pb2.Options, words: str) -> None:
    with pytest.raises(ShimError, match="runtime options: ") as e:
        parse_options(_any("containerd.runc.v1.Options", opts.SerializeToString()))
    assert words in str(e.value) and e.value.code == "invalid_argument"


def test_options_of_another_type_or_undecodable_are_refused() -> None:
    with pytest.raises(ShimError, match="is not supported by the rune shim"):
        parse_options(_any("kata.v1.Options", b"\x12\x05/etc/x"))
    with pytest.raises(ShimError, match="undecodable containerd.runc.v1.Options"):
        parse_options(_any("containerd.runc.v1.Options", b"\xff\xff"))
    with pytest.raises(ShimError, match="undecodable runtimeoptions.v1.Options"):
        parse_options(_any("runtimeoptions.v1.Options", b"\xff\xff"))


def _generic(**fields: Any) -> any_pb2.Any:
    return _any("runtimeoptions.v1.Options", runtimeoptions_pb2.Options(**fields).SerializeToString())


def test_generic_runtime_options_carry_runcs_names_as_toml(tmp_path: Any) -> None:
    """What containerd's CRI sends a non-runc runtime_type: a ConfigPath (1.6, ctr --runtime-config-path) or the
    handler's table as ConfigBody (1.7+); the TOML has runc's option names, as a runc handler's table."""
    conf = tmp_path / "rune-shim.toml"
    conf.write_text('IoUid = 1000\nIoGid = 1001\nShimCgroup = "/rune-shim"\nnopivotroot = true\nRoot = "/r"\n')
    for opts in (parse_options(_generic(config_path=str(conf))),
                 parse_options(_generic(type_url="containerd.runc.v1.Options", config_path=str(conf))),
                 parse_options(_generic(config_body=b'TypeUrl = "io.containerd.runc.v1.Options"\n'
                                                    + conf.read_bytes()))):
        assert (opts.io_uid, opts.io_gid, opts.shim_cgroup, opts.no_pivot_root, opts.root) == \
            (1000, 1001, "/rune-shim", True, "/r")
    assert parse_options(_generic()) == oci_pb2.Options()


@pytest.mark.parametrize(("fields", "toml", "words"), [
    ({"type_url": "io.containerd.kata.v2.Options"}, "", "TypeUrl 'io.containerd.kata.v2.Options': the rune shim "
                                                        "reads containerd.runc.v1.Options"),
    ({"config_path": "/nonexistent/rune.toml"}, "", "ConfigPath /nonexistent/rune.toml: No such file or directory"),
    ({}, "IoUid = ", "ConfigBody: not TOML"),
    ({}, "Bogus = 1", "ConfigBody: unknown option 'Bogus' (runc's option names are NoPivotRoot, NoNewKeyring"),
    ({}, 'IoUid = "1000"', "ConfigBody: IoUid = '1000': want an integer 0..4294967295"),
    ({}, "IoGid = -1", "ConfigBody: IoGid = -1: want an integer"),
    ({}, "NoPivotRoot = 1", "ConfigBody: NoPivotRoot = 1: want true or false"),
    ({}, "SystemdCgroup = true", "SystemdCgroup: the systemd cgroup driver is not supported"),
])
def test_generic_runtime_options_refused_with_the_key(fields: dict[str, str], toml: str, words: str) -> None:
    if toml:
        fields = {**fields, "config_body": toml.encode()}  # type: ignore[dict-item]
    with pytest.raises(ShimError, match="^runtime options: ") as e:
        parse_options(_generic(**fields))
    assert words in str(e.value) and "\n" not in str(e.value) and e.value.code == "invalid_argument"


# ------------------------------------------------------------------------------------------ metrics

STATS = {
    "cpu": {"usage": {"total": 5_000_000, "percpu": [3_000_000, 2_000_000], "kernel": 1_000_000, "user": 4_000_000},
            "throttling": {"periods": 4, "throttledPeriods": 2, "throttledTime": 9000}},
    "memory": {"cache": 11, "usage": {"usage": 4096, "limit": 8192, "max": 5000, "failcnt": 1},
               "swap": {"limit": 16384, "failcnt": 0}, "kernel": {"limit": 0, "failcnt": 0},
               "kernelTCP": {"limit": 0, "failcnt": 0},
               "raw": {"rss": 22, "pgfault": 33, "total_pgmajfault": 44, "hierarchical_memory_limit": 8192,
                       "anon": 55, "not_a_field": 1}},
    "pids": {"current": 3, "limit": 10},
    "blkio": {"ioServiceBytesRecursive": [{"major": 8, "minor": 0, "op": "Read", "value": 512}]},
    "hugetlb": {"2MB": {"usage": 0, "max": 0, "failcnt": 0}},
}


def test_metrics_v1() -> None:
    m = metrics_v1(STATS)
    assert (m.pids.current, m.pids.limit) == (3, 10)
    assert (m.cpu.usage.total, m.cpu.usage.kernel, m.cpu.usage.user) == (5_000_000, 1_000_000, 4_000_000)
    assert list(m.cpu.usage.per_cpu) == [3_000_000, 2_000_000]
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_periods, m.cpu.throttling.throttled_time) == (
        4, 2, 9000)
    assert (m.memory.usage.usage, m.memory.usage.limit, m.memory.usage.max, m.memory.usage.failcnt) == (
        4096, 8192, 5000, 1)
    assert (m.memory.cache, m.memory.rss, m.memory.pg_fault, m.memory.total_pg_maj_fault) == (11, 22, 33, 44)
    assert m.memory.hierarchical_memory_limit == 8192 and m.memory.swap.limit == 16384
    e = m.blkio.io_service_bytes_recursive[0]
    assert (e.major, e.minor, e.op, e.value) == (8, 0, "Read", 512)
    assert [h.pagesize for h in m.hugetlb] == ["2MB"]


def test_metrics_v2() -> None:
    m = metrics_v2(STATS)
    assert (m.pids.current, m.pids.limit) == (3, 10)
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec, m.cpu.throttled_usec) == (5000, 4000, 1000, 9)
    assert (m.memory.usage, m.memory.usage_limit, m.memory.swap_limit, m.memory.anon) == (4096, 8192, 16384, 55)


def test_metrics_any_type_urls() -> None:
    a = metrics_any(STATS, unified=False)
    assert a.type_url == "io.containerd.cgroups.v1.Metrics"
    assert v1_metrics_pb2.Metrics.FromString(a.value).pids.current == 3
    b = metrics_any(STATS, unified=True)
    assert b.type_url == "io.containerd.cgroups.v2.Metrics"
    assert v2_metrics_pb2.Metrics.FromString(b.value).pids.limit == 10


def test_stats_rpc_answers_the_hosts_metrics(rig: Rig) -> None:
    resp = rig.svc.Stats(CTX, shim_pb2.StatsRequest(id="c1"))
    assert resp.stats.type_url in ("io.containerd.cgroups.v1.Metrics", "io.containerd.cgroups.v2.Metrics")
