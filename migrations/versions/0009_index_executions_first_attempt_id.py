"""Index executions by first_attempt_id: the column refers back to executions with ON DELETE
CASCADE, so without an index every deleted execution made PostgreSQL scan the whole table for
its retries. A purge batch of 5,000 took 44–105 s on 22,000 rows without it and 1.6 s with it
(bench/purge_batches.py, docs/benchmarks.md).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_executions_first_attempt_id', 'executions', ['first_attempt_id'])


def downgrade() -> None:
    op.drop_index('ix_executions_first_attempt_id', table_name='executions')
