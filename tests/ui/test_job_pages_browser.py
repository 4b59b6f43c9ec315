"""The job pages in a real browser (Playwright, Debian's Chromium) against a real server, a real
Dramatiq worker running the scripts, PostgreSQL and Redis: create a job through the form (a bad
cron first), run it and watch its log arrive live, see a failure's error, meet a stale-version
conflict, and look at the pages as a team viewer.  Screenshots of each page go to
``test-artifacts/``."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.extensions import db
from app.models import Job, Team, User
from app.services import jobs, users
from app.services.actors import Actor
from tests.conftest import ADMIN_TOKEN
from tests.secrets.helpers import make_user
from tests.ui.artifacts import screenshot
from tests.ui.web_client import browser_sign_in

#: prints three green lines a second apart, so the test sees lines arrive while the run is active
SLOW_GREEN_SCRIPT = "for i in 1 2 3; do printf '\\033[32mline %s\\033[0m\\n' \"$i\"; sleep 1; done"


@pytest.fixture
def server(live_server, processes):
    """A web server and one worker on the same database and Redis, with the bootstrap admin."""
    web = live_server()
    with web.app.app_context():
        users.bootstrap_admin(token=ADMIN_TOKEN)
        db.session.commit()
    processes.worker()
    return web


def _sign_in(page, server, token: str = ADMIN_TOKEN) -> None:
    browser_sign_in(page, server.url, token)


def _fill_new_job(page, *, name: str, script: str, schedule: str) -> None:
    page.fill("#name", name)
    page.fill("#script", script)
    page.fill("#schedule", schedule)
    page.fill("#timezone", "Europe/Berlin")


def test_create_a_job_through_the_form_run_it_and_watch_its_log_live(server, page):
    _sign_in(page, server)
    page.click("nav >> text=Jobs")
    screenshot(page, "jobs-list-empty")
    page.click("#new-job")

    # Given a form with a cron expression that cannot be
    _fill_new_job(page, name="green-lines", script=SLOW_GREEN_SCRIPT, schedule="61 * * * *")
    # the cron helper says so while typing
    page.wait_for_selector("#cron-preview .field-error")
    page.click("#save-job")
    # Then the form comes back with the error under the field, and nothing was created
    assert "higher than the maximum value (59)" in page.text_content("#schedule-error")
    assert page.input_value("#name") == "green-lines"
    with server.app.app_context():
        assert db.session.scalar(select(Job.id)) is None

    # When the schedule is fixed (a preset), the helper describes it and lists five fire times
    page.click("text=Weekdays 09:00")
    page.wait_for_selector("#next-fires li:nth-child(5)")
    assert "At 09:00, Monday through Friday" in page.text_content("#cron-description")
    screenshot(page, "job-form")
    page.click("#save-job")
    page.wait_for_selector("#job-name")
    assert page.text_content("#job-name") == "green-lines"
    screenshot(page, "job-page")

    # When it is run now, its execution page shows the lines while it runs, in colour
    page.click("#run-now")
    page.wait_for_url(re.compile(r".*/executions/[0-9a-f-]+$"))
    page.wait_for_selector("#log :text('line 1')")
    assert page.text_content("#run-status").strip() in ("queued", "running")  # still going
    coloured = page.locator("#log span", has_text="line 1").first
    assert coloured.evaluate("el => getComputedStyle(el).color") != page.locator("#log").evaluate(
        "el => getComputedStyle(el).color")
    assert "[32m" not in page.text_content("#log")
    # Then the status turns to success with every line shown once
    expect(page.locator("#run-status")).to_have_text("success", timeout=30_000)
    log = page.text_content("#log")
    assert [log.count(f"line {i}") for i in (1, 2, 3)] == [1, 1, 1]
    screenshot(page, "execution-page-of-a-new-job")


def test_a_failing_job_shows_its_error_on_its_pages(server, page):
    with server.app.app_context():
        admin = db.session.scalar(select(User).where(User.email == "admin"))
        job = jobs.create_job(actor=Actor(user=admin), data={
            "name": "broken-export", "job_type": "bash", "schedule": None,
            "script": "echo 'connecting to warehouse'; echo 'warehouse refused the login' >&2; exit 3"})
        db.session.commit()
        job_id = job.id
    _sign_in(page, server)
    page.goto(f"{server.url}/jobs/{job_id}")
    page.click("#run-now")
    expect(page.locator("#run-status")).to_have_text("failed", timeout=30_000)
    assert "warehouse refused the login" in page.text_content("body")
    page.goto(f"{server.url}/jobs/{job_id}")
    row = page.locator("#history-table tbody tr").first
    assert "failed" in row.text_content() and "exited with code 3" in row.text_content()
    assert "warehouse refused the login" in row.text_content()
    screenshot(page, "job-page-failed")


def test_an_edit_over_a_newer_version_shows_the_conflict(server, page):
    _sign_in(page, server)
    page.goto(server.url + "/jobs/new")
    _fill_new_job(page, name="report", script="echo report", schedule="0 6 * * *")
    page.click("#save-job")
    page.wait_for_selector("#job-name")
    page.click("#edit-job")
    # Given someone else saves the job while this form is open
    with server.app.app_context():
        admin = db.session.scalar(select(User).where(User.email == "admin"))
        job = db.session.scalar(select(Job))
        jobs.update_job(actor=Actor(user=admin), job_id=job.id, data={"description": "theirs"}, partial=True,
                        expected_version=None)
        db.session.commit()
    # When this form is saved
    page.fill("#description", "mine")
    page.click("#save-job")
    # Then the conflict is shown plainly and the typed text is still there
    assert "someone changed this job" in page.text_content("#conflict")
    assert page.input_value("#description") == "mine"
    screenshot(page, "job-form-conflict")
    with server.app.app_context():
        assert db.session.scalar(select(Job.description)) == "theirs"


def test_a_team_viewer_sees_no_edit_controls_and_is_refused_the_edit_page(server, page):
    with server.app.app_context():
        team = Team(name="analytics")
        db.session.add(team)
        db.session.flush()
        owner, _ = make_user("owner@example.com", "job_creator", team.id)
        _, viewer_token = make_user("viewer@example.com", "team_viewer", team.id)
        job = jobs.create_job(actor=Actor(user=owner), data={"name": "team-report", "job_type": "bash",
                                                             "script": "echo hi", "schedule": "0 7 * * *"})
        job.team_id = team.id
        db.session.commit()
        job_id = job.id
    _sign_in(page, server, viewer_token)
    page.goto(server.url + "/jobs")
    assert page.locator("#new-job").count() == 0
    page.click("text=team-report")
    page.wait_for_selector("#job-name")
    for control in ("#edit-job", "#run-now", "#delete-job", "#pause-job", "#secrets"):
        assert page.locator(control).count() == 0, control
    screenshot(page, "job-page-team-viewer")
    response = page.goto(f"{server.url}/jobs/{job_id}/edit")
    assert response.status == 403
    assert "owner or an admin" in page.text_content("#error-page")
