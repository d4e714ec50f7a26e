"""Our ttrpc client, events publisher and ttrpc server against the real containerd 1.6: a private containerd
started by the test, its ttrpc socket (``<address>.ttrpc``, what a shim gets as $TTRPC_ADDRESS), and ``ctr
events`` as the witness. An event that ``ctr events`` prints was accepted by containerd's Go ttrpc server,
decoded as its ForwardRequest, and its Any resolved by containerd's typeurl to containerd.events.TaskExit: the
bytes are containerd's. The other way round, containerd's Go ttrpc client adopts a task our server serves (as
it reloads shims after a restart) and `ctr tasks ls` is answered by our State.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from inclavare.shim.events import EVENTS_SERVICE, EventPublisher, envelope
from inclavare.shim.proto.events import task_pb2 as ev
from inclavare.shim.proto.events import ttrpc_pb2 as events_ttrpc_pb2
from inclavare.shim.proto.task import shim_pb2
from inclavare.shim.proto.types import task_pb2 as types_task_pb2
from inclavare.shim.ttrpc import NAMESPACE_KEY, CallContext, Code, TtrpcError, TtrpcServer
from inclavare.shim.ttrpc_client import TtrpcClient
from tests.conftest import is_root

NAMESPACE = "inclavare-ttrpc"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="needs root (containerd)"),
    pytest.mark.skipif(not (shutil.which("containerd") and shutil.which("ctr")),
                       reason="containerd/ctr are not installed (Debian package containerd)"),
]


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from inclavare.testing.containerd import ContainerdError, PrivateContainerd

    c = PrivateContainerd(str(tmp_path_factory.mktemp("ctrd") / "c"), namespace=NAMESPACE)
    try:
        c.start()
    except ContainerdError as e:
        pytest.skip(f"private containerd does not start here: {e}")
    try:
        yield c
    finally:
        c.purge()


class Events:
    """``ctr events`` running in the background; ``wait_for`` reads its lines until one matches."""

    def __init__(self, ctrd: object) -> None:
        self.proc = subprocess.Popen(ctrd.ctr_cmd("events"), stdout=subprocess.PIPE,  # type: ignore[attr-defined]
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._buf = b""

    def wait_for(self, needle: str, timeout: float = 20) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if needle in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"ctr events never showed {needle!r}; saw {self.lines}")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise AssertionError(f"ctr events ended: {err}; saw {self.lines}")
                self._buf += chunk
                *done, self._buf = self._buf.split(b"\n")
                self.lines += [d.decode() for d in done]

    def subscribed(self, ttrpc_address: str) -> None:
        """Forward probes until one shows up: from then on the subscription is live."""
        for i in range(200):
            with TtrpcClient(ttrpc_address) as c:
                forward(c, envelope(NAMESPACE, ev.TaskOOM(container_id=f"probe-{i}")))
            try:
                self.wait_for(f'"probe-{i}"', timeout=0.1)
                return
            except AssertionError:
                continue
        raise AssertionError("ctr events never subscribed")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def forward(c: TtrpcClient, env: events_ttrpc_pb2.Envelope) -> None:
    c.call(EVENTS_SERVICE, "Forward", events_ttrpc_pb2.ForwardRequest(envelope=env), empty_pb2.Empty, timeout=5,
           metadata={NAMESPACE_KEY: env.namespace})


def event_json(line: str) -> dict[str, object]:
    """ctr events prints: <timestamp> <namespace> <topic> <event JSON>."""
    return json.loads(line[line.index("{"):])  # type: ignore[no-any-return]


def test_containerd_accepts_and_decodes_a_forwarded_task_exit(ctrd: object) -> None:
    addr = ctrd.address + ".ttrpc"  # type: ignore[attr-defined]
    events = Events(ctrd)
    try:
        events.subscribed(addr)
        exit_ev = ev.TaskExit(container_id="c-exit", id="c-exit", pid=4242, exit_status=137)
        exit_ev.exited_at.FromSeconds(1_700_000_000)
        with TtrpcClient(addr) as c:
            forward(c, envelope(NAMESPACE, exit_ev))
        line = events.wait_for('"c-exit"')
        assert f" {NAMESPACE} /tasks/exit " in line
        body = event_json(line)
        assert (body["container_id"], body["id"], body["pid"], body["exit_status"]) == ("c-exit", "c-exit", 4242, 137)
        assert str(body["exited_at"]).startswith("2023-11-14T22:13:20")
    finally:
        events.close()


def test_containerds_go_ttrpc_answers_our_client_with_status_codes(ctrd: object) -> None:
    addr = ctrd.address + ".ttrpc"  # type: ignore[attr-defined]
    with TtrpcClient(addr) as c:
        with pytest.raises(TtrpcError) as e:
            c.call("containerd.nope.v1.Nope", "X", empty_pb2.Empty(), empty_pb2.Empty, timeout=5)
        assert (e.value.code, e.value.status_message) == (Code.UNIMPLEMENTED, "service containerd.nope.v1.Nope")
        with pytest.raises(TtrpcError) as e:
            c.call(EVENTS_SERVICE, "Nope", empty_pb2.Empty(), empty_pb2.Empty, timeout=5)
        assert e.value.code == Code.UNIMPLEMENTED
        bad = envelope(NAMESPACE, ev.TaskOOM(container_id="x"))
        bad.namespace = "Not A Namespace!"
        with pytest.raises(TtrpcError) as e:
            forward(c, bad)
        assert e.value.code == Code.INVALID_ARGUMENT, e.value
        forward(c, envelope(NAMESPACE, ev.TaskOOM(container_id="ok")))  # the connection still works


def test_events_queued_while_containerd_is_stopped_arrive_in_order_after_restart(ctrd: object,
                                                                                   tmp_path: Path) -> None:
    real = ctrd.address + ".ttrpc"  # type: ignore[attr-defined]
    # the publisher dials a symlink we control, so the queued events cannot arrive before ctr events listens
    link = str(tmp_path / "events.sock")
    os.symlink(real, link)
    pub = EventPublisher(link, initial_backoff=0.02, max_backoff=0.2)
    events = Events(ctrd)
    try:
        events.subscribed(real)
        pub.publish(NAMESPACE, ev.TaskCreate(container_id="q-0", bundle="/b", pid=1))
        assert pub.flush(20)
        events.wait_for('"q-0"')
        events.close()

        ctrd._terminate()  # type: ignore[attr-defined]  # containerd goes away with the publisher connected
        os.unlink(link)
        queued = [ev.TaskStart(container_id="q-1", pid=1),
                  ev.TaskExecAdded(container_id="q-2", exec_id="e"),
                  ev.TaskExecStarted(container_id="q-3", exec_id="e", pid=2),
                  ev.TaskExit(container_id="q-4", id="q-4", pid=1, exit_status=7),
                  ev.TaskDelete(container_id="q-5", pid=1, exit_status=7)]
        for e in queued:
            pub.publish(NAMESPACE, e)
        assert not pub.flush(0.5)
        assert pub.pending() == len(queued)

        ctrd.start()  # type: ignore[attr-defined]
        events = Events(ctrd)
        events.subscribed(real)
        os.symlink(real, link)
        assert pub.flush(30)
        last = events.wait_for('"q-5"')
        seen = [line for line in events.lines if '"q-' in line]
        assert [event_json(x)["container_id"] for x in seen] == ["q-1", "q-2", "q-3", "q-4", "q-5"]
        assert [x[:x.index(" {")].split()[-1] for x in seen] == [
            "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit", "/tasks/delete"]
        assert event_json(last)["exit_status"] == 7
        assert pub.close() == 0 and pub.dropped == 0
    finally:
        events.close()
        pub.close(timeout=0)


# ---------------------------------------------------------------------------------------------- containerd as client

class FakeTask:
    """Just enough of containerd.task.v2.Task for containerd to adopt a task on restart and list it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def Connect(self, ctx: CallContext, req: shim_pb2.ConnectRequest) -> shim_pb2.ConnectResponse:  # noqa: N802
        self.calls.append(("Connect", ctx.namespace))
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=4242, version="2")

    def State(self, ctx: CallContext, req: shim_pb2.StateRequest) -> shim_pb2.StateResponse:  # noqa: N802
        self.calls.append(("State", ctx.namespace))
        return shim_pb2.StateResponse(id=req.id, pid=4242, status=types_task_pb2.RUNNING, bundle="/b")


def test_containerd_adopts_and_queries_a_task_served_by_our_server(ctrd: object, tmp_path: Path) -> None:
    """containerd reloads shims on start from <state>/io.containerd.runtime.v2.task/<ns>/<id>/address: its Go
    ttrpc client dials our server and calls Connect, and `ctr tasks ls` shows what our State answers."""
    task_id = "fake-task"
    sock = tmp_path / "shim.sock"
    impl = FakeTask()
    srv = TtrpcServer()
    srv.register_service(shim_pb2.DESCRIPTOR.services_by_name["Task"], impl, inline=("State",))
    srv.serve(str(sock))
    helper = tmp_path / "shim-delete"  # what containerd runs as `<shim> delete` once our server goes away
    helper.write_text("#!/bin/sh\nexit 0\n")
    helper.chmod(0o755)
    bundle = Path(ctrd.state) / "io.containerd.runtime.v2.task" / NAMESPACE / task_id  # type: ignore[attr-defined]
    bundle.mkdir(parents=True)
    (bundle / "address").write_text(f"unix://{sock}")
    (bundle / "shim-binary-path").write_text(str(helper))
    try:
        ctrd.restart()  # type: ignore[attr-defined]
        assert ("Connect", NAMESPACE) in impl.calls
        out = ctrd.ctr("tasks", "ls").stdout  # type: ignore[attr-defined]
        assert [task_id, "4242", "RUNNING"] in [line.split() for line in out.splitlines()], out
        # containerd 1.6 sends the namespace metadata with Connect but not with every call (State comes without
        # it on this path): a Task service must not insist on it
        assert "State" in [name for name, _ in impl.calls]
    finally:
        srv.close()
        deadline = time.monotonic() + 20  # containerd notices the shim is gone and cleans the bundle up
        while bundle.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(bundle, ignore_errors=True)
    assert task_id not in ctrd.ctr("tasks", "ls").stdout  # type: ignore[attr-defined]
