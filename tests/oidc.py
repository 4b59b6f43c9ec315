"""A real OpenID Connect provider for the tests, standing in for Azure AD (Microsoft Entra ID).

``OidcProvider`` runs ``tests/oidc_provider/provider.mjs`` (panva's ``oidc-provider`` on the
machine's Node.js, installed by ``scripts/ensure-test-services.sh``) on a free port of 127.0.0.1,
with RSA signing keys made here. It serves what Jobplane uses from Azure AD: discovery, the
authorization code flow with PKCE, ``/token`` (authorization_code, refresh_token,
client_credentials), ``/jwks``, ``/me`` (userinfo) and ``/session/end``. Access tokens for the API
(resource ``api_audience``) are RS256 JWTs with ``aud`` = ``api_audience`` and ``iss`` = ``issuer``.

Redirect URIs: the defaults are ``http://127.0.0.1/auth/callback`` and
``http://localhost/auth/callback``; the provider matches loopback http redirect URIs on any port
(RFC 8252, section 7.3), so the session-scoped ``oidc_provider`` fixture serves an app whose port
is chosen later. The same goes for the post-logout redirect URIs (``/`` and ``/login`` on both
hosts by default). Pass other lists to ``OidcProvider(...)`` for other paths.

Signing in through the real pages (Playwright, see ``tests/browser.py``): the provider's
development sign-in page accepts any login name and any password, then goes straight back to the
app (consent is pre-granted, like an Azure AD admin consent). Selectors::

    page.fill('input[name="login"]', "maya@example.test")   # becomes sub, email and name
    page.fill('input[name="password"]', "anything")
    page.click('button[type="submit"]')                    # the "Sign-in" button

A login name without '@' gets the email ``<name>@example.test``. On ``/session/end`` (logout) the
confirmation button is ``button[name="logout"][value="yes"]`` ("Yes, sign me out").

Import the fixture into conftest.py with ``from tests.oidc import oidc_provider``.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import pytest
import requests

with warnings.catch_warnings():
    # Authlib 1.x warns on import that authlib.jose moves to joserfc (in Authlib 2.0). Its
    # deprecate module puts an "always" filter first when imported, so import it before ours.
    from authlib.deprecate import AuthlibDeprecationWarning
    warnings.filterwarnings("ignore", "authlib.jose module is deprecated", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
API_AUDIENCE = "api://jobplane"
DEFAULT_REDIRECT_URIS = ("http://127.0.0.1/auth/callback", "http://localhost/auth/callback")
DEFAULT_POST_LOGOUT_REDIRECT_URIS = ("http://127.0.0.1/", "http://localhost/",
                                     "http://127.0.0.1/login", "http://localhost/login")
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _signing_key() -> dict:
    """A fresh private RSA JWK for RS256, with a kid (its RFC 7638 thumbprint)."""
    key = JsonWebKey.generate_key("RSA", 2048, is_private=True).as_dict(is_private=True)
    key.update(use="sig", alg="RS256")
    key.setdefault("kid", secrets.token_hex(8))
    return key


class OidcProvider:
    """The Azure AD stand-in: one node process, one confidential client, one API resource.

    ``start()`` and ``stop()`` run it (it is also a context manager); ``restart(new_key=True)``
    rotates the signing key the way Azure AD does, same issuer and port. The process's output is
    kept in ``output`` for error messages.
    """

    def __init__(self, redirect_uris=DEFAULT_REDIRECT_URIS,
                 post_logout_redirect_uris=DEFAULT_POST_LOGOUT_REDIRECT_URIS, *,
                 client_id: str = "jobplane-web", client_secret: str | None = None,
                 api_audience: str = API_AUDIENCE, api_scopes: str = ""):
        self.redirect_uris = list(redirect_uris)
        self.post_logout_redirect_uris = list(post_logout_redirect_uris)
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.api_audience = api_audience
        self.api_scopes = api_scopes
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys = [_signing_key()]
        self.output: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="jobplane-oidc-")
        self._process: subprocess.Popen | None = None

    # --- what a relying party is configured with ---------------------------------------------
    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def kid(self) -> str:
        """The id of the key that signs now."""
        return self.keys[0]["kid"]

    def discovery(self) -> dict:
        response = requests.get(self.discovery_url, timeout=10)
        response.raise_for_status()
        return response.json()

    def client_credentials_token(self, resource: str | None = None, scope: str | None = None) -> str:
        """An access token (a JWT for the API) for the client itself, as a daemon gets from Azure AD."""
        data = {"grant_type": "client_credentials", "resource": resource or self.api_audience}
        if scope:
            data["scope"] = scope
        response = requests.post(self.token_endpoint, data=data,
                                 auth=(self.client_id, self.client_secret), timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"client_credentials failed: {response.status_code} {response.text}")
        return response.json()["access_token"]

    # --- process ------------------------------------------------------------------------------
    def start(self) -> OidcProvider:
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"{PROVIDER_DIR}/node_modules is missing: run scripts/ensure-test-services.sh")
        jwks_file = Path(self._dir.name) / f"jwks-{self.kid}.json"
        jwks_file.write_text(json.dumps({"keys": self.keys}))
        env = {key: value for key, value in os.environ.items() if key != "NODE_ENV"}
        env.update(PORT=str(self.port), ISSUER=self.issuer, CLIENT_ID=self.client_id,
                   CLIENT_SECRET=self.client_secret, REDIRECT_URIS=",".join(self.redirect_uris),
                   POST_LOGOUT_REDIRECT_URIS=",".join(self.post_logout_redirect_uris),
                   JWKS_FILE=str(jwks_file), API_AUDIENCE=self.api_audience, API_SCOPES=self.api_scopes)
        self.output = output = []
        self._process = subprocess.Popen(["node", "provider.mjs"], cwd=PROVIDER_DIR, env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_output, args=(self._process, output, lines), daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=START_TIMEOUT)
                if line is None:
                    raise RuntimeError(f"the OIDC provider exited with {self._process.wait()}:\n"
                                       + "".join(self.output))
                if line.strip() == f"ready {self.issuer}":
                    return self
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"the OIDC provider did not get ready in {START_TIMEOUT:.0f}s:\n"
                               + "".join(self.output)) from None

    @staticmethod
    def _read_output(process: subprocess.Popen, output: list, lines: queue.Queue) -> None:
        """Keeps the pipe drained for the process's whole life; None means it closed."""
        with process.stdout:
            for line in process.stdout:
                output.append(line)
                lines.put(line)
        lines.put(None)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, new_key: bool = True, keep_old_key: bool = False) -> OidcProvider:
        """Restarts on the same issuer; with ``new_key`` a new key signs from now on, and with
        ``keep_old_key`` the old one stays published in /jwks (Azure AD's overlap during rotation).
        Sessions, codes and refresh tokens are lost (they live in the process's memory)."""
        self.stop()
        if new_key:
            self.keys = [_signing_key()] + (self.keys if keep_old_key else [])
        return self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


@pytest.fixture(scope="session")
def oidc_provider():
    """One provider for the session, with the default loopback redirect URIs (any port).
    A test that restarts or rotates keys should make its own ``with OidcProvider() as provider``."""
    with OidcProvider() as provider:
        yield provider
