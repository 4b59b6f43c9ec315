"""The local executor on real processes: output, exit codes, timeouts, the sandbox."""

from __future__ import annotations

import os
import time

import pytest

from app.config import load_settings
from app.executors import LocalExecutor, ResourceLimits, RunSpec

CONFIG = load_settings(environ={}, overrides={"ENV": "test", "DATABASE_URL": "sqlite://"})


def run(script: str, *, job_type: str = "bash", timeout: float = 20, sandbox: str = "auto",
        grace: float = 1.0, tick=lambda: True, env=None):
    executor = LocalExecutor(python=CONFIG["PYTHON"], bash="/bin/bash", sandbox=sandbox, kill_grace_seconds=grace)
    output: list[tuple[str, str]] = []
    result = executor.run(RunSpec(execution_id="test", job_type=job_type, script=script, timeout_seconds=timeout,
                                  env=env or {}),
                          output=lambda stream, text: output.append((stream, text)), tick=tick)
    return result, output


def text_of(output, stream=None) -> str:
    return "".join(text for s, text in output if stream is None or s == stream)


def test_streams_are_captured_separately_and_in_order():
    result, output = run("echo one\necho two >&2\nsleep 0.2\necho three")
    assert result.status == "success" and result.exit_code == 0 and result.sandboxed
    assert text_of(output, "stdout") == "one\nthree\n"
    assert text_of(output, "stderr") == "two\n"
    assert text_of(output).index("two") < text_of(output).index("three")


def test_exit_code_and_signals_are_reported():
    failed, _ = run("exit 42")
    assert (failed.status, failed.exit_code) == ("failed", 42)
    killed, _ = run("sleep 30 &\nkill -KILL $!\nwait $!")
    assert killed.status == "failed" and killed.exit_code == 128 + 9


def test_python_scripts_run_unbuffered():
    result, output = run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nraise SystemExit(3)",
                         job_type="python")
    assert result.exit_code == 3
    assert text_of(output, "stdout") == "out\n" and text_of(output, "stderr") == "err\n"


def test_invalid_utf8_does_not_break_the_log():
    result, output = run(r"printf 'ok \xff\xfe done\n'")
    assert result.status == "success"
    assert "ok" in text_of(output) and "done" in text_of(output)


def test_timeout_sends_term_then_kill_after_the_grace_period():
    started = time.monotonic()
    result, output = run("trap 'echo got TERM' TERM\nwhile true; do sleep 0.1; done", timeout=1, grace=1)
    elapsed = time.monotonic() - started
    assert result.status == "timed_out"
    assert "got TERM" in text_of(output)  # the script saw SIGTERM first
    assert 1.9 < elapsed < 6


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_tick_returning_false_stops_the_run(sandbox):
    ticks = {"n": 0}

    def tick():
        ticks["n"] += 1
        return ticks["n"] < 5

    result, _ = run("sleep 30", tick=tick, sandbox=sandbox, grace=0.5)
    assert result.status == "cancelled"


def test_sandbox_hides_the_hosts_files_and_environment(tmp_path):
    secret_file = tmp_path / "jobplane-config"
    secret_file.write_text("top secret")
    os.environ["JOBPLANE_SANDBOX_PROBE"] = "visible?"
    try:
        result, output = run(f"cat {secret_file} 2>&1; ls /root 2>&1; env; pwd; touch /usr/x 2>&1",
                             env={"MINE": "yes"})
    finally:
        del os.environ["JOBPLANE_SANDBOX_PROBE"]
    text = text_of(output)
    assert "top secret" not in text and "No such file" in text
    assert "JOBPLANE_SANDBOX_PROBE" not in text and "MINE=yes" in text
    assert "/work" in text
    assert "Read-only file system" in text


def test_without_sandbox_the_run_says_so_loudly():
    result, output = run("echo hi", sandbox="none")
    assert result.status == "success" and not result.sandboxed
    assert "running without a sandbox" in text_of(output, "system")


def test_working_directory_is_removed_after_the_run(tmp_path):
    executor = LocalExecutor(python=CONFIG["PYTHON"], bash="/bin/bash", run_dir=str(tmp_path))
    executor.run(RunSpec(execution_id="x", job_type="bash", script="echo data > file", timeout_seconds=10),
                 output=lambda *_: None, tick=lambda: True)
    assert os.listdir(tmp_path) == []


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("on_disk", [False, True], ids=["sandbox-tmpfs-workdir", "run-dir-workdir"])
def test_a_run_leaves_no_descriptor_open_alone_or_in_a_loop(tmp_path, on_disk):
    # Given the worker's open file descriptors, and runs that exit while a child of theirs still
    # holds their output open (a straggler: the run's pidfd, not its pipes, tells the loop it exited),
    # their working directory in their sandbox (the script passed in a memfd) or on disk
    from app.executors.supervision import SupervisionLoop

    executor = LocalExecutor(python=CONFIG["PYTHON"], bash="/bin/bash", run_dir=str(tmp_path) if on_disk else None)
    script = "echo hi; sleep 30 & exit 3"
    before = open_fds()
    # When one runs alone, and three run together in one supervision loop (a group)
    alone = executor.run(RunSpec(execution_id="alone", job_type="bash", script=script, timeout_seconds=10),
                         output=lambda *_: None, tick=lambda: True)
    loop, results = SupervisionLoop(), []
    for n in range(3):
        workdir = executor.new_workdir(RunSpec(execution_id=f"loop-{n}", job_type="bash", timeout_seconds=10))
        loop.add(executor.start(workdir, RunSpec(execution_id=f"loop-{n}", job_type="bash", script=script,
                                                 timeout_seconds=10), output=lambda *_: None, tick=lambda: True))
    deadline = time.monotonic() + 20
    while loop.active and time.monotonic() < deadline:
        results += [result for _, result in loop.run_pass()]
    loop.close()
    # Then every run ended with its own exit code, its straggler killed with it…
    assert alone.exit_code == 3 and [r.exit_code for r in results] == [3, 3, 3]
    # …and none left a pipe or a pidfd open behind it
    assert open_fds() == before


def run_spec(spec: RunSpec, **executor_options):
    executor = LocalExecutor(python=CONFIG["PYTHON"], bash="/bin/bash", kill_grace_seconds=1, **executor_options)
    output: list[tuple[str, str]] = []
    result = executor.run(spec, output=lambda stream, text: output.append((stream, text)), tick=lambda: True)
    return result, text_of(output)


def test_memory_limit_stops_a_script_that_allocates_too_much():
    spec = RunSpec(execution_id="mem", job_type="python", timeout_seconds=30,
                   script="x = bytearray(600 * 1024 * 1024)\nprint('allocated')",
                   limits=ResourceLimits(memory_mb=256))
    result, text = run_spec(spec)
    assert result.status == "failed" and "MemoryError" in text and "allocated" not in text


def test_peak_memory_and_cpu_time_are_recorded():
    spec = RunSpec(execution_id="usage", job_type="python", timeout_seconds=30,
                   script="x = bytearray(120 * 1024 * 1024)\nfor i in range(3_000_000): pass")
    result, _ = run_spec(spec)
    assert result.status == "success"
    assert result.peak_memory_kb > 100 * 1024
    assert result.cpu_seconds > 0.05


def test_a_run_is_pinned_to_its_cpu_limit_and_the_worker_thread_is_not():
    # Given a worker thread that may use every CPU, and a job limited to 1 CPU
    before = os.sched_getaffinity(0)
    spec = RunSpec(execution_id="cpus", job_type="python", timeout_seconds=30,
                   script="import os; print(sorted(os.sched_getaffinity(0)))", limits=ResourceLimits(cpus=1))
    # When it runs
    result, text = run_spec(spec)
    # Then the script saw one CPU, of those the worker may use, and the thread kept all of its own
    assert result.status == "success", text
    cpus = eval(text.strip())  # a printed list of ints
    assert len(cpus) == 1 and set(cpus) <= before
    assert os.sched_getaffinity(0) == before
    # And a job allowed as many CPUs as the machine has is not pinned
    spec = RunSpec(execution_id="all", job_type="python", timeout_seconds=30,
                   script="import os; print(len(os.sched_getaffinity(0)))", limits=ResourceLimits(cpus=len(before)))
    result, text = run_spec(spec)
    assert int(text.strip()) == len(before)


def test_cpu_time_limit_kills_a_busy_loop():
    spec = RunSpec(execution_id="cpu", job_type="bash", timeout_seconds=30, script="while true; do :; done",
                   limits=ResourceLimits(cpu_time_seconds=1))
    result, _ = run_spec(spec)
    assert result.status == "failed" and result.exit_code in (128 + 9, 128 + 24)  # SIGKILL or SIGXCPU


def test_network_can_be_switched_off_per_job():
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
             "    print('connected')\nexcept OSError as exc:\n    print('refused', exc)")
    try:
        on, on_text = run_spec(RunSpec(execution_id="net-on", job_type="python", timeout_seconds=20, script=probe))
        off, off_text = run_spec(RunSpec(execution_id="net-off", job_type="python", timeout_seconds=20,
                                         script=probe, network=False))
    finally:
        server.close()
    assert "connected" in on_text
    assert "refused" in off_text and "connected" not in off_text


@pytest.fixture
def bare_repo(tmp_path):
    """A local bare Git repository standing in for a remote one, with a tag v1 and a newer main."""
    import subprocess

    work, bare = tmp_path / "work", tmp_path / "scripts.git"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}

    def git(*args, cwd=work):
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    work.mkdir()
    git("init", "-q", "-b", "main")
    (work / "jobs").mkdir()
    (work / "jobs" / "hello.sh").write_text("echo version one\n")
    git("add", ".")
    git("commit", "-qm", "one")
    git("tag", "v1")
    (work / "jobs" / "hello.sh").write_text("echo version two\n")
    git("commit", "-qam", "two")
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return f"file://{bare}"


@pytest.mark.parametrize("ref, expected", [("v1", "version one"), ("main", "version two"), (None, "version two")])
def test_scripts_run_from_a_git_repository_at_a_ref(bare_repo, ref, expected):
    spec = RunSpec(execution_id="git", job_type="bash", timeout_seconds=30, script_url=bare_repo,
                   script_ref=ref, script_path="jobs/hello.sh")
    result, text = run_spec(spec, git_allow_local=True)
    assert result.status == "success", text
    assert expected in text


@pytest.mark.parametrize("url, ref, path, fragment", [
    ("file:///nonexistent/repo.git", None, "a.sh", "could not fetch the script"),
    ("BARE", "no-such-tag", "jobs/hello.sh", "could not fetch the script"),
    ("BARE", "v1", "jobs/missing.sh", "is not a file"),
    ("BARE", "v1", "../../etc/passwd", "outside the repository"),
])
def test_a_bad_git_source_is_a_clear_failure(bare_repo, url, ref, path, fragment):
    spec = RunSpec(execution_id="git-bad", job_type="bash", timeout_seconds=30,
                   script_url=bare_repo if url == "BARE" else url, script_ref=ref, script_path=path)
    result, _ = run_spec(spec, git_allow_local=True)
    assert result.status == "failed" and fragment in result.error_message


def test_local_repositories_are_refused_unless_allowed(bare_repo):
    spec = RunSpec(execution_id="git-local", job_type="bash", timeout_seconds=30, script_url=bare_repo,
                   script_path="jobs/hello.sh")
    result, _ = run_spec(spec)
    assert result.status == "failed" and "path on the worker" in result.error_message
