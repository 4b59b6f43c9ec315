"""``jobplane web``: the Flask app behind gunicorn, as production runs it."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import ADMIN_TOKEN
from tests.helpers import wait_for
from tests.test_standalone import free_port

pytestmark = pytest.mark.timeout(60)


def test_jobplane_web_serves_the_api_behind_gunicorn(app, processes):
    port = free_port()
    processes.start("web", PORT=port, WEB_WORKERS=1, WEB_THREADS=4, BOOTSTRAP_ADMIN_TOKEN=ADMIN_TOKEN)
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
