"""The Azure AD stand-in (tests/oidc.py) and the browser (tests/browser.py) work for real:
discovery, JWT access tokens that verify against /jwks, key rotation, and a sign-in in Chromium
through the provider's own pages ending at the app's callback with a code."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.oidc import OidcProvider

with warnings.catch_warnings():  # see tests/oidc.py
    from authlib.deprecate import AuthlibDeprecationWarning
    warnings.filterwarnings("ignore", "authlib.jose module is deprecated", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, jwt

pytestmark = pytest.mark.timeout(120)


def verified_claims(provider: OidcProvider, token: str):
    """The token's claims after checking its signature with the provider's published /jwks."""
    key_set = JsonWebKey.import_key_set(requests.get(provider.jwks_url, timeout=10).json())
    claims = jwt.decode(token, key_set)
    claims.validate()
    return claims


def test_discovery_document_names_the_issuer(oidc_provider):
    document = oidc_provider.discovery()
    assert document["issuer"] == oidc_provider.issuer
    assert document["jwks_uri"] == oidc_provider.jwks_url
    assert document["token_endpoint"] == oidc_provider.token_endpoint
    assert document["code_challenge_methods_supported"] == ["S256"]


def test_client_credentials_token_is_a_jwt_for_the_api(oidc_provider):
    claims = verified_claims(oidc_provider, oidc_provider.client_credentials_token())
    assert claims.header["alg"] == "RS256"
    assert claims.header["kid"] == oidc_provider.kid
    assert claims["aud"] == oidc_provider.api_audience
    assert claims["iss"] == oidc_provider.issuer
    assert claims["client_id"] == oidc_provider.client_id


def test_restart_with_a_new_key_signs_with_its_kid():
    with OidcProvider() as provider:
        old_kid, old_token = provider.kid, provider.client_credentials_token()
        provider.restart(new_key=True)
        assert provider.kid != old_kid
        assert verified_claims(provider, provider.client_credentials_token()).header["kid"] == provider.kid
        with pytest.raises(ValueError, match="Key not found"):  # the old key left /jwks
            verified_claims(provider, old_token)

        provider.restart(new_key=True, keep_old_key=True)
        published = {key["kid"] for key in requests.get(provider.jwks_url, timeout=10).json()["keys"]}
        assert published == {provider.kid, provider.keys[1]["kid"]}
        assert verified_claims(provider, provider.client_credentials_token()).header["kid"] == provider.kid


class _Callback(ThreadingHTTPServer):
    """The app's /auth/callback on a port the provider was never told about."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"signed in")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_port}/auth/callback"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.shutdown()
        self.server_close()


def _authorization_url(provider: OidcProvider, redirect_uri: str, verifier: str, state: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return provider.authorization_endpoint + "?" + urlencode({
        "client_id": provider.client_id, "response_type": "code", "scope": "openid profile email",
        "redirect_uri": redirect_uri, "state": state, "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge, "code_challenge_method": "S256",
    })


def test_sign_in_through_the_provider_pages_in_chromium(oidc_provider, page):
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    with _Callback() as callback:
        page.goto(_authorization_url(oidc_provider, callback.url, verifier, state))
        page.fill('input[name="login"]', "maya@example.test")
        page.fill('input[name="password"]', "any password")
        page.click('button[type="submit"]')
        page.wait_for_url(callback.url + "?**")
        assert page.text_content("body") == "signed in"
    query = parse_qs(urlsplit(page.url).query)
    assert query["state"] == [state]
    assert query["iss"] == [oidc_provider.issuer]

    response = requests.post(oidc_provider.token_endpoint, timeout=10, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": callback.url,
        "code_verifier": verifier,
        "client_id": oidc_provider.client_id, "client_secret": oidc_provider.client_secret,
    })
    assert response.status_code == 200, response.text
    tokens = response.json()
    id_token = verified_claims(oidc_provider, tokens["id_token"])
    assert id_token["aud"] == oidc_provider.client_id
    assert (id_token["sub"], id_token["email"], id_token["email_verified"], id_token["name"]) == (
        "maya@example.test", "maya@example.test", True, "maya@example.test")
    access_token = verified_claims(oidc_provider, tokens["access_token"])
    assert (access_token["aud"], access_token["sub"]) == (oidc_provider.api_audience, "maya@example.test")

    refreshed = requests.post(oidc_provider.token_endpoint, timeout=10,  # client_secret_basic this time
                              auth=(oidc_provider.client_id, oidc_provider.client_secret),
                              data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert verified_claims(oidc_provider, refreshed.json()["access_token"])["sub"] == "maya@example.test"


def test_only_the_registered_callback_path_is_accepted(oidc_provider):
    url = _authorization_url(oidc_provider, "http://127.0.0.1:8123/elsewhere", "v" * 43, "state")
    response = requests.get(url, timeout=10, allow_redirects=False)
    assert response.status_code == 400
    assert "redirect_uri did not match" in response.text
