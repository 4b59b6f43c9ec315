"""The execution engine with real worker processes: retries with backoff, cancel, crash recovery,
secrets that never leak, and the sandbox's walls."""

from __future__ import annotations

import base64
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

import app as app_package
from app.extensions import db
from app.models import Execution
from app.services.live import channel_name
from tests.helpers import processes_with, wait_for

pytestmark = pytest.mark.timeout(180)

#: Quick heartbeats and sweeps, so that crash recovery is observable within a test.
FAST_RECOVERY = {"HEARTBEAT_SECONDS": 0.5, "HEARTBEAT_STALE_SECONDS": 3, "SWEEP_INTERVAL_SECONDS": 0.5,
                 "REQUEUE_AFTER_SECONDS": 2}


def create_job(client, admin, **fields) -> str:
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "engine", "job_type": "bash", "script": "true", **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def attempts(app, job_id) -> list[Execution]:
    with app.app_context():
        rows = list(db.session.scalars(select(Execution).where(Execution.job_id == job_id)
                                       .order_by(Execution.scheduled_for, Execution.attempt)))
        db.session.expunge_all()
    return rows


def settled(app, job_id, count):
    def check():
        rows = attempts(app, job_id)
        return rows if len(rows) >= count and all(r.status not in ("queued", "running") for r in rows) else None
    return check


def test_a_job_that_always_fails_gets_exactly_its_retries_with_growing_delays(app, client, admin, processes):
    processes.worker()
    job_id = create_job(client, admin, script="echo attempt $JOBPLANE_ATTEMPT; exit 1", max_retries=3,
                        retry_delay_seconds=1, retry_delay_max_seconds=30)
    client.post(f"/api/v1/jobs/{job_id}/run", headers=admin)
    rows = wait_for(settled(app, job_id, 4), timeout=60, message="4 attempts\n" + processes.logs())
    time.sleep(2)  # no fifth attempt comes
    rows = attempts(app, job_id)
    assert [r.attempt for r in rows] == [1, 2, 3, 4]
    assert {r.status for r in rows} == {"failed"}
    assert len({r.scheduled_for for r in rows}) == 1  # attempts of the same fire
    assert all(r.first_attempt_id == rows[0].id for r in rows[1:])
    waits = [(b.started_at - a.completed_at).total_seconds() for a, b in zip(rows, rows[1:])]
    assert waits[0] >= 1 and waits[1] >= 2 and waits[2] >= 4, waits   # 1 s, doubled each time
    assert waits[0] < waits[1] < waits[2]


def test_a_job_that_succeeds_on_its_second_attempt_stops_there(app, client, admin, processes):
    processes.worker()
    job_id = create_job(client, admin, script='[ "$JOBPLANE_ATTEMPT" = 2 ] || exit 3', max_retries=3,
                        retry_delay_seconds=0)
    client.post(f"/api/v1/jobs/{job_id}/run", headers=admin)
    wait_for(settled(app, job_id, 2), timeout=30, message="2 attempts")
    time.sleep(1.5)
    assert [(r.attempt, r.status) for r in attempts(app, job_id)] == [(1, "failed"), (2, "success")]


def test_only_the_chosen_outcomes_are_retried(app, client, admin, processes):
    processes.worker()
    job_id = create_job(client, admin, script="exit 1", max_retries=2, retry_delay_seconds=0,
                        retry_on=["timed_out"])
    client.post(f"/api/v1/jobs/{job_id}/run", headers=admin)
    wait_for(settled(app, job_id, 1), timeout=30, message="the run")
    time.sleep(1.5)
    assert [r.status for r in attempts(app, job_id)] == ["failed"]


def test_cancel_stops_a_running_execution_and_leaves_no_process(app, client, admin, processes):
    marker = f"{random.randint(10000, 99999)}.{random.randint(100, 999)}"
    processes.worker(HEARTBEAT_SECONDS=0.5, KILL_GRACE_SECONDS=1)
    job_id = create_job(client, admin, script=f"echo started\nsleep {marker}", max_retries=2)
    execution_id = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"]
    wait_for(lambda: processes_with(marker), timeout=20, message="the run to start")
    # When it is cancelled through the API
    response = client.post(f"/api/v1/executions/{execution_id}/cancel", headers=admin)
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    # Then every process of it is gone soon after, and a cancelled run is not retried
    wait_for(lambda: not processes_with(marker), timeout=10, message="the run's processes to go")
    time.sleep(1)
    assert [r.status for r in attempts(app, job_id)] == ["cancelled"]
    assert "cancelled by admin" in attempts(app, job_id)[0].reason
    again = client.post(f"/api/v1/executions/{execution_id}/cancel", headers=admin)
    assert again.status_code == 409


def test_cancel_of_a_queued_execution_means_it_never_starts(app, client, admin, processes):
    job_id = create_job(client, admin, script="echo should-not-run")
    execution_id = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"]
    assert client.post(f"/api/v1/executions/{execution_id}/cancel", headers=admin).status_code == 200
    processes.worker()
    time.sleep(2)
    detail = client.get(f"/api/v1/executions/{execution_id}", headers=admin).json
    assert detail["status"] == "cancelled" and "should-not-run" not in detail["logs"]


def test_a_worker_sigkilled_mid_run_is_recovered_and_the_run_retried(app, client, admin, processes):
    # Given a scheduler whose sweeper watches heartbeats, and a worker
    processes.scheduler(**FAST_RECOVERY)
    job_id = create_job(client, admin, script="sleep 2; echo done", max_retries=1, retry_delay_seconds=0,
                        concurrency_policy="allow")
    worker = processes.worker(**FAST_RECOVERY)
    for iteration in range(3):  # the long version, 20 kills, is bench/worker_kills.py
        execution_id = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"]
        wait_for(lambda: _status(app, execution_id) == "running", timeout=20, message="the run to start")
        # When the worker is SIGKILLed mid-run (a replacement starts meanwhile, as a supervisor would
        # restart it: it must not pick the run up before the sweeper declares it lost)
        processes.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        worker = processes.worker(**FAST_RECOVERY)
        # Then the execution leaves running (lost) well within 45 s…
        wait_for(lambda: _status(app, execution_id) != "running", timeout=45, message="recovery")
        assert _status(app, execution_id) == "lost", processes.logs()
        assert time.monotonic() - killed < 45
        # …and its retry runs on the live worker (which the next iteration kills in turn)
        wait_for(lambda: [r for r in attempts(app, job_id) if r.first_attempt_id and
                          str(r.first_attempt_id) == execution_id and r.status == "success"], timeout=30,
                 message=f"the retry of iteration {iteration}\n" + processes.logs())
    assert not [r for r in attempts(app, job_id) if r.status in ("queued", "running")]


def test_a_run_that_kills_its_worker_every_time_ends_failed(app, client, admin, processes):
    processes.scheduler(**FAST_RECOVERY)
    job_id = create_job(client, admin, script="sleep 30", max_retries=1, retry_delay_seconds=0)
    first = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"]
    worker = processes.worker(**FAST_RECOVERY)
    for attempt in (1, 2):
        wait_for(lambda: [r for r in attempts(app, job_id) if r.attempt == attempt and r.status == "running"],
                 timeout=30, message=f"attempt {attempt} to start")
        processes.kill(worker, signal.SIGKILL)
        if attempt == 1:  # its replacement starts at once, as a supervisor would restart it
            worker = processes.worker(**FAST_RECOVERY)
    rows = wait_for(settled(app, job_id, 2), timeout=30, message="both attempts to end")
    assert [(r.attempt, r.status) for r in rows] == [(1, "lost"), (2, "failed")]
    assert "giving up" in rows[1].error_message
    assert str(rows[1].first_attempt_id) == first


SECRET = "sk_live_9f8e7d6c5b4a3210-unique"


def test_a_secret_never_reaches_the_log_the_live_channel_or_the_api(app, client, admin, processes, settings):
    processes.worker()
    job_id = create_job(client, admin, job_type="python", script="\n".join([
        "import base64, os, subprocess",
        "key = os.environ['API_KEY']",
        "print('plain:', key)",
        "print('b64:', base64.b64encode(key.encode()).decode())",
        "print(subprocess.run(['env'], capture_output=True, text=True).stdout)",
        "raise RuntimeError(f'could not log in with {key!r}')",
    ]))
    assert client.put(f"/api/v1/jobs/{job_id}/secrets/API_KEY", headers=admin,
                      json={"value": SECRET}).status_code in (200, 201)
    live_messages: list[str] = []
    subscriber = _follow(settings, live_messages)
    execution_id = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"]
    wait_for(lambda: _status(app, execution_id) == "failed", timeout=30, message="the run")
    time.sleep(0.5)
    subscriber.stop()
    detail = client.get(f"/api/v1/executions/{execution_id}", headers=admin)
    assert "plain: ********" in detail.json["logs"] and "RuntimeError" in detail.json["logs"]
    assert "API_KEY=********" in detail.json["logs"]
    responses = [detail.get_data(as_text=True),
                 client.get(f"/api/v1/jobs/{job_id}", headers=admin).get_data(as_text=True),
                 client.get(f"/api/v1/jobs/{job_id}/executions", headers=admin).get_data(as_text=True),
                 client.get(f"/api/v1/jobs/{job_id}/secrets", headers=admin).get_data(as_text=True)]
    forms = [SECRET, base64.b64encode(SECRET.encode()).decode()]
    for text in responses + ["\n".join(live_messages)]:
        for form in forms:
            assert form not in text
    assert any('"type": "log"' in m for m in live_messages)
    with app.app_context():
        from app.models import ExecutionLogChunk
        stored = "".join(db.session.scalars(select(ExecutionLogChunk.data)))
    assert stored and all(form not in stored for form in forms)


def test_the_sandbox_hides_jobplane_and_other_runs(app, client, admin, processes, tmp_path):
    # Given runs whose working directories are directories of the machine (JOBPLANE_RUN_DIR set)
    run_dir = str(tmp_path / "runs")
    processes.worker(RUN_DIR=run_dir)
    neighbour = create_job(client, admin, script="echo neighbour-data > mine.txt; sleep 6")
    client.post(f"/api/v1/jobs/{neighbour}/run", headers=admin)
    wait_for(lambda: [p for p in Path(run_dir).glob("run-*/mine.txt")], timeout=20, message="the neighbour")
    probe = create_job(client, admin, job_type="python", script="\n".join([
        "import glob, os",
        f"print('config visible:', os.path.exists({str(Path(app_package.__file__).parent / 'config.py')!r}))",
        f"print('runs visible:', glob.glob({run_dir + '/*'!r}) + glob.glob('/tmp/*'))",
        "print('db url:', os.environ.get('JOBPLANE_DATABASE_URL'))",
        "print('uid in sandbox, cwd:', os.getcwd())",
    ]))
    execution_id = client.post(f"/api/v1/jobs/{probe}/run", headers=admin).json["id"]
    wait_for(lambda: _status(app, execution_id) == "success", timeout=30, message="the probe")
    logs = client.get(f"/api/v1/executions/{execution_id}", headers=admin).json
    assert "config visible: False" in logs["logs"]
    assert "runs visible: []" in logs["logs"]
    assert "db url: None" in logs["logs"]
    assert logs["sandboxed"] is True and logs["peak_memory_kb"] > 0 and logs["cpu_seconds"] is not None


def test_by_default_a_run_works_in_a_directory_of_its_sandbox_only(app, client, admin, processes):
    # Given a worker with Jobplane's default (no JOBPLANE_RUN_DIR) and a neighbour run writing a file
    # in its working directory
    processes.worker()
    neighbour = create_job(client, admin, script="echo neighbour-data > mine.txt; sleep 6")
    neighbour_run = client.post(f"/api/v1/jobs/{neighbour}/run", headers=admin).json["id"]
    wait_for(lambda: _status(app, neighbour_run) == "running", timeout=20, message="the neighbour")
    host_dirs = set(Path(tempfile.gettempdir()).glob("run-*"))
    # When a probe lists its working directory, writes there, and looks for the neighbour's file
    probe = create_job(client, admin, script="\n".join([
        "echo \"cwd: $(pwd) files: $(ls)\"",
        "echo probe-data > out.txt && echo \"wrote: $(cat out.txt)\"",
        "echo \"neighbour visible: $(find / -path /proc -prune -o -path /usr -prune -o -name mine.txt -print "
        "2>/dev/null | wc -l)\"",
        "echo \"on: $(awk '$2 == \"/work\" {print $3}' /proc/mounts)\"",
    ]))
    execution_id = client.post(f"/api/v1/jobs/{probe}/run", headers=admin).json["id"]
    wait_for(lambda: _status(app, execution_id) == "success", timeout=30, message="the probe")
    logs = client.get(f"/api/v1/executions/{execution_id}", headers=admin).json["logs"]
    # Then it works in /work, a tmpfs of its own holding its script, writable, and sees no other run's
    assert "cwd: /work files: script.sh" in logs
    assert "wrote: probe-data" in logs
    assert "neighbour visible: 0" in logs
    assert "on: tmpfs" in logs
    # …and no working directory was made on the machine for either run
    assert set(Path(tempfile.gettempdir()).glob("run-*")) == host_dirs


def _status(app, execution_id):
    with app.app_context():
        return db.session.get(Execution, execution_id).status


class _Follower(threading.Thread):
    """Follows every live log channel, as a viewer would."""

    def __init__(self, settings, sink):
        super().__init__(daemon=True)
        self.pubsub = redis.Redis.from_url(settings["REDIS_URL"]).pubsub()
        self.pubsub.psubscribe(channel_name(settings["QUEUE_NAMESPACE"], "*"))
        self.sink = sink
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                self.sink.append(message["data"].decode())

    def stop(self):
        self.stopping.set()
        self.join(timeout=5)
        self.pubsub.close()


def _follow(settings, sink) -> _Follower:
    follower = _Follower(settings, sink)
    follower.start()
    time.sleep(0.2)
    return follower
