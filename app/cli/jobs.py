"""``jobplane jobs`` and ``jobplane executions``: jobs and their runs, from the server's shell.

Commands act as the CLI's actor (Jobplane itself, audited as ``cli:<login>``), so they see and
may change every job; they call the same services as the API.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from app.cli.common import app_context, emit, in_app, json_option, problems, settings, uuid_argument

_job_id = click.argument("job_id", callback=uuid_argument("a job", "find it with `jobplane jobs list`"))
_execution_id = click.argument("execution_id", callback=uuid_argument(
    "an execution", "find it with `jobplane executions list --job JOB_ID`"))


@click.group(help="Jobs: list, show, run, pause, resume, delete; export and apply their definitions as YAML.")
def jobs() -> None:
    pass


def _summary(job) -> dict[str, Any]:
    from app.extensions import db
    from app.models import User

    return {"id": job.id, "name": job.name, "owner": db.session.get(User, job.owner_id).email,
            "type": job.job_type, "schedule": job.schedule or (f"once at {job.run_at.isoformat()}"
                                                                if job.run_at else "on demand"),
            "timezone": job.timezone, "status": "paused" if job.status == "disabled" else job.status,
            "version": job.version, "updated_at": job.updated_at}


@jobs.command("list", help="List jobs (not deleted), filtered as the API's list is; by name unless --sort.")
@click.option("--owner", default=None, metavar="EMAIL", help="only this user's jobs")
@click.option("--status", type=click.Choice(["active", "paused"]), default=None, help="only active or paused jobs")
@click.option("--search", default=None, metavar="TEXT", help="only jobs whose name contains this, in any case")
@click.option("--type", "job_type", type=click.Choice(["python", "bash"]), default=None, help="only this job type")
@click.option("--sort", default="name", show_default=True,
              help="name, created_at, updated_at, status or job_type; a leading - for descending")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000), help="at most this many")
@json_option
def jobs_list(owner: str | None, status: str | None, search: str | None, job_type: str | None, sort: str,
              limit: int, as_json: bool) -> None:
    from app.services import jobs as job_service, users as user_service

    def work(actor) -> tuple[list[dict[str, Any]], int]:
        found, total = job_service.list_jobs(
            actor=actor, limit=limit, owner_id=user_service.find_by_email(owner).id if owner else None,
            status={"paused": "disabled"}.get(status, status), search=search, job_type=job_type, sort=sort)
        return [_summary(job) for job in found], total

    rows, total = in_app(work)
    emit(rows, as_json=as_json, columns=("name", "owner", "type", "schedule", "status", "id"))
    if total > len(rows):
        click.echo(f"({len(rows)} of {total} jobs shown; raise --limit to see more)", err=True)


@jobs.command("show", help="Show a job: its definition (as `jobs export` writes it) and its state.")
@_job_id
@json_option
def jobs_show(job_id, as_json: bool) -> None:
    from app.services import job_export, jobs as job_service

    def work(actor) -> dict[str, Any]:
        job = job_service.get_job(actor=actor, job_id=job_id)
        return {**_summary(job), **job_export.definition(job), "created_at": job.created_at}

    emit(in_app(work), as_json=as_json)


@jobs.command("run", help="Queue a run of the job now; prints the execution id.")
@_job_id
def jobs_run(job_id) -> None:
    from app.services import executions

    config = settings()
    # standalone's queue lives in its own process: a message from this one would reach nobody, so
    # the run is left unsent for the standalone process's sweeper, which sends it at its next sweep
    standalone = config["ENV"] == "standalone"
    execution_id = in_app(lambda actor: executions.trigger_manual_run(actor=actor, job_id=job_id,
                                                                      send=not standalone).id)
    click.echo(f"queued execution {execution_id}; follow it with `jobplane executions logs {execution_id} --follow`")
    if standalone:
        click.echo(f"standalone: it starts within JOBPLANE_SWEEP_INTERVAL_SECONDS ({config['SWEEP_INTERVAL_SECONDS']:g} s); "
                   "the web UI or the API start runs at once", err=True)


@jobs.command("pause", help="Pause a job: it fires nothing until resumed.")
@_job_id
def jobs_pause(job_id) -> None:
    from app.services import jobs as job_service

    name = in_app(lambda actor: job_service.pause_job(actor=actor, job_id=job_id).name)
    click.echo(f"paused job {name} ({job_id})")


@jobs.command("resume", help="Resume a paused job (its misfire policy decides whether missed fires run).")
@_job_id
def jobs_resume(job_id) -> None:
    from app.services import jobs as job_service

    def work(actor) -> tuple[str, int]:
        job, replay = job_service.resume_job(actor=actor, job_id=job_id)
        return job.name, len(replay.queued)

    name, queued = in_app(work)
    click.echo(f"resumed job {name} ({job_id})" + (f"; {queued} missed fire(s) queued" if queued else ""))


@jobs.command("delete", help="Delete a job: it fires nothing more; its queued runs are cancelled and its "
                             "secrets erased. Asks first, unless --yes.")
@_job_id
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def jobs_delete(job_id, yes: bool) -> None:
    from app.services import jobs as job_service

    name = in_app(lambda actor: job_service.get_job(actor=actor, job_id=job_id).name)
    if not yes:
        click.confirm(f"delete job {name} ({job_id})? Its queued runs are cancelled and its secrets erased",
                      abort=True)
    in_app(lambda actor: job_service.delete_job(actor=actor, job_id=job_id, expected_version=None))
    click.echo(f"deleted job {name} ({job_id})")


@jobs.command("export", help="Write job definitions as YAML: every field you set, notification settings "
                             "included; secrets by name only, webhook URLs masked.")
@click.option("--owner", default=None, metavar="EMAIL", help="only this user's jobs")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="file to write (default: standard output)")
def jobs_export(owner: str | None, output: str | None) -> None:
    from app.services import job_export

    definitions = in_app(lambda actor: job_export.export_jobs(actor=actor, owner_email=owner))
    text = job_export.dump_yaml(definitions)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot write {output}: {exc.strerror}; give a file in an existing, writable "
                                 "directory", param_hint="'-o' / '--output'") from None
    click.echo(f"exported {len(definitions)} job(s) to {output}", err=True)


class _DryRun(Exception):
    """Carries a dry run's report out of the transaction it rolls back."""

    def __init__(self, report: list[dict[str, Any]]):
        super().__init__("dry run")
        self.report = report


@jobs.command("apply", help="Create or update jobs from a YAML file (as `jobs export` writes), matched by "
                            "name and owner; prints a diff per job. All or nothing: one bad job changes "
                            "nothing.")
@click.option("-f", "--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, readable=True),
              help="the YAML file of job definitions")
@click.option("--dry-run", is_flag=True, help="print the diffs and change nothing")
def jobs_apply(path: str, dry_run: bool) -> None:
    from app.errors import InvalidInput
    from app.services import job_export

    try:
        definitions = job_export.load_yaml(Path(path).read_text(encoding="utf-8"))
    except InvalidInput as exc:
        raise click.ClickException(f"{path}: {problems(exc)}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{path}: is not UTF-8 text; give the YAML file `jobs export` wrote") from None

    def work(actor) -> list[dict[str, Any]]:
        changes = job_export.apply_definitions(actor=actor, definitions=definitions, source=path)
        report = [vars(change) for change in changes]
        if dry_run:
            raise _DryRun(report)
        return report

    try:
        report = in_app(work)
    except _DryRun as rolled_back:
        report = rolled_back.report
    for change in report:
        click.echo(change["diff"], nl=False)
        label = f"{change['name']} ({change['owner']})"
        verb = {"created": "would create", "updated": "would update"}.get(change["action"], "unchanged:") \
            if dry_run else change["action"]
        click.echo(f"{verb} job {label}" + ("" if dry_run else f": {change['job_id']}"))
        if change["missing_secrets"]:
            click.echo(f"  note: {label} uses secret(s) {', '.join(change['missing_secrets'])} it does not have; "
                       "set their values with PUT /api/v1/jobs/<id>/secrets/<name>", err=True)
    counts = {action: sum(1 for change in report if change["action"] == action)
              for action in ("created", "updated", "unchanged")}
    tail = " (dry run: nothing was changed)" if dry_run else ""
    click.echo(f"{counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged{tail}")


@click.group(help="Executions: the runs of jobs, and their logs.")
def executions() -> None:
    pass


@executions.command("list", help="List a job's executions, newest fire time first.")
@click.option("--job", "job_id", required=True, callback=uuid_argument("a job", "find it with `jobplane jobs list`"),
              help="the job's id")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help="only this status (repeatable): queued, running, success, failed, timed_out, lost, cancelled, "
                   "skipped, missed")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def executions_list(job_id, statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    from app.services import executions as execution_service

    def work(actor) -> list[dict[str, Any]]:
        rows, _ = execution_service.list_job_executions(actor=actor, job_id=job_id, limit=limit,
                                                        statuses=list(statuses) or None)
        return [{"id": row.id, "status": row.status, "triggered_by": row.triggered_by, "attempt": row.attempt,
                 "scheduled_for": row.scheduled_for, "started_at": row.started_at, "completed_at": row.completed_at,
                 "duration_seconds": row.duration_seconds, "exit_code": row.exit_code,
                 "error_message": row.error_message, "reason": row.reason, "log_bytes": row.log_bytes}
                for row in rows]

    emit(in_app(work), as_json=as_json,
         columns=("id", "status", "triggered_by", "attempt", "scheduled_for", "duration_seconds", "exit_code"))


@executions.command("logs", help="Print an execution's output (secrets masked). With --follow, keep printing "
                                 "new output as it arrives until the execution ends.")
@_execution_id
@click.option("--follow", "-f", is_flag=True, help="wait for new output until the execution ends")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.05, 60),
              help="seconds between checks for new output, with --follow")
def executions_logs(execution_id, follow: bool, interval: float) -> None:
    from app.extensions import db
    from app.models.execution import FINAL_STATUSES
    from app.services import executions as execution_service
    from app.services.actors import cli_actor

    actor, after, page = cli_actor(), execution_service.BEFORE_FIRST_PIECE, 500
    # the stored chunks, read again and again: the same on PostgreSQL and in standalone mode
    # (SQLite), and nothing is missed between a replay and a live channel
    with app_context():
        try:
            while True:
                execution, chunks = execution_service.log_chunks(actor=actor, execution_id=execution_id,
                                                                 after_seq=after, limit=page)
                status = execution.status
                for chunk in chunks:
                    click.echo(chunk.data, nl=False)
                    after = chunk.seq
                sys.stdout.flush()
                db.session.rollback()  # a fresh snapshot next time: new chunks and status
                if len(chunks) == page:
                    continue
                if not follow or status in FINAL_STATUSES:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            sys.exit(130)
    if follow:
        click.echo(f"[execution {execution_id} ended: {status}]", err=True)


COMMANDS = (jobs, executions)
