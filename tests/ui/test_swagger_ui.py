"""Swagger UI at /api/docs, in a real browser (Debian's Chromium), under the app's
Content-Security-Policy, from vendored files only, without signing in."""

from __future__ import annotations

from app.security_headers import CONTENT_SECURITY_POLICY


def test_swagger_ui_lists_the_operations_under_the_csp(live_server, page):
    # Given a running Jobplane and a visitor who has not signed in
    server = live_server()
    refused, errors, requests = [], [], []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))

    # When they open the API documentation
    response = page.goto(f"{server.url}/api/docs")

    # Then the page is served under the app's CSP and Swagger UI lists the API's operations
    assert response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page.locator(".opblock-summary-path", has_text="/api/v1/jobs/{job_id}/executions").first.wait_for()
    paths = set(page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/api/v1/jobs", "/api/v1/executions/{execution_id}", "/api/v1/audit-logs"} <= {
        path.replace("\u200b", "") for path in paths}
    assert page.locator("button.authorize").is_visible()  # where a reader pastes a bearer token
    # and nothing was refused, failed, or fetched from anywhere but Jobplane
    assert refused == [] and errors == []
    assert all(url.startswith(server.url) for url in requests), requests


def test_only_the_vendored_files_are_served(live_server):
    # Given a running Jobplane
    server = live_server()
    client = server.app.test_client()

    # When the docs' files and others are asked for
    bundle = client.get("/api/docs/swagger-ui-bundle.js")
    bundle.close()  # a file response: its file stays open until closed
    licence = client.get("/api/docs/LICENSE")
    outside = client.get("/api/docs/..%2F__init__.py")

    # Then the page's files are served, cacheable, and nothing else
    assert bundle.status_code == 200 and "javascript" in bundle.content_type
    assert bundle.cache_control.max_age == 86400
    assert licence.status_code == 404 and outside.status_code == 404
    assert licence.json["code"] == 404
