"""The first start of any process creates the admin; later starts change nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from app.bootstrap import ensure_admin
from app.extensions import db
from app.models import ApiToken, User
from app.services import api_tokens, users


def test_bootstrap_creates_one_admin_with_the_given_token(app, client):
    app.config["BOOTSTRAP_ADMIN_TOKEN"] = "jp_from_the_environment_123"
    assert ensure_admin(app) == "jp_from_the_environment_123"
    assert ensure_admin(app) is None  # a second process start creates nothing
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
        stored = db.session.scalar(select(ApiToken.token_hash))
        assert stored == api_tokens.hash_token("jp_from_the_environment_123")  # only the hash is kept
    response = client.get("/api/v1/jobs", headers={"Authorization": "Bearer jp_from_the_environment_123"})
    assert response.status_code == 200


def test_without_a_configured_token_a_random_one_is_made(app):
    token = ensure_admin(app)
    assert token.startswith("jp_") and len(token) > 30
