"""What the OpenAPI document (``/api/openapi.json``) says beyond the schemas: who may call each
operation, the errors it can answer, and the one JSON shape of every error.

Each API operation is decorated with :func:`documented`, which names the role it requires and
the errors it can answer; ``tests/api/test_openapi_document.py`` fails for an operation without
them, so a new route cannot be published undocumented.
"""

from __future__ import annotations

from typing import Callable, Iterable

from flask_smorest import Blueprint
from flask_smorest.utils import load_info_from_docstring
from marshmallow import Schema, fields

#: The security scheme of every operation: a bearer token (``app/api/auth.py``).
BEARER = "bearer"
#: Answered by every operation: authentication and the rate limit come before anything else.
ALWAYS = (401, 429)

#: The error responses of the document, by status: (component name, description, headers).
ERROR_RESPONSES = {
    400: ("BadRequest", "the request is not what the operation reads, e.g. a body that is not JSON; the "
                        "message says what to send", {}),
    401: ("Unauthorized", "no valid bearer token: send 'Authorization: Bearer <token>' with a personal API "
                          "token or an OIDC access token", {
                              "WWW-Authenticate": {"description": 'Bearer realm="jobplane"',
                                                   "schema": {"type": "string"}}}),
    403: ("Forbidden", "your role may not do this; the message says which role may", {}),
    404: ("NotFound", "no such object, or one you may not see (ids reveal nothing)", {}),
    409: ("Conflict", "the object changed since you read it (current_version says its version now), or "
                      "its state forbids this; the message says what to do", {}),
    422: ("UnprocessableEntity", "a field is missing or invalid: errors.json (or errors.query) names each "
                                 "field and how to fix it; nothing was changed", {}),
    429: ("TooManyRequests", "your rate limit (JOBPLANE_API_RATE_LIMIT a minute) is spent", {
        "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}),
}

#: Example error bodies, one per status, as the API writes them.
_ERROR_EXAMPLES = {
    400: {"code": 400, "status": "Bad Request", "message": "the body is not valid JSON"},
    401: {"code": 401, "status": "Unauthorized",
          "message": "send an API token or an OIDC access token: 'Authorization: Bearer <token>'"},
    403: {"code": 403, "status": "Forbidden", "message": "only the job's owner or an admin may change it"},
    404: {"code": 404, "status": "Not Found", "message": "job 3f1c9a52-8a4e-4d0b-9a43-2f0f5c1c7e11 not found"},
    409: {"code": 409, "status": "Conflict", "current_version": 4,
          "message": "job 3f1c9a52-8a4e-4d0b-9a43-2f0f5c1c7e11 is at version 4, not 3: it changed since you "
                     "read it; read it again and reapply your change"},
    422: {"code": 422, "status": "Unprocessable Entity",
          "errors": {"json": {"schedule": ["invalid cron expression '61 * * * *'"]}}},
    429: {"code": 429, "status": "Too Many Requests",
          "message": "too many requests: your user may make 100; try again in 17 s"},
}


class ErrorSchema(Schema):
    """The body of every error the API answers (``app/api/errors.py`` writes it)."""

    code = fields.Integer(metadata={"description": "the HTTP status", "example": 404})
    status = fields.String(metadata={"description": "the HTTP status's name", "example": "Not Found"})
    message = fields.String(metadata={"description": "what went wrong and what to do about it"})
    errors = fields.Dict(metadata={
        "description": "invalid fields by location (json, query, headers), each with what to fix"})
    current_version = fields.Integer(metadata={
        "description": "with 409 on a stale version: the object's version now"})


def init_spec(api) -> None:
    """Register the shared error responses in the document; call before registering blueprints."""
    for status, (name, description, headers) in ERROR_RESPONSES.items():
        content = {"application/json": {"schema": ErrorSchema, "example": _ERROR_EXAMPLES[status]}}
        api.spec.components.response(name, {"description": description, "content": content,
                                            **({"headers": headers} if headers else {})})


def documented(blp: Blueprint, *, requires: str, errors: Iterable[int] = ()) -> Callable:
    """Document who may call an operation and the errors it can answer.

    The operation's summary is its docstring's first line, its description the rest of the
    docstring followed by ``Requires: <requires>.``; its security, the bearer token.

    Parameters:
      blp: the operation's blueprint.
      requires: the roles that may call it, e.g. ``"job_creator (own jobs) or admin"``.
      errors: statuses it can answer besides 401 and 429 (every operation's), 400 for a JSON
        body that is not JSON (added here) and 422 for a request that has arguments (flask-smorest
        adds that one). Decorate the method with this last (outermost), so it sees the arguments.

    Returns:
      A decorator for the operation's method.
    """
    statuses = sorted(set(ALWAYS) | set(errors))
    unknown = [status for status in statuses if status not in ERROR_RESPONSES]
    if unknown:
        raise ValueError(f"no error response for {unknown}; add it to ERROR_RESPONSES in {__name__}")

    def decorator(func: Callable) -> Callable:
        info = load_info_from_docstring(func.__doc__ or "")
        description = "\n\n".join(filter(None, (info.get("description"), f"Requires: {requires}.")))
        arguments = getattr(func, "_apidoc", {}).get("arguments", {}).get("parameters", [])
        # a body that is not JSON at all is refused before any field is read
        body = [400] if any(argument.get("in") == "json" for argument in arguments) else []
        for status in sorted(set(statuses) | set(body)):
            func = blp.alt_response(status, response=ERROR_RESPONSES[status][0])(func)
        return blp.doc(description=description, security=[{BEARER: []}])(func)

    return decorator
