"""A real browser for the tests: Playwright driving Debian's Chromium (/usr/bin/chromium).

It stands in for a person signing in to Jobplane through Azure AD's pages (here, the pages of
the OIDC provider in tests/oidc.py). Playwright cannot download its own browser builds on these
machines, so ``scripts/ensure-test-services.sh`` installs Debian's ``chromium`` and every launch
names it. Name resolution is switched off for every host but localhost, so a page that links to
the internet (the provider's pages import a web font) fails fast instead of reaching out.

Import into conftest.py with ``from tests.browser import browser, page``.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, as Playwright's Browser."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the session; tests get isolated cookies from ``page``."""
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser):
    """A page in a fresh browser context (no cookies from other tests), 15 s default timeout."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()
