"""The audit log's hash chain on real PostgreSQL: one chain across concurrent writers, a trigger
that refuses edits, verification that names the edited or missing row, retention that prunes a
prefix, GDPR erasure that keeps the chain whole, and rollbacks that leave no trace."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app import create_app
from app.extensions import db
from app.migrate import upgrade
from app.models import ApiToken, AuditChainHead, AuditLog, Execution, Job, Team, User
from app.services import api_tokens, audit, audit_chain, audit_trail, jobs, privacy, users
from app.services.actors import SYSTEM, Actor
from tests.helpers import JOBPLANE, process_env

#: an actor with every personal column set, so erasure and PII edits have something to touch
CLI = Actor(user=None, label="cli:tester", ip_address="10.0.0.7", user_agent="pytest-agent",
            request_id="req-1", system=True)


def write(app, count: int, *, actor: Actor = CLI, action: str = "thing_done",
          created_at: datetime | None = None) -> None:
    """Commit ``count`` audit rows in one transaction."""
    with app.app_context():
        for n in range(count):
            row = audit.record(actor=actor, action=action, resource_type="thing", resource_id=n,
                               changes={"n": {"old": None, "new": n}})
            if created_at is not None:
                row.created_at = created_at
        db.session.commit()


def chain(app) -> tuple[list[AuditLog], AuditChainHead]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).order_by(AuditLog.id)))
        head = db.session.get(AuditChainHead, 1)
        db.session.expunge_all()
        return rows, head


def verify(app) -> audit_chain.Verification:
    with app.app_context():
        return audit_chain.verify(db.session)


@pytest.fixture
def raw(database_url):
    """A plain engine on the test database, connected as its (superuser) owner."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def tamper(raw, sql: str, **params) -> None:
    """Run ``sql`` with the append-only trigger switched off, as a superuser could."""
    with raw.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(sql), params)


# --- one chain ----------------------------------------------------------------------------------

def test_rows_from_many_transactions_and_threads_form_one_chain(app):
    # Given rows written by a few transactions in turn
    for count in (1, 2, 3):
        write(app, count)
    # And by 8 threads at once, each with its own app context and session, 5 transactions each
    start, failures = threading.Barrier(8), []

    def writer(number: int) -> None:
        try:
            start.wait(timeout=10)
            for _ in range(5):
                write(app, 2, action=f"thread_{number}")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    # Then every row is there, linked to the one before it in id order
    rows, head = chain(app)
    assert len(rows) == 6 + 8 * 5 * 2
    assert rows[0].prev_hash == ""
    for before, row in zip(rows, rows[1:]):
        assert row.prev_hash == before.row_hash, f"row {row.id} does not follow row {before.id}"
    for row in rows:
        assert audit_chain.row_hash(audit_chain._as_mapping(row)) == row.row_hash
    # And the head is the newest row
    assert (head.last_id, head.last_hash) == (rows[-1].id, rows[-1].row_hash)
    # And verification agrees
    result = verify(app)
    assert result.ok, result.problem
    assert result.checked == len(rows) and result.head_hash == rows[-1].row_hash


def test_verify_in_a_session_holding_the_head_sees_rows_committed_since(app):
    # Given a session that wrote a row and still holds the head it left behind
    with app.app_context():
        audit.record(actor=CLI, action="first", resource_type="thing", resource_id=1)
        db.session.commit()
        head = db.session.get(AuditChainHead, 1)
        held_hash = head.last_hash
        # When another transaction commits two rows
        write(app, 2)
        # Then verification in the first session sees them, not a chain cut short
        result = audit_chain.verify(db.session)
        assert result.ok, result.problem
        assert result.checked == 3 and result.head_hash != held_hash


@pytest.fixture
def during_verify(app):
    """Run a callable once, on another connection, right after verification's first read of rows."""
    engine = app.extensions["jobplane_db"].engine
    work: list = []

    def interleave(_conn, _cursor, statement, _params, _context, _many):
        if work and statement.lstrip().startswith("SELECT") and "FROM audit_logs" in statement:
            work.pop()()

    event.listen(engine, "after_cursor_execute", interleave)
    yield work.append
    event.remove(engine, "after_cursor_execute", interleave)


def test_rows_appended_while_verifying_are_walked_not_reported_missing(app, during_verify):
    # Given 4 rows / When 2 more are committed while verification walks, 2 rows at a time
    write(app, 4)
    during_verify(lambda: write(app, 2))
    with app.app_context():
        result = audit_chain.verify(db.session, batch_size=2)
    # Then the chain is intact, the new rows included
    assert result.ok, result.problem
    assert result.checked == 6


def test_rows_pruned_while_verifying_are_not_reported_missing(app, during_verify):
    # Given 4 old rows and 2 new / When retention prunes the old ones while verification walks
    write(app, 4, created_at=datetime.now(timezone.utc) - timedelta(days=9))
    write(app, 2)

    def prune() -> None:
        with app.app_context():
            assert audit_chain.prune(db.session, retention_days=1) == 4

    during_verify(prune)
    with app.app_context():
        result = audit_chain.verify(db.session, batch_size=2)
    # Then the chain is intact from the new anchor
    assert result.ok, result.problem
    assert result.checked == 2


# --- the trigger --------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "UPDATE audit_logs SET action = 'nothing_happened'",
    "UPDATE audit_logs SET email = NULL, ip_address = NULL, user_agent = NULL",
    "DELETE FROM audit_logs WHERE id = 2",
    "DELETE FROM audit_logs",
    "TRUNCATE audit_logs",
])
def test_plain_updates_deletes_and_truncates_are_refused(app, raw, sql):
    # Given some audit rows
    write(app, 3)
    before = chain(app)[0]
    # When a connection changes them without going through Jobplane / Then PostgreSQL refuses
    with pytest.raises(DBAPIError, match="audit_logs is append-only"):
        with raw.begin() as connection:
            connection.execute(text(sql))
    # And nothing changed
    assert [(r.id, r.action, r.email, r.row_hash) for r in chain(app)[0]] == \
        [(r.id, r.action, r.email, r.row_hash) for r in before]


def test_the_erasure_switch_allows_only_blanking_personal_columns(app, raw):
    write(app, 2)
    with pytest.raises(DBAPIError, match="append-only"):
        with raw.begin() as connection:
            connection.execute(text("SET LOCAL jobplane.audit_erase = 'on'"))
            connection.execute(text("UPDATE audit_logs SET email = NULL, ip_address = NULL, "
                                    "user_agent = NULL, action = 'rewritten'"))
    with pytest.raises(DBAPIError, match="append-only"):
        with raw.begin() as connection:
            connection.execute(text("SET LOCAL jobplane.audit_erase = 'on'"))
            connection.execute(text("DELETE FROM audit_logs"))
    assert {r.action for r in chain(app)[0]} == {"thing_done"}


# --- tampering is found -------------------------------------------------------------------------

@pytest.mark.parametrize("column, sql", [
    ("action", "UPDATE audit_logs SET action = 'job_deleted' WHERE id = 3"),
    ("changes", "UPDATE audit_logs SET changes = '{\"n\": {\"old\": null, \"new\": 99}}' WHERE id = 3"),
    ("email", "UPDATE audit_logs SET email = 'someone-else@example.com' WHERE id = 3"),
    ("ip_address", "UPDATE audit_logs SET ip_address = '192.0.2.1' WHERE id = 3"),
    ("created_at", "UPDATE audit_logs SET created_at = created_at - interval '1 day' WHERE id = 3"),
    ("user_id", "UPDATE audit_logs SET user_id = '00000000-0000-0000-0000-000000000001' WHERE id = 3"),
    ("pii_digest", "UPDATE audit_logs SET pii_digest = repeat('0', 64) WHERE id = 3"),
])
def test_an_edited_row_is_named(app, raw, column, sql):
    # Given an intact chain of 5 rows
    write(app, 5)
    assert verify(app).ok
    # When a superuser edits row 3 behind the trigger's back
    tamper(raw, sql)
    # Then verification names row 3, after 2 good rows
    result = verify(app)
    assert not result.ok
    assert result.row_id == 3 and result.checked == 2
    assert "row 3 was edited" in result.problem


def test_a_rehashed_edit_breaks_the_next_link(app, raw):
    # Given a row edited with its own hash recomputed to match
    write(app, 5)
    rows, _ = chain(app)
    edited = {**audit_chain._as_mapping(rows[2]), "action": "covered_up"}
    tamper(raw, "UPDATE audit_logs SET action = 'covered_up', row_hash = :h WHERE id = 3",
           h=audit_chain.row_hash(edited))
    # Then the row after it no longer follows it
    result = verify(app)
    assert not result.ok and result.row_id == 4
    assert "row 4 does not follow" in result.problem


def test_a_deleted_middle_row_is_reported_missing_after_the_row_before_it(app, raw):
    write(app, 5)
    tamper(raw, "DELETE FROM audit_logs WHERE id = 3")
    result = verify(app)
    assert not result.ok and result.row_id == 4 and result.checked == 2
    assert "a row after row 2 is missing" in result.problem


def test_a_deleted_first_row_is_reported(app, raw):
    write(app, 3)
    tamper(raw, "DELETE FROM audit_logs WHERE id = 1")
    result = verify(app)
    assert not result.ok and result.row_id == 2
    assert "at the start of the log" in result.problem


def test_deleted_newest_rows_are_reported_from_the_head(app, raw):
    # Given 5 rows / When the newest two are deleted (the head still remembers row 5)
    write(app, 5)
    tamper(raw, "DELETE FROM audit_logs WHERE id >= 4")
    # Then the rows after row 3 are reported missing
    result = verify(app)
    assert not result.ok and result.checked == 3
    assert "rows after row 3 are missing" in result.problem and "row 5" in result.problem


def test_a_row_inserted_past_the_head_is_reported(app, raw):
    # Given a chained-looking row inserted directly, without moving the head
    write(app, 3)
    rows, head = chain(app)
    forged = {**audit_chain._as_mapping(rows[-1]), "action": "forged", "prev_hash": head.last_hash}
    forged["row_hash"] = audit_chain.row_hash(forged)
    with raw.begin() as connection:
        connection.execute(text(
            "INSERT INTO audit_logs (action, resource_type, resource_id, changes, request_id, created_at, "
            "pii_digest, prev_hash, row_hash) VALUES (:action, :resource_type, :resource_id, "
            "CAST(:changes AS jsonb), :request_id, :created_at, :pii_digest, :prev_hash, :row_hash)"),
            {**forged, "changes": '{"n": {"old": null, "new": 2}}'})
    # Then verification does not accept it
    result = verify(app)
    assert not result.ok and result.row_id == 4
    assert "row 4 is past the chain's head (row 3)" in result.problem


def run_cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([JOBPLANE, *args], env=process_env(settings), capture_output=True, text=True,
                          timeout=60)


def test_cli_verify_exits_0_on_an_intact_chain_and_1_naming_the_edited_row(app, raw, settings):
    # Given an intact chain
    write(app, 4)
    good = run_cli(settings, "audit", "verify")
    assert good.returncode == 0, good.stderr
    assert "intact" in good.stdout and "4 row(s)" in good.stdout
    # When row 2 is edited
    tamper(raw, "UPDATE audit_logs SET changes = '{}' WHERE id = 2")
    # Then the CLI exits 1 with the row named
    bad = run_cli(settings, "audit", "verify")
    assert bad.returncode == 1
    assert "BROKEN" in bad.stderr and "row 2 was edited" in bad.stderr
    assert "intact" not in bad.stdout


def test_cli_verify_reports_deleted_rows(app, raw, settings):
    write(app, 4)
    tamper(raw, "DELETE FROM audit_logs WHERE id = 4")
    bad = run_cli(settings, "audit", "verify")
    assert bad.returncode == 1
    assert "rows after row 3 are missing" in bad.stderr


# --- retention ----------------------------------------------------------------------------------

@pytest.fixture
def delete_sizes(app):
    """The row counts of the DELETE statements run on audit_logs while the test runs."""
    engine = app.extensions["jobplane_db"].engine
    sizes: list[int] = []

    def record(_conn, cursor, statement, _params, _context, _many):
        if statement.lstrip().upper().startswith("DELETE FROM AUDIT_LOGS"):
            sizes.append(cursor.rowcount)

    event.listen(engine, "after_cursor_execute", record)
    yield sizes
    event.remove(engine, "after_cursor_execute", record)


def test_prune_removes_the_old_prefix_in_batches_and_the_rest_verifies(app, delete_sizes):
    # Given 7 rows 40 days old, then 2 new rows, an old row written late, and a new one
    old = datetime.now(timezone.utc) - timedelta(days=40)
    write(app, 7, created_at=old)
    write(app, 2)
    write(app, 1, action="late_old", created_at=old)
    write(app, 1)
    # When the rows older than 30 days are pruned, 3 at a time
    with app.app_context():
        removed = audit_chain.prune(db.session, retention_days=30, batch_size=3)
    # Then the 7 old ones at the front went, in three batches
    assert removed == 7
    assert delete_sizes == [3, 3, 1]
    rows, head = chain(app)
    assert [r.id for r in rows] == [8, 9, 10, 11]
    assert rows[2].action == "late_old"  # only a prefix goes: an old row after a kept one stays
    assert (head.anchor_id, head.anchor_hash) == (7, rows[0].prev_hash)
    # And what is left verifies from the new anchor
    result = verify(app)
    assert result.ok, result.problem
    assert result.checked == 4


def test_audit_trail_prune_writes_one_audit_row_and_a_second_prune_removes_nothing(app):
    # Given 5 old rows and 2 recent ones
    old = datetime.now(timezone.utc) - timedelta(days=100)
    write(app, 5, created_at=old)
    write(app, 2)
    # When the audit trail is pruned to 90 days
    with app.app_context():
        assert audit_trail.prune(actor=SYSTEM, retention_days=90) == 5
        db.session.commit()
    # Then an audit_pruned row says how many went, and the chain verifies
    rows, _ = chain(app)
    assert [r.action for r in rows] == ["thing_done", "thing_done", "audit_pruned"]
    assert rows[-1].changes["rows_removed"] == {"old": 5, "new": 0}
    assert rows[-1].changes["retention_days"] == {"old": None, "new": 90}
    assert verify(app).ok
    # When it is pruned again / Then nothing more goes, and no further row is written
    with app.app_context():
        assert audit_trail.prune(actor=SYSTEM, retention_days=90) == 0
        db.session.commit()
    assert [r.id for r in chain(app)[0]] == [r.id for r in rows]
    assert verify(app).ok


def test_pruning_every_row_leaves_a_chain_that_verifies_and_grows(app):
    write(app, 4, created_at=datetime.now(timezone.utc) - timedelta(days=10))
    with app.app_context():
        assert audit_chain.prune(db.session, retention_days=1, batch_size=2) == 4
    assert chain(app)[0] == []
    assert verify(app).ok
    write(app, 2)
    result = verify(app)
    assert result.ok, result.problem
    assert result.checked == 2


def test_cli_prune_uses_the_configured_retention(app, settings):
    write(app, 3, created_at=datetime.now(timezone.utc) - timedelta(days=3))
    write(app, 1)
    done = subprocess.run([JOBPLANE, "audit", "prune"], env=process_env(settings, {"AUDIT_RETENTION_DAYS": 2}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "removed 3 audit row(s) older than 2 days" in done.stdout
    rows, _ = chain(app)
    assert [r.action for r in rows] == ["thing_done", "audit_pruned"]
    assert rows[-1].email.startswith("cli:")
    assert verify(app).ok


# --- GDPR erasure -------------------------------------------------------------------------------

def test_deleting_a_user_blanks_only_their_personal_data_and_the_chain_verifies(app, admin):
    # Given Alice, with a token, a job with executions and audited actions from her browser
    with app.app_context():
        the_admin = db.session.scalar(select(User).where(User.email == "admin"))
        alice = users.create_user(actor=SYSTEM, email="alice@example.com", role="job_creator")
        bob = users.create_user(actor=SYSTEM, email="bob@example.com", role="job_creator")
        db.session.flush()
        as_alice = Actor(user=alice, ip_address="198.51.100.7", user_agent="Alice's browser", request_id="r-a")
        as_bob = Actor(user=bob, ip_address="198.51.100.8", user_agent="Bob's browser", request_id="r-b")
        api_tokens.issue_token(actor=as_alice, user=alice, name="laptop")
        job = jobs.create_job(actor=as_alice, data={"name": "alice-job", "job_type": "bash", "script": "true",
                                                    "schedule": None})
        jobs.create_job(actor=as_bob, data={"name": "bob-job", "job_type": "bash", "script": "true",
                                            "schedule": None})
        now = datetime.now(timezone.utc)
        for minutes in (1, 2):
            db.session.add(Execution(job_id=job.id, scheduled_for=now - timedelta(minutes=minutes),
                                     status="success", triggered_by="manual"))
        db.session.commit()
        alice_id, bob_id, job_id = alice.id, bob.id, job.id
        alice_rows_before = {r.id: (r.action, r.changes, r.row_hash) for r in db.session.scalars(
            select(AuditLog).where(AuditLog.user_id == alice_id))}
        bob_rows_before = [(r.id, r.email, r.ip_address, r.user_agent, r.row_hash) for r in db.session.scalars(
            select(AuditLog).where(AuditLog.user_id == bob_id).order_by(AuditLog.id))]
    assert len(alice_rows_before) == 2 and len(bob_rows_before) == 1
    # When an admin deletes Alice
    with app.app_context():
        summary = privacy.delete_user(actor=Actor(user=db.session.get(User, the_admin.id)), user_id=alice_id)
        db.session.commit()
    assert summary == {"jobs": 1, "executions": 2, "audit_rows_pseudonymized": 2}
    with app.app_context():
        # Then her audit rows stay, with her id but without email, IP address or user agent
        rows = db.session.scalars(select(AuditLog).where(AuditLog.user_id == alice_id)).all()
        assert {r.id: (r.action, r.changes, r.row_hash) for r in rows} == alice_rows_before
        assert all((r.email, r.ip_address, r.user_agent) == (None, None, None) for r in rows)
        # And Bob's rows are untouched
        assert [(r.id, r.email, r.ip_address, r.user_agent, r.row_hash) for r in db.session.scalars(
            select(AuditLog).where(AuditLog.user_id == bob_id).order_by(AuditLog.id))] == bob_rows_before
        # And her user, token, job and executions are gone; Bob's job stays
        assert db.session.get(User, alice_id) is None
        assert db.session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.user_id == alice_id)) == 0
        assert db.session.get(Job, job_id) is None
        assert db.session.scalar(select(func.count()).select_from(Execution)
                                 .where(Execution.job_id == job_id)) == 0
        assert db.session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == bob_id)) == 1
        # And one row records the deletion, by the admin
        deleted = db.session.scalar(select(AuditLog).where(AuditLog.action == "user_deleted"))
        assert (deleted.resource_id, deleted.email) == (str(alice_id), "admin")
        assert deleted.changes["executions"] == {"old": 2, "new": 0}
        # And the chain still verifies
        result = audit_chain.verify(db.session)
        assert result.ok, result.problem


def test_a_user_deleting_themself_leaves_no_personal_data_in_the_deletion_row(app, admin):
    # Given a second admin, who deletes their own account
    with app.app_context():
        carol = users.create_user(actor=SYSTEM, email="carol@example.com", role="admin")
        db.session.commit()
        carol_id = carol.id
        as_carol = Actor(user=carol, ip_address="203.0.113.9", user_agent="Carol's browser")
        privacy.delete_user(actor=as_carol, user_id=carol_id)
        db.session.commit()
    # Then not even the row recording the deletion holds her email, IP address or user agent
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.user_id == carol_id)).all()
        assert [r.action for r in rows] == ["user_deleted"]
        assert all((r.email, r.ip_address, r.user_agent) == (None, None, None) for r in rows)
        assert audit_chain.verify(db.session).ok


# --- rollbacks ----------------------------------------------------------------------------------

def test_a_rolled_back_transaction_leaves_no_row_and_does_not_move_the_head(app):
    write(app, 2)
    _, head_before = chain(app)
    with app.app_context():
        audit.record(actor=CLI, action="never_happened", resource_type="thing", resource_id=1)
        db.session.flush()
        db.session.rollback()
        # And a later commit in the same session does not bring it back
        db.session.commit()
    rows, head = chain(app)
    assert [r.action for r in rows] == ["thing_done", "thing_done"]
    assert (head.last_id, head.last_hash) == (head_before.last_id, head_before.last_hash)
    assert verify(app).ok


def test_a_commit_that_fails_leaves_no_row_and_the_chain_continues(app):
    # Given a team / When a transaction audits a change but fails at commit (a duplicate name)
    with app.app_context():
        db.session.add(Team(name="ops"))
        db.session.commit()
    _, head_before = chain(app)
    with app.app_context():
        audit.record(actor=CLI, action="team_created", resource_type="team", resource_id="dup")
        db.session.add(Team(name="ops"))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        # Then no row was written and the head did not move
        assert db.session.scalar(select(func.count()).select_from(AuditLog)) == 0
        head = db.session.get(AuditChainHead, 1, populate_existing=True)
        assert (head.last_id, head.last_hash) == (head_before.last_id, head_before.last_hash)
        # And the next change in the same session chains on from the same head
        audit.record(actor=CLI, action="retried", resource_type="thing", resource_id=1)
        db.session.commit()
    rows, _ = chain(app)
    assert [r.action for r in rows] == ["retried"] and rows[0].prev_hash == head_before.last_hash
    assert verify(app).ok


# --- rows written before the chain existed ------------------------------------------------------

@pytest.fixture
def scratch_database(database_url):
    """An empty PostgreSQL database of its own, dropped afterwards."""
    name = f"jobplane_scratch_{uuid.uuid4().hex[:12]}"
    server = create_engine(database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield database_url.rsplit("/", 1)[0] + "/" + name
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_the_migration_chains_rows_written_before_it(request, tmp_path, settings, dialect):
    # Given a database at revision 0004 with audit rows (personal data, JSON, microseconds, unicode)
    url = request.getfixturevalue("scratch_database") if dialect == "postgresql" \
        else f"sqlite:///{tmp_path / 'standalone.db'}"
    upgrade(url, "0004")
    engine = create_engine(url)
    old_rows = [
        {"user_id": uuid.uuid4(), "email": "ana@example.com", "ip": "10.0.0.1", "agent": "curl/8",
         "changes": '{"name": {"old": null, "new": "Zoë’s job"}, "max_retries": {"old": 0, "new": 2.5}}',
         "created_at": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)},
        {"user_id": None, "email": None, "ip": None, "agent": None, "changes": None,
         "created_at": datetime(2026, 1, 2, 2, 4, 6, tzinfo=timezone.utc)},
        {"user_id": uuid.uuid4(), "email": "bo@example.com", "ip": None, "agent": None,
         "changes": '{"status": {"old": "active", "new": "disabled"}}',
         "created_at": datetime(2026, 1, 3, tzinfo=timezone.utc)},
    ]
    with engine.begin() as connection:
        for n, row in enumerate(old_rows):
            if dialect == "postgresql":
                values = {**row, "user_id": str(row["user_id"]) if row["user_id"] else None}
                insert = ("INSERT INTO audit_logs (user_id, email, action, resource_type, resource_id, changes, "
                          "ip_address, user_agent, request_id, created_at) VALUES (CAST(:user_id AS uuid), :email, "
                          "'job_created', 'job', :rid, CAST(:changes AS jsonb), :ip, :agent, NULL, :created_at)")
            else:  # as SQLAlchemy stores them there: hex ids, naive UTC times, JSON as text
                values = {**row, "user_id": row["user_id"].hex if row["user_id"] else None,
                          "created_at": row["created_at"].replace(tzinfo=None).isoformat(sep=" ")}
                insert = ("INSERT INTO audit_logs (user_id, email, action, resource_type, resource_id, changes, "
                          "ip_address, user_agent, request_id, created_at) VALUES (:user_id, :email, "
                          "'job_created', 'job', :rid, :changes, :ip, :agent, NULL, :created_at)")
            connection.execute(text(insert), {**values, "rid": str(n)})
    engine.dispose()
    # When the database is upgraded to the chained schema
    upgrade(url)
    # Then the old rows verify, and new rows chain on after them
    application = create_app({**settings, "DATABASE_URL": url})
    try:
        with application.app_context():
            result = audit_chain.verify(db.session)
            assert result.ok, result.problem
            assert result.checked == 3
            audit.record(actor=CLI, action="after_upgrade", resource_type="thing", resource_id=1)
            db.session.commit()
            result = audit_chain.verify(db.session)
            assert result.ok and result.checked == 4, result.problem
            # And the erasure of an old row's personal data keeps it verifiable
            assert audit_chain.erase_personal_data(db.session, user_id=old_rows[0]["user_id"]) == 1
            db.session.commit()
            assert audit_chain.verify(db.session).ok
    finally:
        application.extensions["jobplane_db"].engine.dispose()


def test_erasure_and_retention_at_the_same_time_do_not_deadlock(app, raw):
    # Given old rows about a user
    target = uuid.uuid4()
    old = Actor(user=None, label="gone@example.com", ip_address="10.1.1.1", system=True)
    with app.app_context():
        for n in range(3):
            row = audit.record(actor=old, action="thing_done", resource_type="thing", resource_id=n)
            row.user_id, row.created_at = target, datetime.now(timezone.utc) - timedelta(days=30)
        db.session.commit()
    write(app, 1)
    # When their personal data is being erased (not yet committed) while retention starts pruning
    pruned, failures = [], []

    def prune() -> None:
        try:
            with app.app_context():
                pruned.append(audit_chain.prune(db.session, retention_days=7))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    with app.app_context():
        erased = audit_chain.erase_personal_data(db.session, user_id=target)
        audit.record(actor=CLI, action="user_deleted", resource_type="user", resource_id=target)
        pruner = threading.Thread(target=prune)
        pruner.start()
        with raw.connect() as watcher:  # until the pruner waits for a lock (or 3 s)
            for _ in range(30):
                if watcher.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND datname = current_database()")).scalar():
                    break
                time.sleep(0.1)
        db.session.commit()
    pruner.join(timeout=30)
    # Then both finish: the erasure first, then the pruning of the (erased) old rows
    assert not failures, failures
    assert erased == 3 and pruned == [3]
    assert [r.action for r in chain(app)[0]] == ["thing_done", "user_deleted"]
    assert verify(app).ok


def test_an_erased_row_keeps_no_way_to_test_a_guess_of_its_personal_data(app):
    # Given rows by a user, with their email, address and browser
    with app.app_context():
        user = users.create_user(actor=SYSTEM, email="maya@example.test", role="job_creator")
        db.session.commit()
        actor = Actor(user=user, ip_address="10.0.5.42", user_agent="Mozilla/5.0")
    write(app, 2, actor=actor)
    rows, _ = chain(app)
    mine = [row for row in rows if row.user_id == user.id]
    assert all(audit_chain.pii_digest(row.pii_salt, "maya@example.test", "10.0.5.42", "Mozilla/5.0")
               == row.pii_digest for row in mine)  # the right guess matches only with the row's salt
    # When their personal data is erased
    with app.app_context():
        audit_chain.erase_personal_data(db.session, user_id=user.id)
        db.session.commit()
    # Then the salt went with them, so the right guess can no longer be tested against the digest
    for row in (r for r in chain(app)[0] if r.user_id == user.id):
        assert (row.email, row.ip_address, row.user_agent, row.pii_salt) == (None, None, None, None)
        assert row.pii_digest == next(m.pii_digest for m in mine if m.id == row.id)  # the chain is untouched
    assert verify(app).ok
