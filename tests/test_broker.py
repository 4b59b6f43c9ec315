"""The Redis broker's consumers: how often each queue is polled while it is empty."""

from __future__ import annotations

from dramatiq.common import dq_name

from app.extensions import queue
from app.tasks import dispatch
from app.tasks.broker import THREAD_WAKE_MS


def test_an_idle_consumer_polls_the_queues_that_can_wait_less_often(app):
    # Given the app's Redis broker, a worker's poll pause of 10 ms and a background one of 100 ms
    broker = queue.broker_of(app)
    assert (app.config["WORKER_POLL_MS"], app.config["BACKGROUND_POLL_MS"]) == (10, 100)
    background = [dispatch.EXECUTIONS_BULK_QUEUE, dispatch.NOTIFICATIONS_QUEUE]
    for name in [*background, *map(dq_name, background), dispatch.EXECUTIONS_QUEUE, dq_name(dispatch.EXECUTIONS_QUEUE)]:
        # When a Jobplane worker opens a consumer of each queue, with its Dramatiq timeout of 1 s
        # (how often its idle threads wake)
        consumer = broker.consume(name, prefetch=1, timeout=THREAD_WAKE_MS)
        try:
            # Then the bulk lane, notifications and their delayed messages wait up to 100 ms between
            # polls, and the ordinary lane and its delayed messages (staged runs, retries) 10 ms
            expected = 100 if name in background or name in map(dq_name, background) else 10
            assert consumer.timeout == expected, name
        finally:
            consumer.close()


def test_a_worker_holds_no_more_bulk_lane_messages_than_the_lane_has_threads(app):
    # Given the app's Redis broker and a worker of 4 threads (its prefetch is its thread count)
    broker = queue.broker_of(app)
    for name, expected in ((dispatch.EXECUTIONS_BULK_QUEUE, 2), (dispatch.EXECUTIONS_QUEUE, 4),
                           (dq_name(dispatch.EXECUTIONS_BULK_QUEUE), 4), (dispatch.NOTIFICATIONS_QUEUE, 4)):
        # When it opens a consumer of each queue, then only the bulk lane's holds 2 messages at once:
        # the lane's own threads (half as many, on top of the 4), each held for a whole group
        consumer = broker.consume(name, prefetch=4, timeout=10)
        try:
            assert consumer.prefetch == expected, name
        finally:
            consumer.close()
    consumer = broker.consume(dispatch.EXECUTIONS_BULK_QUEUE, prefetch=1, timeout=10)
    assert consumer.prefetch == 1  # never none
    consumer.close()
    # …and as many as the threads a worker process adds for the lane
    assert [dispatch.bulk_lane_threads(n) for n in (1, 2, 4, 8)] == [1, 1, 2, 4]
