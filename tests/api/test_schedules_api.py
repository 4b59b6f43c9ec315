"""The schedule preview API: fire times in both clocks, DST notes, errors that name the field."""

from __future__ import annotations

import pytest

PREVIEW = "/api/v1/schedules/preview"
SATURDAY_NOON = "2026-11-28T12:00:00Z"


def test_preview_of_a_six_field_schedule_counts_seconds(client, admin):
    # Given a seconds-first schedule / When it is previewed
    response = client.get(PREVIEW, query_string={"schedule": "*/20 * * * * *", "count": 3,
                                                  "after": SATURDAY_NOON}, headers=admin)
    # Then it fires every 20 seconds, in UTC by default, with no DST note
    assert response.status_code == 200, response.json
    assert response.json == {
        "schedule": "*/20 * * * * *",
        "timezone": "UTC",
        "description": "Every 20 seconds",
        "fire_times": [
            {"local": f"2026-11-28T12:00:{s}+00:00", "utc": f"2026-11-28T12:00:{s}+00:00", "dst_note": None}
            for s in ("20", "40")
        ] + [{"local": "2026-11-28T12:01:00+00:00", "utc": "2026-11-28T12:01:00+00:00", "dst_note": None}],
    }


def test_preview_of_a_five_field_schedule_in_a_timezone(client, admin):
    # Given a weekday schedule in Berlin / When it is previewed with the default count
    response = client.get(PREVIEW, query_string={"schedule": "30 9 * * 1-5", "timezone": "Europe/Berlin",
                                                 "after": SATURDAY_NOON}, headers=admin)
    # Then it describes itself on a 24-hour clock and lists Monday to Friday at 09:30 CET
    assert response.status_code == 200, response.json
    body = response.json
    assert body["description"] == "At 09:30, Monday through Friday"
    assert [t["local"] for t in body["fire_times"]] == [
        f"2026-{day}T09:30:00+01:00" for day in ("11-30", "12-01", "12-02", "12-03", "12-04")]
    assert body["fire_times"][0]["utc"] == "2026-11-30T08:30:00+00:00"


def test_preview_notes_a_run_moved_by_spring_forward(client, admin):
    # Given a New York daily job at 02:30, a time that does not exist on 2026-03-08
    response = client.get(PREVIEW, query_string={"schedule": "30 2 * * *", "timezone": "America/New_York",
                                                 "count": 3, "after": "2026-03-06T12:00:00Z"}, headers=admin)
    # Then that day's run is at 03:00 EDT and says why; the neighbouring days are flagged too
    assert response.status_code == 200, response.json
    moved = response.json["fire_times"][1]
    assert moved["local"] == "2026-03-08T03:00:00-04:00" and moved["utc"] == "2026-03-08T07:00:00+00:00"
    assert moved["dst_note"] == ("02:30 does not exist (clocks spring forward from 02:00 to 03:00 on "
                                 "2026-03-08); runs at 03:00")
    before, after = response.json["fire_times"][0], response.json["fire_times"][2]
    assert before["local"] == "2026-03-07T02:30:00-05:00" and "within a day" in before["dst_note"]
    assert after["local"] == "2026-03-09T02:30:00-04:00" and "within a day" in after["dst_note"]


def test_preview_notes_a_time_that_occurs_twice_at_fall_back(client, admin):
    response = client.get(PREVIEW, query_string={"schedule": "30 1 * * *", "timezone": "America/New_York",
                                                 "count": 1, "after": "2026-11-01T00:00:00Z"}, headers=admin)
    assert response.status_code == 200, response.json
    assert response.json["fire_times"] == [{
        "local": "2026-11-01T01:30:00-04:00", "utc": "2026-11-01T05:30:00+00:00",
        "dst_note": ("01:30 occurs twice (clocks fall back from 02:00 to 01:00 on 2026-11-01); "
                     "runs once, at the first 01:30 (EDT)")}]


@pytest.mark.parametrize("query, field", [
    ({"schedule": "61 * * * *"}, "schedule"),
    ({"schedule": "* * * *"}, "schedule"),
    ({"schedule": "* * * * *", "timezone": "Europe/Atlantis"}, "timezone"),
    ({"schedule": "* * * * *", "count": 0}, "count"),
    ({"schedule": "* * * * *", "count": 51}, "count"),
])
def test_invalid_input_is_a_422_naming_the_field(client, admin, query, field):
    response = client.get(PREVIEW, query_string=query, headers=admin)
    assert response.status_code == 422
    assert list(response.json["errors"]["json"]) == [field]


@pytest.mark.parametrize("query, field", [
    ({}, "schedule"),
    ({"schedule": "* * * * *", "count": "five"}, "count"),
    ({"schedule": "* * * * *", "after": "yesterday"}, "after"),
])
def test_malformed_query_is_a_422_naming_the_parameter(client, admin, query, field):
    response = client.get(PREVIEW, query_string=query, headers=admin)
    assert response.status_code == 422
    assert list(response.json["errors"]["query"]) == [field]


def test_preview_needs_a_token(client, admin):
    response = client.get(PREVIEW, query_string={"schedule": "* * * * *"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_preview_is_in_the_openapi_document(client):
    spec = client.get("/api/openapi.json").json
    operation = spec["paths"][PREVIEW]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"schedule", "timezone", "count", "after"}
    assert "SchedulePreview" in spec["components"]["schemas"]
