"""Settings: read from JOBPLANE_* variables; malformed or missing ones stop start-up by name."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings, settings_table

BASE = {"JOBPLANE_DATABASE_URL": "postgresql://u:p@db/jobplane", "JOBPLANE_SECRET_KEY": "k"}


def test_defaults_and_the_psycopg2_driver():
    settings = load_settings(environ=BASE)
    assert settings["PORT"] == 8080
    assert settings["DATABASE_URL"] == "postgresql+psycopg2://u:p@db/jobplane"
    assert settings["REDIS_URL"].startswith("redis://")


@pytest.mark.parametrize("variable, value, fragment", [
    ("JOBPLANE_PORT", "eighty", "JOBPLANE_PORT must be a whole number"),
    ("JOBPLANE_PORT", "0", "JOBPLANE_PORT must be at least 1"),
    ("JOBPLANE_SANDBOX", "docker", "JOBPLANE_SANDBOX must be one of"),
    ("JOBPLANE_PROT", "8080", "unknown setting JOBPLANE_PROT"),
    ("JOBPLANE_HEARTBEAT_SECONDS", "soon", "JOBPLANE_HEARTBEAT_SECONDS must be a number"),
    ("JOBPLANE_EXECUTOR_DEFAULT", "docker", "JOBPLANE_EXECUTOR_DEFAULT must be one of local, kubernetes"),
    ("JOBPLANE_K8S_NODE_SELECTOR", "pool=jobs", "JOBPLANE_K8S_NODE_SELECTOR must be JSON"),
    ("JOBPLANE_K8S_TOLERATIONS", '{"key": "jobs"}', "JOBPLANE_K8S_TOLERATIONS must be JSON: a list"),
    ("JOBPLANE_K8S_PENDING_TIMEOUT_SECONDS", "0", "JOBPLANE_K8S_PENDING_TIMEOUT_SECONDS must be more than 0"),
    ("JOBPLANE_BULK_FIRE_THRESHOLD", "-1", "JOBPLANE_BULK_FIRE_THRESHOLD must be 0 or more"),
    ("JOBPLANE_RUN_GROUP_SIZE", "0", "JOBPLANE_RUN_GROUP_SIZE must be at least 1"),
    ("JOBPLANE_RUN_GROUP_WINDOW", "0", "JOBPLANE_RUN_GROUP_WINDOW must be at least 1"),
    ("JOBPLANE_BACKGROUND_POLL_MS", "0", "JOBPLANE_BACKGROUND_POLL_MS must be at least 1"),
    ("JOBPLANE_WORKER_POLL_MS", "0", "JOBPLANE_WORKER_POLL_MS must be at least 1"),
])
def test_malformed_values_name_the_variable(variable, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(environ={**BASE, variable: value})


def test_kubernetes_placement_settings_are_parsed_once_at_start():
    settings = load_settings(environ={**BASE, "JOBPLANE_K8S_NODE_SELECTOR": '{"pool": "jobs"}',
                                      "JOBPLANE_K8S_TOLERATIONS": '[{"key": "jobs", "operator": "Exists"}]',
                                      "JOBPLANE_K8S_IMAGE_PULL_SECRETS": "registry-a, registry-b"})
    assert settings["K8S_NODE_SELECTOR"] == {"pool": "jobs"}
    assert settings["K8S_TOLERATIONS"] == [{"key": "jobs", "operator": "Exists"}]
    assert settings["K8S_IMAGE_PULL_SECRETS"] == ["registry-a", "registry-b"]
    assert settings["EXECUTOR_DEFAULT"] == "local" and settings["K8S_NAMESPACE"] == "jobplane-jobs"


def test_production_needs_a_database_and_a_secret_key():
    with pytest.raises(ConfigError, match="JOBPLANE_DATABASE_URL is not set"):
        load_settings(environ={"JOBPLANE_SECRET_KEY": "k"})
    with pytest.raises(ConfigError, match="JOBPLANE_SECRET_KEY is not set"):
        load_settings(environ={"JOBPLANE_DATABASE_URL": "sqlite://"})


def test_key_vault_backend_needs_its_url():
    with pytest.raises(ConfigError, match="JOBPLANE_KEYVAULT_URL is not set"):
        load_settings(environ={**BASE, "JOBPLANE_SECRETS_BACKEND": "azure-keyvault"})


def test_standalone_uses_sqlite_in_the_data_dir_and_keeps_its_key(tmp_path):
    environ = {"JOBPLANE_ENV": "standalone", "JOBPLANE_DATA_DIR": str(tmp_path)}
    first, second = load_settings(environ=environ), load_settings(environ=environ)
    assert first["DATABASE_URL"] == f"sqlite:///{tmp_path}/jobplane.db"
    assert first["SECRET_KEY"] == second["SECRET_KEY"] and len(first["SECRET_KEY"]) == 64


def test_the_settings_table_lists_every_setting():
    table = settings_table()
    for name in ("JOBPLANE_DATABASE_URL", "JOBPLANE_REDIS_URL", "JOBPLANE_PORT", "JOBPLANE_DATA_DIR",
                 "JOBPLANE_SECRET_KEY", "JOBPLANE_BOOTSTRAP_ADMIN_TOKEN"):
        assert f"`{name}`" in table


def test_the_readme_documents_every_setting():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert settings_table() in readme, "README's settings table is stale: paste `jobplane settings`"
