"""A doorbell for Dramatiq's Redis consumers: an idle consumer waits for a ring instead of polling.

Dramatiq's Redis consumer polls: an idle one runs its fetch script in Redis every few ms (its
backoff, capped at its timeout).  Each poll is a round trip and a Lua script, and takes the GIL
from the threads that spawn runs: at ``WORKER_POLL_MS=10`` an idle worker used a fifth of a core
and Redis 4 % of one (bench/idle_worker.py; with the doorbell, 0.7 % and 0.2 %).

Here whoever puts a message in a queue (``KeyedRedisBroker``: a send, a delayed message moved to
its queue, a message given back) also publishes on the queue's channel
``<namespace>:doorbell:<queue>``, a send in the same round trip.  Each process that consumes keeps
one subscriber (one Redis connection, one thread: ``Doorbell``) that wakes every consumer of the
queue rung.  An idle consumer (``DoorbellConsumer``) then waits, without a round trip, until

- a ring for its queue (a message may be waiting: it fetches at once);
- one of its messages is acknowledged (a thread is free: it may fetch again);
- the eta of a delayed message it holds (its consumer thread moves it to its queue then);
- ``RING_WAIT_MS`` (a safety net: messages Dramatiq puts back itself after a worker died, or that
  another program sent, ring no bell).

While the subscriber is not connected (Redis restarting), consumers poll every ``timeout`` ms, as
Dramatiq's do.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed

logger = logging.getLogger(__name__)

#: How long an idle consumer waits for a ring before it polls anyway.
RING_WAIT_MS = 1000
#: How long the subscriber waits for Redis to confirm its subscription, and between reconnections.
_SUBSCRIBE_TIMEOUT_SECONDS = 5.0
_RECONNECT_SECONDS = 1.0


def channel(namespace: str, queue_name: str) -> str:
    """The doorbell channel of a queue."""
    return f"{namespace}:doorbell:{queue_name}"


class Doorbell:
    """One process's subscriber to the doorbell channels of a namespace: wakes the consumers of
    each queue rung (see the module's docstring).  Its thread runs while any consumer listens."""

    def __init__(self, client: redis.Redis, namespace: str):
        self.client = client
        self.namespace = namespace
        self.prefix = channel(namespace, "")
        self.connected = False
        self.pubsub = None  # the current subscription (its own Redis connection)
        self._listeners: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def listen(self, queue_name: str, wake: threading.Event) -> None:
        """Set ``wake`` whenever ``queue_name`` is rung (and when the subscriber reconnects)."""
        with self._lock:
            self._listeners.setdefault(queue_name, set()).add(wake)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jobplane-doorbell", daemon=True)
                self._thread.start()

    def forget(self, queue_name: str, wake: threading.Event) -> None:
        with self._lock:
            self._listeners.get(queue_name, set()).discard(wake)
            if not self._listeners.get(queue_name):
                self._listeners.pop(queue_name, None)

    def _listening(self) -> bool:
        """Whether the thread goes on; it ends (under the lock) once nobody listens."""
        with self._lock:
            if self._listeners:
                return True
            self._thread = None
            return False

    def _run(self) -> None:
        """Subscribe, wake consumers on each ring, reconnect after an error; return (the thread
        ends) once ``_listening`` says nobody listens: it has then let another thread start."""
        while True:
            self.pubsub = pubsub = self.client.pubsub()
            try:
                self._subscribe(pubsub)
                self.connected = True
                self.wake_all()  # a ring may have been missed while no subscription held
                while True:
                    if not self._listening():
                        return
                    message = pubsub.get_message(timeout=RING_WAIT_MS / 1000)
                    if message is not None and message["type"] == "pmessage":
                        self._wake(message["channel"])
            except (redis.RedisError, OSError) as exc:
                if self.connected:
                    logger.warning("doorbell subscriber lost Redis (%s); consumers poll until it is back", exc)
            except Exception:  # never let the thread die: consumers would poll from then on
                logger.exception("doorbell subscriber failed; it subscribes again")
            finally:
                if self._thread in (None, threading.current_thread()):  # not a successor's state
                    self.connected = False
                self.wake_all()
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
            if not self._listening():
                return
            time.sleep(_RECONNECT_SECONDS)

    def _subscribe(self, pubsub) -> None:
        """Subscribe to every doorbell channel of the namespace, and wait until Redis confirms it:
        from then on no ring is missed."""
        pubsub.psubscribe(_glob_escape(self.prefix) + "*")
        deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
            if message is not None and message["type"] == "psubscribe":
                return
        raise redis.TimeoutError("Redis did not confirm the doorbell subscription")

    def _wake(self, channel_name: bytes | str) -> None:
        name = channel_name.decode() if isinstance(channel_name, bytes) else channel_name
        with self._lock:
            wakes = list(self._listeners.get(name[len(self.prefix):], ()))
        for wake in wakes:
            wake.set()

    def wake_all(self) -> None:
        """Wake every consumer listening (their next wait reads ``RING_WAIT_MS`` again)."""
        with self._lock:
            wakes = [wake for group in self._listeners.values() for wake in group]
        for wake in wakes:
            wake.set()


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class DoorbellConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, but an idle one waits for its doorbell instead of polling.

    ``__next__`` is ``_RedisConsumer.__next__`` of Dramatiq 2.2 with its backoff sleep replaced by
    ``_pause``; it also notes the eta of each delayed message it hands out.
    """

    def __init__(self, broker, queue_name: str, prefetch: int, timeout: int, *, doorbell: Doorbell):
        super().__init__(broker, queue_name, prefetch, timeout)
        self.doorbell = doorbell
        self.wake = threading.Event()
        self.etas: list[float] = []  # a heap: the etas of the delayed messages handed out
        doorbell.listen(queue_name, self.wake)

    def __next__(self):
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # as Dramatiq: see its issue #266
                        continue
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    eta = message.options.get("eta")
                    if isinstance(eta, (int, float)):
                        heapq.heappush(self.etas, eta)
                    return MessageProxy(message)
                self.wake.clear()  # before looking: a ring or an ack from now on is not missed
                if self.outstanding_message_count < self.prefetch:
                    self.message_cache = self.broker.do_fetch(self.queue_name,
                                                              self.prefetch - self.outstanding_message_count)
                    if self.message_cache:
                        continue
                self._pause()
                return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def _pause(self) -> None:
        """Wait for a ring, an ack, the next eta, or the poll time (see the module's docstring)."""
        now = current_millis()
        if self.etas and self.etas[0] <= now:
            while self.etas and self.etas[0] <= now:
                heapq.heappop(self.etas)
            return  # due: the consumer thread moves them to their queue as soon as this returns
        wait_ms = RING_WAIT_MS if self.doorbell.connected else self.timeout
        if self.etas:
            wait_ms = min(wait_ms, self.etas[0] - now + 1)
        self.wake.wait(wait_ms / 1000)

    def ack(self, message):
        self._settle(super().ack, message)

    def nack(self, message):
        self._settle(super().nack, message)

    def _settle(self, settle, message) -> None:
        """Ack or nack ``message``; if the consumer was full, a thread is now free: wake it to fetch."""
        full = self.outstanding_message_count >= self.prefetch
        try:
            settle(message)
        finally:
            if full:
                self.wake.set()

    def requeue(self, messages):
        super().requeue(messages)
        if messages:
            self.broker.ring(self.queue_name)

    def close(self):
        self.doorbell.forget(self.queue_name, self.wake)
        super().close()
