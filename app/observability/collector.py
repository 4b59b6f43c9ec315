"""The ``/metrics`` answer: the process's (or its siblings') samples, plus gauges read at scrape time.

Running executions and queue depth are facts of PostgreSQL and Redis, not of one process: counting
them in the processes would be wrong as soon as there are two.  The web reads them when scraped.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from app.observability.health import probe_engine, probe_redis
from app.tasks.dispatch import NOTIFICATIONS_QUEUE, RUN_QUEUES

#: The Dramatiq queues whose depth is exposed (ready, and delayed: retries and deferred runs).
QUEUES = (*RUN_QUEUES, NOTIFICATIONS_QUEUE)


def exposition(*, platform: tuple[dict, Mapping[str, Any]] | None = None) -> bytes:
    """The text exposition of this process kind's metrics.

    Parameters:
      platform: ``(extensions, config)`` to add the platform gauges read from PostgreSQL and Redis.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        output = generate_latest(registry)
    else:  # one process (the scheduler, standalone, tests): its own registry
        output = generate_latest(REGISTRY)
    if platform is not None:
        registry = CollectorRegistry()
        registry.register(PlatformCollector(*platform))
        output += generate_latest(registry)
    return output


class PlatformCollector:
    """Gauges read at scrape time: executions by status and job type, Dramatiq queue depth, and
    whether each source answered (a scrape never fails because the database is down)."""

    def __init__(self, extensions: dict, config: Mapping[str, Any]):
        self.extensions = extensions
        self.config = config

    def collect(self):
        up = GaugeMetricFamily("jobplane_platform_source_up", "1 if the source of the platform gauges answered "
                               "this scrape", labels=["source"])
        executions = GaugeMetricFamily("jobplane_executions", "Executions queued or running now, by job type",
                                       labels=["status", "job_type"])
        try:
            for status, job_type, count in self._active_executions():
                executions.add_metric([status, job_type], count)
            up.add_metric(["database"], 1)
        except Exception:
            up.add_metric(["database"], 0)
        yield executions
        depth = GaugeMetricFamily("jobplane_queue_depth", "Messages waiting in a Dramatiq queue (delayed: not due "
                                  "yet)", labels=["queue", "state"])
        try:
            for queue, state, count in self._queue_depths():
                depth.add_metric([queue, state], count)
            up.add_metric(["queue"], 1)
        except Exception:
            up.add_metric(["queue"], 0)
        yield depth
        yield up

    def _active_executions(self) -> list[tuple[str, str, int]]:
        from app.models import Execution, Job

        engine = probe_engine(self.extensions, self.config)
        with engine.connect() as connection:
            counts = {(status, job_type): count for status, job_type, count in connection.execute(
                select(Execution.status, Job.job_type, func.count())
                .join(Job, Job.id == Execution.job_id)
                .where(Execution.status.in_(("queued", "running")))
                .group_by(Execution.status, Job.job_type))}
        # every series is present, at 0 when there is nothing: "absent" would look like "unknown"
        return [(status, job_type, counts.get((status, job_type), 0))
                for status in ("queued", "running") for job_type in ("bash", "python")] + \
            [(s, t, c) for (s, t), c in counts.items() if t not in ("bash", "python")]

    def _queue_depths(self) -> list[tuple[str, str, int]]:
        from dramatiq.common import dq_name

        broker = self.extensions["jobplane_broker"]
        depths = []
        if self.config["ENV"] == "standalone":  # Dramatiq's in-memory broker
            for queue in QUEUES:
                for state, name in (("ready", queue), ("delayed", dq_name(queue))):
                    depths.append((queue, state, broker.queues[name].qsize() if name in broker.queues else 0))
            return depths
        client = probe_redis(self.extensions, self.config)
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(f"{broker.namespace}:{queue}")
            pipe.llen(f"{broker.namespace}:{dq_name(queue)}")
        counts = pipe.execute()
        for index, queue in enumerate(QUEUES):
            depths.append((queue, "ready", counts[2 * index]))
            depths.append((queue, "delayed", counts[2 * index + 1]))
        return depths
