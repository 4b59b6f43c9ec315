"""``GET /api/v1/jobs/{id}/metrics``: figures checked against executions of known durations, on
PostgreSQL (percentile_cont) and on SQLite (the Python fallback)."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta, timezone

import pytest

from app.extensions import db
from app.models import Execution
from app.models.base import utcnow

JOB = {"name": "metered", "job_type": "bash", "script": "echo hi", "schedule": None}

#: (days before today, status, duration in seconds): what the job ran
RUNS = [
    (0, "success", 10.0), (0, "success", 20.0), (0, "failed", 30.0), (0, "queued", None),
    (1, "success", 40.0), (1, "timed_out", 50.0), (1, "skipped", None),
    (3, "cancelled", None),
    (40, "success", 1000.0),  # outside a 30-day window
]


def add_runs(app, job_id: str) -> dict:
    """The RUNS, each at midnight UTC of its day (plus n microseconds, so fire times differ);
    returns the id of the one that started last."""
    midnight = datetime.combine(utcnow().date(), time.min, tzinfo=timezone.utc)
    latest = None
    with app.app_context():
        for n, (days_ago, status, duration) in enumerate(RUNS):
            scheduled = midnight - timedelta(days=days_ago) + timedelta(microseconds=n)
            started = scheduled if duration is not None else None
            execution = Execution(job_id=uuid.UUID(job_id), scheduled_for=scheduled, status=status,
                                  triggered_by="scheduled", created_at=scheduled, sent_at=scheduled,
                                  started_at=started, duration_seconds=duration,
                                  completed_at=started + timedelta(seconds=duration) if started else None)
            db.session.add(execution)
            db.session.flush()
            if started is not None and (latest is None or started > latest[0]):
                latest = (started, str(execution.id))
        db.session.commit()
    return {"id": latest[1]}


#: The figures RUNS give over 30 days.
EXPECTED = {
    "by_status": {"queued": 1, "running": 0, "success": 3, "failed": 1, "timed_out": 1, "lost": 0,
                  "cancelled": 1, "skipped": 1, "missed": 0},
    "total": 8,
    # 3 successes out of 5 outcomes (cancelled, skipped and queued have none)
    "success_rate": 0.6,
    # finished durations 10, 20, 30, 40, 50: the median 30; p95 at rank 3.8 → 40 + 0.8 × 10
    "duration_seconds": {"p50": 30.0, "p95": 48.0, "max": 50.0},
}


def check(body: dict, days: int) -> None:
    expected = EXPECTED
    assert body["days"] == days
    assert body["runs"] == {"total": expected["total"], "by_status": expected["by_status"]}
    assert body["success_rate"] == pytest.approx(expected["success_rate"])
    assert body["duration_seconds"] == pytest.approx(expected["duration_seconds"])
    series = body["series"]
    today = utcnow().date()
    assert len(series) == days
    assert [entry["date"] for entry in series] == [(today - timedelta(days=days - 1 - n)).isoformat()
                                                   for n in range(days)]
    by_date = {entry["date"]: entry for entry in series}
    assert by_date[today.isoformat()] == {"date": today.isoformat(), "succeeded": 2, "failed": 1, "other": 1,
                                          "p50_seconds": pytest.approx(20.0)}
    yesterday = (today - timedelta(days=1)).isoformat()
    assert by_date[yesterday] == {"date": yesterday, "succeeded": 1, "failed": 1, "other": 1,
                                  "p50_seconds": pytest.approx(45.0)}
    three_ago = (today - timedelta(days=3)).isoformat()
    assert by_date[three_ago] == {"date": three_ago, "succeeded": 0, "failed": 0, "other": 1, "p50_seconds": None}
    quiet = [entry for entry in series if entry["date"] not in (today.isoformat(), yesterday, three_ago)]
    assert all((e["succeeded"], e["failed"], e["other"], e["p50_seconds"]) == (0, 0, 0, None) for e in quiet)


def test_metrics_match_the_executions_that_ran(app, client, people):
    # Given Alice's job with runs of known outcomes and durations over the last days
    job_id = client.post("/api/v1/jobs", json=JOB, headers=people["alice"]).json["id"]
    last = add_runs(app, job_id)
    # When she asks for its metrics over 30 days
    response = client.get(f"/api/v1/jobs/{job_id}/metrics?days=30", headers=people["alice"])
    # Then the counts, success rate, percentiles and per-day series are those of the runs
    assert response.status_code == 200, response.json
    check(response.json, 30)
    assert response.json["last_run"]["id"] == last["id"]
    assert response.json["job_id"] == job_id


def test_the_default_window_is_30_days_and_a_short_one_leaves_older_runs_out(app, client, people):
    job_id = client.post("/api/v1/jobs", json=JOB, headers=people["alice"]).json["id"]
    add_runs(app, job_id)
    # When no days are given / Then 30 are used
    assert len(client.get(f"/api/v1/jobs/{job_id}/metrics", headers=people["alice"]).json["series"]) == 30
    # When only today is asked / Then only today's four runs count
    today = client.get(f"/api/v1/jobs/{job_id}/metrics?days=1", headers=people["alice"]).json
    assert today["runs"]["total"] == 4 and today["success_rate"] == pytest.approx(2 / 3)
    assert today["duration_seconds"] == pytest.approx({"p50": 20.0, "p95": 29.0, "max": 30.0})
    # When 90 days are asked / Then the run of 40 days ago counts too
    wide = client.get(f"/api/v1/jobs/{job_id}/metrics?days=90", headers=people["alice"]).json
    assert wide["runs"]["total"] == 9 and wide["duration_seconds"]["max"] == 1000.0


def test_a_job_without_runs_has_empty_metrics(client, people):
    job_id = client.post("/api/v1/jobs", json=JOB, headers=people["alice"]).json["id"]
    body = client.get(f"/api/v1/jobs/{job_id}/metrics?days=7", headers=people["alice"]).json
    assert body["runs"]["total"] == 0 and body["success_rate"] is None and body["last_run"] is None
    assert body["duration_seconds"] == {"p50": None, "p95": None, "max": None}
    assert len(body["series"]) == 7


@pytest.mark.parametrize("days", ["0", "91", "-3", "abc", "1.5"])
def test_days_out_of_range_is_422_naming_days(client, people, days):
    job_id = client.post("/api/v1/jobs", json=JOB, headers=people["alice"]).json["id"]
    response = client.get(f"/api/v1/jobs/{job_id}/metrics?days={days}", headers=people["alice"])
    assert response.status_code == 422
    errors = {**response.json["errors"].get("json", {}), **response.json["errors"].get("query", {})}
    assert "days" in errors


def test_who_may_see_the_job_may_see_its_metrics_others_get_404(client, people):
    # Given Alice's job
    job_id = client.post("/api/v1/jobs", json=JOB, headers=people["alice"]).json["id"]
    url = f"/api/v1/jobs/{job_id}/metrics"
    # Then her team's viewer and the admin see its metrics
    assert client.get(url, headers=people["vera"]).status_code == 200
    assert client.get(url, headers=people["admin"]).status_code == 200
    # And Bob cannot tell it from a job that does not exist
    hidden = client.get(url, headers=people["bob"])
    missing = client.get(f"/api/v1/jobs/{uuid.UUID(int=0)}/metrics", headers=people["bob"])
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json["message"].replace(job_id, "?") == missing.json["message"].replace(str(uuid.UUID(int=0)), "?")


def test_sqlite_gives_the_same_figures(sqlite_api):
    # Given a standalone-style app on SQLite with the same runs
    job_id = sqlite_api.client.post("/api/v1/jobs", json=JOB, headers=sqlite_api.headers).json["id"]
    last = add_runs(sqlite_api.app, job_id)
    # When the metrics are asked / Then the Python fallback gives what percentile_cont gives
    response = sqlite_api.client.get(f"/api/v1/jobs/{job_id}/metrics?days=30", headers=sqlite_api.headers)
    assert response.status_code == 200, response.json
    check(response.json, 30)
    assert response.json["last_run"]["id"] == last["id"]
