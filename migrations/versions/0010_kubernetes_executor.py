"""The kubernetes executor: a job chooses its executor (NULL: the cluster default) and, for
Kubernetes, its container image; an execution records the executor it ran on, so the sweeper
re-attaches a Kubernetes run whose worker died (its pod is still running) instead of losing it,
and counts those re-attaches.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:  # batch: SQLite (standalone) alters by copying
        batch.add_column(sa.Column('executor', sa.String(20), nullable=True))
        batch.add_column(sa.Column('image', sa.String(512), nullable=True))
        batch.create_check_constraint('executor', "executor IN ('local', 'kubernetes')")
    op.add_column('executions', sa.Column('executor', sa.String(20), nullable=True))
    op.add_column('executions', sa.Column('reattach_count', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    op.drop_column('executions', 'reattach_count')
    op.drop_column('executions', 'executor')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint('executor', type_='check')
        batch.drop_column('image')
        batch.drop_column('executor')
