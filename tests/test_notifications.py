"""Notifications end to end: real worker processes run the jobs and deliver their notifications to
real peers — an SMTP server (aiosmtpd, standing in for the relay) and a local HTTP server
(standing in for Slack's incoming webhooks and for a customer's webhook receiver)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import signal
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from app.extensions import db
from app.models import Execution, Notification
from app.notifications.channels import signing_key, webhook_signature
from app.services import notifications
from app.services.actors import SYSTEM
from app.services.api_tokens import issue_token
from app.services.users import create_user
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

BASE_URL = "https://jobs.example.test"
FINAL = ("sent", "failed", "fallback")
#: keeps the breaker out of tests that are not about it
NO_BREAKER = {"NOTIFY_BREAKER_FAILURES": 1000}


# --- the peers ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpRelay:
    """An SMTP server that records what it accepted, and can answer ``451`` or stall on cue."""

    def __init__(self, port: int):
        self.port = port
        self.accepted: list[email.message.EmailMessage] = []
        self.envelopes: list[list[str]] = []  # the recipients of each accepted message
        self.data_seen: list[email.message.EmailMessage] = []  # every DATA, refused ones too
        self.refuse_rcpt = 0  # answer 451 to the next N RCPTs
        self.refuse_data = 0  # answer 451 to the next N DATAs
        self.stall_rcpt: threading.Event | None = None  # hold the next RCPT until set
        self.stall_quit: threading.Event | None = None  # hold the next QUIT (after 250) until set
        self.stalled = threading.Event()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    async def _stall(self, attribute: str) -> None:
        gate = getattr(self, attribute)
        if gate is None:
            return
        setattr(self, attribute, None)  # only the first one
        self.stalled.set()
        while not gate.is_set():
            await asyncio.sleep(0.02)  # never block the server's event loop

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await self._stall("stall_rcpt")
        if self.refuse_rcpt:
            self.refuse_rcpt -= 1
            return "451 4.7.1 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.data_seen.append(message)
        if self.refuse_data:
            self.refuse_data -= 1
            return "451 4.3.0 try later"
        self.accepted.append(message)
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 OK queued"

    async def handle_QUIT(self, server, session, envelope):
        await self._stall("stall_quit")
        return "221 Bye"


class WebhookPeer:
    """An HTTP server recording every POST; ``answers`` maps a path to its status (default 200)."""

    def __init__(self):
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: dict[str, int] = {}
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.calls.append((self.path, dict(self.headers), body))
                self.send_response(peer.answers.get(self.path, 200))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def calls_to(self, path: str) -> list[tuple[str, dict[str, str], bytes]]:
        return [call for call in self.calls if call[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp():
    relay = SmtpRelay(free_port())
    relay.start()
    yield relay
    for gate in (relay.stall_rcpt, relay.stall_quit):
        if gate is not None:
            gate.set()
    relay.stop()


@pytest.fixture
def hooks():
    peer = WebhookPeer()
    yield peer
    peer.close()


@pytest.fixture
def settings(settings, smtp, hooks):
    """The shared settings, pointed at the peers (for the test app and the workers alike)."""
    settings.update({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp.port, "SMTP_STARTTLS": False,
                     "SMTP_FROM": "jobplane@example.test", "WEBHOOK_ALLOW_HTTP": True,
                     "WEBHOOK_ALLOW_PRIVATE": True, "NOTIFY_RETRY_SECONDS": 0.5, "BASE_URL": BASE_URL,
                     "KILL_GRACE_SECONDS": 1})
    return settings


# --- helpers ------------------------------------------------------------------------------------

def create_job(client, headers, **fields) -> str:
    response = client.post("/api/v1/jobs", headers=headers, json={
        "name": "notified", "job_type": "bash", "script": "exit 3", **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def run(client, headers, job_id) -> str:
    response = client.post(f"/api/v1/jobs/{job_id}/run", headers=headers)
    assert response.status_code in (200, 201, 202), response.json
    return response.json["id"]


def rows(app, **where) -> list[Notification]:
    with app.app_context():
        query = select(Notification).order_by(Notification.created_at, Notification.channel)
        for key, value in where.items():
            query = query.where(getattr(Notification, key) == value)
        found = list(db.session.scalars(query))
        db.session.expunge_all()
    return found


def execution(app, execution_id) -> Execution:
    with app.app_context():
        found = db.session.get(Execution, execution_id)
        db.session.expunge_all()
    return found


def executions_of(app, job_id) -> list[Execution]:
    with app.app_context():
        found = list(db.session.scalars(select(Execution).where(Execution.job_id == job_id)
                                        .order_by(Execution.created_at, Execution.attempt)))
        db.session.expunge_all()
    return found


def finished(app, execution_id) -> Execution | None:
    """The execution once it has its final status (its notifications are recorded with it)."""
    found = execution(app, execution_id)
    return found if found.status not in ("queued", "running") else None


def settled(app, count, **where):
    """Waits for at least ``count`` notifications matching ``where``, every one delivered or given up."""
    def check():
        found = rows(app, **where)
        return found if len(found) >= count and all(row.status in FINAL for row in found) else None
    return check


def sent_emails(app, count):
    def check():
        found = [row for row in rows(app, channel="email") if row.status == "sent"]
        return found if len(found) >= count else None
    return check


def subjects(relay: SmtpRelay) -> list[str]:
    return [message["Subject"] for message in relay.accepted]


def user_with_token(app, email_address: str, token: str) -> dict[str, str]:
    with app.app_context():
        user = create_user(actor=SYSTEM, email=email_address, role="job_creator")
        issue_token(actor=SYSTEM, user=user, name="test", token=token)
        db.session.commit()
    return {"Authorization": f"Bearer {token}"}


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


# --- what is said, and where --------------------------------------------------------------------

HOSTILE_NAME = "Nightly <script>alert(1)</script> & co\nBcc: victim@example.test\u2028X-Evil: 1"
#: a Git URL that is a local path: the run fails with an error that quotes it
HOSTILE_SCRIPT_URL = "/srv/<script>steal()</script>&more"


def test_a_failure_is_one_email_one_slack_message_and_one_signed_webhook_call(app, client, admin, processes,
                                                                               smtp, hooks):
    # Given a job whose name and error carry markup, an ampersand and line breaks, with all three channels
    processes.worker()
    job_id = create_job(client, admin, name=HOSTILE_NAME, script=None, script_url=HOSTILE_SCRIPT_URL,
                        script_path="run.sh", notification_emails=["ops@example.test", "dev@example.test"],
                        notification_slack_webhook=hooks.url("/slack/T0/B0/x"),
                        notification_webhook_url=hooks.url("/receiver"))
    # When it fails
    execution_id = run(client, admin, job_id)
    done = wait_for(lambda: finished(app, execution_id), timeout=30, message="the run")
    assert done.status == "failed" and "<script>steal()</script>&more" in done.error_message
    delivered = wait_for(settled(app, 3, job_id=done.job_id), timeout=30, message="3 deliveries\n" + processes.logs())
    assert len(delivered) == 3 and {(row.channel, row.status, row.attempts, row.event) for row in delivered} == {
        ("email", "sent", 1, "job_failed"), ("slack", "sent", 1, "job_failed"), ("webhook", "sent", 1, "job_failed")}
    link = f"{BASE_URL}/executions/{execution_id}"
    when = done.completed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    flat_name = "Nightly <script>alert(1)</script> & co Bcc: victim@example.test X-Evil: 1"

    # Then exactly one email, to exactly the job's recipients, with a one-line subject
    assert len(smtp.accepted) == 1, subjects(smtp)
    message = smtp.accepted[0]
    assert sorted(smtp.envelopes[0]) == ["dev@example.test", "ops@example.test"]
    assert message["Subject"] == f"[Job Failure] {flat_name}"
    assert message["Bcc"] is None and message["X-Evil"] is None
    text = message.get_body(("plain",)).get_content()
    assert f"failed at {when}." in text
    assert f"Execution ID: {execution_id}" in text
    assert f"Error Message: {done.error_message}" in text
    assert f"View full logs: {link}" in text
    html_part = message.get_body(("html",)).get_content()
    assert "<script" not in html_part
    assert "Nightly &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html_part
    assert "&lt;script&gt;steal()&lt;/script&gt;&amp;more" in html_part
    assert when in html_part and execution_id in html_part
    assert f'<a href="{link}">' in html_part

    # …one Slack message with the spec's blocks, user content escaped everywhere
    [(_, _, body)] = hooks.calls_to("/slack/T0/B0/x")
    payload = json.loads(body)
    header, fields, error, actions = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "❌ Job Failure Alert"}}
    assert fields["fields"][0]["text"].startswith("*Job:*\nNightly &lt;script&gt;alert(1)&lt;/script&gt; &amp; co")
    assert fields["fields"][1]["text"] == f"*Time:*\n{when}"
    assert error["text"]["text"].startswith("*Error:*\n")
    assert "&lt;script&gt;steal()&lt;/script&gt;&amp;more" in error["text"]["text"]
    assert actions["elements"] == [{"type": "button", "text": {"type": "plain_text", "text": "View Logs"}, "url": link}]
    for value in strings_in(payload):
        assert "<" not in value and ">" not in value, value  # no mention, no forged link
        assert value.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").count("&") == 0, value

    # …and one webhook call, signed with the key receivers are given
    [(_, headers, body)] = hooks.calls_to("/receiver")
    webhook_row = next(row for row in delivered if row.channel == "webhook")
    assert headers["X-Jobplane-Delivery"] == str(webhook_row.id)
    assert headers["X-Jobplane-Signature"] == webhook_signature(signing_key(app.config),
                                                                headers["X-Jobplane-Timestamp"], body)
    assert headers["X-Jobplane-Signature"] != webhook_signature(b"another key", headers["X-Jobplane-Timestamp"], body)
    event = json.loads(body)
    assert (event["event"], event["job_name"], event["execution_id"], event["execution_url"], event["status"]) == (
        "job_failed", HOSTILE_NAME, execution_id, link, "failed")


def test_only_the_final_attempt_notifies(app, client, admin, processes, smtp):
    # Given a job that fails every time and is retried once
    processes.worker()
    job_id = create_job(client, admin, name="retried", script='echo "attempt $JOBPLANE_ATTEMPT" >&2; exit 1',
                        max_retries=1, retry_delay_seconds=0, notification_emails=["ops@example.test"])
    # When it runs
    run(client, admin, job_id)
    attempts = wait_for(lambda: [e for e in executions_of(app, job_id) if e.status == "failed"] if len(
        [e for e in executions_of(app, job_id) if e.status == "failed"]) == 2 else None, timeout=30,
        message="both attempts")
    found = wait_for(settled(app, 1, job_id=attempts[0].job_id), timeout=30, message="the notification")
    # Then the first attempt, which was retried, told nobody; the final one sent exactly one email
    assert rows(app, execution_id=attempts[0].id) == []
    assert [(row.execution_id, row.event, row.status) for row in found] == [(attempts[1].id, "job_failed", "sent")]
    assert len(smtp.accepted) == 1
    text = smtp.accepted[0].get_body(("plain",)).get_content()
    assert f"Execution ID: {attempts[1].id}" in text and "Error Message: exited with code 1" in text
    assert "last error output:\r\nattempt 2" in text  # what the script said on stderr says why


def test_a_worker_busy_with_long_runs_still_notifies_at_once(app, client, admin, processes, smtp):
    # Given a worker with one thread for runs: a failing job, then a long one that takes the thread
    processes.worker(WORKER_THREADS=1)
    failing = create_job(client, admin, name="fails", script="exit 1", notification_emails=["ops@example.test"])
    sleeper = create_job(client, admin, name="sleeps", script="sleep 60")
    failed_id = run(client, admin, failing)
    sleeping_id = run(client, admin, sleeper)
    wait_for(lambda: execution(app, sleeping_id).status == "running", timeout=30, message="the long run")
    # Then the failure's email arrives while the only run thread is still busy
    wait_for(lambda: smtp.accepted, timeout=15, message="the email, sent by the worker's notification process")
    assert execution(app, failed_id).status == "failed"
    assert execution(app, sleeping_id).status == "running"


def test_timeout_and_opt_in_success_raise_their_own_events(app, client, admin, processes, smtp):
    processes.worker()
    timeout_job = create_job(client, admin, name="slow", script="sleep 30", timeout_seconds=1,
                             notification_emails=["ops@example.test"])
    success_job = create_job(client, admin, name="quiet", script="true", notification_emails=["ops@example.test"])
    opted_in = create_job(client, admin, name="chatty", script="true", notification_emails=["ops@example.test"],
                          notify_on=["job_succeeded"])
    ran = {job_id: run(client, admin, job_id) for job_id in (timeout_job, success_job, opted_in)}
    for execution_id in ran.values():
        wait_for(lambda: finished(app, execution_id), timeout=30, message="the runs")
    assert execution(app, ran[timeout_job]).status == "timed_out"
    wait_for(settled(app, 2), timeout=30, message="two notifications")
    # Then the timeout is a job_timeout, the opted-in success a job_succeeded, the other success nothing
    assert sorted((row.event, str(row.job_id)) for row in rows(app)) == sorted(
        [("job_timeout", timeout_job), ("job_succeeded", opted_in)])
    assert sorted(subjects(smtp)) == ["[Job Success] chatty", "[Job Timeout] slow"]
    timeout_mail = next(m for m in smtp.accepted if m["Subject"] == "[Job Timeout] slow")
    assert "timed out at" in timeout_mail.get_body(("plain",)).get_content()
    assert "timed out after 1 s" in timeout_mail.get_body(("plain",)).get_content()


def test_a_success_after_a_failure_is_job_recovered(app, client, admin, processes, smtp):
    processes.worker()
    job_id = create_job(client, admin, name="flaky", script='[ "$MODE" = "mode-good" ] || { echo bad >&2; exit 1; }',
                        notification_emails=["ops@example.test"])

    def fire_with(mode: str) -> Execution:
        assert client.put(f"/api/v1/jobs/{job_id}/secrets/MODE", headers=admin,
                          json={"value": mode}).status_code in (200, 201)
        execution_id = run(client, admin, job_id)
        return wait_for(lambda: finished(app, execution_id), timeout=30, message=f"the run with {mode}")

    failed = fire_with("mode-bad")
    recovered = fire_with("mode-good")
    again = fire_with("mode-good")
    assert [failed.status, recovered.status, again.status] == ["failed", "success", "success"]
    wait_for(settled(app, 2), timeout=30, message="two notifications")
    # Then the failure and the recovery are told (job_succeeded is not in the default notify_on),
    # and a success after a success is not
    assert [(row.execution_id, row.event) for row in rows(app)] == [(failed.id, "job_failed"),
                                                                    (recovered.id, "job_recovered")]
    assert sorted(subjects(smtp)) == ["[Job Failure] flaky", "[Job Recovered] flaky"]  # sent in parallel
    assert rows(app, execution_id=again.id) == []


# --- when the relay or Slack misbehaves ---------------------------------------------------------

def test_an_email_refused_for_now_is_retried_with_one_message_id(app, client, admin, processes, smtp):
    # Given a relay that answers 451 to the first RCPT (greylisting) and to the first DATA
    smtp.refuse_rcpt, smtp.refuse_data = 1, 1
    processes.worker(**NO_BREAKER)
    job_id = create_job(client, admin, name="greylisted", notification_emails=["ops@example.test"])
    execution_id = run(client, admin, job_id)
    # Then the third attempt gets through, and the row says how it went
    [row] = wait_for(settled(app, 1, execution_id=execution_id), timeout=30, message="the email\n" + processes.logs())
    assert (row.status, row.attempts) == ("sent", 3), row.last_error
    assert "451" in row.last_error
    assert subjects(smtp) == ["[Job Failure] greylisted"]
    # every copy the relay saw is the same message to mail clients
    assert len(smtp.data_seen) == 2 and len({m["Message-ID"] for m in smtp.data_seen}) == 1


def test_an_email_waits_for_a_relay_that_is_down(app, client, admin, processes, smtp):
    # Given a relay that is not listening yet
    smtp.stop()
    processes.worker(**NO_BREAKER)
    job_id = create_job(client, admin, name="relay down", notification_emails=["ops@example.test"])
    execution_id = run(client, admin, job_id)
    # (an attempt counts from its start: "pending" again means the second one has ended, refused)
    wait_for(lambda: [row for row in rows(app, execution_id=execution_id)
                      if row.attempts >= 2 and row.status == "pending"],
             timeout=30, message="two refused attempts")
    [waiting] = rows(app, execution_id=execution_id)
    assert waiting.status == "pending" and "refused" in waiting.last_error.lower()
    # When it comes up
    smtp.start()
    # Then the email arrives, once
    [row] = wait_for(settled(app, 1, execution_id=execution_id), timeout=30, message="the email")
    assert row.status == "sent" and row.attempts >= 3 and "refused" in row.last_error.lower()
    assert subjects(smtp) == ["[Job Failure] relay down"]


def test_slack_failing_falls_back_to_email_to_the_owner(app, client, admin, processes, smtp, hooks):
    # Given Slack answering 500, and a job with no email recipients whose owner has an address
    hooks.answers["/slack/down"] = 500
    processes.worker(**NO_BREAKER)
    owner = user_with_token(app, "owner@example.test", "jp_test_owner_token_0123456789")
    lonely = create_job(client, owner, name="slack only", notification_slack_webhook=hooks.url("/slack/down"))
    # …and one with recipients, which email already covers
    covered = create_job(client, admin, name="slack and email", notification_slack_webhook=hooks.url("/slack/down"),
                         notification_emails=["ops@example.test"])
    first, second = run(client, owner, lonely), run(client, admin, covered)
    for execution_id in (first, second):
        wait_for(lambda: finished(app, execution_id), timeout=30, message="the runs")
    slack, fallback = wait_for(settled(app, 2, execution_id=first), timeout=30, message="the fallback")
    if slack.channel == "email":
        slack, fallback = fallback, slack
    # Then after NOTIFY_ATTEMPTS calls Slack's row is `fallback` and the event went to the owner by email
    assert (slack.channel, slack.status, slack.attempts) == ("slack", "fallback", 3)
    assert "500" in slack.last_error
    assert (fallback.channel, fallback.status, fallback.event, fallback.fallback_of, fallback.recipients) == (
        "email", "sent", "job_failed", slack.id, ["owner@example.test"])
    # …and the job that has recipients got its one email, not a second one
    covered_rows = wait_for(settled(app, 2, execution_id=second), timeout=30, message="the covered job")
    assert {(row.channel, row.status) for row in covered_rows} == {("email", "sent"), ("slack", "failed")}
    assert len(hooks.calls_to("/slack/down")) == 6
    assert sorted(subjects(smtp)) == ["[Job Failure] slack and email", "[Job Failure] slack only"]
    owner_mail = smtp.accepted[[s for s in smtp.envelopes].index(["owner@example.test"])]
    assert f"{BASE_URL}/executions/{first}" in owner_mail.get_body(("plain",)).get_content()


def test_an_open_breaker_holds_slack_back_then_closes(app, client, admin, processes, smtp, hooks):
    # Given Slack failing, a breaker that opens after two failures, and jobs that also email
    hooks.answers["/slack/down"] = 500
    processes.worker(NOTIFY_BREAKER_FAILURES=2, NOTIFY_BREAKER_SECONDS=10)
    failing = create_job(client, admin, name="first", notification_slack_webhook=hooks.url("/slack/down"),
                         notification_emails=["ops@example.test"])
    healthy = create_job(client, admin, name="second", notification_slack_webhook=hooks.url("/slack/fine"),
                         notification_emails=["ops@example.test"])
    first = run(client, admin, failing)
    # When Slack has failed twice
    held = wait_for(lambda: [row for row in rows(app, execution_id=first, channel="slack")
                             if row.last_error == "slack circuit breaker open"], timeout=30,
                    message="the breaker to open\n" + processes.logs())
    # Then the third attempt was held back without a call, and a healthy hook is held back too
    assert held[0].attempts == 2 and held[0].status == "pending"
    second = run(client, admin, healthy)
    wait_for(lambda: [row for row in rows(app, execution_id=second, channel="slack")
                      if row.last_error == "slack circuit breaker open"], timeout=30, message="the second held back")
    assert len(hooks.calls_to("/slack/down")) == 2 and hooks.calls_to("/slack/fine") == []
    wait_for(sent_emails(app, 2), timeout=30, message="emails, another channel, not held back")
    # …and once it closes, both are tried again: the healthy hook gets its message
    wait_for(settled(app, 1, execution_id=second, channel="slack"), timeout=30, message="the breaker to close")
    [retried] = wait_for(settled(app, 1, execution_id=first, channel="slack"), timeout=30, message="the last try")
    assert [row.status for row in rows(app, execution_id=second, channel="slack")] == ["sent"]
    assert (retried.status, retried.attempts) == ("failed", 3)  # email already carries the event
    assert len(hooks.calls_to("/slack/down")) == 3 and len(hooks.calls_to("/slack/fine")) == 1


def test_the_breaker_counts_the_channel_not_one_customer(app, client, admin, processes, smtp, hooks):
    # Given a breaker that opens after two failures, a deleted Slack hook (404) and a dead receiver
    hooks.answers["/slack/gone"] = 404
    hooks.answers["/receiver/dead"] = 500
    processes.worker(NOTIFY_BREAKER_FAILURES=2, NOTIFY_BREAKER_SECONDS=60)
    gone = create_job(client, admin, name="gone", notification_slack_webhook=hooks.url("/slack/gone"),
                      notification_emails=["ops@example.test"])
    dead = create_job(client, admin, name="dead", notification_webhook_url=hooks.url("/receiver/dead", "localhost"),
                      notification_emails=["ops@example.test"])
    for job_id in (gone, gone, dead):
        execution_id = run(client, admin, job_id)
        wait_for(lambda: finished(app, execution_id), timeout=30, message="the run")
    wait_for(settled(app, 2, channel="slack"), timeout=30, message="the 404s\n" + processes.logs())
    assert [(row.status, row.attempts) for row in rows(app, channel="slack")] == [("failed", 1)] * 2  # at once
    wait_for(lambda: [row for row in rows(app, channel="webhook") if row.last_error == "webhook circuit breaker open"],
             timeout=30, message="the dead receiver's breaker to open")
    assert len(hooks.calls_to("/receiver/dead")) == 2
    # When other jobs notify through a healthy Slack hook and a healthy receiver on another host
    healthy = create_job(client, admin, name="healthy", notification_slack_webhook=hooks.url("/slack/fine"),
                         notification_webhook_url=hooks.url("/receiver/fine"))
    execution_id = run(client, admin, healthy)
    delivered = wait_for(settled(app, 2, execution_id=execution_id), timeout=30, message="the healthy ones")
    # Then neither is held back by the others' failures
    assert {(row.channel, row.status) for row in delivered} == {("slack", "sent"), ("webhook", "sent")}
    assert len(hooks.calls_to("/slack/fine")) == 1 and len(hooks.calls_to("/receiver/fine")) == 1


# --- a worker dying mid-delivery ----------------------------------------------------------------

def _strand(app, notification_id) -> None:
    """Make the row look as it will five minutes after its worker died (the sweeper's threshold)."""
    with app.app_context():
        row = db.session.get(Notification, notification_id)
        db.session.execute(update(Notification).where(Notification.id == notification_id)
                           .values(claimed_at=row.claimed_at - timedelta(minutes=6)))
        db.session.commit()


def test_a_worker_killed_before_the_relay_took_the_email_sends_it_once(app, client, admin, processes, smtp):
    # Given a relay that stalls the first delivery before accepting anything
    smtp.stall_rcpt = release = threading.Event()
    worker = processes.worker(**NO_BREAKER)
    job_id = create_job(client, admin, name="killed mid-send", notification_emails=["ops@example.test"])
    execution_id = run(client, admin, job_id)
    assert smtp.stalled.wait(30), processes.logs()
    [row] = rows(app, execution_id=execution_id)
    assert row.status == "sending"
    # When the worker is SIGKILLed mid-send, a new one starts, and a scheduler leader sweeps
    processes.kill(worker, signal.SIGKILL)
    release.set()
    processes.worker(**NO_BREAKER)
    processes.scheduler(SWEEP_INTERVAL_SECONDS=0.5)
    _strand(app, row.id)
    # Then the sweeper takes it back and the relay gets exactly one message
    [row] = wait_for(settled(app, 1, execution_id=execution_id), timeout=20, message="the re-send\n" + processes.logs())
    assert (row.status, row.attempts) == ("sent", 2)
    assert subjects(smtp) == ["[Job Failure] killed mid-send"]


def test_a_worker_killed_after_the_relay_took_the_email_repeats_it_with_one_message_id(app, client, admin,
                                                                                       processes, smtp):
    # Given a relay that has accepted the message (250) but stalls the goodbye
    smtp.stall_quit = release = threading.Event()
    worker = processes.worker(**NO_BREAKER)
    job_id = create_job(client, admin, name="killed after 250", notification_emails=["ops@example.test"])
    execution_id = run(client, admin, job_id)
    assert smtp.stalled.wait(30), processes.logs()
    assert len(smtp.accepted) == 1
    # When the worker dies before recording the delivery, and the sweeper takes the row back
    processes.kill(worker, signal.SIGKILL)
    release.set()
    processes.worker(**NO_BREAKER)
    [row] = rows(app, execution_id=execution_id)
    assert row.status == "sending"
    _strand(app, row.id)
    with app.app_context():
        assert notifications.resend_stranded() == 1
        db.session.commit()
    # Then the email is sent again: at least once, not exactly once (SMTP cannot tell a
    # retry from a new message; RFC 1047) — but as the same message, which mail clients collapse
    [row] = wait_for(settled(app, 1, execution_id=execution_id), timeout=20, message="the re-send")
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(smtp.accepted) == 2
    assert len({message["Message-ID"] for message in smtp.accepted}) == 1
    assert smtp.accepted[0]["Message-ID"] == f"<{row.id}@example.test>"
