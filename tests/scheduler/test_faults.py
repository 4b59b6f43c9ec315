"""Fault tests with real processes: every due fire time ends as exactly one execution, whatever
dies — the leader, its lock connection, PostgreSQL, Redis, or the scheduler at any step of the
fire path.  (Their long versions belong in bench/; these run a few iterations each.)"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import create_engine, select, text

from app.extensions import db
from app.models import Execution
from app.scheduler import faults
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)

#: Settings that make the sweeper quick enough to observe within a test.
FAST_SWEEP = {"SWEEP_INTERVAL_SECONDS": 1, "REQUEUE_AFTER_SECONDS": 2}


def leader(processes, **extra):
    scheduler = processes.scheduler(**extra)
    wait_for(lambda: "became the scheduler leader" in processes.log(scheduler), timeout=20,
             message="a leader\n" + processes.log(scheduler))
    return scheduler


def standby(processes, **extra):
    scheduler = processes.scheduler(**extra)
    wait_for(lambda: "standing by" in processes.log(scheduler), timeout=20, message="a standby")
    return scheduler


def per_second_job(client, admin, **fields) -> str:
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "per-second", "job_type": "bash", "script": "true", "schedule": "* * * * * *",
        "concurrency_policy": "allow", **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def ledger(app, job_id) -> list[Execution]:
    with app.app_context():
        rows = list(db.session.scalars(select(Execution).where(Execution.job_id == job_id)
                                       .order_by(Execution.scheduled_for)))
        db.session.expunge_all()
    return rows


def assert_one_execution_per_second(rows: list[Execution]) -> None:
    """Every second from the first fire to the last has exactly one ledger entry."""
    times = [r.scheduled_for for r in rows]
    expected = [times[0] + timedelta(seconds=i) for i in range(len(times))]
    assert times == expected, f"gaps or duplicates: {sorted(set(expected) - set(times))}"


def wait_all_ran(app, job_id, timeout=45) -> list[Execution]:
    def settled():
        rows = ledger(app, job_id)
        return rows if rows and all(r.status not in ("queued", "running") for r in rows) else None
    rows = wait_for(settled, timeout=timeout, message="every execution to finish")
    assert {r.status for r in rows} == {"success"}, {r.scheduled_for: (r.status, r.reason) for r in rows
                                                     if r.status != "success"}
    return rows


def test_leader_sigkilled_during_a_minute_of_fires(app, client, admin, processes):
    # Given a leader, a standby, a worker, and a job firing every second
    processes.worker()
    first = leader(processes)
    second = standby(processes)
    job_id = per_second_job(client, admin)
    # When the leader is SIGKILLed after 30 s, and the standby fires for 30 s more
    time.sleep(30)
    processes.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: "became the scheduler leader" in processes.log(second), timeout=10, message="takeover")
    takeover = time.monotonic() - killed
    time.sleep(30)
    processes.kill(second, signal.SIGTERM)
    second.wait(timeout=15)
    # Then every second of the minute has exactly one execution, and every one ran
    rows = wait_all_ran(app, job_id)
    assert len(rows) >= 55
    assert_one_execution_per_second(rows)
    fired_by = {r.fired_by.split(":")[1] for r in rows}
    assert fired_by == {str(first.pid), str(second.pid)}
    # And the standby fired nothing before it led
    assert "fired job" not in processes.log(second).split("became the scheduler leader")[0]
    assert takeover < 5, f"takeover took {takeover:.2f} s"


def test_leader_whose_lock_connection_is_terminated_stops_firing_within_a_second(
        app, client, admin, processes, database_url):
    first = leader(processes)
    second = standby(processes)
    job_id = per_second_job(client, admin)
    time.sleep(6)
    # When PostgreSQL terminates the leader's lock connection
    engine = create_engine(database_url)
    with engine.begin() as connection:
        pid = connection.execute(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = :lock"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"lock": 7_402_118}).scalar_one()
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    terminated = datetime.now(timezone.utc)
    engine.dispose()
    # Then the old leader exits at once, and fires nothing a second after the termination
    assert first.wait(timeout=5) == 3, processes.log(first)
    wait_for(lambda: "became the scheduler leader" in processes.log(second), timeout=10, message="takeover")
    time.sleep(5)
    processes.kill(second, signal.SIGTERM)
    second.wait(timeout=15)
    rows = ledger(app, job_id)
    by_first = [r for r in rows if r.fired_by.endswith(f":{first.pid}")]
    assert by_first and max(r.created_at for r in by_first) <= terminated + timedelta(seconds=1)
    assert_one_execution_per_second(rows)


def test_firing_resumes_after_postgresql_restarts(app, client, admin, processes):
    processes.worker()
    leader(processes)
    standby(processes)
    job_id = per_second_job(client, admin)
    time.sleep(5)
    # When PostgreSQL restarts under the running fleet
    restart_postgresql()
    restarted = datetime.now(timezone.utc)
    # Then a scheduler is firing again within 10 s (the old leader lost its lock and exited)
    wait_for(lambda: [r for r in ledger(app, job_id) if r.created_at > restarted], timeout=20,
             message="fires after the restart\n" + processes.logs())
    resumed = min(r.created_at for r in ledger(app, job_id) if r.created_at > restarted)
    assert (resumed - restarted).total_seconds() <= 10
    time.sleep(3)
    processes.kill_all()
    # And every second, the outage's included, ends as exactly one ledger entry
    assert_one_execution_per_second(ledger(app, job_id))


def test_every_queued_execution_runs_after_redis_restarts(app, client, admin, processes, settings):
    # Given queued runs whose messages are in Redis, and no worker yet
    leader(processes, **FAST_SWEEP)
    job_id = client.post("/api/v1/jobs", headers=admin, json={
        "name": "manual", "job_type": "bash", "script": "echo ran", "concurrency_policy": "allow"}).json["id"]
    ids = [client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"] for _ in range(5)]
    # When Redis restarts (it keeps nothing: every message is lost)
    restart_redis(settings["REDIS_URL"])
    processes.worker()
    # Then the sweeper sends them again and every one runs
    for execution_id in ids:
        wait_for(lambda: _status(app, execution_id) == "success", timeout=30,
                 message=f"{execution_id} to run\n" + processes.logs())


@pytest.mark.parametrize("point", faults.POINTS)
def test_scheduler_killed_at_each_step_of_the_fire_path(app, client, admin, processes, tmp_path, point):
    # Given a scheduler that will crash at one step of its first fire
    processes.worker()
    crashing = leader(processes, FAULT_INJECTION=f"{point}:{tmp_path / 'crashed'}", **FAST_SWEEP)
    job_id = per_second_job(client, admin)
    wait_for(lambda: crashing.poll() is not None, timeout=20, message="the injected crash\n" + processes.logs())
    assert crashing.returncode == faults.EXIT_INJECTED, processes.log(crashing)
    # When a scheduler starts again (a supervisor would restart it) and fires for a few seconds
    replacement = leader(processes, FAULT_INJECTION=f"{point}:{tmp_path / 'crashed'}", **FAST_SWEEP)
    time.sleep(4)
    processes.kill(replacement, signal.SIGTERM)
    replacement.wait(timeout=15)
    # Then each fire time has exactly one execution, and each one ran — the crashed one included
    rows = wait_all_ran(app, job_id)
    assert len(rows) >= 3
    assert_one_execution_per_second(rows)


def _status(app, execution_id):
    with app.app_context():
        return db.session.get(Execution, execution_id).status


def restart_postgresql() -> None:
    """Restart the local PostgreSQL cluster the tests use (needs root, as make test has)."""
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    assert versions, "no local PostgreSQL cluster to restart"
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"],
                   check=True, capture_output=True)


def restart_redis(url: str) -> None:
    port = urlsplit(url).port or 6379
    client = redis.Redis(port=port)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # shutting down closes the connection
    os.makedirs("/tmp/jobplane-redis", exist_ok=True)
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
                    "--save", "", "--appendonly", "no", "--dir", "/tmp/jobplane-redis",
                    "--logfile", "/tmp/jobplane-redis/redis.log"], check=True)
    wait_for(lambda: _pings(client), timeout=10, message="Redis to come back")


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False
