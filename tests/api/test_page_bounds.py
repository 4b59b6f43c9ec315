"""A page number past any list is refused with 422, never sent to PostgreSQL as an OFFSET that
overflows its bigint (schemathesis found the 500)."""

from __future__ import annotations

import pytest

from app.api.pagination import MAX_PAGE

LISTS = ["/api/v1/jobs", "/api/v1/users", "/api/v1/teams", "/api/v1/tokens", "/api/v1/audit-logs"]


@pytest.mark.parametrize("url", LISTS)
def test_a_page_past_the_last_possible_one_is_refused(client, admin, url):
    # Given a list, and a page number whose offset does not fit a bigint
    # When it is asked for
    response = client.get(f"{url}?page={2 ** 63 - 1}", headers=admin)

    # Then the answer names the parameter and its range
    assert response.status_code == 422
    assert response.json["errors"] == {"query": {"page": [
        f"Must be greater than or equal to 1 and less than or equal to {MAX_PAGE}."]}}


def test_the_last_possible_page_is_served_empty(client, admin):
    # Given no more jobs than fit one page, When the highest allowed page is asked for
    response = client.get(f"/api/v1/jobs?page={MAX_PAGE}", headers=admin)

    # Then it is an empty page, not an error
    assert response.status_code == 200 and response.json == []


def test_the_document_gives_the_page_range(client):
    document = client.get("/api/openapi.json").json
    page = next(p for p in document["paths"]["/api/v1/jobs"]["get"]["parameters"] if p["name"] == "page")
    assert page["schema"]["maximum"] == MAX_PAGE and page["schema"]["minimum"] == 1
