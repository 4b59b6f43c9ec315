"""The API accepts OIDC access tokens (JWTs) from the configured issuer — the real OIDC provider
of tests/oidc.py, standing in for Azure AD — and refuses forged, expired, not-yet-valid,
wrong-audience and wrong-issuer tokens with 401."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from app import create_app
from app.extensions import db
from app.services import users
from app.services.actors import SYSTEM
from tests.oidc import OidcProvider


def _app(settings, provider):
    return create_app({**settings, "OIDC_ISSUER": provider.issuer, "OIDC_CLIENT_ID": provider.client_id,
                       "OIDC_CLIENT_SECRET": provider.client_secret, "OIDC_API_AUDIENCE": provider.api_audience})


@pytest.fixture
def sso_app(app, settings, oidc_provider):  # app: empties the database first
    application = _app(settings, oidc_provider)
    with application.app_context():
        # the pipeline's service principal: its client id is the sub of its client-credentials tokens
        users.create_user(actor=SYSTEM, email="pipeline@example.test", role="job_creator",
                          oidc_issuer=oidc_provider.issuer, oidc_subject=oidc_provider.client_id)
        db.session.commit()
    yield application
    application.extensions["jobplane_db"].engine.dispose()


def _get_me(application, token: str):
    return application.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})


def _signed(provider, claims: dict, *, key=None, header: dict | None = None) -> str:
    """A token signed with the provider's own private key (or ``key``), with chosen claims."""
    private = key or RSAKey.import_key(provider.keys[0])
    now = int(time.time())
    body = {"iss": provider.issuer, "aud": provider.api_audience, "sub": provider.client_id,
            "iat": now, "exp": now + 300, **claims}
    return jwt.encode(header or {"alg": "RS256", "kid": provider.kid}, body, private)


def test_a_token_from_the_issuer_authenticates_its_linked_user(sso_app, oidc_provider):
    response = _get_me(sso_app, oidc_provider.client_credentials_token())
    assert response.status_code == 200, response.json
    assert response.json["email"] == "pipeline@example.test"


@pytest.mark.parametrize("claims, reason", [
    ({"exp": int(time.time()) - 3600}, "exp"),
    ({"nbf": int(time.time()) + 3600}, "nbf"),
    ({"aud": "api://someone-else"}, "aud"),
    ({"iss": "http://127.0.0.1:1/evil"}, "iss"),
])
def test_expired_early_or_misaddressed_tokens_get_401(sso_app, oidc_provider, claims, reason):
    response = _get_me(sso_app, _signed(oidc_provider, claims))
    assert response.status_code == 401, reason
    assert reason in response.json["message"] or "not accepted" in response.json["message"]


def test_a_token_the_issuer_did_not_sign_gets_401(sso_app, oidc_provider):
    impostor = RSAKey.generate_key(2048)
    forged = _signed(oidc_provider, {}, key=impostor)  # the real kid, another key
    assert _get_me(sso_app, forged).status_code == 401
    unknown_kid = _signed(oidc_provider, {}, key=impostor, header={"alg": "RS256", "kid": "not-published"})
    assert _get_me(sso_app, unknown_kid).status_code == 401
    # a symmetric token keyed with a public value, and an unsigned one, are never accepted
    hmac_token = jwt.encode({"alg": "HS256", "kid": oidc_provider.kid}, {"sub": "x"}, OctKey.import_key("k" * 32))
    assert _get_me(sso_app, hmac_token).status_code == 401
    header, payload, _ = _signed(oidc_provider, {}).split(".")
    assert _get_me(sso_app, f"{header}.{payload}.").status_code == 401
    assert _get_me(sso_app, f"{header}.{payload}.c2lnbmF0dXJl").status_code == 401


def test_an_unknown_subject_without_email_gets_401(sso_app, oidc_provider):
    response = _get_me(sso_app, _signed(oidc_provider, {"sub": "nobody-we-know"}))
    assert response.status_code == 401
    assert "no Jobplane user" in response.json["message"]


def test_keys_rotated_by_the_issuer_are_fetched_again(app, settings):
    with OidcProvider() as provider:
        application = _app(settings, provider)
        with application.app_context():
            users.create_user(actor=SYSTEM, email="pipeline@example.test", role="job_creator",
                              oidc_issuer=provider.issuer, oidc_subject=provider.client_id)
            db.session.commit()
        old_kid = provider.kid
        assert _get_me(application, provider.client_credentials_token()).status_code == 200  # keys now cached
        provider.restart(new_key=True)
        assert provider.kid != old_kid
        token = provider.client_credentials_token()
        assert _get_me(application, token).status_code == 200  # unknown kid: the cache refetched the JWKS
        application.extensions["jobplane_db"].engine.dispose()


def test_jwts_are_refused_when_single_sign_on_is_off(app, admin, oidc_provider):
    response = app.test_client().get("/api/v1/me", headers={
        "Authorization": f"Bearer {oidc_provider.client_credentials_token()}"})
    assert response.status_code == 401
    assert "single sign-on is not configured" in response.json["message"]
