"""Retention purge: how long each batch's transaction takes, and whether a worker's writes wait.

``jobplane purge`` deletes old executions in batches, each its own transaction, so that no lock is
held long (issue 6). This measures it on the bench database.

What it measures
    ``--old`` finished executions older than the cut-off (each with ``--chunks`` log chunks of
    ~120 bytes, and a notification record for one in ten), ``--young`` recent ones and ``--running``
    old running ones that must stay, inserted in bulk with SQL. Then
    ``app.services.retention.purge_batch`` is run batch after batch, each in its own
    ``db.unit_of_work()``, exactly as ``purge_executions`` does, timing each transaction (select
    with FOR UPDATE SKIP LOCKED, three deletes, commit).

    Meanwhile a thread plays a worker streaming a run's log: every 20 ms one transaction that
    updates a running execution's heartbeat and appends a log chunk to it (on its own connection),
    timed from begin to commit. Its latency is measured for ``--baseline`` seconds before the
    purge and during the purge.

    Afterwards the bench checks that exactly the old finished executions went (with their chunks
    and notifications) and that the young and the running ones stayed.

Command: ``. ./.test-services.env && .venv/bin/python bench/purge_batches.py``
(``--old 100000 --batch-size 5000`` by default; ``--json`` for the raw result).
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.common import (BENCH_REDIS_DB, add_json_option, add_wait_db_option, argument_parser, bench_database_url,  # noqa: E402
                          clear_jobplane_env, fmt_summary, log, loadavg, print_code, print_report_head,
                          print_result, redis_url_with_db, reset_database, result_head, result_tail, run_main, set_bench_name,
                          summary, test_database_url, test_redis_url, wait_for_free_database)

#: Executions are inserted this many days old (old) or this many hours old (young); the cut-off is 90 days.
OLD_DAYS, YOUNG_HOURS, RETENTION_DAYS = 120, 6, 90


def populate(engine, job_id: str, *, old: int, young: int, running: int, chunks: int) -> str:
    """Insert the executions, chunks and notifications; returns the id of one running execution."""
    with engine.begin() as connection:
        for group, (status, count, age) in enumerate((("success", old, f"{OLD_DAYS} days"),
                                                      ("success", young, f"{YOUNG_HOURS} hours"),
                                                      ("running", running, f"{OLD_DAYS} days"))):
            connection.execute(text(f"""
                INSERT INTO executions (id, job_id, status, scheduled_for, triggered_by, attempt, started_at,
                                        completed_at, sent_at, send_count, log_bytes, log_truncated, created_at)
                SELECT gen_random_uuid(), :job, :status,
                       now() - interval '{age}' - n * interval '1 second' - {group} * interval '0.25 second',
                       'scheduled', 1, now() - interval '{age}', CASE WHEN :status = 'running' THEN NULL
                       ELSE now() - interval '{age}' END, now() - interval '{age}', 1, 0, false,
                       now() - interval '{age}'
                FROM generate_series(1, :count) AS n"""), {"job": job_id, "status": status, "count": count})
        connection.execute(text("""
            INSERT INTO execution_log_chunks (execution_id, seq, "offset", stream, data, created_at)
            SELECT e.id, s.seq, s.seq * 120, 'stdout', repeat('x', 119) || E'\\n', e.created_at
            FROM executions e CROSS JOIN generate_series(0, :chunks - 1) AS s(seq)"""), {"chunks": chunks})
        connection.execute(text("""
            INSERT INTO notifications (id, job_id, execution_id, event, channel, recipients, status, attempts,
                                       next_attempt_at, created_at)
            SELECT gen_random_uuid(), e.job_id, e.id, 'job_failed', 'email', '[]'::jsonb, 'sent', 1, now(), now()
            FROM executions e WHERE random() < 0.1"""))
        return connection.execute(text("SELECT id FROM executions WHERE status = 'running' LIMIT 1")).scalar()


def counts(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {name: connection.execute(text(sql)).scalar() for name, sql in (
            ("old_finished", f"SELECT count(*) FROM executions WHERE status <> 'running' AND completed_at < "
                             f"now() - interval '{RETENTION_DAYS} days'"),
            ("young", f"SELECT count(*) FROM executions WHERE completed_at >= now() - interval '{RETENTION_DAYS} days'"),
            ("running", "SELECT count(*) FROM executions WHERE status = 'running'"),
            ("chunks", "SELECT count(*) FROM execution_log_chunks"),
            ("notifications", "SELECT count(*) FROM notifications"))}


class LogWriterProbe(threading.Thread):
    """A worker streaming a log: heartbeat + one chunk per transaction every 20 ms, timed."""

    def __init__(self, engine, execution_id: str):
        super().__init__(daemon=True)
        self.engine, self.execution_id = engine, execution_id
        self.samples: list[tuple[float, float]] = []  #: (monotonic time at start, latency ms)
        self.stop = threading.Event()
        self.seq = 10_000

    def run(self) -> None:
        with self.engine.connect() as connection:
            while not self.stop.is_set():
                started = time.monotonic()
                with connection.begin():
                    connection.execute(text("UPDATE executions SET heartbeat_at = now() WHERE id = :id"),
                                       {"id": self.execution_id})
                    connection.execute(text("""INSERT INTO execution_log_chunks (execution_id, seq, "offset",
                                               stream, data, created_at)
                                               VALUES (:id, :seq, 0, 'stdout', 'live line', now())"""),
                                       {"id": self.execution_id, "seq": self.seq})
                self.samples.append((started, (time.monotonic() - started) * 1000))
                self.seq += 1
                self.stop.wait(0.02)

    def between(self, start: float, end: float) -> list[float]:
        return [ms for at, ms in self.samples if start <= at < end]


def main() -> int:
    set_bench_name("purge")
    parser = argument_parser(__doc__)
    parser.add_argument("--old", type=int, default=100_000, help="old finished executions to purge")
    parser.add_argument("--young", type=int, default=10_000, help="recent executions that stay")
    parser.add_argument("--running", type=int, default=100, help="old running executions that stay")
    parser.add_argument("--chunks", type=int, default=4, help="log chunks per execution")
    parser.add_argument("--batch-size", type=int, default=500, help="as JOBPLANE_RETENTION_BATCH_SIZE (500)")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of log writes measured before the purge")
    add_wait_db_option(parser)
    add_json_option(parser)
    args = parser.parse_args()
    clear_jobplane_env()
    start_load = loadavg()
    url = bench_database_url(test_database_url())
    wait_for_free_database(url, args.wait_db)
    reset_database(url)

    from app import create_app
    from app.extensions import db
    from app.models.base import utcnow
    from app.services import retention, users
    from app.services.actors import SYSTEM, Actor
    from app.services.jobs import create_job

    app = create_app({"ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "bench",
                      "REDIS_URL": redis_url_with_db(test_redis_url(), BENCH_REDIS_DB)})
    engine = create_engine(url)
    try:
        with app.app_context():
            owner = users.create_user(actor=SYSTEM, email="bench@example.com", role="job_creator")
            job = create_job(actor=Actor(user=owner), data={"name": "history", "job_type": "bash", "script": "true"})
            db.session.commit()
            job_id = str(job.id)
        log(f"inserting {args.old} old, {args.young} young and {args.running} running executions "
            f"with {args.chunks} chunks each")
        running_id = populate(engine, job_id, old=args.old, young=args.young, running=args.running, chunks=args.chunks)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))  # fresh statistics, as autovacuum would have after such a load
        before = counts(engine)
        probe = LogWriterProbe(engine, running_id)
        probe.start()
        time.sleep(args.baseline)
        log(f"purging in batches of {args.batch_size}")
        batches: list[float] = []
        removed = {"executions": 0, "log_chunks": 0, "notifications": 0}
        cutoff = utcnow() - timedelta(days=RETENTION_DAYS)
        purge_start = time.monotonic()
        with app.app_context():
            while True:
                started = time.monotonic()
                with db.unit_of_work():
                    batch = retention.purge_batch(older_than=cutoff, batch_size=args.batch_size)
                batches.append((time.monotonic() - started) * 1000)
                for key, count in batch.items():
                    removed[key] += count
                if not batch["executions"]:
                    break
        purge_end = time.monotonic()
        probe.stop.set()
        probe.join()
        after = counts(engine)
    finally:
        engine.dispose()
        app.extensions["jobplane_db"].engine.dispose()

    expected = {"removed executions": (removed["executions"], args.old), "old finished left": (after["old_finished"], 0),
                "young left": (after["young"], args.young), "running left": (after["running"], args.running),
                "chunks left": (after["chunks"], (args.young + args.running) * args.chunks + len(probe.samples))}
    problems = {what: {"got": got, "expected": want} for what, (got, want) in expected.items() if got != want}
    correct = not problems
    result = {
        **result_head("purge_batches", "per-batch transaction time of the retention purge; log-write latency"),
        "old": args.old, "young": args.young, "running": args.running, "chunks_per_execution": args.chunks,
        "batch_size": args.batch_size, "before": before, "after": after, "removed": removed,
        "batches": summary(batches[:-1] or batches), "empty_last_batch_ms": round(batches[-1], 2),
        "purge_seconds": round(purge_end - purge_start, 2),
        "executions_per_second": round(removed["executions"] / max(purge_end - purge_start, 1e-9)),
        "log_write_before": summary(probe.between(0, purge_start)),
        "log_write_during": summary(probe.between(purge_start, purge_end)),
        "correct": correct, "problems": problems,
        **result_tail(start_load),
    }
    print_result(result, as_json=args.json, report=report)
    return 0 if correct else 1


def report(result: dict) -> None:
    print_report_head("Retention purge in batches", result, bubblewrap=False)
    print_code(result)
    print(f"  data          {result['old']} old finished executions to purge, {result['young']} young and "
          f"{result['running']} old running ones to keep; {result['chunks_per_execution']} log chunks each")
    print(f"  removed       {result['removed']}")
    print(f"  batch {result['batch_size']:<7} {fmt_summary(result['batches'])}  "
          f"(+ the final empty batch: {result['empty_last_batch_ms']} ms)")
    print(f"  whole purge   {result['purge_seconds']} s, {result['executions_per_second']} executions/s")
    print(f"  log write     before the purge: {fmt_summary(result['log_write_before'])}")
    print(f"                during the purge: {fmt_summary(result['log_write_during'])}")
    print(f"  kept exactly the young and running executions: {'yes' if result['correct'] else 'NO'}")
    for what, numbers in result["problems"].items():
        print(f"    {what}: {numbers['got']}, expected {numbers['expected']}")


if __name__ == "__main__":
    run_main(main)
