"""The ``jobplane`` command: the production processes, standalone mode and administration.

The administration commands live in ``app.cli.people`` (users, teams, tokens), ``app.cli.jobs``
(jobs, executions, export and apply) and ``app.cli.maintenance`` (purge); each calls the same
services as the API, as the CLI's actor (audited as ``cli:<login>``).
"""

from __future__ import annotations

import os
import sys

import click

from app.cli.common import in_app as _in_app, settings as _settings
from app.config import ConfigError, settings_table
from app.observability import process_environment


@click.group(help="Jobplane: cron jobs fired exactly once, run isolated, logged and retried.")
def main() -> None:
    pass


@main.command(help="Run the web server and API (gunicorn; gevent workers hold many live log viewers).")
def web() -> None:
    config = _settings()
    # by file path, not ``python:app.gunicorn_config``: importing the ``app`` package in gunicorn's
    # master would import Dramatiq before the worker's gevent patching, and Dramatiq picks its
    # gevent or thread variants at import time
    app_package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gunicorn_config = os.path.join(app_package, "gunicorn_config.py")
    os.environ.update(process_environment("web", config))  # the workers' shared metrics
    argv = [sys.executable, "-m", "gunicorn", "--config", gunicorn_config,
            "--bind", f"{config['HOST']}:{config['PORT']}", "--workers", str(config["WEB_WORKERS"]),
            "--worker-class", config["WEB_WORKER_CLASS"], "--no-control-socket", "--access-logfile", "-"]
    if config["WEB_WORKER_CLASS"] == "gevent":
        argv += ["--worker-connections", str(config["WEB_CONNECTIONS"])]
    else:  # gthread: one thread per open websocket or request
        argv += ["--threads", str(config["WEB_THREADS"])]
    os.execv(sys.executable, [*argv, "wsgi:create_web_app()"])


@main.command(help="Run a scheduler replica (stands by until it holds the leader lock).")
def scheduler() -> None:
    _settings()
    import scheduler as scheduler_process

    sys.exit(scheduler_process.main())


@main.command(help="Run Dramatiq worker processes that execute jobs, and one that sends notifications.")
def worker() -> None:
    from app.tasks.broker import THREAD_WAKE_MS
    from app.tasks.dispatch import RUN_QUEUES, bulk_lane_threads

    config = _settings()
    # Idle threads wake once a second; the consumers poll at WORKER_POLL_MS (KeyedRedisBroker).
    os.environ["dramatiq_worker_timeout"] = str(THREAD_WAKE_MS)
    # A worker process fetches no more runs than it has threads (Dramatiq's default is twice as
    # many): a run fetched by a process whose threads are all busy waits there while another
    # process may be idle, and a staged run that waits misses its fire time.
    # The bulk lane's threads come on top: a burst's groups never take the ordinary lane's.
    os.environ["dramatiq_queue_prefetch"] = str(config["WORKER_THREADS"])
    threads = config["WORKER_THREADS"] + bulk_lane_threads(config["WORKER_THREADS"])
    os.environ.update(process_environment("worker", config))  # the worker processes' shared metrics
    # job runs in the worker processes; notifications in a process of their own (a fork that
    # Dramatiq supervises), so a worker whose threads are all busy with long runs still notifies
    argv = [sys.executable, "-m", "dramatiq", "--processes", str(config["WORKER_PROCESSES"]),
            "--threads", str(threads), "--queues", *RUN_QUEUES,
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


def _add_commands() -> None:
    from app.cli import jobs, maintenance, people

    for command in (*people.COMMANDS, *jobs.COMMANDS, *maintenance.COMMANDS):
        main.add_command(command)


_add_commands()
