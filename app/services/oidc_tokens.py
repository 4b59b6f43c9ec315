"""Checking OIDC access tokens (JWTs) sent to the API, against the issuer's published keys.

Signature (asymmetric algorithms only), issuer, audience, expiry and not-before are all checked
(joserfc's ``decode`` alone checks none of the claims).  The issuer's JWKS is cached per process;
a token signed with a key id the cache does not know refetches it at once (the issuer rotated its
keys), at most ``_REFETCHES_PER_MINUTE`` times a minute so random key ids cannot make us hammer it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import requests
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from app.errors import Unauthorized

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
_REFETCHES_PER_MINUTE = 6
_HTTP_TIMEOUT_SECONDS = 10.0


class IssuerKeys:
    """The signing keys of one issuer, fetched through its discovery document and cached."""

    def __init__(self, issuer: str, cache_seconds: float):
        self.issuer = issuer.rstrip("/")
        self.cache_seconds = cache_seconds
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._refetches: deque[float] = deque(maxlen=_REFETCHES_PER_MINUTE)
        self._lock = threading.Lock()

    def get(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            now = time.monotonic()
            stale = self._keys is None or now - self._fetched_at > self.cache_seconds
            if refresh and not stale and self._may_refetch(now):
                self._refetches.append(now)
                stale = True
            if stale:
                self._keys = self._fetch()
                self._fetched_at = now
            return self._keys

    def _may_refetch(self, now: float) -> bool:
        full = len(self._refetches) == self._refetches.maxlen
        return not full or now - self._refetches[0] > 60.0

    def _fetch(self) -> KeySet:
        try:
            metadata = requests.get(f"{self.issuer}/.well-known/openid-configuration",
                                    timeout=_HTTP_TIMEOUT_SECONDS)
            metadata.raise_for_status()
            jwks = requests.get(metadata.json()["jwks_uri"], timeout=_HTTP_TIMEOUT_SECONDS)
            jwks.raise_for_status()
            return KeySet.import_key_set(jwks.json())
        except (requests.RequestException, ValueError, KeyError) as error:
            logger.error("cannot fetch the signing keys of %s: %s", self.issuer, error)
            raise Unauthorized("the identity provider's signing keys are unavailable; try again shortly") \
                from None


_ISSUERS: dict[str, IssuerKeys] = {}
_ISSUERS_LOCK = threading.Lock()


def issuer_keys(issuer: str, cache_seconds: float) -> IssuerKeys:
    with _ISSUERS_LOCK:
        keys = _ISSUERS.get(issuer)
        if keys is None or keys.cache_seconds != cache_seconds:
            keys = _ISSUERS[issuer] = IssuerKeys(issuer, cache_seconds)
        return keys


def looks_like_jwt(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


def validate_access_token(token: str, *, issuer: str, audience: str, cache_seconds: float,
                          leeway: int) -> dict[str, Any]:
    """The claims of a valid access token from ``issuer`` for ``audience``.

    Raises:
      Unauthorized: bad signature or unknown key, wrong issuer or audience, expired, not yet
        valid, or not a token at all; the message says which.
    """
    keys = issuer_keys(issuer, cache_seconds)
    try:
        try:
            decoded = jwt.decode(token, keys.get(), algorithms=ALGORITHMS)
        except InvalidKeyIdError:
            decoded = jwt.decode(token, keys.get(refresh=True), algorithms=ALGORITHMS)
    except InvalidKeyIdError:
        raise Unauthorized("the access token is signed with a key the identity provider does not publish") \
            from None
    except (JoseError, ValueError) as error:
        raise Unauthorized(f"the access token is not valid: {_reason(error)}") from None
    registry = jwt.JWTClaimsRegistry(
        leeway=leeway, iss={"essential": True, "value": issuer.rstrip("/")},
        aud={"essential": True, "value": audience}, exp={"essential": True}, sub={"essential": True})
    claims = decoded.claims
    if isinstance(claims.get("iss"), str):
        claims = {**claims, "iss": claims["iss"].rstrip("/")}
    try:
        registry.validate(claims)
    except JoseError as error:
        raise Unauthorized(f"the access token is not accepted: {_reason(error)}") from None
    return claims


def _reason(error: Exception) -> str:
    return getattr(error, "description", None) or str(error) or type(error).__name__
