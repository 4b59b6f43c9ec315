"""Staged executions: the worker's side.

A staged execution reaches a worker before its fire time (``staging``).  The worker then, without
claiming it:

1. reads the execution, its job and the job's secrets, and builds the run;
2. has the executor start the run's process held by a launcher (``executors.launcher``): the
   working directory, the script file, resource limits and the sandbox exist, the job's code
   does not run;
3. waits until ``CLAIM_AHEAD_SECONDS`` before the fire time and claims the execution as any
   other (``queued`` → ``running``, ``started_at`` = the fire time); a lost claim (cancelled,
   withdrawn by a pause or an edit, taken by another delivery) discards the held process;
4. as soon as the claim is committed, releases the launcher for the fire time: the launcher
   starts the job's code then, never before.

Until the claim the execution is plainly ``queued``, with no claim token: a worker that dies during
the wait leaves it to the sweeper, like a lost message (its held process dies with it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable
from uuid import UUID

from sqlalchemy import select, update

from app.errors import JobplaneError
from app.executors.base import Executor, OutputSink, RunResult, RunSpec, Tick
from app.executors.launcher import StagedProcess, sleep_until
from app.extensions import db
from app.models import Execution, Job
from app.models.base import utcnow
from app.services import secrets as job_secrets
from app.services.claims import ClaimOutcome

logger = logging.getLogger(__name__)

#: The claim's transaction and the run's bookkeeping (live status, log writer) happen in this
#: margin before the fire time, so that at the fire time only the launcher's own wake-up remains.
#: The execution shows ``running`` (``started_at`` = its fire time) for at most this long before its
#: code starts.  50 ms was too short on a loaded machine: claims were won after the fire time.
CLAIM_AHEAD_SECONDS = 0.2
#: A staged run released later than this after its fire time is logged as a warning.
LATE_RELEASE_SECONDS = 0.02
#: A message that arrives with less time than this before the fire time is run the usual way.
MIN_LEAD_SECONDS = 0.1

#: Builds a run from (job, execution id, scheduled_for, attempt, secret values).
SpecBuilder = Callable[[Job, UUID, datetime, int, dict[str, str]], RunSpec]


@dataclass
class StagedRun:
    """A staged execution prepared by this worker, waiting for its fire time."""

    execution_id: UUID
    scheduled_for: datetime
    job_version: int
    #: the job's secrets, read when the run was prepared (None: they could not be read, and the
    #: claim's usual read reports why)
    secret_values: dict[str, str] | None
    #: the held process (None: the executor cannot stage; the run starts the usual way at its time)
    process: StagedProcess | None = field(default=None, repr=False)
    #: when the claim was won (for the late-release warning)
    claimed_at: datetime | None = None

    def claimed(self, outcome: ClaimOutcome) -> None:
        """After the claim, in its transaction: a won claim gets ``started_at`` = the fire time (the
        executor records the real start when the run ends); otherwise the held process goes."""
        claim = outcome.claim
        if claim is None:
            self.discard()
            return
        self.claimed_at = utcnow()
        if claim.job.version != self.job_version:  # changed by a path that did not withdraw it
            self.discard()
            self.secret_values = None
        db.session.execute(update(Execution).where(Execution.id == claim.execution_id,
                                                   Execution.claim_token == claim.token)
                           .values(started_at=max(utcnow(), self.scheduled_for))
                           .execution_options(synchronize_session=False))

    def release(self) -> None:
        """Right after the claim's commit: the held process starts the job's code at the fire time."""
        if self.process is None:
            return
        started = self.process.release(self.scheduled_for)
        late = (started - self.scheduled_for).total_seconds()
        if late > LATE_RELEASE_SECONDS:
            ready = (self.scheduled_for - self.claimed_at).total_seconds() if self.claimed_at else float("nan")
            logger.warning("execution %s: released %.0f ms after its fire time (its claim was won %.0f ms before "
                           "it); the worker or the machine is overloaded", self.execution_id, late * 1000,
                           ready * 1000)

    def run(self, executor: Executor, spec: RunSpec, *, output: OutputSink, tick: Tick) -> RunResult:
        """Supervise the released run; without a held process, start it the usual way at its fire time."""
        if self.process is not None:
            process, self.process = self.process, None
            return process.supervise(output=output, tick=tick)
        sleep_until(self.scheduled_for)
        return executor.run(spec, output=output, tick=tick)

    def discard(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            process.discard()


def prepare(*, execution_id: UUID, executor_for: Callable[[str], Executor], default_executor: str,
            build_spec: SpecBuilder) -> StagedRun | None:
    """Prepare a staged execution and wait until its claim moment.  Only an executor that can hold
    a process (``stage``: the local one) prepares one; for another (Kubernetes) the run is just
    started at its fire time, never before.

    Returns:
      None if the execution is not staged (not queued, or its fire time has come), or too close to
      its fire time to be prepared (then at its fire time): it is claimed and run the usual way.
      Otherwise the prepared run, returned ``CLAIM_AHEAD_SECONDS`` before its fire time; it must
      then be claimed, and ``StagedRun.claimed`` told the outcome.
    """
    with db.unit_of_work():
        row = db.session.execute(select(Execution.status, Execution.scheduled_for, Execution.attempt,
                                        Execution.job_id, Execution.due_at).where(Execution.id == execution_id)).first()
        if row is None or row.status != "queued" or row.due_at is not None or row.scheduled_for <= utcnow():
            return None
        if row.scheduled_for - utcnow() < timedelta(seconds=MIN_LEAD_SECONDS):
            db.session.rollback()
            sleep_until(row.scheduled_for)  # too close to prepare: the usual way, but not before its time
            return None
        job = db.session.get(Job, row.job_id)
        executor_name = job.executor or default_executor
        staged = StagedRun(execution_id=execution_id, scheduled_for=row.scheduled_for, job_version=job.version,
                           secret_values=None)
        try:
            staged.secret_values = job_secrets.values_for_run(job_id=job.id)
        except JobplaneError:
            pass  # nothing is staged; the run reads them again after its claim, and fails saying why
        spec = build_spec(job, execution_id, row.scheduled_for, row.attempt, staged.secret_values or {})
    stage = getattr(executor_for(executor_name), "stage", None)
    if staged.secret_values is not None and stage is not None:
        staged.process = stage(spec)
    sleep_until(staged.scheduled_for - timedelta(seconds=CLAIM_AHEAD_SECONDS))
    return staged
