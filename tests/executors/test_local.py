"""The local executor on real processes: output, exit codes, timeouts, the sandbox."""

from __future__ import annotations

import os
import time

import pytest

from app.config import load_settings
from app.executors import LocalExecutor, RunSpec

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
    killed, _ = run("kill -KILL $$")
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
