"""``jobplane purge``: retention of execution history."""

from __future__ import annotations

from datetime import timedelta

import click

from app.cli.common import app_context, settings


@click.command(help="Delete finished executions older than the retention period, with their logs and "
                    "notification records, in short batches; never a queued or running one.")
@click.option("--older-than-days", type=click.IntRange(min=1), default=None,
              help="retention in days (default: JOBPLANE_RETENTION_DAYS, 90)")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=5000, show_default=True,
              help="executions deleted per transaction")
@click.option("--dry-run", is_flag=True, help="count what would be deleted and delete nothing")
def purge(older_than_days: int | None, batch_size: int, dry_run: bool) -> None:
    from app.extensions import db
    from app.models.base import utcnow
    from app.services import retention
    from app.services.actors import cli_actor

    days = older_than_days or settings()["RETENTION_DAYS"]
    cutoff = utcnow() - timedelta(days=days)
    with app_context():
        if dry_run:
            counts = retention.count_purgeable(older_than=cutoff)
            db.session.rollback()
        else:
            # its own transactions, one per batch: not wrapped in one that would hold every lock
            counts = retention.purge_executions(older_than=cutoff, batch_size=batch_size, actor=cli_actor())
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {counts['executions']} execution(s), {counts['log_chunks']} log chunk(s) and "
               f"{counts['notifications']} notification(s) finished before {cutoff.isoformat(timespec='seconds')} "
               f"({days} days ago)")


COMMANDS = (purge,)
