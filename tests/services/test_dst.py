"""Jobplane's daylight saving rule (docs/scheduling.md), on the 2026 and 2027 changes of three zones.

A wall-clock time skipped by spring-forward runs once, at the transition; a wall-clock time that
occurs twice at fall-back runs once, at its first occurrence; fire times are unique instants.

Expected values come from hand-written offsets and transition instants, or from a brute force that
states the rule over instants (every minute of the day), never from the code under test.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler

from app.scheduler.triggers import WallClockCronTrigger
from app.services.schedules import next_fire_times, parse_cron

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Change:
    """One DST change: the local day, the UTC instant, offsets (hours) and what the clocks show."""

    zone: str
    day: date
    instant: datetime
    offset_before: int
    offset_after: int
    clock_from: int  # the local hour at which clocks jump…
    clock_to: int  # …and the hour they jump to

    def __str__(self) -> str:
        return f"{self.zone}-{self.day}"

    def at(self, day: date, hour: int, minute: int = 0, *, offset: int) -> datetime:
        """The UTC instant of a local wall time read with a given offset."""
        local = datetime.combine(day, time(hour, minute), timezone(timedelta(hours=offset)))
        return local.astimezone(UTC)

    @property
    def local_day(self) -> tuple[datetime, datetime]:
        """[start, end) of the local day of the change, as UTC instants."""
        return (self.at(self.day, 0, offset=self.offset_before),
                self.at(self.day + DAY, 0, offset=self.offset_after))


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


SPRING_FORWARD = [
    Change("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7), -5, -4, 2, 3),
    Change("America/New_York", date(2027, 3, 14), utc(2027, 3, 14, 7), -5, -4, 2, 3),
    Change("Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 1), 1, 2, 2, 3),
    Change("Europe/Berlin", date(2027, 3, 28), utc(2027, 3, 28, 1), 1, 2, 2, 3),
    Change("Australia/Sydney", date(2026, 10, 4), utc(2026, 10, 3, 16), 10, 11, 2, 3),
    Change("Australia/Sydney", date(2027, 10, 3), utc(2027, 10, 2, 16), 10, 11, 2, 3),
]
FALL_BACK = [
    Change("America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 6), -4, -5, 2, 1),
    Change("America/New_York", date(2027, 11, 7), utc(2027, 11, 7, 6), -4, -5, 2, 1),
    Change("Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 25, 1), 2, 1, 3, 2),
    Change("Europe/Berlin", date(2027, 10, 31), utc(2027, 10, 31, 1), 2, 1, 3, 2),
    Change("Australia/Sydney", date(2026, 4, 5), utc(2026, 4, 4, 16), 11, 10, 3, 2),
    Change("Australia/Sydney", date(2027, 4, 4), utc(2027, 4, 3, 16), 11, 10, 3, 2),
]
spring_forward = pytest.mark.parametrize("change", SPRING_FORWARD, ids=str)
fall_back = pytest.mark.parametrize("change", FALL_BACK, ids=str)
every_change = pytest.mark.parametrize("change", SPRING_FORWARD + FALL_BACK, ids=str)


def fires_between(schedule: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time in [start, end), as UTC instants, each run on time."""
    trigger = parse_cron(schedule, zone)
    fires = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire.astimezone(UTC) < end:
        fires.append(fire.astimezone(UTC))
        fire = trigger.get_next_fire_time(fire, fire)
    return fires


def brute_force(zone_name: str, matches, start: datetime, end: datetime) -> list[datetime]:
    """The rule stated over instants, minute by minute in [start, end): an instant fires when its
    wall time is scheduled and this is that wall time's first occurrence, or when the clocks have
    just sprung forward past a scheduled wall time."""
    zone = ZoneInfo(zone_name)
    fires = []
    instant = start
    while instant < end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        previous_wall = (instant - MINUTE).astimezone(zone).replace(tzinfo=None)
        skipped = []
        while previous_wall + MINUTE * (len(skipped) + 1) < wall:
            skipped.append(previous_wall + MINUTE * (len(skipped) + 1))
        if any(matches(w) for w in skipped) or (local.fold == 0 and matches(wall)):
            fires.append(instant)
        instant += MINUTE
    return fires


def every_minute(wall: datetime) -> bool:
    return True


def hourly(wall: datetime) -> bool:
    return wall.minute == 0


@every_change
def test_the_expected_changes_are_the_tz_databases(change):
    # Given the zone, when the clocks change, then it is at the instant and offsets written above
    zone = ZoneInfo(change.zone)
    assert (change.instant - SECOND).astimezone(zone).utcoffset() == timedelta(hours=change.offset_before)
    assert change.instant.astimezone(zone).utcoffset() == timedelta(hours=change.offset_after)
    assert change.instant.astimezone(zone).date() == change.day


@spring_forward
def test_a_daily_time_inside_the_gap_runs_at_the_transition(change):
    # Given a daily job at hh:30 where hh is the skipped hour
    schedule = f"30 {change.clock_from} * * *"
    start = change.at(change.day - DAY, 0, offset=change.offset_before)

    # When it runs over three days around the change
    fires = next_fire_times(schedule, change.zone, count=3, after=start)

    # Then the day of the change runs once, at the transition (e.g. 03:00 in New York)
    assert fires == [
        change.at(change.day - DAY, change.clock_from, 30, offset=change.offset_before),
        change.instant,
        change.at(change.day + DAY, change.clock_from, 30, offset=change.offset_after),
    ]
    assert fires[1].time() == time(change.clock_to, 0) and fires[1].tzinfo == ZoneInfo(change.zone)


@fall_back
def test_a_daily_time_inside_the_repeated_hour_runs_once_at_its_first_occurrence(change):
    # Given a daily job at hh:30 where hh is the hour that repeats
    schedule = f"30 {change.clock_to} * * *"
    start = change.at(change.day - DAY, 0, offset=change.offset_before)

    # When it runs over three days around the change
    fires = next_fire_times(schedule, change.zone, count=3, after=start)

    # Then the day of the change runs once, with the summer-time offset (the first occurrence).
    # (Compared in UTC: Python's == between zones is always False for an ambiguous wall time.)
    assert [fire.astimezone(UTC) for fire in fires] == [
        change.at(change.day - DAY, change.clock_to, 30, offset=change.offset_before),
        change.at(change.day, change.clock_to, 30, offset=change.offset_before),
        change.at(change.day + DAY, change.clock_to, 30, offset=change.offset_after),
    ]


@spring_forward
def test_an_hourly_job_merges_the_skipped_hour_into_the_transition(change):
    # Given an hourly job, when it runs over the local day of a spring-forward change
    start, end = change.local_day
    fires = fires_between("0 * * * *", change.zone, start, end)

    # Then it runs 23 times, once at the transition, and never twice at the same instant
    assert fires == brute_force(change.zone, hourly, start, end)
    assert len(fires) == 23 == len(set(fires))
    assert fires.count(change.instant) == 1
    assert change.instant - HOUR in fires and change.instant + HOUR in fires


@fall_back
def test_an_hourly_job_does_not_run_the_repeated_hour_again(change):
    # Given an hourly job, when it runs over the 25-hour local day of a fall-back change
    start, end = change.local_day
    fires = fires_between("0 * * * *", change.zone, start, end)

    # Then it runs once per wall-clock hour, 24 times: nothing at the second pass of the hour
    assert fires == brute_force(change.zone, hourly, start, end)
    assert len(fires) == 24 == len(set(fires))
    first_pass = change.instant - HOUR
    assert first_pass in fires and change.instant not in fires and change.instant + HOUR in fires


@spring_forward
def test_an_every_minute_job_collapses_the_gap_into_one_fire(change):
    # Given an every-minute job, when it runs over the 23-hour local day of a spring-forward change
    start, end = change.local_day
    fires = fires_between("* * * * *", change.zone, start, end)

    # Then the 60 skipped minutes become the one transition fire, which the job has anyway
    assert fires == brute_force(change.zone, every_minute, start, end)
    assert len(fires) == 24 * 60 - 60 == len(set(fires))
    at = fires.index(change.instant)
    assert fires[at - 1: at + 2] == [change.instant - MINUTE, change.instant, change.instant + MINUTE]


@fall_back
def test_an_every_minute_job_runs_each_wall_minute_once(change):
    # Given an every-minute job, when it runs over the 25-hour local day of a fall-back change
    start, end = change.local_day
    fires = fires_between("* * * * *", change.zone, start, end)

    # Then it runs 25*60 - 60 times: each wall minute once, nothing during the repeated hour's
    # second pass
    assert fires == brute_force(change.zone, every_minute, start, end)
    assert len(fires) == 25 * 60 - 60 == 24 * 60 == len(set(fires))
    at = fires.index(change.instant - MINUTE)
    assert fires[at + 1] == change.instant + HOUR


@spring_forward
def test_an_every_second_job_goes_straight_through_the_gap(change):
    # Given an every-second job, when it runs from 10 s before to 10 s after the transition
    fires = fires_between("* * * * * *", change.zone, change.instant - 10 * SECOND,
                          change.instant + 11 * SECOND)

    # Then every second fires once: the whole skipped hour is the one transition fire
    assert fires == [change.instant + n * SECOND for n in range(-10, 11)]


@fall_back
def test_an_every_second_job_pauses_for_the_repeated_hour(change):
    # Given an every-second job, when it runs across the repeated hour
    fires = fires_between("* * * * * *", change.zone, change.instant - 10 * SECOND,
                          change.instant + HOUR + 11 * SECOND)

    # Then it stops at the end of the first pass and resumes when the clock passes it again
    assert fires == ([change.instant + n * SECOND for n in range(-10, 0)]
                     + [change.instant + HOUR + n * SECOND for n in range(11)])


@every_change
@pytest.mark.parametrize("wake_every", [None, 7 * MINUTE], ids=["on-time", "every-7-minutes"])
def test_apscheduler_calling_pattern_fires_each_instant_once(change, wake_every):
    # Given an every-minute trigger, added when the local day starts (previous fire time None)
    start, end = change.local_day
    trigger = parse_cron("* * * * *", change.zone)
    next_run = trigger.get_next_fire_time(None, start)

    # When a scheduler wakes at each due time (or only every 7 minutes, catching up on missed
    # runs) and asks as APScheduler 3.11 does: Job._get_run_times, then the next run time
    run_times = []
    now = start
    while next_run is not None and next_run.astimezone(UTC) < end:
        now = next_run.astimezone(UTC) + timedelta(milliseconds=3) if wake_every is None else now + wake_every
        due = []
        while next_run is not None and next_run.astimezone(UTC) <= now:
            due.append(next_run)
            next_run = trigger.get_next_fire_time(next_run, now)
        if due:
            next_run = trigger.get_next_fire_time(due[-1], now)
        run_times.extend(due)

    # Then the run times are the rule's instants, strictly increasing
    instants = [t.astimezone(UTC) for t in run_times if t.astimezone(UTC) < end]
    assert instants == brute_force(change.zone, every_minute, start, end)
    assert all(a < b for a, b in pairwise(instants))


@spring_forward
def test_starting_exactly_at_the_transition_still_runs_the_skipped_time(change):
    # Given a daily job inside the gap, when it is scheduled at the very instant clocks jump
    trigger = parse_cron(f"30 {change.clock_from} * * *", change.zone)
    fire = trigger.get_next_fire_time(None, change.instant)

    # Then that day's run is not lost: it is the transition itself
    assert fire == change.instant
    assert trigger.get_next_fire_time(fire, fire) == change.at(change.day + DAY, change.clock_from, 30,
                                                               offset=change.offset_after)


@fall_back
def test_starting_during_the_second_pass_waits_for_the_repetition_to_end(change):
    # Given an every-minute job, when it is scheduled half-way through the repeated hour's second pass
    trigger = parse_cron("* * * * *", change.zone)
    fire = trigger.get_next_fire_time(None, change.instant + 30 * MINUTE)

    # Then the first run is when the wall clock passes the repeated hour, not a minute later
    assert fire == change.instant + HOUR


@every_change
def test_a_trigger_survives_pickling(change):
    # Given a trigger limited to the local day (end_date is inclusive, as in APScheduler)
    start, end = change.local_day
    trigger = parse_cron("*/20 * * * *", change.zone, start_date=start, end_date=end - SECOND)

    # When it is pickled and loaded again
    clone = pickle.loads(pickle.dumps(trigger))

    # Then it is the same trigger and gives the same fire times
    assert isinstance(clone, WallClockCronTrigger)
    assert repr(clone) == repr(trigger) and str(clone) == str(trigger)
    fires, fire = [], None
    while (fire := clone.get_next_fire_time(fire, start - HOUR if fire is None else fire)) is not None:
        fires.append(fire.astimezone(UTC))
    assert fires == brute_force(change.zone, lambda wall: wall.minute % 20 == 0, start, end)


def test_a_pickle_from_an_unknown_version_is_refused_with_advice():
    # Given the pickled state of a future trigger version
    state = parse_cron("* * * * *", "UTC").__getstate__() | {"version": 99}

    # When it is loaded, then the error says what to do
    with pytest.raises(ValueError, match="Rebuild the scheduler's job store"):
        WallClockCronTrigger.__new__(WallClockCronTrigger).__setstate__(state)


def test_apscheduler_accepts_stores_and_reloads_the_trigger():
    # Given a paused APScheduler with a job on the trigger (a New York daily 02:30)
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)
    try:
        job = scheduler.add_job("app.scheduler.fire:apscheduler_target", id="dst", args=["x"],
                                trigger=parse_cron("30 2 * * *", "America/New_York"))
        # When the job is pickled as SQLAlchemyJobStore does and loaded back
        reloaded = Job.__new__(Job)
        reloaded.__setstate__(pickle.loads(pickle.dumps(job.__getstate__())))
    finally:
        scheduler.shutdown(wait=False)

    # Then the reloaded job's trigger follows the DST rule
    change = SPRING_FORWARD[0]
    previous = change.at(change.day - DAY, 2, 30, offset=-5)
    assert reloaded.trigger.get_next_fire_time(previous, previous) == change.instant
    assert job.next_run_time.tzinfo == ZoneInfo("America/New_York")
