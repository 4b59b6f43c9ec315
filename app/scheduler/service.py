"""The scheduler process: stand by until leader, then fire — and stop at once if leadership
or APScheduler's thread is lost (it must never fire without the lock)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from flask import Flask
from sqlalchemy import text

from app.extensions import db
from app.observability import metrics
from app.scheduler import sync
from app.scheduler.batching import BatchingJobStore, BatchingScheduler
from app.scheduler.executor import FireExecutor
from app.scheduler.leader import LeaderLock
from app.scheduler.listener import JobChangeListener
from app.scheduler.stager import Stager
from app.models.base import utcnow
from app.services import audit_trail, idempotency, notifications, retention, sweeper
from app.services.actors import SYSTEM
from app.services.scheduler_signal import add_listener

logger = logging.getLogger(__name__)

#: Exit statuses; a supervisor (systemd, Kubernetes) restarts the process.
EXIT_STOPPED = 0
EXIT_LOST_LEADERSHIP = 3
EXIT_SCHEDULER_DIED = 4
EXIT_STORE_FAILING = 5
#: how often the leader prunes what is past retention
MAINTENANCE_INTERVAL_SECONDS = 3600.0


class SchedulerService:
    """Leader election, APScheduler, change listening, reconcile and the sweeper, in one loop.

    Parameters:
      app: the Flask app (settings, database, broker).
      lock: the leader lock (PostgreSQL advisory lock, or a file lock in standalone).
    """

    def __init__(self, app: Flask, lock: LeaderLock):
        self.app = app
        self.lock = lock
        self.config = app.config
        self.stopping = threading.Event()
        self.is_leader = threading.Event()
        self.scheduler: BatchingScheduler | None = None
        self.listener: JobChangeListener | None = None
        self.stager: Stager | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Run until stopped or until leadership is lost. Returns the process exit status."""
        logger.info("standing by for the scheduler lock")
        while not self.lock.try_acquire():
            if self.stopping.wait(self.config["SCHEDULER_STANDBY_POLL_SECONDS"]):
                return EXIT_STOPPED
        try:
            self._start()
            logger.info("became the scheduler leader")
            return self._lead()
        finally:
            self._shutdown()
            self.lock.release()

    def _start(self) -> None:
        engine = self.app.extensions["jobplane_db"].engine
        self.scheduler = BatchingScheduler(
            jobstores={"default": BatchingJobStore(engine=engine, tablename="apscheduler_jobs")},
            executors={"default": FireExecutor(self.app)},
            # APScheduler hands over every due fire time; the job's misfire policy decides.
            job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC")
        self.scheduler.start(paused=True)
        # Listen before the first reconcile: a job changed in between is then either in the
        # reconcile or announced to the listener, never in neither.
        if self.config["SQLALCHEMY_IS_SQLITE"]:
            add_listener(self.app, self._on_job_change)
        else:
            self.listener = JobChangeListener(self.config["DATABASE_URL"], on_change=self._on_job_change,
                                              on_reconnect=self._reconcile)
            self.listener.start()
            if not self.listener.ready.wait(10):
                raise RuntimeError("could not LISTEN for job changes on PostgreSQL within 10 s")
        sync.reconcile(self.app, self.scheduler)
        self.scheduler.resume()
        if self.config["STAGE_AHEAD_SECONDS"] > 0:
            self.stager = Stager(self.app, self.config["STAGE_AHEAD_SECONDS"])
            self.stager.start()
        self.is_leader.set()
        metrics.leader_acquired()

    def _lead(self) -> int:
        check = self.config["SCHEDULER_LOCK_CHECK_SECONDS"]
        next_reconcile = time.monotonic() + self.config["SCHEDULER_RECONCILE_SECONDS"]
        next_sweep = next_maintenance = time.monotonic()
        store_failing_since: float | None = None
        while not self.stopping.wait(check):
            if not self.lock.is_held():
                logger.critical("lost the scheduler lock; stopping at once so that two leaders never fire")
                return EXIT_LOST_LEADERSHIP
            if not self._scheduler_alive():
                logger.critical("APScheduler's thread died; exiting so that a healthy replica takes over")
                return EXIT_SCHEDULER_DIED
            now = time.monotonic()
            if self._store_reachable():
                store_failing_since = None
            else:
                store_failing_since = store_failing_since or now
                if now - store_failing_since > self.config["STORE_FAILURE_EXIT_SECONDS"]:
                    logger.critical("the job store has been unreachable for %.0f s; exiting so that a "
                                    "replica that can reach it takes over", now - store_failing_since)
                    return EXIT_STORE_FAILING
            if now >= next_reconcile:
                self._reconcile()
                next_reconcile = now + self.config["SCHEDULER_RECONCILE_SECONDS"]
            if now >= next_sweep:
                self.sweep()
                next_sweep = now + self.config["SWEEP_INTERVAL_SECONDS"]
            if now >= next_maintenance:
                self.maintain()
                next_maintenance = now + MAINTENANCE_INTERVAL_SECONDS
        return EXIT_STOPPED

    def _store_reachable(self) -> bool:
        try:
            with self.app.extensions["jobplane_db"].engine.connect() as connection:
                connection.execute(text("SELECT 1 FROM apscheduler_jobs LIMIT 1"))
            return True
        except Exception as exc:
            logger.warning("job store check failed: %s", exc)
            return False

    def _scheduler_alive(self) -> bool:
        thread = getattr(self.scheduler, "_thread", None)
        return thread is not None and thread.is_alive()

    def _on_job_change(self, job_id) -> None:
        if self.scheduler is not None:
            sync.sync_job(self.app, self.scheduler, job_id)

    def _reconcile(self) -> None:
        try:
            sync.reconcile(self.app, self.scheduler)
        except Exception:
            logger.exception("reconcile failed; will try again")

    def sweep(self) -> None:
        """Re-send executions whose message was lost; declare lost the runs whose worker died."""
        try:
            with self.app.app_context(), db.unit_of_work():
                resent = sweeper.resend_stale_queued(
                    older_than=timedelta(seconds=self.config["REQUEUE_AFTER_SECONDS"]))
                stale_after = timedelta(seconds=self.config["HEARTBEAT_STALE_SECONDS"])
                handed_over = sweeper.hand_over_stale_kubernetes_runs(
                    stale_after=stale_after, reattach_limit=self.config["K8S_REATTACH_LIMIT"])
                lost = sweeper.mark_stale_running_lost(stale_after=stale_after)
                stranded = notifications.resend_stranded()
            metrics.swept(resent=len(resent), lost=len(lost), notifications_resent=stranded)
            if stranded:
                logger.warning("sweeper: re-sent %d stranded notification(s)", stranded)
            if resent or lost or handed_over:
                logger.warning("sweeper: re-sent %d queued execution(s), handed %d Kubernetes run(s) over to "
                               "another worker, declared %d lost", len(resent), len(handed_over), len(lost))
        except Exception:
            logger.exception("sweep failed; will try again")

    def maintain(self) -> None:
        """Hourly upkeep, each task on its own so that one failing does not stop the others: audit
        rows past JOBPLANE_AUDIT_RETENTION_DAYS, idempotency keys past their TTL, and finished
        executions (with their logs and notifications) past JOBPLANE_RETENTION_DAYS, each in short
        committed batches."""
        for name, task in (("pruning the audit log", self._prune_audit_log),
                           ("pruning idempotency keys", self._prune_idempotency_keys),
                           ("purging old executions", self._purge_executions)):
            try:
                task()
            except Exception:
                logger.exception("maintenance: %s failed; will try again", name)

    def _prune_audit_log(self) -> None:
        with self.app.app_context():
            removed = audit_trail.prune(actor=SYSTEM, retention_days=self.config["AUDIT_RETENTION_DAYS"])
            db.session.commit()
        if removed:
            logger.info("maintenance: pruned %d audit row(s) past retention", removed)

    def _prune_idempotency_keys(self) -> None:
        with self.app.app_context():
            forgotten = idempotency.prune_expired()
            db.session.commit()
        if forgotten:
            logger.info("maintenance: removed %d expired idempotency key(s)", forgotten)

    def _purge_executions(self) -> None:
        cutoff = utcnow() - timedelta(days=self.config["RETENTION_DAYS"])
        with self.app.app_context():
            removed = retention.purge_executions(older_than=cutoff,
                                                 batch_size=self.config["RETENTION_BATCH_SIZE"])
        if removed["executions"]:
            logger.info("maintenance: purged %d execution(s), %d log chunk(s) and %d notification(s) older "
                        "than %d days", removed["executions"], removed["log_chunks"], removed["notifications"],
                        self.config["RETENTION_DAYS"])

    def _shutdown(self) -> None:
        self.is_leader.clear()
        metrics.leader_released()
        if self.stager is not None:
            self.stager.stop()
        if self.listener is not None:
            self.listener.stop()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
