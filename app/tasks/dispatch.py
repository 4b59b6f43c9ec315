"""Sending messages to actors by name, through the current app's broker.

Services send through here rather than importing actor objects, so that no module binds to a
broker at import time (Dramatiq's implicit global broker is the trap this avoids).
"""

from __future__ import annotations

from typing import Callable
from uuid import UUID

import dramatiq
from dramatiq import Message
from flask import current_app

from app.extensions import queue
from app.services.transactions import after_commit
from app.tasks.broker import KEY_OPTION, keys_in_queue

#: Queue of job runs; notifications get their own queue so they never wait behind runs.
EXECUTIONS_QUEUE = "executions"
RUN_EXECUTION = "run_execution"
#: The bulk lane: runs sent in a batch of more than ``BULK_FIRE_THRESHOLD`` (a burst of jobs due
#: at one instant).  Its actor has a lower priority, so a worker takes any waiting run of the
#: ordinary lane first: a burst is worked through without holding up the other jobs' runs.
EXECUTIONS_BULK_QUEUE = "executions_bulk"
RUN_EXECUTION_BULK = "run_execution_bulk"
#: A group message of the bulk lane: up to ``RUN_GROUP_SIZE`` executions that one worker thread
#: claims in one statement, supervises in one loop and records in batches (``group_runs``).
RUN_EXECUTION_GROUP = "run_execution_group"
#: Every queue of job runs (what workers consume, what the sweeper and the metrics look at).
RUN_QUEUES = (EXECUTIONS_QUEUE, EXECUTIONS_BULK_QUEUE)
NOTIFICATIONS_QUEUE = "notifications"
DELIVER_NOTIFICATION = "deliver_notification"
#: A worker process runs the bulk lane on threads of its own, on top of its ``WORKER_THREADS``:
#: half as many (at least one), taken by no more than as many bulk messages (a group holds its
#: thread for all its runs).  So a burst never takes a thread from the ordinary lane, whose staged
#: runs each hold one from 0.35 s before their time.
BULK_LANE_THREAD_DIVISOR = 2


def bulk_lane_threads(worker_threads: int) -> int:
    """The threads a worker process adds for the bulk lane to its ``worker_threads``."""
    return max(worker_threads // BULK_LANE_THREAD_DIVISOR, 1)


def run_execution_sender() -> Callable[..., None]:
    """A function sending ``run_execution(execution_id)`` through the current app's broker.

    The broker is looked up now, so the function can be called after the app context is gone
    (from an after-commit hook).  It takes an optional ``delay_seconds``.
    """
    broker = queue.broker

    def send_run(execution_id: UUID, delay_seconds: float | None = None) -> None:
        send(broker, EXECUTIONS_QUEUE, RUN_EXECUTION, str(execution_id), delay_seconds=delay_seconds,
             key=str(execution_id))

    return send_run


def notification_sender() -> Callable[..., None]:
    """A function sending ``deliver_notification(id)`` (optional ``delay_seconds``) through the
    current app's broker, callable after the app context is gone."""
    broker = queue.broker

    def send_notification(notification_id: UUID, delay_seconds: float | None = None) -> None:
        send(broker, NOTIFICATIONS_QUEUE, DELIVER_NOTIFICATION, str(notification_id), delay_seconds=delay_seconds)

    return send_notification


def send(broker: dramatiq.Broker, queue_name: str, actor_name: str, *args,
         delay_seconds: float | None = None, key: str | None = None) -> None:
    """Send ``actor_name(*args)``; ``key`` (what the message is about) lets the sweeper find it
    while it waits (``executions_in_queue``)."""
    options = {KEY_OPTION: key} if key else {}
    message = Message(queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options=options)
    broker.enqueue(message, delay=int(delay_seconds * 1000) if delay_seconds else None)


def send_runs_after_commit(execution_ids: list[UUID]) -> None:
    """Send run messages for these executions once the current transaction commits (a batch
    larger than ``BULK_FIRE_THRESHOLD`` in the bulk lane)."""
    if execution_ids:
        send_batch = run_batch_sender()
        after_commit(lambda: send_batch(execution_ids))


def send_runs(execution_ids: list[UUID], *, delay_seconds: float | None = None, burst: bool = False) -> None:
    """Send run messages for executions already committed (the scheduler's fire path); a batch
    larger than ``BULK_FIRE_THRESHOLD`` (a burst due at one instant), or a part of one
    (``burst``), goes to the bulk lane.  ``delay_seconds``: not delivered to a worker before then
    (staged runs)."""
    run_batch_sender()(execution_ids, delay_seconds=delay_seconds, burst=burst)


def run_batch_sender() -> Callable[..., None]:
    """A function sending the run messages of a batch of executions, in the lane its size
    chooses (optional ``delay_seconds``): a big batch due now as group messages of ``RUN_GROUP_SIZE``;
    like ``run_execution_sender``, callable after the app context is gone."""
    broker = queue.broker
    threshold = current_app.config["BULK_FIRE_THRESHOLD"]
    group_size = current_app.config["RUN_GROUP_SIZE"]

    def send_batch(execution_ids: list[UUID], delay_seconds: float | None = None, burst: bool = False) -> None:
        bulk = burst or len(execution_ids) > threshold
        if bulk and delay_seconds is None:
            send_groups(broker, execution_ids, group_size=group_size)
            return
        # staged runs (delayed) stay one per message: each is prepared and started at its own time
        queue_name, actor_name = ((EXECUTIONS_BULK_QUEUE, RUN_EXECUTION_BULK) if bulk
                                  else (EXECUTIONS_QUEUE, RUN_EXECUTION))
        for execution_id in execution_ids:
            send(broker, queue_name, actor_name, str(execution_id), key=str(execution_id),
                 delay_seconds=delay_seconds)

    return send_batch


def send_run_groups(execution_ids: list[UUID], *, group_size: int) -> None:
    """Send executions already committed as group messages (see ``send_groups``)."""
    send_groups(queue.broker, execution_ids, group_size=group_size)


def send_groups(broker: dramatiq.Broker, execution_ids: list[UUID], *, group_size: int) -> None:
    """Send executions as group messages of up to ``group_size`` ids in the bulk lane
    (``run_execution_group``).  Each message's key names all its executions, joined by commas,
    so that the sweeper sees each of them waiting."""
    size = max(group_size, 1)
    for start in range(0, len(execution_ids), size):
        ids = [str(execution_id) for execution_id in execution_ids[start:start + size]]
        send(broker, EXECUTIONS_BULK_QUEUE, RUN_EXECUTION_GROUP, ids, key=",".join(ids))


def executions_in_queue(*, live_within_seconds: float) -> set[str] | None:
    """Ids of the executions whose run message Redis holds in either lane (waiting, delayed, or
    fetched by a worker heard from within ``live_within_seconds``), or None when the broker
    cannot tell."""
    held: set[str] = set()
    for queue_name in RUN_QUEUES:
        keys = keys_in_queue(queue.broker, queue_name, live_within_ms=int(live_within_seconds * 1000))
        if keys is None:
            return None
        held |= keys
    return held
