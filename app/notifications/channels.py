"""The three channels. Each ``send`` delivers one notification or raises ``DeliveryError``."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any, Mapping

import requests

from app.notifications import content as render
from app.notifications.content import NotificationContent
from app.notifications.urls import UnsafeUrl, check_before_call

HTTP_TIMEOUT_SECONDS = 10.0


class DeliveryError(Exception):
    """The channel did not take the notification. ``permanent``: trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def send_email(config: Mapping[str, Any], c: NotificationContent, recipients: list[str], *,
               message_id: str) -> str | None:
    """One email to all recipients over SMTP (STARTTLS and login when configured).

    Returns:
      a note of the recipients the relay refused while it took the others, else None.
    """
    if not config.get("SMTP_HOST"):
        raise DeliveryError("email is not configured: set JOBPLANE_SMTP_HOST", permanent=True)
    message = EmailMessage()
    message["Subject"] = render.email_subject(c)
    message["From"] = config["SMTP_FROM"]
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    # the same id on every attempt: a retried delivery of one notification is one message to mail
    # clients (make_msgid() adds the time and a random number: a new id each time)
    domain = parseaddr(config["SMTP_FROM"])[1].rpartition("@")[2] or "jobplane"
    message["Message-ID"] = f"<{message_id}@{domain}>"
    message.set_content(render.email_text(c))
    message.add_alternative(render.email_html(c), subtype="html")
    try:
        with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=config["SMTP_TIMEOUT_SECONDS"]) as smtp:
            if config["SMTP_STARTTLS"]:
                smtp.starttls(context=ssl.create_default_context())
            if config.get("SMTP_USERNAME"):
                smtp.login(config["SMTP_USERNAME"], config.get("SMTP_PASSWORD") or "")
            # the envelope is the validated list itself, not a re-parse of the To header
            refused = smtp.send_message(message, to_addrs=list(recipients))
    except smtplib.SMTPRecipientsRefused as error:
        # 4xx (greylisting, rate limits) is "try later"; only 5xx refusals are final
        permanent = all(code >= 500 for code, _ in error.recipients.values())
        raise DeliveryError(f"every recipient was refused: {_answers(error.recipients)}", permanent=permanent) from None
    except (smtplib.SMTPException, OSError) as error:
        raise DeliveryError(f"SMTP {config['SMTP_HOST']}:{config['SMTP_PORT']}: {error}") from None
    if refused:  # the others have it: sent, with the refusals on record
        return f"refused recipients: {_answers(refused)}"
    return None


def _answers(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{address} ({code} {reply.decode(errors='replace')})"
                     for address, (code, reply) in sorted(refused.items()))


def _post(config: Mapping[str, Any], url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        check_before_call(url, config)
    except UnsafeUrl as error:
        raise DeliveryError(f"webhook URL refused: {error}", permanent=True) from None
    try:
        response = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers},
                                 timeout=HTTP_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as error:
        raise DeliveryError(f"webhook call failed: {type(error).__name__}") from None
    if response.status_code >= 300:
        permanent = response.status_code in (400, 401, 403, 404, 410)
        raise DeliveryError(f"webhook answered {response.status_code}", permanent=permanent)


def send_slack(config: Mapping[str, Any], c: NotificationContent, url: str) -> None:
    _post(config, url, json.dumps(render.slack_payload(c)).encode(), {})


def webhook_signature(key: bytes, timestamp: str, body: bytes) -> str:
    """``X-Jobplane-Signature``: ``sha256=`` HMAC of ``<timestamp>.<body>`` with the signing key."""
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signing_key(config: Mapping[str, Any]) -> bytes:
    """The webhook signing key, derived from ``JOBPLANE_SECRET_KEY`` (receivers get it from
    ``jobplane notifications signing-key``)."""
    return hmac.new(config["SECRET_KEY"].encode(), b"jobplane webhook signing v1", hashlib.sha256).digest()


def send_webhook(config: Mapping[str, Any], c: NotificationContent, url: str, *, delivery_id: str) -> None:
    body = json.dumps(render.webhook_payload(c), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    _post(config, url, body, {"X-Jobplane-Timestamp": timestamp, "X-Jobplane-Delivery": delivery_id,
                              "X-Jobplane-Signature": webhook_signature(signing_key(config), timestamp, body)})
