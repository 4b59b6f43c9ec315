"""The admin CLI on real PostgreSQL: ``jobplane users create``, ``users set-role`` and ``tokens issue``
change what the API sees, refuse bad input with a message naming the field, and are audited as
``cli:<login>``."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from app.cli import main
from app.extensions import db
from app.models import ApiToken, AuditLog, User
from tests.helpers import JOBPLANE, process_env

LOGIN = "maria"


@pytest.fixture
def jobplane(app, settings):
    """Run ``jobplane <args>`` in this process, configured like the app, as the login ``maria``."""
    env = {f"JOBPLANE_{key}": str(value) for key, value in settings.items()}
    env.update(LOGNAME=LOGIN, USER=LOGIN)
    runner = CliRunner()

    def run(*args: str, input: str | None = None, **extra: str):
        """``input`` is what the operator types (answers to confirmations); ``extra`` are settings."""
        return runner.invoke(main, list(args), env={**env, **{f"JOBPLANE_{k}": v for k, v in extra.items()}},
                             input=input, catch_exceptions=False)

    return run


def rows(app, *where) -> list[AuditLog]:
    with app.app_context():
        found = list(db.session.scalars(select(AuditLog).where(*where).order_by(AuditLog.id)))
        db.session.expunge_all()
        return found


def user(app, email: str) -> User | None:
    with app.app_context():
        found = db.session.scalar(select(User).where(User.email == email))
        db.session.expunge_all()
        return found


def counts(app) -> tuple[int, int, int]:
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(model))
                     for model in (User, ApiToken, AuditLog))


# --- users create -------------------------------------------------------------------------------

def test_users_create_makes_a_user_audited_as_the_login(app, jobplane):
    # When an operator creates a user on the server
    result = jobplane("users", "create", "--email", "maya@example.com", "--role", "job_creator")
    # Then it exists, with its id printed
    assert result.exit_code == 0, result.output
    maya = user(app, "maya@example.com")
    assert maya is not None and maya.role == "job_creator" and maya.is_active
    assert result.stdout.strip() == f"created user maya@example.com (job_creator): {maya.id}"
    # And one audit row names the login that did it
    (row,) = rows(app, AuditLog.action == "user_created")
    assert (row.email, row.user_id, row.user_agent, row.resource_id) == \
        (f"cli:{LOGIN}", None, "jobplane-cli", str(maya.id))
    assert row.changes["role"] == {"old": None, "new": "job_creator"}


@pytest.mark.parametrize("args, field", [
    (["--email", "not-an-email", "--role", "admin"], "email"),
    (["--email", "x" * 250 + "@example.com", "--role", "admin"], "email"),
    (["--email", "maya@example.com", "--role", "admin", "--oidc-subject", ""], "oidc_subject"),
])
def test_users_create_refuses_bad_input_naming_the_field(app, jobplane, args, field):
    before = counts(app)
    result = jobplane("users", "create", *args)
    assert result.exit_code == 1
    assert f"Error: {field}:" in result.stderr
    assert counts(app) == before


@pytest.mark.parametrize("args, option", [
    (["--email", "maya@example.com", "--role", "superuser"], "--role"),
    (["--role", "admin"], "--email"),
    (["--email", "maya@example.com"], "--role"),
])
def test_users_create_refuses_bad_options_naming_the_option(app, jobplane, args, option):
    before = counts(app)
    result = jobplane("users", "create", *args)
    assert result.exit_code == 2
    assert option in result.stderr
    assert counts(app) == before


def test_users_create_refuses_a_duplicate_email(app, jobplane):
    assert jobplane("users", "create", "--email", "maya@example.com", "--role", "admin").exit_code == 0
    before = counts(app)
    result = jobplane("users", "create", "--email", "MAYA@example.com", "--role", "team_viewer")
    assert result.exit_code == 1
    assert "email: a user with email 'MAYA@example.com' already exists" in result.stderr
    assert counts(app) == before


def test_users_create_links_a_subject_to_the_configured_issuer(app, jobplane):
    sso = {"OIDC_ISSUER": "https://login.example.com/tenant/v2.0/", "OIDC_CLIENT_ID": "jobplane",
           "OIDC_CLIENT_SECRET": "s3cret"}
    result = jobplane("users", "create", "--email", "spn@example.com", "--role", "job_creator",
                      "--oidc-subject", "spn-0042", **sso)
    assert result.exit_code == 0, result.output
    found = user(app, "spn@example.com")
    assert (found.oidc_issuer, found.oidc_subject) == ("https://login.example.com/tenant/v2.0", "spn-0042")


def test_users_create_refuses_a_subject_without_single_sign_on(app, jobplane):
    before = counts(app)
    result = jobplane("users", "create", "--email", "spn@example.com", "--role", "job_creator",
                      "--oidc-subject", "spn-0042")
    assert result.exit_code == 1
    assert "oidc_subject:" in result.stderr and "JOBPLANE_OIDC_ISSUER" in result.stderr
    assert counts(app) == before


# --- users set-role -----------------------------------------------------------------------------

def test_users_set_role_changes_the_role_audited_as_the_login(app, jobplane, admin):
    jobplane("users", "create", "--email", "maya@example.com", "--role", "job_creator")
    result = jobplane("users", "set-role", "--email", "Maya@Example.com", "--role", "admin")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Maya@Example.com is now admin"
    assert user(app, "maya@example.com").role == "admin"
    (row,) = rows(app, AuditLog.action == "user_role_changed")
    assert row.email == f"cli:{LOGIN}"
    assert row.changes == {"role": {"old": "job_creator", "new": "admin"}}


def test_users_set_role_for_an_unknown_email_says_how_to_create_it(app, jobplane, admin):
    before = counts(app)
    result = jobplane("users", "set-role", "--email", "nobody@example.com", "--role", "admin")
    assert result.exit_code == 1
    assert "no user with email 'nobody@example.com'" in result.stderr and "users create" in result.stderr
    assert counts(app) == before


def test_users_set_role_will_not_demote_the_last_admin(app, jobplane, admin):
    before = counts(app)
    result = jobplane("users", "set-role", "--email", "admin", "--role", "team_viewer")
    assert result.exit_code == 1
    assert "last active admin" in result.stderr
    assert user(app, "admin").role == "admin"
    assert counts(app) == before


def test_users_set_role_rejects_an_unknown_role(app, jobplane, admin):
    result = jobplane("users", "set-role", "--email", "admin", "--role", "root")
    assert result.exit_code == 2 and "--role" in result.stderr
    assert user(app, "admin").role == "admin"


# --- tokens issue -------------------------------------------------------------------------------

def test_tokens_issue_prints_a_token_that_works_against_the_api(app, client, jobplane):
    # Given a user made with the CLI
    jobplane("users", "create", "--email", "ci@example.com", "--role", "job_creator")
    # When a token is issued for it
    result = jobplane("tokens", "issue", "--email", "ci@example.com", "--name", "pipeline", "--days", "7")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    # Then the printed token is the only output, and it authenticates as that user
    assert token.startswith("jp_") and "\n" not in token
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["email"] == "ci@example.com"
    # And it expires in 7 days, is stored as a hash only, and the issue is audited as the login
    with app.app_context():
        stored = db.session.scalar(select(ApiToken).where(ApiToken.name == "pipeline"))
        assert stored.token_hash != token and token not in stored.token_hash
        assert abs(stored.expires_at - (datetime.now(timezone.utc) + timedelta(days=7))) < timedelta(minutes=1)
        stored_id = str(stored.id)
    (row,) = rows(app, AuditLog.action == "token_created", AuditLog.resource_id == stored_id)
    assert row.email == f"cli:{LOGIN}"
    assert token not in str(row.changes)


@pytest.mark.parametrize("args, code, message", [
    (["--email", "ci@example.com", "--name", "x", "--days", "0"], 2, "--days"),
    (["--email", "ci@example.com", "--name", "x", "--days", "366"], 2, "--days"),
    (["--email", "ci@example.com", "--name", "   "], 1, "name:"),
    (["--email", "ci@example.com", "--name", "x" * 101], 1, "name:"),
    (["--email", "nobody@example.com", "--name", "x"], 1, "no user with email 'nobody@example.com'"),
    (["--email", "ci@example.com"], 2, "--name"),
])
def test_tokens_issue_refuses_bad_input_naming_it(app, jobplane, args, code, message):
    jobplane("users", "create", "--email", "ci@example.com", "--role", "job_creator")
    before = counts(app)
    result = jobplane("tokens", "issue", *args)
    assert result.exit_code == code
    assert message in result.stderr
    assert not result.stdout.strip().startswith("jp_")
    assert counts(app) == before


# --- as a separate process ----------------------------------------------------------------------

def test_the_installed_command_creates_and_issues_as_the_operators_login(app, client, settings):
    env = process_env(settings, {})
    env.update(LOGNAME="ops-oncall", USER="ops-oncall")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([JOBPLANE, *args], env=env, capture_output=True, text=True, timeout=60)

    created = run("users", "create", "--email", "bot@example.com", "--role", "team_viewer")
    assert created.returncode == 0, created.stderr
    issued = run("tokens", "issue", "--email", "bot@example.com", "--name", "bot")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json["role"] == "team_viewer"
    assert {r.email for r in rows(app, AuditLog.action.in_(("user_created", "token_created")))} == {"cli:ops-oncall"}
    bad = run("users", "create", "--email", "bot", "--role", "admin")
    assert bad.returncode == 1 and "email:" in bad.stderr


def test_a_malformed_setting_stops_the_cli_naming_the_variable(app, jobplane):
    result = jobplane("audit", "prune", AUDIT_RETENTION_DAYS="ninety")
    assert result.exit_code == 1
    assert "JOBPLANE_AUDIT_RETENTION_DAYS" in result.stderr
