"""Metrics move as the platform works: real ``jobplane scheduler`` and ``jobplane worker`` processes
(two worker processes sharing their samples) and the web app, scraped like Prometheus scrapes."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, insert, select

from app.extensions import db
from app.models import Execution
from app.models.base import new_id, utcnow
from tests.helpers import wait_for
from tests.observability.peers import free_port, sample, scrape
from tests.test_notifications import WebhookPeer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def hooks():
    peer = WebhookPeer()
    peer.answers["/broken"] = 500
    yield peer
    peer.close()


@pytest.fixture
def settings(settings, hooks):
    settings.update({"WEBHOOK_ALLOW_HTTP": True, "WEBHOOK_ALLOW_PRIVATE": True, "NOTIFY_RETRY_SECONDS": 0.5,
                     "NOTIFY_ATTEMPTS": 2, "SWEEP_INTERVAL_SECONDS": 0.5, "REQUEUE_AFTER_SECONDS": 5,
                     "HEARTBEAT_STALE_SECONDS": 20, "KILL_GRACE_SECONDS": 1, "MISFIRE_THRESHOLD_SECONDS": 1,
                     "SCHEDULER_METRICS_PORT": free_port(),
                     "WORKER_METRICS_PORT": free_port()})
    return settings


def _job(client, admin, **fields) -> str:
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": f"job-{new_id().hex[:6]}", "job_type": "bash", "script": "echo hi", **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def _run(client, admin, job_id) -> str:
    response = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin)
    assert response.status_code == 202, response.json
    return response.json["id"]


def _status(app, execution_id) -> str:
    with app.app_context():
        return db.session.scalar(select(Execution.status).where(Execution.id == execution_id))


def _count(app, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Execution).where(*where))


def test_metrics_move_with_real_runs(app, admin, client, processes, settings, hooks):
    web = lambda: client.get("/metrics").get_data(as_text=True)  # noqa: E731
    worker_url = f"http://127.0.0.1:{settings['WORKER_METRICS_PORT']}/metrics"
    scheduler_url = f"http://127.0.0.1:{settings['SCHEDULER_METRICS_PORT']}/metrics"

    # (the web app runs in this test process: its counters are this process's, so they are compared
    # with what they were before the test)
    before = web()

    def web_moved(name, **labels):
        return sample(web(), name, **labels) - sample(before, name, **labels)

    # Given a run asked for while no worker is up
    echo = _job(client, admin)
    first = _run(client, admin, echo)
    # Then the web shows it queued, its message waiting in Redis, and the request by its route rule
    now = web()
    assert sample(now, "jobplane_executions", status="queued", job_type="bash") == 1
    assert sample(now, "jobplane_queue_depth", queue="executions", state="ready") == 1
    assert web_moved("jobplane_http_requests_total", method="POST", route="/api/v1/jobs/<uuid:job_id>/run",
                     status="202") == 1
    assert web_moved("jobplane_http_request_duration_seconds_count", method="POST", route="/api/v1/jobs") == 1
    assert f"/api/v1/jobs/{echo}" not in now  # raw paths would make a series per job

    # When a scheduler and two worker processes start
    scheduler = processes.scheduler()
    worker = processes.worker(WORKER_PROCESSES=2)
    wait_for(lambda: _status(app, first) == "success", timeout=60, message=f"the first run\n{processes.logs()}")
    # Then the queue drains and the scheduler says it leads
    wait_for(lambda: sample(web(), "jobplane_queue_depth", queue="executions", state="ready") == 0, timeout=10)
    assert sample(web(), "jobplane_executions", status="queued") == 0
    wait_for(lambda: sample(scrape(scheduler_url), "jobplane_scheduler_leader") == 1, timeout=30,
             message=f"the leader gauge\n{processes.log(scheduler)}")
    assert sample(scrape(scheduler_url), "jobplane_scheduler_leader_changes_total") == 1

    # When jobs fire every second (one slow, its overlapping fires skipped by its concurrency
    # policy), a python job fails and notifies a webhook that works and one that does not, and a
    # long run is cancelled while it runs
    _job(client, admin, schedule="* * * * * *")
    _job(client, admin, schedule="* * * * * *", script="sleep 2.5", concurrency_policy="forbid")
    failing = _job(client, admin, job_type="python", script="import sys; sys.exit(3)",
                   notification_webhook_url=hooks.url("/fine"))
    broken = _job(client, admin, script="exit 4", notification_webhook_url=hooks.url("/broken"))
    failed = _run(client, admin, failing)
    _run(client, admin, broken)
    long_run = _run(client, admin, _job(client, admin, script="sleep 60"))
    wait_for(lambda: _status(app, long_run) == "running", timeout=30, message="the long run to start")
    assert sample(web(), "jobplane_executions", status="running", job_type="bash") >= 1
    assert client.post(f"/api/v1/executions/{long_run}/cancel", headers=admin).status_code == 200
    # and the sweeper finds a queued execution whose message was lost, and a run whose worker died
    with app.app_context():
        old = utcnow() - timedelta(minutes=1)
        base = {"job_id": echo, "attempt": 1, "triggered_by": "manual", "created_at": old, "sent_at": old,
                "send_count": 1, "log_bytes": 0, "log_truncated": False}
        db.session.execute(insert(Execution), [
            {**base, "id": new_id(), "scheduled_for": old, "status": "queued"},
            {**base, "id": new_id(), "scheduled_for": old - timedelta(seconds=1), "status": "running",
             "claim_token": "gone", "worker_id": "dead:1:1", "started_at": old, "heartbeat_at": old}])
        db.session.commit()

    # Then, once the work is done, every metric has moved as it should
    wait_for(lambda: _status(app, failed) == "failed" and len(hooks.calls_to("/fine")) == 1
             and len(hooks.calls_to("/broken")) == 2, timeout=60, message=f"the failures\n{processes.logs()}")
    wait_for(lambda: sample(scrape(scheduler_url), "jobplane_fires_total", outcome="skipped") >= 1, timeout=30,
             message="a skipped fire")

    def settled():
        worked = scrape(worker_url)
        ran = sample(worked, "jobplane_executions_started_total")
        return ran and ran == _count(app, Execution.worker_id.is_not(None),
                                     Execution.worker_id != "dead:1:1") and worked
    worked = wait_for(settled, timeout=30, message="the worker's counts to match the database")
    # the two worker processes' counts add up to what the database says ran
    assert sample(worked, "jobplane_executions_started_total", job_type="python") == 1
    assert sample(worked, "jobplane_executions_finished_total", job_type="python", outcome="failed") == 1
    assert sample(worked, "jobplane_executions_finished_total", job_type="bash", outcome="success") >= 2
    assert sample(worked, "jobplane_execution_duration_seconds_count", job_type="python", outcome="failed") == 1
    assert sample(worked, "jobplane_schedule_lag_seconds_count", job_type="bash") >= 2
    assert sample(worked, "jobplane_schedule_lag_seconds_bucket", job_type="bash", le="+Inf") >= 2
    assert sample(worked, "jobplane_notification_deliveries_total", channel="webhook", outcome="sent") == 1
    assert sample(worked, "jobplane_notification_deliveries_total", channel="webhook", outcome="retrying") == 1
    assert sample(worked, "jobplane_notification_deliveries_total", channel="webhook", outcome="failed") == 1
    assert sample(worked, "dramatiq_messages_total", actor_name="run_execution") >= 3  # Dramatiq's own
    assert web_moved("jobplane_executions_finished_total", job_type="bash", outcome="cancelled") == 1
    scheduled = scrape(scheduler_url)
    assert sample(scheduled, "jobplane_fires_total", outcome="queued") >= 2
    wait_for(lambda: sample(scrape(scheduler_url), "jobplane_sweeper_actions_total", action="lost") == 1
             and sample(scrape(scheduler_url), "jobplane_sweeper_actions_total", action="resent") >= 1,
             timeout=30, message="the sweeper's actions")
    assert sample(scrape(scheduler_url), "jobplane_executions_finished_total", outcome="lost") == 1
    assert worker.poll() is None and scheduler.poll() is None

    # When the leader dies and another scheduler takes over a few seconds later
    processes.kill(scheduler)
    time.sleep(3)
    successor_url = f"http://127.0.0.1:{free_port()}/metrics"
    processes.scheduler(SCHEDULER_METRICS_PORT=successor_url.split(":")[2].split("/")[0])
    # Then it leads, and counts the per-second fire times nobody fired meanwhile as missed (the
    # misfire policy run_latest runs only the latest of them)
    wait_for(lambda: _answers(successor_url) and sample(scrape(successor_url), "jobplane_fires_total",
                                                         outcome="missed") >= 1,
             timeout=60, message=f"missed fires counted\n{processes.logs()}")
    taken_over = scrape(successor_url)
    assert sample(taken_over, "jobplane_scheduler_leader") == 1
    assert sample(taken_over, "jobplane_scheduler_leader_changes_total") == 1


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
