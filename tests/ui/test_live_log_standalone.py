"""Standalone mode has no Redis: its live log viewers follow the in-process channels
(``LocalLiveLog``) through the same websocket, replay first, then live, then the final status."""

from __future__ import annotations

import json
import re

import pytest
import requests
from simple_websocket import Client, ConnectionClosed

from tests.test_standalone import TOKEN, standalone  # noqa: F401  (fixture: a `jobplane standalone` process)

pytestmark = pytest.mark.timeout(120)


def test_a_standalone_viewer_follows_a_run_live_without_redis(standalone):  # noqa: F811
    # Given `jobplane standalone` and a job that prints for a couple of seconds
    standalone.start()
    job = standalone.post("/api/v1/jobs", json={
        "name": "counting", "job_type": "bash",
        "script": "sleep 1\nfor i in 1 2 3 4 5; do echo \"count $i\"; sleep 0.3; done"}).json()
    with requests.Session() as browser:
        page = browser.get(f"{standalone.url}/login", timeout=5)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        browser.post(f"{standalone.url}/login/token", data={"token": TOKEN, "csrf_token": csrf}, timeout=5)
        cookie = f"jobplane_session={browser.cookies['jobplane_session']}"
    # When a run starts and a viewer opens its live log
    run = standalone.post(f"/api/v1/jobs/{job['id']}/run").json()
    # simple_websocket's client sends "Host: 127.0.0.1" without the port (browsers send it), and
    # standalone has no BASE_URL: the Origin a browser would send for that Host
    ws = Client.connect(standalone.url.replace("http", "ws", 1) + f"/ws/executions/{run['id']}/log",
                        headers={"Origin": "http://127.0.0.1", "Cookie": cookie})
    events = [json.loads(ws.receive(timeout=30))]
    while events[-1] != {"type": "status", "status": "success"}:
        events.append(json.loads(ws.receive(timeout=30)))
    # Then it gets every line once, in order, and the final status; then the socket closes
    logs = [e for e in events if e["type"] == "log"]
    assert "".join(e["data"] for e in logs) == "".join(f"count {i}\n" for i in range(1, 6))
    assert [e["seq"] for e in logs] == list(range(len(logs)))
    assert {"type": "status", "status": "running"} in events  # it was followed while it ran
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=10)
    standalone.stop()
