"""``jobplane jobs`` and ``jobplane executions`` on real PostgreSQL, Redis and worker processes (and a
real standalone process): the same services as the API, audited as ``cli:<login>``; listings as
tables and parseable JSON; ``executions logs --follow`` prints output while the run is going."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app import create_app
from app.extensions import db
from app.models import AuditLog, Execution, ExecutionLogChunk, Job
from app.models.base import utcnow
from app.services import users
from app.services.actors import SYSTEM, Actor
from app.services.jobs import create_job
from tests.helpers import JOBPLANE, process_env, wait_for
from tests.test_cli_admin import LOGIN, jobplane, rows  # noqa: F401  (jobplane: the CLI fixture)
from tests.test_standalone import standalone  # noqa: F401  (fixture: a standalone process)

MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def jobs(app):
    """maya's two jobs and one of ops's."""
    with app.app_context():
        maya = users.create_user(actor=SYSTEM, email="maya@example.com", role="job_creator")
        ops = users.create_user(actor=SYSTEM, email="ops@example.com", role="admin")
        made = {
            "backup": create_job(actor=Actor(user=maya), data={"name": "backup", "job_type": "bash",
                                                               "script": "echo backup", "schedule": "0 3 * * *"}),
            "report": create_job(actor=Actor(user=maya), data={"name": "report", "job_type": "python",
                                                               "script": "print(1)"}),
            "cleanup": create_job(actor=Actor(user=ops), data={"name": "cleanup", "job_type": "bash",
                                                               "script": "echo clean", "schedule": "*/5 * * * *"}),
        }
        db.session.commit()
        return {name: str(job.id) for name, job in made.items()}


def job_row(app, job_id) -> Job:
    with app.app_context():
        job = db.session.get(Job, uuid.UUID(job_id))
        db.session.expunge_all()
        return job


def execution_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Execution))


# --- jobs list and show -------------------------------------------------------------------------

def test_jobs_list_as_a_table_and_as_json(app, jobs, jobplane):
    table = jobplane("jobs", "list")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "OWNER", "TYPE", "SCHEDULE", "STATUS", "ID"]
    assert [line.split()[:3] for line in lines[1:]] == [["backup", "maya@example.com", "bash"],
                                                        ["cleanup", "ops@example.com", "bash"],
                                                        ["report", "maya@example.com", "python"]]
    assert "0 3 * * *" in lines[1] and "on demand" in lines[3]
    listed = json.loads(jobplane("jobs", "list", "--json", "--owner", "OPS@example.com").stdout)
    assert [(j["id"], j["name"], j["owner"], j["status"]) for j in listed] == [
        (jobs["cleanup"], "cleanup", "ops@example.com", "active")]


def test_jobs_list_filters_sorts_and_says_when_it_shows_part(app, jobs, jobplane):
    jobplane("jobs", "pause", jobs["report"])
    names = lambda *args: [j["name"] for j in json.loads(jobplane("jobs", "list", "--json", *args).stdout)]  # noqa: E731
    assert names("--status", "paused") == ["report"]
    assert names("--status", "active", "--sort", "-name") == ["cleanup", "backup"]
    assert names("--search", "CLEAN") == ["cleanup"]
    assert names("--type", "python") == ["report"]
    assert names("--owner", "maya@example.com", "--type", "bash") == ["backup"]
    part = jobplane("jobs", "list", "--limit", "2")
    assert len(part.stdout.splitlines()) == 3 and "(2 of 3 jobs shown; raise --limit to see more)" in part.stderr


@pytest.mark.parametrize("args, code, message", [
    (["--status", "deleted"], 2, "--status"),
    (["--type", "ruby"], 2, "--type"),
    (["--limit", "0"], 2, "--limit"),
    (["--sort", "owner"], 1, "sort:"),
])
def test_jobs_list_refuses_bad_options(app, jobs, jobplane, args, code, message):
    result = jobplane("jobs", "list", *args)
    assert result.exit_code == code and message in result.stderr and result.stdout == ""


def test_jobs_list_for_an_unknown_owner_fails_naming_it(app, jobs, jobplane):
    result = jobplane("jobs", "list", "--owner", "nobody@example.com")
    assert result.exit_code == 1 and "no user with email 'nobody@example.com'" in result.stderr


def test_jobs_show_prints_the_definition_and_state(app, jobs, jobplane):
    shown = json.loads(jobplane("jobs", "show", jobs["backup"], "--json").stdout)
    assert (shown["id"], shown["name"], shown["owner"], shown["schedule"], shown["script"], shown["status"],
            shown["version"], shown["paused"], shown["timeout_minutes"]) == \
        (jobs["backup"], "backup", "maya@example.com", "0 3 * * *", "echo backup", "active", 1, False, 60)
    table = jobplane("jobs", "show", jobs["backup"]).stdout
    assert any(line.split() == ["name", "backup"] for line in table.splitlines())


@pytest.mark.parametrize("command", ["show", "run", "pause", "resume", "delete"])
def test_job_commands_refuse_a_missing_or_malformed_id(app, jobs, jobplane, command):
    before = (execution_count(app), len(rows(app)))
    missing = jobplane("jobs", command, MISSING, "--yes") if command == "delete" else jobplane("jobs", command, MISSING)
    assert missing.exit_code == 1 and f"job {MISSING} not found" in missing.stderr
    malformed = jobplane("jobs", command, "backup")
    assert malformed.exit_code == 2
    assert "'backup' is not a job id (a UUID); find it with `jobplane jobs list`" in malformed.stderr
    assert (execution_count(app), len(rows(app))) == before


# --- run, pause, resume, delete -----------------------------------------------------------------

def test_jobs_pause_and_resume_audited_as_the_login(app, jobs, jobplane):
    paused = jobplane("jobs", "pause", jobs["cleanup"])
    assert paused.exit_code == 0 and paused.stdout.strip() == f"paused job cleanup ({jobs['cleanup']})"
    assert job_row(app, jobs["cleanup"]).status == "disabled"
    assert json.loads(jobplane("jobs", "show", jobs["cleanup"], "--json").stdout)["status"] == "paused"
    resumed = jobplane("jobs", "resume", jobs["cleanup"])
    assert resumed.exit_code == 0 and resumed.stdout.startswith(f"resumed job cleanup ({jobs['cleanup']})")
    assert job_row(app, jobs["cleanup"]).status == "active"
    trail = [(row.action, row.email) for row in rows(app, AuditLog.action.in_(("job_paused", "job_resumed")))]
    assert trail == [("job_paused", f"cli:{LOGIN}"), ("job_resumed", f"cli:{LOGIN}")]


def test_jobs_delete_asks_first_unless_yes(app, jobs, jobplane):
    # When the operator answers no
    refused = jobplane("jobs", "delete", jobs["report"], input="n\n")
    # Then nothing changes
    assert refused.exit_code == 1 and "Aborted" in refused.stderr
    assert "delete job report" in refused.stdout
    assert job_row(app, jobs["report"]).status == "active" and rows(app, AuditLog.action == "job_deleted") == []
    # When they answer yes, or give --yes
    assert jobplane("jobs", "delete", jobs["report"], input="y\n").exit_code == 0
    result = jobplane("jobs", "delete", jobs["backup"], "--yes")
    # Then the jobs are deleted, audited as the login, and gone from the list
    assert result.exit_code == 0 and result.stdout.strip() == f"deleted job backup ({jobs['backup']})"
    assert job_row(app, jobs["backup"]).status == "deleted"
    assert [row.email for row in rows(app, AuditLog.action == "job_deleted")] == [f"cli:{LOGIN}"] * 2
    assert [j["name"] for j in json.loads(jobplane("jobs", "list", "--json").stdout)] == ["cleanup"]


def test_jobs_run_queues_a_run_and_a_forbidden_overlap_is_refused(app, jobs, jobplane):
    result = jobplane("jobs", "run", jobs["report"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        (execution,) = db.session.scalars(select(Execution)).all()
        assert (str(execution.job_id), execution.status, execution.triggered_by) == (jobs["report"], "queued", "manual")
    assert result.stdout.startswith(f"queued execution {execution.id}")
    (row,) = rows(app, AuditLog.action == "job_executed")
    assert row.email == f"cli:{LOGIN}"
    # When it is run again while that run is queued (the job forbids overlaps by default)
    again = jobplane("jobs", "run", jobs["report"])
    assert again.exit_code == 1 and again.stderr.startswith("Error: ")
    assert execution_count(app) == 1


# --- executions ---------------------------------------------------------------------------------

@pytest.fixture
def history(app, jobs):
    """Three finished runs of backup, one failed, each with a two-chunk log."""
    with app.app_context():
        now = utcnow()
        made = []
        for hours, status in ((3, "success"), (2, "failed"), (1, "success")):
            when = now - timedelta(hours=hours)
            execution = Execution(job_id=uuid.UUID(jobs["backup"]), status=status, scheduled_for=when,
                                  started_at=when, completed_at=when + timedelta(seconds=2), duration_seconds=2.0,
                                  exit_code=0 if status == "success" else 3)
            db.session.add(execution)
            db.session.flush()
            # numbered from 0, as the worker's log writer does
            for seq, text in enumerate((f"start {hours}\n", f"end {hours} ünïcode\n")):
                db.session.add(ExecutionLogChunk(execution_id=execution.id, seq=seq, offset=0, stream="stdout",
                                                 data=text))
            made.append(str(execution.id))
        db.session.commit()
        return made


def test_executions_list_newest_first_with_a_status_filter(app, history, jobs, jobplane):
    table = jobplane("executions", "list", "--job", jobs["backup"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == ["ID", "STATUS", "TRIGGERED_BY", "ATTEMPT", "SCHEDULED_FOR",
                                                    "DURATION_SECONDS", "EXIT_CODE"]
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == list(reversed(history))
    failed = json.loads(jobplane("executions", "list", "--job", jobs["backup"], "--status", "failed", "--json").stdout)
    assert [(e["id"], e["status"], e["exit_code"]) for e in failed] == [(history[1], "failed", 3)]
    both = json.loads(jobplane("executions", "list", "--job", jobs["backup"], "--status", "failed",
                               "--status", "success", "--limit", "2", "--json").stdout)
    assert [e["id"] for e in both] == [history[2], history[1]]


@pytest.mark.parametrize("args, code, message", [
    (["--job", MISSING], 1, f"job {MISSING} not found"),
    (["--job", "backup"], 2, "is not a job id (a UUID)"),
    ([], 2, "--job"),
    (["--job", "JOB", "--status", "done"], 1, "status: unknown status done; use queued, running"),
    (["--job", "JOB", "--limit", "0"], 2, "--limit"),
])
def test_executions_list_refuses_bad_input(app, history, jobs, jobplane, args, code, message):
    result = jobplane("executions", "list", *[jobs["backup"] if arg == "JOB" else arg for arg in args])
    assert result.exit_code == code and message in result.stderr


def test_executions_logs_prints_the_stored_output(app, history, jobplane):
    result = jobplane("executions", "logs", history[0])
    assert result.exit_code == 0, result.output
    assert result.stdout == "start 3\nend 3 ünïcode\n"
    missing = jobplane("executions", "logs", MISSING)
    assert missing.exit_code == 1 and f"execution {MISSING} not found" in missing.stderr
    malformed = jobplane("executions", "logs", "latest")
    assert malformed.exit_code == 2 and "find it with `jobplane executions list --job JOB_ID`" in malformed.stderr


def follow(args: list[str], env: dict, cwd=None) -> tuple[int, list[tuple[float, str]], str]:
    """Run ``jobplane executions logs --follow`` to its end, reading its lines as they come.

    Returns:
      its exit code, its output lines with the time each arrived, and its standard error.
    """
    with subprocess.Popen([JOBPLANE, "executions", "logs", *args, "--follow", "--interval", "0.1"], env=env,
                          cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        lines = [(time.monotonic(), line) for line in iter(process.stdout.readline, "")]
        errors = process.stderr.read()
        return process.wait(timeout=30), lines, errors


def test_logs_follow_prints_output_while_a_real_worker_runs_the_job(app, settings, jobs, jobplane, processes):
    # Given a worker, and a job that prints a line every 0.8 seconds
    processes.worker()
    with app.app_context():
        job = db.session.get(Job, uuid.UUID(jobs["report"]))
        job.job_type, job.script = "bash", "for i in 1 2 3 4; do echo \"line $i\"; sleep 0.8; done"
        db.session.commit()
    # When the operator runs it with the CLI and follows its log
    run = jobplane("jobs", "run", jobs["report"])
    assert run.exit_code == 0, run.output
    execution_id = run.stdout.split()[2].rstrip(";")
    code, lines, errors = follow([execution_id], process_env(settings, {}))
    # Then every line is printed, in order, and the command ends by itself when the run does
    assert code == 0, errors
    assert [line for _, line in lines] == ["line 1\n", "line 2\n", "line 3\n", "line 4\n"]
    assert f"[execution {execution_id} ended: success]" in errors
    # And the lines came as they were printed, not all at the end
    assert lines[-1][0] - lines[0][0] > 1.5, [at - lines[0][0] for at, _ in lines]


def test_jobs_run_and_logs_follow_work_in_standalone_mode(standalone, tmp_path):  # noqa: F811  (the fixture)
    # Given standalone Jobplane (SQLite) and a job that prints a line every 0.8 seconds
    standalone.start()
    response = standalone.post("/api/v1/jobs", json={
        "name": "slow", "job_type": "bash", "script": "for i in 1 2 3; do echo \"tick $i\"; sleep 0.8; done"})
    assert response.status_code == 201, response.text
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
    env.update(JOBPLANE_ENV="standalone")
    # When the operator runs it with the CLI on the same machine, in standalone's directory
    run = subprocess.run([JOBPLANE, "jobs", "run", response.json()["id"]], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    # Then it is queued, and the CLI says when standalone will start it
    assert run.returncode == 0, run.stderr
    execution_id = run.stdout.split()[2].rstrip(";")
    assert "standalone: it starts within JOBPLANE_SWEEP_INTERVAL_SECONDS (5 s)" in run.stderr
    # And following its log prints the output, read from the SQLite file, until the run ends
    code, lines, errors = follow([execution_id], env, cwd=tmp_path)
    assert code == 0, errors
    assert [line for _, line in lines] == ["tick 1\n", "tick 2\n", "tick 3\n"]
    assert f"[execution {execution_id} ended: success]" in errors
    standalone.stop()
    # And the run was sent once, by standalone's sweeper as soon as it looked (not again after
    # JOBPLANE_REQUEUE_AFTER_SECONDS, as for a message lost on its way)
    app = create_app({"ENV": "standalone", "DATA_DIR": str(tmp_path / "var")})
    with app.app_context():
        assert db.session.get(Execution, uuid.UUID(execution_id)).send_count == 1
    app.extensions["jobplane_db"].engine.dispose()
