"""``GET /api/v1/executions/{id}/log``: byte ranges and tails of a stored log, cut on character
boundaries, read chunk by chunk without loading the whole log.

Logs are built by inserting ``ExecutionLogChunk`` rows as the worker stores them: ``offset`` is
the chunk's byte position, its text whole characters (so multi-byte characters sit on either side
of chunk boundaries, never across one).
"""

from __future__ import annotations

import tracemalloc
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
from sqlalchemy import event

from app import create_app
from app.extensions import db
from app.migrate import upgrade
from app.models import Execution, ExecutionLogChunk
from app.services import users
from app.services.actors import Actor
from app.services.executions import LOG_RANGE_MAX_BYTES
from tests.secrets.helpers import admin_actor, make_job, make_user

#: Chunks of a log with 2-, 3- and 4-byte characters at and next to chunk boundaries.
#: Bytes: a b c é(3-4) | €(5-7) d e f | 😀(11-14) | g 😀(16-19) h \n   — 22 in all.
PIECES = ["abcé", "€def", "😀", "g😀h\n"]
LOG = "".join(PIECES)
SIZE = len(LOG.encode())
MIB = 1024 * 1024


def _add_log(execution_id: uuid.UUID, pieces: list[str], *, first_seq: int = 0, offset: int = 0) -> int:
    """Store ``pieces`` as chunks from byte ``offset``; returns where the log now ends."""
    for seq, text in enumerate(pieces, start=first_seq):
        db.session.add(ExecutionLogChunk(execution_id=execution_id, seq=seq, offset=offset, stream="stdout",
                                         data=text))
        offset += len(text.encode())
    return offset


def _execution(actor: Actor, pieces: list[str], *, truncated: bool = False) -> str:
    job = make_job(actor, name=f"job-{uuid.uuid4().hex[:8]}")
    now = datetime.now(timezone.utc)
    execution = Execution(job_id=job.id, status="success", scheduled_for=now, triggered_by="manual",
                          started_at=now, completed_at=now, exit_code=0, log_truncated=truncated)
    db.session.add(execution)
    db.session.flush()
    execution.log_bytes = _add_log(execution.id, pieces)
    db.session.commit()
    return str(execution.id)


@pytest.fixture
def execution_id(app, admin) -> str:
    with app.app_context():
        return _execution(admin_actor(), PIECES)


def _read(client, admin, execution_id: str, **query):
    return client.get(f"/api/v1/executions/{execution_id}/log", headers=admin, query_string=query)


def _range(response) -> tuple[str, int, int]:
    """The body (strictly decoded: a split character would fail here), X-Log-Offset, X-Next-Offset."""
    assert response.status_code == 200, response.get_data(as_text=True)
    return (response.get_data().decode("utf-8"), int(response.headers["X-Log-Offset"]),
            int(response.headers["X-Next-Offset"]))


def test_the_whole_log_by_default(client, admin, execution_id):
    # When the log is asked for with no range
    response = _read(client, admin, execution_id)
    # Then it is all there, as UTF-8 text, with its size and where to continue
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.get_data().decode("utf-8") == LOG
    assert response.headers["X-Log-Size"] == str(SIZE) == "22"
    assert (response.headers["X-Log-Offset"], response.headers["X-Next-Offset"]) == ("0", "22")
    assert response.headers["X-Log-Truncated"] == "false"


@pytest.mark.parametrize(("query", "expected"), [
    # a range inside one chunk, and one across a chunk boundary
    ({"offset": 0, "limit": 4}, ("abc", 0, 3)),  # byte 3 starts é: the end moves back before it
    ({"offset": 3, "limit": 8}, ("é€def", 3, 11)),
    # a start inside é (bytes 3-4) moves forward to €, which starts the next chunk
    ({"offset": 4, "limit": 6}, ("€de", 5, 10)),
    # a start inside € moves forward past its last byte
    ({"offset": 6, "limit": 4}, ("de", 8, 10)),
    # an end inside 😀 (bytes 11-14) moves back before it: the next read starts on it
    ({"offset": 8, "limit": 5}, ("def", 8, 11)),
    ({"offset": 11, "limit": 4}, ("😀", 11, 15)),
    ({"offset": 12, "limit": 7}, ("g", 15, 16)),
    # the end of the log, and past it: nothing, and the end to continue from
    ({"offset": 20, "limit": 10}, ("h\n", 20, 22)),
    ({"offset": 22}, ("", 22, 22)),
    ({"offset": 1000}, ("", 22, 22)),
    # the last N bytes; a tail starting inside 😀 (bytes 16-19) starts after it
    ({"tail": 2}, ("h\n", 20, 22)),
    ({"tail": 5}, ("h\n", 20, 22)),
    ({"tail": 6}, ("😀h\n", 16, 22)),
    ({"tail": 3}, ("h\n", 20, 22)),
    ({"tail": 100}, (LOG, 0, 22)),
])
def test_a_range_is_cut_on_character_boundaries(client, admin, execution_id, query, expected):
    # When a range is asked for / Then it holds whole characters only, and says where it starts and ends
    response = _read(client, admin, execution_id, **query)
    assert _range(response) == expected
    assert response.headers["X-Log-Size"] == "22"
    if "limit" in query:
        assert len(response.get_data()) <= query["limit"]


@pytest.mark.parametrize("limit", [4, 5, 6, 7, 9])
def test_reading_on_from_each_next_offset_gives_the_log_exactly(client, admin, execution_id, limit):
    # Given a reader that asks for small ranges, each from where the last one said to continue
    offset, parts = 0, []
    for _ in range(SIZE):
        body, start, next_offset = _range(_read(client, admin, execution_id, offset=offset, limit=limit))
        assert start == offset and len(body.encode()) <= limit
        assert next_offset > offset, "a read made no progress"
        parts.append(body)
        offset = next_offset
        if offset == SIZE:
            break
    # Then the parts are the log, nothing missing or repeated, no character split
    assert "".join(parts) == LOG


def test_a_follower_gets_only_what_was_appended(app, client, admin, execution_id):
    # Given a reader at the end of the log
    _, _, end = _range(_read(client, admin, execution_id))
    assert _range(_read(client, admin, execution_id, offset=end)) == ("", 22, 22)
    # When the run writes more
    with app.app_context():
        _add_log(uuid.UUID(execution_id), ["ünd more\n"], first_seq=len(PIECES), offset=SIZE)
        db.session.commit()
    # Then reading on from where it was gives just that
    response = _read(client, admin, execution_id, offset=end)
    assert _range(response) == ("ünd more\n", 22, 22 + len("ünd more\n".encode()))
    assert response.headers["X-Log-Size"] == str(22 + len("ünd more\n".encode()))


def test_an_empty_log(app, client, admin):
    with app.app_context():
        execution_id = _execution(admin_actor(), [])
    response = _read(client, admin, execution_id)
    assert _range(response) == ("", 0, 0)
    assert response.headers["X-Log-Size"] == "0"
    assert _range(_read(client, admin, execution_id, tail=10)) == ("", 0, 0)


def test_a_truncated_log_says_so(app, client, admin):
    # Given a log that hit the cap: the worker stored its head and the truncation marker
    marker = "\n[jobplane] log truncated: the output passed 16 bytes; the rest was not kept\n"
    with app.app_context():
        execution_id = _execution(admin_actor(), ["x" * 16, marker], truncated=True)
    # When its tail is read / Then the header says the log is not the whole output
    response = _read(client, admin, execution_id, tail=len(marker))
    assert response.headers["X-Log-Truncated"] == "true"
    assert response.get_data(as_text=True) == marker


def _bad_parameters(response) -> set[str]:
    """The parameters a 422 names, whichever part of the request it says they are in."""
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.json["code"] == 422 and response.json["status"] == "Unprocessable Entity"
    return {name for fields in response.json["errors"].values() for name in fields}


@pytest.mark.parametrize(("query", "named"), [
    ({"offset": -1}, "offset"),
    ({"offset": "abc"}, "offset"),
    ({"limit": 0}, "limit"),
    ({"limit": 3}, "limit"),  # less than one 4-byte character: a reader could never move on
    ({"limit": LOG_RANGE_MAX_BYTES + 1}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"tail": 0}, "tail"),
    ({"tail": LOG_RANGE_MAX_BYTES + 1}, "tail"),
    ({"tail": 10, "offset": 0}, "tail"),
    ({"tail": 10, "limit": 100}, "tail"),
])
def test_bad_parameters_are_422_naming_them(client, admin, execution_id, query, named):
    response = _read(client, admin, execution_id, **query)
    assert _bad_parameters(response) == {named}


def test_the_largest_limit_is_accepted(client, admin, execution_id):
    assert _range(_read(client, admin, execution_id, limit=LOG_RANGE_MAX_BYTES)) == (LOG, 0, 22)


def test_someone_who_may_not_see_the_job_gets_404_and_no_log(app, client, admin, execution_id):
    # Given a job creator of no team, who may see only their own jobs
    with app.app_context():
        _, token = make_user("carol@example.com", "job_creator")
        db.session.commit()
    # When they ask for the admin's execution's log / Then it does not exist for them
    response = client.get(f"/api/v1/executions/{execution_id}/log", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert "X-Log-Size" not in response.headers and LOG not in response.get_data(as_text=True)


# --- large logs: only the needed chunks, only the needed bytes ------------------------------------------

@contextmanager
def _log_queries(app):
    """Rows returned by each statement that slices log chunks (``substr``), while the block runs."""
    rows: list[int] = []

    def after(_connection, cursor, statement, *_args):
        if "substr" in statement:
            rows.append(cursor.rowcount)

    engine = app.extensions["jobplane_db"].engine
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield rows
    finally:
        event.remove(engine, "after_cursor_execute", after)


@pytest.fixture
def large_execution(app, admin) -> tuple[str, list[str]]:
    """A 27 MiB log: 1 MiB of 'a', then a 24 MiB chunk of 'é' (2 bytes each), then 2 MiB of 'z' in 2 chunks."""
    pieces = ["a" * MIB, "é" * (12 * MIB), "z" * MIB, "z" * MIB]
    with app.app_context():
        return _execution(admin_actor(), pieces), pieces


def test_a_range_of_a_large_log_reads_only_its_chunks_and_bytes(app, client, admin, large_execution):
    execution_id, pieces = large_execution
    size = sum(len(p.encode()) for p in pieces)
    # When 1 MiB from the middle of the 24 MiB chunk is read, starting on the second byte of an é
    tracemalloc.start()
    try:
        with _log_queries(app) as rows:
            response = _read(client, admin, execution_id, offset=MIB + 12 * MIB + 1, limit=MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then it is the é's from the next whole one, on character boundaries
    body, start, next_offset = _range(response)
    assert start == 13 * MIB + 2 and body == "é" * (MIB // 2 - 1) and next_offset == start + MIB - 2
    assert response.headers["X-Log-Size"] == str(size)
    # And only the one chunk holding the range was read, and never the whole of it
    assert rows == [1]
    assert peak < 8 * MIB, f"reading 1 MiB took {peak / MIB:.1f} MiB of memory: the 24 MiB chunk was loaded"


def test_a_tail_of_a_large_log_reads_only_the_last_chunks(app, client, admin, large_execution):
    execution_id, pieces = large_execution
    # When the last 1.5 MiB are read
    with _log_queries(app) as rows:
        response = _read(client, admin, execution_id, tail=MIB + MIB // 2)
    # Then they come from the two last chunks only
    body, start, next_offset = _range(response)
    assert body == "z" * (MIB + MIB // 2) and next_offset == start + MIB + MIB // 2
    assert rows == [2]


# --- standalone mode: the same on SQLite ------------------------------------------------------------------

def test_ranges_are_the_same_on_sqlite(tmp_path):
    # Given a standalone app (SQLite) with the same log
    standalone = create_app({"ENV": "standalone", "DATA_DIR": str(tmp_path)})
    upgrade(standalone.config["DATABASE_URL"])
    with standalone.app_context():
        token = users.bootstrap_admin(token="jp_standalone_log_token_0123")
        db.session.commit()
        execution_id = _execution(admin_actor(), PIECES)
    headers = {"Authorization": f"Bearer {token}"}
    client = standalone.test_client()
    try:
        # When ranges are read / Then they are cut exactly as on PostgreSQL
        assert _range(_read(client, headers, execution_id)) == (LOG, 0, 22)
        assert _range(_read(client, headers, execution_id, offset=4, limit=6)) == ("€de", 5, 10)
        assert _range(_read(client, headers, execution_id, offset=8, limit=5)) == ("def", 8, 11)
        assert _range(_read(client, headers, execution_id, tail=5)) == ("h\n", 20, 22)
    finally:
        standalone.extensions["jobplane_db"].engine.dispose()

