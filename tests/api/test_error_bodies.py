"""Every error of every route has one JSON body with a message that says what to do; an
unexpected exception is logged and answered with a request id, never with its text."""

from __future__ import annotations

import logging

import pytest

from app import create_app


@pytest.fixture
def small_app(app, settings):
    application = create_app({**settings, "MAX_BODY_BYTES": 100})

    def boom():
        raise RuntimeError("internal detail: password=hunter2")

    application.add_url_rule("/api/v1/_boom", "boom", boom)
    yield application
    application.extensions["jobplane_db"].engine.dispose()


def test_an_unknown_route_names_itself_and_where_the_routes_are(small_app):
    response = small_app.test_client().get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json == {"code": 404, "status": "Not Found",
                             "message": "no route GET /api/v1/nope; the API's routes are listed in /api/openapi.json"}


def test_a_wrong_method_lists_the_right_ones(small_app):
    response = small_app.test_client().delete("/api/v1/jobs")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "does not take DELETE" in response.json["message"] and "POST" in response.json["message"]


def test_a_body_too_large_names_the_setting(small_app, admin):
    response = small_app.test_client().post("/api/v1/jobs", headers=admin, data="x" * 200,
                                            content_type="application/json")
    assert response.status_code == 413
    assert "JOBPLANE_MAX_BODY_BYTES" in response.json["message"]


def test_malformed_json_and_bad_fields_keep_the_field_errors(small_app, admin):
    client = small_app.test_client()
    broken = client.post("/api/v1/jobs", headers=admin, data="{bad", content_type="application/json")
    assert broken.status_code in (400, 422) and broken.json["code"] == broken.status_code
    bad = client.post("/api/v1/jobs", headers=admin, json={"name": "x", "job_type": "bash", "script": "true",
                                                            "no_such_field": 1})
    assert bad.status_code == 422 and "no_such_field" in bad.json["errors"]["json"]


def test_an_unexpected_error_is_logged_and_answered_with_a_reference_only(small_app, caplog):
    with caplog.at_level(logging.ERROR, logger="app.api.errors"):
        response = small_app.test_client().get("/api/v1/_boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.json == {"code": 500, "status": "Internal Server Error",
                             "message": "something went wrong on our side; it is logged as request req-42"}
    assert "hunter2" not in response.text
    assert any("req-42" in record.getMessage() and record.exc_info for record in caplog.records)
