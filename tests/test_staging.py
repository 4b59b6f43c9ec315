"""Staging: fires recorded ahead of their time, their processes held until it, against PostgreSQL,
Redis, bubblewrap and real worker and scheduler processes."""

from __future__ import annotations

import re
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from dramatiq import Message
from sqlalchemy import select

from app.executors import executor_for
from app.extensions import db, queue
from app.models import AuditLog, Execution, ExecutionLogChunk
from app.scheduler import sync
from app.scheduler.batching import BatchingJobStore, BatchingScheduler
from app.scheduler.executor import FireExecutor
from app.scheduler.fire import fire_due_job
from app.scheduler.stager import Stager
from app.services import runs, staged_runs, staging, sweeper
from app.services.firing import record_fires
from app.tasks import dispatch
from tests.helpers import processes_with, wait_for

pytestmark = pytest.mark.timeout(120)

#: Records when the job's own code started, by the clock of the machine.
START_SCRIPT = "echo START $(date +%s.%N)"


def create_job(client, admin, **fields) -> dict:
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "staged", "job_type": "bash", "script": START_SCRIPT, "schedule": "* * * * * *",
        "concurrency_policy": "allow", **fields})
    assert response.status_code == 201, response.json
    return response.json


def rows(app, job_id) -> list[Execution]:
    with app.app_context():
        found = list(db.session.scalars(select(Execution).where(Execution.job_id == job_id)
                                        .order_by(Execution.scheduled_for)))
        db.session.expunge_all()
    return found


def logs(app, execution_id) -> str:
    with app.app_context():
        return "".join(db.session.scalars(select(ExecutionLogChunk.data).where(
            ExecutionLogChunk.execution_id == execution_id).order_by(ExecutionLogChunk.seq)))


def script_start(app, execution_id) -> datetime:
    [stamp] = re.findall(r"START (\d+\.\d+)", logs(app, execution_id))
    return datetime.fromtimestamp(float(stamp), timezone.utc)


@pytest.fixture
def store(app):
    """APScheduler's store, filled from ``jobs`` as the leader does (paused: nothing fires by itself)."""
    engine = app.extensions["jobplane_db"].engine
    scheduler = BatchingScheduler(jobstores={"default": BatchingJobStore(engine=engine, tablename="apscheduler_jobs")},
                                  executors={"default": FireExecutor(app)}, timezone="UTC")
    scheduler.start(paused=True)
    yield scheduler
    scheduler.shutdown(wait=False)


def stage_fire_ahead(app, job_id, *, lead: float) -> tuple[str, datetime]:
    """A fire of the job recorded ``lead`` seconds ahead, as the stager records it."""
    fire_time = (datetime.now(timezone.utc) + timedelta(seconds=lead)).replace(microsecond=0)
    with app.app_context():
        result = record_fires(job_id=job_id, run_times=[fire_time], fired_by="test", misfire_threshold=timedelta(10),
                              run_all_cap=10)
        db.session.commit()
    [execution_id] = result.queued
    return str(execution_id), fire_time


class WorkerThread(threading.Thread):
    """The worker's side of one delivery, in this process: ``runs.run_execution``."""

    def __init__(self, app, execution_id):
        super().__init__(daemon=True)
        self.app, self.execution_id, self.outcome = app, execution_id, "not finished"

    def run(self):
        with self.app.app_context():
            self.outcome = runs.run_execution(execution_id=self.execution_id,
                                              executor_for=lambda name: executor_for(self.app.config, name))


def test_the_stager_stages_allow_jobs_only_and_the_fire_at_its_time_adds_nothing(app, client, admin, store):
    # Given an allow job and jobs whose concurrency policy depends on what runs at the fire time
    allow = create_job(client, admin)
    held_back = [create_job(client, admin, name="forbid", concurrency_policy="forbid"),
                 create_job(client, admin, name="replace", concurrency_policy="replace"),
                 create_job(client, admin, name="max", max_concurrent=2)]
    time.sleep(1.05 - time.time() % 1)  # early in a second: the next fire time is more than 0.35 s ahead
    sync.reconcile(app, store)
    # When the stager passes, within a second of their next fire time
    assert Stager(app, lead=1.5).stage_once() == 1
    # Then only the allow job's fire is recorded, before its time, for its time
    [staged] = rows(app, allow["id"])
    assert staged.status == "queued" and staged.created_at < staged.scheduled_for
    assert staged.started_at is None and staged.claim_token is None
    assert all(rows(app, job["id"]) == [] for job in held_back)
    # And its message waits in Redis's delay queue until DELIVER_AHEAD before its time, so that
    # no worker thread is held for it sooner
    with app.app_context():
        client, namespace = queue.broker.client, queue.broker.namespace
        [encoded] = client.hvals(f"{namespace}:{dispatch.EXECUTIONS_QUEUE}.DQ.msgs")
    message = Message.decode(encoded)
    assert message.args == (str(staged.id),)
    deliver_at = datetime.fromtimestamp(message.options["eta"] / 1000, timezone.utc)
    assert abs((staged.scheduled_for - staging.DELIVER_AHEAD - deliver_at).total_seconds()) < 0.05
    # And a second pass, and APScheduler's own fire at that time, record nothing more
    assert Stager(app, lead=1.5).stage_once() == 0
    assert fire_due_job(app, allow["id"], [staged.scheduled_for]).queued == []
    assert [r.id for r in rows(app, allow["id"])] == [staged.id]


def test_a_job_is_staged_while_apscheduler_is_still_busy_with_its_fire_time_but_not_after_a_misfire(
        app, client, admin, store):
    # Given two per-second jobs whose fire time APScheduler has not handled yet: one due a
    # second ago (its wake-up is busy with a burst of other jobs), one due a minute ago (no
    # scheduler ran: a misfire, for its misfire policy to decide)
    busy, misfired = create_job(client, admin, name="busy"), create_job(client, admin, name="misfired")
    sync.reconcile(app, store)
    engine = app.extensions["jobplane_db"].engine
    now = time.time()
    with engine.begin() as connection:
        for job, behind in ((busy, 1.0), (misfired, 60.0)):
            connection.exec_driver_sql("UPDATE apscheduler_jobs SET next_run_time = %s WHERE id = %s",
                                       (now - behind, job["id"]))
    # When the stager passes
    assert Stager(app, lead=1.5).stage_once() == 1
    # Then the busy job's next fire time by its schedule is staged, ahead of its time
    [staged] = rows(app, busy["id"])
    assert staged.status == "queued" and staged.created_at < staged.scheduled_for
    assert staged.scheduled_for.timestamp() > now and staged.scheduled_for.microsecond == 0
    # And the misfired job's fire times are left to APScheduler and its misfire policy
    assert rows(app, misfired["id"]) == []


def test_a_time_the_job_no_longer_fires_at_is_not_staged(app, client, admin, store):
    # Given APScheduler's store still holds a fire time of the old schedule (the edit's sync lags)
    job = create_job(client, admin)
    sync.reconcile(app, store)
    client.patch(f"/api/v1/jobs/{job['id']}", headers=admin, json={"schedule": "0 0 1 1 *"})
    # When the stager passes, then nothing is staged
    assert Stager(app, lead=1.5).stage_once() == 0
    assert rows(app, job["id"]) == []


def test_a_forbid_job_whose_previous_run_ends_before_the_fire_time_runs(app, client, admin, store):
    # Given a forbid job with a run still going when the stager passes
    job = create_job(client, admin, concurrency_policy="forbid")
    previous = client.post(f"/api/v1/jobs/{job['id']}/run", headers=admin).json["id"]
    sync.reconcile(app, store)
    assert Stager(app, lead=1.5).stage_once() == 0
    # When that run ends before the fire time, and the fire time comes
    assert client.post(f"/api/v1/executions/{previous}/cancel", headers=admin).status_code == 200
    fire_time = datetime.fromtimestamp(store.get_job(job["id"]).next_run_time.timestamp(), timezone.utc)
    result = fire_due_job(app, job["id"], [fire_time])
    # Then the fire is a run, not a skip: the policy was decided at the fire time
    assert len(result.queued) == 1 and result.skipped == []


@pytest.mark.parametrize("job_type, script", [("bash", START_SCRIPT),
                                               ("python", "import time\nprint('START %.6f' % time.time())")])
def test_a_staged_run_is_prepared_ahead_and_its_code_starts_at_its_time(app, client, admin, job_type, script):
    # Given a fire staged 2-3 s ahead, delivered to a worker at once
    job = create_job(client, admin, job_type=job_type, script=script)
    execution_id, fire_time = stage_fire_ahead(app, job["id"], lead=3)
    worker = WorkerThread(app, execution_id)
    worker.start()
    # Then before the fire time its sandbox exists, held by the launcher, and the run is still queued
    wait_for(lambda: processes_with(execution_id), timeout=5, message="the sandbox to be spawned ahead")
    assert datetime.now(timezone.utc) < fire_time - timedelta(seconds=staged_runs.CLAIM_AHEAD_SECONDS)
    [row] = rows(app, job["id"])
    assert (row.status, row.started_at, logs(app, execution_id)) == ("queued", None, "")
    # And its code starts at the fire time, never before; started_at is the real start
    worker.join(timeout=30)
    assert worker.outcome == "success"
    [row] = rows(app, job["id"])
    started = script_start(app, execution_id)
    assert fire_time <= row.started_at <= started
    assert not processes_with(execution_id)


@pytest.mark.parametrize("how", ["cancel", "pause", "edit"])
def test_a_staged_run_cancelled_paused_or_edited_during_its_wait_never_starts(app, client, admin, how):
    # Given a run staged 2-3 s ahead, being prepared by a worker
    job = create_job(client, admin)
    execution_id, fire_time = stage_fire_ahead(app, job["id"], lead=3)
    worker = WorkerThread(app, execution_id)
    worker.start()
    wait_for(lambda: processes_with(execution_id), timeout=5, message="the sandbox to be spawned ahead")
    # When, before its fire time, the run is cancelled, or its job paused or edited
    if how == "cancel":
        response = client.post(f"/api/v1/executions/{execution_id}/cancel", headers=admin)
    elif how == "pause":
        response = client.post(f"/api/v1/jobs/{job['id']}/pause", headers=admin)
    else:
        response = client.patch(f"/api/v1/jobs/{job['id']}", headers=admin, json={"script": "echo edited"})
    assert response.status_code == 200, response.json
    assert datetime.now(timezone.utc) < fire_time - timedelta(seconds=staged_runs.CLAIM_AHEAD_SECONDS)
    # Then the worker drops it at its claim and nothing of it ever runs
    worker.join(timeout=30)
    assert worker.outcome is None
    assert not processes_with(execution_id)
    assert logs(app, execution_id) == ""
    if how == "cancel":
        assert [r.status for r in rows(app, job["id"])] == ["cancelled"]
    else:
        # A pause or an edit withdraws the staged row: the fire time is the scheduler's again
        # (paused: it fires nothing; edited: staged again under the new definition).
        assert rows(app, job["id"]) == []
        with app.app_context():
            audit = db.session.scalars(select(AuditLog).where(AuditLog.resource_id == job["id"])
                                       .order_by(AuditLog.id.desc())).first()
        assert audit.changes["staged_runs_withdrawn"] == {"old": 1, "new": 0}


def test_a_worker_killed_while_holding_a_staged_run_loses_no_fire(app, client, admin, processes):
    # Given a worker holding a run staged ahead
    job = create_job(client, admin)
    worker = processes.worker()
    wait_for(lambda: "ready for action" in processes.log(worker), timeout=30, message="the worker to start")
    execution_id, fire_time = stage_fire_ahead(app, job["id"], lead=4)
    with app.app_context():
        dispatch.send_runs([execution_id])
    wait_for(lambda: processes_with(execution_id), timeout=20, message="the sandbox\n" + processes.logs())
    # When it is SIGKILLed during the wait, before its claim
    processes.kill(worker, signal.SIGKILL)
    assert datetime.now(timezone.utc) < fire_time - timedelta(seconds=staged_runs.CLAIM_AHEAD_SECONDS)
    # Then its held sandbox dies with it, the run stays queued and unclaimed...
    wait_for(lambda: not processes_with(execution_id), timeout=5, message="the held sandbox to go")
    [row] = rows(app, job["id"])
    assert (row.status, row.claim_token) == ("queued", None)
    # ...so the sweeper sends it again, and another worker runs it once, not before its time
    processes.worker()
    wait_for(lambda: datetime.now(timezone.utc) > fire_time, timeout=5)
    with app.app_context():
        assert sweeper.resend_stale_queued(older_than=timedelta(seconds=0)) == [row.id]
        db.session.commit()
    wait_for(lambda: rows(app, job["id"])[0].status == "success", timeout=30, message=processes.logs())
    assert script_start(app, execution_id) >= fire_time
    assert len(rows(app, job["id"])) == 1


def test_a_leader_and_a_worker_stage_every_fire_once_and_start_each_at_its_time(app, client, admin, processes):
    # Given a scheduler leader (staging 1 s ahead, the default) and a worker
    processes.scheduler()
    processes.worker()
    job = create_job(client, admin)
    # When it fires every second for a few seconds
    wait_for(lambda: len([r for r in rows(app, job["id"]) if r.status == "success"]) >= 4, timeout=40,
             message=processes.logs())
    client.post(f"/api/v1/jobs/{job['id']}/pause", headers=admin)
    time.sleep(1.5)
    # Then every fire time has one execution, whose code started at it, not before; fires after
    # the first ones are staged (the first can come too soon after the job's creation to be)
    done = [r for r in rows(app, job["id"]) if r.status == "success"]
    times = [r.scheduled_for for r in rows(app, job["id"])]
    assert len(times) == len(set(times))
    staged = [r for r in done if r.created_at < r.scheduled_for]
    assert len(staged) >= 2, [(r.created_at, r.scheduled_for) for r in done]
    for row in done:
        assert row.scheduled_for <= row.started_at <= script_start(app, row.id)
