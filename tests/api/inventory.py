"""The API's route inventory, and a world of people and objects to send each route a valid request.

Shared by the authorization matrix and the audit tests. Each keeps a table with one entry per
(method, rule) of the inventory and checks that its keys are the inventory, so a new route fails
both until someone decides who may call it and what it audits.

The world: the bootstrap admin (no team); team ``data`` with Alice and Amir (job creators) and
Vera (team viewer); team ``web`` with Bob (job creator) and Walt (team viewer). Objects are made
on demand with an *ownership* relative to the actor who will ask for them:

- ``own``: the actor's (for a team viewer, a job they made while they were a job creator);
- ``team``: a teammate's (for jobs, a job creator of the actor's team);
- ``foreign``: someone's in another team (for the admin, one of Alice's);
- ``None``: the route is about no object.

A list that can hold the object (``GET /api/v1/jobs``, ``GET /api/v1/tokens``) is asked whether it does.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Callable
from urllib.parse import quote

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, Execution, Team, User
from app.models.base import utcnow
from app.services import api_tokens, jobs, secrets, users
from app.services.actors import SYSTEM, Actor
from tests.secrets.helpers import JOB

#: Methods that are not routes of their own.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
#: Methods that change something, so must be audited.
MUTATING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
#: Rules under /api/ that are not the API: flask-smorest's OpenAPI document (and docs, when enabled).
NOT_API_BLUEPRINT = "api-docs"

#: A value no audit row, response or log may ever hold.
SECRET_VALUE = "s3cr3t-" + "Zq7RecognizableValue"
#: A Slack webhook URL is a credential too: its path is the secret part.
WEBHOOK_SECRET = "T000/B000/Xq9RecognizableHook"
WEBHOOK = f"https://hooks.slack.com/services/{WEBHOOK_SECRET}"
#: Where the jobs made with a notification channel send their email.
NOTIFIED_EMAIL = "oncall@example.com"
#: An id no object has.
MISSING_ID = "00000000-0000-0000-0000-000000000000"

#: name → (role, team); the admin is the bootstrap admin, with no team.
PEOPLE = {
    "alice": ("job_creator", "data"),
    "amir": ("job_creator", "data"),
    "bob": ("job_creator", "web"),
    "vera": ("team_viewer", "data"),
    "walt": ("team_viewer", "web"),
}
ACTORS = ("admin", *PEOPLE)
ROLE = {"admin": "admin", **{name: role for name, (role, _) in PEOPLE.items()}}
TEAM = {"admin": None, **{name: team for name, (_, team) in PEOPLE.items()}}
#: For each actor: the job creator of the same team whose jobs are "team" jobs (Bob has none).
TEAM_JOB_OWNER = {"alice": "amir", "amir": "alice", "vera": "alice", "walt": "bob"}
#: For each actor: a teammate, of any role, whose tokens and user are "team" objects.
TEAMMATE = {"alice": "amir", "amir": "alice", "bob": "walt", "vera": "alice", "walt": "bob"}
#: For each actor: a job creator of another team, whose objects are "foreign".
OUTSIDER = {"admin": "alice", "alice": "bob", "amir": "bob", "bob": "alice", "vera": "bob", "walt": "alice"}
OTHER_TEAM = {None: "data", "data": "web", "web": "data"}


def api_routes(app: Flask) -> set[tuple[str, str]]:
    """Every (method, rule) the app serves under ``/api/``, HEAD and OPTIONS aside."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and rule.endpoint.split(".")[0] != NOT_API_BLUEPRINT:
            routes |= {(method, rule.rule) for method in rule.methods - IMPLICIT_METHODS}
    return routes


def missing_and_extra(table: dict, inventory: set[tuple[str, str]], where: str) -> str:
    """A message for a table that does not match the inventory, or '' when it does."""
    missing = sorted(inventory - set(table))
    extra = sorted(set(table) - inventory)
    lines = [f"add a rule to {where} for the new route {m} {r}" for m, r in missing]
    lines += [f"remove the rule in {where} for {m} {r}: the app no longer serves it" for m, r in extra]
    return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class Call:
    """One HTTP request, and the id of the object it is about (the audited resource)."""

    method: str
    url: str
    json: dict[str, Any] | None = None
    subject: str | None = None
    headers: dict[str, str] | None = None  #: headers of the request itself (e.g. If-Match)

    def send(self, client: FlaskClient, headers: dict[str, str], **environ: Any):
        return client.open(self.url, method=self.method, json=self.json,
                           headers={**(self.headers or {}), **headers}, environ_base=environ)

    def with_json(self, json: dict[str, Any]) -> "Call":
        return replace(self, json=json)

    def with_headers(self, headers: dict[str, str]) -> "Call":
        return replace(self, headers={**(self.headers or {}), **headers})

    def with_subject(self, subject: str) -> "Call":
        """The same request about another object (e.g. one that does not exist)."""
        return replace(self, url=self.url.replace(self.subject, subject), subject=subject)


@dataclass(frozen=True)
class Request:
    """How to build a valid request to a route for an object of some ownership.

    ``kind`` says what ownership means here: ``job``, ``user``, ``team``, ``token``, or None for
    a route with no object.
    """

    kind: str | None
    build: Callable[["World", str, str | None], Call]


class World:
    """The people, teams and tokens of a test; objects are made fresh on demand."""

    def __init__(self, app: Flask, client: FlaskClient, admin_headers: dict[str, str]):
        self.app, self.client = app, client
        self.headers = {"admin": admin_headers}
        self._numbers = itertools.count(1)
        self._jobs: dict[str, str] = {}
        with app.app_context():
            self.teams = {}
            for name in ("data", "web"):
                team = Team(name=name)
                db.session.add(team)
                db.session.flush()
                self.teams[name] = str(team.id)
            self.ids = {"admin": str(db.session.scalar(select(User.id).where(User.email == "admin")))}
            for name, (role, team) in PEOPLE.items():
                user = users.create_user(actor=SYSTEM, email=f"{name}@example.com", role=role,
                                         team_id=uuid.UUID(self.teams[team]))
                _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="test")
                self.ids[name] = str(user.id)
                self.headers[name] = {"Authorization": f"Bearer {token}"}
            db.session.commit()

    # --- ownership ------------------------------------------------------------------------------

    @staticmethod
    def ownerships(kind: str | None, actor: str) -> list[str | None]:
        """The ownerships an object of ``kind`` can have for ``actor``."""
        if kind is None:
            return [None]
        found = ["own", "team", "foreign"]
        if (kind == "job" and actor not in TEAM_JOB_OWNER) or (kind in ("user", "token") and actor not in TEAMMATE):
            found.remove("team")
        if kind == "team":
            found = ["own", "foreign"] if TEAM[actor] else ["foreign"]
        return found

    def _owner(self, actor: str, ownership: str | None, team_members: dict[str, str]) -> str:
        if ownership in ("own", None):
            return actor
        return team_members[actor] if ownership == "team" else OUTSIDER[actor]

    def number(self) -> int:
        return next(self._numbers)

    # --- objects ----------------------------------------------------------------------------------

    def job(self, actor: str, ownership: str | None, *, fresh: bool = False, paused: bool = False,
            notified: bool = False) -> str:
        """A job of ``ownership`` for ``actor``: a shared one to read, a fresh one to change.

        ``notified``: a fresh job with an email recipient, so it has a notification channel
        (the shared jobs have none).
        """
        owner = self._owner(actor, ownership, TEAM_JOB_OWNER)
        shared = not (fresh or paused or notified)
        if shared and owner in self._jobs:
            return self._jobs[owner]
        with self.app.app_context():
            user = db.session.get(User, uuid.UUID(self.ids[owner]))
            creator = user if user.role != "team_viewer" else db.session.get(
                User, uuid.UUID(self.ids[TEAM_JOB_OWNER[owner]]))
            data = {**JOB, "name": f"{owner}-{self.number()}"}
            if notified:
                data["notification_emails"] = [NOTIFIED_EMAIL]
            job = jobs.create_job(actor=Actor(user=creator), data=data)
            # a team viewer's own job: made while they were a job creator
            job.owner_id, job.team_id = user.id, user.team_id
            if paused:
                jobs.pause_job(actor=SYSTEM, job_id=job.id)
            db.session.commit()
            job_id = str(job.id)
        if shared:
            self._jobs[owner] = job_id
        return job_id

    def execution(self, actor: str, ownership: str | None) -> str:
        """A fresh queued execution of a job of ``ownership``."""
        job_id = self.job(actor, ownership)
        with self.app.app_context():
            now = utcnow()
            execution = Execution(job_id=uuid.UUID(job_id), scheduled_for=now, triggered_by="manual",
                                  status="queued", fired_by="api", created_at=now, sent_at=now)
            db.session.add(execution)
            db.session.commit()
            return str(execution.id)

    def secret(self, job_id: str) -> str:
        """A fresh secret of the job; returns its name."""
        name = f"KEY_{self.number()}"
        with self.app.app_context():
            secrets.set_secret(actor=SYSTEM, job_id=uuid.UUID(job_id), name=name, value=SECRET_VALUE)
            db.session.commit()
        return name

    def user(self, actor: str, ownership: str | None) -> str:
        """The actor (own), or a fresh job creator in the actor's team or in another."""
        if ownership == "own":
            return self.ids[actor]
        team = TEAM[actor] if ownership == "team" else OTHER_TEAM[TEAM[actor]]
        with self.app.app_context():
            user = users.create_user(actor=SYSTEM, email=self.new_email(), role="job_creator",
                                     team_id=uuid.UUID(self.teams[team]))
            db.session.commit()
            return str(user.id)

    def team(self, actor: str, ownership: str | None) -> str:
        """The actor's team (own), or a fresh one nobody is in."""
        if ownership == "own":
            return self.teams[TEAM[actor]]
        with self.app.app_context():
            team = Team(name=self.new_name())
            db.session.add(team)
            db.session.commit()
            return str(team.id)

    def token(self, owner: str, *, expires_at=None, revoked: bool = False) -> tuple[str, str]:
        """A fresh API token of ``owner``: (its id, the token)."""
        with self.app.app_context():
            user = db.session.get(User, uuid.UUID(self.ids[owner]))
            row, plain = api_tokens.issue_token(actor=SYSTEM, user=user, name=f"t{self.number()}",
                                                expires_at=expires_at)
            if revoked:
                api_tokens.revoke_token(actor=SYSTEM, token_id=row.id)
            db.session.commit()
            return str(row.id), plain

    def token_of(self, actor: str, ownership: str | None) -> str:
        return self.token(self._owner(actor, ownership, TEAMMATE))[0]

    def new_email(self) -> str:
        return f"person{self.number()}@example.com"

    def new_name(self) -> str:
        return f"team-{self.number()}"

    # --- credentials that must not work -------------------------------------------------------------

    def bad_credentials(self) -> dict[str, dict[str, str]]:
        """Headers that authenticate nobody: none, revoked, expired, a disabled user's, unknown."""
        _, revoked = self.token("alice", revoked=True)
        _, expired = self.token("alice", expires_at=utcnow() - timedelta(seconds=1))
        with self.app.app_context():
            dora = users.create_user(actor=SYSTEM, email="dora@example.com", role="job_creator",
                                     team_id=uuid.UUID(self.teams["data"]))
            _, disabled = api_tokens.issue_token(actor=SYSTEM, user=dora, name="test")
            dora.is_active = False
            db.session.commit()
        return {
            "no token": {},
            "revoked token": {"Authorization": f"Bearer {revoked}"},
            "expired token": {"Authorization": f"Bearer {expired}"},
            "disabled user's token": {"Authorization": f"Bearer {disabled}"},
            "unknown token": {"Authorization": "Bearer jp_never_issued_0123456789abcdef"},
        }

    # --- the audit trail ------------------------------------------------------------------------------

    def audit_count(self) -> int:
        with self.app.app_context():
            return db.session.scalar(select(func.count()).select_from(AuditLog))

    def audit_rows_after(self, last_id: int) -> list[AuditLog]:
        with self.app.app_context():
            rows = db.session.scalars(select(AuditLog).where(AuditLog.id > last_id).order_by(AuditLog.id)).all()
            db.session.expunge_all()
            return list(rows)

    def last_audit_id(self) -> int:
        with self.app.app_context():
            return db.session.scalar(select(func.coalesce(func.max(AuditLog.id), 0)))


def _secret_url(job_id: str, name: str) -> str:
    return f"/api/v1/jobs/{job_id}/secrets/{name}"


def _put_secret(w: World, a: str, o: str | None) -> Call:
    job_id = w.job(a, o)
    return Call("PUT", _secret_url(job_id, f"KEY_{w.number()}"), {"value": SECRET_VALUE}, job_id)


def _delete_secret(w: World, a: str, o: str | None) -> Call:
    job_id = w.job(a, o)
    return Call("DELETE", _secret_url(job_id, w.secret(job_id)), subject=job_id)


def _job_call(method: str, suffix: str = "", **how: bool) -> Request:
    def build(w: World, a: str, o: str | None) -> Call:
        job_id = w.job(a, o, **how)
        return Call(method, f"/api/v1/jobs/{job_id}{suffix}", subject=job_id)
    return Request("job", build)


def _job_change(method: str, json: Callable[[World], dict] | None = None) -> Request:
    """A change to a fresh job (``PUT``, ``PATCH``, ``DELETE``), with a body that changes something."""
    def build(w: World, a: str, o: str | None) -> Call:
        job_id = w.job(a, o, fresh=True)
        return Call(method, f"/api/v1/jobs/{job_id}", json(w) if json else None, job_id)
    return Request("job", build)


def _execution_call(method: str, suffix: str = "") -> Request:
    def build(w: World, a: str, o: str | None) -> Call:
        execution_id = w.execution(a, o)
        return Call(method, f"/api/v1/executions/{execution_id}{suffix}", subject=execution_id)
    return Request("job", build)


def _by_id(kind: str, method: str, prefix: str, make: Callable[[World, str, str | None], str],
           suffix: str = "", json: Callable[[World], dict] | None = None) -> Request:
    def build(w: World, a: str, o: str | None) -> Call:
        subject = make(w, a, o)
        return Call(method, f"{prefix}/{subject}{suffix}", json(w) if json else None, subject)
    return Request(kind, build)


JOBS = "/api/v1/jobs"
JOB_RULE = "/api/v1/jobs/<uuid:job_id>"
EXECUTION_RULE = "/api/v1/executions/<uuid:execution_id>"
USER_RULE = "/api/v1/users/<uuid:user_id>"
TEAM_RULE = "/api/v1/teams/<uuid:team_id>"
PREVIEW = "/api/v1/schedules/preview?schedule=" + quote("30 2 * * *") + "&timezone=Europe/Berlin"

#: One valid request per (method, rule) of the API, for an object of a given ownership.
REQUESTS: dict[tuple[str, str], Request] = {
    ("GET", JOBS): Request("job", lambda w, a, o: Call("GET", f"{JOBS}?page_size=100", subject=w.job(a, o))),
    ("POST", JOBS): Request(None, lambda w, a, o: Call("POST", JOBS, {
        **JOB, "name": f"made-by-{a}", "notification_slack_webhook": WEBHOOK})),
    ("GET", JOB_RULE): _job_call("GET"),
    # a replacement and a change that each hold a webhook URL, which the audit row must mask
    ("PUT", JOB_RULE): _job_change("PUT", lambda w: {
        **JOB, "name": f"replaced-{w.number()}", "schedule": "0 3 * * *", "notification_slack_webhook": WEBHOOK}),
    ("PATCH", JOB_RULE): _job_change("PATCH", lambda w: {
        "description": f"changed {w.number()}", "notification_slack_webhook": WEBHOOK}),
    ("DELETE", JOB_RULE): _job_change("DELETE"),
    ("POST", JOB_RULE + "/run"): _job_call("POST", "/run", fresh=True),
    ("POST", JOB_RULE + "/pause"): _job_call("POST", "/pause", fresh=True),
    ("POST", JOB_RULE + "/resume"): _job_call("POST", "/resume", paused=True),
    ("GET", JOB_RULE + "/executions"): _job_call("GET", "/executions"),
    ("GET", JOB_RULE + "/notifications"): _job_call("GET", "/notifications"),
    ("GET", JOB_RULE + "/metrics"): _job_call("GET", "/metrics"),
    ("POST", JOB_RULE + "/notifications/test"): _job_call("POST", "/notifications/test", notified=True),
    ("GET", EXECUTION_RULE): _execution_call("GET"),
    ("GET", EXECUTION_RULE + "/log"): _execution_call("GET", "/log"),
    ("POST", EXECUTION_RULE + "/cancel"): _execution_call("POST", "/cancel"),
    ("GET", JOB_RULE + "/secrets"): _job_call("GET", "/secrets"),
    ("PUT", JOB_RULE + "/secrets/<string:name>"): Request("job", _put_secret),
    ("DELETE", JOB_RULE + "/secrets/<string:name>"): Request("job", _delete_secret),
    ("GET", "/api/v1/schedules/preview"): Request(None, lambda w, a, o: Call("GET", PREVIEW)),
    ("GET", "/api/v1/users"): Request(None, lambda w, a, o: Call("GET", "/api/v1/users")),
    ("POST", "/api/v1/users"): Request(None, lambda w, a, o: Call(
        "POST", "/api/v1/users", {"email": w.new_email(), "role": "job_creator"})),
    ("GET", USER_RULE): _by_id("user", "GET", "/api/v1/users", World.user),
    ("PATCH", USER_RULE): _by_id("user", "PATCH", "/api/v1/users", World.user,
                                 json=lambda w: {"display_name": f"Renamed {w.number()}"}),
    ("DELETE", USER_RULE): _by_id("user", "DELETE", "/api/v1/users", World.user),
    ("GET", USER_RULE + "/export"): _by_id("user", "GET", "/api/v1/users", World.user, "/export"),
    ("GET", "/api/v1/me"): Request(None, lambda w, a, o: Call("GET", "/api/v1/me")),
    ("GET", "/api/v1/me/export"): Request(None, lambda w, a, o: Call("GET", "/api/v1/me/export")),
    ("GET", "/api/v1/teams"): Request(None, lambda w, a, o: Call("GET", "/api/v1/teams")),
    ("POST", "/api/v1/teams"): Request(None, lambda w, a, o: Call("POST", "/api/v1/teams", {"name": w.new_name()})),
    ("GET", TEAM_RULE): _by_id("team", "GET", "/api/v1/teams", World.team),
    ("PATCH", TEAM_RULE): _by_id("team", "PATCH", "/api/v1/teams", World.team,
                                 json=lambda w: {"name": w.new_name()}),
    ("DELETE", TEAM_RULE): _by_id("team", "DELETE", "/api/v1/teams", World.team),
    ("GET", "/api/v1/tokens"): Request("token", lambda w, a, o: Call("GET", "/api/v1/tokens?page_size=100",
                                                                      subject=w.token_of(a, o))),
    ("POST", "/api/v1/tokens"): Request(None, lambda w, a, o: Call("POST", "/api/v1/tokens", {"name": "ci"})),
    ("DELETE", "/api/v1/tokens/<uuid:token_id>"): _by_id("token", "DELETE", "/api/v1/tokens", World.token_of),
    ("GET", "/api/v1/audit-logs"): Request(None, lambda w, a, o: Call("GET", "/api/v1/audit-logs")),
}
