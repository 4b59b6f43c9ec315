"""The ``jobplane`` command: the production processes, standalone mode and administration."""

from __future__ import annotations

import os
import sys

import click

from app.config import ConfigError, load_settings, settings_table


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


@main.command(help="Run Dramatiq worker processes that execute jobs.")
def worker() -> None:
    config = _settings()
    os.environ["dramatiq_worker_timeout"] = str(config["WORKER_POLL_MS"])
    argv = [sys.executable, "-m", "dramatiq", "--processes", str(config["WORKER_PROCESSES"]),
            "--threads", str(config["WORKER_THREADS"]), "worker:setup_broker"]
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
    from app import create_app
    from app.errors import JobplaneError
    from app.extensions import db
    from app.services import secrets as job_secrets

    _settings()
    app = create_app()
    with app.app_context():
        try:
            with db.unit_of_work():
                count = job_secrets.rotate_secrets()
        except JobplaneError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"re-encrypted {count} secret value(s) with the current key")


@main.command(help="Print every setting as a Markdown table.")
def settings() -> None:
    click.echo(settings_table())
