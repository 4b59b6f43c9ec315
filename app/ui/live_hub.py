"""One Redis subscriber per web process, shared by every live log viewer in it.

redis-py's connection pool holds at most 100 connections, so one pub/sub connection per viewer
fails at the 101st (STACK-NOTES).  Here each process has one pub/sub connection and one reader
thread (a greenlet under gevent); a channel is subscribed while at least one viewer follows it
(counted by reference) and every message is put on the queue of each of its viewers.

The hub starts on first use, never at import, so a process forked by gunicorn makes its own
(a pub/sub connection inherited across a fork would be shared by two processes).  A viewer's
``subscribe`` returns only once Redis has confirmed the channel, so a viewer that replays the
stored log afterwards misses nothing published after its replay began.

In standalone mode there is no Redis: viewers follow ``LocalLiveLog``'s in-process channels.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from uuid import UUID

import redis
from flask import Flask

from app.services.live import LocalLiveLog, channel_name

logger = logging.getLogger(__name__)

#: events a viewer may fall behind by before it is told to re-read the stored log instead
VIEWER_QUEUE_SIZE = 1000
#: longest wait for Redis to confirm a subscription
CONFIRM_TIMEOUT_SECONDS = 5.0
#: the event a viewer gets when live events may have been lost (its queue overflowed, Redis
#: reconnected): it re-reads the stored log from its last piece
RESYNC = {"type": "resync"}

#: the subscriber's connection name in Redis (``CLIENT LIST``), followed by the process id
CLIENT_NAME = "jobplane-live-hub"

_HUBS: dict[tuple[int, str], "LiveHub"] = {}
_HUBS_LOCK = threading.Lock()


class Subscription:
    """One viewer's place on a channel: ``next_event(timeout)`` returns its next event or None."""

    def __init__(self, channel: str, on_close):
        self.channel = channel
        self.events: queue.Queue = queue.Queue(VIEWER_QUEUE_SIZE)
        self._on_close = on_close
        self._closed = False

    def deliver(self, event: dict) -> None:
        try:
            self.events.put_nowait(event)
        except queue.Full:  # a slow viewer: drop what it has not read, and have it re-read the store
            self._drain()
            self.events.put_nowait(RESYNC)

    def _drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def next_event(self, timeout: float) -> dict | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Channel:
    def __init__(self):
        self.viewers: list[Subscription] = []
        #: set once Redis has confirmed this channel's SUBSCRIBE
        self.confirmed = threading.Event()


class LiveHub:
    """The process's Redis subscriber: one pub/sub connection, one reader thread, many viewers.

    Parameters:
      url: the Redis URL (``REDIS_URL``).
    """

    def __init__(self, url: str):
        # named, so CLIENT LIST shows one subscriber per web process (and tests can count them)
        self.client = redis.Redis.from_url(url, health_check_interval=30, client_name=f"{CLIENT_NAME}-{os.getpid()}")
        self.pubsub = self.client.pubsub()
        self.channels: dict[str, _Channel] = {}
        #: per channel, the subscriptions sent and not yet confirmed, oldest first: Redis answers
        #: each SUBSCRIBE in order, so the next confirmation of a channel is for the oldest one
        self.awaiting: dict[str, deque[_Channel]] = {}
        self.lock = threading.Lock()
        self.reader: threading.Thread | None = None

    def subscribe(self, channel: str) -> Subscription:
        """A new viewer of ``channel``, returned once Redis has confirmed the subscription.

        Raises:
          TimeoutError: Redis did not confirm in time (the viewer is removed again).
        """
        viewer = Subscription(channel, self._leave)
        with self.lock:
            entry = self.channels.get(channel)
            if entry is None:
                # sent first, recorded after: if Redis is unreachable nothing stale is left behind
                # (the reader cannot see the confirmation before this lock is released)
                self.pubsub.subscribe(channel)  # redis-py sends under its own lock; the reader only reads
                entry = self.channels[channel] = _Channel()
                self.awaiting.setdefault(channel, deque()).append(entry)
            entry.viewers.append(viewer)
            self._start_reader()
        if not entry.confirmed.wait(CONFIRM_TIMEOUT_SECONDS):
            viewer.close()
            raise TimeoutError(f"Redis did not confirm the subscription to {channel} within "
                               f"{CONFIRM_TIMEOUT_SECONDS:.0f} s; check JOBPLANE_REDIS_URL")
        return viewer

    def _leave(self, viewer: Subscription) -> None:
        with self.lock:
            entry = self.channels.get(viewer.channel)
            if entry is None or viewer not in entry.viewers:
                return
            entry.viewers.remove(viewer)
            if not entry.viewers:  # the last viewer of the channel: Redis stops sending it
                del self.channels[viewer.channel]
                try:
                    self.pubsub.unsubscribe(viewer.channel)
                except redis.RedisError:  # reconnecting: the channel is not re-subscribed either
                    logger.warning("could not unsubscribe from %s", viewer.channel, exc_info=True)

    def stats(self) -> dict[str, int]:
        """Channels followed and viewers following them, for tests and benchmarks."""
        with self.lock:
            return {"channels": len(self.channels), "viewers": sum(len(c.viewers) for c in self.channels.values())}

    def _start_reader(self) -> None:
        if self.reader is None or not self.reader.is_alive():
            self.reader = threading.Thread(target=self._read, name="live-log-hub", daemon=True)
            self.reader.start()

    def _read(self) -> None:
        backoff = 0.1
        while True:  # a daemon thread: it lives as long as the process
            try:
                message = self.pubsub.get_message(timeout=1.0)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                logger.warning("live log subscriber lost Redis; retrying in %.1f s", backoff, exc_info=True)
                self._resync_everyone()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:  # the reader must outlive any surprise, or every viewer goes deaf
                logger.exception("live log subscriber failed on a message")
                continue
            backoff = 0.1
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        if message["type"] == "subscribe":
            with self.lock:
                waiting = self.awaiting.get(channel)
                entry = waiting.popleft() if waiting else None
                if waiting is not None and not waiting:
                    del self.awaiting[channel]
                current = self.channels.get(channel)
            if entry is not None:
                entry.confirmed.set()
            elif current is not None:  # a re-subscription after a reconnect: something may be lost
                for viewer in list(current.viewers):
                    viewer.deliver(RESYNC)
            return
        if message["type"] != "message":
            return
        try:
            event = json.loads(message["data"])
        except ValueError:
            logger.warning("ignored a malformed live log message on %s", channel)
            return
        with self.lock:
            entry = self.channels.get(channel)
            viewers = list(entry.viewers) if entry else []
        for viewer in viewers:
            viewer.deliver(event)

    def _resync_everyone(self) -> None:
        with self.lock:
            viewers = [viewer for entry in self.channels.values() for viewer in entry.viewers]
        for viewer in viewers:
            viewer.deliver(RESYNC)


class LocalSubscription(Subscription):
    """A viewer of a standalone process's in-process channel (no Redis, nothing to confirm)."""

    def __init__(self, live: LocalLiveLog, execution_id: UUID):
        super().__init__(channel_name(live.namespace, execution_id), lambda _: None)
        self._unsubscribe = live.subscribe(execution_id, self.deliver)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._unsubscribe()


def hub_for(url: str) -> LiveHub:
    """This process's hub for ``url``; a forked child makes its own on first use."""
    key = (os.getpid(), url)
    with _HUBS_LOCK:
        hub = _HUBS.get(key)
        if hub is None:
            hub = _HUBS[key] = LiveHub(url)
        return hub


def subscribe(app: Flask, execution_id: UUID) -> Subscription:
    """Follow the execution's live channel (confirmed before this returns); close it when done.

    Raises:
      TimeoutError: Redis did not confirm the subscription.
    """
    config = app.config
    if config["ENV"] == "standalone":
        return LocalSubscription(LocalLiveLog(config["QUEUE_NAMESPACE"]), execution_id)
    return hub_for(config["REDIS_URL"]).subscribe(channel_name(config["QUEUE_NAMESPACE"], execution_id))
