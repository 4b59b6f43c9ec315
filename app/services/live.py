"""Live log channels: each flushed piece of a run's output and each status change is published
on a channel per execution, for viewers following a run (websockets in the UI).

Redis pub/sub in production; in standalone mode, an in-process fan-out.  Publishing happens after
the piece is committed to the log, and carries its ``seq``, so a viewer that replays the stored
log and then follows the channel can drop what it already has.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable
from uuid import UUID

import redis
from flask import Flask

_REDIS_CLIENTS: dict[str, redis.Redis] = {}
_LOCK = threading.Lock()


def channel_name(namespace: str, execution_id: UUID | str) -> str:
    return f"{namespace}:log:{execution_id}"


class RedisLiveLog:
    def __init__(self, url: str, namespace: str):
        self.namespace = namespace
        with _LOCK:  # one client (and connection pool) per process, created after any fork
            self.client = _REDIS_CLIENTS.get(url) or _REDIS_CLIENTS.setdefault(url, redis.Redis.from_url(url))

    def publish(self, execution_id: UUID | str, event: dict[str, Any]) -> None:
        self.client.publish(channel_name(self.namespace, execution_id), json.dumps({**event, "ts": time.time()}))

    def publish_many(self, events: list[tuple[UUID | str, dict[str, Any]]]) -> None:
        """Publish events of many executions in one round trip (a group run's status changes)."""
        if not events:
            return
        pipeline = self.client.pipeline(transaction=False)
        now = time.time()
        for execution_id, event in events:
            pipeline.publish(channel_name(self.namespace, execution_id), json.dumps({**event, "ts": now}))
        pipeline.execute()


class LocalLiveLog:
    """In-process channels for standalone mode."""

    _subscribers: dict[str, list[Callable[[dict], None]]] = {}

    def __init__(self, namespace: str):
        self.namespace = namespace

    def subscribe(self, execution_id, callback: Callable[[dict], None]) -> Callable[[], None]:
        key = channel_name(self.namespace, execution_id)
        with _LOCK:
            self._subscribers.setdefault(key, []).append(callback)
        return lambda: self._subscribers.get(key, []).remove(callback)

    def publish(self, execution_id: UUID | str, event: dict[str, Any]) -> None:
        for callback in list(self._subscribers.get(channel_name(self.namespace, execution_id), ())):
            callback({**event, "ts": time.time()})

    def publish_many(self, events: list[tuple[UUID | str, dict[str, Any]]]) -> None:
        for execution_id, event in events:
            self.publish(execution_id, event)


def live_log_for(app: Flask) -> RedisLiveLog | LocalLiveLog:
    if app.config["ENV"] == "standalone":
        return LocalLiveLog(app.config["QUEUE_NAMESPACE"])
    return RedisLiveLog(app.config["REDIS_URL"], app.config["QUEUE_NAMESPACE"])
