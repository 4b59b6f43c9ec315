"""Look and feel in a real browser (Debian's Chromium): dark mode from the system and from the
toggle, timestamps in the viewer's time zone with UTC on hover, labelled keyboard-usable forms,
a loading state while HTMX works, and no inline script or style that the CSP would block."""

from __future__ import annotations

import re

import pytest

from app.extensions import db
from app.services import users
from tests.conftest import ADMIN_TOKEN
from tests.ui.web_client import browser_sign_in


@pytest.fixture
def server(live_server):
    web = live_server()
    with web.app.app_context():
        users.bootstrap_admin(token=ADMIN_TOKEN)
        db.session.commit()
    return web


def _signed_in_page(browser, server, **context_options):
    context = browser.new_context(**context_options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    browser_sign_in(page, server.url, ADMIN_TOKEN)
    page.problems = problems
    return page


def _background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(browser, server):
    page = _signed_in_page(browser, server, color_scheme="dark")
    page.goto(server.url + "/jobs")
    dark = _background(page)
    assert dark == "rgb(18, 21, 27)"
    page.click("#theme-toggle")
    assert _background(page) == "rgb(244, 245, 248)"
    page.reload()
    assert _background(page) == "rgb(244, 245, 248)"  # the choice outlives the page
    page.click("#theme-toggle")
    assert _background(page) == dark
    assert page.problems == []  # nothing refused by the CSP, no script error
    page.context.close()


def test_timestamps_show_in_the_viewers_zone_with_utc_on_hover(browser, server):
    # The page formats in the viewer's locale: en-GB shows a 24-hour clock (en-US, the default,
    # would show "01:24 PM" for 13:24, and the hour check below would depend on the time of day).
    page = _signed_in_page(browser, server, timezone_id="Asia/Tokyo", locale="en-GB")
    page.goto(server.url + "/jobs/new")
    page.fill("#name", "tokyo-report")
    page.fill("#script", "echo hi")
    page.fill("#schedule", "0 3 * * *")
    page.click("#save-job")
    page.wait_for_selector("#job-name")
    stamp = page.locator("#configuration time").first
    utc = stamp.get_attribute("title")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", utc)
    utc_hour = int(utc[11:13])
    shown = stamp.text_content()
    assert "UTC" not in shown and f"{(utc_hour + 9) % 24:02d}:" in shown  # Tokyo is UTC+9
    page.context.close()


def test_every_form_field_has_a_label_and_the_form_works_from_the_keyboard(browser, server):
    page = _signed_in_page(browser, server)
    page.goto(server.url + "/jobs/new")
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('#job-form input, #job-form select, #job-form textarea')]
        .filter(el => el.type !== 'hidden')
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
        .map(el => el.name)""")
    assert unlabelled == []
    # Tab from the name field onward reaches the type field and the save button without a mouse
    page.focus("#name")
    page.keyboard.type("keyboard-job")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "job_type"
    page.fill("#script", "echo typed")
    page.focus("#save-job")
    page.keyboard.press("Enter")
    page.wait_for_selector("#job-name")
    assert page.text_content("#job-name") == "keyboard-job"
    page.context.close()


def test_a_slow_request_shows_the_loading_state(browser, server):
    page = _signed_in_page(browser, server)
    page.goto(server.url + "/jobs/new")
    # hold the cron helper's request, as a slow server would
    held = []
    page.route("**/jobs/schedule-preview*", lambda route: held.append(route))
    page.fill("#schedule", "0 4 * * *")
    page.wait_for_selector("#loading.htmx-request")
    assert page.evaluate("getComputedStyle(document.getElementById('loading')).opacity") != "0"
    held[0].continue_()
    page.wait_for_selector("#loading.htmx-request", state="detached")
    page.context.close()
