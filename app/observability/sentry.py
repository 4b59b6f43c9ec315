"""Unhandled errors to Sentry (``JOBPLANE_SENTRY_DSN``), with the Flask and Dramatiq integrations.

What leaves the process is scrubbed: no personal data (``send_default_pii`` off: no user, IP or
cookies), no request bodies (a secret's value travels in one), Sentry's own deny-list of
sensitive keys (Authorization, passwords, tokens), and every string of the event passed through
the log scrubber, which knows the secret values of the run the error happened in.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration, SentryMiddleware
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

from app.observability import logs

logger = logging.getLogger(__name__)

#: keys whose values are never sent, on top of Sentry's own list
_DENYLIST = [*DEFAULT_DENYLIST, "secret_values", "value", "env", "script", "claim_token", "token_hash",
             "notification_slack_webhook", "notification_webhook_url", "smtp_password", "database_url",
             "x-request-id"]


def init(config: Mapping[str, Any], *, process_kind: str) -> bool:
    """Start sending errors to Sentry if ``JOBPLANE_SENTRY_DSN`` is set.

    Returns:
      whether Sentry is on.
    """
    dsn = config.get("SENTRY_DSN")
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn, environment=config["ENV"], server_name=process_kind, send_default_pii=False,
        max_request_body_size="never", event_scrubber=EventScrubber(denylist=_DENYLIST, recursive=True),
        integrations=[FlaskIntegration(), DramatiqIntegration(),
                      LoggingIntegration(level=logging.INFO, event_level=None)],
        before_send=_scrub_event, before_breadcrumb=_scrub_breadcrumb, traces_sample_rate=0.0)
    sentry_sdk.set_tag("process", process_kind)
    logger.info("sending unhandled errors to Sentry")
    return True


def instrument_broker(broker) -> None:
    """Add Sentry's Dramatiq middleware to a broker made before ``init`` (it is usually added when
    a broker is created, and Jobplane's is created by the app factory)."""
    if sentry_sdk.get_client().get_integration(DramatiqIntegration) is None:
        return
    if not any(isinstance(m, SentryMiddleware) for m in broker.middleware):
        broker.add_middleware(SentryMiddleware())


def tag_run(*, job_id: Any, execution_id: Any) -> None:
    """Tag errors of the current message (its own isolation scope) with the run's ids."""
    if sentry_sdk.get_client().is_active():
        scope = sentry_sdk.get_isolation_scope()
        scope.set_tag("job_id", str(job_id))
        scope.set_tag("execution_id", str(execution_id))
        masker = logs.current_run()[2]
        # the error is captured after the run's code has left: keep its masker with the scope
        scope.add_event_processor(lambda event, _hint: _scrub(event, masker))


def _scrub_event(event: dict, _hint: dict) -> dict:
    return _scrub(event, None)


def _scrub_breadcrumb(crumb: dict, _hint: dict) -> dict:
    return _scrub(crumb, None)


def _scrub(value: Any, masker: Any) -> Any:
    """Every string in ``value`` (an event or a part of it), scrubbed."""
    if isinstance(value, str):
        return logs.scrub(masker.mask(value) if masker is not None else value)
    if isinstance(value, dict):
        return {key: _scrub(item, masker) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item, masker) for item in value]
    return value
