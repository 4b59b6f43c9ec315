"""API lists: filters, a stable sort, and pagination with X-Pagination and an RFC 8288 Link header."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, Execution, Job, Notification, Team, User

BASE = {"job_type": "bash", "script": "echo hi", "schedule": None}


def links(response) -> dict[str, str]:
    """The Link header as rel → URL."""
    found = re.findall(r'<([^>]+)>; rel="(\w+)"', response.headers.get("Link", ""))
    return {rel: url for url, rel in found}


def pagination(response) -> dict:
    return json.loads(response.headers["X-Pagination"])


def make_job(client, headers, name, **fields):
    response = client.post("/api/v1/jobs", json={**BASE, "name": name, **fields}, headers=headers)
    assert response.status_code == 201, response.json
    return response.json["id"]


def names(response) -> list[str]:
    assert response.status_code == 200, response.json
    return [job["name"] for job in response.json]


# --- jobs ---------------------------------------------------------------------------------------

def test_jobs_filter_by_status_owner_team_name_and_type(client, people):
    # Given Alice's two jobs (one python, one paused), Bob's job and the admin's
    alice_export = make_job(client, people["alice"], "Nightly-Export")
    make_job(client, people["alice"], "report", job_type="python", script="print(1)")
    paused = make_job(client, people["alice"], "export-archive")
    assert client.post(f"/api/v1/jobs/{paused}/pause", headers=people["alice"]).status_code == 200
    make_job(client, people["bob"], "web-export")
    make_job(client, people["admin"], "admin-export")
    admin = people["admin"]
    ask = lambda query: client.get(f"/api/v1/jobs?sort=name&{query}", headers=admin)  # noqa: E731
    # When the admin filters / Then each filter narrows the list
    assert names(ask("status=disabled")) == ["export-archive"]
    assert names(ask(f"owner={people['alice_id']}")) == ["export-archive", "Nightly-Export", "report"]
    assert names(ask("owner=ALICE@example.com")) == ["export-archive", "Nightly-Export", "report"]
    assert names(ask(f"team={people['team_web']}")) == ["web-export"]
    assert names(ask("q=EXPORT")) == ["admin-export", "export-archive", "Nightly-Export", "web-export"]
    assert names(ask("job_type=python")) == ["report"]
    assert names(ask("q=export&status=active&team=" + people["team_data"])) == ["Nightly-Export"]
    # And a name with LIKE's wildcards is searched literally
    assert names(ask("q=%25")) == [] and names(ask("q=_")) == []
    # And an owner email nobody has gives an empty list, not an error
    assert names(ask("owner=nobody@example.com")) == []
    # And filters never widen what the actor may see: Bob filtering on Alice sees nothing
    assert names(client.get(f"/api/v1/jobs?owner={people['alice_id']}", headers=people["bob"])) == []
    # And Vera (team viewer of data) sees her team's jobs only
    assert [j["id"] for j in client.get("/api/v1/jobs?q=nightly", headers=people["vera"]).json] == [alice_export]


def test_jobs_sort_both_ways_with_ties_broken_by_id(client, people):
    # Given three jobs named alike and one other
    ids = sorted(make_job(client, people["admin"], "same") for _ in range(3))
    make_job(client, people["admin"], "zeta")
    # When sorted by name / Then equal names come in id order, the same way in every page
    ascending = client.get("/api/v1/jobs?sort=name&page_size=2", headers=people["admin"])
    second = client.get("/api/v1/jobs?sort=name&page_size=2&page=2", headers=people["admin"])
    assert [j["id"] for j in ascending.json + second.json][:3] == ids
    assert [j["name"] for j in second.json] == ["same", "zeta"]
    # And descending reverses both the field and the tie-break
    descending = client.get("/api/v1/jobs?sort=-name", headers=people["admin"]).json
    assert [j["name"] for j in descending] == ["zeta", "same", "same", "same"]
    assert [j["id"] for j in descending[1:]] == ids[::-1]
    # And the default is newest first
    default = client.get("/api/v1/jobs", headers=people["admin"]).json
    assert default[0]["name"] == "zeta"
    created = [j["created_at"] for j in default]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize("query, field, allowed", [
    ("sort=owner", "sort", "name, created_at, updated_at, status, job_type"),
    ("sort=-", "sort", "name, created_at"),
    ("status=deleted", "status", "active, disabled"),
    ("job_type=ruby", "job_type", "python, bash"),
])
def test_jobs_unknown_sort_or_filter_value_is_422_listing_the_allowed_ones(app, client, people, query, field,
                                                                           allowed):
    # Given a job
    make_job(client, people["admin"], "one")
    audit_rows = _count(app, AuditLog)
    # When the list is asked with a bad value
    response = client.get(f"/api/v1/jobs?{query}", headers=people["admin"])
    # Then 422 names the field and lists what is allowed, and nothing changes
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]
    assert allowed in response.json["errors"]["json"][field][0]
    assert _count(app, AuditLog) == audit_rows


def test_bad_team_id_is_422_naming_team(client, people):
    response = client.get("/api/v1/jobs?team=not-a-uuid", headers=people["admin"])
    assert response.status_code == 422
    assert "team" in response.json["errors"]["query"]


def test_pages_carry_x_pagination_and_link_headers_that_keep_the_filters(client, people):
    # Given five matching jobs and one that does not match
    for n in range(5):
        make_job(client, people["admin"], f"batch-{n}")
    make_job(client, people["admin"], "other")
    # When the second page of two is asked, filtered and sorted
    response = client.get("/api/v1/jobs?q=batch&sort=name&page=2&page_size=2", headers=people["admin"])
    # Then it holds the 3rd and 4th job, and the headers say where the others are
    assert names(response) == ["batch-2", "batch-3"]
    assert pagination(response) == {"total": 5, "total_pages": 3, "first_page": 1, "last_page": 3, "page": 2,
                                    "previous_page": 1, "next_page": 3}
    found = links(response)
    assert set(found) == {"first", "prev", "next", "last"}
    assert found["next"] == "http://localhost/api/v1/jobs?q=batch&sort=name&page_size=2&page=3"
    assert found["first"].endswith("page=1") and found["prev"].endswith("page=1") and found["last"].endswith("page=3")
    # And following the links walks every job exactly once
    seen, url = [], found["first"]
    while url:
        page = client.get(url, headers=people["admin"])
        seen += names(page)
        url = links(page).get("next")
    assert seen == [f"batch-{n}" for n in range(5)]


def test_the_first_and_last_page_and_a_page_past_the_end(client, people):
    # Given three jobs
    for n in range(3):
        make_job(client, people["admin"], f"job-{n}")
    # When the first page is asked / Then it has no prev link
    first = client.get("/api/v1/jobs?page_size=2", headers=people["admin"])
    assert set(links(first)) == {"first", "next", "last"}
    # When the last page is asked / Then it has no next link
    last = client.get("/api/v1/jobs?page_size=2&page=2", headers=people["admin"])
    assert len(last.json) == 1 and set(links(last)) == {"first", "prev", "last"}
    # When a page past the end is asked / Then it is empty, with the total and a way back
    past = client.get("/api/v1/jobs?page_size=2&page=9", headers=people["admin"])
    assert past.status_code == 200 and past.json == []
    assert pagination(past)["total"] == 3 and "page" not in pagination(past)
    assert links(past)["prev"].endswith("page=2") and "next" not in links(past)
    # And an empty list has no links at all
    empty = client.get("/api/v1/jobs?q=nothing-like-this", headers=people["admin"])
    assert empty.json == [] and "Link" not in empty.headers and pagination(empty)["total"] == 0


@pytest.mark.parametrize("query, field", [("page_size=0", "page_size"), ("page_size=101", "page_size"),
                                          ("page=0", "page"), ("page=two", "page")])
def test_page_and_page_size_out_of_range_are_422_naming_them(client, people, query, field):
    response = client.get(f"/api/v1/jobs?{query}", headers=people["admin"])
    assert response.status_code == 422
    assert field in response.json["errors"]["query"]


# --- executions of a job ------------------------------------------------------------------------

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def ledger(app, client, people):
    """A job of Alice's with five executions of known times, triggers and durations."""
    job_id = make_job(client, people["alice"], "ledger")
    rows = [  # (name, hours after T0, status, trigger, started minutes after scheduled, duration)
        ("a", 0, "success", "scheduled", 1, 30.0),
        ("b", 1, "failed", "scheduled", 2, 5.0),
        ("c", 2, "success", "manual", 0, 90.0),
        ("d", 3, "skipped", "scheduled", None, None),
        ("e", 4, "missed", "scheduled", None, None),
    ]
    ids = {}
    with app.app_context():
        for name, hours, status, trigger, started, duration in rows:
            scheduled = T0 + timedelta(hours=hours)
            execution = Execution(job_id=uuid.UUID(job_id), scheduled_for=scheduled, status=status,
                                  triggered_by=trigger, created_at=scheduled, sent_at=scheduled,
                                  started_at=None if started is None else scheduled + timedelta(minutes=started),
                                  duration_seconds=duration)
            db.session.add(execution)
            db.session.flush()
            ids[str(execution.id)] = name
        db.session.commit()
    return job_id, ids


def executions(client, headers, job_id, query, ids) -> list[str]:
    response = client.get(f"/api/v1/jobs/{job_id}/executions?{query}", headers=headers)
    assert response.status_code == 200, response.json
    return [ids[e["id"]] for e in response.json]


def test_executions_filter_by_status_trigger_and_time_ranges(client, people, ledger):
    job_id, ids = ledger
    ask = lambda query: executions(client, people["alice"], job_id, query, ids)  # noqa: E731
    # Given five executions / When filtered / Then only the matching ones come, newest fire time first
    assert ask("") == ["e", "d", "c", "b", "a"]
    assert ask("status=skipped,missed") == ["e", "d"]
    assert ask("status=success&status=failed") == ["c", "b", "a"]
    assert ask("trigger=manual") == ["c"]
    after, before = (T0 + timedelta(hours=1)).isoformat(), (T0 + timedelta(hours=3)).isoformat()
    assert ask(f"scheduled_after={after.replace('+00:00', 'Z')}&scheduled_before={before}".replace("+", "%2B")) == [
        "c", "b"]
    # And a start range leaves out what never started; an offset other than UTC means the same instant
    berlin = (T0 + timedelta(hours=1, minutes=1)).astimezone(timezone(timedelta(hours=1))).isoformat()
    assert ask("started_after=" + berlin.replace("+", "%2B")) == ["c", "b"]
    assert ask("started_before=" + (T0 + timedelta(minutes=2)).isoformat().replace("+", "%2B")) == ["a"]


def test_executions_sort_by_duration_and_start_with_unstarted_last(client, people, ledger):
    job_id, ids = ledger
    ask = lambda query: executions(client, people["alice"], job_id, query, ids)  # noqa: E731
    # Given d and e never ran: no duration, no start; between them the id decides
    unstarted = sorted(["d", "e"], key={name: execution_id for execution_id, name in ids.items()}.get)
    # When sorted by duration either way / Then they come last, in the direction's id order
    assert ask("sort=duration") == ["b", "a", "c", *unstarted]
    assert ask("sort=-duration") == ["c", "a", "b", *unstarted[::-1]]
    assert ask("sort=started_at") == ["a", "b", "c", *unstarted]
    assert ask("sort=-started_at") == ["c", "b", "a", *unstarted[::-1]]
    assert ask("sort=scheduled_for") == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("query, field, says", [
    ("sort=exit_code", "sort", "scheduled_for, started_at, duration"),
    ("status=exploded", "status", "queued, running, success"),
    ("trigger=cron", "trigger", "scheduled, manual"),
    ("scheduled_after=2026-11-01T02:00:00", "scheduled_after", "UTC offset"),
    ("started_before=yesterday", "started_before", "Not a valid datetime"),
])
def test_executions_bad_filter_is_422_naming_the_field(client, people, ledger, query, field, says):
    job_id, _ = ledger
    response = client.get(f"/api/v1/jobs/{job_id}/executions?{query}", headers=people["alice"])
    assert response.status_code == 422
    errors = {**response.json["errors"].get("json", {}), **response.json["errors"].get("query", {})}
    assert says in " ".join(errors[field])


def test_executions_range_that_ends_before_it_starts_is_422(client, people, ledger):
    job_id, _ = ledger
    response = client.get(f"/api/v1/jobs/{job_id}/executions?scheduled_after=2026-11-02T00:00:00Z"
                          "&scheduled_before=2026-11-01T00:00:00Z", headers=people["alice"])
    assert response.status_code == 422
    assert "later than scheduled_after" in response.json["errors"]["json"]["scheduled_before"][0]


def test_executions_of_a_job_you_may_not_see_are_404_and_paginated_for_those_who_may(client, people, ledger):
    job_id, _ = ledger
    # Given Alice's job / When Bob (another team) asks for its runs / Then it does not exist for him
    assert client.get(f"/api/v1/jobs/{job_id}/executions", headers=people["bob"]).status_code == 404
    # When Vera (viewer of Alice's team) pages through them / Then she gets them, with links
    page = client.get(f"/api/v1/jobs/{job_id}/executions?page_size=2&page=3&status=success,failed,skipped,missed",
                      headers=people["vera"])
    assert page.status_code == 200 and len(page.json) == 1
    assert pagination(page)["total"] == 5
    assert "status=success%2Cfailed%2Cskipped%2Cmissed" in links(page)["first"]


# --- users, teams, tokens, notifications, audit -----------------------------------------------------

def test_users_filter_by_role_team_and_text_and_are_admins_only(client, people):
    admin = people["admin"]
    ask = lambda query: client.get(f"/api/v1/users?{query}", headers=admin)  # noqa: E731
    assert [u["email"] for u in ask("role=job_creator").json] == ["alice@example.com", "bob@example.com"]
    assert [u["email"] for u in ask(f"team={people['team_data']}").json] == ["alice@example.com", "vera@example.com"]
    assert [u["email"] for u in ask("q=VER").json] == ["vera@example.com"]
    assert [u["email"] for u in ask("sort=-email&page_size=2").json] == ["vera@example.com", "bob@example.com"]
    assert links(ask("page_size=2"))["last"].endswith("page=2")
    bad = ask("role=owner")
    assert bad.status_code == 422 and "admin, job_creator, team_viewer" in bad.json["errors"]["json"]["role"][0]
    assert ask("sort=password").status_code == 422
    # And a job creator may not list users at all
    assert client.get("/api/v1/users", headers=people["alice"]).status_code == 403


def test_teams_tokens_and_audit_lists_are_paginated(app, client, people):
    admin = people["admin"]
    # Given two more teams and three more tokens of Alice's
    for name in ("ops", "sales"):
        assert client.post("/api/v1/teams", json={"name": name}, headers=admin).status_code == 201
    for n in range(3):
        assert client.post("/api/v1/tokens", json={"name": f"ci-{n}"}, headers=people["alice"]).status_code == 201
    # When each list is paged / Then pages, totals and links agree
    teams = client.get("/api/v1/teams?page_size=3", headers=admin)
    assert [t["name"] for t in teams.json] == ["data", "ops", "sales"] and pagination(teams)["total"] == 4
    assert [t["name"] for t in client.get("/api/v1/teams?q=A", headers=admin).json] == ["data", "sales"]
    tokens = client.get("/api/v1/tokens?page_size=2&page=2", headers=people["alice"])
    assert [t["name"] for t in tokens.json] == ["ci-0", "test"] and pagination(tokens)["total"] == 4
    assert set(links(tokens)) == {"first", "prev", "last"}
    with app.app_context():
        audit_total = db.session.scalar(select(func.count()).select_from(AuditLog))
    audit = client.get("/api/v1/audit-logs?page_size=1&resource_type=team", headers=admin)
    assert pagination(audit)["total"] == 2 < audit_total  # the two teams made through the API
    assert "resource_type=team" in links(audit)["next"] and links(audit)["next"].endswith("page=2")
    assert client.get("/api/v1/teams?page_size=0", headers=admin).status_code == 422


def test_notifications_of_a_job_are_paginated_newest_first(app, client, people):
    # Given a job with three notifications
    job_id = make_job(client, people["alice"], "notified")
    now = datetime.now(timezone.utc)
    with app.app_context():
        for n in range(3):
            db.session.add(Notification(job_id=uuid.UUID(job_id), event=f"e{n}", channel="email", recipients=[],
                                        status="sent", attempts=1, next_attempt_at=now,
                                        created_at=now + timedelta(seconds=n)))
        db.session.commit()
    # When the first page of two is asked / Then it holds the newest two, with a next link
    page = client.get(f"/api/v1/jobs/{job_id}/notifications?page_size=2", headers=people["alice"])
    assert [n["event"] for n in page.json] == ["e2", "e1"] and pagination(page)["total"] == 3
    assert links(page)["next"].endswith("page_size=2&page=2")
    # And Bob cannot tell the job exists
    assert client.get(f"/api/v1/jobs/{job_id}/notifications", headers=people["bob"]).status_code == 404


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_listing_changes_nothing(app, client, people):
    # Given a job / When every list is read / Then no row of anything is added
    make_job(client, people["admin"], "one")
    before = {m: _count(app, m) for m in (Job, AuditLog, User, Team)}
    for url in ("/api/v1/jobs", "/api/v1/users", "/api/v1/teams", "/api/v1/tokens", "/api/v1/audit-logs"):
        assert client.get(url, headers=people["admin"]).status_code == 200
    assert {m: _count(app, m) for m in before} == before


def test_audit_rows_filter_by_actor_action_object_type_and_time(client, people):
    # Given Alice created a job and the admin created a team
    make_job(client, people["alice"], "audited")
    assert client.post("/api/v1/teams", json={"name": "ops"}, headers=people["admin"]).status_code == 201
    ask = lambda query: client.get(f"/api/v1/audit-logs?{query}", headers=people["admin"])  # noqa: E731
    actions = lambda response: [row["action"] for row in response.json]  # noqa: E731
    # When the trail is filtered by who acted (email in any case, or id) / Then only their rows come
    assert actions(ask("actor=ALICE@example.com")) == ["job_created"]
    assert actions(ask(f"actor={people['alice_id']}")) == ["job_created"]
    # And by action and object type
    assert actions(ask("action=team_created")) == ["team_created"]
    assert actions(ask("resource_type=job&actor=admin")) == []
    # And by time: everything is after an hour ago, nothing before it
    hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat().replace("+", "%2B")
    assert pagination(ask(f"since={hour_ago}"))["total"] == pagination(ask(""))["total"] > 0
    assert actions(ask(f"until={hour_ago}")) == []
    # And a time without an offset is refused, naming the field
    naive = ask("since=2026-11-28T00:00:00")
    assert naive.status_code == 422 and "since" in naive.json["errors"]["query"]
