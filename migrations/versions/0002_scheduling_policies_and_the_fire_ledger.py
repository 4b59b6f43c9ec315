"""Scheduling policies and the fire ledger: one-time jobs, start/end dates, misfire and
concurrency policies per job; skipped and missed executions with their reason.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op
import sqlalchemy as sa
import app.models.base

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_OLD_STATUSES = "status IN ('queued', 'running', 'success', 'failed', 'timed_out', 'lost', 'cancelled')"
_NEW_STATUSES = ("status IN ('queued', 'running', 'success', 'failed', 'timed_out', 'lost', 'cancelled', "
                 "'skipped', 'missed')")


def upgrade() -> None:
    with op.batch_alter_table('executions') as batch:
        batch.add_column(sa.Column('reason', sa.Text(), nullable=True))
        batch.add_column(sa.Column('fired_by', sa.String(length=255), nullable=True))
        batch.drop_constraint('status', type_='check')
        batch.create_check_constraint('status', _NEW_STATUSES)
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('run_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('start_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('end_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('misfire_policy', sa.String(length=20), nullable=False,
                                   server_default='run_latest'))
        batch.add_column(sa.Column('max_lateness_seconds', sa.Integer(), nullable=False, server_default='3600'))
        # Existing jobs keep their meaning: concurrent_allowed true is "allow", false is "forbid".
        batch.add_column(sa.Column('concurrency_policy', sa.String(length=20), nullable=False,
                                   server_default='forbid'))
        batch.add_column(sa.Column('max_concurrent', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('paused_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch.create_check_constraint('misfire_policy', "misfire_policy IN ('skip', 'run_latest', 'run_all')")
        batch.create_check_constraint('concurrency_policy', "concurrency_policy IN ('allow', 'forbid', 'replace')")
    op.execute("UPDATE jobs SET concurrency_policy = 'allow' WHERE concurrent_allowed")
    with op.batch_alter_table('jobs') as batch:
        batch.alter_column('misfire_policy', server_default=None)
        batch.alter_column('max_lateness_seconds', server_default=None)
        batch.alter_column('concurrency_policy', server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM executions WHERE status IN ('skipped', 'missed')")
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint('concurrency_policy', type_='check')
        batch.drop_constraint('misfire_policy', type_='check')
        for column in ('paused_at', 'max_concurrent', 'concurrency_policy', 'max_lateness_seconds',
                       'misfire_policy', 'end_at', 'start_at', 'run_at'):
            batch.drop_column(column)
    with op.batch_alter_table('executions') as batch:
        batch.drop_constraint('status', type_='check')
        batch.create_check_constraint('status', _OLD_STATUSES)
        batch.drop_column('fired_by')
        batch.drop_column('reason')
