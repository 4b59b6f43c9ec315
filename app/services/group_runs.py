"""Group runs: many short executions from one message, supervised by one loop, finished in batches.

A burst (thousands of jobs due at one instant) is CPU-bound, and a message, a claim transaction,
a thread and a finish transaction per run cost a worker more than the sandboxed run itself.  A
group message carries up to ``JOBPLANE_RUN_GROUP_SIZE`` execution ids; the worker that takes it:

1. claims, in one statement, those the group path can run (``claims.claim_execution_group``:
   queued and due, ``local``, no ``max_concurrent``); every other one still queued is sent on as an
   ordinary ``run_execution`` message (deferral, Kubernetes, staging…); the rest (claimed by another
   delivery, already final) is dropped, so a group delivered twice runs nothing twice;
2. reads the jobs and their secret names with the claim, and the secret values of the jobs that
   have any;
3. starts its runs (``LocalExecutor.start``) ``JOBPLANE_RUN_GROUP_WINDOW`` at a time — a run
   counts as starting until it exits or ``STARTING_SECONDS`` after its spawn — and supervises
   them all in one selector loop on this thread (``SupervisionLoop``): each run keeps its own
   timeout, cancel, kill and reaping, its own ``LogWriter`` (masking, cap, live stream); the
   claims, started or not, are heartbeated by one statement;
4. records the outcomes of the runs that ended, ``RECORD_BATCH`` at a time or
   ``RECORD_AFTER_SECONDS`` after the first ended, with one statement in one transaction
   (``claims.finish_executions``: each then gets its retry or notifications), and publishes their
   final status in one Redis round trip.

A run's ``started_at`` is its claim time until its outcome records the time its process was
spawned.  Whatever breaks in the loop, the runs that ended keep their outcomes and no process of a
run outlives it: the runs left are killed, and their executions (still ``running``, like those
not started yet) are declared lost by the sweeper and retried.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from uuid import UUID

from flask import current_app

from app.errors import JobplaneError
from app.executors.base import Executor, RunResult, remove_workdir
from app.executors.supervision import Supervision, SupervisionLoop
from app.extensions import db
from app.models.base import utcnow
from app.observability import logs, metrics, sentry
from app.services import claims
from app.services import secrets as job_secrets
from app.services.claims import Claim
from app.services.live import live_log_for
from app.services.masking import SecretMasker
from app.services.runs import LogWriter, _error_message, run_spec, worker_id
from app.tasks import dispatch

logger = logging.getLogger(__name__)

#: A run counts as starting (against ``JOBPLANE_RUN_GROUP_WINDOW``) until it exits or this long
#: after its spawn: long enough for a sandbox and an interpreter to come up on a busy machine, short
#: enough that a group of long runs still starts ``window / STARTING_SECONDS`` of them a second.
STARTING_SECONDS = 0.05
#: The outcomes of runs that ended are recorded together once this many are waiting, or this long
#: after the first of them ended, or when the group has nothing left to run.
RECORD_BATCH = 20
RECORD_AFTER_SECONDS = 0.2


@dataclass
class GroupMember:
    """One run of a group."""

    claim: Claim
    writer: LogWriter
    workdir: str | None = None
    supervision: Supervision | None = None


def run_execution_group(*, execution_ids: list, executor_for: Callable[[str], Executor]) -> dict[str, str]:
    """Claim and run the executions of a group message (see the module's docstring).

    Parameters:
      execution_ids: the group's execution ids; ids that are not UUIDs are ignored (logged).
      executor_for: the executor of a name; the group uses ``local``.

    Returns:
      the outcome of each execution this delivery ran, by id: its final status, or "cancelled"
      when its claim was revoked; those sent on singly are "forwarded".
    """
    ids = _valid_ids(execution_ids)
    if not ids:
        return {}
    config = current_app.config
    if db.engine.dialect.name != "postgresql":  # the group claim is PostgreSQL's: one at a time
        return _forward(ids)
    with db.unit_of_work():
        won = claims.claim_execution_group(execution_ids=ids, worker_id=worker_id(),
                                           default_executor=config["EXECUTOR_DEFAULT"])
        claimed = {claim.execution_id for claim in won}
        others = claims.still_queued(execution_ids=[i for i in ids if i not in claimed])
        secret_names = job_secrets.names_for_runs(job_ids=list({claim.job.id for claim in won}))
    outcomes = _forward(others)
    if won:
        outcomes.update(GroupRun(won, secret_names, executor_for(won[0].executor)).run())
    return outcomes


def _valid_ids(execution_ids) -> list[UUID]:
    if not isinstance(execution_ids, (list, tuple)):
        logger.warning("group message without a list of execution ids (%r); dropped", type(execution_ids).__name__)
        return []
    ids: dict[UUID, None] = {}  # in order, once each
    for value in execution_ids:
        try:
            ids[UUID(str(value))] = None
        except ValueError:
            logger.warning("group message: %r is not an execution id; ignored", str(value)[:100])
    return list(ids)


def _forward(execution_ids: list[UUID]) -> dict[str, str]:
    """Send these on as ordinary ``run_execution`` messages: the usual path decides about them."""
    send_run = dispatch.run_execution_sender()
    for execution_id in execution_ids:
        send_run(execution_id)
    return {str(execution_id): "forwarded" for execution_id in execution_ids}


class GroupRun:
    """The claimed runs of one group message, supervised together on this thread."""

    def __init__(self, won: list[Claim], secret_names: dict[UUID, list[str]], executor: Executor):
        config = current_app.config
        self.config = config
        self.executor = executor
        self.live = live_log_for(current_app)
        self.secret_names = secret_names
        self.loop = SupervisionLoop()
        self.window = config["RUN_GROUP_WINDOW"]
        self.settle = STARTING_SECONDS
        self.members: list[GroupMember] = []
        self.pending: deque[tuple[GroupMember, dict[str, str]]] = deque()
        self.outcomes: dict[str, str] = {}
        self.by_supervision: dict[Supervision, GroupMember] = {}
        self.ended: list[tuple[GroupMember, RunResult]] = []  # runs over, outcomes not yet recorded
        self.first_ended = 0.0
        self.claims = won

    def run(self) -> dict[str, str]:
        self.last_heartbeat = time.monotonic()  # before the writers': the group's heartbeat comes first
        started_at = utcnow()
        for claim in self.claims:
            metrics.execution_started(job_type=claim.job.job_type, scheduled_for=claim.scheduled_for,
                                      attempt=claim.attempt, started_at=started_at)
        self._publish([(claim.execution_id, {"type": "status", "status": "running"}) for claim in self.claims])
        values, errors = self._secret_values()
        # This thread's log lines and Sentry events mask every secret of the group.
        group_masker = SecretMasker([value for job_values in values.values() for value in job_values.values()])
        logs.bind_run(job_id=None, execution_id=None, masker=group_masker)
        sentry.scrub_run_secrets(group_masker)
        try:
            self._prepare(values, errors)
            self._supervise()
        finally:
            if self.ended:  # runs that are over keep their outcomes whatever broke
                count = len(self.ended)
                try:
                    self._record_ended()
                except Exception:
                    logger.exception("the outcomes of %d ended runs could not be recorded", count)
            self._abandon()
            self.loop.close()
        return self.outcomes

    def _secret_values(self) -> tuple[dict[UUID, dict[str, str]], dict[UUID, str]]:
        """The secret values of each job of the group that has any; the error of each that failed."""
        values: dict[UUID, dict[str, str]] = {}
        errors: dict[UUID, str] = {}
        if not self.secret_names:
            return values, errors
        with db.unit_of_work():  # not left open during the runs
            for job_id, names in self.secret_names.items():
                try:
                    values[job_id] = job_secrets.values_for_run(job_id=job_id, names=names)
                except JobplaneError as exc:
                    errors[job_id] = exc.message
        return values, errors

    def _prepare(self, values: dict[UUID, dict[str, str]], errors: dict[UUID, str]) -> None:
        """A member (with its log writer) for each claim, pending its start; those whose secrets
        could not be read end at once."""
        config = self.config
        ended: list[tuple[GroupMember, RunResult]] = []
        for claim in self.claims:
            secret_values = values.get(claim.job.id, {})
            writer = LogWriter(claim, masker=SecretMasker(secret_values.values()), live=self.live,
                               flush_seconds=config["LOG_FLUSH_SECONDS"],
                               heartbeat_seconds=config["HEARTBEAT_SECONDS"], cap_bytes=config["LOG_CAP_BYTES"])
            member = GroupMember(claim, writer)
            self.members.append(member)
            if claim.job.id in errors:
                ended.append((member, RunResult("failed", None, "the job's secrets could not be read: "
                                                f"{errors[claim.job.id]}", None, utcnow(), False)))
            else:
                self.pending.append((member, secret_values))
        if ended:
            self._record(ended)

    def _start_pending(self) -> None:
        """Start pending members while fewer than the window are starting (see the module's
        docstring); a member whose claim was revoked meanwhile is not started."""
        room = self.window - len(self.loop.starting(self.settle))
        ended: list[tuple[GroupMember, RunResult]] = []
        while room > 0 and self.pending:
            member, secret_values = self.pending.popleft()
            if not member.writer.claim_held:
                ended.append((member, RunResult("cancelled", None, "its claim was revoked before it started",
                                                None, utcnow(), False)))
                continue
            result = self._start(member, secret_values)
            if result is None:
                room -= 1
            else:
                ended.append((member, result))
        if ended:
            self._record(ended)

    def _start(self, member: GroupMember, secret_values: dict[str, str]) -> RunResult | None:
        """Spawn the member's run and hand it to the loop; its outcome if it could not start."""
        claim = member.claim
        try:
            spec = run_spec(claim.job, claim.execution_id, claim.scheduled_for, claim.attempt, secret_values)
            member.workdir = self.executor.new_workdir(spec)
            started = self.executor.start(member.workdir, spec, output=member.writer.write, tick=member.writer.tick)
        except Exception as exc:  # the run must end recorded, whatever broke
            logger.exception("execution %s: executor error", claim.execution_id)
            return RunResult("failed", None, f"Jobplane could not run the script: {exc}", None, utcnow(), False)
        if isinstance(started, RunResult):
            return started
        member.supervision = started
        self.by_supervision[started] = member
        self.loop.add(started)
        return None

    def _supervise(self) -> None:
        heartbeat_seconds = self.config["HEARTBEAT_SECONDS"]
        while self.pending or self.loop.active:
            if time.monotonic() - self.last_heartbeat >= heartbeat_seconds:
                live = [self.by_supervision[s] for s in self.loop.active] + [m for m, _ in self.pending]
                self._heartbeat(live)
                self.last_heartbeat = time.monotonic()
            self._start_pending()
            if self.loop.active:
                ended = self.loop.run_pass(max_wait=self._longest_wait())
                if ended and not self.ended:
                    self.first_ended = time.monotonic()
                self.ended += [(self.by_supervision.pop(supervision), result) for supervision, result in ended]
            if self.ended and (len(self.ended) >= RECORD_BATCH or not (self.pending or self.loop.active)
                               or time.monotonic() - self.first_ended >= RECORD_AFTER_SECONDS):
                self._record_ended()

    def _record_ended(self) -> None:
        ended, self.ended = self.ended, []
        self._record(ended)

    def _longest_wait(self) -> float | None:
        """How long the loop may wait for output or an exit before it must act: start a pending
        member once the window has room, or record the runs that ended (None: no limit; an exit
        wakes the loop by itself)."""
        waits = []
        if self.ended:
            waits.append(self.first_ended + RECORD_AFTER_SECONDS - time.monotonic())
        if self.pending:
            starting = self.loop.starting(self.settle)
            waits.append(0.0 if len(starting) < self.window else
                         min(supervision.spawned for supervision in starting) + self.settle - time.monotonic())
        return min(waits) if waits else None

    def _heartbeat(self, members: list[GroupMember]) -> None:
        """One statement for every live run; a run whose claim is gone is stopped at its next step.
        If it fails, each run's own writer heartbeats (its clock was not reset)."""
        try:
            with db.unit_of_work():
                held = claims.heartbeat_group(claims=[member.claim for member in members])
        except Exception:
            logger.exception("group heartbeat failed; the runs heartbeat one by one")
            return
        now = time.monotonic()
        for member in members:
            if member.claim.execution_id in held:
                member.writer.last_heartbeat = now
            else:
                member.writer.claim_held = False

    def _record(self, ended: list[tuple[GroupMember, RunResult]]) -> None:
        """Record the outcomes of runs that ended together: one transaction, one Redis round trip."""
        finishing = []
        for member, result in ended:
            member.writer.flush(final=True)
            remove_workdir(member.workdir)
            member.workdir = None
            member.supervision = None
            if result.status == "cancelled":
                # The claim was revoked (cancelled, replaced, declared lost): the row is not ours to write.
                logger.warning("execution %s stopped: its claim was revoked", member.claim.execution_id)
                self.outcomes[str(member.claim.execution_id)] = "cancelled"
            else:
                finishing.append((member, result))
        if not finishing:
            return
        try:
            with db.unit_of_work():
                done = claims.finish_executions(outcomes=[self._outcome(member, result)
                                                          for member, result in finishing])
            recorded = [member.claim.execution_id in done for member, _ in finishing]
        except Exception:
            # One bad outcome must not cost the others theirs: each in its own transaction.
            logger.exception("recording %d outcomes together failed; recording them one by one", len(finishing))
            recorded = []
            for member, result in finishing:
                try:
                    with db.unit_of_work():
                        outcome = self._outcome(member, result)
                        recorded.append(claims.finish_execution(
                            claim=outcome.claim, status=outcome.status, exit_code=outcome.exit_code,
                            error_message=outcome.error_message, started_at=outcome.started_at,
                            completed_at=outcome.completed_at, peak_memory_kb=outcome.peak_memory_kb,
                            cpu_seconds=outcome.cpu_seconds, sandboxed=outcome.sandboxed))
                except Exception:
                    logger.exception("execution %s: could not record its outcome; the sweeper will declare it "
                                     "lost", member.claim.execution_id)
                    recorded.append(False)
        events = []
        for (member, result), done in zip(finishing, recorded):
            execution_id = member.claim.execution_id
            if not done:
                logger.warning("execution %s finished after its claim was revoked; outcome %s not recorded",
                               execution_id, result.status)
                self.outcomes[str(execution_id)] = "cancelled"
                continue
            self.outcomes[str(execution_id)] = result.status
            events.append((execution_id, {"type": "status", "status": result.status, "exit_code": result.exit_code}))
        self._publish(events)

    @staticmethod
    def _outcome(member: GroupMember, result: RunResult) -> claims.Outcome:
        masker, writer = member.writer.masker, member.writer
        return claims.Outcome(
            claim=member.claim, status=result.status, exit_code=result.exit_code,
            error_message=_error_message(masker.mask(result.error_message) if result.error_message else None,
                                         writer.stderr_tail if result.status in ("failed", "timed_out") else ""),
            # the spawn time (the claim's placeholder was the claim time)
            started_at=result.started_at, completed_at=result.completed_at,
            peak_memory_kb=result.peak_memory_kb, cpu_seconds=result.cpu_seconds, sandboxed=result.sandboxed)

    def _publish(self, events: list) -> None:
        try:
            self.live.publish_many(events)
        except Exception:  # viewers can always replay the stored status
            logger.warning("live status publish failed", exc_info=True)

    def _abandon(self) -> None:
        """After an error in the loop: no process of a run outlives it, nor its working directory.
        Their executions stay ``running`` without heartbeats: the sweeper declares them lost."""
        for member in self.members:
            if member.supervision is not None:
                logger.error("execution %s: its group stopped before it ended; its processes are killed",
                             member.claim.execution_id)
                member.supervision.kill()
                try:
                    member.supervision.close(self.loop.selector)
                except Exception:
                    logger.exception("execution %s: could not reap its process", member.claim.execution_id)
                member.supervision = None
            remove_workdir(member.workdir)
            member.workdir = None
