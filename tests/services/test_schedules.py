"""Cron expressions: 5 or 6 fields, crontab weekdays, timezones, clear errors, previews."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.errors import InvalidInput
from app.services.schedules import describe, next_fire_times, parse_cron, preview

START = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)  # a Saturday


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
    assert next_fire_times("@daily", "UTC", count=1, after=START)[0] == datetime(2026, 11, 29, tzinfo=UTC)
    assert next_fire_times("@hourly", "UTC", count=1, after=START)[0].hour == 13


def test_schedule_runs_in_the_jobs_timezone():
    fire = next_fire_times("0 9 * * *", "America/New_York", count=1, after=START)[0]
    assert fire.astimezone(UTC).hour == 14  # 09:00 EST is 14:00 UTC in November


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


def test_start_and_end_dates_bound_the_fire_times():
    # Given an hourly schedule that starts at 14:00 and ends at 16:00 (inclusive)
    trigger = parse_cron("0 * * * *", "UTC", start_date=START + timedelta(hours=2),
                         end_date=START + timedelta(hours=4))
    # When it is asked from noon
    first = trigger.get_next_fire_time(None, START)
    # Then it fires at 14:00, 15:00 and 16:00, then never
    assert first == START + timedelta(hours=2)
    second = trigger.get_next_fire_time(first, first)
    third = trigger.get_next_fire_time(second, second)
    assert third == START + timedelta(hours=4)
    assert trigger.get_next_fire_time(third, third) is None


def test_naive_start_date_names_the_field():
    with pytest.raises(InvalidInput) as raised:
        parse_cron("* * * * *", "UTC", start_date=datetime(2026, 1, 1))
    assert list(raised.value.errors) == ["start_date"]


@pytest.mark.parametrize("expression, words", [
    ("30 2 * * *", "At 02:30"),
    ("0 30 14 * * 1-5", "At 14:30, Monday through Friday"),
    ("0 9 * * 0", "At 09:00, only on Sunday"),
    ("@hourly", "Every hour"),
    ("0 0 last * *", "At 00:00, on the last day of the month"),
    ("0 0 * * wednesday", "0 0 * * wednesday"),  # not wordable: the expression itself
])
def test_describe_words_a_schedule_on_a_24_hour_clock(expression, words):
    assert describe(expression) == words


def test_preview_lists_fire_times_in_both_clocks():
    # Given a daily schedule in Berlin / When it is previewed after a Saturday noon
    result = preview(schedule="0 9 * * *", timezone="Europe/Berlin", count=2, after=START)
    # Then each fire time is given locally and in UTC; nothing is near a DST change
    assert result == {
        "schedule": "0 9 * * *", "timezone": "Europe/Berlin", "description": "At 09:00",
        "fire_times": [
            {"local": "2026-11-29T09:00:00+01:00", "utc": "2026-11-29T08:00:00+00:00", "dst_note": None},
            {"local": "2026-11-30T09:00:00+01:00", "utc": "2026-11-30T08:00:00+00:00", "dst_note": None},
        ],
    }


def test_preview_defaults_to_five_fire_times_from_now():
    before = datetime.now(UTC)
    fire_times = preview(schedule="* * * * * *", timezone="UTC")["fire_times"]
    assert len(fire_times) == 5
    assert datetime.fromisoformat(fire_times[0]["utc"]) > before


@pytest.mark.parametrize("schedule, zone, after, note", [
    # An hourly job's 02:00 merges into its own 03:00 run
    ("0 * * * *", "America/New_York", datetime(2026, 3, 8, 6, 30, tzinfo=UTC),
     ("02:00 does not exist (clocks spring forward from 02:00 to 03:00 on 2026-03-08); "
      "runs at 03:00, once, together with the 03:00 run")),
    # An every-minute job's skipped hour is one run
    ("* * * * *", "America/New_York", datetime(2026, 3, 8, 6, 59, 30, tzinfo=UTC),
     ("02:00 and the later scheduled times before 03:00 do not exist (clocks spring forward from "
      "02:00 to 03:00 on 2026-03-08); they run once, at 03:00")),
    # Southern hemisphere: Sydney springs forward in October…
    ("30 2 * * *", "Australia/Sydney", datetime(2026, 10, 3, 12, tzinfo=UTC),
     "02:30 does not exist (clocks spring forward from 02:00 to 03:00 on 2026-10-04); runs at 03:00"),
    # …and falls back in April, repeating 02:00-02:59
    ("30 2 * * *", "Australia/Sydney", datetime(2026, 4, 4, 12, tzinfo=UTC),
     ("02:30 occurs twice (clocks fall back from 03:00 to 02:00 on 2026-04-05); runs once, at the "
      "first 02:30 (AEDT)")),
    # A second-level time in Berlin's repeated hour
    ("15 30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC),
     ("02:30:15 occurs twice (clocks fall back from 03:00 to 02:00 on 2026-10-25); runs once, at the "
      "first 02:30:15 (CEST)")),
])
def test_preview_explains_runs_moved_by_dst(schedule, zone, after, note):
    assert preview(schedule=schedule, timezone=zone, count=1, after=after)["fire_times"][0]["dst_note"] == note


def test_preview_flags_runs_within_a_day_of_a_change():
    # Given a daily 12:00 job in New York / When previewed around 2026-11-01
    fire_times = preview(schedule="0 12 * * *", timezone="America/New_York", count=4,
                         after=datetime(2026, 10, 30, 17, tzinfo=UTC))["fire_times"]
    # Then only the runs within 24 hours of the change carry a note
    assert [(t["local"][:10], t["dst_note"]) for t in fire_times] == [
        ("2026-10-31", "within a day of a DST change (clocks fall back from 02:00 to 01:00 on 2026-11-01)"),
        ("2026-11-01", "within a day of a DST change (clocks fall back from 02:00 to 01:00 on 2026-11-01)"),
        ("2026-11-02", None),
        ("2026-11-03", None),
    ]


@pytest.mark.parametrize("count", [0, 51, True, "5", None])
def test_preview_count_is_from_1_to_50(count):
    with pytest.raises(InvalidInput) as raised:
        preview(schedule="* * * * *", timezone="UTC", count=count)
    assert list(raised.value.errors) == ["count"]


def test_preview_reports_every_bad_field_at_once():
    with pytest.raises(InvalidInput) as raised:
        preview(schedule="* * *", timezone="UTC", count=0, after=datetime(2026, 1, 1))
    assert sorted(raised.value.errors) == ["after", "count", "schedule"]


def test_preview_of_an_unknown_timezone_names_the_timezone():
    with pytest.raises(InvalidInput) as raised:
        preview(schedule="* * * * *", timezone="Mars/Olympus_Mons")
    assert list(raised.value.errors) == ["timezone"]
