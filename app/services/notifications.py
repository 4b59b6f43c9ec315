"""Notifications: which events an execution's outcome raises, recording them with that outcome,
and delivering each exactly as the rules say.

Recording happens in the transaction that writes the execution's final status (a crash between
the two loses nothing); no event is raised for an attempt that will be retried.  Each row is one
(execution, event, channel) — unique, so at most one per execution and event — and moves
``pending → sending → sent``; a failed attempt goes back to ``pending`` with a delay, up to
``NOTIFY_ATTEMPTS`` for Slack and webhooks (then email instead: ``fallback``) and for
``NOTIFY_EMAIL_KEEP_HOURS`` for email (then ``failed``).  The leader's sweeper re-sends rows
whose message was lost and takes back rows whose worker died while sending (so a notification
is delivered at least once; the email keeps one Message-ID across attempts).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Mapping
from urllib.parse import urlsplit
from uuid import UUID

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.errors import InvalidInput, NotFound
from app.extensions import db
from app.models import Execution, Job, Notification, User
from app.models.base import utcnow
from app.notifications import channels
from app.notifications.breaker import Breaker
from app.notifications.content import NotificationContent
from app.observability import metrics
from app.services import access, audit
from app.services.actors import Actor
from app.services.transactions import after_commit
from app.tasks import dispatch

logger = logging.getLogger(__name__)

FAILURE_STATUSES = ("failed", "timed_out", "lost")
_EVENT_OF_STATUS = {"failed": "job_failed", "timed_out": "job_timeout", "lost": "job_lost"}
#: a notification whose message was sent this long ago but is still pending was lost: re-send it
RESEND_AFTER = timedelta(seconds=30)
#: a notification claimed this long ago and not finished: its worker died mid-delivery
SENDING_STALE_AFTER = timedelta(minutes=5)


# --- recording ----------------------------------------------------------------------------------

def events_for(job: Job, execution: Execution) -> list[str]:
    """The events an execution's final outcome raises (before the job's choice of events)."""
    if execution.status in _EVENT_OF_STATUS:
        return [_EVENT_OF_STATUS[execution.status]]
    if execution.status != "success":
        return []  # cancelled, skipped, missed: nobody is told
    events = ["job_succeeded"]
    if _previous_outcome(job, execution) in FAILURE_STATUSES:
        events.insert(0, "job_recovered")
    return events


def _previous_outcome(job: Job, execution: Execution) -> str | None:
    """The final status of the job's latest earlier fire (attempts of this fire do not count)."""
    this_fire = execution.first_attempt_id or execution.id
    return db.session.scalar(
        select(Execution.status)
        .where(Execution.job_id == job.id, Execution.id != execution.id,
               Execution.status.in_(("success", *FAILURE_STATUSES)),
               Execution.id != this_fire, (Execution.first_attempt_id.is_(None)) | (Execution.first_attempt_id != this_fire),
               Execution.completed_at <= (execution.completed_at or utcnow()))
        .order_by(Execution.completed_at.desc(), Execution.id.desc()).limit(1))


def _channels_of(job: Job) -> list[tuple[str, list[str]]]:
    found = []
    if job.notification_emails:
        found.append(("email", list(job.notification_emails)))
    if job.notification_slack_webhook:
        found.append(("slack", []))
    if job.notification_webhook_url:
        found.append(("webhook", []))
    return found


def record_outcome(*, job: Job, execution: Execution) -> list[Notification]:
    """Record the notifications of an execution's final outcome, in the caller's transaction, and
    send them to the notification actors once it commits."""
    channels = _channels_of(job)
    if not channels or not job.notify_on:
        return []  # nobody to tell: spare the worker the look at the previous outcome
    wanted = [event for event in events_for(job, execution) if event in job.notify_on]
    rows = [Notification(job_id=job.id, execution_id=execution.id, event=event, channel=channel,
                         recipients=recipients, status="pending", next_attempt_at=utcnow())
            for event in wanted for channel, recipients in channels]
    return _add_and_send(rows)


def _add_and_send(rows: list[Notification]) -> list[Notification]:
    if not rows:
        return rows
    db.session.add_all(rows)
    db.session.flush()
    send = dispatch.notification_sender()
    ids = [row.id for row in rows]
    after_commit(lambda: [send(notification_id) for notification_id in ids])
    return rows


def send_test(*, actor: Actor, job_id: UUID) -> list[Notification]:
    """``POST /api/v1/jobs/{id}/notifications/test``: one test notification per configured channel."""
    from app.services import jobs

    job = jobs.get_job(actor=actor, job_id=job_id)
    if not access.can_edit_job(actor, job):
        from app.errors import Forbidden

        raise Forbidden("only the job's owner or an admin may send its test notifications")
    configured = _channels_of(job)
    if not configured:
        raise InvalidInput({"notification_emails": "the job has no email recipient, Slack webhook or webhook "
                                                   "to test; set one first"})
    rows = [Notification(job_id=job.id, execution_id=None, event="test", channel=channel, recipients=recipients,
                         status="pending", next_attempt_at=utcnow()) for channel, recipients in configured]
    _add_and_send(rows)
    audit.record(actor=actor, action="notification_tested", resource_type="job", resource_id=job.id,
                 changes={"channels": {"old": None, "new": [channel for channel, _ in configured]}})
    return rows


def list_for_job(*, actor: Actor, job_id: UUID, limit: int = 100) -> list[Notification]:
    """The job's latest notifications and how their delivery went (whoever may see the job)."""
    from app.services import jobs

    jobs.get_job(actor=actor, job_id=job_id)
    return list(db.session.scalars(select(Notification).where(Notification.job_id == job_id)
                                   .order_by(Notification.created_at.desc(), Notification.id).limit(limit)))


def list_job_notifications(*, actor: Actor, job_id: UUID, limit: int = 100,
                           offset: int = 0) -> tuple[list[Notification], int]:
    """A page of the job's notifications, newest first (ties by id), and how many it has."""
    from app.services import jobs

    jobs.get_job(actor=actor, job_id=job_id)
    query = select(Notification).where(Notification.job_id == job_id)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(Notification.created_at.desc(), Notification.id)
                              .limit(limit).offset(offset))
    return list(rows), total


# --- delivering ---------------------------------------------------------------------------------

def deliver(notification_id: UUID) -> str | None:
    """Deliver one notification if it is due and nobody else is delivering it; returns its new
    status (None when this delivery of the message was not the one to act)."""
    config = current_app.config
    notification_id = UUID(str(notification_id))
    now = utcnow()
    claimed = db.session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.status == "pending",
               Notification.next_attempt_at <= now + timedelta(seconds=1))
        .values(status="sending", attempts=Notification.attempts + 1, claimed_at=now)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if claimed.rowcount != 1:
        return None
    row = db.session.get(Notification, notification_id)
    job = db.session.get(Job, row.job_id)
    breaker = Breaker(config, _breaker_name(row, job))
    open_until = breaker.open_until()
    if open_until is not None:
        _held_back(row, job, open_until, config)
    else:
        try:
            note = _send(row, job, config)
        except channels.DeliveryError as error:
            if not error.permanent:  # a refused address or a deleted hook says nothing of the channel
                breaker.failed()
            _failed_attempt(row, job, error, config)
        except Exception as error:  # recorded like any failed attempt, never left "sending"
            logger.exception("notification %s (%s, %s): unexpected error", row.id, row.channel, row.event)
            db.session.rollback()  # back to the committed claim, whatever the error left behind
            _failed_attempt(row, job, channels.DeliveryError(f"{type(error).__name__}: {error}"), config)
        else:
            breaker.succeeded()
            # last_error stays: with attempts, it tells why the delivery took more than one
            row.status, row.sent_at = "sent", utcnow()
            if note:
                row.last_error = note
    db.session.commit()
    metrics.notification_attempted(channel=row.channel, status=row.status)
    return row.status


def _breaker_name(row: Notification, job: Job) -> str:
    """Email and Slack are one service each; generic webhooks are each customer's own receiver,
    so one dead receiver must not hold back (and divert to email) everybody else's."""
    if row.channel == "webhook" and job.notification_webhook_url:
        return f"webhook:{(urlsplit(job.notification_webhook_url).hostname or '').lower()}"
    return row.channel


def _content(row: Notification, job: Job, config: Mapping[str, Any]) -> NotificationContent:
    execution = db.session.get(Execution, row.execution_id) if row.execution_id else None
    base = config.get("BASE_URL") or f"http://{config['HOST']}:{config['PORT']}"
    return NotificationContent(
        event=row.event, job_id=str(job.id), job_name=job.name,
        execution_id=str(execution.id) if execution else None,
        status=execution.status if execution else None,
        occurred_at=(execution.completed_at if execution and execution.completed_at else row.created_at),
        error_message=execution.error_message if execution else "This is a test: the channel works.",
        exit_code=execution.exit_code if execution else None,
        attempt=execution.attempt if execution else None,
        execution_url=f"{base}/executions/{execution.id}" if execution else f"{base}/jobs/{job.id}")


def _send(row: Notification, job: Job, config: Mapping[str, Any]) -> str | None:
    content = _content(row, job, config)
    if row.channel == "email":
        return channels.send_email(config, content, row.recipients, message_id=str(row.id))
    elif row.channel == "slack":
        if not job.notification_slack_webhook:
            raise channels.DeliveryError("the job no longer has a Slack webhook", permanent=True)
        channels.send_slack(config, content, job.notification_slack_webhook)
    else:
        if not job.notification_webhook_url:
            raise channels.DeliveryError("the job no longer has a webhook", permanent=True)
        channels.send_webhook(config, content, job.notification_webhook_url, delivery_id=str(row.id))
    return None


def _retry_later(row: Notification, at) -> None:
    row.status, row.next_attempt_at = "pending", at
    send = dispatch.notification_sender()
    delay = max(0.0, (at - utcnow()).total_seconds())
    notification_id = row.id
    after_commit(lambda: send(notification_id, delay_seconds=delay))


def _held_back(row: Notification, job: Job, open_until: float, config: Mapping[str, Any]) -> None:
    """The channel's breaker is open: Slack and webhooks fail over to email now; email waits."""
    from datetime import datetime, timezone

    row.attempts -= 1  # not tried
    row.last_error = f"{row.channel} circuit breaker open"
    if row.channel != "email" and _fall_back_to_email(row, job, config):
        row.status = "fallback"
        return
    _retry_later(row, datetime.fromtimestamp(open_until, timezone.utc))


def _failed_attempt(row: Notification, job: Job, error: channels.DeliveryError, config: Mapping[str, Any]) -> None:
    row.last_error = str(error)
    retry_at = utcnow() + timedelta(seconds=config["NOTIFY_RETRY_SECONDS"])
    if row.channel == "email":
        keep_until = row.created_at + timedelta(hours=config["NOTIFY_EMAIL_KEEP_HOURS"])
        if not error.permanent and retry_at <= keep_until:
            logger.warning("notification %s (email, %s, attempt %d) failed, retrying: %s",
                           row.id, row.event, row.attempts, error)
            _retry_later(row, retry_at)
            return
    elif not error.permanent and row.attempts < config["NOTIFY_ATTEMPTS"]:
        logger.warning("notification %s (%s, %s, attempt %d) failed, retrying: %s",
                       row.id, row.channel, row.event, row.attempts, error)
        _retry_later(row, retry_at)
        return
    elif _fall_back_to_email(row, job, config):
        logger.error("notification %s (%s, %s) failed after %d attempt(s), sent by email instead: %s",
                     row.id, row.channel, row.event, row.attempts, error)
        row.status = "fallback"
        return
    logger.error("notification %s (%s, %s) failed for good after %d attempt(s): %s",
                 row.id, row.channel, row.event, row.attempts, error)
    row.status = "failed"


def _fall_back_to_email(row: Notification, job: Job, config: Mapping[str, Any]) -> bool:
    """Send this event by email instead (spec §7.4): to the job's recipients, else its owner.
    False if email is not configured, or already carries this event."""
    if not config.get("SMTP_HOST"):
        return False
    if row.execution_id is None and job.notification_emails:
        return False  # a test: its email went to the recipients alongside this one
    if row.execution_id is not None and db.session.scalar(select(Notification.id).where(
            Notification.execution_id == row.execution_id, Notification.event == row.event,
            Notification.channel == "email")) is not None:
        return False
    owner = db.session.get(User, job.owner_id)
    recipients = list(job.notification_emails or []) or ([owner.email] if owner and "@" in owner.email else [])
    if not recipients:
        return False
    fallback = Notification(job_id=job.id, execution_id=row.execution_id, event=row.event, channel="email",
                            recipients=recipients, status="pending", next_attempt_at=utcnow(), fallback_of=row.id)
    try:
        with db.session.begin_nested():  # Slack and the webhook may fall back at the same moment
            _add_and_send([fallback])
    except IntegrityError:
        return True  # the other one's email carries this event
    return True


# --- the sweeper's part -------------------------------------------------------------------------

def resend_stranded(*, limit: int = 500) -> int:
    """Re-send notifications whose message was lost, and take back those whose worker died while
    sending. Returns how many were re-sent."""
    now = utcnow()
    # due since their claim, so that the query below re-sends them now, not a sweep 30 s later
    db.session.execute(update(Notification)
                       .where(Notification.status == "sending", Notification.claimed_at < now - SENDING_STALE_AFTER)
                       .values(status="pending", next_attempt_at=Notification.claimed_at)
                       .execution_options(synchronize_session=False))
    ids = list(db.session.scalars(select(Notification.id).where(
        Notification.status == "pending", Notification.next_attempt_at < now - RESEND_AFTER).limit(limit)))
    if ids:
        db.session.execute(update(Notification).where(Notification.id.in_(ids)).values(next_attempt_at=now)
                           .execution_options(synchronize_session=False))
        send = dispatch.notification_sender()
        after_commit(lambda: [send(notification_id) for notification_id in ids])
    return len(ids)
