"""The execution page in a real browser (Debian's Chromium through Playwright) while a real job runs
on a real Dramatiq worker: its lines appear live with their ANSI colours, stderr marked, a dropped
connection resumes from the last line, then the status turns to success and the facts refresh;
where websockets cannot open, the page polls."""

from __future__ import annotations


import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.services.actors import Actor
from tests.secrets.helpers import make_job, make_user
from tests.ui.artifacts import screenshot
from tests.ui.web_client import browser_sign_in

pytestmark = pytest.mark.timeout(120)


#: prints coloured lines for about three seconds, with a warning on stderr each time
SCRIPT = r"""sleep 1
for i in 1 2 3 4 5 6; do
  printf '\033[31mred %s\033[0m and \033[1;92mbold bright green\033[0m\n' "$i"
  echo "warning $i" >&2
  sleep 0.5
done
echo "<b>not markup</b>"
"""

#: what a proxy that refuses websocket upgrades looks like to the page: sockets close unopened
NO_WEBSOCKETS = """window.WebSocket = function () {
  var socket = this;
  setTimeout(function () { if (socket.onclose) { socket.onclose({code: 1006}); } }, 20);
};"""


@pytest.fixture
def running_job(live_server, processes):
    """A web server in the test, a real worker process, and a signed-in browser's way to run a job."""
    server = live_server()
    with server.app.app_context():
        owner, token = make_user("owner@example.test", "job_creator")
        job = make_job(Actor(user=owner), name="colourful", script=SCRIPT, job_type="bash")
        db.session.commit()
        job_id = job.id
    processes.worker()

    def start(page) -> str:
        browser_sign_in(page, server.url, token)
        run = server.app.test_client().post(f"/api/v1/jobs/{job_id}/run",
                                            headers={"Authorization": f"Bearer {token}"})
        assert run.status_code == 202, run.text
        page.goto(f"{server.url}/executions/{run.json['id']}")
        return run.json["id"]

    return start


def test_the_page_follows_a_running_job_live_with_colours_then_shows_success(running_job, page, processes):
    # Given a signed-in viewer on the page of a run that has just been queued
    running_job(page)
    # When the worker runs it, its first line appears while the run is still going
    page.wait_for_selector("#log .ansi-31", timeout=30_000)
    assert page.text_content("#run-status") == "running"
    assert page.text_content("#log-state") == "live"
    # Then colours are rendered as classes (the escape codes themselves never show) ...
    red = page.locator("#log .ansi-31").first
    assert red.text_content() == "red 1"
    assert red.evaluate("el => getComputedStyle(el).color") == "rgb(224, 108, 117)"
    green = page.locator("#log .ansi-92.ansi-bold").first
    assert green.text_content() == "bold bright green"
    assert green.evaluate("el => getComputedStyle(el).fontWeight") == "700"
    assert page.locator("#log .stderr").first.text_content() == "warning 1\n"
    # When the connection drops mid-run, the page says so and reconnects from its last line
    page.evaluate("window.jobplaneLiveLog.socket.close()")
    expect(page.locator("#log-state")).to_have_text("reconnecting")
    expect(page.locator("#log-state")).to_have_text("live")
    # ... and when it ends, the badge turns to success, the socket is done, and the facts refresh
    expect(page.locator("#run-status")).to_have_text("success", timeout=30_000)
    assert page.text_content("#log-state") == "finished"
    expect(page.locator("#exit-code")).to_have_text("0")  # the facts, fetched again
    assert page.text_content("#duration").strip() != "—"
    log = page.text_content("#log")
    assert "\x1b" not in log and "[31m" not in log
    # every line once, in order, across the reconnect
    assert page.locator("#log .ansi-31").all_text_contents() == [f"red {i}" for i in range(1, 7)]
    assert page.locator("#log .stderr").all_text_contents() == [f"warning {i}\n" for i in range(1, 7)]
    assert "<b>not markup</b>" in log and page.locator("#log b").count() == 0  # text, never HTML
    screenshot(page, "execution-page")
    # And following can be paused and resumed
    page.click("#log-follow")
    assert page.get_attribute("#log-follow", "aria-pressed") == "false"
    page.click("#log-follow")
    assert page.get_attribute("#log-follow", "aria-pressed") == "true"


def test_where_websockets_cannot_open_the_page_polls_and_still_follows_the_run(running_job, page):
    # Given a browser whose websockets close before they open (a proxy that refuses upgrades)
    page.add_init_script(NO_WEBSOCKETS)
    running_job(page)
    # When the run goes on, the page falls back to polling and its lines still arrive
    page.wait_for_selector("#log .ansi-31", timeout=30_000)
    assert page.text_content("#log-state") == "polling"
    # Then it ends with the full log, each line once, and the final status
    expect(page.locator("#run-status")).to_have_text("success", timeout=30_000)
    expect(page.locator("#log-state")).to_have_text("finished")
    assert page.locator("#log .ansi-31").all_text_contents() == [f"red {i}" for i in range(1, 7)]
    assert page.locator("#log .stderr").all_text_contents() == [f"warning {i}\n" for i in range(1, 7)]
