"""Live log viewers share one Redis subscriber per web process: many websockets on different runs,
one pub/sub connection; each viewer gets only its run's pieces, with neither a gap nor a duplicate
between the replay of the stored log and the live channel, and resumes after a reconnect."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime, timezone

import pytest
import redis
import requests
from simple_websocket import Client, ConnectionClosed

from app.extensions import db
from app.models import Execution, ExecutionLogChunk
from app.services.actors import Actor
from app.services.live import RedisLiveLog
from app.ui import live_hub
from tests.helpers import wait_for
from tests.secrets.helpers import make_job, make_user

pytestmark = pytest.mark.timeout(120)


def _cookie(server, token: str) -> str:
    with requests.Session() as browser:
        page = browser.get(server.url + "/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        browser.post(server.url + "/login/token", data={"token": token, "csrf_token": csrf})
        return f"jobplane_session={browser.cookies['jobplane_session']}"


def _connect(server, execution_id, cookie: str, after_seq: int | None = None) -> Client:
    url = server.url.replace("http", "ws", 1) + f"/ws/executions/{execution_id}/log"
    if after_seq is not None:
        url += f"?after_seq={after_seq}"
    return Client.connect(url, headers={"Origin": server.url, "Cookie": cookie})


def _hub_connections(redis_url: str) -> list[dict]:
    """This process's live log subscribers, as Redis lists its clients."""
    name = f"{live_hub.CLIENT_NAME}-{os.getpid()}"
    return [c for c in redis.Redis.from_url(redis_url).client_list() if c.get("name") == name]


class Run:
    """A running execution whose output the test writes as a worker does: store, then publish
    (numbered from 0, as the worker numbers a run's pieces)."""

    def __init__(self, server, execution_id):
        self.server = server
        self.id = execution_id
        self.seq = -1
        self.live = RedisLiveLog(server.app.config["REDIS_URL"], server.app.config["QUEUE_NAMESPACE"])

    def write(self, text: str) -> None:
        with self.server.app.app_context():
            self.seq += 1
            db.session.add(ExecutionLogChunk(execution_id=self.id, seq=self.seq, offset=self.seq * 100,
                                             stream="stdout", data=text))
            db.session.commit()
        self.live.publish(self.id, {"type": "log", "seq": self.seq, "offset": self.seq * 100, "stream": "stdout",
                                    "data": text})

    def finish(self) -> None:
        with self.server.app.app_context():
            db.session.get(Execution, self.id).status = "success"
            db.session.commit()
        self.live.publish(self.id, {"type": "status", "status": "success"})


@pytest.fixture
def runs(live_server):
    server = live_server()
    with server.app.app_context():
        owner, token = make_user("owner@example.test", "job_creator")
        job = make_job(Actor(user=owner), name="chatty")
        now = datetime.now(timezone.utc)
        ids = []
        for minute in range(3):
            execution = Execution(job_id=job.id, status="running", triggered_by="manual", started_at=now,
                                  scheduled_for=now.replace(minute=minute, second=0, microsecond=0))
            db.session.add(execution)
            db.session.flush()
            ids.append(execution.id)
        db.session.commit()
    return server, [Run(server, i) for i in ids], _cookie(server, token)


def _read_all(ws, until_status: str = "success") -> list[dict]:
    events = []
    while not (events and events[-1] == {"type": "status", "status": until_status}):
        events.append(json.loads(ws.receive(timeout=15)))
    return events


def test_viewers_of_different_runs_share_one_redis_connection_and_see_only_their_run(runs, redis_url):
    server, (first, second, third), cookie = runs
    hub_before = live_hub.hub_for(redis_url).stats()
    # Given two viewers on each of three running executions
    sockets = {run.id: [_connect(server, run.id, cookie) for _ in range(2)] for run in (first, second, third)}
    for viewers in sockets.values():
        for ws in viewers:  # nothing stored yet: the replay is the status alone
            assert json.loads(ws.receive(timeout=10)) == {"type": "status", "status": "running"}
    # Then this process holds ONE pub/sub connection for them, subscribed to three channels
    hub = live_hub.hub_for(redis_url)
    assert hub.stats()["viewers"] - hub_before["viewers"] == 6
    connections = _hub_connections(redis_url)
    assert len(connections) == 1 and int(connections[0]["sub"]) == 3 + hub_before["channels"]
    # When the three runs write interleaved lines and end
    for index in range(10):
        for run in (first, second, third):
            run.write(f"{run.id} line {index}\n")
    for run in (first, second, third):
        run.finish()
    # Then each viewer gets its own run's ten lines, in order, once, and the final status
    for run in (first, second, third):
        for ws in sockets[run.id]:
            events = _read_all(ws)
            assert [e["data"] for e in events[:-1]] == [f"{run.id} line {i}\n" for i in range(10)]
            assert [e["seq"] for e in events[:-1]] == list(range(10))
    # And once the sockets close, the channels are given up again (same single connection)
    wait_for(lambda: hub.stats()["viewers"] == hub_before["viewers"], timeout=10, message="viewers to leave")
    wait_for(lambda: int(_hub_connections(redis_url)[0]["sub"]) == hub_before["channels"], timeout=10,
             message="the channels to be unsubscribed")


def test_viewers_joining_while_the_run_writes_miss_nothing_and_see_nothing_twice(runs):
    server, (run, _, _), cookie = runs
    lines = 150
    # Given a run writing a line every few milliseconds
    writer = threading.Thread(target=lambda: [run.write(f"line {i}\n") or time.sleep(0.005) for i in range(lines)])
    writer.start()
    # When viewers connect at different moments of it (each replays the stored part, then follows)
    viewers = []
    for _ in range(6):
        viewers.append(_connect(server, run.id, cookie))
        time.sleep(0.1)
    writer.join()
    run.finish()
    # Then every viewer has every line exactly once, in order
    for ws in viewers:
        events = _read_all(ws)
        logs = [e for e in events if e["type"] == "log"]
        assert [e["seq"] for e in logs] == list(range(lines))
        assert [e["data"] for e in logs] == [f"line {i}\n" for i in range(lines)]


def test_a_viewer_that_reconnects_resumes_after_its_last_piece(runs):
    server, (run, _, _), cookie = runs
    for i in range(5):
        run.write(f"early {i}\n")
    # Given a viewer that got the first five pieces, then lost its connection
    ws = _connect(server, run.id, cookie)
    got = [json.loads(ws.receive(timeout=10)) for _ in range(6)]
    assert [e.get("seq") for e in got] == [0, 1, 2, 3, 4, None]
    ws.close()
    # While it was away the run wrote two more lines
    run.write("late 5\n")
    run.write("late 6\n")
    # When it reconnects from the last seq it has, and the run writes on and ends
    again = _connect(server, run.id, cookie, after_seq=4)
    run.write("live 7\n")
    run.finish()
    events = _read_all(again)
    # Then it gets what it missed and what followed, nothing it already had
    assert [e["data"] for e in events if e["type"] == "log"] == ["late 5\n", "late 6\n", "live 7\n"]
    with pytest.raises(ConnectionClosed):  # the run has ended: the server closes the socket
        again.receive(timeout=10)


def test_when_the_shared_subscriber_loses_redis_viewers_re_read_the_store_and_miss_nothing(runs, redis_url):
    server, (run, _, _), cookie = runs
    run.write("before 0\n")
    # Given a viewer following a run through this process's shared subscriber
    ws = _connect(server, run.id, cookie)
    assert [json.loads(ws.receive(timeout=10)).get("seq") for _ in range(2)] == [0, None]
    # When Redis drops the subscriber's connection, and the run writes while it is away
    client = redis.Redis.from_url(redis_url)
    [hub] = _hub_connections(redis_url)
    client.client_kill_filter(_id=hub["id"])
    for i in range(1, 6):
        run.write(f"during {i}\n")
    # Then the subscriber reconnects (one connection again) ...
    wait_for(lambda: len(_hub_connections(redis_url)) == 1 and _hub_connections(redis_url)[0]["id"] != hub["id"],
             timeout=15, message="the shared subscriber to reconnect")
    run.write("after 6\n")
    run.finish()
    # ... and the viewer has every line once, in order: what was published while the connection
    # was down came from the stored log
    events = _read_all(ws)
    assert [e["data"] for e in events if e["type"] == "log"] == \
        [f"during {i}\n" for i in range(1, 6)] + ["after 6\n"]


def test_a_piece_whose_publish_was_lost_is_read_from_the_store(runs):
    server, (run, _, _), cookie = runs
    ws = _connect(server, run.id, cookie)
    assert json.loads(ws.receive(timeout=10)) == {"type": "status", "status": "running"}
    # Given a piece stored but never published (the worker's publish failed; it goes on)
    with server.app.app_context():
        db.session.add(ExecutionLogChunk(execution_id=run.id, seq=0, offset=0, stream="stdout", data="lost\n"))
        db.session.commit()
    run.seq = 0
    # When the next piece is published
    run.write("next\n")
    run.finish()
    # Then the viewer has both, in order, once
    assert [e["data"] for e in _read_all(ws) if e["type"] == "log"] == ["lost\n", "next\n"]
