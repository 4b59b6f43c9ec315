"""Fetching a job's script from a Git repository into the run's working directory.

The fetch is shallow (one commit at ``ref``), runs with a clean environment and a time limit,
and never prompts.  Local paths and ``file://`` URLs would let a job read any repository on the
worker's disk, so they are refused unless ``JOBPLANE_GIT_ALLOW_LOCAL`` says otherwise (tests).
"""

from __future__ import annotations

import os
import subprocess

#: Where the repository is checked out inside the working directory.
CHECKOUT_DIR = "repo"


class ScriptFetchError(Exception):
    """The script could not be fetched; the message says what to check."""


def fetch_script(*, url: str, ref: str | None, path: str, workdir: str, timeout: float,
                 allow_local: bool) -> str:
    """Check out ``url`` at ``ref`` (default: its HEAD) and return the script's path in it.

    Raises:
      ScriptFetchError: a refused or unreachable URL, an unknown ref, a path outside the
        repository or missing from it.
    """
    local = url.startswith("file://") or url.startswith("/") or "://" not in url and ":" not in url
    if local and not allow_local:
        raise ScriptFetchError(f"script_url {url!r} is a path on the worker; use an https:// or ssh:// "
                               "Git URL")
    checkout = os.path.join(workdir, CHECKOUT_DIR)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "GIT_TERMINAL_PROMPT": "0",
           "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C.UTF-8"}
    steps = [["git", "init", "--quiet", checkout],
             ["git", "-C", checkout, "fetch", "--quiet", "--depth", "1", url, ref or "HEAD"],
             ["git", "-C", checkout, "checkout", "--quiet", "FETCH_HEAD"]]
    for step in steps:
        try:
            completed = subprocess.run(step, env=env, capture_output=True, text=True, timeout=timeout,
                                       stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ScriptFetchError(f"fetching {url!r} took over {timeout:g} s") from None
        if completed.returncode != 0:
            detail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise ScriptFetchError(f"could not fetch the script from {url!r} at {ref or 'HEAD'}: {detail}")
    script = os.path.realpath(os.path.join(checkout, path))
    if not script.startswith(os.path.realpath(checkout) + os.sep):
        raise ScriptFetchError(f"script_path {path!r} points outside the repository")
    if not os.path.isfile(script):
        raise ScriptFetchError(f"script_path {path!r} is not a file in {url!r} at {ref or 'HEAD'}")
    return os.path.relpath(script, workdir)
