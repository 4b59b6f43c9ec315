"""The Redis broker's consumers: how often each queue is polled while it is empty, how many
messages they hold, and their doorbell (real Redis, real Dramatiq workers)."""

from __future__ import annotations

import threading
import time
import uuid

import dramatiq
import pytest
import redis
from dramatiq.common import dq_name

from app.extensions import queue
from app.tasks import dispatch, doorbell
from app.tasks.broker import THREAD_WAKE_MS, KeyedRedisBroker


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


# --- the doorbell: idle consumers wait for a ring instead of polling -------------------------------

@pytest.fixture
def doorbell_worker(redis_url, monkeypatch):
    """A real Dramatiq worker (threads in this process) on the real Redis, with Jobplane's broker in
    a namespace of its own, whose consumers would poll only every 30 s: what it does sooner, a
    doorbell (or an ack, or an eta) woke it for.  Yields (broker, handled, start): ``start``
    starts the worker and returns its actor ``record``; ``handled`` lists what it recorded."""
    broker = KeyedRedisBroker(url=redis_url, namespace=f"test-{uuid.uuid4().hex[:8]}", poll_ms=30_000)
    handled: list = []

    @dramatiq.actor(broker=broker, queue_name="work", actor_name="record", max_retries=0)
    def record(value, hold_seconds=0.0):
        time.sleep(hold_seconds)
        handled.append(value)

    workers = []

    def start(threads: int = 2, ring_wait_ms: int = 30_000, poll_ms: int = 30_000):
        monkeypatch.setattr(doorbell, "RING_WAIT_MS", ring_wait_ms)
        broker.poll_ms = poll_ms  # while the doorbell is not connected
        worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=THREAD_WAKE_MS)
        worker.queue_prefetch = threads  # as `jobplane worker` sets it: no more messages than threads
        worker.start()
        workers.append(worker)
        # the consumers' first fetches are behind them, and the doorbell's subscription is confirmed
        _wait_until(lambda: broker.doorbell.connected, "the doorbell subscribes")
        time.sleep(0.3)
        return record

    yield broker, handled, start
    monkeypatch.setattr(doorbell, "RING_WAIT_MS", 50)  # the consumers stop waiting 30 s…
    broker.doorbell.wake_all()  # …from now on
    for worker in workers:
        worker.stop()


def _wait_until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        time.sleep(0.01)


def test_a_sent_message_wakes_an_idle_consumer_that_would_poll_only_every_30_s(doorbell_worker):
    broker, handled, start = doorbell_worker
    record = start()
    # When two messages are sent to the idle worker
    record.send("first")
    _wait_until(lambda: handled == ["first"], "the first message runs")
    record.send("second")
    # Then each runs at once (long before the 30 s poll): the send rang the queue's doorbell
    _wait_until(lambda: handled == ["first", "second"], "the second message runs")


def test_a_delayed_message_runs_at_its_eta_though_no_ring_comes_then(doorbell_worker):
    broker, handled, start = doorbell_worker
    record = start()
    # When a message is sent with a delay of 0.8 s (its send rings the delay queue, nothing rings at its eta)
    sent = time.monotonic()
    record.send_with_options(args=("later",), delay=800)
    # Then it runs after its delay, and long before the 30 s poll: the consumer woke at the eta it holds
    _wait_until(lambda: handled == ["later"], "the delayed message runs")
    assert time.monotonic() - sent >= 0.8


def test_a_full_consumer_fetches_again_as_soon_as_a_thread_is_done(doorbell_worker):
    broker, handled, start = doorbell_worker
    record = start(threads=1)  # prefetch 1: the second message is not fetched while the first runs
    # When two messages are sent, the first holding the only thread for 0.3 s
    record.send("long", hold_seconds=0.3)
    record.send("next")
    # Then the second runs right after the first: the ack woke the consumer, no poll did
    _wait_until(lambda: handled == ["long", "next"], "both messages run")


def test_an_idle_consumer_does_not_poll_redis(doorbell_worker):
    broker, handled, start = doorbell_worker
    # (Jobplane's settings: a poll a second as a safety net, every 10 ms without the doorbell)
    start(ring_wait_ms=doorbell.RING_WAIT_MS, poll_ms=10)
    fetches = []
    dispatch_of = broker._dispatch
    broker._dispatch = lambda command: ((lambda *args: fetches.append(args) or dispatch_of(command)(*args))
                                        if command == "fetch" else dispatch_of(command))
    # When the worker (a consumer of "work" and one of its delay queue) sits idle for 2.5 s
    time.sleep(2.5)
    # Then each consumer asked Redis about once a second, not every poll_ms (10 ms by default:
    # 250 times each)
    assert len(fetches) <= 8, len(fetches)


def test_the_doorbell_subscriber_comes_back_after_redis_drops_it(doorbell_worker, redis_url):
    broker, handled, start = doorbell_worker
    record = start()
    # When Redis drops the subscriber's connection (as when it restarts; only this one: other tests'
    # subscribers share the server)
    host, port = broker.doorbell.pubsub.connection._sock.getsockname()[:2]
    redis.Redis.from_url(redis_url).client_kill(f"{host}:{port}")
    _wait_until(lambda: not broker.doorbell.connected, "the subscriber notices", seconds=5)
    _wait_until(lambda: broker.doorbell.connected, "the subscriber reconnects")
    # Then a message sent afterwards still wakes the idle consumer at once
    record.send("after")
    _wait_until(lambda: handled == ["after"], "the message runs")


def test_a_send_still_rings_after_redis_forgot_its_scripts(doorbell_worker, redis_url):
    broker, handled, start = doorbell_worker
    record = start()
    # When Redis forgets its Lua scripts (as after a restart) and a message is sent
    redis.Redis.from_url(redis_url).script_flush()
    record.send("after flush")
    # Then the send loads the script again, and its ring wakes the idle consumer at once
    _wait_until(lambda: handled == ["after flush"], "the message runs")


def test_the_doorbell_subscriber_survives_an_unexpected_error(doorbell_worker, monkeypatch):
    broker, handled, start = doorbell_worker
    # Given a subscriber whose first subscription fails with an error that is not Redis's
    subscribe, failures = doorbell.Doorbell._subscribe, []

    def failing_once(self, pubsub):
        if not failures:
            failures.append(1)
            raise ValueError("an unexpected error")
        return subscribe(self, pubsub)

    monkeypatch.setattr(doorbell.Doorbell, "_subscribe", failing_once)
    # When the worker starts (it waits for the doorbell to connect) and a message is sent
    record = start()
    record.send("after the error")
    # Then the subscriber subscribed again, and the ring wakes the idle consumer at once
    assert failures == [1]
    _wait_until(lambda: handled == ["after the error"], "the message runs")
