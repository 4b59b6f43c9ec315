"""``jobplane jobs export`` and ``jobs apply`` on real PostgreSQL: an export applied to an emptied
database reproduces every job field by field; a dry run changes nothing; a bad file changes
nothing and names the job and the field; no secret value or webhook URL ever reaches a file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import AuditLog, Execution, Job, JobSecret, User
from app.services import secrets, users
from app.services.actors import SYSTEM, Actor
from app.services.job_rules import JOB_FIELDS
from app.services.jobs import create_job, pause_job
from tests.test_cli_admin import LOGIN, jobplane  # noqa: F401  (fixture: the CLI in this process)

SLACK = "https://hooks.slack.com/services/T0001/B0002/slack-credential-XYZ1"
WEBHOOK = "https://receiver.example.com/hooks/jobplane?key=webhook-credential-ABC9"
SECRET_VALUE = "s3cret-value-never-exported"
FUTURE = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)


def actor_for(email: str) -> Actor:
    return Actor(user=db.session.scalar(select(User).where(User.email == email)))


@pytest.fixture
def owners(app):
    """Two job owners: maya (job creator) and ops (admin)."""
    with app.app_context():
        users.create_user(actor=SYSTEM, email="maya@example.com", role="job_creator")
        users.create_user(actor=SYSTEM, email="ops@example.com", role="admin")
        db.session.commit()


@pytest.fixture
def estate(app, owners):
    """Jobs that use every field a user can set, one of them paused, one with a secret."""
    with app.app_context():
        maya, ops = actor_for("maya@example.com"), actor_for("ops@example.com")
        nightly = create_job(actor=maya, data={
            "name": "nightly-backup", "description": "Backs up\nthe billing database", "job_type": "bash",
            "script": "#!/bin/bash\nset -e\npg_dump billing | gzip > /tmp/b.gz\necho done\n",
            "schedule": "30 2 * * 1-5", "timezone": "Europe/Paris", "start_at": FUTURE - timedelta(days=60),
            "end_at": FUTURE + timedelta(days=365), "misfire_policy": "run_all", "max_lateness_seconds": 600,
            "concurrency_policy": "allow", "max_concurrent": 3, "timeout_minutes": 90, "timeout_seconds": 5400,
            "max_retries": 3, "retry_delay_minutes": 2, "retry_delay_seconds": 30, "retry_delay_max_seconds": 900,
            "retry_on": ["failed", "lost"], "network_enabled": False, "cpu_limit": 2, "memory_limit_mb": 512,
            "cpu_time_limit_seconds": 3000, "max_open_files": 256, "max_processes": 64,
            "executor": "kubernetes", "image": "registry.example.com/ops/pg-tools:16",
            "notification_emails": ["dba@example.com", "oncall@example.com"],
            "notification_slack_webhook": SLACK, "notification_webhook_url": WEBHOOK,
            "notify_on": ["job_failed", "job_succeeded"], "env": {"TARGET": "billing", "LEVEL": "9"}})
        secrets.set_secret(actor=maya, job_id=nightly.id, name="PGPASSWORD", value=SECRET_VALUE)
        create_job(actor=maya, data={"name": "report", "job_type": "python",
                                     "script_url": "https://git.example.com/ops/reports.git",
                                     "script_ref": "v1.4", "script_path": "reports/weekly.py",
                                     "schedule": "0 8 * * 1"})
        once = create_job(actor=ops, data={"name": "migrate-once", "job_type": "bash", "script": "echo migrate",
                                           "run_at": FUTURE, "concurrency_policy": "replace"})
        paused = create_job(actor=ops, data={"name": "cleanup", "job_type": "bash", "script": "echo clean",
                                             "schedule": "*/15 * * * *"})
        pause_job(actor=ops, job_id=paused.id)
        db.session.commit()
        return {"nightly": nightly.id, "once": once.id}


def job_state(app) -> dict[tuple[str, str], dict]:
    """Every job, keyed by (owner email, name): each user-set field, its status, owner and team."""
    with app.app_context():
        found = {}
        for job, email in db.session.execute(select(Job, User.email).join(User, User.id == Job.owner_id)
                                             .where(Job.status != "deleted")):
            found[(email, job.name)] = {**{key: getattr(job, key) for key in JOB_FIELDS},
                                        "status": job.status, "owner_id": job.owner_id, "team_id": job.team_id}
        db.session.rollback()
        return found


def database_state(app) -> dict:
    """Everything an apply could change: the jobs' rows and versions, the audit log, executions."""
    with app.app_context():
        rows = db.session.execute(text("SELECT * FROM jobs ORDER BY id")).mappings().all()
        state = {"jobs": [dict(row) for row in rows],
                 "audit": db.session.scalar(select(func.count()).select_from(AuditLog)),
                 "executions": db.session.scalar(select(func.count()).select_from(Execution))}
        db.session.rollback()
        return state


def empty_jobs(app) -> None:
    with app.app_context():
        db.session.execute(text("TRUNCATE jobs CASCADE"))
        db.session.commit()


def write(path: Path, definitions: list[dict]) -> str:
    path.write_text(yaml.safe_dump({"jobs": definitions}, sort_keys=False))
    return str(path)


# --- export -------------------------------------------------------------------------------------

def test_export_holds_every_field_but_never_a_secret_value_or_webhook_url(app, estate, jobplane, tmp_path):
    # When the jobs are exported to a file
    out = tmp_path / "jobs.yaml"
    result = jobplane("jobs", "export", "-o", str(out))
    # Then the file holds the four jobs, by owner and name, with every user-set field
    assert result.exit_code == 0, result.output
    assert "exported 4 job(s)" in result.stderr
    exported = out.read_text()
    definitions = yaml.safe_load(exported)["jobs"]
    assert [(d["owner"], d["name"]) for d in definitions] == [
        ("maya@example.com", "nightly-backup"), ("maya@example.com", "report"),
        ("ops@example.com", "cleanup"), ("ops@example.com", "migrate-once")]
    nightly = definitions[0]
    assert set(nightly) == set(JOB_FIELDS) | {"owner", "paused", "secrets"}
    assert nightly["notification_emails"] == ["dba@example.com", "oncall@example.com"]
    assert nightly["notify_on"] == ["job_failed", "job_succeeded"]
    assert (nightly["executor"], nightly["image"]) == ("kubernetes", "registry.example.com/ops/pg-tools:16")
    assert nightly["script"] == "#!/bin/bash\nset -e\npg_dump billing | gzip > /tmp/b.gz\necho done\n"
    assert "script: |" in exported  # scripts as readable blocks
    assert definitions[2]["paused"] is True and definitions[3]["paused"] is False
    # And secrets appear by name only; webhook URLs masked
    assert nightly["secrets"] == ["PGPASSWORD"]
    assert nightly["notification_slack_webhook"] == "https://hooks.slack.com/****XYZ1"
    for credential in (SECRET_VALUE, SLACK, WEBHOOK, "slack-credential", "webhook-credential"):
        assert credential not in exported


def test_export_of_one_owner_to_standard_output(app, estate, jobplane):
    result = jobplane("jobs", "export", "--owner", "OPS@example.com")
    assert result.exit_code == 0, result.output
    assert [d["name"] for d in yaml.safe_load(result.stdout)["jobs"]] == ["cleanup", "migrate-once"]


def test_export_to_an_unwritable_place_names_the_option(app, estate, jobplane, tmp_path):
    result = jobplane("jobs", "export", "-o", str(tmp_path / "no-such-dir" / "jobs.yaml"))
    assert result.exit_code == 2 and "'-o' / '--output'" in result.stderr and "No such file" in result.stderr


def test_export_for_an_unknown_owner_says_how_to_find_users(app, estate, jobplane):
    result = jobplane("jobs", "export", "--owner", "nobody@example.com")
    assert result.exit_code == 1
    assert "no user with email 'nobody@example.com'" in result.stderr and result.stdout == ""


# --- the round trip -----------------------------------------------------------------------------

def test_export_then_apply_on_an_emptied_database_reproduces_every_job(app, estate, jobplane, tmp_path):
    # Given the jobs exported, then every job gone from the database (their owners stay)
    before = job_state(app)
    out = tmp_path / "jobs.yaml"
    assert jobplane("jobs", "export", "-o", str(out)).exit_code == 0
    empty_jobs(app)
    audited_before = app_rows(app)[-1].id
    # When the export is applied as it is
    first = jobplane("jobs", "apply", "-f", str(out))
    # Then nothing is written: the masked webhook URLs stand for no URL there, and the error says so
    assert first.exit_code == 1
    assert "jobs[0] 'nightly-backup' (maya@example.com).notification_slack_webhook: holds a masked URL" \
        in first.stderr and "put the full URL in the file" in first.stderr
    assert job_state(app) == {}
    # When the operator puts the full URLs back, as the error asks, and applies again
    out.write_text(out.read_text().replace("https://hooks.slack.com/****XYZ1", SLACK)
                   .replace("https://receiver.example.com/****ABC9", WEBHOOK))
    second = jobplane("jobs", "apply", "-f", str(out))
    assert second.exit_code == 0, second.output
    assert second.stdout.strip().endswith("4 created, 0 updated, 0 unchanged")
    # Then every job is back, field by field: same fields, same status (paused stays paused), same owner
    after = job_state(app)
    assert set(after) == set(before)
    for key, fields in before.items():
        for field, value in fields.items():
            assert after[key][field] == value, f"{key} {field}: {after[key][field]!r} != {value!r}"
    # And the secret's name is reported missing (values are never in a file), not invented
    assert "nightly-backup (maya@example.com) uses secret(s) PGPASSWORD it does not have" in second.stderr
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(JobSecret)) == 0
    # And each creation is audited as its owner, through the operator's CLI
    rows = app_rows(app, AuditLog.action == "job_created", AuditLog.id > audited_before)
    assert sorted(row.email for row in rows) == ["maya@example.com", "maya@example.com",
                                                 "ops@example.com", "ops@example.com"]
    assert {row.user_agent for row in rows} == {f"jobplane-cli (cli:{LOGIN})"}
    assert not any(SLACK in str(row.changes) or WEBHOOK in str(row.changes) for row in rows)


def app_rows(app, *where) -> list[AuditLog]:
    with app.app_context():
        found = list(db.session.scalars(select(AuditLog).where(*where).order_by(AuditLog.id)))
        db.session.expunge_all()
        return found


def test_applying_the_export_unchanged_changes_nothing_and_keeps_the_webhooks(app, estate, jobplane, tmp_path):
    out = tmp_path / "jobs.yaml"
    assert jobplane("jobs", "export", "-o", str(out)).exit_code == 0
    before = database_state(app)
    result = jobplane("jobs", "apply", "-f", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("0 created, 0 updated, 4 unchanged")
    assert "---" not in result.stdout  # no diff
    assert database_state(app) == before
    with app.app_context():
        nightly = db.session.get(Job, estate["nightly"])
        assert (nightly.notification_slack_webhook, nightly.notification_webhook_url) == (SLACK, WEBHOOK)


# --- updates and the diff -----------------------------------------------------------------------

def test_apply_updates_a_job_matched_by_name_and_owner_printing_a_unified_diff(app, estate, jobplane, tmp_path):
    # Given the export with the nightly job's timeout changed and the cleanup job resumed
    definitions = yaml.safe_load(jobplane("jobs", "export").stdout)["jobs"]
    definitions[0]["timeout_seconds"] = None
    definitions[0]["timeout_minutes"] = 30
    definitions[2]["paused"] = False
    path = write(tmp_path / "jobs.yaml", definitions)
    # When it is applied
    result = jobplane("jobs", "apply", "-f", path)
    # Then the diff shows exactly the changed lines, labelled with the job and the file
    assert result.exit_code == 0, result.output
    assert "--- nightly-backup (maya@example.com) in Jobplane\n" in result.stdout
    assert f"+++ nightly-backup (maya@example.com) in {path}\n" in result.stdout
    changed = [line for line in result.stdout.splitlines()
               if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    assert changed == ["-timeout_minutes: 90", "-timeout_seconds: 5400", "+timeout_minutes: 30",
                       "+timeout_seconds: null", "-paused: true", "+paused: false"]
    assert f"updated job nightly-backup (maya@example.com): {estate['nightly']}" in result.stdout
    assert result.stdout.strip().endswith("0 created, 2 updated, 2 unchanged")
    # And the job itself was updated in place, through the service (version bumped, audited as the CLI)
    with app.app_context():
        nightly = db.session.get(Job, estate["nightly"])
        assert (nightly.timeout_minutes, nightly.timeout_seconds, nightly.version) == (30, None, 2)
    (row,) = app_rows(app, AuditLog.action == "job_updated")
    assert row.email == f"cli:{LOGIN}" and set(row.changes) == {"timeout_minutes", "timeout_seconds"}
    assert [r.email for r in app_rows(app, AuditLog.action == "job_resumed")] == [f"cli:{LOGIN}"]


def test_a_dry_run_prints_the_diff_and_changes_nothing(app, estate, jobplane, tmp_path):
    # Given a file that changes one job and adds another
    definitions = yaml.safe_load(jobplane("jobs", "export").stdout)["jobs"]
    definitions[1]["schedule"] = "0 9 * * 1"
    definitions.append({"name": "new-job", "owner": "maya@example.com", "job_type": "bash", "script": "echo hi",
                        "paused": True})
    path = write(tmp_path / "jobs.yaml", definitions)
    before = database_state(app)
    # When it is applied with --dry-run
    result = jobplane("jobs", "apply", "-f", path, "--dry-run")
    # Then the diffs and what would happen are printed
    assert result.exit_code == 0, result.output
    assert "-schedule: 0 8 * * 1\n+schedule: 0 9 * * 1\n" in result.stdout
    assert "+name: new-job\n" in result.stdout and "+paused: true\n" in result.stdout
    assert "would update job report (maya@example.com)" in result.stdout
    assert "would create job new-job (maya@example.com)" in result.stdout
    assert result.stdout.strip().endswith("1 created, 1 updated, 3 unchanged (dry run: nothing was changed)")
    # And nothing changed: no job, no version, no audit row, no execution
    assert database_state(app) == before
    # And the same file applied for real does what the dry run said
    real = jobplane("jobs", "apply", "-f", path)
    assert real.exit_code == 0 and real.stdout.strip().endswith("1 created, 1 updated, 3 unchanged")
    assert job_state(app)[("maya@example.com", "new-job")]["status"] == "disabled"


# --- all or nothing -----------------------------------------------------------------------------

def test_a_bad_job_in_the_file_names_the_job_and_field_and_writes_nothing(app, estate, jobplane, tmp_path):
    # Given a file with a good change, a bad schedule, an unknown owner and an unknown field
    definitions = yaml.safe_load(jobplane("jobs", "export").stdout)["jobs"]
    definitions[1]["description"] = "a good change that must not be kept"
    definitions[2]["schedule"] = "61 * * * *"
    definitions.append({"name": "orphan", "owner": "nobody@example.com", "job_type": "bash", "script": "true"})
    definitions.append({"name": "typo", "owner": "maya@example.com", "job_type": "bash", "script": "true",
                        "timeout_minuts": 5})
    path = write(tmp_path / "jobs.yaml", definitions)
    before = database_state(app)
    # When it is applied
    result = jobplane("jobs", "apply", "-f", path)
    # Then it fails naming each bad job and field
    assert result.exit_code == 1
    assert "jobs[2] 'cleanup' (ops@example.com).schedule:" in result.stderr
    assert "jobs[4] 'orphan' (nobody@example.com).owner: no user with email 'nobody@example.com'" in result.stderr
    assert "jobs[5] 'typo' (maya@example.com).timeout_minuts: unknown field" in result.stderr
    # And nothing was written, not even the good change
    assert database_state(app) == before


@pytest.mark.parametrize("content, message", [
    ("jobs: [unclosed", "is not valid YAML"),
    ("- name: x\n", "must hold `jobs:` and a list of job definitions"),
    ("jobs:\n  - just a string\n", "jobs[0]: must be a mapping"),
    ("jobs:\n  - {name: a, owner: maya@example.com, job_type: bash, script: 'true'}\n"
     "  - {name: a, owner: MAYA@example.com, job_type: bash, script: 'true'}\n", "defines the same job"),
    ("jobs:\n  - {name: a, owner: maya@example.com, job_type: bash, script: 'true', run_at: tomorrow}\n",
     ".run_at: must be an ISO 8601 date"),
    ("jobs:\n  - {owner: maya@example.com, job_type: bash, script: 'true'}\n", ".name: is required"),
])
def test_a_malformed_file_is_refused_with_what_to_fix(app, owners, jobplane, tmp_path, content, message):
    path = tmp_path / "jobs.yaml"
    path.write_text(content)
    before = database_state(app)
    result = jobplane("jobs", "apply", "-f", str(path))
    assert result.exit_code == 1
    assert message in result.stderr
    assert database_state(app) == before


def test_a_job_whose_owner_may_not_create_jobs_is_refused(app, owners, jobplane, tmp_path):
    with app.app_context():
        users.create_user(actor=SYSTEM, email="viewer@example.com", role="team_viewer")
        db.session.commit()
    path = write(tmp_path / "jobs.yaml", [{"name": "x", "owner": "viewer@example.com", "job_type": "bash",
                                           "script": "true"}])
    result = jobplane("jobs", "apply", "-f", path)
    assert result.exit_code == 1
    assert "jobs[0] 'x' (viewer@example.com): your role may not create jobs" in result.stderr
    assert job_state(app) == {}


def test_apply_without_a_readable_file_names_the_option(app, jobplane, tmp_path):
    result = jobplane("jobs", "apply", "-f", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "'-f' / '--file'" in result.stderr
    assert jobplane("jobs", "apply").exit_code == 2
