"""Operating Jobplane: metrics, probes, structured logs and Sentry (docs/operations.md).

Entry points call, in this order: ``process_environment`` (``jobplane web``/``worker``, before the
processes start), ``setup`` (every process: log format, Sentry, and the scheduler's probe server),
``init_app`` (the app factory: ``/ready``, ``/metrics``, request ids and request metrics) and
``instrument_worker`` (a worker's broker).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any, Mapping

from flask import Flask, Response, current_app, g, jsonify, request

logger = logging.getLogger(__name__)

#: HTTP methods a label may carry; anything else is "other" (label values stay bounded)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def process_environment(kind: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The variables that make a multi-process kind (``web``, ``worker``) share its metrics: a
    directory of its own, emptied now (samples of a previous run would count twice).  Set them
    before the processes start: prometheus_client reads them when it is first imported."""
    if config.get("METRICS_DIR"):
        directory = os.path.join(config["METRICS_DIR"], kind)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix=f"jobplane-metrics-{kind}-")
    return {"PROMETHEUS_MULTIPROC_DIR": directory, "dramatiq_prom_db": directory,
            "dramatiq_prom_host": config["METRICS_HOST"], "dramatiq_prom_port": str(config["WORKER_METRICS_PORT"])}


def setup(config: Mapping[str, Any], kind: str):
    """Configure this process's logs and Sentry; the scheduler also starts its probe server.

    Parameters:
      kind: web, scheduler, worker or standalone.

    Returns:
      the probe server, if this kind has one and it started.
    """
    from app.observability import logs, sentry

    log_format = config.get("LOG_FORMAT") or ("text" if kind == "standalone" else "json")
    logs.configure(level=config["LOG_LEVEL"], log_format=log_format, process_kind=kind)
    sentry.init(config, process_kind=kind)
    if kind == "scheduler":
        from app.observability import metrics
        from app.observability.server import start_probe_server

        metrics.standby()
        return start_probe_server(config, config["SCHEDULER_METRICS_PORT"])
    return None


def instrument_worker(app: Flask, broker, *, notifier: bool = False):
    """A process of ``jobplane worker``: its logs and Sentry, and Sentry's Dramatiq middleware.
    The run workers add Dramatiq's Prometheus middleware; the notifier process (one per worker,
    alive as long as it) serves the probes and what every worker process recorded, on a thread
    rather than in a process of its own that would have to boot the app too.

    Returns:
      the notifier's probe server, if it started.
    """
    from app.observability import sentry
    from app.observability.server import start_probe_server
    from app.observability.worker import WorkerMetrics

    setup(app.config, "worker")
    sentry.instrument_broker(broker)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        logger.warning("worker metrics are off: start workers with `jobplane worker`, which shares them "
                       "between its processes")
    elif notifier:
        return start_probe_server(app.config, app.config["WORKER_METRICS_PORT"])
    else:
        broker.add_middleware(WorkerMetrics())
    return None


def init_app(app: Flask) -> None:
    """``/ready`` and ``/metrics`` on the web app, request ids, and request metrics."""
    from app.observability import logs

    logs.init_app(app)
    app.before_request(_start_clock)
    app.after_request(_count_request)
    app.add_url_rule("/ready", "ready", _ready)
    app.add_url_rule("/metrics", "metrics", _metrics)


def _start_clock() -> None:
    g.request_started = time.perf_counter()


def _count_request(response):
    from app.observability import metrics

    started = g.get("request_started")
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        metrics.request_answered(method=method, route=route, status=response.status_code,
                                 seconds=time.perf_counter() - started)
    return response


def _ready():
    """Readiness: 200 when the database and Redis answer and the schema is at head, else 503."""
    from app.observability.health import readiness

    ready, checks = readiness(current_app.extensions, current_app.config)
    return jsonify(status="ready" if ready else "unready", checks=checks), 200 if ready else 503


def _metrics():
    """Prometheus exposition: this kind's processes, and the platform gauges (PostgreSQL, Redis)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from app.observability.collector import exposition

    body = exposition(platform=(current_app.extensions, current_app.config))
    return Response(body, mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST})


def run_started(claim) -> None:
    """A worker won a claim and is about to start the run: count it, measure its schedule lag, and
    put its ids on this thread's log lines and Sentry events."""
    from app.models.base import utcnow
    from app.observability import logs, metrics, sentry

    logs.bind_run(job_id=claim.job.id, execution_id=claim.execution_id)
    sentry.tag_run(job_id=claim.job.id, execution_id=claim.execution_id)
    metrics.execution_started(job_type=claim.job.job_type, scheduled_for=claim.scheduled_for, attempt=claim.attempt,
                              started_at=utcnow())


def run_masker(masker) -> None:
    """The run's secrets are known: mask them out of this thread's log lines and Sentry events."""
    from app.observability import logs, sentry

    job_id, execution_id, _ = logs.current_run()
    logs.bind_run(job_id=job_id, execution_id=execution_id, masker=masker)
    sentry.scrub_run_secrets(masker)
