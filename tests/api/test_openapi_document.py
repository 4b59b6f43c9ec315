"""The OpenAPI document at /api/openapi.json describes every route completely: a summary, the role
it requires, the bearer security, its error responses in the one error body, and an example of
each request body. A new route published without them fails here."""

from __future__ import annotations

import re

from tests.api.inventory import api_routes

METHODS = ("get", "put", "post", "delete", "patch")
#: Every operation answers these: authentication and the rate limit come first.
ALWAYS = {"401", "429"}
ROLE = re.compile(r"Requires: .*\b(any role|admin|job_creator|team_viewer)\b")


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def _resolve(document: dict, node: dict) -> dict:
    while "$ref" in node:
        _, section, kind, name = node["$ref"].split("/")
        node = document[section][kind][name]
    return node


def _problems(document: dict) -> list[str]:
    """What each operation lacks, one line each."""
    problems = []
    schemes = document.get("components", {}).get("securitySchemes", {})
    for name, operation in _operations(document):
        if not operation.get("summary", "").strip():
            problems.append(f"{name}: no summary (the first line of its docstring)")
        if not ROLE.search(operation.get("description", "")):
            problems.append(f"{name}: its description does not say which role it requires; decorate it with "
                            "@documented(blp, requires=...) from app/api/openapi.py")
        security = operation.get("security") or []
        if not any(scheme in schemes and schemes[scheme].get("scheme") == "bearer"
                   for requirement in security for scheme in requirement):
            problems.append(f"{name}: no bearer security")
        responses = operation.get("responses", {})
        if "default" in responses:
            problems.append(f"{name}: a catch-all default response hides which errors it answers")
        for status in sorted(ALWAYS - set(responses)):
            problems.append(f"{name}: error response {status} is not documented")
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = _resolve(document, response).get("content", {}).get("application/json", {}).get("schema")
                if schema != {"$ref": "#/components/schemas/Error"}:
                    problems.append(f"{name}: error response {status} does not use the shared Error schema")
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and "example" not in body and "examples" not in body:
            problems.append(f"{name}: its request body has no example")
    return problems


def test_every_operation_is_documented_completely(app):
    # Given the document the app serves, without signing in
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json

    # When each operation is checked, Then none lacks a summary, a role, security or error responses
    assert _problems(document) == []


def test_the_document_lists_every_api_route(app):
    # Given the app's API routes, as the authorization matrix sees them
    routes = {(method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)) for method, rule in api_routes(app)}

    # When the document's operations are listed
    documented = {tuple(name.split(" ", 1)) for name, _ in _operations(app.test_client().get("/api/openapi.json").json)}

    # Then every route is there, and nothing else
    assert documented == routes


def test_an_undocumented_operation_is_caught():
    # Given a document with one bare operation, as a new route without @documented would give
    document = {"components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
                "paths": {"/api/v1/new": {"post": {
                    "responses": {"200": {"description": "OK"}},
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}}}}}

    # When it is checked
    problems = _problems(document)

    # Then each missing piece is named
    assert problems == [
        "POST /api/v1/new: no summary (the first line of its docstring)",
        "POST /api/v1/new: its description does not say which role it requires; decorate it with "
        "@documented(blp, requires=...) from app/api/openapi.py",
        "POST /api/v1/new: no bearer security",
        "POST /api/v1/new: error response 401 is not documented",
        "POST /api/v1/new: error response 429 is not documented",
        "POST /api/v1/new: its request body has no example",
    ]


def test_error_responses_show_the_body_the_api_writes(app, admin):
    # Given the documented 404 of a job and the answer for a job that does not exist
    document = app.test_client().get("/api/openapi.json").json
    documented = _resolve(document, document["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]["404"])
    answer = app.test_client().get("/api/v1/jobs/00000000-0000-0000-0000-000000000000", headers=admin)

    # Then the answer has exactly the fields the Error schema allows
    error_schema = document["components"]["schemas"]["Error"]
    assert answer.status_code == 404
    assert set(answer.json) <= set(error_schema["properties"])
    assert set(documented["content"]["application/json"]["example"]) <= set(error_schema["properties"])
