"""Dramatiq's own Prometheus middleware, with Jobplane's probe process instead of its exposition
server: one port serves Dramatiq's message metrics, Jobplane's, ``/health`` and ``/ready``."""

from __future__ import annotations

from dramatiq.middleware.prometheus import Prometheus

from app.observability.server import serve_worker_probes


class WorkerMetrics(Prometheus):
    """Dramatiq's message counters and durations (``dramatiq_*``), shared between the worker
    processes through ``PROMETHEUS_MULTIPROC_DIR``; served by ``serve_worker_probes``."""

    @property
    def forks(self):
        return [serve_worker_probes]
