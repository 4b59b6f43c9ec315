"""Execution engine: retries as attempts of the same fire, resource limits and usage, network
switch, sandbox flag.

The unique constraint becomes (job_id, scheduled_for, attempt): a retry is another attempt of the
same fire time, and the fire path still inserts at most one first attempt per fire time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op
import sqlalchemy as sa
import app.models.base

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_JOB_COLUMNS = (
    ('retry_delay_seconds', sa.Integer(), None),
    ('retry_delay_max_seconds', sa.Integer(), '3600'),
    ('retry_on', sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql'),
     '["failed", "timed_out", "lost"]'),
    ('network_enabled', sa.Boolean(), sa.true()),
    ('cpu_limit', sa.Integer(), '1'),
    ('memory_limit_mb', sa.Integer(), '2048'),
    ('cpu_time_limit_seconds', sa.Integer(), None),
    ('max_open_files', sa.Integer(), '1024'),
    ('max_processes', sa.Integer(), '512'),
)


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        for name, type_, default in _JOB_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=default is None, server_default=default))
    with op.batch_alter_table('jobs') as batch:
        for name, _, default in _JOB_COLUMNS:
            if default is not None:
                batch.alter_column(name, server_default=None)
    with op.batch_alter_table('executions') as batch:
        batch.add_column(sa.Column('first_attempt_id', sa.Uuid(), nullable=True))
        batch.add_column(sa.Column('due_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('peak_memory_kb', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('cpu_seconds', sa.Float(), nullable=True))
        batch.add_column(sa.Column('sandboxed', sa.Boolean(), nullable=True))
        batch.create_foreign_key(op.f('fk_executions_first_attempt_id_executions'), 'executions',
                                 ['first_attempt_id'], ['id'], ondelete='CASCADE')
        batch.drop_constraint('uq_executions_job_id_scheduled_for', type_='unique')
        batch.create_unique_constraint('uq_executions_job_id_scheduled_for_attempt',
                                       ['job_id', 'scheduled_for', 'attempt'])


def downgrade() -> None:
    op.execute("DELETE FROM executions WHERE attempt > 1")
    with op.batch_alter_table('executions') as batch:
        batch.drop_constraint('uq_executions_job_id_scheduled_for_attempt', type_='unique')
        batch.create_unique_constraint('uq_executions_job_id_scheduled_for', ['job_id', 'scheduled_for'])
        batch.drop_constraint('fk_executions_first_attempt_id_executions', type_='foreignkey')
        for column in ('sandboxed', 'cpu_seconds', 'peak_memory_kb', 'due_at', 'first_attempt_id'):
            batch.drop_column(column)
    with op.batch_alter_table('jobs') as batch:
        for name, _, _ in reversed(_JOB_COLUMNS):
            batch.drop_column(name)
