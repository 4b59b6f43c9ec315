"""A circuit breaker per channel (email, slack, webhook), shared by every worker through Redis
(in-process in standalone mode): after ``NOTIFY_BREAKER_FAILURES`` failures in a row the channel
is held back for ``NOTIFY_BREAKER_SECONDS``, so a dead relay is not hammered and deliveries wait
(or, for Slack, fail over to email) instead of each burning its attempts."""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping

import redis

_LOCAL: dict[str, tuple[int, float]] = {}
_LOCAL_LOCK = threading.Lock()
_CLIENTS: dict[str, redis.Redis] = {}


def _client(url: str) -> redis.Redis:
    """One client (and connection pool) per process: a delivery must not open a connection."""
    with _LOCAL_LOCK:
        return _CLIENTS.get(url) or _CLIENTS.setdefault(url, redis.Redis.from_url(url))


class Breaker:
    def __init__(self, config: Mapping[str, Any], channel: str):
        self.channel = channel
        self.threshold = config["NOTIFY_BREAKER_FAILURES"]
        self.open_seconds = config["NOTIFY_BREAKER_SECONDS"]
        self.redis = None if config["ENV"] == "standalone" else _client(config["REDIS_URL"])
        self.key = f"{config['QUEUE_NAMESPACE']}:breaker:{channel}"

    def open_until(self) -> float | None:
        """When the breaker closes again (epoch seconds), or None if it is closed."""
        if self.redis is not None:
            until = self.redis.get(self.key + ":open")
            return float(until) if until else None
        with _LOCAL_LOCK:
            failures, until = _LOCAL.get(self.key, (0, 0.0))
        return until if until > time.time() else None

    def succeeded(self) -> None:
        if self.redis is not None:
            self.redis.delete(self.key + ":failures", self.key + ":open")
        else:
            with _LOCAL_LOCK:
                _LOCAL.pop(self.key, None)

    def failed(self) -> None:
        now = time.time()
        if self.redis is not None:
            failures = self.redis.incr(self.key + ":failures")
            self.redis.expire(self.key + ":failures", int(self.open_seconds * 10) + 1)
            if failures >= self.threshold:
                self.redis.set(self.key + ":open", now + self.open_seconds, px=int(self.open_seconds * 1000))
                self.redis.delete(self.key + ":failures")
            return
        with _LOCAL_LOCK:
            failures, _ = _LOCAL.get(self.key, (0, 0.0))
            failures += 1
            _LOCAL[self.key] = (0, now + self.open_seconds) if failures >= self.threshold else (failures, 0.0)
