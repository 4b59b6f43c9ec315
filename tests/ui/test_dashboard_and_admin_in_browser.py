"""The dashboard and the admin pages in a real browser (Debian's Chromium through Playwright): each
renders under the page's Content Security Policy, and a screenshot of each is kept as a test
artifact in ``test-artifacts/`` at the repository root (git-ignored)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from app.extensions import db
from app.models import Execution
from app.services import jobs, teams
from app.services.actors import SYSTEM, Actor
from tests.conftest import ADMIN_TOKEN
from tests.ui.artifacts import ARTIFACTS, screenshot
from tests.ui.web_client import make_user



def _seed(app) -> None:
    """A team, two users, three jobs and two weeks of runs, so every panel has something to show."""
    from app.services import users

    with app.app_context():
        users.bootstrap_admin(token=ADMIN_TOKEN)
        team = teams.create_team(actor=SYSTEM, name="Data")
        ana, _ = make_user("ana@example.test", "job_creator", team_id=team.id)
        make_user("ben@example.test", "team_viewer", team_id=team.id)
        now = datetime.now(UTC)
        # each day's runs at 01:00 UTC and after, so every one of them falls on its own chart day
        first_hour = datetime.combine(now.date(), time(1), tzinfo=UTC)
        for index, (name, schedule) in enumerate((("nightly-etl", "0 3 * * *"), ("hourly-sync", "15 * * * *"),
                                                  ("reports", "*/10 * * * *"))):
            job = jobs.create_job(actor=Actor(user=ana), data={"name": name, "job_type": "bash", "script": "true",
                                                               "schedule": schedule})
            for day in range(14):
                for run in range(2 + (day + index) % 3):
                    failed = (day + run + index) % 4 == 0
                    fired = first_hour - timedelta(days=day) + timedelta(minutes=10 * run)
                    db.session.add(Execution(job_id=job.id, scheduled_for=fired, started_at=fired,
                                             status="failed" if failed else "success",
                                             duration_seconds=5.0 + 40 * index + run))
        db.session.add(Execution(job_id=job.id, scheduled_for=now - timedelta(seconds=30), status="running",
                                 started_at=now - timedelta(seconds=29)))
        db.session.commit()


def test_an_admin_opens_the_dashboard_and_every_admin_page(live_server, page):
    # Given a Jobplane with a team, users, jobs and two weeks of runs
    server = live_server()
    _seed(server.app)
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
    # When the admin signs in with their token
    page.goto(server.url + "/")
    page.fill("#token", ADMIN_TOKEN)
    page.click('button[type="submit"]')
    # Then they land on the dashboard, with its figures, its chart and every admin page in the navigation
    page.wait_for_url(server.url + "/dashboard")
    assert page.text_content("#running-count .value") == "1"
    assert page.locator("#runs-chart rect.ok").count() == 14
    assert page.locator('#runs-chart rect.bad:not([height="0.0"])').count() > 0  # failures are drawn
    assert page.locator("#next-fires tbody tr").count() == 3
    for label in ("Users", "Teams", "Audit log"):
        assert page.locator("nav[aria-label=Main] a", has_text=label).count() == 1
    screenshot(page, "dashboard")
    # And within 10 s the browser refreshes "running now" by itself, that panel only
    with page.expect_response(lambda r: r.request.headers.get("hx-target") == "running-now",
                              timeout=15_000) as refresh:
        pass
    assert refresh.value.status == 200 and page.locator("#running tbody tr").count() == 1

    # When they open each admin page from the navigation
    for label, path, marker, shot in (("Users", "/admin/users", "#users", "admin-users.png"),
                                      ("Teams", "/admin/teams", "#teams", "admin-teams.png"),
                                      ("Audit log", "/admin/audit", "#audit", "admin-audit.png")):
        page.click(f"nav[aria-label=Main] a:has-text('{label}')")
        page.wait_for_url(server.url + path)
        # Then each shows its table, and is kept as a screenshot
        assert page.locator(f"{marker} tbody tr").count() > 0
        screenshot(page, shot.removesuffix(".png"))

    # And a refused form shows its error beside the field, in the browser too
    page.goto(server.url + "/admin/users")
    page.fill("#email", "not-an-email")
    page.click("#create-user")
    page.wait_for_selector("#email-error")
    assert "must be an email address" in page.text_content("#email-error")
    screenshot(page, "admin-users-error")
    # And no page broke the Content Security Policy (the browser logs every refusal as an error)
    assert not [text for text in refused if "Content Security Policy" in text], refused
    for shot in ("dashboard.png", "admin-users.png", "admin-teams.png", "admin-audit.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000
