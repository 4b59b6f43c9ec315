"""Sending messages to actors by name, through the current app's broker.

Services send through here rather than importing actor objects, so that no module binds to a
broker at import time (Dramatiq's implicit global broker is the trap this avoids).
"""

from __future__ import annotations

from typing import Callable
from uuid import UUID

import dramatiq
from dramatiq import Message

from app.extensions import queue

#: Queue of job runs; notifications get their own queue so they never wait behind runs.
EXECUTIONS_QUEUE = "executions"
RUN_EXECUTION = "run_execution"


def run_execution_sender() -> Callable[[UUID], None]:
    """A function sending ``run_execution(execution_id)`` through the current app's broker.

    The broker is looked up now, so the function can be called after the app context is gone
    (from an after-commit hook).
    """
    broker = queue.broker
    return lambda execution_id: send(broker, EXECUTIONS_QUEUE, RUN_EXECUTION, str(execution_id))


def send(broker: dramatiq.Broker, queue_name: str, actor_name: str, *args) -> None:
    broker.enqueue(Message(queue_name=queue_name, actor_name=actor_name, args=args, kwargs={},
                           options={}))
