"""A sleeping scheduler fires a job created or changed through the API on its first due time."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Execution
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)


def started_leader(processes):
    # A long reconcile interval: only the NOTIFY can wake the scheduler in time.
    scheduler = processes.scheduler(SCHEDULER_RECONCILE_SECONDS=3600)
    wait_for(lambda: "became the scheduler leader" in processes.log(scheduler), timeout=20, message="leader")
    return scheduler


def executions_of(app, job_id):
    with app.app_context():
        rows = list(db.session.scalars(select(Execution).where(Execution.job_id == job_id)))
        db.session.expunge_all()
        return rows


def test_a_new_job_fires_within_a_second_of_its_first_due_time(app, client, admin, processes):
    # Given a leader with no jobs at all (APScheduler sleeps with nothing to wake it)
    started_leader(processes)
    time.sleep(2)
    # When a job due at the next whole second + 2 is created through the API
    due = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    job = client.post("/api/v1/jobs", headers=admin, json={
        "name": "soon", "job_type": "bash", "script": "true",
        "schedule": f"{due.second} {due.minute} {due.hour} * * *"}).json
    # Then its first fire is recorded within a second of the due time
    rows = wait_for(lambda: executions_of(app, job["id"]), timeout=15, message="the first fire")
    assert rows[0].scheduled_for == due
    assert (rows[0].created_at - due).total_seconds() < 1.0


def test_a_paused_job_fires_nothing_and_a_one_time_job_fires_once_on_time(app, client, admin, processes):
    started_leader(processes)
    job = client.post("/api/v1/jobs", headers=admin, json={
        "name": "yearly", "job_type": "bash", "script": "true", "schedule": "0 0 1 1 *"}).json
    time.sleep(1)
    # When the job is paused and resumed, nothing fires; a one-time job fires once at its time
    assert client.post(f"/api/v1/jobs/{job['id']}/pause", headers=admin).status_code == 200
    run_at = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    once = client.post("/api/v1/jobs", headers=admin, json={
        "name": "once", "job_type": "bash", "script": "true", "run_at": run_at.isoformat()}).json
    rows = wait_for(lambda: executions_of(app, once["id"]), timeout=15, message="the one-time fire")
    assert [r.scheduled_for for r in rows] == [run_at]
    assert (rows[0].created_at - run_at).total_seconds() < 1.0
    time.sleep(3)
    assert len(executions_of(app, once["id"])) == 1
    assert executions_of(app, job["id"]) == []
