"""The azure-keyvault backend against a local HTTPS server that stands for Azure Key Vault.

The server (``fake_keyvault.FakeKeyVault``) answers the REST calls azure-keyvault-secrets makes,
starting with the 401 bearer challenge; a local App Service managed-identity endpoint gives the
token, so the production credential (``DefaultAzureCredential``) is the one signing in. TLS is
verified against a CA made by the test (``JOBPLANE_KEYVAULT_CA_BUNDLE``).
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from sqlalchemy import func, select

from app.config import ConfigError
from app.extensions import db
from app.models import AuditLog, JobSecret
from app.secrets import SecretBackendUnavailable, SecretUnreadable
from app.secrets.keyvault import KeyVaultSecretBackend, vault_secret_name
from app.services import secrets
from tests.secrets.fake_keyvault import FakeKeyVault, FakeManagedIdentity, make_tls_files
from tests.secrets.helpers import admin_actor, make_job, other_app, table_text

VALUE = "vault-held value 7f3a"

#: Variables through which azure-identity could pick another identity than the test's.
_AZURE_VARIABLES = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                    "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
                    "AZURE_TOKEN_CREDENTIALS", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT",
                    "MSI_SECRET")


@pytest.fixture
def identity(monkeypatch):
    """A managed identity, as App Service exposes it, that DefaultAzureCredential finds in the environment."""
    for name in _AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with FakeManagedIdentity() as peer:
        monkeypatch.setenv("IDENTITY_ENDPOINT", peer.endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", peer.header_secret)
        yield peer


@pytest.fixture
def tls(tmp_path):
    return make_tls_files(tmp_path)


@pytest.fixture
def vault(identity, tls):
    with FakeKeyVault(tls, accepted_token=identity.token) as peer:
        yield peer


@pytest.fixture
def settings(settings, vault, tls):
    """The app of these tests keeps secret values in the vault."""
    return {**settings, "SECRETS_BACKEND": "azure-keyvault", "KEYVAULT_URL": vault.url,
            "KEYVAULT_CA_BUNDLE": str(tls.ca), "KEYVAULT_TIMEOUT_SECONDS": 5.0, "KEYVAULT_RETRIES": 0}


@pytest.fixture
def job_id(app, admin):
    with app.app_context():
        job = make_job(admin_actor())
        db.session.commit()
        return job.id


def url(job_id, name=None) -> str:
    return f"/api/v1/jobs/{job_id}/secrets" + (f"/{name}" if name else "")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_vault_name_follows_the_spec():
    job_id = uuid.UUID("3f2c1e9a-0000-4000-8000-00000000abcd")
    assert vault_secret_name(job_id, "DB_PASSWORD") == "job-3f2c1e9a-0000-4000-8000-00000000abcd-secret-db-password"
    assert vault_secret_name(job_id, "_Api_Key2") == "job-3f2c1e9a-0000-4000-8000-00000000abcd-secret--api-key2"


def test_set_read_replace_delete_and_set_again_through_the_vault(app, client, admin, vault, identity, job_id):
    vault_name = vault_secret_name(job_id, "DB_PASSWORD")
    # When a secret is set through the API
    response = client.put(url(job_id, "DB_PASSWORD"), json={"value": VALUE}, headers=admin)
    assert response.status_code == 201, response.json
    # Then the vault holds the value under the spec's name, and the database only the name
    assert vault.value(vault_name) == VALUE
    with app.app_context():
        row = db.session.scalar(select(JobSecret))
        assert (row.name, row.ciphertext) == ("DB_PASSWORD", None)
        assert VALUE not in table_text("job_secrets") and VALUE not in table_text("audit_logs")
    # And the SDK met the bearer challenge, then signed in with the managed identity
    first, second = vault.requests[0], vault.requests[1]
    assert "Authorization" not in first.headers and second.headers["Authorization"] == f"Bearer {identity.token}"
    assert [r.query["resource"] for r in identity.requests] == [f"https://0.0.1:{vault.port}"]
    # And the run gets the value from the vault
    with app.app_context():
        assert secrets.values_for_run(job_id=job_id) == {"DB_PASSWORD": VALUE}
    # And listing names does not ask the vault
    asked = len(vault.requests)
    assert [s["name"] for s in client.get(url(job_id), headers=admin).json] == ["DB_PASSWORD"]
    assert len(vault.requests) == asked
    # When the value is replaced, deleted, then set again (Key Vault keeps deleted names: recovered)
    assert client.put(url(job_id, "DB_PASSWORD"), json={"value": "second"}, headers=admin).status_code == 200
    assert vault.value(vault_name) == "second"
    assert client.delete(url(job_id, "DB_PASSWORD"), headers=admin).status_code == 204
    assert vault.value(vault_name) is None and vault_name in vault.deleted
    assert client.put(url(job_id, "DB_PASSWORD"), json={"value": "third"}, headers=admin).status_code == 201
    # Then the latest value is the one a run gets
    assert vault.value(vault_name) == "third"
    with app.app_context():
        assert secrets.values_for_run(job_id=job_id) == {"DB_PASSWORD": "third"}
        actions = db.session.scalars(select(AuditLog.action).where(AuditLog.action.like("secret_%"))
                                     .order_by(AuditLog.id)).all()
        assert actions == ["secret_created", "secret_updated", "secret_deleted", "secret_created"]


def test_a_value_missing_from_the_vault_fails_the_run_clearly(app, admin, vault, job_id):
    with app.app_context():
        secrets.set_secret(actor=admin_actor(), job_id=job_id, name="API_TOKEN", value=VALUE)
        db.session.commit()
    vault.secrets.clear()  # someone deleted it in the Azure portal
    with app.app_context(), pytest.raises(SecretUnreadable) as raised:
        secrets.values_for_run(job_id=job_id)
    message = str(raised.value)
    assert "API_TOKEN" in message and vault.url in message and vault_secret_name(job_id, "API_TOKEN") in message


def test_names_too_long_for_key_vault_are_refused_by_name(app, client, admin, vault, job_id):
    longest = 127 - len(vault_secret_name(job_id, ""))
    assert client.put(url(job_id, "A" * longest), json={"value": "v"}, headers=admin).status_code == 201
    response = client.put(url(job_id, "B" * (longest + 1)), json={"value": "v"}, headers=admin)
    assert response.status_code == 422 and "Key Vault" in response.json["errors"]["json"]["name"][0]


def test_values_over_key_vaults_limit_are_refused_by_name(client, admin, vault, job_id):
    response = client.put(url(job_id, "BIG"), json={"value": "x" * (25 * 1024 + 1)}, headers=admin)
    assert response.status_code == 422 and "value" in response.json["errors"]["json"]
    assert vault.requests == []


def test_an_unreachable_vault_fails_quickly_and_clearly(app, client, admin, settings, job_id):
    # Given a vault URL where nothing listens
    dead = f"https://127.0.0.1:{closed_port()}"
    with other_app(settings, KEYVAULT_URL=dead, KEYVAULT_RETRIES=1) as other:
        # When a secret is set / Then the API answers 503, names the vault, and changes nothing
        before = db.session.scalar(select(func.count()).select_from(AuditLog))
        response = other.test_client().put(url(job_id, "DB_PASSWORD"), json={"value": VALUE}, headers=admin)
        assert response.status_code == 503, response.json
        assert dead in response.json["message"] and "cannot be reached" in response.json["message"]
        assert VALUE not in response.get_data(as_text=True)
        assert db.session.scalar(select(func.count()).select_from(JobSecret)) == 0
        assert db.session.scalar(select(func.count()).select_from(AuditLog)) == before
        # And a run of a job with a secret fails at once with a message saying what to check
        db.session.add(JobSecret(job_id=job_id, name="DB_PASSWORD"))
        db.session.commit()
        started = time.monotonic()
        with pytest.raises(SecretBackendUnavailable) as raised:
            secrets.values_for_run(job_id=job_id)
        assert time.monotonic() - started < 5
        message = str(raised.value)
        assert f"Azure Key Vault {dead}" in message and "JOBPLANE_KEYVAULT_URL" in message
        assert "DB_PASSWORD" in message and str(job_id) in message


def test_a_vault_that_does_not_answer_fails_after_the_timeout(app, settings, job_id):
    # Given a vault that accepts connections but never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with other_app(settings, KEYVAULT_URL=f"https://127.0.0.1:{silent.getsockname()[1]}",
                       KEYVAULT_TIMEOUT_SECONDS=0.5, KEYVAULT_RETRIES=0):
            db.session.add(JobSecret(job_id=job_id, name="DB_PASSWORD"))
            db.session.commit()
            started = time.monotonic()
            # When a run asks for its secrets / Then it fails within the timeout, not forever
            with pytest.raises(SecretBackendUnavailable, match="cannot be reached"):
                secrets.values_for_run(job_id=job_id)
            assert time.monotonic() - started < 5


def test_a_vault_that_refuses_the_identity_fails_clearly(app, admin, vault, job_id):
    vault.accepted_token = "some-other-token"  # the identity lacks access to this vault
    with app.app_context(), pytest.raises(SecretBackendUnavailable) as raised:
        secrets.set_secret(actor=admin_actor(), job_id=job_id, name="DB_PASSWORD", value=VALUE)
    assert "could not authenticate" in str(raised.value) and "managed identity" in str(raised.value)
    assert VALUE not in str(raised.value)


def test_the_vault_url_must_be_set(app, settings):
    # Start-up stops with a message naming the setting…
    with pytest.raises(ConfigError, match="JOBPLANE_KEYVAULT_URL is not set"):
        with other_app(settings, KEYVAULT_URL=None):
            pass
    # …and a URL that is not https is refused when the backend is made
    with pytest.raises(SecretBackendUnavailable, match="https URL"):
        KeyVaultSecretBackend.from_config({"KEYVAULT_URL": "http://vault.example"})
