"""Schemathesis against the live API: for every operation of /api/openapi.json, generated requests
(valid and invalid) sent by HTTP to a running Jobplane with the admin's token. No answer may be a
5xx, every status must be documented, every body must match its documented schema.

Each operation gets a world of its own (a team, a job creator, a job with a secret and a run, a
token), so generated requests reach real objects as well as missing ones (half the requests,
chosen by a hash of the generated ids), and what one operation deletes, the next still has.

The examples are few (``MAX_EXAMPLES`` an operation, plus the document's own examples) so the run
takes a few minutes on two cores, and derandomized, so every run sends the same requests and a
failure is never luck; raise the number locally to search harder: ``SCHEMATHESIS_MAX_EXAMPLES=200``.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from tests.conftest import ADMIN_TOKEN
from tests.ui.conftest import LiveServer

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"))
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# No operation is left out: the world's user and token stand in for the admin's own, and generated
# ids are never theirs, so no generated request revokes the token this test uses or demotes its admin.


@pytest.fixture
def live_api(app, admin):
    """Jobplane served over HTTP, with the world that generated requests may reach."""
    # the whole run is a few hundred requests a minute from one user
    app.config["API_RATE_LIMIT"] = "100000 per minute"
    worlds: dict[str, dict[str, str]] = {}

    def world_for(operation: str) -> dict[str, str]:
        if operation not in worlds:
            # a suffix of its own each time: a world left half-made by a failure does not block the next
            worlds[operation] = _make_world(app.test_client(), suffix=uuid.uuid4().hex[:8])
        return worlds[operation]

    with LiveServer(app) as server:
        yield server, world_for
    app.extensions["jobplane_db"].engine.dispose()


def _make_world(client, *, suffix: str) -> dict[str, str]:
    """Objects of every kind, made through the API itself; returns their ids by path parameter."""
    def created(method: str, url: str, body: dict | None = None) -> dict:
        response = client.open(url, method=method, json=body, headers=AUTH)
        assert response.status_code in (200, 201, 202), (url, response.json)
        return response.json

    team = created("POST", "/api/v1/teams", {"name": f"data-{suffix}"})
    user = created("POST", "/api/v1/users", {"email": f"alice-{suffix}@example.com", "role": "job_creator",
                                             "team_id": team["id"]})
    job = created("POST", "/api/v1/jobs", {"name": "nightly", "job_type": "bash", "script": "echo hi",
                                           "schedule": "0 2 * * *"})
    created("PUT", f"/api/v1/jobs/{job['id']}/secrets/DB_PASSWORD", {"value": "s3cr3t"})
    execution = created("POST", f"/api/v1/jobs/{job['id']}/run")
    token = created("POST", "/api/v1/tokens", {"name": "spare"})
    return {"team_id": team["id"], "user_id": user["id"], "job_id": job["id"], "name": "DB_PASSWORD",
            "execution_id": execution["id"], "token_id": token["id"]}


def _aims_at_world(path_parameters: dict) -> bool:
    """Half the generated requests, chosen by what was generated (so a failure replays the same)."""
    return hashlib.sha256(repr(sorted(path_parameters.items())).encode()).digest()[0] % 2 == 0


@pytest.fixture
def api_schema(live_api):
    server, _ = live_api
    return schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_the_api_keeps_its_documented_contract(case, live_api):
    # Given a generated request, aimed at the world's objects or at generated ids
    server, world_for = live_api
    world = world_for(case.operation.label)
    if case.path_parameters and _aims_at_world(case.path_parameters):
        case.path_parameters = {name: world.get(name, value) for name, value in case.path_parameters.items()}

    # When it is sent to the live API as the admin
    # Then the answer is no server error, has a documented status and matches its documented schema
    case.call_and_validate(base_url=server.url, headers=AUTH, checks=CHECKS, timeout=30)
