"""Identity and access: single sign-on identities, server-side web sessions, and an append-only,
hash-chained audit log.

On PostgreSQL a trigger rejects UPDATE, DELETE and TRUNCATE on ``audit_logs`` unless the
transaction set ``jobplane.audit_prune`` (retention) or ``jobplane.audit_erase`` (GDPR erasure,
which may only blank the personal columns).  Rows written before this revision are chained here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op
import sqlalchemy as sa
import app.models.base

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

APPEND_ONLY_FUNCTION = """
CREATE FUNCTION jobplane_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('jobplane.audit_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'TRUNCATE' AND current_setting('jobplane.audit_prune', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND current_setting('jobplane.audit_erase', true) = 'on'
       AND NEW.email IS NULL AND NEW.ip_address IS NULL AND NEW.user_agent IS NULL AND NEW.pii_salt IS NULL
       AND (NEW.id, NEW.user_id, NEW.action, NEW.resource_type, NEW.resource_id, NEW.changes::text,
            NEW.request_id, NEW.created_at, NEW.pii_digest, NEW.prev_hash, NEW.row_hash)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.user_id, OLD.action, OLD.resource_type, OLD.resource_id, OLD.changes::text,
            OLD.request_id, OLD.created_at, OLD.pii_digest, OLD.prev_hash, OLD.row_hash) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('oidc_issuer', sa.String(255), nullable=True))
        batch.add_column(sa.Column('oidc_subject', sa.String(255), nullable=True))
        batch.add_column(sa.Column('last_login_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch.create_unique_constraint('uq_users_oidc_issuer_oidc_subject', ['oidc_issuer', 'oidc_subject'])

    op.create_table(
        'web_sessions',
        sa.Column('id_hash', sa.String(64), nullable=False),
        sa.Column('data', sa.Text(), nullable=False),
        sa.Column('expires_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_web_sessions')),
    )
    op.create_index('ix_web_sessions_expires_at', 'web_sessions', ['expires_at'])

    op.create_table(
        'audit_chain_head',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('last_id', _BIGINT, nullable=False),
        sa.Column('last_hash', sa.String(64), nullable=False),
        sa.Column('anchor_id', _BIGINT, nullable=False),
        sa.Column('anchor_hash', sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head')),
    )
    with op.batch_alter_table('audit_logs') as batch:
        batch.add_column(sa.Column('pii_salt', sa.String(32), nullable=True))
        for column in ('pii_digest', 'prev_hash', 'row_hash'):
            batch.add_column(sa.Column(column, sa.String(64), nullable=False, server_default=''))
    with op.batch_alter_table('audit_logs') as batch:
        for column in ('pii_digest', 'prev_hash', 'row_hash'):
            batch.alter_column(column, server_default=None)
    op.create_index('ix_audit_logs_resource', 'audit_logs', ['resource_type', 'resource_id'])
    _chain_existing_rows()

    if op.get_bind().dialect.name == 'postgresql':
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute("CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs "
                   "FOR EACH ROW EXECUTE FUNCTION jobplane_audit_append_only()")
        op.execute("CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs "
                   "FOR EACH STATEMENT EXECUTE FUNCTION jobplane_audit_append_only()")


def _chain_existing_rows() -> None:
    """Hash the rows written before the chain existed, in id order, and start the head there."""
    from app.services.audit_chain import new_salt, pii_digest, row_hash

    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, user_id, email, action, resource_type, resource_id, changes, "
                                "ip_address, user_agent, request_id, created_at FROM audit_logs ORDER BY id"))
    previous, last_id = "", 0
    for row in rows.mappings().all():
        values = dict(row)
        if isinstance(values["changes"], str):  # SQLite returns JSON as text here
            import json
            values["changes"] = json.loads(values["changes"])
        values["pii_salt"] = new_salt()
        values["pii_digest"] = pii_digest(values["pii_salt"], values["email"], values["ip_address"],
                                          values["user_agent"])
        values["prev_hash"] = previous
        values["row_hash"] = row_hash(values)
        bind.execute(sa.text("UPDATE audit_logs SET pii_salt = :pii_salt, pii_digest = :pii_digest, "
                             "prev_hash = :prev_hash, "
                             "row_hash = :row_hash WHERE id = :id"), values)
        previous, last_id = values["row_hash"], values["id"]
    bind.execute(sa.text("INSERT INTO audit_chain_head (id, last_id, last_hash, anchor_id, anchor_hash) "
                         "VALUES (1, :last_id, :last_hash, 0, '')"), {"last_id": last_id, "last_hash": previous})


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER audit_logs_no_truncate ON audit_logs")
        op.execute("DROP TRIGGER audit_logs_append_only ON audit_logs")
        op.execute("DROP FUNCTION jobplane_audit_append_only()")
    op.drop_index('ix_audit_logs_resource', table_name='audit_logs')
    with op.batch_alter_table('audit_logs') as batch:
        for column in ('row_hash', 'prev_hash', 'pii_digest', 'pii_salt'):
            batch.drop_column(column)
    op.drop_table('audit_chain_head')
    op.drop_index('ix_web_sessions_expires_at', table_name='web_sessions')
    op.drop_table('web_sessions')
    with op.batch_alter_table('users') as batch:
        batch.drop_constraint('uq_users_oidc_issuer_oidc_subject', type_='unique')
        for column in ('last_login_at', 'oidc_subject', 'oidc_issuer'):
            batch.drop_column(column)
