"""Group runs with real worker processes: many executions from one message, claimed in one
statement, supervised by one loop on one thread, recorded in batches — each run keeping its own
secrets masking, retries, timeout and cancel; what the group path cannot run goes the usual way."""

from __future__ import annotations

import os
import random
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import select

from app.extensions import db, queue
from app.models import Execution
from app.models.base import utcnow
from app.scheduler import fire
from app.services import claims
from app.tasks import dispatch
from tests.helpers import processes_with, wait_for

pytestmark = pytest.mark.timeout(180)

SECRET = "sk_group_5f4e3d2c1b0a-unique"


def create_job(client, admin, name, **fields) -> str:
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": name, "job_type": "bash", "script": "true", "schedule": None, **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def queue_executions(app, job_ids: list[str]) -> list[str]:
    """Queued executions due now, one per job id given, as a fire records them."""
    with app.app_context():
        now = utcnow()
        # one per (job, fire time): a job given twice gets two fire times a millisecond apart
        rows = [Execution(job_id=job_id, scheduled_for=now - timedelta(milliseconds=n), created_at=now,
                          sent_at=now, send_count=1, status="queued", triggered_by="schedule")
                for n, job_id in enumerate(job_ids)]
        db.session.add_all(rows)
        db.session.commit()
        return [str(row.id) for row in rows]


def send_group(app, execution_ids: list[str], group_size: int = 50) -> None:
    with app.app_context():
        dispatch.send_run_groups(execution_ids, group_size=group_size)


def rows_of(app, execution_ids=None, job_id=None) -> list[Execution]:
    with app.app_context():
        query = select(Execution).order_by(Execution.created_at, Execution.attempt)
        if execution_ids is not None:
            query = query.where(Execution.id.in_(execution_ids))
        if job_id is not None:
            query = query.where(Execution.job_id == job_id)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
    return rows


def statuses(app) -> dict[str, str]:
    return {str(row.id): row.status for row in rows_of(app)}


def log_of(client, admin, execution_id) -> str:
    return client.get(f"/api/v1/executions/{execution_id}", headers=admin).json["logs"]


def all_final(app, execution_ids):
    def check():
        rows = rows_of(app, execution_ids)
        return rows if rows and all(r.status not in ("queued", "running") for r in rows) else None
    return check


def printed_time(log: str) -> datetime:
    """The time a script printed with ``date +%s.%N`` on a line ``at <seconds>``."""
    line = next(line for line in log.splitlines() if line.startswith("at "))
    return datetime.fromtimestamp(float(line[3:]), timezone.utc)


def test_a_group_runs_each_member_to_its_own_recorded_outcome(app, client, admin, processes):
    # Given a worker, and four jobs: one prints its secret, one fails its first attempt (one retry),
    # one outlives its timeout, one succeeds
    processes.worker(KILL_GRACE_SECONDS=1)
    secret_job = create_job(client, admin, "secret", script='echo "at $(date +%s.%N)"; echo "key: $API_KEY"')
    assert client.put(f"/api/v1/jobs/{secret_job}/secrets/API_KEY", headers=admin,
                      json={"value": SECRET}).status_code in (200, 201)
    flaky_job = create_job(client, admin, "flaky", script='echo "at $(date +%s.%N)"; [ "$JOBPLANE_ATTEMPT" = 2 ]',
                           max_retries=1, retry_delay_seconds=0)
    slow_job = create_job(client, admin, "slow", script='echo "at $(date +%s.%N)"; sleep 60', timeout_seconds=1)
    fine_job = create_job(client, admin, "fine", script='echo "at $(date +%s.%N)"; echo fine')
    ids = queue_executions(app, [secret_job, flaky_job, slow_job, fine_job])
    # When they are sent as one group message
    send_group(app, ids)
    wait_for(all_final(app, ids), timeout=60, message="the group's runs")
    retry = wait_for(lambda: [r for r in rows_of(app, job_id=flaky_job) if r.attempt == 2 and
                              r.status not in ("queued", "running")], timeout=30, message="the retry")[0]
    # Then each ended with its own outcome…
    rows = {str(r.id): r for r in rows_of(app, ids)}
    secret, flaky, slow, fine = (rows[i] for i in ids)
    assert (secret.status, flaky.status, slow.status, fine.status) == ("success", "failed", "timed_out", "success")
    assert flaky.exit_code == 1 and "timed out after 1 s" in slow.error_message
    # …the failed one was retried, and its retry ran (the usual path) and succeeded
    assert retry.status == "success" and str(retry.first_attempt_id) == str(flaky.id)
    # …the secret never reached the stored log
    secret_log = log_of(client, admin, secret.id)
    assert "key: ********" in secret_log and SECRET not in secret_log
    # …all four ran together: claimed by one worker thread in one message
    assert len({r.worker_id for r in rows.values()}) == 1
    # …and each started_at is when its process was spawned: before the script's first line
    # (not the claim's placeholder time, which came first), with its duration to match
    for row in rows.values():
        printed = printed_time(log_of(client, admin, row.id))
        assert row.started_at <= printed <= row.completed_at, row
        assert row.duration_seconds == pytest.approx((row.completed_at - row.started_at).total_seconds(), abs=0.002)
        assert row.cpu_seconds is not None and row.peak_memory_kb
    assert not processes_with("sleep 60")


def test_a_group_message_delivered_twice_runs_each_member_once(app, client, admin, processes, tmp_path):
    # Given unsandboxed runs that count their starts in a file, and two workers
    counter = tmp_path / "starts"
    counter.write_text("")
    for _ in range(2):
        processes.worker(SANDBOX="none")
    job_ids = [create_job(client, admin, f"count-{n}", script=f'echo "$JOBPLANE_EXECUTION_ID" >> {counter}; sleep 0.5')
               for n in range(6)]
    ids = queue_executions(app, job_ids)
    # When the same group message is delivered three times (and once more after the runs ended)
    for _ in range(3):
        send_group(app, ids)
    wait_for(all_final(app, ids), timeout=60, message="the runs")
    send_group(app, ids)
    with app.app_context():  # that last delivery taken and dropped: Redis holds no message of them
        wait_for(lambda: not dispatch.executions_in_queue(live_within_seconds=60) & set(ids), timeout=30,
                 message="the late delivery to be dropped")
    # Then each run started exactly once, and ended success
    starts = counter.read_text().split()
    assert sorted(starts) == sorted(ids), starts
    assert {r.status for r in rows_of(app, ids)} == {"success"}
    assert len(rows_of(app)) == len(ids)  # no attempt was added


def test_what_the_group_path_cannot_run_goes_the_usual_way(app, client, admin, processes):
    # Given a group holding two executions of a job with max_concurrent 1, one of a Kubernetes
    # job (this worker has no cluster), and one of a plain job
    processes.worker(WORKER_THREADS=4)
    limited_job = create_job(client, admin, "limited", script='echo "at $(date +%s.%N)"; sleep 1',
                             concurrency_policy="allow", max_concurrent=1)
    kube_job = create_job(client, admin, "kube", executor="kubernetes", script="echo ran-here")
    plain_job = create_job(client, admin, "plain", script="echo plain")
    ids = queue_executions(app, [limited_job, limited_job, kube_job, plain_job])
    # When it is sent
    send_group(app, ids)
    wait_for(all_final(app, ids), timeout=60, message="the runs")
    rows = {str(r.id): r for r in rows_of(app, ids)}
    first, second, kube, plain = (rows[i] for i in ids)
    # Then the limited job's runs took turns (the usual path defers one over the limit)…
    assert first.status == second.status == "success"
    earlier, later = sorted([first, second], key=lambda r: r.started_at)
    assert later.started_at >= earlier.completed_at
    # …the Kubernetes run was never run on the worker (the usual path tried the cluster)…
    assert kube.executor == "kubernetes" and kube.status == "failed"
    assert "ran-here" not in log_of(client, admin, kube.id)
    # …and the plain one ran in the group
    assert plain.status == "success" and "plain" in log_of(client, admin, plain.id)


def test_cancelling_one_member_mid_run_stops_only_it(app, client, admin, processes):
    # Given a group of three long runs, each with a marker in its command line
    processes.worker(HEARTBEAT_SECONDS=0.5, KILL_GRACE_SECONDS=1)
    markers = [f"{random.randint(10000, 99999)}.{random.randint(100, 999)}" for _ in range(3)]
    job_ids = [create_job(client, admin, f"long-{n}", script=f"sleep {marker}", timeout_seconds=170)
               for n, marker in enumerate(markers)]
    ids = queue_executions(app, job_ids)
    send_group(app, ids)
    for marker in markers:
        wait_for(lambda: processes_with(marker), timeout=30, message="the runs to start")
    # When the second is cancelled through the API
    response = client.post(f"/api/v1/executions/{ids[1]}/cancel", headers=admin)
    assert response.status_code == 200
    # Then its processes go, and the others run on
    wait_for(lambda: not processes_with(markers[1]), timeout=15, message="the cancelled run's processes to go")
    cancelled_at = max(r.completed_at for r in rows_of(app, [ids[1]]))
    # (the group has heartbeated the others since: it saw the cancel, and kept them)
    wait_for(lambda: all(r.heartbeat_at > cancelled_at + timedelta(seconds=1) for r in rows_of(app, [ids[0], ids[2]])),
             timeout=15, message="the group's next heartbeats")
    assert processes_with(markers[0]) and processes_with(markers[2])
    assert [statuses(app)[i] for i in ids] == ["running", "cancelled", "running"]
    # And cancelling the others ends the group
    for execution_id in (ids[0], ids[2]):
        assert client.post(f"/api/v1/executions/{execution_id}/cancel", headers=admin).status_code == 200
    wait_for(lambda: not processes_with(markers[0]) and not processes_with(markers[2]), timeout=15,
             message="the other runs' processes to go")
    assert [statuses(app)[i] for i in ids] == ["cancelled"] * 3


def test_the_sweeper_sees_each_execution_of_a_waiting_group_message(app, client, admin):
    # Given two group messages waiting (no worker), and an execution whose message is gone
    job_id = create_job(client, admin, "waiting")
    ids = queue_executions(app, [job_id] * 5)
    send_group(app, ids[:4], group_size=2)
    with app.app_context():
        # Then every execution of the groups counts as held by Redis, and the fifth does not
        held = dispatch.executions_in_queue(live_within_seconds=30)
        assert set(ids[:4]) <= held and ids[4] not in held
        # And when one group's message is fetched by a live consumer, its executions still count;
        # when Redis loses the other, its executions no longer do
        broker = queue.broker
        consumer = broker.consume(dispatch.EXECUTIONS_BULK_QUEUE, prefetch=1, timeout=100)
        message = next(m for m in (next(consumer) for _ in range(100)) if m is not None)
        fetched = set(message.args[0])
        broker.client.delete(f"{broker.namespace}:{dispatch.EXECUTIONS_BULK_QUEUE}")
        held = dispatch.executions_in_queue(live_within_seconds=30)
        assert fetched <= held and not (set(ids[:4]) - fetched) & held
        consumer.close()


def test_bad_group_messages_are_dropped_without_harm(app, client, admin, processes):
    # Given a worker, and group messages with junk in them
    processes.worker()
    job_id = create_job(client, admin, "after-junk", script="echo ok")
    with app.app_context():
        broker = queue.broker
        dispatch.send(broker, dispatch.EXECUTIONS_BULK_QUEUE, dispatch.RUN_EXECUTION_GROUP, "not-a-list")
        dispatch.send(broker, dispatch.EXECUTIONS_BULK_QUEUE, dispatch.RUN_EXECUTION_GROUP,
                      ["nope", "00000000-0000-0000-0000-000000000000"])
    # When a good group follows, with a junk id among its own
    [execution_id] = queue_executions(app, [job_id])
    send_group(app, [execution_id, "junk"])
    # Then the good execution runs, and the worker is still up
    wait_for(all_final(app, [execution_id]), timeout=30, message="the run")
    assert rows_of(app, [execution_id])[0].status == "success"
    assert processes.started[0][0].poll() is None
    assert "Traceback" not in Path(processes.started[0][1]).read_text()


def test_a_burst_fired_by_the_scheduler_runs_in_groups(app, client, admin, processes):
    # Given seven jobs due at one instant, more than the bulk threshold (3 here), in groups of 4
    app.config.update(BULK_FIRE_THRESHOLD=3, RUN_GROUP_SIZE=4)
    yearly = "0 0 1 1 *"  # never due during the test: the fire below is the only one
    job_ids = [create_job(client, admin, f"burst-{n}", script="echo burst", schedule=yearly) for n in range(7)]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # When the scheduler's fire function records them
    fired = fire.fire_due_jobs(app, {job_id: [now] for job_id in job_ids})
    # Then two group messages wait in the bulk lane
    with app.app_context():
        bulk = f"{queue.broker.namespace}:{dispatch.EXECUTIONS_BULK_QUEUE}"
        assert queue.broker.client.llen(bulk) == 2
    # And with a worker, every run succeeds, the four of one message on one thread and the three of
    # the other on one thread (here the same one: a worker of 2 threads has 1 of its own for the bulk lane)
    processes.worker(WORKER_THREADS=2)
    ids = [str(execution_id) for execution_id in fired.queued]
    rows = wait_for(all_final(app, ids), timeout=60, message="the burst's runs")
    assert {r.status for r in rows} == {"success"} and len(rows) == 7
    thread_of = {str(row.id): row.worker_id for row in rows}
    assert len({thread_of[i] for i in ids[:4]}) == 1 and len({thread_of[i] for i in ids[4:]}) == 1


def test_a_staged_member_is_not_started_before_its_time(app, client, admin, processes):
    # Given a group holding an execution due now and one whose fire time is 2 s ahead (staged)
    processes.worker()
    job_id = create_job(client, admin, "staged", script='echo "at $(date +%s.%N)"', concurrency_policy="allow")
    [now_id] = queue_executions(app, [job_id])
    with app.app_context():
        ahead = Execution(job_id=job_id, scheduled_for=utcnow() + timedelta(seconds=2), created_at=utcnow(),
                          sent_at=utcnow(), send_count=1, status="queued", triggered_by="schedule")
        db.session.add(ahead)
        db.session.commit()
        ahead_id, scheduled_for = str(ahead.id), ahead.scheduled_for
    # When the group is sent
    send_group(app, [now_id, ahead_id])
    rows = {str(r.id): r for r in wait_for(all_final(app, [now_id, ahead_id]), timeout=30, message="the runs")}
    # Then both succeed, the staged one not before its fire time (it went the usual, staged way)
    assert rows[now_id].status == rows[ahead_id].status == "success"
    assert printed_time(log_of(client, admin, ahead_id)) >= scheduled_for


def test_outcomes_recorded_together_skip_a_revoked_claim(app, client, admin):
    # Given two executions claimed as a group, and the second cancelled meanwhile (its claim revoked)
    job_id = create_job(client, admin, "pair")
    ids = queue_executions(app, [job_id, job_id])
    with app.app_context():
        won = {str(c.execution_id): c for c in claims.claim_execution_group(
            execution_ids=[UUID(i) for i in ids], worker_id="test-worker")}
        db.session.commit()
        assert set(won) == set(ids)
        assert client.post(f"/api/v1/executions/{ids[1]}/cancel", headers=admin).status_code == 200
        # When both outcomes are recorded with one statement
        spawned, ended = utcnow(), utcnow() + timedelta(seconds=1)
        recorded = claims.finish_executions(outcomes=[
            claims.Outcome(claim=won[i], status="success", exit_code=0, error_message=None, started_at=spawned,
                           completed_at=ended, peak_memory_kb=1234, cpu_seconds=0.5, sandboxed=True) for i in ids])
        db.session.commit()
    # Then only the first is, with the spawn time and its duration; the cancelled one stays cancelled
    assert {str(i) for i in recorded} == {ids[0]}
    rows = {str(r.id): r for r in rows_of(app, ids)}
    first, second = rows[ids[0]], rows[ids[1]]
    assert (first.status, first.exit_code, first.peak_memory_kb, first.sandboxed) == ("success", 0, 1234, True)
    assert first.started_at == spawned and first.duration_seconds == 1.0 and first.completed_at == ended
    assert second.status == "cancelled" and second.exit_code is None


def test_a_worker_asked_to_stop_finishes_its_group_first(app, client, admin, processes):
    # Given a worker running a group of three runs
    worker = processes.worker()
    job_ids = [create_job(client, admin, f"stop-{n}", script="sleep 2; echo done") for n in range(3)]
    ids = queue_executions(app, job_ids)
    send_group(app, ids)
    wait_for(lambda: all(r.status == "running" for r in rows_of(app, ids)), timeout=30, message="the runs to start")
    # When the worker is asked to stop (SIGTERM to its main process, as a supervisor or Kubernetes does)
    os.kill(worker.pid, signal.SIGTERM)
    # Then it exits after the group's runs have ended, each recorded with its output
    worker.wait(timeout=60)
    rows = rows_of(app, ids)
    assert [r.status for r in rows] == ["success"] * 3
    assert all("done" in log_of(client, admin, r.id) for r in rows)


def run_one_group(app, client, admin, name: str, script: str, count: int) -> list[Execution]:
    """``count`` jobs running ``script``, their executions sent as one group message; their rows
    once all are final (each must have succeeded)."""
    ids = queue_executions(app, [create_job(client, admin, f"{name}-{n}", script=script) for n in range(count)])
    send_group(app, ids)
    rows = wait_for(all_final(app, ids), timeout=60, message="the group's runs")
    assert all(r.status == "success" for r in rows), rows
    return rows


def test_a_group_starts_its_runs_a_window_at_a_time(app, client, admin, processes):
    # Given a worker whose groups start one run at a time (JOBPLANE_RUN_GROUP_WINDOW=1)
    processes.worker(RUN_GROUP_WINDOW=1)
    # When five runs that exit at once are sent as one group message
    rows = run_one_group(app, client, admin, "window", "echo started", 5)
    # Then each run started once the one before it had ended, or had been starting for 50 ms (on a
    # busy machine, a sandbox can take that long): never two starting at once (a group of fifty
    # used to spawn its fifty sandboxes in one go, a few ms apart)
    runs = sorted(rows, key=lambda r: r.started_at)
    for before, after in zip(runs, runs[1:]):
        room = min(before.completed_at, before.started_at + timedelta(milliseconds=50))
        assert after.started_at >= room - timedelta(milliseconds=5), (before, after)


def test_a_window_does_not_make_long_runs_wait_for_each_other(app, client, admin, processes):
    # Given a worker whose groups start one run at a time
    processes.worker(RUN_GROUP_WINDOW=1)
    # When three runs of 2 s each are sent as one group message
    rows = run_one_group(app, client, admin, "long", "sleep 2; echo done", 3)
    # Then they ran side by side: a run counts as starting only for its first moments (50 ms), so
    # the next one started long before the first ended
    starts = sorted(r.started_at for r in rows)
    ends = sorted(r.completed_at for r in rows)
    assert starts[-1] < ends[0], (starts, ends)
    assert (starts[1] - starts[0]).total_seconds() >= 0.045  # …but one after the other


def test_a_group_never_takes_a_thread_of_the_ordinary_lane(app, client, admin, processes):
    # Given a worker process of 2 threads (JOBPLANE_WORKER_THREADS=2), already running a group of
    # long runs from the bulk lane
    processes.worker(WORKER_PROCESSES=1, WORKER_THREADS=2)
    ids = queue_executions(app, [create_job(client, admin, f"bulk-{n}", script="sleep 4") for n in range(2)])
    send_group(app, ids)
    wait_for(lambda: all(r.status == "running" for r in rows_of(app, ids)), timeout=30, message="the group to run")
    # When two ordinary runs are asked for
    ordinary = [client.post(f"/api/v1/jobs/{create_job(client, admin, f'ordinary-{n}', script='sleep 2')}/run",
                            headers=admin).json["id"] for n in range(2)]
    rows = wait_for(all_final(app, ordinary), timeout=60, message="the ordinary runs")
    # Then both ran at once, beside the group: the bulk lane has a thread of its own on top of the
    # process's 2, so the group took none of theirs
    assert all(r.status == "success" for r in rows)
    starts = sorted(r.started_at for r in rows)
    ends = sorted(r.completed_at for r in rows)
    assert starts[1] < ends[0], (starts, ends)
    group = wait_for(all_final(app, ids), timeout=60, message="the group's runs")
    assert starts[1] < min(r.completed_at for r in group)
