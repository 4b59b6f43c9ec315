"""Index jobs by creation time, ties by id: the job list's default order (``GET /api/v1/jobs``,
``sort=-created_at``) reads one page through it instead of sorting every job (bench/api_latency.py,
docs/benchmarks.md).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_created_at_id', 'jobs', ['created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_jobs_created_at_id', table_name='jobs')
