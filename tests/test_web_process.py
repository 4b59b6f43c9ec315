"""``jobplane web``: the Flask app behind gunicorn, as production runs it (gevent workers, so one
process holds many live log websockets and still answers requests)."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone

import pytest
import redis
import requests
from simple_websocket import Client, ConnectionClosed

from app.extensions import db
from app.models import Execution, ExecutionLogChunk
from app.services.live import RedisLiveLog
from app.ui import live_hub
from tests.conftest import ADMIN_TOKEN
from tests.helpers import wait_for
from tests.test_standalone import free_port

pytestmark = pytest.mark.timeout(60)


def test_jobplane_web_serves_the_api_behind_gunicorn(app, processes):
    port = free_port()
    processes.start("web", PORT=port, WEB_WORKERS=1, WEB_WORKER_CLASS="gthread", WEB_THREADS=4,
                    BOOTSTRAP_ADMIN_TOKEN=ADMIN_TOKEN)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return requests.get(f"{base}/health", timeout=3).json() == {"status": "ok"}
        except requests.RequestException:  # refused, or accepted while gunicorn's worker still boots
            return False
    wait_for(healthy, timeout=30, message="gunicorn to answer\n" + processes.logs())
    # The first start of the web process created the admin with the bootstrap token
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = requests.post(f"{base}/api/v1/jobs", headers=headers, timeout=5, json={
        "name": "via-gunicorn", "job_type": "bash", "script": "true"})
    assert created.status_code == 201, created.text
    assert [j["name"] for j in requests.get(f"{base}/api/v1/jobs", headers=headers, timeout=5).json()] == \
        ["via-gunicorn"]
    assert requests.get(f"{base}/api/v1/jobs", timeout=5).status_code == 401
    assert requests.get(f"{base}/api/openapi.json", timeout=5).json()["info"]["title"] == "Jobplane"


def _signed_in_cookie(base: str) -> str:
    with requests.Session() as browser:
        page = browser.get(f"{base}/login", timeout=5)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        assert browser.post(f"{base}/login/token", data={"token": ADMIN_TOKEN, "csrf_token": csrf},
                            timeout=5).status_code == 200  # followed the redirect to the start page
        return f"jobplane_session={browser.cookies['jobplane_session']}"


def test_jobplane_web_runs_gevent_workers_that_serve_many_live_log_sockets_and_requests_at_once(
        app, processes, redis_url):
    # Given `jobplane web` with its defaults (gevent) and a single worker process
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # (BASE_URL: simple_websocket's client sends a Host header without the port, unlike browsers)
    web = processes.start("web", PORT=port, WEB_WORKERS=1, BOOTSTRAP_ADMIN_TOKEN=ADMIN_TOKEN, BASE_URL=base)
    wait_for(lambda: _answers(f"{base}/health"), timeout=30, message="gunicorn to answer\n" + processes.logs())
    log = processes.log(web)
    assert "Using worker: gevent" in log and "psycopg2 made cooperative (psycogreen)" in log
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    job = requests.post(f"{base}/api/v1/jobs", headers=headers, timeout=5, json={
        "name": "watched", "job_type": "bash", "script": "true"}).json()
    with app.app_context():
        execution = Execution(job_id=job["id"], status="running", triggered_by="manual", fired_by="test",
                              scheduled_for=datetime.now(timezone.utc), started_at=datetime.now(timezone.utc))
        db.session.add(execution)
        db.session.commit()
        execution_id = execution.id
    # When 40 viewers open its live log: more than the 16 threads a gthread worker would have
    cookie = _signed_in_cookie(base)
    sockets = [Client.connect(f"ws://127.0.0.1:{port}/ws/executions/{execution_id}/log",
                              headers={"Origin": base, "Cookie": cookie}) for _ in range(40)]
    for ws in sockets:
        assert json.loads(ws.receive(timeout=10)) == {"type": "status", "status": "running"}
    # Then plain requests are still answered at once, and the process holds ONE Redis subscriber
    assert _answers(f"{base}/health")
    worker_pids = {int(c["name"].rsplit("-", 1)[1]) for c in redis.Redis.from_url(redis_url).client_list()
                   if c.get("name", "").startswith(live_hub.CLIENT_NAME)} - {os.getpid()}
    assert len(worker_pids) == 1
    # And a piece the worker stores and publishes reaches every viewer, then the final status
    live = RedisLiveLog(redis_url, app.config["QUEUE_NAMESPACE"])
    with app.app_context():
        db.session.add(ExecutionLogChunk(execution_id=execution_id, seq=1, offset=0, stream="stdout",
                                         data="\x1b[32mhello from gevent\x1b[0m\n"))
        db.session.get(Execution, execution_id).status = "success"
        db.session.commit()
    live.publish(execution_id, {"type": "log", "seq": 1, "offset": 0, "stream": "stdout",
                                "data": "\x1b[32mhello from gevent\x1b[0m\n"})
    live.publish(execution_id, {"type": "status", "status": "success"})
    for ws in sockets:
        events = [json.loads(ws.receive(timeout=10))]
        while events[-1] != {"type": "status", "status": "success"}:  # (a viewer re-checks the status every 5 s)
            events.append(json.loads(ws.receive(timeout=10)))
        assert [e["data"] for e in events if e["type"] == "log"] == ["\x1b[32mhello from gevent\x1b[0m\n"]
        with pytest.raises(ConnectionClosed):  # the run has ended: the server closes the socket
            ws.receive(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).json() == {"status": "ok"}
    except requests.RequestException:  # refused, or accepted while gunicorn's worker still boots
        return False
