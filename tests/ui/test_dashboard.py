"""The dashboard: its figures for each viewer's scope, checked against executions with known
statuses, durations and fire times; and the page that shows them."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app import create_app
from app.errors import Forbidden, NotFound
from app.extensions import db
from app.migrate import upgrade
from app.models import Execution, User
from app.services import dashboard, jobs, teams, users
from app.services.actors import SYSTEM, Actor
from tests.conftest import ADMIN_TOKEN
from tests.ui.web_client import make_user, signed_in

#: the dashboard's "now" in the figures' tests: noon UTC, so every run below has a clear day
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def _at(days_ago: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 20, hour, minute, tzinfo=UTC) - timedelta(days=days_ago)


def _run(job, when: datetime, status: str, seconds: float | None = None, *, started: datetime | None = None):
    db.session.add(Execution(job_id=job.id, scheduled_for=when, status=status, triggered_by="scheduled",
                             started_at=started or (when if status not in ("queued", "skipped", "missed") else None),
                             duration_seconds=seconds))


def _job(actor: Actor, name: str, schedule: str):
    return jobs.create_job(actor=actor, data={"name": name, "job_type": "bash", "script": "true",
                                              "schedule": schedule})


@pytest.fixture
def world(app, admin):
    return _seed(app)


def _seed(app) -> dict:
    """Two teams.  Team A: Alice's two jobs, Dave's one, Carol views the team.  Team B: Bob's job.
    Also a paused job of Alice's (its runs count) and a deleted one (its runs do not)."""
    with app.app_context():
        team_a = teams.create_team(actor=SYSTEM, name="Team A")
        team_b = teams.create_team(actor=SYSTEM, name="Team B")
        alice, _ = make_user("alice@example.test", "job_creator", team_id=team_a.id)
        dave, dave_token = make_user("dave@example.test", "job_creator", team_id=team_a.id)
        carol, carol_token = make_user("carol@example.test", "team_viewer", team_id=team_a.id)
        bob, _ = make_user("bob@example.test", "job_creator", team_id=team_b.id)
        nightly = _job(Actor(user=alice), "nightly-etl", "0 3 * * *")
        hourly = _job(Actor(user=alice), "hourly-sync", "15 * * * *")
        report = _job(Actor(user=dave), "dave-report", "30 13 * * *")
        billing = _job(Actor(user=bob), "billing", "*/5 * * * *")
        paused = _job(Actor(user=alice), "paused-job", "* * * * *")
        gone = _job(Actor(user=alice), "deleted-job", "* * * * *")

        _run(nightly, _at(0, 3), "success", 100)
        _run(nightly, _at(1, 3), "failed", 50)
        _run(nightly, _at(2, 3), "success", 200)
        _run(nightly, _at(10, 3), "failed", 10)  # in the chart, not in the 7 days
        _run(nightly, _at(20, 3), "failed", 10)  # in nothing
        _run(hourly, _at(0, 10, 15), "timed_out", 60)
        _run(hourly, _at(0, 11, 15), "running")
        _run(hourly, _at(0, 9, 15), "lost")
        _run(hourly, _at(0, 8, 15), "cancelled")
        _run(hourly, _at(0, 7, 15), "skipped")
        _run(hourly, _at(3, 10, 15), "success", 5)
        _run(report, _at(0, 11, 30), "success", 20)
        _run(billing, _at(0, 11), "failed", 1000)
        _run(billing, _at(0, 11, 55), "running")
        _run(billing, _at(1, 11), "success", 3000)
        for job in (paused, gone):
            _run(job, _at(0, 6), "failed", 9999)
        jobs.pause_job(actor=Actor(user=alice), job_id=paused.id)
        jobs.delete_job(actor=Actor(user=alice), job_id=gone.id, expected_version=None)
        db.session.commit()
        return {"team_a": team_a.id, "team_b": team_b.id, "alice": alice.id, "dave": dave.id, "carol": carol.id,
                "bob": bob.id, "dave_token": dave_token, "carol_token": carol_token,
                "ids": {name: job.id for name, job in (("nightly", nightly), ("hourly", hourly),
                                                       ("report", report), ("billing", billing))}}


def _summary(app, user_email: str, **kwargs) -> dict:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == user_email))
        return dashboard.summary(actor=Actor(user=user), now=NOW, **kwargs)


def _names(rows: list[dict]) -> list[str]:
    return [row["job_name"] for row in rows]


def test_an_admin_sees_every_team_s_runs_counted_by_status_and_rated(app, world):
    # Given the runs of both teams (and of a paused and a deleted job)
    # When the admin opens the dashboard at noon
    figures = _summary(app, "admin")
    # Then today's runs are counted by status; skipped fire times are listed but are not runs
    assert figures["runs_today"]["by_status"] == {"cancelled": 1, "failed": 2, "lost": 1, "running": 2,
                                                  "skipped": 1, "success": 2, "timed_out": 1}
    assert figures["runs_today"]["total"] == 9  # the paused job's run counts; the deleted job's does not
    # And the failure rates are failed, timed out and lost among finished runs
    assert figures["failure_rate"]["today"] == {"rate": 4 / 6, "failed": 4, "finished": 6}
    assert figures["failure_rate"]["week"] == {"rate": 5 / 10, "failed": 5, "finished": 10}


def test_a_team_viewer_sees_only_their_team_and_never_another_team_s_runs(app, world):
    # Given Carol, a team viewer of team A, while Bob's billing job (team B) fails and runs
    # When Carol opens the dashboard
    figures = _summary(app, "carol@example.test")
    # Then only team A's runs count: billing's failure and its run in progress are not there
    assert figures["runs_today"]["by_status"] == {"cancelled": 1, "failed": 1, "lost": 1, "running": 1,
                                                  "skipped": 1, "success": 2, "timed_out": 1}
    assert figures["failure_rate"]["today"] == {"rate": 3 / 5, "failed": 3, "finished": 5}
    assert figures["failure_rate"]["week"] == {"rate": 4 / 8, "failed": 4, "finished": 8}
    assert [row["job_name"] for row in figures["running"]["rows"]] == ["hourly-sync"]
    assert "billing" not in _names(figures["slowest"]) + _names(figures["most_failing"]) + \
        _names(figures["next_fires"])
    assert figures["runs_per_day"][-2] == {"date": TODAY - timedelta(days=1), "succeeded": 0, "failed": 1}


def test_next_fires_are_the_active_jobs_next_fire_times_soonest_first(app, world):
    # Given the paused job fires every minute, but is paused
    figures = _summary(app, "carol@example.test")
    # Then the next fires are the active jobs' next fire times after noon, one per job
    assert [(row["job_name"], row["at"]) for row in figures["next_fires"]] == [
        ("hourly-sync", _at(0, 12, 15)), ("dave-report", _at(0, 13, 30)), ("nightly-etl", _at(-1, 3))]
    # When the dashboard is read again 20 minutes later, after hourly-sync fired
    with app.app_context():
        carol = Actor(user=db.session.get(User, world["carol"]))
        later = dashboard.next_fires(actor=carol, now=NOW + timedelta(minutes=20))
    # Then hourly-sync's next fire is the next hour's, the others' have not moved
    assert [(row["job_name"], row["at"]) for row in later] == [
        ("hourly-sync", _at(0, 13, 15)), ("dave-report", _at(0, 13, 30)), ("nightly-etl", _at(-1, 3))]


def test_an_admin_can_narrow_the_dashboard_to_one_team(app, world):
    # When the admin picks team B
    figures = _summary(app, "admin", team_id=world["team_b"])
    # Then only Bob's billing job is counted
    assert figures["runs_today"]["by_status"] == {"failed": 1, "running": 1}
    assert figures["failure_rate"]["week"] == {"rate": 0.5, "failed": 1, "finished": 2}
    assert _names(figures["next_fires"]) == ["billing"]
    assert figures["next_fires"][0]["at"] == _at(0, 12, 5)


def test_a_job_creator_sees_only_their_own_jobs(app, world):
    # Given Dave, a job creator in team A with one job
    figures = _summary(app, "dave@example.test")
    # Then only his job counts, though his teammates' jobs fail and run
    assert figures["runs_today"] == {"total": 1, "by_status": {"success": 1}}
    assert figures["running"] == {"total": 0, "rows": []}
    assert _names(figures["slowest"]) == ["dave-report"] and figures["most_failing"] == []


def test_running_now_lists_the_longest_running_first_with_how_long(app, world):
    figures = _summary(app, "admin")
    rows = figures["running"]["rows"]
    assert figures["running"]["total"] == 2
    assert [(row["job_name"], row["elapsed_seconds"]) for row in rows] == [("hourly-sync", 45 * 60),
                                                                           ("billing", 5 * 60)]
    assert rows[0]["job_id"] == world["ids"]["hourly"]


def test_slowest_jobs_rank_by_the_95th_percentile_of_7_days_of_durations(app, world):
    figures = _summary(app, "admin")
    # billing [1000, 3000]; nightly [50, 100, 200] (its run 10 days ago is out); hourly [5, 60]
    # (the lost run has no duration); dave-report [20]; the paused job [9999] of today
    assert [(row["job_name"], round(row["p95_seconds"], 2), row["runs"]) for row in figures["slowest"]] == [
        ("paused-job", 9999.0, 1), ("billing", 2900.0, 2), ("nightly-etl", 190.0, 3), ("hourly-sync", 57.25, 2),
        ("dave-report", 20.0, 1)]
    assert dashboard.percentile([50, 100, 200], 0.95) == pytest.approx(190.0)


def test_most_failing_jobs_rank_by_failures_then_by_rate(app, world):
    figures = _summary(app, "admin")
    assert [(row["job_name"], row["failures"], row["runs"]) for row in figures["most_failing"]] == [
        ("hourly-sync", 2, 3), ("paused-job", 1, 1), ("billing", 1, 2), ("nightly-etl", 1, 3)]


def test_the_chart_has_14_days_of_succeeded_and_failed_runs(app, world):
    days = _summary(app, "admin")["runs_per_day"]
    assert [day["date"] for day in days] == [TODAY - timedelta(days=n) for n in range(13, -1, -1)]
    assert {day["date"]: (day["succeeded"], day["failed"]) for day in days if day["succeeded"] or day["failed"]} == {
        TODAY: (2, 4), TODAY - timedelta(days=1): (1, 1), TODAY - timedelta(days=2): (1, 0),
        TODAY - timedelta(days=3): (1, 0), TODAY - timedelta(days=10): (0, 1)}


def test_the_figures_are_the_same_on_sqlite_in_standalone_mode(app, world, tmp_path):
    # Given a standalone Jobplane (SQLite: no percentile_cont, days as text) with the same history
    standalone = create_app({"ENV": "standalone", "DATA_DIR": str(tmp_path)})
    upgrade(standalone.config["DATABASE_URL"])
    try:
        with standalone.app_context():
            users.bootstrap_admin(token=None)
            db.session.commit()
        _seed(standalone)
        # When the admin and Carol read the figures there / Then they are PostgreSQL's, figure for figure
        for email in ("admin", "carol@example.test"):
            assert _without_ids(_summary(standalone, email)) == _without_ids(_summary(app, email))
    finally:
        standalone.extensions["jobplane_db"].engine.dispose()


def _without_ids(figures: dict) -> dict:
    """The figures with the rows' ids left out (each database made its own)."""
    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if not key.endswith("_id")}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return round(value, 6) if isinstance(value, float) else value
    return strip(figures)


def test_only_admins_pick_a_team_and_the_team_must_exist(app, world):
    with pytest.raises(Forbidden):
        _summary(app, "carol@example.test", team_id=world["team_b"])
    with pytest.raises(NotFound):
        _summary(app, "admin", team_id=uuid.uuid4())


# --- the page --------------------------------------------------------------------------------------

def test_the_page_shows_a_team_viewer_their_team_s_figures_and_no_admin_links(app, world):
    # Given Carol signed in
    web = signed_in(app, world["carol_token"])
    # When she opens the dashboard
    page = web.get("/dashboard")
    # Then she sees her team's jobs and runs, never team B's, and no admin pages in the navigation
    assert page.status_code == 200
    assert "hourly-sync" in page.text and "billing" not in page.text
    assert "/admin/" not in page.text and 'id="team-filter"' not in page.text
    assert 'hx-trigger="every 10s"' in page.text
    assert re.search(r'<td>\d{4}-\d\d-\d\d</td><td>\d+</td><td>\d+</td>', page.text)  # the chart's table


def test_the_page_lets_an_admin_pick_a_team_and_refreshes_running_now_alone(app, world):
    with app.app_context():
        db.session.execute(Execution.__table__.update().where(Execution.status == "running")
                           .values(started_at=datetime.now(UTC) - timedelta(minutes=3)))
        db.session.commit()
    web = signed_in(app, ADMIN_TOKEN)
    # When the admin opens the dashboard, then picks team B
    everything = web.get("/dashboard")
    team_b = web.get(f"/dashboard?team={world['team_b']}")
    # Then the team selector lists both teams, and team B's page shows billing only
    assert everything.status_code == 200 and "Team A" in everything.text and "Team B" in everything.text
    assert "/admin/users" in everything.text
    assert "billing" in team_b.text and "hourly-sync" not in team_b.text
    # And the 10-second refresh of "running now" gets only that panel, for the same team
    panel = web.get(f"/dashboard?team={world['team_b']}", headers={"HX-Request": "true", "HX-Target": "running-now"})
    assert panel.status_code == 200 and "<html" not in panel.text
    assert "billing" in panel.text and "hourly-sync" not in panel.text and "3 min" in panel.text


def test_a_bad_team_in_the_address_gets_a_clear_error(app, world):
    web = signed_in(app, ADMIN_TOKEN)
    bad = web.get("/dashboard?team=not-a-team")
    assert bad.status_code == 422 and "pick a team from the list" in bad.text
    assert web.get(f"/dashboard?team={uuid.uuid4()}").status_code == 404
    carol = signed_in(app, world["carol_token"])
    assert carol.get(f"/dashboard?team={world['team_a']}").status_code == 403


def test_an_empty_dashboard_says_so(app, admin):
    web = signed_in(app, ADMIN_TOKEN)
    page = web.get("/dashboard")
    assert page.status_code == 200
    assert "Nothing is running." in page.text and "No active job has a fire time ahead." in page.text
    assert 'id="runs-today"><div class="value">0<' in page.text
