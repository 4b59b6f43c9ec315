"""One exception hierarchy for Jobplane, mapped to HTTP once (``app.api.errors``).

Messages say what to do, not only what went wrong.
"""

from __future__ import annotations


class JobplaneError(Exception):
    """Base of every error Jobplane raises on purpose."""

    status_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(JobplaneError):
    """Input that breaks a rule; ``errors`` maps each bad field to what is wrong with it."""

    status_code = 422

    def __init__(self, errors: dict[str, list[str] | str], message: str | None = None):
        self.errors = {field: [msgs] if isinstance(msgs, str) else list(msgs)
                       for field, msgs in errors.items()}
        fields = ", ".join(sorted(self.errors))
        super().__init__(message or f"invalid value for {fields}")


class Unauthorized(JobplaneError):
    status_code = 401


class Forbidden(JobplaneError):
    status_code = 403


class NotFound(JobplaneError):
    status_code = 404


class Conflict(JobplaneError):
    """The change collides with the current state; ``current_version`` tells a client that read a
    stale version which one to read again."""

    status_code = 409

    def __init__(self, message: str, *, current_version: int | None = None):
        super().__init__(message)
        self.current_version = current_version


class TooManyRequests(JobplaneError):
    """The caller has spent their request budget for now; the response says when to come back."""

    status_code = 429
