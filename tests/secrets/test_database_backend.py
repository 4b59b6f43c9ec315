"""The database backend: values encrypted with a key derived from JOBPLANE_SECRET_KEY, rotation,
and the service rules every backend shares (one audit row per change, names only)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.errors import InvalidInput
from app.extensions import db
from app.models import AuditLog, JobSecret
from app.secrets import SecretBackendUnavailable, SecretUnreadable
from app.secrets.database import fernet_key
from app.services import secrets
from tests.secrets.helpers import admin_actor, make_job, other_app, table_text

VALUE = "pa55-Wörd:with spaces & symbols"


def _job_with_secret(app, name="DB_PASSWORD", value=VALUE):
    with app.app_context():
        actor = admin_actor()
        job = make_job(actor)
        secrets.set_secret(actor=actor, job_id=job.id, name=name, value=value)
        db.session.commit()
        return job.id


def test_a_value_is_stored_encrypted_and_comes_back_for_the_run(app, admin):
    # Given a job / When a secret is set and committed
    job_id = _job_with_secret(app)
    with app.app_context():
        # Then the run gets the value back
        assert secrets.values_for_run(job_id=job_id) == {"DB_PASSWORD": VALUE}
        # And the table holds a Fernet token, never the value
        row = db.session.scalar(select(JobSecret))
        assert row.ciphertext and row.ciphertext.startswith("gAAAAA")
        assert VALUE not in table_text("job_secrets")
        # And the audit trail names the secret, never its value
        assert "DB_PASSWORD" in table_text("audit_logs")
        assert VALUE not in table_text("audit_logs")
        assert secrets.list_secret_names(actor=admin_actor(), job_id=job_id) == ["DB_PASSWORD"]


def test_every_change_writes_exactly_one_audit_row(app, admin):
    with app.app_context():
        actor = admin_actor()
        job = make_job(actor)
        db.session.commit()
        before = db.session.scalar(select(func.count()).select_from(AuditLog))
        # When a secret is created, replaced, then deleted
        _, created = secrets.set_secret(actor=actor, job_id=job.id, name="API_KEY", value="one")
        assert created is True
        _, created = secrets.set_secret(actor=actor, job_id=job.id, name="API_KEY", value="two")
        assert created is False
        secrets.delete_secret(actor=actor, job_id=job.id, name="API_KEY")
        db.session.commit()
        # Then there is one row per change, in order, with the name only
        rows = db.session.scalars(select(AuditLog).order_by(AuditLog.id).offset(before)).all()
        assert [(r.action, r.resource_type, r.resource_id, r.changes, r.email) for r in rows] == [
            ("secret_created", "job", str(job.id), {"secret": "API_KEY"}, "admin"),
            ("secret_updated", "job", str(job.id), {"secret": "API_KEY"}, "admin"),
            ("secret_deleted", "job", str(job.id), {"secret": "API_KEY"}, "admin"),
        ]
        assert secrets.values_for_run(job_id=job.id) == {}


def test_replacing_a_value_keeps_created_at_and_moves_updated_at(app, admin):
    job_id = _job_with_secret(app, value="first")
    with app.app_context():
        first = db.session.scalar(select(JobSecret))
        created_at, updated_at, ciphertext = first.created_at, first.updated_at, first.ciphertext
        secret, _ = secrets.set_secret(actor=admin_actor(), job_id=job_id, name="DB_PASSWORD", value="second")
        db.session.commit()
        assert secret.created_at == created_at and secret.updated_at > updated_at
        assert secret.ciphertext != ciphertext
        assert secrets.values_for_run(job_id=job_id) == {"DB_PASSWORD": "second"}


def test_names_that_differ_only_by_case_are_refused(app, admin):
    job_id = _job_with_secret(app, name="DB_PASSWORD")
    with app.app_context(), pytest.raises(InvalidInput) as raised:
        secrets.set_secret(actor=admin_actor(), job_id=job_id, name="db_password", value="x")
    assert "DB_PASSWORD" in raised.value.errors["name"][0]


def test_the_key_is_derived_so_any_secret_key_string_works():
    # A Fernet key is 32 bytes in URL-safe base64; different secret keys give different keys
    assert len(fernet_key("short")) == 44
    assert fernet_key("a") != fernet_key("b") and fernet_key("a") == fernet_key("a")


def test_rotation_re_encrypts_with_the_new_key(app, admin, settings):
    # Given secrets of two jobs encrypted with the old key (the fixture's "test-secret-key")
    job_a = _job_with_secret(app, name="DB_PASSWORD", value="alpha")
    job_b = _job_with_secret(app, name="TOKEN", value="bravo")
    # When the key changes and the old one is kept as previous
    with other_app(settings, SECRET_KEY="the-new-key", SECRET_KEY_PREVIOUS="retired-key, test-secret-key"):
        # Then the values still decrypt
        assert secrets.values_for_run(job_id=job_a) == {"DB_PASSWORD": "alpha"}
        old_tokens = set(db.session.scalars(select(JobSecret.ciphertext)))
        # And the rotation re-encrypts each of them, writing one audit row
        assert secrets.rotate_secrets() == 2
        db.session.commit()
        assert set(db.session.scalars(select(JobSecret.ciphertext))).isdisjoint(old_tokens)
        audit_row = db.session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
        assert (audit_row.action, audit_row.changes) == ("secrets_rotated", {"reencrypted": 2})
    # Then the new key alone decrypts them
    with other_app(settings, SECRET_KEY="the-new-key"):
        assert secrets.values_for_run(job_id=job_a) == {"DB_PASSWORD": "alpha"}
        assert secrets.values_for_run(job_id=job_b) == {"TOKEN": "bravo"}
    # And the old key no longer does
    with other_app(settings, SECRET_KEY="test-secret-key"), pytest.raises(SecretUnreadable):
        secrets.values_for_run(job_id=job_a)


def test_without_the_old_key_a_run_fails_clearly(app, admin, settings):
    # Given a secret encrypted with the old key
    job_id = _job_with_secret(app)
    # When the key changed and the old one was not kept
    with other_app(settings, SECRET_KEY="a-new-key-without-the-old-one"):
        with pytest.raises(SecretBackendUnavailable) as raised:
            secrets.values_for_run(job_id=job_id)
        # Then the error names the secret and says how to recover
        message = str(raised.value)
        assert isinstance(raised.value, SecretUnreadable)
        assert "DB_PASSWORD" in message and str(job_id) in message
        assert "JOBPLANE_SECRET_KEY_PREVIOUS" in message
        # And a rotation refuses to run rather than lose the value
        with pytest.raises(SecretUnreadable):
            secrets.rotate_secrets()
        db.session.rollback()
    with app.app_context():
        assert secrets.values_for_run(job_id=job_id) == {"DB_PASSWORD": VALUE}


def test_a_job_without_secrets_never_touches_the_backend(app, admin, settings):
    # Given a job without secrets, and a Key Vault backend that nothing answers
    with app.app_context():
        job = make_job(admin_actor())
        db.session.commit()
    with other_app(settings, SECRETS_BACKEND="azure-keyvault", KEYVAULT_URL="https://127.0.0.1:9"):
        # When its run asks for secrets / Then it gets none, without an error
        assert secrets.values_for_run(job_id=job.id) == {}


def test_forgetting_a_jobs_secrets_deletes_rows_and_values(app, admin):
    job_id = _job_with_secret(app, name="A_SECRET")
    with app.app_context():
        secrets.set_secret(actor=admin_actor(), job_id=job_id, name="B_SECRET", value="b")
        assert secrets.forget_job_secrets(job_id=job_id) == ["A_SECRET", "B_SECRET"]
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(JobSecret)) == 0
        assert secrets.values_for_run(job_id=job_id) == {}


def test_the_rotate_command_reencrypts_with_the_current_key(app, admin, settings):
    import subprocess

    from tests.helpers import JOBPLANE, process_env

    job_id = _job_with_secret(app, name="ROTATED")
    env = process_env({**settings, "SECRET_KEY": "a-brand-new-key", "SECRET_KEY_PREVIOUS": settings["SECRET_KEY"]})
    done = subprocess.run([JOBPLANE, "secrets", "rotate"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 secret value(s)" in done.stdout
    with other_app(settings, SECRET_KEY="a-brand-new-key", SECRET_KEY_PREVIOUS=None):
        assert list(secrets.values_for_run(job_id=job_id)) == ["ROTATED"]
