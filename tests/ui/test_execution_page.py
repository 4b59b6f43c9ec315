"""The execution page: a run's facts, its other attempts, Cancel for those who may, and the plain-HTTP
log route that browsers fall back to when their websocket cannot open."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog, Execution, ExecutionLogChunk, Team
from app.services.actors import Actor
from tests.secrets.helpers import make_job, make_user


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _signed_in(app, token: str):
    web = app.test_client()
    page = web.get("/login")
    assert web.post("/login/token", data={"token": token, "csrf_token": _csrf(page.text)}).status_code == 303
    return web


@pytest.fixture
def world(app):
    """A job of team "data" with a running second attempt (its first failed) and two log pieces,
    and people who own it, view it, and belong to another team."""
    with app.app_context():
        team, other = Team(name="data"), Team(name="web")
        db.session.add_all([team, other])
        db.session.flush()
        owner, owner_token = make_user("owner@example.test", "job_creator", team.id)
        _, viewer_token = make_user("viewer@example.test", "team_viewer", team.id)
        _, outsider_token = make_user("outsider@example.test", "team_viewer", other.id)
        job = make_job(Actor(user=owner), name="nightly-report")
        fired = datetime(2026, 11, 20, 3, 0, tzinfo=timezone.utc)
        first = Execution(job_id=job.id, status="failed", scheduled_for=fired, triggered_by="scheduled",
                          attempt=1, started_at=fired, completed_at=fired + timedelta(seconds=4),
                          duration_seconds=4.0, exit_code=3, error_message="exit code 3", sandboxed=True,
                          worker_id="worker-a:41", peak_memory_kb=20480, cpu_seconds=0.25)
        db.session.add(first)
        db.session.flush()
        second = Execution(job_id=job.id, status="running", scheduled_for=fired, triggered_by="scheduled",
                           attempt=2, first_attempt_id=first.id, started_at=fired + timedelta(seconds=30),
                           worker_id="worker-b:7", claim_token="t" * 32)
        db.session.add(second)
        db.session.flush()
        for seq, (stream, data) in enumerate([("stdout", "\x1b[32mstarting\x1b[0m\n"), ("stderr", "warning: slow\n")],
                                             start=0):  # numbered from 0, as the worker does
            db.session.add(ExecutionLogChunk(execution_id=second.id, seq=seq, offset=seq * 20,
                                             stream=stream, data=data))
        db.session.commit()
        return {"first": first.id, "second": second.id, "job": job.id, "owner": owner_token,
                "viewer": viewer_token, "outsider": outsider_token}


def test_the_owner_sees_the_runs_facts_its_attempts_and_a_cancel_button(app, world):
    # Given the job's owner, signed in
    web = _signed_in(app, world["owner"])
    # When they open the failed first attempt
    page = web.get(f"/executions/{world['first']}")
    # Then its facts are there, with a link to the job and to the other attempt of the same fire
    assert page.status_code == 200
    text = page.text
    assert f'href="/jobs/{world["job"]}"' in text and "nightly-report" in text
    assert 'class="badge s-failed">failed<' in text
    for fact in ("scheduled", "4.0 s", "20.0 MB", "0.25 s", "yes (bubblewrap)", "worker-a:41", "exit code 3"):
        assert fact in text, fact
    assert f'href="/executions/{world["second"]}">#2<' in text
    assert 'id="cancel-run"' not in text  # it has ended: nothing to cancel
    # And the running second attempt offers Cancel and the live log's endpoints
    running = web.get(f"/executions/{world['second']}").text
    assert 'id="cancel-run"' in running and 'class="badge s-running">running<' in running
    assert f'data-socket="/ws/executions/{world["second"]}/log"' in running
    assert f'data-poll="/executions/{world["second"]}/log/events"' in running
    assert "live_log.js" in running and "<script>" not in running  # no inline script: the CSP forbids it


def test_a_team_viewer_sees_the_run_but_no_cancel_button_and_cannot_cancel(app, world):
    web = _signed_in(app, world["viewer"])
    page = web.get(f"/executions/{world['second']}")
    assert page.status_code == 200 and "nightly-report" in page.text
    assert 'id="cancel-run"' not in page.text
    # When they post the cancel form anyway, the services refuse and nothing changes
    refused = web.post(f"/executions/{world['second']}/cancel", data={"csrf_token": _csrf(page.text)},
                       headers={"Accept": "text/html"})
    assert refused.status_code == 403 and "owner or an admin" in refused.text
    with app.app_context():
        assert db.session.get(Execution, world["second"]).status == "running"
        assert not db.session.scalars(select(AuditLog).where(AuditLog.action == "execution_cancelled")).all()


def test_someone_who_may_not_see_the_job_gets_404_from_every_execution_route(app, world):
    web = _signed_in(app, world["outsider"])
    page = web.get(f"/executions/{world['second']}", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "nightly-report" not in page.text
    assert web.get(f"/executions/{world['second']}/facts").status_code == 404
    events = web.get(f"/executions/{world['second']}/log/events", headers={"Accept": "application/json"})
    assert events.status_code == 404 and "starting" not in events.text


def test_cancel_stops_the_run_audits_it_and_comes_back_to_the_page(app, world):
    web = _signed_in(app, world["owner"])
    page = web.get(f"/executions/{world['second']}")
    # Without the CSRF token the cancel is refused
    assert web.post(f"/executions/{world['second']}/cancel").status_code == 400
    # With it, the run is cancelled, audited once, and the page says so
    done = web.post(f"/executions/{world['second']}/cancel", data={"csrf_token": _csrf(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == f"/executions/{world['second']}"
    after = web.get(done.headers["Location"]).text
    assert "Cancelled:" in after and 'class="badge s-cancelled">cancelled<' in after
    assert "cancelled by owner@example.test" in after and 'id="cancel-run"' not in after
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.action == "execution_cancelled")).all()
        assert [(row.resource_id, row.changes) for row in rows] == \
            [(str(world["second"]), {"status": {"old": "running", "new": "cancelled"}})]
    # And cancelling again explains there is nothing left to cancel
    again = web.post(f"/executions/{world['second']}/cancel", data={"csrf_token": _csrf(after)})
    assert "Not cancelled" in web.get(again.headers["Location"]).text


def test_the_facts_partial_is_what_the_page_swaps_in_when_the_run_ends(app, world):
    web = _signed_in(app, world["viewer"])
    with app.app_context():
        execution = db.session.get(Execution, world["second"])
        execution.status, execution.exit_code, execution.duration_seconds = "success", 0, 12.0
        db.session.commit()
    facts = web.get(f"/executions/{world['second']}/facts", headers={"HX-Request": "true"})
    assert facts.status_code == 200
    assert 'id="execution-facts"' in facts.text and "<html" not in facts.text
    assert 'class="badge s-success">success<' in facts.text and "12 s" in facts.text


def test_the_fallback_route_returns_the_pieces_after_a_seq_and_the_status(app, world):
    web = _signed_in(app, world["viewer"])
    everything = web.get(f"/executions/{world['second']}/log/events").json
    assert everything["status"] == "running" and everything["more"] is False
    assert [(e["type"], e["seq"], e["stream"], e["data"]) for e in everything["events"]] == [
        ("log", 0, "stdout", "\x1b[32mstarting\x1b[0m\n"), ("log", 1, "stderr", "warning: slow\n")]
    rest = web.get(f"/executions/{world['second']}/log/events?after_seq=0").json
    assert [e["seq"] for e in rest["events"]] == [1]
    assert web.get(f"/executions/{world['second']}/log/events?after_seq=1").json["events"] == []


def test_the_fallback_route_refuses_bad_input_and_strangers_clearly(app, world):
    anonymous = app.test_client().get(f"/executions/{world['second']}/log/events")
    assert anonymous.status_code == 401 and "sign in" in anonymous.json["message"]
    web = _signed_in(app, world["viewer"])
    for bad in ("-1", "x", "1.5"):
        response = web.get(f"/executions/{world['second']}/log/events?after_seq={bad}")
        assert response.status_code == 422, bad
        assert "after_seq" in response.json["errors"]["json"] and "whole number" in response.text
