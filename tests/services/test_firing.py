"""The fire ledger: misfire and concurrency policies decide what each due fire time becomes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Execution, Job
from app.services import api_tokens, claims, firing, users
from app.services.actors import SYSTEM

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
THRESHOLD = timedelta(seconds=10)


def make_job(client, admin, **fields) -> str:
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "policy", "job_type": "bash", "script": "true", "schedule": "* * * * *", **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def fire(app, job_id, times, *, cap=100, replay=False):
    with app.app_context():
        result = firing.record_fires(job_id=job_id, run_times=times, fired_by="test", misfire_threshold=THRESHOLD,
                                     run_all_cap=cap, now=NOW, replay=replay)
        db.session.commit()
        return result


def ledger(app, job_id) -> dict[datetime, str]:
    with app.app_context():
        return {e.scheduled_for: e.status for e in db.session.scalars(
            select(Execution).where(Execution.job_id == job_id))}


def minutes_ago(*minutes) -> list[datetime]:
    return [NOW - timedelta(minutes=m) for m in minutes]


@pytest.mark.parametrize("policy, expected", [
    ("skip", {30: "missed", 20: "missed", 10: "missed"}),
    ("run_latest", {30: "missed", 20: "missed", 10: "queued"}),
    ("run_all", {30: "queued", 20: "queued", 10: "queued"}),
])
def test_misfire_policies_for_fire_times_passed_while_no_scheduler_ran(app, client, admin, policy, expected):
    job_id = make_job(client, admin, misfire_policy=policy, concurrency_policy="allow")
    fire(app, job_id, minutes_ago(30, 20, 10))
    assert ledger(app, job_id) == {NOW - timedelta(minutes=m): s for m, s in expected.items()}


def test_an_on_time_fire_makes_run_latest_miss_every_late_one(app, client, admin):
    job_id = make_job(client, admin, misfire_policy="run_latest", concurrency_policy="allow")
    fire(app, job_id, minutes_ago(2, 1) + [NOW])
    assert ledger(app, job_id) == {NOW - timedelta(minutes=2): "missed", NOW - timedelta(minutes=1): "missed",
                                   NOW: "queued"}


def test_run_all_is_capped_and_max_lateness_always_misses(app, client, admin):
    job_id = make_job(client, admin, misfire_policy="run_all", concurrency_policy="allow",
                      max_lateness_seconds=25 * 60)
    fire(app, job_id, minutes_ago(30, 20, 15, 10, 5), cap=2)
    assert ledger(app, job_id) == {
        NOW - timedelta(minutes=30): "missed",   # later than max lateness
        NOW - timedelta(minutes=20): "missed",   # beyond the cap of 2 most recent
        NOW - timedelta(minutes=15): "missed",
        NOW - timedelta(minutes=10): "queued",
        NOW - timedelta(minutes=5): "queued"}


def test_missed_records_say_why(app, client, admin):
    job_id = make_job(client, admin, misfire_policy="skip")
    fire(app, job_id, minutes_ago(5))
    with app.app_context():
        reason = db.session.scalar(select(Execution.reason))
    assert "missed" in reason and "300 s late" in reason and "policy skip" in reason


def test_forbid_records_a_skip_while_a_run_is_active(app, client, admin):
    job_id = make_job(client, admin, concurrency_policy="forbid")
    fire(app, job_id, [NOW - timedelta(seconds=2)])
    fire(app, job_id, [NOW])
    assert ledger(app, job_id) == {NOW - timedelta(seconds=2): "queued", NOW: "skipped"}
    with app.app_context():
        skipped = db.session.scalar(select(Execution).where(Execution.status == "skipped"))
        assert "still active" in skipped.reason and "forbid" in skipped.reason


def test_concurrent_allowed_false_is_forbid_and_true_is_allow(app, client, admin):
    forbid = make_job(client, admin, concurrent_allowed=False)
    allow = make_job(client, admin, concurrent_allowed=True)
    with app.app_context():
        assert db.session.get(Job, forbid).concurrency_policy == "forbid"
        assert db.session.get(Job, allow).concurrency_policy == "allow"
    for job_id in (forbid, allow):
        fire(app, job_id, [NOW - timedelta(seconds=2)])
        fire(app, job_id, [NOW])
    assert sorted(ledger(app, allow).values()) == ["queued", "queued"]
    assert sorted(ledger(app, forbid).values()) == ["queued", "skipped"]


def test_contradicting_concurrent_allowed_and_policy_is_refused(client, admin):
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "x", "job_type": "bash", "script": "true", "concurrent_allowed": True,
        "concurrency_policy": "forbid"})
    assert response.status_code == 422
    assert "concurrent_allowed" in response.json["errors"]["json"]


def test_replace_cancels_the_active_run_and_queues_the_new_one(app, client, admin):
    job_id = make_job(client, admin, concurrency_policy="replace")
    first = fire(app, job_id, [NOW - timedelta(seconds=2)]).queued[0]
    result = fire(app, job_id, [NOW])
    assert result.cancelled == [first]
    assert ledger(app, job_id) == {NOW - timedelta(seconds=2): "cancelled", NOW: "queued"}
    with app.app_context():
        cancelled = db.session.get(Execution, first)
        assert cancelled.claim_token is None and "replaced by the run for" in cancelled.reason


def test_manual_run_under_forbid_gets_409_while_a_run_is_active(app, client, admin):
    job_id = make_job(client, admin, concurrency_policy="forbid", schedule=None)
    assert client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).status_code == 202
    response = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin)
    assert response.status_code == 409
    assert "still active" in response.json["message"]


def test_max_concurrent_defers_a_claim_over_the_limit(app, client, admin):
    job_id = make_job(client, admin, concurrency_policy="allow", max_concurrent=1, schedule=None)
    ids = [client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"] for _ in range(2)]
    with app.app_context():
        first = claims.claim_execution(execution_id=ids[0], worker_id="w1")
        db.session.commit()
        second = claims.claim_execution(execution_id=ids[1], worker_id="w2")
        db.session.commit()
        assert first.claim is not None and second.claim is None and second.deferred
        assert db.session.get(Execution, ids[1]).status == "queued"


def test_a_fire_already_in_the_ledger_is_ignored_whatever_its_status(app, client, admin):
    job_id = make_job(client, admin, concurrency_policy="replace")
    fire(app, job_id, [NOW])
    again = fire(app, job_id, [NOW])  # a failover repeats the fire: nothing cancelled, nothing new
    assert (again.queued, again.cancelled, again.skipped) == ([], [], [])
    assert ledger(app, job_id) == {NOW: "queued"}


def test_fire_times_of_a_paused_job_are_not_replayed_under_skip(app, client, admin):
    job_id = make_job(client, admin, misfire_policy="skip", schedule="* * * * * *")
    assert client.post(f"/api/v1/jobs/{job_id}/pause", headers=admin).json["status"] == "disabled"
    fire(app, job_id, [NOW])  # a paused job fires nothing, even if a stale trigger fires
    assert ledger(app, job_id) == {}
    assert client.post(f"/api/v1/jobs/{job_id}/resume", headers=admin).json["status"] == "active"
    assert ledger(app, job_id) == {}


def test_resume_replays_the_latest_fire_of_the_pause_under_run_latest(app, client, admin):
    job_id = make_job(client, admin, misfire_policy="run_latest", schedule="* * * * * *")
    client.post(f"/api/v1/jobs/{job_id}/pause", headers=admin)
    with app.app_context():
        db.session.get(Job, job_id).paused_at -= timedelta(seconds=30)
        db.session.commit()
    client.post(f"/api/v1/jobs/{job_id}/resume", headers=admin)
    entries = ledger(app, job_id)
    assert list(entries.values()) == ["queued"]
    with app.app_context():
        assert db.session.scalar(select(Execution.fired_by)) == "resume"


def test_the_ledger_can_be_filtered_by_status(app, client, admin):
    job_id = make_job(client, admin, misfire_policy="skip")
    fire(app, job_id, minutes_ago(3, 2))
    response = client.get(f"/api/v1/jobs/{job_id}/executions?status=missed,skipped", headers=admin)
    assert [e["status"] for e in response.json] == ["missed", "missed"]
    assert client.get(f"/api/v1/jobs/{job_id}/executions?status=queued", headers=admin).json == []
    bad = client.get(f"/api/v1/jobs/{job_id}/executions?status=exploded", headers=admin)
    assert bad.status_code == 422 and "status" in bad.json["errors"]["json"]


def test_pause_and_resume_are_audited_once_each(app, client, admin):
    from app.models import AuditLog

    job_id = make_job(client, admin)
    client.post(f"/api/v1/jobs/{job_id}/pause", headers=admin)
    client.post(f"/api/v1/jobs/{job_id}/pause", headers=admin)  # no change, no row
    client.post(f"/api/v1/jobs/{job_id}/resume", headers=admin)
    with app.app_context():
        actions = list(db.session.scalars(select(AuditLog.action).where(AuditLog.resource_id == job_id)
                                          .order_by(AuditLog.id)))
    assert actions == ["job_created", "job_paused", "job_resumed"]


def test_one_time_jobs_need_a_future_run_at_and_no_schedule(client, admin):
    base = {"name": "once", "job_type": "bash", "script": "true"}
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    assert client.post("/api/v1/jobs", headers=admin, json={**base, "run_at": future}).status_code == 201
    both = client.post("/api/v1/jobs", headers=admin, json={**base, "run_at": future, "schedule": "* * * * *"})
    assert both.status_code == 422 and "run_at" in both.json["errors"]["json"]
    stale = client.post("/api/v1/jobs", headers=admin, json={**base, "run_at": past})
    assert stale.status_code == 422 and "in the past" in stale.json["errors"]["json"]["run_at"][0]
    naive = client.post("/api/v1/jobs", headers=admin, json={**base, "run_at": "2030-01-01T00:00:00"})
    assert naive.status_code == 422 and "run_at" in naive.json["errors"]["json"]


def test_end_must_follow_start(client, admin):
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "window", "job_type": "bash", "script": "true", "schedule": "* * * * *",
        "start_at": "2027-01-02T00:00:00+00:00", "end_at": "2027-01-01T00:00:00+00:00"})
    assert response.status_code == 422 and "end_at" in response.json["errors"]["json"]


def test_viewer_cannot_pause(app, client, admin):
    job_id = make_job(client, admin)
    with app.app_context():
        viewer = users.create_user(actor=SYSTEM, email="viewer@example.com", role="team_viewer")
        _, token = api_tokens.issue_token(actor=SYSTEM, user=viewer, name="t")
        db.session.commit()
    response = client.post(f"/api/v1/jobs/{job_id}/pause", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404  # not their team's job: not even its existence is told


def test_fall_back_fire_times_given_in_the_jobs_zone_are_recorded_once(app, client, admin):
    # 01:30 happens twice in New York on 2026-11-01; the trigger fires the first (EDT) one.
    from zoneinfo import ZoneInfo

    job_id = make_job(client, admin, concurrency_policy="allow", timezone="America/New_York")
    first_0130 = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))  # fold=0: EDT
    with app.app_context():
        for _ in range(2):  # a repeated fire (failover) must find the row it made, across zones
            firing.record_fires(job_id=job_id, run_times=[first_0130], fired_by="test",
                                misfire_threshold=timedelta(days=9999), run_all_cap=100, now=NOW)
            db.session.commit()
    assert list(ledger(app, job_id)) == [datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc)]
