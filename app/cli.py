"""The ``jobplane`` command: the production processes, standalone mode and administration."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import click

from app.config import ConfigError, load_settings, settings_table
from app.observability import process_environment


def _settings() -> dict:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(help="Jobplane: cron jobs fired exactly once, run isolated, logged and retried.")
def main() -> None:
    pass


@main.command(help="Run the web server and API (gunicorn).")
def web() -> None:
    config = _settings()
    os.environ.update(process_environment("web", config))  # the workers' shared metrics
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"{config['HOST']}:{config['PORT']}",
            "--workers", str(config["WEB_WORKERS"]), "--threads", str(config["WEB_THREADS"]),
            "--worker-class", "gthread", "--no-control-socket", "--access-logfile", "-",
            "wsgi:create_web_app()"]
    os.execv(sys.executable, argv)


@main.command(help="Run a scheduler replica (stands by until it holds the leader lock).")
def scheduler() -> None:
    _settings()
    import scheduler as scheduler_process

    sys.exit(scheduler_process.main())


@main.command(help="Run Dramatiq worker processes that execute jobs, and one that sends notifications.")
def worker() -> None:
    from app.tasks.dispatch import EXECUTIONS_QUEUE

    config = _settings()
    os.environ["dramatiq_worker_timeout"] = str(config["WORKER_POLL_MS"])
    os.environ.update(process_environment("worker", config))  # the worker processes' shared metrics
    # job runs in the worker processes; notifications in a process of their own (a fork that
    # Dramatiq supervises), so a worker whose threads are all busy with long runs still notifies
    argv = [sys.executable, "-m", "dramatiq", "--processes", str(config["WORKER_PROCESSES"]),
            "--threads", str(config["WORKER_THREADS"]), "--queues", EXECUTIONS_QUEUE,
            "--fork-function", "worker:run_notifier", "worker:setup_broker"]
    os.execv(sys.executable, argv)


@main.command(help="Everything in one process: SQLite, in-memory queue, scheduler, web.")
def standalone() -> None:
    from app.standalone import run_standalone

    try:
        sys.exit(run_standalone())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply migrations up to the latest schema.")
def db_upgrade() -> None:
    from app.migrate import upgrade

    upgrade(_settings()["DATABASE_URL"])
    click.echo("database is at the latest schema")


@main.group(help="Job secrets.")
def secrets() -> None:
    pass


@secrets.command("rotate", help="Re-encrypt stored secrets with the current JOBPLANE_SECRET_KEY "
                                "(after moving the old key to JOBPLANE_SECRET_KEY_PREVIOUS).")
def secrets_rotate() -> None:
    from app.services import secrets as job_secrets

    count = _in_app(lambda actor: job_secrets.rotate_secrets(actor=actor))
    click.echo(f"re-encrypted {count} secret value(s) with the current key")


def _in_app(work: Callable[[Any], Any]) -> Any:
    """Run ``work(actor)`` in one committed transaction of a configured app, as the CLI's actor
    (audited as ``cli:<login>``); Jobplane's errors become a CLI error naming the fix."""
    from app import create_app
    from app.errors import InvalidInput, JobplaneError
    from app.extensions import db
    from app.services.actors import cli_actor

    _settings()
    app = create_app()
    with app.app_context():
        try:
            with db.unit_of_work():
                return work(cli_actor())
        except InvalidInput as exc:
            problems = "; ".join(f"{field}: {', '.join(msgs)}" for field, msgs in exc.errors.items())
            raise click.ClickException(problems) from None
        except JobplaneError as exc:
            raise click.ClickException(exc.message) from None


@main.group(help="Users and their roles.")
def users() -> None:
    pass


@users.command("create", help="Create a user with a role (admin, job_creator, team_viewer).")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["admin", "job_creator", "team_viewer"]))
@click.option("--oidc-subject", default=None, help="link to a single sign-on identity (its sub claim)")
def users_create(email: str, role: str, oidc_subject: str | None) -> None:
    from app.services import users as user_service

    issuer = _settings().get("OIDC_ISSUER")
    user_id = _in_app(lambda actor: user_service.create_user(
        actor=actor, email=email, role=role, oidc_subject=oidc_subject,
        oidc_issuer=issuer.rstrip("/") if issuer and oidc_subject else None).id)
    click.echo(f"created user {email} ({role}): {user_id}")


@users.command("set-role", help="Change a user's role.")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["admin", "job_creator", "team_viewer"]))
def users_set_role(email: str, role: str) -> None:
    from app.services import users as user_service

    _in_app(lambda actor: user_service.update_user(
        actor=actor, user_id=user_service.find_by_email(email).id, changes={"role": role}))
    click.echo(f"{email} is now {role}")


@main.group(help="Personal API tokens.")
def tokens() -> None:
    pass


@tokens.command("issue", help="Issue an API token for a user; it is printed once.")
@click.option("--email", required=True)
@click.option("--name", required=True, help="what the token is for")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 365), help="lifetime")
def tokens_issue(email: str, name: str, days: int) -> None:
    from datetime import timedelta

    from app.models.base import utcnow
    from app.services import api_tokens, users as user_service

    plain = _in_app(lambda actor: api_tokens.issue_token(
        actor=actor, user=user_service.find_by_email(email), name=name,
        expires_at=utcnow() + timedelta(days=days))[1])
    click.echo(plain)


@main.group(help="Notifications.")
def notifications() -> None:
    pass


@notifications.command("signing-key", help="Print the key that signs generic webhook notifications "
                                           "(hex), for receivers to check X-Jobplane-Signature.")
def notifications_signing_key() -> None:
    from app.notifications.channels import signing_key

    click.echo(signing_key(_settings()).hex())


@main.group(help="The audit trail.")
def audit() -> None:
    pass


@audit.command("verify", help="Check the audit log's hash chain; exit 1 at the first edited or missing row.")
def audit_verify() -> None:
    from app.services import audit_trail

    result = _in_app(lambda actor: audit_trail.verify(actor=actor))
    if not result.ok:
        click.echo(f"audit log BROKEN after {result.checked} good row(s): {result.problem}", err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {result.checked} row(s) verified; head hash {result.head_hash or '(empty)'}")


@audit.command("prune", help="Remove audit rows older than JOBPLANE_AUDIT_RETENTION_DAYS (the chain stays "
                             "verifiable). The scheduler leader does this every hour.")
def audit_prune() -> None:
    from app.services import audit_trail

    days = _settings()["AUDIT_RETENTION_DAYS"]
    removed = _in_app(lambda actor: audit_trail.prune(actor=actor, retention_days=days))
    click.echo(f"removed {removed} audit row(s) older than {days} days")


@main.command(help="Print every setting as a Markdown table.")
def settings() -> None:
    click.echo(settings_table())
