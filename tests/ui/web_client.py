"""Signing in to the web UI with the Flask test client, as a browser does with an API token, and
making users who can sign in."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from app.models import User
from app.services import api_tokens, users
from app.services.actors import SYSTEM

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    return _CSRF.search(html).group(1)


def signed_in(app: Flask, token: str) -> FlaskClient:
    """A test client signed in with ``token`` (the sign-in page's token form); it asks for HTML."""
    web = app.test_client()
    web.environ_base["HTTP_ACCEPT"] = "text/html"
    page = web.get("/login")
    response = web.post("/login/token", data={"token": token, "csrf_token": csrf_of(page.text)})
    assert response.status_code in (302, 303), response.text
    return web


def make_user(email: str, role: str, *, team_id=None) -> tuple[User, str]:
    """A user made by Jobplane itself, with an API token to sign in with (inside an app context)."""
    user = users.create_user(actor=SYSTEM, email=email, role=role, team_id=team_id)
    _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="web")
    return user, token


def browser_sign_in(page, base_url: str, token: str) -> None:
    """Sign a real browser in with ``token`` on the sign-in page; returns once a page shows who is in."""
    page.goto(base_url + "/login")
    page.fill("#token", token)
    page.click('button[type="submit"]')
    page.wait_for_selector("#whoami")
