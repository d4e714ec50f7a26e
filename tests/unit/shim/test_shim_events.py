"""The events publisher against an in-process Events service (our ttrpc server standing in for containerd):
envelopes and type URLs as containerd writes them, order, retry while containerd is away, refusals, and the
bounded queue. tests/integration/test_ttrpc_containerd.py does the same against the real containerd."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from inclavare.shim.events import EVENTS_SERVICE, TOPICS, EventPublisher, envelope, pack_any
from inclavare.shim.proto.events import task_pb2 as ev
from inclavare.shim.proto.events import ttrpc_pb2 as events_ttrpc_pb2
from inclavare.shim.ttrpc import CallContext, Code, TtrpcError, TtrpcServer


class FakeContainerd:
    """Records what Forward receives; ``refuse`` names topics answered with INVALID_ARGUMENT."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.got: list[tuple[str | None, events_ttrpc_pb2.Envelope]] = []
        self.refuse: set[str] = set()
        self.arrived = threading.Condition()
        self.server: TtrpcServer | None = None

    def forward(self, ctx: CallContext, req: events_ttrpc_pb2.ForwardRequest) -> empty_pb2.Empty:
        if req.envelope.topic in self.refuse:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"refusing {req.envelope.topic}")
        with self.arrived:
            self.got.append((ctx.namespace, req.envelope))
            self.arrived.notify_all()
        return empty_pb2.Empty()

    def start(self) -> FakeContainerd:
        self.server = TtrpcServer()
        self.server.register(EVENTS_SERVICE, "Forward", events_ttrpc_pb2.ForwardRequest, self.forward)
        self.server.serve(self.path)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def topics(self) -> list[str]:
        return [e.topic for _, e in self.got]


@pytest.fixture
def ctrd(tmp_path: Path) -> FakeContainerd:
    f = FakeContainerd(str(tmp_path / "containerd.sock.ttrpc"))
    yield f  # type: ignore[misc]
    f.stop()


EVENTS = [
    ev.TaskCreate(container_id="c1", bundle="/b", pid=10, io=ev.TaskIO(stdin="/i")),
    ev.TaskStart(container_id="c1", pid=10),
    ev.TaskExecAdded(container_id="c1", exec_id="e1"),
    ev.TaskExecStarted(container_id="c1", exec_id="e1", pid=11),
    ev.TaskExit(container_id="c1", id="c1", pid=10, exit_status=3),
    ev.TaskDelete(container_id="c1", pid=10, exit_status=3),
    ev.TaskOOM(container_id="c1"),
    ev.TaskPaused(container_id="c1"),
    ev.TaskResumed(container_id="c1"),
]


def test_envelopes_are_containerds() -> None:
    a = pack_any(ev.TaskExit(container_id="c1", exit_status=3))
    assert a.type_url == "containerd.events.TaskExit"  # typeurl's bare name, not type.googleapis.com/...
    assert ev.TaskExit.FromString(a.value).exit_status == 3
    topics = [envelope("ns", e).topic for e in EVENTS]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",
                      "/tasks/delete", "/tasks/oom", "/tasks/paused", "/tasks/resumed"]
    assert len(TOPICS) == 10  # and /tasks/checkpointed
    env = envelope("k8s.io", EVENTS[0], timestamp=1700000000.5)
    assert (env.namespace, env.timestamp.seconds, env.timestamp.nanos) == ("k8s.io", 1700000000, 500000000)
    with pytest.raises(ValueError, match="no topic known"):
        envelope("ns", ev.TaskIO())
    with pytest.raises(ValueError, match="namespace is empty"):
        envelope("", EVENTS[0])


def test_events_arrive_in_order_with_the_namespace(ctrd: FakeContainerd) -> None:
    ctrd.start()
    pub = EventPublisher(ctrd.path)
    for e in EVENTS:
        pub.publish("inclavare", e)
    assert pub.flush(20)
    assert ctrd.topics() == [envelope("x", e).topic for e in EVENTS]
    assert {ns for ns, _ in ctrd.got} == {"inclavare"}
    assert [e.namespace for _, e in ctrd.got] == ["inclavare"] * len(EVENTS)
    assert ev.TaskExecStarted.FromString(ctrd.got[3][1].event.value).pid == 11
    assert pub.close() == 0 and pub.delivered == len(EVENTS)


def test_queued_while_containerd_is_away_then_delivered(ctrd: FakeContainerd) -> None:
    pub = EventPublisher(ctrd.path, initial_backoff=0.01, max_backoff=0.05)
    for e in EVENTS[:3]:
        pub.publish("ns", e)
    assert not pub.flush(0.3)  # nobody listens yet
    assert pub.pending() == 3
    ctrd.start()
    assert pub.flush(20)
    assert ctrd.topics() == ["/tasks/create", "/tasks/start", "/tasks/exec-added"]
    # containerd restarts: the connection breaks, later events wait, then go to the new one
    ctrd.stop()
    for e in EVENTS[3:6]:
        pub.publish("ns", e)
    assert not pub.flush(0.3)
    ctrd.start()
    assert pub.flush(20)
    assert ctrd.topics()[3:] == ["/tasks/exec-started", "/tasks/exit", "/tasks/delete"]
    pub.close()


def test_refused_event_is_dropped_after_retries_and_the_rest_flow(ctrd: FakeContainerd) -> None:
    ctrd.start()
    ctrd.refuse.add("/tasks/oom")
    pub = EventPublisher(ctrd.path, initial_backoff=0.01, max_refusals=3)
    for e in (EVENTS[6], EVENTS[7]):
        pub.publish("ns", e)
    assert pub.flush(20)
    assert ctrd.topics() == ["/tasks/paused"]
    assert (pub.dropped, pub.delivered) == (1, 1)
    pub.close()


def test_bounded_queue_drops_the_oldest(ctrd: FakeContainerd) -> None:
    pub = EventPublisher(ctrd.path, max_queue=3, initial_backoff=0.01, max_backoff=0.05)
    for e in EVENTS[:5]:
        pub.publish("ns", e)
    assert pub.dropped >= 2 and pub.pending() <= 3
    ctrd.start()
    assert pub.flush(20)
    assert ctrd.topics()[-2:] == ["/tasks/exec-started", "/tasks/exit"]
    assert pub.dropped + len(ctrd.got) == 5
    pub.close()
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish("ns", EVENTS[0])


def test_close_reports_what_was_not_delivered(tmp_path: Path) -> None:
    pub = EventPublisher(str(tmp_path / "nobody"), initial_backoff=0.01, max_backoff=0.02)
    pub.publish("ns", EVENTS[0])
    pub.publish("ns", EVENTS[1])
    assert pub.close(timeout=0.2) == 2


def test_a_full_queue_never_drops_the_event_in_flight() -> None:
    """The head being sent is skipped when the queue overflows: it may still be delivered, so dropping it would
    count it both as dropped and as delivered (the sender is held inside its send while the queue fills)."""
    sending, release = threading.Event(), threading.Event()
    sent: list[str] = []

    class HeldClient:
        closed = False

        def call(self, service: str, method: str, request: Any, reply: Any, **kw: Any) -> Any:
            sending.set()
            release.wait(10)
            sent.append(request.envelope.topic)
            return reply()

        def close(self) -> None:
            pass

    pub = EventPublisher("/nonexistent", max_queue=3, connect=lambda address: HeldClient())
    pub.publish("ns", EVENTS[0])
    assert sending.wait(10)  # EVENTS[0] is in flight
    for e in EVENTS[1:5]:
        pub.publish("ns", e)
    assert pub.dropped == 2
    release.set()
    assert pub.flush(10)
    assert sent[0] == "/tasks/create" and pub.dropped + len(sent) == 5
    pub.close()
