"""Dramatiq's Redis broker, with messages that can be found again by what they are about.

Dramatiq gives every message it puts in Redis a random id (``redis_message_id``): the entry of
the queue's list ``<namespace>:<queue>`` (or ``<queue>.DQ`` while it is delayed) until a worker
fetches it, then of that worker's ack set ``<namespace>:__acks__.<worker>.<queue>`` until the
worker acknowledges it.  Here a message sent with a ``key`` option (an execution id, or the ids of
a group joined by commas) gets the id ``<key>.<random>``: still unique per enqueue, as Dramatiq
requires, and the key stays when a delayed message is moved to its queue.  The sweeper can then tell an execution whose message is
waiting in a long queue from one whose message is gone (Redis restarted, a crash between the
commit and the send).
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional
from uuid import uuid4

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

from app.tasks.doorbell import Doorbell, DoorbellConsumer, channel

logger = logging.getLogger(__name__)

#: The message option naming what a message is about; the prefix of its Redis id.
KEY_OPTION = "jobplane_key"


#: The Dramatiq worker timeout of Jobplane's Redis workers: how often an idle worker thread wakes
#: (to notice a shutdown); their consumers wait for their doorbell regardless (``doorbell``).
THREAD_WAKE_MS = 1000


class KeyedRedisBroker(RedisBroker):
    """A ``RedisBroker`` whose Redis message ids start with the message's ``jobplane_key``, and
    whose idle consumers wait for a doorbell instead of polling (``app.tasks.doorbell``): each
    message put in a queue rings it.

    ``poll_ms``, ``poll_ms_by_queue``: how often an idle consumer (of these queues) polls while its
    doorbell is not connected, instead of the Dramatiq worker's timeout.  The worker's timeout then
    only sets how often its idle threads wake to check for a shutdown (``THREAD_WAKE_MS``): at the
    10 ms a consumer needs, every idle thread took the GIL a hundred times a second from the
    threads running a burst.

    ``prefetch_divisors``: a worker process holds at most 1/N as many messages of such a queue
    as of the others (at least one).  A message occupies a worker thread from the moment a thread
    takes it, and a thread is never taken back: so at most 1/N of a worker's threads work on that
    queue, and the others stay free for the rest.
    """

    def __init__(self, *, poll_ms: int | None = None, poll_ms_by_queue: Mapping[str, int] | None = None,
                 prefetch_divisors: Mapping[str, int] | None = None, **options):
        super().__init__(**options)
        self.doorbell = Doorbell(self.client, self.namespace)
        self.poll_ms = poll_ms
        self.poll_ms_by_queue = dict(poll_ms_by_queue or {})
        self.prefetch_divisors = dict(prefetch_divisors or {})

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        if queue_name in self.prefetch_divisors:
            prefetch = max(prefetch // self.prefetch_divisors[queue_name], 1)
        poll_ms = self.poll_ms_by_queue.get(queue_name, self.poll_ms if self.poll_ms is not None else timeout)
        return DoorbellConsumer(self, queue_name, prefetch, poll_ms, doorbell=self.doorbell)

    def _dispatch(self, command: str):
        """Dramatiq's dispatch of a command to its Lua script, but an enqueue also rings the queue's
        doorbell in the same round trip (a pipeline): a send costs what it did without a doorbell.
        The script's arguments are ``RedisBroker._dispatch``'s (Dramatiq 2.2)."""
        if command != "enqueue":
            return super()._dispatch(command)
        script = self.scripts["dispatch"]

        def enqueue_and_ring(queue_name: str, *args):
            arguments = [command, current_millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                         self.dead_message_ttl, self._should_do_maintenance(command), self._max_unpack_size(), *args]
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, 1, self.namespace, *arguments)
            pipe.publish(channel(self.namespace, queue_name), b"")
            try:
                return pipe.execute()[0]
            except redis.exceptions.NoScriptError:  # Redis lost its scripts (a restart): load it and go on
                result = script(keys=[self.namespace], args=arguments)
                self.ring(queue_name)
                return result

        return enqueue_and_ring

    def ring(self, queue_name: str) -> None:
        """Wake the idle consumers of ``queue_name``: a message may be waiting there.  A ring that
        fails is not an error: the consumers poll at least every ``RING_WAIT_MS``."""
        try:
            self.client.publish(channel(self.namespace, queue_name), b"")
        except redis.RedisError as exc:
            logger.debug("doorbell of %s not rung: %s", queue_name, exc)

    def enqueue(self, message: Message, *, delay: Optional[int] = None) -> Message:
        # RedisBroker.enqueue, but for the id: it draws a bare uuid4, unconditionally.
        key = message.options.get(KEY_OPTION)
        redis_message_id = f"{key}.{uuid4()}" if key else str(uuid4())
        message = message.copy(options={"redis_message_id": redis_message_id})
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        self.do_enqueue(queue_name, redis_message_id, message.encode())  # rings the queue's doorbell too
        self.emit_after("enqueue", message, delay)
        return message


def keys_in_queue(broker: dramatiq.Broker, queue_name: str, *, live_within_ms: int) -> set[str] | None:
    """The keys of the messages held for ``queue_name``: waiting, delayed, or fetched by a worker
    that is alive (heard from within ``live_within_ms``) and has not acknowledged them yet.

    A message fetched by a dead worker does not count: Dramatiq gives it back only after the
    worker's heartbeat expires and another worker wins a maintenance roll (12 minutes once), so it
    is as good as lost.  Nor does a dead-lettered one.

    Returns:
      None when the broker cannot tell (the in-memory broker of standalone mode).
    """
    if not isinstance(broker, KeyedRedisBroker):
        return None
    ids = broker.client.eval(_HELD_MESSAGE_IDS, 0, broker.namespace, queue_name,
                             current_millis() - live_within_ms)
    # a group message's key names all its executions, joined by commas
    return {key for message_id in ids for key in message_id.decode().rpartition(".")[0].split(",")}


#: The ids of the messages of a queue (ARGV[2]) and its delay queue that wait in their lists or
#: sit in the ack sets of workers whose last heartbeat is at least ARGV[3] (ms); one script, so
#: that a message moving from the delay queue to the queue is seen in one place or the other.
#: The keys are Dramatiq's (dramatiq/brokers/redis/dispatch.lua).
_HELD_MESSAGE_IDS = """
local namespace, queue, live_since = ARGV[1], ARGV[2], ARGV[3]
local queues = {queue, queue .. ".DQ"}
local ids = {}
for _, name in ipairs(queues) do
  for _, id in ipairs(redis.call("lrange", namespace .. ":" .. name, 0, -1)) do table.insert(ids, id) end
end
for _, worker in ipairs(redis.call("zrangebyscore", namespace .. ":__heartbeats__", live_since, "+inf")) do
  for _, name in ipairs(queues) do
    local acks = namespace .. ":__acks__." .. worker .. "." .. name
    for _, id in ipairs(redis.call("smembers", acks)) do table.insert(ids, id) end
  end
end
return ids
"""
