"""The fire path end to end with real processes: ``jobplane scheduler`` and ``jobplane worker``
on PostgreSQL and Redis, a job from the API to a stored log and status."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Execution
from app.scheduler import fire
from tests.helpers import processes_with, wait_for

pytestmark = pytest.mark.timeout(120)


def executions_of(app, job_id: str) -> list[Execution]:
    with app.app_context():
        rows = db.session.scalars(select(Execution).where(Execution.job_id == job_id)
                                  .order_by(Execution.scheduled_for)).all()
        db.session.expunge_all()
        return list(rows)


def wait_until_leader(processes, scheduler) -> None:
    wait_for(lambda: "became the scheduler leader" in processes.log(scheduler), timeout=20,
             message="the scheduler to take the lock")


def create_job(client, admin, **fields) -> dict:
    payload = {"name": "test-job", "job_type": "bash", "script": "echo hi", "schedule": None, **fields}
    response = client.post("/api/v1/jobs", json=payload, headers=admin)
    assert response.status_code == 201, response.json
    return response.json


def final(app, execution_id: str, timeout: float = 30) -> dict:
    def done():
        response = app.test_client().get(f"/api/v1/executions/{execution_id}",
                                          headers={"Authorization": "Bearer jp_test_admin_token_0123456789"})
        body = response.json
        return body if body["status"] not in ("queued", "running") else None
    return wait_for(done, timeout=timeout, message=f"execution {execution_id} to finish")


def test_a_job_every_two_seconds_runs_once_per_fire_time(app, client, admin, processes):
    # Given a worker and a leading scheduler
    processes.worker()
    scheduler = processes.scheduler()
    wait_until_leader(processes, scheduler)
    # When a job firing every 2 seconds (6-field cron) is created through the API
    job = create_job(client, admin, schedule="*/2 * * * * *",
                     script='echo "fired for $JOBPLANE_SCHEDULED_FOR attempt $JOBPLANE_ATTEMPT"')
    # Then at least 3 fire times each get one successful execution with the script's output
    wait_for(lambda: len([e for e in executions_of(app, job["id"]) if e.status == "success"]) >= 3,
             timeout=30, message="3 successful runs\n" + processes.logs())
    runs = [e for e in executions_of(app, job["id"]) if e.status == "success"]
    times = [e.scheduled_for for e in runs]
    assert len(set(times)) == len(times)
    assert all(t.second % 2 == 0 and t.microsecond == 0 for t in times)
    for run in runs[:3]:
        detail = client.get(f"/api/v1/executions/{run.id}", headers=admin).json
        assert detail["exit_code"] == 0 and detail["triggered_by"] == "scheduled"
        assert f"fired for {run.scheduled_for.isoformat()} attempt 1" in detail["logs"]
        assert detail["duration_seconds"] is not None and detail["started_at"] and detail["completed_at"]
    # And consecutive fire times are 2 seconds apart: none skipped, none doubled
    gaps = {(b - a).total_seconds() for a, b in zip(times, times[1:])}
    assert gaps == {2.0}, times


def test_a_failing_script_ends_failed_with_its_exit_code_and_stderr(app, client, admin, processes):
    processes.worker()
    job = create_job(client, admin, script="echo starting\necho 'it broke' >&2\nexit 7")
    # When it is run by hand
    response = client.post(f"/api/v1/jobs/{job['id']}/run", headers=admin)
    assert response.status_code == 202
    assert response.json["status"] == "queued" and response.json["triggered_by"] == "manual"
    # Then it ends failed, with its exit code and both streams in order in the log
    result = final(app, response.json["id"])
    assert result["status"] == "failed"
    assert result["exit_code"] == 7
    assert "exited with code 7" in result["error_message"]
    assert result["logs"].index("starting") < result["logs"].index("it broke")


def test_a_python_job_runs_with_its_environment(app, client, admin, processes):
    processes.worker()
    job = create_job(client, admin, job_type="python", env={"GREETING": "hallo"},
                     script="import os, sys\nprint(os.environ['GREETING'], os.environ['JOBPLANE_JOB_ID'])\n"
                            "print('db url visible:', 'JOBPLANE_DATABASE_URL' in os.environ)\n"
                            "print(sys.version_info >= (3, 8))")
    execution = client.post(f"/api/v1/jobs/{job['id']}/run", headers=admin).json
    result = final(app, execution["id"])
    assert result["status"] == "success", result
    assert f"hallo {job['id']}" in result["logs"]
    assert "db url visible: False" in result["logs"]
    assert "True" in result["logs"]


def test_a_script_past_its_timeout_ends_timed_out_and_its_processes_are_gone(app, client, admin, processes):
    # Given a script that ignores SIGTERM and leaves a child behind, with a 2-second timeout
    marker = f"{random.randint(10000, 99999)}.{random.randint(100, 999)}"
    processes.worker(KILL_GRACE_SECONDS=1)
    job = create_job(client, admin, timeout_seconds=2,
                     script=f"trap '' TERM\necho started\nsleep {marker} &\nsleep {marker}\necho never")
    started = datetime.now().timestamp()
    execution = client.post(f"/api/v1/jobs/{job['id']}/run", headers=admin).json
    # When it runs past its timeout
    result = final(app, execution["id"], timeout=30)
    # Then it ends timed_out soon after timeout + grace, and no process of it survives
    assert result["status"] == "timed_out", result
    assert "started" in result["logs"] and "never" not in result["logs"]
    assert datetime.now().timestamp() - started < 2 + 1 + 5 + 3
    wait_for(lambda: not processes_with(marker), timeout=5, message=f"sleep {marker} to be gone")


def test_a_burst_waits_in_the_bulk_lane_while_a_job_due_alone_starts_first(app, client, admin, processes):
    # Given six jobs due at one instant (a burst: the bulk threshold is 3 here) and one due alone
    app.config["BULK_FIRE_THRESHOLD"] = 3
    app.config["RUN_GROUP_SIZE"] = 1  # one run per bulk message, so that the lanes' order shows
    yearly = "0 0 1 1 *"  # never due during the test: the fires below are the only ones
    burst = [create_job(client, admin, name=f"burst-{n}", script="sleep 0.3", schedule=yearly)["id"]
             for n in range(6)]
    alone = create_job(client, admin, name="alone", script="sleep 0.3", schedule=yearly)["id"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # When the scheduler's fire function records the burst, then the lone job's fire (in this order,
    # so that one FIFO queue would put the lone run last)
    fired = fire.fire_due_jobs(app, {job_id: [now] for job_id in burst})
    assert len(fired.queued) == 6
    assert len(fire.fire_due_jobs(app, {alone: [now]}).queued) == 1
    # And a worker with a single thread starts
    processes.worker(WORKER_THREADS=1)
    # Then every run succeeds, and the lone one started before all but at most one of the burst
    # (the worker may have taken a bulk run before it had fetched the lone one's message)
    wait_for(lambda: all(e.status == "success" for job_id in [*burst, alone] for e in executions_of(app, job_id))
             and len([e for job_id in burst for e in executions_of(app, job_id)]) == 6,
             timeout=60, message="every run to succeed\n" + processes.logs())
    (lone_run,) = executions_of(app, alone)
    burst_starts = sorted(e.started_at for job_id in burst for e in executions_of(app, job_id))
    assert lone_run.started_at < burst_starts[1], (lone_run.started_at, burst_starts)


def test_a_worker_process_whose_threads_are_busy_leaves_the_next_run_to_an_idle_one(app, client, admin, processes):
    # Given a worker of two processes with one thread each
    processes.worker(WORKER_PROCESSES=2, WORKER_THREADS=1)
    first, second = (create_job(client, admin, name=f"slow-{n}", script="sleep 3")["id"] for n in range(2))
    # When two runs are asked for at once (the workers may still be starting: both wait in Redis)
    ids = [client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"] for job_id in (first, second)]
    # Then they run at the same time, one in each process: a process fetches no more runs than it
    # has threads, so the second is not held behind the first by the process that took it
    runs = [final(app, execution_id, timeout=60) for execution_id in ids]
    assert all(run["status"] == "success" for run in runs), runs
    starts = sorted(datetime.fromisoformat(run["started_at"]) for run in runs)
    ends = sorted(datetime.fromisoformat(run["completed_at"]) for run in runs)
    assert starts[1] < ends[0], (starts, ends)
    assert len({run["worker_id"].split(":")[1] for run in runs}) == 2
