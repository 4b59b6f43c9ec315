"""``/ws/executions/{id}/log``: an execution's log, replayed from the store and then followed live.

The handshake is refused (before the upgrade) when the Origin is not this site, when there is no
signed-in session, or when the services say the user may not see the execution.  After it, the
socket gets JSON events: ``{"type": "log", "seq", "offset", "stream", "data"}`` and
``{"type": "status", "status"}``; ``?after_seq=N`` resumes after the last piece a client has
(left out: from the first piece, whose seq is 0).
The channel is subscribed to (through the process's shared subscriber, ``live_hub``) before the
replay, and live pieces already replayed are dropped, so there is neither a gap nor a duplicate
between the two.  A run's pieces are numbered one by one, so a live piece that skips a number
means a publish was lost: the viewer reads the missing ones from the store.
"""

from __future__ import annotations

import json
import logging
import random
import time
from urllib.parse import urlsplit
from uuid import UUID

from flask import Blueprint, current_app, jsonify, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from app.errors import NotFound
from app.extensions import db
from app.models.execution import FINAL_STATUSES
from app.services import executions
from app.ui import live_hub
from app.ui.web_auth import web_actor

logger = logging.getLogger(__name__)

NOTHING_YET = executions.BEFORE_FIRST_PIECE  # a viewer with no piece yet

bp = Blueprint("live_log", __name__)
sock = Sock()
#: how often a quiet viewer re-reads the run, in case its final status event was lost (the live
#: publish is best effort).  Each check is a few queries: at 5 s, 500 viewers in one process made
#: 100 checks a second and kept it busy (bench/live_log_latency.py); 30 s costs ~17 a second.
_STATUS_CHECK_SECONDS = 30.0


def _origin_allowed() -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return False
    base = current_app.config.get("BASE_URL") or request.host_url
    expected = urlsplit(base)
    given = urlsplit(origin)
    return (given.scheme, given.netloc) == (expected.scheme.replace("ws", "http", 1), expected.netloc)


@bp.before_request
def _guard_handshake():
    """Refuse the upgrade with a plain HTTP status: foreign origin, no session, or not allowed."""
    if not _origin_allowed():
        return jsonify(message="websocket refused: its Origin is not this site"), 403
    actor = web_actor()
    if actor is None:
        return jsonify(message="websocket refused: sign in first"), 401
    try:
        executions.get_execution(actor=actor, execution_id=request.view_args["execution_id"])
    except NotFound as error:
        return jsonify(message=error.message), 404
    return None


@sock.route("/ws/executions/<uuid:execution_id>/log", bp=bp)
def execution_log(ws, execution_id: UUID):
    try:
        _stream(ws, execution_id, after_seq=request.args.get("after_seq", NOTHING_YET, type=int))
    except ConnectionClosed:
        pass
    except Exception:  # an exception here would be written into the socket as an HTTP 500
        logger.exception("live log of execution %s failed", execution_id)


def _stream(ws, execution_id: UUID, *, after_seq: int) -> None:
    actor = web_actor()
    # the handshake's reads are done: give their pooled connection back before waiting for Redis,
    # or a burst of viewers holds the whole pool while their subscriptions are confirmed
    db.session.rollback()
    with live_hub.subscribe(current_app, execution_id) as channel:
        last_seq, status = _replay(ws, actor, execution_id, after_seq, shown_status=None)
        check_at = _next_check()
        while status not in FINAL_STATUSES:
            event = channel.next_event(timeout=max(check_at - time.monotonic(), 0.0))
            if event and event.get("type") == "log":
                if event["seq"] == last_seq + 1:
                    ws.send(_wire(event))
                    last_seq = event["seq"]
                elif event["seq"] > last_seq + 1:  # a piece's publish was lost: the store has it
                    last_seq, status = _replay(ws, actor, execution_id, last_seq, shown_status=status)
                # (lower: replayed already)
            elif event and event.get("type") == "status" and event.get("status") not in FINAL_STATUSES:
                # forwarded as it is: a status change read back from the database by every
                # viewer at once (hundreds of them at a run's start) would queue them on the pool
                status = event["status"]
                ws.send(json.dumps({"type": "status", "status": status}))
            elif event and event.get("type") in ("status", "resync"):
                # the run ended (send what is stored, then the final status, from the database),
                # or live events were lost (the viewer's queue overflowed, Redis reconnected)
                last_seq, status = _replay(ws, actor, execution_id, last_seq, shown_status=status)
            elif event is None:  # quiet until the check: a final status event may have been lost
                last_seq, status = _replay(ws, actor, execution_id, last_seq, shown_status=status)
                check_at = _next_check()


def _next_check() -> float:
    # spread over the interval, so hundreds of viewers in one process do not all query at once
    return time.monotonic() + _STATUS_CHECK_SECONDS * random.uniform(0.5, 1.0)


def _replay(ws, actor, execution_id: UUID, after_seq: int, *, shown_status: str | None) -> tuple[int, str]:
    """Send what is stored after ``after_seq``, and the status unless the viewer has it; returns both."""
    while True:
        db.session.expire_all()
        execution, chunks = executions.log_chunks(actor=actor, execution_id=execution_id, after_seq=after_seq)
        events = [chunk_event(chunk) for chunk in chunks]
        status = execution.status  # read before the rollback expires it (reading after would reconnect)
        # the pooled connection goes back before the socket is written: a slow viewer must not hold it
        db.session.rollback()
        for event in events:
            ws.send(json.dumps(event))
            after_seq = event["seq"]
        if len(events) < 500:
            break
    if status != shown_status:
        ws.send(json.dumps({"type": "status", "status": status}))
    return after_seq, status


def chunk_event(chunk) -> dict:
    """A stored log piece as the event viewers get (the same over the socket and the fallback)."""
    return {"type": "log", "seq": chunk.seq, "offset": chunk.offset, "stream": chunk.stream, "data": chunk.data}


def _wire(event: dict) -> str:
    """A live piece as sent to viewers (the stored shape, without the publisher's timestamp),
    serialized once: the hub hands the same event to every viewer of the run."""
    text = event.get("_wire")
    if text is None:
        text = event["_wire"] = json.dumps({key: event[key] for key in ("type", "seq", "offset", "stream", "data")
                                            if key in event})
    return text
