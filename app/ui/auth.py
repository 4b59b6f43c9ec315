"""Signing in and out of the web UI: single sign-on (OIDC authorization code + PKCE, via
Authlib) when it is configured, else sign-in with a personal API token, which the page says."""

from __future__ import annotations

import logging

from authlib.integrations.base_client.errors import OAuthError
from flask import Blueprint, Flask, current_app, redirect, render_template, request, session, url_for
from joserfc.errors import JoseError
from requests import RequestException

from app.errors import Unauthorized
from app.services import identity
from app.ui.web_auth import request_context, start_session, web_actor

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)
#: the endpoints that try credentials: rate limited per client address (LOGIN_RATE_LIMIT)
SIGN_IN_ENDPOINTS = ("auth.sso", "auth.callback", "auth.token_sign_in")


def register_sso_client(app: Flask) -> None:
    """Register the OIDC client of this app (no network until the first sign-in)."""
    from authlib.integrations.flask_client import OAuth

    config = app.config
    oauth = OAuth(app)
    oauth.register("sso", client_id=config["OIDC_CLIENT_ID"], client_secret=config["OIDC_CLIENT_SECRET"],
                   server_metadata_url=config["OIDC_ISSUER"].rstrip("/") + "/.well-known/openid-configuration",
                   client_kwargs={"scope": config["OIDC_SCOPES"], "code_challenge_method": "S256"})
    app.extensions["jobplane_sso"] = oauth.sso


def _sso():
    return current_app.extensions["jobplane_sso"]


def _external(endpoint: str) -> str:
    base = current_app.config.get("BASE_URL")
    return base + url_for(endpoint) if base else url_for(endpoint, _external=True)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.home")


@bp.get("/login")
def login():
    if web_actor() is not None:
        return redirect(_safe_next(request.args.get("next")))
    end_session = None
    if request.args.get("signed_out") and current_app.config["OIDC_ENABLED"]:
        try:
            end_session = _sso().load_server_metadata().get("end_session_endpoint")
        except (RequestException, ValueError):
            end_session = None
    return render_template("login.html", sso=current_app.config["OIDC_ENABLED"], next=request.args.get("next", ""),
                           signed_out=bool(request.args.get("signed_out")), end_session=end_session,
                           error=request.args.get("error"))


@bp.get("/login/sso")
def sso():
    if not current_app.config["OIDC_ENABLED"]:
        return redirect(url_for("auth.login"))
    session["after_sign_in"] = _safe_next(request.args.get("next"))
    try:
        return _sso().authorize_redirect(_external("auth.callback"))
    except (RequestException, ValueError) as error:  # spec §7.1: the provider down → say so, no fallback
        logger.error("the identity provider is unreachable: %s", error)
        return render_template("login.html", sso=True, next="",
                               error="The identity provider cannot be reached right now, so nobody can sign "
                                     "in. Try again in a few minutes; if it lasts, tell your administrators."), 503


@bp.get("/auth/callback")
def callback():
    if not current_app.config["OIDC_ENABLED"]:
        return redirect(url_for("auth.login"))
    context = request_context()
    try:
        token = _sso().authorize_access_token()
        claims = token.get("userinfo") or {}
        if not claims.get("sub"):
            raise OAuthError(description="the ID token has no subject")
        user = identity.sign_in_with_oidc(context=context, issuer=current_app.config["OIDC_ISSUER"].rstrip("/"),
                                          claims=dict(claims))
    except Unauthorized as error:  # already audited
        return render_template("login.html", sso=True, error=error.message, next=""), 401
    except (OAuthError, JoseError, RequestException, ValueError, KeyError) as error:
        reason = getattr(error, "description", None) or str(error) or type(error).__name__
        logger.warning("single sign-on failed: %s", reason)
        identity.record_failed_sign_in(context=context, email=None, reason=f"single sign-on failed: {reason}")
        return render_template("login.html", sso=True, next="",
                               error=f"Single sign-on failed ({reason}). Try again."), 401
    target = session.pop("after_sign_in", None)
    start_session(user, id_token=token.get("id_token"))
    return redirect(_safe_next(target))


@bp.post("/login/token")
def token_sign_in():
    if current_app.config["OIDC_ENABLED"]:
        return render_template("login.html", sso=True, next="",
                               error="Sign in with single sign-on: API tokens are for the API only."), 400
    token = (request.form.get("token") or "").strip()
    if not token:
        return render_template("login.html", sso=False, next=request.form.get("next", ""),
                               error="Paste your API token."), 400
    try:
        user = identity.sign_in_with_token(context=request_context(), token=token)
    except Unauthorized as error:
        return render_template("login.html", sso=False, next=request.form.get("next", ""),
                               error=error.message), 401
    start_session(user)
    return redirect(_safe_next(request.form.get("next")), code=303)


@bp.post("/logout")
def logout():
    actor = web_actor()
    if actor is not None:
        identity.sign_out(actor=actor)
    session.clear()
    return redirect(url_for("auth.login", signed_out=1), code=303)
