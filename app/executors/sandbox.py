"""Wrapping a run's command in bubblewrap: a private view of the system for each run.

The run sees a read-only /usr (and the few /etc files programs need), a private /tmp, its own
working directory at /work (a private tmpfs, or a directory of the machine's), fresh
PID/IPC/UTS/network namespaces (the network is shared unless the job switches it off) and no view
of Jobplane's files.  The script runs as the first process of its PID namespace: when it dies the
kernel kills everything else in the namespace, so no
process of a run can outlive it.
"""

from __future__ import annotations

import os
import shutil
from typing import Mapping

#: Host paths bound read-only when present, for programs to work (TLS roots, name resolution…).
_READ_ONLY = ("/usr", "/etc/ssl", "/etc/ca-certificates", "/etc/resolv.conf", "/etc/hosts",
              "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/alternatives")
#: Where the run's working directory appears inside the sandbox.
SANDBOX_WORKDIR = "/work"


class SandboxUnavailable(RuntimeError):
    pass


def bubblewrap() -> str | None:
    return shutil.which("bwrap")


def wrap(argv: list[str], *, workdir: str | None, files: Mapping[str, int] | None = None, network: bool = True,
         extra_read_only: tuple[str, ...] = (), bwrap: str | None = None) -> list[str]:
    """The bubblewrap command line running ``argv`` in /work; ``bwrap``: its binary, if the caller
    has looked it up already.

    ``workdir``: the directory on this machine seen as /work; None: /work is a tmpfs of the sandbox
    (in memory, like its /tmp: nothing on the machine's disk to create or remove, gone with the
    sandbox), holding ``files`` (a name in /work -> a file descriptor bubblewrap copies it from,
    which the command must inherit)."""
    bwrap = bwrap or bubblewrap()
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed; install it (apt-get install "
                                 "bubblewrap) or set JOBPLANE_SANDBOX=none")
    # No --new-session: the run stays in the process group the executor signals. It has no
    # controlling terminal (the executor starts it in a new session), so TIOCSTI is no threat.
    # --as-pid-1: the script is the namespace's first process and bubblewrap's own child, so
    # its exit takes every other process of the run with it, and wait4() on bubblewrap reports
    # the script's resource usage.
    command = [bwrap, "--unshare-all", "--die-with-parent", "--as-pid-1"]
    if network:
        command.append("--share-net")
    for path in _READ_ONLY + extra_read_only:
        if os.path.exists(path):
            command += ["--ro-bind", path, path]
    for name in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{name}") or not os.path.exists(f"/{name}"):
            command += ["--symlink", f"usr/{name}", f"/{name}"]
        else:
            command += ["--ro-bind", f"/{name}", f"/{name}"]
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    if workdir is None:
        command += ["--tmpfs", SANDBOX_WORKDIR]
        for name, fd in (files or {}).items():
            command += ["--file", str(fd), f"{SANDBOX_WORKDIR}/{name}"]
    else:
        command += ["--bind", workdir, SANDBOX_WORKDIR]
    return command + ["--chdir", SANDBOX_WORKDIR, "--"] + argv
