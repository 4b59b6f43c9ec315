"""The sweeper: lost messages are sent again, dead runs are declared lost, and a message
delivered twice runs once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.extensions import db, queue
from app.models import Execution
from app.models.base import utcnow
from app.scheduler.leader import FileLeaderLock
from app.scheduler.service import SchedulerService
from app.services import claims, executions, sweeper
from app.tasks import dispatch
from app.tasks.broker import KeyedRedisBroker
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def job(client, admin):
    return client.post("/api/v1/jobs", headers=admin, json={
        "name": "on-demand", "job_type": "bash", "script": "echo ran", "schedule": None}).json


def insert_queued(app, job_id, minutes_ago: float) -> str:
    """A queued execution whose message never reached Redis."""
    with app.app_context():
        then = utcnow() - timedelta(minutes=minutes_ago)
        execution = Execution(job_id=job_id, scheduled_for=then, created_at=then, sent_at=then, status="queued")
        db.session.add(execution)
        db.session.commit()
        return str(execution.id)


def status_of(app, execution_id):
    with app.app_context():
        return db.session.get(Execution, execution_id).status


def test_a_queued_execution_whose_message_was_lost_is_sent_again_and_runs(app, job, processes, tmp_path):
    # Given an execution queued a minute ago whose message was lost, and a worker
    stale = insert_queued(app, job["id"], minutes_ago=1)
    fresh = insert_queued(app, job["id"], minutes_ago=0)
    processes.worker()
    # When the sweeper runs
    service = SchedulerService(app, FileLeaderLock(str(tmp_path / "lock")))
    service.sweep()
    # Then the stale one is re-sent and runs; the fresh one (maybe still in flight) is left alone
    wait_for(lambda: status_of(app, stale) == "success", timeout=30, message="the re-sent run")
    assert status_of(app, fresh) == "queued"
    with app.app_context():
        assert db.session.get(Execution, stale).send_count == 2


def next_message(consumer):
    """The consumer's next message (it answers None while it backs off between polls)."""
    for _ in range(100):
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("no message came out of the queue")


def test_only_executions_whose_message_is_gone_are_sent_again(app, job):
    # Given five executions queued a minute ago and no worker: Redis holds the message of the
    # first in the queue, of the second in the delay queue (a retry's backoff), of the third in a
    # live consumer's hands (fetched, not acknowledged), of the fourth in the hands of a consumer
    # that stopped heartbeating (SIGKILLed), and has lost the fifth's
    waiting, delayed, fetched, orphaned, vanished = (insert_queued(app, job["id"], minutes_ago=1) for _ in range(5))
    with app.app_context():
        send = dispatch.run_execution_sender()
        send(fetched)
        send(orphaned)
        send(waiting)
        send(delayed, delay_seconds=600)
        broker = queue.broker
        consumer = broker.consume(dispatch.EXECUTIONS_QUEUE, prefetch=1, timeout=100)
        assert next_message(consumer).args[0] == fetched
        dead_broker = KeyedRedisBroker(url=app.config["REDIS_URL"], namespace=broker.namespace)
        dead_consumer = dead_broker.consume(dispatch.EXECUTIONS_QUEUE, prefetch=1, timeout=100)
        assert next_message(dead_consumer).args[0] == orphaned
        broker.client.zadd(f"{broker.namespace}:__heartbeats__", {dead_broker.broker_id: 0})
        # When the sweeper looks after the 30 s threshold
        with db.unit_of_work():
            resent = sweeper.resend_stale_queued(older_than=timedelta(seconds=30))
        # Then only the lost and the orphaned ones are sent again
        assert sorted(str(execution_id) for execution_id in resent) == sorted([orphaned, vanished])
        assert {str(e.id): e.send_count for e in db.session.scalars(select(Execution))} == {
            waiting: 1, delayed: 1, fetched: 1, orphaned: 2, vanished: 2}
        held = dispatch.executions_in_queue(live_within_seconds=30)
        assert held == {waiting, delayed, fetched, orphaned, vanished}  # one message each now
        consumer.close()
        dead_consumer.close()


def test_runs_waiting_in_the_bulk_lane_are_not_sent_again(app, job):
    # Given three executions queued a minute ago, sent together as a batch larger than the
    # bulk threshold, and a fourth sent alone; no worker
    app.config["BULK_FIRE_THRESHOLD"] = 2
    burst = [insert_queued(app, job["id"], minutes_ago=1) for _ in range(3)]
    alone = insert_queued(app, job["id"], minutes_ago=1)
    with app.app_context():
        dispatch.send_runs(burst)
        dispatch.send_runs([alone])
        # Then the batch waits in the bulk lane (one group message) and the lone run in the ordinary one
        client, namespace = queue.broker.client, queue.broker.namespace
        assert client.llen(f"{namespace}:{dispatch.EXECUTIONS_BULK_QUEUE}") == 1
        assert client.llen(f"{namespace}:{dispatch.EXECUTIONS_QUEUE}") == 1
        # And the sweeper finds all four waiting and sends none again
        assert dispatch.executions_in_queue(live_within_seconds=30) == {*burst, alone}
        with db.unit_of_work():
            assert sweeper.resend_stale_queued(older_than=timedelta(seconds=30)) == []


def test_a_running_execution_without_heartbeat_is_declared_lost(app, job):
    execution_id = insert_queued(app, job["id"], minutes_ago=0)
    with app.app_context():
        claim = claims.claim_execution(execution_id=execution_id, worker_id="dead-worker").claim
        db.session.execute(update(Execution).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()
        lost = sweeper.mark_stale_running_lost(stale_after=timedelta(seconds=30))
        db.session.commit()
        assert [str(i) for i in lost] == [execution_id]
        row = db.session.get(Execution, execution_id)
        assert row.status == "lost" and "stopped reporting" in row.error_message
        # And the dead worker's claim no longer counts
        assert claims.append_log(claim=claim, chunks=[("stdout", "late")]) is None
        assert claims.finish_execution(claim=claim, status="success", exit_code=0, error_message=None,
                                           started_at=None, completed_at=utcnow()) is False


def test_a_stale_kubernetes_run_is_handed_to_a_new_worker_until_its_reattach_limit(app, job):
    """Its pod runs on without its worker: queued again (a new claim re-attaches) instead of lost,
    at most ``reattach_limit`` times."""
    execution_id = insert_queued(app, job["id"], minutes_ago=0)
    with app.app_context():
        for handover in (1, 2):
            claim = claims.claim_execution(execution_id=execution_id, worker_id=f"worker-{handover}",
                                           default_executor="kubernetes").claim
            assert claim.executor == "kubernetes"
            last_heartbeat = utcnow() - timedelta(minutes=5)
            db.session.execute(update(Execution).values(heartbeat_at=last_heartbeat))
            db.session.commit()
            handed = sweeper.hand_over_stale_kubernetes_runs(stale_after=timedelta(seconds=30), reattach_limit=2)
            db.session.commit()
            assert [str(i) for i in handed] == [execution_id]
            db.session.expire_all()
            row = db.session.get(Execution, execution_id)
            assert (row.status, row.reattach_count, row.claim_token) == ("queued", handover, None)
            assert claims.append_log(claim=claim, chunks=[("stdout", "late")]) is None  # the old claim is void
            taken = claims.claim_execution(execution_id=execution_id, worker_id="next").claim
            assert taken.resume_log_after == last_heartbeat and taken.executor == "kubernetes"
            db.session.rollback()  # leave it queued for the next round
        db.session.execute(update(Execution).values(status="running", heartbeat_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()
        assert sweeper.hand_over_stale_kubernetes_runs(stale_after=timedelta(seconds=30), reattach_limit=2) == []
        assert [str(i) for i in sweeper.mark_stale_running_lost(stale_after=timedelta(seconds=30))] == [execution_id]
        db.session.commit()
        db.session.expire_all()
        assert db.session.get(Execution, execution_id).status == "lost"


def test_only_one_of_two_deliveries_wins_the_claim(app, job):
    execution_id = insert_queued(app, job["id"], minutes_ago=0)
    with app.app_context():
        first = claims.claim_execution(execution_id=execution_id, worker_id="a").claim
        db.session.commit()
        second = claims.claim_execution(execution_id=execution_id, worker_id="b").claim
        db.session.commit()
        assert first is not None and second is None
        assert db.session.scalar(select(Execution.worker_id)) == "a"


def test_a_message_delivered_twice_runs_once(app, job, processes):
    import redis

    from app.tasks import dispatch

    processes.worker(WORKER_THREADS=8)
    execution_id = insert_queued(app, job["id"], minutes_ago=0)
    broker = app.extensions["jobplane_broker"]
    for _ in range(5):
        dispatch.send(broker, dispatch.EXECUTIONS_QUEUE, dispatch.RUN_EXECUTION, execution_id)
    wait_for(lambda: status_of(app, execution_id) == "success", timeout=30, message="the run")
    client = redis.Redis.from_url(app.config["REDIS_URL"])
    wait_for(lambda: client.hlen(f"{app.config['QUEUE_NAMESPACE']}:executions.msgs") == 0, timeout=10,
             message="all deliveries consumed")
    with app.app_context():
        logs = executions.read_log(execution_id=execution_id)
    assert logs.count("ran") == 1
