"""Dramatiq's own Prometheus middleware, without its exposition server: the worker's notifier
process serves Dramatiq's message metrics with Jobplane's, ``/health`` and ``/ready`` on one port."""

from __future__ import annotations

from dramatiq.middleware.prometheus import Prometheus


class WorkerMetrics(Prometheus):
    """Dramatiq's message counters and durations (``dramatiq_*``), shared between the worker
    processes through ``PROMETHEUS_MULTIPROC_DIR`` and served by the notifier process."""

    @property
    def forks(self):
        return []
