"""What a notification says, rendered for each channel from the spec's templates (§5.4, §7.4).

Everything that comes from users (job names, error messages) is escaped for the channel: HTML
for email, Slack's mrkdwn control characters for Slack.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

HEADLINES = {
    "job_failed": ("Job Failure", "❌ Job Failure Alert", "failed"),
    "job_timeout": ("Job Timeout", "⏱️ Job Timeout Alert", "timed out"),
    "job_lost": ("Job Lost", "⚠️ Job Lost Alert", "was lost (its worker died)"),
    "job_recovered": ("Job Recovered", "✅ Job Recovered", "succeeded again after failing"),
    "job_succeeded": ("Job Success", "✅ Job Succeeded", "succeeded"),
    "test": ("Test Notification", "🔔 Test Notification", "sent a test notification"),
}
FOOTER = "This is an automated notification from Jobplane."
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class NotificationContent:
    event: str
    job_id: str
    job_name: str
    execution_id: str | None
    status: str | None
    occurred_at: datetime
    error_message: str | None
    exit_code: int | None
    attempt: int | None
    execution_url: str | None

    @property
    def tag(self) -> str:
        return HEADLINES[self.event][0]

    @property
    def when(self) -> str:
        return self.occurred_at.strftime("%Y-%m-%d %H:%M:%S UTC")

    @property
    def error(self) -> str:
        text = self.error_message or (f"exit code {self.exit_code}" if self.exit_code not in (None, 0) else "none")
        return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "… (truncated)"


def email_subject(c: NotificationContent) -> str:
    # no header injection: every line break str.splitlines() knows (\v, \f, \x1c-\x1e, \x85,
    # \u2028…), which the email package refuses in a header with a ValueError, not only \r and \n
    name = " ".join(c.job_name.splitlines())
    return f"[{c.tag}] {name}"


def email_text(c: NotificationContent) -> str:
    lines = [f'Job "{c.job_name}" {HEADLINES[c.event][2]} at {c.when}.', ""]
    if c.execution_id:
        lines += [f"Execution ID: {c.execution_id}"]
    lines += [f"Error Message: {c.error}", ""]
    if c.execution_url:
        lines += [f"View full logs: {c.execution_url}", ""]
    lines.append(FOOTER)
    return "\n".join(lines) + "\n"


def email_html(c: NotificationContent) -> str:
    e = html.escape
    link = (f'<p><a href="{e(c.execution_url, quote=True)}">View full logs</a></p>' if c.execution_url else "")
    execution = f"<p>Execution ID: <code>{e(c.execution_id)}</code></p>" if c.execution_id else ""
    return (f"<!doctype html><html><body>"
            f"<p>Job &quot;<strong>{e(c.job_name)}</strong>&quot; {e(HEADLINES[c.event][2])} at {e(c.when)}.</p>"
            f"{execution}<p>Error Message:</p><pre>{e(c.error)}</pre>{link}"
            f"<p><small>{e(FOOTER)}</small></p></body></html>")


def _mrkdwn(text: str) -> str:
    """Slack's escaping: &, < and > are control characters; mentions and links start with <."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(c: NotificationContent) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": HEADLINES[c.event][1]}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Job:*\n{_mrkdwn(c.job_name)}"},
            {"type": "mrkdwn", "text": f"*Time:*\n{c.when}"}]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error:*\n{_mrkdwn(c.error)}"}},
    ]
    if c.execution_url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "View Logs"}, "url": c.execution_url}]})
    # the text is the notification's fallback and push text: mrkdwn too, so escaped as well
    return {"text": f"[{c.tag}] {_mrkdwn(c.job_name)}", "blocks": blocks}


def webhook_payload(c: NotificationContent) -> dict[str, Any]:
    body = asdict(c)
    body["occurred_at"] = c.occurred_at.isoformat()
    return body
