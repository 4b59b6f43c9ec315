"""Fault injection for the fire-path tests: crash the scheduler once at a named point.

Enabled only by ``JOBPLANE_FAULT_INJECTION=<point>:<marker file>``; the marker file makes the
crash happen once, so a restarted scheduler with the same environment carries on.
"""

from __future__ import annotations

import logging
import os

from flask import Flask

logger = logging.getLogger(__name__)

#: The points of the fire path, in order.
POINTS = ("before_insert", "after_insert", "before_send", "before_store_next")
#: Exit status of an injected crash.
EXIT_INJECTED = 86


def point(app: Flask, name: str) -> None:
    """Crash here if the fault-injection setting names this point (and it has not fired yet)."""
    spec = app.config.get("FAULT_INJECTION")
    if not spec:
        return
    where, _, marker = spec.partition(":")
    if where != name or (marker and os.path.exists(marker)):
        return
    if marker:
        open(marker, "w").close()
    logger.critical("fault injection: crashing at %s", name)
    logging.shutdown()
    os._exit(EXIT_INJECTED)
