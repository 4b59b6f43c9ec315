"""Every Prometheus metric Jobplane records, in one place, with one-line helpers for the code paths.

Labels stay bounded: job type and outcome (never a job or execution id), the route's rule (never
the raw path), the channel.  Metrics are process-local; ``jobplane web`` and ``jobplane worker``
run several processes and share their samples through prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``app.observability.process_environment`` before this module
is imported).  Gauges that must be right across processes (running executions, queue depth) are
read from PostgreSQL and Redis at scrape time instead (``app.observability.collector``).
"""

from __future__ import annotations

import functools
from datetime import datetime

from prometheus_client import Counter, Histogram, disable_created_metrics

# A "_created" series per labelled child doubles the series count for a timestamp nobody queries.
disable_created_metrics()

#: Request latencies: an API call is tens of milliseconds; a log download may take seconds.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Job run durations: from a second to the longest timeouts (hours).
_RUN_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200)
#: Schedule lag: the goal is well under a second; the alert fires past 10 s (p95).
_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)

HTTP_REQUESTS = Counter("jobplane_http_requests_total", "HTTP requests answered, by route rule and status",
                        ["method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram("jobplane_http_request_duration_seconds",
                                 "Time to answer an HTTP request, by route rule and status",
                                 ["method", "route", "status"], buckets=_REQUEST_BUCKETS)
EXECUTIONS_STARTED = Counter("jobplane_executions_started_total", "Executions whose run a worker started",
                             ["job_type"])
EXECUTIONS_FINISHED = Counter("jobplane_executions_finished_total",
                              "Executions that ended, by outcome (success, failed, timed_out, cancelled, lost)",
                              ["job_type", "outcome"])
EXECUTION_SECONDS = Histogram("jobplane_execution_duration_seconds", "Run time of finished executions",
                              ["job_type", "outcome"], buckets=_RUN_BUCKETS)
SCHEDULE_LAG_SECONDS = Histogram("jobplane_schedule_lag_seconds",
                                 "From an execution's scheduled time to its run's start (first attempts)",
                                 ["job_type"], buckets=_LAG_BUCKETS)
FIRES = Counter("jobplane_fires_total", "Fire times the scheduler recorded, by what they became "
                "(queued, skipped by the concurrency policy, missed by the misfire policy)", ["outcome"])
NOTIFICATION_DELIVERIES = Counter(
    "jobplane_notification_deliveries_total",
    "Notification delivery attempts by channel and outcome (sent; retrying and failed are failures; fallback: "
    "handed over to email)", ["channel", "outcome"])
SWEEPER_ACTIONS = Counter("jobplane_sweeper_actions_total",
                          "What the sweeper did: resent (a queued execution's message), lost (a silent run), "
                          "notification_resent", ["action"])

#: notification row status after an attempt → the outcome label
_NOTIFICATION_OUTCOMES = {"sent": "sent", "pending": "retrying", "failed": "failed", "fallback": "fallback"}


def request_answered(*, method: str, route: str, status: int, seconds: float) -> None:
    labels = (method, route, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_REQUEST_SECONDS.labels(*labels).observe(seconds)


def execution_started(*, job_type: str, scheduled_for: datetime, attempt: int, started_at: datetime) -> None:
    """A worker won an execution's claim. Only first attempts measure schedule lag: a retry's
    scheduled time is its first attempt's."""
    EXECUTIONS_STARTED.labels(job_type).inc()
    if attempt == 1:
        SCHEDULE_LAG_SECONDS.labels(job_type).observe(max((started_at - scheduled_for).total_seconds(), 0.0))


def execution_finished(*, job_type: str, outcome: str, started_at: datetime | None,
                       completed_at: datetime | None) -> None:
    EXECUTIONS_FINISHED.labels(job_type, outcome).inc()
    if started_at is not None and completed_at is not None:
        EXECUTION_SECONDS.labels(job_type, outcome).observe(max((completed_at - started_at).total_seconds(), 0.0))


def execution_finished_after_commit(*, job_type: str, outcome: str, started_at: datetime | None,
                                    completed_at: datetime | None) -> None:
    """Count an execution's end once the transaction that records it commits (never on rollback)."""
    from app.services.transactions import after_commit

    after_commit(functools.partial(execution_finished, job_type=job_type, outcome=outcome,
                                   started_at=started_at, completed_at=completed_at))


def executions_cancelled_after_commit(*, job_type: str, count: int) -> None:
    """Count cancelled executions (by a user, or replaced by a newer run) once that commits."""
    from app.services.transactions import after_commit

    if count:
        after_commit(lambda: EXECUTIONS_FINISHED.labels(job_type, "cancelled").inc(count))


def fires_recorded(result) -> None:
    """Count a committed ``FireResult``."""
    for outcome, entries in (("queued", result.queued), ("skipped", result.skipped), ("missed", result.missed)):
        if entries:
            FIRES.labels(outcome).inc(len(entries))


def notification_attempted(*, channel: str, status: str) -> None:
    outcome = _NOTIFICATION_OUTCOMES.get(status)
    if outcome is not None:
        NOTIFICATION_DELIVERIES.labels(channel, outcome).inc()


def swept(*, resent: int, lost: int, notifications_resent: int) -> None:
    for action, count in (("resent", resent), ("lost", lost), ("notification_resent", notifications_resent)):
        if count:
            SWEEPER_ACTIONS.labels(action).inc(count)


@functools.cache
def _leader_metrics():
    """Created on first use, by the scheduler only: an unlabelled metric writes a sample file as
    soon as it exists, and the web's processes would show a leader gauge of 0 for themselves."""
    from prometheus_client import Gauge

    return (Gauge("jobplane_scheduler_leader", "1 while this scheduler replica holds the leader lock"),
            Counter("jobplane_scheduler_leader_changes_total", "Times this replica became the leader"))


def leader_acquired() -> None:
    gauge, changes = _leader_metrics()
    gauge.set(1)
    changes.inc()


def leader_released() -> None:
    gauge, _ = _leader_metrics()
    gauge.set(0)


def standby() -> None:
    """A scheduler replica started: show it as a standby (0) until it leads."""
    _leader_metrics()[0].set(0)
