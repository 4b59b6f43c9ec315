"""Dramatiq's Redis broker, with messages that can be found again by what they are about.

Dramatiq gives every message it puts in Redis a random id (``redis_message_id``), the field of
the queue's ``<namespace>:<queue>.msgs`` hash holding the message from its enqueue until its ack
(a fetched message not yet acknowledged is still there), and of ``<queue>.DQ.msgs`` while it is
delayed.  Here a message sent with a ``key`` option (an execution id) gets the id
``<key>.<random>``: still unique per enqueue, as Dramatiq requires, and the key stays when a
delayed message is moved to its queue.  The sweeper can then tell an execution whose message is
waiting in a long queue from one whose message is gone (Redis restarted, a crash between the
commit and the send).
"""

from __future__ import annotations

from typing import Optional
from uuid import uuid4

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

#: The message option naming what a message is about; the prefix of its Redis id.
KEY_OPTION = "jobplane_key"


class KeyedRedisBroker(RedisBroker):
    """A ``RedisBroker`` whose Redis message ids start with the message's ``jobplane_key``."""

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
        self.do_enqueue(queue_name, redis_message_id, message.encode())
        self.emit_after("enqueue", message, delay)
        return message


def keys_in_queue(broker: dramatiq.Broker, queue_name: str) -> set[str] | None:
    """The keys of the messages held for ``queue_name``: waiting, delayed, or fetched by a worker
    and not yet acknowledged.  Dead-lettered messages do not count.

    Returns:
      None when the broker cannot tell (the in-memory broker of standalone mode).
    """
    if not isinstance(broker, KeyedRedisBroker):
        return None
    names = [f"{broker.namespace}:{name}.msgs" for name in (queue_name, dq_name(queue_name))]
    # One MULTI: a delayed message moved to its queue is enqueued there before it leaves the
    # delay queue, so a consistent read of both hashes always sees it in one of them.
    with broker.client.pipeline(transaction=True) as pipe:
        for name in names:
            pipe.hkeys(name)
        found = pipe.execute()
    return {field.decode().rpartition(".")[0] for fields in found for field in fields}
