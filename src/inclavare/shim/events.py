"""Task events to containerd: ``containerd.services.events.ttrpc.v1.Events/Forward`` on ``$TTRPC_ADDRESS``.

Each event is wrapped as containerd's own shims wrap it: an Envelope stamped with the time of publishing, the
containerd namespace, the topic (``/tasks/exit`` ...) and the event as an Any whose type URL is the message's
bare full name (``containerd.events.TaskExit``), which is what containerd's typeurl writes and looks up.

Delivery is in order, by one sender thread from a bounded queue, so publishing never blocks the Task service.
While containerd is away (socket missing, connection refused or dropped, call timed out) the head event is
retried with exponential backoff for as long as it takes; containerd reconnects shims' events this way across
its restarts. An event containerd answers with an error status is retried a few times and then dropped (it
would block every later event). A full queue drops its oldest event; both drops are logged and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from inclavare.shim.proto.events import task_pb2 as events_pb2
from inclavare.shim.proto.events import ttrpc_pb2 as events_ttrpc_pb2
from inclavare.shim.ttrpc import NAMESPACE_KEY, Code, TtrpcError
from inclavare.shim.ttrpc_client import TtrpcClient

log = logging.getLogger("inclavare.shim.events")

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"

# containerd's runtime/events.go topics, by event message
TOPICS: dict[str, str] = {
    events_pb2.TaskCreate.DESCRIPTOR.full_name: "/tasks/create",
    events_pb2.TaskStart.DESCRIPTOR.full_name: "/tasks/start",
    events_pb2.TaskOOM.DESCRIPTOR.full_name: "/tasks/oom",
    events_pb2.TaskExit.DESCRIPTOR.full_name: "/tasks/exit",
    events_pb2.TaskDelete.DESCRIPTOR.full_name: "/tasks/delete",
    events_pb2.TaskExecAdded.DESCRIPTOR.full_name: "/tasks/exec-added",
    events_pb2.TaskExecStarted.DESCRIPTOR.full_name: "/tasks/exec-started",
    events_pb2.TaskPaused.DESCRIPTOR.full_name: "/tasks/paused",
    events_pb2.TaskResumed.DESCRIPTOR.full_name: "/tasks/resumed",
    events_pb2.TaskCheckpointed.DESCRIPTOR.full_name: "/tasks/checkpointed",
}

# codes that mean "containerd is not there right now" rather than "containerd refused this event"
_TRANSIENT = {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED}


def pack_any(message: Message) -> any_pb2.Any:
    """An Any as containerd's typeurl makes it: type URL = the bare full name (no type.googleapis.com/)."""
    return any_pb2.Any(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())


def envelope(namespace: str, event: Message, *, topic: str | None = None,
             timestamp: float | None = None) -> events_ttrpc_pb2.Envelope:
    """The Envelope for ``event``; the topic follows from the event type unless given."""
    if topic is None:
        topic = TOPICS.get(event.DESCRIPTOR.full_name)
        if topic is None:
            raise ValueError(f"event {event.DESCRIPTOR.full_name}: no topic known; pass one")
    if not namespace:
        raise ValueError(f"event {topic}: the containerd namespace is empty")
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(time.time_ns() if timestamp is None else int(timestamp * 1e9))
    return events_ttrpc_pb2.Envelope(timestamp=ts, namespace=namespace, topic=topic, event=pack_any(event))


class EventPublisher:
    """Forwards envelopes to containerd's ttrpc socket, in order, retrying while containerd is away."""

    def __init__(self, address: str, *, max_queue: int = 2048, call_timeout: float = 5.0,
                 initial_backoff: float = 0.05, max_backoff: float = 2.0, max_refusals: int = 5,
                 connect: Callable[[str], TtrpcClient] = TtrpcClient) -> None:
        self.address = address[len("unix://"):] if address.startswith("unix://") else address
        self.max_queue = max_queue
        self.call_timeout = call_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_refusals = max_refusals
        self._connect = connect
        self._queue: deque[events_ttrpc_pb2.Envelope] = deque()
        self._cv = threading.Condition()
        self._busy: events_ttrpc_pb2.Envelope | None = None  # the event being sent (the queue's head, unless
        # a full queue dropped it meanwhile)
        self._closing = False
        self._thread: threading.Thread | None = None
        self._client: TtrpcClient | None = None
        self.delivered = 0
        self.dropped = 0

    def publish(self, namespace: str, event: Message, *, topic: str | None = None) -> None:
        """Queue ``event`` (stamped now) for forwarding; returns at once."""
        env = envelope(namespace, event, topic=topic)
        with self._cv:
            if self._closing:
                raise RuntimeError("event publisher is closed")
            if len(self._queue) >= self.max_queue:
                # the oldest event not in flight: the one being sent may still arrive, and counting it as dropped
                # too would count it twice
                at = 1 if len(self._queue) > 1 and self._queue[0] is self._busy else 0
                old = self._queue[at]
                del self._queue[at]
                self.dropped += 1
                log.error("events: queue full (%d), dropping the oldest event %s", self.max_queue, old.topic)
            self._queue.append(env)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shim-events", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def pending(self) -> int:
        """Events not yet delivered (queued, the one being sent included)."""
        with self._cv:
            return len(self._queue)  # the event being sent stays at the head until delivered

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event is delivered (or dropped); False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what is queued for up to ``timeout`` seconds, then stop; returns the events left undelivered."""
        self.flush(timeout)
        with self._cv:
            self._closing = True
            left = len(self._queue)
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(self.call_timeout + 1)
        self._disconnect()
        return left

    # -- sender ----------------------------------------------------------------------------------

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _send(self, env: events_ttrpc_pb2.Envelope) -> None:
        if self._client is None or self._client.closed:
            self._disconnect()
            self._client = self._connect(self.address)
        self._client.call(EVENTS_SERVICE, "Forward", events_ttrpc_pb2.ForwardRequest(envelope=env),
                          empty_pb2.Empty, timeout=self.call_timeout, metadata={NAMESPACE_KEY: env.namespace})

    def _run(self) -> None:
        backoff = self.initial_backoff
        refusals = 0
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if self._closing:
                    return
                env = self._queue[0]
                self._busy = env
            done = False
            try:
                self._send(env)
                done = True
                self.delivered += 1
            except TtrpcError as e:
                if e.code in _TRANSIENT:
                    self._disconnect()
                    log.debug("events: containerd unreachable at %s (%s); retrying %s", self.address, e, env.topic)
                else:
                    refusals += 1
                    log.warning("events: containerd refused %s: %s", env.topic, e)
                    if refusals >= self.max_refusals:
                        done = True
                        self.dropped += 1
                        log.error("events: dropping %s after %d refusals", env.topic, refusals)
            with self._cv:
                if done:
                    if self._queue and self._queue[0] is env:
                        self._queue.popleft()
                    backoff = self.initial_backoff
                    refusals = 0
                self._busy = None
                self._cv.notify_all()
                if not done and not self._closing:
                    self._cv.wait(backoff)  # close() cuts the wait short
                    backoff = min(backoff * 2, self.max_backoff)
