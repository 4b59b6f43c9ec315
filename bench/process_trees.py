"""What bench/concurrency.py and bench/worker_kills.py share: a bench whose jobplane processes are
stopped by SIGKILL of their process trees -- never their sandboxes, which bubblewrap's
--die-with-parent must end -- and whose runs can tell that someone else disturbed them.

Dramatiq's worker processes put themselves in process groups of their own, and each run is a
session of its own: a jobplane process is stopped by walking its tree, not by its group.  These
benches use Redis database 12 (not the tests' 15, nor the other benches' 14 and the Celery
baseline's 13).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from common import BENCH_DATABASE, JobplaneBench, log, proc_info, proc_table, process_tree, services_epoch
from sqlalchemy import text

#: Not the tests' database (15), nor the other benches' (14) and the Celery baseline's (13).
REDIS_DB = 12


def _alive(pid: int, start_ticks: int) -> bool:
    """Whether ``pid`` is still the process that had this start time (and not a zombie)."""
    info = proc_info(pid)
    return info is not None and info.start_ticks == start_ticks and info.state != "Z"


def kill_tree(process: subprocess.Popen, *, sandbox_grace: float = 5.0) -> dict:
    """SIGKILL a jobplane process and the jobplane processes under it, but not its sandboxes:
    bubblewrap's --die-with-parent must end them.  Waits ``sandbox_grace`` s for that, then
    SIGKILLs any survivor.

    Returns:
      how many processes were killed, how many sandbox processes there were, how long they took
      to disappear, and how many survived (had to be killed).
    """
    table = proc_table()
    own, sandboxed = process_tree(process.pid, table)
    identity = {pid: table[pid].start_ticks for pid in own + sandboxed}
    killed_at = time.monotonic()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass
    for pid in own:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log(f"process {process.pid} did not die")
    gone_after = None
    survivors = [pid for pid in sandboxed if _alive(pid, identity[pid])]
    while survivors and time.monotonic() - killed_at < sandbox_grace:
        time.sleep(0.02)
        survivors = [pid for pid in survivors if _alive(pid, identity[pid])]
    if sandboxed and not survivors:
        gone_after = round(time.monotonic() - killed_at, 3)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    # A SIGKILLed process with hundreds of threads takes a moment to exit.
    late = [pid for pid in own if _alive(pid, identity[pid])]
    while late and time.monotonic() - killed_at < sandbox_grace:
        time.sleep(0.02)
        late = [pid for pid in late if _alive(pid, identity[pid])]
    return {"killed": len(own), "sandbox_processes": len(sandboxed), "sandboxes_gone_after_s": gone_after,
            "sandbox_survivors": len(survivors), "jobplane_survivors": len(late)}


class Disturbed(RuntimeError):
    """Someone else reset the bench database, or PostgreSQL or Redis restarted, during a run: its
    figures would measure that, not Jobplane.  ``reset``: the database was reset (the run's data
    is gone), rather than a service restarted."""

    def __init__(self, message: str, *, reset: bool = False):
        super().__init__(message)
        self.reset = reset


class TreeBench(JobplaneBench):
    """A JobplaneBench on Redis db 12, reset at once (after waiting at most ``wait_db`` s for the
    database to be free), with a small connection pool of its own (its connections are counted
    among the database's clients), whose processes are killed by tree."""

    def __init__(self, name: str, *, wait_db: float, **settings):
        super().__init__(name=name, redis_db=REDIS_DB, engine_options={"pool_size": 2, "max_overflow": 2},
                         **settings)
        self.procs = self.processes()
        self.kills: list[dict] = []
        self.reset(wait_db=wait_db)

    @property
    def started(self) -> list[tuple[subprocess.Popen, Path]]:
        """(process, log file) of every process started."""
        return self.procs.started

    def check_undisturbed(self, job_ids: list[str]) -> None:
        """Raise Disturbed if these jobs are gone (the database was reset by another run) or
        PostgreSQL or Redis restarted since the start."""
        epoch = services_epoch(self.database_url, self.redis_url)
        if epoch != self.epoch:
            raise Disturbed(f"PostgreSQL or Redis restarted during the run (another test run?): {self.epoch} -> {epoch}")
        try:
            with self.engine.connect() as connection:
                found = connection.execute(text("SELECT count(*) FROM jobs WHERE id::text = ANY(:ids)"),
                                           {"ids": job_ids}).scalar()
        except Exception as exc:  # noqa: BLE001 - e.g. the tables were dropped
            raise Disturbed(f"{BENCH_DATABASE} was reset by another run during this one: {exc}", reset=True) from None
        if found != len(job_ids):
            raise Disturbed(f"{BENCH_DATABASE} was reset by another run during this one ({found} of "
                            f"{len(job_ids)} jobs left)", reset=True)

    def kill(self, process: subprocess.Popen) -> dict:
        """kill_tree() one process; its outcome."""
        outcome = kill_tree(process)
        self.kills.append(outcome)
        return outcome

    def stop_all(self) -> list[dict]:
        """Kill every process tree still there (workers first: their runs' claims stay)."""
        outcomes = []
        for process, path in sorted(self.started, key=lambda item: "scheduler" in item[1].name):
            if process.poll() is None or process_tree(process.pid)[0]:
                outcomes.append({"process": path.stem, **kill_tree(process)})
        return outcomes

    def log_problems(self) -> dict[str, list[str]]:
        """ERROR/CRITICAL lines (and a Traceback's last line) of each process log."""
        problems = {}
        for _, path in self.started:
            lines = path.read_text(errors="replace").splitlines()
            found = []
            for index, line in enumerate(lines):
                if " ERROR " in line or " CRITICAL " in line or "Traceback" in line:
                    if "Traceback" in line:
                        tail = next((l for l in lines[index + 1:index + 80] if l and not l.startswith((" ", "\t", "Traceback"))), "")
                        found.append(f"Traceback ... {tail}")
                    else:
                        found.append(line)
            if found:
                problems[path.stem] = found
        return problems
