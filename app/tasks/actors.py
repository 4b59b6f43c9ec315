"""The actors. Each takes ids, calls one service and is safe to run twice."""

from __future__ import annotations

import dramatiq
from flask import current_app

from app.executors import executor_for
from app.services import group_runs, notifications, runs
from app.tasks import dispatch


def run_execution(execution_id: str) -> None:
    """Run a queued execution, if this delivery wins the claim (others are dropped)."""
    config = current_app.config
    runs.run_execution(execution_id=execution_id, executor_for=lambda name: executor_for(config, name))


def run_execution_group(execution_ids: list[str]) -> None:
    """Run the executions of a group message together (those the group path cannot run are sent
    on singly; those claimed elsewhere are dropped)."""
    config = current_app.config
    group_runs.run_execution_group(execution_ids=execution_ids,
                                   executor_for=lambda name: executor_for(config, name))


def deliver_notification(notification_id: str) -> None:
    """Deliver a notification, if it is due and this delivery wins it."""
    notifications.deliver(notification_id)


def register_actors(broker: dramatiq.Broker) -> None:
    """Declare the actors on ``broker``.

    Dramatiq's own retries and time limit are off: a job's retries and timeout are Jobplane's,
    enforced by the services and the executor.
    """
    dramatiq.Actor(run_execution, actor_name=dispatch.RUN_EXECUTION, queue_name=dispatch.EXECUTIONS_QUEUE,
                   priority=0, broker=broker, options={"max_retries": 0, "time_limit": _NO_TIME_LIMIT_MS})
    # the bulk lane: the same run, taken only when no run of the ordinary lane waits in the worker
    dramatiq.Actor(run_execution, actor_name=dispatch.RUN_EXECUTION_BULK, queue_name=dispatch.EXECUTIONS_BULK_QUEUE,
                   priority=_BULK_PRIORITY, broker=broker, options={"max_retries": 0, "time_limit": _NO_TIME_LIMIT_MS})
    # a big batch arrives in the bulk lane as groups: many runs per message, one thread for them
    dramatiq.Actor(run_execution_group, actor_name=dispatch.RUN_EXECUTION_GROUP,
                   queue_name=dispatch.EXECUTIONS_BULK_QUEUE, priority=_BULK_PRIORITY, broker=broker,
                   options={"max_retries": 0, "time_limit": _NO_TIME_LIMIT_MS})
    # their own queue: a notification never waits behind job runs
    dramatiq.Actor(deliver_notification, actor_name=dispatch.DELIVER_NOTIFICATION,
                   queue_name=dispatch.NOTIFICATIONS_QUEUE, priority=0, broker=broker,
                   options={"max_retries": 0, "time_limit": 5 * 60 * 1000})


#: Dramatiq orders the messages a worker process has fetched by their actor's priority, lowest
#: first (then by arrival).
_BULK_PRIORITY = 100

#: Dramatiq's TimeLimit cannot interrupt a blocking call anyway; the executor enforces timeouts.
_NO_TIME_LIMIT_MS = 365 * 24 * 3600 * 1000
