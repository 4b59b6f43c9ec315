"""The fire function and the job store sync, against PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from dramatiq import Message
from sqlalchemy import delete, select, text

from app.extensions import db, queue
from app.models import Execution, Job
from app.scheduler import executor as executor_module
from app.scheduler import sync
from app.scheduler.batching import BatchingJobStore, BatchingScheduler
from app.scheduler.executor import FireExecutor
from app.scheduler.fire import fire_due_job
from app.tasks import dispatch
from tests.helpers import wait_for

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def job(app, client, admin):
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "minutely", "job_type": "bash", "script": "true", "schedule": "* * * * *",
        "concurrency_policy": "allow"})
    return response.json


def scheduled_times(app, job_id):
    with app.app_context():
        return list(db.session.scalars(select(Execution.scheduled_for).where(Execution.job_id == job_id)
                                       .order_by(Execution.scheduled_for)))


def test_a_repeated_fire_creates_nothing(app, job):
    # Given a fire already recorded (a failover, or a crash before APScheduler stored its next time)
    first = fire_due_job(app, job["id"], [NOW])
    # When the same fire time comes again, with a new one
    second = fire_due_job(app, job["id"], [NOW, NOW + timedelta(minutes=1)])
    # Then only the new fire time gets an execution
    assert len(first.queued) == 1 and len(second.queued) == 1
    assert scheduled_times(app, job["id"]) == [NOW, NOW + timedelta(minutes=1)]


def test_fires_of_a_job_no_longer_active_create_nothing(app, job):
    with app.app_context():
        db.session.get(Job, job["id"]).status = "disabled"
        db.session.commit()
    result = fire_due_job(app, job["id"], [NOW])
    assert (result.queued, result.skipped, result.missed) == ([], [], [])
    assert scheduled_times(app, job["id"]) == []


def test_fire_messages_go_out_only_after_commit(app, job):
    broker = app.extensions["jobplane_broker"]
    import redis
    client = redis.Redis.from_url(app.config["REDIS_URL"])
    queue_key = f"{app.config['QUEUE_NAMESPACE']}:executions.msgs"
    assert client.hlen(queue_key) == 0
    fire_due_job(app, job["id"], [NOW])
    assert client.hlen(queue_key) == 1, (broker, client.keys("*"))


def test_fire_executor_hands_every_due_time_to_the_misfire_policy(app, job):
    executor = FireExecutor(app)
    scheduler = BackgroundScheduler(timezone="UTC")
    executor.start(scheduler, "default")

    class StoredJob:  # what APScheduler hands an executor: the id and its alias
        id = job["id"]
        _jobstore_alias = "default"

    old, recent = datetime.now(timezone.utc) - timedelta(minutes=5), datetime.now(timezone.utc) - timedelta(seconds=5)
    executor.submit_job(StoredJob, [old, recent])
    # run_latest (the default): the on-time fire runs, the late one is recorded as missed
    with app.app_context():
        rows = {e.scheduled_for: e.status for e in db.session.scalars(select(Execution))}
    assert rows == {old: "missed", recent: "queued"}


@pytest.fixture
def scheduler(app):
    """A paused APScheduler on the real job store, as the leader runs it."""
    engine = app.extensions["jobplane_db"].engine
    instance = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine)}, timezone="UTC")
    instance.start(paused=True)
    yield instance
    instance.shutdown(wait=False)


def test_reconcile_rebuilds_a_lost_or_unreadable_job_store_row(app, job, scheduler):
    # Given a scheduler whose store lost the job's row (or held one it could not unpickle)
    sync.reconcile(app, scheduler)
    assert scheduler.get_job(job["id"]) is not None
    with app.extensions["jobplane_db"].engine.begin() as connection:
        connection.execute(text("UPDATE apscheduler_jobs SET job_state = 'garbage'"))
    assert scheduler.get_jobs() == []  # APScheduler drops the row it cannot load…
    # When the leader reconciles / Then the job is back, from the jobs table
    sync.reconcile(app, scheduler)
    assert [j.id for j in scheduler.get_jobs()] == [job["id"]]


def test_reconcile_keeps_a_pending_fire_time_when_nothing_changed(app, job, scheduler):
    sync.reconcile(app, scheduler)
    overdue = datetime.now(timezone.utc) - timedelta(seconds=30)
    scheduler.modify_job(job["id"], next_run_time=overdue)
    # A new leader's reconcile must not move an overdue fire time to the future
    sync.reconcile(app, scheduler)
    assert scheduler.get_job(job["id"]).next_run_time == overdue
    # But a changed schedule does replace the trigger
    with app.app_context():
        db.session.get(Job, job["id"]).schedule = "0 * * * *"
        db.session.commit()
    sync.reconcile(app, scheduler)
    assert scheduler.get_job(job["id"]).name.startswith("wall1|0 * * * *|UTC|")
    # And a deleted job leaves the store
    with app.app_context():
        db.session.execute(delete(Execution))
        db.session.get(Job, job["id"]).status = "deleted"
        db.session.commit()
    sync.reconcile(app, scheduler)
    assert scheduler.get_jobs() == []


def burst_jobs(client, admin, count: int, **fields) -> list[str]:
    return [client.post("/api/v1/jobs", headers=admin, json={
        "name": f"burst-{i}", "job_type": "bash", "script": "true", "schedule": "* * * * *", **fields}).json["id"]
        for i in range(count)]


def wake_up_with_all_due(app, ids: list[str]) -> datetime:
    """A BatchingScheduler whose store holds the jobs ``ids``, all due a second ago, woken once
    until every fire is recorded and every next run time stored.  Returns the due time."""
    engine = app.extensions["jobplane_db"].engine
    scheduler = BatchingScheduler(jobstores={"default": BatchingJobStore(engine=engine)},
                                  executors={"default": FireExecutor(app)},
                                  job_defaults={"coalesce": False, "misfire_grace_time": None}, timezone="UTC")
    scheduler.start(paused=True)
    try:
        sync.reconcile(app, scheduler)
        due = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
        for job_id in ids:
            scheduler.modify_job(job_id, next_run_time=due)
        scheduler.resume()
        wait_for(lambda: len(fires_at(app, due)) == len(ids), timeout=10, message=f"{len(ids)} fires")
        wait_for(lambda: all(j.next_run_time > due for j in scheduler.get_jobs()), timeout=5,
                 message="next run times stored")
    finally:
        scheduler.shutdown(wait=False)
    return due


def fires_at(app, due: datetime) -> list[tuple]:
    """(job id, created_at) of the executions recorded for ``due``."""
    with app.app_context():
        return db.session.execute(select(Execution.job_id, Execution.created_at)
                                  .where(Execution.scheduled_for == due)).all()


def test_a_wake_up_with_many_due_jobs_records_them_in_one_batch(app, client, admin):
    """BatchingScheduler: every due job of a wake-up fires, then every next run time is stored."""
    # Given 30 jobs all due a second ago
    ids = burst_jobs(client, admin, 30, concurrency_policy="allow")
    # When the scheduler wakes up, then each has its execution for that time (and a next run time
    # after it in the store), all recorded in one transaction
    rows = fires_at(app, wake_up_with_all_due(app, ids))
    assert sorted(str(job_id) for job_id, _ in rows) == sorted(ids)
    assert len({created_at for _, created_at in rows}) == 1


def test_a_big_wake_up_is_recorded_and_sent_in_chunks_all_in_the_bulk_lane(app, client, admin, monkeypatch):
    """A burst's first runs are sent before APScheduler has worked through all of it."""
    # Given 25 jobs due a second ago, a bulk threshold of 5 and chunks of 10
    app.config["BULK_FIRE_THRESHOLD"] = 5
    monkeypatch.setattr(executor_module, "FIRE_CHUNK", 10)
    ids = burst_jobs(client, admin, 25)
    # When the scheduler wakes up
    rows = fires_at(app, wake_up_with_all_due(app, ids))
    # Then every job fired once, in three transactions (10, 10, 5: each its own created_at)
    assert sorted(str(job_id) for job_id, _ in rows) == sorted(ids)
    assert sorted(Counter(created_at for _, created_at in rows).values()) == [5, 10, 10]
    # And all their runs went to the bulk lane as group messages, the last small chunk too
    with app.app_context():
        redis, namespace = queue.broker.client, queue.broker.namespace
        assert redis.llen(f"{namespace}:{dispatch.EXECUTIONS_QUEUE}") == 0
        messages = [Message.decode(m) for m in redis.hvals(f"{namespace}:{dispatch.EXECUTIONS_BULK_QUEUE}.msgs")]
    assert sorted(len(m.args[0]) for m in messages) == [5, 10, 10]
    assert {m.actor_name for m in messages} == {dispatch.RUN_EXECUTION_GROUP}
