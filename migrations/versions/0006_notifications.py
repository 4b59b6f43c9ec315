"""Notifications: the delivery rows, per-job events and a generic webhook; Slack webhook URLs
encrypted at rest.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""


from alembic import op
import sqlalchemy as sa
import app.models.base

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')
_DEFAULT_EVENTS = '["job_failed", "job_timeout", "job_lost", "job_recovered"]'


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('notification_webhook_url', sa.Text(), nullable=True))
        batch.add_column(sa.Column('notify_on', _JSON, nullable=False, server_default=_DEFAULT_EVENTS))
    with op.batch_alter_table('jobs') as batch:
        batch.alter_column('notify_on', server_default=None)
    op.create_table(
        'notifications',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('job_id', sa.Uuid(), nullable=False),
        sa.Column('execution_id', sa.Uuid(), nullable=True),
        sa.Column('event', sa.String(30), nullable=False),
        sa.Column('channel', sa.String(20), nullable=False),
        sa.Column('recipients', _JSON, nullable=False),
        sa.Column('status', sa.String(20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('claimed_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('fallback_of', sa.Uuid(), nullable=True),
        sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('sent_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_notifications_job_id_jobs'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['execution_id'], ['executions.id'],
                                name=op.f('fk_notifications_execution_id_executions'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
        sa.UniqueConstraint('execution_id', 'event', 'channel',
                            name=op.f('uq_notifications_execution_id_event_channel')),
    )
    op.create_index('ix_notifications_status_next_attempt_at', 'notifications', ['status', 'next_attempt_at'])
    op.create_index('ix_notifications_job_id', 'notifications', ['job_id'])
    _encrypt_slack_webhooks()


def _encrypt_slack_webhooks() -> None:
    """Encrypt the Slack webhook URLs stored in plain before this revision, with the secret key of
    the environment running the migration (``jobplane db upgrade``)."""
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, notification_slack_webhook FROM jobs "
                                "WHERE notification_slack_webhook IS NOT NULL")).all()
    rows = [(job_id, url) for job_id, url in rows if not url.startswith("enc1:")]
    if not rows:
        return
    keys = _keys(bind)
    for job_id, url in rows:
        bind.execute(sa.text("UPDATE jobs SET notification_slack_webhook = :value WHERE id = :id"),
                     {"value": "enc1:" + keys.encrypt(url.encode()).decode(), "id": job_id})


def _decrypt_slack_webhooks() -> None:
    """Put the Slack webhook URLs back in plain, as revision 0005 reads them."""
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, notification_slack_webhook FROM jobs "
                                "WHERE notification_slack_webhook LIKE 'enc1:%'")).all()
    if not rows:
        return
    keys = _keys(bind)
    for job_id, value in rows:
        url = keys.decrypt(value[len("enc1:"):].encode()).decode()
        bind.execute(sa.text("UPDATE jobs SET notification_slack_webhook = :value WHERE id = :id"),
                     {"value": url, "id": job_id})


def _keys(bind):
    """The keys the app runs with, read from the environment running the migration.

    Without ``JOBPLANE_SECRET_KEY``, settings make a key up for the run (outside production),
    which would encrypt the URLs with a key nobody has: the migration stops instead.  Standalone
    mode is the exception: its key is kept in ``JOBPLANE_DATA_DIR``, and it migrates from its
    own settings, not the environment's, so a SQLite database without ``JOBPLANE_ENV`` is taken
    for a standalone one.
    """
    import os

    from app.config import ConfigError, load_settings
    from app.secrets.database import keyring

    overrides = {"DATABASE_URL": bind.engine.url.render_as_string(hide_password=False)}
    if not os.environ.get("JOBPLANE_SECRET_KEY"):
        env = os.environ.get("JOBPLANE_ENV", "standalone" if bind.dialect.name == "sqlite" else "production")
        if env != "standalone":
            raise ConfigError("JOBPLANE_SECRET_KEY is not set: migration 0006 encrypts the Slack webhook URLs "
                              "stored so far with it; set it to the key Jobplane runs with, then upgrade again")
        overrides["ENV"] = "standalone"
    return keyring(load_settings(overrides=overrides))


def downgrade() -> None:
    _decrypt_slack_webhooks()
    op.drop_index('ix_notifications_job_id', table_name='notifications')
    op.drop_index('ix_notifications_status_next_attempt_at', table_name='notifications')
    op.drop_table('notifications')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('notify_on')
        batch.drop_column('notification_webhook_url')
