"""APScheduler, made to fire all the jobs due at one wake-up together.

APScheduler's ``_process_jobs`` handles due jobs one at a time: submit to the executor, then
store the job's next run time — two transactions per job, about 60 jobs a second here, so 5,000
jobs due at the same minute took 85 s to fire.  ``BatchingScheduler`` runs the same loop with
both sides buffered, then records every fire in one transaction (``FireExecutor.flush``) and
only then stores every next run time in one more (``BatchingJobStore.flush``).  The fire path's
invariant holds for the whole batch: no next run time is stored before its fire is committed.
Everything happens under APScheduler's job-store lock, so a job changed meanwhile by the API
listener cannot be overwritten by a stale buffered state.
"""

from __future__ import annotations

import pickle
from datetime import datetime

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import bindparam, text

from app.scheduler.executor import FireExecutor


class BatchingJobStore(SQLAlchemyJobStore):
    """A job store whose updates and removals can be held back and written in one transaction."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batching = False
        self.updates: dict[str, dict] = {}
        self.removals: set[str] = set()

    def begin_batch(self) -> None:
        self.batching, self.updates, self.removals = True, {}, set()

    def update_job(self, job) -> None:
        if not self.batching:
            return super().update_job(job)
        self.updates[job.id] = {"b_id": job.id, "b_next": datetime_to_utc_timestamp(job.next_run_time),
                                "b_state": pickle.dumps(job.__getstate__(), self.pickle_protocol)}

    def remove_job(self, job_id: str) -> None:
        if not self.batching:
            return super().remove_job(job_id)
        self.updates.pop(job_id, None)
        self.removals.add(job_id)

    def flush(self) -> None:
        """Write what the batch held back, in one transaction, and stop batching."""
        updates, removals = list(self.updates.values()), self.removals
        self.batching, self.updates, self.removals = False, {}, set()
        if not updates and not removals:
            return
        table = self.jobs_t
        with self.engine.begin() as connection:
            if updates and connection.dialect.name == "postgresql":
                # One statement: psycopg2 runs an executemany as one round trip per row, and 5,000
                # of them took a fifth of the scheduler's time in a burst (py-spy).
                connection.execute(text(_UNNEST_UPDATE.format(table=table.name)).bindparams(
                    ids=[u["b_id"] for u in updates], nexts=[u["b_next"] for u in updates],
                    states=[u["b_state"] for u in updates]))
            elif updates:
                connection.execute(
                    table.update().where(table.c.id == bindparam("b_id"))
                    .values(next_run_time=bindparam("b_next"), job_state=bindparam("b_state")), updates)
            if removals:
                connection.execute(table.delete().where(table.c.id.in_(removals)))


#: The held-back updates of a batch in one statement (PostgreSQL); a next run time may be NULL (a
#: job with no fire time left), which unnest keeps.
_UNNEST_UPDATE = """
    UPDATE {table} AS s SET next_run_time = v.next_run_time, job_state = v.job_state
      FROM unnest(CAST(:ids AS varchar[]), CAST(:nexts AS double precision[]), CAST(:states AS bytea[]))
           AS v(id, next_run_time, job_state)
     WHERE s.id = v.id
"""


class BatchingScheduler(BackgroundScheduler):
    """APScheduler's loop with the fires and the next run times of a wake-up written in batches."""

    def _process_jobs(self):
        store: BatchingJobStore = self._jobstores["default"]
        executor: FireExecutor = self._executors["default"]
        with self._jobstores_lock:
            store.begin_batch()
            executor.begin_batch()
            try:
                super()._process_jobs()
            finally:
                executor.flush()  # exits the process if the fires cannot be recorded
            store.flush()
            next_run = store.get_next_run_time()
        if self.state != STATE_RUNNING or next_run is None:
            return None
        now = datetime.now(self.timezone)
        return max(next_run.timestamp() - now.timestamp(), 0)
