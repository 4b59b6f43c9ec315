"""Bearer-token authentication for every API route: an OIDC access token (a JWT from the
configured issuer) or a personal API token."""

from __future__ import annotations

import logging
import uuid

from flask import current_app, g, request

from app.api import rate_limit
from app.errors import Unauthorized
from app.services import api_tokens, identity, oidc_tokens
from app.services.actors import Actor

logger = logging.getLogger(__name__)


def authenticate_request() -> None:
    """``before_request`` of the API blueprints: no valid bearer token, no access.

    Then the request counts against the caller's rate limit (``app.api.rate_limit``): the user's,
    or, when the credentials fail, the client address's.
    """
    try:
        user = _authenticated_user()
    except Unauthorized:
        rate_limit.count_request()  # 429 rather than 401 once an address has tried too often
        raise
    g.actor = Actor(user=user, ip_address=request.remote_addr,
                    user_agent=request.headers.get("User-Agent"),
                    request_id=request.headers.get("X-Request-ID") or uuid.uuid4().hex)
    rate_limit.count_request()


def _authenticated_user():
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send an API token or an OIDC access token: 'Authorization: Bearer <token>'")
    try:
        return _user_for(token)
    except Unauthorized as error:
        logger.warning("API authentication failed from %s: %s", request.remote_addr, error.message)
        raise


def _user_for(token: str):
    config = current_app.config
    if oidc_tokens.looks_like_jwt(token):
        if not config["OIDC_ENABLED"]:
            raise Unauthorized("OIDC access tokens are not accepted: single sign-on is not configured; "
                               "use a personal API token")
        issuer = config["OIDC_ISSUER"].rstrip("/")
        claims = oidc_tokens.validate_access_token(
            token, issuer=issuer, audience=config["OIDC_API_AUDIENCE"],
            cache_seconds=config["OIDC_JWKS_CACHE_SECONDS"], leeway=config["OIDC_LEEWAY_SECONDS"])
        return identity.user_for_claims(issuer, claims, create=True)
    return api_tokens.authenticate_token(token)


def current_actor() -> Actor:
    return g.actor
