"""The job pages through the Flask test client: the form (inline errors, conflict, webhooks kept
secret), the job page's controls per role, the cron helper, secrets, pause/resume/delete and the
test notification.  The browser flow is in ``test_job_pages_browser.py``."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, Execution, Job, JobSecret, Notification, Team
from app.services.actors import Actor
from tests.conftest import ADMIN_TOKEN
from tests.secrets.helpers import make_job, make_user
from tests.ui.web_client import csrf_of, signed_in

FORM = {"name": "nightly-report", "description": "", "job_type": "bash", "script": "echo hi\n", "when": "cron",
        "schedule": "30 2 * * *", "timezone": "Europe/Berlin", "run_at": "", "start_at": "", "end_at": "",
        "misfire_policy": "run_latest", "max_lateness_seconds": "3600", "timeout_minutes": "15",
        "timeout_seconds": "", "max_retries": "2", "retry_delay_minutes": "1", "concurrency_policy": "forbid",
        "max_concurrent": "", "cpu_limit": "1", "memory_limit_mb": "512", "network_enabled": "on",
        "env": "REGION=eu\n# a comment\nMODE=full", "notification_emails": "ops@example.com, dev@example.com",
        "notification_slack_webhook": "", "notification_webhook_url": "", "notify_on": ["job_failed", "job_timeout"]}


class Browser:
    """A signed-in test client that sends the page's CSRF token with every form, as a browser does."""

    def __init__(self, app, token: str):
        self.client = signed_in(app, token)
        self.csrf = csrf_of(self.client.get("/jobs").text)

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, **kwargs):
        return self.client.post(path, data={**(data or {}), "csrf_token": self.csrf}, **kwargs)


@pytest.fixture
def as_admin(app, admin) -> Browser:
    return Browser(app, ADMIN_TOKEN)


@pytest.fixture
def people(app, admin):
    """A job creator who owns a job, a team viewer of the same team, and a stranger."""
    with app.app_context():
        team = Team(name="data")
        db.session.add(team)
        db.session.flush()
        creator, creator_token = make_user("creator@example.com", "job_creator", team.id)
        _, viewer_token = make_user("viewer@example.com", "team_viewer", team.id)
        _, stranger_token = make_user("stranger@example.com", "job_creator")
        job = make_job(Actor(user=creator), name="team-export", schedule="0 3 * * *")
        job.team_id = team.id
        db.session.commit()
        return {"creator": creator_token, "viewer": viewer_token, "stranger": stranger_token, "job_id": job.id}


def _job_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Job))


def test_a_bad_cron_is_named_under_its_field_and_nothing_is_created(app, as_admin):
    # Given the new job form filled in with a cron expression that has 6 words too many
    # When it is submitted
    response = as_admin.post("/jobs/new", {**FORM, "schedule": "*/5 * * * * * * *"})
    # Then the form comes back with the error under the schedule field and the input kept
    assert response.status_code == 422
    assert 'id="schedule-error"' in response.text and 'aria-invalid="true"' in response.text
    assert 'value="*/5 * * * * * * *"' in response.text and "nightly-report" in response.text
    assert _job_count(app) == 0


def test_text_that_is_not_a_number_is_named_without_asking_the_services(app, as_admin):
    response = as_admin.post("/jobs/new", {**FORM, "timeout_minutes": "soon", "max_retries": "9"})
    assert response.status_code == 422
    assert re.search(r'id="timeout_minutes-error">must be a whole number', response.text)
    assert _job_count(app) == 0


def test_a_valid_form_creates_the_job_with_every_field_as_typed(app, as_admin):
    # When a valid form is submitted
    response = as_admin.post("/jobs/new", {**FORM, "start_at": "2030-01-01T00:00"})
    # Then the job exists with the typed values and the browser goes to its page
    assert response.status_code == 303
    with app.app_context():
        job = db.session.scalar(select(Job))
        assert response.headers["Location"] == f"/jobs/{job.id}"
        assert (job.schedule, job.timezone, job.timeout_minutes, job.max_retries) == ("30 2 * * *", "Europe/Berlin", 15, 2)
        assert job.env == {"REGION": "eu", "MODE": "full"}
        assert job.notification_emails == ["ops@example.com", "dev@example.com"]
        assert job.notify_on == ["job_failed", "job_timeout"]
        # a datetime-local value is a wall-clock time in the job's timezone
        assert job.start_at == datetime(2030, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
        assert job.description is None and job.network_enabled is True
    page = as_admin.get(response.headers["Location"])
    assert "nightly-report" in page.text and "At 02:30" in page.text


def test_the_form_chooses_the_executor_and_image_and_names_a_bad_image(app, as_admin):
    # Given a job left to the cluster default, then moved to Kubernetes with its own image
    response = as_admin.post("/jobs/new", {**FORM, "executor": "default", "image": ""})
    assert response.status_code == 303
    with app.app_context():
        job = db.session.scalar(select(Job))
        assert (job.executor, job.image) == (None, None)
    edit = as_admin.get(f"/jobs/{job.id}/edit")
    version = re.search(r'name="version" value="(\d+)"', edit.text).group(1)
    response = as_admin.post(f"/jobs/{job.id}/edit", {**FORM, "version": version, "executor": "kubernetes",
                                                       "image": "registry.example.com/ops/runner:2"})
    assert response.status_code == 303, response.text
    with app.app_context():
        job = db.session.get(Job, job.id)
        assert (job.executor, job.image) == ("kubernetes", "registry.example.com/ops/runner:2")
    assert "registry.example.com/ops/runner:2" in as_admin.get(f"/jobs/{job.id}").text
    # When an image is no image reference, the form names the field
    response = as_admin.post("/jobs/new", {**FORM, "executor": "kubernetes", "image": "not an image!"})
    assert response.status_code == 422
    assert 'id="image-error"' in response.text


def test_a_one_time_job_needs_its_time(app, as_admin):
    response = as_admin.post("/jobs/new", {**FORM, "when": "once", "run_at": ""})
    assert response.status_code == 422 and 'id="run_at-error"' in response.text
    created = as_admin.post("/jobs/new", {**FORM, "when": "once", "run_at": "2031-06-01T08:00"})
    assert created.status_code == 303
    with app.app_context():
        job = db.session.scalar(select(Job))
        assert job.schedule is None and job.run_at == datetime(2031, 6, 1, 8, tzinfo=ZoneInfo("Europe/Berlin"))


def test_an_edit_over_a_newer_version_is_refused_plainly_and_keeps_the_input(app, as_admin):
    # Given a job that someone changed after this form was opened
    as_admin.post("/jobs/new", FORM)
    with app.app_context():
        job_id = db.session.scalar(select(Job.id))
    form_page = as_admin.get(f"/jobs/{job_id}/edit")
    assert 'name="version" value="1"' in form_page.text
    assert as_admin.post(f"/jobs/{job_id}/edit", {**FORM, "version": "1", "description": "first"}).status_code == 303
    # When the stale form is saved
    stale = as_admin.post(f"/jobs/{job_id}/edit", {**FORM, "version": "1", "script": "echo mine\n"})
    # Then it is refused, says so, keeps the typed script, and the job stays as the first save left it
    assert stale.status_code == 409
    assert 'id="conflict"' in stale.text and "version 2" in stale.text and "echo mine" in stale.text
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert (job.version, job.description, job.script) == (2, "first", "echo hi\n")


def test_a_stored_webhook_is_never_sent_back_kept_when_left_empty_and_removed_on_request(app, as_admin):
    hook = "https://hooks.slack.com/services/T000/B000/very-secret-part"
    as_admin.post("/jobs/new", {**FORM, "notification_slack_webhook": hook})
    with app.app_context():
        job_id = db.session.scalar(select(Job.id))
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/edit"):
        assert "very-secret-part" not in as_admin.get(path).text
    as_admin.post(f"/jobs/{job_id}/edit", {**FORM, "version": "1", "description": "kept"})
    with app.app_context():
        assert db.session.get(Job, job_id).notification_slack_webhook == hook
    as_admin.post(f"/jobs/{job_id}/edit", {**FORM, "version": "2", "remove_notification_slack_webhook": "on"})
    with app.app_context():
        assert db.session.get(Job, job_id).notification_slack_webhook is None


def test_a_team_viewer_sees_the_job_without_controls_and_cannot_edit(app, people):
    viewer = Browser(app, people["viewer"])
    job_id = people["job_id"]
    page = viewer.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "team-export" in page.text
    for control in ('id="edit-job"', 'id="run-now"', 'id="delete-job"', 'id="pause-job"', 'id="secrets"',
                    'id="send-test-notification"'):
        assert control not in page.text
    assert viewer.get(f"/jobs/{job_id}/edit").status_code == 403
    assert viewer.post(f"/jobs/{job_id}/edit", {**FORM, "version": "1"}).status_code == 403
    assert viewer.post(f"/jobs/{job_id}/pause").status_code == 403
    assert viewer.get("/jobs/new").status_code == 403
    with app.app_context():
        assert db.session.get(Job, job_id).status == "active"


def test_someone_outside_the_team_gets_not_found(app, people):
    stranger = Browser(app, people["stranger"])
    assert stranger.get(f"/jobs/{people['job_id']}").status_code == 404
    assert "team-export" not in stranger.get("/jobs").text


def test_the_owner_sees_the_controls(app, people):
    page = Browser(app, people["creator"]).get(f"/jobs/{people['job_id']}")
    for control in ('id="edit-job"', 'id="run-now"', 'id="delete-job"', 'id="pause-job"', 'id="secrets"'):
        assert control in page.text


def test_the_cron_helper_describes_and_lists_the_next_five_fire_times(app, as_admin):
    preview = as_admin.get("/jobs/schedule-preview", query_string={"schedule": "0 9 * * 1-5",
                                                                   "timezone": "America/New_York"},
                           headers={"HX-Request": "true"})
    assert preview.status_code == 200
    assert "At 09:00, Monday through Friday" in preview.text
    assert len(re.findall(r"<li><span class=\"mono\">\S+ 09:00</span> <span class=\"muted\">\(1[34]:00 UTC\)", preview.text)) == 5
    wrong_cron = as_admin.get("/jobs/schedule-preview", query_string={"schedule": "61 * * * *", "timezone": "UTC"})
    assert wrong_cron.status_code == 200 and "schedule: " in wrong_cron.text and "<li>" not in wrong_cron.text
    wrong_zone = as_admin.get("/jobs/schedule-preview", query_string={"schedule": "0 * * * *", "timezone": "Mars/Base"})
    assert "timezone: unknown timezone" in wrong_zone.text


def test_pause_resume_and_delete_from_the_job_page(app, as_admin):
    as_admin.post("/jobs/new", FORM)
    with app.app_context():
        job_id = db.session.scalar(select(Job.id))
    assert as_admin.post(f"/jobs/{job_id}/pause").status_code == 303
    assert 'id="resume-job"' in as_admin.get(f"/jobs/{job_id}").text
    assert as_admin.post(f"/jobs/{job_id}/resume").status_code == 303
    # a delete from a page showing an old version is refused
    shown = re.search(r'name="version" value="(\d+)"', as_admin.get(f"/jobs/{job_id}").text).group(1)
    as_admin.post(f"/jobs/{job_id}/edit", {**FORM, "version": shown, "description": "changed"})
    assert as_admin.post(f"/jobs/{job_id}/delete", {"version": shown}).headers["Location"] == f"/jobs/{job_id}"
    with app.app_context():
        assert db.session.get(Job, job_id).status == "active"
    current = re.search(r'name="version" value="(\d+)"', as_admin.get(f"/jobs/{job_id}").text).group(1)
    assert int(current) > int(shown)
    deleted = as_admin.post(f"/jobs/{job_id}/delete", {"version": current})
    assert deleted.headers["Location"] == "/jobs"
    with app.app_context():
        assert db.session.get(Job, job_id).status == "deleted"
        actions = set(db.session.scalars(select(AuditLog.action)))
    assert {"job_created", "job_paused", "job_resumed", "job_updated", "job_deleted"} <= actions
    assert as_admin.get(f"/jobs/{job_id}").status_code == 404


def test_secrets_are_set_and_removed_and_their_values_never_shown(app, as_admin):
    as_admin.post("/jobs/new", FORM)
    with app.app_context():
        job_id = db.session.scalar(select(Job.id))
    assert as_admin.post(f"/jobs/{job_id}/secrets", {"name": "DB_PASSWORD", "value": "hunter2-xyz"}).status_code == 303
    page = as_admin.get(f"/jobs/{job_id}")
    assert "DB_PASSWORD" in page.text and "hunter2-xyz" not in page.text
    bad = as_admin.post(f"/jobs/{job_id}/secrets", {"name": "not a name", "value": "x"}, follow_redirects=True)
    assert "Secret not saved: name: " in bad.text
    as_admin.post(f"/jobs/{job_id}/secrets/DB_PASSWORD/delete")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(JobSecret)) == 0


def test_a_test_notification_needs_a_channel_and_is_queued_for_each(app, as_admin):
    as_admin.post("/jobs/new", {**FORM, "notification_emails": ""})
    with app.app_context():
        job_id = db.session.scalar(select(Job.id))
    refused = as_admin.post(f"/jobs/{job_id}/notifications/test", follow_redirects=True)
    assert "No test sent" in refused.text
    as_admin.post(f"/jobs/{job_id}/edit", {**FORM, "version": "1"})
    sent = as_admin.post(f"/jobs/{job_id}/notifications/test", follow_redirects=True)
    assert "Test notification queued for email" in sent.text and 'id="deliveries"' in sent.text
    with app.app_context():
        rows = db.session.scalars(select(Notification)).all()
    assert [(row.event, row.channel) for row in rows] == [("test", "email")]


def test_pages_of_unknown_jobs_are_html_404s(app, as_admin):
    missing = as_admin.get("/jobs/00000000-0000-0000-0000-000000000000", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and 'id="error-page"' in missing.text


def test_the_job_list_filters_sorts_and_pages_as_the_api_does(app, as_admin):
    # Given 27 jobs: 26 bash "etl-NN" and one paused python "zeta"
    for number in range(26):
        as_admin.post("/jobs/new", {**FORM, "name": f"etl-{number:02d}"})
    as_admin.post("/jobs/new", {**FORM, "name": "zeta", "job_type": "python", "script": "print(1)"})
    with app.app_context():
        zeta = db.session.scalar(select(Job).where(Job.name == "zeta"))
    as_admin.post(f"/jobs/{zeta.id}/pause")
    # Then the first page holds 25, sorted by name, and says how many there are
    first = as_admin.get("/jobs", query_string={"sort": "name"})
    names = re.findall(r'<td><a href="/jobs/[0-9a-f-]+">([^<]+)</a></td>', first.text)
    assert names == [f"etl-{n:02d}" for n in range(25)] and "27 jobs · page 1 of 2" in first.text
    second = as_admin.get("/jobs", query_string={"sort": "name", "page": 2})
    assert re.findall(r'<td><a href="/jobs/[0-9a-f-]+">([^<]+)</a></td>', second.text) == ["etl-25", "zeta"]
    # filters: name search, status (paused), type; an HTMX request gets only the table
    found = as_admin.get("/jobs", query_string={"q": "ETL-1"}, headers={"HX-Request": "true", "HX-Target": "job-table"})
    assert "<html" not in found.text and len(re.findall(r'href="/jobs/[0-9a-f-]+">etl-1\d<', found.text)) == 10
    paused = as_admin.get("/jobs", query_string={"status": "disabled"})
    assert ">zeta<" in paused.text and "etl-" not in paused.text and ">paused<" in paused.text
    assert ">zeta<" in as_admin.get("/jobs", query_string={"job_type": "python"}).text
    # a hand-made bad sort is explained, and the list still shows
    bad = as_admin.get("/jobs", query_string={"sort": "colour"})
    assert bad.status_code == 200 and "unknown sort field" in bad.text, bad.text[bad.text.find("<main"):][:500]
    assert ">zeta<" in bad.text  # newest first, the default order


def test_the_job_page_shows_its_figures_and_charts(app, as_admin):
    # Given a job with three finished runs today: two successes (10 s and 30 s) and a failure
    as_admin.post("/jobs/new", FORM)
    with app.app_context():
        job = db.session.scalar(select(Job))
        now = datetime.now(ZoneInfo("UTC"))
        for minute, (status, seconds) in enumerate((("success", 10.0), ("success", 30.0), ("failed", 20.0))):
            fired = now.replace(hour=0, minute=minute)
            db.session.add(Execution(job_id=job.id, status=status, scheduled_for=fired, started_at=fired,
                                     completed_at=fired, duration_seconds=seconds, attempt=1))
        db.session.commit()
        job_id = job.id
    page = as_admin.get(f"/jobs/{job_id}").text
    stats = re.sub(r"\s+", " ", re.search(r'<div class="cards" id="job-stats">(.*?)</div>\s*<div class="grid">',
                                          page, re.S).group(1))
    assert "67%" in stats and ">3<" in stats and ">20 s<" in stats
    assert page.count('<rect class="ok"') == 30 and 'id="chart-duration"' in page
    assert "2 succeeded, 1 failed, 0 other" in page


def test_a_page_number_past_any_list_shows_an_empty_page_not_an_error(app, as_admin):
    as_admin.post("/jobs/new", FORM)
    with app.app_context():
        job_id = db.session.scalar(select(Job.id))
    huge = str(2**70)  # would overflow PostgreSQL's OFFSET
    for path in ("/jobs", f"/jobs/{job_id}", "/admin/audit", "/admin/users"):
        response = as_admin.get(path, query_string={"page": huge})
        assert response.status_code == 200, path
    bad_seq = as_admin.get(f"/executions/00000000-0000-0000-0000-000000000000/log/events",
                           query_string={"after_seq": huge})
    assert bad_seq.status_code == 422
