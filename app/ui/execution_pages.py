"""``/executions/<id>``: one run's page (its facts, its other attempts, Cancel, the live log), and
the plain-HTTP way to follow its log where websockets are blocked.

The page renders the facts; ``static/live_log.js`` follows the log over ``/ws/executions/<id>/log``
(``live_log``) or, when the socket cannot open, polls ``/executions/<id>/log/events``.
"""

from __future__ import annotations

from urllib.parse import urlsplit
from uuid import UUID

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from app.errors import Conflict, InvalidInput
from app.models.execution import ACTIVE_STATUSES
from app.services import access, executions, jobs
from app.ui.live_log import NOTHING_YET, chunk_event
from app.ui.views import current_actor, signed_in
from app.ui.web_auth import web_actor

bp = Blueprint("execution_pages", __name__, url_prefix="/executions")

#: pieces one fallback poll returns at most; ``more`` says to ask again at once
EVENTS_PER_POLL = 500


def _facts_context(execution_id: UUID) -> dict:
    actor = current_actor()
    execution = executions.get_execution(actor=actor, execution_id=execution_id)
    job = jobs.get_job(actor=actor, job_id=execution.job_id)
    return dict(execution=execution, job=job, active=execution.status in ACTIVE_STATUSES,
                can_cancel=execution.status in ACTIVE_STATUSES and access.can_run_job(actor, job))


@bp.get("/<uuid:execution_id>")
@signed_in
def show_execution(execution_id: UUID):
    context = _facts_context(execution_id)
    attempts = executions.list_attempts(actor=current_actor(), execution_id=execution_id)
    # werkzeug builds a websocket rule as an absolute ws:// URL of this request's host; the script
    # takes the path and the page's own origin (right behind a proxy that rewrites the host)
    socket_path = urlsplit(url_for("live_log.execution_log", execution_id=execution_id)).path
    return render_template("executions/show.html", attempts=attempts, socket_path=socket_path, **context)


@bp.get("/<uuid:execution_id>/facts")
@signed_in
def execution_facts(execution_id: UUID):
    """The facts card alone: the live log script swaps it in when the run ends (new timings)."""
    return render_template("executions/_facts.html", **_facts_context(execution_id))


@bp.post("/<uuid:execution_id>/cancel")
@signed_in
def cancel_execution(execution_id: UUID):
    try:
        executions.cancel_execution(actor=current_actor(), execution_id=execution_id)
    except Conflict as error:
        flash(f"Not cancelled: {error.message}.", "error")
    else:
        flash("Cancelled: a queued run never starts; a running one is stopped at its next heartbeat.", "success")
    return redirect(url_for(".show_execution", execution_id=execution_id), 303)


@bp.get("/<uuid:execution_id>/log/events")
def log_events(execution_id: UUID):
    """The log pieces after ``after_seq`` and the status, as JSON: the live log for browsers
    whose websocket cannot open (a proxy that blocks upgrades), polled about once a second.

    The session and the same authorization as the socket; an anonymous script gets 401 JSON
    (not a redirect to the sign-in page it could not follow).
    """
    actor = web_actor()
    if actor is None:
        return jsonify(message="sign in first: the log is for signed-in users"), 401
    raw = request.args.get("after_seq")
    if raw is not None and not (raw.isdigit() and int(raw) < 2**31):  # seq is a 32-bit integer column
        raise InvalidInput({"after_seq": "must be a whole number 0 or more: the seq of the last piece you have "
                                         "(leave it out to start from the first piece)"})
    after_seq = NOTHING_YET if raw is None else int(raw)
    execution, chunks = executions.log_chunks(actor=actor, execution_id=execution_id, after_seq=after_seq,
                                              limit=EVENTS_PER_POLL)
    return jsonify(events=[chunk_event(chunk) for chunk in chunks], status=execution.status,
                   more=len(chunks) == EVENTS_PER_POLL)
