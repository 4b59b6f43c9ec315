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
from app.services.masking import SecretMasker

logger = logging.getLogger(__name__)

#: keys whose values are never sent, on top of Sentry's own list and the credential settings
_DENYLIST = [*DEFAULT_DENYLIST, "secret_values", "value", "env", "script", "claim_token", "token_hash",
             "notification_slack_webhook", "notification_webhook_url", "secret_key_fallbacks"]
#: settings whose values are credentials: their keys are denied, their values masked wherever they appear
_CREDENTIAL_SETTINGS = ("SECRET_KEY", "SECRET_KEY_PREVIOUS", "OIDC_CLIENT_SECRET", "SMTP_PASSWORD",
                        "BOOTSTRAP_ADMIN_TOKEN", "SENTRY_DSN", "DATABASE_URL", "REDIS_URL")
#: the values of this process's credential settings
_settings_masker: SecretMasker | None = None


def init(config: Mapping[str, Any], *, process_kind: str) -> bool:
    """Start sending errors to Sentry if ``JOBPLANE_SENTRY_DSN`` is set.

    Returns:
      whether Sentry is on.
    """
    global _settings_masker
    dsn = config.get("SENTRY_DSN")
    if not dsn:
        return False
    values = [str(config[key]) for key in _CREDENTIAL_SETTINGS if config.get(key)]
    values += [key.strip() for key in (config.get("SECRET_KEY_PREVIOUS") or "").split(",") if key.strip()]
    _settings_masker = SecretMasker(values)
    denylist = [*_DENYLIST, *(key.lower() for key in _CREDENTIAL_SETTINGS)]
    sentry_sdk.init(
        dsn=dsn, environment=config["ENV"], server_name=process_kind, send_default_pii=False,
        max_request_body_size="never", event_scrubber=EventScrubber(denylist=denylist, recursive=True),
        integrations=[FlaskIntegration(), DramatiqIntegration(),
                      # errors the API's handlers answer with a 500 are logged, not raised: an
                      # ERROR log line with its exception is an event (Dedupe drops the repeats)
                      LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        before_send=_scrub_event, before_breadcrumb=_scrub_breadcrumb, traces_sample_rate=0.0)
    # on the global scope: a gevent greenlet or a new thread starts from a fresh isolation scope
    sentry_sdk.get_global_scope().set_tag("process", process_kind)
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


def scrub_run_secrets(masker: Any) -> None:
    """Mask the run's secret values out of the current message's events: they are captured after
    the run's code has left (and its log context with it), so the masker stays with the scope."""
    if sentry_sdk.get_client().is_active():
        sentry_sdk.get_isolation_scope().add_event_processor(lambda event, _hint: _scrub(event, masker))


def _scrub_event(event: dict, _hint: dict) -> dict:
    return _scrub(event, None)


def _scrub_breadcrumb(crumb: dict, _hint: dict) -> dict:
    return _scrub(crumb, None)


def _scrub(value: Any, masker: Any) -> Any:
    """Every string in ``value`` (an event or a part of it), scrubbed."""
    if isinstance(value, str):
        if masker is not None:
            value = masker.mask(value)
        if _settings_masker is not None:
            value = _settings_masker.mask(value)
        return logs.scrub(value)
    if isinstance(value, dict):
        return {key: _scrub(item, masker) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item, masker) for item in value]
    return value
