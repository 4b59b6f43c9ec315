"""Two scheduler replicas on one database: one fires, the other takes over when it dies."""

from __future__ import annotations

import re
import signal
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Execution
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(180)

FIRED = re.compile(r"fired job \S+ for (.+): (\d+) new execution")


def test_leader_sigkilled_midway_standby_takes_over_without_duplicates_or_gaps(app, client, admin, processes):
    # Given two scheduler replicas, the first one leading
    first = processes.scheduler()
    wait_for(lambda: "became the scheduler leader" in processes.log(first), timeout=20, message="a leader")
    second = processes.scheduler()
    wait_for(lambda: "standing by" in processes.log(second), timeout=20, message="a standby")
    # And a job firing every second
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "per-second", "job_type": "bash", "script": "true", "schedule": "* * * * * *"})
    job_id = response.json["id"]
    # When the leader is SIGKILLed midway through 30 seconds of fires
    time.sleep(15)
    processes.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: "became the scheduler leader" in processes.log(second), timeout=10,
             message="the standby to take over")
    takeover = time.monotonic() - killed_at
    time.sleep(15)
    processes.kill(second, signal.SIGTERM)
    second.wait(timeout=15)

    with app.app_context():
        times = list(db.session.scalars(select(Execution.scheduled_for).where(Execution.job_id == job_id)
                                        .order_by(Execution.scheduled_for)))
    # Then every second from the first fire to the last has exactly one execution:
    # the standby fired the seconds the dead leader had not recorded, and none twice
    assert len(times) >= 25, times
    expected = [times[0] + timedelta(seconds=i) for i in range(len(times))]
    assert times == expected, f"gaps or duplicates around the takeover ({takeover:.2f} s)"
    # And the standby fired nothing while it was standing by
    second_log = processes.log(second)
    assert "fired job" not in second_log.split("became the scheduler leader")[0]
    assert "fired job" in processes.log(first)
    assert takeover < 5, f"takeover took {takeover:.2f} s"
