"""Cron expressions: 5 or 6 fields, crontab weekdays, timezones, clear errors."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from app.errors import InvalidInput
from app.services.schedules import next_fire_times, parse_cron

START = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)  # a Saturday


def test_five_fields_fire_on_the_minute():
    times = next_fire_times("*/15 * * * *", "UTC", count=3, after=START)
    assert [t.strftime("%H:%M:%S") for t in times] == ["12:15:00", "12:30:00", "12:45:00"]


def test_six_fields_start_with_seconds():
    times = next_fire_times("*/20 * * * * *", "UTC", count=3, after=START)
    assert [t.strftime("%H:%M:%S") for t in times] == ["12:00:20", "12:00:40", "12:01:00"]


@pytest.mark.parametrize("weekday, expected", [
    ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),   # crontab: 1 is Monday
    ("0", ["Sun"]),                                  # 0 is Sunday…
    ("7", ["Sun"]),                                  # …and so is 7
    ("0,6", ["Sat", "Sun"]),
    ("*/2", ["Sun", "Tue", "Thu", "Sat"]),           # crontab's step counts from Sunday
    ("fri-sun", ["Fri", "Sat", "Sun"]),
    ("5-0", ["Fri", "Sat", "Sun"]),
    ("MON", ["Mon"]),
])
def test_weekdays_follow_crontab_not_apscheduler(weekday, expected):
    times = next_fire_times(f"0 9 * * {weekday}", "UTC", count=7, after=START)
    assert sorted({t.strftime("%a") for t in times}) == sorted(expected)


def test_macros():
    assert next_fire_times("@daily", "UTC", count=1, after=START)[0] == datetime(2026, 11, 29, tzinfo=timezone.utc)
    assert next_fire_times("@hourly", "UTC", count=1, after=START)[0].hour == 13


def test_schedule_runs_in_the_jobs_timezone():
    fire = next_fire_times("0 9 * * *", "America/New_York", count=1, after=START)[0]
    assert fire.astimezone(timezone.utc).hour == 14  # 09:00 EST is 14:00 UTC in November


@pytest.mark.parametrize("expression, fragment", [
    ("* * * *", "has 4 fields"),
    ("61 * * * *", "invalid cron"),
    ("* * * * 8", "weekday"),
    ("* * 32 * *", "invalid cron"),
    ("", "has 0 fields"),
])
def test_invalid_expressions_name_the_schedule_field(expression, fragment):
    with pytest.raises(InvalidInput) as raised:
        parse_cron(expression, "UTC")
    assert list(raised.value.errors) == ["schedule"]
    assert fragment in raised.value.errors["schedule"][0]


def test_unknown_timezone_names_the_timezone_field():
    with pytest.raises(InvalidInput) as raised:
        parse_cron("* * * * *", "Europe/Atlantis")
    assert list(raised.value.errors) == ["timezone"]
