"""The ``Idempotency-Key`` header of the API's creating routes (``app.services.idempotency``)."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import wraps

from flask import Flask, Response, current_app, g, request

from app.api.auth import current_actor
from app.services import idempotency

logger = logging.getLogger(__name__)

#: The header as the OpenAPI document describes it, for ``@blp.doc(parameters=[...])``.
IDEMPOTENCY_KEY_DOC = {
    "in": "header", "name": idempotency.HEADER, "required": False, "schema": {"type": "string", "maxLength": 255},
    "description": "1 to 255 printable characters, e.g. a UUID; send the same key with each retry of this "
                   "request: a retry gets the first response (with Idempotent-Replayed: true) and creates "
                   "nothing; the same key with another body is refused (422); a retry while the first "
                   "is still running gets 409. Keys are kept JOBPLANE_IDEMPOTENCY_TTL_HOURS (24 h).",
}


def init_app(app: Flask) -> None:
    app.teardown_request(_release_unfinished)


def idempotent(view):
    """Make a creating route honour ``Idempotency-Key``; place it above ``@blp.arguments`` and
    ``@blp.response`` so it sees the finished response. Without the header nothing changes."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(idempotency.HEADER)
        if key is None:
            return view(*args, **kwargs)
        idempotency.check_key(key)
        ttl = timedelta(hours=current_app.config["IDEMPOTENCY_TTL_HOURS"])
        route = f"{request.method} {request.path}"
        found = idempotency.reserve(user_id=current_actor().user.id, key=key, route=route, ttl=ttl,
                                    request_fingerprint=idempotency.fingerprint(request.method, request.path,
                                                                                request.get_data()))
        if isinstance(found, idempotency.StoredResponse):
            return Response(found.body, status=found.status, headers={**found.headers, "Idempotent-Replayed": "true"})
        g.idempotency_reservation = found
        response = view(*args, **kwargs)
        if response.status_code < 400:
            idempotency.complete(reservation=found, status=response.status_code, headers=dict(response.headers),
                                 body=response.get_data(), ttl=ttl)
        return response

    return wrapper


def _release_unfinished(_error: BaseException | None) -> None:
    """After the request's commit or rollback: a key whose response was not committed is released
    (a key that completed is not touched)."""
    reservation = g.pop("idempotency_reservation", None)
    if reservation is None:
        return
    try:
        idempotency.release(reservation)
    except Exception:  # the response is already sent; the key expires after the stale period instead
        logger.exception("could not release an idempotency key; a retry may take it over in %s",
                         idempotency.STALE_RESERVATION)
